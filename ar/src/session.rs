//! A session: the branch `autoresearch/<tag>`, its journal in `.autoresearch/<tag>/`, and
//! the one atomic, resumable experiment step both `ar experiment` and `ar loop` take.
//!
//! The step: guard → journal `started` → commit → build → run (sandboxed, hard timeout) →
//! journal `finished` → decide (noise-aware, confirm) → journal `decided` → move the branch
//! → rewrite results.tsv. Every journal write is fsynced before the git change it
//! describes, so [`Session::recover`] can finish or repeat whatever a `kill -9` cut short:
//! no record lost, none duplicated, the branch on the best commit, and the agent's pending
//! edit to the train file preserved. `failpoint::hit` marks each point where the tests
//! kill `ar` with SIGKILL to prove it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use prepare::profile::Profile;

use crate::decide::{Rule, State};
use crate::failpoint;
use crate::git::{Git, TRAIN_FILE};
use crate::guard::{self, FixedManifest, Verdict};
use crate::journal::{self, CrashClass, Decision, Event, Journal, RunKind, Status, Timings, now};
use crate::live::LiveFile;
use crate::exec::build::{self as cargo_build, BuildSpec};
use crate::exec::job::{self, JobOutcome, JobSpec, RunDir};

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
}

impl Outcome {
    /// A few lines for the agent. Program output appears only inside the excerpt's fence.
    pub fn render(&self) -> String {
        let mut s = format!("experiment {}: {}", self.id, status_word(self.status, self.crash));
        if let Some(d) = &self.decision {
            if let Some(v) = d.val_bpb {
                s.push_str(&format!(" | val_bpb {v:.6}"));
            }
            if let (Some(delta), Some(best)) = (d.delta, d.best_before) {
                s.push_str(&format!(" | Δ {delta:+.6} vs best {best:.6}"));
            }
            if let Some(m) = d.margin {
                s.push_str(&format!(" | margin {m:.6}"));
            }
            if let Some(sig) = d.sigma {
                s.push_str(&format!(" (σ {sig:.6})"));
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
                let fixed = FixedManifest::capture(&git)?;
                fixed.save(&fixed_path)?;
                (git.head()?, opts.profile, opts.rule.clone(), fixed, None)
            }
        };
        let resumed = recorded.is_some();
        // The data must be ready before anything is spent on a build.
        let cache = prepare::Cache::open(profile)?;
        let manifest_now = cache.manifest_sha256()?;
        let settings = match recorded.flatten() {
            Some(fixed) => {
                check_fixed_settings(&fixed, opts, &dir)?;
                if fixed.manifest_sha256 != manifest_now {
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
                crate::journal::SessionSettings {
                    budget: opts.budget.unwrap_or_else(|| profile.default_budget()).to_string(),
                    scoring: opts.scoring.unwrap_or(profile.scoring).name().to_string(),
                    confined: !opts.allow_unconfined,
                    timeout_secs: opts
                        .timeout
                        .map_or(profile.time_budget_secs * 2.0 + 60.0 + profile.startup_allowance_secs, |t| {
                            t.as_secs_f64()
                        }),
                    manifest_sha256: manifest_now.clone(),
                    features: opts.features.clone(),
                }
            }
        };
        let budget = prepare::Budget::parse(&settings.budget)?;
        let scoring = prepare::profile::Scoring::parse(&settings.scoring)?;
        let timeout = Duration::from_secs_f64(settings.timeout_secs);
        let manifest_sha256 = settings.manifest_sha256.clone();
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

    /// The state as it was before run `id` finished (its own result left out), so a
    /// re-measured commit is compared with what was known before the re-measure.
    fn state_before(&self, id: u64) -> State {
        let events: Vec<Event> = self
            .journal
            .events()
            .iter()
            .filter(|e| !matches!(e, Event::Finished { id: i, .. } if *i == id))
            .cloned()
            .collect();
        State::from_events(&events, &self.base_commit)
    }

    /// The incumbent commit.
    pub fn best_commit(&self) -> String {
        self.state().best_commit.unwrap_or_else(|| self.base_commit.clone())
    }

    fn runs_dir(&self) -> PathBuf {
        self.dir.join("runs")
    }

    /// Finishes or repeats whatever an interrupted `ar` left behind, then puts the branch on
    /// the best commit — keeping any pending edit of the train file.
    pub fn recover(&mut self) -> Result<()> {
        let pending_edit = self.pending_train_edit()?;
        let mut recovered = false;
        loop {
            let events = self.journal.events().to_vec();
            let Some(open) = last_open_experiment(&events) else { break };
            recovered = true;
            match open {
                Open_::NotCommitted { id } => {
                    // Killed between `started` and the commit: the change cannot be known
                    // for sure, so it is recorded as interrupted, not guessed at.
                    let outcome = self.interrupted("interrupted before its commit was made");
                    let decision = self.decision(
                        Status::Interrupted,
                        "interrupted before its commit was made".into(),
                        None,
                        self.state().best,
                        self.state().sigma(),
                        None,
                    );
                    self.finish_decision(id, decision, &outcome, "", None)?;
                }
                Open_::Rerun { id, kind, commit, rerun_of } => {
                    self.git.reset_hard(&commit)?;
                    let outcome = self.measure(id, &commit, Timings::default())?;
                    self.conclude(id, kind, &commit, outcome, rerun_of)?;
                }
                Open_::Undecided { id, kind, commit, outcome, rerun_of } => {
                    // A candidate whose confirmation was under way resumes that confirmation.
                    let confirm = (kind == RunKind::Candidate).then(|| confirm_run_of(&events, id)).flatten();
                    match confirm {
                        Some((cid, Some(second))) => {
                            self.settle_confirmation(id, cid, &commit, outcome, second)?;
                        }
                        Some((cid, None)) => {
                            self.git.reset_hard(&commit)?;
                            let second = self.measure(cid, &commit, Timings::default())?;
                            self.settle_confirmation(id, cid, &commit, outcome, second)?;
                        }
                        None => {
                            self.conclude(id, kind, &commit, outcome, rerun_of)?;
                        }
                    }
                }
            }
        }
        // Only the supervisor's own leftovers are cleaned: an interrupted experiment, or the
        // branch left on one of its experiment commits. Anything else in the working tree is
        // the agent's and stays for the scope guard to judge (a reset here would silently
        // undo an out-of-scope edit instead of rejecting it).
        let best = self.best_commit();
        let head = self.git.head()?;
        let on_own_commit = head != best
            && self
                .journal
                .events()
                .iter()
                .any(|e| matches!(e, Event::Committed { commit, .. } if *commit == head));
        let set_aside = self.dir.join(SET_ASIDE);
        let set_aside_edit = std::fs::read_to_string(&set_aside).ok();
        if recovered || on_own_commit || set_aside_edit.is_some() {
            if head != best || !self.git.changed_since(&best)?.is_empty() {
                self.git.reset_hard(&best)?;
            }
            if let Some(edit) = pending_edit.or(set_aside_edit) {
                std::fs::write(self.repo.join(TRAIN_FILE), edit)
                    .context("cannot restore the pending train file edit")?;
            }
        }
        let _ = std::fs::remove_file(&set_aside);
        journal::write_tsv(&self.dir, self.journal.events())?;
        self.live.phase(0, "idle", "");
        Ok(())
    }

    /// The working tree's train file, if it differs from the best commit's.
    fn pending_train_edit(&self) -> Result<Option<String>> {
        let current = std::fs::read_to_string(self.repo.join(TRAIN_FILE)).unwrap_or_default();
        let best = self.git.show(&self.best_commit(), TRAIN_FILE).unwrap_or_default();
        let head = self.git.show("HEAD", TRAIN_FILE).unwrap_or_default();
        Ok((current != best && current != head).then_some(current))
    }

    fn interrupted(&self, reason: &str) -> RunOutcome {
        RunOutcome::crashed(CrashClass::Interrupted, reason)
    }

    /// Runs the baseline until the rule's K runs have results.
    pub fn ensure_baseline(&mut self) -> Result<()> {
        let k = if self.rule.strict { 1 } else { self.rule.baseline_runs.max(1) };
        loop {
            let state = self.state();
            if state.baselines_done >= k {
                return Ok(());
            }
            if state.baselines_tried >= k + 2 {
                bail!(
                    "the baseline crashed {} times: the unmodified train file does not run (see {})",
                    state.baselines_tried - state.baselines_done,
                    self.dir.join("runs").display()
                );
            }
            if self.stop.load(std::sync::atomic::Ordering::SeqCst) {
                bail!("stopped before the baseline finished");
            }
            let best = self.best_commit();
            if !self.git.changed_since(&best)?.is_empty() {
                bail!(
                    "the first experiment on a branch is the baseline, run on the unmodified train file; \
                     undo your edit (git checkout -- {TRAIN_FILE}), run `ar experiment -m baseline`, then redo it"
                );
            }
            let id = self.journal.next_id();
            let description = format!("baseline (run {}/{k})", state.baselines_done + 1);
            self.journal.append(Event::Started {
                id,
                time: now(),
                kind: RunKind::Baseline,
                parent: best.clone(),
                description: description.clone(),
                hypothesis: None,
                diff_sha256: String::new(),
                rerun_of: None,
            })?;
            println!("Running {description} …");
            let outcome = self.measure(id, &best, Timings::default())?;
            let result = self.conclude(id, RunKind::Baseline, &best, outcome, None)?;
            println!("{}", result.render());
        }
    }

    /// One agent change: guard, commit, build, run, decide. The train file edit must be in
    /// the working tree.
    pub fn candidate(
        &mut self,
        description: &str,
        hypothesis: Option<&str>,
        agent_seconds: f64,
    ) -> Result<Outcome> {
        self.ensure_baseline_allowing_edit()?;
        let best = self.best_commit();
        let id = self.journal.next_id();
        let started = |diff_sha256: String| Event::Started {
            id,
            time: now(),
            kind: RunKind::Candidate,
            parent: best.clone(),
            description: description.to_string(),
            hypothesis: hypothesis.map(str::to_string),
            diff_sha256,
            rerun_of: None,
        };
        match guard::check(&self.git, &best, &self.fixed)? {
            Verdict::Rejected { offending } => {
                self.journal.append(started(String::new()))?;
                let reason = format!(
                    "rejected: only {TRAIN_FILE} may change; these paths changed too: {}. Nothing was committed.",
                    offending.join(", ")
                );
                let decision = Decision {
                    status: Status::Rejected,
                    reason: reason.clone(),
                    val_bpb: None,
                    best_before: self.state().best,
                    delta: None,
                    sigma: self.state().sigma(),
                    margin: None,
                    best_after: self.state().best,
                    best_commit: best.clone(),
                };
                self.journal.append(Event::Decided { id, time: now(), decision: decision.clone() })?;
                journal::write_tsv(&self.dir, self.journal.events())?;
                return Ok(Outcome {
                    id,
                    status: Status::Rejected,
                    crash: Some(CrashClass::Rejected),
                    commit: None,
                    decision: Some(decision),
                    peak_mem_mb: None,
                    test_bpb: None,
                    reason,
                    excerpt: None,
                });
            }
            Verdict::Allowed { train_changed: false } => {
                bail!("nothing to test: {TRAIN_FILE} is identical to the best commit {}", &best[..7]);
            }
            Verdict::Allowed { train_changed: true } => {}
        }
        let diff = self.git.diff_train_file(&best)?;
        self.journal.append(started(prepare::manifest::sha256_hex(diff.as_bytes())))?;
        failpoint::hit("after-started");
        if self.git.head()? != best {
            // The agent committed on its own: fold it back into one experiment commit.
            self.git.reset_soft(&best)?;
        }
        let commit = self.git.commit_train_file(&format!("{description}\n\nautoresearch experiment {id}"))?;
        failpoint::hit("after-commit");
        self.journal.append(Event::Committed { id, time: now(), commit: commit.clone() })?;
        failpoint::hit("after-committed");
        let timings = Timings { agent: agent_seconds, ..Timings::default() };
        let outcome = self.measure(id, &commit, timings)?;
        let result = self.conclude(id, RunKind::Candidate, &commit, outcome, None)?;
        if result.status == Status::Keep && self.state().remeasure_due(&self.rule) {
            self.remeasure()?;
        }
        Ok(result)
    }

    /// Baselines first; if the agent already edited the train file, the edit is set aside
    /// and restored afterwards.
    fn ensure_baseline_allowing_edit(&mut self) -> Result<()> {
        let k = if self.rule.strict { 1 } else { self.rule.baseline_runs.max(1) };
        if self.state().baselines_done >= k {
            return Ok(());
        }
        let edit = std::fs::read_to_string(self.repo.join(TRAIN_FILE)).ok();
        let best = self.best_commit();
        let only_train = self.git.changed_since(&best)?.iter().all(|p| p == TRAIN_FILE);
        if !only_train {
            return self.ensure_baseline();
        }
        // Set the edit aside durably: a kill during the baseline must not lose it.
        if let Some(edit) = &edit {
            prepare::manifest::write_atomic(&self.dir.join(SET_ASIDE), edit.as_bytes())?;
        }
        self.git.reset_hard(&best)?;
        let result = self.ensure_baseline();
        if let Some(edit) = edit {
            std::fs::write(self.repo.join(TRAIN_FILE), edit)?;
        }
        let _ = std::fs::remove_file(self.dir.join(SET_ASIDE));
        result
    }

    /// Re-runs the incumbent to catch drift.
    pub fn remeasure(&mut self) -> Result<Outcome> {
        let best = self.best_commit();
        let id = self.journal.next_id();
        self.journal.append(Event::Started {
            id,
            time: now(),
            kind: RunKind::Remeasure,
            parent: best.clone(),
            description: format!("re-measure incumbent {}", &best[..7.min(best.len())]),
            hypothesis: None,
            diff_sha256: String::new(),
            rerun_of: None,
        })?;
        let outcome = self.measure(id, &best, Timings::default())?;
        self.conclude(id, RunKind::Remeasure, &best, outcome, None)
    }

    /// Builds the commit in the working tree and measures it (train, then score); journals
    /// `finished`.
    fn measure(&mut self, id: u64, commit: &str, mut timings: Timings) -> Result<RunOutcome> {
        let description = self.description_of(id);
        self.live.phase(id, "build", &description);
        let spec = BuildSpec { bin: "train".into(), features: self.features.clone() };
        let source = self.git.show(commit, TRAIN_FILE)?;
        let expected = prepare::manifest::sha256_hex(source.as_bytes());
        if let Err(why) = guard::lint(&source) {
            let mut outcome = RunOutcome::crashed(CrashClass::Build, why.clone());
            outcome.excerpt = Some(crate::excerpt::excerpt(&why));
            return self.record_finished(id, outcome, timings);
        }
        let build = cargo_build::build(&self.repo, &spec)?;
        let built = match build {
            Err(failure) => {
                let mut outcome = RunOutcome::crashed(CrashClass::Build, "the train file does not compile");
                outcome.excerpt = Some(crate::excerpt::excerpt(&failure.first_error));
                let dir = RunDir::create(&self.runs_dir(), id)?;
                let _ = std::fs::write(dir.root.join("build.log"), &failure.log);
                outcome.run = Some(dir.name());
                return self.record_finished(id, outcome, timings);
            }
            Ok(built) => built,
        };
        timings.build = built.seconds;
        if !(built.stamped && built.train_sha256 == expected) {
            // Even after the forced rebuild: another checkout sharing the target directory
            // built at the same moment, or the tree is not on `commit`. This run proves
            // nothing: a crash.
            let outcome = RunOutcome::crashed(
                CrashClass::NoResult,
                format!(
                    "{} was not built from {TRAIN_FILE} at {}: is another checkout building into the same \
                     target directory?",
                    built.binary.display(),
                    &commit[..7.min(commit.len())]
                ),
            );
            return self.record_finished(id, outcome, timings);
        }
        self.live.phase(id, "train", &description);
        let seed_offset = self.state().measurements.get(commit).map_or(0, Vec::len) as u64;
        let dir = RunDir::create(&self.runs_dir(), id)?;
        let binary = match cargo_build::stage(&built.binary, &dir.root, &expected) {
            Ok(b) => b,
            Err(e) => {
                let mut outcome = RunOutcome::crashed(CrashClass::NoResult, format!("{e:#}"));
                outcome.run = Some(dir.name());
                return self.record_finished(id, outcome, timings);
            }
        };
        let spec = self.job_spec(id, &dir, binary.clone(), expected, seed_offset);
        dir.write_spec(&spec)?;
        let stop = self.stop.clone();
        struct Live<'a> {
            live: &'a mut crate::live::LiveFile,
            id: u64,
            description: String,
            polls: usize,
        }
        impl job::Watch for Live<'_> {
            fn phase(&mut self, phase: &str) {
                self.live.phase(self.id, phase, &self.description);
            }
            fn progress(&mut self, pct: Option<f64>) {
                self.live.progress(pct);
                self.polls += 1;
                if self.polls == 3 {
                    failpoint::hit("during-train");
                }
            }
        }
        let mut watch = Live { live: &mut self.live, id, description, polls: 0 };
        let result = job::run(&dir, &spec, &mut watch, &stop)?;
        dir.write_outcome(&result)?;
        // The staged binary has done its work; the record keeps its train file's sha256.
        let _ = std::fs::remove_file(&binary);
        let mut outcome = RunOutcome::from_job(&dir, result);
        self.check_seed(commit, &mut outcome);
        self.record_finished(id, outcome, timings)
    }

