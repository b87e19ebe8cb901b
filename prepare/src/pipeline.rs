//! `ar prepare` end to end: data → tokenizer → token counts → manifest.
//!
//! Idempotent: when the manifest already describes the requested profile and sources and
//! every artifact still hashes to its recorded value, nothing is redone. Otherwise the
//! new shards and tokenizer are built in `staging/`, moved into place, and the manifest is
//! written last, so an interrupted prepare never leaves a cache that looks finished.
//! Downloads are kept under `downloads/` so a re-run resumes rather than refetches.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::bpe::{BpeTrainer, SPECIAL_TOKENS, SPLIT_PATTERN};
use crate::cache::profile_dir;
use crate::data::shard::ShardReader;
use crate::data::{self, DataOptions, SourceSpec};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{
    Artifact, MANIFEST_FILE, MANIFEST_FORMAT, Manifest, SourceInfo, Split, SplitStats, TokenizerInfo,
    sha256_file,
};
use crate::profile::Profile;
use crate::progress::{Reporter, Unit};
use crate::tokenizer::{Tokenizer, encode_token_bytes};

/// Relative paths of the tokenizer files.
pub const RANKS_FILE: &str = "tokenizer/ranks.tiktoken";
pub const TOKEN_BYTES_FILE: &str = "tokenizer/token_bytes.bin";

/// Text the tokenizer must round-trip after training (the original's check, plus more
/// non-ASCII).
pub const ROUND_TRIP_TEXT: &str = "Hello world! Numbers: 123. Unicode: 你好 — naïve café, ß, 🙂.";

/// Above this many training characters, train-split tokens are estimated from a sample.
const COUNT_ALL_TRAIN_CHARS: u64 = 200_000_000;

/// What to prepare.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub profile: &'static Profile,
    /// Empty = the profile's default source.
    pub sources: Vec<SourceSpec>,
    pub data: DataOptions,
    /// Default: the profile's cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Rebuild even if the cache is already prepared.
    pub force: bool,
}

/// What `prepare` did.
#[derive(Debug, Clone)]
pub struct PrepareOutcome {
    pub root: PathBuf,
    pub manifest: Manifest,
    /// True when an existing, verified cache was reused.
    pub reused: bool,
    pub seconds: f64,
    pub warnings: Vec<String>,
}

