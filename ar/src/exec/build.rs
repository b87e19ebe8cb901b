//! Building the train program: `cargo build --release --locked -p train`, the first
//! compiler error for the agent, and the check that the binary was built from the train
//! file `ar` committed.
//!
//! `ar` never imports the train code: it builds the `train` crate with cargo and runs the
//! binary as a child process (`exec::job`), the way the original runs `uv run train.py`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::git::TRAIN_FILE;

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
    /// sha256 of the train file in the working tree when it was built.
    pub train_sha256: String,
    /// Whether the binary carries that digest as its stamp (false: cargo reused a stale
    /// build-script output even after a forced rebuild; the binary's provenance is unknown).
    pub stamped: bool,
}

/// A failed build: the compiler's first error, trimmed, and the full log.
#[derive(Debug)]
pub struct BuildFailure {
    pub first_error: String,
    pub log: String,
}

/// Builds one binary of the train crate in release, `--locked`. Output is captured; on
/// failure the first compiler error is extracted for the agent. The binary is checked to
/// carry the stamp of the train file in the working tree (see [`embeds_train_sha`]).
pub fn build(repo: &Path, spec: &BuildSpec) -> Result<std::result::Result<Built, BuildFailure>> {
    let started = std::time::Instant::now();
    let train_file = repo.join(TRAIN_FILE);
    let expected = prepare::manifest::sha256_hex(
        &std::fs::read(&train_file).with_context(|| format!("cannot read {}", train_file.display()))?,
    );
    // A failed build has no binary to check: nothing to redo.
    let check = |built: &std::result::Result<PathBuf, BuildFailure>| match built {
        Ok(binary) => embeds_train_sha(binary, &expected),
        Err(_) => Ok(true),
    };
    let mut built = cargo_build(repo, spec)?;
    let mut stamped = check(&built)?;
    if !stamped {
        // cargo decides whether the train crate's build script (which stamps the digest)
        // must run again by comparing mtimes; another checkout sharing this target
        // directory can leave a newer output of it behind, which cargo then takes as
        // fresh. A train file newer than any output makes it run again.
        touch(&train_file)?;
        built = cargo_build(repo, spec)?;
        stamped = check(&built)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(built.map(|binary| Built { binary, seconds, train_sha256: expected, stamped }))
}

/// One `cargo build` of `spec`'s binary; the path of the binary it made.
fn cargo_build(repo: &Path, spec: &BuildSpec) -> Result<std::result::Result<PathBuf, BuildFailure>> {
    // Another checkout sharing this target directory may have overwritten the uplifted
    // binary, and cargo does not restore it when the unit itself is fresh; removing it
    // first makes cargo link the right one back.
    let binary = target_dir(repo).join("release").join(&spec.bin);
    let _ = std::fs::remove_file(&binary);
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo)
        .args(["build", "--release", "--locked", "--message-format=short", "-p", "train", "--bin", &spec.bin])
        .stdin(Stdio::null());
    if !spec.features.is_empty() {
        cmd.args(["--features", &spec.features.join(",")]);
    }
    // A build outlives nothing: it dies with `ar`.
    // SAFETY: prctl between fork and exec touches no memory of the parent.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    let (status, log) = run_with_progress(cmd)?;
    if !status.success() {
        return Ok(Err(BuildFailure { first_error: first_error(&log), log }));
    }
    if !binary.is_file() {
        bail!("cargo reported success but {} does not exist", binary.display());
    }
    Ok(Ok(binary))
}

