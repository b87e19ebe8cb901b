//! Cross-entropy of softcapped logits, z = cap · tanh(x / cap), mean over targets ≠ −1.
//!
//! The logits are the biggest tensor of a step ([B·T, vocab] = 4096 × 4096 × 4 B = 64 MB at the
//! standard config). Composed, the softcap, log-softmax, gather and mean, and their backward, make
//! a dozen passes over it and allocate several copies. Here the forward is one read: because
//! z ∈ (−cap, cap), `cap` is a safe shift for the exponentials (e^(z−cap) ≥ e^(−2·cap), far from
//! underflow at cap = 15), so no separate max pass is needed. The backward is one read of the
//! logits and one write of the gradient — into the logits' own buffer when nothing else holds it:
//! dx = g/N · (softmax(z) − onehot(target)) · (1 − (z/cap)²). Only the per-row logsumexp is saved.

use burn::backend::flex::FlexTensor;
use burn::tensor::DType;
use rayon::prelude::*;

use super::math::{self, Isa, multiversion};
use super::{contiguous, counters, dims, f32s, tensor};

/// Targets equal to this are ignored (PyTorch's `ignore_index=-1`, used for padding).
pub(crate) const IGNORE: i64 = -1;

/// Rows per rayon task (each row is a whole vocabulary).
const ROWS_PER_TASK: usize = 16;

/// What the forward produces: the loss and what the backward needs.
pub(crate) struct Forward {
    /// Mean loss over the counted rows, [1] (NaN when every target is ignored, as in PyTorch).
    pub(crate) loss: FlexTensor,
    /// Per-row logsumexp of the capped logits, [N] (0 for ignored rows).
    pub(crate) lse: FlexTensor,
    /// How many targets were not ignored.
    pub(crate) counted: usize,
}

/// Targets as i64, whatever integer dtype Flex holds them in.
pub(crate) fn targets_i64(t: &FlexTensor) -> Vec<i64> {
    let t = t.to_contiguous();
    match t.dtype() {
        DType::I64 => t.as_slice::<i64>().unwrap().to_vec(),
        DType::I32 => t.as_slice::<i32>().unwrap().iter().map(|&x| x as i64).collect(),
        DType::I16 => t.as_slice::<i16>().unwrap().iter().map(|&x| x as i64).collect(),
        DType::I8 => t.as_slice::<i8>().unwrap().iter().map(|&x| x as i64).collect(),
        DType::U64 => t.as_slice::<u64>().unwrap().iter().map(|&x| x as i64).collect(),
        DType::U32 => t.as_slice::<u32>().unwrap().iter().map(|&x| x as i64).collect(),
        DType::U16 => t.as_slice::<u16>().unwrap().iter().map(|&x| x as i64).collect(),
        DType::U8 => t.as_slice::<u8>().unwrap().iter().map(|&x| x as i64).collect(),
        other => panic!("kernels::softcap_cross_entropy: targets must be integers, got {other:?}"),
    }
}

