//! FILE 2 — the train program. Single file, single device, read top to bottom.
//!
//! A GPT pretrained for a fixed budget (wall-clock time by default, or tokens or FLOPs),
//! then scored in validation bits per byte — by `ar`, not by this program.
//! Rebuilt in Rust on burn from Karpathy's autoresearch `train.py` (itself cherry-picked
//! from nanochat): same model, same Muon + AdamW optimizer, same schedules.
//!
//! Fair game (this is the file the agent edits): the model, the optimizer, the
//! hyperparameters, the loop, the batch size, the precision — anything in this file.
//! Fixed (imported, never edited): everything in `prepare` — the budget and its warm-up
//! steps, the context length, the data and the tokenizer, the loader, the checkpoint and
//! serving format, the scorer (the metric) and the result record; the fused ops in
//! `kernels`; this crate's Cargo.toml.
//!
//! How a run is scored: training ends by writing the model's parameters (a checkpoint) and
//! the training statistics. `ar` then starts this binary again with `AR_SERVE` set, in a
//! sandbox that can neither write nor read the data; `serve` rebuilds the model and answers
//! `ar`'s queries with logits. `ar` computes val_bpb from them itself and probes the answers
//! (a model whose output at position t depends on token t+1, or on the other rows of its
//! batch, or that changes while it is scored, gets no score: crash class `leak`).
//!
//! Run: `ar train` (builds in release, trains, scores — like the original's `uv run train.py`).
//! Items marked `pub(crate)` are also driven by `ar bench train` (src/bin/bench.rs), which
//! times this file's training step against the PyTorch peer.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};
use prepare::hardware::{Hardware, peak_rss_mb};
use prepare::{Budget, Cache, Checkpoint, Loader, Spent, Split, Tokenizer, TrainStats};

// ---------------------------------------------------------------------------------------
// Fused ops (the fixed `kernels` crate: hand-written forward and backward on the CPU,
// composed burn ops on GPU backends — the counterpart of the original's flash-attn import)
// ---------------------------------------------------------------------------------------

/// RMSNorm over the last dimension, no learned weight (eps as `F.rms_norm`'s default).
fn norm<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    kernels::rms_norm(x, kernels::RMS_NORM_EPS)
}

/// Rotary embedding then RMSNorm of each head, for q and k: x [B, T, H, D], tables [T, D/2].
fn rope_norm(x: Tensor<4>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<4> {
    kernels::rope_rms_norm(x, cos.clone(), sin.clone(), kernels::RMS_NORM_EPS)
}

/// Causal attention with a sliding window, layout [B, T, H, D]: query t attends keys
/// t-window ..= t (flash-attn's `window_size=(window, 0)`); window >= T is full causal.
fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, window: usize) -> Tensor<4> {
    let scale = 1.0 / (q.dims()[3] as f32).sqrt();
    kernels::attention(q, k, v, window, scale)
}

/// Mean cross-entropy of `cap·tanh(logits/cap)` against `targets`.
fn softcap_cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>, cap: f32) -> Tensor<1> {
    kernels::softcap_cross_entropy(logits, targets, cap)
}

// ---------------------------------------------------------------------------------------
// GPT model
// ---------------------------------------------------------------------------------------

/// Shape of the network.
#[derive(Debug, Clone)]
pub(crate) struct GptConfig {
    pub(crate) sequence_len: usize,
    pub(crate) vocab_size: usize,
    pub(crate) n_layer: usize,
    pub(crate) n_head: usize,
    pub(crate) n_kv_head: usize,
    pub(crate) n_embd: usize,
    pub(crate) window_pattern: &'static str,
}

impl GptConfig {
    fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Per-layer attention windows: S = half the context, L = all of it; the last layer
    /// is always L.
    pub(crate) fn window_sizes(&self) -> Vec<usize> {
        let pattern: Vec<char> = self.window_pattern.to_uppercase().chars().collect();
        assert!(pattern.iter().all(|c| *c == 'S' || *c == 'L'), "WINDOW_PATTERN uses only S and L");
        let mut w: Vec<usize> = (0..self.n_layer)
            .map(
                |i| if pattern[i % pattern.len()] == 'L' { self.sequence_len } else { self.sequence_len / 2 },
            )
            .collect();
        *w.last_mut().expect("at least one layer") = self.sequence_len;
        w
    }
}

/// Layers with a value embedding: every other one, counting back from the last.
fn has_ve(layer: usize, n_layer: usize) -> bool {
    layer % 2 == (n_layer - 1) % 2
}

/// Input channels the value-embedding gate looks at.
const VE_GATE_CHANNELS: usize = 32;

/// Logit soft cap: logits are squashed into (-15, 15).
const SOFTCAP: f32 = 15.0;

/// One transformer block. Weights are [out, in], as torch stores them.
struct Block {
    c_q: Tensor<2>,
    c_k: Tensor<2>,
    c_v: Tensor<2>,
    c_proj: Tensor<2>,
    c_fc: Tensor<2>,
    mlp_proj: Tensor<2>,
    /// [n_kv_head, VE_GATE_CHANNELS] on layers with a value embedding.
    ve_gate: Option<Tensor<2>>,
}

