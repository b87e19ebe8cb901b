//! `openai:URL` — a minimal built-in coding agent over any OpenAI-compatible endpoint.
//!
//! `POST {URL}/chat/completions` is spoken by OpenAI and by the local servers people run
//! overnight (llama.cpp's `llama-server`, vLLM, Ollama at `/v1`), so one small client covers
//! them all without an SDK or an async runtime: ureq, serde_json, one request per reply.
//!
//! One turn is one conversation. The model sees program.md, the digest and the whole train
//! file, and answers with EITHER the complete new file (a ```rust block) OR a unified diff
//! (a ```diff block), plus `DESCRIPTION:`. The edit is applied by our own diff applier
//! (lenient about what models get wrong — hunk line numbers and counts — strict about what
//! matters: every context and removed line must match the file), and then the build is
//! checked, because a training slot is the expensive resource and a typo should cost a
//! compile, not a run. A diff that does not apply or an edit that does not compile goes
//! back to the model in the same conversation; after the retries the original file is
//! restored and the turn is `Failed`. HTTP trouble (transport errors, 429, 5xx) is retried
//! with exponential backoff. The API key is read once from the environment, sent only in
//! the Authorization header, and never printed or logged.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value as Json, json};

use super::prompt::{self, Mode};
use super::{
    Agent, AgentOptions, CheckMode, Outcome, TRAIN_FILE, Turn, log_transcript, read_train, write_train,
};
use crate::exec::build::{BuildSpec, build, first_error};

/// Longest Retry-After we honour; a server asking for more gets our own backoff.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Checks that the edited repository builds before a run is spent on it.
pub trait BuildCheck {
    /// `None`: it builds. `Some(error)`: it does not, and `error` is what the model is
    /// shown. `Err`: the check itself could not run (no cargo): a supervisor problem.
    fn check(&mut self, repo: &Path) -> Result<Option<String>>;
}

impl<F: FnMut(&Path) -> Result<Option<String>>> BuildCheck for F {
    fn check(&mut self, repo: &Path) -> Result<Option<String>> {
        self(repo)
    }
}

/// The release build the supervisor does next (`exec::build::build`): when it passes, the
/// supervisor's own build is a no-op, so the check is free.
pub struct CargoBuild {
    pub features: Vec<String>,
}

impl BuildCheck for CargoBuild {
    fn check(&mut self, repo: &Path) -> Result<Option<String>> {
        let spec = BuildSpec { bin: "train".into(), features: self.features.clone() };
        Ok(build(repo, &spec)?.err().map(|f| compiler_errors(&f.log)))
    }
}

/// `cargo check --release -p train --bin train`: type-checks without writing a binary
/// (safe with a target directory shared by several checkouts).
pub struct CargoCheck {
    pub features: Vec<String>,
    /// `CARGO_TARGET_DIR` for the check (None: inherited).
    pub target_dir: Option<std::path::PathBuf>,
}

impl BuildCheck for CargoCheck {
    fn check(&mut self, repo: &Path) -> Result<Option<String>> {
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.current_dir(repo)
            .args(["check", "--release", "--locked", "-p", "train", "--bin", "train"])
            .stdin(Stdio::null());
        if !self.features.is_empty() {
            cmd.args(["--features", &self.features.join(",")]);
        }
        if let Some(dir) = &self.target_dir {
            cmd.env("CARGO_TARGET_DIR", dir);
        }
        let out =
            cmd.output().map_err(|e| anyhow::anyhow!("cannot run cargo check in {}: {e}", repo.display()))?;
        if out.status.success() {
            return Ok(None);
        }
        let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Ok(Some(compiler_errors(&log)))
    }
}

/// The compiler errors worth showing a model: in cargo's short format every `: error`
/// line (at most 8), else the first full error block.
pub fn compiler_errors(log: &str) -> String {
    let short: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(": error") && !l.starts_with("error: could not compile"))
        .take(8)
        .collect();
    if short.is_empty() { first_error(log) } else { short.join("\n") }
}

/// The API key: kept out of every `Debug`, log line and error message.
struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(redacted)")
    }
}

/// The built-in agent.
pub struct OpenAiAgent {
    base: String,
    endpoint: String,
    model: String,
    key: Option<ApiKey>,
    key_env: String,
    http: ureq::Agent,
    retries: u32,
    http_retries: u32,
    backoff: Duration,
    temperature: Option<f64>,
    checker: Box<dyn BuildCheck>,
    log_dir: Option<std::path::PathBuf>,
}