    /// The job of one measurement.
    fn job_spec(&self, id: u64, dir: &RunDir, binary: PathBuf, train_sha256: String, seed_offset: u64) -> JobSpec {
        // Under a time budget ar times training itself: budget + the profile's start-up
        // allowance, unless the session's hard timeout is shorter.
        let timeout = self.timeout.as_secs_f64();
        let (train_deadline, deadline_is_budget) = match self.budget {
            prepare::Budget::Time { secs } if secs + self.profile.startup_allowance_secs <= timeout => {
                (secs + self.profile.startup_allowance_secs, true)
            }
            _ => (timeout, false),
        };
        JobSpec {
            format: job::JOB_FORMAT,
            id,
            run: dir.name(),
            binary,
            train_sha256,
            profile: self.profile.name.to_string(),
            cache_root: self.cache_root.clone(),
            manifest_sha256: self.manifest_sha256.clone(),
            budget: self.budget,
            seed_offset,
            scoring: self.scoring,
            tolerance: if self.features.is_empty() { 1e-3 } else { 3e-2 },
            audit_rows: if self.scoring == prepare::profile::Scoring::Audited && self.profile.eval_rows() < 256 {
                8
            } else {
                256
            },
            train_deadline_secs: train_deadline,
            deadline_is_budget,
            serve_deadline_secs: timeout,
            sandbox: self.sandbox,
            env: Vec::new(),
        }
    }

