//! Executing experiments: building the train binary, and running one measurement — the
//! confined training child, then the confined serving children the trusted scorer talks
//! to — in a run directory of its own.
//!
//! - [`build`]: `cargo build` of the train crate, the first compiler error, the stamp check;
//! - [`child`]: one supervised child process (sandbox, deadline, descriptors, leaks);
//! - [`command`]: one measurement of a declared workload (`autoresearch.toml`): build, run,
//!   the metric read from the run's output, and the checks a keep must pass;
//! - [`job`]: the unit of work — spec in, outcome out — that a local worker or a Slurm job
//!   runs the same way (`ar run-job <run_dir>`).

pub mod build;
pub mod child;
pub mod command;
pub mod job;
