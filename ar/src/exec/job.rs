//! One measurement, the unit of work that runs anywhere: train the built binary in a
//! fresh run directory, then score the model it left, and write the outcome.
//!
//! A run directory (`.autoresearch/<tag>/runs/<id>.<attempt>/`) is created new for every
//! attempt — a resumed run never reuses a directory a child could have written — and holds:
//! ```text
//! spec.json      what to run (written by ar before anything starts)
//! train.log      the training child's stdout+stderr (created by ar, read through ar's fd)
//! serve.log      the serving children's output
//! work/          the ONLY place the training child may write: its cwd, TMPDIR, its
//!                checkpoint (model.ckpt) and statistics (stats.json)
//! outcome.json   the result (written by ar after both phases)
//! ```
//! Phase 1, training: the binary runs confined — it may write `work/` only, read its own
//! binary, the system libraries, the train shards and the tokenizer, and nothing else of
//! the cache or of `.autoresearch/`; no sockets, no setsid, no chmod; a cleared
//! environment. Under a time budget it is killed at budget + the profile's start-up
//! allowance (`overtime`): `ar` times training itself.
//!
//! Phase 2, scoring: the checkpoint is copied into a sealed in-memory file (nothing can
//! change it afterwards) and the same binary is started again with `AR_SERVE`, confined
//! harder — no writes anywhere, no reads of the data — to answer `prepare::scorer`, which
//! runs here, in `ar`, and holds the val and test rows. The record is built from what the
//! scorer measured; the program's statistics are kept as its claims and checked where they
//! can be (profile, budget, the time it says it trained).

use std::fs::File;
#[allow(unused_imports)]
use std::io::Write as _;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use prepare::profile::{Profile, Scoring};
use prepare::report::{MAX_STATS_BYTES, Measured, TrainStats, build_record};
use prepare::scorer::{self, Client, Rows, ScoreError, Settings};
use prepare::{Budget, Cache, RunRecord, Split, Tokenizer};
use serde::{Deserialize, Serialize};

use super::child::{self, ChildSpec, Ended, Supervised};
use crate::journal::CrashClass;
use crate::sandbox::{Policy, ReadAccess, Report};

/// Version of spec.json and outcome.json.
pub const JOB_FORMAT: u32 = 1;

/// Largest checkpoint `ar` accepts from a training run.
const MAX_CHECKPOINT_BYTES: u64 = 64 << 30;

/// What to run: everything `ar run-job` needs, and nothing it must look up elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub format: u32,
    /// The experiment this measurement belongs to, and the run's directory name.
    pub id: u64,
    pub run: String,
    /// The train binary to run (its GNU build-id is `train_sha256`).
    pub binary: PathBuf,
    pub train_sha256: String,
    pub profile: String,
    /// `AUTORESEARCH_CACHE` (the root holding the profile directories).
    pub cache_root: PathBuf,
    /// sha256 of the cache manifest when the session started: a different one is refused.
    pub manifest_sha256: String,
    pub budget: Budget,
    pub seed_offset: u64,
    pub scoring: Scoring,
    /// Probe and audit tolerance in nats.
    pub tolerance: f32,
    /// Random rows per split the audit re-scores.
    pub audit_rows: usize,
    /// Kill training after this many seconds.
    pub train_deadline_secs: f64,
    /// True when that deadline is the time budget plus the start-up allowance (a kill is
    /// then `overtime`), false when it is the session's hard timeout (`timeout`).
    #[serde(default)]
    pub deadline_is_budget: bool,
    /// Kill a serving process after this many seconds.
    pub serve_deadline_secs: f64,
    /// false only in a session created with --allow-unconfined.
    pub sandbox: bool,
    /// Extra environment for both children (AR_DEVICE, CUDA_VISIBLE_DEVICES, RAYON_NUM_THREADS).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Score the test split too. Only verification runs do: no decision reads test, and
    /// scoring it on every experiment doubled the scoring cost (issue 8's 5 % of budget).
    #[serde(default = "scores_test_by_default")]
    pub score_test: bool,
}

/// Specs written before `score_test` existed scored test on every run.
fn scores_test_by_default() -> bool {
    true
}

