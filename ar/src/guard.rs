//! The scope guard: the working tree may differ from the session's branch head only in
//! `train/src/main.rs`, and every other tracked file must still hash to what it was when
//! the session started.
//!
//! The original asks the agent in prose not to touch prepare.py. Here an edit to
//! `prepare/`, `kernels/`, a Cargo file, program.md or `ar/`, or a new file outside the
//! session directory, is rejected with the list of offending paths before anything is
//! committed or built. The hash check also catches changes that slipped into history
//! (an agent committing on its own) and files deleted from the working tree.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::git::{Git, TRAIN_FILE};

/// sha256 of every tracked file except the train file, at session start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixedManifest {
    pub commit: String,
    pub files: BTreeMap<String, String>,
}

impl FixedManifest {
    /// Hashes the working-tree content of every tracked file but the train file.
    pub fn capture(git: &Git) -> Result<FixedManifest> {
        let mut files = BTreeMap::new();
        for path in git.tracked_files()? {
            if path == TRAIN_FILE {
                continue;
            }
            files.insert(path.clone(), hash_file(&git.root.join(&path))?);
        }
        Ok(FixedManifest { commit: git.head()?, files })
    }

    pub fn load(path: &Path) -> Result<FixedManifest> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("serialises");
        prepare::manifest::write_atomic(path, text.as_bytes())?;
        Ok(())
    }
}

fn hash_file(path: &Path) -> Result<String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(prepare::manifest::sha256_hex(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("deleted".to_string()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The guard's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Only the train file differs (or nothing does).
    Allowed { train_changed: bool },
    /// Something else changed; nothing may be committed.
    Rejected { offending: Vec<String> },
}

/// Checks the working tree against `head` (the session's best commit) and `fixed`.
pub fn check(git: &Git, head: &str, fixed: &FixedManifest) -> Result<Verdict> {
    let changed = git.changed_since(head)?;
    let mut offending: Vec<String> = changed.iter().filter(|p| p.as_str() != TRAIN_FILE).cloned().collect();
    for (path, expected) in &fixed.files {
        if hash_file(&git.root.join(path))? != *expected && !offending.contains(path) {
            offending.push(path.clone());
        }
    }
    offending.sort();
    if offending.is_empty() {
        Ok(Verdict::Allowed { train_changed: changed.iter().any(|p| p == TRAIN_FILE) })
    } else {
        Ok(Verdict::Rejected { offending })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::init_repo;

    fn repo() -> (tempfile::TempDir, Git) {
        let dir = tempfile::tempdir().unwrap();
        for (p, c) in [
            (TRAIN_FILE, "fn main() {}\n"),
            ("prepare/src/lib.rs", "// fixed\n"),
            ("Cargo.toml", "[workspace]\n"),
        ] {
            let full = dir.path().join(p);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, c).unwrap();
        }
        let git = init_repo(dir.path()).unwrap();
        (dir, git)
    }

    #[test]
    fn test_train_file_edit_is_allowed() {
        let (dir, git) = repo();
        let fixed = FixedManifest::capture(&git).unwrap();
        let head = git.head().unwrap();
        assert_eq!(check(&git, &head, &fixed).unwrap(), Verdict::Allowed { train_changed: false });
        std::fs::write(dir.path().join(TRAIN_FILE), "fn main() { println!(); }\n").unwrap();
        assert_eq!(check(&git, &head, &fixed).unwrap(), Verdict::Allowed { train_changed: true });
    }

    #[test]
    fn test_edits_outside_the_train_file_are_listed() {
        let (dir, git) = repo();
        let fixed = FixedManifest::capture(&git).unwrap();
        let head = git.head().unwrap();
        std::fs::write(dir.path().join("prepare/src/lib.rs"), "// hacked metric\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::remove_file(dir.path().join("Cargo.toml")).unwrap();
        let Verdict::Rejected { offending } = check(&git, &head, &fixed).unwrap() else {
            panic!("must reject")
        };
        assert_eq!(offending, vec!["Cargo.toml", "notes.txt", "prepare/src/lib.rs"]);
    }

    #[test]
    fn test_a_fixed_file_changed_in_a_commit_is_caught() {
        let (dir, git) = repo();
        let fixed = FixedManifest::capture(&git).unwrap();
        std::fs::write(dir.path().join("prepare/src/lib.rs"), "// sneaky\n").unwrap();
        git.run(&["commit", "-qam", "sneak"]).unwrap();
        let head = git.head().unwrap();
        let Verdict::Rejected { offending } = check(&git, &head, &fixed).unwrap() else {
            panic!("must reject")
        };
        assert_eq!(offending, vec!["prepare/src/lib.rs"]);
    }
}
