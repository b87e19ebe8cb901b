//! The experiment step's workload-specific parts: what a candidate's change is, how it is
//! committed, how one measurement is taken, and the checks a keep must pass.
//!
//! For this repository's GPT the change is the train file, committed alone, built once per
//! commit and scored by `ar` (`step.rs`). For a declared command workload
//! (`autoresearch.toml`) the change is every changed file the editable patterns match,
//! committed together (the scope guard has already refused anything else); a measurement
//! is `exec::command::measure` in the working tree checked out at the commit measured, and
//! its metric takes the place val_bpb has in the journal, so the paired rule, the noise
//! pool, results.tsv and the reports work unchanged. The record says where the number came
//! from (`format` 1: computed by the program itself, `profile` "command"), since the
//! program that prints it is the code the agent edits.
//!
//! Before a keep becomes final the workload's checks run on the candidate's tree; a failure
//! turns the keep into a discard whose reason names it (the decision stays in the journal
//! with its evidence, so the report shows what the change would have gained).

use anyhow::{Result, bail};

use super::{RunOutcome, Session};
use crate::exec::command::{self, CommandOutcome};
use crate::exec::job::RunDir;
use crate::journal::{Status, Timings};
use crate::workload::{CommandSpec, Workload};

impl Session {
    /// The changed files a candidate consists of (editable ones only; the guard has
    /// rejected a turn with any other).
    fn changed_editable(&self, best: &str) -> Result<Vec<String>> {
        let changed = self.git.changed_since(best)?;
        Ok(self.workload.scope(&changed).editable)
    }

    /// sha256 identifying the candidate's change against `best`: the train file's diff for
    /// the GPT, each changed editable path with its new content (or `deleted`) otherwise.
    pub(crate) fn candidate_diff_sha256(&self, best: &str) -> Result<String> {
        if self.workload == Workload::Gpt {
            let diff = self.git.diff_train_file(best)?;
            return Ok(prepare::manifest::sha256_hex(diff.as_bytes()));
        }
        let mut all = Vec::new();
        for path in self.changed_editable(best)? {
            all.extend_from_slice(path.as_bytes());
            all.push(0);
            match std::fs::read(self.repo.join(&path)) {
                Ok(bytes) => all.extend_from_slice(&bytes),
                Err(_) => all.extend_from_slice(b"deleted"),
            }
            all.push(0);
        }
        Ok(prepare::manifest::sha256_hex(&all))
    }

    /// Commits the candidate: the train file for the GPT, exactly the changed editable
    /// files otherwise.
    pub(crate) fn commit_edit(&self, best: &str, message: &str) -> Result<String> {
        if self.workload == Workload::Gpt {
            return self.git.commit_train_file(message);
        }
        let paths = self.changed_editable(best)?;
        if paths.is_empty() {
            bail!("nothing to commit: no editable file differs from {}", &best[..7.min(best.len())]);
        }
        self.git.commit_paths(&paths, message)
    }

    /// The baseline of a command workload with the agent's edit already in the tree: the
    /// changed editable files are set aside (in memory), the baseline measured on the
    /// unmodified tree, and the files put back.
    pub(crate) fn ensure_baseline_keeping_edits(&mut self) -> Result<()> {
        let best = self.best_commit();
        let scope = self.workload.scope(&self.git.changed_since(&best)?);
        if scope.editable.is_empty() || !scope.offending.is_empty() {
            return self.ensure_baseline();
        }
        let saved: Vec<(String, Option<Vec<u8>>)> =
            scope.editable.iter().map(|p| (p.clone(), std::fs::read(self.repo.join(p)).ok())).collect();
        self.restore_tree()?;
        let result = self.ensure_baseline();
        for (path, bytes) in saved {
            let full = self.repo.join(&path);
            match bytes {
                Some(b) => {
                    if let Some(dir) = full.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::write(&full, b)?
                }
                None => {
                    let _ = std::fs::remove_file(&full);
                }
            }
        }
        result
    }

