//! `autoresearch.toml`: parsed strictly, with errors a person can act on.
//!
//! The file decides what an agent may change and how a change is judged, so a typo must not
//! quietly change either: an unknown key is an error (with the nearest known key), every
//! value is checked, and every error names the file, the line and column, what is wrong and
//! an example of what is right. The parsing is `toml`'s; this module turns its spans and our
//! own checks into those messages, and writes files back (for `ar init`) in the same shape
//! the parser reads, comments included.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use ::toml::Spanned;
use anyhow::{Result, anyhow};
use serde::Deserialize;

use super::{CommandSpec, MetricSource, MetricSpec, RunStep, Step};
use crate::stats::Direction;

/// The format version this `ar` reads.
pub const VERSION: i64 = 1;
/// Default hard limits of the build, run and checks commands.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The seed variable when the file names none.
pub const DEFAULT_SEED_ENV: &str = "AR_SEED";
/// Variables `ar` sets itself for every command: the file may not override them.
pub const RESERVED_ENV: [&str; 4] = ["TMPDIR", "AR_BUDGET", "PATH", "HOME"];

// ---------------------------------------------------------------------------------------
// The raw shape (what TOML allows), before our checks

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    version: Option<Spanned<i64>>,
    name: Option<Spanned<String>>,
    files: Option<Spanned<RawFiles>>,
    build: Option<Spanned<RawStep>>,
    run: Option<Spanned<RawRun>>,
    metric: Option<Spanned<RawMetric>>,
    checks: Option<Spanned<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    editable: Option<Spanned<Vec<Spanned<String>>>>,
    held_out: Option<Vec<Spanned<String>>>,
    agent_hidden: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    command: Option<Spanned<String>>,
    timeout: Option<Spanned<::toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    command: Option<Spanned<String>>,
    timeout: Option<Spanned<::toml::Value>>,
    budget: Option<Spanned<String>>,
    seed_env: Option<Spanned<String>>,
    env: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    writable: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    name: Option<Spanned<String>>,
    direction: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
}

/// One example per key, for the "Fix:" part of an error.
const EXAMPLES: &[(&str, &str)] = &[
    ("version", "version = 1"),
    ("name", "name = \"sort-speed\" (top level) or name = \"seconds\" (in [metric])"),
    ("editable", "editable = [\"train.py\", \"src/**/*.rs\"]"),
    ("held_out", "held_out = [\"data/test/**\"]"),
    ("agent_hidden", "agent_hidden = [\"~/.cache/autoresearch/data/shard_06542.parquet\"]"),
    ("command", "command = \"python3 bench.py\""),
    ("timeout", "timeout = \"10m\" (or \"90s\", \"1h\", or seconds as an integer)"),
    ("budget", "budget = \"300s\""),
    ("seed_env", "seed_env = \"AR_SEED\""),
    ("env", "env = { OMP_NUM_THREADS = \"1\" }"),
    ("writable", "writable = [\".\", \"~/.cache/uv\"]"),
    ("direction", "direction = \"minimize\" (or \"maximize\")"),
    ("source", "source = \"stdout\" (METRIC lines), \"summary\" (a `---` block) or \"json\""),
    ("file", "file = \"results/metrics.json\""),
    ("key", "key = \"timing.seconds\""),
];

const TABLES: &[(&str, &[&str])] = &[
    ("", &["version", "name", "files", "build", "run", "metric", "checks"]),
    ("files", &["editable", "held_out", "agent_hidden"]),
    ("build", &["command", "timeout"]),
    ("checks", &["command", "timeout"]),
    ("run", &["command", "timeout", "budget", "seed_env", "env", "writable"]),
    ("metric", &["name", "direction", "source", "file", "key"]),
];

// ---------------------------------------------------------------------------------------
// Errors

