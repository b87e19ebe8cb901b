//! `ar loop --tag T --agent A`: the supervisor owns the loop and the agent is called once
//! per experiment — ask for one change, run it as `ar experiment` would, feed the compact
//! result back through the digest, repeat. It never stops on its own accord except at
//! `--max-experiments` (or, with `--until-first-keep`, the first keep after it), `--until` or
//! Ctrl-C (graceful: the current run is abandoned, the branch left on the best commit, the
//! reason journaled).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::session_args::SessionArgs;
use crate::agent::{AgentOptions, Outcome as AgentOutcome, Turn, parse_agent};
use crate::git::TRAIN_FILE;
use crate::journal::{Event, Status, now};
use crate::session::{Open, Session};
use crate::workload::Workload;

/// Agent turns in a row without a usable change before the loop gives up.
const MAX_BARREN_TURNS: usize = 5;

#[derive(Debug, Args)]
pub struct LoopArgs {
    /// Session tag: the branch is autoresearch/<tag> (e.g. mar5).
    #[arg(long)]
    pub tag: String,
    /// Who proposes changes: evolve (built in, no LLM), cmd:<agent CLI> (e.g.
    /// 'cmd:claude -p'), or openai:<URL> with --model.
    #[arg(long, default_value = "evolve")]
    pub agent: String,
    /// Continue an existing session (after a crash, a reboot or Ctrl-C).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many agent experiments (this invocation).
    #[arg(long)]
    pub max_experiments: Option<usize>,
    /// Stop at this time: HH:MM (local, next occurrence), or a duration like 8h or 90m.
    #[arg(long)]
    pub until: Option<String>,
    /// Model name for openai: agents.
    #[arg(long)]
    pub model: Option<String>,
    /// Environment variable holding the API key for openai: agents.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,
    /// Seconds an agent turn may take.
    #[arg(long, default_value_t = 1800)]
    pub agent_timeout: u64,
    /// Retries of a failed agent turn before it is skipped.
    #[arg(long, default_value_t = 2)]
    pub agent_retries: u32,
    /// Seed of the evolve agent.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A directory (or file) a `cmd:` agent may write for its own state, e.g. ~/.claude
    /// (repeatable). Besides these it may write only train/src/ and its own TMPDIR.
    #[arg(long = "agent-writable")]
    pub agent_writable: Vec<PathBuf>,
    /// Run a `cmd:` agent with all of your rights (no landlock around it). Journaled.
    #[arg(long)]
    pub agent_unconfined: bool,
    /// At the end, measure the best and the base commit on this many fresh seeds (val and
    /// test) and report the real gain with its interval (0: skip).
    #[arg(long, default_value_t = 3)]
    pub verify_pairs: usize,
    /// Runs at once. Local: one per device (GPUs with a GPU build, else the CPU cores split
    /// between them); Slurm: jobs in flight.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Where runs execute: `local` (this machine) or `slurm` (each run an sbatch job).
    #[arg(long, default_value = "local")]
    pub backend: String,
    /// Extra sbatch arguments for every job (repeatable), e.g. --slurm-arg=--partition=gpu
    /// --slurm-arg=--gres=gpu:1 --slurm-arg=--time=00:20:00.
    #[arg(long = "slurm-arg", allow_hyphen_values = true)]
    pub slurm_args: Vec<String>,
    /// The repository (default: the one containing the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
    #[command(flatten)]
    pub session: SessionArgs,
    /// If nothing was kept when --max-experiments is reached, go on until the first keep, up
    /// to N experiments in all (one worker; what `ar demo` does). Where to stop then depends
    /// on the outcomes, so the loop's believed gain leans high; the verification on fresh
    /// seeds at the end does not.
    #[arg(long, value_name = "N", requires = "max_experiments")]
    pub until_first_keep: Option<usize>,
    /// With --until-first-keep: search time at most past which no more experiments are
    /// started, counted from the first agent turn (after the baselines). `ar demo` only.
    #[arg(skip)]
    pub first_keep_search_time: Option<Duration>,
}

/// What `run` reports back (for `ar demo`).
pub struct LoopSummary {
    pub journal: PathBuf,
    pub experiments: usize,
    pub reason: String,
}

