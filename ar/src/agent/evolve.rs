//! `evolve` — the built-in researcher: no LLM, no network, a hyperparameter search over the
//! HYPERPARAMETERS consts of the train file.
//!
//! Why it exists: it is the offline default, and it is a strong baseline. On the original
//! task, classic black-box optimisers (CMA-ES, TPE) beat a code-editing LLM agent at the
//! same budget, so an LLM agent's night should be compared against this one.
//!
//! How it learns: every decided experiment in the journal is an observation — the const
//! values in its commit (`git show <commit>:train/src/main.rs`), its val_bpb (crashes and
//! timeouts count as bad) and its parent (the branch head it was made on). Each turn
//! changes 1–3 dials of the incumbent (mostly one: small diffs are what the keep/discard
//! loop can attribute, and they read well in results.tsv, "evolve: MATRIX_LR 0.04→0.055").
//! Two questions, two models:
//!
//! - which dials: drawn in proportion to their *sensitivity*, the RMS change of val_bpb
//!   against the parent when that dial was changed (a dial never tried counts as the most
//!   sensitive, so each gets tried; every dial keeps a floor). This is what a researcher
//!   does — keep turning the knobs that move the metric — and it matters: scoring every
//!   dial by TPE's density ratio instead wastes most turns on dials that do nothing,
//!   because an untouched value sits in three times as many bad runs as good ones.
//! - which values: a Tree-structured Parzen Estimator (Bergstra et al. 2011, as in hyperopt
//!   and optuna). The best quarter of runs is "good", the rest and every crash "bad"; one
//!   kernel density per dial for each (l and g, each mixed with a prior step around the
//!   incumbent); the value is the best of 24 draws from l by l/g gain over the incumbent's
//!   value. Runs tied at the boundary are left out of "good" (a change that did not move
//!   val_bpb says nothing). Until N_STARTUP runs exist, a Gaussian step around the current
//!   value (the prior) is used instead, never smaller than half its width (a step that
//!   cannot move val_bpb past the seed noise wastes an experiment).
//! - where to step from: a dial whose last change improved on its parent (paired) and is in
//!   the incumbent steps on in the same direction ("momentum"): the prior, and l's prior
//!   component, are centred one such step further.
//!
//! Evidence (`bench_evolve_against_random_search` and `bench_evolve_on_a_demo_like_landscape`
//! in ar/tests/agents.rs, simulated; mean regret of the incumbent, lower is better). On a
//! toy where val_bpb depends on MATRIX_LR and WEIGHT_DECAY only (30 turns, 20 seeds): 0.021
//! (0.015 with measurement noise) against 0.044 for random search over just those two dials;
//! with the optimum 4–6 prior steps away 0.036 against 0.031 at 30 turns, 0.003 against 0.010
//! at 100. Momentum and the minimum step bought the far case (it was 0.115 at 30 turns) and
//! cost some of the near one (it was 0.005): the sum over the eight scenarios fell from 0.220
//! to 0.146, the worst from 0.115 to 0.037. On a landscape shaped like the demo profile's
//! (five dials matter, the size dials are best where they are, seed noise 0.005; 20 turns,
//! 40 seeds): 0.033 from a start of 0.075, a gain above 3 noise σ on 38 of 40 seeds, where
//! the version without momentum reached 0.039 (34/40) and random search over every dial
//! 0.060 (16/40).
//!
//! The search space: learning rates on a log scale (2 significant digits), sizes as
//! powers of two (DEPTH as a small integer, ASPECT_RATIO as a multiple of 8 on a log
//! scale), betas as log(1−β), schedule ratios linear in [0, 1], WINDOW_PATTERN as a
//! categorical over patterns that tile the layers (the last layer is always full
//! attention). Not searched: SEED (tuning it fits noise) and LOG_EVERY (only moves sync
//! points); the warm-up steps left off the clock are the profile's, not the file's. Float consts an agent adds to the section are searched generically; integer
//! ones are left alone (they may be structural). TOTAL_BATCH_SIZE stays a multiple of
//! DEVICE_BATCH_SIZE × MAX_SEQ_LEN (the profile's context length) and warm-up plus
//! warm-down stays within the budget: a proposal that breaks either is repaired.
//!
//! Deterministic: the random stream is seeded from `--seed`, the experiment number and the
//! observations, so the same journal and seed give the same proposal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use super::hyperparams::{self, Const, Value};
use super::{Agent, AgentOptions, Outcome, TRAIN_FILE, Turn, read_train, write_train};
use crate::journal::{Event, Status};

/// Observations needed before the density model replaces the prior.
pub const N_STARTUP: usize = 5;
/// Fraction of observations that count as good.
const GAMMA: f64 = 0.25;
/// Proposals drawn before giving up (every one already measured).
const N_CANDIDATES: usize = 64;
/// Draws from l scored per dimension and proposal.
const SAMPLES_PER_DIM: usize = 24;
/// Weight of the prior component in each density (one observation's worth).
const PRIOR_WEIGHT: f64 = 1.0;
/// Every dimension's share of attention, as a fraction of the most sensitive one's.
const SENSITIVITY_FLOOR: f64 = 0.1;

// ---------------------------------------------------------------------------------------
// Search space
// ---------------------------------------------------------------------------------------