/// Builds located errors for one file.
struct Errors<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Errors<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..self.text.floor_char_boundary(offset)];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        (line, col)
    }

    fn at(&self, span: Option<Range<usize>>, what: &str, fix: &str) -> anyhow::Error {
        let place = match span {
            Some(s) => {
                let (line, col) = self.locate(s.start);
                format!("{}:{line}:{col}", self.path.display())
            }
            None => self.path.display().to_string(),
        };
        anyhow!("{place}: {what}. Fix: {fix}")
    }

    /// A required key is missing from `[table]`: located at the table's header.
    fn missing(&self, span: Range<usize>, table: &str, key: &str) -> anyhow::Error {
        let header = format!("[{table}]");
        let mut offset = 0;
        let mut at = span;
        for line in self.text.split_inclusive('\n') {
            let code = line.split('#').next().unwrap_or("").trim();
            if code == header {
                at = offset..offset + 1;
                break;
            }
            offset += line.len();
        }
        self.at(
            Some(at),
            &format!("[{table}] has no `{key}`"),
            &format!("add {} under [{table}]", example(key)),
        )
    }

    /// A `toml`/serde error, located, with a fix worked out from its message.
    fn from_toml(&self, e: &::toml::de::Error) -> anyhow::Error {
        let message = e.message().trim().trim_end_matches('.').to_string();
        let span = e.span();
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let field = rest.split('`').next().unwrap_or("");
            let table = span.clone().map(|s| self.table_at(s.start)).unwrap_or_default();
            let known = TABLES.iter().find(|(t, _)| *t == table).map(|(_, k)| *k).unwrap_or(&[]);
            let fix = match nearest(field, known) {
                Some(k) => format!(
                    "did you mean `{k}`? The keys of {} are: {}",
                    table_name(&table),
                    known.join(", ")
                ),
                None => format!("remove it; the keys of {} are: {}", table_name(&table), known.join(", ")),
            };
            let is_table = span
                .as_ref()
                .is_some_and(|s| self.text[..s.start.min(self.text.len())].trim_end().ends_with('['));
            let what = if is_table {
                format!("unknown table `[{field}]`")
            } else {
                format!("unknown key `{field}` in {}", table_name(&table))
            };
            return self.at(span, &what, &fix);
        }
        let key = span.clone().and_then(|s| self.key_at(s.start));
        let fix = match key.as_deref() {
            Some(k) if EXAMPLES.iter().any(|(n, _)| *n == k) => format!("write it like {}", example(k)),
            _ if message.contains("invalid type") || message.contains("expected") => {
                "give the value the type the key takes (see docs/workload.md)".to_string()
            }
            _ => "correct the TOML at that point (strings in double quotes, lists in [ ], one key per line)"
                .to_string(),
        };
        self.at(span, &message.replace('\n', " "), &fix)
    }

    /// The `[table]` header in force at `offset` ("" before any).
    fn table_at(&self, offset: usize) -> String {
        let before = &self.text[..self.text.floor_char_boundary(offset.min(self.text.len()))];
        before
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('[') && !l.starts_with("[["))
            .map(|l| l.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_string())
            .unwrap_or_default()
    }

    /// The key on the line holding `offset` (`key = …`).
    fn key_at(&self, offset: usize) -> Option<String> {
        let start = self.text[..self.text.floor_char_boundary(offset.min(self.text.len()))]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line = self.text[start..].lines().next()?;
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        (!key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| key.to_string())
    }
}

fn table_name(table: &str) -> String {
    if table.is_empty() { "the top level".to_string() } else { format!("[{table}]") }
}

fn example(key: &str) -> String {
    EXAMPLES.iter().find(|(k, _)| *k == key).map_or_else(|| key.to_string(), |(_, e)| e.to_string())
}

/// The known key closest to `word` (edit distance ≤ 3, or one contains the other).
fn nearest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (distance(word, k), *k))
        .filter(|(d, k)| *d <= 3 || k.contains(word) || word.contains(k))
        .min()
        .map(|(_, k)| k)
}

fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

// ---------------------------------------------------------------------------------------
// Checks of single values

/// "90", "90s", "5m", "1h30m", "2.5m" (or a TOML integer of seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return (secs > 0).then(|| Duration::from_secs(secs));
    }
    let mut total = 0.0;
    let mut number = String::new();
    let mut any = false;
    for c in t.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            's' | 'm' | 'h' if !number.is_empty() => {
                let n: f64 = number.parse().ok()?;
                total += n * match c {
                    's' => 1.0,
                    'm' => 60.0,
                    _ => 3600.0,
                };
                number.clear();
                any = true;
            }
            _ => return None,
        }
    }
    (any && number.is_empty() && total > 0.0 && total.is_finite()).then(|| Duration::from_secs_f64(total))
}

/// `90s`, `10m`, `1h5m` for a duration (whole seconds).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, 0) => format!("{h}h{m}m"),
        _ => format!("{s}s"),
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Paths the agent must never be able to edit, whatever the patterns say.
const NEVER_EDITABLE: [&str; 4] = [super::FILE, ".git/config", ".autoresearch/tag/runs.jsonl", ".gitignore"];

