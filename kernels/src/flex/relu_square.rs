//! relu², the MLP activation: y = max(x, 0)².
//!
//! Composed, it is relu then square forward, and backward a multiply by 2·relu(x), a multiply by
//! the upstream gradient and relu's mask: five passes over the MLP's widest activation
//! ([B·T, 4·C] = 16 MB at the standard config, twice per layer). Here it is one pass each way.
//! The forward saves y, not x: y is the input of the MLP's output projection, which keeps it
//! anyway, and x is recoverable where it matters, since relu(x) = √y exactly (IEEE sqrt of a
//! rounded square returns the original magnitude). So dx = 2·√y·dy, and x can be freed.

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::math::{Isa, multiversion};
use super::{contiguous, counters, dims, f32s, f32s_mut, into_unique, tensor};

/// Elements per rayon task.
const TASK_ELEMS: usize = 1 << 15;

/// x: [...] → y: [...].
pub(crate) fn relu_square_forward(x: FlexTensor) -> FlexTensor {
    counters::bump(&counters::RELU_SQUARE_FORWARD);
    let x = contiguous(x, "relu_square");
    let xs = f32s(&x);
    let mut y = vec![0.0f32; xs.len()];
    y.par_chunks_mut(TASK_ELEMS).zip(xs.par_chunks(TASK_ELEMS)).for_each(|(y, x)| forward_chunk(x, y));
    tensor(y, dims(&x))
}

/// (y: [...], dy: [...]) → dx: [...], written over dy's buffer when dy is not shared.
pub(crate) fn relu_square_backward(y: &FlexTensor, dy: FlexTensor) -> FlexTensor {
    counters::bump(&counters::RELU_SQUARE_BACKWARD);
    assert_eq!(dims(&dy), dims(y), "kernels::relu_square backward: gradient shape differs from the output");
    let mut dx = into_unique(dy, "relu_square backward");
    let ys = f32s(y);
    f32s_mut(&mut dx)
        .par_chunks_mut(TASK_ELEMS)
        .zip(ys.par_chunks(TASK_ELEMS))
        .for_each(|(g, y)| backward_chunk(y, g));
    dx
}

#[inline(always)]
fn forward_chunk_generic<I: Isa>(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        let r = if x < 0.0 { 0.0 } else { x }; // not x.max(0.0): a NaN must stay NaN
        *y = r * r;
    }
}

/// dy → dx in place: dx = 2·√y·dy.
#[inline(always)]
fn backward_chunk_generic<I: Isa>(y: &[f32], g: &mut [f32]) {
    for (g, &y) in g.iter_mut().zip(y) {
        *g *= 2.0 * y.sqrt();
    }
}

multiversion! {
    fn forward_chunk(x: &[f32], y: &mut [f32]) = forward_chunk_generic;
}
multiversion! {
    fn backward_chunk(y: &[f32], g: &mut [f32]) = backward_chunk_generic;
}
