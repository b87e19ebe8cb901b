//! One measurement of a command workload (`autoresearch.toml`): the build, then the run,
//! in the repository's working tree, confined; the metric read by `ar` from what the run
//! left; and, separately, the checks a change must pass before it is kept.
//!
//! The caller (the session) checks the commit out first; this module only runs commands in
//! the tree as it is. Every command runs as `sh -c <command>` through
//! [`child::Supervised`] (own process group, deadline, log file `ar` created, leaked
//! processes killed and reported) under this sandbox:
//! - **writes** only where the workload's `writable` says — by default the repository's
//!   existing top-level entries but `.git`, `.autoresearch` and `autoresearch.toml` (landlock only allows, so
//!   each entry gets its own rule; a directory holding a held-out path is split further so
//!   the held-out path gets no rule; symlinks get none, as a rule would land on their
//!   target) — plus a scratch directory in the run directory, which is `TMPDIR`;
//! - **reads** everywhere but the held-out paths and `.autoresearch/`
//!   ([`ReadAccess::ExceptFiles`]: directories stay listable, so a Python script can still
//!   import the modules beside it);
//! - no network, no setsid/setpgid, no chmod; the environment is `ar`'s allowlist plus the
//!   workload's `env`, the seed variable, `AR_BUDGET` and `TMPDIR`. `PYTHONPYCACHEPREFIX`
//!   points into the scratch directory unless the workload sets it: bytecode caches in the
//!   tree are state one run could leave for the next (a doctored `__pycache__`).
//!
//! Run directory (`RunDir`): `build.log`, `run.log`, `checks.log`, `work/` (the scratch),
//! `outcome.json`. The metric is parsed from the last 64 KiB of `run.log` (read through
//! `ar`'s own descriptor) or from the JSON file, which `ar` empties before the run and
//! opens afterwards one path component at a time without following symlinks (stricter than
//! `child::read_untrusted`, which refuses a symlink only as the last component: here the
//! run may replace a directory on the way with a link to a file it could not read). Program output
//! leaves this module only inside the fenced excerpt of a crash or failed check.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::child::{ChildSpec, Ended, Supervised};
use super::job::RunDir;
use crate::journal::CrashClass;
use crate::sandbox::{Policy, ReadAccess, Report};
use crate::workload::{CommandSpec, MetricSource, metric};

/// Largest metric file `ar` reads.
pub const MAX_METRIC_FILE_BYTES: u64 = 1 << 20;
/// The log tail the metric is parsed from (what `child` keeps of a log).
const TAIL_BYTES: u64 = 64 << 10;

/// What one measurement of a command workload produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// The metric, when the run succeeded and `ar` could read it.
    pub metric: Option<f64>,
    pub crash: Option<CrashClass>,
    /// Why it is a crash, one line, never program output.
    pub reason: Option<String>,
    /// The sanitised, fenced tail of the failing command's output (crashes only).
    pub excerpt: Option<String>,
    pub build_seconds: f64,
    pub run_seconds: f64,
    /// Processes that outlived the build or the run (`pid command`), killed.
    pub leaked: Vec<String>,
    /// The sandbox in force for the run (or the build, when the run never started).
    pub sandbox: Option<Report>,
    /// The seed index passed to the run.
    pub seed: u64,
    /// The run directory's name.
    pub run: String,
}

/// What the checks command said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChecksOutcome {
    /// True also when the workload has no checks.
    pub passed: bool,
    pub seconds: f64,
    /// The fenced tail of its output when it failed.
    pub excerpt: Option<String>,
    /// Why it failed, one line, never program output.
    pub reason: Option<String>,
    /// Abandoned on request (Ctrl-C): not a verdict on the change.
    pub interrupted: bool,
    pub leaked: Vec<String>,
    pub sandbox: Option<Report>,
}

