//! `ar demo`: the whole thing, offline, in about ten minutes on a 2-core CPU — prepare the
//! synthetic corpus on the `demo` profile, run a session with the built-in `evolve` agent
//! (baselines, 4 experiments decided by paired runs, more until the first keep if those kept
//! nothing), verify the best against the baseline on fresh seeds, write the report, and put
//! the user back on the branch they started from. Ends with the path to the journal.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;
use prepare::data::{DataOptions, SourceSpec};
use prepare::pipeline::{PrepareOptions, prepare};
use prepare::profile::DEMO;

use super::loop_cmd::{LoopArgs, run_loop};
use super::session_args::SessionArgs;
use crate::exec::build::find_repo;
use crate::git::Git;
use crate::ui::Bars;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Agent experiments after the baselines. If none of them is kept, the demo goes on
    /// until its first keep, within --max-experiments and --search-minutes.
    #[arg(long, default_value_t = 4)]
    pub experiments: usize,
    /// Experiments at most, when the first ones kept nothing.
    #[arg(long, default_value_t = 10)]
    pub max_experiments: usize,
    /// Minutes of search at most (after the baselines), when the first experiments kept nothing.
    #[arg(long, default_value_t = 7.0)]
    pub search_minutes: f64,
    /// The repository (default: the one containing the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let repo = find_repo(&args.repo.unwrap_or_else(|| PathBuf::from(".")))?;
    let git = Git::new(&repo);
    if !git.changed_since("HEAD")?.is_empty() {
        bail!("the demo runs on a new branch from HEAD: commit or stash your changes first");
    }
    let home = git.current_branch()?;
    println!("1/3 Preparing the synthetic corpus (profile demo) …");
    let prep = PrepareOptions {
        profile: &DEMO,
        sources: vec![SourceSpec::Synthetic(None)],
        data: DataOptions::default(),
        cache_dir: None,
        force: false,
    };
    prepare(&prep, &Bars::new())?;
    let tag =
        format!("demo-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs());
    let most = args.max_experiments.max(args.experiments);
    println!(
        "2/3 Session {tag}: baselines, then {} experiments by the evolve agent (more, up to {most}, until one is kept) …",
        args.experiments
    );
    let loop_args = LoopArgs {
        tag: tag.clone(),
        agent: "evolve".into(),
        resume: false,
        max_experiments: Some(args.experiments),
        until: None,
        model: None,
        api_key_env: "OPENAI_API_KEY".into(),
        agent_timeout: 600,
        agent_retries: 2,
        seed: 0,
        agent_writable: Vec::new(),
        agent_unconfined: false,
        workers: 1,
        backend: "local".into(),
        slurm_args: Vec::new(),
        verify_pairs: 3,
        repo: Some(repo.clone()),
        session: SessionArgs {
            profile: DEMO.name.into(),
            rule: "paired".into(),
            alpha: 0.05,
            max_pairs: 4,
            min_effect: 0.0,
            baseline_runs: 3,
            timeout: None,
            features: Vec::new(),
            budget: None,
            scoring: None,
            allow_unconfined: false,
        },
        // Four experiments of seed 0 keep nothing on the demo profile (its first keep is the
        // 7th candidate): the demo goes on until a keep rather than end on "nothing to
        // verify". That choice depends on the outcomes, so the session's believed gain is
        // biased upward; the verification on fresh seeds, which the demo ends with, is not.
        until_first_keep: Some(most),
        first_keep_search_time: Some(std::time::Duration::from_secs_f64(args.search_minutes.max(0.0) * 60.0)),
    };
    let result = run_loop(&repo, &loop_args);
    if let Some(branch) = &home {
        let _ = git.checkout(branch);
    }
    let summary = result?;
    println!("3/3 Report …");
    let dir = summary.journal.parent().expect("the journal lives in a session directory").to_path_buf();
    let written = super::report::write_session(&crate::journal::read_events(&summary.journal)?, &dir)?;
    println!(
        "Demo done ({}): {} experiments on branch autoresearch/{tag}.\n  journal: {}\n  results: {}\n  report:  {}",
        summary.reason,
        summary.experiments,
        summary.journal.display(),
        dir.join("results.tsv").display(),
        written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
