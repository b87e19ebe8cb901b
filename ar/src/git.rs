//! Git, by calling the `git` CLI (as uv and jj do) — never by editing `.git` by hand.
//!
//! Every call runs in the repository root with a fixed identity fallback, so commits work
//! on a machine where the user never configured git, and every failure names the command
//! and git's own message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// The file the agent may edit; everything else is fixed.
pub const TRAIN_FILE: &str = "train/src/main.rs";

/// A repository on disk.
#[derive(Debug, Clone)]
pub struct Git {
    pub root: PathBuf,
}

impl Git {
    pub fn new(root: &Path) -> Git {
        Git { root: root.to_path_buf() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.root)
            .args(["-c", "user.useConfigOnly=false", "-c", "core.quotepath=false"])
            .args(args)
            .stdin(Stdio::null())
            .env("GIT_TERMINAL_PROMPT", "0");
        // A commit needs an identity; supply one only where the user has none.
        if std::env::var_os("GIT_AUTHOR_NAME").is_none() && !self.has_identity() {
            cmd.env("GIT_AUTHOR_NAME", "autoresearch-rs")
                .env("GIT_AUTHOR_EMAIL", "ar@localhost")
                .env("GIT_COMMITTER_NAME", "autoresearch-rs")
                .env("GIT_COMMITTER_EMAIL", "ar@localhost");
        }
        cmd
    }