/// How a numeric dimension is searched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// On ln x; rounded to 2 significant digits (or to `step`).
    Log,
    /// On x; rounded to `step`.
    Linear,
    /// On ln(1 − x), for betas near 1; 1 − x rounded to 2 significant digits.
    LogOneMinus,
    /// On log2 x; rounded to a power of two.
    Pow2,
    /// On x; rounded to an integer.
    Int,
}

/// One searched dimension. A pair const is two dimensions (`ADAM_BETAS.0`, `ADAM_BETAS.1`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dim {
    pub key: String,
    pub kind: DimKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DimKind {
    Numeric {
        scale: Scale,
        lo: f64,
        hi: f64,
        /// Prior step, in transformed units (ln, log2, …).
        sigma: f64,
        /// Rounding step in value units (0: the scale's default).
        step: f64,
    },
    Choice(Vec<String>),
}

/// Patterns WINDOW_PATTERN may take: S = half-context window, L = full; tiled over layers.
pub const WINDOW_PATTERNS: [&str; 5] = ["L", "SL", "SSL", "SSSL", "SSSSL"];

const NOT_SEARCHED: [&str; 2] = ["SEED", "LOG_EVERY"];

fn numeric(scale: Scale, lo: f64, hi: f64, sigma: f64, step: f64) -> DimKind {
    DimKind::Numeric { scale, lo, hi, sigma, step }
}

/// The search space of a known dial, or a generic one for a float an agent added.
fn dim_kind(key: &str, current: &P) -> Option<DimKind> {
    use Scale::*;
    Some(match key {
        "DEPTH" => numeric(Int, 1.0, 16.0, 1.0, 0.0),
        "ASPECT_RATIO" => numeric(Log, 16.0, 256.0, 0.35, 8.0),
        "HEAD_DIM" => numeric(Pow2, 16.0, 256.0, 0.8, 0.0),
        "WINDOW_PATTERN" => {
            let mut options: Vec<String> = WINDOW_PATTERNS.iter().map(|s| s.to_string()).collect();
            if let P::Cat(c) = current
                && !options.contains(c)
            {
                options.push(c.clone());
            }
            DimKind::Choice(options)
        }
        "TOTAL_BATCH_SIZE" => numeric(Pow2, (1u64 << 10) as f64, (1u64 << 24) as f64, 0.8, 0.0),
        "DEVICE_BATCH_SIZE" => numeric(Pow2, 1.0, 512.0, 0.8, 0.0),
        "EMBEDDING_LR" => numeric(Log, 0.01, 10.0, 0.5, 0.0),
        "UNEMBEDDING_LR" => numeric(Log, 1e-4, 0.1, 0.5, 0.0),
        "MATRIX_LR" => numeric(Log, 1e-3, 0.5, 0.5, 0.0),
        "SCALAR_LR" => numeric(Log, 0.01, 5.0, 0.5, 0.0),
        "WEIGHT_DECAY" => numeric(Linear, 0.0, 1.0, 0.1, 0.01),
        "ADAM_BETAS.0" => numeric(LogOneMinus, 0.5, 0.99, 0.5, 0.0),
        "ADAM_BETAS.1" => numeric(LogOneMinus, 0.8, 0.9999, 0.5, 0.0),
        "MUON_BETA2" => numeric(LogOneMinus, 0.5, 0.999, 0.5, 0.0),
        "WARMUP_RATIO" => numeric(Linear, 0.0, 0.5, 0.05, 0.01),
        "WARMDOWN_RATIO" => numeric(Linear, 0.0, 1.0, 0.1, 0.05),
        "FINAL_LR_FRAC" => numeric(Linear, 0.0, 0.5, 0.05, 0.01),
        k if NOT_SEARCHED.contains(&k) => return None,
        _ => match current {
            // A float an agent added: ratios linearly in [0, 1], anything else within 10×.
            P::Num(v) if !key.contains('.') && (0.0..=1.0).contains(v) => {
                numeric(Linear, 0.0, 1.0, 0.1, 0.01)
            }
            P::Num(v) if *v > 1.0 => numeric(Log, v / 10.0, v * 10.0, 0.5, 0.0),
            _ => return None,
        },
    })
}

/// Whether `key` has an entry of its own in `dim_kind`'s table. The generic rules there are
/// for floats: an integer const they matched (`SCALAR_HOLD_STEPS = 1` as a ratio in [0, 1])
/// was drawn as a float, rounded back to its own value, and the turn proposed nothing.
fn is_known_dial(key: &str) -> bool {
    // NaN matches none of the generic rules, so only a named entry answers.
    dim_kind(key, &P::Num(f64::NAN)).is_some()
}

/// One coordinate of a configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum P {
    Num(f64),
    Cat(String),
}

/// A configuration: dimension key → value.
pub type Config = BTreeMap<String, P>;

/// The searchable coordinates of a parsed section. Integer consts outside the known table
/// are not searchable and are left out.
pub fn config_of(consts: &[Const]) -> Config {
    let mut cfg = Config::new();
    for c in consts {
        match &c.value {
            Value::Int(v) if is_known_dial(&c.name) => {
                cfg.insert(c.name.clone(), P::Num(*v as f64));
            }
            Value::Int(_) => {}
            Value::Float(v) => {
                cfg.insert(c.name.clone(), P::Num(*v));
            }
            Value::Pair(a, b) => {
                cfg.insert(format!("{}.0", c.name), P::Num(*a));
                cfg.insert(format!("{}.1", c.name), P::Num(*b));
            }
            Value::Str(s) => {
                cfg.insert(c.name.clone(), P::Cat(s.clone()));
            }
        }
    }
    cfg
}