/// The GPT: token embedding → RMSNorm → blocks (with x0 and value residuals) → RMSNorm →
/// untied head → soft cap.
pub(crate) struct Gpt {
    config: GptConfig,
    /// The matmuls' precision (PRECISION unless a benchmark overrides it).
    pub(crate) precision: Precision,
    windows: Vec<usize>,
    wte: Tensor<2>,
    blocks: Vec<Block>,
    lm_head: Tensor<2>,
    /// [1, n_layer]: scale of the residual stream entering each layer.
    resid_lambdas: Tensor<2>,
    /// [1, n_layer]: how much of the normalized embedding is re-injected into each layer.
    x0_lambdas: Tensor<2>,
    /// [vocab, kv_dim] on layers with a value embedding.
    value_embeds: Vec<Option<Tensor<2>>>,
    /// RoPE tables, [1, T, 1, head_dim/2].
    cos: Tensor<2>,
    sin: Tensor<2>,
}

/// How the matmuls run: f32, or bf16 operands with f32 sums (mixed precision, as the original on
/// a GPU: master weights, optimizer state and every other op stay f32).
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(dead_code)] // PRECISION picks one
pub(crate) enum Precision {
    F32,
    Bf16,
}

/// `x @ w.T` for x [N, in] and w [out, in]; the transpose is a free strided view. In bf16 the
/// operands are rounded to bf16 (AVX512-BF16 on the CPU, tensor cores on a GPU).
fn linear(x: Tensor<2>, w: &Tensor<2>, precision: Precision) -> Tensor<2> {
    match precision {
        Precision::F32 => x.matmul(w.clone().transpose()),
        Precision::Bf16 => kernels::linear_bf16(x, w.clone()),
    }
}

impl Block {
    /// x: [B·T, C] normalized input → attention output [B·T, C].
    fn attn(
        &self,
        x: Tensor<2>,
        ve: Option<Tensor<2>>,
        gpt: &Gpt,
        window: usize,
        b: usize,
        t: usize,
    ) -> Tensor<2> {
        let cfg = &gpt.config;
        let p = gpt.precision;
        let (h, hkv, d) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim());
        let q = linear(x.clone(), &self.c_q, p).reshape([b, t, h, d]);
        let k = linear(x.clone(), &self.c_k, p).reshape([b, t, hkv, d]);
        let mut v = linear(x.clone(), &self.c_v, p);
        // Value residual (ResFormer): mix in the value embedding, gated per head in (0, 2).
        if let (Some(ve), Some(gate_w)) = (ve, &self.ve_gate) {
            let gate =
                sigmoid(linear(x.clone().slice([0..b * t, 0..VE_GATE_CHANNELS]), gate_w, p)).mul_scalar(2.0);
            let gate = gate.reshape([b * t, hkv, 1]);
            v = v + (ve.reshape([b * t, hkv, d]) * gate).reshape([b * t, hkv * d]);
        }
        let v = v.reshape([b, t, hkv, d]);
        let (cos, sin) = gpt.rotary_for(t);
        let q = rope_norm(q, &cos, &sin);
        let k = rope_norm(k, &cos, &sin);
        let y = attention(q, k, v, window).reshape([b * t, h * d]);
        linear(y, &self.c_proj, p)
    }

    /// relu² MLP.
    fn mlp(&self, x: Tensor<2>, p: Precision) -> Tensor<2> {
        linear(kernels::relu_square(linear(x, &self.c_fc, p)), &self.mlp_proj, p)
    }
}

impl Gpt {
    /// Builds the model with the original's `init_weights`, from a host RNG so every
    /// backend starts from the same numbers.
    pub(crate) fn new(config: GptConfig, device: &Device, seed: u64) -> Gpt {
        let mut rng = Rng::new(seed);
        let (c, v, l) = (config.n_embd, config.vocab_size, config.n_layer);
        let kv_dim = config.n_kv_head * config.head_dim();
        let s = 3f32.sqrt() / (c as f32).sqrt();
        let mut uniform = |r: usize, cols: usize| rng.uniform(r, cols, s, device);
        let mut blocks = Vec::with_capacity(l);
        for i in 0..l {
            blocks.push(Block {
                c_q: uniform(config.n_head * config.head_dim(), c),
                c_k: uniform(kv_dim, c),
                c_v: uniform(kv_dim, c),
                c_proj: zeros(c, c, device),
                c_fc: uniform(4 * c, c),
                mlp_proj: zeros(c, 4 * c, device),
                ve_gate: has_ve(i, l).then(|| zeros(config.n_kv_head, VE_GATE_CHANNELS, device)),
            });
        }
        let value_embeds = (0..l).map(|i| has_ve(i, l).then(|| uniform(v, kv_dim))).collect();
        let wte = rng.normal(v, c, 1.0, device);
        let lm_head = rng.normal(v, c, 0.001, device);
        let (cos, sin) = rotary_tables(config.sequence_len, config.head_dim(), device);
        Gpt {
            precision: PRECISION,
            windows: config.window_sizes(),
            wte,
            blocks,
            lm_head,
            resid_lambdas: full(1, l, 1.0, device),
            x0_lambdas: full(1, l, 0.1, device),
            value_embeds,
            cos,
            sin,
            config,
        }
    }