/// Random rows per split the audited variant re-scores with full logits in a fresh process
/// (the best-scoring 1 % are audited besides): a sixteenth of the rows, 8 to 256. A server
/// that fakes a tenth of the rows escapes 32 random draws with probability 0.9^32 = 3 %, and
/// the rows worth faking are the best-scoring ones, which are always drawn. Half of the cpu
/// profile's 512 rows (the old fixed 256) made the audit cost more than full scoring.
pub fn audit_rows(profile: &prepare::profile::Profile) -> usize {
    (profile.eval_rows() / 16).clamp(8, 256)
}

/// What became of one measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    pub format: u32,
    pub crash: Option<CrashClass>,
    /// Why it is a crash, one line, never program output.
    pub reason: Option<String>,
    pub record: Option<RunRecord>,
    /// Sanitised, fenced tail of the program's output (crashes only).
    pub excerpt: Option<String>,
    /// What the program said about its training (kept even when the run crashed later).
    pub stats: Option<TrainStats>,
    pub train_seconds: f64,
    pub score_seconds: f64,
    /// Processes that outlived a phase (`pid command`), killed.
    #[serde(default)]
    pub leaked: Vec<String>,
    /// The sandbox in force for the training child.
    pub sandbox: Option<Report>,
}

impl JobOutcome {
    fn crash(class: CrashClass, reason: impl Into<String>) -> JobOutcome {
        JobOutcome {
            format: JOB_FORMAT,
            crash: Some(class),
            reason: Some(reason.into()),
            record: None,
            excerpt: None,
            stats: None,
            train_seconds: 0.0,
            score_seconds: 0.0,
            leaked: Vec::new(),
            sandbox: None,
        }
    }
}

/// What the caller sees while a job runs.
pub trait Watch {
    /// "train" or "score".
    fn phase(&mut self, phase: &str);
    /// Training progress in percent, about once a second.
    fn progress(&mut self, _pct: Option<f64>) {}
    /// New output of the training child since the last call (for a terminal that shows it).
    fn output(&mut self, _text: &str) {}
}

/// A watcher that watches nothing.
pub struct Quiet;
impl Watch for Quiet {
    fn phase(&mut self, _: &str) {}
}

/// The paths of one run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Creates `<runs>/<id>.<n>` for the first `n` not taken: a fresh directory every attempt.
    pub fn create(runs: &Path, id: u64) -> Result<RunDir> {
        std::fs::create_dir_all(runs).with_context(|| format!("cannot create {}", runs.display()))?;
        for attempt in 1.. {
            let root = runs.join(format!("{id:04}.{attempt}"));
            match std::fs::create_dir(&root) {
                Ok(()) => {
                    std::fs::create_dir(root.join("work"))?;
                    return Ok(RunDir { root });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot create {}", root.display())),
            }
        }
        unreachable!()
    }

    pub fn name(&self) -> String {
        self.root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }
    pub fn spec(&self) -> PathBuf {
        self.root.join("spec.json")
    }
    pub fn outcome(&self) -> PathBuf {
        self.root.join("outcome.json")
    }

    /// Writes spec.json (atomically: the child never writes here, `ar` may rewrite it
    /// once to add the worker's device pinning).
    pub fn write_spec(&self, spec: &JobSpec) -> Result<()> {
        prepare::manifest::write_atomic(&self.spec(), serde_json::to_string_pretty(spec)?.as_bytes())?;
        Ok(())
    }

    /// Reads spec.json back (`ar run-job`).
    pub fn read_spec(&self) -> Result<JobSpec> {
        let bytes = child::read_untrusted(&self.spec(), 1 << 20)?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a job spec", self.spec().display()))
    }

    /// Writes outcome.json atomically.
    pub fn write_outcome(&self, outcome: &JobOutcome) -> Result<()> {
        prepare::manifest::write_atomic(&self.outcome(), serde_json::to_string_pretty(outcome)?.as_bytes())?;
        Ok(())
    }
}

