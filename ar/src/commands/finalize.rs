//! `ar finalize`: a session's kept changes as a clean branch, ready for review.
//!
//! A session branch is the incumbent's history as `ar` made it: the kept commits, one per
//! change the paired test kept. `finalize` rebuilds that history from the session's base
//! commit onto `autoresearch/<tag>-final`, one commit per kept change, each with the
//! agent's description and the evidence that kept it (the decision's reason: pairs, Δ,
//! confidence), and writes the session report as the branch's description (`FINAL.md` next
//! to the journal, also printed).
//!
//! With `--split`, also one branch per independent improvement
//! (`autoresearch/<tag>-final-<n>`): a kept change that applies to the base on its own and
//! beside every other group (`git apply --check`, three lines of context) starts a group of
//! its own; one that needs an earlier change, or overlaps one, joins that change's group.
//! Independent *as text*: the split branches are combinations the session never measured,
//! which FINAL.md says.
//!
//! Everything happens in git's object store through a temporary index (`read-tree`,
//! `apply --cached`, `write-tree`, `commit-tree`, `update-ref`): the working tree and the
//! checked-out branch are never touched. The kept commits come from the journal
//! (`runs.jsonl`: candidates whose decision is keep), never from guessing at the branch.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::git::Git;
use crate::journal::{Event, RunKind, Status, read_events};
use crate::report::model::Model;
use crate::report::{markdown, pick};

#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// Session tag (default: the most recently modified session in .autoresearch/).
    #[arg(long)]
    pub tag: Option<String>,
    /// Also make one branch per independent improvement (disjoint lines).
    #[arg(long)]
    pub split: bool,
    /// The repository holding .autoresearch/ (default: found from the current directory).
    #[arg(long)]
    pub repo: Option<PathBuf>,
}

/// One kept change, from the journal.
#[derive(Debug, Clone)]
pub struct Kept {
    pub id: u64,
    pub parent: String,
    pub commit: String,
    pub description: String,
    pub reason: String,
}

/// What finalize made.
#[derive(Debug, Clone, Default)]
pub struct Finalized {
    /// `autoresearch/<tag>-final` and its head (None when nothing was kept).
    pub branch: Option<(String, String)>,
    /// The split branches: name, head, the experiment ids in it.
    pub split: Vec<(String, String, Vec<u64>)>,
    pub report: PathBuf,
}

pub fn run(args: FinalizeArgs) -> Result<()> {
    let root = crate::commands::report::session_root(args.repo.as_deref())?;
    let done = finalize(&root, args.tag.as_deref(), args.split)?;
    let text = std::fs::read_to_string(&done.report)?;
    println!("{text}");
    match &done.branch {
        Some((b, head)) => eprintln!("Made {b} at {}", &head[..7.min(head.len())]),
        None => eprintln!("The session kept no change: no branch was made."),
    }
    for (b, head, ids) in &done.split {
        eprintln!("Made {b} at {} (experiments {})", &head[..7.min(head.len())], join_ids(ids));
    }
    eprintln!("Description: {}", done.report.display());
    Ok(())
}

