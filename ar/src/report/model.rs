//! The journal turned into one row per experiment, plus the session-wide numbers every view
//! (plot, Markdown, JSON summary, digest, `ar status`) agrees on.
//!
//! The journal is a stream of events, and an experiment's events can be missing or repeated:
//! a `kill -9` leaves an experiment `started` but never `finished`; a resume writes a second
//! `session` event and may re-run an id (the later `started` wins); confirm and remeasure runs
//! point back at the run they repeat. All views read the same [`Model`], so a count in the
//! plot's title can never disagree with the Markdown or the JSON.

use std::collections::{BTreeMap, HashMap};

use prepare::hardware::Hardware;

use crate::journal::{CrashClass, Event, RuleConfig, RunKind, Status, Timings};

/// How an experiment ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Keep,
    Discard,
    /// No usable result (build failure, OOM, timeout, rejected change, interrupted, …).
    Crash(CrashClass),
    /// Started and not finished, with no later session or stop: in flight (or the loop died
    /// and nobody has resumed it yet; only `ar status` can tell, from live.json).
    Running,
    /// Finished with a result but no decision yet (the decision is the next event).
    Pending,
}

impl Outcome {
    /// The word every view prints.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Keep => "keep",
            Outcome::Discard => "discard",
            Outcome::Crash(CrashClass::Timeout) => "timeout",
            Outcome::Crash(CrashClass::Rejected) => "rejected",
            Outcome::Crash(CrashClass::Interrupted) => "interrupted",
            Outcome::Crash(_) => "crash",
            Outcome::Running => "running",
            Outcome::Pending => "pending",
        }
    }

    /// The status plus the crash class where it adds something (`crash:oom`).
    pub fn label(self) -> String {
        match self {
            Outcome::Crash(c) if self.name() == "crash" => format!("crash:{}", c.name()),
            o => o.name().to_string(),
        }
    }

    pub fn is_crash(self) -> bool {
        matches!(self, Outcome::Crash(_))
    }
}

/// One noise class's σ_d at its latest decision.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassNoise {
    /// `tuning`, `structural` or `code`.
    pub class: String,
    pub sigma_d: f64,
    /// Degrees of freedom σ_d rested on at that decision.
    pub dof: f64,
    /// Candidates of this class decided on the paired rule.
    pub decided: usize,
}

impl ClassNoise {
    /// `0.000812 for tuning changes (14 dof)`.
    pub fn phrase(&self) -> String {
        format!("{:.6} for {} changes ({:.0} dof)", self.sigma_d, self.class, self.dof)
    }
}

/// One experiment, everything the journal says about it.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: u64,
    pub kind: RunKind,
    pub description: String,
    pub hypothesis: Option<String>,
    pub parent: String,
    pub commit: Option<String>,
    pub rerun_of: Option<u64>,
    pub started: f64,
    pub finished: Option<f64>,
    pub outcome: Outcome,
    pub val_bpb: Option<f64>,
    pub test_bpb: Option<f64>,
    /// val_bpb − best before the decision (negative = better).
    pub delta: Option<f64>,
    pub sigma: Option<f64>,
    pub margin: Option<f64>,
    pub best_after: Option<f64>,
    pub reason: Option<String>,
    pub timings: Option<Timings>,
    pub training_seconds: Option<f64>,
    pub eval_seconds: Option<f64>,
    pub peak_mem_mb: Option<f64>,
    /// Sanitised tail of a crashed program's output; untrusted text.
    pub excerpt: Option<String>,
    /// Paired rule: the evidence behind the decision.
    pub evidence: Option<crate::journal::EvidenceRecord>,
    /// Where it ran (`local:0`, `slurm:1`), when a pool ran it.
    pub worker: Option<String>,
}

