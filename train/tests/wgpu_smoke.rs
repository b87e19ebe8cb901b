//! The GPU path is code that has run: the smoke profile trained on burn's wgpu backend
//! (on a machine without a GPU, Mesa's software Vulkan, lavapipe) matches the same run on the
//! CPU step for step over the warm-up, where every step's loss is printed.
//!
//! Only with `--features wgpu`, and it needs a Vulkan adapter. `scripts/test.sh` installs
//! lavapipe (`mesa-vulkan-drivers`) and pins it with `VK_ICD_FILENAMES`.
//!
//! Tolerance: the two backends run the same f32 model from the same host-side init on the
//! same batches, but sum in different orders (the CPU uses the fused kernels, wgpu the
//! composed ops), so the losses drift apart by rounding. Measured: about 1e-5 relative at
//! step 0 and a few 1e-4 by step 5; the bound is 2e-3 relative over the first 6 steps.

#![cfg(feature = "wgpu")]

mod support;

use support::{losses, train_on};

const RTOL: f64 = 2e-3;
const STEPS_COMPARED: usize = 6;

#[test]
fn test_the_smoke_run_on_wgpu_matches_the_cpu() {
    let cpu = train_on("cpu-ref", "cpu");
    let gpu = train_on("wgpu", "wgpu");
    assert!(cpu.stdout.contains("device: flex (cpu)"), "{}", cpu.stdout);
    assert!(gpu.stdout.contains("device: wgpu"), "the run fell back from wgpu:\n{}", gpu.stdout);
    assert!(gpu.record.device.contains("wgpu"), "the record names the device: {}", gpu.record.device);
    let (a, b) = (losses(&cpu.stdout), losses(&gpu.stdout));
    assert!(a.len() >= STEPS_COMPARED && b.len() >= STEPS_COMPARED, "{}\n{}", cpu.stdout, gpu.stdout);
    for ((step_a, la), (step_b, lb)) in a.iter().zip(&b).take(STEPS_COMPARED) {
        assert_eq!(step_a, step_b);
        let rel = (la - lb).abs() / la.abs();
        assert!(rel <= RTOL, "step {step_a}: cpu {la} vs wgpu {lb} (relative {rel:.2e} > {RTOL:e})");
    }
    assert!(gpu.record.val_bpb.is_finite() && gpu.record.val_bpb > 0.0);
}
