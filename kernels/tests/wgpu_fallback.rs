//! The two hand-written implementations against each other, across backends: every fused op on
//! wgpu (the `#[cube]` kernels) against the same op on Flex (the CPU kernels), values and
//! gradients, so the window stays real and nothing is silently dropped on the GPU path. (Each
//! against the composed version on its own device: `cube_kernels.rs` and the CPU tests.)
//!
//! Only with `--features wgpu`, and it needs a Vulkan adapter; on a machine without a GPU,
//! Mesa's lavapipe does (shared/notes/wgpu-lavapipe.md):
//! `VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json cargo test --release -p kernels --features wgpu --test wgpu_fallback`

#![cfg(feature = "wgpu")]

mod common;

use burn::tensor::{Device, DeviceKind, Tensor};
use common::*;

/// f32 on two different backends: a looser bound than Flex vs Flex.
const CROSS_BACKEND_TOL: f32 = 1e-3;

fn wgpu() -> Device {
    Device::wgpu(DeviceKind::DefaultDevice).autodiff()
}

/// (output, input gradients) of `op` on `device`, inputs built from `data`.
fn run<const D: usize>(
    device: &Device,
    inputs: &[(Vec<f32>, [usize; 4])],
    op: impl Fn(Vec<Tensor<4>>) -> Tensor<D>,
) -> Vec<Vec<f32>> {
    let leaves: Vec<Tensor<4>> = inputs.iter().map(|(d, s)| tensor(d, *s, device).require_grad()).collect();
    let y = op(leaves.clone());
    let w = Tensor::<D>::from_data(
        burn::tensor::TensorData::new(Rng::new(3).normals(y.shape().num_elements(), 1.0), y.shape()),
        device,
    );
    let grads = (y.clone() * w).sum().backward();
    std::iter::once(values(&y)).chain(leaves.iter().map(|x| grad_values(x, &grads))).collect()
}

fn check<const D: usize>(
    name: &str,
    inputs: &[(Vec<f32>, [usize; 4])],
    op: impl Fn(Vec<Tensor<4>>) -> Tensor<D>,
) {
    let on_flex = run(&autodiff_device(), inputs, &op);
    let on_wgpu = run(&wgpu(), inputs, &op);
    for (i, (a, b)) in on_wgpu.iter().zip(&on_flex).enumerate() {
        assert_close(&format!("{name} [{i}] wgpu vs flex"), a, b, CROSS_BACKEND_TOL);
    }
}

#[test]
fn composed_fallback_on_wgpu_matches_the_flex_kernels() {
    let mut rng = Rng::new(1);
    let q = (rng.normals(2 * 20 * 2 * 8, 1.0), [2, 20, 2, 8]);
    let k = (rng.normals(2 * 20 * 8, 1.0), [2, 20, 1, 8]);
    let v = (rng.normals(2 * 20 * 8, 1.0), [2, 20, 1, 8]);
    check("attention w=5 gqa", &[q.clone(), k, v], |x| {
        kernels::attention(x[0].clone(), x[1].clone(), x[2].clone(), 5, 0.35)
    });
    check("rms_norm", &[q.clone()], |x| kernels::rms_norm(x[0].clone(), kernels::RMS_NORM_EPS));
    check("relu_square", &[q.clone()], |x| kernels::relu_square(x[0].clone()));
    check("rope_rms_norm", &[q], |x| {
        let device = x[0].device();
        let cos = tensor(&Rng::new(4).normals(20 * 4, 1.0), [20, 4], &device);
        let sin = tensor(&Rng::new(5).normals(20 * 4, 1.0), [20, 4], &device);
        kernels::rope_rms_norm(x[0].clone(), cos, sin, kernels::RMS_NORM_EPS)
    });
    let logits = (rng.normals(6 * 50, 20.0), [1, 1, 6, 50]);
    check("softcap_cross_entropy", &[logits], |x| {
        let device = x[0].device();
        let targets = int_tensor(&[3, -1, 49, 0, 7, 7], &device);
        kernels::softcap_cross_entropy(x[0].clone().reshape([6, 50]), targets, 15.0)
    });
}