/// Builds (if the workload has a build) and runs the workload once in `repo`'s working
/// tree at seed index `seed`, killing the run at `timeout`. Errors are supervisor failures;
/// everything the program does wrong is a crash class in the outcome.
pub fn measure(
    spec: &CommandSpec,
    repo: &Path,
    run: &RunDir,
    seed: u64,
    timeout: Duration,
    sandbox: bool,
    stop: &Arc<AtomicBool>,
) -> Result<CommandOutcome> {
    let scratch = run.work();
    let mut out = CommandOutcome { seed, run: run.name(), ..CommandOutcome::default() };
    let policy = sandbox.then(|| policy(spec, repo, &scratch)).transpose()?;

    if let Some(build) = &spec.build {
        let env = environment(spec, &scratch, None);
        let ended = supervise(
            repo,
            &build.command,
            env,
            run.root.join("build.log"),
            policy.clone(),
            build.timeout,
            stop,
            &mut out.sandbox,
        )?;
        out.build_seconds = ended.seconds;
        out.leaked.extend(ended.leaked.iter().cloned());
        let failed = if ended.abandoned {
            Some((CrashClass::Interrupted, "abandoned on request (Ctrl-C) during the build".to_string()))
        } else if ended.timed_out {
            Some((
                CrashClass::Build,
                format!("the build was killed after its {:.0}s timeout", build.timeout.as_secs_f64()),
            ))
        } else if !ended.success() {
            Some((CrashClass::Build, format!("the build failed: it {}", ended.describe())))
        } else {
            None
        };
        if let Some((class, why)) = failed {
            return finish(run, crashed(out, class, why, &ended));
        }
    }

    let mut run_policy = policy;
    if let MetricSource::Json { file, .. } = &spec.metric.source {
        match empty_metric_file(repo, file) {
            Ok(path) => {
                if let Some(p) = run_policy.as_mut() {
                    p.writable.push(path);
                }
            }
            Err(e) => {
                out.crash = Some(CrashClass::NoResult);
                out.reason = Some(format!("{e:#}"));
                return finish(run, out);
            }
        }
    }
    let env = environment(spec, &scratch, Some(seed));
    let ended = supervise(
        repo,
        &spec.run.command,
        env,
        run.root.join("run.log"),
        run_policy,
        timeout,
        stop,
        &mut out.sandbox,
    )?;
    out.run_seconds = ended.seconds;
    out.leaked.extend(ended.leaked.iter().cloned());
    if ended.abandoned {
        return finish(
            run,
            crashed(out, CrashClass::Interrupted, "abandoned on request (Ctrl-C)".into(), &ended),
        );
    }
    if ended.timed_out {
        let why = format!("killed after the {:.0}s timeout", timeout.as_secs_f64());
        return finish(run, crashed(out, CrashClass::Timeout, why, &ended));
    }
    if !ended.success() {
        let why = format!("the run {}", ended.describe());
        return finish(run, crashed(out, CrashClass::Panic, why, &ended));
    }
    let value = match &spec.metric.source {
        MetricSource::Stdout => metric::from_metric_lines(&log_tail(&ended), &spec.metric.name),
        MetricSource::Summary => metric::from_summary(&log_tail(&ended), &spec.metric.name),
        MetricSource::Json { file, key } => match read_beneath(repo, file, MAX_METRIC_FILE_BYTES) {
            Ok(bytes) => metric::from_json(&String::from_utf8_lossy(&bytes), key),
            Err(e) => Err(metric::MetricError(format!("{e:#}"))),
        },
    };
    match value {
        Ok(v) => out.metric = Some(v),
        Err(e) => return finish(run, crashed(out, CrashClass::NoResult, e.0, &ended)),
    }
    finish(run, out)
}