    /// A repeated measurement of one commit must report a seed no earlier one did: a train
    /// file that ignores the offset replays the same run and fakes agreement.
    fn check_seed(&self, commit: &str, outcome: &mut RunOutcome) {
        let (Some(seed), None) = (outcome.seed, outcome.crash) else { return };
        let state = self.state();
        let earlier: Vec<u64> = self
            .journal
            .events()
            .iter()
            .filter_map(|e| match e {
                Event::Finished { id, seed: Some(s), crash: None, .. }
                    if state.commits.get(id).map(String::as_str) == Some(commit) =>
                {
                    Some(*s)
                }
                _ => None,
            })
            .collect();
        if earlier.contains(&seed) {
            *outcome = RunOutcome {
                crash: Some(CrashClass::Seed),
                reason: Some(format!(
                    "this run reported seed {seed}, the same as an earlier measurement of this commit: a repeated \
                     measurement must differ, so the train file must take its seed from prepare::seed(SEED)"
                )),
                record: None,
                ..outcome.clone()
            };
        }
    }

    /// Journals `finished` for a run.
    fn record_finished(&mut self, id: u64, outcome: RunOutcome, mut timings: Timings) -> Result<RunOutcome> {
        timings.train = outcome.seconds;
        timings.total = timings.agent + timings.build + timings.train;
        if !outcome.leaked.is_empty() {
            eprintln!(
                "warning: {} process(es) outlived run {id} and were killed: {}",
                outcome.leaked.len(),
                outcome.leaked.join(", ")
            );
        }
        self.journal.append(Event::Finished {
            id,
            time: now(),
            crash: outcome.crash,
            record: outcome.record.clone(),
            excerpt: outcome.excerpt.clone(),
            timings,
            run: outcome.run.clone(),
            reason: outcome.reason.clone(),
            leaked: outcome.leaked.clone(),
            sandbox: outcome.sandbox.clone(),
            seed: outcome.seed,
        })?;
        failpoint::hit("after-finished");
        Ok(outcome)
    }

