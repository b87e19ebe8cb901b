//! `ar bench`: measurements that belong in a closing note, never in a timed test.
//!
//! - `ar bench train`: one training step of the current train file at the PyTorch peer's
//!   config; with `--reference PATH` it alternates ours and the peer N times in one run
//!   and reports the tokens/s ratio (median and spread), as the peer's README asks.
//! - `ar bench loader`: tokens/s the packing loader delivers at a profile's shape.
//! - `ar bench tokenizer`: BPE training time and encoding throughput on a text file.
//! - `ar bench search`: a whole session with an agent, then the truth about it — the
//!   verified gain in units of the baseline σ, the keeps that do not hold up on fresh
//!   seeds (false keeps), experiments per hour and where the time went. The number the
//!   search itself is improved by.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use prepare::profile::{DEFAULT_PROFILE, Profile};
use serde_json::Value;

use crate::exec::build::{BuildSpec, build, find_repo};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Time the train file's optimizer step; compare with the PyTorch peer.
    Train(TrainBench),
    /// Tokens per second from the packing loader.
    Loader(LoaderBench),
    /// BPE training time and encoding throughput.
    Tokenizer(TokenizerBench),
    /// A whole session, then its verified gain, false keeps and throughput.
    Search(super::bench_search::SearchBench),
}