/// Why an editable pattern is refused, if it is.
fn check_editable(pattern: &str) -> Option<String> {
    if pattern.trim().is_empty() {
        return Some("an editable pattern is empty".into());
    }
    if pattern.starts_with('/') || pattern.starts_with('~') {
        return Some(format!("editable pattern `{pattern}` is not relative to the repository root"));
    }
    if pattern.split('/').any(|c| c == "..") || pattern.contains('\\') {
        return Some(format!("editable pattern `{pattern}` leaves the repository or uses a backslash"));
    }
    let matcher = match super::Matcher::new(pattern) {
        Ok(m) => m,
        Err(e) => return Some(format!("editable pattern `{pattern}` is not a valid glob ({e})")),
    };
    if let Some(fixed) = NEVER_EDITABLE.iter().find(|p| matcher.matches(p)) {
        return Some(format!(
            "editable pattern `{pattern}` would let the agent edit {fixed}, which decides what it may do"
        ));
    }
    None
}

fn check_glob(pattern: &str) -> Option<String> {
    if pattern.trim().is_empty() {
        return Some("a pattern is empty".into());
    }
    glob::Pattern::new(pattern).err().map(|e| format!("`{pattern}` is not a valid glob ({e})"))
}

fn check_writable(path: &str) -> Option<String> {
    if path.trim().is_empty() {
        return Some("a writable path is empty".into());
    }
    if path.contains(['*', '?', '[']) {
        return Some(format!("writable path `{path}` is a glob; name directories or files"));
    }
    if path.split('/').any(|c| c == "..") {
        return Some(format!("writable path `{path}` uses `..`"));
    }
    let first = path.trim_start_matches("./").split('/').next().unwrap_or("");
    if !path.starts_with('/') && !path.starts_with('~') && (first == ".git" || first == ".autoresearch") {
        return Some(format!("writable path `{path}` is inside {first}, which no run may write"));
    }
    None
}

// ---------------------------------------------------------------------------------------
// Parsing

