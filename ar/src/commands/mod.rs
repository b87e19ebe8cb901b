//! One module per `ar` subcommand.

pub mod bench;
pub mod prepare;
pub mod train;
