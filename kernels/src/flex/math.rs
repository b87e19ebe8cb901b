//! Vectorisable f32 math for the CPU kernels: `exp`, `tanh`, lane-parallel reductions (dot, max),
//! and the `multiversion!` macro that compiles a hot loop again for AVX2+FMA and for AVX-512.
//!
//! Why: the kernels spend their time in `exp` (softmax inside attention, cross-entropy) and `tanh`
//! (the logit softcap) over millions of elements per step. `f32::exp` is a libm call per element
//! and never vectorises; the branch-free polynomials below do, once the loop around them is
//! compiled with wide registers. The baseline x86-64 target has only SSE2, so every hot loop is
//! written once as plain scalar code, generic over [`Isa`] (which says whether `mul_add` is a
//! single instruction), and `multiversion!` instantiates it per instruction set, picked at run
//! time — the same trick `gemm` and burn-flex's `macerator` use.

/// What differs between the instruction sets a kernel is compiled for.
pub(crate) trait Isa {
    /// a·b + c: one fused instruction where the CPU has FMA, two otherwise (never `mul_add`
    /// without FMA: that is a libm call per element).
    fn fma(a: f32, b: f32, c: f32) -> f32;
}

/// SSE2 / any CPU: no fused multiply-add.
pub(crate) struct Baseline;

/// AVX2+FMA or AVX-512: `mul_add` is one instruction.
pub(crate) struct Fused;

impl Isa for Baseline {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

impl Isa for Fused {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// `1.5 · 2^23`: adding it to a float of magnitude < 2^22 leaves round-to-nearest(x) in the low
/// mantissa bits. Used instead of `f32::round`, which is a libm call without SSE4.1.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x, branch-free (Cephes `expf`: range reduction by ln 2, degree-5 polynomial, exponent by bit
/// arithmetic). Relative error ≈ 1 ulp. Inputs are clamped to [-87, 88]: e^-87 ≈ 1.6e-38 is the
/// smallest normal neighbourhood, so callers that need an exact 0 for masked entries write it
/// themselves.
#[inline(always)]
pub(crate) fn exp<I: Isa>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split in two so n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let k = I::fma(x, LOG2E, ROUND_MAGIC);
    let n = k - ROUND_MAGIC;
    let r = I::fma(n, -LN2_LO, I::fma(n, -LN2_HI, x));
    let mut p = 1.987_569_1e-4_f32;
    p = I::fma(p, r, 1.398_199_9e-3);
    p = I::fma(p, r, 8.333_452e-3);
    p = I::fma(p, r, 4.166_579_6e-2);
    p = I::fma(p, r, 1.666_666_5e-1);
    p = I::fma(p, r, 5e-1);
    let y = I::fma(p * r, r, r) + 1.0;
    // k's bits are ROUND_MAGIC's bits + n; rebuild 2^n as a float with biased exponent n + 127.
    let pow2n = f32::from_bits(k.to_bits().wrapping_sub(ROUND_MAGIC.to_bits()).wrapping_add(127) << 23);
    y * pow2n
}

/// Σ e^(x − shift) over `xs`, for a log-sum-exp outside the kernels (`prepare`'s scorer sums
/// a whole vocabulary per position, over a billion terms per scoring). Each term is the `exp`
/// above; 16 lanes sum four terms each in f32 (values ≤ 1 when `shift` is the maximum, so
/// each lane's rounding stays near 1e-7 relative), then every block of 64 is added in f64.
#[inline(always)]
fn exp_sum_generic<I: Isa>(xs: &[f32], shift: f32) -> f64 {
    let mut total = 0.0f64;
    let mut blocks = xs.chunks_exact(64);
    for block in &mut blocks {
        let mut acc = [0.0f32; 16];
        for quarter in block.chunks_exact(16) {
            for i in 0..16 {
                acc[i] += exp::<I>(quarter[i] - shift);
            }
        }
        total += acc.iter().map(|&a| a as f64).sum::<f64>();
    }
    for &x in blocks.remainder() {
        total += exp::<I>(x - shift) as f64;
    }
    total
}

multiversion! {
    pub(crate) fn exp_sum(xs: &[f32], shift: f32) -> f64 = exp_sum_generic;
}

/// tanh(x), branch-free: Eigen's rational approximation (odd degree-13 over even degree-6
/// polynomial) on x clamped to ±7.905, where tanh is 1 to within f32 rounding. Absolute error
/// ≈ 4e-7 over the whole line; exact (x) near 0 where the polynomial would lose relative accuracy.
#[inline(always)]
pub(crate) fn tanh<I: Isa>(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    let xc = x.clamp(-CLAMP, CLAMP);
    let x2 = xc * xc;
    let mut p = -2.760_768_5e-16_f32;
    p = I::fma(p, x2, 2.000_188e-13);
    p = I::fma(p, x2, -8.604_672e-11);
    p = I::fma(p, x2, 5.122_297e-8);
    p = I::fma(p, x2, 1.485_722_4e-5);
    p = I::fma(p, x2, 6.372_619_3e-4);
    p = I::fma(p, x2, 4.893_524_6e-3);
    p *= xc;
    let mut q = 1.198_258_4e-6_f32;
    q = I::fma(q, x2, 1.185_347_1e-4);
    q = I::fma(q, x2, 2.268_434_7e-3);
    q = I::fma(q, x2, 4.893_525e-3);
    if x.abs() < 4e-4 { x } else { p / q }
}

/// Σ a[i]·b[i], with 16 independent accumulators so the loop vectorises (float addition is not
/// associative, so LLVM will not split a single running sum by itself).
#[inline(always)]
pub(crate) fn dot<I: Isa>(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..16 {
            acc[i] = I::fma(x[i], y[i], acc[i]);
        }
    }
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// max x[i] (−∞ for an empty slice), lane-parallel like [`dot`].
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for i in 0..16 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// The instruction sets a kernel is compiled for, in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Baseline,
    Avx2,
    Avx512,
}

