//! Matrix products with bf16 operands and f32 accumulation on CPUs with AVX512-BF16: the matmuls
//! of bf16 mixed precision (the train file's `PRECISION = Bf16`), where burn-flex's own bf16
//! matmul converts to f32 and runs the f32 kernel (slower than f32 itself).
//!
//! Why it can be faster: `vdpbf16ps` multiplies 32 pairs of bf16 and adds them into 16 f32 lanes
//! per instruction, twice the products of an f32 FMA, and the operands are half the bytes. The
//! f32 inputs are rounded to bf16 (round to nearest even, as PyTorch's autocast does) while they
//! are packed into the panels the micro-kernel reads, so no bf16 tensor is ever stored: the
//! backward re-packs the same f32 tensors (which autodiff keeps anyway) and costs no memory.
//!
//! Structure (GotoBLAS-style): C [m×n] = A [m×k] · B [k×n] for any strides of A and B. For each
//! block of KC along k, B is packed once into NR-column panels of k-pairs; row blocks of MC are
//! spread over rayon's threads, each packs its rows of A into MR-row panels and runs the MR×NR
//! micro-kernel (24 zmm accumulators) over every B panel.

use std::arch::x86_64::*;

use rayon::prelude::*;

/// Micro-kernel tile: MR rows × NR columns of C (12 × 2 zmm accumulators).
const MR: usize = 12;
const NR: usize = 32;
/// k per packed block (even), rows per thread task.
const KC: usize = 512;
const MC: usize = 8 * MR;

/// Whether this CPU runs the bf16 kernels (AVX512-BF16 and the AVX-512 it builds on).
pub(crate) fn available() -> bool {
    is_x86_feature_detected!("avx512bf16")
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
}

/// An f32 matrix as a pointer and strides (in elements); element (i, j) is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub(crate) ptr: *const f32,
    pub(crate) rs: usize,
    pub(crate) cs: usize,
}

// SAFETY: a Mat is only read, and only while the tensor it points into is borrowed by the caller.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

impl Mat {
    pub(crate) fn new(data: &[f32], rs: usize, cs: usize) -> Self {
        Self { ptr: data.as_ptr(), rs, cs }
    }

    /// The transpose (a view: strides swapped).
    pub(crate) fn t(self) -> Self {
        Self { ptr: self.ptr, rs: self.cs, cs: self.rs }
    }

    #[inline(always)]
    unsafe fn at(&self, i: usize, j: usize) -> f32 {
        unsafe { *self.ptr.add(i * self.rs + j * self.cs) }
    }
}

/// C [m×n] (row-major, contiguous) = A [m×k] · B [k×n], operands rounded to bf16, sums in f32.
///
/// # Safety
/// `a` and `b` must be valid for the extents and strides they describe; the CPU must have
/// AVX512-BF16 ([`available`]).
pub(crate) unsafe fn matmul(m: usize, n: usize, k: usize, a: Mat, b: Mat) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    if m == 0 || n == 0 {
        return c;
    }
    let kp_max = KC / 2;
    let panels = n.div_ceil(NR);
    let mut bp: Vec<u32> = vec![0; panels * kp_max * NR];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let kp = kc.div_ceil(2);
        // Pack B[k0.., all n] into panels of NR columns, each [kp][NR] k-pairs (a few MB at most:
        // it stays in L2/L3 while every row block reads it).
        bp.par_chunks_mut(kp_max * NR).enumerate().for_each(|(p, panel)| unsafe {
            pack_b(b, k0, kc, p * NR, NR.min(n - p * NR), &mut panel[..kp * NR]);
        });
        let bp = &bp;
        let c_ptr = SendPtr(c.as_mut_ptr());
        // The first k block stores into C, later ones add to it.
        let accumulate = k0 > 0;
        (0..m.div_ceil(MC)).into_par_iter().for_each_init(
            || vec![0u32; MC.div_ceil(MR) * kp_max * MR],
            |ap, block| unsafe {
                let m0 = block * MC;
                let mc = MC.min(m - m0);
                let rpanels = mc.div_ceil(MR);
                for rp in 0..rpanels {
                    let rows = MR.min(mc - rp * MR);
                    pack_a(a, m0 + rp * MR, rows, k0, kc, &mut ap[rp * kp_max * MR..][..kp * MR]);
                }
                // Panel-major: one B panel (kp × NR, ≤ 32 KB) serves every row panel of the block
                // while it is in L1/L2.
                for p in 0..panels {
                    let cols = NR.min(n - p * NR);
                    for rp in 0..rpanels {
                        let rows = MR.min(mc - rp * MR);
                        let dst = c_ptr.get().add((m0 + rp * MR) * n + p * NR);
                        micro_kernel(
                            kp,
                            ap.as_ptr().add(rp * kp_max * MR),
                            bp.as_ptr().add(p * kp_max * NR),
                            (dst, n, accumulate),
                            rows,
                            cols,
                        );
                    }
                }
            },
        );
    }
    c
}

