//! Cross-entropy of softcapped logits, z = cap · tanh(x / cap), mean over targets ≠ −1, as
//! `#[cube]` kernels. Same math as `flex/cross_entropy.rs`: z ∈ (−cap, cap), so `cap` is a safe
//! shift for the exponentials and one read of a row gives its log-sum-exp; the backward is one
//! read and one write per logit, in place over the logits when nothing else holds them (at the
//! h100 profile the logits are [262144, 8192], 8.6 GB in f32: a second copy would not fit).
//!
//! One cube per row, its units striding over the vocabulary, a shared-memory tree for the sum.
//! The mean's count stays on the device ([1] tensor), so neither pass waits for the host.

use burn::backend::ops::FloatTensorOps;
use burn::tensor::DType;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::{address_type, contiguous, dims, empty, launched, row_threads};
use crate::counters;

/// What the forward produces: the loss [1] and what the backward needs.
pub(crate) struct Forward {
    pub(crate) loss: CubeTensor,
    /// Per-row log-sum-exp of the capped logits, [N] (0 for ignored rows).
    pub(crate) lse: CubeTensor,
    /// How many targets are not ignored, [1] f32.
    pub(crate) count: CubeTensor,
}

fn check(logits: &CubeTensor, targets: &CubeTensor, cap: f32) -> (usize, usize) {
    let (ld, td) = (dims(logits), dims(targets));
    assert!(
        ld.len() == 2 && td == [ld[0]],
        "kernels::softcap_cross_entropy: want logits [N, V] and targets [N]; got {ld:?}, {td:?}"
    );
    assert!(cap > 0.0, "kernels::softcap_cross_entropy: cap must be positive, got {cap}");
    (ld[0], ld[1])
}

/// (logits [N, V], targets [N] of any integer dtype) → loss [1], lse [N], count [1].
pub(crate) fn cross_entropy_forward(logits: &CubeTensor, targets: &CubeTensor, cap: f32) -> Forward {
    let (n, v) = check(logits, targets, cap);
    let targets = into_contiguous(targets.clone());
    let lse = empty(logits, [n]);
    let row_loss = empty(logits, [n]);
    let counted = empty(logits, [n]);
    launched(&counters::CUBE_CROSS_ENTROPY_FORWARD, "softcap_cross_entropy forward", logits);
    assert!(v > 0 || n == 0, "kernels::softcap_cross_entropy: a vocabulary of 0 logits");
    if n > 0 {
        let threads = row_threads(logits);
        cross_entropy_forward_kernel::launch(
            &logits.client,
            super::folded_count(n),
            CubeDim::new_1d(threads),
            address_type(&[logits]),
            logits.clone().into_tensor_arg(),
            targets.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            row_loss.clone().into_tensor_arg(),
            counted.clone().into_tensor_arg(),
            n as u32,
            v as u32,
            cap,
            threads as usize,
            burn::backend::cubecl::dtype_to_storage_type(targets.dtype),
        );
    }
    // With every target ignored (or N = 0) the mean is 0/0 = NaN, as in PyTorch.
    let count = CubeBackend::float_sum(counted);
    let loss = CubeBackend::float_div(CubeBackend::float_sum(row_loss), count.clone());
    Forward { loss, lse, count }
}

/// (logits [N, V], targets [N], lse [N], count [1], upstream gradient [1]) → dlogits [N, V],
/// written over the logits' buffer when no one else holds it.
pub(crate) fn cross_entropy_backward(
    logits: CubeTensor,
    targets: &CubeTensor,
    lse: &CubeTensor,
    count: &CubeTensor,
    cap: f32,
    grad: CubeTensor,
) -> CubeTensor {
    let (n, v) = check(&logits, targets, cap);
    let logits = contiguous(logits, "softcap_cross_entropy backward");
    // In place when we hold the only handle; else a copy to overwrite (x · 1 allocates a new
    // buffer because the input is shared).
    let dx = if logits.can_mut() { logits } else { CubeBackend::float_mul_scalar(logits, 1.0.into()) };
    let grad = contiguous(grad, "softcap_cross_entropy backward");
    launched(&counters::CUBE_CROSS_ENTROPY_BACKWARD, "softcap_cross_entropy backward", &dx);
    if n > 0 && v > 0 {
        let threads = row_threads(&dx);
        cross_entropy_backward_kernel::launch(
            &dx.client,
            super::folded_count(n),
            CubeDim::new_1d(threads),
            address_type(&[&dx]),
            dx.clone().into_tensor_arg(),
            into_contiguous(targets.clone()).into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            grad.into_tensor_arg(),
            count.clone().into_tensor_arg(),
            n as u32,
            v as u32,
            cap,
            threads as usize,
            burn::backend::cubecl::dtype_to_storage_type(targets.dtype),
        );
    }
    assert_eq!(dx.dtype, DType::F32);
    dx
}

