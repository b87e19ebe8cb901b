//! Building and running the train program: `cargo build`, then the child process with
//! its log, its result record, a hard timeout and crash classification.
//!
//! `ar` never imports the train code: it builds the `train` crate with cargo (release,
//! `--locked`) and runs the binary as a child process, the way the original runs
//! `uv run train.py`. The result travels back as the JSON record `prepare` writes to the
//! path in `AR_RESULT`.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use prepare::RunRecord;
use prepare::profile::PROFILE_ENV;
use prepare::report::RESULT_ENV;

use crate::git::TRAIN_FILE;
use crate::journal::CrashClass;

/// Walks up from `start` to the repository root: the directory holding `Cargo.toml` and
/// `train/src/main.rs`.
pub fn find_repo(start: &Path) -> Result<PathBuf> {
    let start = std::fs::canonicalize(start).with_context(|| format!("{}", start.display()))?;
    for dir in start.ancestors() {
        if dir.join("Cargo.toml").is_file() && dir.join("train").join("src").join("main.rs").is_file() {
            return Ok(dir.to_path_buf());
        }
    }
    bail!(
        "{} is not inside an autoresearch-rs checkout (no Cargo.toml with train/src/main.rs above it); \
         run ar from the repository or pass --repo",
        start.display()
    )
}

/// The target directory cargo uses for `repo` (`CARGO_TARGET_DIR` wins).
pub fn target_dir(repo: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo.join("target"))
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildSpec {
    /// Binary of the train crate: "train" or "bench".
    pub bin: String,
    /// Cargo features of the train crate, e.g. "cuda".
    pub features: Vec<String>,
}

/// The outcome of a build.
#[derive(Debug)]
pub struct Built {
    pub binary: PathBuf,
    pub seconds: f64,
    /// sha256 of the train file in the working tree when it was built.
    pub train_sha256: String,
    /// Whether the binary carries that digest as its stamp (false: cargo reused a stale
    /// build-script output even after a forced rebuild; the binary's provenance is unknown).
    pub stamped: bool,
}

/// A failed build: the compiler's first error, trimmed, and the full log.
#[derive(Debug)]
pub struct BuildFailure {
    pub first_error: String,
    pub log: String,
}

/// Builds one binary of the train crate in release, `--locked`. Output is captured; on
/// failure the first compiler error is extracted for the agent. The binary is checked to
/// carry the stamp of the train file in the working tree (see [`embeds_train_sha`]).
pub fn build(repo: &Path, spec: &BuildSpec) -> Result<std::result::Result<Built, BuildFailure>> {
    let started = std::time::Instant::now();
    let train_file = repo.join(TRAIN_FILE);
    let expected = prepare::manifest::sha256_hex(
        &std::fs::read(&train_file).with_context(|| format!("cannot read {}", train_file.display()))?,
    );
    // A failed build has no binary to check: nothing to redo.
    let check = |built: &std::result::Result<PathBuf, BuildFailure>| match built {
        Ok(binary) => embeds_train_sha(binary, &expected),
        Err(_) => Ok(true),
    };
    let mut built = cargo_build(repo, spec)?;
    let mut stamped = check(&built)?;
    if !stamped {
        // cargo decides whether the train crate's build script (which stamps the digest)
        // must run again by comparing mtimes; another checkout sharing this target
        // directory can leave a newer output of it behind, which cargo then takes as
        // fresh. A train file newer than any output makes it run again.
        touch(&train_file)?;
        built = cargo_build(repo, spec)?;
        stamped = check(&built)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(built.map(|binary| Built { binary, seconds, train_sha256: expected, stamped }))
}

/// One `cargo build` of `spec`'s binary; the path of the binary it made.
fn cargo_build(repo: &Path, spec: &BuildSpec) -> Result<std::result::Result<PathBuf, BuildFailure>> {
    // Another checkout sharing this target directory may have overwritten the uplifted
    // binary, and cargo does not restore it when the unit itself is fresh; removing it
    // first makes cargo link the right one back.
    let binary = target_dir(repo).join("release").join(&spec.bin);
    let _ = std::fs::remove_file(&binary);
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo)
        .args(["build", "--release", "--locked", "--message-format=short", "-p", "train", "--bin", &spec.bin])
        .stdin(Stdio::null());
    if !spec.features.is_empty() {
        cmd.args(["--features", &spec.features.join(",")]);
    }
    let out = cmd.output().context("cannot run cargo: is the Rust toolchain installed?")?;
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Ok(Err(BuildFailure { first_error: first_error(&log), log }));
    }
    if !binary.is_file() {
        bail!("cargo reported success but {} does not exist", binary.display());
    }
    Ok(Ok(binary))
}

