//! Agent drivers: who proposes the next change to the train file.
//!
//! `ar loop` calls an agent once per experiment with a compact digest built from the
//! journal (never chat memory). The agent edits `train/src/main.rs` in the working tree and
//! says what it tried; `ar` then guards, commits, builds, runs and decides.
//!
//! - `cmd:"…"` — any agent CLI (`claude -p`, `codex exec`, a script), prompt on stdin;
//! - `openai:URL` — a minimal built-in coding agent over an OpenAI-compatible endpoint;
//! - `evolve` — built in, no LLM: proposes values for the HYPERPARAMETERS consts.

pub mod broker;
pub mod command;
pub mod confine;
pub mod evolve;
pub mod hyperparams;
pub mod openai;
pub mod prompt;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};

/// The one file an agent may change, relative to the repository root.
pub use crate::git::TRAIN_FILE;

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

/// How the built-in agent checks that its edit compiles before `ar` spends a run on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckMode {
    /// `cargo build --release -p train --bin train` (via `exec::build::build`): the binary the
    /// supervisor builds next, so the check costs nothing extra when it passes.
    #[default]
    Build,
    /// `cargo check --release -p train --bin train`: no binary is written.
    Check,
    /// No check: a broken edit becomes a `build` crash of the experiment.
    Off,
}

/// Options for every driver, validated once by the CLI (`ar loop` flags map 1:1 onto them).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `--model`: the model name sent to an OpenAI-compatible endpoint (required there).
    pub model: Option<String>,
    /// `--api-key-env`: the environment variable holding the API key. Unset or empty is
    /// fine for local servers; the key itself is never printed or logged.
    pub api_key_env: String,
    /// `--agent-timeout`: per attempt of a `cmd:` agent (the whole process group is
    /// killed after it); per HTTP request for `openai:`.
    pub timeout: Duration,
    /// `--agent-retries`: further attempts after a crash, timeout, no change, unappliable
    /// diff or build error; then the turn is `Failed` and the loop goes on.
    pub retries: u32,
    /// Further attempts of one HTTP request after a transport error, 429 or 5xx.
    pub http_retries: u32,
    /// First backoff between HTTP attempts, doubled each time.
    pub backoff: Duration,
    /// `--agent-check`: how `openai:` checks that its edit compiles.
    pub check: CheckMode,
    /// Cargo features of the train crate, for the build check (e.g. `cuda`).
    pub features: Vec<String>,
    /// Sampling temperature sent to the endpoint (None: the server's default).
    pub temperature: Option<f64>,
    /// `--seed`: evolve's seed; with the same journal it makes the same proposal.
    pub seed: u64,
    /// The profile's MAX_SEQ_LEN, which the batch sizes must respect (None: the active
    /// profile, `AR_PROFILE` or the default).
    pub max_seq_len: Option<usize>,
    /// Where to keep each turn's transcript (prompt, output, conversation), if anywhere.
    pub log_dir: Option<PathBuf>,
    /// Echo a `cmd:` agent's output to stderr as it runs.
    pub echo: bool,
    /// The sandbox a `cmd:` agent runs in (None: unconfined, only with --agent-unconfined).
    pub confine: Option<confine::AgentConfinement>,
    /// A declared command workload: a `cmd:` agent then edits its editable files and is
    /// told its metric (None: this repository's GPT and its train file).
    pub workload: Option<crate::workload::Workload>,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            model: None,
            api_key_env: "OPENAI_API_KEY".to_string(),
            timeout: Duration::from_secs(30 * 60),
            retries: 2,
            http_retries: 3,
            backoff: Duration::from_secs(2),
            check: CheckMode::Build,
            features: Vec::new(),
            temperature: None,
            seed: 0,
            max_seq_len: None,
            log_dir: None,
            echo: false,
            confine: None,
            workload: None,
        }
    }
}

/// Builds a driver from its `--agent` spec:
///
/// - `evolve` — the built-in hyperparameter search (no LLM);
/// - `cmd:<shell command>` — e.g. `cmd:claude -p`, `cmd:"codex exec"`, `cmd:./my_agent.sh`;
///   one pair of surrounding quotes is removed;
/// - `openai:<base URL>` — e.g. `openai:http://127.0.0.1:8080/v1` (llama.cpp, vLLM, Ollama
///   at `/v1`) or `openai:https://api.openai.com/v1`; `/chat/completions` is appended unless
///   the URL already ends with it. Needs `--model`.
pub fn parse_agent(spec: &str, opts: &AgentOptions) -> Result<Box<dyn Agent>> {
    let spec = spec.trim();
    if spec == "evolve" {
        return Ok(Box::new(evolve::Evolve::new(opts)?));
    }
    if spec == "random" {
        return Ok(Box::new(evolve::Evolve::random(opts)?));
    }
    if let Some(command) = spec.strip_prefix("cmd:") {
        let command = unquote(command.trim());
        if command.is_empty() {
            bail!("--agent cmd: needs a command, e.g. --agent 'cmd:claude -p'");
        }
        return Ok(Box::new(command::CommandAgent::new(command, opts)));
    }
    if let Some(url) = spec.strip_prefix("openai:") {
        return Ok(Box::new(openai::OpenAiAgent::from_options(url.trim(), opts)?));
    }
    bail!(
        "unknown agent {spec:?}: use `evolve`, `cmd:<command>` (e.g. 'cmd:claude -p') or \
         `openai:<URL>` with --model (e.g. openai:http://127.0.0.1:8080/v1 --model qwen)"
    )
}

/// `"x"` or `'x'` → `x`; anything else unchanged.
fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q))
            && !inner.is_empty()
        {
            return inner;
        }
    }
    s
}

/// Reads the train file of `repo` as text.
fn read_train(repo: &Path) -> Result<String> {
    use anyhow::Context;
    let path = repo.join(TRAIN_FILE);
    std::fs::read_to_string(&path).with_context(|| {
        format!("cannot read {}: the repository must contain the train file", path.display())
    })
}

/// Writes the train file of `repo` (used to apply an edit or to restore the original).
fn write_train(repo: &Path, text: &str) -> Result<()> {
    use anyhow::Context;
    let path = repo.join(TRAIN_FILE);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Appends a transcript section to `<log_dir>/experiment-<n>.log`; logging never fails a turn.
fn log_transcript(dir: Option<&Path>, number: u64, title: &str, body: &str) {
    use std::io::Write;
    let Some(dir) = dir else { return };
    let _ = std::fs::create_dir_all(dir);
    let path = dir.join(format!("experiment-{number:04}.log"));
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "===== {title} =====\n{body}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_agent_specs() {
        let opts = AgentOptions { model: Some("m".into()), max_seq_len: Some(256), ..Default::default() };
        assert_eq!(parse_agent("evolve", &opts).unwrap().name(), "evolve");
        assert_eq!(parse_agent("cmd:claude -p", &opts).unwrap().name(), "cmd:claude -p");
        assert_eq!(parse_agent("cmd:\"codex exec\"", &opts).unwrap().name(), "cmd:codex exec");
        assert_eq!(
            parse_agent("openai:http://127.0.0.1:8080/v1/", &opts).unwrap().name(),
            "openai:http://127.0.0.1:8080/v1 (m)"
        );
        let no_model = AgentOptions::default();
        let e = parse_agent("openai:http://x/v1", &no_model).err().unwrap().to_string();
        assert!(e.contains("--model"), "{e}");
        assert!(parse_agent("cmd:", &opts).is_err());
        assert!(parse_agent("claude", &opts).err().unwrap().to_string().contains("cmd:"));
    }
}
