//! The cache manifest: what `ar prepare` made, for which profile, and the sha256 of every
//! artifact, checked whenever the tokenizer or the loader opens one.
//!
//! The original caches a pickled tokenizer and trusts whatever `.parquet` files sit in the
//! data directory (its #41): a stray or truncated file silently changes the metric. Here the
//! manifest is the only list of files in use, it is written last (so a half-finished
//! prepare never looks finished), and a file whose hash differs is a hard error.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::profile::hex;

/// Version of the manifest format; anything else is refused.
pub const MANIFEST_FORMAT: u32 = 1;

/// File name of the manifest inside a profile's cache directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The three roles a data shard can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training data.
    Train,
    /// Validation: the metric every keep/discard decision is made on.
    Val,
    /// Held out: reported beside val, never used for a decision.
    Test,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One cached file: its hash and size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub sha256: String,
    pub bytes: u64,
}

/// Where the data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The `--source` values as given, normalised (e.g. `["tinystories"]`).
    pub specs: Vec<String>,
    /// Human label, e.g. "TinyStories (GPT-4, clean)" or "SYNTHETIC grammar corpus".
    pub label: String,
    /// True for the generated corpus: it is labelled as such everywhere it appears.
    pub synthetic: bool,
    /// Options that change the data (number of shards, document separator, …).
    pub options: BTreeMap<String, String>,
}

/// Tokenizer facts the train program needs without re-deriving them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// Relative path of the ranks file (tiktoken text format).
    pub ranks: String,
    /// Relative path of the token byte-length table.
    pub token_bytes: String,
    /// Vocabulary size including the special tokens.
    pub vocab_size: usize,
    /// Id of the BOS token.
    pub bos_id: u32,
    /// The split regex.
    pub pattern: String,
    /// Special tokens in id order, starting at `vocab_size - specials.len()`.
    pub specials: Vec<String>,
    /// Documents and characters the tokenizer was trained on.
    pub trained_docs: u64,
    pub trained_chars: u64,
}

/// Counts for the final summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitStats {
    pub shards: usize,
    pub documents: u64,
    pub chars: u64,
    /// Token count (BOS included per document); `tokens_estimated` says whether it was
    /// counted or extrapolated from a sample.
    pub tokens: u64,
    pub tokens_estimated: bool,
}

/// The manifest itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub profile: String,
    pub profile_hash: String,
    pub source: SourceInfo,
    /// Seconds since the Unix epoch when the manifest was written.
    pub created_unix: u64,
    /// Shard paths (relative to the cache directory) per split, in reading order.
    pub splits: BTreeMap<Split, Vec<String>>,
    pub stats: BTreeMap<Split, SplitStats>,
    pub tokenizer: TokenizerInfo,
    /// Every file above, by relative path.
    pub artifacts: BTreeMap<String, Artifact>,
}

impl Manifest {
    /// Reads and parses a manifest, refusing other formats.
    pub fn load(path: &Path, profile_name: &str) -> Result<Manifest> {
        let bad = |reason: String| Error::BadManifest {
            path: path.to_path_buf(),
            reason,
            profile: profile_name.to_string(),
        };
        let text = std::fs::read_to_string(path).at(path)?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(bad(format!(
                "format {} (this build reads format {MANIFEST_FORMAT})",
                manifest.format
            )));
        }
        Ok(manifest)
    }

    /// Writes the manifest atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("manifest serialises");
        write_atomic(path, text.as_bytes())
    }

    /// Shards of one split, relative paths.
    pub fn shards(&self, split: Split) -> &[String] {
        self.splits.get(&split).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The expected hash of a relative path, or an error if the manifest does not list it.
    pub fn expected(&self, rel: &str, root: &Path) -> Result<&Artifact> {
        self.artifacts.get(rel).ok_or_else(|| Error::BadManifest {
            path: root.join(MANIFEST_FILE),
            reason: format!("{rel} is used but not listed among the artifacts"),
            profile: self.profile.clone(),
        })
    }

    /// Checks `bytes` (the content of `rel`, already read) against the manifest.
    pub fn verify_bytes(&self, root: &Path, rel: &str, bytes: &[u8]) -> Result<()> {
        let expected = self.expected(rel, root)?;
        let found = sha256_hex(bytes);
        if found != expected.sha256 {
            return Err(Error::Tampered {
                path: root.join(rel),
                found,
                expected: expected.sha256.clone(),
                profile: self.profile.clone(),
            });
        }
        Ok(())
    }

    /// Hashes the file at `rel` from disk and checks it.
    pub fn verify_file(&self, root: &Path, rel: &str) -> Result<()> {
        let expected = self.expected(rel, root)?;
        let path = root.join(rel);
        if !path.exists() {
            return Err(Error::MissingArtifact { path, profile: self.profile.clone() });
        }
        let found = sha256_file(&path)?;
        if found.sha256 != expected.sha256 {
            return Err(Error::Tampered {
                path,
                found: found.sha256,
                expected: expected.sha256.clone(),
                profile: self.profile.clone(),
            });
        }
        Ok(())
    }

    /// Verifies every artifact; returns the number of bytes hashed.
    pub fn verify_all(&self, root: &Path) -> Result<u64> {
        let mut total = 0;
        for (rel, artifact) in &self.artifacts {
            self.verify_file(root, rel)?;
            total += artifact.bytes;
        }
        Ok(total)
    }
}

/// sha256 of a byte slice, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// sha256 and size of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<Artifact> {
    let mut file = File::open(path).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(Artifact { sha256: hex(&hasher.finalize()), bytes })
}

/// Writes a file so that readers see either the old content or the new, never a mix:
/// temporary file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at(dir)?;
    let tmp: PathBuf = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".tmp-{}", std::process::id()));
        dir.join(name)
    };
    {
        let mut f = File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    std::fs::rename(&tmp, path).at(path)?;
    sync_dir(dir);
    Ok(())
}

/// Best-effort fsync of a directory, so a rename in it survives a crash.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sha256_of_known_string() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn test_write_atomic_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
    }
}
