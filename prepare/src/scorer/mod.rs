//! The scorer: `val_bpb` computed by trusted code, from a model served by another process,
//! with probes that catch the leaks an agent's edit can introduce by accident.
//!
//! This runs in `ar` (never in the train program). It holds the val and test rows, sends
//! their inputs to the serving process (`prepare::serve`), and computes bits per byte from
//! what comes back with today's formula (`logprobs`, `BpbAccumulator`). The rows are fixed:
//! exactly `EVAL_TOKENS / MAX_SEQ_LEN` of each split, whatever batch size the train file
//! uses (the server only caps the rows per query).
//!
//! Two variants, chosen by the profile (`Profile::scoring`):
//! - **full** — the server returns every logit and `ar` computes every log-probability.
//!   At the cpu profile that moves 2 GiB per split through a pipe, about a second.
//! - **audited** — for profiles whose logits are too large to move (h100: 687 GB per
//!   split), the server returns the log-probability of each target; `ar` hashes everything
//!   it received (the commitment), then draws audit rows *after* the commitment — a random
//!   sample plus the rows that scored best — and asks a *fresh* process, started from the
//!   same checkpoint and shown only those rows, for their full logits. Any disagreement
//!   beyond the tolerance is `tampered`: the scoring process reported values its own model
//!   does not produce.
//!
//! Probes, mixed into the query stream at positions drawn by `ar` so a server cannot tell
//! them from scoring queries, on every experiment:
//! - **causality** — a row whose suffix from position p on is replaced by another row's:
//!   the outputs at positions < p (p−1 included, whose target is the replaced token) must
//!   not change;
//! - **batch composition** — rows scored again inside a different batch, and one row alone;
//! - **stationarity** — the first batch of a split asked again at its end.
//! A failed probe is a `leak`, reported in one sentence the agent can act on. When several
//! fail, the most specific cause is named: a model that changes while being scored fails
//! everything, so stationarity is checked first, then batch composition, then causality.

pub mod client;
pub mod logprobs;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::error::Result;
use crate::eval::BpbAccumulator;
use crate::loader::Loader;
use crate::manifest::Split;
use crate::profile::Scoring;
use crate::serve::Ask;
use crate::tokenizer::Tokenizer;

pub use client::Client;
use logprobs::{Fingerprint, WITNESSES, distance, fingerprints, target_logprobs};

/// Why a model got no score.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// A probe failed: the model sees what it must not.
    #[error("{0}")]
    Leak(String),
    /// Audited scoring: the committed log-probabilities are not the model's.
    #[error("{0}")]
    Tampered(String),
    /// The server broke the protocol, crashed or stopped answering.
    #[error("{0}")]
    Protocol(String),
    /// The model's output is unusable (NaN, too few logits).
    #[error("{0}")]
    Model(String),
}

/// The fixed rows of one split.
#[derive(Debug, Clone)]
pub struct Rows {
    pub split: Split,
    pub n: usize,
    pub seq: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Rows {
    /// Exactly `EVAL_TOKENS / MAX_SEQ_LEN` rows of `split`, packed as training rows are.
    pub fn load(cache: &Cache, tokenizer: &Arc<Tokenizer>, split: Split) -> Result<Rows> {
        let (n, seq) = (cache.profile.eval_rows(), cache.profile.max_seq_len);
        let batch = Loader::new(cache, tokenizer, n, seq, split)?.next_batch()?;
        Ok(Rows { split, n, seq, inputs: batch.inputs, targets: batch.targets })
    }

    pub fn input(&self, r: usize) -> &[u32] {
        &self.inputs[r * self.seq..(r + 1) * self.seq]
    }

    pub fn target(&self, r: usize) -> &[u32] {
        &self.targets[r * self.seq..(r + 1) * self.seq]
    }
}

/// Knobs of one scoring.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest |difference| in nats between two answers that should agree (float noise of
    /// the device: about 1e-6 on the CPU, more with bf16 on a GPU).
    pub tolerance: f32,
    /// Random rows per split the audit re-scores (plus the best-scoring rows).
    pub audit_rows: usize,
    /// Most bytes of logits per query. 32 MB keeps an answer within glibc's largest mmap
    /// threshold, so both processes reuse their buffers instead of faulting in fresh pages
    /// for every query (256 MB answers cost the cpu profile about a second of page faults).
    pub max_answer_bytes: usize,
    /// Ids below this are real tokens (not specials): replacements in probes come from them.
    pub vocab: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { tolerance: 1e-3, audit_rows: 256, max_answer_bytes: 32 << 20, vocab: 0 }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub probe: String,
    pub split: String,
    /// Rows it compared.
    pub rows: usize,
    /// Largest difference seen, in nats.
    pub max_diff: f32,
    pub passed: bool,
}