impl Row {
    fn new(id: u64, time: f64, kind: RunKind) -> Row {
        Row {
            id,
            kind,
            description: String::new(),
            hypothesis: None,
            parent: String::new(),
            commit: None,
            rerun_of: None,
            started: time,
            finished: None,
            outcome: Outcome::Running,
            val_bpb: None,
            test_bpb: None,
            delta: None,
            sigma: None,
            margin: None,
            best_after: None,
            reason: None,
            timings: None,
            training_seconds: None,
            eval_seconds: None,
            peak_mem_mb: None,
            excerpt: None,
            evidence: None,
            worker: None,
        }
    }

    /// The first 7 characters of the commit, or `-` before one exists.
    pub fn short_commit(&self) -> &str {
        self.commit.as_deref().map_or("-", short)
    }

    /// The description, or what the run repeats for re-runs that carry none.
    pub fn what(&self) -> String {
        match (self.description.is_empty(), self.rerun_of) {
            (true, Some(of)) => format!("{} of #{of}", kind_name(self.kind)),
            (true, None) => kind_name(self.kind).to_string(),
            _ => self.description.clone(),
        }
    }

    /// A run repeating an earlier one rather than trying something new.
    pub fn is_rerun(&self) -> bool {
        !matches!(self.kind, RunKind::Candidate)
    }
}

/// The setup of the session, from its `session` events.
#[derive(Debug, Clone)]
pub struct Setup {
    pub tag: String,
    pub branch: String,
    pub base_commit: String,
    pub profile: String,
    pub profile_hash: String,
    pub hardware: Hardware,
    pub agent: String,
    pub budget_secs: f64,
    pub rule: RuleConfig,
    /// What the session fixed when it was created (budget, scoring, sandbox, …).
    pub settings: Option<crate::journal::SessionSettings>,
    /// When the first `session` event was written.
    pub started: f64,
    /// Number of `session` events with `resumed: true`.
    pub resumes: usize,
}

/// A decision's effect on the incumbent, in journal order: the running-best line.
#[derive(Debug, Clone, PartialEq)]
pub struct BestStep {
    pub id: u64,
    pub best: f64,
    pub commit: String,
    pub sigma: Option<f64>,
}

/// Agent turns that produced no experiment (no change, gave up, error).
#[derive(Debug, Clone, Default)]
pub struct IdleTurns {
    pub count: usize,
    pub seconds: f64,
    /// outcome → count, sorted by outcome.
    pub by_outcome: BTreeMap<String, usize>,
}

/// Everything the views need, built once from the events.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub setup: Option<Setup>,
    /// Experiments in order of first appearance (ids ascend in a sequential loop).
    pub rows: Vec<Row>,
    pub best_steps: Vec<BestStep>,
    pub idle: IdleTurns,
    /// The last `stopped` event, if it is the last word of the journal.
    pub stopped: Option<(f64, String)>,
    /// The last end-of-session verification (best against base on fresh seeds).
    pub verification: Option<crate::journal::Verification>,
    /// Time of the last event.
    pub last_time: Option<f64>,
    /// The data the runs trained on and whether it is synthetic, from the first record.
    pub data: Option<(String, bool)>,
}

/// Counts by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub experiments: usize,
    pub kept: usize,
    pub discarded: usize,
    /// Every crash class, including timeouts, rejected changes and interrupted runs.
    pub crashed: usize,
    pub running: usize,
    pub pending: usize,
    pub candidates: usize,
    pub kept_candidates: usize,
    pub discarded_candidates: usize,
    pub baseline_runs: usize,
    pub confirm_runs: usize,
    pub remeasure_runs: usize,
    /// End-of-session verification runs (fresh seeds).
    pub verify_runs: usize,
    /// crash class name → count, sorted by name.
    pub crashes: BTreeMap<&'static str, usize>,
}

/// The best result and where it came from.
#[derive(Debug, Clone)]
pub struct Best {
    pub val_bpb: f64,
    pub commit: String,
    /// The kept experiment that produced the best commit, if the journal has it.
    pub row: Option<usize>,
}

