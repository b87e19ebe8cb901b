//! `ar prepare`: download or build the data, train the tokenizer, write the manifest.
//! A second run verifies the cache and returns.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use prepare::data::local::DocSeparator;
use prepare::data::{DataOptions, SourceSpec};
use prepare::manifest::Split;
use prepare::pipeline::{PrepareOptions, PrepareOutcome, prepare};
use prepare::profile::{DEFAULT_PROFILE, Profile};

use crate::ui::Bars;

#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Profile (fixed constants): cpu (default), h100 (the original's), smoke (tests).
    #[arg(long, env = "AR_PROFILE", default_value = DEFAULT_PROFILE)]
    pub profile: String,
    /// Data: climbmix, tinystories, synthetic[:DOCS], text:PATH, parquet:PATH (text and
    /// parquet may be repeated). Default: the profile's (cpu: tinystories).
    #[arg(long = "source", value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// Training shards: climbmix shards to download (-1 = all 6,542), or TinyStories
    /// 100k-story shards to keep. Default: 10 for climbmix, all for TinyStories.
    #[arg(long, allow_negative_numbers = true)]
    pub num_shards: Option<i64>,
    /// Parallel downloads.
    #[arg(long, default_value_t = 8)]
    pub download_workers: usize,
    /// Hugging Face endpoint or mirror (default: $HF_ENDPOINT, else https://huggingface.co).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// How local text is cut into documents: auto, eot (<|endoftext|>) or blank (lines).
    #[arg(long, default_value = "auto")]
    pub separator: String,
    /// Attempts per file before a download gives up.
    #[arg(long, default_value_t = 5)]
    pub download_attempts: u32,
    /// First retry wait in milliseconds; it doubles after each failed attempt.
    #[arg(long, default_value_t = 2000, hide = true)]
    pub download_backoff_ms: u64,
    /// Seconds without a byte before a download counts as stalled and is resumed.
    #[arg(long, default_value_t = 30)]
    pub download_idle_secs: u64,
    /// Cache directory for this profile (default: $AUTORESEARCH_CACHE/<profile> or
    /// ~/.cache/autoresearch-rs/<profile>).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Rebuild even if the cache is already prepared and verified.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: PrepareArgs) -> Result<()> {
    let profile = Profile::by_name(&args.profile)?;
    let sources = args.sources.iter().map(|s| SourceSpec::parse(s)).collect::<Result<Vec<_>, _>>()?;
    let num_shards = match args.num_shards {
        None => None,
        Some(-1) => Some(usize::MAX),
        Some(n) if n > 0 => Some(n as usize),
        Some(n) => bail!("--num-shards {n}: use a positive count, or -1 for all"),
    };
    let mut data = DataOptions {
        num_shards,
        download_workers: args.download_workers.max(1),
        separator: args.separator.parse::<DocSeparator>().map_err(anyhow::Error::msg)?,
        ..DataOptions::default()
    };
    data.download.attempts = args.download_attempts.max(1);
    data.download.backoff = Duration::from_millis(args.download_backoff_ms);
    data.download.read_timeout = Duration::from_secs(args.download_idle_secs.max(1));
    if let Some(endpoint) = args.endpoint {
        data.endpoint = endpoint;
    }
    let opts = PrepareOptions { profile, sources, data, cache_dir: args.cache_dir, force: args.force };
    let reporter = Bars::new();
    let outcome = prepare(&opts, &reporter).context("ar prepare failed")?;
    print_summary(&outcome);
    Ok(())
}

fn print_summary(o: &PrepareOutcome) {
    let m = &o.manifest;
    let verb = if o.reused { "Verified" } else { "Prepared" };
    println!("{verb} profile {} ({}) in {:.1}s: {}", m.profile, m.profile_hash, o.seconds, m.source.label);
    println!("  {:<6} {:>7} {:>12} {:>12} {:>14}", "split", "shards", "documents", "chars", "tokens");
    for split in [Split::Train, Split::Val, Split::Test] {
        let s = m.stats.get(&split).cloned().unwrap_or_default();
        let chars = if s.chars == 0 { "?".to_string() } else { human(s.chars) };
        let tokens = format!("{}{}", if s.tokens_estimated { "≈" } else { "" }, human(s.tokens));
        println!(
            "  {:<6} {:>7} {:>12} {:>12} {:>14}",
            split.name(),
            s.shards,
            group(s.documents),
            chars,
            tokens
        );
    }
    let t = &m.tokenizer;
    println!(
        "  tokenizer: {} tokens (BOS = {}), trained on {} documents / {} chars",
        t.vocab_size,
        t.bos_id,
        group(t.trained_docs),
        human(t.trained_chars)
    );
    for w in &o.warnings {
        println!("  warning: {w}");
    }
    println!("  manifest: {}", o.root.join(prepare::manifest::MANIFEST_FILE).display());
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// 1234567 → "1.2 M".
fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1} k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} M", n as f64 / 1e6),
        _ => format!("{:.2} B", n as f64 / 1e9),
    }
}
