//! The sandbox an agent CLI runs in (`ar loop --agent cmd:…`, and `ar sandbox -- <cmd>`).
//!
//! An agent CLI (Claude Code, Codex, a script) runs with the user's rights unless `ar`
//! confines it, and then everything `ar` guarantees about the score holds only for the train
//! file channel. Here the agent runs under landlock:
//! - it may write the train file's directory (`train/src/`: editors save through a temporary
//!   file and a rename; anything else they create there is rejected by the scope guard), a
//!   scratch directory of its own (its `TMPDIR`), and the directories the user names for
//!   the agent's own state (`--agent-writable ~/.claude`);
//! - it may read everything except the answers and the record: the whole cache of prepared
//!   data (val and test shards, raw downloads) and the repository's `.autoresearch/`
//!   (journals, run directories, checkpoints);
//! - its network stays open (it talks to its model), and its environment is its own (API
//!   keys included): those are the agent's, not the trained program's.
//! What it cannot do is rewrite the journal, read the val rows, or edit fixed files: the
//! first two are refused by the kernel, the third by the kernel outside `train/src/` and by
//! the scope guard inside it.

use std::path::{Path, PathBuf};

use crate::sandbox::{Policy, ReadAccess};

/// Where an agent may write and what it may not read.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfinement {
    /// Directories (or files) the agent may write besides the train file's directory.
    pub writable: Vec<PathBuf>,
    /// Paths it may not read.
    pub hidden: Vec<PathBuf>,
    /// The train file's directory.
    pub train_dir: PathBuf,
}

impl AgentConfinement {
    /// For a repository: the train file's directory writable plus `extra`, the cache and
    /// `.autoresearch/` hidden.
    pub fn for_repo(repo: &Path, cache_root: &Path, extra: &[PathBuf]) -> AgentConfinement {
        AgentConfinement {
            writable: extra.to_vec(),
            hidden: vec![cache_root.to_path_buf(), repo.join(".autoresearch")],
            train_dir: repo.join("train").join("src"),
        }
    }

    /// For a command workload: instead of `train/src/`, the directories its editable
    /// patterns name (the literal part before the first glob character), and where a
    /// pattern names files at the repository root, those files themselves — never the
    /// root, whose `.git` and `.autoresearch` the agent must not write. The workload's
    /// held-out and agent-hidden paths are hidden besides the cache and `.autoresearch/`.
    pub fn for_workload(
        repo: &Path,
        cache_root: &Path,
        extra: &[PathBuf],
        workload: &crate::workload::Workload,
    ) -> AgentConfinement {
        let mut writable = extra.to_vec();
        let mut root_patterns = Vec::new();
        for pattern in workload.editable() {
            let p = pattern.trim_start_matches("./");
            let literal = &p[..p.find(['*', '?', '[']).unwrap_or(p.len())];
            match literal.rfind('/') {
                // A directory that does not exist yet gets no rule (landlock needs a path).
                Some(cut) if cut > 0 => {
                    let dir = repo.join(&literal[..cut]);
                    if dir.is_dir() && !writable.contains(&dir) {
                        writable.push(dir);
                    }
                }
                _ => root_patterns.push(pattern),
            }
        }
        if !root_patterns.is_empty()
            && let Ok(entries) = std::fs::read_dir(repo)
        {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type().is_ok_and(|t| t.is_file()) && workload.is_editable(&name) {
                    writable.push(entry.path());
                }
            }
        }
        let mut hidden = vec![cache_root.to_path_buf(), repo.join(".autoresearch")];
        hidden.extend(workload.held_out(repo));
        // `train_dir` is the GPT's name for "where the agent edits"; here the first such path.
        let train_dir =
            if writable.len() > extra.len() { writable.remove(extra.len()) } else { PathBuf::new() };
        AgentConfinement { writable, hidden, train_dir }
    }

    /// The sandbox policy, with `scratch` as the agent's private temporary directory.
    pub fn policy(&self, scratch: &Path) -> Policy {
        let mut writable = vec![scratch.to_path_buf()];
        if !self.train_dir.as_os_str().is_empty() {
            writable.insert(0, self.train_dir.clone());
        }
        writable.extend(self.writable.iter().cloned());
        Policy {
            writable,
            read: ReadAccess::Except(self.hidden.clone()),
            network: true,
            confine_process: false,
        }
    }
}

/// `~/x` → `$HOME/x` (the shell does this for a bare argument, not inside `--flag=~/x`).
pub fn expand_home(p: &Path) -> PathBuf {
    match p.to_str().and_then(|s| s.strip_prefix("~/")) {
        Some(rest) => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(rest),
        None => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_a_workload_agent_writes_its_editable_directories_and_root_files_never_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        for p in ["train.py", "prepare.py", "src/lib/a.py"] {
            std::fs::create_dir_all(repo.join(p).parent().unwrap()).unwrap();
            std::fs::write(repo.join(p), "").unwrap();
        }
        let toml = "[files]\neditable = [\"train.py\", \"src/lib/**/*.py\"]\nheld_out = [\"data/test/\"]\n\
                    [run]\ncommand = \"true\"\n[metric]\nname = \"m\"\ndirection = \"minimize\"\n";
        let spec = crate::workload::toml::parse(&repo.join("autoresearch.toml"), toml).unwrap();
        let w = crate::workload::Workload::Command(spec);
        let c = AgentConfinement::for_workload(repo, Path::new("/cache"), &[PathBuf::from("/state")], &w);
        let policy = c.policy(Path::new("/scratch"));
        let mut writable = policy.writable.clone();
        writable.sort();
        let mut expected = vec![
            repo.join("src/lib"),
            repo.join("train.py"),
            PathBuf::from("/scratch"),
            PathBuf::from("/state"),
        ];
        expected.sort();
        assert_eq!(writable, expected);
        assert!(!policy.writable.contains(&repo.to_path_buf()));
        let ReadAccess::Except(hidden) = policy.read else { panic!("reads everywhere but") };
        assert!(hidden.contains(&repo.join("data/test")) && hidden.contains(&repo.join(".autoresearch")));
    }
}
