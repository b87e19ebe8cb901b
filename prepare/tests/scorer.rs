//! The trusted scorer against toy models served over real pipes, one per way a model can
//! cheat by accident or on purpose: an honest causal model (scored, every probe passes), a
//! model that looks one token ahead, one that mixes rows of a batch, one that changes
//! while it is scored, and — for the audited variant — one that commits log-probabilities
//! its own logits do not give. Each must fail with the crash its sentence names.

use std::fs::File;
use std::os::fd::FromRawFd;

use prepare::eval::BpbAccumulator;
use prepare::manifest::Split;
use prepare::scorer::{self, Client, Rng, Rows, ScoreError, Settings};
use prepare::serve::{Ask, Query, Server};

const V: usize = 24;
const SEQ: usize = 32;

fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array; both ends are then owned by the Files.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}

/// How a toy model computes the logits of one position.
#[derive(Clone, Copy, PartialEq)]
enum Toy {
    /// Depends on x[t] and x[t-1] only.
    Honest,
    /// Also on x[t+1]: a token shift the wrong way.
    LooksAhead,
    /// Also on the first token of the batch's first row: a statistic over the batch.
    MixesRows,
    /// Drifts with every query answered: it adapts while being scored.
    Drifts,
    /// Honest logits, but log-probability answers nudged towards certainty.
    LiesWhenCommitting,
}

fn logits_of(toy: Toy, q: &Query, queries_so_far: usize) -> Vec<f32> {
    let mut out = vec![0f32; q.rows * q.seq * V];
    for r in 0..q.rows {
        let row = &q.inputs[r * q.seq..(r + 1) * q.seq];
        for t in 0..q.seq {
            let cur = row[t] as usize;
            let prev = if t > 0 { row[t - 1] as usize } else { 0 };
            let logits = &mut out[(r * q.seq + t) * V..(r * q.seq + t + 1) * V];
            for (v, l) in logits.iter_mut().enumerate() {
                *l = (((cur * 7 + prev * 3 + v * 5) % 11) as f32) * 0.3;
            }
            match toy {
                Toy::LooksAhead if t + 1 < q.seq => logits[row[t + 1] as usize] += 2.0,
                Toy::MixesRows => logits[q.inputs[0] as usize % V] += 0.5,
                Toy::Drifts => logits[0] += 0.01 * queries_so_far as f32,
                _ => {}
            }
        }
    }
    out
}

fn log_softmax_at(logits: &[f32], id: usize) -> f32 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    (logits[id] as f64 - max as f64 - sum.ln()) as f32
}

/// Serves `toy` on a thread; returns the client's ends.
fn serve(toy: Toy) -> Client {
    let (query_r, query_w) = pipe();
    let (answer_r, answer_w) = pipe();
    std::thread::spawn(move || {
        let mut server = Server::over(query_r, answer_w, 8).unwrap();
        let mut n = 0;
        while let Some(q) = server.next().unwrap() {
            let logits = logits_of(toy, &q, n);
            n += 1;
            match (&q.ask, &q.targets) {
                (Ask::LogProbs, Some(targets)) => {
                    let lp: Vec<f32> = (0..q.rows * q.seq)
                        .map(|i| {
                            let lp = log_softmax_at(&logits[i * V..(i + 1) * V], targets[i] as usize);
                            if toy == Toy::LiesWhenCommitting { lp * 0.8 } else { lp }
                        })
                        .collect();
                    server.answer(&q, 1, &lp).unwrap();
                }
                _ => server.answer(&q, V, &logits).unwrap(),
            }
        }
    });
    Client::connect(query_w, answer_r).unwrap()
}

fn rows(split: Split, n: usize, seed: u64) -> Rows {
    let mut rng = Rng::new(seed);
    let mut inputs = Vec::new();
    let mut targets = Vec::new();
    for _ in 0..n {
        let row: Vec<u32> = (0..=SEQ).map(|_| rng.below(V - 1) as u32).collect();
        inputs.extend_from_slice(&row[..SEQ]);
        targets.extend_from_slice(&row[1..]);
    }
    Rows { split, n, seq: SEQ, inputs, targets }
}

/// Every id 1 byte but the last (a special token, 0 bytes).
fn token_bytes() -> Vec<u32> {
    let mut b = vec![1u32; V];
    b[V - 1] = 0;
    b
}

fn settings() -> Settings {
    Settings { tolerance: 1e-4, audit_rows: 6, vocab: V, ..Settings::default() }
}

/// The bpb computed directly, as a check on the scorer's arithmetic.
fn direct_bpb(r: &Rows) -> f64 {
    let q = Query { ask: Ask::Logits, rows: r.n, seq: SEQ, inputs: r.inputs.clone(), targets: None };
    let logits = logits_of(Toy::Honest, &q, 0);
    let lp: Vec<f32> =
        (0..r.n * SEQ).map(|i| log_softmax_at(&logits[i * V..(i + 1) * V], r.targets[i] as usize)).collect();
    let tb = token_bytes();
    let mut acc = BpbAccumulator::new(&tb);
    acc.add_log_probs(&lp, &r.targets).unwrap();
    acc.bpb().unwrap()
}

