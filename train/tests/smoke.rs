//! The train program end to end through its binary on the smoke profile: it trains (the
//! loss falls), honours the time budget, writes a valid result record and the original's
//! summary block, and is deterministic on the CPU for a given seed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use prepare::RunRecord;
use prepare::data::{DataOptions, SourceSpec};
use prepare::pipeline::{PrepareOptions, prepare};
use prepare::profile::SMOKE;
use prepare::progress::Quiet;

/// A smoke cache prepared once for this test binary.
fn cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("train-smoke-cache");
        let opts = PrepareOptions {
            profile: &SMOKE,
            sources: vec![SourceSpec::Synthetic(None)],
            data: DataOptions::default(),
            cache_dir: Some(dir.join("smoke")),
            force: false,
        };
        prepare(&opts, &Quiet).expect("the smoke cache prepares");
        dir
    })
}

/// The train binary, built through cargo: another checkout sharing the target directory
/// (the supervisor tests' fixture does) may have replaced the uplifted
/// `target/release/train`, and cargo restores it only if it is missing.
fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().to_path_buf();
        let bin = target.join("release").join("train");
        let _ = std::fs::remove_file(&bin);
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--release", "--locked", "-p", "train", "--bin", "train"])
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo runs");
        assert!(status.success() && bin.is_file(), "the train binary builds");
        bin
    })
}

struct Run {
    stdout: String,
    record: RunRecord,
}

fn train(tag: &str) -> Run {
    let result = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("train-smoke-{tag}.json"));
    let _ = std::fs::remove_file(&result);
    let out = Command::new(binary())
        .env("AUTORESEARCH_CACHE", cache())
        .env("AR_PROFILE", "smoke")
        .env("AR_RESULT", &result)
        .env_remove("AR_SEED_OFFSET")
        .output()
        .expect("the train binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let record =
        RunRecord::parse(&std::fs::read_to_string(&result).expect("a result record")).expect("valid");
    Run { stdout, record }
}

/// (step, smoothed loss) of every progress line.
fn losses(stdout: &str) -> Vec<(u64, f64)> {
    stdout
        .split(['\n', '\r'])
        .filter_map(|l| {
            let step = l.strip_prefix("step ")?.split_whitespace().next()?.parse().ok()?;
            let loss = l.split("loss: ").nth(1)?.split_whitespace().next()?.parse().ok()?;
            Some((step, loss))
        })
        .collect()
}

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