/// Sets a file's modification time to now (cargo's freshness checks compare mtimes).
fn touch(path: &Path) -> Result<()> {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .with_context(|| format!("cannot update the modification time of {}", path.display()))
}

/// True when `binary` was built from a train file with this sha256: the train crate's
/// build script makes the digest the binary's GNU build-id (Linux). Elsewhere there is no
/// stamp to check and this answers true.
pub fn embeds_train_sha(binary: &Path, sha256: &str) -> Result<bool> {
    if !cfg!(target_os = "linux") {
        return Ok(true);
    }
    let raw: Vec<u8> = (0..sha256.len() / 2)
        .filter_map(|i| u8::from_str_radix(sha256.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    if raw.len() != 32 {
        return Ok(false);
    }
    let bytes = std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    Ok(bytes.windows(32).any(|w| w == raw.as_slice()))
}

/// The first `error` block of a cargo log, at most 12 lines.
pub fn first_error(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    // `--message-format=short` puts the location first (`path:line:col: error[E..]: ..`);
    // the long format opens with `error[E..]` and gives the location on the next lines.
    // cargo's own summary (`error: could not compile ..`) is never the interesting one.
    let is_error = |l: &str| {
        let l = l.trim_start();
        (l.starts_with("error") || l.contains(": error")) && !l.starts_with("error: could not compile")
    };
    let Some(start) = lines.iter().position(|l| is_error(l)) else {
        return lines.iter().rev().take(12).rev().cloned().collect::<Vec<_>>().join("\n");
    };
    let mut out = vec![lines[start]];
    for l in &lines[start + 1..] {
        let next_diagnostic = is_error(l) || l.starts_with("warning") || l.contains(": warning");
        if next_diagnostic || l.starts_with("error: could not compile") || out.len() >= 12 {
            break;
        }
        out.push(l);
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_first_error_is_the_first_error_block() {
        let log = "   Compiling train\nwarning: unused\nerror[E0425]: cannot find value `x`\n --> train/src/main.rs:3:5\n  |\nerror: aborting\n";
        let e = first_error(log);
        assert!(e.starts_with("error[E0425]") && e.contains("main.rs:3:5") && !e.contains("aborting"), "{e}");
    }

    #[test]
    fn test_first_error_in_the_short_format_names_the_location() {
        let log = "   Compiling train v0.1.0\ntrain/src/main.rs:9:1: warning: unused import\n\
                   train/src/main.rs:40:33: error: expected expression, found `;`\n\
                   train/src/main.rs:41:2: error[E0308]: mismatched types\n\
                   error: could not compile `train` (bin \"train\") due to 2 previous errors\n";
        let e = first_error(log);
        assert_eq!(e, "train/src/main.rs:40:33: error: expected expression, found `;`");
    }
}

// ---------------------------------------------------------------------------------------
// Running one training child
// ---------------------------------------------------------------------------------------

/// How to run one training child.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub binary: PathBuf,
    /// The run's own directory: its log, its result record, its scratch space.
    pub run_dir: PathBuf,
    pub profile: String,
    /// Hard wall-clock limit; the whole process group is killed past it.
    pub timeout: Duration,
    /// sha256 the record must name (the train file that was built), if known.
    pub expected_train_sha256: Option<String>,
    /// Added to the train file's seed: how many times this commit was measured before.
    pub seed_offset: u64,
    /// Confine the child: writes only under its run directory, no network.
    pub sandbox: bool,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub crash: Option<CrashClass>,
    pub record: Option<RunRecord>,
    /// Why the run counts as a crash, in one line (never program output).
    pub reason: Option<String>,
    /// The sanitised, fenced tail of the log (crashes only).
    pub excerpt: Option<String>,
    pub seconds: f64,
}

/// Runs the training child: stdout and stderr to `run.log`, `AR_RESULT` pointing into the
/// run directory, in its own process group (so a timeout kills everything it started),
/// and set to die with `ar` (so a `kill -9` of the supervisor leaves no orphan training).
/// `progress` is called about once a second with the child's pid and its reported
/// progress; `stop` abandons the run when set.
pub fn run_training(
    spec: &RunSpec,
    progress: &mut dyn FnMut(u32, Option<f64>),
    stop: &AtomicBool,
) -> Result<RunOutcome> {
    std::fs::create_dir_all(&spec.run_dir)
        .with_context(|| format!("cannot create {}", spec.run_dir.display()))?;
    let log_path = spec.run_dir.join("run.log");
    let result_path = spec.run_dir.join("result.json");
    let _ = std::fs::remove_file(&result_path);
    let log =
        std::fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
    let mut cmd = Command::new(&spec.binary);
    cmd.current_dir(&spec.run_dir)
        .env(PROFILE_ENV, &spec.profile)
        .env(RESULT_ENV, &result_path)
        .env(prepare::SEED_OFFSET_ENV, spec.seed_offset.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    if spec.sandbox {
        // The child may write only its run directory (record, log, scratch) — not the
        // repository, not the journal — and may not use the network.
        let scratch = spec.run_dir.join("tmp");
        std::fs::create_dir_all(&scratch).with_context(|| format!("cannot create {}", scratch.display()))?;
        cmd.env("TMPDIR", &scratch);
        let policy = crate::sandbox::Policy { writable: vec![spec.run_dir.clone()], network: false };
        crate::sandbox::apply(&mut cmd, &policy).warn_once();
    }
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot start {}", spec.binary.display()))?;
    let pid = child.id();
    let (mut timed_out, mut abandoned) = (false, false);
    let mut last_poll = Instant::now() - Duration::from_secs(1);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > spec.timeout {
            timed_out = true;
        } else if stop.load(Ordering::SeqCst) {
            abandoned = true;
        }
        if timed_out || abandoned {
            // SAFETY: signalling the child's own process group, which we created.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            break child.wait()?;
        }
        if last_poll.elapsed() >= Duration::from_secs(1) {
            last_poll = Instant::now();
            progress(pid, last_progress(&log_path));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let seconds = started.elapsed().as_secs_f64();
    let log_text = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap_or_default()).into_owned();
    let record = std::fs::read_to_string(&result_path).ok().map(|t| RunRecord::parse(&t));
    let (crash, reason, record) = classify(status, timed_out, abandoned, &log_text, record, spec);
    let excerpt = crash.map(|_| crate::excerpt::excerpt(&log_text));
    Ok(RunOutcome { crash, record, reason, excerpt, seconds })
}

/// The `(x%)` of the last progress line in the log, if any.
fn last_progress(log: &Path) -> Option<f64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = String::new();
    f.take(4096).read_to_string(&mut tail).ok();
    let at = tail.rfind("step ")?;
    let rest = &tail[at..];
    let open = rest.find('(')?;
    let close = rest.find("%)")?;
    rest.get(open + 1..close)?.trim().parse().ok()
}

/// Maps how the child ended to a crash class (None = a valid result).
fn classify(
    status: std::process::ExitStatus,
    timed_out: bool,
    abandoned: bool,
    log: &str,
    record: Option<std::result::Result<RunRecord, String>>,
    spec: &RunSpec,
) -> (Option<CrashClass>, Option<String>, Option<RunRecord>) {
    let budget = spec.timeout.as_secs();
    if abandoned {
        return (Some(CrashClass::Interrupted), Some("abandoned on request (Ctrl-C)".into()), None);
    }
    if timed_out {
        return (Some(CrashClass::Timeout), Some(format!("killed after the {budget}s timeout")), None);
    }
    if status.success() {
        return match record {
            Some(Ok(r)) => match &spec.expected_train_sha256 {
                Some(sha) if &r.train_sha256 != sha => (
                    Some(CrashClass::NoResult),
                    Some("the record names a different train file than the one built".into()),
                    None,
                ),
                _ => (None, None, Some(r)),
            },
            Some(Err(e)) => (Some(CrashClass::NoResult), Some(format!("invalid result record: {e}")), None),
            None => {
                (Some(CrashClass::NoResult), Some("exited 0 without writing a result record".into()), None)
            }
        };
    }
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let signal = status.signal();
    let code = status.code();
    let reason = match (code, signal) {
        (Some(c), _) => format!("exited with code {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "ended abnormally".to_string(),
    };
    let class = if lines.iter().any(|l| *l == "FAIL") {
        CrashClass::Nan
    } else if signal == Some(libc::SIGKILL)
        || log.contains("memory allocation of")
        || log.contains("out of memory")
        || log.contains("Cannot allocate memory")
    {
        CrashClass::Oom
    } else if log.contains("evaluation:") || log.contains("error: evaluation") {
        CrashClass::Eval
    } else {
        CrashClass::Panic
    };
    (Some(class), Some(reason), None)
}
