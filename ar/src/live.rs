//! `live.json`: what `ar loop` is doing right now, for `ar status --watch`.
//!
//! Written atomically beside the journal at every phase change and about once a second
//! during training; it is a view, never a record — the journal is the truth.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name, beside the journal.
pub const LIVE_FILE: &str = "live.json";

/// The loop's current activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Live {
    pub id: u64,
    /// agent | build | train | eval | decide | idle
    pub phase: String,
    /// Unix seconds when the phase began.
    pub since: f64,
    pub description: String,
    pub progress_pct: Option<f64>,
    /// The supervisor's pid, so a reader can tell a stale file from a live loop.
    pub pid: Option<u32>,
}

/// Writes live.json in a session directory; failures are ignored (it is only a view).
pub struct LiveFile {
    path: PathBuf,
    current: Live,
}

impl LiveFile {
    pub fn new(dir: &Path) -> LiveFile {
        LiveFile {
            path: dir.join(LIVE_FILE),
            current: Live {
                id: 0,
                phase: "idle".into(),
                since: crate::journal::now(),
                description: String::new(),
                progress_pct: None,
                pid: Some(std::process::id()),
            },
        }
    }

    /// Enters a phase.
    pub fn phase(&mut self, id: u64, phase: &str, description: &str) {
        self.current = Live {
            id,
            phase: phase.to_string(),
            since: crate::journal::now(),
            description: description.to_string(),
            progress_pct: None,
            pid: Some(std::process::id()),
        };
        self.write();
    }

    /// Updates the training progress (and the eval phase once training reports 100 %).
    pub fn progress(&mut self, pct: Option<f64>) {
        if pct.is_some_and(|p| p >= 100.0) && self.current.phase == "train" {
            self.current.phase = "eval".into();
            self.current.since = crate::journal::now();
        }
        self.current.progress_pct = pct;
        self.write();
    }

    fn write(&self) {
        if let Ok(text) = serde_json::to_string(&self.current) {
            let _ = prepare::manifest::write_atomic(&self.path, text.as_bytes());
        }
    }
}
