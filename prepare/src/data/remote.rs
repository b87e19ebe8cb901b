//! The two Hugging Face datasets: the original's climbmix shards and TinyStories.
//!
//! climbmix (karpathy/climbmix-400b-shuffle): `shard_00000.parquet` … `shard_06542.parquet`,
//! already in our shard format, used as downloaded. Train = the first `--num-shards`;
//! val = shard_06542 as in the original; test = shard_06541, held out (never a train
//! shard, even with `--num-shards -1`).
//!
//! TinyStories (karpathy/tinystories-gpt4-clean): the dataset ships ONE file at the root of
//! its repository, `tinystories_gpt4_clean.parquet` (~673 MB, one `text` column, 2,732,634
//! GPT-4 stories, ASCII only, pre-shuffled). Its card suggests rows 0–9,999 = test,
//! 10,000–19,999 = val, the rest = train; we use exactly those ranges and re-shard the train
//! rows into shards of 100,000 stories so the rest of `prepare` sees one format.

use std::path::{Path, PathBuf};

use crate::data::download::{self, Job};
use crate::data::shard::{ShardReader, ShardWriter, validate_shard};
use crate::data::{BuiltData, DataOptions};
use crate::error::{Error, Result};
use crate::manifest::{Split, SplitStats};
use crate::progress::{Reporter, Unit};

pub const CLIMBMIX_REPO: &str = "karpathy/climbmix-400b-shuffle";
pub const CLIMBMIX_MAX_SHARD: usize = 6542;
pub const CLIMBMIX_VAL_SHARD: usize = CLIMBMIX_MAX_SHARD;
pub const CLIMBMIX_TEST_SHARD: usize = CLIMBMIX_MAX_SHARD - 1;
pub const CLIMBMIX_DEFAULT_SHARDS: usize = 10;

pub const TINYSTORIES_REPO: &str = "karpathy/tinystories-gpt4-clean";
pub const TINYSTORIES_FILE: &str = "tinystories_gpt4_clean.parquet";
pub const TINYSTORIES_TEST_ROWS: std::ops::Range<u64> = 0..10_000;
pub const TINYSTORIES_VAL_ROWS: std::ops::Range<u64> = 10_000..20_000;
pub const TINYSTORIES_DOCS_PER_SHARD: u64 = 100_000;

/// The climbmix file name of shard `i`.
pub fn climbmix_name(i: usize) -> String {
    format!("shard_{i:05}.parquet")
}

/// The parquet validator handed to the downloader: footer, `text` column and every page.
fn validate_parquet(path: &Path) -> std::result::Result<(), String> {
    validate_shard(path, true).map(|_| ()).map_err(|e| e.to_string())
}

fn download_all(jobs: Vec<Job>, opts: &DataOptions, reporter: &dyn Reporter) -> Result<()> {
    let total = jobs.len();
    let results = download::fetch_all(
        jobs.clone(),
        opts.download_workers,
        &opts.download,
        &validate_parquet,
        |job: &Job| {
            let name = job.dest.file_name().unwrap_or_default().to_string_lossy().to_string();
            reporter.bar(&name, None, Unit::Bytes)
        },
    );
    let failures: Vec<String> = results
        .iter()
        .zip(&jobs)
        .filter_map(|(r, job)| r.as_ref().err().map(|e| format!("  {}: {e}", job.dest.display())))
        .collect();
    if !failures.is_empty() {
        return Err(Error::Download(format!(
            "{} of {total} files failed:\n{}\nRe-run `ar prepare` to resume (finished files are kept).",
            failures.len(),
            failures.join("\n")
        )));
    }
    Ok(())
}

