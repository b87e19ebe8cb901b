//! What a researcher opens in the morning, and what an agent reads every turn, built from the
//! journal alone.
//!
//! - [`model`]: the events turned into one row per experiment and the session's numbers;
//! - [`plot`]: the progress plot (PNG for READMEs and issues, SVG);
//! - [`markdown`]: the session report, in the spirit of nanochat's dev/LOG.md — negative
//!   results are kept;
//! - [`summary`]: the ≤ 2 KB JSON summary and the plain-text digest for agents;
//! - [`status`]: the `ar status` screen (journal plus the loop's live.json).
//!
//! Nothing here reads git, run logs or the train file: if the journal does not say it, the
//! report does not claim it. That keeps every view reproducible from `runs.jsonl`.

pub mod markdown;
pub mod model;
pub mod plot;
pub mod status;
pub mod summary;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

/// The agent-facing API (`ar loop` feeds the digest to the agent every turn).
pub use summary::{digest_text, summary};

/// Where sessions live, under the repository.
pub const SESSIONS_DIR: &str = ".autoresearch";

/// One session directory, `.autoresearch/<tag>/`.
#[derive(Debug, Clone)]
pub struct SessionDir {
    pub tag: String,
    pub dir: PathBuf,
    /// `runs.jsonl` (may not exist yet).
    pub journal: PathBuf,
    modified: SystemTime,
}

/// The sessions under `root`, most recently modified first (journal mtime, else the
/// directory's), ties broken by tag so the choice is stable.
pub fn sessions(root: &Path) -> Result<Vec<SessionDir>> {
    let base = root.join(SESSIONS_DIR);
    let entries = match std::fs::read_dir(&base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", base.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", base.display()))?;
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let journal = dir.join("runs.jsonl");
        let modified = std::fs::metadata(&journal)
            .or_else(|_| std::fs::metadata(&dir))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let tag = entry.file_name().to_string_lossy().into_owned();
        out.push(SessionDir { tag, dir, journal, modified });
    }
    out.sort_by(|a, b| b.modified.cmp(&a.modified).then_with(|| a.tag.cmp(&b.tag)));
    Ok(out)
}

/// The session to show: `tag`, or the most recently modified. `None` when there is no
/// session at all (a clear message for the caller, not an error); an unknown tag among
/// existing sessions is an error that lists them.
pub fn pick(root: &Path, tag: Option<&str>) -> Result<Option<SessionDir>> {
    let all = sessions(root)?;
    match tag {
        None => Ok(all.into_iter().next()),
        Some(t) => {
            if let Some(s) = all.iter().find(|s| s.tag == t) {
                return Ok(Some(s.clone()));
            }
            if all.is_empty() {
                return Ok(None);
            }
            let names: Vec<&str> = all.iter().map(|s| s.tag.as_str()).collect();
            bail!(
                "no session `{t}` in {} (sessions: {})",
                root.join(SESSIONS_DIR).display(),
                names.join(", ")
            )
        }
    }
}