    /// The rotary tables for the first `t` positions.
    fn rotary_for(&self, t: usize) -> (Tensor<2>, Tensor<2>) {
        let half = self.config.head_dim() / 2;
        if t == self.cos.dims()[0] {
            return (self.cos.clone(), self.sin.clone());
        }
        (self.cos.clone().slice([0..t, 0..half]), self.sin.clone().slice([0..t, 0..half]))
    }

    /// Logits [B·T, vocab] (soft-capped) for token ids [B, T].
    fn forward(&self, idx: Tensor<2, Int>) -> Tensor<2> {
        let [b, t] = idx.dims();
        let flat = idx.reshape([b * t]);
        let mut x = norm(self.wte.clone().select(0, flat.clone()));
        let x0 = x.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            let rl = self.resid_lambdas.clone().slice([0..1, i..i + 1]);
            let xl = self.x0_lambdas.clone().slice([0..1, i..i + 1]);
            x = x * rl + x0.clone() * xl;
            let ve = self.value_embeds[i].as_ref().map(|table| table.clone().select(0, flat.clone()));
            x = x.clone() + block.attn(norm(x.clone()), ve, self, self.windows[i], b, t);
            x = x.clone() + block.mlp(norm(x), self.precision);
        }
        linear(norm(x), &self.lm_head, self.precision)
    }

    /// Mean training loss for inputs and targets [B, T].
    pub(crate) fn loss(&self, idx: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        let [b, t] = targets.dims();
        softcap_cross_entropy(self.forward(idx), targets.reshape([b * t]), SOFTCAP)
    }

    /// Soft-capped logits [B, T, vocab] for evaluation.
    pub(crate) fn eval_logits(&self, idx: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = idx.dims();
        kernels::softcap(self.forward(idx), SOFTCAP).reshape([b, t, self.config.vocab_size])
    }

    /// Every parameter with its optimizer group, in a fixed order.
    pub(crate) fn params_mut(&mut self) -> Vec<(Group, &mut Tensor<2>)> {
        let mut out: Vec<(Group, &mut Tensor<2>)> = vec![
            (Group::LmHead, &mut self.lm_head),
            (Group::Embedding, &mut self.wte),
            (Group::Resid, &mut self.resid_lambdas),
            (Group::X0, &mut self.x0_lambdas),
        ];
        for ve in self.value_embeds.iter_mut().flatten() {
            out.push((Group::ValueEmbedding, ve));
        }
        for b in &mut self.blocks {
            out.extend([
                (Group::Matrix, &mut b.c_q),
                (Group::Matrix, &mut b.c_k),
                (Group::Matrix, &mut b.c_v),
                (Group::Matrix, &mut b.c_proj),
                (Group::Matrix, &mut b.c_fc),
                (Group::Matrix, &mut b.mlp_proj),
            ]);
            if let Some(g) = b.ve_gate.as_mut() {
                out.push((Group::Matrix, g));
            }
        }
        out
    }

    /// Makes every parameter a tracked leaf on `device` (autodiff) or plain (inference).
    pub(crate) fn with_grad(mut self) -> Gpt {
        for (_, p) in self.params_mut() {
            *p = p.clone().autodiff().require_grad();
        }
        self
    }

    /// The trained parameters and the config needed to rebuild the model, for scoring.
    fn checkpoint(&mut self) -> prepare::Result<Checkpoint> {
        let mut ck = Checkpoint::new();
        let c = &self.config;
        ck.set("sequence_len", c.sequence_len);
        ck.set("vocab_size", c.vocab_size);
        ck.set("n_layer", c.n_layer);
        ck.set("n_head", c.n_head);
        ck.set("n_kv_head", c.n_kv_head);
        ck.set("n_embd", c.n_embd);
        ck.set("window_pattern", c.window_pattern);
        for (i, (_, p)) in self.params_mut().into_iter().enumerate() {
            ck.push(&format!("p{i}"), &p.clone().inner())?;
        }
        Ok(ck)
    }

    /// The model of a checkpoint, on `device`, without autodiff (for serving logits).
    pub(crate) fn from_checkpoint(ck: &Checkpoint, device: &Device) -> prepare::Result<Gpt> {
        let pattern: String = ck.get("window_pattern")?;
        let config = GptConfig {
            sequence_len: ck.get("sequence_len")?,
            vocab_size: ck.get("vocab_size")?,
            n_layer: ck.get("n_layer")?,
            n_head: ck.get("n_head")?,
            n_kv_head: ck.get("n_kv_head")?,
            n_embd: ck.get("n_embd")?,
            window_pattern: Box::leak(pattern.into_boxed_str()),
        };
        let mut model = Gpt::new(config, device, 0);
        for (i, (_, p)) in model.params_mut().into_iter().enumerate() {
            let loaded: Tensor<2> = ck.tensor(i, device)?;
            if loaded.dims() != p.dims() {
                return Err(prepare::Error::Checkpoint {
                    what: format!("tensor p{i}"),
                    reason: format!("shape {:?}, the model expects {:?}", loaded.dims(), p.dims()),
                });
            }
            *p = loaded;
        }
        Ok(model)
    }

    /// Parameter counts as the original's `num_scaling_params`.
    fn num_params(&mut self) -> usize {
        self.params_mut().iter().map(|(_, p)| p.dims().iter().product::<usize>()).sum()
    }

    /// Forward + backward FLOPs per token, as the original's `estimate_flops`: 6 per
    /// matrix weight (embeddings and scalars excluded) plus attention over each window.
    pub(crate) fn estimate_flops(&mut self) -> f64 {
        let cfg = self.config.clone();
        let windows = self.windows.clone();
        let matrices: usize = self
            .params_mut()
            .iter()
            .filter(|(g, _)| matches!(g, Group::Matrix | Group::LmHead))
            .map(|(_, p)| p.dims().iter().product::<usize>())
            .sum();
        let attn: usize =
            windows.iter().map(|&w| 12 * cfg.n_head * cfg.head_dim() * w.min(cfg.sequence_len)).sum();
        (6 * matrices + attn) as f64
    }
}

