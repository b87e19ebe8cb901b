//! `cmd:"…"` — any agent CLI as the researcher (`claude -p`, `codex exec`, a script).
//!
//! Once per experiment the command runs through `sh -c` in the repository root with the
//! prompt (program.md, the digest, the instructions) on stdin. It edits
//! `train/src/main.rs` in place and ends its output with `DESCRIPTION: …` (optionally
//! `HYPOTHESIS: …`). What it did is judged from the file, not from what it says: a
//! byte-identical file is `NoChange`, whatever the agent claims.
//!
//! The command runs in its own process group, so a timeout kills everything it started
//! (an agent CLI spawns shells, compilers, language servers), and the group is killed
//! again after a normal exit so no background job keeps editing the file once the turn is
//! over. A crashed or timed-out attempt is rolled back (its half-edit is not trusted) and
//! retried with a note saying what went wrong; after the retries the turn is `Failed` and
//! the loop goes on. Changes outside the train file are not undone here (the supervisor's
//! guard rejects them) but are named in the detail of a turn that produced no experiment.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::prompt::{self, Mode};
use super::{Agent, AgentOptions, Outcome, TRAIN_FILE, Turn, log_transcript, read_train, write_train};

/// Output kept per stream: the tail, since the DESCRIPTION line comes last.
const KEEP_OUTPUT: usize = 4 << 20;

/// After SIGTERM on a timeout, how long the agent gets to clean up before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// An agent CLI driven through `sh -c`.
pub struct CommandAgent {
    command: String,
    timeout: Duration,
    retries: u32,
    log_dir: Option<PathBuf>,
    echo: bool,
    /// The sandbox the command runs in, and its private scratch directory.
    confine: Option<(super::confine::AgentConfinement, tempfile::TempDir)>,
    /// A declared command workload: the agent edits its editable files (None: the train file).
    workload: Option<crate::workload::CommandSpec>,
}

/// One run of the command.
struct Ran {
    /// None: killed at the timeout.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    seconds: f64,
}

impl CommandAgent {
    pub fn new(command: &str, opts: &AgentOptions) -> CommandAgent {
        CommandAgent {
            command: command.to_string(),
            timeout: opts.timeout,
            retries: opts.retries,
            log_dir: opts.log_dir.clone(),
            echo: opts.echo,
            confine: opts.confine.clone().and_then(|c| {
                tempfile::Builder::new().prefix("ar-agent-").tempdir().ok().map(|dir| (c, dir))
            }),
            workload: match &opts.workload {
                Some(crate::workload::Workload::Command(spec)) => Some(spec.clone()),
                _ => None,
            },
        }
    }

    /// Runs the command once with `input` on stdin, killing its process group at the timeout.
    fn run_once(&self, repo: &Path, input: &str, number: u64) -> Result<Ran> {
        let started = Instant::now();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .current_dir(repo)
            .env("AR_TRAIN_FILE", repo.join(TRAIN_FILE))
            .env("AR_EXPERIMENT", number.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // If ar itself dies (kill -9, a crash), its own group no longer includes the
        // agent: ask the kernel to kill the agent's shell with it rather than orphan it.
        #[cfg(target_os = "linux")]
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        if let Some((confine, scratch)) = &self.confine {
            cmd.env("TMPDIR", scratch.path());
            let report = crate::sandbox::apply(&mut cmd, &confine.policy(scratch.path()));
            if !report.filesystem.is_enforced() || !report.filesystem_read.is_enforced() {
                anyhow::bail!(
                    "the agent cannot be confined on this kernel ({}); run with --agent-unconfined to let it run \
                     with all of your rights",
                    report.gaps().join("; ")
                );
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `sh -c {:?}` in {}", self.command, repo.display()))?;
        let pid = child.id() as i32;

        // stdin from its own thread: an agent that never reads it must not block us, and
        // a prompt larger than the pipe buffer must not deadlock against its output.
        let mut stdin = child.stdin.take().expect("piped stdin");
        let bytes = input.as_bytes().to_vec();
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        spawn_reader(stdout, 0, tx.clone(), self.echo);
        spawn_reader(stderr, 1, tx, self.echo);

        let deadline = started + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait().context("cannot wait for the agent command")? {
                break Some(status);
            }
            if Instant::now() >= deadline {
                signal_group(pid, libc::SIGTERM);
                let grace = Instant::now() + TERM_GRACE;
                while Instant::now() < grace && child.try_wait().ok().flatten().is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                signal_group(pid, libc::SIGKILL);
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Whatever the agent left running in the background ends with its turn.
        signal_group(pid, libc::SIGKILL);

        // A process that escaped the group (setsid) may hold a pipe open: wait for the
        // readers only briefly, then go on with what was read.
        let mut out: [Option<Vec<u8>>; 2] = [None, None];
        let until = Instant::now() + Duration::from_secs(5);
        while out.iter().any(Option::is_none) {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, bytes)) => out[i] = Some(bytes),
                Err(_) => break,
            }
        }
        let [o, e] = out.map(|b| String::from_utf8_lossy(&b.unwrap_or_default()).into_owned());
        Ok(Ran { status, stdout: o, stderr: e, seconds: started.elapsed().as_secs_f64() })
    }
}

/// Reads a pipe to its end on a thread, keeping the last [`KEEP_OUTPUT`] bytes.
fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    index: usize,
    tx: mpsc::Sender<(usize, Vec<u8>)>,
    echo: bool,
) {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if echo {
                        let _ = std::io::stderr().write_all(&buf[..n]);
                    }
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * KEEP_OUTPUT {
                        kept.drain(..kept.len() - KEEP_OUTPUT);
                    }
                }
            }
        }
        let _ = tx.send((index, kept));
    });
}