/// Finalizes session `tag` (or the latest) of the repository at `root`.
pub fn finalize(root: &Path, tag: Option<&str>, split: bool) -> Result<Finalized> {
    let Some(session) = pick(root, tag)? else {
        bail!(
            "no session in {}: there is nothing to finalize (start one with `ar loop --tag <tag>`)",
            root.display()
        )
    };
    let events = read_events(&session.journal)?;
    let Some(base) = events.iter().find_map(|e| match e {
        Event::Session { base_commit, .. } => Some(base_commit.clone()),
        _ => None,
    }) else {
        bail!("{} has no session event: the journal is empty or damaged", session.journal.display())
    };
    let kept = kept_changes(&events);
    let git = Git::new(root);
    let tag = session.tag.clone();
    let final_branch = format!("{}{tag}-final", crate::session::BRANCH_PREFIX);
    let current = git.current_branch()?;
    let mut done = Finalized { report: session.dir.join("FINAL.md"), ..Finalized::default() };
    let mut notes = Vec::new();

    if !kept.is_empty() {
        let scratch = ScratchIndex::new(&git)?;
        let mut diffs = BTreeMap::new();
        for k in &kept {
            for c in [&k.parent, &k.commit] {
                git.rev(c).with_context(|| {
                    format!(
                        "experiment {}'s commit {c} is not in the repository (was it garbage-collected?)",
                        k.id
                    )
                })?;
            }
            diffs.insert(k.id, scratch.diff(&k.parent, &k.commit)?);
        }
        let all: Vec<&Kept> = kept.iter().collect();
        let head = scratch.build(&base, &all, &diffs, &tag)?.with_context(|| {
            "the kept changes do not apply one after another on the base commit: the journal and the repository \
             disagree"
        })?;
        let last = &kept.last().expect("not empty").commit;
        let tree = |c: &str| git.run(&["rev-parse", &format!("{c}^{{tree}}")]);
        if tree(&head)? != tree(last)? {
            notes.push(format!(
                "The rebuilt branch's files differ from the session's best commit {}: review the difference \
                 (`git diff {} {final_branch}`).",
                short(last),
                short(last)
            ));
        }
        set_branch(&git, &final_branch, &head, current.as_deref())?;
        done.branch = Some((final_branch.clone(), head));

        if split {
            let groups = scratch.groups(&base, &kept, &diffs)?;
            for (n, group) in groups.iter().enumerate() {
                let name = format!("{final_branch}-{}", n + 1);
                let head = scratch
                    .build(&base, group, &diffs, &tag)?
                    .context("a group of kept changes does not apply")?;
                set_branch(&git, &name, &head, current.as_deref())?;
                done.split.push((name, head, group.iter().map(|k| k.id).collect()));
            }
            // Branches of an earlier, finer split would be stale.
            for n in groups.len() + 1.. {
                let stale = format!("{final_branch}-{n}");
                if !git.branch_exists(&stale)? || current.as_deref() == Some(stale.as_str()) {
                    break;
                }
                git.run(&["branch", "-D", "-q", &stale])?;
            }
        }
    }

    let mut text = description(&tag, &base, &kept, &done, &notes);
    text.push('\n');
    text.push_str(&markdown::render(&Model::from_events(&events), None));
    prepare::manifest::write_atomic(&done.report, text.as_bytes())?;
    Ok(done)
}

