//! Data sources, turned into train/val/test shards of one format.
//!
//! `--source` takes `climbmix`, `tinystories`, `synthetic[:DOCS]`, `text:PATH` or
//! `parquet:PATH`; the last two may be repeated and mixed. climbmix and TinyStories pin
//! their own val and test; everything else is split 90/5/5 by document hash.

pub mod download;
pub mod local;
pub mod remote;
pub mod shard;
pub mod splits;
pub mod synthetic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::data::download::DownloadOptions;
use crate::data::local::DocSeparator;
use crate::data::splits::SplitWriter;
use crate::error::{Error, Result};
use crate::manifest::{Split, SplitStats};
use crate::profile::Profile;
use crate::progress::{Reporter, Unit};

/// Label used wherever synthetic data appears.
pub const SYNTHETIC_LABEL: &str = "SYNTHETIC grammar corpus (generated, not real text)";

/// Documents per shard for re-sharded local and synthetic data.
pub const LOCAL_DOCS_PER_SHARD: u64 = 50_000;

/// One `--source` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Climbmix,
    TinyStories,
    /// The generated corpus; `None` = the profile's default size.
    Synthetic(Option<u64>),
    Text(PathBuf),
    Parquet(PathBuf),
}

impl SourceSpec {
    pub fn parse(spec: &str) -> Result<SourceSpec> {
        let bad = |reason: &str| Error::BadSource { spec: spec.to_string(), reason: reason.to_string() };
        let path = |p: &str| -> Result<PathBuf> {
            if p.is_empty() {
                return Err(bad("missing path after the colon"));
            }
            let p = PathBuf::from(p);
            if !p.exists() {
                return Err(bad(&format!("{} does not exist", p.display())));
            }
            Ok(std::fs::canonicalize(&p).unwrap_or(p))
        };
        match spec.split_once(':') {
            None => match spec {
                "climbmix" => Ok(SourceSpec::Climbmix),
                "tinystories" => Ok(SourceSpec::TinyStories),
                "synthetic" => Ok(SourceSpec::Synthetic(None)),
                _ => Err(bad("use climbmix, tinystories, synthetic[:DOCS], text:PATH or parquet:PATH")),
            },
            Some(("synthetic", n)) => n
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .map(|n| SourceSpec::Synthetic(Some(n)))
                .ok_or_else(|| bad("synthetic:DOCS needs a positive document count")),
            Some(("text", p)) => Ok(SourceSpec::Text(path(p)?)),
            Some(("parquet", p)) => Ok(SourceSpec::Parquet(path(p)?)),
            Some(_) => Err(bad("use climbmix, tinystories, synthetic[:DOCS], text:PATH or parquet:PATH")),
        }
    }

    /// The normalised spelling stored in the manifest.
    pub fn canonical(&self) -> String {
        match self {
            SourceSpec::Climbmix => "climbmix".into(),
            SourceSpec::TinyStories => "tinystories".into(),
            SourceSpec::Synthetic(None) => "synthetic".into(),
            SourceSpec::Synthetic(Some(n)) => format!("synthetic:{n}"),
            SourceSpec::Text(p) => format!("text:{}", p.display()),
            SourceSpec::Parquet(p) => format!("parquet:{}", p.display()),
        }
    }

    fn is_local(&self) -> bool {
        matches!(self, SourceSpec::Text(_) | SourceSpec::Parquet(_))
    }
}

/// Documents in the synthetic corpus when its size is not given.
pub fn default_synthetic_docs(profile: &Profile) -> u64 {
    match profile.name {
        "smoke" => 4_000,
        "demo" => 20_000,
        "h100" => 400_000,
        _ => 60_000,
    }
}

/// Options that shape the data.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// Train shards (climbmix: shards to download; TinyStories: 100k-story shards to keep).
    pub num_shards: Option<usize>,
    pub download_workers: usize,
    /// Hugging Face endpoint (or mirror) URL.
    pub endpoint: String,
    pub separator: DocSeparator,
    pub download: DownloadOptions,
}

impl Default for DataOptions {
    fn default() -> Self {
        DataOptions {
            num_shards: None,
            download_workers: 8,
            endpoint: download::default_endpoint(),
            separator: DocSeparator::Auto,
            download: DownloadOptions::default(),
        }
    }
}

