//! `ar report` and `ar status` against real journal files: an overnight session (crashes of
//! every class, discards worse than the baseline, confirm and remeasure runs, an experiment
//! in flight), a resumed session (a run killed mid-way, an id re-run after a resume), an
//! empty session, and no session at all.
//!
//! The fixtures under tests/fixtures/journals/ are written with the journal's own types by
//! the generator below (`AR_REGEN_FIXTURES=1` rewrites them) and a test checks they still
//! match it, so a change to the journal schema shows up here instead of in a morning report.
//! The plot is checked through its SVG: the title's counts, the ticks against the data, and
//! one mark per experiment, clipped points present as clip markers rather than dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ar::journal::{CrashClass, Decision, Event, RuleConfig, RunKind, Status, Timings};
use ar::report::model::{Model, Outcome};
use prepare::RunRecord;
use prepare::hardware::Hardware;

// ---------------------------------------------------------------------------------------
// Fixture generator
// ---------------------------------------------------------------------------------------

/// 2025-03-05 22:00 UTC.
const T0: f64 = 1_741_212_000.0;

fn commit(id: u64) -> String {
    format!("{:08x}{:032x}", 0x5eed_0000u64 + id * 0x9e37, id * 0x1234_5678_9abc)
}

fn hardware() -> Hardware {
    Hardware {
        cpu_model: "AMD EPYC 7B13 64-Core Processor".into(),
        cpu_cores: 2,
        cpu_mhz: Some(3050.0),
        simd: vec!["fma".into(), "avx2".into()],
        gpu: None,
        os: "linux x86_64".into(),
        memory_gb: Some(23.5),
    }
}

fn record(val: f64, test: f64, mem: f64) -> RunRecord {
    RunRecord {
        format: 1,
        val_bpb: val,
        test_bpb: Some(test),
        training_seconds: 300.0,
        total_seconds: 331.5,
        compile_seconds: 6.5,
        eval_seconds: 14.0,
        peak_mem_mb: mem,
        mfu_percent: 11.2,
        total_tokens_m: 41.9,
        num_steps: 1280,
        num_params_m: 11.5,
        depth: 8,
        profile: "cpu".into(),
        profile_hash: "c0ffee12".into(),
        data: "TinyStories (GPT-4, clean)".into(),
        synthetic_data: false,
        tokenizer_sha256: "ab".repeat(32),
        device: "flex (cpu)".into(),
        precision: "f32".into(),
        hardware: hardware(),
        seed: 42,
        train_sha256: "cd".repeat(32),
        budget: String::new(),
        train_wall_seconds: 0.0,
        scoring: None,
        manifest_sha256: String::new(),
        checkpoint_sha256: String::new(),
    }
}

fn rule(kind: &str, baseline_runs: usize) -> RuleConfig {
    RuleConfig {
        kind: kind.into(),
        k: 2.0,
        min_delta: 0.0005,
        baseline_runs,
        confirm: kind == "noise",
        remeasure_every: if kind == "noise" { 4 } else { 0 },
        alpha: 0.0,
        max_pairs: 0,
        min_effect: 0.0,
    }
}

/// How a planned run ends.
#[derive(Clone, Copy)]
enum End {
    Result(f64, f64),
    Crash(CrashClass),
    /// Started (and committed) but never finished.
    Never,
}

