//! FILE 1 of autoresearch-rs — `prepare`: fixed; never edited by the agent.
//!
//! Everything an experiment is measured against lives here, so the train program (the one
//! file the agent edits) cannot move the goalposts:
//! - the profiles: fixed constants (context length, time budget, eval size, vocabulary);
//! - the data: climbmix or TinyStories from Hugging Face, a local corpus, or a synthetic
//!   one, as train/val/test parquet shards;
//! - the tokenizer: a byte-level BPE trained with rustbpe's algorithm, stored as a plain
//!   ranks file, encoded with tiktoken-rs;
//! - the loader: BOS-aligned best-fit packing, as the original's `make_dataloader`;
//! - the budget: time, tokens or FLOPs, and where a run stands ([`Budget`]);
//! - the metric: the scorer `ar` runs against a served model ([`scorer`]), with probes for
//!   leaks, and [`evaluate_bpb`], the in-process reference it is tested against;
//! - the door between them: the checkpoint the train program writes ([`checkpoint`]) and
//!   the logits it serves from it ([`serve`]);
//! - the training statistics ([`report::finish_training`]) and the result record `ar`
//!   builds ([`report::build_record`]);
//! - the manifest: sha256 of every artifact, checked at load.
//!
//! The train program's view: `Cache::open_active()` → `Tokenizer::load` → `Loader::new` →
//! train until `Budget::spent` → `report::finish_training` (checkpoint + statistics). Then
//! `ar` starts it again with `AR_SERVE` set: `serve::request()` → load the checkpoint →
//! `Request::serve(logits)`.

pub mod bpe;
pub mod budget;
pub mod cache;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod eval;
pub mod hardware;
pub mod loader;
pub mod manifest;
pub mod pipeline;
pub mod profile;
pub mod progress;
pub mod report;
pub mod scorer;
pub mod serve;
pub mod tokenizer;

/// Environment variable through which `ar` varies the seed of repeated measurements.
pub const SEED_OFFSET_ENV: &str = "AR_SEED_OFFSET";

/// The seed a run should use: the train file's `default`, plus the offset `ar` sets when
/// it measures the same commit again (a second baseline, a confirmation, a re-measure), so
/// repeated runs sample seed noise instead of repeating one deterministic run.
pub fn seed(default: u64) -> u64 {
    default.wrapping_add(seed_offset())
}

/// The offset `ar` set for this measurement (0 outside `ar` and for the first measurement).
/// The training loader starts its data stream at a point chosen by it, too.
pub fn seed_offset() -> u64 {
    std::env::var(SEED_OFFSET_ENV).ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

pub use budget::{Budget, Spent};
pub use cache::Cache;
pub use checkpoint::Checkpoint;
pub use error::{Error, Result};
pub use eval::evaluate_bpb;
pub use loader::{Batch, Loader};
pub use manifest::Split;
pub use profile::Profile;
pub use report::{RunRecord, TrainStats, finish_training};
pub use tokenizer::Tokenizer;
