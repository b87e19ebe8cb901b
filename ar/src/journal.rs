//! The journal: `runs.jsonl`, one JSON event per line, appended and fsynced BEFORE the git
//! change it describes; and `results.tsv`, the original's five columns, byte-compatible
//! with its analysis notebook.
//!
//! Both live in `.autoresearch/<tag>/` (git-ignored). The journal is the single source of
//! truth: reports, `ar status` and resume are built from it alone. Because every event is
//! durable before the repository changes, a `kill -9` at any moment leaves either (a) an
//! experiment `started` but not `finished` — resume re-runs it or records it as
//! interrupted — or (b) a `decision` whose git effect may not have happened yet — resume
//! re-applies it (moving the branch to the decided best commit is idempotent).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use prepare::RunRecord;
use prepare::hardware::Hardware;
use serde::{Deserialize, Serialize};

/// Journal format version, in every `session` event.
pub const JOURNAL_FORMAT: u32 = 1;

/// What kind of run an experiment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// The unmodified starting point, run K times to estimate the noise σ.
    Baseline,
    /// An agent's change.
    Candidate,
    /// A further paired run of a candidate at the next seed index (the sequential rule asks
    /// for one while it is not yet sure); in older journals, the one confirmation re-run.
    Confirm,
    /// The incumbent measured at a seed index a candidate's pair needs (or, in journals
    /// from before paired decisions, a re-run of the incumbent to catch drift).
    Remeasure,
    /// End of session: the best and the base commit measured on fresh seeds.
    Verify,
}

/// How an experiment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Keep,
    Discard,
    Crash,
    Timeout,
    /// The change touched files outside the train file, or fixed files changed.
    Rejected,
    /// `ar` was killed during the run and the run was not repeated.
    Interrupted,
}

impl Status {
    /// The `status` column of results.tsv (the original knows keep, discard and crash).
    pub fn tsv(self) -> &'static str {
        match self {
            Status::Keep => "keep",
            Status::Discard => "discard",
            _ => "crash",
        }
    }
}

/// Why a run produced no usable result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CrashClass {
    Build,
    Timeout,
    Oom,
    Nan,
    Panic,
    Eval,
    NoResult,
    Rejected,
    Interrupted,
    /// A time-budgeted run outlived the budget plus the profile's start-up allowance.
    Overtime,
    /// A scorer probe failed: the model looks ahead, mixes rows, or changes while scored.
    Leak,
    /// Audited scoring: the committed log-probabilities are not the model's.
    Tampered,
    /// The run's statistics name another profile, budget or cache than the session's.
    Mismatch,
    /// A repeated measurement of one commit reported a seed it had already used.
    Seed,
    /// The job was lost (node failure, cancelled by the scheduler).
    Lost,
}

impl CrashClass {
    /// Whether the program's output helps explain the crash (shown fenced to the agent).
    pub fn shows_output(self) -> bool {
        !matches!(
            self,
            CrashClass::Rejected | CrashClass::Interrupted | CrashClass::Mismatch | CrashClass::Seed
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            CrashClass::Build => "build",
            CrashClass::Timeout => "timeout",
            CrashClass::Oom => "oom",
            CrashClass::Nan => "nan",
            CrashClass::Panic => "panic",
            CrashClass::Eval => "eval",
            CrashClass::NoResult => "no-result",
            CrashClass::Rejected => "rejected",
            CrashClass::Interrupted => "interrupted",
            CrashClass::Overtime => "overtime",
            CrashClass::Leak => "leak",
            CrashClass::Tampered => "tampered",
            CrashClass::Mismatch => "mismatch",
            CrashClass::Seed => "seed",
            CrashClass::Lost => "lost",
        }
    }
}

/// The keep rule in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleConfig {
    /// "paired" (sequential paired t-test with a stated false-keep rate), "strict" (the
    /// original: one run, any improvement), or "noise" (older journals: k·σ margin).
    pub kind: String,
    /// Older journals' margin rule.
    #[serde(default)]
    pub k: f64,
    #[serde(default)]
    pub min_delta: f64,
    pub baseline_runs: usize,
    #[serde(default)]
    pub confirm: bool,
    #[serde(default)]
    pub remeasure_every: usize,
    /// Paired rule: the false-keep rate over all looks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub alpha: f64,
    /// Paired rule: most pairs one candidate may spend.
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub max_pairs: usize,
    /// Paired rule: smallest improvement worth keeping (metric units).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_effect: f64,
}

