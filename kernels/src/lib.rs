//! Fixed fused ops for the train program, each with a hand-written forward AND backward: RMSNorm,
//! RoPE+RMSNorm, causal sliding-window attention, relu², softcapped cross-entropy, and the AdamW
//! update. This crate
//! is the counterpart of the original's flash-attention import — the agent uses these ops, it does
//! not edit them.
//!
//! Why: on a CPU, a composed op pays one full memory pass (and often an allocation, with its page
//! faults) per primitive, forward and backward, and attention composed also computes every masked
//! score. Fused, each op is about one pass each way, and attention touches only the keys its
//! window can reach (see `flex/attention.rs`). `examples/bench.rs` and `examples/gpt_step.rs`
//! measure what that buys, per op and for the whole model.
//!
//! Routing (this file): f32 tensors go to the hand-written kernels of the backend they live on —
//! burn's Flex (the CPU kernels in `flex/`) or, built with `--features wgpu` or `cuda`, burn's
//! CubeBackend (the `#[cube]` kernels in `cube/`, one source for CUDA and wgpu). A plain tensor
//! gets the forward kernel alone; an autodiff one (with or without gradient checkpointing) gets
//! the forward kernel plus a backward node running the backward kernel (`autodiff.rs`).
//! Everything else — other dtypes, inputs on different backends — takes the composed version in
//! `reference.rs`, which autodiff differentiates itself and which keeps the window real.
//!
//! Module map: `lib.rs` API and routing; `ops.rs` the forward/backward pairs each backend
//! provides; `autodiff.rs` backward nodes (written once for every backend); `reference.rs`
//! composed versions; `flex/` the CPU kernels (`math.rs`: vectorisable exp/tanh, AVX2/AVX-512
//! variants); `cube/` the GPU kernels.

mod autodiff;
#[cfg(feature = "cube")]
mod cube;
mod flex;
mod ops;
pub mod reference;

use burn::backend::Backend;
use burn::backend::autodiff::checkpoint::strategy::{BalancedCheckpointing, NoCheckpointing};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, DispatchAutodiffContext, DispatchKindConversion, DispatchTensor, DispatchTensorKind, Flex,
    GradientCheckpointingStrategy,
};
use burn::tensor::{DType, Int, Tensor};
#[cfg(feature = "cube")]
use burn_cubecl::CubeBackend;

use ops::FusedOps;

/// The eps F.rms_norm uses by default: f32 machine epsilon.
pub const RMS_NORM_EPS: f32 = f32::EPSILON;

/// RMSNorm over the last dim, without weight: x / sqrt(mean(x², −1) + eps).
///
/// Shapes: x [..., d] → [..., d]. Use [`RMS_NORM_EPS`] for PyTorch's default.
pub fn rms_norm<const D: usize>(x: Tensor<D>, eps: f32) -> Tensor<D> {
    on_route!(
        route(&x),
        |B| wrap::<B, D>(B::rms_norm_forward(primitive::<B, D>(x), eps).0),
        |B, C| wrap::<Autodiff<B, C>, D>(autodiff::rms_norm::<B, C>(primitive::<Autodiff<B, C>, D>(x), eps)),
        reference::rms_norm(x, eps)
    )
}

