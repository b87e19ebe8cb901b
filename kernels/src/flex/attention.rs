//! Causal sliding-window attention, FlashAttention-2 style, on [B, T, H, D] tensors.
//!
//! Semantics are flash-attn's `causal=True, window_size=(w, 0)`: query t attends keys t−w ..= t.
//! K and V may have fewer heads than Q (GQA): query head h reads kv head h / (H / Hkv).
//!
//! Why by hand: composed, attention materialises the [B, H, T, T] scores, the mask, the softmax
//! and their gradients — about ten passes over a [B, H, T, T] tensor, 16 MB at the standard config,
//! more than q, k and v together — and computes every masked entry anyway. Here each (batch, head) works on a block of
//! BLOCK_Q query rows at a time against only the keys its window can reach (a thread-local score
//! tile of at most BLOCK_Q × T), with small single-threaded GEMMs (the `gemm` crate, as burn-flex
//! uses) and rayon across heads. The forward keeps O and the per-row logsumexp; the backward
//! recomputes P from them, so nothing of size T×T outlives a block.

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::math::{self, Isa, multiversion};
use super::{SharedMut, contiguous, counters, dims, f32s, f32s_mut, into_unique, tensor};

/// Query rows per block. Measured at the standard config (fwd+bwd, CPU time): 64 beat 16, 32 and
/// 128 by 3–25 %. Smaller blocks waste less on the masked triangles of the edge tiles, larger
/// ones run bigger GEMMs; at T = 256 the GEMM size wins down to 64.
const BLOCK_Q: usize = 64;

/// The sizes of one attention call, checked once.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    hkv: usize,
    d: usize,
}

impl Dims {
    fn new(q: &[usize], k: &[usize], v: &[usize]) -> Self {
        let ok = q.len() == 4 && k == v && k.len() == 4 && q[0] == k[0] && q[1] == k[1] && q[3] == k[3];
        assert!(ok, "kernels::attention: want q [B,T,H,D], k and v [B,T,Hkv,D]; got q {q:?} k {k:?} v {v:?}");
        assert!(
            k[2] > 0 && q[2].is_multiple_of(k[2]),
            "kernels::attention: query heads {} must be a multiple of kv heads {} (q {q:?} k {k:?})",
            q[2],
            k[2]
        );
        Self { b: q[0], t: q[1], h: q[2], hkv: k[2], d: q[3] }
    }

    /// Query heads per kv head.
    fn group(&self) -> usize {
        self.h / self.hkv
    }
}

/// The keys that the queries `i0..i1` can see: `j0..i1`, with j0 = i0 − window clipped at 0.
fn key_range(i0: usize, window: usize) -> usize {
    i0.saturating_sub(window)
}

/// (q: [B,T,H,D], k: [B,T,Hkv,D], v: [B,T,Hkv,D]) → (o: [B,T,H,D], lse: [B,H,T]).
pub(crate) fn attention_forward(
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    window: usize,
    scale: f32,
) -> (FlexTensor, FlexTensor) {
    counters::bump(&counters::ATTENTION_FORWARD);
    let (q, k, v) = (contiguous(q, "attention"), contiguous(k, "attention"), contiguous(v, "attention"));
    let qdims = dims(&q);
    let n = Dims::new(&qdims, &dims(&k), &dims(&v));
    let (qs, ks, vs) = (f32s(&q), f32s(&k), f32s(&v));
    let mut o = vec![0.0f32; qs.len()];
    let mut lse = vec![0.0f32; n.b * n.h * n.t];
    let out = SharedMut::new(&mut o);
    if n.t > 0 {
        lse.par_chunks_mut(n.t).enumerate().for_each_init(
            || vec![0.0f32; BLOCK_Q * n.t],
            |scores, (bh, lse)| {
                // SAFETY: task bh writes only the o rows of its (batch, head); see SharedMut.
                unsafe { forward_head(n, bh, window, scale, qs, ks, vs, out, lse, scores) }
            },
        );
    }
    (tensor(o, qdims), tensor(lse, vec![n.b, n.h, n.t]))
}

