//! The session as the journal says it is: every run with its commit, seed index and
//! result; the incumbent; the baseline; and the noise pool the keep rule reads.
//!
//! Decisions are paired (`stats`): a candidate's run at seed index j is compared with the
//! incumbent's run at the same index (common random numbers: the same initial weights and
//! data order). The incumbent's measurement at an index is reused by every candidate paired
//! against it while it stays the incumbent. Everything here is folded from the events, so
//! `ar` can stop at any point and the next call knows exactly what is measured and what is
//! missing.

use std::collections::BTreeMap;

use crate::journal::{CrashClass, Decision, Event, RuleConfig, RunKind, Status};
use crate::stats::{self, Direction, Pool};

/// The keep rule of a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub paired: stats::Rule,
    /// Baseline runs (at seed indexes 0..K) before the first candidate.
    pub baseline_runs: usize,
}

impl Default for Rule {
    fn default() -> Rule {
        Rule { paired: stats::Rule::default(), baseline_runs: 3 }
    }
}

impl Rule {
    pub fn strict(&self) -> bool {
        self.paired.strict
    }

    pub fn config(&self) -> RuleConfig {
        RuleConfig {
            kind: if self.paired.strict { "strict" } else { "paired" }.to_string(),
            k: 0.0,
            min_delta: 0.0,
            baseline_runs: self.baseline_runs,
            confirm: false,
            remeasure_every: 0,
            alpha: self.paired.alpha,
            max_pairs: self.paired.max_pairs,
            min_effect: self.paired.min_effect,
        }
    }

    /// The rule of a journal; sessions from before paired decisions continue under the
    /// paired rule's defaults (their margin rule is gone).
    pub fn from_config(c: &RuleConfig) -> Rule {
        let strict = c.kind == "strict";
        let defaults = stats::Rule::default();
        Rule {
            paired: stats::Rule {
                alpha: if c.alpha > 0.0 { c.alpha } else { defaults.alpha },
                max_pairs: if strict {
                    1
                } else if c.max_pairs > 0 {
                    c.max_pairs
                } else {
                    defaults.max_pairs
                },
                min_effect: c.min_effect.max(0.0),
                strict,
                direction: Direction::Minimize,
            },
            baseline_runs: c.baseline_runs.max(1),
        }
    }

    /// Baseline runs needed before candidates are decided.
    pub fn baselines_needed(&self) -> usize {
        self.baseline_runs.max(1)
    }
}

/// How a run ended, as far as the decision is concerned.
#[derive(Debug, Clone, PartialEq)]
pub enum Result_ {
    /// Still running, or `ar` stopped before it finished (or it was abandoned): measure again.
    Open,
    Value(f64),
    Crash(CrashClass),
}

/// One run, from its events.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: u64,
    pub kind: RunKind,
    pub parent: String,
    /// The commit measured: the parent for re-runs, the experiment commit for candidates.
    pub commit: Option<String>,
    pub seed: u64,
    pub rerun_of: Option<u64>,
    pub description: String,
    pub result: Result_,
    /// It finished as `interrupted` (Ctrl-C): its measurement must be taken again.
    pub interrupted: bool,
    pub decision: Option<Decision>,
}

impl Run {
    pub fn finished_interrupted(&self) -> bool {
        self.interrupted
    }
}

/// Everything the next step needs.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub runs: BTreeMap<u64, Run>,
    pub base_commit: String,
    /// The incumbent.
    pub best_commit: String,
    /// Successful baseline measurements, in order.
    pub baseline_values: Vec<f64>,
    pub baselines_tried: usize,
    /// The noise pool: the baseline prior plus every decided candidate's pairs.
    pub pool: Pool,
    /// (commit, seed index) → value of the first successful measurement.
    pub measurements: BTreeMap<(String, u64), f64>,
    pub keeps: usize,
}

impl State {
    /// Folds the journal. Runs from journals before seed indexes get one by order of
    /// measurement of their commit.
    pub fn from_events(events: &[Event], base_commit: &str) -> State {
        let mut s =
            State { base_commit: base_commit.into(), best_commit: base_commit.into(), ..State::default() };
        let mut next_seed: BTreeMap<String, u64> = BTreeMap::new();
        for e in events {
            match e {
                Event::Started { id, kind, parent, description, rerun_of, seed, .. } => {
                    let commit = if *kind == RunKind::Candidate { None } else { Some(parent.clone()) };
                    let seed = seed.unwrap_or_else(|| {
                        let key = commit.clone().unwrap_or_else(|| format!("#{id}"));
                        *next_seed.get(&key).unwrap_or(&0)
                    });
                    if *kind == RunKind::Baseline {
                        s.baselines_tried += 1;
                    }
                    s.runs.insert(
                        *id,
                        Run {
                            id: *id,
                            kind: *kind,
                            parent: parent.clone(),
                            commit,
                            seed,
                            rerun_of: *rerun_of,
                            description: description.clone(),
                            result: Result_::Open,
                            interrupted: false,
                            decision: None,
                        },
                    );
                }
                Event::Committed { id, commit, .. } => {
                    if let Some(r) = s.runs.get_mut(id) {
                        r.commit = Some(commit.clone());
                    }
                }
                Event::Finished { id, record, crash, .. } => {
                    let Some(r) = s.runs.get_mut(id) else { continue };
                    r.interrupted = *crash == Some(CrashClass::Interrupted);
                    r.result = match (crash, record) {
                        (Some(CrashClass::Interrupted), _) => Result_::Open,
                        (Some(c), _) => Result_::Crash(*c),
                        (None, Some(rec)) => Result_::Value(rec.val_bpb),
                        (None, None) => Result_::Crash(CrashClass::NoResult),
                    };
                    if let (Result_::Value(v), Some(c)) = (&r.result, &r.commit) {
                        s.measurements.entry((c.clone(), r.seed)).or_insert(*v);
                        let n = next_seed.entry(c.clone()).or_insert(0);
                        *n = (*n).max(r.seed + 1);
                        if r.kind == RunKind::Baseline {
                            s.baseline_values.push(*v);
                        }
                    }
                }
                Event::Decided { id, decision, .. } => {
                    let Some(r) = s.runs.get_mut(id) else { continue };
                    r.decision = Some(decision.clone());
                    if r.kind == RunKind::Candidate && decision.status == Status::Keep {
                        s.keeps += 1;
                        if let Some(c) = &r.commit {
                            s.best_commit = c.clone();
                        }
                    }
                }
                _ => {}
            }
        }
        s.rebuild_pool(events);
        s
    }

