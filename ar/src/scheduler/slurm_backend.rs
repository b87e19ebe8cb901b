//! The Slurm backend: every run an `sbatch` job of `ar run-job <run_dir>`, on the shared
//! filesystem the run directory lives on; `ar` (on a login node, say) submits, polls and
//! reads outcomes, and stays the only writer of the journal.
//!
//! A job's name is deterministic (`ar-<tag>-<run dir>`) and journaled (`launched`) before
//! it is submitted; submission looks the name up first, so a crash between the two neither
//! loses nor duplicates a job. A run lands when its outcome file appears; a job that left
//! the queue without one (cancelled, node failure, past its time limit) lands as lost, and
//! the pool measures it again once. `reattach` finds a resumed session's jobs by name.
//! GPUs are Slurm's business (`--gres`, which sets CUDA_VISIBLE_DEVICES for the job).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::slurm::{BatchJob, Slurm, State};
use crate::exec::job::RunDir;
use crate::session::pool::{Backend, Landed, Launch, read_outcome};

/// Seconds between queue queries (outcome files are looked at every tick).
const QUERY_EVERY: Duration = Duration::from_secs(2);

pub struct SlurmBackend {
    client: Slurm,
    workers: usize,
    tag: String,
    exe: PathBuf,
    running: BTreeMap<usize, (u64, RunDir, String)>,
    last_query: Instant,
}

impl SlurmBackend {
    pub fn new(workers: usize, slurm_args: &[String], tag: &str) -> Result<SlurmBackend> {
        let exe = std::env::current_exe().context("cannot find the ar binary the jobs run")?;
        let mut client = Slurm::from_env();
        client.extra_args = slurm_args.to_vec();
        client.list("ar-").context(
            "Slurm does not answer: is SLURM_CONF set and the controller up (`sinfo`)? \
             scripts/slurm-up.sh starts a one-node cluster on 127.0.0.1",
        )?;
        Ok(SlurmBackend {
            client,
            workers: workers.max(1),
            tag: tag.to_string(),
            exe,
            running: BTreeMap::new(),
            last_query: Instant::now() - QUERY_EVERY,
        })
    }

    fn command(&self, dir: &RunDir) -> Vec<String> {
        vec![self.exe.display().to_string(), "run-job".into(), dir.root.display().to_string()]
    }
}

impl Backend for SlurmBackend {
    fn slots(&self) -> usize {
        self.workers
    }

    fn name(&self) -> &str {
        "slurm"
    }

    fn slot_env(&self, slot: usize) -> Vec<(String, String)> {
        vec![("AR_WORKER".to_string(), slot.to_string())]
    }

    fn job_name(&self, launch: &Launch, _slot: usize) -> String {
        format!("ar-{}-{}", self.tag, launch.dir.name())
    }

    fn launch(&mut self, launch: &Launch, slot: usize) -> Result<()> {
        let name = self.job_name(launch, slot);
        // Idempotent: a job of this name may already be queued by an `ar` killed after
        // submitting; `submit` looks the name up first.
        self.client.submit(&BatchJob {
            name: name.clone(),
            workdir: launch.dir.root.clone(),
            command: self.command(&launch.dir),
            output: launch.dir.root.join("slurm.out"),
            args: vec![format!("--comment=ar:{}:{}", self.tag, launch.run)],
        })?;
        self.running.insert(slot, (launch.run, launch.dir.clone(), name));
        Ok(())
    }

    fn poll(&mut self) -> Result<Vec<(usize, Landed)>> {
        let mut out = Vec::new();
        let query = self.last_query.elapsed() >= QUERY_EVERY;
        if query {
            self.last_query = Instant::now();
        }
        let slots: Vec<usize> = self.running.keys().copied().collect();
        for slot in slots {
            let (run, dir, name) = self.running.get(&slot).cloned().expect("present");
            if let Some(outcome) = read_outcome(&dir) {
                self.running.remove(&slot);
                out.push((slot, Landed { run, dir, outcome: Some(outcome), why_lost: None }));
                continue;
            }
            if !query {
                continue;
            }
            let state = match self.client.find(&name) {
                Ok(Some(js)) if !js.state.is_terminal() => continue, // pending or running
                Ok(found) => found,
                // The controller does not answer: ask again later, the job is not lost.
                Err(e) if e.is_unreachable() => continue,
                Err(e) => return Err(e.into()),
            };
            // Ended without an outcome (yet): the job may have written it as it ended.
            if let Some(outcome) = read_outcome(&dir) {
                self.running.remove(&slot);
                out.push((slot, Landed { run, dir, outcome: Some(outcome), why_lost: None }));
                continue;
            }
            let why = match state {
                Some(s) if s.state == State::Completed => {
                    "the Slurm job completed without writing an outcome".to_string()
                }
                Some(s) => {
                    format!("the Slurm job ended {:?} (exit {:?}) without an outcome", s.state, s.exit_code)
                }
                None => "the Slurm job left the queue without an outcome".to_string(),
            };
            self.running.remove(&slot);
            out.push((slot, Landed { run, dir, outcome: None, why_lost: Some(why) }));
        }
        Ok(out)
    }

    fn reattach(&mut self, run: u64, dir: &RunDir, job: &str, slot: usize) -> Result<bool> {
        match self.client.find(job)? {
            Some(js) if !js.state.is_terminal() => {
                self.running.insert(slot, (run, dir.clone(), job.to_string()));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn cancel_all(&mut self) {
        for (_, _, name) in self.running.values() {
            if let Ok(Some(job)) = self.client.find(name)
                && !job.state.is_terminal()
            {
                let _ = self.client.cancel(&job.job_id);
            }
        }
    }
}