/// Runs both phases of `spec` in `dir`. Errors are supervisor failures (I/O, a broken
/// cache); everything the program does wrong is a crash class in the outcome.
pub fn run(
    dir: &RunDir,
    spec: &JobSpec,
    watch: &mut dyn Watch,
    stop: &Arc<AtomicBool>,
) -> Result<JobOutcome> {
    let profile = Profile::by_name(&spec.profile)?;
    let cache = Cache::open_at(&spec.cache_root.join(profile.name), profile)?;
    if cache.manifest_sha256()? != spec.manifest_sha256 {
        return Ok(JobOutcome::crash(
            CrashClass::Mismatch,
            format!(
                "the cache {} changed since the session started (its manifest hash differs): the rows would not be \
                 the session's; re-run on the original cache or start a new session",
                cache.root.display()
            ),
        ));
    }
    let started = Instant::now();

    // Phase 1: training.
    watch.phase("train");
    let work = dir.work();
    let mut env = vec![
        ("AR_PROFILE".to_string(), profile.name.into()),
        ("AUTORESEARCH_CACHE".to_string(), spec.cache_root.clone().into()),
        (prepare::budget::BUDGET_ENV.to_string(), spec.budget.to_string().into()),
        (prepare::SEED_OFFSET_ENV.to_string(), spec.seed_offset.to_string().into()),
        (prepare::checkpoint::CHECKPOINT_ENV.to_string(), work.join("model.ckpt").into()),
        (prepare::report::STATS_ENV.to_string(), work.join("stats.json").into()),
        ("TMPDIR".to_string(), work.clone().into()),
    ];
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.into())));
    let mut readable = vec![spec.binary.clone(), work.clone()];
    readable.extend(cache.training_reads());
    let policy = spec.sandbox.then(|| Policy {
        writable: vec![work.clone()],
        read: ReadAccess::Only(readable),
        network: false,
        confine_process: true,
    });
    let trainer = Supervised::spawn(
        ChildSpec {
            program: spec.binary.clone(),
            args: Vec::new(),
            cwd: work.clone(),
            env: env.clone(),
            log: dir.root.join("train.log"),
            fds: Vec::new(),
            policy,
            deadline: Duration::from_secs_f64(spec.train_deadline_secs),
        },
        Some(stop.clone()),
    )?;
    let sandbox = trainer.report.clone();
    let mut seen = 0u64;
    let ended = trainer.wait(&mut |s| {
        watch.progress(s.progress());
        let (text, end) = s.output_since(seen);
        seen = end;
        if !text.is_empty() {
            watch.output(&text);
        }
    })?;
    let (rest, _) = ended.output_since(seen);
    if !rest.is_empty() {
        watch.output(&rest);
    }
    let train_seconds = ended.seconds;
    let mut leaked = ended.leaked.clone();
    let with = |mut o: JobOutcome, ended: &Ended| {
        o.train_seconds = train_seconds;
        o.leaked = leaked_note(&ended.leaked);
        o.sandbox = sandbox.clone();
        if o.excerpt.is_none() && o.crash.is_some_and(|c| c.shows_output()) {
            o.excerpt = Some(crate::excerpt::excerpt(&ended.tail));
        }
        o
    };
    if ended.abandoned {
        return Ok(with(JobOutcome::crash(CrashClass::Interrupted, "abandoned on request (Ctrl-C)"), &ended));
    }
    if ended.timed_out {
        let (class, why) = if spec.deadline_is_budget {
            (
                CrashClass::Overtime,
                format!(
                    "training ran past the budget plus the start-up allowance ({:.0}s) and was stopped: setup, \
                     warm-up and anything else before or after the budgeted loop must fit in the allowance",
                    spec.train_deadline_secs
                ),
            )
        } else {
            (CrashClass::Timeout, format!("killed after the {:.0}s timeout", spec.train_deadline_secs))
        };
        return Ok(with(JobOutcome::crash(class, why), &ended));
    }
    if !ended.success() {
        let class = classify(&ended);
        return Ok(with(JobOutcome::crash(class, ended.describe()), &ended));
    }
    let stats = match read_stats(&work, profile, spec) {
        Ok(s) => s,
        Err((class, why)) => return Ok(with(JobOutcome::crash(class, why), &ended)),
    };
    let sealed = match seal_checkpoint(&work.join("model.ckpt")) {
        Ok(s) => s,
        Err(e) => {
            let mut o = JobOutcome::crash(CrashClass::NoResult, format!("{e:#}"));
            o.stats = Some(stats);
            return Ok(with(o, &ended));
        }
    };

    // Phase 2: scoring.
    watch.phase("score");
    let score_started = Instant::now();
    let tokenizer = Arc::new(Tokenizer::load(&cache)?);
    if let Budget::Flops { flops } = spec.budget {
        // The tokenizer's vocabulary, not the profile's target: a small corpus stops short of it.
        if let Err(why) = charge_flops(&sealed, &stats, flops, tokenizer.vocab_size()) {
            let mut o = JobOutcome::crash(CrashClass::Overtime, why);
            o.stats = Some(stats);
            return Ok(with(o, &ended));
        }
    }
    let val = Rows::load(&cache, &tokenizer, Split::Val)?;
    let test = if spec.score_test { Some(Rows::load(&cache, &tokenizer, Split::Test)?) } else { None };
    let settings = Settings {
        tolerance: spec.tolerance,
        audit_rows: spec.audit_rows,
        vocab: tokenizer.vocab_size(),
        ..Settings::default()
    };
    let mut servers: Vec<Supervised> = Vec::new();
    let mut rng = scorer::Rng::from_os();
    let splits: Vec<&Rows> = std::iter::once(&val).chain(test.as_ref()).collect();
    let scored = match serve(dir, spec, &env, &sealed, 1, stop) {
        Err(e) => Err(e),
        Ok((server, mut first)) => {
            servers.push(server);
            let result = match spec.scoring {
                Scoring::Full => {
                    scorer::score_full(&mut first, &splits, tokenizer.token_bytes(), &settings, &mut rng)
                }
                Scoring::Audited => {
                    let mut fresh = || start_server_again(dir, spec, &env, &sealed, stop);
                    scorer::score_audited(
                        &mut first,
                        &mut fresh,
                        &splits,
                        tokenizer.token_bytes(),
                        &settings,
                        &mut rng,
                    )
                }
            };
            first.finish();
            result
        }
    };
    let mut serve_tail = String::new();
    for s in servers.drain(..) {
        let e = s.wait(&mut |_| {})?;
        leaked.extend(e.leaked.iter().cloned());
        if !e.success() && serve_tail.is_empty() {
            serve_tail = e.tail.clone();
        }
    }
    let score_seconds = score_started.elapsed().as_secs_f64();
    let mut outcome = match scored {
        Ok(scored) => {
            let measured = Measured {
                scored,
                train_wall_seconds: train_seconds,
                total_seconds: started.elapsed().as_secs_f64(),
                train_sha256: spec.train_sha256.clone(),
                checkpoint_sha256: sealed.sha256.clone(),
                manifest_sha256: spec.manifest_sha256.clone(),
                budget: spec.budget.to_string(),
            };
            let record = build_record(&cache, &stats, measured)?;
            JobOutcome {
                format: JOB_FORMAT,
                crash: None,
                reason: None,
                record: Some(record),
                excerpt: None,
                stats: Some(stats),
                train_seconds,
                score_seconds,
                leaked: Vec::new(),
                sandbox: None,
            }
        }
        Err(e) => {
            let class = match &e {
                ScoreError::Leak(_) => CrashClass::Leak,
                ScoreError::Tampered(_) => CrashClass::Tampered,
                ScoreError::Protocol(_) | ScoreError::Model(_) => CrashClass::Eval,
            };
            let mut o = JobOutcome::crash(class, e.to_string());
            if !serve_tail.is_empty() {
                o.excerpt = Some(crate::excerpt::excerpt(&serve_tail));
            }
            o.stats = Some(stats);
            o.score_seconds = score_seconds;
            o
        }
    };
    outcome.train_seconds = train_seconds;
    outcome.leaked = leaked_note(&leaked);
    outcome.sandbox = sandbox;
    Ok(outcome)
}

