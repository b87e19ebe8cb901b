//! The experiment step: measure in pairs until the rule is sure, then keep or discard.
//!
//! A candidate is committed and measured at seed index 0; the incumbent's measurement at
//! index 0 is already known (the baseline's first run, or the incumbent's own pairs). The
//! paired difference goes to the sequential rule (`stats::decide`): a clearly worse
//! candidate is discarded at once, a promising one gets its next pair (the candidate at
//! index 1, the incumbent at index 1 if nobody measured it yet), until the rule keeps it,
//! gives up on it, or `max_pairs` is reached. Every run is its own journal entry
//! (`candidate`, then `confirm` for the candidate's further pairs and `remeasure` for the
//! incumbent's), so what was measured is never lost and [`Session::advance`] can always
//! work out, from the journal alone, what is missing: recovery after `kill -9` is simply
//! advancing every open candidate again.
//!
//! Builds are cached per commit (`bin/<commit>`, the stripped, stamped binary): alternating
//! between a candidate and the incumbent costs one build each, not one per run.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::noise_class::{self, NoiseClass};
use super::state::{Result_, Run};
use super::{Outcome, RunOutcome, SET_ASIDE, Session};
use crate::exec::build::{self as cargo_build, BuildSpec};
use crate::exec::job::{self, JobSpec, RunDir};
use crate::failpoint;
use crate::git::TRAIN_FILE;
use crate::guard::{self, Verdict as Scope};
use crate::journal::{
    self, CrashClass, Decision, Event, EvidenceRecord, RunKind, Status, Timings, Verification, VerifiedSplit,
    now,
};
use crate::stats::{self, Verdict};

/// Attempts at measuring the incumbent at one seed index before the candidate is given up.
const INCUMBENT_ATTEMPTS: usize = 2;

/// A run ready to start, or one that already ended (a build failure).
pub(crate) enum Staged {
    Done(RunOutcome),
    Ready { dir: RunDir, spec: JobSpec, timings: Timings },
}

/// What advancing a candidate needs next.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Measure `commit` at `seed`: an existing started-but-unfinished run, or a new one.
    Measure { id: Option<u64>, kind: RunKind, commit: String, seed: u64 },
    /// A helper run that ended interrupted: decide it as such (a new run replaces it).
    Close(u64),
    /// Decide the candidate.
    Decide(Decided),
}

/// A candidate's decision, before it is written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Decided {
    /// The rule's verdict over these seeds.
    Rule(Verdict, Vec<u64>),
    /// The candidate crashed (at seed index `seed`).
    Crash { class: CrashClass, seed: u64, reason: String },
    /// It was interrupted before its first result.
    Interrupted,
    /// The incumbent could not be measured at a seed the pair needs.
    NoIncumbent { seed: u64 },
}

impl Session {
    // -----------------------------------------------------------------------------------
    // Baseline

    /// Runs the baseline until the rule's K runs (seed indexes 0..K) have results.
    pub fn ensure_baseline(&mut self) -> Result<()> {
        let k = self.rule.baselines_needed();
        loop {
            let state = self.state();
            if state.baseline_values.len() >= k {
                return Ok(());
            }
            if state.baselines_tried >= k + 2 {
                bail!(
                    "the baseline crashed {} times: the unmodified train file does not run (see {})",
                    state.baselines_tried - state.baseline_values.len(),
                    self.runs_dir().display()
                );
            }
            if self.stop.load(std::sync::atomic::Ordering::SeqCst) {
                bail!("stopped before the baseline finished");
            }
            let best = self.best_commit();
            let scope = self.workload.scope(&self.git.changed_since(&best)?);
            let changed: Vec<String> = scope.editable.into_iter().chain(scope.offending).collect();
            if !changed.is_empty() {
                bail!(
                    "the first experiment on a branch is the baseline, run on the unmodified files; {} changed: \
                     undo your edit (git stash -u), run `ar experiment -m baseline`, then redo it (git stash pop)",
                    changed.join(", ")
                );
            }
            // A baseline run left open by a kill is measured again under its id; one that
            // ended interrupted is closed and replaced.
            let open =
                state.runs.values().find(|r| r.kind == RunKind::Baseline && r.decision.is_none()).cloned();
            let mut seed = state.baseline_values.len() as u64;
            let id = match open {
                Some(r) if r.result == Result_::Open && !r.interrupted => {
                    seed = r.seed;
                    r.id
                }
                Some(r) => {
                    self.close_interrupted(r.id)?;
                    continue;
                }
                None => {
                    let id = self.journal.next_id();
                    let description = format!("baseline (run {}/{k})", seed + 1);
                    self.journal.append(Event::Started {
                        id,
                        time: now(),
                        kind: RunKind::Baseline,
                        parent: best.clone(),
                        description,
                        hypothesis: None,
                        diff_sha256: String::new(),
                        rerun_of: None,
                        seed: Some(seed),
                    })?;
                    id
                }
            };
            println!("Running {} …", self.description_of(id));
            let outcome = self.measure(id, &best, seed, Timings::default())?;
            let result = self.decide_measurement(id, &outcome, "baseline measurement")?;
            println!("{}", result.render());
        }
    }