    fn description_of(&self, id: u64) -> String {
        self.journal
            .events()
            .iter()
            .find_map(|e| match e {
                Event::Started { id: i, description, .. } if *i == id => Some(description.clone()),
                _ => None,
            })
            .unwrap_or_default()
    }

    /// Decides a finished run (and, for a passing candidate, runs its confirmation).
    fn conclude(
        &mut self,
        id: u64,
        kind: RunKind,
        commit: &str,
        outcome: RunOutcome,
        rerun_of: Option<u64>,
    ) -> Result<Outcome> {
        self.live.phase(id, "decide", &self.description_of(id));
        let state = self.state_before(id);
        let best_before = state.best;
        // σ uses every measurement so far, this one included.
        let sigma = self.state().sigma();
        let (status, reason, val) = match (&outcome.crash, &outcome.record) {
            (Some(c), _) => {
                let status = if *c == CrashClass::Timeout {
                    Status::Timeout
                } else if *c == CrashClass::Interrupted {
                    Status::Interrupted
                } else {
                    Status::Crash
                };
                (status, format!("{}: {}", c.name(), outcome.reason.clone().unwrap_or_default()), None)
            }
            (None, Some(r)) => match kind {
                RunKind::Baseline => (Status::Keep, "baseline measurement".to_string(), Some(r.val_bpb)),
                RunKind::Remeasure => {
                    (Status::Keep, format!("re-measured the incumbent: {:.6}", r.val_bpb), Some(r.val_bpb))
                }
                RunKind::Confirm => (Status::Keep, "confirmation run".to_string(), Some(r.val_bpb)),
                RunKind::Candidate => {
                    let best = best_before.unwrap_or(f64::INFINITY);
                    if self.rule.passes(r.val_bpb, best, sigma) {
                        (Status::Keep, String::new(), Some(r.val_bpb))
                    } else {
                        let why = format!(
                            "Δ {:+.6} is not beyond the margin {:.6}",
                            r.val_bpb - best,
                            self.rule.margin(sigma)
                        );
                        (Status::Discard, why, Some(r.val_bpb))
                    }
                }
            },
            (None, None) => (Status::Crash, "no result".to_string(), None),
        };
        // A passing candidate is confirmed before the branch advances.
        if kind == RunKind::Candidate && status == Status::Keep && self.rule.confirm && !self.rule.strict {
            return self.confirm(id, commit, outcome);
        }
        let keep_branch = status == Status::Keep && kind == RunKind::Candidate;
        let decision = self.decision(
            status,
            reason,
            val,
            best_before,
            sigma,
            if keep_branch { Some(commit) } else { None },
        );
        self.finish_decision(id, decision, &outcome, commit, rerun_of)
    }

