//! Starting points for `ar init`: what a repository's language suggests, and the preset for
//! a clone of the original PyTorch autoresearch.
//!
//! Detection only proposes defaults; the user confirms or changes every one (or passes
//! flags), and the result goes through the same strict parser as a hand-written file.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};

use super::{CommandSpec, MetricSource, MetricSpec, RunStep, Step};
use crate::stats::Direction;

/// The presets `ar init --preset` knows.
pub const PRESETS: &[&str] = &["autoresearch-py"];

/// A workload being drafted: every field optional until the user has answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// What was detected ("Rust (Cargo.toml)"), for the first message.
    pub detected: String,
    pub name: Option<String>,
    pub editable: Vec<String>,
    pub held_out: Vec<String>,
    pub agent_hidden: Vec<String>,
    pub build: Option<String>,
    pub run: Option<String>,
    pub timeout: Duration,
    pub budget: Option<String>,
    pub seed_env: String,
    pub env: Vec<(String, String)>,
    pub writable: Vec<String>,
    pub metric: Option<String>,
    pub direction: Direction,
    pub source: MetricSource,
    pub checks: Option<String>,
    /// A checks command to suggest (not set unless the user accepts it).
    pub suggested_checks: Option<String>,
    /// Things the user must know (printed after the file is written).
    pub notes: Vec<String>,
}

impl Default for Draft {
    fn default() -> Draft {
        Draft {
            detected: "nothing recognised".into(),
            name: None,
            editable: Vec::new(),
            held_out: Vec::new(),
            agent_hidden: Vec::new(),
            build: None,
            run: None,
            timeout: super::toml::DEFAULT_TIMEOUT,
            budget: None,
            seed_env: super::toml::DEFAULT_SEED_ENV.into(),
            env: Vec::new(),
            writable: vec![".".into()],
            metric: None,
            direction: Direction::Minimize,
            source: MetricSource::Stdout,
            checks: None,
            suggested_checks: None,
            notes: Vec::new(),
        }
    }
}

impl Draft {
    /// The spec, once the required answers are there (the error names the flag to pass).
    pub fn to_spec(&self, file: &Path) -> Result<CommandSpec> {
        if self.editable.is_empty() {
            bail!("no editable files: pass --editable PATH_OR_GLOB (e.g. --editable train.py)");
        }
        let Some(run) = &self.run else {
            bail!("no run command: pass --run COMMAND (e.g. --run 'python3 bench.py')")
        };
        let Some(metric) = &self.metric else {
            bail!("no metric name: pass --metric NAME (e.g. --metric seconds)")
        };
        let step = |c: &Option<String>| {
            c.as_ref().map(|command| Step { command: command.clone(), timeout: self.timeout })
        };
        Ok(CommandSpec {
            file: file.to_path_buf(),
            sha256: String::new(),
            name: self.name.clone(),
            editable: self.editable.clone(),
            held_out: self.held_out.clone(),
            agent_hidden: self.agent_hidden.clone(),
            build: step(&self.build),
            run: RunStep {
                command: run.clone(),
                timeout: self.timeout,
                budget: self.budget.clone(),
                seed_env: self.seed_env.clone(),
                env: self.env.clone(),
                writable: self.writable.clone(),
            },
            metric: MetricSpec {
                name: metric.clone(),
                direction: self.direction,
                source: self.source.clone(),
            },
            checks: step(&self.checks),
        })
    }
}

/// Defaults from what the repository holds.
pub fn detect(repo: &Path) -> Draft {
    let has = |p: &str| repo.join(p).exists();
    let mut d = Draft::default();
    if has("Cargo.toml") {
        d.detected = "Rust (Cargo.toml)".into();
        d.editable = vec![
            if has("src/main.rs") {
                "src/main.rs"
            } else if has("src/lib.rs") {
                "src/lib.rs"
            } else {
                "src/**/*.rs"
            }
            .into(),
        ];
        // No network in the sandbox: dependencies must be fetched before, and `target/`
        // must exist (a run cannot create top-level entries).
        d.build = Some("cargo build --release --offline --quiet".into());
        d.run = Some("cargo run --release --offline --quiet".into());
        d.suggested_checks = Some("cargo test --release --offline --quiet".into());
    } else if has("train.py") && has("prepare.py") {
        d.detected =
            "Python with train.py and prepare.py (the original autoresearch? try --preset autoresearch-py)"
                .into();
        d.editable = vec!["train.py".into()];
        d.run = Some(if has("uv.lock") { "uv run train.py" } else { "python3 train.py" }.into());
    } else if has("pyproject.toml")
        || has("setup.py")
        || has("requirements.txt")
        || has("main.py")
        || has("bench.py")
    {
        d.detected = "Python".into();
        let main = ["bench.py", "main.py", "train.py"].into_iter().find(|f| has(f));
        d.editable = vec![main.unwrap_or("*.py").into()];
        let runner = if has("uv.lock") { "uv run" } else { "python3" };
        d.run = main.map(|m| format!("{runner} {m}"));
        if has("tests") {
            d.suggested_checks = Some(format!("{runner} -m pytest -q"));
        }
    } else if has("package.json") {
        d.detected = "JavaScript (package.json)".into();
        d.editable = vec![if has("src") { "src/**/*.js" } else { "*.js" }.into()];
        d.run = Some("npm run --silent bench".into());
        d.suggested_checks = Some("npm test --silent".into());
    } else if has("go.mod") {
        d.detected = "Go (go.mod)".into();
        d.editable = vec!["*.go".into()];
        d.build = Some("go build ./...".into());
        d.run = Some("go run .".into());
        d.suggested_checks = Some("go test ./...".into());
    }
    d
}

