//! Slurm from a program: submit, find, poll and cancel batch jobs through Slurm's CLI
//! (`sbatch`, `squeue`, `sacct`, `scancel`), as submitit and SkyPilot do — not through
//! slurmrestd, which needs an admin, JWT and a version-pinned API (the note, §1.13).
//!
//! This module knows nothing of sessions or journals. A job is one command (for `ar`,
//! `ar run-job <run_dir>`) run in a work directory with its output in one file; its name is
//! the caller's (deterministic, e.g. `ar-<tag>-<id>-<attempt>`), and names are what make a
//! submission idempotent: [`Slurm::submit`] looks the name up first and returns the job it
//! finds instead of submitting a second one.
//!
//! Robustness, because a supervisor polls this for hours:
//! - every CLI call has a deadline ([`Slurm::call_timeout`]); a call that passes it is
//!   killed (its whole process group) and counts as "the controller did not answer";
//! - a controller that does not answer (`Unable to contact slurm controller`, socket
//!   timeouts — clients give up after ~9 s on their own) is retried with exponential
//!   backoff up to [`Backoff::give_up_after`], then reported as [`Error::Unreachable`],
//!   which a caller must read as "unknown, ask again later", never as "the job is gone";
//! - anything else the CLI refuses is an immediate [`Error::Command`] with its stderr;
//! - output is parsed strictly: fixed formats split on the ASCII unit separator (0x1f),
//!   which no job name may contain; an unexpected line is an [`Error::Parse`], not a guess.
//!
//! Reading state: `squeue -t all` knows pending, running and recently finished jobs
//! (for `MinJobAge`, 300 s by default); after that only accounting knows: `sacct`, or,
//! on a cluster without a database (the loopback cluster), `sacct -c`, which reads the
//! `jobcomp/filetxt` job-completion log. The fallback is automatic.
//!
//! The batch script is `exec <command>`: the command is the batch step's process itself, so
//! scancel's SIGTERM reaches it directly (a shell in between defers signals until its
//! foreground child returns). Why each sbatch flag is what it is: see [`Slurm::submit`].

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Separates the fields of squeue's and our own formats: no job name we accept contains it.
const SEP: char = '\x1f';

/// The squeue fields we read, in this order (`-O`: the only format with the exit code).
const SQUEUE_FORMAT: &str = "JobID:\x1f,Name:\x1f,State:\x1f,exit_code:\x1f,Reason:\x1f";

/// The sacct fields we read, in this order.
const SACCT_FORMAT: &str = "JobID,JobName,State,ExitCode";

/// How far back a name is looked up in accounting (sacct's default is "since midnight").
const SACCT_WINDOW: &str = "now-30days";

/// Longest job name accepted (Slurm has no small limit; this keeps displays sane).
const MAX_NAME: usize = 200;

/// Environment the sbatch child does not pass on: which devices a job may use is Slurm's
/// decision on the compute node (it sets `CUDA_VISIBLE_DEVICES` for `--gres=gpu:N`), and a
/// value inherited from the login node would pin a job without a GPU request to a device
/// it was never given.
const DEVICE_ENV: &[&str] =
    &["CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL"];

/// What a CLI prints when the controller (or slurmdbd) does not answer: worth a retry.
const TRANSIENT: &[&str] = &[
    "Unable to contact slurm controller",
    "Socket timed out",
    "connect failure",
    "Connection refused",
    "Connection timed out",
    "Zero Bytes were transmitted",
    "Transport endpoint is not connected",
    "temporarily unavailable",
    "temporarily unable",
    "Problem talking to the database",
    "backup controller in standby",
];

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// Exponential backoff for a controller that does not answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Wait before the second attempt; doubled after each failure.
    pub first: Duration,
    /// Longest wait between two attempts.
    pub max: Duration,
    /// No new attempt starts after this long since the first one.
    pub give_up_after: Duration,
}

impl Default for Backoff {
    /// 1, 2, 4, 8, 15, 15 … s for two minutes: a controller restart (seconds) or a
    /// failover (~1 min) is ridden out; a dead controller is reported within ~2.5 min.
    fn default() -> Backoff {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(15),
            give_up_after: Duration::from_secs(120),
        }
    }
}

