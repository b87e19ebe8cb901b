//! The ops on `Autodiff<B, C>` for every backend B with kernels of its own (`ops::FusedOps`:
//! Flex, and CubeBackend with a GPU feature): each forward runs B's kernel and registers a
//! backward node whose backward is B's hand-written backward kernel, not what autodiff would
//! derive from a composed graph. Generic over the checkpoint strategy `C`, so
//! `Device::autodiff()` and `.gradient_checkpointing()` devices both get them.
//!
//! All ops are marked compute-bound: their saved state (O and logsumexp, y and rstd, the
//! per-row logsumexp) is kept rather than recomputed under gradient checkpointing — recomputing
//! would mean re-running the very kernel we are trying not to run twice. The backward kernels run
//! on the inner backend, so they are not themselves differentiable (no second-order
//! gradients), which training does not need.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::tensor::FloatTensor;

use crate::ops::FusedOps;

/// A float tensor on `Autodiff<B, C>`.
pub(crate) type AdTensor<B, C> = FloatTensor<Autodiff<B, C>>;

/// x: [..., d] → y: [..., d]; saves (y, rstd).
pub(crate) fn rms_norm<B: FusedOps, C: CheckpointStrategy>(x: AdTensor<B, C>, eps: f32) -> AdTensor<B, C> {
    #[derive(Debug)]
    struct RmsNormBackward;

    impl<B: FusedOps> Backward<B, 1> for RmsNormBackward {
        type State = (FloatTensor<B>, FloatTensor<B>); // (y, rstd)

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (y, rstd) = ops.state;
            unary::<B, _>(ops.parents, ops.node, grads, |dy| B::rms_norm_backward(&y, &rstd, dy));
        }
    }

    let (x, guard) = x.into_parts();
    match Backward::<B, 1>::prepare::<C>(RmsNormBackward, [guard]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (y, rstd) = B::rms_norm_forward(x, eps);
            prep.finish((y.clone(), rstd), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::rms_norm_forward(x, eps).0),
    }
}

/// x: [B,T,H,D] → y: [B,T,H,D], with cos, sin: [T, D/2] constant tables; saves (y, rstd).
pub(crate) fn rope_rms_norm<B: FusedOps, C: CheckpointStrategy>(
    x: AdTensor<B, C>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    eps: f32,
) -> AdTensor<B, C> {
    #[derive(Debug)]
    struct RopeRmsNormBackward;

    impl<B: FusedOps> Backward<B, 1> for RopeRmsNormBackward {
        type State = [FloatTensor<B>; 4]; // y, rstd, cos, sin

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [y, rstd, cos, sin] = ops.state;
            unary::<B, _>(ops.parents, ops.node, grads, |dy| {
                B::rope_rms_norm_backward(&y, &rstd, &cos, &sin, dy)
            });
        }
    }

    let (x, guard) = x.into_parts();
    match Backward::<B, 1>::prepare::<C>(RopeRmsNormBackward, [guard]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (y, rstd) = B::rope_rms_norm_forward(x, &cos, &sin, eps);
            prep.finish([y.clone(), rstd, cos, sin], y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::rope_rms_norm_forward(x, &cos, &sin, eps).0),
    }
}

/// x: [...] → y = max(x, 0)²: [...]; saves y.
pub(crate) fn relu_square<B: FusedOps, C: CheckpointStrategy>(x: AdTensor<B, C>) -> AdTensor<B, C> {
    #[derive(Debug)]
    struct ReluSquareBackward;

    impl<B: FusedOps> Backward<B, 1> for ReluSquareBackward {
        type State = FloatTensor<B>; // y

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let y = ops.state;
            unary::<B, _>(ops.parents, ops.node, grads, |dy| B::relu_square_backward(&y, dy));
        }
    }

    let (x, guard) = x.into_parts();
    match Backward::<B, 1>::prepare::<C>(ReluSquareBackward, [guard]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = B::relu_square_forward(x);
            prep.finish(y.clone(), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::relu_square_forward(x)),
    }
}

/// What the attention backward reads. (Clone and Debug by hand: a derive would also ask them of
/// the backend type B itself.)
struct AttentionSaved<B: FusedOps> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    o: FloatTensor<B>,
    lse: FloatTensor<B>,
    window: usize,
    scale: f32,
}

impl<B: FusedOps> Clone for AttentionSaved<B> {
    fn clone(&self) -> Self {
        let (q, k, v, o, lse) =
            (self.q.clone(), self.k.clone(), self.v.clone(), self.o.clone(), self.lse.clone());
        Self { q, k, v, o, lse, window: self.window, scale: self.scale }
    }
}

impl<B: FusedOps> std::fmt::Debug for AttentionSaved<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AttentionSaved {{ window: {}, scale: {} }}", self.window, self.scale)
    }
}