    fn decision(
        &self,
        status: Status,
        mut reason: String,
        val: Option<f64>,
        best_before: Option<f64>,
        sigma: Option<f64>,
        new_best: Option<&str>,
    ) -> Decision {
        let delta = val.zip(best_before).map(|(v, b)| v - b);
        if reason.is_empty() {
            reason = format!(
                "Δ {:+.6} beyond the margin {:.6}{}",
                delta.unwrap_or(0.0),
                self.rule.margin(sigma),
                if self.rule.strict { " (strict rule)" } else { "" }
            );
        }
        Decision {
            status,
            reason,
            val_bpb: val,
            best_before,
            delta,
            sigma,
            margin: Some(self.rule.margin(sigma)),
            best_after: if new_best.is_some() { val } else { best_before },
            best_commit: new_best.map(str::to_string).unwrap_or_else(|| self.best_commit()),
        }
    }

    /// Journals the decision, then moves the branch, then rewrites results.tsv.
    fn finish_decision(
        &mut self,
        id: u64,
        decision: Decision,
        outcome: &RunOutcome,
        commit: &str,
        _rerun_of: Option<u64>,
    ) -> Result<Outcome> {
        self.journal.append(Event::Decided { id, time: now(), decision: decision.clone() })?;
        failpoint::hit("after-decided");
        let best = self.best_commit();
        if self.git.head()? != best {
            self.git.reset_hard(&best)?;
        }
        failpoint::hit("after-reset");
        journal::write_tsv(&self.dir, self.journal.events())?;
        self.live.phase(id, "idle", "");
        Ok(Outcome {
            id,
            status: decision.status,
            crash: outcome.crash,
            commit: Some(commit.to_string()),
            peak_mem_mb: outcome.record.as_ref().map(|r| r.peak_mem_mb),
            test_bpb: outcome.record.as_ref().and_then(|r| r.test_bpb),
            reason: decision.reason.clone(),
            excerpt: outcome.excerpt.clone(),
            decision: Some(decision),
        })
    }