/// One (batch, head) of the forward: O rows and their logsumexp.
///
/// # Safety
/// `out` must point at a [B,T,H,D] buffer in which no other thread writes this head's rows.
#[allow(clippy::too_many_arguments)]
unsafe fn forward_head(
    n: Dims,
    bh: usize,
    window: usize,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: SharedMut,
    lse: &mut [f32],
    scores: &mut [f32],
) {
    let (b, h) = (bh / n.h, bh % n.h);
    let kvh = h / n.group();
    let (q_rs, k_rs) = (n.h * n.d, n.hkv * n.d); // row strides: one token to the next
    let q_base = b * n.t * q_rs + h * n.d;
    let k_base = b * n.t * k_rs + kvh * n.d;
    for i0 in (0..n.t).step_by(BLOCK_Q) {
        let i1 = (i0 + BLOCK_Q).min(n.t);
        let j0 = key_range(i0, window);
        let (bq, lk) = (i1 - i0, i1 - j0);
        let s = &mut scores[..bq * lk];
        unsafe {
            // S[bq, lk] = scale · Q[i0..i1] · K[j0..i1]ᵀ
            gemm(
                (bq, lk, n.d),
                (s.as_mut_ptr(), lk, false),
                (q.as_ptr().add(q_base + i0 * q_rs), q_rs, 1),
                (k.as_ptr().add(k_base + j0 * k_rs), 1, k_rs),
                scale,
            );
        }
        for (r, row) in s.chunks_exact_mut(lk).enumerate() {
            let t = i0 + r;
            let (lo, hi) = (t.saturating_sub(window) - j0, t - j0 + 1);
            lse[t] = softmax_row(row, lo, hi);
        }
        unsafe {
            // O[i0..i1] = P · V[j0..i1]
            gemm(
                (bq, n.d, lk),
                (out.ptr().add(q_base + i0 * q_rs), q_rs, false),
                (s.as_ptr(), lk, 1),
                (v.as_ptr().add(k_base + j0 * k_rs), k_rs, 1),
                1.0,
            );
        }
    }
}

/// (q, k, v, o, lse as saved by the forward, do: [B,T,H,D]) → (dq: [B,T,H,D], dk, dv: [B,T,Hkv,D]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    o: &FlexTensor,
    lse: &FlexTensor,
    d_o: FlexTensor,
    window: usize,
    scale: f32,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    counters::bump(&counters::ATTENTION_BACKWARD);
    let (qdims, kdims) = (dims(q), dims(k));
    let n = Dims::new(&qdims, &kdims, &dims(v));
    assert_eq!(dims(&d_o), qdims, "kernels::attention backward: gradient shape differs from the output");
    // dQ overwrites dO row by row once the row is used (see backward_kv_head): one 4 MB buffer
    // (and its page faults) fewer per call.
    let mut d_o = into_unique(d_o, "attention backward");
    let (qs, ks, vs, os, lses) = (f32s(q), f32s(k), f32s(v), f32s(o), f32s(lse));
    let d_o_and_dq = SharedMut::new(f32s_mut(&mut d_o));
    let mut dk = vec![0.0f32; ks.len()];
    let mut dv = vec![0.0f32; vs.len()];
    let grads = Grads { dq: d_o_and_dq, dk: SharedMut::new(&mut dk), dv: SharedMut::new(&mut dv) };
    let saved = Saved { q: qs, k: ks, v: vs, o: os, lse: lses, d_o: d_o_and_dq };
    if n.t > 0 {
        (0..n.b * n.hkv).into_par_iter().for_each_init(
            || Scratch { p: vec![0.0; BLOCK_Q * n.t], dp: vec![0.0; BLOCK_Q * n.t], di: vec![0.0; BLOCK_Q] },
            |scratch, bkv| {
                // SAFETY: task bkv writes the dk/dv rows of its (batch, kv head) and the dq rows
                // of that kv head's query heads, which no other task touches.
                unsafe { backward_kv_head(n, bkv, window, scale, &saved, grads, scratch) }
            },
        );
    }
    (d_o, tensor(dk, kdims.clone()), tensor(dv, kdims))
}

