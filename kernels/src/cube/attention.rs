//! Causal sliding-window attention with GQA as `#[cube]` kernels, FlashAttention-2 style: the
//! forward streams K/V tiles through shared memory with an online softmax and writes O and the
//! per-row log-sum-exp; the backward recomputes the probabilities from the LSE. Nothing of size
//! T × T exists at any point, so memory is O(B·T·H·D) however long the context.
//!
//! Semantics as `flex/attention.rs`: q [B, T, H, D], k and v [B, T, Hkv, D], query head h reads
//! kv head h / (H / Hkv); query t sees keys t − window ..= t; scores are scaled by `scale`.
//!
//! Three kernels, no atomics (float atomics are not portable to WGSL):
//! - forward: one cube per (block of BLOCK_Q query rows, head, batch), one unit per query row;
//!   the cube walks only the key tiles its rows' windows reach;
//! - dQ: the same grid; each unit also computes δ = rowsum(dO ⊙ O) for its row and writes it
//!   for the next kernel;
//! - dK/dV: one cube per (block of key rows, kv head, batch), one unit per key row; it walks the
//!   query tiles (of every query head of its group) that can see its keys.
//!
//! What this is not (yet): tensor-core MMA tiles (cubecl `cmma`), which an FA3-class kernel on
//! Hopper needs. Each unit does its dot products with scalar FMAs from shared memory; rows of
//! D = 128 keep 2–4 arrays of D floats per unit, which spill registers on CUDA. It is correct on
//! every runtime and linear in memory; speed on an H100 is what `scripts/gpu-check.sh` measures.

use cubecl::prelude::*;

use super::{NEG_BIG, address_type, contiguous, dims, empty, launched, shared_bytes, units};
use crate::counters;
use burn_cubecl::tensor::CubeTensor;

/// Query rows (units) per cube in the forward and dQ kernels, and key rows per cube in dK/dV.
const ROWS_PER_CUBE: u32 = 64;

/// Rows of the tile streamed through shared memory: as many as fit two [rows, D] f32 tiles (plus
/// two f32 per row) in the device's shared memory, at most 64, a power of two.
fn tile_rows(t: &CubeTensor, d: usize) -> usize {
    let per_row = 2 * (d + 1) * 4;
    super::floor_pow2((shared_bytes(t) / per_row).clamp(1, 64))
}

/// The sizes of one call.
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    hkv: usize,
    d: usize,
}

fn check(q: &CubeTensor, k: &CubeTensor, v: &CubeTensor) -> Dims {
    let (qd, kd, vd) = (dims(q), dims(k), dims(v));
    let ok = qd.len() == 4 && kd == vd && kd.len() == 4 && qd[0] == kd[0] && qd[1] == kd[1] && qd[3] == kd[3];
    assert!(ok, "kernels::attention: want q [B,T,H,D], k and v [B,T,Hkv,D]; got q {qd:?} k {kd:?} v {vd:?}");
    assert!(
        kd[2] > 0 && qd[2].is_multiple_of(kd[2]),
        "kernels::attention: query heads {} must be a multiple of kv heads {}",
        qd[2],
        kd[2]
    );
    Dims { b: qd[0], t: qd[1], h: qd[2], hkv: kd[2], d: qd[3] }
}

/// (q [B,T,H,D], k, v [B,T,Hkv,D]) → (o [B,T,H,D], lse [B,H,T]).
pub(crate) fn attention_forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    window: usize,
    scale: f32,
) -> (CubeTensor, CubeTensor) {
    let (q, k, v) = (contiguous(q, "attention"), contiguous(k, "attention"), contiguous(v, "attention"));
    let n = check(&q, &k, &v);
    let o = empty(&q, dims(&q));
    let lse = empty(&q, [n.b, n.h, n.t]);
    launched(&counters::CUBE_ATTENTION_FORWARD, "attention forward", &q);
    if n.b * n.t * n.h * n.d == 0 {
        return (o, lse);
    }
    let rows = units(&q, ROWS_PER_CUBE);
    let tile = tile_rows(&q, n.d);
    let count = CubeCount::Static(n.t.div_ceil(rows as usize) as u32, n.h as u32, n.b as u32);
    attention_forward_kernel::launch(
        &q.client,
        count,
        CubeDim::new_1d(rows),
        address_type(&[&q, &k, &o]),
        q.clone().into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        o.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        n.t as u32,
        n.h as u32,
        n.hkv as u32,
        window.min(n.t) as u32,
        scale,
        n.d,
        rows as usize,
        tile,
    );
    (o, lse)
}