/// The dimensions searched from a configuration, in key order.
pub fn space(cfg: &Config) -> Vec<Dim> {
    cfg.iter().filter_map(|(k, v)| dim_kind(k, v).map(|kind| Dim { key: k.clone(), kind })).collect()
}

fn to_t(scale: Scale, x: f64) -> f64 {
    match scale {
        Scale::Log => x.max(1e-300).ln(),
        Scale::LogOneMinus => (1.0 - x).max(1e-300).ln(),
        Scale::Pow2 => x.max(1e-300).log2(),
        Scale::Linear | Scale::Int => x,
    }
}

fn from_t(scale: Scale, t: f64) -> f64 {
    match scale {
        Scale::Log => t.exp(),
        Scale::LogOneMinus => 1.0 - t.exp(),
        Scale::Pow2 => t.exp2(),
        Scale::Linear | Scale::Int => t,
    }
}

/// The transformed bounds of a numeric dimension, low first.
fn t_bounds(scale: Scale, lo: f64, hi: f64) -> (f64, f64) {
    let (a, b) = (to_t(scale, lo), to_t(scale, hi));
    (a.min(b), a.max(b))
}

/// `x` to `digits` significant digits, as the float that literal parses to.
fn sig(x: f64, digits: usize) -> f64 {
    format!("{:.*e}", digits - 1, x).parse().unwrap_or(x)
}

/// `x` rounded to a multiple of `step`, as the float its shortest literal parses to.
fn to_step(x: f64, step: f64) -> f64 {
    let decimals = (-step.log10()).ceil().max(0.0) as usize;
    format!("{:.*}", decimals, (x / step).round() * step).parse().unwrap_or(x)
}

/// The value as it may be written in the file: rounded for its scale, within bounds.
pub fn quantize(kind: &DimKind, x: f64) -> f64 {
    let DimKind::Numeric { scale, lo, hi, step, .. } = *kind else { return x };
    let x = x.clamp(lo, hi);
    let q = match scale {
        Scale::Log if step > 0.0 => to_step(x, step).max(step),
        Scale::Log => sig(x, 2),
        Scale::LogOneMinus => {
            // 1 − d written with exactly the decimals d needs: 0.951, 0.9986.
            let d = sig(1.0 - x, 2);
            let decimals = (1 - d.log10().floor() as i32).max(0) as usize;
            format!("{:.*}", decimals, 1.0 - d).parse().unwrap_or(1.0 - d)
        }
        Scale::Linear => to_step(x, step),
        Scale::Pow2 => x.log2().round().exp2(),
        Scale::Int => x.round(),
    };
    // Rounding can step just outside a bound that is not itself a round number.
    if q < lo || q > hi { x } else { q }
}

// ---------------------------------------------------------------------------------------
// History: observations from the journal
// ---------------------------------------------------------------------------------------

/// One measured configuration; `score` None means it crashed or timed out.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub config: Config,
    pub score: Option<f64>,
    /// The configuration it was made from (the branch head then) and that one's mean
    /// measured score, when the journal says.
    pub parent: Option<(Config, Option<f64>)>,
}

/// Reads a file at a commit: `(repo, commit) → text`. The default calls `git show`.
pub type CommitReader = Box<dyn FnMut(&Path, &str) -> Option<String>>;

fn git_show(repo: &Path, commit: &str) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["show", &format!("{commit}:{TRAIN_FILE}")])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A decided experiment, as far as evolve cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub commit: String,
    /// The commit it was made on (`Started.parent`).
    pub parent: Option<String>,
    pub score: Option<f64>,
}

/// The decided experiments of a journal, in journal order. Keep and discard carry their
/// val_bpb; crash and timeout are bad (None); rejected and interrupted experiments
/// measured nothing and are skipped.
pub fn decided(events: &[Event]) -> Vec<Run> {
    let mut parents: HashMap<u64, &str> = HashMap::new();
    let mut commits: HashMap<u64, &str> = HashMap::new();
    let mut out = Vec::new();
    for e in events {
        match e {
            Event::Started { id, parent, .. } => {
                parents.insert(*id, parent);
            }
            Event::Committed { id, commit, .. } => {
                commits.insert(*id, commit);
            }
            Event::Decided { id, decision, .. } => {
                let Some(commit) = commits.get(id) else { continue };
                // A paired decision scores the candidate as the incumbent's mean plus the
                // mean paired difference: the seed noise the pairs cancel stays out of the
                // model, and every candidate is on the scale of the incumbent it was tried on.
                let paired = decision
                    .evidence
                    .as_ref()
                    .and(decision.best_before)
                    .zip(decision.delta)
                    .map(|(b, d)| b + d);
                let score = match decision.status {
                    Status::Keep | Status::Discard => match paired.or(decision.val_bpb) {
                        Some(v) if v.is_finite() => Some(v),
                        _ => continue,
                    },
                    Status::Crash | Status::Timeout => None,
                    Status::Rejected | Status::Interrupted => continue,
                };
                let parent = parents.get(id).filter(|p| !p.is_empty()).map(|p| p.to_string());
                out.push(Run { commit: commit.to_string(), parent, score });
            }
            _ => {}
        }
    }
    out
}

