//! Shared test support for the ar integration tests.

pub mod fixture;
