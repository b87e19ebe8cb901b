//! One module per `ar` subcommand.

pub mod bench;
pub mod bench_search;
pub mod demo;
pub mod experiment;
pub mod finalize;
pub mod init;
pub mod loop_cmd;
pub mod prepare;
pub mod report;
pub mod run_job;
pub mod sandbox;
pub mod session_args;
pub mod status;
pub mod train;