/// Downloads the climbmix shards into `dir` and returns them by split.
pub fn climbmix(dir: &Path, opts: &DataOptions, reporter: &dyn Reporter) -> Result<BuiltData> {
    let n = opts.num_shards.unwrap_or(CLIMBMIX_DEFAULT_SHARDS).min(CLIMBMIX_MAX_SHARD + 1);
    let train: Vec<usize> = (0..n).filter(|&i| i != CLIMBMIX_VAL_SHARD && i != CLIMBMIX_TEST_SHARD).collect();
    if train.is_empty() {
        return Err(Error::BadSource {
            spec: "climbmix".to_string(),
            reason: "--num-shards must be at least 1".to_string(),
        });
    }
    let mut all: Vec<(Split, usize)> = train.iter().map(|&i| (Split::Train, i)).collect();
    all.push((Split::Val, CLIMBMIX_VAL_SHARD));
    all.push((Split::Test, CLIMBMIX_TEST_SHARD));
    let jobs: Vec<Job> = all
        .iter()
        .map(|&(_, i)| Job {
            url: download::hf_url(&opts.endpoint, CLIMBMIX_REPO, &climbmix_name(i)),
            dest: dir.join(climbmix_name(i)),
        })
        .collect();
    let present = jobs.iter().filter(|j| j.dest.exists()).count();
    reporter.step(&format!(
        "Data: climbmix, {} train shards + val + test ({} already downloaded) from {}",
        train.len(),
        present,
        opts.endpoint
    ));
    download_all(jobs, opts, reporter)?;
    let mut built = BuiltData::default();
    for (split, i) in all {
        let path = dir.join(climbmix_name(i));
        let info = validate_shard(&path, false)?;
        built.splits.entry(split).or_default().push(path);
        let s = built.stats.entry(split).or_default();
        s.shards += 1;
        s.documents += info.rows;
    }
    Ok(built)
}

/// Downloads TinyStories into `download_dir` and re-shards it into `out_dir`.
pub fn tinystories(
    download_dir: &Path,
    out_dir: &Path,
    opts: &DataOptions,
    reporter: &dyn Reporter,
) -> Result<BuiltData> {
    let dest = download_dir.join(TINYSTORIES_FILE);
    reporter.step(&format!("Data: TinyStories ({TINYSTORIES_REPO}) from {}", opts.endpoint));
    download_all(
        vec![Job {
            url: download::hf_url(&opts.endpoint, TINYSTORIES_REPO, TINYSTORIES_FILE),
            dest: dest.clone(),
        }],
        opts,
        reporter,
    )?;
    reshard_tinystories(&dest, out_dir, opts.num_shards, reporter)
}

/// Splits the single TinyStories file by the card's row ranges into our shards.
pub fn reshard_tinystories(
    source: &Path,
    out_dir: &Path,
    max_train_shards: Option<usize>,
    reporter: &dyn Reporter,
) -> Result<BuiltData> {
    let reader = ShardReader::open(source)?;
    let rows = reader.num_rows();
    if rows <= TINYSTORIES_VAL_ROWS.end {
        return Err(Error::BadShard {
            path: source.to_path_buf(),
            reason: format!("{rows} rows; TinyStories has millions (test and val alone take 20,000)"),
            hint: "; delete it and re-run `ar prepare` to download it again".to_string(),
        });
    }
    let max_train_rows = max_train_shards.map(|n| n as u64 * TINYSTORIES_DOCS_PER_SHARD);
    let bar = reporter.bar("re-sharding TinyStories", Some(rows), Unit::Items);
    let mut built = BuiltData::default();
    let mut writers: Vec<(Split, ShardWriter)> = Vec::new();
    let mut row = 0u64;
    let mut train_rows = 0u64;
    'groups: for g in 0..reader.num_row_groups() {
        for doc in reader.row_group(g)? {
            let split = if TINYSTORIES_TEST_ROWS.contains(&row) {
                Split::Test
            } else if TINYSTORIES_VAL_ROWS.contains(&row) {
                Split::Val
            } else {
                Split::Train
            };
            row += 1;
            if split == Split::Train {
                if max_train_rows.is_some_and(|m| train_rows >= m) {
                    break 'groups;
                }
                train_rows += 1;
            }
            let full = writers.last().is_some_and(|(s, w)| {
                *s != split || (split == Split::Train && w.rows() >= TINYSTORIES_DOCS_PER_SHARD)
            });
            if full || writers.is_empty() {
                if let Some((_, w)) = writers.pop() {
                    w.finish()?;
                }
                let files = built.splits.entry(split).or_default();
                let path: PathBuf = out_dir.join(format!("{}_{:05}.parquet", split.name(), files.len()));
                files.push(path.clone());
                writers.push((split, ShardWriter::create(&path)?));
            }
            writers.last_mut().expect("opened").1.push(&doc)?;
            let s: &mut SplitStats = built.stats.entry(split).or_default();
            s.documents += 1;
            s.chars += doc.chars().count() as u64;
            bar.inc(1);
        }
    }
    if let Some((_, w)) = writers.pop() {
        w.finish()?;
    }
    bar.finish();
    for (split, files) in &built.splits {
        built.stats.entry(*split).or_default().shards = files.len();
    }
    Ok(built)
}