/// The score of one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitScore {
    pub split: String,
    pub bpb: f64,
    pub rows: usize,
    /// Targets scored (special tokens excluded).
    pub tokens: u64,
}

/// Everything the record says about how the number was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub mode: String,
    pub splits: Vec<SplitScore>,
    pub probes: Vec<ProbeResult>,
    /// Audited variant: sha256 of every answer byte before the audit rows were drawn.
    pub commitment: Option<String>,
    /// Audited variant: rows re-scored from full logits by the fresh process.
    pub audited_rows: usize,
    /// Bytes received from the serving processes.
    pub bytes_received: u64,
    pub seconds: f64,
}

impl Scored {
    pub fn bpb(&self, split: Split) -> Option<f64> {
        self.splits.iter().find(|s| s.split == split.name()).map(|s| s.bpb)
    }
}

/// SplitMix64: `ar`'s own randomness for probe rows, positions and audit samples.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Seeded from the operating system, so nothing the train program can see predicts it.
    pub fn from_os() -> Rng {
        let mut b = [0u8; 8];
        let ok =
            std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
        let fallback = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (std::process::id() as u64) << 32;
        Rng(if ok.is_ok() { u64::from_le_bytes(b) } else { fallback })
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `k` distinct values of `0..n`, in random order.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + self.below(n - i);
            all.swap(i, j);
        }
        all.truncate(k.min(n));
        all
    }
}

// ---------------------------------------------------------------------------------------
// Probes: which rows are asked again, how, and what must match

/// Why a row is asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum ProbeKind {
    Stationary,
    Company,
    Alone,
    Causal,
}

impl ProbeKind {
    fn name(self) -> &'static str {
        match self {
            ProbeKind::Stationary => "stationarity",
            ProbeKind::Company => "batch composition (other company)",
            ProbeKind::Alone => "batch composition (row alone)",
            ProbeKind::Causal => "causality",
        }
    }
}

/// One row of a probe query.
#[derive(Debug, Clone)]
struct ProbeRow {
    kind: ProbeKind,
    /// Index of the original row whose first answer is the reference.
    row: usize,
    /// The input sent (the original, or its suffix replaced from `from`).
    input: Vec<u32>,
    /// Targets sent for a log-probability query.
    targets: Vec<u32>,
    /// Positions `0..compare` must match the reference.
    compare: usize,
    /// Causality: the first replaced position.
    from: usize,
}

/// One query of the plan.
#[derive(Debug, Clone)]
enum Job {
    /// Original rows `start..start+count`: they are scored.
    Score { start: usize, count: usize },
    /// Rows asked again; compared, never scored.
    Probe(Vec<ProbeRow>),
}

/// A failed comparison.
#[derive(Debug, Clone)]
struct Failure {
    kind: ProbeKind,
    row: usize,
    position: usize,
    from: usize,
    diff: f32,
    batch: usize,
}

/// Builds a causal probe of `row`: its suffix from a random position replaced by another
/// row's, with the first replaced token guaranteed to differ.
fn causal_probe(rows: &Rows, row: usize, rng: &mut Rng, vocab: usize, logprob_mode: bool) -> ProbeRow {
    let seq = rows.seq;
    let from = 1 + rng.below(seq.max(2) - 1);
    let mut input = rows.input(row).to_vec();
    let donor = if rows.n > 1 { (row + 1 + rng.below(rows.n - 1)) % rows.n } else { row };
    input[from..].copy_from_slice(&rows.input(donor)[from..]);
    if input[from] == rows.input(row)[from] {
        // Same token at the boundary: change it so position from−1's target really differs.
        input[from] = ((input[from] as usize + 1 + rng.below(vocab.max(2) - 1)) % vocab.max(2)) as u32;
        if input[from] == rows.input(row)[from] {
            input[from] = (input[from] + 1) % vocab.max(2) as u32;
        }
    }
    // Log-probability answers depend on the target: the position whose target changed
    // (from−1) cannot be compared there; full-logit answers compare it through the
    // original target's log-probability.
    let mut targets = rows.target(row).to_vec();
    targets[from - 1..].copy_from_slice(&{
        let mut t = input[from..].to_vec();
        t.push(rows.target(donor)[seq - 1]);
        t
    });
    let compare = if logprob_mode { from - 1 } else { from };
    ProbeRow { kind: ProbeKind::Causal, row, input, targets, compare, from }
}

