//! The workload: what the agent may edit, how a change is built and run, and where the
//! number that decides comes from.
//!
//! Two kinds:
//! - [`Workload::Gpt`], this repository's GPT: the agent edits `train/src/main.rs`, `ar`
//!   builds the train crate and scores the model itself (`exec::job`, the trusted scorer).
//!   It is what `ar` does with no `autoresearch.toml` in a repository that has the train
//!   crate, exactly as before workloads existed.
//! - [`Workload::Command`], any repository with a metric, declared in `autoresearch.toml`
//!   ([`toml`]): editable files (paths or globs), an optional build command, a run command,
//!   where the metric is read (`METRIC name=value` lines, the original's `---` summary
//!   block, or a JSON file; [`metric`]), its direction, a budget passed to the run, a
//!   timeout, an optional checks command that must pass before a keep, the variable the
//!   seed travels in, and what nobody may read. `exec::command` runs it.
//!
//! The difference that matters for trust: a command workload's metric is computed by the
//! program the agent edits. `ar` parses it (never shows it raw) and sandboxes the run, but
//! the number is the program's claim, so reports label its source
//! ([`Workload::metric_source_label`]).
//!
//! Patterns ([`Matcher`]) are matched against repository paths as git prints them:
//! `*` and `?` stay within one directory, `**` crosses directories, a trailing `/` means
//! everything beneath. Held-out entries may also be absolute or start with `~/`, and are
//! expanded on the filesystem when a sandbox is built ([`expand`]).

pub mod metric;
pub mod presets;
pub mod toml;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::git::TRAIN_FILE;
use crate::stats::Direction;

/// The workload file, at the repository root.
pub const FILE: &str = "autoresearch.toml";

/// The metric of this repository's GPT.
pub const GPT_METRIC: &str = "val_bpb";

/// What `ar` optimises in a repository.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// This repository's train crate, scored by `ar`'s trusted scorer.
    Gpt,
    /// A declared build/run/metric (`autoresearch.toml`).
    Command(CommandSpec),
}

/// A command workload, as `autoresearch.toml` declares it (validated).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// The file it was read from.
    pub file: PathBuf,
    /// sha256 of the file's bytes: journal it, so a session notices a changed workload.
    pub sha256: String,
    pub name: Option<String>,
    /// Patterns of the files the agent may edit.
    pub editable: Vec<String>,
    /// Patterns nobody may read: not the agent, not the build, run or checks.
    pub held_out: Vec<String>,
    /// Patterns the agent may not read but the run may (its own evaluation reads them).
    pub agent_hidden: Vec<String>,
    pub build: Option<Step>,
    pub run: RunStep,
    pub metric: MetricSpec,
    /// Must pass before a keep.
    pub checks: Option<Step>,
}

/// A command with its hard limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Run with `sh -c` in the repository.
    pub command: String,
    pub timeout: Duration,
}

/// The measurement command.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStep {
    pub command: String,
    pub timeout: Duration,
    /// Passed to the run as `AR_BUDGET` (informational).
    pub budget: Option<String>,
    /// The variable the seed index is passed in.
    pub seed_env: String,
    /// Extra environment (on top of `ar`'s allowlist).
    pub env: Vec<(String, String)>,
    /// Where the run may write: "." (the repository but .git and .autoresearch), paths
    /// relative to the repository, `~/…` or absolute paths.
    pub writable: Vec<String>,
}

/// What is measured and which way is better.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub name: String,
    pub direction: Direction,
    pub source: MetricSource,
}

/// Where the metric is read.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricSource {
    /// The last `METRIC <name>=<value>` line of the output.
    Stdout,
    /// `<name>: <value>` in the last `---` block of the output (the original's summary).
    Summary,
    /// A JSON file the run writes (relative to the repository) and the key of the number.
    Json { file: String, key: String },
}

impl MetricSource {
    pub fn name(&self) -> &'static str {
        match self {
            MetricSource::Stdout => "stdout",
            MetricSource::Summary => "summary",
            MetricSource::Json { .. } => "json",
        }
    }
}

/// Which changed paths a workload accepts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scope {
    /// Changed paths the agent may change (commit these: `git add -A -- <path>`).
    pub editable: Vec<String>,
    /// Changed paths it may not: the turn is rejected.
    pub offending: Vec<String>,
}

