//! Rotary position embedding followed by RMSNorm, on q or k in [B, T, H, D]:
//! r = rotate(x) (the two halves of each head turned by the angle of position t), y = r / rms(r).
//!
//! This is the model's q/k path (`norm(apply_rotary_emb(q))`). Composed, RoPE alone is two
//! narrows, four multiplies, two adds and a concatenation forward — each a pass over q — and about
//! twice that backward; then the norm. Here both are one pass each way, row by row while the row
//! is in registers. Saves y and rstd like `rms_norm`; the rotation is orthogonal, so its backward
//! is the rotation by the opposite angle.

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::math::{self, Isa, multiversion};
use super::{contiguous, counters, dims, f32s, f32s_mut, into_unique, tensor};

/// Elements per rayon task.
const TASK_ELEMS: usize = 1 << 15;

/// Which position a row of [B, T, H, D] is at, and the head width.
#[derive(Clone, Copy)]
struct Rows {
    t: usize,
    h: usize,
    d: usize,
}

impl Rows {
    fn of(x: &[usize], cos: &[usize], sin: &[usize]) -> Self {
        let ok = x.len() == 4 && x[3].is_multiple_of(2) && cos == [x[1], x[3] / 2] && sin == cos;
        assert!(
            ok,
            "kernels::rope_rms_norm: want x [B,T,H,D] (D even), cos and sin [T, D/2]; got x {x:?} cos {cos:?} sin {sin:?}"
        );
        Self { t: x[1], h: x[2], d: x[3] }
    }

    /// Position of row `row` (rows are (b, t, h) in order).
    fn position(&self, row: usize) -> usize {
        (row / self.h) % self.t
    }

    fn per_task(&self) -> usize {
        (TASK_ELEMS / self.d).max(1)
    }
}

/// (x: [B,T,H,D], cos, sin: [T, D/2]) → (y: [B,T,H,D], rstd: [B·T·H]).
pub(crate) fn rope_rms_norm_forward(
    x: FlexTensor,
    cos: &FlexTensor,
    sin: &FlexTensor,
    eps: f32,
) -> (FlexTensor, FlexTensor) {
    counters::bump(&counters::ROPE_RMS_NORM_FORWARD);
    let x = contiguous(x, "rope_rms_norm");
    let shape = dims(&x);
    let rows = Rows::of(&shape, &dims(cos), &dims(sin));
    let (xs, cs, ss) = (f32s(&x), f32s(cos), f32s(sin));
    let mut y = vec![0.0f32; xs.len()];
    let mut rstd = vec![0.0f32; xs.len() / rows.d.max(1)];
    if rows.d > 0 {
        let n = rows.per_task();
        y.par_chunks_mut(n * rows.d)
            .zip(rstd.par_chunks_mut(n))
            .zip(xs.par_chunks(n * rows.d))
            .enumerate()
            .for_each(|(task, ((y, rstd), x))| forward_rows(x, y, rstd, cs, ss, task * n, rows, eps));
    }
    let n_rows = rstd.len();
    (tensor(y, shape), tensor(rstd, vec![n_rows]))
}

/// (y, rstd as saved, cos, sin, dy: [B,T,H,D]) → dx: [B,T,H,D], over dy's buffer when unshared.
pub(crate) fn rope_rms_norm_backward(
    y: &FlexTensor,
    rstd: &FlexTensor,
    cos: &FlexTensor,
    sin: &FlexTensor,
    dy: FlexTensor,
) -> FlexTensor {
    counters::bump(&counters::ROPE_RMS_NORM_BACKWARD);
    let shape = dims(y);
    assert_eq!(dims(&dy), shape, "kernels::rope_rms_norm backward: gradient shape differs from the output");
    let rows = Rows::of(&shape, &dims(cos), &dims(sin));
    let mut dx = into_unique(dy, "rope_rms_norm backward");
    let (ys, rs, cs, ss) = (f32s(y), f32s(rstd), f32s(cos), f32s(sin));
    if rows.d > 0 {
        let n = rows.per_task();
        f32s_mut(&mut dx)
            .par_chunks_mut(n * rows.d)
            .zip(rs.par_chunks(n))
            .zip(ys.par_chunks(n * rows.d))
            .enumerate()
            .for_each(|(task, ((g, rstd), y))| backward_rows(y, rstd, g, cs, ss, task * n, rows));
    }
    dx
}

/// Rows `first..` of the forward: rotate into y, then normalise y in place.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_rows_generic<I: Isa>(
    x: &[f32],
    y: &mut [f32],
    rstd: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    first: usize,
    rows: Rows,
    eps: f32,
) {
    let (d, half) = (rows.d, rows.d / 2);
    for (r, ((x, y), rstd)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(rstd.iter_mut()).enumerate() {
        let pos = rows.position(first + r) * half;
        let (c, s) = (&cos[pos..pos + half], &sin[pos..pos + half]);
        let (x1, x2) = x.split_at(half);
        let (y1, y2) = y.split_at_mut(half);
        for i in 0..half {
            y1[i] = I::fma(x1[i], c[i], x2[i] * s[i]);
            y2[i] = I::fma(x2[i], c[i], -(x1[i] * s[i]));
        }
        let inv = 1.0 / (math::dot::<I>(y, y) / d as f32 + eps).sqrt();
        for v in y.iter_mut() {
            *v *= inv;
        }
        *rstd = inv;
    }
}

/// Rows `first..` of the backward, in place over g: through the norm, then rotate back.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_rows_generic<I: Isa>(
    y: &[f32],
    rstd: &[f32],
    g: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    first: usize,
    rows: Rows,
) {
    let (d, half) = (rows.d, rows.d / 2);
    for (r, ((y, g), &rs)) in y.chunks_exact(d).zip(g.chunks_exact_mut(d)).zip(rstd).enumerate() {
        let pos = rows.position(first + r) * half;
        let (c, s) = (&cos[pos..pos + half], &sin[pos..pos + half]);
        let mean = math::dot::<I>(g, y) / d as f32;
        let (g1, g2) = g.split_at_mut(half);
        let (y1, y2) = y.split_at(half);
        for i in 0..half {
            let d1 = rs * (g1[i] - y1[i] * mean);
            let d2 = rs * (g2[i] - y2[i] * mean);
            g1[i] = I::fma(d1, c[i], -(d2 * s[i]));
            g2[i] = I::fma(d1, s[i], d2 * c[i]);
        }
    }
}

multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn forward_rows(x: &[f32], y: &mut [f32], rstd: &mut [f32], cos: &[f32], sin: &[f32], first: usize, rows: Rows, eps: f32) = forward_rows_generic;
}
multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn backward_rows(y: &[f32], rstd: &[f32], g: &mut [f32], cos: &[f32], sin: &[f32], first: usize, rows: Rows) = backward_rows_generic;
}