/// One assistant reply.
struct Reply {
    content: String,
    /// The server stopped at its length limit: a whole-file answer is cut short.
    truncated: bool,
}

impl OpenAiAgent {
    /// The agent of `--agent openai:URL`, with the build check `opts.check` selects.
    pub fn from_options(url: &str, opts: &AgentOptions) -> Result<OpenAiAgent> {
        let checker: Box<dyn BuildCheck> = match opts.check {
            CheckMode::Build => Box::new(CargoBuild { features: opts.features.clone() }),
            CheckMode::Check => Box::new(CargoCheck { features: opts.features.clone(), target_dir: None }),
            CheckMode::Off => Box::new(|_: &Path| -> Result<Option<String>> { Ok(None) }),
        };
        OpenAiAgent::new(url, opts, checker)
    }

    /// The agent with an explicit build check (tests use a fake one).
    pub fn new(url: &str, opts: &AgentOptions, checker: Box<dyn BuildCheck>) -> Result<OpenAiAgent> {
        let base = if url.is_empty() { "https://api.openai.com/v1" } else { url.trim_end_matches('/') };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "openai:{url}: the URL must start with http:// or https:// (e.g. openai:http://127.0.0.1:8080/v1)"
            );
        }
        let endpoint = if base.ends_with("/chat/completions") {
            base.to_string()
        } else {
            format!("{base}/chat/completions")
        };
        let Some(model) = opts.model.clone().filter(|m| !m.trim().is_empty()) else {
            bail!(
                "--agent openai:{base} needs --model (the name the server serves, e.g. --model gpt-4.1 \
                 or --model qwen2.5-coder)"
            )
        };
        let key = std::env::var(&opts.api_key_env).ok().filter(|k| !k.trim().is_empty()).map(ApiKey);
        let config = ureq::Agent::config_builder()
            // Error statuses carry a body worth reading (and 429/5xx mean "retry").
            .http_status_as_error(false)
            .timeout_global(Some(opts.timeout))
            .user_agent(concat!("autoresearch-rs/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(OpenAiAgent {
            base: base.to_string(),
            endpoint,
            model,
            key,
            key_env: opts.api_key_env.clone(),
            http: ureq::Agent::new_with_config(config),
            retries: opts.retries,
            http_retries: opts.http_retries,
            backoff: opts.backoff,
            temperature: opts.temperature,
            checker,
            log_dir: opts.log_dir.clone(),
        })
    }

    /// One chat completion, retried on transport errors, 429 and 5xx. `Err` is a detail
    /// for the outcome, never containing the key.
    fn complete(&self, messages: &[Json]) -> std::result::Result<Reply, String> {
        let mut body = json!({ "model": self.model, "messages": messages });
        if let Some(t) = self.temperature {
            body["temperature"] = json!(t);
        }
        let body = body.to_string();
        let mut last = String::new();
        for attempt in 0..=self.http_retries {
            if attempt > 0 {
                std::thread::sleep(self.backoff * 2u32.saturating_pow(attempt - 1));
            }
            let mut req = self.http.post(&self.endpoint).header("Content-Type", "application/json");
            if let Some(key) = &self.key {
                req = req.header("Authorization", format!("Bearer {}", key.0));
            }
            let mut resp = match req.send(&body) {
                Ok(r) => r,
                Err(e) => {
                    last = format!("POST {}: {e}", self.endpoint);
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = match resp.body_mut().read_to_string() {
                Ok(t) => t,
                Err(e) => {
                    last = format!("POST {}: reading the reply: {e}", self.endpoint);
                    continue;
                }
            };
            if status == 429 || status >= 500 {
                last = format!("POST {}: HTTP {status}: {}", self.endpoint, prompt::clean_line(&text));
                if let Some(wait) = retry_after.filter(|w| *w <= MAX_RETRY_AFTER)
                    && attempt < self.http_retries
                {
                    std::thread::sleep(wait);
                }
                continue;
            }
            if !(200..300).contains(&status) {
                let hint = match status {
                    401 | 403 => format!("; check the API key in ${}", self.key_env),
                    404 => {
                        format!("; is {} the server's OpenAI-compatible base URL (often …/v1)?", self.base)
                    }
                    _ => String::new(),
                };
                return Err(format!(
                    "POST {}: HTTP {status}: {}{hint}",
                    self.endpoint,
                    prompt::clean_line(&text)
                ));
            }
            return parse_completion(&text).map_err(|e| format!("POST {}: {e}", self.endpoint));
        }
        Err(format!("{last} (gave up after {} attempts)", self.http_retries + 1))
    }
}

/// `choices[0].message.content` and whether the reply hit the length limit.
fn parse_completion(text: &str) -> std::result::Result<Reply, String> {
    let v: Json = serde_json::from_str(text)
        .map_err(|e| format!("the reply is not JSON ({e}): {}", prompt::clean_line(text)))?;
    let choice = &v["choices"][0];
    let content = choice["message"]["content"].as_str().ok_or_else(|| {
        format!("the reply has no choices[0].message.content: {}", prompt::clean_line(text))
    })?;
    Ok(Reply { content: content.to_string(), truncated: choice["finish_reason"] == "length" })
}

impl Agent for OpenAiAgent {
    fn name(&self) -> String {
        format!("openai:{} ({})", self.base, self.model)
    }

    fn propose(&mut self, turn: &Turn) -> Result<Outcome> {
        let original = read_train(turn.repo)?;
        let log = self.log_dir.clone();
        let log = log.as_deref();
        let user = prompt::build(turn, Mode::Reply, None);
        log_transcript(log, turn.number, &format!("request to {} ({})", self.endpoint, self.model), &user);
        let mut messages = vec![
            json!({"role": "system", "content": prompt::SYSTEM}),
            json!({"role": "user", "content": user}),
        ];
        // What the model's next diff applies to: its last version that applied.
        let mut current = original.clone();
        let mut problems: Vec<String> = Vec::new();
        let mut last_unchanged = false;
        for attempt in 1..=self.retries + 1 {
            let reply = match self.complete(&messages) {
                Ok(r) => r,
                Err(detail) => {
                    write_train(turn.repo, &original)?;
                    problems.push(detail);
                    return Ok(Outcome::Failed { detail: problems.join("; ") });
                }
            };
            log_transcript(log, turn.number, &format!("reply {attempt}"), &reply.content);
            messages.push(json!({"role": "assistant", "content": reply.content}));
            last_unchanged = false;
            let feedback = match attempt_edit(&reply, &original, &current) {
                Err(why) => why,
                Ok(None) => {
                    last_unchanged = true;
                    "that leaves the file exactly as it was; make one real change".to_string()
                }
                Ok(Some(candidate)) => {
                    write_train(turn.repo, &candidate)?;
                    let checked = self.checker.check(turn.repo);
                    match checked {
                        Ok(None) => {
                            let (description, hypothesis) = prompt::parse_tags(&reply.content);
                            let description =
                                description.unwrap_or_else(|| prompt::describe_change(&original, &candidate));
                            return Ok(Outcome::Changed { description, hypothesis });
                        }
                        Ok(Some(error)) => {
                            current = candidate;
                            format!(
                                "it does not compile:\n```\n{}\n```\n{TRAIN_FILE} now holds your version; fix it \
                                 (reply with the complete file, or a diff against your version)",
                                error.trim()
                            )
                        }
                        Err(e) => {
                            write_train(turn.repo, &original)?;
                            return Err(e.context("the build check could not run"));
                        }
                    }
                }
            };
            log_transcript(log, turn.number, &format!("feedback {attempt}"), &feedback);
            problems.push(format!("attempt {attempt}: {}", feedback.lines().next().unwrap_or("")));
            messages.push(json!({
                "role": "user",
                "content": format!(
                    "Your reply could not be used: {feedback}\n\nReply again in the same format, ending with \
                     DESCRIPTION: and HYPOTHESIS: lines."
                ),
            }));
        }
        write_train(turn.repo, &original)?;
        let detail = format!("{} (original file restored)", problems.join("; "));
        Ok(if last_unchanged { Outcome::NoChange { detail } } else { Outcome::Failed { detail } })
    }
}

/// The new file text from a reply: `Ok(None)` if it changes nothing, `Err` with what to
/// tell the model.
fn attempt_edit(reply: &Reply, original: &str, current: &str) -> std::result::Result<Option<String>, String> {
    let edit = match extract_edit(&reply.content) {
        Some(e) => e,
        None if reply.truncated => {
            return Err(
                "your reply was cut off by the length limit; send a ```diff instead of the whole file".into(),
            );
        }
        None => return Err("no ```rust or ```diff block found".into()),
    };
    let candidate = match edit {
        Edit::Diff(d) => apply_diff(current, &d).map_err(|e| format!("your diff did not apply: {e}"))?,
        Edit::File(f) => {
            if reply.truncated {
                return Err("your reply was cut off by the length limit; send a ```diff instead".into());
            }
            let (got, want) = (f.lines().count(), current.lines().count());
            if got * 2 < want {
                return Err(format!(
                    "the ```rust block has {got} lines but the file has {want}: send the complete file, or a \
                     ```diff for a partial change"
                ));
            }
            if f.ends_with('\n') { f } else { f + "\n" }
        }
    };
    if candidate == original {
        return Ok(None);
    }
    if candidate == current {
        return Err("that is the same version that did not compile; fix the error".into());
    }
    Ok(Some(candidate))
}

// ---------------------------------------------------------------------------------------
// Reading replies: fenced blocks, unified diffs
// ---------------------------------------------------------------------------------------

/// What a reply proposes.
#[derive(Debug, PartialEq)]
pub enum Edit {
    File(String),
    Diff(String),
}

/// The edit in a reply: the last diff block if there is one (a ```diff, or any block that
/// reads as a diff), else the longest ```rust (or untagged) block.
pub fn extract_edit(reply: &str) -> Option<Edit> {
    let blocks = fenced_blocks(reply);
    let is_diff = |info: &str, body: &str| {
        matches!(info, "diff" | "patch" | "udiff") || {
            let first = body.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            first.starts_with("--- ") || first.starts_with("diff --git") || first.starts_with("@@")
        }
    };
    if let Some((_, body)) = blocks.iter().rev().find(|(info, body)| is_diff(info, body)) {
        return Some(Edit::Diff(body.clone()));
    }
    blocks
        .into_iter()
        .filter(|(info, _)| matches!(info.as_str(), "rust" | "rs" | ""))
        .max_by_key(|(_, body)| body.len())
        .map(|(_, body)| Edit::File(body))
}

/// (info word, body) of every fenced block. A fence closes on a line of at least as many
/// backticks and nothing else, so a ```` fence may contain ``` lines.
fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let ticks = t.chars().take_while(|&c| c == '`').count();
        if ticks < 3 {
            continue;
        }
        let info = t[ticks..].split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        let mut body = String::new();
        for inner in lines.by_ref() {
            let it = inner.trim();
            if it.len() >= ticks && it.chars().all(|c| c == '`') {
                break;
            }
            body.push_str(inner);
            body.push('\n');
        }
        blocks.push((info, body));
    }
    blocks
}