    /// One measurement of a command workload: the tree moved to `commit`, then build and
    /// run in a fresh run directory at seed index `seed`. Journals `finished`.
    pub(crate) fn measure_command(
        &mut self,
        spec: &CommandSpec,
        id: u64,
        commit: &str,
        seed: u64,
        mut timings: Timings,
    ) -> Result<RunOutcome> {
        let description = self.description_of(id);
        self.live.phase(id, "run", &description);
        if self.git.head()? != commit || !self.git.changed_since(commit)?.is_empty() {
            self.git.reset_hard(commit)?;
        }
        let dir = RunDir::create(&self.runs_dir(), id)?;
        let o = command::measure(spec, &self.repo, &dir, seed, self.timeout, self.sandbox, &self.stop)?;
        timings.build = o.build_seconds;
        let record = o.metric.map(|v| self.command_record(v, &o, commit));
        let outcome = RunOutcome {
            crash: o.crash,
            record,
            reason: o.reason,
            excerpt: o.excerpt,
            seconds: o.run_seconds,
            score_seconds: 0.0,
            run: Some(o.run),
            leaked: o.leaked,
            sandbox: o.sandbox,
            seed: Some(seed),
        };
        self.record_finished(id, outcome, timings)
    }

    /// The journal record of a command workload's measurement: its metric where the GPT's
    /// val_bpb goes, what `ar` timed itself, and nothing it cannot know.
    fn command_record(&self, value: f64, o: &CommandOutcome, commit: &str) -> prepare::RunRecord {
        prepare::RunRecord {
            format: 1,
            val_bpb: value,
            test_bpb: None,
            training_seconds: o.run_seconds,
            total_seconds: o.build_seconds + o.run_seconds,
            compile_seconds: o.build_seconds,
            eval_seconds: 0.0,
            peak_mem_mb: 0.0,
            mfu_percent: 0.0,
            total_tokens_m: 0.0,
            num_steps: 0,
            num_params_m: 0.0,
            depth: 0,
            profile: "command".into(),
            profile_hash: String::new(),
            data: format!("{} (program output)", self.workload.name()),
            synthetic_data: false,
            tokenizer_sha256: String::new(),
            device: "cpu".into(),
            precision: String::new(),
            hardware: prepare::hardware::Hardware::detect(None),
            seed: o.seed,
            train_sha256: commit.to_string(),
            budget: String::new(),
            train_wall_seconds: o.run_seconds,
            scoring: None,
            manifest_sha256: String::new(),
            checkpoint_sha256: String::new(),
        }
    }

    /// Runs the workload's checks on candidate `id`'s tree before its keep is written:
    /// the keep stands when they pass (or there are none), else it becomes a discard naming
    /// the failure (with the fenced tail of the checks' output for the agent).
    pub(crate) fn checks_before_keep(
        &mut self,
        id: u64,
        commit: &str,
        reason: String,
    ) -> Result<(Status, String, Option<String>)> {
        let Workload::Command(spec) = &self.workload else { return Ok((Status::Keep, reason, None)) };
        if spec.checks.is_none() {
            return Ok((Status::Keep, reason, None));
        }
        let spec = spec.clone();
        self.live.phase(id, "checks", &self.description_of(id));
        if self.git.head()? != commit || !self.git.changed_since(commit)?.is_empty() {
            self.git.reset_hard(commit)?;
        }
        let dir = RunDir::create(&self.runs_dir(), id)?;
        let checked = command::checks(&spec, &self.repo, &dir, self.timeout, self.sandbox, &self.stop)?;
        if checked.passed {
            return Ok((Status::Keep, format!("{reason}; checks passed ({:.1}s)", checked.seconds), None));
        }
        let why = checked.reason.unwrap_or_else(|| "the checks failed".into());
        if checked.interrupted {
            return Ok((Status::Interrupted, format!("{reason}; not kept: {why}"), None));
        }
        Ok((
            Status::Discard,
            format!("discarded: the checks failed ({why}); the measurements alone said: {reason}"),
            checked.excerpt,
        ))
    }
}