/// cos/sin tables [T, D/2] for RoPE with base 10000.
fn rotary_tables(t: usize, head_dim: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let half = head_dim / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
    for pos in 0..t {
        for i in 0..half {
            let inv_freq = 1.0 / 10000f64.powf((2 * i) as f64 / head_dim as f64);
            let angle = pos as f64 * inv_freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let table = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [t, half]), device);
    (table(cos), table(sin))
}

fn zeros(r: usize, c: usize, device: &Device) -> Tensor<2> {
    Tensor::zeros([r, c], device)
}

fn full(r: usize, c: usize, value: f32, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(vec![value; r * c], [r, c]), device)
}

/// SplitMix64 with Box–Muller: the same weights on every backend and every run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn uniform(&mut self, r: usize, c: usize, bound: f32, device: &Device) -> Tensor<2> {
        let v: Vec<f32> = (0..r * c).map(|_| ((self.next_f64() * 2.0 - 1.0) as f32) * bound).collect();
        Tensor::from_data(TensorData::new(v, [r, c]), device)
    }
    fn normal(&mut self, r: usize, c: usize, std: f32, device: &Device) -> Tensor<2> {
        let v: Vec<f32> = (0..r * c)
            .map(|_| {
                let (u1, u2) = (self.next_f64().max(1e-300), self.next_f64());
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32 * std
            })
            .collect();
        Tensor::from_data(TensorData::new(v, [r, c]), device)
    }
}

// ---------------------------------------------------------------------------------------
// Optimizer: MuonAdamW (AdamW for embeddings, head and scalars; Muon for block matrices)
// ---------------------------------------------------------------------------------------

/// Which rule updates a parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Group {
    LmHead,
    Embedding,
    ValueEmbedding,
    Resid,
    X0,
    Matrix,
}

impl Group {
    /// The per-layer scalars (residual and x0 lambdas).
    fn is_scalar(self) -> bool {
        matches!(self, Group::Resid | Group::X0)
    }
}

/// Polar Express coefficients: five odd-polynomial steps that push every singular value
/// of the update towards 1 (a faster-converging Newton–Schulz).
const POLAR_EXPRESS: [(f32, f32, f32); 5] = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
];

/// Approximately orthogonalizes g (singular values → ~1), iterating on the smaller Gram
/// matrix so tall and wide matrices cost the same. The products run in `precision` (bf16:
/// operands rounded, as the original iterates in bf16; storage and sums stay f32).
pub(crate) fn polar_express(g: Tensor<2>, precision: Precision) -> Tensor<2> {
    let mm = |a: Tensor<2>, b: Tensor<2>| match precision {
        Precision::F32 => a.matmul(b),
        Precision::Bf16 => kernels::matmul_bf16(a, b),
    };
    let [r, c] = g.dims();
    let frob = g.clone().square().sum().sqrt().reshape([1, 1]);
    let mut x = g / frob.mul_scalar(1.02).add_scalar(1e-6);
    for (a, b, cc) in POLAR_EXPRESS {
        if r > c {
            let gram = mm(x.clone().transpose(), x.clone());
            let poly = gram.clone().mul_scalar(b) + mm(gram.clone(), gram).mul_scalar(cc);
            x = x.clone().mul_scalar(a) + mm(x, poly);
        } else {
            let gram = mm(x.clone(), x.clone().transpose());
            let poly = gram.clone().mul_scalar(b) + mm(gram.clone(), gram).mul_scalar(cc);
            x = x.clone().mul_scalar(a) + mm(poly, x);
        }
    }
    x
}

/// Optimizer state of one parameter.
enum Slot {
    Adam { moments: Option<(Tensor<2>, Tensor<2>)>, step: i32 },
    Muon { momentum: Tensor<2>, second: Tensor<2> },
}

/// Learning rates and betas per group, as the original's `setup_optimizer`.
pub(crate) struct MuonAdamW {
    slots: Vec<Slot>,
    dmodel_lr_scale: f64,
    /// Optimizer steps taken so far (every group's).
    steps_taken: usize,
}

/// The schedule-dependent knobs for one step.
pub(crate) struct StepKnobs {
    pub(crate) lr_multiplier: f64,
    pub(crate) muon_momentum: f64,
    pub(crate) muon_weight_decay: f64,
}

