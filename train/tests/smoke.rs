//! The train program end to end through its binary on the smoke profile: it trains (the
//! loss falls), honours the time budget, writes its statistics and a checkpoint (never a
//! metric), serves that checkpoint to the trusted scorer, and is deterministic on the CPU
//! for a given seed.

mod support;

use prepare::profile::SMOKE;
use support::{losses, serve_and_score, train};

#[test]
fn test_smoke_run_trains_honours_the_budget_and_writes_the_record() {
    let run = train("a");
    let curve = losses(&run.stdout);
    assert!(curve.len() >= 5, "progress lines:\n{}", run.stdout);
    let (first, last) = (curve.first().unwrap().1, curve.last().unwrap().1);
    assert!((first - (SMOKE.vocab_size as f64).ln()).abs() < 0.3, "the first loss is ~ln(vocab): {first}");
    assert!(last < first - 1.0, "the loss falls: {first} → {last}");
    let r = &run.stats;
    assert_eq!(r.profile, "smoke");
    assert_eq!(r.budget, "time:4s");
    // The budget: at least TIME_BUDGET of counted training, at most one step more (+slack).
    let step_secs = r.training_seconds / (r.num_steps as f64 - SMOKE.warmup_steps as f64).max(1.0);
    assert!(r.training_seconds >= SMOKE.time_budget_secs, "{}", r.training_seconds);
    assert!(r.training_seconds <= SMOKE.time_budget_secs + 2.0 * step_secs + 1.0, "{}", r.training_seconds);
    assert!(r.num_steps as usize > SMOKE.warmup_steps, "{} steps", r.num_steps);
    assert!(r.peak_mem_mb > 0.0 && r.mfu_percent > 0.0);
    // No metric from the program: it says who scores.
    let block = run.stdout.split("\n---\n").nth(1).expect("a --- summary block");
    assert!(block.lines().any(|l| l.starts_with("val_bpb:") && l.contains("scored by ar")), "{block}");
    for key in
        ["training_seconds:", "total_seconds:", "peak_vram_mb:", "num_steps:", "num_params_M:", "depth:"]
    {
        assert!(block.lines().any(|l| l.starts_with(key)), "{key} missing from\n{block}");
    }
    // The checkpoint serves, and the scorer gives it a sane score with every probe passing.
    let scored = serve_and_score(&run.checkpoint, "cpu");
    let val = scored.bpb(prepare::Split::Val).unwrap();
    assert!(val > 0.0 && val < 8.0 && scored.bpb(prepare::Split::Test).is_some(), "{val}");
    assert!(scored.probes.iter().all(|p| p.passed), "{:?}", scored.probes);
}

#[test]
fn test_same_seed_gives_the_same_loss_curve_on_the_cpu() {
    let (a, b) = (train("det-a"), train("det-b"));
    let (ca, cb) = (losses(&a.stdout), losses(&b.stdout));
    let n = ca.len().min(cb.len()).min(10);
    assert!(n >= 5);
    assert_eq!(&ca[..n], &cb[..n], "the warm-up steps (every step logged) are bit-identical");
}