/// Seconds per phase, summed over finished experiments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeTotals {
    pub experiments: usize,
    pub agent: f64,
    pub build: f64,
    /// The program's run less its evaluation (start-up, warm-up and the budgeted training).
    pub train: f64,
    pub eval: f64,
    /// Guard, commit, decision and anything else `ar` did.
    pub other: f64,
    pub total: f64,
}

impl Model {
    /// The declared workload the session optimised (None: this repository's GPT).
    pub fn workload(&self) -> Option<&crate::journal::WorkloadSettings> {
        self.setup.as_ref()?.settings.as_ref()?.workload.as_ref()
    }

    /// The deciding metric's name: val_bpb, or the declared workload's.
    pub fn metric(&self) -> &str {
        self.workload().map_or("val_bpb", |w| w.metric.as_str())
    }

    /// +1 when lower is better, −1 when higher is: `sign · Δ < 0` means better.
    pub fn sign(&self) -> f64 {
        if self.better() == "higher is better" { -1.0 } else { 1.0 }
    }

    /// `lower is better` or `higher is better`.
    pub fn better(&self) -> &'static str {
        match self.workload() {
            Some(w) if w.direction == "maximize" => "higher is better",
            _ => "lower is better",
        }
    }

    pub fn from_events(events: &[Event]) -> Model {
        let mut m = Model::default();
        let mut index: HashMap<u64, usize> = HashMap::new();
        for e in events {
            m.last_time = Some(event_time(e));
            if !matches!(e, Event::Stopped { .. }) {
                m.stopped = None;
            }
            match e {
                Event::Session {
                    time,
                    tag,
                    branch,
                    base_commit,
                    profile,
                    profile_hash,
                    hardware,
                    agent,
                    budget_secs,
                    rule,
                    resumed,
                    settings,
                    ..
                } => {
                    // A resume means the previous process is gone: whatever it left in flight
                    // will never finish under its old start.
                    interrupt_running(&mut m.rows);
                    let (started, resumes) = m.setup.as_ref().map_or((*time, 0), |s| (s.started, s.resumes));
                    m.setup = Some(Setup {
                        tag: tag.clone(),
                        branch: branch.clone(),
                        base_commit: base_commit.clone(),
                        profile: profile.clone(),
                        profile_hash: profile_hash.clone(),
                        hardware: hardware.clone(),
                        agent: agent.clone(),
                        budget_secs: *budget_secs,
                        rule: rule.clone(),
                        settings: settings
                            .clone()
                            .or_else(|| m.setup.as_ref().and_then(|s| s.settings.clone())),
                        started,
                        resumes: resumes + usize::from(*resumed),
                    });
                }
                Event::Started { id, time, kind, parent, description, hypothesis, rerun_of, .. } => {
                    let mut row = Row::new(*id, *time, *kind);
                    row.parent = parent.clone();
                    row.description = description.trim().to_string();
                    row.hypothesis = hypothesis.clone();
                    row.rerun_of = *rerun_of;
                    // A resume may re-run an id: the new attempt replaces the old in place.
                    match index.get(id) {
                        Some(&i) => m.rows[i] = row,
                        None => {
                            index.insert(*id, m.rows.len());
                            m.rows.push(row);
                        }
                    }
                }
                Event::Committed { id, commit, .. } => {
                    if let Some(&i) = index.get(id) {
                        m.rows[i].commit = Some(commit.clone());
                    }
                }
                Event::Finished { id, time, crash, record, excerpt, timings, .. } => {
                    let Some(&i) = index.get(id) else { continue };
                    let row = &mut m.rows[i];
                    row.finished = Some(*time);
                    row.timings = Some(timings.clone());
                    row.excerpt = excerpt.clone();
                    if let Some(r) = record {
                        m.data.get_or_insert_with(|| (r.data.clone(), r.synthetic_data));
                        row.val_bpb = Some(r.val_bpb);
                        row.test_bpb = r.test_bpb;
                        row.training_seconds = Some(r.training_seconds);
                        row.eval_seconds = Some(r.eval_seconds);
                        row.peak_mem_mb = Some(r.peak_mem_mb);
                    }
                    row.outcome = match (crash, record) {
                        (Some(c), _) => Outcome::Crash(*c),
                        (None, Some(_)) => Outcome::Pending,
                        (None, None) => Outcome::Crash(CrashClass::NoResult),
                    };
                }
                Event::Decided { id, decision, .. } => {
                    let Some(&i) = index.get(id) else { continue };
                    let row = &mut m.rows[i];
                    row.outcome = match decision.status {
                        Status::Keep => Outcome::Keep,
                        Status::Discard => Outcome::Discard,
                        Status::Timeout => Outcome::Crash(CrashClass::Timeout),
                        Status::Rejected => Outcome::Crash(CrashClass::Rejected),
                        Status::Interrupted => Outcome::Crash(CrashClass::Interrupted),
                        Status::Crash => match row.outcome {
                            Outcome::Crash(c) => Outcome::Crash(c),
                            _ => Outcome::Crash(CrashClass::NoResult),
                        },
                    };
                    if decision.val_bpb.is_some() {
                        row.val_bpb = decision.val_bpb;
                    }
                    row.delta = decision.delta;
                    row.sigma = decision.sigma;
                    row.margin = decision.margin;
                    row.best_after = decision.best_after;
                    row.reason = Some(decision.reason.clone());
                    row.evidence = decision.evidence.clone();
                    if let Some(best) = decision.best_after {
                        m.best_steps.push(BestStep {
                            id: *id,
                            best,
                            commit: decision.best_commit.clone(),
                            sigma: decision.sigma,
                        });
                    }
                }
                Event::Agent { outcome, seconds, .. } => {
                    m.idle.count += 1;
                    m.idle.seconds += seconds;
                    *m.idle.by_outcome.entry(outcome.clone()).or_default() += 1;
                }
                Event::Launched { id, worker, backend, .. } => {
                    if let Some(&i) = index.get(id) {
                        m.rows[i].worker = Some(format!("{backend}:{worker}"));
                    }
                }
                Event::Verified { verification, .. } => {
                    m.verification = Some(verification.clone());
                }
                Event::Stopped { time, reason } => {
                    interrupt_running(&mut m.rows);
                    m.stopped = Some((*time, reason.clone()));
                }
            }
        }
        m
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn tag(&self) -> &str {
        self.setup.as_ref().map_or("?", |s| s.tag.as_str())
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts { experiments: self.rows.len(), ..Counts::default() };
        for r in &self.rows {
            match r.kind {
                RunKind::Baseline => c.baseline_runs += 1,
                RunKind::Candidate => c.candidates += 1,
                RunKind::Confirm => c.confirm_runs += 1,
                RunKind::Remeasure => c.remeasure_runs += 1,
                RunKind::Verify => c.verify_runs += 1,
            }
            let candidate = r.kind == RunKind::Candidate;
            match r.outcome {
                Outcome::Keep => {
                    c.kept += 1;
                    c.kept_candidates += usize::from(candidate);
                }
                Outcome::Discard => {
                    c.discarded += 1;
                    c.discarded_candidates += usize::from(candidate);
                }
                Outcome::Crash(class) => {
                    c.crashed += 1;
                    *c.crashes.entry(class.name()).or_default() += 1;
                }
                Outcome::Running => c.running += 1,
                Outcome::Pending => c.pending += 1,
            }
        }
        c
    }

    /// The starting point: the mean of the baseline runs (the same code run K times), else
    /// the first result in the journal (the original's convention: row 0 is the baseline).
    pub fn baseline(&self) -> Option<f64> {
        let base: Vec<f64> = self.baseline_rows().filter_map(|r| r.val_bpb).collect();
        if !base.is_empty() {
            return Some(mean(&base));
        }
        self.rows.iter().find(|r| !r.outcome.is_crash()).and_then(|r| r.val_bpb)
    }

    /// Held-out bpb of the baseline, defined as [`Model::baseline`] is.
    pub fn baseline_test(&self) -> Option<f64> {
        let base: Vec<f64> = self.baseline_rows().filter_map(|r| r.test_bpb).collect();
        if !base.is_empty() {
            return Some(mean(&base));
        }
        self.rows.iter().find(|r| !r.outcome.is_crash() && r.val_bpb.is_some()).and_then(|r| r.test_bpb)
    }

    fn baseline_rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.kind == RunKind::Baseline && !r.outcome.is_crash())
    }

    /// The baseline runs' val_bpb, for the σ estimate's provenance.
    pub fn baseline_values(&self) -> Vec<f64> {
        self.baseline_rows().filter_map(|r| r.val_bpb).collect()
    }

    /// The incumbent according to the last decision that named one (the decision module
    /// owns the definition: under confirm it may be a mean of runs), else the lowest kept.
    pub fn best(&self) -> Option<Best> {
        if let Some(step) = self.best_steps.last() {
            let matches = |r: &Row| {
                r.outcome == Outcome::Keep
                    && r.commit.as_deref().is_some_and(|c| same_commit(c, &step.commit))
            };
            // Prefer the run that introduced the commit over re-runs of it.
            let row = self
                .rows
                .iter()
                .position(|r| matches(r) && !r.is_rerun())
                .or_else(|| self.rows.iter().position(matches));
            return Some(Best { val_bpb: step.best, commit: step.commit.clone(), row });
        }
        let (i, r) = self
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.outcome == Outcome::Keep && r.val_bpb.is_some())
            .min_by(|a, b| a.1.val_bpb.partial_cmp(&b.1.val_bpb).expect("finite bpb"))?;
        Some(Best { val_bpb: r.val_bpb?, commit: r.commit.clone().unwrap_or_default(), row: Some(i) })
    }

    /// σ in force at the last decision that reported one; else the sample standard
    /// deviation of the baseline runs (what the decision module estimates it from).
    pub fn sigma(&self) -> Option<f64> {
        self.best_steps.iter().rev().find_map(|s| s.sigma).or_else(|| sample_std(&self.baseline_values()))
    }

    /// The paired rule's σ_d per noise class, each as its class's latest decision used it
    /// (the rule pools each class apart: see `session::noise_class`), in the order the
    /// classes first appear. Empty for journals that do not record the class.
    pub fn sigma_by_class(&self) -> Vec<ClassNoise> {
        let mut out: Vec<ClassNoise> = Vec::new();
        for r in self.rows.iter().filter(|r| r.kind == RunKind::Candidate) {
            let Some(e) = &r.evidence else { continue };
            let (Some(class), Some(sigma_d)) = (&e.class, e.sigma_d) else { continue };
            match out.iter_mut().find(|c| &c.class == class) {
                Some(c) => {
                    c.sigma_d = sigma_d;
                    c.dof = e.dof;
                    c.decided += 1;
                }
                None => out.push(ClassNoise { class: class.clone(), sigma_d, dof: e.dof, decided: 1 }),
            }
        }
        out
    }

    /// The margin a candidate had to beat at the last decision that reported one.
    pub fn margin(&self) -> Option<f64> {
        self.rows.iter().rev().filter(|r| r.reason.is_some()).find_map(|r| r.margin)
    }

    /// True for sessions decided by the paired sequential rule.
    pub fn paired(&self) -> bool {
        self.setup.as_ref().is_some_and(|s| s.rule.kind == "paired")
    }

    /// k of the keep rule (margin = max(k·σ, min_delta)).
    pub fn k(&self) -> Option<f64> {
        self.setup.as_ref().map(|s| s.rule.k)
    }

    /// The experiment in flight, if any (the last one when several are).
    pub fn running(&self) -> Option<&Row> {
        self.rows.iter().rev().find(|r| matches!(r.outcome, Outcome::Running | Outcome::Pending))
    }

    /// Rows with an outcome, newest last.
    pub fn finished(&self) -> impl DoubleEndedIterator<Item = &Row> {
        self.rows.iter().filter(|r| !matches!(r.outcome, Outcome::Running | Outcome::Pending))
    }

    /// Kept candidates ordered by Δ, the biggest improvement first.
    pub fn improvements(&self) -> Vec<&Row> {
        let mut kept: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.kind == RunKind::Candidate && r.outcome == Outcome::Keep && r.delta.is_some())
            .collect();
        let s = self.sign();
        kept.sort_by(|a, b| {
            a.delta
                .map(|d| s * d)
                .partial_cmp(&b.delta.map(|d| s * d))
                .expect("finite delta")
                .then(a.id.cmp(&b.id))
        });
        kept
    }

    pub fn time_totals(&self) -> TimeTotals {
        let mut t = TimeTotals::default();
        for r in &self.rows {
            let Some(tm) = &r.timings else { continue };
            t.experiments += 1;
            // Newer journals time scoring separately; older ones folded it into `train`.
            let (train, eval) = if tm.score > 0.0 {
                (tm.train, tm.score)
            } else {
                let eval = r.eval_seconds.unwrap_or(0.0).min(tm.train);
                (tm.train - eval, eval)
            };
            t.agent += tm.agent;
            t.build += tm.build;
            t.train += train;
            t.eval += eval;
            let counted = tm.agent + tm.build + train + eval;
            t.other += (tm.total - counted).max(0.0);
            t.total += tm.total.max(counted);
        }
        t
    }

    /// What was tried and did not survive (discarded or crashed candidates), grouped by
    /// [`topic`]; most tried first, then by name, so the order is deterministic.
    pub fn failed_groups(&self) -> Vec<FailedGroup> {
        let mut groups: BTreeMap<String, FailedGroup> = BTreeMap::new();
        for r in self.rows.iter().filter(|r| r.kind == RunKind::Candidate) {
            let failed = matches!(r.outcome, Outcome::Discard | Outcome::Crash(_));
            if !failed || r.outcome == Outcome::Crash(CrashClass::Interrupted) {
                continue;
            }
            let key = topic(&r.description);
            let g =
                groups.entry(key.clone()).or_insert_with(|| FailedGroup { topic: key, ..Default::default() });
            g.tries += 1;
            if r.outcome.is_crash() {
                g.crashes += 1;
            }
            if let Some(d) = r.delta {
                let s = self.sign();
                g.best_delta = Some(g.best_delta.map_or(d, |b: f64| if s * d < s * b { d } else { b }));
            }
            g.ids.push(r.id);
        }
        let mut v: Vec<FailedGroup> = groups.into_values().collect();
        v.sort_by(|a, b| b.tries.cmp(&a.tries).then_with(|| a.topic.cmp(&b.topic)));
        v
    }

    pub fn row(&self, id: u64) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }
}