/// Writes events the way the loop does, with a tiny noise-aware decision rule so the
/// decisions' numbers (Δ, σ, margin, best) are consistent with the results.
struct Sim {
    events: Vec<Event>,
    t: f64,
    best: Option<f64>,
    best_commit: String,
    baseline: Vec<f64>,
    sigma: Option<f64>,
    k: f64,
    /// A candidate that passed, waiting for its confirm run.
    passed: Option<(u64, f64)>,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            events: Vec::new(),
            t: T0,
            best: None,
            best_commit: String::new(),
            baseline: Vec::new(),
            sigma: None,
            k: 2.0,
            passed: None,
        }
    }

    fn session(&mut self, tag: &str, rule: RuleConfig, resumed: bool) {
        self.events.push(Event::Session {
            format: 1,
            time: self.t,
            tag: tag.into(),
            branch: format!("autoresearch/{tag}"),
            base_commit: commit(0),
            profile: "cpu".into(),
            profile_hash: "c0ffee12".into(),
            hardware: hardware(),
            agent: "evolve".into(),
            budget_secs: 300.0,
            rule,
            resumed,
            settings: None,
        });
        self.t += 5.0;
    }

    fn margin(&self) -> Option<f64> {
        self.sigma.map(|s| (self.k * s).max(0.0005))
    }

    fn idle(&mut self, outcome: &str, seconds: f64) {
        self.t += seconds;
        self.events.push(Event::Agent {
            time: self.t,
            outcome: outcome.into(),
            detail: "the agent left train/src/main.rs unchanged".into(),
            seconds,
        });
    }

    /// Started, committed, and (unless `Never`) finished; returns the result's val_bpb.
    fn run(&mut self, id: u64, kind: RunKind, desc: &str, rerun_of: Option<u64>, end: End) -> Option<f64> {
        let agent = if kind == RunKind::Candidate { 40.0 + (id % 5) as f64 * 11.0 } else { 0.0 };
        let parent = if self.best_commit.is_empty() { commit(0) } else { self.best_commit.clone() };
        self.events.push(Event::Started {
            id,
            time: self.t,
            kind,
            parent,
            description: desc.into(),
            hypothesis: (kind == RunKind::Candidate).then(|| format!("{desc} should lower val_bpb")),
            diff_sha256: if kind == RunKind::Candidate { format!("{id:064x}") } else { String::new() },
            rerun_of,
            seed: None,
        });
        self.t += agent;
        let c = match (kind, rerun_of) {
            (RunKind::Confirm, Some(of)) | (RunKind::Remeasure, Some(of)) => commit(of),
            _ => commit(id),
        };
        if !matches!(end, End::Crash(CrashClass::Rejected)) {
            self.events.push(Event::Committed { id, time: self.t, commit: c });
        }
        let (build, train, record, crash) = match end {
            End::Never => return None,
            End::Result(v, t) => (25.0, 336.0, Some(record(v, t, 2100.0 + (id % 7) as f64 * 90.0)), None),
            End::Crash(CrashClass::Build) => (31.0, 0.0, None, Some(CrashClass::Build)),
            End::Crash(CrashClass::Rejected) => (0.0, 0.0, None, Some(CrashClass::Rejected)),
            End::Crash(CrashClass::Timeout) => (24.0, 450.0, None, Some(CrashClass::Timeout)),
            End::Crash(class) => (24.0, 41.0, None, Some(class)),
        };
        self.t += build + train + 2.0;
        let val = record.as_ref().map(|r| r.val_bpb);
        self.events.push(Event::Finished {
            id,
            time: self.t,
            crash,
            excerpt: crash.map(|c| format!("error: {} (last lines of the program's output)", c.name())),
            record,
            timings: Timings { agent, build, train, total: agent + build + train + 3.0, score: 0.0 },
            run: None,
            reason: None,
            leaked: Vec::new(),
            sandbox: None,
            seed: None,
        });
        val
    }

    fn decide(&mut self, id: u64, status: Status, val: Option<f64>, reason: String, best_after: Option<f64>) {
        self.t += 1.0;
        let best_before = self.best;
        if let Some(b) = best_after {
            self.best = Some(b);
        }
        self.events.push(Event::Decided {
            id,
            time: self.t,
            decision: Decision {
                status,
                reason,
                val_bpb: val,
                best_before,
                delta: val.zip(best_before).map(|(v, b)| v - b),
                sigma: self.sigma,
                margin: self.margin(),
                best_after: self.best,
                best_commit: self.best_commit.clone(),
                evidence: None,
            },
        });
    }

    fn baseline(&mut self, id: u64, val: f64, test: f64) {
        self.run(id, RunKind::Baseline, "baseline", None, End::Result(val, test));
        self.baseline.push(val);
        let n = self.baseline.len() as f64;
        let mean = self.baseline.iter().sum::<f64>() / n;
        if self.baseline.len() >= 2 {
            let var = self.baseline.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
            self.sigma = Some(var.sqrt());
        }
        self.best_commit = commit(0);
        let reason = format!("baseline run {}", self.baseline.len());
        self.decide(id, Status::Keep, Some(val), reason, Some(mean));
    }

    fn candidate(&mut self, id: u64, desc: &str, end: End) {
        let val = self.run(id, RunKind::Candidate, desc, None, end);
        let (best, margin) = (self.best.expect("baseline first"), self.margin().unwrap_or(0.0));
        match (end, val) {
            (End::Never, _) => {}
            (End::Crash(class), _) => {
                let status = match class {
                    CrashClass::Timeout => Status::Timeout,
                    CrashClass::Rejected => Status::Rejected,
                    _ => Status::Crash,
                };
                self.decide(id, status, None, format!("no result: {}", class.name()), None);
            }
            (End::Result(..), Some(v)) if v < best - margin => self.passed = Some((id, v)),
            (End::Result(..), Some(v)) => {
                let reason = format!("Δ {:+.6} not beyond margin {margin:.6}", v - best);
                self.decide(id, Status::Discard, Some(v), reason, None);
            }
            _ => unreachable!(),
        }
    }

    /// The confirm run of the candidate that just passed, and both decisions.
    fn confirm(&mut self, id: u64, val: f64, test: f64) {
        let (cand, cv) = self.passed.take().expect("a passed candidate");
        self.run(id, RunKind::Confirm, "", Some(cand), End::Result(val, test));
        let (best, margin) = (self.best.expect("baseline"), self.margin().unwrap_or(0.0));
        let mean = (cv + val) / 2.0;
        if mean < best - margin {
            self.best_commit = commit(cand);
            let reason = format!("Δ {:+.6} beyond margin {margin:.6}, confirmed by #{id}", cv - best);
            self.decide(cand, Status::Keep, Some(cv), reason, Some(mean));
            // The confirm's Δ is against the same incumbent, not against its own candidate.
            self.best = Some(best);
            self.decide(id, Status::Keep, Some(val), format!("confirms #{cand}"), Some(mean));
        } else {
            self.decide(cand, Status::Discard, Some(cv), format!("not confirmed by #{id}"), None);
            self.decide(id, Status::Discard, Some(val), format!("does not confirm #{cand}"), None);
        }
    }

    fn remeasure(&mut self, id: u64, of: u64, val: f64, test: f64) {
        self.run(id, RunKind::Remeasure, "", Some(of), End::Result(val, test));
        let best = self.best.expect("baseline");
        self.decide(id, Status::Keep, Some(val), format!("re-measured #{of}"), Some((best + val) / 2.0));
    }
}

