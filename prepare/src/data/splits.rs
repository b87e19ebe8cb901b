//! Writing documents into train/val/test shards, and the deterministic split by document
//! hash used for every source that does not pin its own val and test (local text, local
//! parquet, the synthetic corpus).
//!
//! Splitting by a hash of the document's text, not by position, means the same document
//! always lands in the same split however the corpus is ordered or grown, and a duplicated
//! document cannot leak from train into val.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::data::shard::ShardWriter;
use crate::error::{Error, Result};
use crate::manifest::{Split, SplitStats};

/// Per-mille of documents that go to test, then to val (5 % each).
pub const TEST_PER_MILLE: u64 = 50;
pub const VAL_PER_MILLE: u64 = 50;

/// The split a document belongs to, from the first 8 bytes of its sha256.
pub fn split_of(doc: &str) -> Split {
    let digest = Sha256::digest(doc.as_bytes());
    let bucket = u64::from_le_bytes(digest[..8].try_into().unwrap()) % 1000;
    if bucket < TEST_PER_MILLE {
        Split::Test
    } else if bucket < TEST_PER_MILLE + VAL_PER_MILLE {
        Split::Val
    } else {
        Split::Train
    }
}

/// Shards written so far, per split, and their statistics.
pub struct SplitsWritten {
    pub files: BTreeMap<Split, Vec<PathBuf>>,
    pub stats: BTreeMap<Split, SplitStats>,
}

/// Writes documents into `<dir>/<split>_<nnnnn>.parquet`, starting a new shard every
/// `docs_per_shard` documents.
pub struct SplitWriter {
    dir: PathBuf,
    docs_per_shard: u64,
    open: BTreeMap<Split, ShardWriter>,
    written: SplitsWritten,
}

impl SplitWriter {
    pub fn new(dir: &Path, docs_per_shard: u64) -> Self {
        SplitWriter {
            dir: dir.to_path_buf(),
            docs_per_shard: docs_per_shard.max(1),
            open: BTreeMap::new(),
            written: SplitsWritten { files: BTreeMap::new(), stats: BTreeMap::new() },
        }
    }

    /// Adds a document to `split`. Empty documents are skipped.
    pub fn push(&mut self, split: Split, doc: &str) -> Result<()> {
        if doc.is_empty() {
            return Ok(());
        }
        if !self.open.contains_key(&split) {
            let files = self.written.files.entry(split).or_default();
            let path = self.dir.join(format!("{}_{:05}.parquet", split.name(), files.len()));
            files.push(path.clone());
            self.open.insert(split, ShardWriter::create(&path)?);
        }
        let writer = self.open.get_mut(&split).expect("opened above");
        writer.push(doc)?;
        let stats = self.written.stats.entry(split).or_default();
        stats.documents += 1;
        stats.chars += doc.chars().count() as u64;
        if writer.rows() >= self.docs_per_shard {
            self.open.remove(&split).expect("present").finish()?;
        }
        Ok(())
    }

    /// Adds a document to the split its hash chooses.
    pub fn push_hashed(&mut self, doc: &str) -> Result<()> {
        self.push(split_of(doc), doc)
    }

    /// Closes every shard. Each of train, val and test must have received documents.
    pub fn finish(mut self, what: &str) -> Result<SplitsWritten> {
        for (_, w) in std::mem::take(&mut self.open) {
            w.finish()?;
        }
        for split in [Split::Train, Split::Val, Split::Test] {
            let stats = self.written.stats.entry(split).or_default();
            stats.shards = self.written.files.get(&split).map_or(0, Vec::len);
            if stats.documents == 0 {
                let total: u64 = self.written.stats.values().map(|s| s.documents).sum();
                return Err(Error::EmptyCorpus {
                    what: what.to_string(),
                    detail: format!(
                        " for the {split} split ({total} documents in all; val and test each take ~5 % by \
                         document hash, so at least a few dozen documents are needed)"
                    ),
                });
            }
        }
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_hash_split_is_stable_and_roughly_five_percent() {
        let docs: Vec<String> = (0..20_000).map(|i| format!("document number {i}")).collect();
        let val = docs.iter().filter(|d| split_of(d) == Split::Val).count();
        let test = docs.iter().filter(|d| split_of(d) == Split::Test).count();
        assert!((800..1200).contains(&val), "val {val}");
        assert!((800..1200).contains(&test), "test {test}");
        assert_eq!(split_of("abc"), split_of("abc"));
    }

    #[test]
    fn test_tiny_corpus_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SplitWriter::new(dir.path(), 100);
        w.push_hashed("only one document").unwrap();
        let err = w.finish("notes.txt").err().unwrap().to_string();
        assert!(err.contains("notes.txt") && err.contains("split"), "{err}");
    }
}