/// RoPE then RMSNorm (no weight) over each head: the model's `norm(apply_rotary_emb(q))` for q
/// and k, fused.
///
/// Shapes: x [B, T, H, D] (D even), cos and sin [T, D/2] → [B, T, H, D]. Each head's halves
/// (x1, x2) are rotated to (x1·cos + x2·sin, x2·cos − x1·sin), then normalised over D. The tables
/// are constants: if either is tracked by autodiff (or lives on another backend), the composed
/// version runs so they get their gradients.
pub fn rope_rms_norm(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>, eps: f32) -> Tensor<4> {
    fn tables<B: FusedOps>(cos: &Tensor<2>, sin: &Tensor<2>) -> Option<(FloatTensor<B>, FloatTensor<B>)>
    where
        DispatchTensor: DispatchKindConversion<B>,
    {
        constant::<B>(cos).zip(constant::<B>(sin))
    }
    on_route!(
        route(&x),
        |B| match tables::<B>(&cos, &sin) {
            Some((c, s)) => wrap::<B, 4>(B::rope_rms_norm_forward(primitive::<B, 4>(x), &c, &s, eps).0),
            None => reference::rope_rms_norm(x, cos, sin, eps),
        },
        |B, C| match tables::<B>(&cos, &sin) {
            Some((c, s)) => wrap::<Autodiff<B, C>, 4>(autodiff::rope_rms_norm::<B, C>(
                primitive::<Autodiff<B, C>, 4>(x),
                c,
                s,
                eps
            )),
            None => reference::rope_rms_norm(x, cos, sin, eps),
        },
        reference::rope_rms_norm(x, cos, sin, eps)
    )
}

/// relu(x)², the MLP activation, fused (one pass forward, one backward; saves only its output,
/// which the next matmul keeps anyway).
///
/// Shapes: x [...] → [...].
pub fn relu_square<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    on_route!(
        route(&x),
        |B| wrap::<B, D>(B::relu_square_forward(primitive::<B, D>(x))),
        |B, C| wrap::<Autodiff<B, C>, D>(autodiff::relu_square::<B, C>(primitive::<Autodiff<B, C>, D>(x))),
        reference::relu_square(x)
    )
}

/// Causal attention with a sliding window, on flash-attn's layout.
///
/// Shapes: q [B, T, H, D], k and v [B, T, Hkv, D] with H a multiple of Hkv (grouped-query
/// attention: query head h reads kv head h / (H / Hkv)) → [B, T, H, D].
/// Query t attends keys t − window ..= t (flash-attn `window_size=(window, 0)`, `causal=True`);
/// window ≥ T − 1 is full causal attention, window 0 lets each token see only itself.
/// Scores are scaled by `scale` (usually 1/√D) before the softmax.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, window: usize, scale: f32) -> Tensor<4> {
    check_attention_shapes(&q.dims(), &k.dims(), &v.dims());
    on_route!(
        same_route(&[route(&q), route(&k), route(&v)]),
        |B| wrap::<B, 4>(
            B::attention_forward(
                primitive::<B, 4>(q),
                primitive::<B, 4>(k),
                primitive::<B, 4>(v),
                window,
                scale
            )
            .0
        ),
        |B, C| wrap::<Autodiff<B, C>, 4>(autodiff::attention::<B, C>(
            primitive::<Autodiff<B, C>, 4>(q),
            primitive::<Autodiff<B, C>, 4>(k),
            primitive::<Autodiff<B, C>, 4>(v),
            window,
            scale,
        )),
        reference::attention(q, k, v, window, scale)
    )
}

/// Mean cross-entropy of softcapped logits, z = cap · tanh(logits / cap), over the rows whose
/// target is not −1 (PyTorch's `ignore_index=-1`). NaN when every target is ignored.
///
/// Shapes: logits [N, V], targets [N] → [1]. On the CPU a target outside 0..V panics; on a GPU it
/// is not checked (that would wait for the device).
pub fn softcap_cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>, cap: f32) -> Tensor<1> {
    let [n, _] = logits.dims();
    let [nt] = targets.dims();
    assert_eq!(n, nt, "kernels::softcap_cross_entropy: logits have {n} rows, targets {nt}");
    fn targets_on<B: FusedOps>(t: &Tensor<1, Int>) -> Option<B::Targets>
    where
        DispatchTensor: DispatchKindConversion<B>,
    {
        t.clone().inner().try_into_primitive::<B>().ok().map(B::targets)
    }
    on_route!(
        route(&logits),
        |B| match targets_on::<B>(&targets) {
            Some(t) => {
                let logits = B::contiguous(primitive::<B, 2>(logits));
                wrap::<B, 1>(B::cross_entropy_forward(&logits, &t, cap).0)
            }
            None => reference::softcap_cross_entropy(logits, targets, cap),
        },
        |B, C| match targets_on::<B>(&targets) {
            Some(t) => wrap::<Autodiff<B, C>, 1>(autodiff::softcap_cross_entropy::<B, C>(
                primitive::<Autodiff<B, C>, 2>(logits),
                t,
                cap
            )),
            None => reference::softcap_cross_entropy(logits, targets, cap),
        },
        reference::softcap_cross_entropy(logits, targets, cap)
    )
}

