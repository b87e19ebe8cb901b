//! `prepare` end to end on the smoke profile: build a real cache in a temp dir, load it the
//! way the train program does, and check that every kind of bad input or tampering is
//! refused with a message naming the file and the fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use prepare::data::shard::ShardWriter;
use prepare::data::{DataOptions, SourceSpec};
use prepare::manifest::{MANIFEST_FILE, Split};
use prepare::pipeline::{PrepareOptions, PrepareOutcome, prepare};
use prepare::profile::{CPU, SMOKE};
use prepare::progress::Quiet;
use prepare::{Cache, Loader, Tokenizer, evaluate_bpb};

fn prepare_at(dir: &Path, sources: &[&str]) -> prepare::Result<PrepareOutcome> {
    let opts = PrepareOptions {
        profile: &SMOKE,
        sources: sources.iter().map(|s| SourceSpec::parse(s)).collect::<prepare::Result<_>>()?,
        data: DataOptions::default(),
        cache_dir: Some(dir.to_path_buf()),
        force: false,
    };
    prepare(&opts, &Quiet)
}

fn smoke_cache() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    prepare_at(dir.path(), &["synthetic:1500"]).unwrap();
    let cache = Cache::open_at(dir.path(), &SMOKE).unwrap();
    (dir, cache)
}

fn first_batches(cache: &Cache, tok: &Arc<Tokenizer>, split: Split, n: usize) -> Vec<prepare::Batch> {
    let mut loader = Loader::new(cache, tok, 4, SMOKE.max_seq_len, split).unwrap();
    (0..n).map(|_| loader.next_batch().unwrap()).collect()
}

#[test]
fn test_prepared_cache_loads_and_batches_are_deterministic() {
    let (_dir, cache) = smoke_cache();
    let tok = Arc::new(Tokenizer::load(&cache).unwrap());
    assert_eq!(tok.vocab_size(), SMOKE.vocab_size);
    assert_eq!(tok.bos_id() as usize, SMOKE.vocab_size - 4);
    assert_eq!(tok.token_bytes()[tok.bos_id() as usize], 0, "specials count zero bytes");
    let a = first_batches(&cache, &tok, Split::Train, 30);
    let b = first_batches(&cache, &tok, Split::Train, 30);
    assert_eq!(a, b, "same shards, same batches");
    for batch in &a {
        for row in batch.inputs.chunks(SMOKE.max_seq_len) {
            assert_eq!(row[0], tok.bos_id(), "every row starts with BOS");
        }
    }
    let val = first_batches(&cache, &tok, Split::Val, 1);
    assert_ne!(val[0].inputs, a[0].inputs, "val is not train");
}

#[test]
fn test_second_prepare_verifies_and_reuses() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!prepare_at(dir.path(), &["synthetic:1500"]).unwrap().reused);
    let again = prepare_at(dir.path(), &["synthetic:1500"]).unwrap();
    assert!(again.reused);
    let other = prepare_at(dir.path(), &["synthetic:1600"]).unwrap();
    assert!(!other.reused, "a different source rebuilds");
    assert_eq!(other.manifest.source.specs, vec!["synthetic:1600".to_string()]);
}

#[test]
fn test_tampered_ranks_file_is_refused_then_repaired_by_prepare() {
    let (dir, cache) = smoke_cache();
    let ranks = cache.path(&cache.manifest.tokenizer.ranks);
    let mut bytes = std::fs::read(&ranks).unwrap();
    let last = bytes.len() - 3;
    bytes[last] = if bytes[last] == b'1' { b'2' } else { b'1' };
    std::fs::write(&ranks, &bytes).unwrap();
    let err = Tokenizer::load(&cache).err().expect("tampered ranks must not load").to_string();
    assert!(err.contains("ranks.tiktoken") && err.contains("ar prepare"), "{err}");
    // `ar prepare` notices and rebuilds rather than trusting the cache.
    let redo = prepare_at(dir.path(), &["synthetic:1500"]).unwrap();
    assert!(!redo.reused);
    let cache = Cache::open_at(dir.path(), &SMOKE).unwrap();
    Tokenizer::load(&cache).unwrap();
}

#[test]
fn test_tampered_shard_stops_the_loader_with_the_file_named() {
    let (_dir, cache) = smoke_cache();
    let tok = Arc::new(Tokenizer::load(&cache).unwrap());
    let shard = cache.path(&cache.shards(Split::Val)[0]);
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&shard, &bytes).unwrap();
    let mut loader = Loader::new(&cache, &tok, 2, SMOKE.max_seq_len, Split::Val).unwrap();
    let err = loader.next_batch().unwrap_err().to_string();
    assert!(err.contains("val_00000.parquet") && err.contains("sha256"), "{err}");
    assert!(err.contains("ar prepare"), "{err}");
}

#[test]
fn test_cache_of_another_profile_is_refused() {
    let (dir, _cache) = smoke_cache();
    let err = Cache::open_at(dir.path(), &CPU).unwrap_err().to_string();
    assert!(err.contains("'smoke'") && err.contains("--profile cpu"), "{err}");
}

#[test]
fn test_missing_cache_says_run_prepare() {
    let dir = tempfile::tempdir().unwrap();
    let err = Cache::open_at(dir.path(), &SMOKE).unwrap_err().to_string();
    assert!(err.contains("ar prepare --profile smoke"), "{err}");
}

