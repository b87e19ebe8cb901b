//! The cache directory of one profile, opened and checked.
//!
//! Layout: `$AUTORESEARCH_CACHE/<profile>/` (default `~/.cache/autoresearch-rs/<profile>/`)
//! holding `data/` (shards), `downloads/` (raw files before re-sharding), `tokenizer/`
//! (ranks file and token byte lengths) and `manifest.json`. Opening a cache checks that it
//! was prepared for the active profile under the same constants; each artifact is then
//! hashed when it is loaded.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::manifest::{MANIFEST_FILE, Manifest, Split};
use crate::profile::Profile;

/// Environment variable overriding the cache root.
pub const CACHE_ENV: &str = "AUTORESEARCH_CACHE";

/// The root under which each profile has its own directory.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("autoresearch-rs")
}

/// The cache directory of a profile.
pub fn profile_dir(profile: &Profile) -> PathBuf {
    cache_root().join(profile.name)
}

/// A prepared, profile-checked cache.
#[derive(Debug, Clone)]
pub struct Cache {
    /// The profile's cache directory.
    pub root: PathBuf,
    pub profile: &'static Profile,
    pub manifest: Manifest,
}

impl Cache {
    /// Opens the cache of the active profile (`AR_PROFILE`, default `cpu`).
    pub fn open_active() -> Result<Cache> {
        Self::open(Profile::active()?)
    }

    /// Opens the cache of `profile` in its default location.
    pub fn open(profile: &'static Profile) -> Result<Cache> {
        Self::open_at(&profile_dir(profile), profile)
    }

    /// Opens the cache at `root`, checking it was made for `profile`.
    pub fn open_at(root: &Path, profile: &'static Profile) -> Result<Cache> {
        let manifest_path = root.join(MANIFEST_FILE);
        if !manifest_path.exists() {
            return Err(Error::NotPrepared { profile: profile.name.to_string(), path: root.to_path_buf() });
        }
        let manifest = Manifest::load(&manifest_path, profile.name)?;
        if manifest.profile != profile.name {
            return Err(Error::WrongProfile {
                path: manifest_path,
                found: manifest.profile,
                wanted: profile.name.to_string(),
            });
        }
        let expected = profile.hash();
        if manifest.profile_hash != expected {
            return Err(Error::ProfileChanged {
                path: manifest_path,
                profile: profile.name.to_string(),
                found: manifest.profile_hash,
                expected,
            });
        }
        Ok(Cache { root: root.to_path_buf(), profile, manifest })
    }

    /// Absolute path of a manifest-relative path.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Relative paths of the shards of a split, in reading order.
    pub fn shards(&self, split: Split) -> &[String] {
        self.manifest.shards(split)
    }

    /// Reads a whole artifact and checks its hash against the manifest.
    pub fn read_verified(&self, rel: &str) -> Result<Vec<u8>> {
        let path = self.path(rel);
        if !path.exists() {
            return Err(Error::MissingArtifact { path, profile: self.profile.name.to_string() });
        }
        let bytes = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !self.is_train_artifact(rel) => {
                return Err(Error::Eval(format!(
                    "{}: permission denied. The training run may read the train shards and the tokenizer only; \
                     the val and test rows are scored by ar, never read by the train program",
                    path.display()
                )));
            }
            other => other.at(&path)?,
        };
        self.manifest.verify_bytes(&self.root, rel, &bytes)?;
        Ok(bytes)
    }

    /// True for what a training run may read: train shards and the tokenizer files.
    pub fn is_train_artifact(&self, rel: &str) -> bool {
        let t = &self.manifest.tokenizer;
        self.shards(Split::Train).iter().any(|s| s == rel) || rel == t.ranks || rel == t.token_bytes
    }

    /// The files a training run needs to read (absolute paths): the manifest, the
    /// tokenizer files and the train shards. Everything else of the cache (val and test
    /// shards, raw downloads) stays unreadable to it.
    pub fn training_reads(&self) -> Vec<PathBuf> {
        let t = &self.manifest.tokenizer;
        let mut v = vec![self.root.join(MANIFEST_FILE), self.path(&t.ranks), self.path(&t.token_bytes)];
        v.extend(self.shards(Split::Train).iter().map(|s| self.path(s)));
        v
    }

    /// sha256 of the manifest file: a session records it when it starts and refuses a cache
    /// that was re-prepared under it.
    pub fn manifest_sha256(&self) -> Result<String> {
        let path = self.root.join(MANIFEST_FILE);
        Ok(crate::manifest::sha256_hex(&std::fs::read(&path).at(&path)?))
    }

    /// A human label of the data, e.g. for the result record.
    pub fn data_label(&self) -> String {
        self.manifest.source.label.clone()
    }
}