/// How much changing each dimension has moved val_bpb: the RMS of (score − parent
/// score) over the experiments that changed it (a crash counts as a change as large as
/// the typical one). A dimension never changed gets the largest value seen (optimism:
/// every dial is tried), and every one a floor (it may matter later). Experiments without
/// a known parent are compared with the best run before them, which is what the branch
/// head usually is.
pub fn sensitivity(dims: &[Dim], history: &[Observation]) -> Vec<f64> {
    let mut deltas: Vec<Vec<Option<f64>>> = vec![Vec::new(); dims.len()];
    let mut best: Option<(usize, f64)> = None;
    for (i, o) in history.iter().enumerate() {
        let parent = match &o.parent {
            Some((c, s)) => Some((c, *s)),
            None => best.map(|(j, s)| (&history[j].config, Some(s))),
        };
        if let Some((pc, ps)) = parent {
            let delta = match (o.score, ps) {
                (None, _) => Some(None),
                (Some(a), Some(b)) => Some(Some(a - b)),
                (Some(_), None) => None,
            };
            for (d, dim) in dims.iter().enumerate() {
                if let (Some(delta), Some(a), Some(b)) = (delta, o.config.get(&dim.key), pc.get(&dim.key))
                    && a != b
                {
                    deltas[d].push(delta);
                }
            }
        }
        if let Some(s) = o.score
            && best.is_none_or(|(_, b)| s < b)
        {
            best = Some((i, s));
        }
    }
    let finite: Vec<f64> = deltas.iter().flatten().flatten().copied().collect();
    let crash = rms(&finite).unwrap_or(1.0).max(1e-9);
    let s: Vec<Option<f64>> =
        deltas.iter().map(|ds| rms(&ds.iter().map(|d| d.unwrap_or(crash)).collect::<Vec<_>>())).collect();
    let top = s.iter().flatten().copied().fold(0.0, f64::max);
    let top = if top > 0.0 { top } else { 1.0 };
    s.iter().map(|v| v.unwrap_or(top) + SENSITIVITY_FLOOR * top).collect()
}

/// Where each dimension's prior steps from, in transformed units, relative to the current
/// value: one step further along the last change of that dial that improved on its parent and
/// is still in the incumbent (a researcher who found MATRIX_LR 0.04→0.06 better tries 0.09
/// next), else 0 (a step either way). Improvements are the paired ones when the journal has
/// them, so a lucky seed does not set a direction.
pub fn momentum(dims: &[Dim], current: &Config, history: &[Observation]) -> Vec<f64> {
    let mut m = vec![0.0; dims.len()];
    for o in history {
        let (Some(score), Some((pc, Some(ps)))) = (o.score, &o.parent) else { continue };
        if score >= *ps {
            continue;
        }
        for (d, dim) in dims.iter().enumerate() {
            let DimKind::Numeric { scale, .. } = dim.kind else { continue };
            if let (Some(P::Num(a)), Some(P::Num(b)), Some(P::Num(c))) =
                (o.config.get(&dim.key), pc.get(&dim.key), current.get(&dim.key))
                && a != b
                && a == c
            {
                m[d] = to_t(scale, *a) - to_t(scale, *b);
            }
        }
    }
    m
}

fn rms(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| (xs.iter().map(|x| x * x).sum::<f64>() / xs.len() as f64).sqrt())
}

// ---------------------------------------------------------------------------------------
// The density model
// ---------------------------------------------------------------------------------------

/// A 1-D Gaussian mixture in transformed units, truncated to the bounds by clamping.
struct Parzen {
    comps: Vec<(f64, f64, f64)>, // (mean, sigma, weight)
    lo: f64,
    hi: f64,
}

impl Parzen {
    /// The prior N(centre, sigma) plus one kernel per point. Kernels narrow slowly as
    /// points accumulate (Scott's n^-1/5), but never below a third of the prior step.
    fn fit(points: &[f64], centre: f64, sigma: f64, lo: f64, hi: f64) -> Parzen {
        let bw = sigma * (1.0 + points.len() as f64).powf(-0.2).max(1.0 / 3.0);
        let mut comps = vec![(centre, sigma, PRIOR_WEIGHT)];
        comps.extend(points.iter().map(|&p| (p, bw, 1.0)));
        Parzen { comps, lo, hi }
    }

    fn log_pdf(&self, t: f64) -> f64 {
        let total: f64 = self.comps.iter().map(|c| c.2).sum();
        let p: f64 = self
            .comps
            .iter()
            .map(|&(m, s, w)| {
                w * (-0.5 * ((t - m) / s).powi(2)).exp() / (s * (2.0 * std::f64::consts::PI).sqrt())
            })
            .sum();
        (p / total).max(1e-300).ln()
    }

    fn sample(&self, rng: &mut Rng) -> f64 {
        let weights: Vec<f64> = self.comps.iter().map(|c| c.2).collect();
        let (m, s, _) = self.comps[rng.weighted(&weights)];
        (m + s * rng.normal()).clamp(self.lo, self.hi)
    }
}

/// Category probabilities: counts smoothed by a uniform prior.
struct Categorical {
    options: Vec<String>,
    probs: Vec<f64>,
}

impl Categorical {
    fn fit(options: &[String], points: &[&str]) -> Categorical {
        let k = options.len() as f64;
        let n = points.len() as f64;
        let probs = options
            .iter()
            .map(|o| {
                (points.iter().filter(|p| **p == o.as_str()).count() as f64 + PRIOR_WEIGHT / k)
                    / (n + PRIOR_WEIGHT)
            })
            .collect();
        Categorical { options: options.to_vec(), probs }
    }

