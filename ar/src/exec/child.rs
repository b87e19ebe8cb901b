//! One supervised child process: started confined, timed by a clock nothing can block,
//! read through descriptors `ar` owns, and never outlived by anything it started.
//!
//! The training and serving children run code an agent wrote, so nothing about them is
//! trusted (the habits are cargo-nextest's):
//! - the child gets its own process group, and the sandbox denies setsid/setpgid, so the
//!   group holds every descendant; after the child exits — normally, at the deadline, or
//!   on Ctrl-C — `ar` lists what is still running in the group (reported as *leaked*),
//!   kills the group and waits until it is gone;
//! - the deadline is enforced by a watchdog thread that only sleeps and signals, so no file
//!   operation on a path the child controls can stall it;
//! - stdout and stderr go to a log file `ar` created (`O_EXCL|O_NOFOLLOW`) and reads back
//!   through its own descriptor with `pread`: renaming, replacing it with a FIFO or a
//!   symlink changes nothing for `ar`, and only the tail is ever read;
//! - extra descriptors (pipes, the checkpoint) are placed at fixed numbers with `dup2`
//!   between fork and exec; everything else `ar` has open is close-on-exec;
//! - the environment is cleared to an allowlist (`sandbox::child_env`) plus what the
//!   caller adds, and the child dies with `ar` (PDEATHSIG).

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::sandbox::{self, Policy, Report};

/// Bytes of the log's tail read for excerpts and progress.
const TAIL_BYTES: u64 = 64 << 10;

/// How to start one child.
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// Added to the allowlisted environment.
    pub env: Vec<(String, OsString)>,
    /// Created new (it must not exist): the child's stdout and stderr.
    pub log: PathBuf,
    /// Descriptors placed at fixed numbers in the child (target, source).
    pub fds: Vec<(RawFd, OwnedFd)>,
    /// `None` runs unconfined (only when the session was created with --allow-unconfined).
    pub policy: Option<Policy>,
    /// Killed this long after the start.
    pub deadline: Duration,
}

/// How a supervised child ended.
#[derive(Debug)]
pub struct Ended {
    /// The log, for what was written after the last look.
    log: File,
    /// None when it was killed at the deadline or abandoned.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub abandoned: bool,
    pub seconds: f64,
    /// Processes of its group still running after it exited (`pid command`), killed since.
    pub leaked: Vec<String>,
    /// The last bytes of its log.
    pub tail: String,
}

impl Ended {
    /// The log's bytes from `offset` on (see [`Supervised::output_since`]).
    pub fn output_since(&self, offset: u64) -> (String, u64) {
        read_since(&self.log, offset)
    }

    /// True for a clean exit with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// "exited with code 1", "killed by signal 9".
    pub fn describe(&self) -> String {
        match self.status {
            _ if self.timed_out => "killed at its deadline".to_string(),
            _ if self.abandoned => "abandoned on request (Ctrl-C)".to_string(),
            Some(s) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exited with code {c}"),
                (_, Some(sig)) => format!("killed by signal {sig}"),
                _ => "ended abnormally".into(),
            },
            None => "ended abnormally".into(),
        }
    }
}

/// A running child.
pub struct Supervised {
    child: std::process::Child,
    pgid: i32,
    log: File,
    started: Instant,
    fired: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    abandoned: Arc<AtomicBool>,
    pub report: Option<Report>,
}

/// Creates `path` new, refusing to follow or reuse anything already there.
pub fn create_new(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))
}

/// Opens a file a child wrote, only if it is a regular file of at most `limit` bytes
/// (never through a symlink, never blocking on a FIFO).
pub fn open_untrusted(path: &Path, limit: u64) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("{} is missing or is a symlink", path.display()))?;
    let meta = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?;
    if !meta.file_type().is_file() {
        bail!("{} is not a regular file", path.display());
    }
    if meta.len() > limit {
        bail!("{} holds {} bytes, more than the {limit} allowed", path.display(), meta.len());
    }
    Ok(file)
}

/// Reads a whole untrusted file (see [`open_untrusted`]).
pub fn read_untrusted(path: &Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    open_untrusted(path, limit)?.take(limit).read_to_end(&mut out)?;
    Ok(out)
}