/// (q: [B,T,H,D], k, v: [B,T,Hkv,D]) → o: [B,T,H,D]; saves (q, k, v, o, lse).
pub(crate) fn attention<B: FusedOps, C: CheckpointStrategy>(
    q: AdTensor<B, C>,
    k: AdTensor<B, C>,
    v: AdTensor<B, C>,
    window: usize,
    scale: f32,
) -> AdTensor<B, C> {
    #[derive(Debug)]
    struct AttentionBackward;

    impl<B: FusedOps> Backward<B, 3> for AttentionBackward {
        type State = AttentionSaved<B>;

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let s = ops.state;
            let d_o = grads.consume::<B>(&ops.node);
            let (dq, dk, dv) = B::attention_backward(&s.q, &s.k, &s.v, &s.o, &s.lse, d_o, s.window, s.scale);
            let [pq, pk, pv] = ops.parents;
            for (parent, grad) in [(pq, dq), (pk, dk), (pv, dv)] {
                if let Some(node) = parent {
                    grads.register::<B>(node.id, grad);
                }
            }
        }
    }

    let (q, gq) = q.into_parts();
    let (k, gk) = k.into_parts();
    let (v, gv) = v.into_parts();
    match Backward::<B, 3>::prepare::<C>(AttentionBackward, [gq, gk, gv]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (q, k, v) = (B::contiguous(q), B::contiguous(k), B::contiguous(v));
            let (o, lse) = B::attention_forward(q.clone(), k.clone(), v.clone(), window, scale);
            prep.finish(AttentionSaved { q, k, v, o: o.clone(), lse, window, scale }, o)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::attention_forward(q, k, v, window, scale).0),
    }
}

/// What the cross-entropy backward reads.
struct CrossEntropySaved<B: FusedOps> {
    logits: FloatTensor<B>,
    targets: B::Targets,
    lse: FloatTensor<B>,
    count: B::Count,
    cap: f32,
}

impl<B: FusedOps> Clone for CrossEntropySaved<B> {
    fn clone(&self) -> Self {
        Self {
            logits: self.logits.clone(),
            targets: self.targets.clone(),
            lse: self.lse.clone(),
            count: self.count.clone(),
            cap: self.cap,
        }
    }
}

impl<B: FusedOps> std::fmt::Debug for CrossEntropySaved<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CrossEntropySaved {{ cap: {}, count: {:?} }}", self.cap, self.count)
    }
}

/// (logits: [N, V], targets: [N]) → mean loss [1]; saves (logits, targets, lse, count).
pub(crate) fn softcap_cross_entropy<B: FusedOps, C: CheckpointStrategy>(
    logits: AdTensor<B, C>,
    targets: B::Targets,
    cap: f32,
) -> AdTensor<B, C> {
    #[derive(Debug)]
    struct CrossEntropyBackward;

    impl<B: FusedOps> Backward<B, 1> for CrossEntropyBackward {
        type State = CrossEntropySaved<B>;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let s = ops.state;
            unary::<B, _>(ops.parents, ops.node, grads, |g| {
                B::cross_entropy_backward(s.logits, &s.targets, &s.lse, &s.count, s.cap, g)
            });
        }
    }

    let (logits, guard) = logits.into_parts();
    let logits = B::contiguous(logits);
    match Backward::<B, 1>::prepare::<C>(CrossEntropyBackward, [guard]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (loss, lse, count) = B::cross_entropy_forward(&logits, &targets, cap);
            prep.finish(CrossEntropySaved { logits, targets, lse, count, cap }, loss)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::cross_entropy_forward(&logits, &targets, cap).0),
    }
}

/// (x: [N, in], w: [out, in]) → x·wᵀ [N, out] with bf16 operands; saves x and w as they are
/// (f32, which autodiff keeps anyway: the backward rounds them again, so no bf16 copy is kept).
pub(crate) fn linear_bf16<B: FusedOps, C: CheckpointStrategy>(
    x: AdTensor<B, C>,
    w: AdTensor<B, C>,
) -> AdTensor<B, C> {
    #[derive(Debug)]
    struct LinearBf16Backward;

    impl<B: FusedOps> Backward<B, 2> for LinearBf16Backward {
        type State = (FloatTensor<B>, FloatTensor<B>); // (x, w)

        fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, w) = ops.state;
            let dy = grads.consume::<B>(&ops.node);
            let [px, pw] = ops.parents;
            let (dx, dw) = B::linear_bf16_backward(&x, &w, dy, px.is_some(), pw.is_some());
            for (parent, grad) in [(px, dx), (pw, dw)] {
                if let (Some(node), Some(grad)) = (parent, grad) {
                    grads.register::<B>(node.id, grad);
                }
            }
        }
    }

    let (x, gx) = x.into_parts();
    let (w, gw) = w.into_parts();
    match Backward::<B, 2>::prepare::<C>(LinearBf16Backward, [gx, gw]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = B::linear_bf16_forward(&x, &w);
            prep.finish((x, w), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::linear_bf16_forward(&x, &w)),
    }
}
