//! `ar bench train`'s engine: times one full optimizer step of the CURRENT train file
//! (src/main.rs, included as a module) at a given config, on synthetic tokens, and prints
//! one JSON line with the same fields as the PyTorch peer (`shared/bench/reference_gpt.py`)
//! so the two can be compared side by side.
//!
//! Same protocol as the peer: synthetic rows that each walk one random cycle through the
//! vocabulary, made before timing; `--warmup-steps` untimed steps at progress 0, then
//! `--steps` timed steps with progress = (step − warmup) / steps; a step covers every
//! micro-batch's forward+backward, the schedules, the optimizer and reading the loss.

#[allow(dead_code)]
#[path = "../main.rs"]
mod train_file;

use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use train_file::{Gpt, GptConfig, Group, MuonAdamW, Precision, StepKnobs, forward_backward};

/// The peer's flags, with its defaults (the standard comparison config).
#[derive(Debug, Clone)]
struct Args {
    vocab: usize,
    seq_len: usize,
    depth: usize,
    aspect_ratio: usize,
    head_dim: usize,
    window_pattern: String,
    device_batch: usize,
    total_batch: Option<usize>,
    steps: usize,
    warmup_steps: usize,
    threads: usize,
    autocast: String,
    seed: u64,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            vocab: 4096,
            seq_len: 256,
            depth: 4,
            aspect_ratio: 64,
            head_dim: 64,
            window_pattern: "SSSL".to_string(),
            device_batch: 16,
            total_batch: None,
            steps: 60,
            warmup_steps: 5,
            threads: 2,
            autocast: "none".to_string(),
            seed: 42,
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|_| format!("{flag}: '{v}' is not a count"));
        match flag.as_str() {
            "--vocab" => a.vocab = num(value()?)?,
            "--seq-len" => a.seq_len = num(value()?)?,
            "--depth" => a.depth = num(value()?)?,
            "--aspect-ratio" => a.aspect_ratio = num(value()?)?,
            "--head-dim" => a.head_dim = num(value()?)?,
            "--window-pattern" => a.window_pattern = value()?,
            "--device-batch" => a.device_batch = num(value()?)?,
            "--total-batch" => a.total_batch = Some(num(value()?)?),
            "--steps" => a.steps = num(value()?)?,
            "--warmup-steps" => a.warmup_steps = num(value()?)?,
            "--threads" => a.threads = num(value()?)?,
            "--autocast" => a.autocast = value()?,
            "--seed" => a.seed = num(value()?)? as u64,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.steps == 0 {
        return Err("--steps must be positive".to_string());
    }
    if a.autocast != "none" && a.autocast != "bf16" {
        return Err(format!("--autocast {}: none or bf16", a.autocast));
    }
    Ok(a)
}

