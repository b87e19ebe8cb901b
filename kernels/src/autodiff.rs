//! The ops on `Autodiff<Flex, C>`: each forward runs the Flex kernel and registers a backward
//! node whose backward is the hand-written Flex kernel, not what autodiff would derive from a
//! composed graph. Generic over the checkpoint strategy `C`, so `Device::autodiff()` and
//! `.gradient_checkpointing()` devices both get them.
//!
//! All ops are marked compute-bound: their saved state (O and logsumexp, y and rstd, the
//! per-row logsumexp) is kept rather than recomputed under gradient checkpointing — recomputing
//! would mean re-running the very kernel we are trying not to run twice. The backward kernels run
//! on the inner Flex backend, so they are not themselves differentiable (no second-order
//! gradients), which training does not need.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};

use crate::flex::attention::{attention_backward, attention_forward};
use crate::flex::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
use crate::flex::relu_square::{relu_square_backward, relu_square_forward};
use crate::flex::rms_norm::{rms_norm_backward, rms_norm_forward};
use crate::flex::rope::{rope_rms_norm_backward, rope_rms_norm_forward};
use crate::flex::{contiguous, f32s};

/// A float tensor on `Autodiff<Flex, C>`.
pub(crate) type AdTensor<C> = FloatTensor<Autodiff<Flex, C>>;

/// x: [..., d] → y: [..., d]; saves (y, rstd).
pub(crate) fn rms_norm<C: CheckpointStrategy>(x: AdTensor<C>, eps: f32) -> AdTensor<C> {
    #[derive(Debug)]
    struct RmsNormBackward;

    impl Backward<Flex, 1> for RmsNormBackward {
        type State = (FlexTensor, FlexTensor); // (y, rstd)

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (y, rstd) = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |dy| rms_norm_backward(&y, &rstd, dy));
        }
    }

    let (x, guard) = x.into_parts();
    match RmsNormBackward.prepare::<C>([guard]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (y, rstd) = rms_norm_forward(x, eps);
            prep.finish((y.clone(), rstd), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(rms_norm_forward(x, eps).0),
    }
}

/// x: [B,T,H,D] → y: [B,T,H,D], with cos, sin: [T, D/2] constant tables; saves (y, rstd).
pub(crate) fn rope_rms_norm<C: CheckpointStrategy>(
    x: AdTensor<C>,
    cos: FlexTensor,
    sin: FlexTensor,
    eps: f32,
) -> AdTensor<C> {
    #[derive(Debug)]
    struct RopeRmsNormBackward;

    impl Backward<Flex, 1> for RopeRmsNormBackward {
        type State = [FlexTensor; 4]; // y, rstd, cos, sin

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [y, rstd, cos, sin] = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
                rope_rms_norm_backward(&y, &rstd, &cos, &sin, dy)
            });
        }
    }

    let (x, guard) = x.into_parts();
    match RopeRmsNormBackward.prepare::<C>([guard]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (y, rstd) = rope_rms_norm_forward(x, &cos, &sin, eps);
            prep.finish([y.clone(), rstd, cos, sin], y)
        }
        OpsKind::UnTracked(prep) => prep.finish(rope_rms_norm_forward(x, &cos, &sin, eps).0),
    }
}

/// x: [...] → y = max(x, 0)²: [...]; saves y.
pub(crate) fn relu_square<C: CheckpointStrategy>(x: AdTensor<C>) -> AdTensor<C> {
    #[derive(Debug)]
    struct ReluSquareBackward;

    impl Backward<Flex, 1> for ReluSquareBackward {
        type State = FlexTensor; // y

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let y = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |dy| relu_square_backward(&y, dy));
        }
    }

    let (x, guard) = x.into_parts();
    match ReluSquareBackward.prepare::<C>([guard]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = relu_square_forward(x);
            prep.finish(y.clone(), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(relu_square_forward(x)),
    }
}

/// (q: [B,T,H,D], k, v: [B,T,Hkv,D]) → o: [B,T,H,D]; saves (q, k, v, o, lse).
pub(crate) fn attention<C: CheckpointStrategy>(
    q: AdTensor<C>,
    k: AdTensor<C>,
    v: AdTensor<C>,
    window: usize,
    scale: f32,
) -> AdTensor<C> {
    #[derive(Debug)]
    struct AttentionBackward;

    #[derive(Clone, Debug)]
    struct Saved {
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        o: FlexTensor,
        lse: FlexTensor,
        window: usize,
        scale: f32,
    }

    impl Backward<Flex, 3> for AttentionBackward {
        type State = Saved;

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
            let s = ops.state;
            let d_o = grads.consume::<Flex>(&ops.node);
            let (dq, dk, dv) = attention_backward(&s.q, &s.k, &s.v, &s.o, &s.lse, d_o, s.window, s.scale);
            let [pq, pk, pv] = ops.parents;
            for (parent, grad) in [(pq, dq), (pk, dk), (pv, dv)] {
                if let Some(node) = parent {
                    grads.register::<Flex>(node.id, grad);
                }
            }
        }
    }

    let (q, gq) = q.into_parts();
    let (k, gk) = k.into_parts();
    let (v, gv) = v.into_parts();
    match AttentionBackward.prepare::<C>([gq, gk, gv]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (q, k, v) =
                (contiguous(q, "attention"), contiguous(k, "attention"), contiguous(v, "attention"));
            let (o, lse) = attention_forward(q.clone(), k.clone(), v.clone(), window, scale);
            prep.finish(Saved { q, k, v, o: o.clone(), lse, window, scale }, o)
        }
        OpsKind::UnTracked(prep) => prep.finish(attention_forward(q, k, v, window, scale).0),
    }
}

/// (logits: [N, V], targets: [N]) → mean loss [1]; saves (logits, targets, lse).
pub(crate) fn softcap_cross_entropy<C: CheckpointStrategy>(
    logits: AdTensor<C>,
    targets: Vec<i64>,
    cap: f32,
) -> AdTensor<C> {
    #[derive(Debug)]
    struct CrossEntropyBackward;

    #[derive(Clone, Debug)]
    struct Saved {
        logits: FlexTensor,
        targets: Arc<[i64]>,
        lse: FlexTensor,
        counted: usize,
        cap: f32,
    }

    impl Backward<Flex, 1> for CrossEntropyBackward {
        type State = Saved;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let s = ops.state;
            unary::<Flex, _>(ops.parents, ops.node, grads, |g| {
                let g = f32s(&contiguous(g, "softcap_cross_entropy backward"))[0];
                cross_entropy_backward(s.logits, &s.targets, &s.lse, s.counted, s.cap, g)
            });
        }
    }

    let (logits, guard) = logits.into_parts();
    let logits = contiguous(logits, "softcap_cross_entropy");
    match CrossEntropyBackward.prepare::<C>([guard]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let out = cross_entropy_forward(&logits, &targets, cap);
            let saved = Saved { logits, targets: targets.into(), lse: out.lse, counted: out.counted, cap };
            prep.finish(saved, out.loss)
        }
        OpsKind::UnTracked(prep) => prep.finish(cross_entropy_forward(&logits, &targets, cap).loss),
    }
}