#[derive(Debug, Args)]
pub struct TrainBench {
    /// The PyTorch peer script (shared/bench/reference_gpt.py); omit to time ours only.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Python interpreter for the peer.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Ours/theirs pairs to alternate.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    /// The repository (default: the one containing the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Flags passed to both sides (the peer's: --steps 60 --device-batch 16 ...).
    #[arg(last = true)]
    pub config: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoaderBench {
    #[arg(long, env = "AR_PROFILE", default_value = DEFAULT_PROFILE)]
    pub profile: String,
    /// Rows per batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Batches to time.
    #[arg(long, default_value_t = 400)]
    pub batches: usize,
}

#[derive(Debug, Args)]
pub struct TokenizerBench {
    /// UTF-8 text; documents are separated by blank lines (`\\n\\n`).
    #[arg(long)]
    pub text: PathBuf,
    /// Vocabulary size including the 4 special tokens.
    #[arg(long, default_value_t = 4096)]
    pub vocab: usize,
    /// Rounds (ours, then the peer's, alternating); medians are reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Python with rustbpe and tiktoken installed: compare with the original's tokenizer.
    #[arg(long)]
    pub peer: Option<String>,
    /// The peer script (default: bench/tokenizer_peer.py in the repository).
    #[arg(long)]
    pub peer_script: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<()> {
    match args.what {
        BenchWhat::Train(t) => bench_train(t),
        BenchWhat::Loader(l) => bench_loader(l),
        BenchWhat::Tokenizer(t) => bench_tokenizer(t),
        BenchWhat::Search(s) => super::bench_search::run(s),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn run_json(cmd: &mut Command, what: &str) -> Result<Value> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{what} printed no JSON"))?;
    Ok(serde_json::from_str(line)?)
}

fn bench_train(args: TrainBench) -> Result<()> {
    let repo = find_repo(&args.repo.clone().unwrap_or_else(|| PathBuf::from(".")))?;
    eprintln!("Building the bench binary (release) in {}", repo.display());
    let built = build(&repo, &BuildSpec { bin: "bench".into(), features: vec![] })?
        .map_err(|f| anyhow::anyhow!("the bench binary does not build:\n{}", f.first_error))?;
    let ours = || {
        let mut c = Command::new(&built.binary);
        c.args(&args.config);
        c
    };
    let Some(reference) = &args.reference else {
        let v = run_json(&mut ours(), "our bench")?;
        println!("{v}");
        return Ok(());
    };
    let theirs = || {
        let mut c = Command::new(&args.python);
        c.arg(reference).args(&args.config);
        c
    };
    let mut ratios = Vec::new();
    for pair in 0..args.pairs.max(1) {
        let o = run_json(&mut ours(), "our bench")?;
        let t = run_json(&mut theirs(), "the PyTorch peer")?;
        let (ot, tt) =
            (o["tokens_per_sec"].as_f64().unwrap_or(0.0), t["tokens_per_sec"].as_f64().unwrap_or(0.0));
        let ratio = if tt > 0.0 { ot / tt } else { f64::NAN };
        eprintln!(
            "pair {}: ours {ot:.0} tok/s ({:.0} MB), theirs {tt:.0} tok/s ({:.0} MB): ratio {ratio:.3}",
            pair + 1,
            o["peak_rss_mb"].as_f64().unwrap_or(0.0),
            t["peak_rss_mb"].as_f64().unwrap_or(0.0)
        );
        println!("{o}");
        println!("{t}");
        ratios.push(ratio);
    }
    let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(a, b), &r| (a.min(r), b.max(r)));
    println!(
        "{}",
        serde_json::json!({"summary": "ours/theirs tokens_per_sec", "pairs": ratios.len(),
            "ratio_median": median(ratios.clone()), "ratio_min": lo, "ratio_max": hi, "ratios": ratios})
    );
    Ok(())
}

fn bench_loader(args: LoaderBench) -> Result<()> {
    let profile = Profile::by_name(&args.profile)?;
    let cache = prepare::Cache::open(profile)?;
    let tok = Arc::new(prepare::Tokenizer::load(&cache)?);
    let mut loader =
        prepare::Loader::new(&cache, &tok, args.batch, profile.max_seq_len, prepare::Split::Train)?;
    loader.next_batch()?; // the first batch includes opening and hashing a shard
    let t = Instant::now();
    for _ in 0..args.batches {
        loader.next_batch()?;
    }
    let secs = t.elapsed().as_secs_f64();
    let tokens = (args.batches * args.batch * profile.max_seq_len) as f64;
    println!(
        "{}",
        serde_json::json!({"bench": "loader", "profile": profile.name, "batch": args.batch,
            "seq": profile.max_seq_len, "batches": args.batches, "seconds": secs, "tokens_per_sec": tokens / secs})
    );
    Ok(())
}

fn bench_tokenizer(args: TokenizerBench) -> Result<()> {
    use prepare::bpe::{BpeTrainer, DOC_CAP_CHARS, MAX_TRAIN_CHARS, SPECIAL_TOKENS, SPLIT_PATTERN};
    let text = prepare::data::local::read_utf8(&args.text)?;
    // Split exactly as the peer script does, so both train on identical documents.
    let docs: Vec<&str> = text.split("\n\n").collect();
    let vocab_no_specials = args.vocab - SPECIAL_TOKENS.len();
    let scratch = tempfile::tempdir()?;
    let ours_ranks = scratch.path().join("ours.tiktoken");
    let peer_ranks = scratch.path().join("peer.tiktoken");
    let (mut train_ratio, mut encode_ratio) = (Vec::new(), Vec::new());
    let mut rows = Vec::new();
    for round in 0..args.repeats.max(1) {
        let t = Instant::now();
        let mut trainer = BpeTrainer::new(SPLIT_PATTERN, MAX_TRAIN_CHARS, DOC_CAP_CHARS)?;
        trainer.add_documents(&docs);
        let ranks = trainer.train(vocab_no_specials as u32, &mut |_, _| {})?;
        let train_secs = t.elapsed().as_secs_f64();
        ranks.save(&ours_ranks)?;
        let tok = prepare::Tokenizer::from_ranks(&ranks, SPLIT_PATTERN)?;
        let t = Instant::now();
        let tokens: usize = tok.encode_batch(&docs, false).iter().map(Vec::len).sum();
        let encode_secs = t.elapsed().as_secs_f64();
        let mut row = serde_json::json!({"round": round + 1, "ours_train_seconds": train_secs,
            "ours_encode_seconds": encode_secs, "tokens": tokens,
            "encode_mb_per_sec": text.len() as f64 / encode_secs / 1e6});
        if let Some(python) = &args.peer {
            let script = args.peer_script.clone().unwrap_or_else(|| PathBuf::from("bench/tokenizer_peer.py"));
            let p = run_json(
                Command::new(python)
                    .arg(&script)
                    .arg("train")
                    .arg(&args.text)
                    .arg(vocab_no_specials.to_string())
                    .arg(&peer_ranks),
                "the rustbpe peer",
            )?;
            let peer_train = p["seconds"].as_f64().unwrap_or(f64::NAN);
            let identical = std::fs::read(&ours_ranks)? == std::fs::read(&peer_ranks)?;
            let e = run_json(
                Command::new(python).arg(&script).arg("encode").arg(&ours_ranks).arg(&args.text),
                "the tiktoken peer",
            )?;
            let peer_encode = e["seconds"].as_f64().unwrap_or(f64::NAN);
            let same_tokens = e["tokens"].as_u64() == Some(tokens as u64);
            train_ratio.push(train_secs / peer_train);
            encode_ratio.push(peer_encode / encode_secs);
            row["peer_train_seconds"] = peer_train.into();
            row["peer_encode_seconds"] = peer_encode.into();
            row["ranks_identical"] = identical.into();
            row["same_token_count"] = same_tokens.into();
            if !identical {
                eprintln!("warning: our ranks differ from rustbpe's on {}", args.text.display());
            }
        }
        eprintln!("{row}");
        rows.push(row);
    }
    let mut summary = serde_json::json!({"bench": "tokenizer", "text": args.text, "documents": docs.len(),
        "bytes": text.len(), "vocab": args.vocab, "rounds": rows});
    if !train_ratio.is_empty() {
        summary["train_time_ours_over_rustbpe_median"] = median(train_ratio).into();
        summary["encode_throughput_ours_over_tiktoken_median"] = median(encode_ratio).into();
    }
    println!("{summary}");
    Ok(())
}
