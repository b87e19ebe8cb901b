//! `kernels::rope_rms_norm` against the composed `reference::rope_rms_norm` (rotary by narrow,
//! multiply and cat, then RMSNorm): values and the gradient of a random projection.

mod common;

use burn::tensor::{Device, Tensor};
use common::*;
use kernels::{RMS_NORM_EPS, kernel_calls, reference};

/// cos and sin [T, D/2] of the original's angles: position t, frequency 10000^(-2i/D).
fn tables(t: usize, d: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let half = d / 2;
    let angle = |p: usize, i: usize| p as f32 / 10000f32.powf(2.0 * i as f32 / d as f32);
    let cos: Vec<f32> = (0..t * half).map(|j| angle(j / half, j % half).cos()).collect();
    let sin: Vec<f32> = (0..t * half).map(|j| angle(j / half, j % half).sin()).collect();
    (tensor(&cos, [t, half], device), tensor(&sin, [t, half], device))
}

/// (y, dx) from ours or the reference, on leaf data of `leaf_shape` passed through `layout`.
fn run(
    ours: bool,
    data: &[f32],
    leaf_shape: [usize; 4],
    device: &Device,
    layout: fn(Tensor<4>) -> Tensor<4>,
) -> (Vec<f32>, Vec<f32>) {
    let x = tensor(data, leaf_shape, device).require_grad();
    let input = layout(x.clone());
    let [_, t, _, d] = input.dims();
    let (cos, sin) = tables(t, d, device);
    let y = if ours {
        kernels::rope_rms_norm(input, cos, sin, RMS_NORM_EPS)
    } else {
        reference::rope_rms_norm(input, cos, sin, RMS_NORM_EPS)
    };
    let w = tensor(&Rng::new(99).normals(y.shape().num_elements(), 1.0), y.dims(), device);
    let grads = (y.clone() * w).sum().backward();
    (values(&y), grad_values(&x, &grads))
}

fn check(name: &str, leaf_shape: [usize; 4], device: &Device, layout: fn(Tensor<4>) -> Tensor<4>) {
    let data = Rng::new(17).normals(leaf_shape.iter().product(), 1.5);
    let before = kernel_calls();
    let (y, dx) = run(true, &data, leaf_shape, device, layout);
    let after = kernel_calls();
    assert!(
        after.rope_rms_norm_forward > before.rope_rms_norm_forward,
        "{name}: the Flex forward kernel did not run"
    );
    assert!(
        after.rope_rms_norm_backward > before.rope_rms_norm_backward,
        "{name}: the backward kernel did not run"
    );
    let (y_ref, dx_ref) = run(false, &data, leaf_shape, device, layout);
    assert_close(&format!("{name}: y"), &y, &y_ref, REL_TOL);
    assert_close(&format!("{name}: dx"), &dx, &dx_ref, REL_TOL);
}

#[test]
fn rope_rms_norm_matches_composed() {
    check("rope_rms_norm [2,37,3,64]", [2, 37, 3, 64], &autodiff_device(), |x| x);
    check("rope_rms_norm [1,5,2,6]", [1, 5, 2, 6], &autodiff_device(), |x| x);
}

#[test]
fn rope_rms_norm_accepts_strided_input() {
    // Leaf [B, H, T, D] seen as [B, T, H, D].
    check("rope_rms_norm strided", [2, 3, 21, 16], &autodiff_device(), |x| x.swap_dims(1, 2));
}

#[test]
fn rope_rms_norm_works_with_gradient_checkpointing() {
    check("rope_rms_norm, checkpointing", [1, 9, 2, 32], &autodiff_device().gradient_checkpointing(), |x| x);
}

#[test]
fn rope_rms_norm_untracked_and_plain_flex_match_composed() {
    let shape = [2, 11, 2, 16];
    let data = Rng::new(3).normals(shape.iter().product(), 1.0);
    for device in [autodiff_device(), Device::flex()] {
        let (cos, sin) = tables(11, 16, &device);
        let before = kernel_calls().rope_rms_norm_forward;
        let y = kernels::rope_rms_norm(tensor(&data, shape, &device), cos.clone(), sin.clone(), RMS_NORM_EPS);
        assert!(kernel_calls().rope_rms_norm_forward > before, "the Flex forward kernel did not run");
        let y_ref = reference::rope_rms_norm(tensor(&data, shape, &device), cos, sin, RMS_NORM_EPS);
        assert_close(
            &format!("untracked rope_rms_norm on {device:?}"),
            &values(&y),
            &values(&y_ref),
            REL_TOL,
        );
    }
}

#[test]
fn rope_rms_norm_gives_tracked_tables_their_gradient() {
    // Trainable tables are not what the model does, but if they are tracked they must get a
    // gradient: the composed version runs then.
    let device = autodiff_device();
    let x = tensor(&Rng::new(5).normals(64, 1.0), [2, 4, 1, 8], &device);
    let (cos, sin) = tables(4, 8, &device);
    let cos = cos.require_grad();
    let grads = kernels::rope_rms_norm(x, cos.clone(), sin, RMS_NORM_EPS).sum().backward();
    assert!(cos.grad(&grads).is_some(), "tracked cos table got no gradient");
}

#[test]
fn rope_rms_norm_at_position_zero_is_rms_norm() {
    // cos 1, sin 0 at t = 0: the rotation is the identity.
    let device = Device::flex();
    let data = Rng::new(8).normals(3 * 64, 1.0);
    let x = tensor(&data, [1, 1, 3, 64], &device);
    let (cos, sin) = tables(1, 64, &device);
    let y = kernels::rope_rms_norm(x.clone(), cos, sin, RMS_NORM_EPS);
    assert_close(
        "t = 0: rope_rms_norm vs rms_norm",
        &values(&y),
        &values(&kernels::rms_norm(x, RMS_NORM_EPS)),
        1e-6,
    );
}

#[test]
#[should_panic(expected = "kernels::rope_rms_norm")]
fn rope_rms_norm_rejects_tables_of_the_wrong_length() {
    let device = Device::flex();
    let (cos, sin) = tables(5, 8, &device);
    let _ = kernels::rope_rms_norm(Tensor::<4>::zeros([1, 6, 1, 8], &device), cos, sin, RMS_NORM_EPS);
}