/// One night on the cpu profile: 3 baseline runs, candidates kept (each confirmed),
/// discarded, crashed in every class, two results far worse than the baseline, a failed
/// confirm, two remeasures, idle agent turns, and experiment 36 still in flight.
fn overnight() -> Vec<Event> {
    use CrashClass::*;
    let mut s = Sim::new();
    s.session("mar5", rule("noise", 3), false);
    s.baseline(1, 0.9979, 1.0121);
    s.baseline(2, 0.9991, 1.0130);
    s.baseline(3, 0.9968, 1.0112);
    s.candidate(4, "halve total batch 524K→262K (more steps)", End::Result(0.9907, 1.0060));
    s.confirm(5, 0.9912, 1.0063);
    s.candidate(6, "warmdown 0.5→0.3", End::Result(0.9934, 1.0081));
    s.candidate(7, "double model width (n_embd 512→1024)", End::Crash(Oom));
    s.candidate(8, "MATRIX_LR 0.04→0.06", End::Result(0.9856, 1.0041));
    s.confirm(9, 0.9861, 1.0043);
    s.idle("no-change", 64.0);
    s.candidate(10, "x0_lambda init 0.1→0.05", End::Crash(Build));
    s.candidate(11, "warmdown 0.5→0.7 (more cooldown helps)", End::Result(0.9821, 1.0030));
    s.confirm(12, 0.9824, 1.0032);
    s.candidate(13, "MATRIX_LR 0.06→0.08", End::Result(0.9852, 1.0050));
    s.candidate(14, "remove value embeddings", End::Result(1.0213, 1.0301));
    s.candidate(15, "logit softcap 15→5", End::Crash(Nan));
    s.remeasure(16, 11, 0.9826, 1.0033);
    s.candidate(17, "depth 8→10 (aspect ratio 64)", End::Crash(Timeout));
    s.candidate(18, "unembedding LR 0.004→0.008", End::Result(0.9781, 1.0019));
    s.confirm(19, 0.9785, 1.0022);
    s.candidate(20, "RoPE base frequency 10000→50000", End::Result(0.9752, 1.0015));
    s.confirm(21, 0.9779, 1.0018);
    s.candidate(22, "skip special-token masking in eval", End::Crash(Rejected));
    s.candidate(23, "MATRIX_LR 0.06→0.05", End::Result(0.9779, 1.0020));
    s.candidate(24, "SSSSL window pattern (more sliding window)", End::Result(0.9748, 1.0027));
    s.confirm(25, 0.9751, 1.0029);
    s.idle("failed", 120.0);
    s.candidate(26, "add 5% warmup", End::Result(1.0104, 1.0190));
    s.candidate(27, "weight decay 0.2→0.0", End::Crash(Panic));
    s.candidate(28, "short window 1/4 context instead of 1/2", End::Result(0.9712, 1.0031));
    s.confirm(29, 0.9715, 1.0030);
    s.candidate(30, "warmdown 0.7→0.9", End::Result(0.9729, 1.0041));
    s.candidate(31, "embedding LR 0.6→0.8", End::Result(0.9741, 1.0044));
    s.remeasure(32, 28, 0.9718, 1.0033);
    s.candidate(33, "random seed 42→137", End::Result(0.9676, 1.0036));
    s.confirm(34, 0.9680, 1.0035);
    s.candidate(35, "MATRIX_LR 0.06→0.07", End::Result(0.9688, 1.0040));
    s.candidate(36, "increase depth to 12", End::Never);
    s.events
}

