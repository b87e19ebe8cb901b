//! The ops composed from ordinary burn tensor ops: the definition the hand-written kernels are
//! tested against, and the fallback on every backend that has no kernel of its own (wgpu, CUDA;
//! and Flex in dtypes other than f32). Autodiff differentiates these by itself.
//!
//! Written for clarity, not speed; each mirrors the PyTorch peer (`reference_gpt.py`) line for
//! line. The sliding window stays real here too: it is a [T, T] mask, not a dropped argument.

use burn::tensor::activation::{log_softmax, relu, softmax};
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};

/// F.rms_norm(x, (x.size(-1),), eps) without weight: x / sqrt(mean(x², -1) + eps).
pub fn rms_norm<const D: usize>(x: Tensor<D>, eps: f32) -> Tensor<D> {
    let mean_square = x.clone().square().mean_dim(D - 1);
    x * mean_square.add_scalar(eps).sqrt().recip()
}

/// rms_norm(rotary(x, cos, sin), eps): the model's q/k path.
pub fn rope_rms_norm(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>, eps: f32) -> Tensor<4> {
    rms_norm(rotary(x, cos, sin), eps)
}

/// Rotary embedding on [B, T, H, D] with cos, sin [T, D/2]: each head's halves (x1, x2) become
/// (x1·cos + x2·sin, x2·cos − x1·sin), as `apply_rotary_emb` in the original.
pub fn rotary(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Tensor<4> {
    let [_, t, _, d] = x.dims();
    let half = d / 2;
    let (cos, sin) = (cos.reshape([1, t, 1, half]), sin.reshape([1, t, 1, half]));
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let y1 = x1.clone() * cos.clone() + x2.clone() * sin.clone();
    let y2 = x2 * cos - x1 * sin;
    Tensor::cat(vec![y1, y2], 3)
}

/// relu(x)², the MLP activation.
pub fn relu_square<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    relu(x).square()
}

/// softmax(scale · q kᵀ + window mask) v on [B, T, H, D] tensors, k/v with Hkv heads (GQA).
/// Query t attends keys t − window ..= t.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, window: usize, scale: f32) -> Tensor<4> {
    let [b, t, h, _] = q.dims();
    let hkv = k.dims()[2];
    assert!(hkv > 0 && h % hkv == 0, "kernels::attention: {h} query heads, {hkv} kv heads");
    let q = q.swap_dims(1, 2); // [B, H, T, D]
    let k = repeat_kv(k.swap_dims(1, 2), h / hkv);
    let v = repeat_kv(v.swap_dims(1, 2), h / hkv);
    let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale); // [B, H, T, T]
    let mask = window_mask(t, window, &scores.device()).unsqueeze::<4>().expand([b, h, t, t]);
    let p = softmax(scores.mask_fill(mask, f32::NEG_INFINITY), 3);
    p.matmul(v).swap_dims(1, 2)
}

/// [B, Hkv, T, D] → [B, Hkv·g, T, D], each kv head repeated for the g query heads that share it
/// (query head h reads kv head h / g, as in flash-attn).
fn repeat_kv(x: Tensor<4>, g: usize) -> Tensor<4> {
    if g == 1 {
        return x;
    }
    let [b, hkv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, hkv, g, t, d]).reshape([b, hkv * g, t, d])
}

/// [T, T], true where query i must NOT see key j: j > i (the future) or i − j > window.
pub fn window_mask(t: usize, window: usize, device: &burn::tensor::Device) -> Tensor<2, Bool> {
    let masked: Vec<bool> = (0..t).flat_map(|i| (0..t).map(move |j| j > i || i - j > window)).collect();
    Tensor::from_data(TensorData::new(masked, [t, t]), device)
}

/// cap · tanh(logits / cap).
pub fn softcap<const D: usize>(logits: Tensor<D>, cap: f32) -> Tensor<D> {
    logits.div_scalar(cap).tanh().mul_scalar(cap)
}

/// F.cross_entropy(cap · tanh(logits / cap), targets, ignore_index = -1), mean reduction, as [1].
pub fn softcap_cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>, cap: f32) -> Tensor<1> {
    let z = softcap(logits, cap);
    let log_p = log_softmax(z, 1);
    let counted = targets.clone().not_equal_elem(-1).float();
    let picked = log_p.gather(1, targets.clamp_min(0).unsqueeze_dim::<2>(1)).squeeze_dim::<1>(1);
    (picked * counted.clone()).sum().neg() / counted.sum()
}

/// x · wᵀ in bf16 (PyTorch autocast's matmul): both operands cast to bf16, the product cast
/// back to f32. Autodiff passes gradients through the casts.
pub fn linear_bf16(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    x.cast(DType::BF16).matmul(w.cast(DType::BF16).transpose()).cast(DType::F32)
}

/// a · b in bf16, as [`linear_bf16`].
pub fn matmul_bf16(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    a.cast(DType::BF16).matmul(b.cast(DType::BF16)).cast(DType::F32)
}

/// One AdamW update, composed: see [`crate::adamw_step`].
pub fn adamw_step<const D: usize>(
    p: Tensor<D>,
    grad: Tensor<D>,
    m: Tensor<D>,
    v: Tensor<D>,
    h: &crate::AdamW,
) -> (Tensor<D>, Tensor<D>, Tensor<D>) {
    let m = m.clone() + (grad.clone() - m).mul_scalar(1.0 - h.beta1);
    let v = v.clone() + (grad.square() - v).mul_scalar(1.0 - h.beta2);
    let bias1 = 1.0 - h.beta1.powi(h.step);
    let bias2 = 1.0 - h.beta2.powi(h.step);
    let denom = v.clone().div_scalar(bias2).sqrt().add_scalar(h.eps);
    let p = p.mul_scalar(1.0 - h.lr * h.weight_decay) - (m.clone() / denom).mul_scalar(h.lr / bias1);
    (p, m, v)
}