    fn log_p(&self, v: &str) -> f64 {
        self.options.iter().position(|o| o == v).map_or(f64::MIN_POSITIVE.ln(), |i| self.probs[i].ln())
    }
}

/// l (good) and g (bad) for one dimension.
enum Model {
    Numeric { scale: Scale, l: Parzen, g: Parzen },
    Choice { l: Categorical, g: Categorical },
}

impl Model {
    /// log l(v) − log g(v).
    fn ratio(&self, v: &P) -> f64 {
        match (self, v) {
            (Model::Numeric { scale, l, g }, P::Num(x)) => {
                let t = to_t(*scale, *x);
                l.log_pdf(t) - g.log_pdf(t)
            }
            (Model::Choice { l, g }, P::Cat(c)) => l.log_p(c) - g.log_p(c),
            _ => 0.0,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Proposals
// ---------------------------------------------------------------------------------------

/// A proposal: the changed dials and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// New values of the changed consts, in file order.
    pub changes: Vec<(String, Value)>,
    pub description: String,
    pub hypothesis: String,
}

/// Proposes the next configuration from the current train file and the observations.
/// `max_seq_len` is the profile's context length (for the batch-size constraint).
///
/// Which dials: 1–3 of them (mostly one, so each verdict is attributable), drawn in
/// proportion to their [`sensitivity`]. Which values: with enough history, the best of
/// SAMPLES_PER_DIM draws from the good-run density l by l/g gain over the incumbent's
/// value (TPE); before that, a Gaussian step around the current value (the prior).
pub fn propose(
    source: &str,
    history: &[Observation],
    seed: u64,
    number: u64,
    max_seq_len: usize,
) -> Result<Proposal> {
    let consts = hyperparams::parse(source)?;
    let current = config_of(&consts);
    let dims = space(&current);
    if dims.is_empty() {
        bail!("the HYPERPARAMETERS section of {TRAIN_FILE} has no dial evolve can search");
    }
    let mut rng = Rng::new(fingerprint(seed, number, history));
    let observed: HashSet<String> = history.iter().map(|o| key_of(&o.config)).collect();
    let weights = sensitivity(&dims, history);
    let drift = momentum(&dims, &current, history);
    let tpe = history.len() >= N_STARTUP && history.iter().any(|o| o.score.is_some());
    let (good, bad) = if tpe { split(history) } else { (Vec::new(), Vec::new()) };
    let models: Option<Vec<Model>> = tpe
        .then(|| dims.iter().zip(&drift).map(|(d, m)| fit(d, &current[&d.key], *m, &good, &bad)).collect());

    let mut chosen: Option<(Config, f64)> = None;
    for _ in 0..N_CANDIDATES {
        let k = [1, 1, 1, 2, 2, 3][rng.below(6)].min(dims.len());
        let mut w = weights.clone();
        let mut cand = current.clone();
        let mut gain = 0.0;
        let mut changed = 0;
        while changed < k && w.iter().any(|x| *x > 0.0) {
            let i = rng.weighted(&w);
            w[i] = 0.0;
            let d = &dims[i];
            let value = match &models {
                Some(models) => best_value(d, &models[i], &current[&d.key], &mut rng),
                None => (0..8)
                    .map(|_| match prior_sample(d, &current[&d.key], drift[i], &mut rng) {
                        P::Num(x) => P::Num(quantize(&d.kind, x)),
                        c => c,
                    })
                    .find(|v| *v != current[&d.key])
                    .map(|v| (v, 0.0)),
            };
            if let Some((v, g)) = value {
                cand.insert(d.key.clone(), v);
                gain += g;
                changed += 1;
            }
        }
        repair(&mut cand, &current, max_seq_len);
        if cand != current && !observed.contains(&key_of(&cand)) {
            chosen = Some((cand, gain));
            break;
        }
    }
    let Some((best, gain)) = chosen else {
        bail!("evolve found no untried change near the current values");
    };

    let changes = changes_of(&consts, &best);
    let shown: Vec<String> = changes
        .iter()
        .map(|(name, v)| {
            let old = &consts.iter().find(|c| &c.name == name).expect("changed consts exist").value;
            format!("{name} {old}→{v}")
        })
        .collect();
    let crashes = history.iter().filter(|o| o.score.is_none()).count();
    let hypothesis = if tpe {
        format!(
            "TPE on {} runs ({} good, {crashes} crashed): dials picked by how much changing them has moved \
             val_bpb, values where the best runs cluster (log l/g {gain:+.2} over the incumbent)",
            history.len(),
            good.len()
        )
    } else {
        format!(
            "exploring around the incumbent: {} usable runs so far, the density model takes over at {N_STARTUP}",
            history.len()
        )
    };
    Ok(Proposal { changes, description: format!("evolve: {}", shown.join(", ")), hypothesis })
}

/// Random search over the same space, for comparison (`--agent random`): 1–2 dials of the
/// incumbent, each set to a value drawn uniformly over its range; nothing is learnt.
pub fn propose_random(
    source: &str,
    history: &[Observation],
    seed: u64,
    number: u64,
    max_seq_len: usize,
) -> Result<Proposal> {
    let consts = hyperparams::parse(source)?;
    let current = config_of(&consts);
    let dims = space(&current);
    if dims.is_empty() {
        bail!("the HYPERPARAMETERS section of {TRAIN_FILE} has no dial to search");
    }
    let mut rng = Rng::new(fingerprint(seed ^ 0x5eed_0f_7a4d, number, history));
    let observed: HashSet<String> = history.iter().map(|o| key_of(&o.config)).collect();
    for _ in 0..N_CANDIDATES {
        let mut cand = current.clone();
        for _ in 0..1 + rng.below(2) {
            let d = &dims[rng.below(dims.len())];
            let v = match &d.kind {
                DimKind::Numeric { scale, lo, hi, .. } => {
                    let (tlo, thi) = t_bounds(*scale, *lo, *hi);
                    P::Num(quantize(&d.kind, from_t(*scale, tlo + (thi - tlo) * rng.f64())))
                }
                DimKind::Choice(options) => P::Cat(options[rng.below(options.len())].clone()),
            };
            cand.insert(d.key.clone(), v);
        }
        repair(&mut cand, &current, max_seq_len);
        if cand != current && !observed.contains(&key_of(&cand)) {
            let changes = changes_of(&consts, &cand);
            let shown: Vec<String> = changes
                .iter()
                .map(|(name, v)| {
                    let old = &consts.iter().find(|c| &c.name == name).expect("changed consts exist").value;
                    format!("{name} {old}→{v}")
                })
                .collect();
            return Ok(Proposal {
                changes,
                description: format!("random: {}", shown.join(", ")),
                hypothesis: "random search (the baseline a learning proposer must beat)".into(),
            });
        }
    }
    bail!("random search found no untried change")
}

/// The best of SAMPLES_PER_DIM draws from l that differ from the current value, by l/g
/// gain over it.
fn best_value(d: &Dim, m: &Model, current: &P, rng: &mut Rng) -> Option<(P, f64)> {
    let base = m.ratio(current);
    let mut top: Option<(P, f64)> = None;
    for _ in 0..SAMPLES_PER_DIM {
        let v = match m {
            Model::Numeric { scale, l, .. } => P::Num(quantize(&d.kind, from_t(*scale, l.sample(rng)))),
            Model::Choice { l, .. } => P::Cat(l.options[rng.weighted(&l.probs)].clone()),
        };
        if v == *current {
            continue;
        }
        let g = m.ratio(&v) - base;
        if top.as_ref().is_none_or(|(_, t)| g > *t) {
            top = Some((v, g));
        }
    }
    top
}

/// Good = the best GAMMA of the scored observations (at least one); bad = the rest and
/// every crash.
fn split(history: &[Observation]) -> (Vec<&Observation>, Vec<&Observation>) {
    let mut scored: Vec<&Observation> = history.iter().filter(|o| o.score.is_some()).collect();
    scored.sort_by(|a, b| a.score.partial_cmp(&b.score).expect("finite scores"));
    let mut n_good = ((GAMMA * scored.len() as f64).ceil() as usize).clamp(1, scored.len());
    // Observations tied with the first bad one say nothing about what is good (a change
    // that did not move val_bpb at all): the boundary moves above them, keeping the
    // earliest of the best.
    while n_good > 1 && n_good < scored.len() && scored[n_good - 1].score == scored[n_good].score {
        n_good -= 1;
    }
    let bad = scored[n_good..].iter().copied().chain(history.iter().filter(|o| o.score.is_none())).collect();
    scored.truncate(n_good);
    (scored, bad)
}

/// l and g for one dimension; l's prior component is centred where the [`momentum`] points.
fn fit(d: &Dim, current: &P, drift: f64, good: &[&Observation], bad: &[&Observation]) -> Model {
    match &d.kind {
        DimKind::Numeric { scale, lo, hi, sigma, .. } => {
            let (tlo, thi) = t_bounds(*scale, *lo, *hi);
            let points = |obs: &[&Observation]| -> Vec<f64> {
                obs.iter()
                    .filter_map(|o| match o.config.get(&d.key) {
                        Some(P::Num(x)) => Some(to_t(*scale, *x).clamp(tlo, thi)),
                        _ => None,
                    })
                    .collect()
            };
            let centre = match current {
                P::Num(x) => to_t(*scale, *x).clamp(tlo, thi),
                P::Cat(_) => (tlo + thi) / 2.0,
            };
            Model::Numeric {
                scale: *scale,
                l: Parzen::fit(&points(good), (centre + drift).clamp(tlo, thi), *sigma, tlo, thi),
                g: Parzen::fit(&points(bad), centre, *sigma, tlo, thi),
            }
        }
        DimKind::Choice(options) => {
            let points = |obs: &[&Observation]| -> Vec<String> {
                obs.iter()
                    .filter_map(|o| match o.config.get(&d.key) {
                        Some(P::Cat(c)) => Some(c.clone()),
                        _ => None,
                    })
                    .collect()
            };
            let (pg, pb) = (points(good), points(bad));
            Model::Choice {
                l: Categorical::fit(options, &pg.iter().map(String::as_str).collect::<Vec<_>>()),
                g: Categorical::fit(options, &pb.iter().map(String::as_str).collect::<Vec<_>>()),
            }
        }
    }
}

/// A step from the current value: along the dial's momentum when it has one (the same step
/// again, give or take a quarter), else N(0, sigma) with at least half a sigma either way — a
/// smaller step rarely moves val_bpb beyond the seed noise, and costs a whole experiment.
fn prior_sample(d: &Dim, current: &P, drift: f64, rng: &mut Rng) -> P {
    match (&d.kind, current) {
        (DimKind::Numeric { scale, lo, hi, sigma, .. }, P::Num(x)) => {
            let (tlo, thi) = t_bounds(*scale, *lo, *hi);
            let step = if drift != 0.0 {
                drift * (1.0 + 0.25 * rng.normal())
            } else {
                let z = (0..16).map(|_| rng.normal()).find(|z| z.abs() >= 0.5).unwrap_or(0.5);
                sigma * z
            };
            P::Num(from_t(*scale, (to_t(*scale, *x) + step).clamp(tlo, thi)))
        }
        (DimKind::Choice(options), _) => P::Cat(options[rng.below(options.len())].clone()),
        (_, v) => v.clone(),
    }
}

/// Makes a configuration runnable: TOTAL_BATCH_SIZE a multiple of DEVICE_BATCH_SIZE ×
/// MAX_SEQ_LEN (whichever of the two the proposal changed wins; a pre-existing violation
/// is fixed too), and WARMUP_RATIO + WARMDOWN_RATIO ≤ 1.
pub fn repair(cfg: &mut Config, current: &Config, max_seq_len: usize) {
    let num = |cfg: &Config, k: &str| match cfg.get(k) {
        Some(P::Num(x)) => Some(*x),
        _ => None,
    };
    if let (Some(total), Some(device)) = (num(cfg, "TOTAL_BATCH_SIZE"), num(cfg, "DEVICE_BATCH_SIZE")) {
        let (total, mut device, msl) =
            (total.max(1.0) as u64, device.max(1.0) as u64, max_seq_len.max(1) as u64);
        let total_moved = cfg.get("TOTAL_BATCH_SIZE") != current.get("TOTAL_BATCH_SIZE");
        let device_moved = cfg.get("DEVICE_BATCH_SIZE") != current.get("DEVICE_BATCH_SIZE");
        if total % (device * msl) != 0 {
            if total_moved && !device_moved {
                while device > 1 && total % (device * msl) != 0 {
                    device /= 2;
                }
            }
            let unit = device * msl;
            let total = total.div_ceil(unit).max(1) * unit;
            cfg.insert("TOTAL_BATCH_SIZE".into(), P::Num(total as f64));
            cfg.insert("DEVICE_BATCH_SIZE".into(), P::Num(device as f64));
        }
    }
    if let (Some(up), Some(down)) = (num(cfg, "WARMUP_RATIO"), num(cfg, "WARMDOWN_RATIO"))
        && up + down > 1.0
    {
        cfg.insert("WARMDOWN_RATIO".into(), P::Num(to_step((1.0 - up - 0.025).max(0.0), 0.05)));
    }
}

/// The const values of a configuration that differ from the parsed section.
fn changes_of(consts: &[Const], cfg: &Config) -> Vec<(String, Value)> {
    let num = |k: &str| match cfg.get(k) {
        Some(P::Num(x)) => Some(*x),
        _ => None,
    };
    consts
        .iter()
        .filter_map(|c| {
            let new = match &c.value {
                Value::Int(_) => Value::Int(num(&c.name)?.round() as i64),
                Value::Float(_) => Value::Float(num(&c.name)?),
                Value::Pair(..) => {
                    Value::Pair(num(&format!("{}.0", c.name))?, num(&format!("{}.1", c.name))?)
                }
                Value::Str(_) => match cfg.get(&c.name) {
                    Some(P::Cat(s)) => Value::Str(s.clone()),
                    _ => return None,
                },
            };
            (new != c.value).then(|| (c.name.clone(), new))
        })
        .collect()
}

/// A canonical string of a configuration, for "already measured".
fn key_of(cfg: &Config) -> String {
    format!("{cfg:?}")
}

/// FNV-1a of the seed, the experiment number and the history.
fn fingerprint(seed: u64, number: u64, history: &[Observation]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&seed.to_le_bytes());
    eat(&number.to_le_bytes());
    for o in history {
        eat(key_of(&o.config).as_bytes());
        eat(&o.score.map_or(u64::MAX, f64::to_bits).to_le_bytes());
    }
    h
}

/// SplitMix64: small, fast, and the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.f64() * n as f64) as usize % n.max(1)
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.f64().max(f64::MIN_POSITIVE);
        let v = self.f64();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// An index drawn proportionally to `weights`.
    fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.f64() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

// ---------------------------------------------------------------------------------------
// The agent
// ---------------------------------------------------------------------------------------

/// The `evolve` driver: remembers the configurations of commits it has read.
pub struct Evolve {
    seed: u64,
    max_seq_len: usize,
    reader: CommitReader,
    cache: HashMap<String, Option<Config>>,
    /// Random search instead of the learning proposer (for comparisons).
    random: bool,
}

impl Evolve {
    /// `--agent random`: the same space, searched uniformly.
    pub fn random(opts: &AgentOptions) -> Result<Evolve> {
        let mut e = Evolve::new(opts)?;
        e.random = true;
        Ok(e)
    }