/// One hunk: where the model says it starts (1-based, 0 if unknown) and its lines.
#[derive(Debug)]
struct Hunk {
    header: String,
    old_start: usize,
    lines: Vec<(char, String)>,
}

/// Parses a unified diff leniently: hunk counts are ignored (models miscount them), a
/// blank line inside a hunk is an empty context line, and `---`/`+++` must name the train
/// file (or be absent).
fn parse_diff(diff: &str) -> std::result::Result<Vec<Hunk>, String> {
    let lines: Vec<&str> = diff.lines().collect();
    let mut hunks: Vec<Hunk> = Vec::new();
    let mut in_hunk = false;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with("--- ") && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ ")) {
            for header in [l, lines[i + 1]] {
                let path = header[4..].split('\t').next().unwrap_or("").trim();
                if path != "/dev/null" && !path.ends_with("main.rs") {
                    return Err(format!("the diff edits {path}; only {TRAIN_FILE} may change"));
                }
            }
            in_hunk = false;
            i += 2;
            continue;
        }
        if l.starts_with("diff --git") || l.starts_with("index ") {
            in_hunk = false;
        } else if l.starts_with("@@") {
            let old_start = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix('-'))
                .and_then(|w| w.split(',').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            hunks.push(Hunk { header: l.to_string(), old_start, lines: Vec::new() });
            in_hunk = true;
        } else if in_hunk && let Some(h) = hunks.last_mut() {
            match l.chars().next() {
                Some(c @ (' ' | '-' | '+')) => h.lines.push((c, l[1..].to_string())),
                Some('\\') => {} // "\ No newline at end of file"
                // A blank line, or a context line that lost its leading space.
                _ => h.lines.push(('~', l.to_string())),
            }
        }
        i += 1;
    }
    for h in &mut hunks {
        // Blank lines a model leaves before the closing fence are not context.
        while h.lines.last().is_some_and(|(c, t)| *c == '~' && t.trim().is_empty()) {
            h.lines.pop();
        }
    }
    hunks.retain(|h| !h.lines.is_empty());
    if hunks.is_empty() {
        return Err("it has no `@@ -l,n +l,n @@` hunks".into());
    }
    Ok(hunks)
}

