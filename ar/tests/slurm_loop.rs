//! `ar loop --backend slurm` through the binary against a real one-node Slurm cluster on
//! 127.0.0.1 (scripts/slurm-up.sh; the test script starts it and exports SLURM_CONF and
//! AR_SLURM_DIR): two jobs at once; then, with jobs in flight, `kill -9` of `ar`, one job
//! cancelled from outside with `scancel`, and the controller stopped and restarted; then
//! `--resume`: it re-attaches to the surviving job, takes finished ones from their outcome
//! files, records the cancelled one as lost and measures it again once, and the journal
//! stays consistent with nothing duplicated. Skipped (loudly) without a cluster, unless
//! AR_REQUIRE_SLURM=1.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::fixture::{FRESH_SESSION, assert_consistent, events, fixture, text, two_worker_loop};

fn cluster() -> Option<(String, String)> {
    let conf = std::env::var("SLURM_CONF").ok().filter(|c| !c.is_empty());
    let dir = std::env::var("AR_SLURM_DIR").ok().filter(|c| !c.is_empty());
    match (conf, dir) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            assert!(
                std::env::var("AR_REQUIRE_SLURM").as_deref() != Ok("1"),
                "AR_REQUIRE_SLURM=1 but SLURM_CONF/AR_SLURM_DIR are not set"
            );
            eprintln!("SKIPPED slurm loop tests: no cluster (SLURM_CONF and AR_SLURM_DIR unset)");
            None
        }
    }
}

/// Slurm job ids of this session's jobs still in the queue.
fn queued(tag: &str) -> Vec<(String, String)> {
    let out = Command::new("squeue").args(["-h", "-o", "%i %j %T"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("ar-{tag}-")))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

#[test]
fn test_slurm_session_survives_kill_scancel_and_a_controller_restart() {
    let Some((_conf, dir)) = cluster() else { return };
    let fx = fixture();
    let tag = "slurmy";
    let fresh: Vec<&str> = ["--backend", "slurm"].into_iter().chain(FRESH_SESSION).collect();
    let args = two_worker_loop(tag, "2", &fresh);
    let mut child = fx
        .command(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Two jobs at once: both baselines are launched before either finishes.
    let t = Instant::now();
    while queued(tag).len() < 2 && t.elapsed() < Duration::from_secs(240) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let jobs = queued(tag);
    assert!(jobs.len() >= 2, "two jobs in the queue at once: {jobs:?}");
    // kill -9 of ar: the jobs are Slurm's, they keep running.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    // One job cancelled from outside.
    let (cancelled_id, cancelled_name) = jobs[0].clone();
    assert!(Command::new("scancel").arg(&cancelled_id).status().unwrap().success());
    // The controller stopped, then restarted.
    let pid = std::fs::read_to_string(format!("{dir}/slurmctld.pid")).unwrap_or_default();
    if let Ok(pid) = pid.trim().parse::<i32>() {
        unsafe { libc::kill(pid, libc::SIGTERM) };
        std::thread::sleep(Duration::from_secs(4));
    }
    let up = Command::new("bash").arg(fx.repo.join("scripts/slurm-up.sh")).arg(&dir).output().unwrap();
    assert!(up.status.success(), "the controller restarts: {}", text(&up));
    let out = fx.ar(&two_worker_loop(tag, "1", &["--resume", "--backend", "slurm"]));
    assert!(out.status.success(), "{}", text(&out));
    let journal = fx.journal(tag);
    assert_consistent(&journal);
    let launched = events(&journal, "launched");
    let cancelled_run = cancelled_name.trim_start_matches(&format!("ar-{tag}-")).to_string();
    // The cancelled job either finished before the cancel reached it (its outcome counts), or
    // is measured again under a new run: as lost when it died without a word (cancelled
    // before its wrapper started), as interrupted when its wrapper caught the SIGTERM and
    // stopped the training (which one depends on how far the job had got).
    let cancelled: Vec<_> =
        events(&journal, "finished").into_iter().filter(|f| f["run"] == cancelled_run.as_str()).collect();
    let cancelled_finished_ok = cancelled.iter().any(|f| f["record"]["val_bpb"].is_number());
    if !cancelled_finished_ok {
        let lost: Vec<_> =
            cancelled.iter().filter(|f| f["crash"] == "lost" || f["crash"] == "interrupted").collect();
        assert!(!lost.is_empty(), "the cancelled job is recorded as lost or interrupted: {journal:?}");
        if lost[0]["crash"] == "interrupted" {
            assert!(lost[0]["reason"].as_str().unwrap().contains("scancel"), "{:?}", lost[0]);
        }
        let lost_id = lost[0]["id"].clone();
        let lost_seed =
            events(&journal, "started").into_iter().find(|s| s["id"] == lost_id).unwrap()["seed"].clone();
        let again = events(&journal, "started")
            .into_iter()
            .filter(|s| s["seed"] == lost_seed && s["id"] != lost_id)
            .filter(|s| {
                events(&journal, "finished")
                    .iter()
                    .any(|f| f["id"] == s["id"] && f["record"]["val_bpb"].is_number())
            })
            .count();
        assert!(again >= 1, "and measured again: {journal:?}");
    }
    // Nothing launched twice under one run directory.
    let mut runs: Vec<&str> = launched.iter().map(|l| l["run"].as_str().unwrap()).collect();
    runs.sort();
    let n = runs.len();
    runs.dedup();
    assert_eq!(runs.len(), n, "a run directory launched twice: {launched:?}");
    let baselines = events(&journal, "decided")
        .into_iter()
        .filter(|d| d["decision"]["reason"] == "baseline measurement")
        .count();
    assert!(baselines >= 2, "both baselines measured: {journal:?}");
    assert!(queued(tag).is_empty(), "no job of the session left in the queue");
}
