//! The result record (JSON, for `ar`) and the original's `---` summary block (for humans and
//! for `grep "^val_bpb:"`), both produced here so the train program cannot fake their format.
//!
//! The original's agent read `run.log`, which the trained program controls, so a program
//! printing the right words could steer the agent (its #64). Here the train program hands
//! its measurements to [`finish`], which checks them, adds what only `prepare` knows (the
//! profile, its hash, the data, the hardware), writes the record atomically to the path in
//! `AR_RESULT` and prints the summary. `ar` reads only the record; a run without one is a
//! crash, never a zero.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::hardware::Hardware;
use crate::manifest::write_atomic;

/// Version of the record format; `ar` refuses others.
pub const RECORD_FORMAT: u32 = 1;

/// Where `ar` asks for the record.
pub const RESULT_ENV: &str = "AR_RESULT";

/// What the train program measured and hands to [`finish`].
#[derive(Debug, Clone, Default)]
pub struct TrainStats {
    pub val_bpb: f64,
    /// Held-out bits per byte; `None` if the program chose not to compute it.
    pub test_bpb: Option<f64>,
    /// Wall-clock seconds of the budgeted training (warm-up steps excluded).
    pub training_seconds: f64,
    /// Seconds from process start to the end of evaluation.
    pub total_seconds: f64,
    /// Seconds of start-up and the first warm-up steps, not counted in the budget.
    pub compile_seconds: f64,
    /// Seconds spent in evaluation.
    pub eval_seconds: f64,
    /// Peak memory: resident set on CPU, device memory on a GPU.
    pub peak_mem_mb: f64,
    pub mfu_percent: f64,
    pub total_tokens: u64,
    pub num_steps: u64,
    pub num_params: u64,
    pub depth: usize,
    /// e.g. "flex (cpu)", "cuda:0".
    pub device: String,
    /// GPU name, when training ran on one.
    pub gpu: Option<String>,
    /// "f32" or "bf16-mixed".
    pub precision: String,
    pub seed: u64,
    /// sha256 of the train file this binary was built from (the train crate's build
    /// script exports it); `ar` checks it against the commit it built.
    pub train_sha256: String,
}

/// The record `ar` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub format: u32,
    pub val_bpb: f64,
    pub test_bpb: Option<f64>,
    pub training_seconds: f64,
    pub total_seconds: f64,
    pub compile_seconds: f64,
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
}

impl RunRecord {
    /// Parses a record, refusing other formats and impossible values.
    pub fn parse(text: &str) -> std::result::Result<RunRecord, String> {
        let record: RunRecord = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if record.format != RECORD_FORMAT {
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
        s.push_str(&format!("data:             {}\n", self.data));
        s.push_str(&format!("device:           {} {}\n", self.device, self.precision));
        s
    }
}

fn check_bpb(name: &str, v: f64) -> std::result::Result<(), String> {
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{name} = {v} is not a positive finite number"));
    }
    Ok(())
}

/// Turns the train program's measurements into the record: writes it to `AR_RESULT` (if
/// set), prints the summary block on stdout, and returns it.
pub fn finish(cache: &Cache, stats: TrainStats) -> Result<RunRecord> {
    let record = build_record(cache, stats)?;
    if let Some(path) = std::env::var_os(RESULT_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let json = serde_json::to_string_pretty(&record).expect("record serialises");
        write_atomic(&path, json.as_bytes())
            .map_err(|e| Error::Record { path: path.clone(), reason: e.to_string() })?;
    }
    print!("{}", record.summary_block());
    Ok(record)
}

/// The record without side effects.
pub fn build_record(cache: &Cache, stats: TrainStats) -> Result<RunRecord> {
    check_bpb("val_bpb", stats.val_bpb).map_err(Error::Eval)?;
    if let Some(t) = stats.test_bpb {
        check_bpb("test_bpb", t).map_err(Error::Eval)?;
    }
    let m = &cache.manifest;
    let tokenizer_sha256 = m.artifacts.get(&m.tokenizer.ranks).map(|a| a.sha256.clone()).unwrap_or_default();
    Ok(RunRecord {
        format: RECORD_FORMAT,
        val_bpb: stats.val_bpb,
        test_bpb: stats.test_bpb,
        training_seconds: stats.training_seconds,
        total_seconds: stats.total_seconds,
        compile_seconds: stats.compile_seconds,
        eval_seconds: stats.eval_seconds,
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
        device: stats.device,
        precision: stats.precision,
        hardware: Hardware::detect(stats.gpu),
        seed: stats.seed,
        train_sha256: stats.train_sha256,
    })
}