/// A `*mut f32` the row-block tasks share; each writes only its own rows of C.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: see the type's doc.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the Send wrapper, not the raw field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Round-to-nearest-even f32 → bf16 bits (what `vcvtne2ps2bf16` and PyTorch do; no NaN inputs
/// reach a matmul that matters, and a NaN stays a NaN or becomes an infinity, both caught by
/// the loss check).
#[inline(always)]
fn bf16_bits(x: f32) -> u32 {
    let bits = x.to_bits();
    (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1))) >> 16
}

/// Two f32 vectors (k even, k odd) → 16 dwords, each (bf16 of lo) | (bf16 of hi) << 16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pair16(lo: __m512, hi: __m512) -> __m512i {
    let round = |x: __m512| {
        let bits = _mm512_castps_si512(x);
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)))
    };
    let lo = _mm512_srli_epi32::<16>(round(lo));
    let hi = _mm512_and_si512(round(hi), _mm512_set1_epi32(0xFFFF_0000u32 as i32));
    _mm512_or_si512(lo, hi)
}

/// Packs rows `r0 .. r0 + rows` and k `k0 .. k0 + kc` of A into `out` as [kc/2][MR] k-pairs
/// (rows past `rows` and the pad k are zero).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_a(a: Mat, r0: usize, rows: usize, k0: usize, kc: usize, out: &mut [u32]) {
    let kp = kc.div_ceil(2);
    unsafe {
        if a.rs == 1 && rows == MR && kc % 2 == 0 {
            // Rows contiguous (A is a transposed view, as dYᵀ in the weight gradient): for each
            // pair of k, the MR rows are two runs of 12 floats.
            let mask: __mmask16 = (1 << MR) - 1;
            for p in 0..kp {
                let lo = _mm512_maskz_loadu_ps(mask, a.ptr.add(r0 + (k0 + 2 * p) * a.cs));
                let hi = _mm512_maskz_loadu_ps(mask, a.ptr.add(r0 + (k0 + 2 * p + 1) * a.cs));
                _mm512_mask_storeu_epi32(out.as_mut_ptr().add(p * MR) as *mut i32, mask, pair16(lo, hi));
            }
            return;
        }
        if a.cs == 1 {
            // k contiguous (row-major A, as X or dY): pairs are adjacent floats; convert 32 at a
            // time, then scatter the 16 pairs to their [p][r] slots.
            let mut tmp = [0u32; 16];
            for r in 0..MR {
                if r >= rows {
                    for p in 0..kp {
                        out[p * MR + r] = 0;
                    }
                    continue;
                }
                let row = a.ptr.add((r0 + r) * a.rs + k0);
                let mut p = 0;
                while 2 * p + 32 <= kc {
                    let lo = _mm512_loadu_ps(row.add(2 * p));
                    let hi = _mm512_loadu_ps(row.add(2 * p + 16));
                    let bf: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                    _mm512_storeu_si512(tmp.as_mut_ptr() as *mut _, bf);
                    for (i, &v) in tmp.iter().enumerate() {
                        out[(p + i) * MR + r] = v;
                    }
                    p += 16;
                }
                while p < kp {
                    let x0 = *row.add(2 * p);
                    let x1 = if 2 * p + 1 < kc { *row.add(2 * p + 1) } else { 0.0 };
                    out[p * MR + r] = bf16_bits(x0) | (bf16_bits(x1) << 16);
                    p += 1;
                }
            }
            return;
        }
        for p in 0..kp {
            for r in 0..MR {
                out[p * MR + r] = if r < rows { pair_at(a, r0 + r, k0, kc, p, true) } else { 0 };
            }
        }
    }
}

