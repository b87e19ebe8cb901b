//! `kernels::softcap` (the evaluation logit cap) against the composed cap · tanh(x / cap).

mod common;

use burn::tensor::{Device, Tensor};
use common::*;
use kernels::reference;

fn plain_device() -> Device {
    Device::default()
}

#[test]
fn softcap_matches_composed_within_the_tanh_error() {
    let cap = 15.0;
    // Logits from small to far past the cap, both signs.
    let data = Rng::new(5).normals(64 * 1000, 20.0);
    let x = tensor(&data, [64, 1000], &plain_device());
    let ours = values(&kernels::softcap(x.clone(), cap));
    let composed = values(&reference::softcap(x, cap));
    let worst = ours.iter().zip(&composed).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    // tanh within 4e-7 absolute, times the cap, plus rounding of the products.
    assert!(worst < 2e-5, "softcap differs from cap·tanh(x/cap) by {worst}");
    assert!(ours.iter().all(|v| v.abs() <= cap), "a capped logit exceeds the cap");
}

#[test]
fn softcap_leaves_a_shared_input_untouched_and_takes_views() {
    let data = Rng::new(6).normals(12 * 7, 30.0);
    let x = tensor(&data, [12, 7], &plain_device());
    // x is still held here, so the kernel must not write over its buffer.
    let y = values(&kernels::softcap(x.clone(), 15.0));
    assert_eq!(values(&x), data, "the input was overwritten while still in use");
    let yt = values(&kernels::softcap(x.clone().transpose(), 15.0));
    let expect = values(&reference::softcap(x.transpose(), 15.0));
    assert_close("transposed", &yt, &expect, REL_TOL);
    assert_eq!(y.len(), data.len());
}

#[test]
fn softcap_under_autodiff_is_the_composed_op() {
    let x = tensor(&[1.0, -40.0, 3.0], [1, 3], &autodiff_device()).require_grad();
    let y: Tensor<2> = kernels::softcap(x.clone(), 15.0);
    let grads = y.sum().backward();
    let g = grad_values(&x, &grads);
    // d/dx cap·tanh(x/cap) = 1 − tanh²(x/cap).
    for (gi, xi) in g.iter().zip([1.0f32, -40.0, 3.0]) {
        let t = (xi / 15.0).tanh();
        assert!((gi - (1.0 - t * t)).abs() < 1e-5, "gradient {gi} at {xi}");
    }
}