/// Applies a unified diff to `text`. Each hunk's context and removed lines must appear,
/// consecutively, after the previous hunk: compared ignoring trailing whitespace, or —
/// only if that finds nothing and the match is unique — ignoring indentation too. Among
/// several matches the one nearest the hunk's stated line wins.
pub fn apply_diff(text: &str, diff: &str) -> std::result::Result<String, String> {
    let hunks = parse_diff(diff)?;
    let src: Vec<&str> = text.lines().collect();
    let mut out: Vec<&str> = Vec::with_capacity(src.len() + 16);
    let mut pos = 0;
    for (k, h) in hunks.iter().enumerate() {
        let old: Vec<&str> = h.lines.iter().filter(|(c, _)| *c != '+').map(|(_, t)| t.as_str()).collect();
        let new: Vec<&str> = h.lines.iter().filter(|(c, _)| *c != '-').map(|(_, t)| t.as_str()).collect();
        if old.is_empty() {
            // A pure insertion after line `old_start`.
            let at = h.old_start.clamp(pos, src.len());
            out.extend(&src[pos..at]);
            out.extend(&new);
            pos = at;
            continue;
        }
        let hint = h.old_start.saturating_sub(1);
        let find = |eq: &dyn Fn(&str, &str) -> bool| -> Vec<usize> {
            if src.len() < old.len() {
                return Vec::new();
            }
            (pos..=src.len() - old.len())
                .filter(|&p| old.iter().enumerate().all(|(j, o)| eq(src[p + j], o)))
                .collect()
        };
        let mut found = find(&|a, b| a.trim_end() == b.trim_end());
        if found.is_empty() {
            found = find(&|a, b| a.trim() == b.trim());
            if found.len() > 1 {
                found.clear();
            }
        }
        let Some(&at) = found.iter().min_by_key(|&&p| p.abs_diff(hint)) else {
            return Err(explain_mismatch(k, h, &old, &src, pos));
        };
        out.extend(&src[pos..at]);
        out.extend(&new);
        pos = at + old.len();
    }
    out.extend(&src[pos..]);
    let mut result = out.join("\n");
    if text.ends_with('\n') || text.is_empty() {
        result.push('\n');
    }
    Ok(result)
}

