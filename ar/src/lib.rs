//! The `ar` library: everything the supervisor does, with one thin binary on top
//! (src/main.rs) and integration tests that use the modules directly.
//!
//! - [`session`]: a session's journal, recovery and experiment step; [`decide`] the keep rule;
//! - [`exec`]: building the train binary and running one measurement (train, then score);
//! - [`sandbox`]: landlock + seccomp for every child that runs agent-written code;
//! - [`guard`], [`git`]: what may change, and committing it;
//! - [`workload`]: what the agent may edit and how a change is measured (`autoresearch.toml`);
//! - [`agent`]: who proposes the next change; [`report`]: what the journal says;
//! - [`commands`]: one module per subcommand.

pub mod agent;
pub mod commands;

pub mod excerpt;
pub mod exec;
pub mod failpoint;
pub mod git;
pub mod guard;
pub mod interrupt;
pub mod journal;
pub mod live;
pub mod report;
pub mod sandbox;
pub mod scheduler;
pub mod session;
pub mod stats;
pub mod ui;
pub mod workload;