    /// Reads commits with `git show`; MAX_SEQ_LEN from the options or the active profile.
    pub fn new(opts: &AgentOptions) -> Result<Evolve> {
        let max_seq_len = match opts.max_seq_len {
            Some(n) => n,
            None => prepare::profile::Profile::active()?.max_seq_len,
        };
        Ok(Evolve::with_reader(opts.seed, max_seq_len, Box::new(git_show)))
    }

    /// With an explicit commit reader (tests simulate a history without git).
    pub fn with_reader(seed: u64, max_seq_len: usize, reader: CommitReader) -> Evolve {
        Evolve { seed, max_seq_len, reader, cache: HashMap::new(), random: false }
    }

    /// The configuration at a commit, read once.
    fn config_at(&mut self, repo: &Path, commit: &str) -> Option<Config> {
        let reader = &mut self.reader;
        self.cache
            .entry(commit.to_string())
            .or_insert_with(|| {
                reader(repo, commit).and_then(|t| hyperparams::parse(&t).ok()).map(|c| config_of(&c))
            })
            .clone()
    }

    /// The observations of a journal. A parent's score is the mean of its measurements
    /// so far (baseline runs, confirmations).
    pub fn observations(&mut self, repo: &Path, events: &[Event]) -> Vec<Observation> {
        let mut scores: HashMap<String, Vec<f64>> = HashMap::new();
        let mut out = Vec::new();
        for run in decided(events) {
            let Some(config) = self.config_at(repo, &run.commit) else { continue };
            let parent = run.parent.as_deref().and_then(|p| {
                let score = scores.get(p).map(|s| s.iter().sum::<f64>() / s.len() as f64);
                Some((self.config_at(repo, p)?, score))
            });
            if let Some(s) = run.score {
                scores.entry(run.commit.clone()).or_default().push(s);
            }
            out.push(Observation { config, score: run.score, parent });
        }
        out
    }
}

impl Agent for Evolve {
    fn name(&self) -> String {
        if self.random { "random" } else { "evolve" }.to_string()
    }

