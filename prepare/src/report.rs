//! What a run reports, and who says it.
//!
//! Two documents, from two processes that trust each other differently:
//! - [`TrainStats`] — what the train program says about its own training (steps, tokens,
//!   seconds, memory, its seed). It is written by [`finish_training`] next to the model's
//!   checkpoint and never contains a metric: the program does not score itself.
//! - [`RunRecord`] — the result `ar` journals, built by `ar` with [`build_record`] from the
//!   scorer's numbers (val_bpb, test_bpb: computed by `ar` from a served model), `ar`'s own
//!   clock and cache facts, and the program's statistics, which stay labelled as claims.
//!
//! The original's agent read `run.log`, which the trained program controls, so a program
//! printing the right words could steer the agent (its #64), and a program could print any
//! val_bpb it liked. Here the number in the record is the scorer's; `ar` prints the
//! original's `---` summary block itself ([`RunRecord::summary_block`]).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::hardware::Hardware;
use crate::manifest::write_atomic;
use crate::scorer::Scored;

/// Version of the record format; `ar` reads 1 (self-scored, older journals) and 2.
pub const RECORD_FORMAT: u32 = 2;

/// Where `ar` asks for the training statistics.
pub const STATS_ENV: &str = "AR_STATS";

/// Where a run outside `ar` writes them.
pub const DEFAULT_STATS_FILE: &str = "stats.json";

/// Largest statistics file `ar` reads (bytes): it is written by an untrusted program.
pub const MAX_STATS_BYTES: u64 = 64 << 10;

/// What the train program says about its own training. No metric: `ar` scores the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainStats {
    /// Wall-clock seconds of budgeted training (warm-up steps excluded).
    pub training_seconds: f64,
    /// Seconds from process start to the end of training.
    pub total_seconds: f64,
    /// Seconds of start-up and warm-up steps, not counted in a time budget.
    pub compile_seconds: f64,
    /// Peak memory: resident set on CPU, device memory on a GPU.
    pub peak_mem_mb: f64,
    pub mfu_percent: f64,
    pub total_tokens: u64,
    pub num_steps: u64,
    pub num_params: u64,
    /// Forward + backward FLOPs per token by the train file's own count (its
    /// `estimate_flops`). Under a FLOPs budget `ar` charges at least its own floor from the
    /// checkpoint ([`crate::budget::flops_floor_per_token`]); 0 from older programs.
    #[serde(default)]
    pub flops_per_token: f64,
    pub depth: usize,
    /// e.g. "flex (cpu)", "cuda:0".
    pub device: String,
    /// GPU name, when training ran on one.
    pub gpu: Option<String>,
    /// "f32" or "bf16-mixed".
    pub precision: String,
    /// The seed the program used (`prepare::seed`): `ar` refuses a repeated measurement of
    /// one commit that reports a seed it already saw.
    pub seed: u64,
    /// The budget the program trained under (filled in by [`finish_training`]).
    #[serde(default)]
    pub budget: String,
    /// The profile and its hash of the cache the program opened (filled in by
    /// [`finish_training`]; `ar` checks them against the session's).
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub profile_hash: String,
}

impl TrainStats {
    /// Tokens trained before the last step began. A run stops after the step that spends a
    /// work budget (tokens or FLOPs), so this much must lie inside the budget.
    pub fn tokens_before_last_step(&self) -> u64 {
        self.total_tokens.saturating_sub(self.total_tokens / self.num_steps.max(1))
    }

    /// Parses the statistics file, refusing impossible values.
    pub fn parse(text: &str) -> std::result::Result<TrainStats, String> {
        let s: TrainStats = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for (name, v) in [
            ("training_seconds", s.training_seconds),
            ("total_seconds", s.total_seconds),
            ("peak_mem_mb", s.peak_mem_mb),
            ("mfu_percent", s.mfu_percent),
            ("flops_per_token", s.flops_per_token),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} = {v} is not a non-negative number"));
            }
        }
        for (name, v) in [("device", &s.device), ("precision", &s.precision), ("budget", &s.budget)] {
            if v.len() > 80 || v.chars().any(char::is_control) {
                return Err(format!("{name} is not a short one-line label"));
            }
        }
        Ok(s)
    }
}

