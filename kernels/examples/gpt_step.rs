//! Forward+backward of the standard-config GPT (the model of `shared/bench/reference_gpt.py`:
//! value embeddings, RoPE then q/k RMSNorm, sliding-window attention, relu² MLP, softcapped
//! cross-entropy) with all five fused kernels or with their composed versions — the whole-step view
//! of what the kernels buy, and the driver to `perf record` when deciding what to fuse next.
//! No optimizer: that is the train program's.
//!
//! `cargo run --release -p kernels --example gpt_step [-- STEPS [fused|core|composed]]`
//! (core: RMSNorm, attention and cross-entropy fused; RoPE and relu² composed).

use std::time::Instant;

use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};
use kernels::{RMS_NORM_EPS, reference};

const VOCAB: usize = 4096;
const T: usize = 256;
const BATCH: usize = 16;
const LAYERS: usize = 4;
const C: usize = 256;
const HEADS: usize = 4;
const HEAD_DIM: usize = C / HEADS;
const WINDOWS: [usize; LAYERS] = [128, 128, 128, 256];
const VE_GATE_CHANNELS: usize = 32;

/// Which ops run fused: all five, the three core ones (RMSNorm, attention, cross-entropy; RoPE
/// and relu² composed), or none.
#[derive(Clone, Copy)]
struct Ops {
    fused: bool,
    rope_and_relu2: bool,
}

impl Ops {
    fn norm<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        if self.fused { kernels::rms_norm(x, RMS_NORM_EPS) } else { reference::rms_norm(x, RMS_NORM_EPS) }
    }

    /// norm(rotary(x)) for q and k; cos, sin [T, HEAD_DIM/2].
    fn rope_norm(self, x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
        if self.rope_and_relu2 {
            kernels::rope_rms_norm(x, cos.clone(), sin.clone(), RMS_NORM_EPS)
        } else {
            self.norm(reference::rotary(x, cos.clone(), sin.clone()))
        }
    }

    fn relu_square(self, x: Tensor<2>) -> Tensor<2> {
        if self.rope_and_relu2 { kernels::relu_square(x) } else { reference::relu_square(x) }
    }

    fn attention(self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, window: usize) -> Tensor<4> {
        let scale = 1.0 / (HEAD_DIM as f32).sqrt();
        if self.fused {
            kernels::attention(q, k, v, window, scale)
        } else {
            reference::attention(q, k, v, window, scale)
        }
    }

    fn loss(self, logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
        if self.fused {
            kernels::softcap_cross_entropy(logits, targets, 15.0)
        } else {
            reference::softcap_cross_entropy(logits, targets, 15.0)
        }
    }
}

struct Block {
    c_q: Tensor<2>,
    c_k: Tensor<2>,
    c_v: Tensor<2>,
    c_proj: Tensor<2>,
    c_fc: Tensor<2>,
    mlp_proj: Tensor<2>,
    ve_gate: Option<Tensor<2>>,
    value_embed: Option<Tensor<2>>,
}

