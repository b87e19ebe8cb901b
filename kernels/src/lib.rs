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
//! Routing (this file): tensors in f32 on Flex go to the hand-written kernels — plain Flex gets
//! the forward kernel alone; `Autodiff<Flex, _>` (with or without gradient checkpointing) gets
//! the forward kernel plus a backward node running the backward kernel (`autodiff.rs`).
//! Everything else — wgpu, CUDA, other dtypes, inputs on different backends — takes the composed
//! version in `reference.rs`, which autodiff differentiates itself and which keeps the window real.
//!
//! Module map: `lib.rs` API and routing; `reference.rs` composed versions; `autodiff.rs` backward
//! nodes; `flex/` the CPU kernels (`math.rs`: vectorisable exp/tanh, AVX2/AVX-512 variants).

mod autodiff;
mod flex;
pub mod reference;

use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::{
    Autodiff, DispatchAutodiffContext, DispatchKindConversion, DispatchTensor, DispatchTensorKind, Flex,
    GradientCheckpointingStrategy,
};
use burn::tensor::{DType, Int, Tensor};

use flex::counters;

/// The eps F.rms_norm uses by default: f32 machine epsilon.
pub const RMS_NORM_EPS: f32 = f32::EPSILON;

/// RMSNorm over the last dim, without weight: x / sqrt(mean(x², −1) + eps).
///
/// Shapes: x [..., d] → [..., d]. Use [`RMS_NORM_EPS`] for PyTorch's default.
pub fn rms_norm<const D: usize>(x: Tensor<D>, eps: f32) -> Tensor<D> {
    match route(&x) {
        Route::Flex => {
            let (y, _) = flex::rms_norm::rms_norm_forward(flex_primitive(x), eps);
            Tensor::from_primitive::<Flex>(y)
        }
        Route::Autodiff(GradientCheckpointingStrategy::Disabled) => {
            rms_norm_autodiff::<NoCheckpointing, D>(x, eps)
        }
        Route::Autodiff(GradientCheckpointingStrategy::Balanced) => {
            rms_norm_autodiff::<BalancedCheckpointing, D>(x, eps)
        }
        Route::Composed => reference::rms_norm(x, eps),
    }
}

/// RoPE then RMSNorm (no weight) over each head: the model's `norm(apply_rotary_emb(q))` for q
/// and k, fused.
///
/// Shapes: x [B, T, H, D] (D even), cos and sin [T, D/2] → [B, T, H, D]. Each head's halves
/// (x1, x2) are rotated to (x1·cos + x2·sin, x2·cos − x1·sin), then normalised over D. The tables
/// are constants: if either is tracked by autodiff, the composed version runs so they get
/// their gradients.
pub fn rope_rms_norm(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>, eps: f32) -> Tensor<4> {
    let route = route(&x);
    let tables = match route {
        Route::Composed => None,
        _ => flex_constant(&cos).zip(flex_constant(&sin)),
    };
    let Some((cos_f, sin_f)) = tables else {
        return reference::rope_rms_norm(x, cos, sin, eps);
    };
    let (cos_f, sin_f) = (flex::contiguous(cos_f, "rope_rms_norm"), flex::contiguous(sin_f, "rope_rms_norm"));
    match route {
        Route::Flex => {
            let (y, _) = flex::rope::rope_rms_norm_forward(flex_primitive(x), &cos_f, &sin_f, eps);
            Tensor::from_primitive::<Flex>(y)
        }
        Route::Autodiff(GradientCheckpointingStrategy::Disabled) => {
            rope_rms_norm_autodiff::<NoCheckpointing>(x, cos_f, sin_f, eps)
        }
        Route::Autodiff(GradientCheckpointingStrategy::Balanced) => {
            rope_rms_norm_autodiff::<BalancedCheckpointing>(x, cos_f, sin_f, eps)
        }
        Route::Composed => unreachable!("handled above"),
    }
}