/// What the backward reads: the forward's inputs and outputs and the upstream gradient. dO is a
/// raw pointer because dQ is written over it (by rows, each after its last read).
struct Saved<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    o: &'a [f32],
    lse: &'a [f32],
    d_o: SharedMut,
}

/// Where the backward writes.
#[derive(Clone, Copy)]
struct Grads {
    dq: SharedMut,
    dk: SharedMut,
    dv: SharedMut,
}

/// Per-task tiles: P and dP/dS for one block ([BLOCK_Q, ≤T]), and rowsum(dO ⊙ O) per query row.
struct Scratch {
    p: Vec<f32>,
    dp: Vec<f32>,
    di: Vec<f32>,
}

/// One (batch, kv head) of the backward: every query head of its group, block by block,
/// accumulating dK and dV for the shared kv head (FlashAttention-2, algorithm 2).
///
/// dQ is written over dO: a block's dO rows are read (for rowsum(dO ⊙ O), dV and dP) before its dQ
/// rows are written, and never read again.
///
/// # Safety
/// The grads buffers must be [B,T,H,D] / [B,T,Hkv,D]; dk, dv zeroed; dq the buffer of `x.d_o`;
/// no other thread touches the rows of this (batch, kv head) or of its query heads.
unsafe fn backward_kv_head(
    n: Dims,
    bkv: usize,
    window: usize,
    scale: f32,
    x: &Saved,
    g: Grads,
    scratch: &mut Scratch,
) {
    let (b, kvh) = (bkv / n.hkv, bkv % n.hkv);
    let (q_rs, k_rs) = (n.h * n.d, n.hkv * n.d);
    let k_base = b * n.t * k_rs + kvh * n.d;
    for h in kvh * n.group()..(kvh + 1) * n.group() {
        let q_base = b * n.t * q_rs + h * n.d;
        let lse = &x.lse[(b * n.h + h) * n.t..][..n.t];
        for i0 in (0..n.t).step_by(BLOCK_Q) {
            let i1 = (i0 + BLOCK_Q).min(n.t);
            let j0 = key_range(i0, window);
            let (bq, lk) = (i1 - i0, i1 - j0);
            let (p, dp) = (&mut scratch.p[..bq * lk], &mut scratch.dp[..bq * lk]);
            let (q_blk, do_blk) = (q_base + i0 * q_rs, q_base + i0 * q_rs);
            let (k_blk, v_blk) = (k_base + j0 * k_rs, k_base + j0 * k_rs);
            for (r, di) in scratch.di[..bq].iter_mut().enumerate() {
                let row = q_blk + r * q_rs;
                // SAFETY: this row of dO is in bounds and only this task writes it (as dQ, below).
                let d_o = unsafe { std::slice::from_raw_parts(x.d_o.ptr().add(row), n.d) };
                *di = row_dot(d_o, &x.o[row..row + n.d]);
            }
            unsafe {
                // S = scale · Q Kᵀ, then P = exp(S − lse) inside the window, 0 outside.
                gemm(
                    (bq, lk, n.d),
                    (p.as_mut_ptr(), lk, false),
                    (x.q.as_ptr().add(q_blk), q_rs, 1),
                    (x.k.as_ptr().add(k_blk), 1, k_rs),
                    scale,
                );
            }
            for (r, row) in p.chunks_exact_mut(lk).enumerate() {
                let t = i0 + r;
                probs_row(row, t.saturating_sub(window) - j0, t - j0 + 1, lse[t]);
            }
            unsafe {
                // dV[j0..i1] += Pᵀ dO
                gemm(
                    (lk, n.d, bq),
                    (g.dv.ptr().add(v_blk), k_rs, true),
                    (p.as_ptr(), 1, lk),
                    (x.d_o.ptr().add(do_blk), q_rs, 1),
                    1.0,
                );
                // dP = dO Vᵀ
                gemm(
                    (bq, lk, n.d),
                    (dp.as_mut_ptr(), lk, false),
                    (x.d_o.ptr().add(do_blk), q_rs, 1),
                    (x.v.as_ptr().add(v_blk), 1, k_rs),
                    1.0,
                );
            }
            for (r, (ds, p)) in dp.chunks_exact_mut(lk).zip(p.chunks_exact(lk)).enumerate() {
                // dS = scale · P ⊙ (dP − rowsum(dO ⊙ O)); the scale of S is folded in here.
                score_grad_row(ds, p, scratch.di[r], scale);
            }
            unsafe {
                // dQ[i0..i1] = dS K    (each query row belongs to one block: written, not added)
                gemm(
                    (bq, n.d, lk),
                    (g.dq.ptr().add(q_blk), q_rs, false),
                    (dp.as_ptr(), lk, 1),
                    (x.k.as_ptr().add(k_blk), k_rs, 1),
                    1.0,
                );
                // dK[j0..i1] += dSᵀ Q
                gemm(
                    (lk, n.d, bq),
                    (g.dk.ptr().add(k_blk), k_rs, true),
                    (dp.as_ptr(), 1, lk),
                    (x.q.as_ptr().add(q_blk), q_rs, 1),
                    1.0,
                );
            }
        }
    }
}