/// Packs k `k0 .. k0 + kc` and columns `c0 .. c0 + cols` of B into `out` as [kc/2][NR] k-pairs.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_b(b: Mat, k0: usize, kc: usize, c0: usize, cols: usize, out: &mut [u32]) {
    let kp = kc.div_ceil(2);
    unsafe {
        if b.cs == 1 && cols == NR && kc % 2 == 0 {
            // Columns contiguous (row-major B, as W in dX = dY·W or X in dW = dYᵀ·X).
            for p in 0..kp {
                let r0 = b.ptr.add((k0 + 2 * p) * b.rs + c0);
                let r1 = b.ptr.add((k0 + 2 * p + 1) * b.rs + c0);
                for half in 0..2 {
                    let v = pair16(_mm512_loadu_ps(r0.add(16 * half)), _mm512_loadu_ps(r1.add(16 * half)));
                    _mm512_storeu_si512(out.as_mut_ptr().add(p * NR + 16 * half) as *mut _, v);
                }
            }
            return;
        }
        if b.rs == 1 {
            // k contiguous (B = Wᵀ in the forward Y = X·Wᵀ): pairs adjacent along each column.
            let mut tmp = [0u32; 16];
            for j in 0..NR {
                if j >= cols {
                    for p in 0..kp {
                        out[p * NR + j] = 0;
                    }
                    continue;
                }
                let col = b.ptr.add((c0 + j) * b.cs + k0);
                let mut p = 0;
                while 2 * p + 32 <= kc {
                    let lo = _mm512_loadu_ps(col.add(2 * p));
                    let hi = _mm512_loadu_ps(col.add(2 * p + 16));
                    let bf: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                    _mm512_storeu_si512(tmp.as_mut_ptr() as *mut _, bf);
                    for (i, &v) in tmp.iter().enumerate() {
                        out[(p + i) * NR + j] = v;
                    }
                    p += 16;
                }
                while p < kp {
                    let x0 = *col.add(2 * p);
                    let x1 = if 2 * p + 1 < kc { *col.add(2 * p + 1) } else { 0.0 };
                    out[p * NR + j] = bf16_bits(x0) | (bf16_bits(x1) << 16);
                    p += 1;
                }
            }
            return;
        }
        for p in 0..kp {
            for j in 0..NR {
                out[p * NR + j] = if j < cols { pair_at(b, c0 + j, k0, kc, p, false) } else { 0 };
            }
        }
    }
}

/// The k-pair p (k = k0 + 2p, k0 + 2p + 1; the second 0 past kc) of row `i` of A (`row_major`)
/// or column `i` of B, any strides.
#[inline(always)]
unsafe fn pair_at(m: Mat, i: usize, k0: usize, kc: usize, p: usize, row_major: bool) -> u32 {
    let at = |k: usize| unsafe { if row_major { m.at(i, k) } else { m.at(k, i) } };
    let x0 = at(k0 + 2 * p);
    let x1 = if 2 * p + 1 < kc { at(k0 + 2 * p + 1) } else { 0.0 };
    bf16_bits(x0) | (bf16_bits(x1) << 16)
}

/// C[rows × cols] (row stride ldc) = (or += when accumulating) A panel [kp][MR] · B panel [kp][NR].
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn micro_kernel(
    kp: usize,
    ap: *const u32,
    bp: *const u32,
    (c, ldc, accumulate): (*mut f32, usize, bool),
    rows: usize,
    cols: usize,
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (mut ap, mut bp) = (ap, bp);
        for _ in 0..kp {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(16) as *const _));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(*ap.add(r) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], a, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], a, b1);
            }
            ap = ap.add(MR);
            bp = bp.add(NR);
        }
        let m0: __mmask16 = if cols >= 16 { 0xFFFF } else { (1u32 << cols) as u16 - 1 };
        let m1: __mmask16 = if cols >= 32 {
            0xFFFF
        } else if cols > 16 {
            (1u32 << (cols - 16)) as u16 - 1
        } else {
            0
        };
        for (r, acc) in acc.iter().enumerate().take(rows) {
            let row = c.add(r * ldc);
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row.add(16)));
            }
            _mm512_mask_storeu_ps(row, m0, v0);
            _mm512_mask_storeu_ps(row.add(16), m1, v1);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// On FlexTensors

use burn::backend::flex::FlexTensor;

use super::{contiguous, counters, dims, f32s, tensor};

/// A 2-D f32 FlexTensor as a [`Mat`] view of its buffer (any non-negative strides: transposed
/// views are read in place), with its (rows, cols).
pub(crate) fn mat(t: &FlexTensor) -> Option<(Mat, usize, usize)> {
    let layout = t.layout();
    let (rows, cols) = (layout.shape()[0], layout.shape()[1]);
    let s = layout.strides();
    if layout.num_dims() != 2 || s.iter().any(|&x| x < 0) {
        return None;
    }
    let data = &t.storage::<f32>()[layout.start_offset()..];
    Some((Mat::new(data, s[0] as usize, s[1] as usize), rows, cols))
}

