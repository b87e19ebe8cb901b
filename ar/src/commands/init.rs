//! `ar init`: writes `autoresearch.toml`, the declaration of a workload — what the agent
//! may edit, how to build and run it, where the metric is read and which way is better.
//!
//! Three ways in, one result: questions on the terminal (each with a default worked out
//! from the repository: Cargo.toml, pyproject.toml/train.py, package.json, go.mod), flags
//! with `--yes` for scripts, or `--preset autoresearch-py` for a clone of the original
//! PyTorch autoresearch. Whatever the answers, the file is rendered, parsed back with the
//! strict parser `ar loop` uses, and only then written — so `ar init` never leaves a file
//! `ar` would refuse. An existing file is kept unless `--force`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::stats::Direction;
use crate::workload::presets::{self, Draft};
use crate::workload::toml::{format_duration, parse_duration};
use crate::workload::{self, FILE, MetricSource};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Start from a preset: autoresearch-py (a clone of github.com/karpathy/autoresearch).
    #[arg(long)]
    pub preset: Option<String>,
    /// Files the agent may edit: paths or globs from the repository root (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub editable: Vec<String>,
    /// The command that measures once (run with `sh -c` in the repository).
    #[arg(long)]
    pub run: Option<String>,
    /// A build command run before every measurement (`none` for no build).
    #[arg(long)]
    pub build: Option<String>,
    /// The metric's name.
    #[arg(long)]
    pub metric: Option<String>,
    /// Which way the metric improves.
    #[arg(long, value_parser = ["minimize", "maximize"])]
    pub direction: Option<String>,
    /// Where the metric is read: stdout (`METRIC name=value` lines), summary (a `---` block
    /// with `name: value`), or json:FILE:KEY (a JSON file the run writes, and the key).
    #[arg(long)]
    pub metric_from: Option<String>,
    /// A command that must pass before a change is kept (`none` for no checks).
    #[arg(long)]
    pub checks: Option<String>,
    /// The environment variable the seed index reaches the run in.
    #[arg(long)]
    pub seed_env: Option<String>,
    /// Files nobody may read, not the agent and not the run (globs; repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub held_out: Vec<String>,
    /// Files the agent may not read but the run may (its own evaluation reads them).
    #[arg(long, value_delimiter = ',')]
    pub agent_hidden: Vec<String>,
    /// Where the run may write ("." = the repository; repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub writable: Vec<String>,
    /// Hard limit per run: 90s, 10m, 1h.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Passed to the run as AR_BUDGET (informational), e.g. 300s.
    #[arg(long)]
    pub budget: Option<String>,
    /// A name for reports.
    #[arg(long)]
    pub name: Option<String>,
    /// Take the defaults and the flags without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Overwrite an existing autoresearch.toml.
    #[arg(long)]
    pub force: bool,
    /// The repository (default: the git repository containing the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
}

pub fn run(args: InitArgs) -> Result<()> {
    let repo = repo_root(args.repo.as_deref())?;
    let path = repo.join(FILE);
    if path.exists() && !args.force {
        bail!("{} already exists; edit it, or pass --force to replace it", path.display());
    }
    let mut draft = match args.preset.as_deref() {
        None => presets::detect(&repo),
        Some("autoresearch-py") => presets::autoresearch_py(&repo)?,
        Some(other) => bail!("unknown preset `{other}`; the presets are: {}", presets::PRESETS.join(", ")),
    };
    apply_flags(&mut draft, &args)?;
    if !args.yes {
        let stdin = std::io::stdin();
        let interactive = stdin.is_terminal();
        ask(&mut draft, &mut stdin.lock(), interactive)?;
    }
    let spec = draft.to_spec(&path)?;
    let header = format!("Written by `ar init` ({}).", draft.detected);
    let text = workload::toml::render(&spec, &header);
    // The same parser `ar loop` uses: a file ar would refuse is never written.
    workload::toml::parse(&path, &text).context("the answers do not make a valid workload")?;
    prepare::manifest::write_atomic(&path, text.as_bytes())?;
    println!("Wrote {}.", path.display());
    println!(
        "  editable: {} | run: {} | metric: {} ({}, {})",
        spec.editable.join(", "),
        spec.run.command,
        spec.metric.name,
        if spec.metric.direction == Direction::Minimize { "minimize" } else { "maximize" },
        spec.metric.source.name()
    );
    for note in &draft.notes {
        println!("Note: {note}");
    }
    println!(
        "Next: commit {FILE} (it is then pinned like every file the agent may not edit), then start a session, \
         e.g. `ar loop --tag mytag --agent cmd:'claude -p'`."
    );
    Ok(())
}