/// Shards by split (absolute paths) and their statistics.
#[derive(Debug, Default)]
pub struct BuiltData {
    pub splits: BTreeMap<Split, Vec<PathBuf>>,
    pub stats: BTreeMap<Split, SplitStats>,
}

/// Human label and synthetic flag of a set of sources.
pub fn describe(specs: &[SourceSpec]) -> (String, bool) {
    match specs {
        [SourceSpec::Climbmix] => ("climbmix-400b-shuffle (karpathy)".into(), false),
        [SourceSpec::TinyStories] => ("TinyStories (GPT-4, clean; karpathy)".into(), false),
        [SourceSpec::Synthetic(_)] => (SYNTHETIC_LABEL.into(), true),
        _ => {
            let names: Vec<String> = specs
                .iter()
                .map(|s| match s {
                    SourceSpec::Text(p) | SourceSpec::Parquet(p) => {
                        p.file_name().unwrap_or_default().to_string_lossy().to_string()
                    }
                    other => other.canonical(),
                })
                .collect();
            (format!("local corpus: {}", names.join(", ")), false)
        }
    }
}

/// Checks a set of sources can be combined.
pub fn check_combination(specs: &[SourceSpec]) -> Result<()> {
    if specs.len() > 1 && !specs.iter().all(SourceSpec::is_local) {
        let all: Vec<String> = specs.iter().map(SourceSpec::canonical).collect();
        return Err(Error::BadSource {
            spec: all.join(" "),
            reason: "only text: and parquet: sources can be combined; climbmix, tinystories and synthetic stand alone"
                .to_string(),
        });
    }
    if specs.is_empty() {
        return Err(Error::BadSource { spec: String::new(), reason: "no source given".to_string() });
    }
    Ok(())
}

/// Produces the shards for `specs`. Downloads go under `cache_dir/downloads`; shards we
/// write go into `out_dir` (a staging directory the caller moves into place).
pub fn build(
    profile: &Profile,
    specs: &[SourceSpec],
    opts: &DataOptions,
    cache_dir: &Path,
    out_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<BuiltData> {
    check_combination(specs)?;
    match &specs[0] {
        SourceSpec::Climbmix => {
            remote::climbmix(&cache_dir.join("downloads").join("climbmix"), opts, reporter)
        }
        SourceSpec::TinyStories => {
            remote::tinystories(&cache_dir.join("downloads").join("tinystories"), out_dir, opts, reporter)
        }
        SourceSpec::Synthetic(n) => {
            let n = n.unwrap_or_else(|| default_synthetic_docs(profile));
            reporter.step(&format!("Data: generating {n} documents of the {SYNTHETIC_LABEL}"));
            let bar = reporter.bar("generating", Some(n), Unit::Items);
            let mut writer = SplitWriter::new(out_dir, LOCAL_DOCS_PER_SHARD);
            for doc in synthetic::documents(n) {
                writer.push_hashed(&doc)?;
                bar.inc(1);
            }
            bar.finish();
            into_built(writer.finish("the synthetic corpus")?)
        }
        SourceSpec::Text(_) | SourceSpec::Parquet(_) => {
            let mut writer = SplitWriter::new(out_dir, LOCAL_DOCS_PER_SHARD);
            for spec in specs {
                reporter.step(&format!("Data: reading {}", spec.canonical()));
                let mut push = |doc: &str| writer.push_hashed(doc);
                let n = match spec {
                    SourceSpec::Text(p) => local::for_each_text_document(p, opts.separator, &mut push)?,
                    SourceSpec::Parquet(p) => local::for_each_parquet_document(p, &mut push)?,
                    _ => unreachable!("checked by check_combination"),
                };
                reporter.info(&format!("{n} documents"));
            }
            let label = specs.iter().map(SourceSpec::canonical).collect::<Vec<_>>().join(" ");
            into_built(writer.finish(&label)?)
        }
    }
}

fn into_built(written: splits::SplitsWritten) -> Result<BuiltData> {
    Ok(BuiltData { splits: written.files, stats: written.stats })
}
