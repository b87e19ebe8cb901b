//! Agent drivers: who proposes the next change to the train file.
//!
//! `ar loop` calls an agent once per experiment with a compact digest built from the
//! journal (never chat memory). The agent edits `train/src/main.rs` in the working tree and
//! says what it tried; `ar` then guards, commits, builds, runs and decides.
//!
//! - `cmd:"…"` — any agent CLI (`claude -p`, `codex exec`, a script), prompt on stdin;
//! - `openai:URL` — a minimal built-in coding agent over an OpenAI-compatible endpoint;
//! - `evolve` — built in, no LLM: proposes values for the HYPERPARAMETERS consts.

use std::path::Path;

use anyhow::Result;

/// Everything an agent sees for one turn.
pub struct Turn<'a> {
    /// Repository root; the agent may edit only `train/src/main.rs` in it.
    pub repo: &'a Path,
    /// program.md: the human's instructions.
    pub program: &'a str,
    /// The current train file.
    pub train_file: &'a str,
    /// The compact digest of the session so far (best, recent results, what was tried).
    pub digest: &'a str,
    /// The journal's events, for agents that learn from history (evolve).
    pub events: &'a [crate::journal::Event],
    /// Experiment number of this turn (1-based).
    pub number: u64,
}

/// What the agent did with its turn.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The train file was changed in the working tree.
    Changed { description: String, hypothesis: Option<String> },
    /// The agent ran but left the train file as it was.
    NoChange { detail: String },
    /// The agent failed (crashed, timed out, produced garbage) after its retries.
    Failed { detail: String },
}

/// An agent driver.
pub trait Agent {
    /// Short name for the journal, e.g. `evolve` or `cmd:claude -p`.
    fn name(&self) -> String;
    /// Makes one change to the train file (or reports why not).
    fn propose(&mut self, turn: &Turn) -> Result<Outcome>;
}