/// relu(x)², the MLP activation, fused (one pass forward, one backward; saves only its output,
/// which the next matmul keeps anyway).
///
/// Shapes: x [...] → [...].
pub fn relu_square<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match route(&x) {
        Route::Flex => {
            Tensor::from_primitive::<Flex>(flex::relu_square::relu_square_forward(flex_primitive(x)))
        }
        Route::Autodiff(GradientCheckpointingStrategy::Disabled) => {
            relu_square_autodiff::<NoCheckpointing, D>(x)
        }
        Route::Autodiff(GradientCheckpointingStrategy::Balanced) => {
            relu_square_autodiff::<BalancedCheckpointing, D>(x)
        }
        Route::Composed => reference::relu_square(x),
    }
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
    match same_route(&[route(&q), route(&k), route(&v)]) {
        Route::Flex => {
            let (q, k, v) = (flex_primitive(q), flex_primitive(k), flex_primitive(v));
            let (o, _) = flex::attention::attention_forward(q, k, v, window, scale);
            Tensor::from_primitive::<Flex>(o)
        }
        Route::Autodiff(GradientCheckpointingStrategy::Disabled) => {
            attention_autodiff::<NoCheckpointing>(q, k, v, window, scale)
        }
        Route::Autodiff(GradientCheckpointingStrategy::Balanced) => {
            attention_autodiff::<BalancedCheckpointing>(q, k, v, window, scale)
        }
        Route::Composed => reference::attention(q, k, v, window, scale),
    }
}

/// Mean cross-entropy of softcapped logits, z = cap · tanh(logits / cap), over the rows whose
/// target is not −1 (PyTorch's `ignore_index=-1`). NaN when every target is ignored.
///
/// Shapes: logits [N, V], targets [N] → [1].
pub fn softcap_cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>, cap: f32) -> Tensor<1> {
    let [n, _] = logits.dims();
    let [nt] = targets.dims();
    assert_eq!(n, nt, "kernels::softcap_cross_entropy: logits have {n} rows, targets {nt}");
    let route = route(&logits);
    let flex_targets = match route {
        Route::Composed => None,
        _ => targets.clone().inner().try_into_primitive::<Flex>().ok(),
    };
    let Some(flex_targets) = flex_targets else {
        return reference::softcap_cross_entropy(logits, targets, cap);
    };
    let targets = flex::cross_entropy::targets_i64(&flex_targets);
    match route {
        Route::Flex => {
            let logits = flex::contiguous(flex_primitive(logits), "softcap_cross_entropy");
            let out = flex::cross_entropy::cross_entropy_forward(&logits, &targets, cap);
            Tensor::from_primitive::<Flex>(out.loss)
        }
        Route::Autodiff(GradientCheckpointingStrategy::Disabled) => {
            cross_entropy_autodiff::<NoCheckpointing>(logits, targets, cap)
        }
        Route::Autodiff(GradientCheckpointingStrategy::Balanced) => {
            cross_entropy_autodiff::<BalancedCheckpointing>(logits, targets, cap)
        }
        Route::Composed => unreachable!("handled above"),
    }
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
    let all_flex = [&p, &grad, &m, &v].iter().all(|t| route(*t) == Route::Flex);
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
        flex_primitive(p),
        flex_primitive(grad),
        flex_primitive(m),
        flex_primitive(v),
        folded,
    );
    (Tensor::from_primitive::<Flex>(p), Tensor::from_primitive::<Flex>(m), Tensor::from_primitive::<Flex>(v))
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
    }
}

// ---------------------------------------------------------------------------------------------
// Routing

/// Which implementation serves a call, decided by where its float inputs live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// f32 on plain Flex: forward kernel only.
    Flex,
    /// f32 on `Autodiff<Flex, C>`, C given by the strategy: forward kernel + backward node.
    Autodiff(GradientCheckpointingStrategy),
    /// Anything else: the composed reference.
    Composed,
}