/// A Slurm cluster, as seen from a login node.
#[derive(Debug, Clone)]
pub struct Slurm {
    /// `SLURM_CONF` for every call; `None` leaves the environment's (or /etc/slurm's).
    pub conf: Option<PathBuf>,
    /// sbatch options for every job: `--partition`, `--gres=gpu:1`, `--time`, `--account` …
    pub extra_args: Vec<String>,
    /// Retries while the controller does not answer.
    pub retry: Backoff,
    /// One CLI call is killed after this long. Above the ~9 s a client itself takes to give
    /// up on an absent controller, so its own, more precise message is usually what we see.
    pub call_timeout: Duration,
}

impl Slurm {
    /// A client for the cluster of `conf` (or of the environment when `None`), with the
    /// default backoff and a 30 s call timeout.
    pub fn new(conf: Option<PathBuf>) -> Slurm {
        Slurm {
            conf,
            extra_args: Vec::new(),
            retry: Backoff::default(),
            call_timeout: Duration::from_secs(30),
        }
    }

    /// A client for the cluster named by `SLURM_CONF` (read once, here).
    pub fn from_env() -> Slurm {
        Slurm::new(std::env::var_os("SLURM_CONF").filter(|v| !v.is_empty()).map(PathBuf::from))
    }
}

// ---------------------------------------------------------------------------------------
// Jobs and their states
// ---------------------------------------------------------------------------------------

/// One batch job to submit.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchJob {
    /// Deterministic and unique per attempt: letters, digits, '-', '_', '.'; not all digits.
    pub name: String,
    /// The job's working directory (absolute; on a filesystem the compute nodes see).
    pub workdir: PathBuf,
    /// Program and arguments, run with `exec` (no shell interpretation of the arguments).
    pub command: Vec<String>,
    /// stdout and stderr of the job, appended to (absolute; taken literally, no `%j`).
    pub output: PathBuf,
    /// sbatch options for this job only, after [`Slurm::extra_args`] (later ones win):
    /// e.g. `--comment=ar:<tag>:<id>` or its own `--time`.
    pub args: Vec<String>,
}

/// A job's state as Slurm names it (squeue `%T`, sacct `State`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Waiting for resources (also CONFIGURING: allocated, nodes not ready).
    Pending,
    Running,
    /// Ended; processes are still being killed or the epilog runs.
    Completing,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    NodeFail,
    BootFail,
    OutOfMemory,
    Preempted,
    /// Anything else (SUSPENDED, REQUEUED, DEADLINE, …), verbatim.
    Other(String),
}

impl State {
    /// Parses squeue's or sacct's state; sacct writes `CANCELLED by 0`, so only the first
    /// word counts, and a `+` (sacct's "more states") is dropped.
    pub fn parse(s: &str) -> State {
        let word = s.split_whitespace().next().unwrap_or("").trim_end_matches('+');
        match word {
            "PENDING" | "CONFIGURING" => State::Pending,
            "RUNNING" => State::Running,
            "COMPLETING" => State::Completing,
            "COMPLETED" => State::Completed,
            "FAILED" => State::Failed,
            "CANCELLED" => State::Cancelled,
            "TIMEOUT" => State::Timeout,
            "NODE_FAIL" => State::NodeFail,
            "BOOT_FAIL" => State::BootFail,
            "OUT_OF_MEMORY" => State::OutOfMemory,
            "PREEMPTED" => State::Preempted,
            other => State::Other(other.to_string()),
        }
    }

    /// The job has ended and will not run again (with `--no-requeue`, nothing requeues it).
    pub fn is_terminal(&self) -> bool {
        match self {
            State::Pending | State::Running | State::Completing => false,
            State::Other(s) => matches!(s.as_str(), "DEADLINE" | "REVOKED"),
            _ => true,
        }
    }
}

/// What Slurm says about one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub job_id: String,
    pub name: String,
    pub state: State,
    /// The batch script's exit code, once the job is terminal (0 for a job that was
    /// signalled; then [`JobState::signal`] says by what).
    pub exit_code: Option<i32>,
    /// The signal that ended the batch script, when Slurm reports one.
    pub signal: Option<i32>,
    /// squeue's reason (`Resources`, `NonZeroExitCode`, …); `None` from accounting.
    pub reason: Option<String>,
}