/// "2 processes outlived the run and were killed: 123 sleep, 124 sh".
fn leaked_note(leaked: &[String]) -> Vec<String> {
    leaked.to_vec()
}

/// The crash class of a training child that exited unsuccessfully.
fn classify(ended: &Ended) -> CrashClass {
    use std::os::unix::process::ExitStatusExt;
    let log = &ended.tail;
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let signal = ended.status.and_then(|s| s.signal());
    if lines.iter().any(|l| *l == "FAIL") {
        CrashClass::Nan
    } else if signal == Some(libc::SIGKILL)
        || log.contains("memory allocation of")
        || log.contains("out of memory")
        || log.contains("Cannot allocate memory")
    {
        CrashClass::Oom
    } else {
        CrashClass::Panic
    }
}

/// Reads and checks the program's statistics: a file it wrote, so opened without
/// following links, size-capped, and compared with what `ar` knows.
fn read_stats(
    work: &Path,
    profile: &Profile,
    spec: &JobSpec,
) -> std::result::Result<TrainStats, (CrashClass, String)> {
    let path = work.join("stats.json");
    let bytes = child::read_untrusted(&path, MAX_STATS_BYTES).map_err(|e| {
        (
            CrashClass::NoResult,
            format!(
                "exited 0 without its training statistics ({e:#}); end training with prepare::finish_training"
            ),
        )
    })?;
    let stats = TrainStats::parse(&String::from_utf8_lossy(&bytes))
        .map_err(|e| (CrashClass::NoResult, format!("invalid training statistics: {e}")))?;
    if stats.profile != profile.name || stats.profile_hash != profile.hash() {
        return Err((
            CrashClass::Mismatch,
            format!(
                "the run trained under profile {} ({}), the session's is {} ({}): the train file must open the \
                 active cache (Cache::open_active), not one of its own",
                stats.profile,
                stats.profile_hash,
                profile.name,
                profile.hash()
            ),
        ));
    }
    if Budget::parse(&stats.budget).ok() != Some(spec.budget) {
        return Err((
            CrashClass::Mismatch,
            format!(
                "the run says it trained under budget '{}', the session's is {}: use Budget::active(profile)",
                stats.budget, spec.budget
            ),
        ));
    }
    if let Budget::Time { secs } = spec.budget {
        // The wall clock already bounds the run; a claim beyond it is a lie or a bug.
        if stats.training_seconds > secs + profile.startup_allowance_secs {
            return Err((
                CrashClass::Overtime,
                format!("the run reports {:.1}s of training for a {secs}s budget", stats.training_seconds),
            ));
        }
    }
    if let Budget::Tokens { tokens } = spec.budget {
        // A run stops after the step that spends the budget, so every step but the last
        // must have started inside it. (A FLOPs budget is checked once the checkpoint is
        // sealed: its shapes set the floor of the count, see charge_flops.)
        if stats.tokens_before_last_step() >= tokens {
            return Err((
                CrashClass::Overtime,
                format!(
                    "the run trained {} tokens in {} steps for a {tokens}-token budget: stop after the step \
                     that spends it (Budget::spent after every step; warm-up steps count under a tokens budget)",
                    stats.total_tokens, stats.num_steps
                ),
            ));
        }
    }
    Ok(stats)
}