/// x [N, in] · wᵀ (w [out, in]) → [N, out], operands rounded to bf16.
pub(crate) fn linear_forward(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    counters::bump(&counters::BF16_MATMUL);
    let (xm, n, k) = mat(x).expect("kernels::linear_bf16: x is a 2-D f32 tensor");
    let (wm, out, k2) = mat(w).expect("kernels::linear_bf16: w is a 2-D f32 tensor");
    assert_eq!(k, k2, "kernels::linear_bf16: x has {k} columns, w {k2}");
    // SAFETY: the views describe the tensors' own buffers; `available()` was checked by the router.
    tensor(unsafe { matmul(n, out, k, xm, wm.t()) }, vec![n, out])
}

/// The gradients of [`linear_forward`] for dy [N, out]: (dx = dy·w, dw = dyᵀ·x), each only if
/// asked for, each with bf16 operands as autocast's backward has.
pub(crate) fn linear_backward(
    x: &FlexTensor,
    w: &FlexTensor,
    dy: FlexTensor,
    want_dx: bool,
    want_dw: bool,
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    let dy = contiguous(dy, "linear_bf16 backward");
    let (n, out) = (dims(&dy)[0], dims(&dy)[1]);
    let dym = Mat::new(f32s(&dy), out, 1);
    let (xm, _, k) = mat(x).expect("2-D");
    let (wm, _, _) = mat(w).expect("2-D");
    // SAFETY: as in the forward.
    let dx = want_dx.then(|| {
        counters::bump(&counters::BF16_MATMUL);
        tensor(unsafe { matmul(n, k, out, dym, wm) }, vec![n, k])
    });
    let dw = want_dw.then(|| {
        counters::bump(&counters::BF16_MATMUL);
        tensor(unsafe { matmul(out, k, n, dym.t(), xm) }, vec![out, k])
    });
    (dx, dw)
}

/// a [m, k] · b [k, n] → [m, n], operands rounded to bf16 (untracked: Muon's iterations).
pub(crate) fn matmul_plain(a: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    counters::bump(&counters::BF16_MATMUL);
    let (am, m, k) = mat(a).expect("kernels::matmul_bf16: a is a 2-D f32 tensor");
    let (bm, k2, n) = mat(b).expect("kernels::matmul_bf16: b is a 2-D f32 tensor");
    assert_eq!(k, k2, "kernels::matmul_bf16: a has {k} columns, b {k2} rows");
    // SAFETY: as in linear_forward.
    tensor(unsafe { matmul(m, n, k, am, bm) }, vec![m, n])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bf16(x) as f32, the reference's rounding.
    fn round(x: f32) -> f32 {
        f32::from_bits(bf16_bits(x) << 16)
    }

    #[test]
    fn matmul_matches_a_bf16_rounded_reference_for_every_layout_and_edge() {
        if !available() {
            eprintln!("no AVX512-BF16 on this CPU: the bf16 kernel is not exercised");
            return;
        }
        let mut seed = 1u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        // Sizes around the tile edges (MR 12, NR 32, KC 512, NC 1024) and odd k.
        for &(m, n, k) in &[
            (1, 1, 1),
            (13, 33, 7),
            (12, 32, 64),
            (100, 70, 513),
            (25, 1030, 40),
            (97, 64, 1100),
            (200, 50, 1025),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
            let want: Vec<f64> = (0..m * n)
                .map(|ij| {
                    let (i, j) = (ij / n, ij % n);
                    (0..k).map(|p| round(a[i * k + p]) as f64 * round(b[p * n + j]) as f64).sum()
                })
                .collect();
            // A row-major or transposed-stored, B row-major or transposed-stored.
            let at: Vec<f32> = (0..k * m).map(|pi| a[(pi % m) * k + pi / m]).collect();
            let bt: Vec<f32> = (0..n * k).map(|jp| b[(jp % k) * n + jp / k]).collect();
            let layouts = [
                (Mat::new(&a, k, 1), Mat::new(&b, n, 1), "A rows, B rows"),
                (Mat::new(&at, 1, m), Mat::new(&b, n, 1), "A cols, B rows"),
                (Mat::new(&a, k, 1), Mat::new(&bt, 1, k), "A rows, B cols"),
                (Mat::new(&at, 1, m), Mat::new(&bt, 1, k), "A cols, B cols"),
            ];
            for (am, bm, what) in layouts {
                let c = unsafe { matmul(m, n, k, am, bm) };
                let err = c.iter().zip(&want).map(|(&x, &y)| (x as f64 - y).abs()).fold(0.0, f64::max);
                // Products of bf16 are exact in f32; only the f32 summation order differs.
                let bound = 1e-5 * (k as f64).sqrt() * 4.0;
                println!("bf16 matmul {m}x{n}x{k} {what}: max abs diff {err:.2e} (bound {bound:.1e})");
                assert!(err <= bound, "{m}x{n}x{k} {what}: max abs diff {err:e}");
            }
        }
    }
}