pub fn run(args: LoopArgs) -> Result<ExitCode> {
    let repo = crate::workload::find_repo(&args.repo.clone().unwrap_or_else(|| PathBuf::from(".")))?;
    let summary = run_loop(&repo, &args)?;
    println!("Stopped: {}. Journal: {}", summary.reason, summary.journal.display());
    Ok(ExitCode::SUCCESS)
}

/// The loop itself, shared with `ar demo`.
pub fn run_loop(repo: &Path, args: &LoopArgs) -> Result<LoopSummary> {
    let deadline = args.until.as_deref().map(parse_until).transpose()?;
    if args.until_first_keep.is_some() && (args.workers > 1 || args.backend != "local") {
        bail!(
            "--until-first-keep runs experiments one at a time: drop it, or use --workers 1 --backend local"
        );
    }
    let mut agent_opts = AgentOptions {
        model: args.model.clone(),
        api_key_env: args.api_key_env.clone(),
        timeout: Duration::from_secs(args.agent_timeout.max(1)),
        retries: args.agent_retries,
        seed: args.seed,
        features: args.session.features.clone(),
        ..AgentOptions::default()
    };
    let mut agent = parse_agent(&args.agent, &agent_opts)?;
    let mut opts = args.session.options(&agent.name())?;
    // Refused before a session branch is made (checked again on the session's own tree).
    if let Ok(w @ Workload::Command(_)) = crate::workload::load(repo) {
        check_workload_loop(args, &w)?;
    }
    if args.agent.starts_with("cmd:") {
        opts.agent = format!(
            "{} ({})",
            agent.name(),
            if args.agent_unconfined { "unconfined" } else { "confined: writes the editable files only" }
        );
    }
    let how = if args.resume { Open::Resume } else { Open::Create };
    let mut session = Session::open(repo, Some(&args.tag), how, &opts)?;
    crate::interrupt::install(session.stop.clone());
    let workload = session.workload.clone();
    check_workload_loop(args, &workload)?;
    agent_opts.max_seq_len = Some(session.profile.max_seq_len);
    agent_opts.log_dir = Some(session.dir.join("agent"));
    if !args.agent_unconfined {
        let extra: Vec<PathBuf> =
            args.agent_writable.iter().map(|p| crate::agent::confine::expand_home(p)).collect();
        agent_opts.confine = Some(match &workload {
            Workload::Gpt => {
                crate::agent::confine::AgentConfinement::for_repo(repo, &session.cache_root, &extra)
            }
            w => crate::agent::confine::AgentConfinement::for_workload(repo, &session.cache_root, &extra, w),
        });
    }
    if let Workload::Command(_) = &workload {
        agent_opts.workload = Some(workload.clone());
    }
    agent = parse_agent(&args.agent, &agent_opts)?;
    let what = match &workload {
        Workload::Gpt => format!("profile {}", session.profile.name),
        w => format!(
            "workload {} | metric {} ({}, {})",
            w.name(),
            w.metric_name(),
            crate::workload::direction_name(w.direction()),
            w.metric_source_label()
        ),
    };
    println!(
        "Session {} on {} | {what} | agent {} | journal {}",
        session.tag,
        session.branch,
        agent.name(),
        session.journal.path().display()
    );
    let program_path = repo.join("program.md");
    let program = match &workload {
        Workload::Command(spec) if !program_path.exists() => crate::agent::prompt::default_program(spec),
        _ => std::fs::read_to_string(&program_path)
            .with_context(|| format!("cannot read {}", program_path.display()))?,
    };

    let search_started = std::cell::OnceCell::new();
    let extended = std::cell::Cell::new(false);
    let stop_reason = |session: &Session, done: usize| -> Option<String> {
        let search_started = *search_started.get_or_init(Instant::now);
        if session.stop.load(Ordering::SeqCst) {
            return Some("interrupted (Ctrl-C)".into());
        }
        if let Some(m) = args.max_experiments.filter(|m| done >= *m) {
            let Some(limit) = args.until_first_keep else {
                return Some(format!("--max-experiments {} reached", done));
            };
            let kept = session.state().keeps;
            if kept > 0 {
                return Some(format!("{done} experiments, {kept} kept"));
            }
            if done >= limit {
                return Some(format!("{done} experiments, none kept (--until-first-keep {limit})"));
            }
            let searched = search_started.elapsed();
            if let Some(most) = args.first_keep_search_time.filter(|most| searched >= *most) {
                return Some(format!(
                    "{done} experiments, none kept in {:.0} min of search (the limit: {:.0} min)",
                    searched.as_secs_f64() / 60.0,
                    most.as_secs_f64() / 60.0
                ));
            }
            if !extended.replace(true) {
                let time = args
                    .first_keep_search_time
                    .map(|t| format!(" and {:.0} min of search", t.as_secs_f64() / 60.0))
                    .unwrap_or_default();
                let plural = if m == 1 { "" } else { "s" };
                println!(
                    "Nothing kept in {m} experiment{plural}: going on until the first keep (at most {limit} \
                     experiments{time})."
                );
            }
        }
        if deadline.is_some_and(|d| SystemTime::now() >= d) {
            return Some("--until reached".into());
        }
        None
    };

    if args.workers > 1 || args.backend != "local" {
        let reason = run_pooled(repo, args, &mut session, agent.as_mut(), &program, deadline)?;
        return finish(args, session, reason);
    }
    let mut done = 0usize;
    let mut barren = 0usize;
    let reason = match session.ensure_baseline() {
        Err(e) if session.stop.load(Ordering::SeqCst) => format!("interrupted during the baseline ({e})"),
        Err(e) => return Err(e),
        Ok(()) => loop {
            if let Some(r) = stop_reason(&session, done) {
                break r;
            }
            if barren >= MAX_BARREN_TURNS {
                break format!("the agent produced no usable change in {MAX_BARREN_TURNS} turns in a row");
            }
            let number = session.journal.next_id();
            session.live.phase(number, "agent", &agent.name());
            let started = Instant::now();
            let digest = crate::report::digest_text(session.journal.events());
            let train_file = read_train_file(repo, &workload)?;
            let events = session.journal.events().to_vec();
            let turn = Turn {
                repo,
                program: &program,
                train_file: &train_file,
                digest: &digest,
                events: &events,
                number,
            };
            let outcome = agent.propose(&turn);
            let seconds = started.elapsed().as_secs_f64();
            if session.stop.load(Ordering::SeqCst) {
                session.restore_tree()?;
                break "interrupted (Ctrl-C)".into();
            }
            // Whatever the agent says it did, the tree is judged first: a change outside the
            // train file is rejected, journaled with its paths and rolled back in this turn.
            let description = match &outcome {
                Ok(AgentOutcome::Changed { description, .. }) => description.clone(),
                _ => "agent turn".to_string(),
            };
            if let Some(result) = session.reject_out_of_scope(&description, seconds)? {
                println!("{}", result.render());
                done += 1;
                barren += 1;
                continue;
            }
            match outcome {
                Ok(AgentOutcome::Changed { description, hypothesis }) => {
                    match session.candidate(&description, hypothesis.as_deref(), seconds) {
                        Ok(result) => {
                            println!("{}", result.render());
                            done += 1;
                            barren = if result.status == Status::Rejected { barren + 1 } else { 0 };
                            if result.status == Status::Rejected {
                                session.restore_tree()?;
                            }
                        }
                        Err(e) if e.to_string().starts_with("nothing to test") => {
                            session.agent_turn_without_change("no-change", &e.to_string(), seconds)?;
                            barren += 1;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(AgentOutcome::NoChange { detail }) => {
                    println!("agent turn: no change ({detail})");
                    session.agent_turn_without_change("no-change", &detail, seconds)?;
                    barren += 1;
                }
                Ok(AgentOutcome::Failed { detail }) => {
                    println!("agent turn failed: {detail}");
                    session.agent_turn_without_change("failed", &detail, seconds)?;
                    barren += 1;
                }
                Err(e) => {
                    println!("agent error: {e:#}");
                    session.agent_turn_without_change("error", &format!("{e:#}"), seconds)?;
                    barren += 1;
                }
            }
        },
    };
    finish(args, session, reason)
}

/// A command workload runs with a `cmd:` agent, one run at a time, on this machine: the
/// built-in agents edit the GPT's train file, and the pool and Slurm paths stage the GPT's
/// binary.
fn check_workload_loop(args: &LoopArgs, workload: &Workload) -> Result<()> {
    let Workload::Command(spec) = workload else { return Ok(()) };
    let file = spec.file.display();
    if !args.agent.trim().starts_with("cmd:") {
        bail!(
            "--agent {}: {file} declares a command workload, which needs an agent CLI that edits files (e.g. \
             --agent 'cmd:claude -p'); evolve and openai: edit this repository's GPT train file only",
            args.agent
        );
    }
    if args.workers > 1 || args.backend != "local" {
        bail!(
            "--workers {} --backend {}: a command workload ({file}) runs one measurement at a time on this machine \
             for now; drop --workers and --backend",
            args.workers,
            args.backend
        );
    }
    Ok(())
}

/// The GPT's train file for the agent's prompt ("" for a command workload, whose agent
/// reads its files itself).
fn read_train_file(repo: &Path, workload: &Workload) -> Result<String> {
    match workload {
        Workload::Gpt => {
            let path = repo.join(TRAIN_FILE);
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
        }
        Workload::Command(_) => Ok(String::new()),
    }
}

/// The loop over a pool of workers: while runs are in flight, free workers get agent turns.
fn run_pooled(
    repo: &Path,
    args: &LoopArgs,
    session: &mut Session,
    agent: &mut dyn crate::agent::Agent,
    program: &str,
    deadline: Option<SystemTime>,
) -> Result<String> {
    use crate::session::pool::{Backend, Turned};
    let mut backend: Box<dyn Backend> = match args.backend.as_str() {
        "local" => {
            let gpu = session.features.iter().any(|f| f == "cuda" || f == "wgpu");
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let devices = if gpu {
                crate::scheduler::local::Devices::Gpu
            } else {
                crate::scheduler::local::Devices::Cpu { cores }
            };
            let local = crate::scheduler::local::Local::new(args.workers, devices)?;
            println!("Pool: {}", local.describe());
            Box::new(local)
        }
        "slurm" => Box::new(crate::scheduler::slurm_backend(args.workers, &args.slurm_args, &session.tag)?),
        other => bail!("--backend {other}: use local or slurm"),
    };
    let started_here =
        session.state().runs.values().filter(|r| r.kind == crate::journal::RunKind::Candidate).count();
    let barren = std::cell::Cell::new(0usize);
    let max = args.max_experiments;
    let mut turn = |s: &mut Session| -> Result<Turned> {
        let number = s.journal.next_id();
        s.live.phase(number, "agent", &agent.name());
        let started = Instant::now();
        let digest = crate::report::digest_text(s.journal.events());
        let train_file = std::fs::read_to_string(repo.join(TRAIN_FILE))?;
        let events = s.journal.events().to_vec();
        let turn = Turn { repo, program, train_file: &train_file, digest: &digest, events: &events, number };
        let outcome = agent.propose(&turn);
        let seconds = started.elapsed().as_secs_f64();
        let description = match &outcome {
            Ok(AgentOutcome::Changed { description, .. }) => description.clone(),
            _ => "agent turn".to_string(),
        };
        if let Some(result) = s.reject_out_of_scope(&description, seconds)? {
            barren.set(barren.get() + 1);
            return Ok(Turned::Decided(result));
        }
        match outcome {
            Ok(AgentOutcome::Changed { description, hypothesis }) => {
                match s.commit_candidate(&description, hypothesis.as_deref(), seconds)? {
                    Ok(id) => {
                        barren.set(0);
                        println!("experiment {id} started: {description}");
                        Ok(Turned::Candidate(id))
                    }
                    Err(Some(out)) => {
                        barren.set(barren.get() + 1);
                        Ok(Turned::Decided(out))
                    }
                    Err(None) => {
                        barren.set(barren.get() + 1);
                        Ok(Turned::Nothing)
                    }
                }
            }
            Ok(AgentOutcome::NoChange { detail }) | Ok(AgentOutcome::Failed { detail }) => {
                println!("agent turn: no experiment ({detail})");
                s.agent_turn_without_change("no-change", &detail, seconds)?;
                barren.set(barren.get() + 1);
                Ok(Turned::Nothing)
            }
            Err(e) => {
                println!("agent error: {e:#}");
                s.agent_turn_without_change("error", &format!("{e:#}"), seconds)?;
                barren.set(barren.get() + 1);
                Ok(Turned::Nothing)
            }
        }
    };
    let mut stop = |s: &Session| -> Option<String> {
        let started =
            s.state().runs.values().filter(|r| r.kind == crate::journal::RunKind::Candidate).count();
        if max.is_some_and(|m| started - started_here >= m) {
            return Some(format!("--max-experiments {} reached", started - started_here));
        }
        if deadline.is_some_and(|d| SystemTime::now() >= d) {
            return Some("--until reached".into());
        }
        if barren.get() >= MAX_BARREN_TURNS {
            return Some(format!("the agent produced no usable change in {MAX_BARREN_TURNS} turns in a row"));
        }
        None
    };
    let mut report = |o: &crate::session::Outcome| println!("{}", o.render());
    let reason = session.run_pool(backend.as_mut(), &mut turn, &mut stop, &mut report);
    if reason.is_err() {
        backend.cancel_all();
    }
    reason
}

/// After the loop: verification on fresh seeds, the stop event, the summary.
fn finish(args: &LoopArgs, mut session: Session, reason: String) -> Result<LoopSummary> {
    let done = session.state().runs.values().filter(|r| r.kind == crate::journal::RunKind::Candidate).count();
    session.restore_tree()?;
    if args.verify_pairs > 0 && !session.stop.load(Ordering::SeqCst) {
        println!("Verifying the session's gain on {} fresh seeds …", args.verify_pairs);
        match session.verify(args.verify_pairs, 0.95) {
            Ok(Some(v)) => super::report::print_verification(&v),
            Ok(None) => println!("Nothing to verify: no change was kept."),
            Err(e) => println!("verification incomplete: {e:#}"),
        }
        session.restore_tree()?;
    }
    session.journal.append(Event::Stopped { time: now(), reason: reason.clone() })?;
    session.live.phase(0, "idle", "");
    println!("{}", super::experiment::summary_line(&session));
    Ok(LoopSummary { journal: session.journal.path().to_path_buf(), experiments: done, reason })
}

/// `HH:MM` (the next such local time) or a duration (`8h`, `90m`, `45s`).
fn parse_until(s: &str) -> Result<SystemTime> {
    let s = s.trim();
    if let Some((h, m)) = s.split_once(':') {
        let (h, m): (u32, u32) = (h.parse()?, m.parse()?);
        if h > 23 || m > 59 {
            bail!("--until {s}: not a time of day");
        }
        let now = SystemTime::now();
        let secs_now = now.duration_since(SystemTime::UNIX_EPOCH)?.as_secs() as i64;
        let offset = local_utc_offset(secs_now);
        let local_now = secs_now + offset;
        let day_start = local_now - local_now.rem_euclid(86_400);
        let mut target = day_start + (h * 3600 + m * 60) as i64;
        if target <= local_now {
            target += 86_400;
        }
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs((target - offset) as u64));
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().with_context(|| format!("--until {s}: use HH:MM or a duration like 8h, 90m"))?;
    let secs = match unit {
        "h" => n * 3600.0,
        "m" => n * 60.0,
        "s" | "" => n,
        _ => bail!("--until {s}: use HH:MM or a duration like 8h, 90m"),
    };
    Ok(SystemTime::now() + Duration::from_secs_f64(secs))
}

/// Seconds east of UTC of the local time zone at `t` (via the C library).
fn local_utc_offset(t: i64) -> i64 {
    // SAFETY: localtime_r writes into the tm we own.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let tt = t as libc::time_t;
        if libc::localtime_r(&tt, &mut tm).is_null() { 0 } else { tm.tm_gmtoff }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_until_accepts_durations_and_clock_times() {
        let in_90m = parse_until("90m").unwrap().duration_since(SystemTime::now()).unwrap().as_secs();
        assert!((5390..=5400).contains(&in_90m));
        let at = parse_until("07:30").unwrap().duration_since(SystemTime::now()).unwrap().as_secs();
        assert!(at <= 86_400);
        assert!(parse_until("25:00").is_err() && parse_until("soon").is_err());
    }
}