/// dst[m×n] (+)= beta · lhs[m×k] · rhs[k×n], single-threaded (the parallelism is across heads).
/// Each operand is (pointer, row stride, column stride); dst is (pointer, row stride, accumulate)
/// with unit column stride.
///
/// # Safety
/// The pointers must be valid for the extents their strides describe.
unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, accumulate): (*mut f32, usize, bool),
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
    beta: f32,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Softmax of `row[lo..hi]` in place, zeros elsewhere; returns the logsumexp of `row[lo..hi]`.
#[inline(always)]
fn softmax_row_generic<I: Isa>(row: &mut [f32], lo: usize, hi: usize) -> f32 {
    let m = math::max(&row[lo..hi]);
    let mut acc = [0.0f32; 16];
    let seen = &mut row[lo..hi];
    let mut chunks = seen.chunks_exact_mut(16);
    for c in &mut chunks {
        for i in 0..16 {
            c[i] = math::exp::<I>(c[i] - m);
            acc[i] += c[i];
        }
    }
    let mut sum = 0.0f32;
    for x in chunks.into_remainder() {
        *x = math::exp::<I>(*x - m);
        sum += *x;
    }
    sum += acc.iter().sum::<f32>();
    let inv = 1.0 / sum;
    for x in &mut row[lo..hi] {
        *x *= inv;
    }
    row[..lo].fill(0.0);
    row[hi..].fill(0.0);
    m + sum.ln()
}

/// a · b, for rowsum(dO ⊙ O) of one query row.
#[inline(always)]
fn row_dot_generic<I: Isa>(a: &[f32], b: &[f32]) -> f32 {
    math::dot::<I>(a, b)
}

/// P = exp(S − lse) on `row[lo..hi]` in place (the forward's probabilities, recomputed), zeros
/// elsewhere.
#[inline(always)]
fn probs_row_generic<I: Isa>(row: &mut [f32], lo: usize, hi: usize, lse: f32) {
    for x in &mut row[lo..hi] {
        *x = math::exp::<I>(*x - lse);
    }
    row[..lo].fill(0.0);
    row[hi..].fill(0.0);
}

/// dS = scale · P ⊙ (dP − di), in place over dP. Where P is 0 (outside the window) so is dS.
#[inline(always)]
fn score_grad_row_generic<I: Isa>(dp: &mut [f32], p: &[f32], di: f32, scale: f32) {
    for (ds, &p) in dp.iter_mut().zip(p) {
        *ds = scale * p * (*ds - di);
    }
}

multiversion! {
    fn softmax_row(row: &mut [f32], lo: usize, hi: usize) -> f32 = softmax_row_generic;
}
multiversion! {
    fn row_dot(a: &[f32], b: &[f32]) -> f32 = row_dot_generic;
}
multiversion! {
    fn probs_row(row: &mut [f32], lo: usize, hi: usize, lse: f32) = probs_row_generic;
}
multiversion! {
    fn score_grad_row(dp: &mut [f32], p: &[f32], di: f32, scale: f32) = score_grad_row_generic;
}