/// The logit softcap, z = cap · tanh(logits / cap), for evaluation: on the CPU one in-place,
/// multi-threaded pass with the tanh the training loss uses; elsewhere (a GPU, autodiff) the
/// composed version. Training should call [`softcap_cross_entropy`], which caps inside.
///
/// Shapes: logits [...] → [...].
pub fn softcap<const D: usize>(logits: Tensor<D>, cap: f32) -> Tensor<D> {
    match route(&logits) {
        Route::Plain(Kind::Flex) => {
            wrap::<Flex, D>(flex::softcap::softcap_forward(primitive::<Flex, D>(logits), cap))
        }
        _ => reference::softcap(logits, cap),
    }
}

/// x · wᵀ with bf16 operands and f32 sums: the matmul of bf16 mixed precision, with f32 inputs
/// (activations, master weights) and an f32 output.
///
/// Shapes: x [N, in], w [out, in] → [N, out]. Its backward's products take bf16 operands too (dy
/// rounded), as under PyTorch's autocast, and it saves only the f32 x and w (which autodiff keeps
/// anyway), rounding them again in the backward. On the CPU with AVX512-BF16 one fused kernel
/// rounds while it packs (`flex/bf16.rs`); on GPU backends burn's matmul takes bf16 casts (tensor
/// cores); on other CPUs, f32 matmuls of the rounded operands (the same numbers, slower than f32).
pub fn linear_bf16(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    on_route!(
        same_route(&[route(&x), route(&w)]),
        |B| wrap::<B, 2>(B::linear_bf16_forward(&primitive::<B, 2>(x), &primitive::<B, 2>(w))),
        |B, C| wrap::<Autodiff<B, C>, 2>(autodiff::linear_bf16::<B, C>(
            primitive::<Autodiff<B, C>, 2>(x),
            primitive::<Autodiff<B, C>, 2>(w),
        )),
        reference::linear_bf16(x, w)
    )
}

/// a · b with bf16 operands and f32 sums, for untracked tensors (an optimizer's matmuls, e.g.
/// Muon's polar-express iterations). Shapes: a [m, k], b [k, n] → [m, n]; transposed views are
/// read in place. The AVX512-BF16 kernel on plain f32 Flex; the composed casts elsewhere (an f32
/// matmul on a device without bf16).
pub fn matmul_bf16(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let both_flex = [&a, &b].iter().all(|t| route(*t) == Route::Plain(Kind::Flex));
    if both_flex && flex::bf16::available() {
        let (a, b) = (primitive::<Flex, 2>(a), primitive::<Flex, 2>(b));
        return wrap::<Flex, 2>(flex::bf16::matmul_plain(&a, &b));
    }
    if !a.device().supports_dtype(DType::BF16) {
        // wgpu on most adapters: f32, as linear_bf16 does there.
        return a.matmul(b);
    }
    reference::matmul_bf16(a, b)
}

/// Whether this CPU has the AVX512-BF16 kernels behind [`linear_bf16`] and [`matmul_bf16`].
pub fn cpu_has_bf16() -> bool {
    flex::bf16::available()
}

/// AdamW's hyperparameters for one step (the original's `adamw_step_fused` arguments).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// The step number, from 1.
    pub step: i32,
}

