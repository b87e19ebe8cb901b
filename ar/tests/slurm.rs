//! The Slurm client (`ar::scheduler::slurm`) against a real cluster: the loopback one that
//! scripts/slurm-up.sh starts (one node on 127.0.0.1, two fake GPUs, KillWait=5).
//!
//! Every test submits tiny shell jobs (sleep, echo, exit N), never training, and checks
//! what Slurm reports back: states, exit codes, CUDA_VISIBLE_DEVICES, idempotent
//! resubmission, cancellation, the time-limit backstop, and a controller that goes away
//! and comes back. Job names carry the test process's start time and PID, so a rerun never
//! finds an earlier run's jobs by name.
//!
//! Without a cluster (SLURM_CONF unset, or nobody answering) every test prints a SKIPPED
//! line on stderr (not captured) and passes: `cargo test` on a machine without Slurm stays
//! green. CI starts the cluster first and sets AR_REQUIRE_SLURM=1, which turns a missing
//! cluster into a failure (scripts/test.sh):
//!
//! ```sh
//! eval "$(scripts/slurm-up.sh)"      # as root; installs Slurm from Debian when missing
//! AR_REQUIRE_SLURM=1 cargo test --release --locked --workspace --test slurm
//! scripts/slurm-down.sh
//! ```
//! The whole file takes ~80-90 s, set by the time-limit test (Slurm's limits are whole
//! minutes and checked every ~30 s); the other tests run beside it on the second thread.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ar::scheduler::slurm::{Backoff, BatchJob, JobState, Slurm, State, Submitted};

// ---------------------------------------------------------------------------------------
// The cluster, or a loud skip
// ---------------------------------------------------------------------------------------

/// SLURM_CONF, once checked: the cluster answered `sinfo` before any test stopped anything.
fn cluster_conf() -> Result<PathBuf, String> {
    static UP: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    UP.get_or_init(|| {
        let conf = std::env::var_os("SLURM_CONF")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .ok_or("SLURM_CONF is unset (start a cluster: eval \"$(scripts/slurm-up.sh)\")")?;
        if !conf.exists() {
            return Err(format!("SLURM_CONF={} does not exist", conf.display()));
        }
        let out = Command::new("timeout")
            .args(["15", "sinfo", "-h", "-o", "%T"])
            .env("SLURM_CONF", &conf)
            .output()
            .map_err(|e| format!("cannot run sinfo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the cluster of SLURM_CONF={} does not answer: {}",
                conf.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(conf)
    })
    .clone()
}

/// One line straight to the process's stderr, in one write: libtest captures only
/// print!/eprint!, and a single write keeps the line whole between libtest's own output.
fn say(line: String) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// A client for the test cluster, or `None` after printing why the test is skipped.
fn cluster(test: &str) -> Option<Slurm> {
    match cluster_conf() {
        Ok(conf) => {
            let mut slurm = Slurm::new(Some(conf));
            // Short steps, a bound well past a controller restart (~1 s) and the ~9 s a
            // client takes to give up on an absent controller.
            slurm.retry = Backoff {
                first: Duration::from_millis(500),
                max: Duration::from_secs(2),
                give_up_after: Duration::from_secs(90),
            };
            slurm.call_timeout = Duration::from_secs(20);
            Some(slurm)
        }
        // CI sets AR_REQUIRE_SLURM=1 after starting the cluster: there, no cluster is a failure.
        Err(why) if std::env::var("AR_REQUIRE_SLURM").is_ok_and(|v| v == "1") => {
            panic!("{test}: AR_REQUIRE_SLURM=1 but {why}")
        }
        Err(why) => {
            say(format!("SKIPPED {test}: {why}"));
            None
        }
    }
}

/// A name no earlier run of this file used.
fn name(what: &str) -> String {
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        format!("ar-test-{secs}-{}", std::process::id())
    });
    format!("{run}-{what}")
}