#[test]
fn test_an_honest_model_is_scored_on_every_row_and_passes_every_probe() {
    let (val, test) = (rows(Split::Val, 37, 1), rows(Split::Test, 20, 2));
    let mut client = serve(Toy::Honest);
    let scored =
        scorer::score_full(&mut client, &[&val, &test], &token_bytes(), &settings(), &mut Rng::new(7))
            .unwrap();
    client.finish();
    let got = scored.bpb(Split::Val).unwrap();
    let want = direct_bpb(&val);
    assert!((got - want).abs() < 1e-6, "val bpb {got} vs direct {want} (diff {:.2e})", (got - want).abs());
    assert_eq!(scored.splits[0].rows, 37, "all rows, though 37 is not a multiple of the batch of 8");
    assert!(scored.probes.iter().all(|p| p.passed), "{:?}", scored.probes);
    for probe in
        ["causality", "stationarity", "batch composition (row alone)", "batch composition (other company)"]
    {
        assert!(scored.probes.iter().any(|p| p.probe == probe && p.split == "val"), "{probe} ran");
    }
}

#[test]
fn test_a_model_that_sees_the_next_token_is_a_leak_named_as_such() {
    let val = rows(Split::Val, 24, 3);
    let mut client = serve(Toy::LooksAhead);
    let err =
        scorer::score_full(&mut client, &[&val], &token_bytes(), &settings(), &mut Rng::new(8)).unwrap_err();
    let ScoreError::Leak(sentence) = err else { panic!("expected a leak, got {err:?}") };
    assert!(sentence.contains("not causal") && sentence.contains("token t+1"), "{sentence}");
}

#[test]
fn test_a_model_that_mixes_rows_of_a_batch_is_a_leak_named_as_such() {
    let val = rows(Split::Val, 24, 4);
    let mut client = serve(Toy::MixesRows);
    let err =
        scorer::score_full(&mut client, &[&val], &token_bytes(), &settings(), &mut Rng::new(9)).unwrap_err();
    let ScoreError::Leak(sentence) = err else { panic!("expected a leak, got {err:?}") };
    assert!(sentence.contains("other rows in its batch"), "{sentence}");
}

#[test]
fn test_a_model_that_changes_while_scored_is_a_leak_named_as_such() {
    let val = rows(Split::Val, 24, 5);
    let mut client = serve(Toy::Drifts);
    let err =
        scorer::score_full(&mut client, &[&val], &token_bytes(), &settings(), &mut Rng::new(10)).unwrap_err();
    let ScoreError::Leak(sentence) = err else { panic!("expected a leak, got {err:?}") };
    assert!(sentence.contains("changes while it is being scored"), "{sentence}");
}

#[test]
fn test_audited_scoring_agrees_with_full_scoring_for_an_honest_model() {
    let (val, test) = (rows(Split::Val, 30, 6), rows(Split::Test, 30, 7));
    let mut full = serve(Toy::Honest);
    let a =
        scorer::score_full(&mut full, &[&val, &test], &token_bytes(), &settings(), &mut Rng::new(1)).unwrap();
    let mut first = serve(Toy::Honest);
    let mut fresh = || Ok(serve(Toy::Honest));
    let b = scorer::score_audited(
        &mut first,
        &mut fresh,
        &[&val, &test],
        &token_bytes(),
        &settings(),
        &mut Rng::new(2),
    )
    .unwrap();
    for split in [Split::Val, Split::Test] {
        let (x, y) = (a.bpb(split).unwrap(), b.bpb(split).unwrap());
        assert!((x - y).abs() < 1e-6, "{split}: full {x} vs audited {y}");
    }
    assert_eq!(b.mode, "trusted-audited");
    assert!(b.audited_rows >= 2 * 6, "{}", b.audited_rows);
    assert_eq!(b.commitment.as_ref().map(String::len), Some(64));
}

#[test]
fn test_committed_log_probabilities_the_logits_do_not_give_are_tampered() {
    let val = rows(Split::Val, 30, 8);
    let mut first = serve(Toy::LiesWhenCommitting);
    let mut fresh = || Ok(serve(Toy::LiesWhenCommitting));
    let err =
        scorer::score_audited(&mut first, &mut fresh, &[&val], &token_bytes(), &settings(), &mut Rng::new(3))
            .unwrap_err();
    let ScoreError::Tampered(sentence) = err else { panic!("expected tampered, got {err:?}") };
    assert!(sentence.contains("does not produce"), "{sentence}");
}

#[test]
fn test_a_server_that_answers_the_wrong_shape_breaks_the_protocol() {
    let (query_r, query_w) = pipe();
    let (answer_r, answer_w) = pipe();
    std::thread::spawn(move || {
        let mut server = Server::over(query_r, answer_w, 8).unwrap();
        while let Some(q) = server.next().unwrap() {
            // One row fewer than asked.
            let short = Query { rows: q.rows - 1, ..q.clone() };
            server.answer(&short, V, &vec![0.0; (q.rows - 1) * q.seq * V]).unwrap();
        }
    });
    let mut client = Client::connect(query_w, answer_r).unwrap();
    let val = rows(Split::Val, 16, 9);
    let err =
        scorer::score_full(&mut client, &[&val], &token_bytes(), &settings(), &mut Rng::new(4)).unwrap_err();
    assert!(matches!(err, ScoreError::Protocol(_)), "{err:?}");
}