/// The original's cache directory (prepare.py: `~/.cache/autoresearch`) and its data.
const ORIGINAL_DATA: &str = "~/.cache/autoresearch/data";
/// The original's pinned validation shard index (prepare.py: `VAL_SHARD = MAX_SHARD = 6542`).
const ORIGINAL_VAL_SHARD: u64 = 6542;

/// `--preset autoresearch-py`: a clone of github.com/karpathy/autoresearch.
///
/// - train.py is editable; prepare.py (and everything else tracked) is pinned;
/// - the run is `uv run train.py`, offline and without syncing (the sandbox has no
///   network: run `uv sync` and one `uv run train.py` yourself first, which also fetches
///   the flash-attention kernel into the Hugging Face cache);
/// - val_bpb (minimize) is read from the summary block train.py prints (`---`,
///   `val_bpb:          0.997900`);
/// - the validation shard is hidden from the agent. Not from the run: the original
///   evaluates inside train.py (prepare.evaluate_bpb reads the shard in-process), so the
///   score is the program's own (labelled untrusted), unlike this repository's GPT;
/// - the seed index is passed as AR_SEED. The original seeds with a constant
///   (`torch.manual_seed(42)`): until train.py reads AR_SEED, every measurement of a commit
///   starts from the same initial weights (the data order is fixed in any case), so
///   repeated runs differ only by GPU non-determinism, σ comes out too small and a keep
///   means "better from seed 42", not better in general.
pub fn autoresearch_py(repo: &Path) -> Result<Draft> {
    let missing: Vec<&str> =
        ["train.py", "prepare.py"].into_iter().filter(|f| !repo.join(f).is_file()).collect();
    if !missing.is_empty() {
        bail!(
            "--preset autoresearch-py expects a clone of github.com/karpathy/autoresearch, but {} has no {}: \
             run it in that clone (git clone https://github.com/karpathy/autoresearch)",
            repo.display(),
            missing.join(" or ")
        );
    }
    let prepare = std::fs::read_to_string(repo.join("prepare.py")).unwrap_or_default();
    let train = std::fs::read_to_string(repo.join("train.py")).unwrap_or_default();
    let val_shard = val_shard_of(&prepare).unwrap_or(ORIGINAL_VAL_SHARD);
    let mut d = Draft {
        detected: "the original autoresearch (train.py + prepare.py)".into(),
        name: Some("autoresearch-py".into()),
        editable: vec!["train.py".into()],
        agent_hidden: vec![format!("{ORIGINAL_DATA}/shard_{val_shard:05}.parquet")],
        run: Some("uv run train.py".into()),
        // The original stops training at 300 s and kills a run at 10 minutes.
        timeout: Duration::from_secs(600),
        budget: Some("300s".into()),
        env: vec![
            ("UV_NO_SYNC".into(), "1".into()),
            ("UV_OFFLINE".into(), "1".into()),
            ("HF_HUB_OFFLINE".into(), "1".into()),
        ],
        // uv's cache, the Hugging Face cache (the flash-attention kernel) and Triton's
        // kernel cache; inductor's goes to the run's TMPDIR. Nothing in the repository.
        writable: vec!["~/.cache/uv".into(), "~/.cache/huggingface".into(), "~/.triton".into()],
        metric: Some("val_bpb".into()),
        direction: Direction::Minimize,
        source: MetricSource::Summary,
        ..Draft::default()
    };
    d.notes.push(
        "Before `ar loop`: run `uv sync` and `uv run prepare.py` once, then one `uv run train.py` outside ar (the \
         sandbox has no network: the environment, the data and the flash-attention kernel must be in place)."
            .into(),
    );
    if !train.contains("AR_SEED") {
        d.notes.push(
            "train.py seeds with a constant (torch.manual_seed(42)), so every measurement of a commit starts from \
             the same weights and pairing is weaker: σ is underestimated and a keep means \"better from seed 42\". \
             Commit this change to train.py before the session (and tell the agent to keep it): \
             `seed = 42 + int(os.environ.get(\"AR_SEED\", \"0\"))`, then torch.manual_seed(seed) and \
             torch.cuda.manual_seed(seed)."
                .into(),
        );
    }
    Ok(d)
}

/// `VAL_SHARD = <n>` (or `MAX_SHARD = <n>` when VAL_SHARD is MAX_SHARD) in prepare.py.
fn val_shard_of(prepare: &str) -> Option<u64> {
    let value = |name: &str| {
        prepare.lines().find_map(|l| {
            let rest = l.trim_start().strip_prefix(name)?.trim_start().strip_prefix('=')?;
            Some(rest.split('#').next()?.trim().to_string())
        })
    };
    let val = value("VAL_SHARD")?;
    match val.parse() {
        Ok(n) => Some(n),
        Err(_) if val == "MAX_SHARD" => value("MAX_SHARD")?.parse().ok(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_the_val_shard_is_read_from_the_originals_prepare_py() {
        let original =
            "MAX_SHARD = 6542 # the last datashard is shard_06542.parquet\nVAL_SHARD = MAX_SHARD  # pinned\n";
        assert_eq!(val_shard_of(original), Some(6542));
        assert_eq!(val_shard_of("VAL_SHARD = 12\n"), Some(12));
        assert_eq!(val_shard_of("nothing\n"), None);
    }
}
