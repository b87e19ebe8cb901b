//! Times the bf16 matmul (`kernels::matmul_bf16`, AVX512-BF16) against burn-flex's f32 matmul on
//! the products of one training step at the standard config (tokens 4096, width 256, MLP 1024,
//! vocab 4096): forward x·Wᵀ, and the backward's dY·W and dYᵀ·X, and reports GFLOP/s.
//!
//! `cargo run --release -p kernels --example bf16_bench [-- RUNS]` (idle machine: check `uptime`).

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};

fn main() {
    let runs: usize = std::env::args().nth(1).map_or(20, |s| s.parse().expect("RUNS must be a number"));
    let dev = Device::flex();
    println!(
        "{} threads, AVX512-BF16: {}, median of {runs} runs",
        rayon::current_num_threads(),
        kernels::cpu_has_bf16()
    );
    println!("{:<34} {:>10} {:>10} {:>8}", "product [m×k]·[k×n]", "f32 GF/s", "bf16 GF/s", "ratio");
    let (n, d, v) = (4096, 256, 4096);
    let mut total = (0.0, 0.0);
    for (name, m, k, nn, a_t, b_t) in [
        ("fwd x·Wqᵀ", n, d, d, false, true),
        ("fwd x·Wfcᵀ", n, d, 4 * d, false, true),
        ("fwd h·Wprojᵀ", n, 4 * d, d, false, true),
        ("fwd x·Wheadᵀ", n, d, v, false, true),
        ("bwd dY·Wfc", n, 4 * d, d, false, false),
        ("bwd dYᵀ·X (fc)", 4 * d, n, d, true, false),
        ("bwd dY·Whead", n, v, d, false, false),
        ("bwd dYᵀ·X (head)", v, n, d, true, false),
    ] {
        // Operands stored as the model stores them; transposes are views.
        let a = if a_t { mat(k, m, 1, &dev).transpose() } else { mat(m, k, 1, &dev) };
        let b = if b_t { mat(nn, k, 2, &dev).transpose() } else { mat(k, nn, 2, &dev) };
        let f32_ms = median(runs, || {
            let _ = a.clone().matmul(b.clone()).into_data();
        });
        let bf_ms = median(runs, || {
            let _ = kernels::matmul_bf16(a.clone(), b.clone()).into_data();
        });
        let gf = |ms: f64| 2.0 * (m * k * nn) as f64 / ms / 1e6;
        total.0 += f32_ms;
        total.1 += bf_ms;
        println!(
            "{:<34} {:>10.1} {:>10.1} {:>7.2}x",
            format!("{name} [{m}×{k}]·[{k}×{nn}]"),
            gf(f32_ms),
            gf(bf_ms),
            f32_ms / bf_ms
        );
    }
    println!("all eight: f32 {:.1} ms, bf16 {:.1} ms ({:.2}x)", total.0, total.1, total.0 / total.1);
}

fn mat(r: usize, c: usize, seed: u64, dev: &Device) -> Tensor<2> {
    let mut s = seed;
    let v: Vec<f32> = (0..r * c)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    Tensor::from_data(TensorData::new(v, [r, c]), dev)
}

fn median(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[runs / 2]
}