/// Why hunk `k` matched nowhere, in terms a model can act on.
fn explain_mismatch(k: usize, h: &Hunk, old: &[&str], src: &[&str], pos: usize) -> String {
    let which = format!("hunk {} ({})", k + 1, h.header.trim());
    let rest = &src[pos.min(src.len())..];
    if let Some(missing) = old.iter().find(|o| !rest.iter().any(|s| s.trim() == o.trim())) {
        let in_earlier = src[..pos.min(src.len())].iter().any(|s| s.trim() == missing.trim());
        let r#where = if in_earlier { " after the previous hunk (hunks must be in file order)" } else { "" };
        return format!("{which}: the line `{}` is not in the file{where}", missing.trim());
    }
    format!("{which}: its context and `-` lines are all in the file but not consecutively in that order")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "fn a() {\n    let x = 1;\n    let y = 2;\n}\n\nfn b() {\n    let x = 1;\n}\n";

    #[test]
    fn test_diff_applies_with_wrong_line_numbers_and_counts() {
        let diff = "--- a/train/src/main.rs\n+++ b/train/src/main.rs\n@@ -40,9 +40,9 @@ fn b\n fn b() {\n-    let x = 1;\n+    let x = 3;\n }\n";
        let out = apply_diff(TEXT, diff).unwrap();
        assert_eq!(out, TEXT.replace("fn b() {\n    let x = 1;", "fn b() {\n    let x = 3;"));
    }

    #[test]
    fn test_diff_picks_the_match_nearest_the_stated_line() {
        let diff = "@@ -7,1 +7,1 @@\n-    let x = 1;\n+    let x = 9;\n";
        assert!(apply_diff(TEXT, diff).unwrap().contains("fn b() {\n    let x = 9;"));
        let diff = "@@ -2,1 +2,1 @@\n-    let x = 1;\n+    let x = 9;\n";
        assert!(apply_diff(TEXT, diff).unwrap().starts_with("fn a() {\n    let x = 9;"));
    }

    #[test]
    fn test_diff_multiple_hunks_blank_context_and_insertion() {
        let diff = "@@ -1,4 +1,5 @@\n fn a() {\n     let x = 1;\n+    let z = 0;\n     let y = 2;\n@@ -4,3 +5,3 @@\n }\n\n-fn b() {\n+fn c() {\n";
        let out = apply_diff(TEXT, diff).unwrap();
        assert!(
            out.contains("let z = 0;\n    let y = 2;") && out.contains("fn c() {") && !out.contains("fn b"),
            "{out}"
        );
    }

    #[test]
    fn test_diff_mismatch_names_the_line() {
        let diff = "@@ -2,1 +2,1 @@\n-    let q = 1;\n+    let q = 2;\n";
        let e = apply_diff(TEXT, diff).unwrap_err();
        assert!(e.contains("hunk 1") && e.contains("`let q = 1;` is not in the file"), "{e}");
        let e = apply_diff(TEXT, "just words").unwrap_err();
        assert!(e.contains("no `@@"), "{e}");
        let e =
            apply_diff(TEXT, "--- a/prepare/src/eval.rs\n+++ b/prepare/src/eval.rs\n@@ -1 +1 @@\n-x\n+y\n")
                .unwrap_err();
        assert!(e.contains("prepare/src/eval.rs"), "{e}");
    }

    #[test]
    fn test_diff_tolerates_lost_indentation_only_when_unique() {
        let diff = "@@ -3,1 +3,1 @@\n-let y = 2;\n+    let y = 5;\n";
        assert!(apply_diff(TEXT, diff).unwrap().contains("let y = 5;"));
        let ambiguous = "@@ -2,1 +2,1 @@\n-let x = 1;\n+    let x = 5;\n";
        assert!(apply_diff(TEXT, ambiguous).is_err());
    }

    #[test]
    fn test_extract_prefers_a_diff_then_the_longest_rust_block() {
        let r = "Here:\n```rust\nfn main() {}\n```\nand\n```diff\n@@ -1 +1 @@\n-a\n+b\n```\nDESCRIPTION: x\n";
        assert_eq!(extract_edit(r), Some(Edit::Diff("@@ -1 +1 @@\n-a\n+b\n".into())));
        let r = "```rust\nshort\n```\n````rust\nfn main() {\n```\ninner\n```\n}\n````\n";
        assert_eq!(extract_edit(r), Some(Edit::File("fn main() {\n```\ninner\n```\n}\n".into())));
        let r = "```rust\n--- a/train/src/main.rs\n+++ b/train/src/main.rs\n@@ -1 +1 @@\n-a\n+b\n```\n";
        assert!(matches!(extract_edit(r), Some(Edit::Diff(_))));
        assert_eq!(extract_edit("```python\nprint()\n```\n"), None);
    }

    #[test]
    fn test_compiler_errors_from_short_and_human_logs() {
        let short = "   Compiling train\ntrain/src/main.rs:3:5: error[E0425]: cannot find value `x`\ntrain/src/main.rs:9:1: warning: unused\nerror: could not compile `train` (bin \"train\") due to 1 previous error\n";
        assert_eq!(compiler_errors(short), "train/src/main.rs:3:5: error[E0425]: cannot find value `x`");
        let human = "error[E0425]: cannot find value `x`\n --> train/src/main.rs:3:5\n";
        assert!(compiler_errors(human).starts_with("error[E0425]"));
    }

    #[test]
    fn test_api_key_is_redacted_in_debug() {
        assert_eq!(format!("{:?}", ApiKey("sk-secret".into())), "ApiKey(redacted)");
    }
}
