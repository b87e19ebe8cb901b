//! One module per `ar` subcommand.

pub mod bench;
pub mod prepare;
pub mod report;
pub mod status;
pub mod train;
