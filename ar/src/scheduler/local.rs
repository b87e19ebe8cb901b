//! The local pool: N workers on this machine, each run an `ar run-job <run_dir>` child of
//! `ar` (exactly what a Slurm job runs), pinned to its worker's device.
//!
//! Pinning: with a GPU build, worker i sees only GPU i (`CUDA_VISIBLE_DEVICES=i`, and
//! `AR_DEVICE_INDEX=i` for wgpu/Metal adapters); on the CPU the cores are split — worker i
//! gets its own contiguous share, enforced with the CPU affinity of the job (inherited by
//! its training and serving children) and `RAYON_NUM_THREADS` set to the share, so two
//! runs never fight for the same core. The split is recorded in every run's spec and the
//! report says so.
//!
//! The jobs die with `ar` (PDEATHSIG): after `kill -9`, resume finds the runs that completed
//! by their outcome file and measures the others again.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::exec::job::RunDir;
use crate::session::pool::{Backend, Landed, Launch, read_outcome};

/// What a worker is pinned to.
#[derive(Debug, Clone, PartialEq)]
pub enum Devices {
    /// CPU cores split between the workers.
    Cpu { cores: usize },
    /// One GPU per worker.
    Gpu,
}

pub struct Local {
    workers: usize,
    devices: Devices,
    exe: PathBuf,
    running: BTreeMap<usize, (u64, RunDir, Child)>,
}

impl Local {
    pub fn new(workers: usize, devices: Devices) -> Result<Local> {
        let exe = std::env::current_exe().context("cannot find the ar binary for `ar run-job`")?;
        Ok(Local { workers: workers.max(1), devices, exe, running: BTreeMap::new() })
    }

    /// The cores of worker `slot`: a contiguous share (the last worker takes the remainder).
    pub fn cores_of(&self, slot: usize) -> Option<(usize, usize)> {
        match self.devices {
            Devices::Cpu { cores } if self.workers > 1 => {
                let share = (cores / self.workers).max(1);
                let first = (slot * share).min(cores.saturating_sub(1));
                let last = if slot + 1 == self.workers { cores } else { (first + share).min(cores) };
                Some((first, last.max(first + 1)))
            }
            _ => None,
        }
    }

    /// One line for the terminal and the report: how the workers share the machine.
    pub fn describe(&self) -> String {
        match &self.devices {
            Devices::Gpu => format!("{} workers, one GPU each", self.workers),
            Devices::Cpu { cores } if self.workers > 1 => format!(
                "{} workers sharing {cores} CPU cores: {}",
                self.workers,
                (0..self.workers)
                    .filter_map(|s| self.cores_of(s).map(|(a, b)| format!("worker {s} cores {a}-{}", b - 1)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Devices::Cpu { cores } => format!("1 worker on {cores} CPU cores"),
        }
    }
}

impl Backend for Local {
    fn slots(&self) -> usize {
        self.workers
    }

    fn name(&self) -> &str {
        "local"
    }

    fn slot_env(&self, slot: usize) -> Vec<(String, String)> {
        let mut env = vec![("AR_WORKER".to_string(), slot.to_string())];
        match self.devices {
            Devices::Gpu => {
                env.push(("CUDA_VISIBLE_DEVICES".into(), slot.to_string()));
                env.push(("AR_DEVICE_INDEX".into(), slot.to_string()));
            }
            Devices::Cpu { .. } => {
                if let Some((a, b)) = self.cores_of(slot) {
                    env.push(("RAYON_NUM_THREADS".into(), (b - a).to_string()));
                }
            }
        }
        env
    }

    fn job_name(&self, launch: &Launch, slot: usize) -> String {
        format!("local-{slot}-{}", launch.dir.name())
    }

    fn launch(&mut self, launch: &Launch, slot: usize) -> Result<()> {
        let log = std::fs::File::create(launch.dir.root.join("job.log"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("run-job")
            .arg(&launch.dir.root)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let cores = self.cores_of(slot);
        // SAFETY: between fork and exec: prctl and sched_setaffinity on a cpu_set_t built on
        // the stack, both async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                if let Some((a, b)) = cores {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    for c in a..b {
                        libc::CPU_SET(c, &mut set);
                    }
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("cannot start `ar run-job`")?;
        self.running.insert(slot, (launch.run, launch.dir.clone(), child));
        Ok(())
    }

    fn poll(&mut self) -> Result<Vec<(usize, Landed)>> {
        let mut out = Vec::new();
        let done: Vec<usize> = self
            .running
            .iter_mut()
            .filter_map(|(slot, (_, _, child))| matches!(child.try_wait(), Ok(Some(_))).then_some(*slot))
            .collect();
        for slot in done {
            let (run, dir, mut child) = self.running.remove(&slot).expect("present");
            let status = child.wait()?;
            let outcome = read_outcome(&dir);
            let why_lost =
                outcome.is_none().then(|| format!("`ar run-job` ended ({status}) without an outcome"));
            out.push((slot, Landed { run, dir, outcome, why_lost }));
        }
        Ok(out)
    }

    fn reattach(&mut self, _run: u64, _dir: &RunDir, _job: &str, _slot: usize) -> Result<bool> {
        // A local job dies with the `ar` that started it (PDEATHSIG).
        Ok(false)
    }

    fn cancel_all(&mut self) {
        for (_, _, child) in self.running.values() {
            // SAFETY: signalling the job's own process group; run-job stops its children.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
        }
    }
}