/// Parses the text of `path` into a workload (strictly; see the module header).
pub fn parse(path: &Path, text: &str) -> Result<CommandSpec> {
    let errors = Errors { path, text };
    let raw: Raw = ::toml::from_str(text).map_err(|e| errors.from_toml(&e))?;
    let whole = 0..text.len().min(1);

    if let Some(v) = &raw.version {
        if *v.get_ref() != VERSION {
            return Err(errors.at(
                Some(v.span()),
                &format!("version {} is not one this ar reads (it reads {VERSION})", v.get_ref()),
                "write `version = 1`, or update ar",
            ));
        }
    }
    let name = match &raw.name {
        Some(n) if n.get_ref().trim().is_empty() || n.get_ref().chars().any(char::is_control) => {
            return Err(errors.at(
                Some(n.span()),
                "the workload name is empty or has control characters",
                "name = \"sort-speed\"",
            ));
        }
        Some(n) => Some(n.get_ref().clone()),
        None => None,
    };

    // [files]
    let Some(files) = &raw.files else {
        return Err(errors.at(
            Some(whole),
            "there is no [files] table",
            "add [files] with editable = [\"train.py\"]",
        ));
    };
    let Some(editable) = &files.get_ref().editable else {
        return Err(errors.missing(files.span(), "files", "editable"));
    };
    if editable.get_ref().is_empty() {
        return Err(errors.at(
            Some(editable.span()),
            "`editable` is empty: the agent could change nothing",
            &example("editable"),
        ));
    }
    for p in editable.get_ref() {
        if let Some(why) = check_editable(p.get_ref()) {
            return Err(errors.at(
                Some(p.span()),
                &why,
                "name the files the agent may change, e.g. editable = [\"train.py\"]",
            ));
        }
    }
    let patterns = |list: &Option<Vec<Spanned<String>>>, key: &str| -> Result<Vec<String>> {
        let mut out = Vec::new();
        for p in list.iter().flatten() {
            if let Some(why) = check_glob(p.get_ref()) {
                return Err(errors.at(Some(p.span()), &why, &format!("write it like {}", example(key))));
            }
            out.push(p.get_ref().clone());
        }
        Ok(out)
    };
    let held_out = patterns(&files.get_ref().held_out, "held_out")?;
    let agent_hidden = patterns(&files.get_ref().agent_hidden, "agent_hidden")?;
    for p in editable.get_ref() {
        let m = super::Matcher::new(p.get_ref()).expect("checked above");
        if let Some(h) = held_out.iter().chain(&agent_hidden).find(|h| m.matches(h)) {
            return Err(errors.at(
                Some(p.span()),
                &format!("editable pattern `{}` covers `{h}`, which is held out", p.get_ref()),
                "the agent cannot edit what it may not read: narrow one of the two",
            ));
        }
    }

    // [build], [checks]
    let step = |s: &Option<Spanned<RawStep>>, table: &str| -> Result<Option<Step>> {
        let Some(s) = s else { return Ok(None) };
        let Some(command) = &s.get_ref().command else {
            return Err(errors.missing(s.span(), table, "command"));
        };
        check_command(&errors, command)?;
        Ok(Some(Step {
            command: command.get_ref().clone(),
            timeout: timeout(&errors, &s.get_ref().timeout)?,
        }))
    };
    let build = step(&raw.build, "build")?;
    let checks = step(&raw.checks, "checks")?;

    // [run]
    let Some(run) = &raw.run else {
        return Err(errors.at(
            Some(whole),
            "there is no [run] table",
            "add [run] with command = \"python3 bench.py\"",
        ));
    };
    let r = run.get_ref();
    let Some(command) = &r.command else { return Err(errors.missing(run.span(), "run", "command")) };
    check_command(&errors, command)?;
    let budget = match &r.budget {
        Some(b)
            if b.get_ref().trim().is_empty()
                || b.get_ref().len() > 200
                || b.get_ref().chars().any(char::is_control) =>
        {
            return Err(errors.at(
                Some(b.span()),
                "`budget` is empty, too long or has control characters",
                &example("budget"),
            ));
        }
        Some(b) => Some(b.get_ref().clone()),
        None => None,
    };
    let seed_env = match &r.seed_env {
        Some(s) if !valid_env_name(s.get_ref()) => {
            return Err(errors.at(
                Some(s.span()),
                &format!("`{}` is not an environment variable name", s.get_ref()),
                &example("seed_env"),
            ));
        }
        Some(s) if RESERVED_ENV.contains(&s.get_ref().as_str()) => {
            return Err(errors.at(
                Some(s.span()),
                &format!("`{}` is set by ar for another purpose", s.get_ref()),
                &example("seed_env"),
            ));
        }
        Some(s) => s.get_ref().clone(),
        None => DEFAULT_SEED_ENV.to_string(),
    };
    let mut env = Vec::new();
    if let Some(table) = &r.env {
        for (k, v) in table.get_ref() {
            let bad = if !valid_env_name(k) {
                Some(format!("`{k}` is not an environment variable name"))
            } else if RESERVED_ENV.contains(&k.as_str()) || *k == seed_env {
                Some(format!(
                    "`{k}` is set by ar itself (the scratch directory, the budget, the seed or the search path)"
                ))
            } else if v.get_ref().contains('\0') {
                Some(format!("the value of `{k}` holds a NUL byte"))
            } else {
                None
            };
            if let Some(why) = bad {
                return Err(errors.at(Some(v.span()), &why, "remove it from env, or rename it"));
            }
            env.push((k.clone(), v.get_ref().clone()));
        }
    }
    let mut writable = Vec::new();
    match &r.writable {
        None => writable.push(".".to_string()),
        Some(list) => {
            for p in list {
                if let Some(why) = check_writable(p.get_ref()) {
                    return Err(errors.at(
                        Some(p.span()),
                        &why,
                        &format!("write it like {}", example("writable")),
                    ));
                }
                writable.push(p.get_ref().clone());
            }
        }
    }
    let run_step = RunStep {
        command: command.get_ref().clone(),
        timeout: timeout(&errors, &r.timeout)?,
        budget,
        seed_env,
        env,
        writable,
    };

    // [metric]
    let Some(metric) = &raw.metric else {
        return Err(errors.at(
            Some(whole),
            "there is no [metric] table",
            "add [metric] with name = \"seconds\", direction = \"minimize\", source = \"stdout\"",
        ));
    };
    let m = metric.get_ref();
    let Some(mname) = &m.name else { return Err(errors.missing(metric.span(), "metric", "name")) };
    if !valid_metric_name(mname.get_ref()) {
        return Err(errors.at(
            Some(mname.span()),
            &format!("metric name `{}` must be 1–64 letters, digits, `_`, `.` or `-`", mname.get_ref()),
            "name = \"seconds\"",
        ));
    }
    let Some(direction) = &m.direction else {
        return Err(errors.missing(metric.span(), "metric", "direction"));
    };
    let direction_value = match direction.get_ref().as_str() {
        "minimize" => Direction::Minimize,
        "maximize" => Direction::Maximize,
        other => {
            return Err(errors.at(
                Some(direction.span()),
                &format!("direction `{other}` is neither minimize nor maximize"),
                &example("direction"),
            ));
        }
    };
    let source_name = m.source.as_ref().map_or("stdout", |s| s.get_ref().as_str());
    let source = match source_name {
        "stdout" | "summary" => {
            if let Some(extra) = m.file.as_ref().or(m.key.as_ref()) {
                return Err(errors.at(
                    Some(extra.span()),
                    &format!("`file` and `key` apply only to source = \"json\" (this metric's source is {source_name})"),
                    "remove them, or set source = \"json\"",
                ));
            }
            if source_name == "stdout" { MetricSource::Stdout } else { MetricSource::Summary }
        }
        "json" => {
            let Some(file) = &m.file else { return Err(errors.missing(metric.span(), "metric", "file")) };
            let Some(key) = &m.key else { return Err(errors.missing(metric.span(), "metric", "key")) };
            let f = file.get_ref();
            if f.is_empty()
                || f.starts_with('/')
                || f.starts_with('~')
                || f.split('/').any(|c| c == ".." || c.is_empty() || c == ".git" || c == ".autoresearch")
            {
                return Err(errors.at(
                    Some(file.span()),
                    &format!("metric file `{f}` must be a plain path inside the repository (no `..`, `/` at the start, .git or .autoresearch)"),
                    &example("file"),
                ));
            }
            if key.get_ref().is_empty() || key.get_ref().split('.').any(str::is_empty) {
                return Err(errors.at(
                    Some(key.span()),
                    "the JSON key is empty or has an empty segment",
                    &example("key"),
                ));
            }
            MetricSource::Json { file: f.clone(), key: key.get_ref().clone() }
        }
        other => {
            let span = m.source.as_ref().map(|s| s.span());
            return Err(errors.at(
                span,
                &format!("metric source `{other}` is not stdout, summary or json"),
                &example("source"),
            ));
        }
    };

    Ok(CommandSpec {
        file: path.to_path_buf(),
        sha256: prepare::manifest::sha256_hex(text.as_bytes()),
        name,
        editable: editable.get_ref().iter().map(|p| p.get_ref().clone()).collect(),
        held_out,
        agent_hidden,
        build,
        run: run_step,
        metric: MetricSpec { name: mname.get_ref().clone(), direction: direction_value, source },
        checks,
    })
}

