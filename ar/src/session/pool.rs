//! Many measurements at once: the session's scheduler over a pool of workers (the devices
//! of one machine, or Slurm jobs), with `ar` the only writer of the journal.
//!
//! Each tick: collect the runs that landed and journal them; for every open candidate ask
//! [`Session::next_action`] what it needs (the same function the one-at-a-time path and
//! recovery use) and launch it when a worker is free and nobody is already measuring that
//! commit at that seed; decide the candidates whose pairs are complete; and when workers are
//! still free, ask the agent for a new candidate. Builds happen here, one at a time, in the
//! repository's one working tree, and are cached per commit; workers only run staged
//! binaries.
//!
//! Honest in parallel: a keep is decided by the paired sequential rule, never by the best of
//! N runs; a candidate whose incumbent was replaced while it was measured cannot be kept
//! against the old one — its change is re-based onto the new incumbent as a new candidate
//! (or discarded, when it does not apply). Identical diffs against the same incumbent are
//! never measured twice.
//!
//! Launches are journaled (`launched`) before the job starts, so after `kill -9` the next
//! `ar loop --resume` finds every run: a finished one by its outcome file, a running Slurm
//! job by its name; a lost one is measured again once.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;

use super::state::Result_;
use super::step::{Action, Staged};
use super::{Outcome, Session};
use crate::exec::job::{JobOutcome, JobSpec, RunDir};
use crate::journal::{CrashClass, Event, RunKind, Timings, now};

/// A run handed to a worker.
pub struct Launch {
    pub run: u64,
    pub dir: RunDir,
    pub spec: JobSpec,
}

/// A run that came back.
pub struct Landed {
    pub run: u64,
    pub dir: RunDir,
    /// None when the job was lost (killed by the scheduler, node failure) without an outcome.
    pub outcome: Option<JobOutcome>,
    pub why_lost: Option<String>,
}

/// Where runs execute.
pub trait Backend {
    /// Workers (concurrent runs).
    fn slots(&self) -> usize;
    /// The environment that pins a run to worker `slot`'s device (CUDA_VISIBLE_DEVICES,
    /// RAYON_NUM_THREADS, …).
    fn slot_env(&self, slot: usize) -> Vec<(String, String)>;
    /// `local` or `slurm`.
    fn name(&self) -> &str;
    /// Starts `launch` on worker `slot`; returns the job's name (journaled before the start
    /// for Slurm, so `job_name` must be deterministic).
    fn job_name(&self, launch: &Launch, slot: usize) -> String;
    fn launch(&mut self, launch: &Launch, slot: usize) -> Result<()>;
    /// Runs that ended since the last call.
    fn poll(&mut self) -> Result<Vec<(usize, Landed)>>;
    /// Re-attaches to a run journaled as launched by an earlier `ar` (resume): `Some` when it
    /// is still running (it will land through `poll`), None when it is gone.
    fn reattach(&mut self, run: u64, dir: &RunDir, job: &str, slot: usize) -> Result<bool>;
    /// Stops every run it owns.
    fn cancel_all(&mut self);
}

/// What one agent turn produced, as the pool sees it.
pub enum Turned {
    /// A committed candidate (its measurements are the pool's job now).
    Candidate(u64),
    /// The turn ended without an experiment (journaled by the caller).
    Nothing,
    /// The turn produced a decided outcome at once (a rejected change).
    Decided(Outcome),
}

/// A run in flight.
struct Flight {
    run: u64,
    commit: String,
    seed: u64,
    timings: Timings,
}

