//! The seam between the routing (lib.rs), the backward nodes (autodiff.rs) and the kernels: one
//! trait of forward/backward pairs, implemented by each backend that has kernels of its own —
//! burn's Flex (the CPU kernels in `flex/`) and, with a GPU feature, burn's CubeBackend (the
//! `#[cube]` kernels in `cube/`). The backward nodes are written once against this trait, so a
//! GPU training step gets the same hand-written backward as the CPU one.

use burn::backend::Backend;
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};

use burn::backend::ops::FloatTensorOps;
use burn::tensor::FloatDType;

use crate::flex;

/// Forward/backward pairs over a backend's own tensors (f32, any layout: each makes its input
/// contiguous as it needs).
pub(crate) trait FusedOps: Backend {
    /// The cross-entropy targets, as its backward node keeps them.
    type Targets: Clone + Send + Sync + std::fmt::Debug + 'static;
    /// How many targets counted, as the backward needs it.
    type Count: Clone + Send + Sync + std::fmt::Debug + 'static;

    /// The tensor with its elements in one dense run (what the kernels read; saved for backward
    /// so it is not copied twice).
    fn contiguous(t: FloatTensor<Self>) -> FloatTensor<Self>;

    /// x [..., d] → (y, rstd [rows]).
    fn rms_norm_forward(x: FloatTensor<Self>, eps: f32) -> (FloatTensor<Self>, FloatTensor<Self>);
    fn rms_norm_backward(
        y: &FloatTensor<Self>,
        rstd: &FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// (x [B,T,H,D], cos, sin [T, D/2]) → (y, rstd [B·T·H]).
    fn rope_rms_norm_forward(
        x: FloatTensor<Self>,
        cos: &FloatTensor<Self>,
        sin: &FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    fn rope_rms_norm_backward(
        y: &FloatTensor<Self>,
        rstd: &FloatTensor<Self>,
        cos: &FloatTensor<Self>,
        sin: &FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// x → y = max(x, 0)².
    fn relu_square_forward(x: FloatTensor<Self>) -> FloatTensor<Self>;
    fn relu_square_backward(y: &FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self>;

    /// (q [B,T,H,D], k, v [B,T,Hkv,D]) → (o [B,T,H,D], lse [B,H,T]).
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        q: &FloatTensor<Self>,
        k: &FloatTensor<Self>,
        v: &FloatTensor<Self>,
        o: &FloatTensor<Self>,
        lse: &FloatTensor<Self>,
        d_o: FloatTensor<Self>,
        window: usize,
        scale: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// x [N, in] · wᵀ (w [out, in]) with bf16 operands and f32 sums → [N, out] f32.
    fn linear_bf16_forward(x: &FloatTensor<Self>, w: &FloatTensor<Self>) -> FloatTensor<Self>;
    /// Its gradients for dy [N, out]: (dx = dy·w, dw = dyᵀ·x), each only if asked for, with bf16
    /// operands (dy rounded too, as PyTorch's autocast backward).
    fn linear_bf16_backward(
        x: &FloatTensor<Self>,
        w: &FloatTensor<Self>,
        dy: FloatTensor<Self>,
        want_dx: bool,
        want_dw: bool,
    ) -> (Option<FloatTensor<Self>>, Option<FloatTensor<Self>>);

    /// The targets of a cross-entropy call, from the backend's int tensor.
    fn targets(t: IntTensor<Self>) -> Self::Targets;
    /// (logits [N, V] contiguous, targets) → (mean loss [1], lse [N], count).
    fn cross_entropy_forward(
        logits: &FloatTensor<Self>,
        targets: &Self::Targets,
        cap: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, Self::Count);
    /// (logits, targets, lse, count, upstream gradient [1]) → dlogits [N, V], over the logits'
    /// buffer when no one else holds it.
    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: &Self::Targets,
        lse: &FloatTensor<Self>,
        count: &Self::Count,
        cap: f32,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl FusedOps for Flex {
    type Targets = std::sync::Arc<[i64]>;
    type Count = usize;

    fn contiguous(t: FlexTensor) -> FlexTensor {
        flex::contiguous(t, "kernels")
    }

    fn rms_norm_forward(x: FlexTensor, eps: f32) -> (FlexTensor, FlexTensor) {
        flex::rms_norm::rms_norm_forward(x, eps)
    }

    fn rms_norm_backward(y: &FlexTensor, rstd: &FlexTensor, dy: FlexTensor) -> FlexTensor {
        flex::rms_norm::rms_norm_backward(y, rstd, dy)
    }

    fn rope_rms_norm_forward(
        x: FlexTensor,
        cos: &FlexTensor,
        sin: &FlexTensor,
        eps: f32,
    ) -> (FlexTensor, FlexTensor) {
        flex::rope::rope_rms_norm_forward(x, cos, sin, eps)
    }

    fn rope_rms_norm_backward(
        y: &FlexTensor,
        rstd: &FlexTensor,
        cos: &FlexTensor,
        sin: &FlexTensor,
        dy: FlexTensor,
    ) -> FlexTensor {
        flex::rope::rope_rms_norm_backward(y, rstd, cos, sin, dy)
    }

    fn relu_square_forward(x: FlexTensor) -> FlexTensor {
        flex::relu_square::relu_square_forward(x)
    }

    fn relu_square_backward(y: &FlexTensor, dy: FlexTensor) -> FlexTensor {
        flex::relu_square::relu_square_backward(y, dy)
    }

    fn attention_forward(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        window: usize,
        scale: f32,
    ) -> (FlexTensor, FlexTensor) {
        flex::attention::attention_forward(q, k, v, window, scale)
    }

    fn attention_backward(
        q: &FlexTensor,
        k: &FlexTensor,
        v: &FlexTensor,
        o: &FlexTensor,
        lse: &FlexTensor,
        d_o: FlexTensor,
        window: usize,
        scale: f32,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        flex::attention::attention_backward(q, k, v, o, lse, d_o, window, scale)
    }

    fn linear_bf16_forward(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
        if flex::bf16::available() {
            return flex::bf16::linear_forward(x, w);
        }
        // No AVX512-BF16: the same numbers (bf16-rounded operands, f32 sums) from f32 matmuls.
        Flex::float_matmul(
            round_bf16::<Flex>(x.clone()),
            Flex::float_transpose(round_bf16::<Flex>(w.clone())),
        )
    }

    fn linear_bf16_backward(
        x: &FlexTensor,
        w: &FlexTensor,
        dy: FlexTensor,
        want_dx: bool,
        want_dw: bool,
    ) -> (Option<FlexTensor>, Option<FlexTensor>) {
        if flex::bf16::available() {
            return flex::bf16::linear_backward(x, w, dy, want_dx, want_dw);
        }
        let dy = round_bf16::<Flex>(dy);
        let dx = want_dx.then(|| Flex::float_matmul(dy.clone(), round_bf16::<Flex>(w.clone())));
        let dw =
            want_dw.then(|| Flex::float_matmul(Flex::float_transpose(dy), round_bf16::<Flex>(x.clone())));
        (dx, dw)
    }

    fn targets(t: FlexTensor) -> Self::Targets {
        flex::cross_entropy::targets_i64(&t).into()
    }

    fn cross_entropy_forward(
        logits: &FlexTensor,
        targets: &Self::Targets,
        cap: f32,
    ) -> (FlexTensor, FlexTensor, usize) {
        let out = flex::cross_entropy::cross_entropy_forward(logits, targets, cap);
        (out.loss, out.lse, out.counted)
    }

    fn cross_entropy_backward(
        logits: FlexTensor,
        targets: &Self::Targets,
        lse: &FlexTensor,
        count: &usize,
        cap: f32,
        grad: FlexTensor,
    ) -> FlexTensor {
        // On the CPU the upstream gradient is a host value already: read it, no sync involved.
        let g = flex::f32s(&flex::contiguous(grad, "softcap_cross_entropy backward"))[0];
        flex::cross_entropy::cross_entropy_backward(logits, targets, lse, *count, cap, g)
    }
}

/// bf16(x) in f32: the rounding of a bf16 matmul's operands, through the backend's casts.
fn round_bf16<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_cast(B::float_cast(x, FloatDType::BF16), FloatDType::F32)
}

#[cfg(feature = "cube")]
mod cube_impl {
    use burn_cubecl::CubeBackend;
    use burn_cubecl::tensor::CubeTensor;

    use burn::backend::Backend;
    use burn::backend::ops::FloatTensorOps;
    use burn::tensor::FloatDType;

    use super::FusedOps;
    use crate::cube;

    fn bf16(t: CubeTensor) -> CubeTensor {
        CubeBackend::float_cast(t, FloatDType::BF16)
    }

    fn f32(t: CubeTensor) -> CubeTensor {
        CubeBackend::float_cast(t, FloatDType::F32)
    }

    /// Whether the tensor's device computes in bf16; the first "no" is reported on stderr.
    fn has_bf16(t: &CubeTensor) -> bool {
        static SAID: std::sync::Once = std::sync::Once::new();
        let yes = CubeBackend::supports_dtype(&t.device, burn::tensor::DType::BF16);
        if !yes {
            SAID.call_once(|| {
                eprintln!("kernels: {:?} has no bf16: linear_bf16 runs its matmuls in f32", t.device)
            });
        }
        yes
    }

    impl FusedOps for CubeBackend {
        /// The targets stay on the device (reading them back would stall the GPU).
        type Targets = CubeTensor;
        /// The count of counted targets, [1] on the device.
        type Count = CubeTensor;

        fn contiguous(t: CubeTensor) -> CubeTensor {
            cube::contiguous(t, "kernels")
        }

        fn rms_norm_forward(x: CubeTensor, eps: f32) -> (CubeTensor, CubeTensor) {
            cube::norm::rms_norm_forward(x, eps)
        }

        fn rms_norm_backward(y: &CubeTensor, rstd: &CubeTensor, dy: CubeTensor) -> CubeTensor {
            cube::norm::rms_norm_backward(y, rstd, dy)
        }

        fn rope_rms_norm_forward(
            x: CubeTensor,
            cos: &CubeTensor,
            sin: &CubeTensor,
            eps: f32,
        ) -> (CubeTensor, CubeTensor) {
            cube::norm::rope_rms_norm_forward(x, cos, sin, eps)
        }

        fn rope_rms_norm_backward(
            y: &CubeTensor,
            rstd: &CubeTensor,
            cos: &CubeTensor,
            sin: &CubeTensor,
            dy: CubeTensor,
        ) -> CubeTensor {
            cube::norm::rope_rms_norm_backward(y, rstd, cos, sin, dy)
        }

        fn relu_square_forward(x: CubeTensor) -> CubeTensor {
            cube::norm::relu_square_forward(x)
        }

        fn relu_square_backward(y: &CubeTensor, dy: CubeTensor) -> CubeTensor {
            cube::norm::relu_square_backward(y, dy)
        }

        fn attention_forward(
            q: CubeTensor,
            k: CubeTensor,
            v: CubeTensor,
            window: usize,
            scale: f32,
        ) -> (CubeTensor, CubeTensor) {
            cube::attention::attention_forward(q, k, v, window, scale)
        }

        fn attention_backward(
            q: &CubeTensor,
            k: &CubeTensor,
            v: &CubeTensor,
            o: &CubeTensor,
            lse: &CubeTensor,
            d_o: CubeTensor,
            window: usize,
            scale: f32,
        ) -> (CubeTensor, CubeTensor, CubeTensor) {
            cube::attention::attention_backward(q, k, v, o, lse, d_o, window, scale)
        }

        /// Casts and burn's matmul: bf16 operands run on tensor cores where the GPU has them. Only
        /// the f32 x and w are saved (autodiff keeps them anyway); the backward casts again. A
        /// device without bf16 (wgpu on most adapters) runs the f32 matmul and says so once.
        fn linear_bf16_forward(x: &CubeTensor, w: &CubeTensor) -> CubeTensor {
            if !has_bf16(x) {
                return CubeBackend::float_matmul(x.clone(), CubeBackend::float_transpose(w.clone()));
            }
            f32(CubeBackend::float_matmul(bf16(x.clone()), CubeBackend::float_transpose(bf16(w.clone()))))
        }

        fn linear_bf16_backward(
            x: &CubeTensor,
            w: &CubeTensor,
            dy: CubeTensor,
            want_dx: bool,
            want_dw: bool,
        ) -> (Option<CubeTensor>, Option<CubeTensor>) {
            if !has_bf16(x) {
                let dx = want_dx.then(|| CubeBackend::float_matmul(dy.clone(), w.clone()));
                let dw =
                    want_dw.then(|| CubeBackend::float_matmul(CubeBackend::float_transpose(dy), x.clone()));
                return (dx, dw);
            }
            let dy = bf16(dy);
            let dx = want_dx.then(|| f32(CubeBackend::float_matmul(dy.clone(), bf16(w.clone()))));
            let dw = want_dw
                .then(|| f32(CubeBackend::float_matmul(CubeBackend::float_transpose(dy), bf16(x.clone()))));
            (dx, dw)
        }

        fn targets(t: CubeTensor) -> CubeTensor {
            t
        }

        fn cross_entropy_forward(
            logits: &CubeTensor,
            targets: &CubeTensor,
            cap: f32,
        ) -> (CubeTensor, CubeTensor, CubeTensor) {
            let out = cube::cross_entropy::cross_entropy_forward(logits, targets, cap);
            (out.loss, out.lse, out.count)
        }

        fn cross_entropy_backward(
            logits: CubeTensor,
            targets: &CubeTensor,
            lse: &CubeTensor,
            count: &CubeTensor,
            cap: f32,
            grad: CubeTensor,
        ) -> CubeTensor {
            cube::cross_entropy::cross_entropy_backward(logits, targets, lse, count, cap, grad)
        }
    }
}