/// Runs the whole preparation. See the module header.
pub fn prepare(opts: &PrepareOptions, reporter: &dyn Reporter) -> Result<PrepareOutcome> {
    let started = Instant::now();
    let profile = opts.profile;
    let root = opts.cache_dir.clone().unwrap_or_else(|| profile_dir(profile));
    std::fs::create_dir_all(&root).at(&root)?;
    let _lock = lock(&root)?;
    let specs = if opts.sources.is_empty() {
        vec![SourceSpec::parse(profile.default_source)?]
    } else {
        opts.sources.clone()
    };
    data::check_combination(&specs)?;
    let wanted = source_info(profile, &specs, &opts.data);
    reporter.step(&format!("Cache: {} (profile {}, {})", root.display(), profile.name, profile.purpose));

    let manifest_path = root.join(MANIFEST_FILE);
    if manifest_path.exists() && !opts.force {
        match reusable(&root, profile, &wanted, reporter) {
            Ok(Some(manifest)) => {
                return Ok(PrepareOutcome {
                    root,
                    manifest,
                    reused: true,
                    seconds: started.elapsed().as_secs_f64(),
                    warnings: Vec::new(),
                });
            }
            Ok(None) => {}
            Err(e) => reporter.warn(&format!("{e}\n  rebuilding the cache")),
        }
    }

    let staging = root.join("staging");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).at(&staging)?;
    }
    let staged_data = staging.join("data");
    std::fs::create_dir_all(&staged_data).at(&staged_data)?;
    let mut built = data::build(profile, &specs, &opts.data, &root, &staged_data, reporter)?;
    let mut warnings = Vec::new();

    // Tokenizer.
    let train_paths = built.splits.get(&Split::Train).cloned().unwrap_or_default();
    let (tokenizer, ranks_bytes, trained_docs, trained_chars) =
        train_tokenizer(profile, &train_paths, built.stats.get(&Split::Train), reporter)?;
    if tokenizer.vocab_size() < profile.vocab_size {
        let w = format!(
            "the corpus is too small for a {}-token vocabulary: training stopped at {} tokens \
             (every pre-tokenized chunk is already one token); the model will use {}",
            profile.vocab_size,
            tokenizer.vocab_size(),
            tokenizer.vocab_size()
        );
        reporter.warn(&w);
        warnings.push(w);
    }
    let staged_tok = staging.join("tokenizer");
    std::fs::create_dir_all(&staged_tok).at(&staged_tok)?;
    crate::manifest::write_atomic(&staged_tok.join("ranks.tiktoken"), &ranks_bytes)?;
    crate::manifest::write_atomic(
        &staged_tok.join("token_bytes.bin"),
        &encode_token_bytes(tokenizer.token_bytes()),
    )?;

    // Token counts (BOS included), and whether val is big enough for EVAL_TOKENS.
    count_tokens(&tokenizer, &mut built, reporter)?;
    let val_tokens = built.stats.get(&Split::Val).map_or(0, |s| s.tokens);
    if (val_tokens as usize) < profile.eval_tokens {
        let w = format!(
            "the val split holds {val_tokens} tokens, fewer than EVAL_TOKENS = {}: evaluation will wrap \
             around and score some tokens more than once",
            profile.eval_tokens
        );
        reporter.warn(&w);
        warnings.push(w);
    }

    // Move into place, then the manifest, last.
    let mut splits: BTreeMap<Split, Vec<String>> = BTreeMap::new();
    let data_dir = root.join("data");
    replace_dir(&staged_data, &data_dir)?;
    replace_dir(&staged_tok, &root.join("tokenizer"))?;
    let _ = std::fs::remove_dir_all(&staging);
    for (split, paths) in &built.splits {
        let rels = paths
            .iter()
            .map(|p| {
                let p = match p.strip_prefix(&staged_data) {
                    Ok(name) => data_dir.join(name),
                    Err(_) => p.clone(),
                };
                relative(&root, &p)
            })
            .collect::<Result<Vec<_>>>()?;
        splits.insert(*split, rels);
    }
    let mut artifacts = BTreeMap::new();
    let hash_bar = reporter.bar("hashing", None, Unit::Items);
    for rel in splits.values().flatten().map(String::as_str).chain([RANKS_FILE, TOKEN_BYTES_FILE]) {
        let a: Artifact = sha256_file(&root.join(rel))?;
        artifacts.insert(rel.to_string(), a);
        hash_bar.inc(1);
    }
    hash_bar.finish();
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        profile: profile.name.to_string(),
        profile_hash: profile.hash(),
        source: wanted,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        splits,
        stats: built.stats,
        tokenizer: TokenizerInfo {
            ranks: RANKS_FILE.to_string(),
            token_bytes: TOKEN_BYTES_FILE.to_string(),
            vocab_size: tokenizer.vocab_size(),
            bos_id: tokenizer.bos_id(),
            pattern: SPLIT_PATTERN.to_string(),
            specials: SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect(),
            trained_docs,
            trained_chars,
        },
        artifacts,
    };
    manifest.save(&manifest_path)?;
    Ok(PrepareOutcome { root, manifest, reused: false, seconds: started.elapsed().as_secs_f64(), warnings })
}

/// The manifest if the cache already holds exactly what is wanted and verifies.
fn reusable(
    root: &Path,
    profile: &'static Profile,
    wanted: &SourceInfo,
    reporter: &dyn Reporter,
) -> Result<Option<Manifest>> {
    let manifest = Manifest::load(&root.join(MANIFEST_FILE), profile.name)?;
    if manifest.profile != profile.name || manifest.profile_hash != profile.hash() {
        reporter.info("the cache was made under other constants; rebuilding");
        return Ok(None);
    }
    if &manifest.source != wanted {
        reporter.info(&format!(
            "the cache holds {} ({}); switching to {}",
            manifest.source.specs.join(" "),
            manifest.source.label,
            wanted.specs.join(" ")
        ));
        return Ok(None);
    }
    let t = Instant::now();
    let bytes = manifest.verify_all(root)?;
    reporter.info(&format!(
        "already prepared; verified {} artifacts ({:.1} MB) in {:.1}s",
        manifest.artifacts.len(),
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    ));
    Ok(Some(manifest))
}

/// The manifest's description of the requested sources.
fn source_info(profile: &Profile, specs: &[SourceSpec], opts: &DataOptions) -> SourceInfo {
    let (label, synthetic) = data::describe(specs);
    let mut options = BTreeMap::new();
    let canonical: Vec<String> = specs
        .iter()
        .map(|s| match s {
            SourceSpec::Synthetic(None) => {
                SourceSpec::Synthetic(Some(data::default_synthetic_docs(profile))).canonical()
            }
            other => other.canonical(),
        })
        .collect();
    match &specs[0] {
        SourceSpec::Climbmix | SourceSpec::TinyStories => {
            options.insert(
                "num_shards".to_string(),
                opts.num_shards.map_or("default".to_string(), |n| n.to_string()),
            );
        }
        SourceSpec::Text(_) | SourceSpec::Parquet(_) => {
            options.insert("separator".to_string(), opts.separator.name().to_string());
        }
        SourceSpec::Synthetic(_) => {}
    }
    SourceInfo { specs: canonical, label, synthetic, options }
}