impl Session {
    /// Runs the pool until `stop_reason` says so. `turn` asks the agent for one candidate.
    pub fn run_pool(
        &mut self,
        backend: &mut dyn Backend,
        turn: &mut dyn FnMut(&mut Session) -> Result<Turned>,
        stop_reason: &mut dyn FnMut(&Session) -> Option<String>,
        report: &mut dyn FnMut(&Outcome),
    ) -> Result<String> {
        let mut flights: BTreeMap<usize, Flight> = BTreeMap::new();
        self.reattach(backend, &mut flights)?;
        let mut stopping: Option<String> = None;
        loop {
            // 1. What landed.
            for (slot, landed) in backend.poll()? {
                let Some(f) = flights.remove(&slot) else { continue };
                self.land(f, landed, report)?;
            }
            let interrupted = self.stop.load(std::sync::atomic::Ordering::SeqCst);
            if interrupted && stopping.is_none() {
                backend.cancel_all();
                stopping = Some("interrupted (Ctrl-C)".into());
            }
            if stopping.is_none() {
                stopping = stop_reason(self);
            }
            // Stopping: no new agent turns, but the candidates already started are measured
            // until decided (unless interrupted); then the pool returns.
            if let Some(reason) = &stopping
                && flights.is_empty()
                && (interrupted || self.state().open_candidates().is_empty())
            {
                return Ok(reason.clone());
            }
            let free =
                |flights: &BTreeMap<usize, Flight>, n: usize| (0..n).find(|s| !flights.contains_key(s));
            // 2. The baseline, at every missing seed, in parallel.
            let state = self.state();
            let k = self.rule.baselines_needed();
            let mut waiting = false;
            if state.baseline_values.len() < k {
                if state.baselines_tried >= k + 2 + flights.len() && flights.is_empty() {
                    anyhow::bail!("the baseline crashed repeatedly: the unmodified train file does not run");
                }
                let in_flight: Vec<u64> = flights.values().map(|f| f.seed).collect();
                let missing: Vec<u64> = (0..k as u64)
                    .filter(|j| state.value(&state.best_commit, *j).is_none() && !in_flight.contains(j))
                    .collect();
                for seed in missing {
                    if interrupted {
                        break;
                    }
                    let Some(slot) = free(&flights, backend.slots()) else { break };
                    let open = state
                        .runs
                        .values()
                        .find(|r| {
                            r.kind == RunKind::Baseline
                                && r.seed == seed
                                && r.decision.is_none()
                                && !r.interrupted
                        })
                        .map(|r| r.id);
                    let id = match open {
                        Some(id) => id,
                        None => {
                            let id = self.journal.next_id();
                            self.journal.append(Event::Started {
                                id,
                                time: now(),
                                kind: RunKind::Baseline,
                                parent: state.best_commit.clone(),
                                description: format!("baseline (seed {seed})"),
                                hypothesis: None,
                                diff_sha256: String::new(),
                                rerun_of: None,
                                seed: Some(seed),
                            })?;
                            id
                        }
                    };
                    self.start(
                        backend,
                        &mut flights,
                        slot,
                        id,
                        &state.best_commit.clone(),
                        seed,
                        Timings::default(),
                        report,
                    )?;
                }
                sleep_tick(backend);
                continue;
            }
            // 3. Open candidates: their next measurement, or their decision.
            for id in self.state().open_candidates() {
                let state = self.state();
                match self.next_action(&state, id) {
                    Action::Close(run) => self.close_interrupted(run)?,
                    Action::Measure { id: existing, kind, commit, seed } => {
                        if flights.values().any(|f| f.commit == commit && f.seed == seed) {
                            continue; // someone is measuring exactly this
                        }
                        if interrupted {
                            continue;
                        }
                        let Some(slot) = free(&flights, backend.slots()) else {
                            waiting = true;
                            continue;
                        };
                        let run = match existing {
                            Some(run) => run,
                            None => self.start_helper(id, kind, &commit, seed)?,
                        };
                        self.start(
                            backend,
                            &mut flights,
                            slot,
                            run,
                            &commit,
                            seed,
                            Timings::default(),
                            report,
                        )?;
                    }
                    Action::Decide(decided) => {
                        let parent = state.runs.get(&id).map(|r| r.parent.clone()).unwrap_or_default();
                        if parent != state.best_commit && decided.is_keep() {
                            let out = self.supersede(id, &state.best_commit)?;
                            report(&out);
                        } else {
                            let out = self.decide_candidate(id, decided, None)?;
                            report(&out);
                        }
                    }
                }
            }
            // 4. Free workers and nothing waiting: a new candidate from the agent.
            if stopping.is_none() && !waiting && free(&flights, backend.slots()).is_some() {
                match turn(self)? {
                    Turned::Candidate(_) | Turned::Nothing => {}
                    Turned::Decided(out) => report(&out),
                }
                continue;
            }
            sleep_tick(backend);
        }
    }