impl Supervised {
    /// Starts the child. `stop`, when set, abandons it.
    pub fn spawn(spec: ChildSpec, stop: Option<Arc<AtomicBool>>) -> Result<Supervised> {
        let log = create_new(&spec.log)?;
        let out = log.try_clone()?;
        let err = log.try_clone()?;
        let mut cmd = Command::new(&spec.program);
        let extra: Vec<(&str, &std::ffi::OsStr)> =
            spec.env.iter().map(|(k, v)| (k.as_str(), v.as_os_str())).collect();
        cmd.args(&spec.args)
            .current_dir(&spec.cwd)
            .env_clear()
            .envs(sandbox::child_env(&extra))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        // Move the sources above every target so dup2 cannot clobber one with another.
        let mut moved: Vec<(RawFd, OwnedFd)> = Vec::new();
        for (target, fd) in spec.fds {
            // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own into a new one.
            let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 64) };
            if high < 0 {
                bail!("cannot duplicate a descriptor for the child: {}", std::io::Error::last_os_error());
            }
            // SAFETY: `high` was just returned to us and is owned by nothing else.
            moved.push((target, unsafe { OwnedFd::from_raw_fd(high) }));
        }
        // The sandbox's hook runs first (hooks run in the order they are added): it uses and
        // closes its ruleset descriptor, which could sit at one of our target numbers.
        let report = spec.policy.as_ref().map(|p| sandbox::apply(&mut cmd, p));
        let raw: Vec<(RawFd, RawFd)> = moved.iter().map(|(t, f)| (*t, f.as_raw_fd())).collect();
        // SAFETY: between fork and exec only async-signal-safe calls: prctl and dup2 on
        // descriptors that exist in the child (inherited from the parent).
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                for &(target, src) in &raw {
                    if libc::dup2(src, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd.spawn().with_context(|| format!("cannot start {}", spec.program.display()))?;
        drop(moved);
        let pgid = child.id() as i32;
        let fired = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let abandoned = Arc::new(AtomicBool::new(false));
        {
            // The watchdog: sleeps, checks the deadline and the stop flag, signals. It never
            // touches a file, so nothing the child does can keep it from firing.
            let (fired, done, abandoned) = (fired.clone(), done.clone(), abandoned.clone());
            let deadline = started + spec.deadline;
            std::thread::Builder::new().name("watchdog".into()).spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let stop_now = stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
                    if Instant::now() >= deadline || stop_now {
                        if stop_now {
                            abandoned.store(true, Ordering::SeqCst);
                        } else {
                            fired.store(true, Ordering::SeqCst);
                        }
                        // SAFETY: signalling the child's own group, which we created.
                        unsafe { libc::kill(-pgid, libc::SIGKILL) };
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
            })?;
        }
        Ok(Supervised { child, pgid, log, started, fired, done, abandoned, report })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `(x%)` progress figure the child printed, read through `ar`'s descriptor.
    pub fn progress(&self) -> Option<f64> {
        let tail = tail_of(&self.log, 4096);
        let at = tail.rfind("step ")?;
        let rest = &tail[at..];
        let open = rest.find('(')?;
        let close = rest.find("%)")?;
        rest.get(open + 1..close)?.trim().parse().ok()
    }

    /// The log's bytes from `offset` to its end (at most the last 64 KiB), and the end.
    pub fn output_since(&self, offset: u64) -> (String, u64) {
        read_since(&self.log, offset)
    }

    /// True once the child has exited (or been killed).
    pub fn try_finished(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for the child, polling `tick` about once a second; then kills and reports
    /// whatever is left of its process group.
    pub fn wait(mut self, tick: &mut dyn FnMut(&Supervised)) -> Result<Ended> {
        let mut last_tick = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().context("cannot wait for the child")? {
                break status;
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                tick(&self);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.done.store(true, Ordering::SeqCst);
        let seconds = self.started.elapsed().as_secs_f64();
        let leaked = reap_group(self.pgid);
        let timed_out = self.fired.load(Ordering::SeqCst);
        let abandoned = self.abandoned.load(Ordering::SeqCst);
        let log = self.log.try_clone()?;
        Ok(Ended {
            log,
            status: (!timed_out && !abandoned).then_some(status),
            timed_out,
            abandoned,
            seconds,
            leaked,
            tail: tail_of(&self.log, TAIL_BYTES),
        })
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        // SAFETY: our own child's group; harmless if it is already gone.
        unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The last `n` bytes of a file, through a descriptor we own (pread never blocks on a
/// regular file, and the child cannot swap the inode behind it).
fn tail_of(file: &File, n: u64) -> String {
    let len = file.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(n);
    let mut buf = vec![0u8; (len - start) as usize];
    let read = file.read_at(&mut buf, start).unwrap_or(0);
    buf.truncate(read);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Bytes of `file` from `offset` (at most the last 64 KiB of it) and where it ends.
fn read_since(file: &File, offset: u64) -> (String, u64) {
    let len = file.metadata().map_or(0, |m| m.len());
    if len <= offset {
        return (String::new(), len);
    }
    let start = offset.max(len.saturating_sub(TAIL_BYTES));
    let mut buf = vec![0u8; (len - start) as usize];
    let read = file.read_at(&mut buf, start).unwrap_or(0);
    buf.truncate(read);
    (String::from_utf8_lossy(&buf).into_owned(), start + read as u64)
}

/// Members of process group `pgid` still alive: `pid command`. Kills the group and waits
/// (up to 2 s) until none is left.
pub fn reap_group(pgid: i32) -> Vec<String> {
    let members = group_members(pgid);
    let leaked: Vec<String> = members.iter().map(|(pid, comm)| format!("{pid} {comm}")).collect();
    // SAFETY: kill(2) on a group we created; ESRCH when it is already empty.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let until = Instant::now() + Duration::from_secs(2);
    while !group_members(pgid).is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    leaked
}

/// `(pid, command)` of every live (non-zombie) process in group `pgid`, from /proc.
fn group_members(pgid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let (Some(state), Some(pgrp)) = (fields.first(), fields.get(2).and_then(|p| p.parse::<i32>().ok()))
        else {
            continue;
        };
        if pgrp == pgid && *state != "Z" && *state != "X" {
            out.push((pid, comm));
        }
    }
    out
}

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("cannot create a pipe: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by nothing else.
    let (r, w) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // Larger pipes mean fewer wake-ups when logits stream through (best effort).
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    Ok((r, w))
}
