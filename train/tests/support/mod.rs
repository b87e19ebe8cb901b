//! Shared by the train crate's integration tests: a smoke-profile cache prepared once, the
//! train binary built with this test binary's features, one run of it (its statistics and
//! checkpoint), the same binary serving that checkpoint to the trusted scorer, and the
//! progress lines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::Arc;

use prepare::data::{DataOptions, SourceSpec};
use prepare::pipeline::{PrepareOptions, prepare};
use prepare::profile::SMOKE;
use prepare::progress::Quiet;
use prepare::scorer::{self, Client, Rng, Rows, Scored, Settings};
use prepare::{Cache, Split, Tokenizer, TrainStats};

/// A smoke cache prepared once for this test binary.
pub fn cache() -> &'static Path {
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
    pub stats: TrainStats,
    /// The checkpoint the run left for scoring.
    pub checkpoint: PathBuf,
}

/// One smoke run on the CPU.
pub fn train(tag: &str) -> Run {
    train_on(tag, "cpu")
}

/// One smoke run on `device` (AR_DEVICE: cpu, wgpu, cuda), in a directory of its own.
pub fn train_on(tag: &str, device: &str) -> Run {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("train-smoke-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(binary())
        .current_dir(&dir)
        .env("AUTORESEARCH_CACHE", cache())
        .env("AR_PROFILE", "smoke")
        .env("AR_DEVICE", device)
        .env_remove("AR_SEED_OFFSET")
        .env_remove("AR_BUDGET")
        .env_remove("AR_STATS")
        .env_remove("AR_CHECKPOINT")
        .output()
        .expect("the train binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let stats = TrainStats::parse(&std::fs::read_to_string(dir.join("stats.json")).expect("statistics"))
        .expect("valid statistics");
    Run { stdout, stderr, stats, checkpoint: dir.join("model.ckpt") }
}

/// The smoke cache, opened.
pub fn open_cache() -> Cache {
    Cache::open_at(&cache().join("smoke"), &SMOKE).expect("the smoke cache opens")
}

/// Serves `checkpoint` from the train binary (its `AR_SERVE` mode, unconfined here) on
/// `device` and scores val and test with the trusted scorer, full variant.
pub fn serve_and_score(checkpoint: &Path, device: &str) -> Scored {
    let cache = open_cache();
    let tokenizer = Arc::new(Tokenizer::load(&cache).unwrap());
    let val = Rows::load(&cache, &tokenizer, Split::Val).unwrap();
    let test = Rows::load(&cache, &tokenizer, Split::Test).unwrap();
    let (client, mut child) = serve(checkpoint, device);
    let mut client = client;
    let settings = Settings { vocab: tokenizer.vocab_size(), ..Settings::default() };
    let scored = scorer::score_full(
        &mut client,
        &[&val, &test],
        tokenizer.token_bytes(),
        &settings,
        &mut Rng::new(11),
    )
    .expect("the model is scored");
    client.finish();
    assert!(child.wait().unwrap().success(), "the serving process exits cleanly");
    scored
}

/// Starts the binary in serving mode on `checkpoint`; returns the connected client.
pub fn serve(checkpoint: &Path, device: &str) -> (Client, std::process::Child) {
    let pipe = || {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the array; the Files own both ends.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) }
    };
    let (query_r, query_w) = pipe();
    let (answer_r, answer_w) = pipe();
    let ckpt = std::fs::File::open(checkpoint).expect("the checkpoint exists");
    let fds: Vec<OwnedFd> = vec![query_r.into(), answer_w.into(), ckpt.into()];
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new(binary());
    cmd.env("AR_SERVE", "3,4,5")
        .env("AR_DEVICE", device)
        .env("AUTORESEARCH_CACHE", cache())
        .env("AR_PROFILE", "smoke");
    // SAFETY: only dup2 between fork and exec; the sources are open in the child.
    unsafe {
        cmd.pre_exec(move || {
            // Move the sources high first so no dup2 clobbers another source.
            let high: Vec<i32> = raw.iter().map(|&fd| libc::fcntl(fd, libc::F_DUPFD, 100)).collect();
            for (target, src) in [3, 4, 5].iter().zip(high) {
                if libc::dup2(src, *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("the serving process starts");
    drop(fds);
    (Client::connect(query_w, answer_r).expect("the server says hello"), child)
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
