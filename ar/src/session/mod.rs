//! A session: the branch `autoresearch/<tag>`, its journal in `.autoresearch/<tag>/`, and
//! the one atomic, resumable experiment step both `ar experiment` and `ar loop` take.
//!
//! - this module: opening (what a session fixes when it is created), the lock, the tree;
//! - [`state`]: the journal folded into runs, pairs, the incumbent and the noise pool;
//! - [`noise_class`]: which earlier candidates a candidate's σ_d is pooled with;
//! - [`step`]: the experiment step — guard, commit, then paired measurements (candidate and
//!   incumbent at the same seed index) until the sequential rule (`stats`) keeps or
//!   discards — and the baseline, the end-of-session verification and recovery.
//!
//! Every journal write is fsynced before the git change it describes, so
//! [`Session::recover`] can finish or repeat whatever a `kill -9` cut short: no record lost,
//! none duplicated, the branch on the best commit, and the agent's pending edit to the train
//! file preserved. `failpoint::hit` marks each point where the tests kill `ar` with SIGKILL
//! to prove it.

mod command;
pub mod noise_class;
pub mod pool;
pub mod state;
pub mod step;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use prepare::profile::Profile;

use crate::exec::job::{JobOutcome, RunDir};
use crate::git::{Git, TRAIN_FILE};
use crate::guard::{self, FixedManifest, Verdict};
use crate::journal::{self, CrashClass, Decision, Event, Journal, RunKind, Status, now};
use crate::live::LiveFile;
pub use state::{Rule, State};

/// Branch prefix of every session.
pub const BRANCH_PREFIX: &str = "autoresearch/";

/// What one measurement produced, as the session decides on it.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub crash: Option<CrashClass>,
    pub record: Option<prepare::RunRecord>,
    /// Why the run counts as a crash, in one line (never program output).
    pub reason: Option<String>,
    /// The sanitised, fenced tail of the log (crashes only).
    pub excerpt: Option<String>,
    pub seconds: f64,
    /// Of `seconds`, the scoring phase.
    pub score_seconds: f64,
    pub run: Option<String>,
    pub leaked: Vec<String>,
    pub sandbox: Option<crate::sandbox::Report>,
    pub seed: Option<u64>,
}

impl RunOutcome {
    fn crashed(class: CrashClass, reason: impl Into<String>) -> RunOutcome {
        RunOutcome { crash: Some(class), reason: Some(reason.into()), ..RunOutcome::default() }
    }

    fn from_job(run: &RunDir, o: JobOutcome) -> RunOutcome {
        RunOutcome {
            crash: o.crash,
            seed: o.stats.as_ref().map(|s| s.seed),
            record: o.record,
            reason: o.reason,
            excerpt: o.excerpt,
            seconds: o.train_seconds + o.score_seconds,
            score_seconds: o.score_seconds,
            run: Some(run.name()),
            leaked: o.leaked,
            sandbox: o.sandbox,
        }
    }
}

/// Where a train file edit waits while the baseline runs.
const SET_ASIDE: &str = "pending_train_edit.rs";

/// Options shared by `ar experiment` and `ar loop`.
#[derive(Debug, Clone)]
pub struct Options {
    pub profile: &'static Profile,
    pub rule: Rule,
    /// Hard limit per run; default: twice the budget plus a minute.
    pub timeout: Option<Duration>,
    pub features: Vec<String>,
    pub agent: String,
    /// The budget of a new session (None: the profile's default).
    pub budget: Option<prepare::Budget>,
    /// Force a scoring variant (None: the profile's).
    pub scoring: Option<prepare::profile::Scoring>,
    /// Create the session even where the sandbox cannot be complete (journaled).
    pub allow_unconfined: bool,
}