/// One AdamW update of a parameter and its two moments, untracked tensors (an optimizer runs
/// outside autodiff): returns (p', m', v'). `p ← p·(1 − lr·wd)`, `m ← lerp(m, g, 1 − β1)`,
/// `v ← lerp(v, g², 1 − β2)`, `p ← p − lr/(1 − β1ᵗ) · m / (√(v/(1 − β2ᵗ)) + eps)`.
///
/// Shapes: all four the same. On Flex in f32 it is one fused pass, in place when the caller
/// hands over the only handle to p, m and v; elsewhere the composed version runs.
pub fn adamw_step<const D: usize>(
    p: Tensor<D>,
    grad: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    h: &AdamW,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let all_flex = [&p, &grad, &m, &v].iter().all(|t| route(*t) == Route::Plain(Kind::Flex));
    if !all_flex {
        return reference::adamw_step(p, grad, m, v, h);
    }
    let folded = flex::adamw::Folded {
        decay: (1.0 - h.lr * h.weight_decay) as f32,
        beta1: h.beta1 as f32,
        beta2: h.beta2 as f32,
        inv_bias2: (1.0 / (1.0 - h.beta2.powi(h.step))) as f32,
        step_size: (h.lr / (1.0 - h.beta1.powi(h.step))) as f32,
        eps: h.eps as f32,
    };
    let (p, m, v) = flex::adamw::adamw_step(
        primitive::<Flex, D>(p),
        primitive::<Flex, D>(grad),
        primitive::<Flex, D>(m),
        primitive::<Flex, D>(v),
        folded,
    );
    (wrap::<Flex, D>(p), wrap::<Flex, D>(m), wrap::<Flex, D>(v))
}

/// How many times each hand-written kernel has run in this process. Tests and benches read it to
/// know the fast path really ran (the composed fallback gives the same numbers, only slower).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCalls {
    pub rms_norm_forward: usize,
    pub rms_norm_backward: usize,
    pub attention_forward: usize,
    pub attention_backward: usize,
    pub cross_entropy_forward: usize,
    pub cross_entropy_backward: usize,
    pub rope_rms_norm_forward: usize,
    pub rope_rms_norm_backward: usize,
    pub relu_square_forward: usize,
    pub relu_square_backward: usize,
    pub adamw_step: usize,
    /// The AVX512-BF16 matmul (`linear_bf16`, `matmul_bf16`), forward and backward products.
    pub bf16_matmul: usize,
    /// The `#[cube]` kernels (GPU backends), the same ops.
    pub cube_rms_norm_forward: usize,
    pub cube_rms_norm_backward: usize,
    pub cube_attention_forward: usize,
    pub cube_attention_backward: usize,
    pub cube_cross_entropy_forward: usize,
    pub cube_cross_entropy_backward: usize,
    pub cube_rope_rms_norm_forward: usize,
    pub cube_rope_rms_norm_backward: usize,
    pub cube_relu_square_forward: usize,
    pub cube_relu_square_backward: usize,
}

/// Σ e^(x − shift) over `xs`: the vectorised `exp` of the CPU kernels (about 1 ulp per term)
/// with an f64 total. Pass the maximum as `shift` for a log-sum-exp; `prepare`'s scorer does.
pub fn exp_sum(xs: &[f32], shift: f32) -> f64 {
    flex::math::exp_sum(xs, shift)
}

/// Which instruction set the CPU kernels use: "avx512", "avx2" or "baseline" (the best the CPU
/// has, or lower if the environment variable `KERNELS_ISA` caps it). For logs and benchmarks.
pub fn instruction_set() -> &'static str {
    match flex::math::level() {
        flex::math::Level::Avx512 => "avx512",
        flex::math::Level::Avx2 => "avx2",
        flex::math::Level::Baseline => "baseline",
    }
}

