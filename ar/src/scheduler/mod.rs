//! Schedulers that run `ar run-job` somewhere else than in this process.

pub mod slurm;