/// The evidence behind a paired decision (see `stats::Evidence`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    pub pairs: usize,
    /// Mean of candidate − incumbent over the pairs (negative = better for val_bpb).
    pub delta: f64,
    pub se: Option<f64>,
    pub sigma_d: Option<f64>,
    pub dof: f64,
    /// One-sided confidence that the candidate is better.
    pub confidence: Option<f64>,
    /// What the rule needed at this look to keep.
    pub needed: Option<f64>,
    /// The seed indexes of the pairs.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// The noise class whose σ_d the decision used (`tuning`, `structural`, `code`; see
    /// `session::noise_class`); absent for the strict rule and in journals written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

/// What a session fixes when it is created, so no later call can change it: the budget,
/// the scoring variant, the sandbox, the hard timeout and the cache it scores on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSettings {
    /// e.g. `time:300s`, `tokens:2000000`.
    pub budget: String,
    /// `full` or `audited`.
    pub scoring: String,
    /// false only for a session created with `--allow-unconfined`.
    pub confined: bool,
    /// Hard limit per run, seconds.
    pub timeout_secs: f64,
    /// sha256 of the cache manifest the rows come from.
    pub manifest_sha256: String,
    /// Cargo features of the train crate.
    #[serde(default)]
    pub features: Vec<String>,
    /// The declared workload the session optimises (None: this repository's GPT, as in
    /// journals from before workloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadSettings>,
}

/// What a session fixes of a command workload: enough to label reports without the
/// `autoresearch.toml`, and its hash, so a resume notices a changed declaration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSettings {
    /// `command` (the only declared kind so far).
    pub kind: String,
    pub name: String,
    pub metric: String,
    /// `minimize` or `maximize`.
    pub direction: String,
    /// Where the deciding number comes from (`program output (untrusted)`).
    pub source: String,
    /// The declaration file, relative to the repository, and the sha256 of its bytes.
    pub file: String,
    pub sha256: String,
}

/// Seconds spent per phase of one experiment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub agent: f64,
    pub build: f64,
    pub train: f64,
    pub total: f64,
    /// Scoring (serving + the trusted scorer), part of `train` in older journals.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub score: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

/// The decision on one experiment and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub status: Status,
    /// Human-readable reason, e.g. "Δ −0.0042 beyond margin 0.0031 (2σ)".
    pub reason: String,
    pub val_bpb: Option<f64>,
    /// Best (incumbent) val_bpb before this decision.
    pub best_before: Option<f64>,
    /// val_bpb − best_before (negative = better).
    pub delta: Option<f64>,
    /// Noise estimate at decision time.
    pub sigma: Option<f64>,
    /// The margin a candidate had to beat: max(k·σ, min_delta).
    pub margin: Option<f64>,
    /// Best val_bpb and its commit after this decision.
    pub best_after: Option<f64>,
    pub best_commit: String,
    /// Paired rule: the evidence (pairs, Δ, its standard error, confidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceRecord>,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// A session started (or was resumed) on a branch.
    Session {
        format: u32,
        time: f64,
        tag: String,
        branch: String,
        /// The commit the session started from.
        base_commit: String,
        profile: String,
        profile_hash: String,
        hardware: Hardware,
        agent: String,
        budget_secs: f64,
        rule: RuleConfig,
        resumed: bool,
        /// What a session fixes when it is created (absent in journals written before).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        settings: Option<SessionSettings>,
    },
    /// An experiment began: written before anything is committed.
    Started {
        id: u64,
        time: f64,
        kind: RunKind,
        /// The branch head the change is made on.
        parent: String,
        description: String,
        hypothesis: Option<String>,
        /// sha256 of the diff against `parent` (empty for re-runs).
        diff_sha256: String,
        /// For confirm/remeasure runs: the experiment being re-run.
        rerun_of: Option<u64>,
        /// The seed index measured (the seed offset the program gets); runs of two commits
        /// at one index form a pair.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
    },
    /// The change was committed (the commit the run builds).
    Committed { id: u64, time: f64, commit: String },
    /// The run ended, with or without a result.
    Finished {
        id: u64,
        time: f64,
        crash: Option<CrashClass>,
        record: Option<RunRecord>,
        /// Sanitised tail of the program's output (crashes only), untrusted.
        excerpt: Option<String>,
        timings: Timings,
        /// The run directory (`runs/<name>`), fresh for every attempt.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<String>,
        /// Why it crashed, one line (never program output).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// Processes that outlived the run (`pid command`); they were killed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        leaked: Vec<String>,
        /// The sandbox in force for the training child.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sandbox: Option<crate::sandbox::Report>,
        /// The seed the program reported (also for crashed runs that got that far).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
    },
    /// The keep/discard decision; written before the branch moves.
    Decided { id: u64, time: f64, decision: Decision },
    /// An agent turn that produced no experiment (no change, gave up, error).
    Agent { time: f64, outcome: String, detail: String, seconds: f64 },
    /// A run was handed to a worker: written before the job starts (before `sbatch`), so a
    /// crash between the two neither loses nor duplicates the job — resume looks for it by
    /// its run directory and its job name.
    Launched {
        id: u64,
        time: f64,
        /// The run directory (`runs/<name>`).
        run: String,
        /// `local` or `slurm`.
        backend: String,
        /// The worker slot (local) or the deterministic job name (Slurm).
        worker: usize,
        job: String,
    },
    /// The loop stopped cleanly.
    Stopped { time: f64, reason: String },
    /// The end-of-session check: best against base on fresh seeds.
    Verified { time: f64, verification: Verification },
}