/// The current [`KernelCalls`].
pub fn kernel_calls() -> KernelCalls {
    use std::sync::atomic::Ordering::Relaxed;
    KernelCalls {
        rms_norm_forward: counters::RMS_NORM_FORWARD.load(Relaxed),
        rms_norm_backward: counters::RMS_NORM_BACKWARD.load(Relaxed),
        attention_forward: counters::ATTENTION_FORWARD.load(Relaxed),
        attention_backward: counters::ATTENTION_BACKWARD.load(Relaxed),
        cross_entropy_forward: counters::CROSS_ENTROPY_FORWARD.load(Relaxed),
        cross_entropy_backward: counters::CROSS_ENTROPY_BACKWARD.load(Relaxed),
        rope_rms_norm_forward: counters::ROPE_RMS_NORM_FORWARD.load(Relaxed),
        rope_rms_norm_backward: counters::ROPE_RMS_NORM_BACKWARD.load(Relaxed),
        relu_square_forward: counters::RELU_SQUARE_FORWARD.load(Relaxed),
        relu_square_backward: counters::RELU_SQUARE_BACKWARD.load(Relaxed),
        adamw_step: counters::ADAMW_STEP.load(Relaxed),
        bf16_matmul: counters::BF16_MATMUL.load(Relaxed),
        cube_rms_norm_forward: counters::CUBE_RMS_NORM_FORWARD.load(Relaxed),
        cube_rms_norm_backward: counters::CUBE_RMS_NORM_BACKWARD.load(Relaxed),
        cube_attention_forward: counters::CUBE_ATTENTION_FORWARD.load(Relaxed),
        cube_attention_backward: counters::CUBE_ATTENTION_BACKWARD.load(Relaxed),
        cube_cross_entropy_forward: counters::CUBE_CROSS_ENTROPY_FORWARD.load(Relaxed),
        cube_cross_entropy_backward: counters::CUBE_CROSS_ENTROPY_BACKWARD.load(Relaxed),
        cube_rope_rms_norm_forward: counters::CUBE_ROPE_RMS_NORM_FORWARD.load(Relaxed),
        cube_rope_rms_norm_backward: counters::CUBE_ROPE_RMS_NORM_BACKWARD.load(Relaxed),
        cube_relu_square_forward: counters::CUBE_RELU_SQUARE_FORWARD.load(Relaxed),
        cube_relu_square_backward: counters::CUBE_RELU_SQUARE_BACKWARD.load(Relaxed),
    }
}

// ---------------------------------------------------------------------------------------------
// Routing

/// How many times each kernel has run in this process (read through [`kernel_calls`]).
pub(crate) mod counters {
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(crate) static ADAMW_STEP: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static RMS_NORM_FORWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static RMS_NORM_BACKWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static ATTENTION_FORWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static ATTENTION_BACKWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CROSS_ENTROPY_FORWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CROSS_ENTROPY_BACKWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static RELU_SQUARE_FORWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static RELU_SQUARE_BACKWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static ROPE_RMS_NORM_FORWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static ROPE_RMS_NORM_BACKWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static BF16_MATMUL: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CUBE_RMS_NORM_FORWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CUBE_RMS_NORM_BACKWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CUBE_ATTENTION_FORWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CUBE_ATTENTION_BACKWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CUBE_CROSS_ENTROPY_FORWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CUBE_CROSS_ENTROPY_BACKWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CUBE_ROPE_RMS_NORM_FORWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CUBE_ROPE_RMS_NORM_BACKWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CUBE_RELU_SQUARE_FORWARD: AtomicUsize = AtomicUsize::new(0);
    pub(crate) static CUBE_RELU_SQUARE_BACKWARD: AtomicUsize = AtomicUsize::new(0);

    pub(crate) fn bump(counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A backend with kernels of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// burn's Flex (CPU): `flex/`.
    Flex,
    /// burn's CubeBackend (CUDA, wgpu, ...): `cube/`.
    #[cfg(feature = "cube")]
    Cube,
}

/// Which implementation serves a call, decided by where its float inputs live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// f32 on a plain backend: forward kernel only.
    Plain(Kind),
    /// f32 on `Autodiff<backend, C>`, C given by the strategy: forward kernel + backward node.
    Autodiff(Kind, GradientCheckpointingStrategy),
    /// Anything else: the composed reference.
    Composed,
}