/// Candidates whose decision is keep, in decision order.
pub fn kept_changes(events: &[Event]) -> Vec<Kept> {
    let mut started: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut commits: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = Vec::new();
    for e in events {
        match e {
            Event::Started { id, kind: RunKind::Candidate, parent, description, .. } => {
                started.insert(*id, (parent.clone(), description.clone()));
            }
            Event::Committed { id, commit, .. } => {
                commits.insert(*id, commit.clone());
            }
            Event::Decided { id, decision, .. } if decision.status == Status::Keep => {
                if let (Some((parent, description)), Some(commit)) = (started.get(id), commits.get(id)) {
                    out.push(Kept {
                        id: *id,
                        parent: parent.clone(),
                        commit: commit.clone(),
                        description: description.clone(),
                        reason: decision.reason.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// The commit message of a kept change: its description, then the evidence.
pub fn message(k: &Kept, tag: &str) -> String {
    let description = k.description.trim();
    let (subject, body) = match description.split_once('\n') {
        Some((s, b)) => (s.trim().to_string(), format!("{}\n\n", b.trim())),
        None if description.is_empty() => (format!("experiment {}", k.id), String::new()),
        None => (description.to_string(), String::new()),
    };
    let evidence = k.reason.lines().next().unwrap_or("").trim();
    format!(
        "{subject}\n\n{body}Evidence: {evidence}\n\nAutoresearch-Session: {tag}\nAutoresearch-Experiment: {} (measured as {})\n",
        k.id,
        short(&k.commit)
    )
}

fn short(commit: &str) -> &str {
    &commit[..7.min(commit.len())]
}

fn join_ids(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// Points `branch` at `commit` (creating or replacing it); never the checked-out branch.
fn set_branch(git: &Git, branch: &str, commit: &str, current: Option<&str>) -> Result<()> {
    if current == Some(branch) {
        bail!("{branch} is checked out; switch to another branch before `ar finalize` rewrites it");
    }
    git.run(&["update-ref", "-m", "ar finalize", &format!("refs/heads/{branch}"), commit])?;
    Ok(())
}

/// FINAL.md's opening: the branches and their commits.
fn description(tag: &str, base: &str, kept: &[Kept], done: &Finalized, notes: &[String]) -> String {
    let mut o = format!("# Session `{tag}`, finalized\n\n");
    match &done.branch {
        None => o.push_str(&format!(
            "No change was kept: there is nothing to review beyond base commit `{}`.\n",
            short(base)
        )),
        Some((branch, head)) => {
            o.push_str(&format!(
                "Branch `{branch}` (at `{}`): {} kept change{} on base commit `{}`, one commit each, as measured:\n\n",
                short(head),
                kept.len(),
                if kept.len() == 1 { "" } else { "s" },
                short(base)
            ));
            for k in kept {
                let subject = k.description.lines().next().unwrap_or("").trim();
                o.push_str(&format!(
                    "1. **{}** — {} (experiment {}, `{}`)\n",
                    cell(subject),
                    cell(k.reason.lines().next().unwrap_or("")),
                    k.id,
                    short(&k.commit)
                ));
            }
        }
    }
    if !done.split.is_empty() {
        o.push_str(&format!(
            "\nSplit into {} branch{} whose changes touch disjoint lines (independent as text; only the whole \
             branch above was measured — each split branch is a combination the session never ran):\n\n",
            done.split.len(),
            if done.split.len() == 1 { "" } else { "es" }
        ));
        for (name, head, ids) in &done.split {
            o.push_str(&format!("- `{name}` (at `{}`): experiments {}\n", short(head), join_ids(ids)));
        }
    }
    for n in notes {
        o.push_str(&format!("\n**Note.** {n}\n"));
    }
    o
}

/// Agent-written text on one line (no table or markup breakage).
fn cell(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().replace('|', "/")
}

// ---------------------------------------------------------------------------------------
// Git plumbing through a temporary index

struct ScratchIndex<'a> {
    git: &'a Git,
    _dir: tempfile::TempDir,
    index: PathBuf,
    identity: bool,
}

impl<'a> ScratchIndex<'a> {
    fn new(git: &'a Git) -> Result<ScratchIndex<'a>> {
        let dir = tempfile::Builder::new().prefix("ar-finalize-").tempdir()?;
        let index = dir.path().join("index");
        let identity = git.ok(&["config", "user.email"])?;
        Ok(ScratchIndex { git, _dir: dir, index, identity })
    }

    /// Runs git with the temporary index; `input` on stdin; `env` added.
    fn git(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        env: &[(&str, String)],
    ) -> Result<std::process::Output> {
        let mut cmd = Command::new("git");
        cmd.current_dir(&self.git.root)
            .args(["-c", "core.quotepath=false"])
            .args(args)
            .env("GIT_INDEX_FILE", &self.index)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !self.identity {
            cmd.env("GIT_COMMITTER_NAME", "autoresearch-rs").env("GIT_COMMITTER_EMAIL", "ar@localhost");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| format!("cannot run git {}", args.join(" ")))?;
        if let Some(bytes) = input {
            child.stdin.take().expect("piped").write_all(bytes)?;
        }
        Ok(child.wait_with_output()?)
    }

    fn must(&self, args: &[&str], input: Option<&[u8]>, env: &[(&str, String)]) -> Result<Vec<u8>> {
        let out = self.git(args, input, env)?;
        if !out.status.success() {
            bail!("git {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(out.stdout)
    }

    fn diff(&self, from: &str, to: &str) -> Result<Vec<u8>> {
        self.must(
            &["diff", "--binary", "--full-index", "--no-color", "--no-renames", from, to, "--"],
            None,
            &[],
        )
    }

    fn read_tree(&self, rev: &str) -> Result<()> {
        self.must(&["read-tree", rev], None, &[]).map(|_| ())
    }

    /// Applies `diff` to the index (only checks, with `check`); false when it does not apply.
    fn apply(&self, diff: &[u8], check: bool) -> Result<bool> {
        if diff.is_empty() {
            return Ok(true);
        }
        let mut args = vec!["apply", "--cached"];
        if check {
            args.push("--check");
        }
        args.push("-");
        Ok(self.git(&args, Some(diff), &[])?.status.success())
    }

    /// Whether `diffs` apply one after another on `base`.
    fn applies(&self, base: &str, diffs: &[&[u8]]) -> Result<bool> {
        self.read_tree(base)?;
        for (i, d) in diffs.iter().enumerate() {
            if !self.apply(d, i + 1 == diffs.len())? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Commits `changes` one by one on `base`; None when one does not apply.
    fn build(
        &self,
        base: &str,
        changes: &[&Kept],
        diffs: &BTreeMap<u64, Vec<u8>>,
        tag: &str,
    ) -> Result<Option<String>> {
        self.read_tree(base)?;
        let mut head = self.git.rev(base)?;
        for k in changes {
            if !self.apply(&diffs[&k.id], false)? {
                return Ok(None);
            }
            let tree = String::from_utf8_lossy(&self.must(&["write-tree"], None, &[])?).trim().to_string();
            // The change keeps its author and time; the committer is whoever finalizes.
            let who =
                self.must(&["log", "-1", "--format=%an%x00%ae%x00%ad", "--date=raw", &k.commit], None, &[])?;
            let who = String::from_utf8_lossy(&who).trim().to_string();
            let mut env = Vec::new();
            if let [name, email, date] = who.split('\0').collect::<Vec<_>>()[..] {
                env.push(("GIT_AUTHOR_NAME", name.to_string()));
                env.push(("GIT_AUTHOR_EMAIL", email.to_string()));
                env.push(("GIT_AUTHOR_DATE", date.to_string()));
            }
            let msg = message(k, tag);
            let out =
                self.must(&["commit-tree", &tree, "-p", &head, "-F", "-"], Some(msg.as_bytes()), &env)?;
            head = String::from_utf8_lossy(&out).trim().to_string();
        }
        Ok(Some(head))
    }

    /// Groups of kept changes that touch disjoint lines (see the module header).
    fn groups<'k>(
        &self,
        base: &str,
        kept: &'k [Kept],
        diffs: &BTreeMap<u64, Vec<u8>>,
    ) -> Result<Vec<Vec<&'k Kept>>> {
        let mut groups: Vec<Vec<&Kept>> = Vec::new();
        for k in kept {
            let own = diffs[&k.id].as_slice();
            let with = |g: &Vec<&Kept>| -> Result<bool> {
                let mut list: Vec<&[u8]> = g.iter().map(|x| diffs[&x.id].as_slice()).collect();
                list.push(own);
                self.applies(base, &list)
            };
            let mut joined: Vec<usize> = Vec::new();
            if self.applies(base, &[own])? {
                // Alone it applies; it overlaps every group it no longer applies beside.
                for (i, g) in groups.iter().enumerate() {
                    if !with(g)? {
                        joined.push(i);
                    }
                }
            } else {
                // It needs earlier work: the first group that makes it apply, else all.
                for (i, g) in groups.iter().enumerate() {
                    if with(g)? {
                        joined.push(i);
                        break;
                    }
                }
                if joined.is_empty() {
                    joined = (0..groups.len()).collect();
                }
            }
            let mut merged: Vec<&Kept> = Vec::new();
            for i in joined.iter().rev() {
                merged.extend(groups.remove(*i));
            }
            merged.push(k);
            merged.sort_by_key(|x| x.id);
            let at = joined.first().copied().unwrap_or(groups.len()).min(groups.len());
            groups.insert(at, merged);
        }
        // Every group must build on its own; if one does not, nothing is split.
        for g in &groups {
            let list: Vec<&[u8]> = g.iter().map(|x| diffs[&x.id].as_slice()).collect();
            self.read_tree(base)?;
            for d in &list {
                if !self.apply(d, false)? {
                    return Ok(vec![kept.iter().collect()]);
                }
            }
        }
        groups.sort_by_key(|g| g.first().map(|k| k.id));
        Ok(groups)
    }
}