/// Failed attempts sharing a topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailedGroup {
    pub topic: String,
    pub tries: usize,
    pub crashes: usize,
    /// The closest a discarded attempt came (most negative Δ).
    pub best_delta: Option<f64>,
    pub ids: Vec<u64>,
}

pub fn kind_name(kind: RunKind) -> &'static str {
    match kind {
        RunKind::Baseline => "baseline",
        RunKind::Candidate => "candidate",
        RunKind::Confirm => "confirm",
        RunKind::Remeasure => "remeasure",
        RunKind::Verify => "verify",
    }
}

fn interrupt_running(rows: &mut [Row]) {
    for r in rows.iter_mut().filter(|r| r.outcome == Outcome::Running) {
        r.outcome = Outcome::Crash(CrashClass::Interrupted);
    }
}

pub fn event_time(e: &Event) -> f64 {
    match e {
        Event::Session { time, .. }
        | Event::Started { time, .. }
        | Event::Committed { time, .. }
        | Event::Finished { time, .. }
        | Event::Decided { time, .. }
        | Event::Agent { time, .. }
        | Event::Stopped { time, .. }
        | Event::Launched { time, .. }
        | Event::Verified { time, .. } => *time,
    }
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// The first 7 characters of a commit hash (git's default short form).
pub fn short(commit: &str) -> &str {
    commit.char_indices().nth(7).map_or(commit, |(i, _)| &commit[..i])
}

fn same_commit(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a))
}

