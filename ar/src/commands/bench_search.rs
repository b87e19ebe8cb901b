//! `ar bench search`: how good is the search itself? One whole session with an agent on a
//! branch of its own (as `ar demo` runs one), then:
//! - the **verified gain**: best against the baseline on fresh seeds, val and test, with its
//!   interval, in units of σ (the spread of single baseline runs);
//! - **false keeps**: every kept change measured again against the incumbent it replaced, on
//!   fresh seeds; a keep whose fresh-seed interval does not lie above zero did not hold up
//!   (a mean barely above zero is not a confirmation: the bar is the one a keep had to pass);
//! - **experiments per hour** (decided candidates over the session's wall time) and **where
//!   the time went** (agent, build, train, scoring).
//! The result is printed as a table and one JSON line (for comparing agents and versions).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use prepare::data::{DataOptions, SourceSpec};
use prepare::pipeline::{PrepareOptions, prepare};
use prepare::profile::Profile;
use serde::Serialize;

use super::loop_cmd::{LoopArgs, run_loop};
use super::session_args::SessionArgs;
use crate::exec::build::find_repo;
use crate::git::Git;
use crate::journal::{RunKind, Status, read_events};
use crate::report::model::Model;
use crate::session::{Open, Session};
use crate::ui::Bars;

#[derive(Debug, Args)]
pub struct SearchBench {
    /// Profile (prepared on the synthetic corpus if its cache is missing).
    #[arg(long, default_value = "demo")]
    pub profile: String,
    /// The agent: evolve, random, cmd:…, openai:….
    #[arg(long, default_value = "evolve")]
    pub agent: String,
    /// Agent experiments.
    #[arg(long, default_value_t = 20)]
    pub experiments: usize,
    /// Fresh-seed pairs for the final verification and for each keep's check.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    /// Seed of the evolve/random agent.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Budget override (default: the profile's).
    #[arg(long)]
    pub budget: Option<String>,
    /// The repository (default: the one containing the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct SearchResult {
    agent: String,
    profile: String,
    budget: String,
    experiments: usize,
    kept: usize,
    false_keeps: usize,
    /// Per keep: its fresh-seed improvement over its incumbent, with the interval.
    keep_checks: Vec<KeepCheck>,
    sigma_x: Option<f64>,
    believed_gain: Option<f64>,
    verified_gain_val: Option<f64>,
    verified_interval_val: Option<(f64, f64)>,
    verified_gain_test: Option<f64>,
    verified_gain_sigmas: Option<f64>,
    experiments_per_hour: f64,
    seconds: f64,
    time: TimeSplit,
    tag: String,
}

/// One keep measured again against the incumbent it replaced.
#[derive(Debug, Clone, Serialize)]
struct KeepCheck {
    id: u64,
    gain: f64,
    low: f64,
    high: f64,
}

impl KeepCheck {
    /// Held up: the whole interval lies above zero.
    fn held(&self) -> bool {
        self.low > 0.0
    }
}

#[derive(Debug, Serialize)]
struct TimeSplit {
    agent: f64,
    build: f64,
    train: f64,
    score: f64,
    other: f64,
}

