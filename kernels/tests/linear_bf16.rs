//! `kernels::linear_bf16` and `kernels::matmul_bf16` (AVX512-BF16 on the CPU) against their
//! definition: the operands rounded to bf16 (round to nearest even), multiplied and summed in f32.
//! The reference rounds with burn's own casts and multiplies with burn's f32 matmul, so only the
//! summation order differs. The gradients' reference rounds the upstream gradient too, as
//! PyTorch's autocast does (its backward matmuls take bf16 operands).
//!
//! On a CPU without AVX512-BF16 the same API takes the composed casts; the tests then check that.

mod common;

use burn::tensor::{DType, Tensor};
use common::*;
use kernels::{kernel_calls, reference};

/// bf16(x) back in f32.
fn round(x: Tensor<2>) -> Tensor<2> {
    x.cast(DType::BF16).cast(DType::F32)
}

/// Products of bf16 are exact in f32; sums of k of them differ by order only.
const TOL: f32 = 2e-5;

#[test]
fn linear_bf16_matches_rounded_f32_products_values_and_gradients() {
    let device = autodiff_device();
    // The model's shapes at the standard config (q/k/v, MLP in and out, the head) and ragged ones.
    for (n, inp, out) in [(256, 256, 256), (300, 256, 1024), (64, 1024, 256), (100, 256, 4096), (37, 33, 70)]
    {
        let mut rng = Rng::new((n * inp + out) as u64);
        let xd = rng.normals(n * inp, 1.0);
        let wd = rng.normals(out * inp, 0.05);
        let gd = rng.normals(n * out, 1.0);
        let x = tensor(&xd, [n, inp], &device).require_grad();
        let w = tensor(&wd, [out, inp], &device).require_grad();
        let g = tensor(&gd, [n, out], &device);
        let before = kernel_calls().bf16_matmul;
        let y = kernels::linear_bf16(x.clone(), w.clone());
        let grads = (y.clone() * g.clone()).sum().backward();
        let ran = kernel_calls().bf16_matmul - before;
        if kernels::cpu_has_bf16() {
            assert!(ran >= 3, "the AVX512-BF16 kernel ran {ran} times, want forward + two gradients");
        }
        let plain = burn::tensor::Device::flex();
        let (xr, wr, gr) = (
            round(tensor(&xd, [n, inp], &plain)),
            round(tensor(&wd, [out, inp], &plain)),
            round(tensor(&gd, [n, out], &plain)),
        );
        let y_ref = xr.clone().matmul(wr.clone().transpose());
        let dx_ref = gr.clone().matmul(wr);
        let dw_ref = gr.transpose().matmul(xr);
        let name = format!("linear_bf16 [{n}, {inp}] x [{out}, {inp}]ᵀ");
        assert_close(&format!("{name}: y"), &values(&y), &values(&y_ref), TOL);
        assert_close(&format!("{name}: dx"), &grad_values(&x, &grads), &values(&dx_ref), TOL);
        assert_close(&format!("{name}: dw"), &grad_values(&w, &grads), &values(&dw_ref), TOL);
    }
}

#[test]
fn linear_bf16_is_close_to_f32_and_to_the_composed_casts() {
    // bf16 has an 8-bit mantissa: the product differs from f32 by ~2^-9 relative per operand.
    let device = burn::tensor::Device::flex();
    let mut rng = Rng::new(3);
    let x = tensor(&rng.normals(128 * 256, 1.0), [128, 256], &device);
    let w = tensor(&rng.normals(512 * 256, 0.05), [512, 256], &device);
    let ours = values(&kernels::linear_bf16(x.clone(), w.clone()));
    let f32_product = values(&x.clone().matmul(w.clone().transpose()));
    assert_close("linear_bf16 vs the f32 product", &ours, &f32_product, 2e-2);
    let composed = values(&reference::linear_bf16(x, w));
    // The composed version also rounds its output to bf16: 2^-8 relative.
    assert_close("linear_bf16 vs composed casts", &ours, &composed, 1e-2);
}

#[test]
fn matmul_bf16_reads_transposed_views_in_place() {
    // Muon's polar express multiplies X by Xᵀ and back; the views must not change the result.
    let device = burn::tensor::Device::flex();
    let mut rng = Rng::new(11);
    let xd = rng.normals(96 * 200, 1.0);
    let x = tensor(&xd, [96, 200], &device);
    let before = kernel_calls().bf16_matmul;
    let gram = kernels::matmul_bf16(x.clone(), x.clone().transpose()); // [96, 96]
    let back = kernels::matmul_bf16(x.clone().transpose(), gram.clone()); // [200, 96]
    if kernels::cpu_has_bf16() {
        assert_eq!(kernel_calls().bf16_matmul - before, 2, "both products on the bf16 kernel");
    }
    let xr = round(x);
    let gram_ref = xr.clone().matmul(xr.clone().transpose());
    assert_close("matmul_bf16 X·Xᵀ", &values(&gram), &values(&gram_ref), TOL);
    let back_ref = xr.transpose().matmul(round(gram));
    assert_close("matmul_bf16 Xᵀ·G", &values(&back), &values(&back_ref), TOL);
}
