//! `kernels::rms_norm` against the composed `reference::rms_norm`: forward values and the
//! gradient of a random projection of the output, on the autodiff Flex device.

mod common;

use burn::tensor::{Device, Tensor, TensorData};
use common::*;
use kernels::{RMS_NORM_EPS, kernel_calls, reference};

/// Runs ours and the reference on the same data; returns (ours, reference) as (y, dx) values.
/// `make` turns the leaf into the op's input (identity, a transpose, a slice, ...).
fn both<const D: usize, const E: usize>(
    data: &[f32],
    shape: [usize; D],
    eps: f32,
    device: &Device,
    make: impl Fn(Tensor<D>) -> Tensor<E>,
) -> [(Vec<f32>, Vec<f32>); 2] {
    let run = |ours: bool| {
        let x = tensor(data, shape, device).require_grad();
        let input = make(x.clone());
        let y = if ours { kernels::rms_norm(input, eps) } else { reference::rms_norm(input, eps) };
        // The same random projection for both, so the scalars' gradients are comparable.
        let w = Rng::new(7).normals(y.shape().num_elements(), 1.0);
        let w = Tensor::<E>::from_data(TensorData::new(w, y.shape()), device);
        let grads = (y.clone() * w).sum().backward();
        (values(&y), grad_values(&x, &grads))
    };
    [run(true), run(false)]
}

fn check<const D: usize, const E: usize>(
    name: &str,
    data: &[f32],
    shape: [usize; D],
    eps: f32,
    device: &Device,
    make: impl Fn(Tensor<D>) -> Tensor<E>,
) {
    let [(y, dx), (y_ref, dx_ref)] = both(data, shape, eps, device, make);
    assert_close(&format!("{name}: y"), &y, &y_ref, REL_TOL);
    assert_close(&format!("{name}: dx"), &dx, &dx_ref, REL_TOL);
}

#[test]
fn rms_norm_forward_and_gradient_match_composed() {
    let device = autodiff_device();
    let before = kernel_calls();
    for (i, shape) in [[4, 33, 256], [2, 5, 64], [1, 1, 7]].into_iter().enumerate() {
        let data = Rng::new(i as u64).normals(shape.iter().product(), 2.0);
        check(&format!("rms_norm {shape:?}"), &data, shape, RMS_NORM_EPS, &device, |x| x);
    }
    let after = kernel_calls();
    assert!(after.rms_norm_forward >= before.rms_norm_forward + 3, "the Flex forward kernel did not run");
    assert!(after.rms_norm_backward >= before.rms_norm_backward + 3, "the backward kernel did not run");
}

#[test]
fn rms_norm_on_qk_heads_matches_composed() {
    // The q/k norm of the model: [B, T, H, D] normalised over D = 64.
    let shape = [2, 19, 4, 64];
    let data = Rng::new(11).normals(shape.iter().product(), 1.0);
    check("rms_norm [B,T,H,D]", &data, shape, RMS_NORM_EPS, &autodiff_device(), |x| x);
}

#[test]
fn rms_norm_eps_matters_for_tiny_inputs() {
    // mean(x²) ≈ 1e-10 ≪ eps: the result depends on where eps enters; both must agree.
    let shape = [3, 48];
    let data = Rng::new(3).normals(shape.iter().product(), 1e-5);
    check("rms_norm tiny x, eps 1.19e-7", &data, shape, RMS_NORM_EPS, &autodiff_device(), |x| x);
    check("rms_norm tiny x, eps 1e-3", &data, shape, 1e-3, &autodiff_device(), |x| x);
}

#[test]
fn rms_norm_accepts_transposed_and_sliced_inputs() {
    let device = autodiff_device();
    let data = Rng::new(5).normals(64 * 40, 1.0);
    // [64, 40] transposed: rows of 64 with stride 40.
    check("rms_norm transposed", &data, [64, 40], RMS_NORM_EPS, &device, |x| x.transpose());
    // [40, 64] with a column slice: rows of 32 at stride 64.
    check("rms_norm sliced", &data, [40, 64], RMS_NORM_EPS, &device, |x| x.narrow(1, 16, 32));
}

#[test]
fn rms_norm_untracked_and_plain_flex_match_composed() {
    let shape = [8, 96];
    let data = Rng::new(9).normals(shape.iter().product(), 3.0);
    for device in [autodiff_device(), Device::flex()] {
        let before = kernel_calls().rms_norm_forward;
        let y = kernels::rms_norm(tensor(&data, shape, &device), RMS_NORM_EPS);
        let y_ref = reference::rms_norm(tensor(&data, shape, &device), RMS_NORM_EPS);
        assert_close(&format!("rms_norm untracked on {device:?}"), &values(&y), &values(&y_ref), REL_TOL);
        assert!(kernel_calls().rms_norm_forward > before, "the Flex forward kernel did not run");
    }
}

#[test]
fn rms_norm_works_with_gradient_checkpointing() {
    let shape = [6, 128];
    let data = Rng::new(13).normals(shape.iter().product(), 1.0);
    let device = autodiff_device().gradient_checkpointing();
    let before = kernel_calls().rms_norm_backward;
    check("rms_norm, gradient checkpointing", &data, shape, RMS_NORM_EPS, &device, |x| x);
    assert!(kernel_calls().rms_norm_backward > before, "the backward kernel did not run");
}
