//! Building and running the train program.
//!
//! `ar` never imports the train code: it builds the `train` crate with cargo (release,
//! `--locked`) and runs the binary as a child process, the way the original runs
//! `uv run train.py`. The result travels back as the JSON record `prepare` writes to the
//! path in `AR_RESULT`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Walks up from `start` to the repository root: the directory holding `Cargo.toml` and
/// `train/src/main.rs`.
pub fn find_repo(start: &Path) -> Result<PathBuf> {
    let start = std::fs::canonicalize(start).with_context(|| format!("{}", start.display()))?;
    for dir in start.ancestors() {
        if dir.join("Cargo.toml").is_file() && dir.join("train").join("src").join("main.rs").is_file() {
            return Ok(dir.to_path_buf());
        }
    }
    bail!(
        "{} is not inside an autoresearch-rs checkout (no Cargo.toml with train/src/main.rs above it); \
         run ar from the repository or pass --repo",
        start.display()
    )
}

/// The target directory cargo uses for `repo` (`CARGO_TARGET_DIR` wins).
pub fn target_dir(repo: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo.join("target"))
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildSpec {
    /// Binary of the train crate: "train" or "bench".
    pub bin: String,
    /// Cargo features of the train crate, e.g. "cuda".
    pub features: Vec<String>,
}

/// The outcome of a build.
#[derive(Debug)]
pub struct Built {
    pub binary: PathBuf,
    pub seconds: f64,
}

/// A failed build: the compiler's first error, trimmed, and the full log.
#[derive(Debug)]
pub struct BuildFailure {
    pub first_error: String,
    pub log: String,
}

/// Builds one binary of the train crate in release, `--locked`. Output is captured; on
/// failure the first compiler error is extracted for the agent.
pub fn build(repo: &Path, spec: &BuildSpec) -> Result<std::result::Result<Built, BuildFailure>> {
    let started = std::time::Instant::now();
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo)
        .args(["build", "--release", "--locked", "--message-format=short", "-p", "train", "--bin", &spec.bin])
        .stdin(Stdio::null());
    if !spec.features.is_empty() {
        cmd.args(["--features", &spec.features.join(",")]);
    }
    let out = cmd.output().context("cannot run cargo: is the Rust toolchain installed?")?;
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Ok(Err(BuildFailure { first_error: first_error(&log), log }));
    }
    let binary = target_dir(repo).join("release").join(&spec.bin);
    if !binary.is_file() {
        bail!("cargo reported success but {} does not exist", binary.display());
    }
    Ok(Ok(Built { binary, seconds: started.elapsed().as_secs_f64() }))
}

/// The first `error` block of a cargo log, at most 12 lines.
pub fn first_error(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let Some(start) = lines.iter().position(|l| l.starts_with("error")) else {
        return lines.iter().rev().take(12).rev().cloned().collect::<Vec<_>>().join("\n");
    };
    let mut out = vec![lines[start]];
    for l in &lines[start + 1..] {
        if l.starts_with("error") || l.starts_with("warning") || out.len() >= 12 {
            break;
        }
        out.push(l);
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_first_error_is_the_first_error_block() {
        let log = "   Compiling train\nwarning: unused\nerror[E0425]: cannot find value `x`\n --> train/src/main.rs:3:5\n  |\nerror: aborting\n";
        let e = first_error(log);
        assert!(e.starts_with("error[E0425]") && e.contains("main.rs:3:5") && !e.contains("aborting"), "{e}");
    }
}