    /// The pool: the baseline prior, then each decided candidate's pairs in decision order.
    fn rebuild_pool(&mut self, events: &[Event]) {
        let mut pool = Pool::from_baseline(&self.baseline_values);
        for e in events {
            if let Event::Decided { id, decision, .. } = e
                && self.runs.get(id).is_some_and(|r| r.kind == RunKind::Candidate)
                && matches!(decision.status, Status::Keep | Status::Discard)
            {
                pool.add_candidate(&self.pairs(*id).0);
            }
        }
        self.pool = pool;
    }

    /// The pool as it was before candidate `id` was decided (its own pairs excluded), from
    /// the baseline prior and the earlier candidates `same_class` admits (those of `id`'s
    /// noise class: see [`super::noise_class`]).
    pub fn pool_before(&self, events: &[Event], id: u64, same_class: impl Fn(u64) -> bool) -> Pool {
        let mut pool = Pool::from_baseline(&self.baseline_values);
        for e in events {
            if let Event::Decided { id: d, decision, .. } = e
                && *d != id
                && self.runs.get(d).is_some_and(|r| r.kind == RunKind::Candidate)
                && matches!(decision.status, Status::Keep | Status::Discard)
                && decision_order(events, *d) < decision_order(events, id)
                && same_class(*d)
            {
                pool.add_candidate(&self.pairs(*d).0);
            }
        }
        pool
    }

    /// The value of `commit` at seed index `seed`, if measured.
    pub fn value(&self, commit: &str, seed: u64) -> Option<f64> {
        self.measurements.get(&(commit.to_string(), seed)).copied()
    }

    /// Mean of every measurement of `commit`.
    pub fn mean(&self, commit: &str) -> Option<f64> {
        let v: Vec<f64> =
            self.measurements.iter().filter(|((c, _), _)| c == commit).map(|(_, v)| *v).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }

    /// The incumbent's mean.
    pub fn best(&self) -> Option<f64> {
        self.mean(&self.best_commit)
    }

    /// σ_d of the pool (what the digest and reports call the noise).
    pub fn sigma(&self) -> Option<f64> {
        self.pool.sigma()
    }

    /// σ of single baseline runs.
    pub fn sigma_x(&self) -> Option<f64> {
        let v = &self.baseline_values;
        if v.len() < 2 {
            return None;
        }
        let m = v.iter().sum::<f64>() / v.len() as f64;
        Some((v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
    }

    /// The runs measuring candidate `id`: the candidate run itself and its further pairs.
    pub fn candidate_runs(&self, id: u64) -> Vec<&Run> {
        self.runs
            .values()
            .filter(|r| r.id == id || (r.kind == RunKind::Confirm && r.rerun_of == Some(id)))
            .collect()
    }

    /// The candidate's complete pairs in seed order: (differences, seeds).
    pub fn pairs(&self, id: u64) -> (Vec<f64>, Vec<u64>) {
        let Some(cand) = self.runs.get(&id) else { return (Vec::new(), Vec::new()) };
        let (Some(commit), parent) = (&cand.commit, &cand.parent) else { return (Vec::new(), Vec::new()) };
        let mut diffs = Vec::new();
        let mut seeds = Vec::new();
        for j in 0.. {
            match (self.value(commit, j), self.value(parent, j)) {
                (Some(c), Some(p)) => {
                    diffs.push(c - p);
                    seeds.push(j);
                }
                _ => break,
            }
        }
        (diffs, seeds)
    }

    /// Candidates started and not decided, oldest first.
    pub fn open_candidates(&self) -> Vec<u64> {
        self.runs
            .values()
            .filter(|r| r.kind == RunKind::Candidate && r.decision.is_none())
            .map(|r| r.id)
            .collect()
    }
}

/// Position of candidate `id`'s decision in the journal (usize::MAX when undecided).
fn decision_order(events: &[Event], id: u64) -> usize {
    events.iter().position(|e| matches!(e, Event::Decided { id: d, .. } if *d == id)).unwrap_or(usize::MAX)
}
