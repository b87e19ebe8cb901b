//! A real repository for supervisor tests: a copy of this workspace (tracked files only) in
//! `target/tmp`, committed to git, with the train file's hyperparameters shrunk so a smoke
//! run takes seconds, plus a smoke-profile cache prepared once.
//!
//! Cargo names the artifacts of workspace members by their path *relative to the
//! workspace root*, so a plain copy would share (and overwrite) the real workspace's
//! compiled `prepare` and `train`. The copy therefore gets its own workspace version: its
//! crates compile once, separately, while burn and every other dependency stay shared.
//! Scenarios share the one copy through a mutex and reset it (branches, session
//! directories, working tree) first, so each only recompiles the train file it changed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

pub const TRAIN_FILE: &str = "train/src/main.rs";

pub struct Fixture {
    pub repo: PathBuf,
    pub cache: PathBuf,
    pub target: PathBuf,
}

static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();

/// The shared fixture, reset and locked for one scenario.
pub fn fixture() -> MutexGuard<'static, Fixture> {
    let m = FIXTURE.get_or_init(|| Mutex::new(Fixture::create()));
    let guard = m.lock().unwrap_or_else(|p| p.into_inner());
    guard.reset();
    guard
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@localhost"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The train file with small, fast hyperparameters (the supervisor, not the model, is tested).
fn shrink(train: &str) -> String {
    let mut s = train.to_string();
    for (from, to) in [
        ("const DEPTH: usize = 4;", "const DEPTH: usize = 2;"),
        ("const TOTAL_BATCH_SIZE: usize = 1 << 12;", "const TOTAL_BATCH_SIZE: usize = 1 << 10;"),
    ] {
        assert!(s.contains(from), "the fixture expects `{from}` in {TRAIN_FILE}");
        s = s.replace(from, to);
    }
    s
}

/// Gives the copy's workspace crates their own version (manifest and lock file), so their
/// compiled artifacts never collide with the real workspace's.
fn distinct_version(repo: &Path) {
    const FIXTURE_VERSION: &str = "0.1.0-fixture";
    let manifest = repo.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let from = "[workspace.package]\nversion = \"0.1.0\"";
    assert!(text.contains(from), "the fixture expects `{from}` in Cargo.toml");
    std::fs::write(
        &manifest,
        text.replace(from, &format!("[workspace.package]\nversion = \"{FIXTURE_VERSION}\"")),
    )
    .unwrap();
    let lock = repo.join("Cargo.lock");
    let mut text = std::fs::read_to_string(&lock).unwrap();
    for member in ["ar", "kernels", "prepare", "train"] {
        text = text.replace(
            &format!("name = \"{member}\"\nversion = \"0.1.0\""),
            &format!("name = \"{member}\"\nversion = \"{FIXTURE_VERSION}\""),
        );
    }
    std::fs::write(&lock, text).unwrap();
}