    /// Stages and launches run `run` (commit at seed) on `slot`.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        backend: &mut dyn Backend,
        flights: &mut BTreeMap<usize, Flight>,
        slot: usize,
        run: u64,
        commit: &str,
        seed: u64,
        timings: Timings,
        report: &mut dyn FnMut(&Outcome),
    ) -> Result<()> {
        match self.stage_run(run, commit, seed, timings)? {
            Staged::Done(outcome) => {
                // A build failure ends the run here; helper runs are decided at once.
                self.after_finished(run, &outcome, report)?;
            }
            Staged::Ready { dir, mut spec, timings } => {
                spec.env.extend(backend.slot_env(slot));
                dir.write_spec(&spec)?;
                let launch = Launch { run, dir, spec };
                let job = backend.job_name(&launch, slot);
                self.journal.append(Event::Launched {
                    id: run,
                    time: now(),
                    run: launch.dir.name(),
                    backend: backend.name().to_string(),
                    worker: slot,
                    job,
                })?;
                backend.launch(&launch, slot)?;
                flights.insert(slot, Flight { run, commit: commit.to_string(), seed, timings });
            }
        }
        Ok(())
    }

    /// Journals a landed run; a lost job is measured again once (a new run id).
    fn land(&mut self, f: Flight, landed: Landed, report: &mut dyn FnMut(&Outcome)) -> Result<()> {
        let outcome = match landed.outcome {
            Some(o) => self.complete_run(f.run, &f.commit, &landed.dir, o, f.timings)?,
            None => {
                let lost = super::RunOutcome {
                    crash: Some(CrashClass::Lost),
                    reason: Some(
                        landed.why_lost.unwrap_or_else(|| "the job ended without an outcome".into()),
                    ),
                    run: Some(landed.dir.name()),
                    ..super::RunOutcome::default()
                };
                self.record_finished(f.run, lost, f.timings)?
            }
        };
        self.after_finished(f.run, &outcome, report)
    }

    /// After a run is journaled: baseline and helper runs get their decision now (a lost
    /// one is replaced by a new run of the same measurement, once).
    fn after_finished(
        &mut self,
        run: u64,
        outcome: &super::RunOutcome,
        report: &mut dyn FnMut(&Outcome),
    ) -> Result<()> {
        let state = self.state();
        let Some(r) = state.runs.get(&run).cloned() else { return Ok(()) };
        if r.kind == RunKind::Candidate {
            return Ok(()); // decided by next_action when its pairs are in
        }
        let what = if r.kind == RunKind::Baseline { "baseline measurement" } else { "measurement" };
        let out = self.decide_measurement(run, outcome, what)?;
        report(&out);
        // A lost run is measured again by whoever needs it: the baseline phase launches a
        // missing seed anew, a candidate's next action re-queues a lost pair once.
        Ok(())
    }

    /// Runs journaled as launched by an earlier `ar` and never finished: taken from their
    /// outcome file if they completed, re-attached if still running, else left to be
    /// measured again.
    fn reattach(&mut self, backend: &mut dyn Backend, flights: &mut BTreeMap<usize, Flight>) -> Result<()> {
        let state = self.state();
        let launched: Vec<(u64, String, usize, String)> = self
            .journal
            .events()
            .iter()
            .filter_map(|e| match e {
                Event::Launched { id, run, worker, job, backend: b, .. } if b == backend.name() => {
                    Some((*id, run.clone(), *worker, job.clone()))
                }
                _ => None,
            })
            .collect();
        for (id, run, slot, job) in launched {
            let Some(r) = state.runs.get(&id) else { continue };
            if r.result != Result_::Open || r.interrupted || r.decision.is_some() {
                continue;
            }
            let dir = RunDir { root: self.dir.join("runs").join(&run) };
            let commit = r.commit.clone().unwrap_or_else(|| r.parent.clone());
            if let Some(outcome) = read_outcome(&dir) {
                let mut noop = |_: &Outcome| {};
                let outcome = self.complete_run(id, &commit, &dir, outcome, Timings::default())?;
                self.after_finished(id, &outcome, &mut noop)?;
                continue;
            }
            if backend.reattach(id, &dir, &job, slot)? {
                println!("Re-attached to run {id} ({job}), still running.");
                flights.insert(slot, Flight { run: id, commit, seed: r.seed, timings: Timings::default() });
            } else {
                // Gone without an outcome while `ar` was away (cancelled, killed with it, a
                // node lost): lost, and measured again once.
                let flight = Flight { run: id, commit, seed: r.seed, timings: Timings::default() };
                let why = format!("{job} ended while ar was not running, without an outcome");
                let mut noop = |_: &Outcome| {};
                self.land(flight, Landed { run: id, dir, outcome: None, why_lost: Some(why) }, &mut noop)?;
            }
        }
        Ok(())
    }
}

/// outcome.json of a run directory, if the job wrote one.
pub fn read_outcome(dir: &RunDir) -> Option<JobOutcome> {
    let bytes = crate::exec::child::read_untrusted(&dir.outcome(), 64 << 20).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn sleep_tick(_backend: &dyn Backend) {
    std::thread::sleep(Duration::from_millis(200));
}

impl super::step::Decided {
    pub(crate) fn is_keep(&self) -> bool {
        matches!(self, super::step::Decided::Rule(crate::stats::Verdict::Keep(_), _))
    }
}
