//! The logit softcap for evaluation, z = cap · tanh(x / cap), in place.
//!
//! Why: scoring asks the model for full logits (rows × T × vocab: 1.07 G elements for the cpu
//! profile's val split). Composed, the cap is three passes (divide, tanh, multiply), each
//! allocating a fresh buffer of that size, and burn's tanh is a libm call per element on one
//! thread; it was the largest single-threaded cost of serving. Here it is one pass over the
//! matmul's own output, on every core, with the same vectorised tanh the training loss uses
//! (`cross_entropy.rs`), so evaluation caps the logits exactly as training does.

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::math::{self, Isa, multiversion};
use super::{f32s_mut, into_unique};

/// Elements per rayon task.
const TASK_ELEMS: usize = 1 << 15;

/// x: [...] → cap·tanh(x/cap): [...], written over x's buffer when nothing else holds it.
pub(crate) fn softcap_forward(x: FlexTensor, cap: f32) -> FlexTensor {
    let mut y = into_unique(x, "softcap");
    f32s_mut(&mut y).par_chunks_mut(TASK_ELEMS).for_each(|c| cap_chunk(c, cap));
    y
}

#[inline(always)]
fn cap_chunk_generic<I: Isa>(x: &mut [f32], cap: f32) {
    let inv_cap = 1.0 / cap;
    for v in x.iter_mut() {
        *v = cap * math::tanh::<I>(*v * inv_cap);
    }
}

multiversion! {
    fn cap_chunk(x: &mut [f32], cap: f32) = cap_chunk_generic;
}