/// Runs the workload's checks command in `repo` (sandboxed like the run); passes when the
/// workload has none.
pub fn checks(
    spec: &CommandSpec,
    repo: &Path,
    run: &RunDir,
    timeout: Duration,
    sandbox: bool,
    stop: &Arc<AtomicBool>,
) -> Result<ChecksOutcome> {
    let Some(step) = &spec.checks else {
        return Ok(ChecksOutcome { passed: true, ..ChecksOutcome::default() });
    };
    let scratch = run.work();
    let policy = sandbox.then(|| policy(spec, repo, &scratch)).transpose()?;
    let log = (1..)
        .map(|n| run.root.join(if n == 1 { "checks.log".into() } else { format!("checks.{n}.log") }))
        .find(|p| !p.exists())
        .expect("some name is free");
    let mut report = None;
    let env = environment(spec, &scratch, None);
    let ended =
        supervise(repo, &step.command, env, log, policy, timeout.min(step.timeout), stop, &mut report)?;
    let mut out = ChecksOutcome {
        passed: ended.success(),
        seconds: ended.seconds,
        leaked: ended.leaked.clone(),
        sandbox: report,
        interrupted: ended.abandoned,
        ..ChecksOutcome::default()
    };
    if !out.passed {
        out.reason = Some(if ended.abandoned {
            "the checks were abandoned on request (Ctrl-C)".to_string()
        } else {
            format!("the checks command {}", ended.describe())
        });
        out.excerpt = Some(crate::excerpt::excerpt(&ended.tail));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The child

#[allow(clippy::too_many_arguments)]
fn supervise(
    repo: &Path,
    command: &str,
    env: Vec<(String, OsString)>,
    log: PathBuf,
    policy: Option<Policy>,
    deadline: Duration,
    stop: &Arc<AtomicBool>,
    report: &mut Option<Report>,
) -> Result<Ended> {
    let child = Supervised::spawn(
        ChildSpec {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), command.into()],
            cwd: repo.to_path_buf(),
            env,
            log,
            fds: Vec::new(),
            policy,
            deadline,
        },
        Some(stop.clone()),
    )?;
    if child.report.is_some() {
        report.clone_from(&child.report);
    }
    child.wait(&mut |_| {})
}

fn crashed(mut out: CommandOutcome, class: CrashClass, reason: String, ended: &Ended) -> CommandOutcome {
    out.crash = Some(class);
    out.reason = Some(reason);
    if class.shows_output() {
        out.excerpt = Some(crate::excerpt::excerpt(&ended.tail));
    }
    out
}

/// Writes outcome.json and returns the outcome.
fn finish(run: &RunDir, out: CommandOutcome) -> Result<CommandOutcome> {
    prepare::manifest::write_atomic(&run.outcome(), serde_json::to_string_pretty(&out)?.as_bytes())?;
    Ok(out)
}

/// The log's last 64 KiB; when the log is longer, its first (cut) line is dropped, so a
/// line cut just before `METRIC` cannot pass for one.
fn log_tail(ended: &Ended) -> String {
    let (text, end) = ended.output_since(0);
    if end > TAIL_BYTES {
        return text.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap_or_default();
    }
    text
}

/// The environment a command gets on top of `ar`'s allowlist.
fn environment(spec: &CommandSpec, scratch: &Path, seed: Option<u64>) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = vec![("TMPDIR".into(), scratch.into())];
    if !spec.run.env.iter().any(|(k, _)| k == "PYTHONPYCACHEPREFIX") {
        env.push(("PYTHONPYCACHEPREFIX".into(), scratch.join("pycache").into()));
    }
    if let Some(b) = &spec.run.budget {
        env.push(("AR_BUDGET".into(), b.into()));
    }
    if let Some(s) = seed {
        env.push((spec.run.seed_env.clone(), s.to_string().into()));
    }
    env.extend(spec.run.env.iter().map(|(k, v)| (k.clone(), v.into())));
    env
}

// ---------------------------------------------------------------------------------------
// The sandbox

/// The policy of every command of `spec`: see the module header.
pub fn policy(spec: &CommandSpec, repo: &Path, scratch: &Path) -> Result<Policy> {
    let repo = std::fs::canonicalize(repo).with_context(|| format!("cannot resolve {}", repo.display()))?;
    let mut hidden = spec.run_hidden(&repo);
    hidden.push(repo.join(".autoresearch"));
    let canonical_hidden: Vec<PathBuf> =
        hidden.iter().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).collect();
    let mut writable = vec![scratch.to_path_buf()];
    for w in &spec.run.writable {
        if w == "." || w == "./" {
            grant_beneath(&repo, &canonical_hidden, &mut writable, true)?;
            continue;
        }
        let path = crate::workload::resolve(&repo, w);
        let inside_repo = path.starts_with(&repo);
        if inside_repo && std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        if inside_repo && path.is_dir() && canonical_hidden.iter().any(|h| h.starts_with(&path)) {
            grant_beneath(&path, &canonical_hidden, &mut writable, false)?;
        } else if !canonical_hidden.iter().any(|h| path.starts_with(h)) {
            writable.push(path);
        }
    }
    Ok(Policy { writable, read: ReadAccess::ExceptFiles(hidden), network: false, confine_process: true })
}