/// Rows that each follow one random cycle through the vocabulary (as the peer does).
fn synthetic_batches(
    n: usize,
    batch: usize,
    seq: usize,
    vocab: usize,
    seed: u64,
) -> Vec<(Vec<i32>, Vec<i32>)> {
    let mut state = seed ^ 0x5851_F42D_4C95_7F2D;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut order: Vec<usize> = (0..vocab).collect();
    for i in (1..vocab).rev() {
        order.swap(i, next() % (i + 1));
    }
    (0..n)
        .map(|_| {
            let (mut x, mut y) = (Vec::with_capacity(batch * seq), Vec::with_capacity(batch * seq));
            for _ in 0..batch {
                let start = next() % vocab;
                for t in 0..seq {
                    x.push(order[(start + t) % vocab] as i32);
                    y.push(order[(start + t + 1) % vocab] as i32);
                }
            }
            (x, y)
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    let import_rss_mb = prepare::hardware::peak_rss_mb();
    rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global().expect("the first rayon use");
    let (device, device_name, gpu) = bench_device();
    let tokens_per_fwdbwd = args.device_batch * args.seq_len;
    let total_batch = args.total_batch.unwrap_or(tokens_per_fwdbwd);
    if total_batch % tokens_per_fwdbwd != 0 {
        eprintln!("bench: --total-batch must be a multiple of device_batch × seq_len");
        std::process::exit(2);
    }
    let accum = total_batch / tokens_per_fwdbwd;
    let base_dim = args.depth * args.aspect_ratio;
    let model_dim = base_dim.div_ceil(args.head_dim) * args.head_dim;
    let config = GptConfig {
        sequence_len: args.seq_len,
        vocab_size: args.vocab,
        n_layer: args.depth,
        n_head: model_dim / args.head_dim,
        n_kv_head: model_dim / args.head_dim,
        n_embd: model_dim,
        window_pattern: Box::leak(args.window_pattern.clone().into_boxed_str()),
    };
    let windows = config.window_sizes();
    let mut model = Gpt::new(config.clone(), &device, args.seed).with_grad();
    // `--autocast bf16` is the peer's flag for mixed precision: bf16 matmuls, f32 everything else.
    if args.autocast == "bf16" {
        model.precision = Precision::Bf16;
    }
    let flops_per_token = model.estimate_flops();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for (group, p) in model.params_mut() {
        let n: usize = p.dims().iter().product();
        let key = match group {
            Group::Embedding => "wte",
            Group::ValueEmbedding => "value_embeds",
            Group::LmHead => "lm_head",
            Group::Matrix => "transformer_matrices",
            Group::Resid | Group::X0 => "scalars",
        };
        *counts.entry(key).or_default() += n;
    }
    let total_params: usize = counts.values().sum();
    let mut optimizer = MuonAdamW::new(&mut model);
    let total_steps = args.warmup_steps + args.steps;
    let data = synthetic_batches(total_steps * accum, args.device_batch, args.seq_len, args.vocab, args.seed);
    let mut data_iter = data.into_iter();

    let (mut step_ms, mut fwd_bwd_ms, mut optim_ms, mut losses) = (vec![], vec![], vec![], vec![]);
    for step in 0..total_steps {
        let t0 = Instant::now();
        let mut next = || {
            let (x, y) = data_iter.next().expect("enough synthetic batches");
            let shape = [args.device_batch, args.seq_len];
            Ok((
                Tensor::<2, Int>::from_data(TensorData::new(x, shape), &device),
                Tensor::<2, Int>::from_data(TensorData::new(y, shape), &device),
            ))
        };
        let (grads, loss) =
            forward_backward(&mut model, &mut next, accum).expect("synthetic data never fails");
        let t1 = Instant::now();
        let progress = (step.saturating_sub(args.warmup_steps) as f64 / args.steps as f64).min(1.0);
        let knobs = StepKnobs {
            lr_multiplier: train_file::lr_multiplier(progress),
            muon_momentum: train_file::muon_momentum(step),
            muon_weight_decay: train_file::muon_weight_decay(progress),
        };
        optimizer.step(&mut model, grads, &knobs);
        let loss = loss.into_scalar::<f32>() as f64;
        let t2 = Instant::now();
        if loss.is_nan() || loss > 100.0 {
            eprintln!("FAIL: loss {loss} at step {step}");
            std::process::exit(1);
        }
        losses.push(loss);
        let ms = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64() * 1e3;
        if step >= args.warmup_steps {
            step_ms.push(ms(t0, t2));
            fwd_bwd_ms.push(ms(t0, t1));
            optim_ms.push(ms(t1, t2));
        }
        if step < 3 || step % 10 == 0 || step == total_steps - 1 {
            eprintln!(
                "step {step:04}{} | loss {loss:.6} | fwd+bwd {:.0} ms | optim {:.0} ms",
                if step < args.warmup_steps { " (warmup)" } else { "" },
                ms(t0, t1),
                ms(t1, t2)
            );
        }
    }
    let gpu_memory = if device_name == "cpu" { None } else { device.memory_pool_usage() };
    let (min, max) = step_ms.iter().fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let med = median(&mut step_ms.clone());
    let round = |v: f64, d: i32| (v * 10f64.powi(d)).round() / 10f64.powi(d);
    let json = serde_json::json!({
        "framework": "autoresearch-rs",
        "burn_version": "0.22.1",
        "config": {
            "vocab": args.vocab, "seq_len": args.seq_len, "depth": args.depth,
            "aspect_ratio": args.aspect_ratio, "head_dim": args.head_dim,
            "window_pattern": args.window_pattern, "device_batch": args.device_batch,
            "steps": args.steps, "warmup_steps": args.warmup_steps, "threads": args.threads,
            "compile": false, "autocast": args.autocast, "seed": args.seed,
            "total_batch": total_batch, "grad_accum_steps": accum,
            "n_embd": config.n_embd, "n_head": config.n_head, "window_sizes": windows,
        },
        "params": {
            "wte": counts.get("wte").copied().unwrap_or(0),
            "value_embeds": counts.get("value_embeds").copied().unwrap_or(0),
            "lm_head": counts.get("lm_head").copied().unwrap_or(0),
            "transformer_matrices": counts.get("transformer_matrices").copied().unwrap_or(0),
            "scalars": counts.get("scalars").copied().unwrap_or(0),
            "total": total_params,
        },
        "flops_per_token": flops_per_token,
        "step_ms_median": round(med, 3),
        "step_ms_min": round(min, 3),
        "step_ms_max": round(max, 3),
        "tokens_per_sec": round(total_batch as f64 / (med / 1e3), 1),
        "fwd_bwd_ms_median": round(median(&mut fwd_bwd_ms), 3),
        "optimizer_ms_median": round(median(&mut optim_ms), 3),
        "peak_rss_mb": round(prepare::hardware::peak_rss_mb(), 1),
        "device": device_name,
        "gpu": gpu,
        "precision": format!("{:?}", model.precision),
        // On a GPU: what the allocator holds at the end (its pools keep their high-water pages, so
        // this is close to the run's peak) and what live tensors use.
        "gpu_mem_reserved_mb": gpu_memory.map(|m| round(m.bytes_reserved as f64 / 1048576.0, 1)),
        "gpu_mem_in_use_mb": gpu_memory.map(|m| round(m.bytes_in_use as f64 / 1048576.0, 1)),
        "import_rss_mb": round(import_rss_mb, 1),
        "first_loss": round(losses[0], 5),
        "last_loss": round(*losses.last().unwrap(), 5),
    });
    println!("{json}");
}

/// (device, its name, the GPU's name): the CPU (burn's Flex); `AR_DEVICE=cuda` in a
/// `--features cuda` build (scripts/gpu-check.sh), `AR_DEVICE=wgpu` in a `--features wgpu` one.
fn bench_device() -> (Device, &'static str, Option<String>) {
    let wanted = std::env::var("AR_DEVICE").unwrap_or_default();
    #[cfg(feature = "cuda")]
    if wanted == "cuda" {
        let name = std::process::Command::new("nvidia-smi")
            .args(["--query-gpu=name", "--format=csv,noheader", "--id=0"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string());
        return (Device::cuda(0), "cuda:0", name);
    }
    #[cfg(feature = "wgpu")]
    if wanted == "wgpu" {
        return (Device::wgpu(burn::tensor::DeviceKind::DefaultDevice), "wgpu", None);
    }
    if !wanted.is_empty() && wanted != "cpu" {
        eprintln!("bench: AR_DEVICE={wanted} is not in this build; using the CPU");
    }
    (Device::flex(), "cpu", None)
}