/// (q, k, v, o, lse as saved by the forward, dO [B,T,H,D]) → (dq [B,T,H,D], dk, dv [B,T,Hkv,D]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    q: &CubeTensor,
    k: &CubeTensor,
    v: &CubeTensor,
    o: &CubeTensor,
    lse: &CubeTensor,
    d_o: CubeTensor,
    window: usize,
    scale: f32,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let n = check(q, k, v);
    let d_o = contiguous(d_o, "attention backward");
    assert_eq!(dims(&d_o), dims(q), "kernels::attention backward: gradient shape differs from the output");
    let dq = empty(q, dims(q));
    let dk = empty(k, dims(k));
    let dv = empty(k, dims(k));
    let delta = empty(q, [n.b, n.h, n.t]);
    launched(&counters::CUBE_ATTENTION_BACKWARD, "attention backward (dQ, dK/dV)", q);
    if n.b * n.t * n.h * n.d == 0 {
        return (dq, dk, dv);
    }
    let rows = units(q, ROWS_PER_CUBE);
    let tile = tile_rows(q, n.d);
    let window = window.min(n.t) as u32;
    let addr = address_type(&[q, k, &d_o]);
    attention_backward_dq_kernel::launch(
        &q.client,
        CubeCount::Static(n.t.div_ceil(rows as usize) as u32, n.h as u32, n.b as u32),
        CubeDim::new_1d(rows),
        addr,
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        o.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        d_o.clone().into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        delta.clone().into_tensor_arg(),
        n.t as u32,
        n.h as u32,
        n.hkv as u32,
        window,
        scale,
        n.d,
        rows as usize,
        tile,
    );
    attention_backward_dkdv_kernel::launch(
        &q.client,
        CubeCount::Static(n.t.div_ceil(rows as usize) as u32, n.hkv as u32, n.b as u32),
        CubeDim::new_1d(rows),
        addr,
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        delta.into_tensor_arg(),
        d_o.into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        n.t as u32,
        n.h as u32,
        n.hkv as u32,
        window,
        scale,
        n.d,
        rows as usize,
        tile,
    );
    (dq, dk, dv)
}

/// The first key the queries from `i0` on can see: i0 − window, clipped at 0.
#[cube]
fn first_key(i0: usize, window: usize) -> usize {
    if i0 > window { i0 - window } else { 0usize }
}

/// Whether query `i` sees key `j`: j ≤ i ≤ j + window.
#[cube]
fn sees(i: usize, j: usize, window: usize) -> bool {
    j <= i && i <= j + window
}

/// Cube (query block, head, batch), unit = query row i. K and V rows j0 .. j0 + tile are loaded
/// into shared memory together by all units; each unit scores its row against the tile, then
/// rescales its running sum and accumulator once per tile (online softmax).
#[cube(launch, address_type = "dynamic")]
fn attention_forward_kernel(
    q: &Tensor<f32>,
    k: &Tensor<f32>,
    v: &Tensor<f32>,
    o: &mut Tensor<f32>,
    lse: &mut Tensor<f32>,
    seq: u32,
    heads: u32,
    kv_heads: u32,
    window: u32,
    scale: f32,
    #[comptime] d: usize,
    #[comptime] rows: usize,
    #[comptime] tile: usize,
) {
    let t = seq as usize;
    let nh = heads as usize;
    let w = window as usize;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let r = UNIT_POS_X as usize;
    let i0 = CUBE_POS_X as usize * rows;
    let i = i0 + r;
    let valid = i < t;
    let row = if valid { i } else { t - 1 };
    let q_rs = nh * d;
    let k_rs = kv_heads as usize * d;
    let q_off = (b * t + row) * q_rs + h * d;
    let k_base = b * t * k_rs + (h / (nh / kv_heads as usize)) * d;

    let mut q_row = Array::<f32>::new(d);
    let mut acc = Array::<f32>::new(d);
    for c in 0..d {
        q_row[c] = q[q_off + c] * scale;
        acc[c] = 0.0;
    }
    let mut scores = Array::<f32>::new(tile);
    let mut k_tile = Shared::<[f32]>::new_slice(tile * d);
    let mut v_tile = Shared::<[f32]>::new_slice(tile * d);
    let mut m = f32::new(NEG_BIG);
    let mut l = 0.0f32;

    let j_hi = if i0 + rows < t { i0 + rows } else { t };
    let mut j0 = first_key(i0, w);
    while j0 < j_hi {
        let mut e = r;
        while e < tile * d {
            let j = j0 + e / d;
            let jr = if j < t { j } else { t - 1 };
            let src = k_base + jr * k_rs + e % d;
            k_tile[e] = k[src];
            v_tile[e] = v[src];
            e += rows;
        }
        sync_cube();

        let mut tile_max = f32::new(NEG_BIG);
        for jj in 0..tile {
            let mut s = f32::new(NEG_BIG);
            if sees(i, j0 + jj, w) {
                let mut dot = 0.0f32;
                for c in 0..d {
                    dot += q_row[c] * k_tile[jj * d + c];
                }
                s = dot;
            }
            scores[jj] = s;
            tile_max = max(tile_max, s);
        }
        let m_new = max(m, tile_max);
        let alpha = (m - m_new).exp();
        l *= alpha;
        for c in 0..d {
            acc[c] *= alpha;
        }
        for jj in 0..tile {
            if sees(i, j0 + jj, w) {
                let p = (scores[jj] - m_new).exp();
                l += p;
                for c in 0..d {
                    acc[c] += p * v_tile[jj * d + c];
                }
            }
        }
        m = m_new;
        sync_cube();
        j0 += tile;
    }

    if valid {
        let inv = 1.0f32 / l;
        for c in 0..d {
            o[q_off + c] = acc[c] * inv;
        }
        lse[(b * nh + h) * t + i] = m + l.ln();
    }
}