fn route<const D: usize>(t: &Tensor<D>) -> Route {
    if t.dtype() != DType::F32 {
        return Route::Composed;
    }
    let kind = |k: &DispatchTensorKind| match k {
        DispatchTensorKind::Flex(_) => Some(Kind::Flex),
        #[cfg(feature = "cube")]
        DispatchTensorKind::Cube(_) => Some(Kind::Cube),
        #[allow(unreachable_patterns)] // matters only when another backend is compiled in
        _ => None,
    };
    // Cloning a tensor clones Arcs, not data.
    let DispatchTensor { kind: k, autodiff } = t.clone().into_dispatch();
    match (k, autodiff) {
        (DispatchTensorKind::Autodiff(inner), DispatchAutodiffContext::Enabled(strategy)) => {
            kind(&inner).map_or(Route::Composed, |k| Route::Autodiff(k, strategy))
        }
        (k, DispatchAutodiffContext::Disabled) => kind(&k).map_or(Route::Composed, Route::Plain),
        _ => Route::Composed,
    }
}

/// Runs `$plain` with the type `$b` naming the backend of a `Route::Plain`, `$ad` with `$b2` and
/// `$c` naming backend and checkpoint strategy of a `Route::Autodiff`, `$composed` otherwise.
macro_rules! on_route {
    ($route:expr, |$b:ident| $plain:expr, |$b2:ident, $c:ident| $ad:expr, $composed:expr) => {{
        use GradientCheckpointingStrategy as S;
        match $route {
            Route::Plain(Kind::Flex) => {
                type $b = Flex;
                $plain
            }
            #[cfg(feature = "cube")]
            Route::Plain(Kind::Cube) => {
                type $b = CubeBackend;
                $plain
            }
            Route::Autodiff(Kind::Flex, S::Disabled) => {
                type $b2 = Flex;
                type $c = NoCheckpointing;
                $ad
            }
            Route::Autodiff(Kind::Flex, S::Balanced) => {
                type $b2 = Flex;
                type $c = BalancedCheckpointing;
                $ad
            }
            #[cfg(feature = "cube")]
            Route::Autodiff(Kind::Cube, S::Disabled) => {
                type $b2 = CubeBackend;
                type $c = NoCheckpointing;
                $ad
            }
            #[cfg(feature = "cube")]
            Route::Autodiff(Kind::Cube, S::Balanced) => {
                type $b2 = CubeBackend;
                type $c = BalancedCheckpointing;
                $ad
            }
            Route::Composed => $composed,
        }
    }};
}
use on_route;

/// The route all inputs share, or Composed when they differ (e.g. one input detached to a plain
/// backend): burn's own ops know how to mix those, our kernels need one backend.
fn same_route(routes: &[Route]) -> Route {
    if routes.iter().all(|r| *r == routes[0]) { routes[0] } else { Route::Composed }
}

/// The backend primitive of a tensor the router sent to backend `B`.
fn primitive<B: Backend, const D: usize>(t: Tensor<D>) -> FloatTensor<B>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    t.try_into_primitive::<B>().expect("kernels: routed to this backend, so the tensor lives there")
}

/// A tensor from backend `B`'s primitive.
fn wrap<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<D>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    Tensor::from_primitive::<B>(t)
}

/// A constant (untracked) f32 tensor on backend `B` (autodiff or not) as a contiguous `B`
/// primitive; None when it lives elsewhere, is tracked, or is not f32.
fn constant<B: FusedOps>(t: &Tensor<2>) -> Option<FloatTensor<B>>
where
    DispatchTensor: DispatchKindConversion<B>,
{
    if t.dtype() != DType::F32 || t.is_tracked() {
        return None;
    }
    t.clone().inner().try_into_primitive::<B>().ok().map(B::contiguous)
}

fn check_attention_shapes(q: &[usize; 4], k: &[usize; 4], v: &[usize; 4]) {
    let same = q[0] == k[0] && q[1] == k[1] && q[3] == k[3] && k == v;
    assert!(
        same && k[2] > 0 && q[2].is_multiple_of(k[2]),
        "kernels::attention: want q [B,T,H,D] and k, v [B,T,Hkv,D] with H a multiple of Hkv; \
         got q {q:?} k {k:?} v {v:?}"
    );
}