/// The answer of [`Slurm::submit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// sbatch accepted a new job with this id.
    New(String),
    /// A job of this name already existed (pending, running or finished): nothing was
    /// submitted.
    Existing(JobState),
}

impl Submitted {
    pub fn job_id(&self) -> &str {
        match self {
            Submitted::New(id) => id,
            Submitted::Existing(job) => &job.job_id,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a call failed. Every message names the command and the `SLURM_CONF` used.
#[derive(Debug)]
pub enum Error {
    /// The controller (or accounting database) did not answer, through every retry. The
    /// state of the jobs is unknown; ask again later.
    Unreachable { command: String, conf: String, attempts: u32, waited: Duration, last: String },
    /// The CLI refused the request (bad option, impossible resources, …).
    Command { command: String, conf: String, status: String, stderr: String },
    /// The CLI's output is not in the format asked for.
    Parse { command: String, line: String, why: String },
    /// The CLI cannot be started (not installed, not on PATH).
    Spawn { command: String, source: std::io::Error },
    /// SLURM_CONF names a file that does not exist.
    NoConfig { conf: PathBuf },
    /// A request this client refuses before asking Slurm (bad job name, relative path …).
    Invalid(String),
}

impl Error {
    /// The controller did not answer: the job's state is unknown, not "gone".
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Unreachable { command, conf, attempts, waited, last } => write!(
                f,
                "the Slurm controller did not answer `{command}` ({attempts} attempts over {:.0} s, \
                 SLURM_CONF={conf}): {last} — check that slurmctld runs (`scontrol ping`) and that \
                 SLURM_CONF names this cluster's slurm.conf (for the loopback cluster: \
                 scripts/slurm-up.sh)",
                waited.as_secs_f64()
            ),
            Error::Command { command, conf, status, stderr } => write!(
                f,
                "`{command}` failed ({status}, SLURM_CONF={conf}): {} — {}",
                one_line(stderr),
                if command.starts_with("sbatch") {
                    "check the Slurm options (--slurm-arg) against the cluster's partitions and limits \
                     (`sinfo`, `scontrol show partition`)"
                } else {
                    "run the command by hand with the same SLURM_CONF to see what the cluster says"
                }
            ),
            Error::Parse { command, line, why } => write!(
                f,
                "cannot read the output of `{command}`: {why} in {line:?} — this Slurm's output format \
                 differs from 22.05's; please report it with `{} -V`",
                command.split(' ').next().unwrap_or("squeue")
            ),
            Error::Spawn { command, source } => write!(
                f,
                "cannot run `{command}`: {source} — install Slurm's client commands (Debian: \
                 apt-get install slurm-client) or run ar on a login node"
            ),
            Error::NoConfig { conf } => write!(
                f,
                "SLURM_CONF={} does not exist — point SLURM_CONF at the cluster's slurm.conf \
                 (for the loopback cluster, run scripts/slurm-up.sh and eval what it prints)",
                conf.display()
            ),
            Error::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One attempt's failure: worth another attempt, or final.
enum Attempt {
    Transient { command: String, detail: String },
    Final(Error),
}

impl From<Error> for Attempt {
    fn from(e: Error) -> Attempt {
        Attempt::Final(e)
    }
}

// ---------------------------------------------------------------------------------------
// The calls
// ---------------------------------------------------------------------------------------

impl Slurm {
    /// Submits `job` unless a job of the same name exists, in which case that job is
    /// returned and nothing is submitted: a supervisor that crashed between journaling a
    /// name and hearing sbatch's answer can call this again safely. A retry after sbatch
    /// itself failed or timed out looks the name up again first, so a submission the
    /// controller accepted without our hearing it is not made twice.
    ///
    /// The sbatch flags and why:
    /// - `--parsable`: the answer is `<id>[;<cluster>]`, nothing else;
    /// - `--job-name`: the idempotency key;
    /// - `--chdir`, `--output`, `--open-mode=append`: the job runs in its work directory
    ///   and never truncates an existing log (a human's tail, or an earlier line, survives);
    /// - `--no-requeue`: on a node failure or preemption Slurm would otherwise put the job
    ///   back in the queue and run it again under the same id and name, a second run the
    ///   supervisor never asked for, writing into the same run directory. With it the job
    ///   ends NODE_FAIL/PREEMPTED, and the supervisor decides the retry (a new attempt,
    ///   a new name);
    /// - no `--signal`: at the time limit, as on scancel, Slurm sends SIGTERM to every
    ///   process of the job and SIGKILL after KillWait, and `ar run-job` handles that TERM
    ///   (forwarding it to its process group, which proctrack/pgid would miss). An earlier
    ///   warning signal would buy nothing: the limit is only a backstop above ar's own
    ///   timeout; give `--time` in `extra_args`, e.g. with [`time_limit_arg`];
    /// - no `--kill-on-invalid-dep`: jobs have no dependencies; no `--wait`: it hangs for
    ///   good when the controller dies;
    /// - the environment is sbatch's default (`--export=ALL`, as submitit) minus the
    ///   device-selection variables ([`DEVICE_ENV`]).
    pub fn submit(&self, job: &BatchJob) -> Result<Submitted> {
        validate_name(&job.name)?;
        for (what, path) in [("workdir", &job.workdir), ("output", &job.output)] {
            if !path.is_absolute() {
                return Err(Error::Invalid(format!(
                    "job {}: the {what} {} is relative; give an absolute path on a filesystem the \
                     compute nodes see",
                    job.name,
                    path.display()
                )));
            }
        }
        if job.command.is_empty() {
            return Err(Error::Invalid(format!("job {}: the command is empty", job.name)));
        }
        let script = batch_script(&job.name, &job.command)?;
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", job.name),
            format!("--chdir={}", job.workdir.display()),
            format!("--output={}", job.output.display().to_string().replace('%', "%%")),
            "--open-mode=append".to_string(),
            "--no-requeue".to_string(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args.extend(job.args.iter().cloned());

        self.retrying(|| {
            if let Some(existing) = self.find_once(&job.name)? {
                return Ok(Submitted::Existing(existing));
            }
            let out = self.run_once("sbatch", &args, Some(&script))?;
            let line = out.trim();
            let id = line.split(';').next().unwrap_or("");
            if !is_job_id(id) || line.lines().count() != 1 {
                return Err(Attempt::Final(Error::Parse {
                    command: self.display("sbatch", &args),
                    line: line.to_string(),
                    why: "expected `<job id>[;<cluster>]`".into(),
                }));
            }
            Ok(Submitted::New(id.to_string()))
        })
    }

    /// The job called `name`: the live (or recently ended) one from squeue, else the last
    /// one accounting knows of (30 days back). If several share the name, a live one wins,
    /// then the newest.
    pub fn find(&self, name: &str) -> Result<Option<JobState>> {
        validate_name(name)?;
        self.retrying(|| self.find_once(name))
    }

    /// The job with this id: squeue, else accounting. `None`: squeue has forgotten it (or
    /// never knew it) and accounting has no record of it (or the cluster keeps none).
    pub fn state(&self, job_id: &str) -> Result<Option<JobState>> {
        validate_id(job_id)?;
        self.retrying(|| {
            let args = self.squeue_args(&["-j", job_id]);
            let jobs = match self.run_once("squeue", &args, None) {
                Ok(out) => parse_squeue(&out, &self.display("squeue", &args))?,
                // squeue's answer for an id it has forgotten (after MinJobAge).
                Err(Attempt::Final(Error::Command { stderr, .. }))
                    if stderr.contains("Invalid job id specified") =>
                {
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            if let Some(job) = jobs.into_iter().find(|j| j.job_id == job_id) {
                return Ok(Some(job));
            }
            self.accounting_once(Lookup::Id(job_id))
        })
    }

    /// Every job of this user whose name starts with `prefix`, in one squeue call: the
    /// poll of a supervisor with many jobs in flight. Jobs that squeue has forgotten
    /// (ended more than MinJobAge ago) are not listed: ask [`Slurm::state`] for those.
    pub fn list(&self, prefix: &str) -> Result<Vec<JobState>> {
        self.retrying(|| {
            let args = self.squeue_args(&["--me"]);
            let out = self.run_once("squeue", &args, None)?;
            let mut jobs = parse_squeue(&out, &self.display("squeue", &args))?;
            jobs.retain(|j| j.name.starts_with(prefix));
            Ok(jobs)
        })
    }

    /// What accounting says about a job that has ended: by id when `job` is a job id (all
    /// digits), else by name (the newest of that name). `sacct`, or `sacct -c` (the
    /// job-completion log) on a cluster without an accounting database.
    pub fn finished(&self, job: &str) -> Result<Option<JobState>> {
        let lookup = if is_job_id(job) {
            Lookup::Id(job)
        } else {
            validate_name(job)?;
            Lookup::Name(job)
        };
        self.retrying(|| self.accounting_once(lookup))
    }

    /// scancel: SIGCONT and SIGTERM to every process of the job, SIGKILL after KillWait.
    /// Cancelling a job that has already ended, or that Slurm has forgotten, is not an
    /// error (scancel itself says nothing then).
    pub fn cancel(&self, job_id: &str) -> Result<()> {
        validate_id(job_id)?;
        let args = vec![job_id.to_string()];
        self.retrying(|| match self.run_once("scancel", &args, None) {
            Ok(_) => Ok(()),
            Err(Attempt::Final(Error::Command { stderr, .. }))
                if stderr.contains("Invalid job id specified")
                    || stderr.contains("already completing or completed") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        })
    }

    // -- internals ----------------------------------------------------------------------

    fn squeue_args(&self, filter: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["-h", "-t", "all", "-O", SQUEUE_FORMAT].map(String::from).to_vec();
        args.extend(filter.iter().map(|s| s.to_string()));
        args
    }

    /// One lookup by name, squeue then accounting, without retries.
    fn find_once(&self, name: &str) -> std::result::Result<Option<JobState>, Attempt> {
        let args = self.squeue_args(&["--me", &format!("--name={name}")]);
        let out = self.run_once("squeue", &args, None)?;
        let jobs = parse_squeue(&out, &self.display("squeue", &args))?;
        if let Some(job) = pick(jobs.into_iter().filter(|j| j.name == name)) {
            return Ok(Some(job));
        }
        self.accounting_once(Lookup::Name(name))
    }

    /// sacct, and `sacct -c` when the cluster has no accounting database.
    fn accounting_once(&self, lookup: Lookup) -> std::result::Result<Option<JobState>, Attempt> {
        let mut args: Vec<String> =
            ["--parsable2", "--noheader", "--allocations", &format!("--format={SACCT_FORMAT}")]
                .map(String::from)
                .to_vec();
        match lookup {
            Lookup::Id(id) => args.push(format!("--jobs={id}")),
            Lookup::Name(name) => {
                args.push(format!("--name={name}"));
                args.push(format!("--starttime={SACCT_WINDOW}"));
            }
        }
        let out = match self.run_once("sacct", &args, None) {
            Ok(out) => out,
            Err(Attempt::Final(Error::Command { stderr, .. }))
                if stderr.contains("accounting storage is disabled") =>
            {
                args.insert(0, "--completion".to_string());
                match self.run_once("sacct", &args, None) {
                    Ok(out) => out,
                    // No database and no completion log (jobcomp/none): only squeue knows
                    // anything, and it did not know this job.
                    Err(Attempt::Final(Error::Command { stderr, .. }))
                        if stderr.contains("job completion is disabled") =>
                    {
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let jobs = parse_sacct(&out, &self.display("sacct", &args))?;
        // Filter here too: `sacct -c` ignores --name (measured, 22.05).
        Ok(pick(jobs.into_iter().filter(|j| match lookup {
            Lookup::Id(id) => j.job_id == id,
            Lookup::Name(name) => j.name == name,
        })))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the backoff gives up.
    fn retrying<T>(&self, mut attempt: impl FnMut() -> std::result::Result<T, Attempt>) -> Result<T> {
        let start = Instant::now();
        let mut delay = self.retry.first;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match attempt() {
                Ok(v) => return Ok(v),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Transient { command, detail }) => {
                    if start.elapsed() + delay > self.retry.give_up_after {
                        return Err(Error::Unreachable {
                            command,
                            conf: self.conf_display(),
                            attempts,
                            waited: start.elapsed(),
                            last: detail,
                        });
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.retry.max);
                }
            }
        }
    }

    /// One CLI call with a deadline. stdout on success; a transient failure when the
    /// controller did not answer or the deadline passed; else the CLI's refusal.
    fn run_once(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> std::result::Result<String, Attempt> {
        let command = self.display(program, args);
        if let Some(conf) = &self.conf
            && !conf.exists()
        {
            return Err(Error::NoConfig { conf: conf.clone() }.into());
        }
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a call past its deadline is killed with whatever it started.
            .process_group(0);
        if let Some(conf) = &self.conf {
            cmd.env("SLURM_CONF", conf);
        }
        if program == "sbatch" {
            for var in DEVICE_ENV {
                cmd.env_remove(var);
            }
        }
        let mut child = cmd.spawn().map_err(|source| Error::Spawn { command: command.clone(), source })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A script is a few hundred bytes: it fits the pipe, so this cannot block.
            let _ = pipe.write_all(text.as_bytes());
        }
        let stdout = read_in_thread(child.stdout.take());
        let stderr = read_in_thread(child.stderr.take());
        let deadline = Instant::now() + self.call_timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    // SAFETY: kill(2) on our child's process group; no memory involved.
                    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(Error::Spawn { command, source: e }.into()),
            }
        };
        let out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        let Some(status) = status else {
            return Err(Attempt::Transient {
                command,
                detail: format!("no answer within {} s (killed)", self.call_timeout.as_secs()),
            });
        };
        if status.success() {
            return Ok(out);
        }
        if TRANSIENT.iter().any(|t| err.contains(t)) {
            return Err(Attempt::Transient { command, detail: one_line(&err) });
        }
        let status = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => status.to_string(),
        };
        Err(Error::Command { command, conf: self.conf_display(), status, stderr: err }.into())
    }

    fn conf_display(&self) -> String {
        match &self.conf {
            Some(p) => p.display().to_string(),
            None => match std::env::var("SLURM_CONF") {
                Ok(v) if !v.is_empty() => v,
                _ => "(unset: /etc/slurm/slurm.conf or DNS SRV)".to_string(),
            },
        }
    }

    /// The command as a human would type it (the separator shown as `\x1f`).
    fn display(&self, program: &str, args: &[String]) -> String {
        let mut s = program.to_string();
        for a in args {
            s.push(' ');
            let a = a.replace(SEP, "\\x1f");
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
                s.push_str(&shell_quote(&a));
            } else {
                s.push_str(&a);
            }
        }
        s
    }
}

#[derive(Clone, Copy)]
enum Lookup<'a> {
    Id(&'a str),
    Name(&'a str),
}

/// sbatch's `--time` for a limit: whole minutes, rounded up (Slurm rounds up anyway, and
/// checks limits only every ~30 s, so a job may run up to ~30 s past it).
pub fn time_limit_arg(limit: Duration) -> String {
    let minutes = limit.as_secs().div_ceil(60).max(1);
    format!("--time={minutes}")
}

// ---------------------------------------------------------------------------------------
// Parsing and quoting (pure)
// ---------------------------------------------------------------------------------------

/// Names we accept: they are squeue filters (comma-separated), output fields (0x1f) and
/// ids' look-alikes (all digits), so only these characters, and never only digits.
fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !name.chars().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "job name {name:?}: use 1–{MAX_NAME} letters, digits, '-', '_' or '.', not only digits \
             (e.g. ar-<tag>-<id>-<attempt>)"
        )))
    }
}

fn is_job_id(s: &str) -> bool {
    // 123, or an array task 123_4.
    let mut parts = s.splitn(2, '_');
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    parts.next().is_some_and(digits) && parts.next().is_none_or(digits)
}

fn validate_id(id: &str) -> Result<()> {
    if is_job_id(id) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{id:?} is not a Slurm job id (digits, or <id>_<task>)")))
    }
}

/// `#!/bin/sh` + `exec` with every argument single-quoted.
fn batch_script(name: &str, command: &[String]) -> Result<String> {
    if command.iter().any(|a| a.contains('\0')) {
        return Err(Error::Invalid(format!("job {name}: an argument contains a NUL byte")));
    }
    let words: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
    Ok(format!(
        "#!/bin/sh\n# {name}: submitted by ar (autoresearch-rs). `exec`, so that scancel's SIGTERM\n\
         # reaches the command itself rather than a shell that would defer it.\nexec {}\n",
        words.join(" ")
    ))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `code:signal` (sacct, scontrol) or a raw wait status (squeue -O exit_code in 22.05:
/// exit 7 prints 1792, SIGTERM prints 15). Returns (exit code, signal).
fn parse_exit(s: &str) -> Option<(i32, Option<i32>)> {
    let s = s.trim();
    if let Some((code, sig)) = s.split_once(':') {
        let code = code.parse().ok()?;
        let sig: i32 = sig.parse().ok()?;
        return Some((code, (sig != 0).then_some(sig)));
    }
    let status: i32 = s.parse().ok()?;
    let sig = status & 0x7f;
    Some(if sig == 0 { ((status >> 8) & 0xff, None) } else { (0, Some(sig)) })
}

/// Lines of `squeue -h -O` with [`SQUEUE_FORMAT`]: five fields, each followed by 0x1f.
fn parse_squeue(out: &str, command: &str) -> std::result::Result<Vec<JobState>, Attempt> {
    let mut jobs = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let bad = |why: &str| Error::Parse {
            command: command.to_string(),
            line: line.to_string(),
            why: why.into(),
        };
        let fields: Vec<&str> = line.split(SEP).map(str::trim).collect();
        // Five fields and the empty rest after the last separator.
        if fields.len() != 6 || !fields[5].is_empty() {
            return Err(bad("expected 5 fields separated by 0x1f").into());
        }
        if !is_job_id(fields[0]) {
            return Err(bad("the first field is not a job id").into());
        }
        let state = State::parse(fields[2]);
        let exit = if state.is_terminal() {
            Some(parse_exit(fields[3]).ok_or_else(|| bad("the exit code is not a number"))?)
        } else {
            None
        };
        jobs.push(JobState {
            job_id: fields[0].to_string(),
            name: fields[1].to_string(),
            state,
            exit_code: exit.map(|e| e.0),
            signal: exit.and_then(|e| e.1),
            reason: Some(fields[4].to_string()).filter(|r| !r.is_empty() && r != "None"),
        });
    }
    Ok(jobs)
}

/// Lines of `sacct --parsable2 --noheader` with [`SACCT_FORMAT`]; steps (`12.batch`) are
/// skipped, though `--allocations` should already leave them out.
fn parse_sacct(out: &str, command: &str) -> std::result::Result<Vec<JobState>, Attempt> {
    let mut jobs = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let bad = |why: &str| Error::Parse {
            command: command.to_string(),
            line: line.to_string(),
            why: why.into(),
        };
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != 4 {
            return Err(bad("expected 4 fields separated by '|'").into());
        }
        if fields[0].contains('.') {
            continue;
        }
        if !is_job_id(fields[0]) {
            return Err(bad("the first field is not a job id").into());
        }
        let state = State::parse(fields[2]);
        let exit = if state.is_terminal() { parse_exit(fields[3]) } else { None };
        jobs.push(JobState {
            job_id: fields[0].to_string(),
            name: fields[1].to_string(),
            state,
            exit_code: exit.map(|e| e.0),
            signal: exit.and_then(|e| e.1),
            reason: None,
        });
    }
    Ok(jobs)
}

/// Of several jobs with one name: a live one, else the newest (highest id).
fn pick(jobs: impl Iterator<Item = JobState>) -> Option<JobState> {
    let key = |j: &JobState| {
        let id: u64 = j.job_id.split('_').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (!j.state.is_terminal(), id)
    };
    jobs.max_by_key(key)
}

fn read_in_thread(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.is_empty() { "(no message)".to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_parse_reads_sacct_suffixes_and_keeps_unknown_states() {
        assert_eq!(State::parse("CANCELLED by 0"), State::Cancelled);
        assert_eq!(State::parse("NODE_FAIL"), State::NodeFail);
        assert_eq!(State::parse("CONFIGURING"), State::Pending);
        assert_eq!(State::parse("REQUEUED+"), State::Other("REQUEUED".into()));
        assert!(!State::parse("COMPLETING").is_terminal());
        assert!(State::parse("TIMEOUT").is_terminal());
        assert!(!State::parse("SUSPENDED").is_terminal());
    }

    #[test]
    fn exit_codes_decode_both_colon_pairs_and_raw_wait_statuses() {
        assert_eq!(parse_exit("7:0"), Some((7, None)));
        assert_eq!(parse_exit("0:9"), Some((0, Some(9))));
        assert_eq!(parse_exit("1792"), Some((7, None)));
        assert_eq!(parse_exit("15"), Some((0, Some(15))));
        assert_eq!(parse_exit("0"), Some((0, None)));
        assert_eq!(parse_exit("x"), None);
    }

    #[test]
    fn squeue_lines_parse_strictly() {
        let out = "12\x1far-t-1-0\x1fFAILED\x1f1792\x1fNonZeroExitCode\x1f\n\
                   13\x1far-t-2-0\x1fRUNNING\x1f0\x1fNone\x1f\n";
        let jobs = parse_squeue(out, "squeue").ok().unwrap();
        assert_eq!(jobs[0].state, State::Failed);
        assert_eq!(jobs[0].exit_code, Some(7));
        assert_eq!(jobs[0].reason.as_deref(), Some("NonZeroExitCode"));
        assert_eq!(jobs[1].exit_code, None);
        assert_eq!(jobs[1].reason, None);
        assert!(parse_squeue("12 ar-t-1-0 FAILED 1792 None\n", "squeue").is_err());
        assert!(parse_squeue("CLUSTER: x\n", "squeue").is_err());
    }

    #[test]
    fn sacct_lines_skip_steps_and_read_code_signal() {
        let out = "28|ar-exp-42|FAILED|3:0\n28.batch|batch|FAILED|3:0\n29|ar-x|CANCELLED by 0|0:15\n";
        let jobs = parse_sacct(out, "sacct").ok().unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!((jobs[0].exit_code, jobs[0].signal), (Some(3), None));
        assert_eq!((jobs[1].state.clone(), jobs[1].signal), (State::Cancelled, Some(15)));
        assert!(parse_sacct("28|x|FAILED\n", "sacct").is_err());
    }

    #[test]
    fn pick_prefers_a_live_job_then_the_newest() {
        let job = |id: &str, state| JobState {
            job_id: id.into(),
            name: "n".into(),
            state,
            exit_code: None,
            signal: None,
            reason: None,
        };
        let live =
            pick([job("9", State::Completed), job("5", State::Running), job("7", State::Failed)].into_iter());
        assert_eq!(live.unwrap().job_id, "5");
        let newest = pick([job("9", State::Completed), job("10", State::Failed)].into_iter());
        assert_eq!(newest.unwrap().job_id, "10");
    }

    #[test]
    fn job_names_reject_separators_and_digit_only_names() {
        assert!(validate_name("ar-mar5-12-0").is_ok());
        for bad in ["", "a,b", "a b", "a\x1fb", "123", "ä"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(is_job_id("12") && is_job_id("12_3") && !is_job_id("12_") && !is_job_id("x"));
    }

    #[test]
    fn batch_script_execs_the_command_with_every_argument_quoted() {
        let s =
            batch_script("ar-t-1", &["/bin/ar".into(), "run-job".into(), "/runs/it's here".into()]).unwrap();
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.ends_with("exec '/bin/ar' 'run-job' '/runs/it'\\''s here'\n"), "{s}");
    }

    #[test]
    fn time_limit_rounds_up_to_whole_minutes() {
        assert_eq!(time_limit_arg(Duration::from_secs(1)), "--time=1");
        assert_eq!(time_limit_arg(Duration::from_secs(60)), "--time=1");
        assert_eq!(time_limit_arg(Duration::from_secs(420)), "--time=7");
        assert_eq!(time_limit_arg(Duration::from_secs(421)), "--time=8");
    }
}
