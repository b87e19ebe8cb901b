//! `ar`, the autoresearch supervisor: one thin binary over library code.
//!
//! Subcommands: `prepare` (data, tokenizer, manifest). `main` turns errors into one line
//! with the whole cause chain and an exit code that means something.

mod commands;
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
}

/// Exit code of a supervisor error (bad input, broken cache, I/O).
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Prepare(args) => commands::prepare::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}
