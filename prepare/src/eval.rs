//! `evaluate_bpb`: THE metric. Fixed; never edited by the agent.
//!
//! Bits per byte rather than loss per token, because it does not depend on the vocabulary:
//! a change to the tokenizer or the vocabulary size cannot game it. The model only supplies
//! logits; this module computes the log-softmax and the target's log-probability itself
//! (in f32), so the train program cannot redefine the loss. Per-token negative
//! log-likelihoods are summed in f64 over `EVAL_TOKENS` tokens of the split, targets whose
//! byte length is 0 (the special tokens) are masked out of both sums, and
//! `bpb = Σ nats / (ln 2 · Σ bytes)`. Rows are `MAX_SEQ_LEN` long whatever the model was
//! trained at, so results are comparable across configurations.

use std::sync::Arc;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::manifest::Split;
use crate::tokenizer::Tokenizer;

/// Running sums of the metric.
#[derive(Debug, Clone)]
pub struct BpbAccumulator<'a> {
    token_bytes: &'a [u32],
    nats: f64,
    bytes: u64,
    tokens: u64,
}

impl<'a> BpbAccumulator<'a> {
    pub fn new(token_bytes: &'a [u32]) -> Self {
        BpbAccumulator { token_bytes, nats: 0.0, bytes: 0, tokens: 0 }
    }

    /// Scores one batch: `logits` is `[B, T, V]` (any float dtype; V may exceed the
    /// vocabulary if the model pads it), `targets` is `B·T` ids, row-major.
    pub fn add(&mut self, logits: Tensor<3>, targets: &[u32]) -> Result<()> {
        let [b, t, v] = logits.dims();
        if b * t != targets.len() {
            return Err(Error::Eval(format!(
                "the model returned logits of shape [{b}, {t}, {v}] for {} targets",
                targets.len()
            )));
        }
        if v < self.token_bytes.len() {
            return Err(Error::Eval(format!(
                "the model returned {v} logits per position; the vocabulary has {}",
                self.token_bytes.len()
            )));
        }
        let device = logits.device();
        let logits = logits.detach().cast(FloatDType::F32);
        let index: Vec<i32> = targets.iter().map(|&i| i as i32).collect();
        let index = Tensor::<3, Int>::from_data(TensorData::new(index, [b, t, 1]), &device);
        let logp = log_softmax(logits, 2).gather(2, index);
        let logp: Vec<f32> = logp
            .into_data()
            .try_to_vec()
            .map_err(|e| Error::Eval(format!("cannot read log-probabilities: {e:?}")))?;
        self.add_log_probs(&logp, targets)
    }

    /// Adds per-target log-probabilities (natural log) already computed.
    pub fn add_log_probs(&mut self, logp: &[f32], targets: &[u32]) -> Result<()> {
        for (&lp, &target) in logp.iter().zip(targets) {
            let nbytes = *self
                .token_bytes
                .get(target as usize)
                .ok_or_else(|| Error::Eval(format!("target id {target} is outside the vocabulary")))?;
            if nbytes == 0 {
                continue;
            }
            if !lp.is_finite() {
                return Err(Error::Eval(format!(
                    "non-finite log-probability {lp} for target {target}: the model produced NaN/inf logits"
                )));
            }
            self.nats -= lp as f64;
            self.bytes += nbytes as u64;
            self.tokens += 1;
        }
        Ok(())
    }

    /// Tokens scored so far (special-token targets excluded).
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Bits per byte of everything added.
    pub fn bpb(&self) -> Result<f64> {
        if self.bytes == 0 {
            return Err(Error::Eval("no bytes were scored".to_string()));
        }
        Ok(self.nats / (std::f64::consts::LN_2 * self.bytes as f64))
    }
}

/// Bits per byte of the model on `split`, computed in the calling process: the reference the
/// trusted scorer (`prepare::scorer`, run by `ar` against a served model) is tested against.
/// It scores exactly `EVAL_TOKENS / MAX_SEQ_LEN` rows, packed exactly like training data, in
/// batches of `batch_size` with a shorter last batch: the rows scored never depend on the
/// batch size (the original scored `floor(EVAL_TOKENS / (B·T))` batches, so a batch size that
/// does not divide the row count silently dropped rows). `logits_fn` maps a `[B, T]` batch
/// of token ids to `[B, T, V]` logits.
pub fn evaluate_bpb<F>(
    cache: &Cache,
    tokenizer: &Arc<Tokenizer>,
    batch_size: usize,
    split: Split,
    device: &Device,
    logits_fn: F,
) -> Result<f64>
where
    F: Fn(Tensor<2, Int>) -> Tensor<3>,
{
    if batch_size == 0 {
        return Err(Error::Eval("the evaluation batch size must be positive".to_string()));
    }
    let rows = crate::scorer::Rows::load(cache, tokenizer, split)?;
    let mut acc = BpbAccumulator::new(tokenizer.token_bytes());
    let mut start = 0;
    while start < rows.n {
        let count = batch_size.min(rows.n - start);
        let span = start * rows.seq..(start + count) * rows.seq;
        let ids: Vec<i32> = rows.inputs[span.clone()].iter().map(|&i| i as i32).collect();
        let input = Tensor::<2, Int>::from_data(TensorData::new(ids, [count, rows.seq]), device);
        acc.add(logits_fn(input), &rows.targets[span])?;
        start += count;
    }
    acc.bpb()
}