/// A session ready to take experiments.
pub struct Session {
    pub repo: PathBuf,
    pub git: Git,
    pub tag: String,
    pub branch: String,
    pub dir: PathBuf,
    pub journal: Journal,
    pub fixed: FixedManifest,
    pub rule: Rule,
    pub profile: &'static Profile,
    pub base_commit: String,
    pub timeout: Duration,
    pub features: Vec<String>,
    pub live: LiveFile,
    /// Set by Ctrl-C: abandon the current run and stop.
    pub stop: Arc<AtomicBool>,
    /// Confine training children (landlock + seccomp); on unless the user opts out.
    pub sandbox: bool,
    pub budget: prepare::Budget,
    pub scoring: prepare::profile::Scoring,
    /// sha256 of the cache manifest when the session started.
    pub manifest_sha256: String,
    pub cache_root: PathBuf,
    /// Extra environment for every training and serving child (device pinning).
    pub job_env: Vec<(String, String)>,
    /// What is optimised: this repository's GPT or a declared command workload, fixed when
    /// the session was created (a changed `autoresearch.toml` refuses the resume).
    pub workload: crate::workload::Workload,
    /// Each candidate's noise class, read once from its diff (a commit never changes).
    noise_classes: std::sync::Mutex<std::collections::HashMap<u64, noise_class::NoiseClass>>,
    _lock: File,
}

/// The compact result an agent reads: parsed fields and, for a crash, the fenced excerpt.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: u64,
    pub status: Status,
    pub crash: Option<CrashClass>,
    pub commit: Option<String>,
    pub decision: Option<Decision>,
    pub peak_mem_mb: Option<f64>,
    pub test_bpb: Option<f64>,
    pub reason: String,
    pub excerpt: Option<String>,
    /// The metric's name (val_bpb for the GPT).
    pub metric: String,
}

impl Outcome {
    /// A few lines for the agent. Program output appears only inside the excerpt's fence.
    pub fn render(&self) -> String {
        let measured = self.status == Status::Keep
            && self
                .decision
                .as_ref()
                .is_some_and(|d| d.evidence.is_none() && d.reason.contains("measurement"));
        let word = if measured { "measured".to_string() } else { status_word(self.status, self.crash) };
        let mut s = format!("experiment {}: {word}", self.id);
        if let Some(d) = &self.decision {
            if let Some(v) = d.val_bpb {
                s.push_str(&format!(" | {} {v:.6}", self.metric));
            }
            if let (Some(delta), Some(best)) = (d.delta, d.best_before) {
                s.push_str(&format!(" | Δ {delta:+.6} vs best {best:.6}"));
            }
            if let Some(e) = &d.evidence {
                s.push_str(&format!(" | {} pair{}", e.pairs, if e.pairs == 1 { "" } else { "s" }));
                if let Some(c) = e.confidence {
                    s.push_str(&format!(", {:.1} % confident", 100.0 * c));
                }
            }
        }
        if let Some(mb) = self.peak_mem_mb {
            s.push_str(&format!(" | memory {:.1} GB", mb / 1024.0));
        }
        s.push_str(&format!("\n{}", self.reason));
        if let Some(e) = &self.excerpt {
            s.push('\n');
            s.push_str(e);
        }
        s
    }
}

fn status_word(status: Status, crash: Option<CrashClass>) -> String {
    match (status, crash) {
        (Status::Keep, _) => "KEEP".into(),
        (Status::Discard, _) => "discard".into(),
        (_, Some(c)) => format!("crash ({})", c.name()),
        (s, None) => format!("{s:?}").to_lowercase(),
    }
}

/// How a session is opened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Open {
    /// `ar loop --tag T`: a new branch from HEAD.
    Create,
    /// `ar loop --tag T --resume`: an existing session.
    Resume,
    /// `ar experiment`: the session of the current branch, started if new.
    Attach,
}