/// The instruction set the kernels run with: the best the CPU has, capped by the environment
/// variable `KERNELS_ISA` (`baseline`, `avx2`, `avx512`) when set — so tests can check every
/// variant and benchmarks can show what the wide ones buy. Decided once per process.
pub(crate) fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var("KERNELS_ISA").as_deref() {
            Ok("baseline") => Level::Baseline,
            Ok("avx2") => Level::Avx2,
            _ => Level::Avx512,
        };
        detected().min(cap)
    })
}

#[cfg(target_arch = "x86_64")]
fn detected() -> Level {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("avx512vl") && has!("avx2") && has!("fma") {
        Level::Avx512
    } else if has!("avx2") && has!("fma") {
        Level::Avx2
    } else {
        Level::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detected() -> Level {
    Level::Baseline
}

/// Defines `fn $name(args) -> ret` that runs `$generic::<I>` compiled for the instruction set
/// [`level`] picks: AVX-512, AVX2+FMA, or the baseline build. `$generic` must be
/// `#[inline(always)]` so its body is compiled inside the feature-enabled wrapper. Call it per
/// row or per task, never per element.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $generic:ident;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::flex::math::{level, Level};
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $generic::<$crate::flex::math::Fused>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic::<$crate::flex::math::Fused>($($arg),*)
                }
                match level() {
                    // SAFETY: level() returns Avx512 only when the CPU has those features.
                    Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: level() returns Avx2 only when the CPU has AVX2 and FMA.
                    Level::Avx2 => return unsafe { avx2($($arg),*) },
                    Level::Baseline => {}
                }
            }
            $generic::<$crate::flex::math::Baseline>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_std() {
        let mut worst = 0.0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let want = (x as f64).exp();
            worst = worst.max(((exp::<Baseline>(x) as f64) - want).abs() / want);
        }
        println!("exp: max relative error {worst:.3e}");
        assert!(worst < 4.0 * f32::EPSILON as f64, "exp relative error {worst:.3e}");
    }

    #[test]
    fn tanh_is_within_4e7_of_std() {
        let mut worst = 0.0f64;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max(((tanh::<Baseline>(x) as f64) - (x as f64).tanh()).abs());
        }
        println!("tanh: max absolute error {worst:.3e}");
        assert!(worst < 4e-7, "tanh absolute error {worst:.3e}");
        assert_eq!(tanh::<Baseline>(1e-6), 1e-6);
        assert_eq!(tanh::<Baseline>(100.0), tanh::<Baseline>(7.905_311));
    }

    #[test]
    fn reductions_match_sequential_sums() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot::<Baseline>(&a, &b) - want).abs() < 1e-5);
        assert_eq!(max(&a), a.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }
}