/// The repository: `--repo`, else the git work tree around the current directory.
pub fn repo_root(repo: Option<&Path>) -> Result<PathBuf> {
    let start = match repo {
        Some(r) => r.to_path_buf(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let start =
        std::fs::canonicalize(&start).with_context(|| format!("{} does not exist", start.display()))?;
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .current_dir(&start)
        .output()
        .context("cannot run git: is it installed?")?;
    if !out.status.success() {
        bail!(
            "{} is not inside a git repository: ar commits every experiment, so run `git init` and commit the project \
             first",
            start.display()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// `none` (or an empty value) clears an optional command.
fn optional(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty() && v != "none").then(|| v.to_string())
}

fn parse_source(text: &str) -> Result<MetricSource> {
    match text.trim() {
        "stdout" => Ok(MetricSource::Stdout),
        "summary" => Ok(MetricSource::Summary),
        other => {
            let Some(rest) = other.strip_prefix("json:") else {
                bail!(
                    "--metric-from `{other}`: use stdout, summary or json:FILE:KEY (e.g. json:out/metrics.json:timing.seconds)"
                )
            };
            let Some((file, key)) = rest.rsplit_once(':') else {
                bail!("--metric-from `{other}`: json needs a file and a key, json:FILE:KEY")
            };
            Ok(MetricSource::Json { file: file.to_string(), key: key.to_string() })
        }
    }
}

fn parse_direction(text: &str) -> Result<Direction> {
    match text.trim() {
        "minimize" | "min" => Ok(Direction::Minimize),
        "maximize" | "max" => Ok(Direction::Maximize),
        other => bail!("direction `{other}`: use minimize or maximize"),
    }
}

fn parse_timeout(text: &str) -> Result<Duration> {
    parse_duration(text).with_context(|| format!("timeout `{text}`: use e.g. 90s, 10m or 1h"))
}

fn apply_flags(d: &mut Draft, a: &InitArgs) -> Result<()> {
    if !a.editable.is_empty() {
        d.editable = a.editable.clone();
    }
    if let Some(r) = &a.run {
        d.run = Some(r.clone());
    }
    if let Some(b) = &a.build {
        d.build = optional(b);
    }
    if let Some(m) = &a.metric {
        d.metric = Some(m.clone());
    }
    if let Some(dir) = &a.direction {
        d.direction = parse_direction(dir)?;
    }
    if let Some(s) = &a.metric_from {
        d.source = parse_source(s)?;
    }
    if let Some(c) = &a.checks {
        d.checks = optional(c);
    }
    if let Some(s) = &a.seed_env {
        d.seed_env = s.clone();
    }
    if !a.held_out.is_empty() {
        d.held_out = a.held_out.clone();
    }
    if !a.agent_hidden.is_empty() {
        d.agent_hidden = a.agent_hidden.clone();
    }
    if !a.writable.is_empty() {
        d.writable = a.writable.clone();
    }
    if let Some(t) = &a.timeout {
        d.timeout = parse_timeout(t)?;
    }
    if let Some(b) = &a.budget {
        d.budget = optional(b);
    }
    if let Some(n) = &a.name {
        d.name = optional(n);
    }
    Ok(())
}

/// One question: the default in brackets; an empty answer (or the end of input) keeps it.
fn question(input: &mut dyn BufRead, interactive: bool, text: &str, default: &str) -> Result<Option<String>> {
    let mut err = std::io::stderr();
    write!(err, "{text} [{default}]: ")?;
    err.flush()?;
    let mut line = String::new();
    let n = input.read_line(&mut line)?;
    if !interactive {
        // Answers from a pipe are echoed, so a transcript reads like a session.
        writeln!(err, "{}", line.trim_end())?;
    }
    let answer = line.trim();
    Ok((n > 0 && !answer.is_empty()).then(|| answer.to_string()))
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

fn split_list(text: &str) -> Vec<String> {
    if text.trim() == "none" {
        return Vec::new();
    }
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// The questions, in the order the file reads.
fn ask(d: &mut Draft, input: &mut dyn BufRead, interactive: bool) -> Result<()> {
    eprintln!("Detected: {}. Press Enter to keep a default; `none` clears an optional one.", d.detected);
    if let Some(a) = question(
        input,
        interactive,
        "Files the agent may edit (paths or globs, comma-separated)",
        &list(&d.editable),
    )? {
        d.editable = split_list(&a);
    }
    let build_default = d.build.clone().unwrap_or_else(|| "none".into());
    if let Some(a) =
        question(input, interactive, "Build command, run before every measurement", &build_default)?
    {
        d.build = optional(&a);
    }
    let run_default = d.run.clone().unwrap_or_else(|| "required".into());
    if let Some(a) = question(input, interactive, "Run command (one measurement)", &run_default)? {
        d.run = Some(a);
    }
    let metric_default = d.metric.clone().unwrap_or_else(|| "required".into());
    if let Some(a) = question(input, interactive, "Metric name", &metric_default)? {
        d.metric = Some(a);
    }
    let dir = if d.direction == Direction::Minimize { "minimize" } else { "maximize" };
    if let Some(a) = question(input, interactive, "Direction (minimize or maximize)", dir)? {
        d.direction = parse_direction(&a)?;
    }
    let source = match &d.source {
        MetricSource::Json { file, key } => format!("json:{file}:{key}"),
        s => s.name().to_string(),
    };
    if let Some(a) = question(input, interactive, "Metric from (stdout, summary or json:FILE:KEY)", &source)?
    {
        d.source = parse_source(&a)?;
    }
    let checks_default =
        d.checks.clone().or_else(|| d.suggested_checks.clone().map(|c| format!("none; e.g. {c}")));
    if let Some(a) = question(
        input,
        interactive,
        "Checks that must pass before a keep",
        &checks_default.unwrap_or_else(|| "none".into()),
    )? {
        d.checks = optional(&a);
    }
    if let Some(a) =
        question(input, interactive, "Environment variable the seed reaches the run in", &d.seed_env.clone())?
    {
        d.seed_env = a;
    }
    if let Some(a) =
        question(input, interactive, "Held-out files nobody may read (globs)", &list(&d.held_out))?
    {
        d.held_out = split_list(&a);
    }
    if let Some(a) = question(input, interactive, "Timeout per run", &format_duration(d.timeout))? {
        d.timeout = parse_timeout(&a)?;
    }
    let budget_default = d.budget.clone().unwrap_or_else(|| "none".into());
    if let Some(a) = question(input, interactive, "Budget passed as AR_BUDGET", &budget_default)? {
        d.budget = optional(&a);
    }
    Ok(())
}
