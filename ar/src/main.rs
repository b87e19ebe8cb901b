//! `ar`, the autoresearch supervisor: one thin binary over library code.
//!
//! Subcommands: `prepare` (data, tokenizer, manifest), `train` (build and run the train
//! program), `experiment` (one guarded, decided experiment), `loop` (an agent experimenting
//! until stopped), `demo` (the whole thing offline, in minutes), `bench` (speed against the PyTorch peer, the loader, the tokenizer), `report`
//! (plot, Markdown report, agent summary) and `status` (the session at a glance). `main`
//! turns errors into one line with the whole cause chain and an exit code that means
//! something.

// Modules used by the supervisor loop as it lands piece by piece.
#[allow(dead_code)]
mod agent;
mod commands;
#[allow(dead_code)]
mod decide;
#[allow(dead_code)]
mod excerpt;
mod failpoint;
#[allow(dead_code)]
mod git;
#[allow(dead_code)]
mod guard;
mod interrupt;
#[allow(dead_code)]
mod journal;
#[allow(dead_code)]
mod live;
#[allow(dead_code)]
mod report;
mod run;
#[allow(dead_code)] // part of its API serves tests and reports
mod sandbox;
#[allow(dead_code)]
mod session;
#[allow(dead_code)]
mod stats;
mod ui;

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
}

/// Exit code of a supervisor error (bad input, broken cache, I/O).
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
