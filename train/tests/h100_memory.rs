//! Does a training step at the h100 profile fit an 80 GB GPU? The answer computed from the shapes:
//! what the train file's forward keeps alive for its backward (op by op, with the kernels crate's
//! saved state: O and the log-sum-exp for attention, y and rstd for the norms, y for relu², the
//! logits and their log-sum-exp for the loss), the parameters, the optimizer state, the gradients
//! of a first micro-batch kept across the second (gradient accumulation), and the backward's
//! transient buffers.
//!
//! The accounting is checked against the allocator on a real GPU backend (wgpu; lavapipe in CI)
//! at small shapes: the bytes in use after the forward must match the prediction to a few percent.
//! Only then is it evaluated at the h100 shapes (depth 8, width 512, 4 heads of 128, T 2048, the
//! original's 128 sequences per micro-batch, vocab 8192, SSSL windows) and asserted under 80 GB.
//!
//! `cargo test --release -p train --test h100_memory` prints the h100 breakdown (it needs no GPU);
//! with `--features wgpu` the accounting is also verified against the allocator.

#[allow(dead_code)]
#[path = "../src/main.rs"]
mod train_file;

/// The shapes a step's memory depends on.
#[derive(Clone, Copy, Debug)]
struct Shape {
    batch: usize,
    seq: usize,
    depth: usize,
    width: usize,
    heads: usize,
    vocab: usize,
}

impl Shape {
    /// The h100 profile at the original's settings (train.py: DEPTH 8, ASPECT_RATIO 64,
    /// HEAD_DIM 128, DEVICE_BATCH_SIZE 128, MAX_SEQ_LEN 2048, vocab 8192).
    const H100: Shape = Shape { batch: 128, seq: 2048, depth: 8, width: 512, heads: 4, vocab: 8192 };

    fn layers_with_value_embeddings(&self) -> usize {
        (0..self.depth).filter(|&i| i % 2 == (self.depth - 1) % 2).count()
    }

    /// Parameter count, by optimizer rule: (AdamW, Muon).
    fn params(&self) -> (usize, usize) {
        let (d, v, l) = (self.width, self.vocab, self.depth);
        let ve = self.layers_with_value_embeddings();
        let adam = 2 * v * d + ve * v * d + 2 * l; // wte, lm_head, value embeddings, two scalars per layer
        let muon = l * 12 * d * d + ve * self.heads * 32; // q, k, v, proj (4d²), MLP (8d²), ve gates
        (adam, muon)
    }
}

/// Bytes of a step's parts, f32 throughout (PRECISION = F32).
#[derive(Debug)]
struct Breakdown {
    /// Weights.
    params: f64,
    /// AdamW's two moments, Muon's momentum and second moment.
    optimizer: f64,
    /// The first micro-batch's parameter gradients, alive during the second.
    grads: f64,
    /// What the forward keeps for the backward (activations, the logits, integer ids).
    kept: f64,
    /// The backward's largest set of short-lived buffers on top of what is kept.
    transient: f64,
}

impl Breakdown {
    fn peak(&self) -> f64 {
        self.params + self.optimizer + self.grads + self.kept + self.transient
    }
}

/// What the forward keeps, in bytes, for one micro-batch: the train file's `Gpt::forward` and
/// `loss`, op by op.
fn kept_by_forward(s: &Shape) -> f64 {
    let n = (s.batch * s.seq) as f64; // tokens
    let (d, h, v) = (s.width as f64, s.heads as f64, s.vocab as f64);
    let kv = d; // n_kv_head = n_head in the train file
    let ve = s.layers_with_value_embeddings() as f64;
    let l = s.depth as f64;
    // Embedding: norm(wte[idx]) keeps y (= x0, reused by every layer) and rstd.
    let embed = n * d + n;
    // A layer: the residual entering it (kept by `x * resid_lambda`; layer 0's is x0, already
    // counted), norm → y and rstd; q, k through RoPE+norm → y and rstd each; v; attention's O and
    // LSE (it keeps q, k, v: the rope outputs and v, already counted); the MLP's norm → y and rstd;
    // relu² → its [N, 4d] output (the c_fc output it was computed from is freed).
    let layer = n * d /* residual */ + (n * d + n) /* attn norm */ + (n * d + n * h) /* q */
        + (n * kv + n * h) /* k */ + n * kv /* v */ + (n * d + n * h) /* O, LSE */
        + (n * d + n) /* mlp norm */ + 4.0 * n * d /* relu² */;
    // Value-embedding layers: the looked-up rows [N, kv] and the gate kept by the product
    // (the sigmoid keeps its output, the product the doubled one).
    let ve_extra = n * kv + 2.0 * n * h;
    // The end: the final norm's y and rstd, the logits and the loss's per-row LSE and counts.
    let head = (n * d + n) + n * v + n;
    // Integer ids: the inputs (kept by each embedding lookup, one buffer) and the targets.
    let ids = 2.0 * n;
    4.0 * (embed + l * layer - n * d + ve * ve_extra + head + ids)
}