fn plain_probe(rows: &Rows, row: usize, kind: ProbeKind) -> ProbeRow {
    ProbeRow {
        kind,
        row,
        input: rows.input(row).to_vec(),
        targets: rows.target(row).to_vec(),
        compare: rows.seq,
        from: rows.seq,
    }
}

/// The queries for one split: the rows in batches of `batch`, a probe batch at a random
/// point (two causal rows among rows already scored, in new company), one row alone right
/// after it, and the first batch again at the end.
fn plan(
    rows: &Rows,
    batch: usize,
    rng: &mut Rng,
    vocab: usize,
    causal: usize,
    logprob_mode: bool,
) -> Vec<Job> {
    let nb = rows.n.div_ceil(batch);
    let mut jobs: Vec<Job> =
        (0..nb).map(|b| Job::Score { start: b * batch, count: batch.min(rows.n - b * batch) }).collect();
    let after = 1 + rng.below(nb);
    let seen = (after * batch).min(rows.n);
    let picked = rng.sample(seen, batch.max(causal + 1).min(seen));
    let mut probe: Vec<ProbeRow> = Vec::new();
    for (i, &r) in picked.iter().enumerate() {
        probe.push(if i < causal {
            causal_probe(rows, r, rng, vocab, logprob_mode)
        } else {
            plain_probe(rows, r, ProbeKind::Company)
        });
    }
    // Shuffle so the causal rows sit anywhere in the batch.
    for i in (1..probe.len()).rev() {
        probe.swap(i, rng.below(i + 1));
    }
    let mut extra = Vec::new();
    while !probe.is_empty() {
        let take = probe.len().min(batch);
        extra.push(Job::Probe(probe.drain(..take).collect()));
    }
    let alone = picked[rng.below(picked.len())];
    extra.push(Job::Probe(vec![plain_probe(rows, alone, ProbeKind::Alone)]));
    for (i, job) in extra.into_iter().enumerate() {
        jobs.insert(after + i, job);
    }
    let first = (0..batch.min(rows.n)).map(|r| plain_probe(rows, r, ProbeKind::Stationary)).collect();
    jobs.push(Job::Probe(first));
    jobs
}

/// Rows whose first answer a probe compares against.
fn referenced(jobs: &[Job]) -> BTreeSet<usize> {
    jobs.iter()
        .filter_map(|j| if let Job::Probe(p) = j { Some(p.iter().map(|r| r.row)) } else { None })
        .flatten()
        .collect()
}

/// The reference kept for a row: per-position fingerprints (full logits) or log-probs.
enum Reference {
    Logits(Vec<Fingerprint>),
    LogProbs(Vec<f32>),
}