/// Runs cargo, collecting its output, and says on stderr that it is building and how far it
/// has got (the crate being compiled, how many so far, the time) — at most every few seconds,
/// so a first build of the dependencies (minutes on 2 cores) is never a silent wait.
fn run_with_progress(mut cmd: Command) -> Result<(std::process::ExitStatus, String)> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run cargo: is the Rust toolchain installed?")?;
    let stdout = child.stdout.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut s);
        s
    });
    let started = std::time::Instant::now();
    let mut last_said = started;
    let mut compiled = 0usize;
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let line = line.unwrap_or_default();
        if let Some(rest) = line.trim_start().strip_prefix("Compiling ") {
            compiled += 1;
            if last_said.elapsed().as_secs() >= 5 {
                last_said = std::time::Instant::now();
                let krate = rest.split_whitespace().next().unwrap_or("");
                eprintln!(
                    "  building the train program: compiling {krate} ({compiled} crates so far, {:.0}s)",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait().context("cannot wait for cargo")?;
    let out = out_thread.join().unwrap_or_default();
    if started.elapsed().as_secs() >= 10 {
        eprintln!("  built in {:.0}s ({compiled} crates compiled)", started.elapsed().as_secs_f64());
    }
    Ok((status, format!("{out}{log}")))
}

/// Sets a file's modification time to now (cargo's freshness checks compare mtimes).
fn touch(path: &Path) -> Result<()> {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        .with_context(|| format!("cannot update the modification time of {}", path.display()))
}

/// True when `binary` was built from a train file with this sha256: the train crate's
/// build script makes the digest the binary's GNU build-id (Linux). Elsewhere there is no
/// stamp to check and this answers true.
pub fn embeds_train_sha(binary: &Path, sha256: &str) -> Result<bool> {
    if !cfg!(target_os = "linux") {
        return Ok(true);
    }
    let raw: Vec<u8> = (0..sha256.len() / 2)
        .filter_map(|i| u8::from_str_radix(sha256.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    if raw.len() != 32 {
        return Ok(false);
    }
    let bytes = std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    Ok(bytes.windows(32).any(|w| w == raw.as_slice()))
}

/// The first `error` block of a cargo log, at most 12 lines.
pub fn first_error(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    // `--message-format=short` puts the location first (`path:line:col: error[E..]: ..`);
    // the long format opens with `error[E..]` and gives the location on the next lines.
    // cargo's own summary (`error: could not compile ..`) is never the interesting one.
    let is_error = |l: &str| {
        let l = l.trim_start();
        (l.starts_with("error") || l.contains(": error")) && !l.starts_with("error: could not compile")
    };
    let Some(start) = lines.iter().position(|l| is_error(l)) else {
        return lines.iter().rev().take(12).rev().cloned().collect::<Vec<_>>().join("\n");
    };
    let mut out = vec![lines[start]];
    for l in &lines[start + 1..] {
        let next_diagnostic = is_error(l) || l.starts_with("warning") || l.contains(": warning");
        if next_diagnostic || l.starts_with("error: could not compile") || out.len() >= 12 {
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

    #[test]
    fn test_first_error_in_the_short_format_names_the_location() {
        let log = "   Compiling train v0.1.0\ntrain/src/main.rs:9:1: warning: unused import\n\
                   train/src/main.rs:40:33: error: expected expression, found `;`\n\
                   train/src/main.rs:41:2: error[E0308]: mismatched types\n\
                   error: could not compile `train` (bin \"train\") due to 2 previous errors\n";
        let e = first_error(log);
        assert_eq!(e, "train/src/main.rs:40:33: error: expected expression, found `;`");
    }
}

/// Copies the built binary into a run directory (stripped of debug sections when `strip` is
/// available: 13 MB instead of 190) and checks that the copy carries `train_sha256`.
///
/// The run executes the copy, never `target/release/train`: another build in the same target
/// directory (a second checkout, a concurrent `cargo build`, the next experiment's build while
/// this one runs on a worker) replaces the uplifted binary, and a run must not pick up a
/// different train file between the stamp check and exec.
pub fn stage(binary: &Path, run_dir: &Path, train_sha256: &str) -> Result<PathBuf> {
    let staged = run_dir.join("train");
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&staged)
        .arg(binary)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(binary, &staged)
            .with_context(|| format!("cannot copy {} to {}", binary.display(), staged.display()))?;
    }
    if !embeds_train_sha(&staged, train_sha256)? {
        bail!(
            "{} was replaced while it was staged (another build into the same target directory?); the run \
             would not be of the committed train file",
            binary.display()
        );
    }
    Ok(staged)
}