/// A job running `sh -c script` in `dir`, output in `dir/<name>.out`.
fn shell_job(name: &str, dir: &Path, script: &str, args: &[&str]) -> BatchJob {
    BatchJob {
        name: name.to_string(),
        workdir: dir.to_path_buf(),
        command: vec!["/bin/sh".into(), "-c".into(), script.into(), "sh".into()],
        output: dir.join(format!("{name}.out")),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

fn submit_new(slurm: &Slurm, job: &BatchJob) -> String {
    match slurm.submit(job).unwrap() {
        Submitted::New(id) => id,
        Submitted::Existing(old) => panic!("{} already existed: {old:?}", job.name),
    }
}

/// Polls squeue (then accounting) until the job is terminal.
fn wait_terminal(slurm: &Slurm, id: &str, limit: Duration) -> JobState {
    let start = Instant::now();
    loop {
        let job = slurm.state(id).unwrap().unwrap_or_else(|| panic!("Slurm does not know job {id}"));
        if job.state.is_terminal() {
            return job;
        }
        assert!(start.elapsed() < limit, "job {id} still {:?} after {limit:?}", job.state);
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_running(slurm: &Slurm, id: &str) {
    let start = Instant::now();
    loop {
        let job = slurm.state(id).unwrap().unwrap();
        match job.state {
            State::Running => return,
            State::Pending => {}
            other => panic!("job {id} became {other:?} before it ran"),
        }
        assert!(start.elapsed() < Duration::from_secs(30), "job {id} still pending after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_file(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < limit, "{} did not appear within {limit:?}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

/// Two `--gres=gpu:1` jobs run at the same time (each waits until both have started), get
/// different fake GPUs, and their different exit codes come back.
#[test]
fn two_gpu_jobs_run_at_once_each_with_its_own_device_and_exit_code() {
    let Some(slurm) = cluster("two_gpu_jobs_run_at_once_each_with_its_own_device_and_exit_code") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // $1: this job's label, $2: its exit code. Records CVD and its start time, then waits
    // (up to 30 s) for the other job to start too: both finish only if they overlapped.
    let script = r#"echo "$CUDA_VISIBLE_DEVICES" > cvd-$1; date +%s%N > started-$1
        i=0; while [ "$(ls started-* | wc -l)" -lt 2 ]; do
          i=$((i+1)); [ $i -gt 300 ] && { echo alone; exit 99; }; sleep 0.1; done
        echo done; exit $2"#;
    let mut jobs = Vec::new();
    for (label, code) in [("a", "0"), ("b", "5")] {
        let mut job = shell_job(&name(&format!("gpu-{label}")), dir.path(), script, &["--gres=gpu:1"]);
        job.command.extend([label.to_string(), code.to_string()]);
        let submitted = now_ns();
        jobs.push((label, submit_new(&slurm, &job), submitted));
    }
    // One squeue call lists both, as a supervisor polls all of its jobs at once.
    let listed = slurm.list(&name("gpu-")).unwrap();
    let mut listed_ids: Vec<&str> = listed.iter().map(|j| j.job_id.as_str()).collect();
    listed_ids.sort();
    let mut ids = vec![jobs[0].1.as_str(), jobs[1].1.as_str()];
    ids.sort();
    assert_eq!(listed_ids, ids, "{listed:?}");
    let a = wait_terminal(&slurm, &jobs[0].1, Duration::from_secs(60));
    let b = wait_terminal(&slurm, &jobs[1].1, Duration::from_secs(60));
    assert_eq!((a.state.clone(), a.exit_code), (State::Completed, Some(0)), "{a:?}");
    assert_eq!((b.state.clone(), b.exit_code), (State::Failed, Some(5)), "{b:?}");
    let cvd_a = read(&dir.path().join("cvd-a")).trim().to_string();
    let cvd_b = read(&dir.path().join("cvd-b")).trim().to_string();
    let mut both = [cvd_a.clone(), cvd_b.clone()];
    both.sort();
    assert_eq!(both, ["0", "1"], "CUDA_VISIBLE_DEVICES a={cvd_a:?} b={cvd_b:?}");
    for (label, _, submitted) in &jobs {
        let started: u128 = read(&dir.path().join(format!("started-{label}"))).trim().parse().unwrap();
        let ms = started.saturating_sub(*submitted) / 1_000_000;
        say(format!("slurm: submit-to-start latency of job {label}: {ms} ms"));
    }
}

/// A second submit of a name that exists — running, then finished — returns that job and
/// submits nothing; `find` sees it; a name never used is not found.
#[test]
fn submitting_a_name_twice_returns_the_existing_job() {
    let Some(slurm) = cluster("submitting_a_name_twice_returns_the_existing_job") else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = shell_job(&name("twice"), dir.path(), "echo ran >> runs; sleep 2", &[]);
    let id = submit_new(&slurm, &job);
    match slurm.submit(&job).unwrap() {
        Submitted::Existing(j) => assert_eq!(j.job_id, id),
        Submitted::New(other) => panic!("submitted again as {other}"),
    }
    assert_eq!(slurm.find(&job.name).unwrap().map(|j| j.job_id), Some(id.clone()));
    let done = wait_terminal(&slurm, &id, Duration::from_secs(60));
    assert_eq!(done.state, State::Completed);
    let again = slurm.submit(&job).unwrap();
    assert_eq!(again.job_id(), id, "a finished job's name was submitted again");
    assert!(matches!(again, Submitted::Existing(JobState { state: State::Completed, .. })));
    assert_eq!(read(&dir.path().join("runs")), "ran\n", "the job ran more than once");
    assert_eq!(slurm.find(&name("never-submitted")).unwrap(), None);
}

/// `scancel` from outside (a user, an admin) and [`Slurm::cancel`] both end a running job
/// as Cancelled; the job's own process gets SIGTERM first (what `ar run-job` relies on to
/// write its outcome); cancelling an ended job is not an error.
#[test]
fn scancel_from_outside_and_cancel_both_end_a_job_cancelled_after_sigterm() {
    let Some(slurm) = cluster("scancel_from_outside_and_cancel_both_end_a_job_cancelled_after_sigterm")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Background sleep + wait: a shell runs a trap only between foreground commands.
    let script = r#"trap 'echo TERM > term-$1; exit 143' TERM; touch up-$1; sleep 300 & wait"#;
    let mut ids = Vec::new();
    for label in ["outside", "api"] {
        let mut job = shell_job(&name(&format!("cancel-{label}")), dir.path(), script, &[]);
        job.command.push(label.to_string());
        ids.push(submit_new(&slurm, &job));
    }
    for (id, label) in ids.iter().zip(["outside", "api"]) {
        wait_running(&slurm, id);
        wait_file(&dir.path().join(format!("up-{label}")), Duration::from_secs(30));
    }
    let out = Command::new("scancel")
        .arg(&ids[0])
        .env("SLURM_CONF", slurm.conf.as_ref().unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "scancel: {}", String::from_utf8_lossy(&out.stderr));
    slurm.cancel(&ids[1]).unwrap();
    for (id, label) in ids.iter().zip(["outside", "api"]) {
        let job = wait_terminal(&slurm, id, Duration::from_secs(30));
        assert_eq!(job.state, State::Cancelled, "{job:?}");
        wait_file(&dir.path().join(format!("term-{label}")), Duration::from_secs(5));
        assert_eq!(read(&dir.path().join(format!("term-{label}"))), "TERM\n");
    }
    slurm.cancel(&ids[0]).expect("cancelling an ended job");
}

/// A job that exits 7 is Failed with exit code 7 in squeue and in accounting (`sacct -c`
/// on this cluster), by id and by name.
#[test]
fn a_failing_job_reports_its_exit_code_in_squeue_and_accounting() {
    let Some(slurm) = cluster("a_failing_job_reports_its_exit_code_in_squeue_and_accounting") else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = shell_job(&name("exit7"), dir.path(), "echo failing; exit 7", &[]);
    let id = submit_new(&slurm, &job);
    let live = wait_terminal(&slurm, &id, Duration::from_secs(60));
    assert_eq!((live.state.clone(), live.exit_code, live.signal), (State::Failed, Some(7), None), "{live:?}");
    assert_eq!(live.reason.as_deref(), Some("NonZeroExitCode"));
    // The job-completion log is written as the job ends; allow it a moment.
    let start = Instant::now();
    let by_id = loop {
        if let Some(j) = slurm.finished(&id).unwrap() {
            break j;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "accounting never listed job {id}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((by_id.state.clone(), by_id.exit_code), (State::Failed, Some(7)), "{by_id:?}");
    let by_name = slurm.finished(&job.name).unwrap().expect("accounting by name");
    assert_eq!(by_name.job_id, id);
    assert_eq!(read(&job.output), "failing\n");
}

/// `--time=1` on a job that sleeps 5 minutes: Slurm sends it SIGTERM and ends it as
/// Timeout, 60-90 s after it started (limits are whole minutes, checked every ~30 s).
#[test]
fn a_job_past_its_time_limit_ends_timeout() {
    let Some(slurm) = cluster("a_job_past_its_time_limit_ends_timeout") else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = "trap 'echo TERM > term; exit 143' TERM; sleep 300 & wait";
    let job = shell_job(&name("timeout"), dir.path(), script, &["--time=1"]);
    let id = submit_new(&slurm, &job);
    wait_running(&slurm, &id);
    let started = Instant::now();
    let job_state = wait_terminal(&slurm, &id, Duration::from_secs(150));
    let after = started.elapsed();
    assert_eq!(job_state.state, State::Timeout, "{job_state:?}");
    assert!(after >= Duration::from_secs(55), "ended {after:?} after it started, before its 1-minute limit");
    say(format!("slurm: time limit 60 s, job ended TIMEOUT after {:.0} s", after.as_secs_f64()));
    assert!(read(&job.output).contains("DUE TO TIME LIMIT"), "{}", read(&job.output));
    // At the limit the job gets SIGTERM first, as on scancel: `ar run-job` can still write
    // its outcome before SIGKILL.
    assert_eq!(read(&dir.path().join("term")), "TERM\n");
}

/// slurmctld stopped (SIGTERM by PID) while a job runs: `find` keeps retrying instead of
/// failing, and answers once the controller is back (restarted by slurm-up.sh, which
/// starts only the missing daemon); the job keeps running through it and its exit code
/// comes back. Runs only on a cluster slurm-up.sh made: it would not stop anyone else's.
#[test]
fn find_rides_out_a_controller_restart_and_the_running_job_survives() {
    let test = "find_rides_out_a_controller_restart_and_the_running_job_survives";
    let Some(slurm) = cluster(test) else { return };
    let conf = slurm.conf.clone().unwrap();
    let cluster_dir = conf.parent().unwrap().to_path_buf();
    if !read(&conf).starts_with("# Written by scripts/slurm-up.sh") {
        say(format!("SKIPPED {test}: {} is not a slurm-up.sh cluster", conf.display()));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Ends well after the restart, so its completion reaches the new controller at once
    // (one that ends while the controller is down is reported up to ~15 s late).
    let job = shell_job(&name("survivor"), dir.path(), "touch up; sleep 20; echo survived; exit 4", &[]);
    let id = submit_new(&slurm, &job);
    wait_running(&slurm, &id);
    wait_file(&dir.path().join("up"), Duration::from_secs(30));

    let pid: i32 = read(&cluster_dir.join("slurmctld.pid")).trim().parse().unwrap();
    // From here on the controller comes back even if an assertion fails: the other tests,
    // and the next run, need it.
    let _restart = Restart(cluster_dir.clone());
    let stopped = Instant::now();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "kill slurmctld {pid}");
    while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        assert!(stopped.elapsed() < Duration::from_secs(20), "slurmctld {pid} did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each attempt is cut at 3 s, and the controller stays away for 7 s: a find that
    // answers after more than 3 s has been through the retry loop.
    let mut patient = slurm.clone();
    patient.call_timeout = Duration::from_secs(3);
    let finder = {
        let name = job.name.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            (patient.find(&name), t.elapsed())
        })
    };
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        !finder.is_finished(),
        "find returned while the controller was down: {:?}",
        finder.join().unwrap()
    );
    let up = slurm_up(&cluster_dir);
    assert!(up.status.success(), "slurm-up.sh: {}", String::from_utf8_lossy(&up.stderr));
    let down_for = stopped.elapsed();
    let (found, waited) = finder.join().unwrap();
    let found = found.expect("find after the restart").expect("the job after the restart");
    assert_eq!((found.job_id.as_str(), &found.state), (id.as_str(), &State::Running), "{found:?}");
    assert!(waited > Duration::from_secs(3), "find answered in {waited:?}, within one attempt");
    say(format!(
        "slurm: controller down {:.1} s (until slurm-up.sh returned); find answered after {:.1} s",
        down_for.as_secs_f64(),
        waited.as_secs_f64()
    ));
    let done = wait_terminal(&slurm, &id, Duration::from_secs(60));
    assert_eq!(
        (done.state.clone(), done.exit_code),
        (State::Failed, Some(4)),
        "the job did not survive: {done:?}"
    );
    assert_eq!(read(&job.output), "survived\n");
}

/// scripts/slurm-up.sh DIR: starts whichever daemon of the cluster is not running.
fn slurm_up(dir: &Path) -> std::process::Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/slurm-up.sh")).arg(dir).output().unwrap()
}

/// Restarts the cluster's missing daemons when dropped (a no-op when all run).
struct Restart(PathBuf);

impl Drop for Restart {
    fn drop(&mut self) {
        let up = slurm_up(&self.0);
        if !up.status.success() {
            say(format!("slurm-up.sh {} failed: {}", self.0.display(), String::from_utf8_lossy(&up.stderr)));
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(true)
}

/// A controller nobody runs (the test cluster's config on an unused port): the call is
/// cut at its timeout, retried until the bound, and the error says it is unreachable and
/// names the command and the SLURM_CONF.
#[test]
fn an_absent_controller_is_unreachable_and_named_in_the_error() {
    let Some(slurm) = cluster("an_absent_controller_is_unreachable_and_named_in_the_error") else { return };
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("slurm.conf");
    let text: String = read(slurm.conf.as_ref().unwrap())
        .lines()
        .filter(|l| !l.starts_with("SlurmctldPort="))
        .map(|l| format!("{l}\n"))
        .collect();
    // 1: tcpmux, privileged and unused; nothing answers there.
    std::fs::write(&conf, format!("{text}SlurmctldPort=1\n")).unwrap();
    let mut absent = Slurm::new(Some(conf.clone()));
    absent.call_timeout = Duration::from_secs(2);
    absent.retry = Backoff {
        first: Duration::from_millis(200),
        max: Duration::from_millis(400),
        give_up_after: Duration::from_secs(3),
    };
    let start = Instant::now();
    let err = absent.find(&name("nowhere")).unwrap_err();
    let took = start.elapsed();
    assert!(err.is_unreachable(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("squeue") && msg.contains(&conf.display().to_string()), "{msg}");
    assert!(took < Duration::from_secs(12), "gave up only after {took:?}");
}

/// A request Slurm refuses (three GPUs on a two-GPU node) fails at once, naming sbatch,
/// and is not retried as if the controller were down.
#[test]
fn an_impossible_request_fails_at_once_naming_sbatch() {
    let Some(slurm) = cluster("an_impossible_request_fails_at_once_naming_sbatch") else { return };
    let dir = tempfile::tempdir().unwrap();
    let job = shell_job(&name("three-gpus"), dir.path(), "true", &["--gres=gpu:3"]);
    let start = Instant::now();
    let err = slurm.submit(&job).unwrap_err();
    assert!(!err.is_unreachable(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("sbatch") && msg.contains("--gres=gpu:3"), "{msg}");
    assert!(msg.contains("Requested node configuration is not available"), "{msg}");
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}