/// Ends training: writes the checkpoint where `ar` will serve it from (`AR_CHECKPOINT`,
/// else `./model.ckpt`) and the statistics where `ar` reads them (`AR_STATS`, else
/// `./stats.json`), then prints the training summary. The model is scored by `ar`.
pub fn finish_training(cache: &Cache, mut stats: TrainStats, checkpoint: &Checkpoint) -> Result<()> {
    stats.profile = cache.profile.name.to_string();
    stats.profile_hash = cache.profile.hash();
    if stats.budget.is_empty() {
        stats.budget = crate::budget::Budget::active(cache.profile)?.to_string();
    }
    let ckpt = checkpoint.save_for_scoring()?;
    let path = std::env::var_os(STATS_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATS_FILE));
    let json = serde_json::to_string_pretty(&stats).expect("statistics serialise");
    write_atomic(&path, json.as_bytes())
        .map_err(|e| Error::Record { path: path.clone(), reason: e.to_string() })?;
    println!("---");
    println!("training_seconds: {:.1}", stats.training_seconds);
    println!("total_seconds:    {:.1}", stats.total_seconds);
    println!("peak_vram_mb:     {:.1}", stats.peak_mem_mb);
    println!("mfu_percent:      {:.2}", stats.mfu_percent);
    println!("total_tokens_M:   {:.1}", stats.total_tokens as f64 / 1e6);
    println!("num_steps:        {}", stats.num_steps);
    println!("num_params_M:     {:.1}", stats.num_params as f64 / 1e6);
    println!("depth:            {}", stats.depth);
    println!("checkpoint:       {} ({:.1} MB)", ckpt.display(), checkpoint.value_bytes() as f64 / 1e6);
    println!("val_bpb:          scored by ar (run `ar train`, or `ar experiment` in a session)");
    Ok(())
}

/// The record `ar` journals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: u32,
    /// Computed by `ar`'s scorer (format 2); by the program itself in format 1 journals.
    pub val_bpb: f64,
    pub test_bpb: Option<f64>,
    /// Self-reported: seconds of budgeted training.
    pub training_seconds: f64,
    /// Measured by `ar`: training process start to scoring end.
    pub total_seconds: f64,
    /// Self-reported: start-up and warm-up seconds.
    pub compile_seconds: f64,
    /// Measured by `ar`: seconds of scoring.
    pub eval_seconds: f64,
    pub peak_mem_mb: f64,
    pub mfu_percent: f64,
    pub total_tokens_m: f64,
    pub num_steps: u64,
    pub num_params_m: f64,
    pub depth: usize,
    pub profile: String,
    pub profile_hash: String,
    /// The data the model trained on, e.g. "TinyStories (GPT-4, clean)" or
    /// "SYNTHETIC grammar corpus (generated, not real text)".
    pub data: String,
    pub synthetic_data: bool,
    pub tokenizer_sha256: String,
    pub device: String,
    pub precision: String,
    pub hardware: Hardware,
    pub seed: u64,
    pub train_sha256: String,
    /// The budget the session trained under, e.g. `time:300s` or `tokens:2000000`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub budget: String,
    /// Measured by `ar`: seconds from starting the training process to its exit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub train_wall_seconds: f64,
    /// How the score was computed: variant, probes, commitment, bytes moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring: Option<Scored>,
    /// sha256 of the cache manifest the rows came from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub manifest_sha256: String,
    /// sha256 of the checkpoint that was served.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checkpoint_sha256: String,
}

/// What `ar` knows itself when it builds a record.
#[derive(Debug, Clone)]
pub struct Measured {
    pub scored: Scored,
    pub train_wall_seconds: f64,
    pub total_seconds: f64,
    pub train_sha256: String,
    pub checkpoint_sha256: String,
    pub manifest_sha256: String,
    pub budget: String,
}