impl MuonAdamW {
    pub(crate) fn new(model: &mut Gpt) -> MuonAdamW {
        let dmodel_lr_scale = (model.config.n_embd as f64 / 768.0).powf(-0.5);
        println!("Scaling AdamW LRs by 1/sqrt({}/768) = {dmodel_lr_scale:.6}", model.config.n_embd);
        let slots = model
            .params_mut()
            .into_iter()
            .map(|(group, p)| {
                let p = p.clone().inner();
                match group {
                    Group::Matrix => {
                        let [r, c] = p.dims();
                        let second = if r >= c { [r, 1] } else { [1, c] };
                        Slot::Muon { momentum: p.zeros_like(), second: Tensor::zeros(second, &p.device()) }
                    }
                    _ => Slot::Adam { moments: Some((p.zeros_like(), p.zeros_like())), step: 0 },
                }
            })
            .collect();
        MuonAdamW { slots, dmodel_lr_scale, steps_taken: 0 }
    }

    /// One update of every parameter from its (inner) gradient.
    pub(crate) fn step(&mut self, model: &mut Gpt, grads: Vec<Tensor<2>>, knobs: &StepKnobs) {
        let precision = model.precision;
        self.steps_taken += 1;
        for (((group, param), grad), slot) in model.params_mut().into_iter().zip(grads).zip(&mut self.slots) {
            let p = param.clone().inner();
            let updated = match slot {
                // The per-layer scalars hold still for their first steps: at init every block
                // adds zero (c_proj and mlp_proj start at zero), so the last hidden state is a
                // multiple of x0, the final RMSNorm removes the multiple, and the scalars' true
                // gradient is exactly zero. What arrives is rounding noise whose sign follows
                // the summation order (the batch split, the seed), and AdamW, which divides by
                // the gradient's own size, turns it into a full step: x0 went 0.1 → −0.32 or
                // +0.50 at SCALAR_LR 0.5 and moved val_bpb by ~0.07 on the demo profile.
                Slot::Adam { .. } if group.is_scalar() && self.steps_taken <= SCALAR_HOLD_STEPS => p,
                Slot::Adam { moments, step } => {
                    let (lr0, b1, b2) = adam_hyper(group, self.dmodel_lr_scale);
                    *step += 1;
                    adamw_update(p, grad, moments, *step, lr0 * knobs.lr_multiplier, b1, b2)
                }
                Slot::Muon { momentum, second } => muon_update(p, grad, momentum, second, knobs, precision),
            };
            *param = updated.autodiff().require_grad();
        }
    }
}

/// (initial lr, beta1, beta2) of an AdamW group, as the original's `setup_optimizer`.
fn adam_hyper(group: Group, dmodel_lr_scale: f64) -> (f64, f64, f64) {
    let (b1, b2) = ADAM_BETAS;
    match group {
        Group::LmHead => (UNEMBEDDING_LR * dmodel_lr_scale, b1, b2),
        Group::Embedding | Group::ValueEmbedding => (EMBEDDING_LR * dmodel_lr_scale, b1, b2),
        Group::Resid => (SCALAR_LR * 0.01, b1, b2),
        Group::X0 => (SCALAR_LR, 0.96, 0.95),
        Group::Matrix => unreachable!("Muon group"),
    }
}

/// AdamW (no weight decay in any of the original's AdamW groups; eps 1e-10), one fused pass
/// per parameter (`kernels::adamw_step`); the moments are handed over so it runs in place.
#[allow(clippy::too_many_arguments)]
fn adamw_update(
    p: Tensor<2>,
    grad: Tensor<2>,
    moments: &mut Option<(Tensor<2>, Tensor<2>)>,
    step: i32,
    lr: f64,
    b1: f64,
    b2: f64,
) -> Tensor<2> {
    let (m, v) = moments.take().expect("AdamW moments are present between steps");
    let hyper = kernels::AdamW { lr, beta1: b1, beta2: b2, eps: 1e-10, weight_decay: 0.0, step };
    let (p, m, v) = kernels::adamw_step(p, grad, m, v, &hyper);
    *moments = Some((m, v));
    p
}

/// Muon: Nesterov momentum → Polar Express → NorMuon variance reduction → cautious
/// weight decay. Per matrix (the original stacks equal shapes only to batch the work).
fn muon_update(
    p: Tensor<2>,
    grad: Tensor<2>,
    momentum: &mut Tensor<2>,
    second: &mut Tensor<2>,
    knobs: &StepKnobs,
    precision: Precision,
) -> Tensor<2> {
    let [r, c] = p.dims();
    let mu = knobs.muon_momentum;
    *momentum = momentum.clone().mul_scalar(mu) + grad.clone().mul_scalar(1.0 - mu);
    let g = grad.mul_scalar(1.0 - mu) + momentum.clone().mul_scalar(mu);
    let x = polar_express(g, precision);
    // NorMuon: per-row (tall) or per-column (wide) second moment, rescaled so the update
    // keeps its overall norm.
    let red_dim = if r >= c { 1 } else { 0 };
    let red_size = if r >= c { c } else { r } as f64;
    let v_mean = x.clone().square().mean_dim(red_dim);
    let v_norm = v_mean.clone().sum().mul_scalar(red_size).sqrt().reshape([1, 1]);
    *second = second.clone().mul_scalar(MUON_BETA2) + v_mean.clone().mul_scalar(1.0 - MUON_BETA2);
    let step_size = second.clone().clamp_min(1e-10).sqrt().recip();
    let scaled_sq = v_mean.mul_scalar(red_size) * step_size.clone().square();
    let v_norm_new = scaled_sq.sum().sqrt().reshape([1, 1]).clamp_min(1e-10);
    let g = x * (step_size * (v_norm / v_norm_new));
    // Cautious weight decay: decay only where the update and the weight agree in sign.
    let lr = MATRIX_LR * knobs.lr_multiplier * (r as f64 / c as f64).max(1.0).sqrt();
    let wd = knobs.muon_weight_decay;
    let agree = (g.clone() * p.clone()).greater_equal_elem(0.0).float();
    p.clone() - g.mul_scalar(lr) - (p * agree).mul_scalar(lr * wd)
}