/// Write rules for every entry of `dir` but symlinks, hidden paths (and, at the
/// repository root, `.git` and `.autoresearch`); directories holding a hidden path are
/// split further.
fn grant_beneath(dir: &Path, hidden: &[PathBuf], out: &mut Vec<PathBuf>, root: bool) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        // The workload file is pinned, and no run needs to change what it is judged by.
        if root && (name == ".git" || name == ".autoresearch" || name == crate::workload::FILE) {
            continue;
        }
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_symlink() || hidden.iter().any(|h| *h == path) {
            continue;
        }
        if kind.is_dir() && hidden.iter().any(|h| h.starts_with(&path)) {
            grant_beneath(&path, hidden, out, false)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The metric file: opened beneath the repository, one component at a time

fn cstr(name: &std::ffi::OsStr) -> Result<CString> {
    CString::new(name.as_bytes()).context("a path component holds a NUL byte")
}

/// The directory `rel`'s parent names beneath `root`, each component opened without
/// following symlinks (created when `create`), and the file name.
fn parent_beneath(root: &Path, rel: &str, create: bool) -> Result<(OwnedFd, CString)> {
    let root_fd = File::open(root).with_context(|| format!("cannot open {}", root.display()))?;
    let mut dir = OwnedFd::from(root_fd);
    let parts: Vec<&str> = rel.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let Some((name, dirs)) = parts.split_last() else { bail!("the metric file path `{rel}` is empty") };
    for part in dirs {
        let c = cstr(std::ffi::OsStr::new(part))?;
        use std::os::fd::AsRawFd;
        if create {
            // SAFETY: mkdirat on a directory fd we own with a valid C string.
            unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755) };
        }
        // SAFETY: openat on a directory fd we own with a valid C string.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            bail!(
                "the metric file `{rel}`: `{part}` is missing, not a directory or a symlink ({}); it must be a plain path \
                 inside the repository",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: the kernel just returned it; nothing else owns it.
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    Ok((dir, cstr(std::ffi::OsStr::new(name))?))
}

/// Removes whatever is at the metric file's path and creates it empty, so a value left by
/// an earlier run never counts (and a run can write it even where it could not create
/// it). Returns its path for the write rule.
fn empty_metric_file(repo: &Path, rel: &str) -> Result<PathBuf> {
    use std::os::fd::AsRawFd;
    let (dir, name) = parent_beneath(repo, rel, true)?;
    // SAFETY: unlinkat/openat on a directory fd we own with a valid C string.
    unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    };
    if fd < 0 {
        bail!(
            "cannot create the metric file `{rel}` empty before the run ({})",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: just returned by the kernel; closing it is all we do.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(repo.join(rel))
}

/// Reads a file a run wrote at `rel` beneath `root`: no symlink anywhere on the way, a
/// regular file, at most `limit` bytes, never blocking on a FIFO.
pub fn read_beneath(root: &Path, rel: &str, limit: u64) -> Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let (dir, name) = parent_beneath(root, rel, false)?;
    // SAFETY: openat on a directory fd we own with a valid C string.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        bail!(
            "the run left no readable metric file `{rel}` ({}; a symlink is refused)",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: just returned by the kernel; owned by nothing else.
    let file = unsafe { File::from_raw_fd(fd) };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        bail!("the metric file `{rel}` is not a regular file");
    }
    if meta.len() > limit {
        bail!("the metric file `{rel}` holds {} bytes, more than the {limit} allowed", meta.len());
    }
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}