impl RunRecord {
    /// Parses a record, refusing other formats and impossible values.
    pub fn parse(text: &str) -> std::result::Result<RunRecord, String> {
        let record: RunRecord = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if record.format != 1 && record.format != RECORD_FORMAT {
            return Err(format!("record format {} (expected {RECORD_FORMAT})", record.format));
        }
        check_bpb("val_bpb", record.val_bpb)?;
        if let Some(t) = record.test_bpb {
            check_bpb("test_bpb", t)?;
        }
        Ok(record)
    }

    /// The original's summary block, byte for byte in its first ten lines, then ours.
    pub fn summary_block(&self) -> String {
        let mut s = String::new();
        s.push_str("---\n");
        s.push_str(&format!("val_bpb:          {:.6}\n", self.val_bpb));
        s.push_str(&format!("training_seconds: {:.1}\n", self.training_seconds));
        s.push_str(&format!("total_seconds:    {:.1}\n", self.total_seconds));
        s.push_str(&format!("peak_vram_mb:     {:.1}\n", self.peak_mem_mb));
        s.push_str(&format!("mfu_percent:      {:.2}\n", self.mfu_percent));
        s.push_str(&format!("total_tokens_M:   {:.1}\n", self.total_tokens_m));
        s.push_str(&format!("num_steps:        {}\n", self.num_steps));
        s.push_str(&format!("num_params_M:     {:.1}\n", self.num_params_m));
        s.push_str(&format!("depth:            {}\n", self.depth));
        if let Some(t) = self.test_bpb {
            s.push_str(&format!("test_bpb:         {t:.6}\n"));
        }
        s.push_str(&format!("profile:          {} ({})\n", self.profile, self.profile_hash));
        if !self.budget.is_empty() {
            s.push_str(&format!("budget:           {}\n", self.budget));
        }
        s.push_str(&format!("data:             {}\n", self.data));
        s.push_str(&format!("device:           {} {}\n", self.device, self.precision));
        if let Some(sc) = &self.scoring {
            let probes = sc.probes.iter().filter(|p| p.passed).count();
            s.push_str(&format!(
                "scoring:          {} by ar ({} of {} probes passed, {:.1}s)\n",
                sc.mode,
                probes,
                sc.probes.len(),
                sc.seconds
            ));
        }
        s
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn check_bpb(name: &str, v: f64) -> std::result::Result<(), String> {
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{name} = {v} is not a positive finite number"));
    }
    Ok(())
}

/// The record: the scorer's numbers and `ar`'s measurements, the program's statistics as
/// reported, the cache's facts.
pub fn build_record(cache: &Cache, stats: &TrainStats, measured: Measured) -> Result<RunRecord> {
    let val_bpb = measured.scored.bpb(crate::Split::Val).ok_or_else(|| Error::Eval("no val score".into()))?;
    check_bpb("val_bpb", val_bpb).map_err(Error::Eval)?;
    let test_bpb = measured.scored.bpb(crate::Split::Test);
    let m = &cache.manifest;
    let tokenizer_sha256 = m.artifacts.get(&m.tokenizer.ranks).map(|a| a.sha256.clone()).unwrap_or_default();
    Ok(RunRecord {
        format: RECORD_FORMAT,
        val_bpb,
        test_bpb,
        training_seconds: stats.training_seconds,
        total_seconds: measured.total_seconds,
        compile_seconds: stats.compile_seconds,
        eval_seconds: measured.scored.seconds,
        peak_mem_mb: stats.peak_mem_mb,
        mfu_percent: stats.mfu_percent,
        total_tokens_m: stats.total_tokens as f64 / 1e6,
        num_steps: stats.num_steps,
        num_params_m: stats.num_params as f64 / 1e6,
        depth: stats.depth,
        profile: cache.profile.name.to_string(),
        profile_hash: cache.profile.hash(),
        data: cache.data_label(),
        synthetic_data: m.source.synthetic,
        tokenizer_sha256,
        device: stats.device.clone(),
        precision: stats.precision.clone(),
        hardware: Hardware::detect(stats.gpu.clone()),
        seed: stats.seed,
        train_sha256: measured.train_sha256,
        budget: measured.budget,
        train_wall_seconds: measured.train_wall_seconds,
        scoring: Some(measured.scored),
        manifest_sha256: measured.manifest_sha256,
        checkpoint_sha256: measured.checkpoint_sha256,
    })
}