// ---------------------------------------------------------------------------------------
// Hyperparameters (edit these directly, no CLI flags)            original h100 value →
// ---------------------------------------------------------------------------------------

// Model architecture
const DEPTH: usize = 4; // number of transformer layers                               8
const ASPECT_RATIO: usize = 64; // model_dim = DEPTH × ASPECT_RATIO                    64
const HEAD_DIM: usize = 64; // attention head dimension                                128
const WINDOW_PATTERN: &str = "SSSL"; // sliding windows: L = full, S = half context     "SSSL"
const PRECISION: Precision = Precision::F32; // matmuls: F32, or Bf16 (f32 weights and state)  bf16

// Optimization
const TOTAL_BATCH_SIZE: usize = 1 << 12; // tokens per optimizer step                  2^19
const DEVICE_BATCH_SIZE: usize = 16; // sequences per forward/backward                  128
const EMBEDDING_LR: f64 = 0.6; // token and value embeddings (AdamW)                   0.6
const UNEMBEDDING_LR: f64 = 0.004; // lm_head (AdamW)                                  0.004
const MATRIX_LR: f64 = 0.04; // block matrices (Muon)                                  0.04
const SCALAR_LR: f64 = 0.5; // per-layer scalars (AdamW)                               0.5
const SCALAR_HOLD_STEPS: usize = 1; // steps before the scalars move (see MuonAdamW::step)  0
const WEIGHT_DECAY: f64 = 0.2; // cautious weight decay for Muon                       0.2
const ADAM_BETAS: (f64, f64) = (0.8, 0.95); // AdamW beta1, beta2                      (0.8, 0.95)
const MUON_BETA2: f64 = 0.95; // NorMuon second-moment decay                           0.95
const WARMUP_RATIO: f64 = 0.0; // fraction of the budget for LR warm-up                0.0
const WARMDOWN_RATIO: f64 = 0.5; // fraction of the budget for LR warm-down            0.5
const FINAL_LR_FRAC: f64 = 0.0; // final LR as a fraction of the initial              0.0

// Run
const SEED: u64 = 42; // weights; ar offsets it per measurement (and the data order)    42
const LOG_EVERY: usize = 10; // steps between loss read-outs (each one syncs the device)  1
// (The warm-up steps left off the clock are the profile's, fixed: `profile.warmup_steps`.)

// ---------------------------------------------------------------------------------------
// Schedules (all on progress = the fraction of the budget spent, from prepare's Budget)
// ---------------------------------------------------------------------------------------

pub(crate) fn lr_multiplier(progress: f64) -> f64 {
    if progress < WARMUP_RATIO {
        if WARMUP_RATIO > 0.0 { progress / WARMUP_RATIO } else { 1.0 }
    } else if progress < 1.0 - WARMDOWN_RATIO {
        1.0
    } else {
        let cooldown = (1.0 - progress) / WARMDOWN_RATIO;
        cooldown + (1.0 - cooldown) * FINAL_LR_FRAC
    }
}

pub(crate) fn muon_momentum(step: usize) -> f64 {
    let frac = (step as f64 / 300.0).min(1.0);
    (1.0 - frac) * 0.85 + frac * 0.95
}

pub(crate) fn muon_weight_decay(progress: f64) -> f64 {
    WEIGHT_DECAY * (1.0 - progress)
}

/// One optimizer step's worth of gradients: `accum` micro-batches from `next_batch`,
/// each loss scaled by 1/accum, gradients summed. Returns them (inner tensors, in
/// `params_mut` order) and the last micro-batch's unscaled loss, without a device sync.
pub(crate) fn forward_backward(
    model: &mut Gpt,
    next_batch: &mut dyn FnMut() -> prepare::Result<(Tensor<2, Int>, Tensor<2, Int>)>,
    accum: usize,
) -> prepare::Result<(Vec<Tensor<2>>, Tensor<1>)> {
    let mut grads: Option<Vec<Tensor<2>>> = None;
    let mut last_loss = None;
    for _ in 0..accum {
        let (x, y) = next_batch()?;
        let loss = model.loss(x, y);
        let g = loss.clone().div_scalar(accum as f32).backward();
        let micro: Vec<Tensor<2>> = model
            .params_mut()
            .into_iter()
            .map(|(_, p)| p.grad(&g).unwrap_or_else(|| p.clone().inner().zeros_like()))
            .collect();
        grads = Some(match grads {
            None => micro,
            Some(acc) => acc.into_iter().zip(micro).map(|(a, b)| a + b).collect(),
        });
        last_loss = Some(loss.detach().inner());
    }
    Ok((grads.expect("accum >= 1"), last_loss.expect("accum >= 1")))
}