fn route<const D: usize>(t: &Tensor<D>) -> Route {
    if t.dtype() != DType::F32 {
        return Route::Composed;
    }
    // Cloning a tensor clones Arcs, not data.
    let DispatchTensor { kind, autodiff } = t.clone().into_dispatch();
    #[allow(unreachable_patterns)] // the catch-all matters only when a GPU backend is compiled in
    match (kind, autodiff) {
        (DispatchTensorKind::Flex(_), DispatchAutodiffContext::Disabled) => Route::Flex,
        (DispatchTensorKind::Autodiff(inner), DispatchAutodiffContext::Enabled(strategy))
            if matches!(*inner, DispatchTensorKind::Flex(_)) =>
        {
            Route::Autodiff(strategy)
        }
        _ => Route::Composed,
    }
}

/// The route all inputs share, or Composed when they differ (e.g. one input detached to plain
/// Flex): burn's own ops know how to mix those, our kernels need one backend.
fn same_route(routes: &[Route]) -> Route {
    if routes.iter().all(|r| *r == routes[0]) { routes[0] } else { Route::Composed }
}

fn flex_primitive<const D: usize>(t: Tensor<D>) -> burn::backend::flex::FlexTensor {
    t.try_into_primitive::<Flex>().expect("kernels: routed to Flex, so the tensor is a Flex tensor")
}

/// A constant (untracked) f32 tensor on Flex, with or without autodiff, as a Flex primitive; None
/// when it lives elsewhere, is tracked, or is not f32.
fn flex_constant<const D: usize>(t: &Tensor<D>) -> Option<burn::backend::flex::FlexTensor> {
    if t.dtype() != DType::F32 || t.is_tracked() {
        return None;
    }
    t.clone().inner().try_into_primitive::<Flex>().ok()
}

fn autodiff_primitive<C: CheckpointStrategy, const D: usize>(t: Tensor<D>) -> autodiff::AdTensor<C>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    t.try_into_primitive::<Autodiff<Flex, C>>()
        .expect("kernels: routed to Autodiff<Flex>, so the tensor is an Autodiff<Flex> tensor")
}

fn rms_norm_autodiff<C: CheckpointStrategy, const D: usize>(x: Tensor<D>, eps: f32) -> Tensor<D>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    let y = autodiff::rms_norm::<C>(autodiff_primitive(x), eps);
    Tensor::from_primitive::<Autodiff<Flex, C>>(y)
}

fn rope_rms_norm_autodiff<C: CheckpointStrategy>(
    x: Tensor<4>,
    cos: burn::backend::flex::FlexTensor,
    sin: burn::backend::flex::FlexTensor,
    eps: f32,
) -> Tensor<4>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    let y = autodiff::rope_rms_norm::<C>(autodiff_primitive(x), cos, sin, eps);
    Tensor::from_primitive::<Autodiff<Flex, C>>(y)
}

fn relu_square_autodiff<C: CheckpointStrategy, const D: usize>(x: Tensor<D>) -> Tensor<D>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    Tensor::from_primitive::<Autodiff<Flex, C>>(autodiff::relu_square::<C>(autodiff_primitive(x)))
}

fn attention_autodiff<C: CheckpointStrategy>(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    window: usize,
    scale: f32,
) -> Tensor<4>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    let (q, k, v) = (autodiff_primitive(q), autodiff_primitive(k), autodiff_primitive(v));
    Tensor::from_primitive::<Autodiff<Flex, C>>(autodiff::attention::<C>(q, k, v, window, scale))
}

fn cross_entropy_autodiff<C: CheckpointStrategy>(logits: Tensor<2>, targets: Vec<i64>, cap: f32) -> Tensor<1>
where
    DispatchTensor: DispatchKindConversion<Autodiff<Flex, C>>,
{
    let loss = autodiff::softcap_cross_entropy::<C>(autodiff_primitive(logits), targets, cap);
    Tensor::from_primitive::<Autodiff<Flex, C>>(loss)
}

fn check_attention_shapes(q: &[usize; 4], k: &[usize; 4], v: &[usize; 4]) {
    let same = q[0] == k[0] && q[1] == k[1] && q[3] == k[3] && k == v;
    assert!(
        same && k[2] > 0 && q[2].is_multiple_of(k[2]),
        "kernels::attention: want q [B,T,H,D] and k, v [B,T,Hkv,D] with H a multiple of Hkv; \
         got q {q:?} k {k:?} v {v:?}"
    );
}
