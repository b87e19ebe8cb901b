//! `ar train`: build the train program in release, train it and score it, like the
//! original's `uv run train.py` — the training output streams to the terminal, then `ar`
//! scores the model (the program does not score itself) and prints the original's `---`
//! summary block, so `ar train | grep "^val_bpb:"` works as `grep` did on run.log.
//!
//! It runs exactly what an experiment runs (`exec::job`: a fresh run directory under
//! `<target>/ar-train/`, the sandboxed training child, the sandboxed serving child and the
//! trusted scorer), outside any session. The record is written to `--result` (default
//! `<target>/ar-train-result.json`). Exit code 0 with a score, 3 when the run crashed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};
use clap::Args;
use prepare::profile::{DEFAULT_PROFILE, Profile, Scoring};
use prepare::{Budget, Cache};

use crate::exec::build::{BuildSpec, build, find_repo, target_dir};
use crate::exec::job::{self, JobSpec, RunDir, Watch};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Profile whose prepared cache to train on.
    #[arg(long, env = "AR_PROFILE", default_value = DEFAULT_PROFILE)]
    pub profile: String,
    /// Budget: time:<s>s, tokens:<n> or flops:<x> (default: the profile's time budget).
    #[arg(long)]
    pub budget: Option<String>,
    /// Scoring variant: full or audited (default: the profile's).
    #[arg(long)]
    pub scoring: Option<String>,
    /// Cargo features of the train crate (cuda, wgpu).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Seed offset (as `ar` varies it for repeated measurements).
    #[arg(long, default_value_t = 0)]
    pub seed_offset: u64,
    /// Score the held-out test split too (sessions do so only when verifying a gain).
    #[arg(long)]
    pub with_test: bool,
    /// Where to write the JSON result record.
    #[arg(long)]
    pub result: Option<PathBuf>,
    /// Run the children without the sandbox (landlock + seccomp).
    #[arg(long)]
    pub allow_unconfined: bool,
    /// The repository (default: the one containing the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
}

/// Streams the training child's output and says when scoring starts.
struct Terminal;

impl Watch for Terminal {
    fn phase(&mut self, phase: &str) {
        if phase == "score" {
            eprintln!("Scoring the trained model (ar serves it to its own scorer) …");
        }
    }
    fn output(&mut self, text: &str) {
        print!("{text}");
        let _ = std::io::stdout().flush();
    }
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let profile = Profile::by_name(&args.profile)?;
    let repo = find_repo(&args.repo.unwrap_or_else(|| PathBuf::from(".")))?;
    // Check the cache before spending a build on it.
    let cache = Cache::open(profile)?;
    let budget = match &args.budget {
        Some(b) => Budget::parse(b)?,
        None => profile.default_budget(),
    };
    let scoring = match &args.scoring {
        Some(s) => Scoring::parse(s)?,
        None => profile.scoring,
    };
    eprintln!("Building train (release) in {} …", repo.display());
    let built = match build(&repo, &BuildSpec { bin: "train".into(), features: args.features.clone() })? {
        Ok(b) => b,
        Err(failure) => {
            eprintln!("{}", failure.log);
            anyhow::bail!("the train program does not build:\n{}", failure.first_error);
        }
    };
    eprintln!("Built in {:.1}s: {}", built.seconds, built.binary.display());
    if !built.stamped {
        eprintln!(
            "warning: {} does not carry the stamp of the current train file (another checkout building into the \
             same target directory?)",
            built.binary.display()
        );
    }
    let dir = RunDir::create(&target_dir(&repo).join("ar-train").join("runs"), 1)?;
    let binary = crate::exec::build::stage(&built.binary, &dir.root, &built.train_sha256)?;
    let train_deadline = match budget {
        Budget::Time { secs } => secs + profile.startup_allowance_secs,
        _ => profile.time_budget_secs * 4.0 + 600.0,
    };
    let spec = JobSpec {
        format: job::JOB_FORMAT,
        id: 1,
        run: dir.name(),
        binary: binary.clone(),
        train_sha256: built.train_sha256.clone(),
        profile: profile.name.to_string(),
        cache_root: prepare::cache::cache_root(),
        manifest_sha256: cache.manifest_sha256()?,
        budget,
        seed_offset: args.seed_offset,
        scoring,
        tolerance: if args.features.is_empty() { 1e-3 } else { 3e-2 },
        audit_rows: job::audit_rows(profile),
        train_deadline_secs: train_deadline,
        deadline_is_budget: budget.is_time(),
        serve_deadline_secs: profile.time_budget_secs * 2.0 + 600.0,
        sandbox: !args.allow_unconfined,
        env: Vec::new(),
        score_test: args.with_test,
    };
    dir.write_spec(&spec)?;
    let stop = Arc::new(AtomicBool::new(false));
    crate::interrupt::install(stop.clone());
    let outcome = job::run(&dir, &spec, &mut Terminal, &stop)?;
    dir.write_outcome(&outcome)?;
    if let Some(report) = &outcome.sandbox {
        report.warn_once();
    }
    for l in &outcome.leaked {
        eprintln!("warning: a process outlived the run and was killed: {l}");
    }
    let result = args.result.unwrap_or_else(|| target_dir(&repo).join("ar-train-result.json"));
    match (&outcome.record, outcome.crash) {
        (Some(record), None) => {
            print!("{}", record.summary_block());
            prepare::manifest::write_atomic(&result, serde_json::to_string_pretty(record)?.as_bytes())
                .with_context(|| format!("cannot write {}", result.display()))?;
            eprintln!("Result record: {} (run directory {})", result.display(), dir.root.display());
            Ok(ExitCode::SUCCESS)
        }
        (_, crash) => {
            let class = crash.map_or("no-result", |c| c.name());
            eprintln!("crash ({class}): {}", outcome.reason.as_deref().unwrap_or(""));
            if let Some(e) = &outcome.excerpt {
                eprintln!("{e}");
            }
            eprintln!("Run directory: {}", dir.root.display());
            Ok(ExitCode::from(3))
        }
    }
}
