//! The train program end to end through its binary on the smoke profile: it trains (the
//! loss falls), honours the time budget, writes a valid result record and the original's
//! summary block, and is deterministic on the CPU for a given seed.

mod support;

use prepare::profile::SMOKE;
use support::{losses, train};

#[test]
fn test_smoke_run_trains_honours_the_budget_and_writes_the_record() {
    let run = train("a");
    let curve = losses(&run.stdout);
    assert!(curve.len() >= 5, "progress lines:\n{}", run.stdout);
    let (first, last) = (curve.first().unwrap().1, curve.last().unwrap().1);
    assert!((first - (SMOKE.vocab_size as f64).ln()).abs() < 0.3, "the first loss is ~ln(vocab): {first}");
    assert!(last < first - 1.0, "the loss falls: {first} → {last}");
    let r = &run.record;
    assert_eq!(r.profile, "smoke");
    assert!(r.synthetic_data && r.data.contains("SYNTHETIC"));
    assert!(r.val_bpb > 0.0 && r.val_bpb < 8.0 && r.test_bpb.is_some());
    // The budget: at least TIME_BUDGET of counted training, at most one step more (+slack).
    let step_secs = r.training_seconds / (r.num_steps as f64 - 10.0).max(1.0);
    assert!(r.training_seconds >= SMOKE.time_budget_secs, "{}", r.training_seconds);
    assert!(r.training_seconds <= SMOKE.time_budget_secs + 2.0 * step_secs + 1.0, "{}", r.training_seconds);
    assert_eq!(r.train_sha256.len(), 64);
    assert!(r.hardware.cpu_cores >= 1 && r.peak_mem_mb > 0.0 && r.mfu_percent > 0.0);
    // The original's summary block, so `grep "^val_bpb:"` still works.
    let block = run.stdout.split("\n---\n").nth(1).expect("a --- summary block");
    for key in [
        "val_bpb:",
        "training_seconds:",
        "total_seconds:",
        "peak_vram_mb:",
        "mfu_percent:",
        "total_tokens_M:",
        "num_steps:",
        "num_params_M:",
        "depth:",
    ] {
        assert!(block.lines().any(|l| l.starts_with(key)), "{key} missing from\n{block}");
    }
    assert!(block.contains(&format!("val_bpb:          {:.6}", r.val_bpb)));
}

#[test]
fn test_same_seed_gives_the_same_loss_curve_on_the_cpu() {
    let (a, b) = (train("det-a"), train("det-b"));
    let (ca, cb) = (losses(&a.stdout), losses(&b.stdout));
    let n = ca.len().min(cb.len()).min(10);
    assert!(n >= 5);
    assert_eq!(&ca[..n], &cb[..n], "the warm-up steps (every step logged) are bit-identical");
}