/// Cube (query block, head, batch), unit = query row i: dQ_i = scale · Σ_j P_ij (dP_ij − δ_i) K_j
/// with P_ij = exp(scale · q_i·k_j − lse_i), dP_ij = dO_i·v_j, δ_i = dO_i·O_i (also written out).
#[cube(launch, address_type = "dynamic")]
fn attention_backward_dq_kernel(
    q: &Tensor<f32>,
    k: &Tensor<f32>,
    v: &Tensor<f32>,
    o: &Tensor<f32>,
    lse: &Tensor<f32>,
    d_o: &Tensor<f32>,
    dq: &mut Tensor<f32>,
    delta: &mut Tensor<f32>,
    seq: u32,
    heads: u32,
    kv_heads: u32,
    window: u32,
    scale: f32,
    #[comptime] d: usize,
    #[comptime] rows: usize,
    #[comptime] tile: usize,
) {
    let t = seq as usize;
    let nh = heads as usize;
    let w = window as usize;
    let h = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let r = UNIT_POS_X as usize;
    let i0 = CUBE_POS_X as usize * rows;
    let i = i0 + r;
    let valid = i < t;
    let row = if valid { i } else { t - 1 };
    let q_rs = nh * d;
    let k_rs = kv_heads as usize * d;
    let q_off = (b * t + row) * q_rs + h * d;
    let k_base = b * t * k_rs + (h / (nh / kv_heads as usize)) * d;
    let stat = (b * nh + h) * t + row;

    let mut q_row = Array::<f32>::new(d);
    let mut do_row = Array::<f32>::new(d);
    let mut acc = Array::<f32>::new(d);
    let mut di = 0.0f32;
    for c in 0..d {
        q_row[c] = q[q_off + c] * scale;
        do_row[c] = d_o[q_off + c];
        di += do_row[c] * o[q_off + c];
        acc[c] = 0.0;
    }
    let lse_i = lse[stat];
    let mut k_tile = Shared::<[f32]>::new_slice(tile * d);
    let mut v_tile = Shared::<[f32]>::new_slice(tile * d);

    let j_hi = if i0 + rows < t { i0 + rows } else { t };
    let mut j0 = first_key(i0, w);
    while j0 < j_hi {
        let mut e = r;
        while e < tile * d {
            let j = j0 + e / d;
            let jr = if j < t { j } else { t - 1 };
            let src = k_base + jr * k_rs + e % d;
            k_tile[e] = k[src];
            v_tile[e] = v[src];
            e += rows;
        }
        sync_cube();
        for jj in 0..tile {
            if sees(i, j0 + jj, w) {
                let mut s = 0.0f32;
                let mut dp = 0.0f32;
                for c in 0..d {
                    s += q_row[c] * k_tile[jj * d + c];
                    dp += do_row[c] * v_tile[jj * d + c];
                }
                let ds = (s - lse_i).exp() * (dp - di);
                for c in 0..d {
                    acc[c] += ds * k_tile[jj * d + c];
                }
            }
        }
        sync_cube();
        j0 += tile;
    }

    if valid {
        for c in 0..d {
            dq[q_off + c] = acc[c] * scale;
        }
        delta[stat] = di;
    }
}

