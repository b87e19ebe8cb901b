//! RMSNorm without weight over the last dim: y = x / sqrt(mean(x²) + eps).
//!
//! Composed, this is five tensor passes forward (square, mean, add, sqrt/recip, mul) and about as
//! many again backward, each a full read and write of the activation. Here it is one read and one
//! write each way. The forward saves y (not x) and the per-row rstd: y is the input of whatever
//! comes next (a matmul, attention) which keeps it alive anyway, so saving it costs no memory,
//! and the backward needs nothing else: dx = rstd · (dy − y · mean(dy ⊙ y)).

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::math::{self, Isa, multiversion};
use super::{contiguous, counters, dims, f32s, f32s_mut, into_unique, tensor};

/// Elements per rayon task: big enough to amortise scheduling, small enough to balance 2+ cores.
const TASK_ELEMS: usize = 1 << 15;

/// x: [..., d] → (y: [..., d], rstd: [rows]) with rows = product of the leading dims.
pub(crate) fn rms_norm_forward(x: FlexTensor, eps: f32) -> (FlexTensor, FlexTensor) {
    counters::bump(&counters::RMS_NORM_FORWARD);
    let x = contiguous(x, "rms_norm");
    let shape = dims(&x);
    let d = *shape.last().expect("kernels::rms_norm: input must have at least one dim");
    assert!(d > 0, "kernels::rms_norm: last dim is 0 (shape {shape:?})");
    let xs = f32s(&x);
    let rows = xs.len() / d;
    let mut y = vec![0.0f32; xs.len()];
    let mut rstd = vec![0.0f32; rows];
    let rows_per_task = (TASK_ELEMS / d).max(1);
    y.par_chunks_mut(rows_per_task * d)
        .zip(rstd.par_chunks_mut(rows_per_task))
        .zip(xs.par_chunks(rows_per_task * d))
        .for_each(|((y, rstd), x)| forward_rows(x, y, rstd, d, eps));
    (tensor(y, shape), tensor(rstd, vec![rows]))
}

/// (y: [..., d], rstd: [rows], dy: [..., d]) → dx: [..., d], written over dy's buffer when dy
/// is not shared.
pub(crate) fn rms_norm_backward(y: &FlexTensor, rstd: &FlexTensor, dy: FlexTensor) -> FlexTensor {
    counters::bump(&counters::RMS_NORM_BACKWARD);
    let shape = dims(y);
    assert_eq!(dims(&dy), shape, "kernels::rms_norm backward: gradient shape differs from the output");
    let mut dx = into_unique(dy, "rms_norm backward");
    let d = shape[shape.len() - 1];
    let (ys, rs) = (f32s(y), f32s(rstd));
    let rows_per_task = (TASK_ELEMS / d).max(1);
    f32s_mut(&mut dx)
        .par_chunks_mut(rows_per_task * d)
        .zip(rs.par_chunks(rows_per_task))
        .zip(ys.par_chunks(rows_per_task * d))
        .for_each(|((g, rstd), y)| backward_rows(y, rstd, g, d));
    dx
}

#[inline(always)]
fn forward_rows_generic<I: Isa>(x: &[f32], y: &mut [f32], rstd: &mut [f32], d: usize, eps: f32) {
    for ((x, y), r) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(rstd.iter_mut()) {
        let inv = 1.0 / (math::dot::<I>(x, x) / d as f32 + eps).sqrt();
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * inv;
        }
        *r = inv;
    }
}

/// dy → dx in place, row by row: dx = rstd · (dy − y · mean(dy ⊙ y)).
#[inline(always)]
fn backward_rows_generic<I: Isa>(y: &[f32], rstd: &[f32], g: &mut [f32], d: usize) {
    for ((y, g), &r) in y.chunks_exact(d).zip(g.chunks_exact_mut(d)).zip(rstd) {
        let mean = math::dot::<I>(g, y) / d as f32;
        for (g, &y) in g.iter_mut().zip(y) {
            *g = r * (*g - y * mean);
        }
    }
}

multiversion! {
    fn forward_rows(x: &[f32], y: &mut [f32], rstd: &mut [f32], d: usize, eps: f32) = forward_rows_generic;
}
multiversion! {
    fn backward_rows(y: &[f32], rstd: &[f32], g: &mut [f32], d: usize) = backward_rows_generic;
}