    /// Baselines first; if the agent already edited the train file, the edit is set aside
    /// and restored afterwards.
    fn ensure_baseline_allowing_edit(&mut self) -> Result<()> {
        if self.state().baseline_values.len() >= self.rule.baselines_needed() {
            return Ok(());
        }
        if matches!(self.workload, crate::workload::Workload::Command(_)) {
            return self.ensure_baseline_keeping_edits();
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

    // -----------------------------------------------------------------------------------
    // A candidate

    /// One agent change: guard, commit, then pairs until decided. The train file edit must
    /// be in the working tree.
    pub fn candidate(
        &mut self,
        description: &str,
        hypothesis: Option<&str>,
        agent_seconds: f64,
    ) -> Result<Outcome> {
        self.ensure_baseline_allowing_edit()?;
        let best = self.best_commit();
        match guard::check_scope(&self.git, &best, &self.fixed, &self.workload)? {
            Scope::Rejected { .. } => {
                return Ok(self.reject_out_of_scope(description, agent_seconds)?.expect("rejected"));
            }
            Scope::Allowed { train_changed: false } => {
                bail!(
                    "nothing to test: {} identical to the best commit {}",
                    match &self.workload {
                        crate::workload::Workload::Gpt => format!("{TRAIN_FILE} is"),
                        w => format!("the editable files ({}) are", w.editable().join(", ")),
                    },
                    &best[..7]
                );
            }
            Scope::Allowed { train_changed: true } => {}
        }
        let id = self.journal.next_id();
        let diff_sha256 = self.candidate_diff_sha256(&best)?;
        self.journal.append(Event::Started {
            id,
            time: now(),
            kind: RunKind::Candidate,
            parent: best.clone(),
            description: description.to_string(),
            hypothesis: hypothesis.map(str::to_string),
            diff_sha256,
            rerun_of: None,
            seed: Some(0),
        })?;
        failpoint::hit("after-started");
        if self.git.head()? != best {
            // The agent committed on its own: fold it back into one experiment commit.
            self.git.reset_soft(&best)?;
        }
        let commit = self.commit_edit(&best, &format!("{description}\n\nautoresearch experiment {id}"))?;
        failpoint::hit("after-commit");
        self.journal.append(Event::Committed { id, time: now(), commit })?;
        failpoint::hit("after-committed");
        self.advance(id, agent_seconds)
    }

    /// Measures candidate `id` until it is decided (resuming whatever is already measured).
    pub fn advance(&mut self, id: u64, agent_seconds: f64) -> Result<Outcome> {
        let mut agent_seconds = agent_seconds;
        let mut last: Option<RunOutcome> = None;
        loop {
            let state = self.state();
            let action = self.next_action(&state, id);
            match action {
                Action::Close(run) => self.close_interrupted(run)?,
                Action::Measure { kind, seed, .. } if self.stop.load(std::sync::atomic::Ordering::SeqCst) => {
                    // Ctrl-C: every new run would be abandoned at once, so stop here and
                    // leave the candidate open with the pairs it has; recovery resumes it.
                    return self.leave_open(id, kind, seed);
                }
                Action::Measure { id: existing, kind, commit, seed } => {
                    let run = match existing {
                        Some(run) => run,
                        None => {
                            let run = self.journal.next_id();
                            let description = match kind {
                                RunKind::Confirm => format!("pair {} of experiment {id}", seed + 1),
                                _ => format!("incumbent {} at seed {seed} for experiment {id}", &commit[..7]),
                            };
                            self.journal.append(Event::Started {
                                id: run,
                                time: now(),
                                kind,
                                parent: commit.clone(),
                                description,
                                hypothesis: None,
                                diff_sha256: String::new(),
                                rerun_of: Some(id),
                                seed: Some(seed),
                            })?;
                            if kind == RunKind::Confirm {
                                failpoint::hit("confirm-started");
                            }
                            run
                        }
                    };
                    let timings = Timings { agent: std::mem::take(&mut agent_seconds), ..Timings::default() };
                    let outcome = self.measure(run, &commit, seed, timings)?;
                    if run != id {
                        self.decide_measurement(run, &outcome, &format!("measurement for experiment {id}"))?;
                    }
                    if run == id || kind == RunKind::Confirm {
                        last = Some(outcome);
                    }
                }
                Action::Decide(decided) => return self.decide_candidate(id, decided, last),
            }
        }
    }

    /// Stops measuring candidate `id` on Ctrl-C without deciding it: the pairs measured stay
    /// in the journal, the branch goes back to the best commit, and the next `ar experiment`,
    /// `ar loop --resume` or `ar report --verify` measures the rest (see [`Session::recover`]).
    fn leave_open(&mut self, id: u64, kind: RunKind, seed: u64) -> Result<Outcome> {
        let best = self.best_commit();
        if self.git.head()? != best {
            self.git.reset_hard(&best)?;
        }
        journal::write_tsv(&self.dir, self.journal.events())?;
        self.live.phase(id, "idle", "");
        let next = match kind {
            RunKind::Remeasure => format!("the incumbent's run for pair {}", seed + 1),
            _ => format!("pair {}", seed + 1),
        };
        let commit = self.state().runs.get(&id).and_then(|r| r.commit.clone());
        Ok(Outcome {
            id,
            status: Status::Interrupted,
            crash: None,
            commit,
            decision: None,
            peak_mem_mb: None,
            test_bpb: None,
            reason: format!(
                "interrupted (Ctrl-C) before {next}; left undecided with the pairs it has: the next \
                 `ar experiment` or `ar loop --resume` measures the rest"
            ),
            excerpt: None,
            metric: self.workload.metric_name().to_string(),
        })
    }

    /// Journals the start of a helper run of candidate `id` (its next pair, or the incumbent
    /// at a seed) and returns its id.
    pub(crate) fn start_helper(&mut self, id: u64, kind: RunKind, commit: &str, seed: u64) -> Result<u64> {
        let run = self.journal.next_id();
        let description = match kind {
            RunKind::Confirm => format!("pair {} of experiment {id}", seed + 1),
            _ => format!("incumbent {} at seed {seed} for experiment {id}", &commit[..7.min(commit.len())]),
        };
        self.journal.append(Event::Started {
            id: run,
            time: now(),
            kind,
            parent: commit.to_string(),
            description,
            hypothesis: None,
            diff_sha256: String::new(),
            rerun_of: Some(id),
            seed: Some(seed),
        })?;
        if kind == RunKind::Confirm {
            failpoint::hit("confirm-started");
        }
        Ok(run)
    }

    /// Guard and commit of the agent's edit, without measuring it: the candidate's id, or
    /// the outcome of a rejected or duplicate turn.
    pub fn commit_candidate(
        &mut self,
        description: &str,
        hypothesis: Option<&str>,
        agent_seconds: f64,
    ) -> Result<std::result::Result<u64, Option<Outcome>>> {
        let best = self.best_commit();
        match guard::check_scope(&self.git, &best, &self.fixed, &self.workload)? {
            Scope::Rejected { .. } => return Ok(Err(self.reject_out_of_scope(description, agent_seconds)?)),
            Scope::Allowed { train_changed: false } => {
                self.agent_turn_without_change(
                    "no-change",
                    &format!("{TRAIN_FILE} is unchanged"),
                    agent_seconds,
                )?;
                return Ok(Err(None));
            }
            Scope::Allowed { train_changed: true } => {}
        }
        let diff_sha256 = self.candidate_diff_sha256(&best)?;
        // The same change against the same incumbent is never measured twice.
        if let Some(twin) = self.journal.events().iter().find_map(|e| match e {
            Event::Started { id, kind: RunKind::Candidate, parent, diff_sha256: d, .. }
                if *d == diff_sha256 && *parent == best =>
            {
                Some(*id)
            }
            _ => None,
        }) {
            self.agent_turn_without_change(
                "duplicate",
                &format!("the same change as experiment {twin}"),
                agent_seconds,
            )?;
            println!("agent turn: the same change as experiment {twin}; not measured again");
            return Ok(Err(None));
        }
        let id = self.journal.next_id();
        self.journal.append(Event::Started {
            id,
            time: now(),
            kind: RunKind::Candidate,
            parent: best.clone(),
            description: description.to_string(),
            hypothesis: hypothesis.map(str::to_string),
            diff_sha256,
            rerun_of: None,
            seed: Some(0),
        })?;
        if self.git.head()? != best {
            self.git.reset_soft(&best)?;
        }
        let commit = self.git.commit_train_file(&format!("{description}\n\nautoresearch experiment {id}"))?;
        self.journal.append(Event::Committed { id, time: now(), commit: commit.clone() })?;
        // Build it now, while the tree is on it; then back to the incumbent for the next turn.
        let expected = prepare::manifest::sha256_hex(self.git.show(&commit, TRAIN_FILE)?.as_bytes());
        let _ = self.binary_for(&commit, &expected);
        self.git.reset_hard(&best)?;
        Ok(Ok(id))
    }

    /// A candidate whose incumbent was replaced while it was measured cannot be kept
    /// against the old one: its change is re-based onto the new incumbent as a new
    /// candidate (or, when it does not apply, discarded with that reason).
    pub(crate) fn supersede(&mut self, id: u64, best: &str) -> Result<Outcome> {
        let state = self.state();
        let r = state.runs.get(&id).cloned().expect("a started candidate");
        let commit = r.commit.clone().unwrap_or_default();
        let patch = self.git.run(&["diff", &r.parent, &commit, "--", TRAIN_FILE])?;
        self.git.reset_hard(best)?;
        let applied = !patch.trim().is_empty() && self.git.apply_patch(&patch)?;
        let reason = if applied {
            let new = self.journal.next_id();
            let description = format!("{} (re-based)", r.description);
            match self.commit_candidate(&description, None, 0.0)? {
                Ok(new_id) => format!(
                    "superseded: the incumbent changed while it was measured; re-based as experiment {new_id}"
                ),
                Err(_) => {
                    let _ = new;
                    "superseded: the incumbent changed while it was measured, and the change is already there"
                        .to_string()
                }
            }
        } else {
            self.git.reset_hard(best)?;
            "superseded: the incumbent changed while it was measured and the change does not apply to it"
                .to_string()
        };
        let decision = Decision {
            status: Status::Discard,
            reason: reason.clone(),
            val_bpb: state.mean(&commit),
            best_before: state.mean(&r.parent),
            delta: None,
            sigma: state.sigma(),
            margin: None,
            best_after: state.best(),
            best_commit: best.to_string(),
            evidence: None,
        };
        self.journal.append(Event::Decided { id, time: now(), decision: decision.clone() })?;
        journal::write_tsv(&self.dir, self.journal.events())?;
        Ok(self.outcome_of(id, decision, &RunOutcome::default()))
    }

    /// What candidate `id` needs next, from the journal alone.
    pub(crate) fn next_action(&self, state: &super::State, id: u64) -> Action {
        let Some(cand) = state.runs.get(&id) else { return Action::Decide(Decided::Interrupted) };
        let Some(commit) = cand.commit.clone() else { return Action::Decide(Decided::Interrupted) };
        let parent = cand.parent.clone();
        // Helper runs that ended interrupted are closed first.
        let helpers: Vec<&Run> = state.runs.values().filter(|r| r.rerun_of == Some(id)).collect();
        if let Some(r) = helpers
            .iter()
            .find(|r| r.decision.is_none() && r.result == Result_::Open && r.finished_interrupted())
        {
            return Action::Close(r.id);
        }
        let class = self.noise_class(state, id);
        let pool = state.pool_before(self.journal.events(), id, |d| self.noise_class(state, d) == class);
        let mut diffs = Vec::new();
        let mut seeds = Vec::new();
        for j in 0..self.rule.paired.max_pairs.max(1) as u64 {
            // The candidate at j.
            let value = state.value(&commit, j);
            if value.is_none() {
                let runs: Vec<&Run> = std::iter::once(cand)
                    .filter(|_| j == 0)
                    .chain(helpers.iter().copied().filter(|r| r.kind == RunKind::Confirm && r.seed == j))
                    .collect();
                let kind = if j == 0 { RunKind::Candidate } else { RunKind::Confirm };
                if let Some(open) =
                    runs.iter().find(|r| r.result == Result_::Open && !r.finished_interrupted())
                {
                    return Action::Measure { id: Some(open.id), kind, commit, seed: j };
                }
                let crashes: Vec<CrashClass> = runs
                    .iter()
                    .filter_map(|r| match &r.result {
                        Result_::Crash(c) => Some(*c),
                        _ => None,
                    })
                    .collect();
                // A job lost by its scheduler (cancelled, a node failure) is measured again once.
                let requeue = crashes == [CrashClass::Lost];
                if !crashes.is_empty() && !requeue {
                    let class =
                        crashes.iter().copied().find(|c| *c != CrashClass::Lost).unwrap_or(CrashClass::Lost);
                    let reason = self.crash_reason(&runs);
                    return Action::Decide(Decided::Crash { class, seed: j, reason });
                }
                if j == 0 && cand.finished_interrupted() && !requeue {
                    return Action::Decide(Decided::Interrupted);
                }
                return Action::Measure { id: None, kind: RunKind::Confirm, commit, seed: j };
            }
            // The incumbent at j.
            let Some(base) = state.value(&parent, j) else {
                let runs: Vec<&&Run> =
                    helpers.iter().filter(|r| r.kind == RunKind::Remeasure && r.seed == j).collect();
                if let Some(open) =
                    runs.iter().find(|r| r.result == Result_::Open && !r.finished_interrupted())
                {
                    return Action::Measure {
                        id: Some(open.id),
                        kind: RunKind::Remeasure,
                        commit: parent,
                        seed: j,
                    };
                }
                if runs.iter().filter(|r| matches!(r.result, Result_::Crash(_))).count() >= INCUMBENT_ATTEMPTS
                {
                    return Action::Decide(Decided::NoIncumbent { seed: j });
                }
                return Action::Measure { id: None, kind: RunKind::Remeasure, commit: parent, seed: j };
            };
            diffs.push(value.unwrap() - base);
            seeds.push(j);
            match stats::decide(&self.rule.paired, &diffs, &pool) {
                Verdict::Continue(_) => continue,
                verdict => return Action::Decide(Decided::Rule(verdict, seeds)),
            }
        }
        // max_pairs reached without a verdict cannot happen (the rule decides at L), but
        // decide on what there is rather than loop.
        let verdict = stats::decide(
            &stats::Rule { max_pairs: diffs.len().max(1), ..self.rule.paired.clone() },
            &diffs,
            &pool,
        );
        Action::Decide(Decided::Rule(verdict, seeds))
    }

    /// Candidate `id`'s noise class: which earlier candidates its σ_d is pooled with.
    pub(crate) fn noise_class(&self, state: &super::State, id: u64) -> NoiseClass {
        if !matches!(self.workload, crate::workload::Workload::Gpt) {
            return NoiseClass::Code;
        }
        if let Some(class) = self.noise_classes.lock().unwrap().get(&id) {
            return *class;
        }
        let Some(run) = state.runs.get(&id) else { return NoiseClass::Code };
        let Some(commit) = &run.commit else { return NoiseClass::Code };
        let class = match (self.git.show(&run.parent, TRAIN_FILE), self.git.show(commit, TRAIN_FILE)) {
            (Ok(before), Ok(after)) => noise_class::classify(&before, &after),
            _ => NoiseClass::Code,
        };
        self.noise_classes.lock().unwrap().insert(id, class);
        class
    }

    fn crash_reason(&self, runs: &[&Run]) -> String {
        runs.iter()
            .find_map(|r| {
                self.journal.events().iter().find_map(|e| match e {
                    Event::Finished { id, reason: Some(why), crash: Some(c), .. } if *id == r.id => {
                        Some(format!("{}: {why}", c.name()))
                    }
                    _ => None,
                })
            })
            .unwrap_or_else(|| "the run crashed".to_string())
    }

    /// Journals the decision of a helper run (a baseline, a pair, the incumbent at a seed).
    pub(crate) fn decide_measurement(
        &mut self,
        id: u64,
        outcome: &RunOutcome,
        what: &str,
    ) -> Result<Outcome> {
        let state = self.state();
        let (status, reason, val) = match (&outcome.crash, &outcome.record) {
            (Some(c), _) => (
                crash_status(*c),
                format!("{}: {}", c.name(), outcome.reason.clone().unwrap_or_default()),
                None,
            ),
            (None, Some(r)) => (Status::Keep, what.to_string(), Some(r.val_bpb)),
            (None, None) => (Status::Crash, "no result".to_string(), None),
        };
        let decision = Decision {
            status,
            reason,
            val_bpb: val,
            best_before: state.best(),
            delta: None,
            sigma: state.sigma(),
            margin: None,
            best_after: state.best(),
            best_commit: state.best_commit.clone(),
            evidence: None,
        };
        self.journal.append(Event::Decided { id, time: now(), decision: decision.clone() })?;
        journal::write_tsv(&self.dir, self.journal.events())?;
        Ok(self.outcome_of(id, decision, outcome))
    }

    /// Decides a run that ended interrupted (Ctrl-C): it stands as interrupted, and the
    /// measurement it was for is taken again under a new id.
    pub(crate) fn close_interrupted(&mut self, id: u64) -> Result<()> {
        let state = self.state();
        let decision = Decision {
            status: Status::Interrupted,
            reason: "interrupted (Ctrl-C); measured again".into(),
            val_bpb: None,
            best_before: state.best(),
            delta: None,
            sigma: state.sigma(),
            margin: None,
            best_after: state.best(),
            best_commit: state.best_commit.clone(),
            evidence: None,
        };
        self.journal.append(Event::Decided { id, time: now(), decision })?;
        Ok(())
    }

    /// Writes candidate `id`'s decision, moves the branch, rewrites results.tsv.
    pub(crate) fn decide_candidate(
        &mut self,
        id: u64,
        decided: Decided,
        last: Option<RunOutcome>,
    ) -> Result<Outcome> {
        self.live.phase(id, "decide", &self.description_of(id));
        let state = self.state();
        let cand = state.runs.get(&id).cloned().expect("the candidate was started");
        let commit = cand.commit.clone().unwrap_or_default();
        let parent = cand.parent.clone();
        let best_before = state.mean(&parent);
        let (status, reason, evidence, delta) = match &decided {
            Decided::Rule(verdict, seeds) => {
                let ev = verdict.evidence();
                let n = ev.pairs;
                let class = (!self.rule.strict()).then(|| self.noise_class(&state, id));
                let record = EvidenceRecord {
                    pairs: n,
                    delta: ev.delta,
                    se: ev.se,
                    sigma_d: ev.sigma_d,
                    dof: ev.dof,
                    confidence: ev.confidence,
                    needed: (!self.rule.strict()).then(|| self.rule.paired.needed(n)),
                    seeds: seeds.clone(),
                    class: class.map(|c| c.name().to_string()),
                };
                let (status, why) = match verdict {
                    Verdict::Keep(_) if self.rule.strict() => {
                        (Status::Keep, "better (strict rule: any improvement)".to_string())
                    }
                    Verdict::Keep(_) => (
                        Status::Keep,
                        format!(
                            "kept: at least {} confident (α = {})",
                            percent(self.rule.paired.needed(n)),
                            self.rule.paired.alpha
                        ),
                    ),
                    Verdict::Discard(_, why) => (Status::Discard, format!("discarded: {why}")),
                    Verdict::Continue(_) => (Status::Discard, "discarded: no verdict".to_string()),
                };
                let noise = match class {
                    None => String::new(),
                    Some(NoiseClass::Code) if !matches!(self.workload, crate::workload::Workload::Gpt) => {
                        String::new()
                    }
                    Some(class) => format!(" (σ_d of {} changes)", class.name()),
                };
                (status, format!("{}{noise} — {why}", ev.line()), Some(record), Some(ev.delta))
            }
            Decided::Crash { class, seed, reason } if *seed == 0 => {
                (crash_status(*class), reason.clone(), None, None)
            }
            Decided::Crash { class, seed, reason } => (
                Status::Discard,
                format!("discarded: crashed on its pair at seed {seed} ({}): {reason}", class.name()),
                None,
                None,
            ),
            Decided::Interrupted => {
                (Status::Interrupted, "interrupted before its first result".to_string(), None, None)
            }
            Decided::NoIncumbent { seed } => (
                Status::Discard,
                format!(
                    "discarded: the incumbent could not be measured at seed {seed} ({INCUMBENT_ATTEMPTS} attempts)"
                ),
                None,
                None,
            ),
        };
        // A keep is final only once the workload's checks pass on the candidate's tree.
        let (status, reason, checks_excerpt) = if status == Status::Keep {
            self.checks_before_keep(id, &commit, reason)?
        } else {
            (status, reason, None)
        };
        let kept = status == Status::Keep;
        let val = state.mean(&commit);
        let decision = Decision {
            status,
            reason,
            val_bpb: val,
            best_before,
            delta,
            sigma: evidence.as_ref().and_then(|e| e.sigma_d),
            margin: None,
            best_after: if kept { val } else { best_before },
            best_commit: if kept { commit.clone() } else { state.best_commit.clone() },
            evidence,
        };
        self.journal.append(Event::Decided { id, time: now(), decision: decision.clone() })?;
        failpoint::hit("after-decided");
        let best = self.best_commit();
        if self.git.head()? != best {
            self.git.reset_hard(&best)?;
        }
        failpoint::hit("after-reset");
        // A discarded commit's binary is not needed again.
        if !kept && !commit.is_empty() {
            let _ = std::fs::remove_file(self.bin_dir().join(&commit));
        }
        journal::write_tsv(&self.dir, self.journal.events())?;
        self.live.phase(id, "idle", "");
        let outcome = last.unwrap_or_default();
        let mut out = self.outcome_of(id, decision, &outcome);
        out.commit = Some(commit);
        if checks_excerpt.is_some() {
            out.excerpt = checks_excerpt;
        }
        Ok(out)
    }

    fn outcome_of(&self, id: u64, decision: Decision, outcome: &RunOutcome) -> Outcome {
        Outcome {
            id,
            status: decision.status,
            crash: outcome.crash,
            commit: None,
            // A command workload's record has no memory figure (0): none is shown.
            peak_mem_mb: outcome.record.as_ref().map(|r| r.peak_mem_mb).filter(|mb| *mb > 0.0),
            test_bpb: outcome.record.as_ref().and_then(|r| r.test_bpb),
            reason: decision.reason.clone(),
            excerpt: outcome.excerpt.clone(),
            decision: Some(decision),
            metric: self.workload.metric_name().to_string(),
        }
    }

    // -----------------------------------------------------------------------------------
    // Recovery

    /// Finishes or repeats whatever an interrupted `ar` left behind, then puts the branch on
    /// the best commit — keeping any pending edit of the train file.
    pub fn recover(&mut self) -> Result<()> {
        let pending_edit = self.pending_train_edit()?;
        let mut recovered = false;
        // Verification runs of a verification that never completed are closed (it is rerun
        // from scratch when asked for again).
        let open_verify: Vec<u64> = self
            .state()
            .runs
            .values()
            .filter(|r| r.kind == RunKind::Verify && r.decision.is_none())
            .map(|r| r.id)
            .collect();
        for id in open_verify {
            self.close_interrupted(id)?;
            recovered = true;
        }
        for id in self.state().open_candidates() {
            recovered = true;
            let committed = self.state().runs.get(&id).is_some_and(|r| r.commit.is_some());
            if !committed {
                // Killed between `started` and the commit: the change cannot be known for
                // sure, so it is recorded as interrupted, not guessed at.
                let state = self.state();
                let decision = Decision {
                    status: Status::Interrupted,
                    reason: "interrupted before its commit was made".into(),
                    val_bpb: None,
                    best_before: state.best(),
                    delta: None,
                    sigma: state.sigma(),
                    margin: None,
                    best_after: state.best(),
                    best_commit: state.best_commit.clone(),
                    evidence: None,
                };
                self.journal.append(Event::Decided { id, time: now(), decision })?;
                continue;
            }
            println!("Resuming experiment {id}: {}", self.description_of(id));
            let out = self.advance(id, 0.0)?;
            println!("{}", out.render());
        }
        // A baseline run started but never finished is measured again by ensure_baseline.
        // Only the supervisor's own leftovers are cleaned: an interrupted experiment, or the
        // branch left on one of its experiment commits. Anything else in the working tree is
        // the agent's and stays for the scope guard to judge.
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

    // -----------------------------------------------------------------------------------
    // The end-of-session check

    /// Measures the best and the base commit at `pairs` fresh seed indexes (never used by a
    /// decision), on val and test, and journals the gain with its interval.
    pub fn verify(&mut self, pairs: usize, level: f64) -> Result<Option<Verification>> {
        let state = self.state();
        let (best, base) = (state.best_commit.clone(), self.base_commit.clone());
        if best == base {
            return Ok(None);
        }
        let verification = self.verify_pair(&best, &base, pairs, level)?;
        self.journal.append(Event::Verified { time: now(), verification: verification.clone() })?;
        let _ = std::fs::remove_dir_all(self.bin_dir());
        Ok(Some(verification))
    }

    /// Measures `better` against `reference` at `pairs` fresh seed indexes, val and test
    /// (the runs are journaled as `verify`); the gain is reference − better.
    pub fn verify_pair(
        &mut self,
        better: &str,
        reference: &str,
        pairs: usize,
        level: f64,
    ) -> Result<Verification> {
        let state = self.state();
        let (best, base) = (better.to_string(), reference.to_string());
        // Gains are improvement-positive whichever way the metric improves.
        let direction = self.rule.paired.direction;
        let believed = state.mean(&base).zip(state.mean(&best)).map(|(b, k)| direction.improvement(k - b));
        // Fresh indexes: past every index used so far, starting at 1000.
        let first = 1000.max(state.runs.values().map(|r| r.seed + 1).max().unwrap_or(0));
        let seeds: Vec<u64> = (first..first + pairs as u64).collect();
        let mut values: Vec<[(f64, Option<f64>); 2]> = Vec::new();
        for &seed in &seeds {
            let mut pair = [(0.0, None); 2];
            for (slot, commit) in [&base, &best].into_iter().enumerate() {
                let id = self.journal.next_id();
                self.journal.append(Event::Started {
                    id,
                    time: now(),
                    kind: RunKind::Verify,
                    parent: commit.clone(),
                    description: format!(
                        "verify {} {} at fresh seed {seed}",
                        if slot == 0 { "reference" } else { "candidate" },
                        &commit[..7.min(commit.len())]
                    ),
                    hypothesis: None,
                    diff_sha256: String::new(),
                    rerun_of: None,
                    seed: Some(seed),
                })?;
                println!("Verifying {} at fresh seed {seed} …", &commit[..7.min(commit.len())]);
                let outcome = self.measure(id, commit, seed, Timings::default())?;
                self.decide_measurement(id, &outcome, "verification measurement")?;
                match &outcome.record {
                    Some(r) if outcome.crash.is_none() => pair[slot] = (r.val_bpb, r.test_bpb),
                    _ => bail!(
                        "verification run {id} crashed ({}); the verification is incomplete",
                        outcome.reason.unwrap_or_default()
                    ),
                }
            }
            values.push(pair);
        }
        let mut splits = Vec::new();
        for (name, pick) in [("val", 0usize), ("test", 1)] {
            let gains: Vec<f64> = values
                .iter()
                .filter_map(|[b, k]| {
                    if pick == 0 {
                        Some(direction.improvement(k.0 - b.0))
                    } else {
                        b.1.zip(k.1).map(|(x, y)| direction.improvement(y - x))
                    }
                })
                .collect();
            if let Some((mean, low, high)) = stats::interval(&gains, level) {
                splits.push(VerifiedSplit { split: name.into(), pairs: gains.len(), gain: mean, low, high });
            }
        }
        Ok(Verification {
            best_commit: best,
            base_commit: base,
            seeds,
            believed,
            splits,
            level,
            sigma_x: self.state().sigma_x(),
        })
    }

    // -----------------------------------------------------------------------------------
    // One measurement

    fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The stamped, stripped binary of `commit`, built once per session (the tree is moved
    /// to `commit` to build it).
    fn binary_for(
        &mut self,
        commit: &str,
        expected: &str,
    ) -> Result<std::result::Result<(PathBuf, f64), cargo_build::BuildFailure>> {
        let cached = self.bin_dir().join(commit);
        if cached.is_file() && cargo_build::embeds_train_sha(&cached, expected)? {
            return Ok(Ok((cached, 0.0)));
        }
        if self.git.head()? != commit || !self.git.changed_since(commit)?.is_empty() {
            self.git.reset_hard(commit)?;
        }
        let spec = BuildSpec { bin: "train".into(), features: self.features.clone() };
        let built = match cargo_build::build(&self.repo, &spec)? {
            Err(failure) => return Ok(Err(failure)),
            Ok(b) => b,
        };
        if !(built.stamped && built.train_sha256 == expected) {
            bail!(
                "{} was not built from {TRAIN_FILE} at {}: is another checkout building into the same target \
                 directory?",
                built.binary.display(),
                &commit[..7.min(commit.len())]
            );
        }
        std::fs::create_dir_all(self.bin_dir())?;
        let tmp = self.bin_dir().join(format!(".{commit}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let staged = cargo_build::stage(&built.binary, &tmp, expected)?;
        std::fs::rename(&staged, &cached)?;
        let _ = std::fs::remove_dir_all(&tmp);
        Ok(Ok((cached, built.seconds)))
    }

    /// Builds (or reuses) `commit`'s binary and measures it at seed index `seed`: train, then
    /// score, in a fresh run directory, in this process. Journals `finished`.
    fn measure(&mut self, id: u64, commit: &str, seed: u64, timings: Timings) -> Result<RunOutcome> {
        if let crate::workload::Workload::Command(spec) = &self.workload {
            let spec = spec.clone();
            return self.measure_command(&spec, id, commit, seed, timings);
        }
        let (dir, spec, timings) = match self.stage_run(id, commit, seed, timings)? {
            Staged::Done(outcome) => return Ok(outcome),
            Staged::Ready { dir, spec, timings } => (dir, spec, timings),
        };
        let description = self.description_of(id);
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
        self.complete_run(id, commit, &dir, result, timings)
    }

    /// Everything before a run can start: the lint, the build (cached per commit), a fresh
    /// run directory with its spec. A run that fails here (a build error) is journaled as
    /// finished at once.
    pub(crate) fn stage_run(
        &mut self,
        id: u64,
        commit: &str,
        seed: u64,
        mut timings: Timings,
    ) -> Result<Staged> {
        let description = self.description_of(id);
        self.live.phase(id, "build", &description);
        let source = self.git.show(commit, TRAIN_FILE)?;
        let expected = prepare::manifest::sha256_hex(source.as_bytes());
        if let Err(why) = guard::lint(&source) {
            let mut outcome = RunOutcome::crashed(CrashClass::Build, why.clone());
            outcome.excerpt = Some(crate::excerpt::excerpt(&why));
            return Ok(Staged::Done(self.record_finished(id, outcome, timings)?));
        }
        let built = match self.binary_for(commit, &expected) {
            Ok(Ok(b)) => b,
            Ok(Err(failure)) => {
                let mut outcome = RunOutcome::crashed(CrashClass::Build, "the train file does not compile");
                outcome.excerpt = Some(crate::excerpt::excerpt(&failure.first_error));
                let dir = RunDir::create(&self.runs_dir(), id)?;
                let _ = std::fs::write(dir.root.join("build.log"), &failure.log);
                outcome.run = Some(dir.name());
                return Ok(Staged::Done(self.record_finished(id, outcome, timings)?));
            }
            Err(e) => {
                let outcome = RunOutcome::crashed(CrashClass::NoResult, format!("{e:#}"));
                return Ok(Staged::Done(self.record_finished(id, outcome, timings)?));
            }
        };
        let (binary, build_seconds) = built;
        timings.build = build_seconds;
        self.live.phase(id, "train", &description);
        let dir = RunDir::create(&self.runs_dir(), id)?;
        let spec = self.job_spec(id, &dir, binary, expected, seed);
        dir.write_spec(&spec)?;
        Ok(Staged::Ready { dir, spec, timings })
    }

    /// Journals a run's outcome (after the seed check).
    pub(crate) fn complete_run(
        &mut self,
        id: u64,
        commit: &str,
        dir: &RunDir,
        result: job::JobOutcome,
        timings: Timings,
    ) -> Result<RunOutcome> {
        let mut outcome = RunOutcome::from_job(dir, result);
        self.check_seed(commit, &mut outcome);
        self.record_finished(id, outcome, timings)
    }

    /// The job of one measurement.
    fn job_spec(
        &self,
        id: u64,
        dir: &RunDir,
        binary: PathBuf,
        train_sha256: String,
        seed_offset: u64,
    ) -> JobSpec {
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
            audit_rows: job::audit_rows(self.profile),
            train_deadline_secs: train_deadline,
            deadline_is_budget,
            serve_deadline_secs: timeout,
            sandbox: self.sandbox,
            env: self.job_env.clone(),
            score_test: self.kind_of(id) == Some(RunKind::Verify),
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
                    if state.runs.get(id).and_then(|r| r.commit.as_deref()) == Some(commit) =>
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
    pub(crate) fn record_finished(
        &mut self,
        id: u64,
        outcome: RunOutcome,
        mut timings: Timings,
    ) -> Result<RunOutcome> {
        timings.train = outcome.seconds - outcome.score_seconds;
        timings.score = outcome.score_seconds;
        timings.total = timings.agent + timings.build + timings.train + timings.score;
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
}

/// The status of a crash class.
fn crash_status(c: CrashClass) -> Status {
    match c {
        CrashClass::Timeout => Status::Timeout,
        CrashClass::Interrupted => Status::Interrupted,
        CrashClass::Rejected => Status::Rejected,
        _ => Status::Crash,
    }
}

fn percent(p: f64) -> String {
    format!("{:.1} %", 100.0 * p)
}
