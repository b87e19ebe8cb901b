//! The scope guard: the working tree may differ from the session's branch head only in
//! `train/src/main.rs`, and every other tracked file must still hash to what it was when
//! the session started.
//!
//! The original asks the agent in prose not to touch prepare.py. Here an edit to
//! `prepare/`, `kernels/`, a Cargo file, program.md or `ar/`, or a new file outside the
//! session directory, is rejected with the list of offending paths before anything is
//! committed or built. The hash check also catches changes that slipped into history
//! (an agent committing on its own) and files deleted from the working tree.
//!
//! A declared workload (`autoresearch.toml`) widens "the train file" to the files its
//! `editable` patterns match ([`check_scope`], [`FixedManifest::capture_for`]); every other
//! tracked file, the declaration included, is pinned the same way.
//!
//! The build itself runs outside the sandbox, so the train file must not pull anything in
//! at compile time: [`lint`] rejects `include_bytes!`, `include_str!`, `include!`, `env!`,
//! `option_env!` and `#[path]` (a val shard compiled into the binary would defeat every
//! read restriction at run time), including under a `use … as` rename.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::git::{Git, TRAIN_FILE};
use crate::workload::Workload;

/// sha256 of every tracked file except the train file, at session start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixedManifest {
    pub commit: String,
    pub files: BTreeMap<String, String>,
}

impl FixedManifest {
    /// Hashes the working-tree content of every tracked file but the train file.
    pub fn capture(git: &Git) -> Result<FixedManifest> {
        FixedManifest::capture_for(git, &Workload::Gpt)
    }

