//! `ar sandbox -- <agent command>`: starts an agent CLI (Claude Code, Codex, a script) the
//! way `ar loop --agent cmd:…` runs one — confined by landlock to writing `train/src/`, its
//! own scratch directory and the directories named with `--agent-writable`, unable to read
//! the prepared data or `.autoresearch/`, network open — for the mode where the agent drives
//! the loop itself (program.md's "you drive"). Inside, `ar experiment`, `ar status` and
//! `ar report` are forwarded to this process, which runs them outside the sandbox
//! (`agent::broker`). The exit code is the agent's.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::agent::broker::{self, BROKER_ENV};
use crate::agent::confine::{AgentConfinement, expand_home};
use crate::exec::build::find_repo;

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// A directory (or file) the agent may write for its own state, e.g. ~/.claude (repeatable).
    #[arg(long = "agent-writable")]
    pub agent_writable: Vec<PathBuf>,
    /// The repository (default: the one containing the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// The agent command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(args: SandboxArgs) -> Result<ExitCode> {
    let repo = find_repo(&args.repo.unwrap_or_else(|| PathBuf::from(".")))?;
    let scratch = tempfile::Builder::new().prefix("ar-agent-").tempdir()?;
    let socket = scratch.path().join("ar.sock");
    let exe = std::env::current_exe().context("cannot find the ar binary")?;
    broker::serve(&socket, exe, repo.clone())?;
    let extra: Vec<PathBuf> = args.agent_writable.iter().map(|p| expand_home(p)).collect();
    let confine = AgentConfinement::for_repo(&repo, &prepare::cache::cache_root(), &extra);
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    let mut cmd = Command::new(program);
    cmd.args(rest).current_dir(&repo).env(BROKER_ENV, &socket).env("TMPDIR", scratch.path());
    let report = crate::sandbox::apply(&mut cmd, &confine.policy(scratch.path()));
    if !report.filesystem.is_enforced() || !report.filesystem_read.is_enforced() {
        bail!(
            "this kernel cannot confine the agent ({}); ar sandbox does not run it unconfined",
            report.gaps().join("; ")
        );
    }
    eprintln!(
        "ar sandbox: {program} may write {} and {} (and {} more), may not read the prepared data or .autoresearch/; \
         `ar experiment` inside is run by this process",
        confine.train_dir.display(),
        scratch.path().display(),
        extra.len()
    );
    let status = cmd.status().with_context(|| format!("cannot start {program}"))?;
    Ok(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8))
}