struct Gpt {
    wte: Tensor<2>,
    blocks: Vec<Block>,
    lm_head: Tensor<2>,
    cos: Tensor<2>,
    sin: Tensor<2>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args.get(1).map_or(10, |s| s.parse().expect("STEPS must be a number"));
    let mode = args.get(2).map_or("fused", String::as_str);
    let ops = match mode {
        "fused" => Ops { fused: true, rope_and_relu2: true },
        "core" => Ops { fused: true, rope_and_relu2: false },
        "composed" => Ops { fused: false, rope_and_relu2: false },
        other => panic!("mode is fused, core or composed, not {other}"),
    };
    let device = Device::flex().autodiff();
    let mut seed = 1u64;
    let mut param = |rows: usize, cols: usize, std: f32| {
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.46 * std
            })
            .collect();
        Tensor::<2>::from_data(TensorData::new(data, [rows, cols]), &device).require_grad()
    };
    let s = 1.0 / (C as f32).sqrt();
    let blocks = (0..LAYERS)
        .map(|i| {
            let ve = i % 2 == (LAYERS - 1) % 2;
            Block {
                c_q: param(C, C, s),
                c_k: param(C, C, s),
                c_v: param(C, C, s),
                // Non-zero (unlike the init) so every gradient path carries real numbers.
                c_proj: param(C, C, s),
                c_fc: param(4 * C, C, s),
                mlp_proj: param(C, 4 * C, s / 2.0),
                ve_gate: ve.then(|| param(HEADS, VE_GATE_CHANNELS, 0.1)),
                value_embed: ve.then(|| param(VOCAB, C, s)),
            }
        })
        .collect();
    let gpt = Gpt {
        wte: param(VOCAB, C, 1.0),
        blocks,
        lm_head: param(VOCAB, C, 0.05),
        cos: rope(true, &device),
        sin: rope(false, &device),
    };
    let tokens: Vec<i64> = (0..BATCH * (T + 1)).map(|i| (i * 2654435761 % VOCAB) as i64).collect();
    let (idx, targets): (Vec<i64>, Vec<i64>) = (0..BATCH)
        .flat_map(|b| (0..T).map(move |t| (b * (T + 1) + t, b * (T + 1) + t + 1)))
        .map(|(i, j)| (tokens[i], tokens[j]))
        .unzip();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [BATCH * T]), &device);
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [BATCH * T]), &device);

    let step = || {
        let loss = forward(&gpt, ops, idx.clone(), targets.clone());
        let grads = loss.backward();
        (loss.into_scalar::<f32>(), gpt.wte.grad(&grads).is_some())
    };
    let (loss, _) = step(); // warm up
    let mut times = Vec::new();
    for _ in 0..steps {
        let start = Instant::now();
        step();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "gpt fwd+bwd ({mode}): loss {loss:.4}, median {:.1} ms over {steps} steps (min {:.1})",
        times[steps / 2],
        times[0]
    );
}

fn forward(gpt: &Gpt, ops: Ops, idx: Tensor<1, Int>, targets: Tensor<1, Int>) -> Tensor<1> {
    let n = BATCH * T;
    let mut x = ops.norm(gpt.wte.clone().select(0, idx.clone()));
    let x0 = x.clone();
    for (i, block) in gpt.blocks.iter().enumerate() {
        x = x.mul_scalar(1.0) + x0.clone().mul_scalar(0.1);
        // Attention
        let h = ops.norm(x.clone());
        let q = linear(h.clone(), &block.c_q).reshape([BATCH, T, HEADS, HEAD_DIM]);
        let k = linear(h.clone(), &block.c_k).reshape([BATCH, T, HEADS, HEAD_DIM]);
        let mut v = linear(h.clone(), &block.c_v);
        if let (Some(table), Some(gate_w)) = (&block.value_embed, &block.ve_gate) {
            let ve = table.clone().select(0, idx.clone());
            let gate = sigmoid(linear(h.clone().slice([0..n, 0..VE_GATE_CHANNELS]), gate_w)).mul_scalar(2.0);
            v = v + (ve.reshape([n, HEADS, HEAD_DIM]) * gate.reshape([n, HEADS, 1])).reshape([n, C]);
        }
        let v = v.reshape([BATCH, T, HEADS, HEAD_DIM]);
        let q = ops.rope_norm(q, &gpt.cos, &gpt.sin);
        let k = ops.rope_norm(k, &gpt.cos, &gpt.sin);
        let y = ops.attention(q, k, v, WINDOWS[i]).reshape([n, C]);
        x = x + linear(y, &block.c_proj);
        // MLP
        let h = ops.norm(x.clone());
        x = x + linear(ops.relu_square(linear(h, &block.c_fc)), &block.mlp_proj);
    }
    ops.loss(linear(ops.norm(x), &gpt.lm_head), targets)
}

/// x @ wᵀ for w [out, in] (torch's layout; the transpose is a strided view).
fn linear(x: Tensor<2>, w: &Tensor<2>) -> Tensor<2> {
    x.matmul(w.clone().transpose())
}

/// cos or sin of the RoPE angles, [T, HEAD_DIM/2].
fn rope(cos: bool, device: &Device) -> Tensor<2> {
    let half = HEAD_DIM / 2;
    let data: Vec<f32> = (0..T)
        .flat_map(|t| {
            (0..half).map(move |i| {
                let angle = t as f32 / 10000f32.powf(2.0 * i as f32 / HEAD_DIM as f32);
                if cos { angle.cos() } else { angle.sin() }
            })
        })
        .collect();
    Tensor::from_data(TensorData::new(data, [T, half]), device)
}