impl Fixture {
    fn create() -> Fixture {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let target = tmp.parent().unwrap().to_path_buf();
        let repo = tmp.join("ar-fixture-repo");
        let cache = tmp.join("ar-fixture-cache");
        let _ = std::fs::remove_dir_all(&repo);
        std::fs::create_dir_all(&repo).unwrap();
        let ws = workspace();
        for path in git(&ws, &["ls-files", "-z"]).split('\0').filter(|p| !p.is_empty()) {
            let from = ws.join(path);
            if !from.is_file() {
                continue;
            }
            let to = repo.join(path);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap();
        }
        let train = repo.join(TRAIN_FILE);
        std::fs::write(&train, shrink(&std::fs::read_to_string(&train).unwrap())).unwrap();
        distinct_version(&repo);
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "fixture"]);
        let fx = Fixture { repo, cache, target };
        if !fx.cache.join("smoke").join("manifest.json").exists() {
            let out = fx.ar(&["prepare", "--profile", "smoke"]);
            assert!(out.status.success(), "{}", text(&out));
        }
        fx
    }

    /// Back to a clean `main`: no session branches, no session directories.
    pub fn reset(&self) {
        git(&self.repo, &["checkout", "-q", "-f", "main"]);
        git(&self.repo, &["reset", "-q", "--hard", "main"]);
        git(&self.repo, &["clean", "-q", "-fd"]);
        for b in git(&self.repo, &["branch", "--format=%(refname:short)"]).lines() {
            if b.starts_with("autoresearch/") {
                git(&self.repo, &["branch", "-q", "-D", b]);
            }
        }
        let _ = std::fs::remove_dir_all(self.repo.join(".autoresearch"));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ar"));
        c.current_dir(&self.repo)
            .args(args)
            .env("AUTORESEARCH_CACHE", &self.cache)
            .env("CARGO_TARGET_DIR", &self.target)
            .env("AR_PROFILE", "smoke")
            .env("AR_BIN", env!("CARGO_BIN_EXE_ar"))
            .env_remove("AR_FAILPOINT")
            .env_remove("HF_ENDPOINT");
        c
    }

    pub fn ar(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn ar_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(&self.repo, args)
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn start_branch(&self, tag: &str) {
        self.git(&["checkout", "-q", "-b", &format!("autoresearch/{tag}")]);
    }

    pub fn edit_train(&self, from: &str, to: &str) {
        let path = self.repo.join(TRAIN_FILE);
        let s = std::fs::read_to_string(&path).unwrap();
        assert!(s.contains(from), "`{from}` not in the train file");
        std::fs::write(&path, s.replacen(from, to, 1)).unwrap();
    }

    pub fn train_file(&self) -> String {
        std::fs::read_to_string(self.repo.join(TRAIN_FILE)).unwrap()
    }

    /// The journal's events as JSON values.
    pub fn journal(&self, tag: &str) -> Vec<serde_json::Value> {
        let path = self.repo.join(".autoresearch").join(tag).join("runs.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every journal line is whole JSON"))
            .collect()
    }

    pub fn tsv(&self, tag: &str) -> String {
        std::fs::read_to_string(self.repo.join(".autoresearch").join(tag).join("results.tsv"))
            .unwrap_or_default()
    }
}

/// Flags of the two-worker `evolve` session the pool and Slurm tests run (no verification):
/// `ar loop --tag <tag> … --max-experiments <experiments>`, then `extra` (a backend,
/// `--resume`, or the baseline runs and timeout of a fresh session).
pub fn two_worker_loop<'a>(tag: &'a str, experiments: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "loop",
        "--tag",
        tag,
        "--agent",
        "evolve",
        "--workers",
        "2",
        "--max-experiments",
        experiments,
        "--verify-pairs",
        "0",
    ];
    args.extend_from_slice(extra);
    args
}

/// What a fresh (not resumed) session of [`two_worker_loop`] adds.
pub const FRESH_SESSION: [&str; 4] = ["--baseline-runs", "2", "--timeout", "120"];

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Events of one kind.
pub fn events<'a>(journal: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    journal.iter().filter(|e| e["event"] == kind).collect()
}

/// Every started experiment has exactly one decision, and no id is finished twice.
pub fn assert_consistent(journal: &[serde_json::Value]) {
    let ids = |kind: &str| -> Vec<u64> {
        events(journal, kind).iter().map(|e| e["id"].as_u64().unwrap()).collect()
    };
    let (started, decided, finished) = (ids("started"), ids("decided"), ids("finished"));
    let mut sorted = decided.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), decided.len(), "an experiment was decided twice: {decided:?}");
    let mut f = finished.clone();
    f.sort();
    f.dedup();
    assert_eq!(f.len(), finished.len(), "an experiment was finished twice: {finished:?}");
    for id in &started {
        assert!(decided.contains(id), "experiment {id} was started but never decided");
    }
}

/// The `id` of the last decided experiment and its status.
pub fn last_decision(journal: &[serde_json::Value]) -> (u64, String) {
    let d = events(journal, "decided").last().copied().expect("a decision");
    (d["id"].as_u64().unwrap(), d["decision"]["status"].as_str().unwrap().to_string())
}

/// No process still runs the fixture's train binary.
pub fn assert_no_training_left(fx: &Fixture) {
    std::thread::sleep(std::time::Duration::from_millis(300));
    let bin = fx.target.join("release").join("train");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let exe = std::fs::read_link(entry.path().join("exe")).unwrap_or_default();
        assert_ne!(exe, bin, "an orphan training process is still running: pid {:?}", entry.file_name());
    }
}
