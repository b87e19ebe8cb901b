//! Where runs execute: the workers of a pool (`session::pool::Backend`).
//!
//! - [`local`]: N workers on this machine, each pinned to its device (a GPU, or a share of
//!   the CPU cores), each run an `ar run-job <run_dir>` child;
//! - [`slurm_backend`]: each run an `sbatch` job of the same `ar run-job`, on a cluster,
//!   through [`slurm`], the thin client over Slurm's command-line tools.

pub mod local;
pub mod slurm;
pub mod slurm_backend;

/// The Slurm backend of a session.
pub fn slurm_backend(
    workers: usize,
    args: &[String],
    tag: &str,
) -> anyhow::Result<slurm_backend::SlurmBackend> {
    slurm_backend::SlurmBackend::new(workers, args, tag)
}
