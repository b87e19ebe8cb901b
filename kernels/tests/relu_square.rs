//! `kernels::relu_square` against the composed `reference::relu_square` (relu then square).

mod common;

use burn::tensor::{Device, Tensor};
use common::*;
use kernels::{kernel_calls, reference};

fn run(
    ours: bool,
    data: &[f32],
    shape: [usize; 2],
    device: &Device,
    layout: fn(Tensor<2>) -> Tensor<2>,
) -> (Vec<f32>, Vec<f32>) {
    let x = tensor(data, shape, device).require_grad();
    let input = layout(x.clone());
    let y = if ours { kernels::relu_square(input) } else { reference::relu_square(input) };
    let w = tensor(&Rng::new(21).normals(y.shape().num_elements(), 1.0), y.dims(), device);
    let grads = (y.clone() * w).sum().backward();
    (values(&y), grad_values(&x, &grads))
}

fn check(name: &str, shape: [usize; 2], device: &Device, layout: fn(Tensor<2>) -> Tensor<2>) {
    let data = Rng::new(31).normals(shape.iter().product(), 2.0);
    let before = kernel_calls();
    let (y, dx) = run(true, &data, shape, device, layout);
    let after = kernel_calls();
    assert!(
        after.relu_square_forward > before.relu_square_forward,
        "{name}: the Flex forward kernel did not run"
    );
    assert!(
        after.relu_square_backward > before.relu_square_backward,
        "{name}: the backward kernel did not run"
    );
    let (y_ref, dx_ref) = run(false, &data, shape, device, layout);
    assert_close(&format!("{name}: y"), &y, &y_ref, REL_TOL);
    assert_close(&format!("{name}: dx"), &dx, &dx_ref, REL_TOL);
}

#[test]
fn relu_square_matches_composed() {
    check("relu_square [64, 1024]", [64, 1024], &autodiff_device(), |x| x);
    check("relu_square [3, 5]", [3, 5], &autodiff_device(), |x| x);
}

#[test]
fn relu_square_accepts_strided_input() {
    check("relu_square transposed", [40, 24], &autodiff_device(), |x| x.transpose());
}

#[test]
fn relu_square_works_with_gradient_checkpointing() {
    check("relu_square, checkpointing", [16, 64], &autodiff_device().gradient_checkpointing(), |x| {
        x.mul_scalar(1.0)
    });
}

#[test]
fn relu_square_is_exact_on_known_values() {
    let device = Device::flex();
    let y = kernels::relu_square(tensor(&[-2.0, -0.0, 0.5, 3.0], [1, 4], &device));
    assert_eq!(values(&y), [0.0, 0.0, 0.25, 9.0]);
    // Gradient 2·relu(x): 0 for x ≤ 0, recovered exactly from y = x² for x > 0.
    let device = autodiff_device();
    let x = tensor(&[-2.0, 0.0, 0.5, 3.0, 1e-3, 7.25], [1, 6], &device).require_grad();
    let grads = kernels::relu_square(x.clone()).sum().backward();
    assert_eq!(grad_values(&x, &grads), [0.0, 0.0, 1.0, 6.0, 2e-3, 14.5]);
}

#[test]
fn relu_square_keeps_nan() {
    let y = kernels::relu_square(tensor(&[f32::NAN, 1.0], [1, 2], &Device::flex()));
    assert!(values(&y)[0].is_nan(), "a NaN input must not be hidden by the activation");
}

#[test]
fn relu_square_untracked_and_plain_flex_match_composed() {
    let data = Rng::new(2).normals(300, 1.0);
    for device in [autodiff_device(), Device::flex()] {
        let y = kernels::relu_square(tensor(&data, [10, 30], &device));
        let y_ref = reference::relu_square(tensor(&data, [10, 30], &device));
        assert_close(&format!("untracked relu_square on {device:?}"), &values(&y), &values(&y_ref), REL_TOL);
    }
}