fn breakdown(s: &Shape, micro_batches: usize) -> Breakdown {
    let (adam, muon) = s.params();
    let p = (adam + muon) as f64;
    let n = (s.batch * s.seq) as f64;
    let d = s.width as f64;
    Breakdown {
        params: 4.0 * p,
        optimizer: 4.0 * (2.0 * adam as f64 + muon as f64) + 4.0 * (s.depth * 2 * 4 * s.width) as f64,
        grads: if micro_batches > 1 { 4.0 * p } else { 0.0 },
        kept: kept_by_forward(s),
        // Backward of the last MLP: the gradient of relu²'s output [N, 4d] (overwritten in place
        // by relu²'s backward), then of the norm's output [N, d], plus the residual gradient
        // flowing past the block [N, d]; the CE's gradient reuses the logits' buffer.
        transient: 4.0 * (4.0 * n * d + 2.0 * n * d) + 4.0 * p,
    }
}

const GB: f64 = 1e9;

#[test]
fn a_training_step_at_the_h100_profile_fits_80_gb() {
    let s = Shape::H100;
    // train.py's TOTAL_BATCH_SIZE 2^19 tokens = 2 micro-batches of 128 × 2048.
    let b = breakdown(&s, (1 << 19) / (s.batch * s.seq));
    let (adam, muon) = s.params();
    println!("h100 profile, f32, {s:?}: {} parameters ({adam} AdamW, {muon} Muon)", adam + muon);
    println!("  params      {:>7.2} GB", b.params / GB);
    println!("  optimizer   {:>7.2} GB", b.optimizer / GB);
    println!("  grads       {:>7.2} GB (first micro-batch, kept across the second)", b.grads / GB);
    println!(
        "  kept        {:>7.2} GB (forward → backward; logits alone {:.2} GB)",
        b.kept / GB,
        4.0 * (s.batch * s.seq * s.vocab) as f64 / GB
    );
    println!("  transient   {:>7.2} GB", b.transient / GB);
    println!("  peak        {:>7.2} GB of 80", b.peak() / GB);
    // What the composed attention would add (burn 0.22.1's autodiff path): at least two f32
    // [B, H, T, T] tensors per layer (the scores and the softmax), 8.6 GB each here.
    let scores = 4.0 * (s.batch * s.heads * s.seq * s.seq) as f64;
    println!(
        "  (composed attention would keep ≥ {:.0} GB more: 2 × {:.1} GB per layer)",
        2.0 * scores * s.depth as f64 / GB,
        scores / GB
    );
    assert!(b.peak() < 80.0 * GB, "a training step at the h100 profile needs {:.1} GB", b.peak() / GB);
    assert!(b.peak() + 2.0 * scores * s.depth as f64 > 80.0 * GB, "the composed attention would not fit");
}

#[test]
fn the_accounting_grows_linearly_in_the_context() {
    // With the fused attention nothing is T×T: twice the context is twice the activations.
    let at = |seq| kept_by_forward(&Shape { seq, ..Shape::H100 });
    let ratio = at(4096) / at(2048);
    println!("kept at T 4096 / T 2048 = {ratio:.4}");
    assert!((ratio - 2.0).abs() < 1e-9);
}

/// The accounting against the allocator: the train file's model on wgpu at small shapes.
#[cfg(feature = "wgpu")]
#[test]
fn the_accounting_matches_the_allocator_on_wgpu() {
    use burn::tensor::{Device, DeviceKind, Int, Tensor, TensorData};
    use train_file::{Gpt, GptConfig};

    let device = Device::wgpu(DeviceKind::DefaultDevice).autodiff();
    let in_use = || device.memory_pool_usage().expect("cubecl reports memory").bytes_in_use as f64;
    for s in [
        Shape { batch: 4, seq: 128, depth: 4, width: 128, heads: 2, vocab: 512 },
        Shape { batch: 2, seq: 256, depth: 2, width: 128, heads: 2, vocab: 1024 },
        Shape { batch: 2, seq: 512, depth: 4, width: 64, heads: 1, vocab: 512 },
    ] {
        let config = GptConfig {
            sequence_len: s.seq,
            vocab_size: s.vocab,
            n_layer: s.depth,
            n_head: s.heads,
            n_kv_head: s.heads,
            n_embd: s.width,
            window_pattern: "SSSL",
        };
        let model = Gpt::new(config, &device, 1).with_grad();
        let n = s.batch * s.seq;
        let ids = |shift: usize| {
            let v: Vec<i64> = (0..n).map(|i| ((i * 7 + shift) % s.vocab) as i64).collect();
            Tensor::<2, Int>::from_data(TensorData::new(v, [s.batch, s.seq]), &device)
        };
        let (x, y) = (ids(0), ids(1));
        let _ = in_use(); // flush pending work
        device.memory_cleanup();
        let before = in_use();
        let loss = model.loss(x, y);
        let kept = in_use() - before;
        // The ids are made before `before`, so the prediction's ids are not measured here.
        let predicted = kept_by_forward(&s) - 4.0 * 2.0 * n as f64;
        let err = (kept - predicted) / predicted;
        println!(
            "{s:?}: kept after the forward {kept:.0} B, predicted {predicted:.0} B ({:+.1} %)",
            100.0 * err
        );
        assert!(err.abs() < 0.01, "{s:?}: the accounting is off by {:.1} %", 100.0 * err);
        drop(loss);
    }
}