/// The linear index of this cube in a `folded_count` grid.
#[cube]
pub(crate) fn cube_index() -> usize {
    (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize
}

/// Sum of `red[0 .. CUBE_DIM_X]` over the cube, left in `red[0]` (CUBE_DIM_X a power of two).
/// Every unit must call it (it synchronises the cube).
#[cube]
pub(crate) fn cube_sum(red: &mut Shared<[f32]>, unit: usize) {
    sync_cube();
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if unit < stride {
            red[unit] += red[unit + stride];
        }
        sync_cube();
        stride /= 2;
    }
}

/// Cube = row: lse = cap + ln Σ_c exp(z_c − cap), row loss = lse − z_target, counted = 1; or
/// 0, 0, 0 for an ignored row.
#[cube(launch, address_type = "dynamic")]
fn cross_entropy_forward_kernel<I: Int>(
    logits: &Tensor<f32>,
    targets: &Tensor<I>,
    lse: &mut Tensor<f32>,
    row_loss: &mut Tensor<f32>,
    counted: &mut Tensor<f32>,
    rows: u32,
    vocab: u32,
    cap: f32,
    #[comptime] threads: usize,
    #[define(I)] _target_dtype: ElemType,
) {
    let row = cube_index();
    if row >= rows as usize {
        terminate!();
    }
    let v = vocab as usize;
    let unit = UNIT_POS_X as usize;
    let target = i64::cast_from(targets[row]);
    let inv_cap = 1.0f32 / cap;
    let base = row * v;
    let mut partial = 0.0f32;
    let mut c = unit;
    while c < v {
        let z = cap * (logits[base + c] * inv_cap).tanh();
        partial += (z - cap).exp();
        c += threads;
    }
    let mut red = Shared::<[f32]>::new_slice(threads);
    red[unit] = partial;
    cube_sum(&mut red, unit);
    if unit == 0 {
        if target == -1i64 {
            lse[row] = 0.0;
            row_loss[row] = 0.0;
            counted[row] = 0.0;
        } else {
            let l = cap + red[0].ln();
            let z_target = cap * (logits[base + usize::cast_from(target)] * inv_cap).tanh();
            lse[row] = l;
            row_loss[row] = l - z_target;
            counted[row] = 1.0;
        }
    }
}

/// Cube = row, in place over the logits: dx = g/count · (softmax(z) − onehot) · (1 − tanh²).
#[cube(launch, address_type = "dynamic")]
fn cross_entropy_backward_kernel<I: Int>(
    dx: &mut Tensor<f32>,
    targets: &Tensor<I>,
    lse: &Tensor<f32>,
    grad: &Tensor<f32>,
    count: &Tensor<f32>,
    rows: u32,
    vocab: u32,
    cap: f32,
    #[comptime] threads: usize,
    #[define(I)] _target_dtype: ElemType,
) {
    let row = cube_index();
    if row >= rows as usize {
        terminate!();
    }
    let v = vocab as usize;
    let base = row * v;
    let target = i64::cast_from(targets[row]);
    let mut c = UNIT_POS_X as usize;
    if target == -1i64 {
        while c < v {
            dx[base + c] = 0.0;
            c += threads;
        }
    } else {
        // Only counted rows reach here, so count ≥ 1.
        let coef = grad[0] / count[0];
        let l = lse[row];
        let inv_cap = 1.0f32 / cap;
        let tc = usize::cast_from(target);
        while c < v {
            let th = (dx[base + c] * inv_cap).tanh();
            let mut g = coef * (cap * th - l).exp();
            if c == tc {
                g -= coef;
            }
            dx[base + c] = g * (1.0 - th * th);
            c += threads;
        }
    }
}
