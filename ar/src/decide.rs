//! Keep, discard or crash: the noise-aware decision, and the session state it rests on.
//!
//! The original keeps any improvement from a single run with a fixed seed, so keeps ride on
//! noise: in a wall-clock budget the step count itself varies run to run. Here the noise σ
//! is estimated from repeated measurements of the same commit (the K baseline runs, then
//! every confirm and re-measure pair, pooled), and a candidate is kept only if
//! `val_bpb < best − max(k·σ, min_delta)`. A candidate that passes is re-run once; the
//! branch advances only if the mean of both runs still passes. The incumbent's value is
//! the mean of all its measurements, re-measured every N keeps to catch drift.
//! `--rule strict` reproduces the original (any improvement, one run) for comparison.

use std::collections::BTreeMap;

use crate::journal::{Event, RuleConfig, RunKind, Status};

/// The keep rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub strict: bool,
    pub k: f64,
    pub min_delta: f64,
    pub baseline_runs: usize,
    pub confirm: bool,
    pub remeasure_every: usize,
}

impl Rule {
    pub fn config(&self) -> RuleConfig {
        RuleConfig {
            kind: if self.strict { "strict" } else { "noise" }.to_string(),
            k: self.k,
            min_delta: self.min_delta,
            baseline_runs: self.baseline_runs,
            confirm: self.confirm,
            remeasure_every: self.remeasure_every,
        }
    }

    pub fn from_config(c: &RuleConfig) -> Rule {
        Rule {
            strict: c.kind == "strict",
            k: c.k,
            min_delta: c.min_delta,
            baseline_runs: c.baseline_runs,
            confirm: c.confirm,
            remeasure_every: c.remeasure_every,
        }
    }

    /// What a candidate must beat the incumbent by.
    pub fn margin(&self, sigma: Option<f64>) -> f64 {
        if self.strict { 0.0 } else { (self.k * sigma.unwrap_or(0.0)).max(self.min_delta) }
    }

    /// True when `val` improves on `best` beyond the margin.
    pub fn passes(&self, val: f64, best: f64, sigma: Option<f64>) -> bool {
        val < best - self.margin(sigma)
    }
}

/// Pooled standard deviation of groups of repeated measurements (groups of one add
/// nothing). None until some commit has been measured twice.
pub fn pooled_sigma(groups: impl IntoIterator<Item = Vec<f64>>) -> Option<f64> {
    let (mut ss, mut dof) = (0.0, 0usize);
    for g in groups {
        if g.len() < 2 {
            continue;
        }
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        ss += g.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
        dof += g.len() - 1;
    }
    (dof > 0).then(|| (ss / dof as f64).sqrt())
}

/// Everything the decision needs, folded from the journal.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// The incumbent: its commit and the mean of its measurements.
    pub best_commit: Option<String>,
    pub best: Option<f64>,
    /// val_bpb measurements per commit (baseline, candidate, confirm, re-measure runs).
    pub measurements: BTreeMap<String, Vec<f64>>,
    /// Baseline runs that produced a result.
    pub baselines_done: usize,
    /// Baseline runs attempted (crashed ones included).
    pub baselines_tried: usize,
    /// Candidates kept so far.
    pub keeps: usize,
    /// Keeps at the last re-measure.
    pub keeps_at_remeasure: usize,
    /// Commits of experiments by id.
    pub commits: BTreeMap<u64, String>,
    pub kinds: BTreeMap<u64, RunKind>,
}

impl State {
    pub fn sigma(&self) -> Option<f64> {
        pooled_sigma(self.measurements.values().cloned())
    }

    /// Folds the journal's events.
    pub fn from_events(events: &[Event], base_commit: &str) -> State {
        let mut s = State { best_commit: Some(base_commit.to_string()), ..State::default() };
        let mut values: BTreeMap<u64, f64> = BTreeMap::new();
        for e in events {
            match e {
                Event::Started { id, kind, parent, .. } => {
                    s.kinds.insert(*id, *kind);
                    // Re-runs measure their parent; candidates get their own commit later.
                    if *kind != RunKind::Candidate {
                        s.commits.insert(*id, parent.clone());
                    }
                    if *kind == RunKind::Baseline {
                        s.baselines_tried += 1;
                    }
                }
                Event::Committed { id, commit, .. } => {
                    s.commits.insert(*id, commit.clone());
                }
                Event::Finished { id, record: Some(r), crash: None, .. } => {
                    values.insert(*id, r.val_bpb);
                    if let Some(c) = s.commits.get(id) {
                        s.measurements.entry(c.clone()).or_default().push(r.val_bpb);
                    }
                    if s.kinds.get(id) == Some(&RunKind::Baseline) {
                        s.baselines_done += 1;
                    }
                }
                Event::Decided { id, decision, .. } => {
                    match s.kinds.get(id) {
                        Some(RunKind::Candidate) if decision.status == Status::Keep => {
                            s.keeps += 1;
                            s.best_commit = s.commits.get(id).cloned();
                        }
                        Some(RunKind::Remeasure) => s.keeps_at_remeasure = s.keeps,
                        _ => {}
                    }
                    if decision.status == Status::Keep || s.kinds.get(id) == Some(&RunKind::Baseline) {
                        s.best = s.best_commit.as_ref().and_then(|c| mean(s.measurements.get(c)?));
                    }
                }
                _ => {}
            }
        }
        s.best = s.best_commit.as_ref().and_then(|c| mean(s.measurements.get(c)?));
        s
    }

    /// True when the incumbent is due for a re-measure.
    pub fn remeasure_due(&self, rule: &Rule) -> bool {
        rule.remeasure_every > 0
            && self.keeps > 0
            && self.keeps - self.keeps_at_remeasure >= rule.remeasure_every
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise() -> Rule {
        Rule { strict: false, k: 2.0, min_delta: 0.001, baseline_runs: 2, confirm: true, remeasure_every: 3 }
    }

    #[test]
    fn test_pooled_sigma_of_pairs() {
        // Two pairs, each differing by 0.02: per-pair variance 0.0002, pooled σ = 0.01414.
        let s = pooled_sigma([vec![1.00, 1.02], vec![0.90, 0.92], vec![0.5]]).unwrap();
        assert!((s - 0.014142).abs() < 1e-5, "{s}");
        assert_eq!(pooled_sigma([vec![1.0]]), None);
    }

    #[test]
    fn test_noise_rule_needs_more_than_k_sigma() {
        let r = noise();
        assert!(!r.passes(0.995, 1.0, Some(0.003)), "Δ 0.005 < 2σ = 0.006");
        assert!(r.passes(0.993, 1.0, Some(0.003)));
        assert!(!r.passes(0.9995, 1.0, Some(0.0)), "min_delta still applies when σ is 0");
        let strict = Rule { strict: true, ..noise() };
        assert!(strict.passes(0.9999, 1.0, Some(0.5)), "strict keeps any improvement");
        assert!(!strict.passes(1.0, 1.0, None), "equal is not better");
    }
}