#[test]
fn test_evaluate_bpb_of_uniform_logits_is_log_vocab_per_token() {
    // A model that knows nothing assigns 1/V to every token: the metric must come out as
    // (scored tokens · ln V) / (ln 2 · bytes), computed here from the same val batches.
    let (_dir, cache) = smoke_cache();
    let tok = Arc::new(Tokenizer::load(&cache).unwrap());
    let device = Device::flex();
    let v = tok.vocab_size();
    let batch = 4;
    let bpb = evaluate_bpb(&cache, &tok, batch, Split::Val, &device, |x| {
        let [b, t] = x.dims();
        Tensor::<3>::zeros([b, t, v], &device)
    })
    .unwrap();
    let steps = SMOKE.eval_tokens / (batch * SMOKE.max_seq_len);
    let mut loader = Loader::new(&cache, &tok, batch, SMOKE.max_seq_len, Split::Val).unwrap();
    let (mut tokens, mut bytes) = (0u64, 0u64);
    for _ in 0..steps {
        for &t in &loader.next_batch().unwrap().targets {
            let nb = tok.token_bytes()[t as usize] as u64;
            if nb > 0 {
                tokens += 1;
                bytes += nb;
            }
        }
    }
    let expected = tokens as f64 * (v as f64).ln() / (std::f64::consts::LN_2 * bytes as f64);
    assert!((bpb - expected).abs() < 1e-5, "bpb {bpb} vs {expected}");
}

fn write_text(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn many_paragraphs(n: usize) -> String {
    (0..n).map(|i| format!("Paragraph {i}: the quick brown fox, naïve café {i}.\n\n")).collect()
}

#[test]
fn test_local_text_and_parquet_sources_combine() {
    let inputs = tempfile::tempdir().unwrap();
    let txt = write_text(inputs.path(), "a.txt", many_paragraphs(600).as_bytes());
    let pq = inputs.path().join("b.parquet");
    let mut w = ShardWriter::create(&pq).unwrap();
    for i in 0..600 {
        w.push(&format!("parquet document {i} with some words")).unwrap();
    }
    w.finish().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let out = prepare_at(
        cache_dir.path(),
        &[&format!("text:{}", txt.display()), &format!("parquet:{}", pq.display())],
    )
    .unwrap();
    let docs: u64 = out.manifest.stats.values().map(|s| s.documents).sum();
    assert_eq!(docs, 1200);
    assert!(!out.manifest.source.synthetic);
}

#[test]
fn test_bad_utf8_text_is_refused_and_nothing_is_written() {
    let inputs = tempfile::tempdir().unwrap();
    let mut bytes = many_paragraphs(300).into_bytes();
    bytes.extend_from_slice(b"caf\xe9 au lait\n");
    let txt = write_text(inputs.path(), "latin1.txt", &bytes);
    let cache_dir = tempfile::tempdir().unwrap();
    let err = prepare_at(cache_dir.path(), &[&format!("text:{}", txt.display())]).unwrap_err().to_string();
    assert!(err.contains("latin1.txt") && err.contains("UTF-8") && err.contains("iconv"), "{err}");
    assert!(!cache_dir.path().join(MANIFEST_FILE).exists());
}

#[test]
fn test_empty_corpus_is_refused() {
    let inputs = tempfile::tempdir().unwrap();
    let txt = write_text(inputs.path(), "empty.txt", b"\n\n   \n");
    let cache_dir = tempfile::tempdir().unwrap();
    let err = prepare_at(cache_dir.path(), &[&format!("text:{}", txt.display())]).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    let none = tempfile::tempdir().unwrap();
    let err =
        prepare_at(cache_dir.path(), &[&format!("text:{}", none.path().display())]).unwrap_err().to_string();
    assert!(err.contains("no *.txt files"), "{err}");
}

#[test]
fn test_corrupt_parquet_and_missing_text_column_are_refused() {
    let inputs = tempfile::tempdir().unwrap();
    let good = inputs.path().join("good.parquet");
    let mut w = ShardWriter::create(&good).unwrap();
    for i in 0..100 {
        w.push(&format!("doc {i}")).unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = write_text(inputs.path(), "cut.parquet", &bytes[..bytes.len() - 20]);
    let cache_dir = tempfile::tempdir().unwrap();
    let err = prepare_at(cache_dir.path(), &[&format!("parquet:{}", cut.display())]).unwrap_err().to_string();
    assert!(err.contains("cut.parquet"), "{err}");

    // A parquet file whose string column is called something else.
    let other = inputs.path().join("other.parquet");
    let renamed: Vec<u8> = {
        // Same file, column renamed in the footer: "text" → "body" (same length), in the
        // schema and in the column chunk's path.
        let mut b = bytes.clone();
        while let Some(pos) = b.windows(4).position(|w| w == b"text") {
            b[pos..pos + 4].copy_from_slice(b"body");
        }
        b
    };
    std::fs::write(&other, renamed).unwrap();
    let err =
        prepare_at(cache_dir.path(), &[&format!("parquet:{}", other.display())]).unwrap_err().to_string();
    assert!(err.contains("no `text` column") && err.contains("body"), "{err}");
}

#[test]
fn test_sources_that_cannot_combine_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = prepare_at(dir.path(), &["synthetic", "tinystories"]).unwrap_err().to_string();
    assert!(err.contains("combined"), "{err}");
    let err = SourceSpec::parse("text:/no/such/file").unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    assert!(SourceSpec::parse("s3://bucket").is_err());
}