    /// Re-runs a passing candidate; keeps it only if the mean of both runs still passes.
    fn confirm(&mut self, id: u64, commit: &str, first: RunOutcome) -> Result<Outcome> {
        let confirm_id = self.journal.next_id();
        self.journal.append(Event::Started {
            id: confirm_id,
            time: now(),
            kind: RunKind::Confirm,
            parent: commit.to_string(),
            description: format!("confirm experiment {id}"),
            hypothesis: None,
            diff_sha256: String::new(),
            rerun_of: Some(id),
        })?;
        failpoint::hit("confirm-started");
        let second = self.measure(confirm_id, commit, Timings::default())?;
        self.settle_confirmation(id, confirm_id, commit, first, second)
    }

    fn settle_confirmation(
        &mut self,
        id: u64,
        confirm_id: u64,
        commit: &str,
        first: RunOutcome,
        second: RunOutcome,
    ) -> Result<Outcome> {
        let state = self.state();
        let best_before = state.best;
        let sigma = state.sigma();
        let v1 = first.record.as_ref().map(|r| r.val_bpb);
        let v2 = second.record.as_ref().map(|r| r.val_bpb);
        let (status, reason, mean) = match (v1, v2, second.crash) {
            (_, _, Some(CrashClass::Interrupted)) => {
                (Status::Interrupted, "interrupted during its confirmation run".to_string(), v1)
            }
            (Some(a), Some(b), None) => {
                let mean = (a + b) / 2.0;
                if self.rule.passes(mean, best_before.unwrap_or(f64::INFINITY), sigma) {
                    (Status::Keep, String::new(), Some(mean))
                } else {
                    let why = format!(
                        "did not hold on confirmation: runs {a:.6} and {b:.6}, mean Δ {:+.6} within the margin {:.6}",
                        mean - best_before.unwrap_or(0.0),
                        self.rule.margin(sigma)
                    );
                    (Status::Discard, why, Some(mean))
                }
            }
            (_, _, c) => (
                Status::Discard,
                format!("the confirmation run crashed ({})", c.map_or("no result", |c| c.name())),
                v1,
            ),
        };
        let kept = status == Status::Keep;
        let confirm_decision =
            self.decision(status, format!("confirmation of experiment {id}"), v2, best_before, sigma, None);
        self.journal.append(Event::Decided { id: confirm_id, time: now(), decision: confirm_decision })?;
        let decision = self.decision(status, reason, mean, best_before, sigma, kept.then_some(commit));
        let mut out = self.finish_decision(id, decision, &first, commit, None)?;
        if second.crash.is_some() {
            out.excerpt = second.excerpt.clone();
        }
        Ok(out)
    }