impl Session {
    pub fn open(repo: &Path, tag: Option<&str>, how: Open, opts: &Options) -> Result<Session> {
        let git = Git::new(repo);
        let current = git.current_branch()?;
        let tag = match (tag, how) {
            (Some(t), _) => t.to_string(),
            (None, Open::Attach) => match current.as_deref().and_then(|b| b.strip_prefix(BRANCH_PREFIX)) {
                Some(t) => t.to_string(),
                None => bail!(
                    "the current branch is {}, not a session branch; start one with \
                     `git checkout -b autoresearch/<tag>` (or run `ar loop --tag <tag>`)",
                    current.as_deref().unwrap_or("(detached)")
                ),
            },
            (None, _) => bail!("--tag is required"),
        };
        validate_tag(&tag)?;
        let branch = format!("{BRANCH_PREFIX}{tag}");
        let dir = Journal::dir(repo, &tag);
        exclude_session_dir(&git)?;
        // Read before a new branch is made (a bad declaration leaves nothing behind), and
        // after the checkout of a resumed one (its tree holds the session's declaration).
        let mut workload = None;
        match how {
            Open::Create => {
                if git.branch_exists(&branch)? {
                    bail!("branch {branch} already exists; pick another --tag, or continue it with --resume");
                }
                if !git.changed_since("HEAD")?.is_empty() {
                    bail!(
                        "the working tree has uncommitted changes; commit or stash them before starting a session"
                    );
                }
                if dir.join("runs.jsonl").exists() {
                    bail!("{} already holds a journal; pick another --tag", dir.display());
                }
                workload = Some(crate::workload::load(repo)?);
                git.create_branch(&branch)?;
            }
            Open::Resume => {
                if !git.branch_exists(&branch)? {
                    bail!("there is no branch {branch} to resume; start it with `ar loop --tag {tag}`");
                }
                if current.as_deref() != Some(branch.as_str()) {
                    git.checkout(&branch)
                        .context("cannot switch to the session branch (uncommitted changes?)")?;
                }
            }
            Open::Attach => {}
        }
        let workload = match workload {
            Some(w) => w,
            None => crate::workload::load(repo)?,
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let lock = lock(&dir)?;
        let journal = Journal::open(&dir)?;
        let first = journal.events().iter().find_map(|e| match e {
            Event::Session { base_commit, profile, rule, settings, .. } => {
                Some((base_commit.clone(), profile.clone(), rule.clone(), settings.clone()))
            }
            _ => None,
        });
        let fixed_path = dir.join("fixed.json");
        let (base_commit, profile, rule, fixed, recorded) = match first {
            Some((base, profile_name, rule, settings)) => {
                let profile = Profile::by_name(&profile_name)?;
                let fixed = FixedManifest::load(&fixed_path)?;
                (base, profile, Rule::from_config(&rule), fixed, Some(settings))
            }
            None => {
                if how == Open::Resume {
                    bail!("{} has no session to resume", dir.display());
                }
                let fixed = FixedManifest::capture_for(&git, &workload)?;
                fixed.save(&fixed_path)?;
                (git.head()?, opts.profile, opts.rule.clone(), fixed, None)
            }
        };
        let resumed = recorded.is_some();
        // The data must be ready before anything is spent on a build (the GPT's cache; a
        // command workload brings its own data).
        let manifest_now = match &workload {
            crate::workload::Workload::Gpt => Some(prepare::Cache::open(profile)?.manifest_sha256()?),
            crate::workload::Workload::Command(_) => None,
        };
        let settings = match recorded.flatten() {
            Some(fixed) => {
                check_fixed_settings(&fixed, opts, &dir)?;
                check_workload(&fixed, &workload, repo, &dir, &base_commit)?;
                if let Some(manifest_now) = &manifest_now
                    && fixed.manifest_sha256 != *manifest_now
                {
                    let cache = prepare::Cache::open(profile)?;
                    bail!(
                        "the cache {} was re-prepared since this session started (its manifest changed): its rows \
                         would not be the session's. Restore the original cache or start a new session",
                        cache.root.display()
                    );
                }
                fixed
            }
            None => {
                let confined = sandbox_is_complete();
                if let Err(gaps) = &confined {
                    if !opts.allow_unconfined {
                        bail!(
                            "this kernel cannot confine the training runs ({}); ar will not run agent-written code \
                             unconfined unless the session is created with --allow-unconfined (it is journaled)",
                            gaps.join("; ")
                        );
                    }
                    eprintln!("warning: session created with --allow-unconfined: {}", gaps.join("; "));
                }
                let budget = opts.budget.unwrap_or_else(|| profile.default_budget());
                let default_timeout = match &workload {
                    crate::workload::Workload::Command(c) => c.run.timeout.as_secs_f64(),
                    // A time budget bounds the run itself; this only catches a hang.
                    crate::workload::Workload::Gpt if budget.is_time() => {
                        profile.time_budget_secs * 2.0 + 60.0 + profile.startup_allowance_secs
                    }
                    // A fixed amount of work takes as long as the machine's load makes it: a
                    // timeout near the quiet duration turned a busy machine into crashes.
                    crate::workload::Workload::Gpt => profile.time_budget_secs * 4.0 + 600.0,
                };
                crate::journal::SessionSettings {
                    budget: budget.to_string(),
                    scoring: opts.scoring.unwrap_or(profile.scoring).name().to_string(),
                    confined: !opts.allow_unconfined,
                    timeout_secs: opts.timeout.map_or(default_timeout, |t| t.as_secs_f64()),
                    manifest_sha256: manifest_now.clone().unwrap_or_default(),
                    features: opts.features.clone(),
                    workload: workload.settings(repo),
                }
            }
        };
        let budget = prepare::Budget::parse(&settings.budget)?;
        let scoring = prepare::profile::Scoring::parse(&settings.scoring)?;
        let timeout = Duration::from_secs_f64(settings.timeout_secs);
        let manifest_sha256 = settings.manifest_sha256.clone();
        // The one place the metric's direction enters the decisions: the paired rule reads
        // it for every confidence, futility test and strict comparison.
        let mut rule = rule;
        rule.paired.direction = workload.direction();
        let mut session = Session {
            repo: repo.to_path_buf(),
            git,
            tag: tag.clone(),
            branch: branch.clone(),
            dir: dir.clone(),
            journal,
            fixed,
            rule: rule.clone(),
            profile,
            base_commit: base_commit.clone(),
            timeout,
            features: if resumed { settings.features.clone() } else { opts.features.clone() },
            live: LiveFile::new(&dir),
            stop: Arc::new(AtomicBool::new(false)),
            sandbox: settings.confined,
            budget,
            scoring,
            manifest_sha256,
            cache_root: prepare::cache::cache_root(),
            job_env: Vec::new(),
            workload,
            noise_classes: Default::default(),
            _lock: lock,
        };
        if !resumed || how != Open::Attach {
            session.journal.append(Event::Session {
                format: journal::JOURNAL_FORMAT,
                time: now(),
                tag,
                branch,
                base_commit,
                profile: profile.name.to_string(),
                profile_hash: profile.hash(),
                hardware: prepare::hardware::Hardware::detect(None),
                agent: opts.agent.clone(),
                budget_secs: profile.time_budget_secs,
                rule: rule.config(),
                resumed,
                settings: Some(settings),
            })?;
        }
        session.recover()?;
        Ok(session)
    }

    /// The decision state folded from the journal.
    pub fn state(&self) -> State {
        State::from_events(self.journal.events(), &self.base_commit)
    }

    /// The incumbent commit.
    pub fn best_commit(&self) -> String {
        self.state().best_commit
    }

    fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// The working tree's train file, if it differs from the best commit's.
    fn pending_train_edit(&self) -> Result<Option<String>> {
        let current = std::fs::read_to_string(self.repo.join(TRAIN_FILE)).unwrap_or_default();
        let best = self.git.show(&self.best_commit(), TRAIN_FILE).unwrap_or_default();
        let head = self.git.show("HEAD", TRAIN_FILE).unwrap_or_default();
        Ok((current != best && current != head).then_some(current))
    }

    /// The kind and description a run was started with (None for an id the journal does
    /// not know).
    fn started(&self, id: u64) -> Option<(RunKind, &str)> {
        self.journal.events().iter().find_map(|e| match e {
            Event::Started { id: i, kind, description, .. } if *i == id => {
                Some((*kind, description.as_str()))
            }
            _ => None,
        })
    }

    fn kind_of(&self, id: u64) -> Option<RunKind> {
        self.started(id).map(|(kind, _)| kind)
    }

    fn description_of(&self, id: u64) -> String {
        self.started(id).map(|(_, d)| d.to_string()).unwrap_or_default()
    }

    /// If the working tree changed outside the train file, journals the turn as a rejected
    /// experiment naming the paths, restores the tree and returns the outcome; else None.
    pub fn reject_out_of_scope(&mut self, description: &str, agent_seconds: f64) -> Result<Option<Outcome>> {
        let best = self.best_commit();
        let Verdict::Rejected { offending } =
            guard::check_scope(&self.git, &best, &self.fixed, &self.workload)?
        else {
            return Ok(None);
        };
        let id = self.journal.next_id();
        self.journal.append(Event::Started {
            id,
            time: now(),
            kind: RunKind::Candidate,
            parent: best.clone(),
            description: description.to_string(),
            hypothesis: None,
            diff_sha256: String::new(),
            rerun_of: None,
            seed: None,
        })?;
        let allowed = match &self.workload {
            crate::workload::Workload::Gpt => TRAIN_FILE.to_string(),
            w => format!("files matching the editable patterns ({})", w.editable().join(", ")),
        };
        let reason = format!(
            "rejected: only {allowed} may change; these paths changed too: {}. Nothing was committed and the \
             working tree was restored.",
            offending.join(", ")
        );
        let decision = Decision {
            status: Status::Rejected,
            reason: reason.clone(),
            val_bpb: None,
            best_before: self.state().best(),
            delta: None,
            sigma: self.state().sigma(),
            margin: None,
            best_after: self.state().best(),
            best_commit: best,
            evidence: None,
        };
        self.journal.append(Event::Decided { id, time: now(), decision: decision.clone() })?;
        let _ = agent_seconds;
        self.restore_tree()?;
        journal::write_tsv(&self.dir, self.journal.events())?;
        Ok(Some(Outcome {
            id,
            status: Status::Rejected,
            crash: Some(CrashClass::Rejected),
            commit: None,
            decision: Some(decision),
            peak_mem_mb: None,
            test_bpb: None,
            reason,
            excerpt: None,
            metric: self.workload.metric_name().to_string(),
        }))
    }

    /// Records an agent turn that produced no experiment, and restores the working tree.
    pub fn agent_turn_without_change(&mut self, outcome: &str, detail: &str, seconds: f64) -> Result<()> {
        self.journal.append(Event::Agent {
            time: now(),
            outcome: outcome.into(),
            detail: detail.into(),
            seconds,
        })?;
        self.restore_tree()
    }

    /// Puts the working tree back on the best commit (tracked and untracked changes).
    pub fn restore_tree(&mut self) -> Result<()> {
        let best = self.best_commit();
        let changed = self.git.changed_since(&best)?;
        let untracked: Vec<String> = changed
            .iter()
            .filter(|p| !self.git.root.join(p).exists() || !self.is_tracked(p))
            .cloned()
            .collect();
        self.git.reset_hard(&best)?;
        self.git.remove_untracked(&untracked)?;
        Ok(())
    }

    fn is_tracked(&self, path: &str) -> bool {
        self.git.ok(&["ls-files", "--error-unmatch", "--", path]).unwrap_or(false)
    }
}

/// Whether this kernel can fully confine a training run: `Err` lists what is missing.
pub fn sandbox_is_complete() -> std::result::Result<(), Vec<String>> {
    let mut probe = std::process::Command::new("/bin/true");
    let policy = crate::sandbox::Policy {
        writable: vec![std::env::temp_dir()],
        read: crate::sandbox::ReadAccess::Only(vec![std::env::temp_dir()]),
        network: false,
        confine_process: true,
    };
    let report = crate::sandbox::apply(&mut probe, &policy);
    if report.complete() { Ok(()) } else { Err(report.gaps()) }
}

/// A resumed session measures what it measured before: the workload read now must be the
/// one journaled when the session was created (the same `autoresearch.toml`, byte for byte,
/// or still none). Refused rather than re-read, since a new metric, direction or scope
/// would make every earlier decision incomparable.
fn check_workload(
    fixed: &crate::journal::SessionSettings,
    now: &crate::workload::Workload,
    repo: &Path,
    dir: &Path,
    base: &str,
) -> Result<()> {
    let file = repo.join(crate::workload::FILE);
    match (&fixed.workload, now.settings(repo)) {
        (None, None) => Ok(()),
        (Some(then), Some(now)) if then.sha256 == now.sha256 => Ok(()),
        (Some(then), Some(_)) => bail!(
            "{} changed since session {} was created (it declared {} `{}`, {}; sha256 {}…): a session keeps the \
             workload it started with. Restore the file (`git checkout {} -- {}`) or start a new session with a \
             new --tag",
            file.display(),
            dir.display(),
            then.direction,
            then.metric,
            then.name,
            &then.sha256[..12.min(then.sha256.len())],
            &base[..7.min(base.len())],
            crate::workload::FILE
        ),
        (Some(then), None) => bail!(
            "{} is gone, but session {} was created on it (metric `{}`): restore the file or start a new session \
             with a new --tag",
            file.display(),
            dir.display(),
            then.metric
        ),
        (None, Some(_)) => bail!(
            "{} appeared after session {} was created on this repository's GPT: a session keeps the workload it \
             started with. Start a new session with a new --tag to use the declared workload",
            file.display(),
            dir.display()
        ),
    }
}

/// A later call may not change what the session fixed when it was created.
fn check_fixed_settings(fixed: &crate::journal::SessionSettings, opts: &Options, dir: &Path) -> Result<()> {
    let mut conflicts = Vec::new();
    if let Some(t) = opts.timeout {
        if (t.as_secs_f64() - fixed.timeout_secs).abs() > 0.5 {
            conflicts.push(format!("--timeout {} (the session's is {:.0})", t.as_secs(), fixed.timeout_secs));
        }
    }
    if opts.allow_unconfined && fixed.confined {
        conflicts.push("--allow-unconfined (the session is confined)".to_string());
    }
    if let Some(b) = opts.budget {
        if b.to_string() != fixed.budget {
            conflicts.push(format!("--budget {b} (the session's is {})", fixed.budget));
        }
    }
    if let Some(s) = opts.scoring {
        if s.name() != fixed.scoring {
            conflicts.push(format!("--scoring {} (the session's is {})", s.name(), fixed.scoring));
        }
    }
    if !conflicts.is_empty() {
        bail!(
            "{}: these are fixed when a session is created and cannot change per call: {}. Start a new session \
             (a new tag) to change them",
            dir.display(),
            conflicts.join(", ")
        );
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<()> {
    if tag.is_empty()
        || !tag.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || tag.starts_with('.')
    {
        bail!("--tag '{tag}': use letters, digits, '-', '_' or '.', e.g. mar5");
    }
    Ok(())
}

/// Makes sure `.autoresearch/` is ignored even in a repository whose .gitignore lacks it.
fn exclude_session_dir(git: &Git) -> Result<()> {
    if git.is_ignored(".autoresearch/x")? {
        return Ok(());
    }
    let git_dir = PathBuf::from(git.run(&["rev-parse", "--git-common-dir"])?.trim());
    let git_dir = if git_dir.is_absolute() { git_dir } else { git.root.join(git_dir) };
    let exclude = git_dir.join("info").join("exclude");
    std::fs::create_dir_all(exclude.parent().unwrap())?;
    let mut text = std::fs::read_to_string(&exclude).unwrap_or_default();
    if !text.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text.push_str("/.autoresearch/\n");
    std::fs::write(&exclude, text).with_context(|| format!("cannot write {}", exclude.display()))
}

/// One `ar` per session at a time.
fn lock(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another ar is working on this session ({}); wait for it or stop it", dir.display());
    }
    Ok(file)
}
