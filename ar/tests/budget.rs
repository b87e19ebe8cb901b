//! Fixed-work budgets give the same result on a quiet and on a loaded machine: the same
//! session (two baseline runs, one candidate decided by the paired rule) under a `tokens:`
//! budget, once alone and once beside CPU-heavy processes the test starts on purpose, must
//! record the same measurements and the same decision. Under a `time:` budget the step
//! count — and so every value — depends on the load (shown, not asserted: it is the
//! reason the tokens budget exists).

mod support;

use std::process::{Child, Command, Stdio};

use support::fixture::{Fixture, events, fixture, text};

/// Busy loops on every core, killed when dropped.
struct Load(Vec<Child>);

impl Load {
    fn start() -> Load {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        Load(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("sh starts")
                })
                .collect(),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One session: two baselines and one candidate; returns (values in journal order, the
/// candidate's decision status, its training steps).
fn session(fx: &Fixture, tag: &str, budget: &str) -> (Vec<f64>, String, Vec<u64>) {
    fx.start_branch(tag);
    let out = fx.ar(&[
        "experiment",
        "-m",
        "baseline",
        "--baseline-runs",
        "2",
        "--budget",
        budget,
        "--max-pairs",
        "2",
        "--timeout",
        "240",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    fx.edit_train("const MATRIX_LR: f64 = 0.04;", "const MATRIX_LR: f64 = 0.06;");
    let out = fx.ar(&["experiment", "-m", "raise MATRIX_LR"]);
    assert!(out.status.success(), "{}", text(&out));
    let journal = fx.journal(tag);
    let finished = events(&journal, "finished");
    let values: Vec<f64> = finished.iter().filter_map(|f| f["record"]["val_bpb"].as_f64()).collect();
    let steps: Vec<u64> = finished.iter().filter_map(|f| f["record"]["num_steps"].as_u64()).collect();
    let candidate = events(&journal, "started").into_iter().find(|e| e["kind"] == "candidate").unwrap();
    let decision = events(&journal, "decided").into_iter().find(|d| d["id"] == candidate["id"]).unwrap();
    assert!(decision["decision"]["evidence"]["pairs"].as_u64().unwrap() >= 1, "{decision}");
    (values, decision["decision"]["status"].as_str().unwrap().to_string(), steps)
}

#[test]
fn test_a_tokens_budget_gives_the_same_decisions_on_a_loaded_machine() {
    let fx = fixture();
    let quiet = session(&fx, "tokens-quiet", "tokens:12288");
    let loaded = {
        let _load = Load::start();
        fx.reset();
        session(&fx, "tokens-loaded", "tokens:12288")
    };
    assert_eq!(quiet.1, loaded.1, "the same decision");
    assert_eq!(quiet.2, loaded.2, "the same step counts");
    assert_eq!(quiet.0.len(), loaded.0.len());
    for (a, b) in quiet.0.iter().zip(&loaded.0) {
        assert!((a - b).abs() < 1e-9, "the same measurements: {:?} vs {:?}", quiet.0, loaded.0);
    }
    println!("tokens budget: quiet {:?}, loaded {:?} ({})", quiet.0, loaded.0, quiet.1);
}
