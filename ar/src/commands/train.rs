//! `ar train`: build the train program in release and run it, exactly like the original's
//! `uv run train.py` — output streams to the terminal, the exit code is the program's.
//! The result record is written to `--result` (default `<target>/ar-train-result.json`).

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::Args;
use prepare::profile::{DEFAULT_PROFILE, PROFILE_ENV, Profile};
use prepare::report::{RESULT_ENV, RunRecord};

use crate::run::{BuildSpec, build, find_repo, target_dir};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Profile whose prepared cache to train on.
    #[arg(long, env = "AR_PROFILE", default_value = DEFAULT_PROFILE)]
    pub profile: String,
    /// Cargo features of the train crate (cuda, wgpu).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Where to write the JSON result record.
    #[arg(long)]
    pub result: Option<PathBuf>,
    /// The repository (default: the one containing the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    let profile = Profile::by_name(&args.profile)?;
    let repo = find_repo(&args.repo.unwrap_or_else(|| PathBuf::from(".")))?;
    // Check the cache before spending a build on it.
    prepare::Cache::open(profile)?;
    eprintln!("Building train (release) in {}", repo.display());
    let built = match build(&repo, &BuildSpec { bin: "train".into(), features: args.features })? {
        Ok(b) => b,
        Err(failure) => {
            eprintln!("{}", failure.log);
            anyhow::bail!("the train program does not build:\n{}", failure.first_error);
        }
    };
    eprintln!("Built in {:.1}s: {}", built.seconds, built.binary.display());
    if !built.stamped {
        eprintln!(
            "warning: {} does not carry the stamp of the current train file (another checkout \
             building into the same target directory?); its record's train_sha256 may be wrong",
            built.binary.display()
        );
    }
    let result = args.result.unwrap_or_else(|| target_dir(&repo).join("ar-train-result.json"));
    let _ = std::fs::remove_file(&result);
    let status = Command::new(&built.binary)
        .current_dir(&repo)
        .env(PROFILE_ENV, profile.name)
        .env(RESULT_ENV, &result)
        .status()
        .with_context(|| format!("cannot start {}", built.binary.display()))?;
    if status.success() {
        let text = std::fs::read_to_string(&result)
            .with_context(|| format!("the run ended without writing its record to {}", result.display()))?;
        RunRecord::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", result.display()))?;
        eprintln!("Result record: {}", result.display());
    }
    Ok(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8))
}
