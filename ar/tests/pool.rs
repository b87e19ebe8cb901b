//! `ar loop --workers 2` on the smoke profile, through the binary: runs of two experiments
//! in flight at once on the two workers (each pinned to its share of the cores), one
//! journal, no run measured twice, every experiment decided by the paired rule, the branch
//! on the confirmed best; then `kill -9` of `ar` with runs in flight and `--resume`: the
//! journal stays consistent and the session goes on.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::fixture::{FRESH_SESSION, Fixture, assert_consistent, events, fixture, text, two_worker_loop};

/// (start, end) of every launched run, per worker, from the journal's times.
fn intervals(journal: &[serde_json::Value]) -> BTreeMap<u64, (u64, f64, f64)> {
    let mut launched: BTreeMap<u64, (u64, f64)> = BTreeMap::new();
    for e in events(journal, "launched") {
        launched
            .insert(e["id"].as_u64().unwrap(), (e["worker"].as_u64().unwrap(), e["time"].as_f64().unwrap()));
    }
    let mut out = BTreeMap::new();
    for f in events(journal, "finished") {
        let id = f["id"].as_u64().unwrap();
        if let Some((w, t0)) = launched.get(&id) {
            out.insert(id, (*w, *t0, f["time"].as_f64().unwrap()));
        }
    }
    out
}

fn pool_loop(fx: &Fixture, tag: &str, experiments: &str) -> std::process::Output {
    fx.ar(&two_worker_loop(tag, experiments, &FRESH_SESSION))
}

#[test]
fn test_two_workers_run_experiments_at_once_with_one_journal() {
    let fx = fixture();
    let out = pool_loop(&fx, "pool", "3");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 workers sharing"), "the split of the cores is said: {}", text(&out));
    let journal = fx.journal("pool");
    assert_consistent(&journal);
    let spans = intervals(&journal);
    let workers: std::collections::BTreeSet<u64> = spans.values().map(|(w, _, _)| *w).collect();
    assert_eq!(workers.len(), 2, "both workers ran something: {spans:?}");
    let overlap =
        spans.values().any(|(w, a0, a1)| spans.values().any(|(v, b0, b1)| w != v && a0 < b1 && b0 < a1));
    assert!(overlap, "two runs were in flight at the same time: {spans:?}");
    // No (commit, seed) measured twice.
    let mut seen = std::collections::BTreeSet::new();
    let started = events(&journal, "started");
    let committed: BTreeMap<u64, String> = events(&journal, "committed")
        .into_iter()
        .map(|e| (e["id"].as_u64().unwrap(), e["commit"].as_str().unwrap().to_string()))
        .collect();
    for s in &started {
        let id = s["id"].as_u64().unwrap();
        let finished = events(&journal, "finished").into_iter().find(|f| f["id"] == s["id"]).cloned();
        if finished.as_ref().is_none_or(|f| f["record"].is_null()) {
            continue;
        }
        let commit = committed.get(&id).cloned().unwrap_or_else(|| s["parent"].as_str().unwrap().to_string());
        let key = (commit, s["seed"].as_u64().unwrap_or(0));
        assert!(seen.insert(key.clone()), "measured twice: {key:?}");
    }
    // Every candidate decided with its evidence; the branch on the best commit.
    for c in started.iter().filter(|s| s["kind"] == "candidate") {
        let d = events(&journal, "decided").into_iter().find(|d| d["id"] == c["id"]).expect("decided");
        let status = d["decision"]["status"].as_str().unwrap();
        if status == "keep" || status == "discard" {
            assert!(!d["decision"]["reason"].as_str().unwrap().is_empty());
        }
    }
    let best =
        events(&journal, "decided").last().unwrap()["decision"]["best_commit"].as_str().unwrap().to_string();
    assert_eq!(fx.head(), best, "the branch is on the best commit");
}

#[test]
fn test_kill_9_with_runs_in_flight_then_resume_loses_and_duplicates_nothing() {
    let fx = fixture();
    let mut child = fx.command(&two_worker_loop("poolkill", "2", &FRESH_SESSION));
    let mut child =
        child.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    // Wait until two runs are launched, then kill -9.
    let t = Instant::now();
    loop {
        let launched = events(&fx.journal("poolkill"), "launched").len();
        if launched >= 2 || t.elapsed() > Duration::from_secs(240) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(500));
    support::fixture::assert_no_training_left(&fx);
    let out = fx.ar(&two_worker_loop("poolkill", "1", &["--resume"]));
    assert!(out.status.success(), "{}", text(&out));
    let journal = fx.journal("poolkill");
    assert_consistent(&journal);
    let baselines = events(&journal, "finished")
        .into_iter()
        .filter(|f| f["record"]["val_bpb"].is_number())
        .filter(|f| events(&journal, "started").iter().any(|s| s["id"] == f["id"] && s["kind"] == "baseline"))
        .count();
    assert!(baselines >= 2, "both baselines measured: {journal:?}");
}