/// Checks a run against a FLOPs budget as `ar` counts FLOPs: the train file's count per
/// token, but never less than the floor its checkpoint's matrices cost
/// ([`prepare::budget::flops_floor_per_token`]). As under a tokens budget, every step but
/// the last must have started inside the budget.
fn charge_flops(
    sealed: &Sealed,
    stats: &TrainStats,
    flops: f64,
    vocab: usize,
) -> std::result::Result<(), String> {
    let file = File::from(sealed.reopen().map_err(|e| format!("{e:#}"))?);
    let shapes = prepare::Checkpoint::shapes_from(file, sealed.bytes)
        .map_err(|e| format!("the checkpoint cannot be read for its FLOPs: {e}"))?;
    let floor = prepare::budget::flops_floor_per_token(&shapes, vocab);
    let per_token = stats.flops_per_token.max(floor);
    let before_last = stats.tokens_before_last_step() as f64 * per_token;
    if before_last < flops {
        return Ok(());
    }
    let counted = if stats.flops_per_token < floor {
        format!(
            "{floor:.4e} FLOPs per token, the floor of its checkpoint's matrices (6 per weight; the run counted              {:.4e})",
            stats.flops_per_token
        )
    } else {
        format!("{per_token:.4e} FLOPs per token by its own count")
    };
    Err(format!(
        "the run trained {} tokens in {} steps at {counted}: {before_last:.4e} FLOPs before its last step, for a          {flops:e}-FLOP budget. Stop after the step that spends it (Budget::spent after every step) and count          at least 6 FLOPs per token for every matrix weight (the model's estimate_flops)",
        stats.total_tokens, stats.num_steps
    ))
}

