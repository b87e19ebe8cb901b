//! Shared by the train crate's integration tests: a smoke-profile cache prepared once, the
//! train binary built with this test binary's features, one run of it, its progress lines.

#![allow(dead_code)]

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
            .args(features())
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo runs");
        assert!(status.success() && bin.is_file(), "the train binary builds");
        bin
    })
}

/// `--features` for the nested build: the ones this test binary was built with, so the
/// binary has the same backends (and shares every compiled dependency).
fn features() -> Vec<String> {
    let mut f = Vec::new();
    if cfg!(feature = "cuda") {
        f.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        f.push("wgpu");
    }
    if f.is_empty() { Vec::new() } else { vec!["--features".to_string(), f.join(",")] }
}

pub struct Run {
    pub stdout: String,
    /// What the run wrote to stderr (e.g. the kernels crate's line per `#[cube]` kernel used).
    pub stderr: String,
    pub record: RunRecord,
}

/// One smoke run on the CPU.
pub fn train(tag: &str) -> Run {
    train_on(tag, "cpu")
}

/// One smoke run on `device` (AR_DEVICE: cpu, wgpu, cuda).
pub fn train_on(tag: &str, device: &str) -> Run {
    let result = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("train-smoke-{tag}.json"));
    let _ = std::fs::remove_file(&result);
    let out = Command::new(binary())
        .env("AUTORESEARCH_CACHE", cache())
        .env("AR_PROFILE", "smoke")
        .env("AR_RESULT", &result)
        .env("AR_DEVICE", device)
        .env_remove("AR_SEED_OFFSET")
        .output()
        .expect("the train binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let record =
        RunRecord::parse(&std::fs::read_to_string(&result).expect("a result record")).expect("valid");
    Run { stdout, stderr, record }
}

/// (step, smoothed loss) of every progress line.
pub fn losses(stdout: &str) -> Vec<(u64, f64)> {
    stdout
        .split(['\n', '\r'])
        .filter_map(|l| {
            let step = l.strip_prefix("step ")?.split_whitespace().next()?.parse().ok()?;
            let loss = l.split("loss: ").nth(1)?.split_whitespace().next()?.parse().ok()?;
            Some((step, loss))
        })
        .collect()
}
