//! One AdamW update, fused: the parameter, both moments and the step in one pass.
//!
//! Composed, the update is about thirteen elementwise passes (two lerps, a square, the bias
//! corrections, a sqrt, a divide, the decay and the step), each allocating its output, over the
//! AdamW groups — the embeddings, the value embeddings and the unembedding, 4 M parameters at
//! the standard config. Here it is one pass that reads p, g, m, v and writes p, m, v in place.
//! The arithmetic is the original's `adamw_step_fused` (decoupled weight decay first, then
//! `p -= lr/bias1 · m / (√(v/bias2) + eps)`), in f32 with the scalars folded once.

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::math::{Isa, multiversion};
use super::{contiguous, counters, dims, f32s, f32s_mut, into_unique};

/// Elements per rayon task.
const TASK_ELEMS: usize = 1 << 15;

/// The step's scalars, folded from the hyperparameters and the step number.
#[derive(Clone, Copy)]
pub(crate) struct Folded {
    pub(crate) decay: f32,
    pub(crate) beta1: f32,
    pub(crate) beta2: f32,
    pub(crate) inv_bias2: f32,
    pub(crate) step_size: f32,
    pub(crate) eps: f32,
}

/// (p, g, m, v) → (p', m', v'); p, m and v are overwritten when nothing else holds them.
pub(crate) fn adamw_step(
    p: FlexTensor,
    g: FlexTensor,
    m: FlexTensor,
    v: FlexTensor,
    k: Folded,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    counters::bump(&counters::ADAMW_STEP);
    let shape = dims(&p);
    for (name, t) in [("gradient", &g), ("first moment", &m), ("second moment", &v)] {
        assert_eq!(dims(t), shape, "kernels::adamw_step: the {name} has another shape than the parameter");
    }
    let g = contiguous(g, "adamw_step");
    let (mut p, mut m, mut v) =
        (into_unique(p, "adamw_step"), into_unique(m, "adamw_step"), into_unique(v, "adamw_step"));
    let gs = f32s(&g);
    f32s_mut(&mut p)
        .par_chunks_mut(TASK_ELEMS)
        .zip(f32s_mut(&mut m).par_chunks_mut(TASK_ELEMS))
        .zip(f32s_mut(&mut v).par_chunks_mut(TASK_ELEMS))
        .zip(gs.par_chunks(TASK_ELEMS))
        .for_each(|(((p, m), v), g)| step_chunk(p, m, v, g, k));
    (p, m, v)
}

#[inline(always)]
fn step_chunk_generic<I: Isa>(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: Folded) {
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        // lerp(m, g, 1 − β) = β·m + (1 − β)·g, as torch's lerp_ computes it for weights < 0.5.
        *m += (1.0 - k.beta1) * (g - *m);
        *v += (1.0 - k.beta2) * (g * g - *v);
        let denom = (*v * k.inv_bias2).sqrt() + k.eps;
        *p = *p * k.decay - k.step_size * *m / denom;
    }
}

multiversion! {
    fn step_chunk(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: Folded) = step_chunk_generic;
}