/// Cube (key block, kv head, batch), unit = key row j: over every query head h of the group and
/// every query i that sees j (j ≤ i ≤ j + window), dV_j += P_ij dO_i and
/// dK_j += scale · P_ij (dP_ij − δ_i) q_i. Q and dO rows come through shared memory in tiles.
#[cube(launch, address_type = "dynamic")]
fn attention_backward_dkdv_kernel(
    q: &Tensor<f32>,
    k: &Tensor<f32>,
    v: &Tensor<f32>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    d_o: &Tensor<f32>,
    dk: &mut Tensor<f32>,
    dv: &mut Tensor<f32>,
    seq: u32,
    heads: u32,
    kv_heads: u32,
    window: u32,
    scale: f32,
    #[comptime] d: usize,
    #[comptime] rows: usize,
    #[comptime] tile: usize,
) {
    let t = seq as usize;
    let nh = heads as usize;
    let nkv = kv_heads as usize;
    let group = nh / nkv;
    let w = window as usize;
    let kvh = CUBE_POS_Y as usize;
    let b = CUBE_POS_Z as usize;
    let r = UNIT_POS_X as usize;
    let j0 = CUBE_POS_X as usize * rows;
    let j = j0 + r;
    let valid = j < t;
    let row = if valid { j } else { t - 1 };
    let q_rs = nh * d;
    let k_rs = nkv * d;
    let k_off = (b * t + row) * k_rs + kvh * d;

    let mut k_row = Array::<f32>::new(d);
    let mut v_row = Array::<f32>::new(d);
    let mut dk_acc = Array::<f32>::new(d);
    let mut dv_acc = Array::<f32>::new(d);
    for c in 0..d {
        k_row[c] = k[k_off + c] * scale;
        v_row[c] = v[k_off + c];
        dk_acc[c] = 0.0;
        dv_acc[c] = 0.0;
    }
    let mut q_tile = Shared::<[f32]>::new_slice(tile * d);
    let mut do_tile = Shared::<[f32]>::new_slice(tile * d);
    let mut lse_tile = Shared::<[f32]>::new_slice(tile);
    let mut delta_tile = Shared::<[f32]>::new_slice(tile);

    // The queries that see keys j0 .. j0 + rows: j0 ..= j0 + rows − 1 + window.
    let i_end = j0 + rows + w;
    let i_hi = if i_end < t { i_end } else { t };
    for hh in 0..group {
        let h = kvh * group + hh;
        let q_base = b * t * q_rs + h * d;
        let stat_base = (b * nh + h) * t;
        let mut i0 = j0;
        while i0 < i_hi {
            let mut e = r;
            while e < tile * d {
                let i = i0 + e / d;
                let ir = if i < t { i } else { t - 1 };
                let src = q_base + ir * q_rs + e % d;
                q_tile[e] = q[src];
                do_tile[e] = d_o[src];
                e += rows;
            }
            let mut e = r;
            while e < tile {
                let i = i0 + e;
                let ir = if i < t { i } else { t - 1 };
                lse_tile[e] = lse[stat_base + ir];
                delta_tile[e] = delta[stat_base + ir];
                e += rows;
            }
            sync_cube();
            for ii in 0..tile {
                let i = i0 + ii;
                if i < t && sees(i, j, w) {
                    let mut s = 0.0f32;
                    let mut dp = 0.0f32;
                    for c in 0..d {
                        s += q_tile[ii * d + c] * k_row[c];
                        dp += do_tile[ii * d + c] * v_row[c];
                    }
                    let p = (s - lse_tile[ii]).exp();
                    let ds = p * (dp - delta_tile[ii]);
                    for c in 0..d {
                        dv_acc[c] += p * do_tile[ii * d + c];
                        dk_acc[c] += ds * q_tile[ii * d + c];
                    }
                }
            }
            sync_cube();
            i0 += tile;
        }
    }

    if valid {
        for c in 0..d {
            dk[k_off + c] = dk_acc[c] * scale;
            dv[k_off + c] = dv_acc[c];
        }
    }
}