    /// If the working tree changed outside the train file, journals the turn as a rejected
    /// experiment naming the paths, restores the tree and returns the outcome; else None.
    pub fn reject_out_of_scope(&mut self, description: &str, agent_seconds: f64) -> Result<Option<Outcome>> {
        let best = self.best_commit();
        let Verdict::Rejected { offending } = guard::check(&self.git, &best, &self.fixed)? else {
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
        })?;
        let reason = format!(
            "rejected: only {TRAIN_FILE} may change; these paths changed too: {}. Nothing was committed and the \
             working tree was restored.",
            offending.join(", ")
        );
        let decision = Decision {
            status: Status::Rejected,
            reason: reason.clone(),
            val_bpb: None,
            best_before: self.state().best,
            delta: None,
            sigma: self.state().sigma(),
            margin: None,
            best_after: self.state().best,
            best_commit: best,
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

/// What recovery must do about the last experiment.
enum Open_ {
    NotCommitted { id: u64 },
    Rerun { id: u64, kind: RunKind, commit: String, rerun_of: Option<u64> },
    Undecided { id: u64, kind: RunKind, commit: String, outcome: RunOutcome, rerun_of: Option<u64> },
}

/// The confirmation run of candidate `id`, and its outcome if it finished.
fn confirm_run_of(events: &[Event], id: u64) -> Option<(u64, Option<RunOutcome>)> {
    let cid = events.iter().find_map(|e| match e {
        Event::Started { id: c, kind: RunKind::Confirm, rerun_of: Some(r), .. } if *r == id => Some(*c),
        _ => None,
    })?;
    Some((cid, finished_outcome(events, cid)))
}

fn finished_outcome(events: &[Event], id: u64) -> Option<RunOutcome> {
    events.iter().find_map(|e| match e {
        Event::Finished { id: i, crash, record, excerpt, timings, run, reason, leaked, sandbox, seed, .. }
            if *i == id =>
        {
            Some(RunOutcome {
                crash: *crash,
                record: record.clone(),
                reason: reason.clone().or_else(|| crash.map(|c| c.name().to_string())),
                excerpt: excerpt.clone(),
                seconds: timings.train,
                run: run.clone(),
                leaked: leaked.clone(),
                sandbox: sandbox.clone(),
                seed: *seed,
            })
        }
        _ => None,
    })
}

/// The earliest experiment without a decision, and how far it got.
fn last_open_experiment(events: &[Event]) -> Option<Open_> {
    let decided: std::collections::HashSet<u64> = events
        .iter()
        .filter_map(|e| if let Event::Decided { id, .. } = e { Some(*id) } else { None })
        .collect();
    // The earliest undecided experiment first (a candidate waits on its confirmation).
    let (id, kind, parent, rerun_of) = events.iter().find_map(|e| match e {
        Event::Started { id, kind, parent, rerun_of, .. } if !decided.contains(id) => {
            Some((*id, *kind, parent.clone(), *rerun_of))
        }
        _ => None,
    })?;
    let committed = events.iter().find_map(|e| match e {
        Event::Committed { id: i, commit, .. } if *i == id => Some(commit.clone()),
        _ => None,
    });
    let commit = match (kind, committed) {
        (RunKind::Candidate, None) => return Some(Open_::NotCommitted { id }),
        (RunKind::Candidate, Some(c)) => c,
        (_, _) => parent,
    };
    Some(match finished_outcome(events, id) {
        // An abandoned (Ctrl-C) run is not repeated on resume: it is decided as interrupted.
        Some(outcome) => Open_::Undecided { id, kind, commit, outcome, rerun_of },
        None => Open_::Rerun { id, kind, commit, rerun_of },
    })
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