/// (logits: [N, V], targets: [N]) → loss [1], lse [N], counted.
pub(crate) fn cross_entropy_forward(logits: &FlexTensor, targets: &[i64], cap: f32) -> Forward {
    counters::bump(&counters::CROSS_ENTROPY_FORWARD);
    let shape = dims(logits);
    let (n, v) = check(&shape, targets, cap);
    let x = f32s(logits);
    let mut lse = vec![0.0f32; n];
    let (total, counted) = if v == 0 {
        (0.0, 0)
    } else {
        lse.par_chunks_mut(ROWS_PER_TASK)
            .zip(x.par_chunks(ROWS_PER_TASK * v))
            .zip(targets.par_chunks(ROWS_PER_TASK))
            .map(|((lse, x), targets)| {
                let mut total = 0.0f64;
                let mut counted = 0usize;
                for ((lse, row), &target) in lse.iter_mut().zip(x.chunks_exact(v)).zip(targets) {
                    if target == IGNORE {
                        continue;
                    }
                    let (row_lse, loss) = forward_row(row, target as usize, cap);
                    *lse = row_lse;
                    total += f64::from(loss);
                    counted += 1;
                }
                (total, counted)
            })
            .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let loss = (total / counted as f64) as f32;
    Forward { loss: tensor(vec![loss], vec![1]), lse: tensor(lse, vec![n]), counted }
}

/// (logits: [N, V], targets: [N], lse: [N], upstream gradient g of the mean) → dlogits: [N, V].
/// Consumes the logits so their buffer can be reused for the gradient when no one else holds it.
pub(crate) fn cross_entropy_backward(
    logits: FlexTensor,
    targets: &[i64],
    lse: &FlexTensor,
    counted: usize,
    cap: f32,
    grad: f32,
) -> FlexTensor {
    counters::bump(&counters::CROSS_ENTROPY_BACKWARD);
    let shape = dims(&logits);
    let (_, v) = check(&shape, targets, cap);
    // grad / 0 only happens when every row is ignored, and then no row reads it.
    let coef = grad / counted as f32;
    let lse = f32s(lse);
    let mut logits = contiguous(logits, "softcap_cross_entropy backward");
    let rows = |dx: &mut [f32], x: Option<&[f32]>| {
        // x is None when dx already holds the logits (in place).
        let chunks = dx.par_chunks_mut(ROWS_PER_TASK * v).enumerate();
        chunks.for_each(|(c, dx)| {
            let first = c * ROWS_PER_TASK;
            for (r, dx) in dx.chunks_exact_mut(v).enumerate() {
                let i = first + r;
                let x = x.map(|x| &x[i * v..(i + 1) * v]);
                backward_row(dx, x, targets[i], lse[i], cap, coef);
            }
        });
    };
    if v == 0 {
        return logits;
    }
    if logits.is_unique() && logits.layout().start_offset() == 0 {
        let len = shape[0] * v;
        let dx = &mut logits.try_storage_mut::<f32>().expect("kernels: uniquely owned tensor")[..len];
        rows(dx, None);
        return logits;
    }
    let x = f32s(&logits);
    let mut dx = vec![0.0f32; x.len()];
    rows(&mut dx, Some(x));
    tensor(dx, shape)
}

/// Validates shapes and the cap; returns (N, V).
fn check(shape: &[usize], targets: &[i64], cap: f32) -> (usize, usize) {
    assert!(
        shape.len() == 2 && shape[0] == targets.len(),
        "kernels::softcap_cross_entropy: want logits [N, V] and targets [N]; got logits {shape:?}, targets [{}]",
        targets.len()
    );
    assert!(cap > 0.0, "kernels::softcap_cross_entropy: cap must be positive, got {cap}");
    let v = shape[1];
    if let Some(bad) = targets.iter().find(|&&t| t != IGNORE && (t < 0 || t as usize >= v)) {
        panic!(
            "kernels::softcap_cross_entropy: target {bad} is outside 0..{v} (and is not the ignore value -1)"
        );
    }
    (shape[0], v)
}

/// (logsumexp_j z_j, logsumexp − z_target) of one row, z = cap·tanh(x/cap). The shift by cap
/// (≥ every z) keeps every exponential ≤ 1 without a max pass.
#[inline(always)]
fn forward_row_generic<I: Isa>(row: &[f32], target: usize, cap: f32) -> (f32, f32) {
    let inv_cap = 1.0 / cap;
    let shifted_exp = |x: f32| math::exp::<I>(I::fma(cap, math::tanh::<I>(x * inv_cap), -cap));
    let mut acc = [0.0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            acc[i] += shifted_exp(c[i]);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| shifted_exp(x)).sum();
    let lse = cap + (acc.iter().sum::<f32>() + tail).ln();
    (lse, lse - cap * math::tanh::<I>(row[target] * inv_cap))
}

/// One row of the gradient. `x` is the logits row, or None when `dx` holds it (in place).
#[inline(always)]
fn backward_row_generic<I: Isa>(
    dx: &mut [f32],
    x: Option<&[f32]>,
    target: i64,
    lse: f32,
    cap: f32,
    coef: f32,
) {
    if target == IGNORE {
        dx.fill(0.0);
        return;
    }
    let inv_cap = 1.0 / cap;
    // d/dx of cap·tanh(x/cap) is 1 − tanh²; the softmax gradient is p − onehot.
    let grad = |x: f32| {
        let t = math::tanh::<I>(x * inv_cap);
        coef * math::exp::<I>(I::fma(cap, t, -lse)) * I::fma(-t, t, 1.0)
    };
    let target = target as usize;
    let x_target = x.map_or(dx[target], |x| x[target]);
    match x {
        Some(x) => dx.iter_mut().zip(x).for_each(|(dx, &x)| *dx = grad(x)),
        None => dx.iter_mut().for_each(|dx| *dx = grad(*dx)),
    }
    let t = math::tanh::<I>(x_target * inv_cap);
    dx[target] -= coef * (1.0 - t * t);
}

multiversion! {
    fn forward_row(row: &[f32], target: usize, cap: f32) -> (f32, f32) = forward_row_generic;
}
multiversion! {
    fn backward_row(dx: &mut [f32], x: Option<&[f32]>, target: i64, lse: f32, cap: f32, coef: f32) = backward_row_generic;
}
