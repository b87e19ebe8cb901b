//! `ar`, the autoresearch supervisor: one thin binary over the `ar` library (src/lib.rs).
//!
//! Subcommands: `prepare` (data, tokenizer, manifest), `train` (build and run the train
//! program), `experiment` (one guarded, decided experiment), `loop` (an agent experimenting
//! until stopped), `demo` (the whole thing offline, in minutes), `bench` (speed against the PyTorch peer, the loader, the tokenizer), `report`
//! (plot, Markdown report, agent summary), `status` (the session at a glance), `init`
//! (declare a workload: autoresearch.toml) and `finalize` (kept changes as a clean branch). `main`
//! turns errors into one line with the whole cause chain and an exit code that means
//! something.

use ar::commands;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ar",
    version,
    about = "autoresearch-rs: let an agent do LLM pretraining research overnight"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download or build the data, train the tokenizer, write a verified manifest.
    Prepare(commands::prepare::PrepareArgs),
    /// Build the train program in release and run it (the original's `uv run train.py`).
    Train(commands::train::TrainArgs),
    /// One experiment: guard, commit, build, train, decide (for agents following program.md).
    Experiment(commands::experiment::ExperimentArgs),
    /// Let an agent experiment until stopped: propose, guard, commit, train, decide, repeat.
    Loop(commands::loop_cmd::LoopArgs),
    /// The whole loop offline in a few minutes: demo data, the built-in agent, a report.
    Demo(commands::demo::DemoArgs),
    /// Benchmarks: the training step against PyTorch, the loader, the tokenizer.
    Bench(commands::bench::BenchArgs),
    /// The session's progress plot, Markdown report and agent summary, from the journal.
    Report(commands::report::ReportArgs),
    /// What is running now, the best so far, the last results (--watch to follow).
    Status(commands::status::StatusArgs),
    /// Start an agent CLI confined (writes train/src only; no data, no journal) for the mode
    /// where the agent drives `ar experiment` itself: `ar sandbox -- claude`.
    Sandbox(commands::sandbox::SandboxArgs),
    /// Run one measurement from its run directory (what workers and Slurm jobs execute).
    #[command(hide = true)]
    RunJob(commands::run_job::RunJobArgs),
    /// Declare a workload for any repository: write autoresearch.toml (questions, flags or --preset).
    Init(commands::init::InitArgs),
    /// Turn a session's kept changes into a clean branch (or one per independent change) with the report.
    Finalize(commands::finalize::FinalizeArgs),
}

/// Exit code of a supervisor error (bad input, broken cache, I/O).
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    // Inside `ar sandbox`, the session's commands run outside the sandbox, through its broker.
    if let Some(socket) = std::env::var_os(ar::agent::broker::BROKER_ENV) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.first().is_some_and(|a| ar::agent::broker::FORWARDED.contains(&a.as_str())) {
            return match ar::agent::broker::forward(std::path::Path::new(&socket), &args) {
                Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_ERROR)
                }
            };
        }
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Prepare(args) => commands::prepare::run(args).map(|()| ExitCode::SUCCESS),
        Command::Train(args) => commands::train::run(args),
        Command::Experiment(args) => commands::experiment::run(args),
        Command::Loop(args) => commands::loop_cmd::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::Bench(args) => commands::bench::run(args).map(|()| ExitCode::SUCCESS),
        Command::Report(args) => commands::report::run(args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => commands::status::run(args).map(|()| ExitCode::SUCCESS),
        Command::Sandbox(args) => commands::sandbox::run(args),
        Command::RunJob(args) => commands::run_job::run(args),
        Command::Init(args) => commands::init::run(args).map(|()| ExitCode::SUCCESS),
        Command::Finalize(args) => commands::finalize::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