impl Event {
    /// The experiment id, for events that belong to one.
    pub fn id(&self) -> Option<u64> {
        match self {
            Event::Started { id, .. }
            | Event::Launched { id, .. }
            | Event::Committed { id, .. }
            | Event::Finished { id, .. }
            | Event::Decided { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// The session's real gain, measured on fresh seeds after the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub best_commit: String,
    pub base_commit: String,
    /// Seed indexes used (never used by any decision).
    pub seeds: Vec<u64>,
    /// Improvement the loop believed it had (base mean − best mean, decision seeds).
    pub believed: Option<f64>,
    /// Per split ("val", "test"): mean improvement (base − best, positive = better) and
    /// its two-sided interval.
    pub splits: Vec<VerifiedSplit>,
    /// The confidence level of the intervals.
    pub level: f64,
    /// σ of single baseline runs, to express the gain in its units.
    pub sigma_x: Option<f64>,
}

/// One split of a verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifiedSplit {
    pub split: String,
    pub pairs: usize,
    pub gain: f64,
    pub low: f64,
    pub high: f64,
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The journal of one session directory.
pub struct Journal {
    path: PathBuf,
    file: File,
    events: Vec<Event>,
}

impl Journal {
    /// `.autoresearch/<tag>/` under the repository.
    pub fn dir(repo: &Path, tag: &str) -> PathBuf {
        repo.join(".autoresearch").join(tag)
    }

    /// Opens (creating if needed) `runs.jsonl` in `dir` and reads every event.
    pub fn open(dir: &Path) -> Result<Journal> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("runs.jsonl");
        let events = read_events(&path)?;
        truncate_torn_tail(&path)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Journal { path, file, events })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Appends one event and fsyncs it before returning.
    pub fn append(&mut self, event: Event) -> Result<()> {
        let mut line = serde_json::to_string(&event).expect("events serialise");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        self.file.sync_data().with_context(|| format!("cannot fsync {}", self.path.display()))?;
        self.events.push(event);
        Ok(())
    }

    /// The next experiment id.
    pub fn next_id(&self) -> u64 {
        self.events.iter().filter_map(Event::id).max().map_or(1, |m| m + 1)
    }
}

/// Reads a journal, tolerating a torn last line (a kill during a write): it is dropped,
/// because its event was never acknowledged. A bad line elsewhere is an error.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut events = Vec::with_capacity(lines.len());
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(e) => events.push(e),
            Err(_) if i == last => break,
            Err(e) => bail!(
                "{} line {}: {e}; the journal is damaged (fix or move that line)",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(events)
}

/// Cuts a last line that has no newline (a write torn by a kill), so the next append
/// starts on a fresh line instead of gluing itself to the fragment.
fn truncate_torn_tail(path: &Path) -> Result<()> {
    let Ok(bytes) = std::fs::read(path) else { return Ok(()) };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot repair {}", path.display()))?;
    f.set_len(keep as u64).with_context(|| format!("cannot repair {}", path.display()))?;
    f.sync_all().ok();
    Ok(())
}

/// results.tsv: the original's header and five tab-separated columns.
pub const TSV_HEADER: &str = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n";

/// One results.tsv row, formatted exactly as the original's program.md asks: short commit,
/// val_bpb with 6 decimals (0.000000 for crashes), memory in GB with 1 decimal (0.0 for
/// crashes), status, description (tabs and newlines replaced by spaces).
pub fn tsv_row(
    commit: &str,
    val_bpb: Option<f64>,
    peak_mem_mb: Option<f64>,
    status: Status,
    description: &str,
) -> String {
    let short: String = commit.chars().take(7).collect();
    let crashed = !matches!(status, Status::Keep | Status::Discard);
    let bpb = if crashed { 0.0 } else { val_bpb.unwrap_or(0.0) };
    let mem = if crashed { 0.0 } else { peak_mem_mb.unwrap_or(0.0) / 1024.0 };
    let desc: String =
        description.chars().map(|c| if c == '\t' || c == '\n' || c == '\r' { ' ' } else { c }).collect();
    format!("{short}\t{bpb:.6}\t{mem:.1}\t{}\t{}\n", status.tsv(), desc.trim())
}

/// Rewrites results.tsv from the journal (the journal is the truth; the TSV is a view), so
/// a kill between the two writes can never leave them disagreeing.
pub fn write_tsv(dir: &Path, events: &[Event]) -> Result<()> {
    prepare::manifest::write_atomic(&dir.join("results.tsv"), tsv(events).as_bytes())?;
    Ok(())
}

/// results.tsv's content: one row per baseline run and per candidate (confirmations and
/// re-measures are folded into their experiment's decision, as the original has no rows
/// for them).
pub fn tsv(events: &[Event]) -> String {
    struct Row<'a> {
        kind: RunKind,
        description: &'a str,
        commit: String,
        record: Option<&'a RunRecord>,
    }
    let mut out = String::from(TSV_HEADER);
    let mut rows: std::collections::HashMap<u64, Row> = Default::default();
    for e in events {
        match e {
            Event::Started { id, kind, description, parent, .. } => {
                rows.insert(*id, Row { kind: *kind, description, commit: parent.clone(), record: None });
            }
            Event::Committed { id, commit, .. } => {
                if let Some(r) = rows.get_mut(id) {
                    r.commit = commit.clone();
                }
            }
            Event::Finished { id, record, .. } => {
                if let Some(r) = rows.get_mut(id) {
                    r.record = record.as_ref();
                }
            }
            Event::Decided { id, decision, .. } => {
                if let Some(r) =
                    rows.get(id).filter(|r| matches!(r.kind, RunKind::Baseline | RunKind::Candidate))
                {
                    let commit =
                        if decision.status == Status::Rejected { "-------" } else { r.commit.as_str() };
                    out.push_str(&tsv_row(
                        commit,
                        decision.val_bpb,
                        r.record.map(|rec| rec.peak_mem_mb),
                        decision.status,
                        r.description,
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tsv_row_matches_the_original_format() {
        assert_eq!(
            tsv_row("a1b2c3d4e5", Some(0.9979), Some(45060.2), Status::Keep, "baseline"),
            "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
        );
        assert_eq!(
            tsv_row("d4e5f6g", Some(1.2), Some(100.0), Status::Timeout, "double width\t(OOM)"),
            "d4e5f6g\t0.000000\t0.0\tcrash\tdouble width (OOM)\n"
        );
    }

    #[test]
    fn test_torn_last_line_is_dropped_but_damage_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(Event::Stopped { time: 1.0, reason: "a".into() }).unwrap();
        j.append(Event::Stopped { time: 2.0, reason: "b".into() }).unwrap();
        drop(j);
        let path = dir.path().join("runs.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"event\":\"stopp");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_events(&path).unwrap().len(), 2);
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(Event::Stopped { time: 3.0, reason: "c".into() }).unwrap();
        assert_eq!(read_events(&path).unwrap().len(), 3, "the fragment was cut, the new event is whole");
        std::fs::write(&path, format!("garbage\n{text}")).unwrap();
        assert!(read_events(&path).is_err());
    }
}
