//! `ar experiment -m "…"`: one experiment, atomic and resumable — for an agent (Claude
//! Code, Codex, …) that follows program.md and calls `ar` once per idea. The train file
//! edit must be in the working tree of a session branch `autoresearch/<tag>`; the first
//! call on a branch runs the baseline. Prints one compact result; exit codes say what
//! happened: 0 kept or discarded, 3 crashed, 4 timed out, 5 rejected, 2 supervisor error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::session_args::SessionArgs;
use crate::journal::Status;
use crate::report::model::Model;
use crate::session::{Open, Session};

#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// What this experiment tries (one line; it becomes the commit message).
    #[arg(short = 'm', long = "message")]
    pub message: String,
    /// Why it might help.
    #[arg(long)]
    pub hypothesis: Option<String>,
    /// The repository (default: the one containing the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
    #[command(flatten)]
    pub session: SessionArgs,
}

pub fn run(args: ExperimentArgs) -> Result<ExitCode> {
    let repo = crate::workload::find_repo(&args.repo.unwrap_or_else(|| PathBuf::from(".")))?;
    let opts = args.session.options("external (ar experiment)")?;
    let mut session = Session::open(&repo, None, Open::Attach, &opts)?;
    crate::interrupt::install(session.stop.clone());
    let baseline_only = session.state().baseline_values.is_empty()
        && session.git.changed_since(&session.best_commit())?.is_empty();
    if baseline_only {
        session.ensure_baseline()?;
        println!("{}", summary_line(&session));
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = session.candidate(&args.message, args.hypothesis.as_deref(), 0.0)?;
    println!("{}", outcome.render());
    println!("{}", summary_line(&session));
    Ok(ExitCode::from(match outcome.status {
        Status::Keep | Status::Discard => 0,
        Status::Timeout => 4,
        Status::Rejected => 5,
        Status::Crash | Status::Interrupted => 3,
    }))
}

/// One line on where the session stands. Under the paired rule σ_d is given per noise
/// class (each class is pooled apart), as each class's latest decision used it.
pub fn summary_line(session: &Session) -> String {
    let state = session.state();
    let best = session.best_commit();
    let classes = Model::from_events(session.journal.events()).sigma_by_class();
    let noise = if classes.is_empty() {
        format!(
            "σ_d {} ({} dof)",
            state.sigma().map_or("–".to_string(), |s| format!("{s:.6}")),
            state.pool.dof()
        )
    } else {
        let per: Vec<String> = classes.iter().map(|c| c.phrase()).collect();
        format!("σ_d {}", per.join(", "))
    };
    format!(
        "best: {} at {} | {noise} | journal: {}",
        state.best().map_or("–".to_string(), |b| format!("{b:.6}")),
        &best[..7.min(best.len())],
        session.journal.path().display()
    )
}