    /// Hashes every tracked file the workload's agent may not edit.
    pub fn capture_for(git: &Git, workload: &Workload) -> Result<FixedManifest> {
        let mut files = BTreeMap::new();
        for path in workload.pinned(&git.tracked_files()?) {
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
    check_scope(git, head, fixed, &Workload::Gpt)
}

/// The same check for any workload: only paths its editable patterns match may differ
/// (`train_changed` then means "an editable file changed").
pub fn check_scope(git: &Git, head: &str, fixed: &FixedManifest, workload: &Workload) -> Result<Verdict> {
    let changed = git.changed_since(head)?;
    let scope = workload.scope(&changed);
    let mut offending = scope.offending;
    for (path, expected) in &fixed.files {
        if hash_file(&git.root.join(path))? != *expected && !offending.contains(path) {
            offending.push(path.clone());
        }
    }
    offending.sort();
    if offending.is_empty() {
        Ok(Verdict::Allowed { train_changed: !scope.editable.is_empty() })
    } else {
        Ok(Verdict::Rejected { offending })
    }
}

/// Compile-time inputs the train file may not use, and why.
const FORBIDDEN_MACROS: [&str; 5] = ["include_bytes", "include_str", "include", "env", "option_env"];

/// Rejects a train file that reads files or the environment at compile time. The source
/// is scanned with comments and string literals blanked, so a word in a comment or a
/// message is no offence; the error names the line and says what to do instead.
pub fn lint(source: &str) -> std::result::Result<(), String> {
    let code = blank_comments_and_strings(source);
    let bytes = code.as_bytes();
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && is_ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let word = &code[start..i];
        let rest = code[i..].trim_start();
        let word = word.strip_prefix("r#").unwrap_or(word);
        if FORBIDDEN_MACROS.contains(&word) && (rest.starts_with('!') || rest.starts_with("as ")) {
            return Err(format!(
                "{TRAIN_FILE}:{}: `{word}!` reads a file or the environment when the train file is compiled, \
                 outside the sandbox; it is not allowed. Put constants in the file itself and read data through \
                 prepare's loader at run time",
                line_of(start)
            ));
        }
        if word == "path" && code[..start].trim_end().ends_with('[') {
            let before = code[..start].trim_end();
            if before[..before.len() - 1].trim_end().ends_with('#') || before.ends_with("#![") {
                return Err(format!(
                    "{TRAIN_FILE}:{}: `#[path = …]` compiles code from another file into the train file; \
                     everything the agent changes must be in {TRAIN_FILE} itself",
                    line_of(start)
                ));
            }
        }
    }
    Ok(())
}

/// The source with comments, string and char literals replaced by spaces (newlines kept,
/// so byte offsets and line numbers stay those of the original).
fn blank_comments_and_strings(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map_or(b.len(), |e| i + e);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                // Nested block comments, as Rust has them.
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // Raw string r#"…"#: find the matching quote and hashes.
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    i += 1; // a raw identifier like r#type
                    continue;
                }
                let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
                let end = src[j + 1..].find(&close).map_or(b.len(), |e| j + 1 + e + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                blank(&mut out, i, j + 1);
                i = j + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}') — not a lifetime ('a without a close).
                let lit_end = if b.get(i + 1) == Some(&b'\\') {
                    src[i + 2..].find('\'').map(|e| i + 2 + e)
                } else if b.get(i + 2) == Some(&b'\'') {
                    Some(i + 2)
                } else {
                    None
                };
                match lit_end {
                    Some(e) => {
                        blank(&mut out, i, e + 1);
                        i = e + 1;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::init_repo;

    #[test]
    fn test_lint_rejects_compile_time_reads_and_names_the_line() {
        for (code, word) in [
            ("const V: &[u8] = include_bytes!(\"/cache/val.parquet\");", "include_bytes"),
            ("fn f() { let s = include_str ! (\"/etc/passwd\"); }", "include_str"),
            ("include!(\"../other.rs\");", "include"),
            ("const K: &str = env!(\"OPENAI_API_KEY\");", "env"),
            ("const K: Option<&str> = std::option_env!(\"HOME\");", "option_env"),
            ("use std::include_bytes as grab;", "include_bytes"),
            ("#[path = \"/tmp/x.rs\"]\nmod x;", "path"),
        ] {
            let src = format!("// header\n{code}\n");
            let e = lint(&src).unwrap_err();
            assert!(e.contains(":2:") && e.contains(word), "{code}: {e}");
        }
    }

    #[test]
    fn test_lint_allows_the_words_in_comments_strings_and_ordinary_code() {
        let ok = r##"
            // include_bytes!("x") would be wrong; so would env!("Y")
            /* nested /* include!("z") */ still a comment */
            use std::env;
            fn main() {
                let v = env::var("AR_DEVICE");
                let s = "env!("X") and #[path] in a string";
                let r = r#"include_str!("y")"#;
                let c = '!';
                let path = std::path::PathBuf::new();
                let include = 3;
                println!("{v:?} {s} {r} {c} {path:?} {include}");
            }
        "##;
        assert_eq!(lint(ok), Ok(()));
    }

    #[test]
    fn test_the_real_train_file_passes_the_lint() {
        let src = include_str!("../../train/src/main.rs");
        assert_eq!(lint(src), Ok(()));
    }

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
    fn test_a_workload_allows_files_its_globs_match_and_pins_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let toml = "[files]\neditable = [\"params/*.conf\"]\n[run]\ncommand = \"true\"\n[metric]\nname = \"m\"\n\
                    direction = \"maximize\"\n";
        for (p, c) in [("params/a.conf", "1\n"), ("params/README", "x\n"), ("autoresearch.toml", toml)] {
            let full = dir.path().join(p);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, c).unwrap();
        }
        let git = init_repo(dir.path()).unwrap();
        let crate::workload::Workload::Command(spec) = crate::workload::load(dir.path()).unwrap() else {
            panic!("declared")
        };
        let w = Workload::Command(spec);
        let fixed = FixedManifest::capture_for(&git, &w).unwrap();
        assert!(fixed.files.contains_key("autoresearch.toml") && !fixed.files.contains_key("params/a.conf"));
        let head = git.head().unwrap();
        std::fs::write(dir.path().join("params/a.conf"), "2\n").unwrap();
        std::fs::write(dir.path().join("params/b.conf"), "new\n").unwrap();
        assert_eq!(check_scope(&git, &head, &fixed, &w).unwrap(), Verdict::Allowed { train_changed: true });
        std::fs::write(dir.path().join("params/notes.md"), "x").unwrap();
        std::fs::write(dir.path().join("autoresearch.toml"), "# changed\n").unwrap();
        let Verdict::Rejected { offending } = check_scope(&git, &head, &fixed, &w).unwrap() else {
            panic!("must reject")
        };
        assert_eq!(offending, vec!["autoresearch.toml", "params/notes.md"]);
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
