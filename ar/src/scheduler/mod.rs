//! Where runs execute: the workers of a pool (`session::pool::Backend`).
//!
//! - [`local`]: N workers on this machine, each pinned to its device (a GPU, or a share of
//!   the CPU cores), each run an `ar run-job <run_dir>` child;
//! - `slurm`: each run an `sbatch` job of the same `ar run-job`, on a cluster.

pub mod local;

/// The Slurm backend, once its client lands (`slurm.rs`).
pub fn slurm_backend(
    _workers: usize,
    _args: &[String],
    _tag: &str,
) -> anyhow::Result<local::Local> {
    anyhow::bail!("--backend slurm is not available in this build")
}