    fn has_identity(&self) -> bool {
        Command::new("git")
            .current_dir(&self.root)
            .args(["config", "user.email"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
    }

    fn output(&self, args: &[&str]) -> Result<Output> {
        self.command(args)
            .output()
            .with_context(|| format!("cannot run git {}: is git installed?", args.join(" ")))
    }

    /// Runs git and returns stdout, failing with git's stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "git {} failed in {}: {}",
                args.join(" "),
                self.root.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs git and reports only whether it succeeded.
    pub fn ok(&self, args: &[&str]) -> Result<bool> {
        Ok(self.output(args)?.status.success())
    }

    /// Full hash of a revision.
    pub fn rev(&self, rev: &str) -> Result<String> {
        Ok(self.run(&["rev-parse", "--verify", &format!("{rev}^{{commit}}")])?.trim().to_string())
    }

    pub fn head(&self) -> Result<String> {
        self.rev("HEAD")
    }

    /// The checked-out branch, or None when HEAD is detached.
    pub fn current_branch(&self) -> Result<Option<String>> {
        let out = self.output(&["symbolic-ref", "--quiet", "--short", "HEAD"])?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    pub fn branch_exists(&self, branch: &str) -> Result<bool> {
        self.ok(&["show-ref", "--verify", "--quiet", &format!("refs/heads/{branch}")])
    }

    /// Creates `branch` at HEAD and checks it out.
    pub fn create_branch(&self, branch: &str) -> Result<()> {
        self.run(&["checkout", "-q", "-b", branch]).map(|_| ())
    }

    pub fn checkout(&self, branch: &str) -> Result<()> {
        self.run(&["checkout", "-q", branch]).map(|_| ())
    }

    /// Paths that differ between `rev` and the working tree (staged, unstaged or
    /// committed since), plus untracked files that are not ignored.
    pub fn changed_since(&self, rev: &str) -> Result<Vec<String>> {
        let mut paths: Vec<String> =
            split_z(&self.run(&["diff", "--name-only", "-z", "--no-renames", rev, "--"])?);
        paths.extend(split_z(&self.run(&["ls-files", "-z", "--others", "--exclude-standard"])?));
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// Unified diff of the train file between `rev` and the working tree.
    pub fn diff_train_file(&self, rev: &str) -> Result<String> {
        self.run(&["diff", "--no-color", rev, "--", TRAIN_FILE])
    }

    /// Commits the train file (only it) with `message`; returns the new commit.
    pub fn commit_train_file(&self, message: &str) -> Result<String> {
        self.run(&["add", "--", TRAIN_FILE])?;
        self.run(&["commit", "-q", "--no-verify", "-m", message, "--", TRAIN_FILE])?;
        self.head()
    }

    /// Commits exactly `paths` (added, changed or deleted) with `message`; returns the new
    /// commit. The pathspec keeps anything else the index may hold out of the commit.
    pub fn commit_paths(&self, paths: &[String], message: &str) -> Result<String> {
        let mut add = vec!["add", "-A", "--"];
        add.extend(paths.iter().map(String::as_str));
        self.run(&add)?;
        let mut commit = vec!["commit", "-q", "--no-verify", "-m", message, "--"];
        commit.extend(paths.iter().map(String::as_str));
        self.run(&commit)?;
        self.head()
    }

    /// Moves the current branch and the working tree to `rev`.
    pub fn reset_hard(&self, rev: &str) -> Result<()> {
        self.run(&["reset", "-q", "--hard", rev]).map(|_| ())
    }

    /// Moves the current branch to `rev`, keeping the working tree.
    pub fn reset_soft(&self, rev: &str) -> Result<()> {
        self.run(&["reset", "-q", "--soft", rev]).map(|_| ())
    }

    /// Removes untracked, non-ignored files (never ignored ones such as target/).
    pub fn remove_untracked(&self, paths: &[String]) -> Result<()> {
        for p in paths {
            let full = self.root.join(p);
            if full.is_file() || full.is_symlink() {
                std::fs::remove_file(&full).with_context(|| format!("cannot remove {}", full.display()))?;
            }
        }
        Ok(())
    }

    /// Content of `path` at `rev`.
    /// Applies a patch to the working tree (`git apply --3way`); false when it does not apply.
    pub fn apply_patch(&self, patch: &str) -> Result<bool> {
        use std::io::Write;
        let mut child = self
            .command(&["apply", "--3way", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run git apply")?;
        child.stdin.take().expect("piped").write_all(patch.as_bytes())?;
        Ok(child.wait()?.success())
    }

    pub fn show(&self, rev: &str, path: &str) -> Result<String> {
        self.run(&["show", &format!("{rev}:{path}")])
    }

    /// Tracked files at HEAD.
    pub fn tracked_files(&self) -> Result<Vec<String>> {
        Ok(split_z(&self.run(&["ls-files", "-z"])?))
    }

    /// True when `rev` is an ancestor of (or equal to) `of`.
    pub fn is_ancestor(&self, rev: &str, of: &str) -> Result<bool> {
        self.ok(&["merge-base", "--is-ancestor", rev, of])
    }

    /// True when the path is ignored by .gitignore.
    pub fn is_ignored(&self, path: &str) -> Result<bool> {
        self.ok(&["check-ignore", "-q", path])
    }
}

fn split_z(s: &str) -> Vec<String> {
    s.split('\0').filter(|p| !p.is_empty()).map(str::to_string).collect()
}

/// `git init` with one commit of everything in `dir` (for tests and demos).
pub fn init_repo(dir: &Path) -> Result<Git> {
    let git = Git::new(dir);
    git.run(&["init", "-q", "-b", "main"])?;
    git.run(&["add", "-A"])?;
    git.run(&["commit", "-q", "-m", "initial"])?;
    Ok(git)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_changed_since_sees_committed_staged_unstaged_and_untracked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("train/src")).unwrap();
        std::fs::write(dir.path().join(TRAIN_FILE), "fn main() {}\n").unwrap();
        std::fs::write(dir.path().join("a.txt"), "a").unwrap();
        std::fs::write(dir.path().join(".gitignore"), "/ignored\n").unwrap();
        let git = init_repo(dir.path()).unwrap();
        let base = git.head().unwrap();
        assert!(git.changed_since(&base).unwrap().is_empty());
        std::fs::write(dir.path().join("a.txt"), "b").unwrap();
        std::fs::write(dir.path().join("new.txt"), "n").unwrap();
        std::fs::write(dir.path().join("ignored"), "i").unwrap();
        assert_eq!(git.changed_since(&base).unwrap(), vec!["a.txt", "new.txt"]);
        git.run(&["add", "a.txt"]).unwrap();
        git.run(&["commit", "-q", "-m", "x"]).unwrap();
        assert_eq!(git.changed_since(&base).unwrap(), vec!["a.txt", "new.txt"], "a commit is still a change");
        std::fs::write(dir.path().join(TRAIN_FILE), "fn main() { }\n").unwrap();
        let c = git.commit_train_file("edit").unwrap();
        assert_eq!(git.head().unwrap(), c);
        git.reset_hard(&base).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("a.txt")).unwrap(), "a");
    }
}