fn signal_group(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    // ESRCH (the group is already gone) is the normal case after a clean exit.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// `git status` entries (status and path), or nothing outside a git checkout.
fn git_status(repo: &Path) -> BTreeSet<String> {
    let Ok(out) = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["status", "--porcelain=v1", "-z", "--untracked-files=all"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return BTreeSet::new();
    };
    if !out.status.success() {
        return BTreeSet::new();
    }
    String::from_utf8_lossy(&out.stdout).split('\0').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Paths whose git status changed during the turn, other than the train file.
fn outside_changes(repo: &Path, before: &BTreeSet<String>) -> Vec<String> {
    git_status(repo)
        .difference(before)
        .map(|entry| entry.get(3..).unwrap_or(entry).to_string())
        .filter(|path| path != TRAIN_FILE)
        .collect()
}

/// What a turn that answered in text but edited nothing probably lacked, per agent CLI.
pub fn permission_hint(command: &str) -> String {
    let first = command.split_whitespace().next().unwrap_or("");
    let name = first.rsplit('/').next().unwrap_or(first);
    match name {
        "claude" if !command.contains("--permission-mode") && !command.contains("--allowedTools") => {
            "the agent answered but edited nothing: in print mode Claude Code refuses edits that would prompt; \
             run it as 'cmd:claude -p --permission-mode acceptEdits'"
                .to_string()
        }
        "codex" if !command.contains("--sandbox") && !command.contains("--full-auto") => {
            "the agent answered but edited nothing: `codex exec` is read-only by default; run it as \
             'cmd:codex exec --sandbox workspace-write -'"
                .to_string()
        }
        _ => "the agent answered but edited nothing: check that it is allowed to edit files without asking \
              (its permission or approval settings)"
            .to_string(),
    }
}

/// The last `n` non-empty lines of `text`, on one line.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    prompt::clean_line(&lines[lines.len().saturating_sub(n)..].join(" | "))
}

impl Agent for CommandAgent {
    fn name(&self) -> String {
        format!("cmd:{}", self.command)
    }

    fn propose(&mut self, turn: &Turn) -> Result<Outcome> {
        if let Some(spec) = self.workload.clone() {
            return self.propose_files(turn, &spec);
        }
        let original = read_train(turn.repo)?;
        let path = turn.repo.join(TRAIN_FILE);
        let before = git_status(turn.repo);
        let mut notes: Vec<String> = Vec::new();
        let mut last_unchanged = false;
        let attempts = self.retries + 1;
        for attempt in 1..=attempts {
            let input = prompt::build(turn, Mode::EditInPlace, notes.last().map(String::as_str));
            let log = self.log_dir.as_deref();
            log_transcript(
                log,
                turn.number,
                &format!("attempt {attempt}: prompt to `{}`", self.command),
                &input,
            );
            let ran = self.run_once(turn.repo, &input, turn.number)?;
            log_transcript(log, turn.number, &format!("attempt {attempt}: stdout"), &ran.stdout);
            log_transcript(log, turn.number, &format!("attempt {attempt}: stderr"), &ran.stderr);
            let after = std::fs::read(&path).ok();
            let changed = after.as_deref() != Some(original.as_bytes());
            last_unchanged = false;
            let note = match ran.status {
                None => format!(
                    "it ran past the {}s limit and was killed; make a smaller change and finish sooner",
                    self.timeout.as_secs_f64()
                ),
                Some(status) if !status.success() => {
                    let code = status.code().map_or_else(|| "a signal".to_string(), |c| c.to_string());
                    let why = format!("the command exited with {code}: {}", tail(&ran.stderr, 3));
                    if status.code() == Some(127) {
                        // The shell could not find the command: retrying cannot help.
                        if changed {
                            write_train(turn.repo, &original)?;
                        }
                        return Ok(Outcome::Failed {
                            detail: format!("{why}; is `{}` installed and on PATH?", self.command),
                        });
                    }
                    why
                }
                Some(_) if after.is_none() => format!("{TRAIN_FILE} was deleted; edit it in place instead"),
                Some(_) if !changed => {
                    last_unchanged = true;
                    let mut note = format!("{TRAIN_FILE} was left unchanged; this turn must edit it");
                    if !ran.stdout.trim().is_empty() {
                        note.push_str(&format!(" ({})", permission_hint(&self.command)));
                    }
                    note
                }
                Some(_) => {
                    let new = String::from_utf8_lossy(after.as_deref().unwrap_or_default()).into_owned();
                    let (description, hypothesis) = prompt::parse_tags(&ran.stdout);
                    let description = description.unwrap_or_else(|| prompt::describe_change(&original, &new));
                    let outside = outside_changes(turn.repo, &before);
                    if !outside.is_empty() {
                        // The guard rejects the experiment; the transcript says who did it.
                        log_transcript(
                            log,
                            turn.number,
                            "changed outside the train file",
                            &outside.join("\n"),
                        );
                    }
                    return Ok(Outcome::Changed { description, hypothesis });
                }
            };
            // A failed attempt's partial edit is not trusted: the next one starts clean.
            if changed {
                write_train(turn.repo, &original)?;
            }
            notes.push(format!("attempt {attempt} ({:.0}s): {note}", ran.seconds));
        }
        let mut detail = notes.join("; ");
        let outside = outside_changes(turn.repo, &before);
        if !outside.is_empty() {
            detail.push_str(&format!(
                "; also changed outside {TRAIN_FILE} (not undone): {}",
                outside.join(", ")
            ));
        }
        Ok(if last_unchanged { Outcome::NoChange { detail } } else { Outcome::Failed { detail } })
    }
}

// ---------------------------------------------------------------------------------------
// A declared command workload: the editable files instead of the train file

/// The content of every file the workload's patterns match now (tracked or untracked, not
/// ignored); a tracked file deleted from the tree is absent.
fn editable_snapshot(repo: &Path, spec: &crate::workload::CommandSpec) -> BTreeMap<String, Vec<u8>> {
    let workload = crate::workload::Workload::Command(spec.clone());
    let Ok(out) = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return BTreeMap::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|p| !p.is_empty() && workload.is_editable(p))
        .filter_map(|p| std::fs::read(repo.join(p)).ok().map(|b| (p.to_string(), b)))
        .collect()
}