// ---------------------------------------------------------------------------------------
// Setup: device, tokenizer, model, optimizer, data
// ---------------------------------------------------------------------------------------

/// The device: CPU (burn's Flex) unless built with a GPU feature; `AR_DEVICE` picks
/// explicitly (cpu, cuda, wgpu).
fn pick_device() -> (Device, String, Option<String>) {
    let wanted = std::env::var("AR_DEVICE").unwrap_or_default();
    #[cfg(feature = "cuda")]
    if wanted.is_empty() || wanted == "cuda" {
        return (Device::cuda(0), "cuda:0".to_string(), Some(cuda_name()));
    }
    #[cfg(feature = "wgpu")]
    if wanted.is_empty() || wanted == "wgpu" {
        return (
            Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
            "wgpu".to_string(),
            Some("wgpu adapter".to_string()),
        );
    }
    if !wanted.is_empty() && wanted != "cpu" {
        eprintln!("AR_DEVICE={wanted} is not available in this build; using the CPU");
    }
    (Device::flex(), "flex (cpu)".to_string(), None)
}

#[cfg(feature = "cuda")]
fn cuda_name() -> String {
    std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "CUDA GPU".to_string())
}

fn main() {
    // `ar` starts this binary twice: to train, then (with AR_SERVE set) to serve the trained
    // model's logits to its scorer.
    let result = match prepare::serve::request() {
        Some(request) => serve(request),
        None => train(),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

fn train() -> prepare::Result<()> {
    let t_start = Instant::now();
    let (device, device_name, gpu) = pick_device();
    let seed = prepare::seed(SEED);
    device.seed(seed);
    let cache = Cache::open_active()?;
    let profile = cache.profile;
    let budget = Budget::active(profile)?;
    let tokenizer = Arc::new(Tokenizer::load(&cache)?);
    let vocab_size = tokenizer.vocab_size();
    println!("Profile: {} | data: {} | device: {device_name}", profile.name, cache.data_label());
    println!("Vocab size: {vocab_size} | budget: {budget}");

    let base_dim = DEPTH * ASPECT_RATIO;
    let model_dim = base_dim.div_ceil(HEAD_DIM) * HEAD_DIM;
    let config = GptConfig {
        sequence_len: profile.max_seq_len,
        vocab_size,
        n_layer: DEPTH,
        n_head: model_dim / HEAD_DIM,
        n_kv_head: model_dim / HEAD_DIM,
        n_embd: model_dim,
        window_pattern: WINDOW_PATTERN,
    };
    println!("Model config: {config:?}");
    let mut model = Gpt::new(config, &device, seed).with_grad();
    let num_params = model.num_params();
    let flops_per_token = model.estimate_flops();
    println!("Parameters: {num_params} | FLOPs per token: {flops_per_token:e}");

    // Rows per forward/backward: DEVICE_BATCH_SIZE, fewer when one optimizer step holds fewer
    // tokens than that (the h100 profile's 2048-token rows); whole micro-batches per step.
    let device_batch = DEVICE_BATCH_SIZE.min((TOTAL_BATCH_SIZE / profile.max_seq_len).max(1));
    let tokens_per_fwdbwd = device_batch * profile.max_seq_len;
    let grad_accum_steps = (TOTAL_BATCH_SIZE / tokens_per_fwdbwd).max(1);
    let tokens_per_step = grad_accum_steps * tokens_per_fwdbwd;
    let mut optimizer = MuonAdamW::new(&mut model);
    let mut train_loader = Loader::new(&cache, &tokenizer, device_batch, profile.max_seq_len, Split::Train)?;
    let mut batch = train_loader.next_batch()?;
    let hardware = Hardware::detect(gpu.clone());
    let peak_flops = hardware.peak_flops(false);
    let warmup = profile.warmup_steps;
    // Under a time budget the warm-up steps cannot spend it; under a work budget they can.
    let off_the_clock = |step: usize| budget.is_time() && step <= warmup;
    println!(
        "Batch: {device_batch} × {} tokens × {grad_accum_steps} accumulation = {tokens_per_step} tokens per step",
        profile.max_seq_len
    );

    // -----------------------------------------------------------------------------------
    // Training loop
    // -----------------------------------------------------------------------------------
    let interactive = std::io::stdout().is_terminal();
    let t_start_training = Instant::now();
    let mut total_training_time = 0.0f64;
    let mut spent = Spent::default();
    let mut ema = 0.0f64;
    let mut readouts = 0i32;
    let mut step = 0usize;
    let mut last_sync = Instant::now();
    let mut steps_since_sync = 0usize;
    loop {
        let (grads, loss_value) = forward_backward(
            &mut model,
            &mut || {
                let (x, y) = batch.tensors(&device);
                batch = train_loader.next_batch()?;
                Ok((x, y))
            },
            grad_accum_steps,
        )?;
        // Progress moves every step: the host clock since the last sync stands in for the
        // steps not yet synced (time budget); tokens and FLOPs are counted exactly.
        let unsynced = if step >= warmup { last_sync.elapsed().as_secs_f64() } else { 0.0 };
        let progress = budget.progress(&Spent { training_seconds: total_training_time + unsynced, ..spent });
        let knobs = StepKnobs {
            lr_multiplier: lr_multiplier(progress),
            muon_momentum: muon_momentum(step),
            muon_weight_decay: muon_weight_decay(progress),
        };
        optimizer.step(&mut model, grads, &knobs);
        step += 1;
        steps_since_sync += 1;
        spent.tokens += tokens_per_step as u64;
        spent.flops += flops_per_token * tokens_per_step as f64;

        // The budget is checked every step; the loss is read (a device sync) only every
        // LOG_EVERY steps, every warm-up step, and when the budget looks spent, so the clock
        // is re-anchored to a true step boundary before stopping. Under a time budget the
        // first `warmup` steps are off the clock (the original's 11); under a tokens or FLOPs
        // budget they are work like any other, and the run stops when it is spent.
        let unsynced = last_sync.elapsed().as_secs_f64();
        let looks_spent = !off_the_clock(step)
            && budget.spent(&Spent { training_seconds: total_training_time + unsynced, ..spent });
        if step <= warmup || steps_since_sync >= LOG_EVERY || looks_spent {
            let loss_f = loss_value.into_scalar::<f32>() as f64;
            if loss_f.is_nan() || loss_f > 100.0 {
                println!();
                println!("FAIL");
                std::process::exit(1);
            }
            let now = Instant::now();
            let window = now.duration_since(last_sync).as_secs_f64();
            let dt = window / steps_since_sync as f64;
            if step > warmup {
                // Only the steps after the warm-up count; the first counted step's share
                // of a window that straddles the boundary is pro-rated.
                let counted = (step - warmup).min(steps_since_sync);
                total_training_time += dt * counted as f64;
            }
            spent.training_seconds = total_training_time;
            last_sync = now;
            steps_since_sync = 0;
            readouts += 1;
            ema = 0.9 * ema + 0.1 * loss_f;
            let smooth_loss = ema / (1.0 - 0.9f64.powi(readouts));
            let tok_per_sec = tokens_per_step as f64 / dt;
            let mfu = 100.0 * flops_per_token * tok_per_sec / peak_flops;
            let line = format!(
                "step {step:05} ({:.1}%) | loss: {smooth_loss:.6} | lrm: {:.2} | dt: {:.0}ms | tok/sec: {:.0} | mfu: {mfu:.1}% | epoch: {}",
                100.0 * budget.progress(&spent),
                knobs.lr_multiplier,
                dt * 1000.0,
                tok_per_sec,
                batch.epoch
            );
            if interactive {
                print!("\r{line}    ");
            } else {
                println!("{line}");
            }
            let _ = std::io::stdout().flush();
            if !off_the_clock(step) && budget.spent(&spent) {
                break;
            }
        }
    }
    println!();
    let compile_seconds = t_start_training.elapsed().as_secs_f64() - total_training_time
        + t_start_training.duration_since(t_start).as_secs_f64();

    // -----------------------------------------------------------------------------------
    // Summary: the checkpoint ar scores, and what this program says about its training
    // -----------------------------------------------------------------------------------
    let steady_steps = step.saturating_sub(warmup) as f64;
    let mfu_percent = if total_training_time > 0.0 {
        100.0 * flops_per_token * tokens_per_step as f64 * steady_steps / total_training_time / peak_flops
    } else {
        0.0
    };
    let checkpoint = model.checkpoint()?;
    prepare::finish_training(
        &cache,
        TrainStats {
            training_seconds: total_training_time,
            total_seconds: t_start.elapsed().as_secs_f64(),
            compile_seconds,
            peak_mem_mb: peak_rss_mb(),
            mfu_percent,
            total_tokens: spent.tokens,
            num_steps: step as u64,
            num_params: num_params as u64,
            flops_per_token,
            depth: DEPTH,
            device: device_name,
            gpu,
            precision: "f32".to_string(),
            seed,
            budget: budget.to_string(),
            ..TrainStats::default()
        },
        &checkpoint,
    )
}

// ---------------------------------------------------------------------------------------
// Serving: the trained model answers ar's scorer with logits
// ---------------------------------------------------------------------------------------

/// The scoring phase: rebuilds the model from the checkpoint `ar` hands over and answers
/// its queries (rows of token ids it chose) with logits, at most DEVICE_BATCH_SIZE rows at a
/// time. The metric is computed by `ar`; this process cannot write or read the data.
fn serve(request: prepare::Result<prepare::serve::Request>) -> prepare::Result<()> {
    let mut request = request?;
    let (device, _, _) = pick_device();
    let inference = device.inner();
    let checkpoint = request.checkpoint()?;
    let model = Gpt::from_checkpoint(&checkpoint, &inference)?;
    request.serve(&inference, DEVICE_BATCH_SIZE, |x| model.eval_logits(x))
}
