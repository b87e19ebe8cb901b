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
//! - the metric: [`evaluate_bpb`], which owns the cross-entropy;
//! - the result record and the `---` summary block, written by [`report::finish`];
//! - the manifest: sha256 of every artifact, checked at load.
//!
//! The train program's view: `Cache::open_active()` → `Tokenizer::load` → `Loader::new` →
//! train → `evaluate_bpb` → `report::finish`.

pub mod bpe;
pub mod cache;
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
pub mod tokenizer;

pub use cache::Cache;
pub use error::{Error, Result};
pub use eval::evaluate_bpb;
pub use loader::{Batch, Loader};
pub use manifest::Split;
pub use profile::Profile;
pub use report::{RunRecord, TrainStats};
pub use tokenizer::Tokenizer;
