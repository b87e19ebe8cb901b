//! `ar prepare` through the real binary, as a user runs it: the offline synthetic default,
//! TinyStories and climbmix fetched from a local mirror that misbehaves on purpose, and the
//! failures a user meets (no network, a full disk, a bad corpus).

#[path = "../../prepare/tests/support/http_server.rs"]
mod http_server;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use http_server::{Step, TestServer};
use prepare::data::shard::{ShardReader, ShardWriter};
use prepare::manifest::{MANIFEST_FILE, Manifest, Split};

fn ar(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ar"))
        .args(args)
        .env("AUTORESEARCH_CACHE", cache)
        .env_remove("HF_ENDPOINT")
        .env_remove("AR_PROFILE")
        .output()
        .expect("ar runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A parquet file in memory with `rows` short stories.
fn stories_parquet(rows: usize, prefix: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.parquet");
    let mut w = ShardWriter::create(&path).unwrap();
    for i in 0..rows {
        w.push(&format!("{prefix} {i}: Tom saw {} red birds and said hello to Lily.", i % 17)).unwrap();
    }
    w.finish().unwrap();
    std::fs::read(&path).unwrap()
}

fn manifest(cache: &Path, profile: &str) -> Manifest {
    Manifest::load(&cache.join(profile).join(MANIFEST_FILE), profile).unwrap()
}

const TINYSTORIES_PATH: &str =
    "/datasets/karpathy/tinystories-gpt4-clean/resolve/main/tinystories_gpt4_clean.parquet";

#[test]
fn test_prepare_synthetic_then_second_run_only_verifies() {
    let cache = tempfile::tempdir().unwrap();
    let first = ar(&["prepare", "--profile", "smoke"], cache.path());
    assert!(first.status.success(), "{}", text(&first));
    let out = text(&first);
    assert!(out.contains("Prepared profile smoke") && out.contains("SYNTHETIC"), "{out}");
    let second = ar(&["prepare", "--profile", "smoke"], cache.path());
    assert!(second.status.success(), "{}", text(&second));
    assert!(text(&second).contains("Verified profile smoke"), "{}", text(&second));
}

#[test]
fn test_tinystories_from_a_mirror_resumes_a_cut_download_and_uses_the_card_splits() {
    let server = TestServer::start();
    let file = stories_parquet(24_000, "Story");
    server.add(TINYSTORIES_PATH, file.clone(), vec![Step::Truncate { after: file.len() / 3 }], Step::Serve);
    let cache = tempfile::tempdir().unwrap();
    let endpoint = server.url("");
    let out = ar(
        &[
            "prepare",
            "--profile",
            "smoke",
            "--source",
            "tinystories",
            "--endpoint",
            &endpoint,
            "--download-backoff-ms",
            "10",
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let ranges = server.ranges_to(TINYSTORIES_PATH);
    assert_eq!(ranges.len(), 2, "one cut, one resumed request: {ranges:?}");
    assert_eq!(ranges[1], Some(format!("bytes={}-", file.len() / 3)));
    let m = manifest(cache.path(), "smoke");
    assert_eq!(m.stats[&Split::Test].documents, 10_000);
    assert_eq!(m.stats[&Split::Val].documents, 10_000);
    assert_eq!(m.stats[&Split::Train].documents, 4_000);
    let test_shard = ShardReader::open(&cache.path().join("smoke").join(&m.shards(Split::Test)[0])).unwrap();
    assert!(test_shard.row_group(0).unwrap()[0].starts_with("Story 0:"), "test = rows 0..9,999");
    let val_shard = ShardReader::open(&cache.path().join("smoke").join(&m.shards(Split::Val)[0])).unwrap();
    assert!(val_shard.row_group(0).unwrap()[0].starts_with("Story 10000:"), "val = rows 10,000..19,999");
}

#[test]
fn test_climbmix_from_a_mirror_retries_a_500_and_pins_val_and_test() {
    let server = TestServer::start();
    let base = "/datasets/karpathy/climbmix-400b-shuffle/resolve/main/";
    for i in [0usize, 1, 6541, 6542] {
        let script = if i == 1 { vec![Step::Status(500)] } else { vec![] };
        server.add(
            &format!("{base}shard_{i:05}.parquet"),
            stories_parquet(1500, &format!("Shard {i} doc")),
            script,
            Step::Serve,
        );
    }
    let cache = tempfile::tempdir().unwrap();
    let out = ar(
        &[
            "prepare",
            "--profile",
            "smoke",
            "--source",
            "climbmix",
            "--num-shards",
            "2",
            "--endpoint",
            &server.url(""),
            "--download-backoff-ms",
            "10",
            "--download-workers",
            "3",
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(server.requests_to(&format!("{base}shard_00001.parquet")).len(), 2);
    let m = manifest(cache.path(), "smoke");
    assert_eq!(m.shards(Split::Train).len(), 2);
    assert!(m.shards(Split::Val)[0].ends_with("shard_06542.parquet"));
    assert!(m.shards(Split::Test)[0].ends_with("shard_06541.parquet"));
    // A second run verifies without a single request.
    let before = server.requests().len();
    let again = ar(
        &[
            "prepare",
            "--profile",
            "smoke",
            "--source",
            "climbmix",
            "--num-shards",
            "2",
            "--endpoint",
            &server.url(""),
        ],
        cache.path(),
    );
    assert!(again.status.success() && text(&again).contains("Verified"), "{}", text(&again));
    assert_eq!(server.requests().len(), before);
}

#[test]
fn test_unreachable_endpoint_fails_with_the_file_url_and_what_to_try() {
    let cache = tempfile::tempdir().unwrap();
    let out = ar(
        &[
            "prepare",
            "--profile",
            "smoke",
            "--source",
            "tinystories",
            "--endpoint",
            "http://127.0.0.1:9",
            "--download-attempts",
            "2",
            "--download-backoff-ms",
            "10",
        ],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("tinystories_gpt4_clean.parquet") && msg.contains("http://127.0.0.1:9/datasets"),
        "{msg}"
    );
    assert!(msg.contains("2 attempts") && msg.contains("HF_ENDPOINT"), "{msg}");
    assert!(!cache.path().join("smoke").join(MANIFEST_FILE).exists());
}

#[test]
fn test_full_disk_during_download_leaves_only_a_part_file() {
    // A file-size limit makes writes fail with EFBIG, as a full disk fails with ENOSPC.
    let server = TestServer::start();
    let file = stories_parquet(24_000, "Story");
    assert!(file.len() > 64 * 1024, "the file ({} bytes) must exceed the limit", file.len());
    server.add(TINYSTORIES_PATH, file, vec![], Step::Serve);
    let cache = tempfile::tempdir().unwrap();
    let script = format!(
        "trap '' XFSZ; ulimit -f 32; exec '{}' prepare --profile smoke --source tinystories --endpoint '{}' --download-backoff-ms 10",
        env!("CARGO_BIN_EXE_ar"),
        server.url("")
    );
    let out =
        Command::new("bash").args(["-c", &script]).env("AUTORESEARCH_CACHE", cache.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("disk is full") && msg.contains(".part"), "{msg}");
    let dir = cache.path().join("smoke").join("downloads").join("tinystories");
    assert!(dir.join("tinystories_gpt4_clean.parquet.part").exists());
    assert!(!dir.join("tinystories_gpt4_clean.parquet").exists(), "a partial file never becomes a shard");
    assert_eq!(server.requests().len(), 1, "a full disk is not retried");
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn test_latin1_corpus_is_refused_with_the_fix() {
    let inputs = tempfile::tempdir().unwrap();
    let p = inputs.path().join("old.txt");
    std::fs::write(&p, b"first\n\nsecond caf\xe9\n").unwrap();
    let cache = tempfile::tempdir().unwrap();
    let out =
        ar(&["prepare", "--profile", "smoke", "--source", &format!("text:{}", p.display())], cache.path());
    assert_eq!(out.status.code(), Some(2));
    let msg = text(&out);
    assert!(msg.contains("old.txt") && msg.contains("line 3") && msg.contains("iconv"), "{msg}");
}

#[test]
fn test_unknown_profile_and_source_are_refused() {
    let cache = tempfile::tempdir().unwrap();
    let out = ar(&["prepare", "--profile", "tpu"], cache.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown profile 'tpu'"), "{}", text(&out));
    let out = ar(&["prepare", "--profile", "smoke", "--source", "wikipedia"], cache.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("bad --source 'wikipedia'"), "{}", text(&out));
}