pub fn run(args: SearchBench) -> Result<()> {
    let repo = find_repo(&args.repo.clone().unwrap_or_else(|| PathBuf::from(".")))?;
    let git = Git::new(&repo);
    if !git.changed_since("HEAD")?.is_empty() {
        bail!("ar bench search runs on a new branch from HEAD: commit or stash your changes first");
    }
    let profile = Profile::by_name(&args.profile)?;
    if prepare::Cache::open(profile).is_err() {
        println!("Preparing the synthetic corpus for profile {} …", profile.name);
        let prep = PrepareOptions {
            profile,
            sources: vec![SourceSpec::Synthetic(None)],
            data: DataOptions::default(),
            cache_dir: None,
            force: false,
        };
        prepare(&prep, &Bars::new())?;
    }
    let home = git.current_branch()?;
    let tag = format!(
        "bench-{}-{}",
        args.agent.split(':').next().unwrap_or("agent"),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs()
    );
    let started = Instant::now();
    let loop_args = LoopArgs {
        tag: tag.clone(),
        agent: args.agent.clone(),
        resume: false,
        max_experiments: Some(args.experiments),
        until: None,
        model: None,
        api_key_env: "OPENAI_API_KEY".into(),
        agent_timeout: 1800,
        agent_retries: 2,
        seed: args.seed,
        agent_writable: Vec::new(),
        agent_unconfined: false,
        workers: 1,
        backend: "local".into(),
        slurm_args: Vec::new(),
        verify_pairs: args.pairs,
        repo: Some(repo.clone()),
        session: SessionArgs {
            profile: profile.name.into(),
            rule: "paired".into(),
            alpha: 0.05,
            max_pairs: 4,
            min_effect: 0.0,
            baseline_runs: 3,
            timeout: None,
            features: Vec::new(),
            budget: args.budget.clone(),
            scoring: None,
            allow_unconfined: false,
        },
        until_first_keep: None,
        first_keep_search_time: None,
    };
    let summary = run_loop(&repo, &loop_args);
    let loop_seconds = started.elapsed().as_secs_f64();
    // Each keep against the incumbent it replaced, on fresh seeds.
    let mut keep_checks = Vec::new();
    if let Ok(summary) = &summary {
        let events = read_events(&summary.journal)?;
        let keeps: Vec<(u64, String, String)> = crate::session::State::from_events(&events, "")
            .runs
            .values()
            .filter(|r| r.kind == RunKind::Candidate)
            .filter(|r| r.decision.as_ref().is_some_and(|d| d.status == Status::Keep))
            .filter_map(|r| Some((r.id, r.commit.clone()?, r.parent.clone())))
            .collect();
        if !keeps.is_empty() {
            let opts = loop_args.session.options("ar bench search")?;
            let mut session = Session::open(&repo, Some(&tag), Open::Resume, &opts)?;
            for (id, commit, parent) in keeps {
                println!("Checking keep #{id} against its incumbent on {} fresh seeds …", args.pairs);
                let v = session.verify_pair(&commit, &parent, args.pairs, 0.95)?;
                let check = match v.splits.iter().find(|s| s.split == "val") {
                    Some(s) => KeepCheck { id, gain: s.gain, low: s.low, high: s.high },
                    None => KeepCheck { id, gain: f64::NAN, low: f64::NAN, high: f64::NAN },
                };
                println!(
                    "  keep #{id}: {:+.6} [{:+.6}, {:+.6}] → {}",
                    check.gain,
                    check.low,
                    check.high,
                    if check.held() { "held up" } else { "did not hold up" }
                );
                keep_checks.push(check);
            }
            session.restore_tree()?;
        }
    }
    if let Some(branch) = &home {
        let _ = git.checkout(branch);
    }
    let summary = summary?;
    let events = read_events(&summary.journal)?;
    let model = Model::from_events(&events);
    let c = model.counts();
    let t = model.time_totals();
    let sigma_x = crate::session::State::from_events(&events, "").sigma_x();
    let v = model.verification.clone();
    let val = v.as_ref().and_then(|v| v.splits.iter().find(|s| s.split == "val").cloned());
    let test = v.as_ref().and_then(|v| v.splits.iter().find(|s| s.split == "test").cloned());
    let decided = c.kept_candidates + c.discarded_candidates;
    let result = SearchResult {
        agent: args.agent.clone(),
        profile: profile.name.into(),
        budget: args.budget.clone().unwrap_or_else(|| profile.default_budget().to_string()),
        experiments: c.candidates,
        kept: c.kept_candidates,
        false_keeps: keep_checks.iter().filter(|k| !k.held()).count(),
        keep_checks: keep_checks.clone(),
        sigma_x,
        believed_gain: v.as_ref().and_then(|v| v.believed),
        verified_gain_val: val.as_ref().map(|s| s.gain),
        verified_interval_val: val.as_ref().map(|s| (s.low, s.high)),
        verified_gain_test: test.as_ref().map(|s| s.gain),
        verified_gain_sigmas: val.as_ref().zip(sigma_x).map(|(s, x)| s.gain / x),
        experiments_per_hour: decided as f64 / (loop_seconds / 3600.0),
        seconds: started.elapsed().as_secs_f64(),
        time: TimeSplit { agent: t.agent, build: t.build, train: t.train, score: t.eval, other: t.other },
        tag: tag.clone(),
    };
    println!();
    println!(
        "Search benchmark: agent {}, profile {}, budget {}",
        result.agent, result.profile, result.budget
    );
    println!(
        "  experiments decided: {decided} ({} kept), {:.1} per hour",
        result.kept, result.experiments_per_hour
    );
    match (result.verified_gain_val, result.verified_interval_val) {
        (Some(g), Some((lo, hi))) => println!(
            "  verified gain (val, {} fresh pairs): {g:+.6} [{lo:+.6}, {hi:+.6}] = {} baseline σ; test {}",
            args.pairs,
            result.verified_gain_sigmas.map_or("?".to_string(), |s| format!("{s:.1}")),
            result.verified_gain_test.map_or("?".to_string(), |g| format!("{g:+.6}"))
        ),
        _ => println!("  verified gain: none (nothing was kept)"),
    }
    println!(
        "  false keeps: {} of {} (keeps whose fresh-seed interval over their incumbent does not lie above zero)",
        result.false_keeps, result.kept
    );
    let total = t.total.max(1e-9);
    println!(
        "  time: agent {:.0}%, build {:.0}%, train {:.0}%, scoring {:.0}%, other {:.0}% of {:.0} s",
        100.0 * t.agent / total,
        100.0 * t.build / total,
        100.0 * t.train / total,
        100.0 * t.eval / total,
        100.0 * t.other / total,
        total
    );
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