/// Trains the BPE on the train shards, within the profile's character budget.
fn train_tokenizer(
    profile: &Profile,
    train: &[PathBuf],
    stats: Option<&SplitStats>,
    reporter: &dyn Reporter,
) -> Result<(Tokenizer, Vec<u8>, u64, u64)> {
    let t0 = Instant::now();
    reporter.step(&format!("Tokenizer: training a {}-token BPE", profile.vocab_size));
    let mut trainer = BpeTrainer::new(SPLIT_PATTERN, profile.tokenizer_max_chars, profile.tokenizer_doc_cap)
        .map_err(|e| Error::Bpe(e.to_string()))?;
    let total_chars = stats.map(|s| s.chars).filter(|&c| c > 0);
    let read_bar = reporter.bar(
        "reading text (chars)",
        total_chars.map(|c| c.min(profile.tokenizer_max_chars)),
        Unit::Items,
    );
    'shards: for path in train {
        let reader = ShardReader::open(path)?;
        for g in 0..reader.num_row_groups() {
            let docs = reader.row_group(g)?;
            let before = trainer.chars_seen();
            let more = trainer.add_documents(&docs);
            read_bar.inc(trainer.chars_seen() - before);
            if !more {
                break 'shards;
            }
        }
    }
    read_bar.finish();
    let (docs, chars) = (trainer.documents_seen(), trainer.chars_seen());
    let merges = (profile.vocab_size - SPECIAL_TOKENS.len()) as u32;
    let merge_bar = reporter.bar("merges", Some(merges as u64 - 256), Unit::Items);
    let mut last = 0u32;
    let ranks = trainer
        .train(merges, &mut |done, _total| {
            merge_bar.inc((done - last) as u64);
            last = done;
        })
        .map_err(|e| Error::Bpe(e.to_string()))?;
    merge_bar.finish();
    let bytes = ranks.to_file_bytes();
    let tokenizer = Tokenizer::from_ranks(&ranks, SPLIT_PATTERN)?;
    tokenizer.check_round_trip(ROUND_TRIP_TEXT)?;
    reporter.info(&format!(
        "trained on {docs} documents ({:.1} M chars) in {:.1}s: {} tokens, round trip OK",
        chars as f64 / 1e6,
        t0.elapsed().as_secs_f64(),
        tokenizer.vocab_size()
    ));
    Ok((tokenizer, bytes, docs, chars))
}

/// Fills in token counts: val and test exactly; train exactly unless it is huge.
fn count_tokens(tok: &Tokenizer, built: &mut data::BuiltData, reporter: &dyn Reporter) -> Result<()> {
    for (split, paths) in &built.splits {
        let stats = built.stats.entry(*split).or_default();
        let sample = *split == Split::Train && stats.chars > COUNT_ALL_TRAIN_CHARS;
        let bar = reporter.bar(&format!("counting {split} tokens"), Some(paths.len() as u64), Unit::Items);
        let (mut tokens, mut chars, mut docs) = (0u64, 0u64, 0u64);
        'paths: for path in paths {
            let reader = ShardReader::open(path)?;
            for g in 0..reader.num_row_groups() {
                let group = reader.row_group(g)?;
                chars += group.iter().map(|d| d.chars().count() as u64).sum::<u64>();
                docs += group.len() as u64;
                tokens += tok.encode_batch(&group, true).iter().map(|d| d.len() as u64).sum::<u64>();
                if sample && chars > COUNT_ALL_TRAIN_CHARS / 20 {
                    break 'paths;
                }
            }
            bar.inc(1);
        }
        bar.finish();
        if stats.chars == 0 {
            // climbmix shards arrive without character counts.
            stats.chars = if sample { 0 } else { chars };
        }
        stats.documents = stats.documents.max(docs);
        stats.tokens_estimated = sample;
        stats.tokens = if sample && chars > 0 {
            (tokens as f64 * stats.chars as f64 / chars as f64) as u64
        } else {
            tokens
        };
    }
    Ok(())
}

/// Replaces `dst` by `src` (both directories).
fn replace_dir(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        std::fs::remove_dir_all(dst).at(dst)?;
    }
    std::fs::rename(src, dst).at(dst)?;
    if let Some(parent) = dst.parent() {
        crate::manifest::sync_dir(parent);
    }
    Ok(())
}

fn relative(root: &Path, path: &Path) -> Result<String> {
    path.strip_prefix(root)
        .map(|p| p.to_string_lossy().replace('\\', "/"))
        .map_err(|_| Error::Bpe(format!("{} is outside the cache {}", path.display(), root.display())))
}

/// An exclusive lock on the cache directory, so two `ar prepare` runs cannot interleave.
fn lock(root: &Path) -> Result<File> {
    let path = root.join(".lock");
    let file = File::create(&path).at(&path)?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(Error::Io {
                path,
                source: std::io::Error::other(
                    "another `ar prepare` is running on this cache; wait for it to finish",
                ),
            });
        }
    }
    Ok(file)
}