/// The checkpoint, copied into a sealed memfd: a fixed, unchangeable copy every serving
/// process reads from its own description, with its sha256.
pub struct Sealed {
    fd: OwnedFd,
    pub sha256: String,
    pub bytes: u64,
}

fn seal_checkpoint(path: &Path) -> Result<Sealed> {
    use sha2::Digest;
    let mut src = child::open_untrusted(path, MAX_CHECKPOINT_BYTES)
        .context("the training run left no usable checkpoint (end training with prepare::finish_training)")?;
    // The untrusted file was opened O_NONBLOCK (a FIFO must not block); a regular file reads normally.
    let name = std::ffi::CString::new("ar-checkpoint").unwrap();
    // SAFETY: memfd_create with a valid C string; the fd is ours.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        bail!("cannot create an in-memory file: {}", std::io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nothing else.
    let mut mem = unsafe { File::from_raw_fd(raw) };
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = src.read(&mut buf).context("cannot read the checkpoint")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        mem.write_all(&buf[..n])?;
        bytes += n as u64;
        if bytes > MAX_CHECKPOINT_BYTES {
            bail!("the checkpoint grew past {MAX_CHECKPOINT_BYTES} bytes while it was read");
        }
    }
    mem.rewind()?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own memfd.
    if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        bail!("cannot seal the checkpoint copy: {}", std::io::Error::last_os_error());
    }
    Ok(Sealed { fd: OwnedFd::from(mem), sha256: prepare::profile::hex(&hasher.finalize()), bytes })
}

impl Sealed {
    /// A new read-only open file description of the sealed copy (its own offset).
    fn reopen(&self) -> Result<OwnedFd> {
        let path = format!("/proc/self/fd/{}", self.fd.as_raw_fd());
        Ok(OwnedFd::from(File::open(&path).with_context(|| format!("cannot reopen {path}"))?))
    }
}

/// Starts serving process `n` from the sealed checkpoint and connects to it.
fn serve(
    dir: &RunDir,
    spec: &JobSpec,
    env: &[(String, std::ffi::OsString)],
    sealed: &Sealed,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> std::result::Result<(Supervised, Client), ScoreError> {
    let fail = |e: anyhow::Error| ScoreError::Protocol(format!("cannot start the scoring process: {e:#}"));
    let (query_r, query_w) = child::pipe().map_err(fail)?;
    let (answer_r, answer_w) = child::pipe().map_err(fail)?;
    let ckpt = sealed.reopen().map_err(fail)?;
    let mut env: Vec<(String, std::ffi::OsString)> =
        env.iter().filter(|(k, _)| !k.starts_with("AR_CHECKPOINT") && k != "AR_STATS").cloned().collect();
    env.push((prepare::serve::SERVE_ENV.to_string(), "3,4,5".into()));
    let policy = spec.sandbox.then(|| Policy {
        writable: Vec::new(),
        read: ReadAccess::Only(vec![spec.binary.clone()]),
        network: false,
        confine_process: true,
    });
    let log = dir.root.join(if n == 1 { "serve.log".to_string() } else { format!("serve-{n}.log") });
    let server = Supervised::spawn(
        ChildSpec {
            program: spec.binary.clone(),
            args: Vec::new(),
            cwd: dir.work(),
            env,
            log,
            fds: vec![(3, OwnedFd::from(query_r)), (4, OwnedFd::from(answer_w)), (5, ckpt)],
            policy,
            deadline: Duration::from_secs_f64(spec.serve_deadline_secs),
        },
        Some(stop.clone()),
    )
    .map_err(fail)?;
    let client = Client::connect(query_w, answer_r)?;
    Ok((server, client))
}

/// The audit's fresh process; it is waited for by its `Supervised` being dropped.
fn start_server_again(
    dir: &RunDir,
    spec: &JobSpec,
    env: &[(String, std::ffi::OsString)],
    sealed: &Sealed,
    stop: &Arc<AtomicBool>,
) -> std::result::Result<Client, ScoreError> {
    let (server, client) = serve(dir, spec, env, sealed, 2, stop)?;
    // Kept alive for the client's lifetime: leaked deliberately into a holder thread that
    // waits for it, so its group is reaped when it exits.
    std::thread::spawn(move || {
        let _ = server.wait(&mut |_| {});
    });
    Ok(client)
}