/// A strict-rule session killed twice: #4 mid-training (never finished), #6 before its
/// commit and then re-run under the same id after the second resume; then a clean stop.
fn resumed() -> Vec<Event> {
    let mut s = Sim::new();
    s.session("resume", rule("strict", 1), false);
    s.baseline(1, 1.4210, 1.4402);
    s.candidate(2, "MATRIX_LR 0.04→0.05", End::Result(1.4150, 1.4361));
    s.best_commit = commit(2);
    s.decide(2, Status::Keep, Some(1.4150), "improved".into(), Some(1.4150));
    s.candidate(3, "warmdown 0.5→0.6", End::Result(1.4190, 1.4380));
    s.candidate(4, "depth 4→6", End::Never);
    s.t += 4000.0;
    s.session("resume", rule("strict", 1), true);
    s.candidate(5, "embedding LR 0.6→0.7", End::Result(1.4101, 1.4333));
    s.best_commit = commit(5);
    s.decide(5, Status::Keep, Some(1.4101), "improved".into(), Some(1.4101));
    s.events.push(Event::Started {
        id: 6,
        time: s.t,
        kind: RunKind::Candidate,
        parent: commit(5),
        description: "weight decay 0.2→0.1".into(),
        hypothesis: None,
        diff_sha256: format!("{:064x}", 6),
        rerun_of: None,
        seed: None,
    });
    s.t += 900.0;
    s.session("resume", rule("strict", 1), true);
    s.candidate(6, "weight decay 0.2→0.1", End::Result(1.4120, 1.4350));
    s.t += 10.0;
    s.events.push(Event::Stopped { time: s.t, reason: "reached --max-experiments 6".into() });
    s.events
}

fn empty() -> Vec<Event> {
    let mut s = Sim::new();
    s.session("fresh", rule("noise", 3), false);
    s.events
}

fn fixtures() -> Vec<(&'static str, Vec<Event>)> {
    vec![("overnight", overnight()), ("resumed", resumed()), ("empty", empty())]
}

fn jsonl(events: &[Event]) -> String {
    events.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect()
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journals").join(format!("{name}.jsonl"))
}

fn load(name: &str) -> Vec<Event> {
    ar::journal::read_events(&fixture_path(name)).unwrap()
}

// ---------------------------------------------------------------------------------------
// Helpers: a temp repository with a journal, the real binary, a small SVG reader.
// ---------------------------------------------------------------------------------------

/// A temp directory laid out like a repository with `.autoresearch/<tag>/runs.jsonl`.
fn repo_with(sessions: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (tag, fixture) in sessions {
        let d = dir.path().join(".autoresearch").join(tag);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(fixture_path(fixture), d.join("runs.jsonl")).unwrap();
    }
    dir
}

