//! Attention memory on a GPU backend as the context grows: the `#[cube]` kernels keep O(T) per
//! head (q, k, v, o and the log-sum-exp), the composed version keeps [B, H, T, T] scores and
//! probabilities for its backward. Measured with the device allocator's own count of bytes in
//! use (cubecl's memory report), at a reduced width (2 heads of 32) so lavapipe can run it.
//!
//! What is measured for each T: the bytes still in use after the forward, beyond the inputs
//! (what autodiff keeps for the backward), and the bytes in use right after the backward, the
//! gradients included. Ours must grow like T (×8 from T = 128 to 1024, give or take the
//! fixed-size part), the composed version like T² (×30 and more).
//!
//! `--features wgpu` (lavapipe in CI) or `--features cuda` with KERNELS_TEST_DEVICE=cuda.

#![cfg(any(feature = "wgpu", feature = "cuda"))]

mod common;

use burn::tensor::Device;
use common::*;
use kernels::reference;

fn gpu() -> Device {
    match std::env::var("KERNELS_TEST_DEVICE").as_deref() {
        #[cfg(feature = "cuda")]
        Ok("cuda") => Device::cuda(0),
        #[cfg(feature = "wgpu")]
        Ok("wgpu") | Err(_) => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        other => panic!("KERNELS_TEST_DEVICE={other:?}: this build has no such device"),
    }
}

fn in_use(device: &Device) -> u64 {
    device.memory_pool_usage().expect("a cubecl device reports its memory").bytes_in_use
}

/// (bytes kept after the forward, bytes in use after the backward), both beyond the inputs.
fn attention_memory(ours: bool, t: usize) -> (u64, u64) {
    let (b, h, d, window) = (1, 2, 32, t); // full causal: the composed version's worst case is its usual case
    let device = gpu().autodiff();
    let mut rng = Rng::new(t as u64);
    let leaf = |rng: &mut Rng| tensor(&rng.normals(b * t * h * d, 1.0), [b, t, h, d], &device).require_grad();
    let (q, k, v) = (leaf(&mut rng), leaf(&mut rng), leaf(&mut rng));
    let w = tensor(&rng.normals(b * t * h * d, 1.0), [b, t, h, d], &device);
    device.memory_cleanup();
    let base = in_use(&device);
    let scale = 1.0 / (d as f32).sqrt();
    let o = if ours {
        kernels::attention(q.clone(), k.clone(), v.clone(), window, scale)
    } else {
        reference::attention(q.clone(), k.clone(), v.clone(), window, scale)
    };
    let kept = in_use(&device) - base;
    let grads = (o * w).sum().backward();
    let after = in_use(&device) - base;
    // The gradients are real (and stay alive until here).
    assert!(q.grad(&grads).is_some() && k.grad(&grads).is_some() && v.grad(&grads).is_some());
    (kept, after)
}

#[test]
fn attention_memory_grows_linearly_in_t_with_the_cube_kernels() {
    let lengths = [128usize, 256, 512, 1024];
    println!(
        "{:>6} {:>14} {:>14} {:>14} {:>14}",
        "T", "ours kept", "ours after bw", "composed kept", "comp after bw"
    );
    let mut ours = Vec::new();
    let mut composed = Vec::new();
    for &t in &lengths {
        let (a, b) = (attention_memory(true, t), attention_memory(false, t));
        println!("{t:>6} {:>14} {:>14} {:>14} {:>14}", a.0, a.1, b.0, b.1);
        ours.push(a);
        composed.push(b);
    }
    let growth = |v: &[(u64, u64)], f: fn(&(u64, u64)) -> u64| f(&v[3]) as f64 / f(&v[0]).max(1) as f64;
    let (ours_kept, ours_after) = (growth(&ours, |x| x.0), growth(&ours, |x| x.1));
    let (comp_kept, comp_after) = (growth(&composed, |x| x.0), growth(&composed, |x| x.1));
    println!(
        "growth T 128 → 1024 (×8 is linear, ×64 quadratic): ours kept ×{ours_kept:.1}, after ×{ours_after:.1}; composed kept ×{comp_kept:.1}, after ×{comp_after:.1}"
    );
    // Linear: ×8 for an 8× longer context, with slack for allocator rounding.
    assert!((6.0..=10.0).contains(&ours_kept), "ours kept ×{ours_kept:.1} from T 128 to 1024: not linear");
    assert!((6.0..=10.0).contains(&ours_after), "ours after backward ×{ours_after:.1}: not linear");
    // The composed version is what the kernels replace: quadratic, and already far larger at 1024.
    assert!(comp_kept > 30.0, "composed kept ×{comp_kept:.1}: expected quadratic growth");
    assert!(composed[3].0 > 5 * ours[3].0, "at T = 1024 the composed version should keep far more than ours");
}