    fn propose(&mut self, turn: &Turn) -> Result<Outcome> {
        let source = read_train(turn.repo)?;
        let history = self.observations(turn.repo, turn.events);
        let proposal = if self.random {
            propose_random(&source, &history, self.seed, turn.number, self.max_seq_len)
        } else {
            propose(&source, &history, self.seed, turn.number, self.max_seq_len)
        };
        let proposal = match proposal {
            Ok(p) => p,
            Err(e) => return Ok(Outcome::Failed { detail: format!("{e:#}") }),
        };
        if proposal.changes.is_empty() {
            return Ok(Outcome::NoChange { detail: "evolve: nothing to change".into() });
        }
        write_train(turn.repo, &hyperparams::rewrite(&source, &proposal.changes)?)?;
        Ok(Outcome::Changed { description: proposal.description, hypothesis: Some(proposal.hypothesis) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_quantize_rounds_for_the_scale() {
        let lr = dim_kind("MATRIX_LR", &P::Num(0.04)).unwrap();
        assert_eq!(quantize(&lr, 0.054_91), 0.055);
        assert_eq!(quantize(&lr, 5.0), 0.5);
        let beta = dim_kind("ADAM_BETAS.1", &P::Num(0.95)).unwrap();
        assert_eq!(quantize(&beta, 0.9512), 0.951);
        assert_eq!(format!("{}", quantize(&beta, 0.99861)), "0.9986");
        let pow2 = dim_kind("DEVICE_BATCH_SIZE", &P::Num(16.0)).unwrap();
        assert_eq!(quantize(&pow2, 22.0), 16.0);
        assert_eq!(quantize(&pow2, 24.5), 32.0);
        let ratio = dim_kind("WARMDOWN_RATIO", &P::Num(0.5)).unwrap();
        assert_eq!(quantize(&ratio, 0.5612), 0.55);
        let aspect = dim_kind("ASPECT_RATIO", &P::Num(64.0)).unwrap();
        assert_eq!(quantize(&aspect, 77.0), 80.0);
        assert_eq!(format!("{}", quantize(&lr, 0.0123456)), "0.012");
    }

    #[test]
    fn test_repair_keeps_the_batch_sizes_divisible() {
        let cfg = |t: f64, d: f64| -> Config {
            [("TOTAL_BATCH_SIZE".to_string(), P::Num(t)), ("DEVICE_BATCH_SIZE".to_string(), P::Num(d))].into()
        };
        let current = cfg(4096.0, 16.0);
        // TOTAL shrank: DEVICE follows it down.
        let mut c = cfg(2048.0, 16.0);
        repair(&mut c, &current, 256);
        assert_eq!(c, cfg(2048.0, 8.0));
        // DEVICE grew: TOTAL follows it up.
        let mut c = cfg(4096.0, 64.0);
        repair(&mut c, &current, 256);
        assert_eq!(c, cfg(16384.0, 64.0));
        // A profile with a longer context fixes a file written for a shorter one.
        let mut c = current.clone();
        repair(&mut c, &current, 2048);
        assert_eq!(c, cfg(32768.0, 16.0));
        let mut c = cfg(4096.0, 16.0);
        repair(&mut c, &current, 192);
        let (P::Num(t), P::Num(d)) = (&c["TOTAL_BATCH_SIZE"], &c["DEVICE_BATCH_SIZE"]) else { panic!() };
        assert_eq!(*t as u64 % (*d as u64 * 192), 0);
    }

    #[test]
    fn test_rng_is_reproducible() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..5).map(|_| b.next_u64()).collect::<Vec<_>>());
        let mean = (0..20000).map(|_| a.normal()).sum::<f64>() / 20000.0;
        assert!(mean.abs() < 0.03, "{mean}");
    }
}