/// Runs `jobs` against `client` (two queries in flight), calling `scored` for every
/// original row's answer, and checking probes against the references. Returns failures.
#[allow(clippy::too_many_arguments)]
fn run_jobs(
    client: &mut Client,
    rows: &Rows,
    jobs: &[Job],
    ask: Ask,
    witnesses: &[u32; WITNESSES],
    settings: &Settings,
    probes: &mut Vec<ProbeResult>,
    scored: &mut dyn FnMut(usize, &[f32], usize) -> std::result::Result<(), ScoreError>,
) -> std::result::Result<Vec<Failure>, ScoreError> {
    let keep = referenced(jobs);
    let mut refs: BTreeMap<usize, Reference> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut maxima: BTreeMap<ProbeKind, (usize, f32)> = BTreeMap::new();
    let seq = rows.seq;
    let submit = |client: &mut Client, job: &Job| match job {
        Job::Score { start, count } => {
            let r = start * seq..(start + count) * seq;
            let t = (ask == Ask::LogProbs).then(|| &rows.targets[r.clone()]);
            client.submit(ask, &rows.inputs[r], t, *count, seq);
        }
        Job::Probe(p) => {
            let inputs: Vec<u32> = p.iter().flat_map(|r| r.input.iter().copied()).collect();
            let targets: Vec<u32> = p.iter().flat_map(|r| r.targets.iter().copied()).collect();
            client.submit(ask, &inputs, (ask == Ask::LogProbs).then_some(&targets[..]), p.len(), seq);
        }
    };
    let mut next = 0;
    while next < jobs.len().min(2) {
        submit(client, &jobs[next]);
        next += 1;
    }
    for (j, job) in jobs.iter().enumerate() {
        let answer = client.receive()?;
        if next < jobs.len() {
            submit(client, &jobs[next]);
            next += 1;
        }
        let width = answer.width;
        if ask == Ask::Logits && width < settings.vocab {
            return Err(ScoreError::Model(format!(
                "the model returned {width} logits per position; the vocabulary has {}",
                settings.vocab
            )));
        }
        let per_row = seq * width;
        match job {
            Job::Score { start, count } => {
                for i in 0..*count {
                    let r = start + i;
                    let values = &answer.values[i * per_row..(i + 1) * per_row];
                    scored(r, values, width)?;
                    if keep.contains(&r) {
                        let reference = match ask {
                            Ask::Logits => {
                                Reference::Logits(fingerprints(values, width, rows.target(r), witnesses)?)
                            }
                            _ => Reference::LogProbs(values.to_vec()),
                        };
                        refs.insert(r, reference);
                    }
                }
            }
            Job::Probe(probe) => {
                for (i, p) in probe.iter().enumerate() {
                    let values = &answer.values[i * per_row..(i + 1) * per_row];
                    let reference = refs.get(&p.row).expect("a probe follows the row it repeats");
                    let diffs: Vec<f32> = match reference {
                        Reference::Logits(fp) => {
                            // The original targets: at from−1 this is the replaced token.
                            let now = fingerprints(values, width, rows.target(p.row), witnesses)?;
                            fp.iter().zip(&now).take(p.compare).map(|(a, b)| distance(a, b)).collect()
                        }
                        Reference::LogProbs(lp) => lp
                            .iter()
                            .zip(values)
                            .take(p.compare)
                            .map(|(a, b)| if a == b { 0.0 } else { (a - b).abs() })
                            .collect(),
                    };
                    if diffs.iter().any(|d| !d.is_finite()) {
                        return Err(ScoreError::Model(
                            "the model returned non-finite values for a repeated row".into(),
                        ));
                    }
                    let worst = diffs.iter().copied().fold(0.0f32, f32::max);
                    let entry = maxima.entry(p.kind).or_insert((0, 0.0));
                    entry.0 += 1;
                    entry.1 = entry.1.max(worst);
                    if let Some(t) = diffs.iter().position(|&d| d > settings.tolerance) {
                        failures.push(Failure {
                            kind: p.kind,
                            row: p.row,
                            position: t,
                            from: p.from,
                            diff: diffs[t],
                            batch: probe.len(),
                        });
                    }
                }
            }
        }
        let _ = j;
    }
    for (kind, (n, worst)) in maxima {
        probes.push(ProbeResult {
            probe: kind.name().to_string(),
            split: rows.split.name().to_string(),
            rows: n,
            max_diff: worst,
            passed: worst <= settings.tolerance,
        });
    }
    Ok(failures)
}

/// The one sentence the agent reads for the most specific failure.
fn leak_sentence(failures: &[Failure], split: Split) -> Option<String> {
    let worst = failures.iter().min_by_key(|f| (f.kind, f.position))?;
    Some(match worst.kind {
        ProbeKind::Stationary => format!(
            "the model changes while it is being scored: the same {split} rows asked first and again at the end \
             differ by {:.3} nats (row {}, position {}) — it must not train, adapt or keep state between queries",
            worst.diff, worst.row, worst.position
        ),
        ProbeKind::Company | ProbeKind::Alone => format!(
            "the output for one row depends on the other rows in its batch: {split} row {} differs by {:.3} nats at \
             position {} when scored {} — remove any statistic taken over the batch axis",
            worst.row,
            worst.diff,
            worst.position,
            if worst.kind == ProbeKind::Alone {
                "alone".to_string()
            } else {
                format!("in another batch of {}", worst.batch)
            }
        ),
        ProbeKind::Causal => {
            let ahead = worst.from - worst.position;
            let which = if ahead == 1 {
                format!("token t+1 (the token it is predicting)")
            } else {
                format!("tokens up to t+{ahead} or further ahead")
            };
            format!(
                "the model is not causal: the output at position t = {} depends on {which} — changing only the tokens \
                 from position {} on changed it by {:.3} nats; look for a shift in the wrong direction, a convolution \
                 without causal padding, or a mean or norm over the sequence axis",
                worst.position, worst.from, worst.diff
            )
        }
    })
}

