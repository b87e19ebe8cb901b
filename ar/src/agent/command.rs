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
use super::{Agent, AgentOptions, Outcome, TRAIN_FILE, Turn, log_transcript, write_train};

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
        match self.workload.clone() {
            Some(spec) => self.attempts(turn, &EditableFiles { spec }),
            None => self.attempts(turn, &TrainFile),
        }
    }
}

// ---------------------------------------------------------------------------------------
// One turn: attempts, retries and roll-backs, whatever the agent edits

/// What a turn of the agent edits: the train file, or a declared workload's editable files.
trait Editable {
    /// The edited content at one moment; two snapshots compare equal when nothing changed.
    type Snapshot: PartialEq;
    /// Where the edits must stay, for the detail of a turn that strayed.
    const WHERE: &'static str;
    fn prompt(&self, turn: &Turn, note: Option<&str>) -> String;
    fn snapshot(&self, repo: &Path) -> Result<Self::Snapshot>;
    /// Puts the content back as `before` had it (a failed attempt's half-edit is not trusted).
    fn restore(&self, repo: &Path, before: &Self::Snapshot) -> Result<()>;
    /// A successful attempt's result: `Ok(description)` when it is an experiment (the
    /// agent's own DESCRIPTION wins over this one), else `Err((note, unchanged))`.
    fn judge(
        &self,
        before: &Self::Snapshot,
        after: &Self::Snapshot,
        strayed: bool,
    ) -> std::result::Result<String, (String, bool)>;
}

/// The GPT workload: `train/src/main.rs`, edited in place.
struct TrainFile;

impl Editable for TrainFile {
    /// None: the file was deleted.
    type Snapshot = Option<Vec<u8>>;
    const WHERE: &'static str = TRAIN_FILE;

    fn prompt(&self, turn: &Turn, note: Option<&str>) -> String {
        prompt::build(turn, Mode::EditInPlace, note)
    }

    fn snapshot(&self, repo: &Path) -> Result<Self::Snapshot> {
        Ok(std::fs::read(repo.join(TRAIN_FILE)).ok())
    }

    fn restore(&self, repo: &Path, before: &Self::Snapshot) -> Result<()> {
        let text = String::from_utf8_lossy(before.as_deref().unwrap_or_default()).into_owned();
        write_train(repo, &text)
    }

    fn judge(
        &self,
        before: &Self::Snapshot,
        after: &Self::Snapshot,
        _strayed: bool,
    ) -> std::result::Result<String, (String, bool)> {
        let Some(new) = after else {
            return Err((format!("{TRAIN_FILE} was deleted; edit it in place instead"), false));
        };
        if after == before {
            return Err((format!("{TRAIN_FILE} was left unchanged; this turn must edit it"), true));
        }
        let old = String::from_utf8_lossy(before.as_deref().unwrap_or_default()).into_owned();
        Ok(prompt::describe_change(&old, &String::from_utf8_lossy(new)))
    }
}

/// A declared command workload: every file its `editable` patterns match.
struct EditableFiles {
    spec: crate::workload::CommandSpec,
}

impl Editable for EditableFiles {
    type Snapshot = BTreeMap<String, Vec<u8>>;
    const WHERE: &'static str = "the editable files";

    fn prompt(&self, turn: &Turn, note: Option<&str>) -> String {
        prompt::build_for_workload(turn, &self.spec, note)
    }

    fn snapshot(&self, repo: &Path) -> Result<Self::Snapshot> {
        Ok(editable_snapshot(repo, &self.spec))
    }

    fn restore(&self, repo: &Path, before: &Self::Snapshot) -> Result<()> {
        restore_snapshot(repo, &self.spec, before)
    }

    fn judge(
        &self,
        before: &Self::Snapshot,
        after: &Self::Snapshot,
        strayed: bool,
    ) -> std::result::Result<String, (String, bool)> {
        if after != before {
            return Ok(describe_files(before, after));
        }
        // A change outside the editable files alone is still a turn: the supervisor's
        // guard rejects it and journals the paths.
        if strayed {
            return Ok("change outside the editable files".into());
        }
        let note = format!(
            "none of the editable files ({}) changed; this turn must edit one",
            self.spec.editable.join(", ")
        );
        Err((note, true))
    }
}

impl CommandAgent {
    /// Runs the command until an attempt edits `target` (the turn's experiment) or the
    /// retries are spent. A crashed, timed-out or empty attempt is rolled back and the next
    /// one is told why; a missing command (exit 127) ends the turn at once.
    fn attempts<E: Editable>(&mut self, turn: &Turn, target: &E) -> Result<Outcome> {
        let original = target.snapshot(turn.repo)?;
        let before = git_status(turn.repo);
        let mut notes: Vec<String> = Vec::new();
        let mut last_unchanged = false;
        for attempt in 1..=self.retries + 1 {
            let input = target.prompt(turn, notes.last().map(String::as_str));
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
            let after = target.snapshot(turn.repo)?;
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
                        // The shell could not find the command: retrying cannot help.
                        if changed {
                            target.restore(turn.repo, &original)?;
                        }
                        return Ok(Outcome::Failed {
                            detail: format!("{why}; is `{}` installed and on PATH?", self.command),
                        });
                    }
                    why
                }
                Some(_) => {
                    let outside = outside_changes(turn.repo, &before);
                    match target.judge(&original, &after, !outside.is_empty()) {
                        Ok(fallback) => {
                            let (description, hypothesis) = prompt::parse_tags(&ran.stdout);
                            if !outside.is_empty() {
                                // The guard rejects the experiment; the transcript says who did it.
                                let what = format!("changed outside {}", E::WHERE);
                                log_transcript(log, turn.number, &what, &outside.join("\n"));
                            }
                            let description = description.unwrap_or(fallback);
                            return Ok(Outcome::Changed { description, hypothesis });
                        }
                        Err((mut note, unchanged)) => {
                            // An agent that talked but edited nothing was most likely
                            // refused write permission by its own CLI.
                            if unchanged && !ran.stdout.trim().is_empty() {
                                note.push_str(&format!(" ({})", permission_hint(&self.command)));
                            }
                            last_unchanged = unchanged;
                            note
                        }
                    }
                }
            };
            // A failed attempt's partial edit is not trusted: the next one starts clean.
            if changed {
                target.restore(turn.repo, &original)?;
            }
            notes.push(format!("attempt {attempt} ({:.0}s): {note}", ran.seconds));
        }
        let mut detail = notes.join("; ");
        let outside = outside_changes(turn.repo, &before);
        if !outside.is_empty() {
            detail.push_str(&format!(
                "; also changed outside {} (not undone): {}",
                E::WHERE,
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
