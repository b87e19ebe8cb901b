//! One module per `ar` subcommand.

pub mod prepare;