fn random_witnesses(rng: &mut Rng, vocab: usize) -> [u32; WITNESSES] {
    let mut w = [0u32; WITNESSES];
    for slot in &mut w {
        *slot = rng.below(vocab.max(1)) as u32;
    }
    w
}

/// Rows per query: the server's cap, and no more than `max_answer_bytes` of logits.
fn batch_rows(client: &Client, seq: usize, vocab: usize, settings: &Settings, logits: bool) -> usize {
    let by_bytes =
        if logits { (settings.max_answer_bytes / (seq * vocab.max(1) * 4)).max(1) } else { usize::MAX };
    client.max_rows.min(by_bytes).max(1)
}

/// Full variant: every logit of every row of every split, probes on each.
pub fn score_full(
    client: &mut Client,
    splits: &[&Rows],
    token_bytes: &[u32],
    settings: &Settings,
    rng: &mut Rng,
) -> std::result::Result<Scored, ScoreError> {
    let started = Instant::now();
    let vocab = settings.vocab.max(token_bytes.len());
    let witnesses = random_witnesses(rng, vocab);
    let mut out = Scored {
        mode: "trusted-full".into(),
        splits: Vec::new(),
        probes: Vec::new(),
        commitment: None,
        audited_rows: 0,
        bytes_received: 0,
        seconds: 0.0,
    };
    for rows in splits {
        let batch = batch_rows(client, rows.seq, vocab, settings, true);
        let jobs = plan(rows, batch, rng, vocab, 2, false);
        let mut acc = BpbAccumulator::new(token_bytes);
        let mut add = |r: usize, values: &[f32], width: usize| -> std::result::Result<(), ScoreError> {
            let lp = target_logprobs(values, width, rows.target(r))?;
            acc.add_log_probs(&lp, rows.target(r)).map_err(|e| ScoreError::Model(e.to_string()))
        };
        let failures =
            run_jobs(client, rows, &jobs, Ask::Logits, &witnesses, settings, &mut out.probes, &mut add)?;
        if let Some(sentence) = leak_sentence(&failures, rows.split) {
            return Err(ScoreError::Leak(sentence));
        }
        out.splits.push(SplitScore {
            split: rows.split.name().into(),
            bpb: acc.bpb().map_err(|e| ScoreError::Model(e.to_string()))?,
            rows: rows.n,
            tokens: acc.tokens(),
        });
    }
    out.bytes_received = client.bytes_received;
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Audited variant. `first` answers log-probabilities for every row (and the probes that
/// make sense for them); then `fresh()` starts a new serving process from the same
/// checkpoint, which sees only the audit rows (drawn after the commitment) and causality
/// probes of them, and must agree with what `first` committed.
pub fn score_audited(
    first: &mut Client,
    fresh: &mut dyn FnMut() -> std::result::Result<Client, ScoreError>,
    splits: &[&Rows],
    token_bytes: &[u32],
    settings: &Settings,
    rng: &mut Rng,
) -> std::result::Result<Scored, ScoreError> {
    let started = Instant::now();
    let vocab = settings.vocab.max(token_bytes.len());
    let mut out = Scored {
        mode: "trusted-audited".into(),
        splits: Vec::new(),
        probes: Vec::new(),
        commitment: None,
        audited_rows: 0,
        bytes_received: 0,
        seconds: 0.0,
    };
    // 1. Commit: log-probabilities of every row from the first process.
    first.commit_answers();
    let mut committed: Vec<Vec<f32>> = Vec::new();
    let none = [0u32; WITNESSES];
    for rows in splits {
        let batch = batch_rows(first, rows.seq, vocab, settings, false);
        let jobs = plan(rows, batch, rng, vocab, 2, true);
        let mut lps = vec![0f32; rows.n * rows.seq];
        let mut keep = |r: usize, values: &[f32], _: usize| -> std::result::Result<(), ScoreError> {
            if let Some(v) = values.iter().find(|v| !v.is_finite() || **v > 0.0) {
                return Err(ScoreError::Model(format!(
                    "a reported log-probability is {v}, which no distribution gives"
                )));
            }
            lps[r * rows.seq..(r + 1) * rows.seq].copy_from_slice(values);
            Ok(())
        };
        let failures =
            run_jobs(first, rows, &jobs, Ask::LogProbs, &none, settings, &mut out.probes, &mut keep)?;
        if let Some(sentence) = leak_sentence(&failures, rows.split) {
            return Err(ScoreError::Leak(sentence));
        }
        committed.push(lps);
    }
    out.commitment = Some(first.commitment());
    // 2. Draw the audit only now: random rows, plus each split's best-scoring rows.
    let mut audit_rng = Rng::from_os();
    let mut fresh_client = fresh()?;
    let witnesses = random_witnesses(&mut audit_rng, vocab);
    for (rows, lps) in splits.iter().zip(&committed) {
        let mut per_row: Vec<(f64, usize)> = (0..rows.n)
            .map(|r| {
                let mut acc = BpbAccumulator::new(token_bytes);
                let _ = acc.add_log_probs(&lps[r * rows.seq..(r + 1) * rows.seq], rows.target(r));
                (acc.bpb().unwrap_or(f64::INFINITY), r)
            })
            .collect();
        per_row.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut chosen: BTreeSet<usize> = audit_rng.sample(rows.n, settings.audit_rows).into_iter().collect();
        chosen.extend(per_row.iter().take((rows.n / 100).max(1)).map(|&(_, r)| r));
        let chosen: Vec<usize> = chosen.into_iter().collect();
        let sub = Rows {
            split: rows.split,
            n: chosen.len(),
            seq: rows.seq,
            inputs: chosen.iter().flat_map(|&r| rows.input(r).iter().copied()).collect(),
            targets: chosen.iter().flat_map(|&r| rows.target(r).iter().copied()).collect(),
        };
        let batch = batch_rows(&fresh_client, rows.seq, vocab, settings, true);
        // The fresh process gets the audit rows and causality probes of them; the other
        // probes were asked of the first process already.
        let mut jobs = plan(&sub, batch, &mut audit_rng, vocab, 2, false);
        jobs.retain(|j| match j {
            Job::Probe(p) => p.iter().any(|r| r.kind == ProbeKind::Causal),
            Job::Score { .. } => true,
        });
        for j in &mut jobs {
            if let Job::Probe(p) = j {
                p.retain(|r| r.kind == ProbeKind::Causal);
            }
        }
        let mut mismatch: Option<(usize, usize, f32, f32, f32)> = None;
        let mut check = |i: usize, values: &[f32], width: usize| -> std::result::Result<(), ScoreError> {
            let r = chosen[i];
            let lp = target_logprobs(values, width, rows.target(r))?;
            let said = &lps[r * rows.seq..(r + 1) * rows.seq];
            for (t, (a, b)) in said.iter().zip(&lp).enumerate() {
                let d = (a - b).abs();
                if d > settings.tolerance && mismatch.is_none_or(|m| d > m.2) {
                    mismatch = Some((r, t, d, *a, *b));
                }
            }
            Ok(())
        };
        let failures = run_jobs(
            &mut fresh_client,
            &sub,
            &jobs,
            Ask::Logits,
            &witnesses,
            settings,
            &mut out.probes,
            &mut check,
        )?;
        if let Some(sentence) = leak_sentence(&failures, rows.split) {
            return Err(ScoreError::Leak(sentence));
        }
        if let Some((r, t, d, said, own)) = mismatch {
            return Err(ScoreError::Tampered(format!(
                "the scoring process reported log-probabilities its own model does not produce: {} row {r} position {t} \
                 was committed as {said:.4} nats, the model's logits give {own:.4} (difference {d:.4})",
                rows.split
            )));
        }
        out.audited_rows += chosen.len();
        let mut acc = BpbAccumulator::new(token_bytes);
        for r in 0..rows.n {
            acc.add_log_probs(&lps[r * rows.seq..(r + 1) * rows.seq], rows.target(r))
                .map_err(|e| ScoreError::Model(e.to_string()))?;
        }
        out.splits.push(SplitScore {
            split: rows.split.name().into(),
            bpb: acc.bpb().map_err(|e| ScoreError::Model(e.to_string()))?,
            rows: rows.n,
            tokens: acc.tokens(),
        });
    }
    fresh_client.finish();
    out.bytes_received = first.bytes_received;
    out.seconds = started.elapsed().as_secs_f64();
    Ok(out)
}

/// Which variant a profile (or a forced setting) uses.
pub fn mode_name(s: Scoring) -> &'static str {
    match s {
        Scoring::Full => "trusted-full",
        Scoring::Audited => "trusted-audited",
    }
}
