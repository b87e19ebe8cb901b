//! Shared helpers for the kernel tests: deterministic random tensors, read-back, and the
//! comparison that prints the max differences (llm.c `test_gpt2.c` style) before bounding them.

#![allow(dead_code)] // each test binary uses a different subset

use burn::tensor::{Device, Int, Tensor, TensorData};

/// f32 tolerance for ours vs composed, relative to the largest reference magnitude.
pub const REL_TOL: f32 = 1e-4;

/// The device the gradients are checked on.
pub fn autodiff_device() -> Device {
    Device::flex().autodiff()
}

/// SplitMix64: a few lines, no dependency, same numbers on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Approximately standard normal (sum of 4 uniforms, rescaled): enough spread for tests.
    pub fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() * (3.0f32 / 4.0).sqrt()
    }

    pub fn normals(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * std).collect()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

pub fn tensor<const D: usize>(data: &[f32], shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), device)
}

pub fn int_tensor(data: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(data.to_vec(), [data.len()]), device)
}

pub fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().convert::<f32>().try_to_vec::<f32>().expect("f32 data")
}

/// The input's gradient after `backward`, as values.
pub fn grad_values<const D: usize>(t: &Tensor<D>, grads: &burn::tensor::Gradients) -> Vec<f32> {
    values(&t.grad(grads).expect("input has a gradient"))
}

/// Max |ours − reference| and the same relative to max |reference|; prints both, then asserts
/// the relative one is within `rel_tol`.
pub fn assert_close(what: &str, ours: &[f32], reference: &[f32], rel_tol: f32) {
    assert_eq!(ours.len(), reference.len(), "{what}: lengths differ");
    let mut max_abs = 0.0f32;
    let mut scale = 0.0f32;
    for (&a, &b) in ours.iter().zip(reference) {
        assert!(a.is_finite() == b.is_finite(), "{what}: ours {a} vs reference {b}");
        max_abs = max_abs.max((a - b).abs());
        scale = scale.max(b.abs());
    }
    let rel = if scale > 0.0 { max_abs / scale } else { max_abs };
    println!("{what:<48} max abs diff {max_abs:.3e}  rel {rel:.3e}  (max |ref| {scale:.3e})");
    assert!(rel <= rel_tol, "{what}: relative difference {rel:.3e} exceeds {rel_tol:.1e}");
}