/// Reads the workload of `repo`: its `autoresearch.toml`, or this repository's GPT when
/// there is no such file but the train crate is there.
pub fn load(repo: &Path) -> Result<Workload> {
    let path = repo.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Workload::Command(toml::parse(&path, &text)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if is_gpt_repo(repo) {
                Ok(Workload::Gpt)
            } else {
                bail!(
                    "{} has no {FILE} and is not the autoresearch-rs repository: run `ar init` there to declare \
                     what the agent may edit, how to build and run it and where the metric is read (or \
                     `ar init --preset autoresearch-py` in a clone of karpathy/autoresearch)",
                    repo.display()
                )
            }
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The repository a session runs in, from `start` upwards: the nearest directory holding
/// an `autoresearch.toml` or this repository's train crate.
pub fn find_repo(start: &Path) -> Result<PathBuf> {
    let start =
        std::fs::canonicalize(start).with_context(|| format!("cannot resolve {}", start.display()))?;
    for dir in start.ancestors() {
        if dir.join(FILE).is_file() || (dir.join("Cargo.toml").is_file() && dir.join(TRAIN_FILE).is_file()) {
            return Ok(dir.to_path_buf());
        }
    }
    bail!(
        "{} is not inside a repository with a workload (no {FILE} above it, and not the autoresearch-rs \
         checkout): run `ar init` at the repository's root to declare one, or pass --repo",
        start.display()
    )
}

/// This repository: the train crate beside the fixed prepare crate.
pub fn is_gpt_repo(repo: &Path) -> bool {
    repo.join(TRAIN_FILE).is_file()
        && repo.join("train/Cargo.toml").is_file()
        && repo.join("prepare/Cargo.toml").is_file()
}

impl Workload {
    /// A short name for reports.
    pub fn name(&self) -> String {
        match self {
            Workload::Gpt => "gpt".into(),
            Workload::Command(c) => c.name.clone().unwrap_or_else(|| format!("command ({})", c.metric.name)),
        }
    }

    /// Patterns of the files the agent may edit.
    pub fn editable(&self) -> Vec<String> {
        match self {
            Workload::Gpt => vec![TRAIN_FILE.to_string()],
            Workload::Command(c) => c.editable.clone(),
        }
    }

    /// Whether the agent may change `path` (a repository path as git prints it).
    pub fn is_editable(&self, path: &str) -> bool {
        match self {
            Workload::Gpt => path == TRAIN_FILE,
            Workload::Command(c) => c.editable.iter().any(|p| Matcher::new(p).is_ok_and(|m| m.matches(path))),
        }
    }

    /// Splits changed paths into what may change and what may not. The JSON metric file is
    /// neither: `ar` itself empties it before every run, so its changes are nobody's edit.
    pub fn scope(&self, changed: &[String]) -> Scope {
        let (editable, offending) =
            changed.iter().filter(|p| !self.is_metric_file(p)).cloned().partition(|p| self.is_editable(p));
        Scope { editable, offending }
    }

    /// The tracked files to hash-pin: every one the agent may not edit (and not the JSON
    /// metric file, which every run rewrites).
    pub fn pinned(&self, tracked: &[String]) -> Vec<String> {
        tracked.iter().filter(|p| !self.is_editable(p) && !self.is_metric_file(p)).cloned().collect()
    }

    /// Whether `path` is the file a `source = "json"` metric is read from.
    pub fn is_metric_file(&self, path: &str) -> bool {
        match self {
            Workload::Command(CommandSpec {
                metric: MetricSpec { source: MetricSource::Json { file, .. }, .. },
                ..
            }) => file.trim_start_matches("./") == path,
            _ => false,
        }
    }

    pub fn direction(&self) -> Direction {
        match self {
            Workload::Gpt => Direction::Minimize,
            Workload::Command(c) => c.metric.direction,
        }
    }

    pub fn metric_name(&self) -> &str {
        match self {
            Workload::Gpt => GPT_METRIC,
            Workload::Command(c) => &c.metric.name,
        }
    }

    /// Where the deciding number comes from, for reports.
    pub fn metric_source_label(&self) -> &'static str {
        match self {
            Workload::Gpt => "trusted scorer",
            Workload::Command(_) => "program output (untrusted)",
        }
    }

    /// What the agent's sandbox must hide, beyond `.autoresearch/` (which it always hides):
    /// the held-out and agent-hidden patterns, expanded. Empty for the GPT, whose data the
    /// agent confinement hides as the whole cache.
    pub fn held_out(&self, repo: &Path) -> Vec<PathBuf> {
        match self {
            Workload::Gpt => Vec::new(),
            Workload::Command(c) => expand_all(repo, c.held_out.iter().chain(&c.agent_hidden)),
        }
    }

    /// The environment variable the seed index travels in.
    pub fn seed_env(&self) -> &str {
        match self {
            Workload::Gpt => prepare::SEED_OFFSET_ENV,
            Workload::Command(c) => &c.run.seed_env,
        }
    }
}

impl Workload {
    /// What a session journals of this workload (None for the GPT, whose journals predate
    /// workloads and stay as they were).
    pub fn settings(&self, repo: &Path) -> Option<crate::journal::WorkloadSettings> {
        let Workload::Command(c) = self else { return None };
        let file = c.file.strip_prefix(repo).unwrap_or(&c.file).display().to_string();
        Some(crate::journal::WorkloadSettings {
            kind: "command".into(),
            name: self.name(),
            metric: c.metric.name.clone(),
            direction: direction_name(c.metric.direction).into(),
            source: self.metric_source_label().into(),
            file,
            sha256: c.sha256.clone(),
        })
    }
}

/// `minimize` or `maximize`, as `autoresearch.toml` spells it.
pub fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Minimize => "minimize",
        Direction::Maximize => "maximize",
    }
}

