//! Times each kernel forward+backward against its composed version at the standard config's
//! shapes (vocab 4096, T 256, d_model 256, 4 heads × 64, batch 16), on the autodiff Flex device.
//!
//! `cargo run --release -p kernels --example bench [-- RUNS]`
//!
//! Each run builds its inputs untimed, then times: op → `.sum()` (or the loss) → `.backward()`.
//! Ours and composed alternate run by run so drift in machine load hits both alike; the median
//! of RUNS (default 25) is reported. The `.sum()` and its backward, and the leaves' gradient
//! accumulation, are in both timings; the `harness` rows show what they cost alone on the same
//! shapes. Run it on an idle machine: check `uptime` first. glibc's allocator returns big
//! buffers to the OS on free, so every fresh activation costs page faults; try it also with
//! `MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184`.

use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use kernels::{RMS_NORM_EPS, reference};

const QK: [usize; 4] = [16, 256, 4, 64];

fn main() {
    let runs: usize = std::env::args().nth(1).map_or(25, |s| s.parse().expect("RUNS must be a number"));
    let dev = Device::flex().autodiff();
    let isa = kernels::instruction_set();
    println!("{} threads, {isa}, median of {runs} runs, fwd+bwd in ms", rayon::current_num_threads());
    println!("{:<36} {:>9} {:>9} {:>7}", "op", "ours", "composed", "ratio");

    let x = random(256 * 256 * 16, 1.0, 1);
    harness("harness: sum [16,256,256]", runs, || leaf(&x, [16, 256, 256], &dev));
    compare(
        "rms_norm [16,256,256]",
        runs,
        || leaf(&x, [16, 256, 256], &dev),
        |ours, x| {
            if ours { kernels::rms_norm(x, RMS_NORM_EPS) } else { reference::rms_norm(x, RMS_NORM_EPS) }
        },
    );
    compare(
        "rms_norm [16,256,4,64] (q/k)",
        runs,
        || leaf(&x, QK, &dev),
        |ours, x| {
            if ours { kernels::rms_norm(x, RMS_NORM_EPS) } else { reference::rms_norm(x, RMS_NORM_EPS) }
        },
    );

    let (cos, sin) = (angles(f32::cos), angles(f32::sin));
    compare(
        "rope_rms_norm [16,256,4,64]",
        runs,
        || (leaf(&x, QK, &dev), table(&cos, &dev), table(&sin, &dev)),
        |ours, (x, c, s)| {
            let f = if ours { kernels::rope_rms_norm } else { reference::rope_rms_norm };
            f(x, c, s, RMS_NORM_EPS)
        },
    );

    let h = random(4096 * 1024, 1.0, 2);
    harness("harness: sum [4096,1024]", runs, || leaf(&h, [4096, 1024], &dev));
    compare(
        "relu_square [4096,1024]",
        runs,
        || leaf(&h, [4096, 1024], &dev),
        |ours, x| if ours { kernels::relu_square(x) } else { reference::relu_square(x) },
    );

    let [q, k, v] = [3, 4, 5].map(|seed| random(QK.iter().product(), 1.0, seed));
    for window in [128, 256] {
        compare(
            &format!("attention [16,256,4,64] w={window}"),
            runs,
            || (leaf(&q, QK, &dev), leaf(&k, QK, &dev), leaf(&v, QK, &dev)),
            |ours, (q, k, v)| {
                let f = if ours { kernels::attention } else { reference::attention };
                f(q, k, v, window, 0.125)
            },
        );
    }

    let logits = random(4096 * 4096, 3.0, 6);
    let targets: Vec<i64> = (0..4096).map(|i| (i * 7919 % 4096) as i64).collect();
    let setup = || {
        let t = Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [4096]), &dev);
        (leaf(&logits, [4096, 4096], &dev), t)
    };
    // The loss is a scalar: no harness beyond the leaf's gradient. The logits are a leaf here, so
    // the kernel allocates their gradient; in training they come from lm_head and it writes the
    // gradient into their buffer instead.
    compare("softcap_cross_entropy [4096,4096]", runs, setup, |ours, (z, t)| {
        let f = if ours { kernels::softcap_cross_entropy } else { reference::softcap_cross_entropy };
        f(z, t, 15.0)
    });
}

/// Times `op(true, setup())` (ours) and `op(false, setup())` (composed) with `.sum().backward()`
/// on the result, alternating; setup is untimed. Prints the medians and composed / ours.
fn compare<S, const D: usize>(
    name: &str,
    runs: usize,
    setup: impl Fn() -> S,
    op: impl Fn(bool, S) -> Tensor<D>,
) {
    let time = |ours: bool| {
        let inputs = setup();
        let start = Instant::now();
        op(ours, inputs).sum().backward();
        start.elapsed().as_secs_f64() * 1e3
    };
    time(true); // warm up: allocator, rayon pool, page faults
    time(false);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        a.push(time(true));
        b.push(time(false));
    }
    let (a, b) = (median(a), median(b));
    println!("{name:<36} {a:>9.2} {b:>9.2} {:>6.1}x", b / a);
}

/// Times `.sum().backward()` on setup()'s tensor alone: the part of `compare`'s timings that is
/// not the op.
fn harness<const D: usize>(name: &str, runs: usize, setup: impl Fn() -> Tensor<D>) {
    let time = || {
        let x = setup();
        let start = Instant::now();
        x.sum().backward();
        start.elapsed().as_secs_f64() * 1e3
    };
    time();
    println!("{name:<36} {:>9.2}", median((0..runs).map(|_| time()).collect()));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn random(n: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.46 * std
        })
        .collect()
}

fn leaf<const D: usize>(data: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data[..shape.iter().product()].to_vec(), shape), device).require_grad()
}

/// A RoPE table [256, 32] (cos or sin of position × frequency).
fn angles(f: fn(f32) -> f32) -> Vec<f32> {
    (0..256 * 32).map(|j| f((j / 32) as f32 / 10000f32.powf((j % 32) as f32 / 32.0))).collect()
}

fn table(data: &[f32], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data.to_vec(), [256, 32]), device)
}