/// Sample standard deviation (n − 1); `None` below two values.
pub fn sample_std(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let m = mean(xs);
    Some((xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt())
}

// ---------------------------------------------------------------------------------------
// Topics: what a description changed, so failures can be grouped ("warmdown: 3 tried").
// ---------------------------------------------------------------------------------------

/// Leading verbs and filler that say how, not what ("halve total batch" → "total batch").
#[rustfmt::skip]
const FILLER: &[&str] = &[
    "a", "add", "added", "also", "an", "and", "back", "bigger", "bump", "change", "changed",
    "decrease", "decreased", "disable", "double", "doubled", "drop", "enable", "even", "for",
    "from", "halve", "halved", "higher", "in", "increase", "increased", "instead", "larger", "less",
    "longer", "lower", "more", "new", "no", "of", "on", "raise", "reduce", "reduced", "remove",
    "removed", "replace", "revert", "set", "shorter", "smaller", "switch", "the", "to", "try",
    "tweak", "use", "vs", "with",
];

/// The thing a description changed, for grouping: the first hyperparameter constant that
/// is given a value (`MATRIX_LR 0.04→0.05` → `MATRIX_LR`), else the first snake_case name
/// (`x0_lambda init …` → `x0_lambda`), else up to three content words before the first
/// number (`RoPE base frequency 10000→50000` → `rope base frequency`), ignoring
/// parenthesised remarks. A heuristic, but a
/// deterministic one: the same description always lands in the same group.
pub fn topic(description: &str) -> String {
    // Parenthesised text is commentary ("(more steps)", "(OOM)"), not the change.
    let mut depth = 0usize;
    let mut bare = String::new();
    for c in description.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '=' | ',' if depth == 0 => bare.push(' '),
            _ if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    let spaced = if bare.trim().is_empty() { description.to_string() } else { bare };
    let strip = |t: &str| t.trim_matches(|c: char| "()[]{};:'\"`.!?*".contains(c)).to_string();
    let tokens: Vec<String> = spaced.split_whitespace().map(strip).filter(|t| !t.is_empty()).collect();
    let numeric =
        |t: &str| t.chars().any(|c| c.is_ascii_digit() || "→%×".contains(c)) || t.contains("->") || t == "x";
    let is_const = |t: &str| {
        t.len() >= 3
            && t.starts_with(|c: char| c.is_ascii_uppercase())
            && t.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    for (i, t) in tokens.iter().enumerate() {
        let valued = tokens.get(i + 1).is_some_and(|n| numeric(n) || n == "->" || n == "→");
        if is_const(t) && (t.contains('_') || valued) {
            return t.clone();
        }
    }
    if let Some(t) = tokens.iter().find(|t| {
        t.contains('_')
            && t.chars().any(|c| c.is_alphabetic())
            && t.chars().all(|c| c.is_alphanumeric() || c == '_')
    }) {
        return t.to_lowercase();
    }
    let content = |t: &&String| !numeric(t) && !FILLER.contains(&t.to_lowercase().as_str());
    let mut words: Vec<String> = Vec::new();
    for t in &tokens {
        if numeric(t) {
            if words.is_empty() {
                continue;
            }
            break;
        }
        if content(&t) {
            words.push(t.to_lowercase());
            if words.len() == 3 {
                break;
            }
        }
    }
    if words.is_empty() { "other".to_string() } else { words.join(" ") }
}

// ---------------------------------------------------------------------------------------
// Formatting shared by the views.
// ---------------------------------------------------------------------------------------

/// One line of at most `max` characters, ending in `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
    out = out.trim_end().to_string();
    out.push('…');
    out
}

/// `42s`, `4m05s`, `3h07m`, `3d04h`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..172_800 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `1 candidate`, `3 candidates`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

/// A signed bpb difference with six decimals (`-0.004210`, `+0.000300`).
pub fn signed(x: f64) -> String {
    format!("{x:+.6}")
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC` (no time-zone database needed, none wanted).
pub fn utc(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(id: u64, kind: RunKind, class: Option<&str>, sigma_d: f64, dof: f64) -> Row {
        let mut r = Row::new(id, 0.0, kind);
        r.evidence = Some(crate::journal::EvidenceRecord {
            pairs: 1,
            delta: -0.001,
            se: Some(sigma_d),
            sigma_d: Some(sigma_d),
            dof,
            confidence: Some(0.5),
            needed: Some(0.99),
            seeds: vec![0],
            class: class.map(str::to_string),
        });
        r
    }

    #[test]
    fn test_sigma_by_class_reports_each_class_at_its_latest_decision() {
        let mut m = Model::from_events(&[]);
        assert!(m.sigma_by_class().is_empty(), "nothing decided, nothing to report");
        m.rows = vec![
            decided(4, RunKind::Candidate, Some("tuning"), 0.0053, 2.0),
            decided(5, RunKind::Candidate, Some("structural"), 0.0071, 2.0),
            decided(6, RunKind::Candidate, Some("tuning"), 0.0031, 4.0),
            // A helper run's record and a journal written before classes were recorded
            // count for nothing.
            decided(7, RunKind::Confirm, Some("tuning"), 0.9, 9.0),
            decided(8, RunKind::Candidate, None, 0.9, 9.0),
        ];
        let classes = m.sigma_by_class();
        assert_eq!(
            classes,
            vec![
                ClassNoise { class: "tuning".into(), sigma_d: 0.0031, dof: 4.0, decided: 2 },
                ClassNoise { class: "structural".into(), sigma_d: 0.0071, dof: 2.0, decided: 1 },
            ]
        );
        assert_eq!(classes[0].phrase(), "0.003100 for tuning changes (4 dof)");
    }

    #[test]
    fn test_topic_groups_descriptions_by_what_they_change() {
        assert_eq!(topic("MATRIX_LR 0.04 -> 0.05"), "MATRIX_LR");
        assert_eq!(topic("DEPTH=12"), "DEPTH");
        assert_eq!(topic("x0_lambda init 0.1→0.05"), "x0_lambda");
        assert_eq!(topic("halve total batch 524K→262K (more steps)"), "total batch");
        assert_eq!(topic("warmdown 0.5→0.7 (more cooldown helps)"), "warmdown");
        assert_eq!(topic("add 5% warmup"), "warmup");
        assert_eq!(topic("RoPE base frequency 10000→50000"), "rope base frequency");
        assert_eq!(topic("double width (OOM)"), "width");
        assert_eq!(topic("42"), "other");
    }

    #[test]
    fn test_utc_and_duration_formatting() {
        assert_eq!(utc(0.0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(1_741_212_000.0), "2025-03-05 22:00 UTC");
        assert_eq!(duration(42.4), "42s");
        assert_eq!(duration(245.0), "4m05s");
        assert_eq!(duration(11_220.0), "3h07m");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3d04h");
        assert_eq!(truncate("a  b\nc", 10), "a b c");
        assert_eq!(truncate("abcdefghijkl", 6), "abcde…");
    }
}