fn ar(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ar")).args(args).current_dir(dir).output().expect("ar runs");
    assert!(
        out.status.success(),
        "ar {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Elements of one tag with their attributes, and their text for `<text>`.
fn elements(svg: &str, tag: &str) -> Vec<(HashMap<String, String>, String)> {
    let open = format!("<{tag} ");
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let end = rest.find('>').unwrap();
        let attrs_text = &rest[..end];
        let mut attrs = HashMap::new();
        let mut a = attrs_text;
        while let Some(eq) = a.find("=\"") {
            let name = a[..eq].trim().to_string();
            let after = &a[eq + 2..];
            let close = after.find('"').unwrap();
            attrs.insert(name, after[..close].to_string());
            a = &after[close + 1..];
        }
        let body = if tag == "text" {
            rest[end + 1..rest.find("</text>").unwrap()].trim().to_string()
        } else {
            String::new()
        };
        out.push((attrs, body));
    }
    out
}

fn count(svg: &str, tag: &str, pred: impl Fn(&HashMap<String, String>) -> bool) -> usize {
    elements(svg, tag).iter().filter(|(a, _)| pred(a)).count()
}

fn is(a: &HashMap<String, String>, key: &str, value: &str) -> bool {
    a.get(key).is_some_and(|v| v == value)
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn test_fixtures_match_their_generator() {
    for (name, events) in fixtures() {
        let path = fixture_path(name);
        let text = jsonl(&events);
        if std::env::var_os("AR_REGEN_FIXTURES").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        // Compared as text: the bytes the loop would have written.
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(on_disk == text, "{} is stale: rerun with AR_REGEN_FIXTURES=1", path.display());
        assert_eq!(ar::journal::read_events(&path).unwrap().len(), events.len());
    }
}

#[test]
fn test_model_turns_the_overnight_journal_into_one_row_per_experiment() {
    let m = Model::from_events(&load("overnight"));
    let c = m.counts();
    assert_eq!(c.experiments, 36);
    assert_eq!((c.baseline_runs, c.confirm_runs, c.remeasure_runs), (3, 8, 2));
    assert_eq!((c.kept, c.discarded, c.running), (19, 10, 1));
    assert_eq!(c.crashed, 6);
    assert_eq!(
        c.crashes.keys().copied().collect::<Vec<_>>(),
        ["build", "nan", "oom", "panic", "rejected", "timeout"]
    );
    assert_eq!(m.row(36).unwrap().outcome, Outcome::Running);
    assert_eq!(m.row(7).unwrap().outcome, Outcome::Crash(CrashClass::Oom));
    // The failed confirm: the candidate and its confirm are both discarded.
    assert_eq!(m.row(20).unwrap().outcome, Outcome::Discard);
    assert_eq!(m.row(21).unwrap().outcome, Outcome::Discard);
    let best = m.best().unwrap();
    assert!((best.val_bpb - 0.9678).abs() < 1e-9, "{}", best.val_bpb);
    assert_eq!(m.rows[best.row.unwrap()].id, 33, "the candidate, not its confirm run");
    assert!((m.baseline().unwrap() - (0.9979 + 0.9991 + 0.9968) / 3.0).abs() < 1e-12);
    let top = m.improvements();
    assert_eq!(top[0].id, 4, "halving the batch was the biggest single step");
    let failed = m.failed_groups();
    let lr = failed.iter().find(|g| g.topic == "MATRIX_LR").unwrap();
    assert_eq!((lr.tries, lr.crashes), (3, 0), "{failed:?}");
}

#[test]
fn test_resumed_session_marks_the_killed_run_interrupted_and_keeps_one_row_per_id() {
    let m = Model::from_events(&load("resumed"));
    let ids: Vec<u64> = m.rows.iter().map(|r| r.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6], "#6 re-run under its id is one row");
    assert_eq!(m.row(4).unwrap().outcome, Outcome::Crash(CrashClass::Interrupted));
    assert_eq!(m.row(6).unwrap().outcome, Outcome::Discard);
    assert_eq!(m.setup.as_ref().unwrap().resumes, 2);
    assert!(m.running().is_none());
    assert_eq!(m.stopped.as_ref().unwrap().1, "reached --max-experiments 6");
    let c = m.counts();
    assert_eq!((c.kept, c.discarded, c.crashed), (3, 2, 1));
}

#[test]
fn test_svg_title_ticks_and_one_mark_per_experiment() {
    let repo = repo_with(&[("mar5", "overnight")]);
    let svg_path = repo.path().join("plot.svg");
    ar(repo.path(), &["report", "--format", "svg", "--out", svg_path.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let m = Model::from_events(&load("overnight"));
    let c = m.counts();

    let texts: Vec<(HashMap<String, String>, String)> =
        elements(&svg, "text").into_iter().map(|(a, t)| (a, unescape(&t))).collect();
    // The title counts decisions as decided (as the markdown report does): candidates only.
    let cand_crashed = m.rows.iter().filter(|r| r.kind == RunKind::Candidate && r.outcome.is_crash()).count();
    let title = format!(
        "autoresearch mar5: {} experiments, {} kept, {} discarded, {} crashed, 1 running",
        c.candidates, c.kept_candidates, c.discarded_candidates, cand_crashed
    );
    assert_eq!((c.experiments, c.crashed), (36, 6));
    assert!(c.candidates < c.experiments && c.kept_candidates < c.kept, "re-runs are not counted as keeps");
    assert!(texts.iter().any(|(_, t)| *t == title), "no title `{title}`");

    // Ticks: the x labels run from 0 past the last experiment; the y labels bracket every
    // value drawn inside the axes, and the two far-worse discards lie above them.
    let x_ticks: Vec<f64> = texts
        .iter()
        .filter(|(a, _)| is(a, "text-anchor", "middle"))
        .filter_map(|(_, t)| t.parse::<u64>().ok().map(|v| v as f64))
        .collect();
    let y_ticks: Vec<f64> = texts
        .iter()
        .filter(|(a, _)| is(a, "text-anchor", "end"))
        .filter_map(|(_, t)| t.parse().ok())
        .collect();
    assert!(x_ticks.len() >= 5 && y_ticks.len() >= 5, "{x_ticks:?} {y_ticks:?}");
    let (x_lo, x_hi) =
        (x_ticks.iter().copied().fold(f64::MAX, f64::min), x_ticks.iter().copied().fold(0.0, f64::max));
    assert!(x_lo == 0.0 && x_hi >= 36.0, "{x_ticks:?}");
    let (y_lo, y_hi) =
        (y_ticks.iter().copied().fold(f64::MAX, f64::min), y_ticks.iter().copied().fold(0.0, f64::max));
    let values: Vec<f64> =
        m.rows.iter().filter(|r| !r.outcome.is_crash()).filter_map(|r| r.val_bpb).collect();
    let inside: Vec<f64> = values.iter().copied().filter(|v| *v <= y_hi).collect();
    assert!(inside.iter().all(|v| *v >= y_lo), "a value below the lowest tick {y_lo}: {inside:?}");
    assert!(y_lo <= m.best().unwrap().val_bpb && m.baseline().unwrap() <= y_hi, "{y_ticks:?}");
    let above: Vec<f64> = values.iter().copied().filter(|v| *v > y_hi).collect();
    assert_eq!(above, [1.0213, 1.0104], "exactly the two far-worse discards leave the axes");
    // The right axis carries test_bpb.
    assert!(texts.iter().any(|(_, t)| t.starts_with("held-out test_bpb")));

    // Marks, by colour (see plot.rs). The legend draws one more of each kind it lists.
    let full = |a: &HashMap<String, String>| is(a, "opacity", "1");
    let kept_dots = count(&svg, "circle", |a| full(a) && is(a, "fill", "#2ECC71")) - 1;
    let kept_squares = count(&svg, "rect", |a| full(a) && is(a, "fill", "#2ECC71"));
    let discard_dots = count(&svg, "circle", |a| full(a) && is(a, "fill", "#BDBDBD")) - 1;
    let discard_squares = count(&svg, "rect", |a| full(a) && is(a, "fill", "#BDBDBD"));
    let clipped = count(&svg, "polygon", |a| is(a, "fill", "#6E6E6E")) - 1;
    let crash_lines = count(&svg, "line", |a| is(a, "stroke", "#E74C3C")) - 2;
    let running = count(&svg, "circle", |a| is(a, "stroke", "#3498DB") && is(a, "fill", "none")) - 1;
    assert_eq!(clipped, 2, "worse-than-baseline discards are clipped, not dropped");
    assert!(texts.iter().any(|(_, t)| t == "above the axis, clipped (2)"));
    assert_eq!(crash_lines / 2, 6, "one × per crash");
    assert!(
        texts.iter().any(|(_, t)| t == "crashed (1 build, 1 nan, 1 oom, 1 panic, 1 rejected, 1 timeout)")
    );
    assert_eq!(running, 1);
    assert_eq!(kept_squares, 3 + 7 + 2, "baseline, kept confirms and remeasures are squares");
    assert_eq!(discard_squares, 1, "the failed confirm #21");
    assert_eq!(kept_dots, c.kept_candidates);
    assert_eq!(
        kept_dots + kept_squares + discard_dots + discard_squares + clipped + crash_lines / 2 + running,
        36,
        "every experiment has exactly one mark"
    );
    // Kept candidates are labelled with their descriptions.
    assert!(texts.iter().any(|(_, t)| t == "random seed 42→137"));
    assert!(texts.iter().any(|(_, t)| t == "baseline"));
}

#[test]
fn test_png_renders_with_the_bundled_font() {
    let repo = repo_with(&[("mar5", "overnight")]);
    let out = ar(repo.path(), &["report", "--format", "png"]);
    let path = repo.path().join(".autoresearch/mar5/progress.png");
    assert!(stdout(&out).contains("progress.png"));
    let bytes = std::fs::read(&path).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1800, 1000));
    // Text was drawn: the title band (top 90 rows) holds dark pixels, not only white.
    let dark = buf[..(info.line_size * 90)].chunks(3).filter(|p| p.iter().all(|c| *c < 100)).count();
    assert!(dark > 2000, "only {dark} dark pixels in the title band: no text rendered?");
}

#[test]
fn test_markdown_report_names_the_top_improvement_and_keeps_negative_results() {
    let repo = repo_with(&[("mar5", "overnight")]);
    let md = stdout(&ar(repo.path(), &["report", "--format", "md"]));
    let m = Model::from_events(&load("overnight"));
    let top = m.improvements()[0];
    let line = md.lines().find(|l| l.starts_with("| 1 |")).expect("a top-improvements table");
    assert!(
        line.contains(&format!("`{}`", &ar::report::model::short(top.commit.as_deref().unwrap()))),
        "{line}"
    );
    assert!(line.contains(&format!("{:+.6}", top.delta.unwrap())), "{line}");
    for needle in [
        "## Setup",
        "**Baseline 0.997933 → best 0.967800**",
        "## Crashes",
        "| oom | 1 | #7 |",
        "## Where the time went",
        "## Noise",
        "## Validation vs held-out test",
        "possible val spoilage",
        "## Negative results",
        "- **MATRIX_LR** — 3 tried",
        "![progress: val_bpb per experiment](.autoresearch/mar5/progress.png)",
        "#36 (increase depth to 12) in progress",
    ] {
        assert!(md.contains(needle), "missing `{needle}` in\n{md}");
    }
    assert!(repo.path().join(".autoresearch/mar5/progress.png").is_file(), "the embedded plot exists");
}

#[test]
fn test_json_summary_is_compact_parses_and_is_deterministic() {
    let repo = repo_with(&[("mar5", "overnight")]);
    let out = stdout(&ar(repo.path(), &["report", "--format", "json"]));
    let json = out.trim_end();
    assert!(json.len() <= 2048, "{} bytes", json.len());
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["experiments"], 36);
    assert_eq!(v["running"], 36);
    assert_eq!(v["best"]["commit"], ar::report::model::short(&commit(33)));
    assert_eq!(v["best"]["desc"], "random seed 42→137");
    assert_eq!(v["last"].as_array().unwrap().len(), 10);
    assert_eq!(v["last"][9]["id"], 35);
    assert_eq!(v["failed"][0]["topic"], "MATRIX_LR");
    assert!(v["sigma"].as_f64().unwrap() > 0.0 && v["margin"].as_f64().unwrap() > 0.0);
    let s = ar::report::summary(&load("overnight"));
    assert_eq!(ar::report::summary::to_json(&s), json, "the binary prints the library's summary");
    let back: ar::report::summary::Summary = serde_json::from_str(json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn test_summary_stays_under_2kb_with_huge_unicode_descriptions() {
    let mut s = Sim::new();
    s.session("long", rule("noise", 3), false);
    s.baseline(1, 1.0, 1.01);
    s.baseline(2, 1.001, 1.011);
    s.baseline(3, 0.999, 1.009);
    for id in 4..60 {
        let desc = format!("ПОПЫТКА_{id} {} \"quoted\" \\ tab\there", "très long description — ".repeat(20));
        s.candidate(id, &desc, End::Result(1.0 + id as f64 * 1e-4, 1.02));
    }
    let json = ar::report::summary::to_json(&ar::report::summary(&s.events));
    assert!(json.len() <= 2048, "{} bytes: {json}", json.len());
    serde_json::from_str::<serde_json::Value>(&json).unwrap();
}

#[test]
fn test_digest_text_is_short_and_deterministic() {
    let events = load("overnight");
    let a = ar::report::digest_text(&events);
    assert_eq!(a, ar::report::digest_text(&events));
    let lines = a.lines().count();
    assert!((10..=40).contains(&lines), "{lines} lines:\n{a}");
    assert!(a.contains("Best 0.967800 (-3.02%)"), "{a}");
    assert!(a.contains("#36 in progress"), "{a}");
    assert!(a.contains("MATRIX_LR: 3 tried, 0 crashed"), "{a}");
    assert!(!a.contains("error:"), "crash excerpts are untrusted and stay out of the digest");
    let repo = repo_with(&[("mar5", "overnight")]);
    assert_eq!(stdout(&ar(repo.path(), &["report", "--format", "digest"])), a);
}

#[test]
fn test_report_without_format_writes_every_artifact_into_the_session_dir() {
    let repo = repo_with(&[("mar5", "overnight")]);
    let out = stdout(&ar(repo.path(), &["report"]));
    let dir = repo.path().join(".autoresearch/mar5");
    for name in ["progress.png", "progress.svg", "report.md", "summary.json"] {
        assert!(dir.join(name).is_file(), "{name} missing");
        assert!(out.contains(name), "{out}");
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("![progress: val_bpb per experiment](progress.png)"));
}

#[test]
fn test_empty_session_says_so_in_every_format() {
    let repo = repo_with(&[("fresh", "empty")]);
    let json = stdout(&ar(repo.path(), &["report", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["experiments"], 0);
    assert_eq!(v["note"], "no experiments recorded yet");
    let md = ar(repo.path(), &["report", "--format", "md"]);
    assert!(stdout(&md).contains("**No experiments recorded yet.**"));
    assert!(stderr(&md).contains("Session `fresh` has no experiments yet"));
    assert!(
        stdout(&ar(repo.path(), &["report", "--format", "digest"])).contains("No experiments recorded yet")
    );
    let svg = repo.path().join("empty.svg");
    ar(repo.path(), &["report", "--format", "svg", "--out", svg.to_str().unwrap()]);
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.contains("autoresearch fresh: no experiments yet"));
    ar(repo.path(), &["report", "--format", "png"]);
    assert!(repo.path().join(".autoresearch/fresh/progress.png").is_file());
    ar(repo.path(), &["report"]);
    let status = stdout(&ar(repo.path(), &["status"]));
    assert!(status.contains("No experiments recorded yet"), "{status}");

    // No session at all: a message, and still valid output where output goes to stdout.
    let bare = tempfile::tempdir().unwrap();
    let out = ar(bare.path(), &["report", "--format", "json"]);
    assert!(stderr(&out).contains("No session journal"), "{}", stderr(&out));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()["experiments"], 0);
    for format in ["md", "digest", "png", "svg"] {
        let out = ar(bare.path(), &["report", "--format", format]);
        assert!(stderr(&out).contains("No session journal"), "{format}: {}", stderr(&out));
    }
    ar(bare.path(), &["report"]);
    assert!(stdout(&ar(bare.path(), &["status", "--watch"])).contains("No session journal"));
}

#[test]
fn test_latest_session_is_picked_and_an_unknown_tag_lists_the_sessions() {
    let repo = repo_with(&[("resume", "resumed"), ("mar5", "overnight")]);
    // Make mar5 clearly the most recent.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let f = std::fs::File::options()
        .write(true)
        .open(repo.path().join(".autoresearch/resume/runs.jsonl"))
        .unwrap();
    f.set_modified(old).unwrap();
    let json = stdout(&ar(repo.path(), &["report", "--format", "json"]));
    assert!(json.contains("\"tag\":\"mar5\""), "{json}");
    let json = stdout(&ar(repo.path(), &["report", "--format", "json", "--tag", "resume"]));
    assert!(json.contains("\"tag\":\"resume\""), "{json}");
    let out = Command::new(env!("CARGO_BIN_EXE_ar"))
        .args(["report", "--tag", "nope"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no session `nope`") && stderr(&out).contains("mar5, resume"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn test_status_uses_live_json_only_while_its_process_lives() {
    let repo = repo_with(&[("mar5", "overnight")]);
    let dir = repo.path().join(".autoresearch/mar5");
    // Without live.json: the journal alone knows #36 started and was committed.
    let plain = stdout(&ar(repo.path(), &["status", "--watch"]));
    assert!(plain.contains("#36 building or training"), "{plain}");
    assert!(plain.contains("journal only"), "{plain}");
    assert!(plain.contains("best    0.967800"), "{plain}");
    assert!(plain.contains("runs    36 (23 experiments):"), "{plain}");
    assert!(plain.contains("last results"), "{plain}");
    assert!(plain.contains("#35"), "{plain}");
    assert!(!plain.contains('\x1b'), "no escape codes without a terminal");

    // A fresh live.json (this test's own pid is alive) gives phase and progress.
    let live = ar::report::status::Live {
        id: 36,
        phase: "train".into(),
        since: ar::journal::now() - 125.0,
        description: "increase depth to 12".into(),
        progress_pct: Some(41.0),
        pid: Some(std::process::id()),
    };
    std::fs::write(dir.join("live.json"), serde_json::to_string(&live).unwrap()).unwrap();
    let shown = stdout(&ar(repo.path(), &["status"]));
    assert!(shown.contains("#36 train [########------------]  41%"), "{shown}");
    assert!(shown.contains("increase depth to 12"), "{shown}");

    // A live.json left by a dead process is ignored.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = ar::report::status::Live { pid: Some(dead), ..live };
    std::fs::write(dir.join("live.json"), serde_json::to_string(&stale).unwrap()).unwrap();
    let shown = stdout(&ar(repo.path(), &["status"]));
    assert!(shown.contains("journal only") && !shown.contains("41%"), "{shown}");
}

#[test]
fn test_status_of_a_stopped_resumed_session_is_idle() {
    let repo = repo_with(&[("resume", "resumed")]);
    let shown = stdout(&ar(repo.path(), &["status"]));
    assert!(shown.contains("idle — stopped"), "{shown}");
    assert!(shown.contains("reached --max-experiments 6"), "{shown}");
    assert!(shown.contains("interrupted"), "#4 is listed as interrupted: {shown}");
}