impl CommandSpec {
    /// What the build, run and checks may not read (the held-out patterns, expanded).
    pub fn run_hidden(&self, repo: &Path) -> Vec<PathBuf> {
        expand_all(repo, self.held_out.iter())
    }
}

// ---------------------------------------------------------------------------------------
// Patterns

/// An editable pattern, matched against repository paths.
#[derive(Debug, Clone)]
pub struct Matcher {
    pattern: glob::Pattern,
}

const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Matcher {
    pub fn new(pattern: &str) -> std::result::Result<Matcher, glob::PatternError> {
        // A trailing slash names a directory: everything beneath it.
        let full = match pattern.strip_suffix('/') {
            Some(dir) => format!("{dir}/**"),
            None => pattern.to_string(),
        };
        Ok(Matcher { pattern: glob::Pattern::new(full.trim_start_matches("./"))? })
    }

    pub fn matches(&self, path: &str) -> bool {
        self.pattern.matches_with(path, MATCH)
    }
}

/// `~/x` → `$HOME/x`; relative → beneath `repo`; absolute as is.
pub fn resolve(repo: &Path, pattern: &str) -> PathBuf {
    if let Some(rest) = pattern.strip_prefix("~/") {
        return std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(rest);
    }
    let p = Path::new(pattern.trim_start_matches("./"));
    if p.is_absolute() { p.to_path_buf() } else { repo.join(p) }
}

/// The paths a held-out pattern names now: the path itself when it has no glob
/// characters (even if it does not exist yet), else what the glob finds.
pub fn expand(repo: &Path, pattern: &str) -> Vec<PathBuf> {
    // `dir/`, `dir/**` and `dir` all name the directory: one rule, and files added to it
    // later are hidden too.
    let trimmed = pattern.strip_suffix('/').unwrap_or(pattern);
    let trimmed = match trimmed.strip_suffix("/**") {
        Some(dir) if !dir.contains(['*', '?', '[']) => dir,
        _ => trimmed,
    };
    let full = resolve(repo, trimmed);
    if !trimmed.contains(['*', '?', '[']) {
        return vec![full];
    }
    let Some(text) = full.to_str() else { return Vec::new() };
    match glob::glob_with(text, MATCH) {
        Ok(paths) => paths.filter_map(std::result::Result::ok).collect(),
        Err(_) => Vec::new(),
    }
}

/// Every pattern expanded, without paths already beneath another.
fn expand_all<'a>(repo: &Path, patterns: impl Iterator<Item = &'a String>) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = patterns.flat_map(|p| expand(repo, p)).collect();
    all.sort();
    all.dedup();
    let mut out: Vec<PathBuf> = Vec::new();
    for p in all {
        if !out.iter().any(|kept| p.starts_with(kept)) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_patterns_match_like_git_paths() {
        let m = |p: &str, path: &str| Matcher::new(p).unwrap().matches(path);
        assert!(m("train.py", "train.py"));
        assert!(!m("train.py", "sub/train.py"));
        assert!(m("src/*.py", "src/a.py") && !m("src/*.py", "src/x/a.py"));
        assert!(m("src/**/*.py", "src/x/y/a.py") && m("src/**/*.py", "src/a.py"));
        assert!(m("src/", "src/deep/file.rs") && !m("src/", "srcx/a"));
        assert!(m("./bench.js", "bench.js"));
    }

    #[test]
    fn test_held_out_patterns_expand_to_the_fewest_paths() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["data/test/a/1.csv", "data/test/2.csv", "data/train.csv", "x/val.bin", "y/val.bin"] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "").unwrap();
        }
        let r = dir.path();
        assert_eq!(expand(r, "data/test/**"), [r.join("data/test")]);
        assert_eq!(expand(r, "data/test/"), [r.join("data/test")]);
        assert_eq!(
            expand(r, "missing.bin"),
            [r.join("missing.bin")],
            "a literal path is hidden even before it exists"
        );
        let all = expand_all(r, ["*/val.bin", "data/test/**", "data/test/a/*.csv"].map(String::from).iter());
        assert_eq!(all, [r.join("data/test"), r.join("x/val.bin"), r.join("y/val.bin")]);
    }

    #[test]
    fn test_gpt_is_the_train_file_and_the_trusted_scorer() {
        let w = Workload::Gpt;
        assert_eq!(w.editable(), vec![TRAIN_FILE.to_string()]);
        assert!(w.is_editable(TRAIN_FILE) && !w.is_editable("prepare/src/lib.rs"));
        assert_eq!(w.metric_name(), "val_bpb");
        assert_eq!(w.metric_source_label(), "trusted scorer");
        assert_eq!(w.direction(), Direction::Minimize);
        let s = w.scope(&["prepare/src/eval.rs".into(), TRAIN_FILE.into()]);
        assert_eq!(s.editable, vec![TRAIN_FILE.to_string()]);
        assert_eq!(s.offending, vec!["prepare/src/eval.rs".to_string()]);
    }

    #[test]
    fn test_this_repository_is_the_gpt_workload() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        if !repo.join(FILE).exists() {
            assert_eq!(load(repo).unwrap(), Workload::Gpt);
        }
    }
}