/// Puts the editable files back as `before` had them (a failed attempt's half-edit is not
/// trusted): changed ones rewritten, new ones removed.
fn restore_snapshot(
    repo: &Path,
    spec: &crate::workload::CommandSpec,
    before: &BTreeMap<String, Vec<u8>>,
) -> Result<()> {
    let now = editable_snapshot(repo, spec);
    for (path, bytes) in before {
        if now.get(path) != Some(bytes) {
            let full = repo.join(path);
            if let Some(dir) = full.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&full, bytes).with_context(|| format!("cannot restore {}", full.display()))?;
        }
    }
    for path in now.keys().filter(|p| !before.contains_key(*p)) {
        let _ = std::fs::remove_file(repo.join(path));
    }
    Ok(())
}

/// `edit a.py, b.py`: a description when the agent gave none.
fn describe_files(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) -> String {
    let mut paths: Vec<&String> =
        after.iter().filter(|(p, b)| before.get(*p) != Some(*b)).map(|(p, _)| p).collect();
    paths.extend(before.keys().filter(|p| !after.contains_key(*p)));
    prompt::clean_line(&format!("edit {}", paths.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")))
}

impl CommandAgent {
    /// One turn on a command workload: the same attempts, retries and roll-backs as for the
    /// train file, judged on the editable files' contents.
    fn propose_files(&mut self, turn: &Turn, spec: &crate::workload::CommandSpec) -> Result<Outcome> {
        let original = editable_snapshot(turn.repo, spec);
        let before = git_status(turn.repo);
        let patterns = spec.editable.join(", ");
        let mut notes: Vec<String> = Vec::new();
        let mut last_unchanged = false;
        let attempts = self.retries + 1;
        for attempt in 1..=attempts {
            let input = prompt::build_for_workload(turn, spec, notes.last().map(String::as_str));
            let log = self.log_dir.as_deref();
            log_transcript(
                log,
                turn.number,
                &format!("attempt {attempt}: prompt to `{}`", self.command),
                &input,
            );
            let ran = self.run_once(turn.repo, &input, turn.number)?;
            log_transcript(log, turn.number, &format!("attempt {attempt}: stdout"), &ran.stdout);
            log_transcript(log, turn.number, &format!("attempt {attempt}: stderr"), &ran.stderr);
            let after = editable_snapshot(turn.repo, spec);
            let changed = after != original;
            last_unchanged = false;
            let note = match ran.status {
                None => format!(
                    "it ran past the {}s limit and was killed; make a smaller change and finish sooner",
                    self.timeout.as_secs_f64()
                ),
                Some(status) if !status.success() => {
                    let code = status.code().map_or_else(|| "a signal".to_string(), |c| c.to_string());
                    let why = format!("the command exited with {code}: {}", tail(&ran.stderr, 3));
                    if status.code() == Some(127) {
                        if changed {
                            restore_snapshot(turn.repo, spec, &original)?;
                        }
                        return Ok(Outcome::Failed {
                            detail: format!("{why}; is `{}` installed and on PATH?", self.command),
                        });
                    }
                    why
                }
                Some(_) if !changed => {
                    // A change outside the editable files alone is still a turn: the
                    // supervisor's guard rejects it and journals the paths.
                    if !outside_changes(turn.repo, &before).is_empty() {
                        let (description, hypothesis) = prompt::parse_tags(&ran.stdout);
                        let description =
                            description.unwrap_or_else(|| "change outside the editable files".into());
                        return Ok(Outcome::Changed { description, hypothesis });
                    }
                    last_unchanged = true;
                    let mut note =
                        format!("none of the editable files ({patterns}) changed; this turn must edit one");
                    if !ran.stdout.trim().is_empty() {
                        note.push_str(&format!(" ({})", permission_hint(&self.command)));
                    }
                    note
                }
                Some(_) => {
                    let (description, hypothesis) = prompt::parse_tags(&ran.stdout);
                    let description = description.unwrap_or_else(|| describe_files(&original, &after));
                    let outside = outside_changes(turn.repo, &before);
                    if !outside.is_empty() {
                        log_transcript(
                            log,
                            turn.number,
                            "changed outside the editable files",
                            &outside.join("\n"),
                        );
                    }
                    return Ok(Outcome::Changed { description, hypothesis });
                }
            };
            if changed {
                restore_snapshot(turn.repo, spec, &original)?;
            }
            notes.push(format!("attempt {attempt} ({:.0}s): {note}", ran.seconds));
        }
        let mut detail = notes.join("; ");
        let outside = outside_changes(turn.repo, &before);
        if !outside.is_empty() {
            detail.push_str(&format!(
                "; also changed outside the editable files (not undone): {}",
                outside.join(", ")
            ));
        }
        Ok(if last_unchanged { Outcome::NoChange { detail } } else { Outcome::Failed { detail } })
    }
}