fn check_command(errors: &Errors, command: &Spanned<String>) -> Result<()> {
    let c = command.get_ref();
    if c.trim().is_empty() || c.contains('\0') {
        return Err(errors.at(Some(command.span()), "the command is empty", &example("command")));
    }
    Ok(())
}

fn timeout(errors: &Errors, value: &Option<Spanned<::toml::Value>>) -> Result<Duration> {
    let Some(v) = value else { return Ok(DEFAULT_TIMEOUT) };
    let parsed = match v.get_ref() {
        ::toml::Value::Integer(i) if *i > 0 => Some(Duration::from_secs(*i as u64)),
        ::toml::Value::String(s) => parse_duration(s),
        _ => None,
    };
    parsed.ok_or_else(|| {
        errors.at(Some(v.span()), "the timeout is not a positive duration", &example("timeout"))
    })
}

// ---------------------------------------------------------------------------------------
// Writing

/// A TOML string literal.
pub fn quote(s: &str) -> String {
    ::toml::Value::String(s.to_string()).to_string()
}

/// A TOML array of strings.
pub fn quote_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", "))
}

/// The file for `spec`, with a comment on every key (what `ar init` writes; [`parse`]
/// reads it back to the same spec).
pub fn render(spec: &CommandSpec, header: &str) -> String {
    let mut o = String::new();
    for line in header.lines() {
        o.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
    }
    o.push_str("# The workload `ar` runs: what the agent may change and how a change is measured.\n");
    o.push_str("# Every key is explained in docs/workload.md. Commit this file: it is then pinned like\n");
    o.push_str("# every tracked file the agent may not edit.\n");
    o.push_str(&format!("version = {VERSION}\n"));
    if let Some(n) = &spec.name {
        o.push_str(&format!("name = {}\n", quote(n)));
    }
    o.push_str("\n[files]\n");
    o.push_str("# The files the agent may edit (paths or globs from the repository root; `*` stays in one\n");
    o.push_str("# directory, `**` crosses them). Every other tracked file is hash-pinned.\n");
    o.push_str(&format!("editable = {}\n", quote_list(&spec.editable)));
    o.push_str(
        "# Neither the agent nor anything the build, run or checks start may read these (globs; ~ = home).\n",
    );
    o.push_str(&format!("held_out = {}\n", quote_list(&spec.held_out)));
    o.push_str("# Hidden from the agent only: the run reads them (its own evaluation needs them).\n");
    o.push_str(&format!("agent_hidden = {}\n", quote_list(&spec.agent_hidden)));
    if let Some(b) = &spec.build {
        o.push_str("\n[build]\n");
        o.push_str("# Run with `sh -c` in the repository before every run, sandboxed like the run; a failure is a `build` crash.\n");
        o.push_str(&format!(
            "command = {}\ntimeout = {}\n",
            quote(&b.command),
            quote(&format_duration(b.timeout))
        ));
    }
    let r = &spec.run;
    o.push_str("\n[run]\n");
    o.push_str(
        "# One measurement: `sh -c` in the repository, no network, writes only where `writable` says.\n",
    );
    o.push_str(&format!("command = {}\n", quote(&r.command)));
    o.push_str("# Hard limit per run (a run killed at it is a `timeout` crash).\n");
    o.push_str(&format!("timeout = {}\n", quote(&format_duration(r.timeout))));
    if let Some(b) = &r.budget {
        o.push_str("# Passed to the run as AR_BUDGET (informational: the program decides what it means).\n");
        o.push_str(&format!("budget = {}\n", quote(b)));
    }
    o.push_str(
        "# The seed index of each measurement reaches the run in this variable: use it for every random\n",
    );
    o.push_str("# choice, so the candidate and the incumbent are compared on the same seeds (paired).\n");
    o.push_str(&format!("seed_env = {}\n", quote(&r.seed_env)));
    if !r.env.is_empty() {
        let pairs: Vec<String> = r.env.iter().map(|(k, v)| format!("{k} = {}", quote(v))).collect();
        o.push_str(&format!("env = {{ {} }}\n", pairs.join(", ")));
    }
    o.push_str(
        "# Where the run may write: \".\" is the repository's existing top-level entries but .git and\n",
    );
    o.push_str("# .autoresearch (a run cannot create new top-level entries); ~/ paths for caches.\n");
    o.push_str(&format!("writable = {}\n", quote_list(&r.writable)));
    let m = &spec.metric;
    o.push_str("\n[metric]\n");
    o.push_str(
        "# Read by ar from the run's output, which the agent's code controls: reports label it untrusted.\n",
    );
    o.push_str(&format!("name = {}\n", quote(&m.name)));
    o.push_str(&format!(
        "direction = {}\n",
        quote(if m.direction == Direction::Minimize { "minimize" } else { "maximize" })
    ));
    match &m.source {
        MetricSource::Stdout => {
            o.push_str(&format!("# The last `METRIC {}=<number>` line of the output.\n", m.name));
            o.push_str("source = \"stdout\"\n");
        }
        MetricSource::Summary => {
            o.push_str(&format!("# `{}: <number>` in the last `---` summary block of the output.\n", m.name));
            o.push_str("source = \"summary\"\n");
        }
        MetricSource::Json { file, key } => {
            o.push_str(
                "# A JSON file the run writes (ar empties it before each run) and the key of the number.\n",
            );
            o.push_str(&format!("source = \"json\"\nfile = {}\nkey = {}\n", quote(file), quote(key)));
        }
    }
    if let Some(c) = &spec.checks {
        o.push_str("\n[checks]\n");
        o.push_str(
            "# Must pass before a change is kept (its time is not counted); sandboxed like the run.\n",
        );
        o.push_str(&format!(
            "command = {}\ntimeout = {}\n",
            quote(&c.command),
            quote(&format_duration(c.timeout))
        ));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2.5m"), Some(Duration::from_secs(150)));
        for bad in ["", "0", "5x", "m", "10 m", "-1s", "1m5"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        for s in [45, 600, 3600, 5400, 61] {
            assert_eq!(
                parse_duration(&format_duration(Duration::from_secs(s))),
                Some(Duration::from_secs(s))
            );
        }
    }

    #[test]
    fn test_nearest_key() {
        assert_eq!(nearest("held_outt", &["editable", "held_out", "agent_hidden"]), Some("held_out"));
        assert_eq!(nearest("zzzzzzzz", &["editable", "held_out"]), None);
    }
}
