//! Runs one op's forward+backward in a loop, for `perf record` and for comparing variants:
//! `perf record -g target/release/examples/profile OP [ITERS] [composed]`
//! with OP one of rms_norm, qk_norm, rope_norm, norm_only, relu2, matmul_only, attention,
//! attention256, attention_fwd (no autodiff), cross_entropy. Inputs are built once (leaves can
//! be reused across backward passes); prints wall and CPU ms per iteration. rope_norm and relu2
//! are the composed RoPE and relu² that measured whether fusing them was worth it.

use burn::tensor::{Device, Int, Tensor, TensorData};
use kernels::{RMS_NORM_EPS, reference};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let op = args.get(1).map_or("attention", String::as_str).to_string();
    let iters: usize = args.get(2).map_or(50, |s| s.parse().unwrap());
    let ours = args.get(3).is_none_or(|s| s != "composed");
    let device = Device::flex().autodiff();
    let leaf = |shape: [usize; 4], seed: usize| {
        let n: usize = shape.iter().product();
        let data: Vec<f32> =
            (0..n).map(|i| (((i + seed) * 7919 % 1013) as f32 / 1013.0 - 0.5) * 4.0).collect();
        Tensor::<4>::from_data(TensorData::new(data, shape), &device).require_grad()
    };
    let x = leaf([1, 16, 256, 256], 0);
    let qk = leaf([16, 256, 4, 64], 0);
    let [q, k, v] = [1, 2, 3].map(|s| leaf([16, 256, 4, 64], s));
    // A leaf of its own shape: a reshape would be a graph node, consumed by the first backward.
    let logits: Vec<f32> =
        (0..4096 * 4096).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 4.0).collect();
    let logits = Tensor::<2>::from_data(TensorData::new(logits, [4096, 4096]), &device).require_grad();
    let t: Vec<i64> = (0..4096).map(|i| (i * 7919 % 4096) as i64).collect();
    let t = Tensor::<1, Int>::from_data(TensorData::new(t, [4096]), &device);
    let x2d = Tensor::<2>::from_data(TensorData::new(vec![0.5f32; 4096 * 256], [4096, 256]), &device)
        .require_grad();
    let w = Tensor::<2>::from_data(TensorData::new(vec![0.01f32; 256 * 1024], [256, 1024]), &device)
        .require_grad();
    let angles = |f: fn(f32) -> f32| {
        let data: Vec<f32> = (0..256 * 32).map(|i| f((i / 32) as f32 * 0.01 * (i % 32) as f32)).collect();
        Tensor::<4>::from_data(TensorData::new(data, [1, 256, 1, 32]), &device)
    };
    let (cos, sin) = (angles(f32::cos), angles(f32::sin));
    let step = || match op.as_str() {
        "rms_norm" | "qk_norm" => {
            let x = if op == "rms_norm" { x.clone() } else { qk.clone() };
            let y =
                if ours { kernels::rms_norm(x, RMS_NORM_EPS) } else { reference::rms_norm(x, RMS_NORM_EPS) };
            y.sum().backward();
        }
        "attention" | "attention256" => {
            let window = if op == "attention" { 128 } else { 256 };
            let f = if ours { kernels::attention } else { reference::attention };
            f(q.clone(), k.clone(), v.clone(), window, 0.125).sum().backward();
        }
        "attention_fwd" => {
            let [q, k, v] = [&q, &k, &v].map(|x| x.clone().inner());
            let f = if ours { kernels::attention } else { reference::attention };
            let _ = f(q, k, v, 128, 0.125);
        }
        "cross_entropy" => {
            let f = if ours { kernels::softcap_cross_entropy } else { reference::softcap_cross_entropy };
            f(logits.clone().mul_scalar(1.0), t.clone(), 15.0).backward();
        }
        "relu2" => {
            let h = x2d.clone().matmul(w.clone());
            burn::tensor::activation::relu(h).square().sum().backward();
        }
        "matmul_only" => {
            x2d.clone().matmul(w.clone()).sum().backward();
        }
        "rope_norm" => {
            let y = rotary(qk.clone(), &cos, &sin);
            kernels::rms_norm(y, RMS_NORM_EPS).sum().backward();
        }
        "norm_only" => {
            kernels::rms_norm(qk.clone(), RMS_NORM_EPS).sum().backward();
        }
        other => panic!("unknown op {other}"),
    };
    step();
    let (start, cpu0) = (std::time::Instant::now(), cpu_ms());
    for _ in 0..iters {
        step();
    }
    let wall = start.elapsed().as_secs_f64() * 1e3 / iters as f64;
    println!("{op}: {wall:.2} ms wall, {:.2} ms cpu per iteration", (cpu_ms() - cpu0) / iters as f64);
}

/// User + system CPU time of this process (all threads) in ms: less sensitive than wall time to
/// other processes sharing the cores, for comparing variants on a busy machine.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 =
        fields.get(11..13).map_or(0.0, |f| f.iter().map(|x| x.parse::<f64>().unwrap_or(0.0)).sum());
    ticks * 10.0
}

fn rotary(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let x1 = x.clone().narrow(3, 0, 32);
    let x2 = x.narrow(3, 32, 32);
    let y1 = x1.clone() * cos.clone() + x2.clone() * sin.clone();
    let y2 = x2 * cos.clone() - x1 * sin.clone();
    Tensor::cat(vec![y1, y2], 3)
}
