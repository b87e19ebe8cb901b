//! The GPU path is code that has run: the smoke profile trained on burn's wgpu backend (on a
//! machine without a GPU, Mesa's software Vulkan, lavapipe) against the same run on the CPU.
//!
//! Only with `--features wgpu`, and it needs a Vulkan adapter. `scripts/test.sh` installs
//! lavapipe (`mesa-vulkan-drivers`) and pins it with `VK_ICD_FILENAMES`.
//!
//! The fused ops on wgpu are the kernels crate's `#[cube]` kernels, not composed fallbacks. How we
//! know: each cube kernel prints one line to stderr on its first launch (`kernels: #[cube]
//! attention forward runs on Wgpu(..)`), and this test asserts that every fused op's forward and
//! backward line is in the wgpu run's stderr — and that the CPU run printed none.
//!
//! What must match: the first step's loss is the whole forward pass (the CPU's fused kernels
//! against wgpu's cube kernels, on the same host-side init and batch), so it agrees to f32
//! rounding; and the curve after it stays within CURVE_RTOL over the warm-up steps. That
//! second check holds only since the train file holds the per-layer scalars still for their
//! first step (SCALAR_HOLD_STEPS): at init c_proj and mlp_proj are zero, so the blocks add
//! nothing and the final RMSNorm makes the loss invariant to the scale of the residual stream;
//! the gradients of `resid_lambdas` and `x0_lambdas` are exactly zero in exact arithmetic and
//! rounding noise in f32 (measured: 4.5e-10 on the CPU, 1.8e-9 on wgpu), which AdamW's first
//! step (eps 1e-10) normalised into a full ±lr step whose sign followed the backend's summation
//! order, and the two curves parted after one step (the original's train.py has the same
//! property). Then the run is served on its own device and scored by the trusted scorer.

#![cfg(feature = "wgpu")]

mod support;

use support::{losses, serve_and_score, train_on};

/// The `#[cube]` kernels a training step must launch on wgpu (their first-launch lines).
const CUBE_KERNELS: [&str; 10] = [
    "rms_norm forward",
    "rms_norm backward",
    "rope_rms_norm forward",
    "rope_rms_norm backward",
    "attention forward",
    "attention backward (dQ, dK/dV)",
    "relu_square forward",
    "relu_square backward",
    "softcap_cross_entropy forward",
    "softcap_cross_entropy backward",
];

/// The first loss (no update yet): f32 rounding across two backends.
const FIRST_LOSS_RTOL: f64 = 1e-5;
/// Every warm-up step's loss: rounding carried through the updates.
const CURVE_RTOL: f64 = 1e-3;

#[test]
fn test_the_smoke_run_on_wgpu_matches_the_cpu() {
    let cpu = train_on("cpu-ref", "cpu");
    let gpu = train_on("wgpu", "wgpu");
    assert!(cpu.stdout.contains("device: flex (cpu)"), "{}", cpu.stdout);
    assert!(gpu.stdout.contains("device: wgpu"), "the run fell back from wgpu:\n{}", gpu.stdout);
    assert!(gpu.stats.device.contains("wgpu"), "the statistics name the device: {}", gpu.stats.device);
    for kernel in CUBE_KERNELS {
        let line = format!("kernels: #[cube] {kernel} runs on");
        assert!(
            gpu.stderr.contains(&line),
            "the wgpu run did not use the cube kernel `{kernel}`:\n{}",
            gpu.stderr
        );
        assert!(!cpu.stderr.contains(&line), "the CPU run launched a cube kernel:\n{}", cpu.stderr);
    }
    let (a, b) = (losses(&cpu.stdout), losses(&gpu.stdout));
    assert!(a.len() >= 10 && b.len() >= 10, "{}\n{}", cpu.stdout, gpu.stdout);
    let ((step_a, first_a), (step_b, first_b)) = (a[0], b[0]);
    assert_eq!(step_a, step_b);
    let rel = (first_a - first_b).abs() / first_a;
    assert!(rel <= FIRST_LOSS_RTOL, "first loss: cpu {first_a} vs wgpu {first_b} (relative {rel:.2e})");
    // The curves stay together over the warm-up steps (each logged).
    let worst = a.iter().zip(&b).take(10).map(|((_, x), (_, y))| (x - y).abs() / x).fold(0.0, f64::max);
    eprintln!("loss curves over the first 10 steps: largest relative difference {worst:.2e}");
    assert!(
        worst <= CURVE_RTOL,
        "the wgpu curve parts from the CPU's (relative {worst:.2e}):\n{:?}\n{:?}",
        &a[..10],
        &b[..10]
    );
    // wgpu trains: over the ten warm-up steps the loss falls well below ln(vocab).
    let last_b = b[9].1;
    assert!(last_b < first_b - 1.5, "the wgpu loss falls: {first_b} → {last_b}\n{}", gpu.stdout);
    // Each served on its own device and scored by the trusted scorer.
    let va = serve_and_score(&cpu.checkpoint, "cpu").bpb(prepare::Split::Val).unwrap();
    let vb = serve_and_score(&gpu.checkpoint, "wgpu").bpb(prepare::Split::Val).unwrap();
    assert!(vb.is_finite() && vb > 0.0 && vb < 2.0 * va, "val_bpb: cpu {va}, wgpu {vb}");
}
