//! `ar run-job <run_dir>` (hidden): the unit of work every backend executes — read the
//! run directory's spec.json, train and score (`exec::job`), write outcome.json. SIGTERM
//! (Ctrl-C of `ar`, `scancel`) stops the training and serving children through the job's
//! own supervision and still writes an outcome (`interrupted`), so nothing is left running
//! and the journal learns what happened.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use clap::Args;

use crate::exec::job::{self, Quiet, RunDir};
use crate::journal::CrashClass;

#[derive(Debug, Args)]
pub struct RunJobArgs {
    /// The run directory (holding spec.json).
    pub run_dir: PathBuf,
}

pub fn run(args: RunJobArgs) -> Result<ExitCode> {
    let dir = RunDir { root: args.run_dir };
    let spec = dir.read_spec()?;
    let stop = Arc::new(AtomicBool::new(false));
    crate::interrupt::install(stop.clone());
    let mut outcome = job::run(&dir, &spec, &mut Quiet, &stop)?;
    if outcome.crash == Some(CrashClass::Interrupted) {
        // A job is stopped by SIGTERM, which may not come from a person at a terminal.
        outcome.reason = Some(
            "stopped by a signal to the job (scancel, preemption, its time limit, or Ctrl-C of ar)".into(),
        );
    }
    dir.write_outcome(&outcome)?;
    Ok(ExitCode::SUCCESS)
}
