//! Parity of `prepare::bpe` with the original project's tokenizer.
//!
//! The fixtures in `tests/fixtures/bpe/` were made once by `make_fixtures.py`
//! with the original tools (rustbpe to train, tiktoken to encode), so these
//! tests need no Python: they train our trainer on the same documents with
//! the same cap, budget and vocab size and demand byte-identical ranks, then
//! encode probe strings with tiktoken-rs and demand the ids Python produced.
//! They also check that a damaged ranks file is refused with a message that
//! names the file, the line and the fix.

use std::fs;
use std::path::{Path, PathBuf};

use json::Access;
use prepare::bpe::{
    BOS_TOKEN, BpeError, BpeTrainer, DOC_CAP_CHARS, MAX_TRAIN_CHARS, Ranks, SPECIAL_TOKENS, SPLIT_PATTERN,
};
use tiktoken_rs::CoreBPE;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bpe")
}

fn docs() -> Vec<String> {
    let text = fs::read_to_string(fixtures().join("docs.json")).unwrap();
    json::parse(&text).array().iter().map(|d| d.string().to_owned()).collect()
}

/// One line of cases.tsv: how make_fixtures.py trained rustbpe.
struct Case {
    name: String,
    doc_cap_chars: usize,
    max_chars: u64,
    vocab_size: u32,
    ranks_produced: usize,
}

fn cases() -> Vec<Case> {
    let text = fs::read_to_string(fixtures().join("cases.tsv")).unwrap();
    let cases: Vec<Case> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Case {
                name: f[0].to_owned(),
                doc_cap_chars: f[1].parse().unwrap(),
                max_chars: f[2].parse().unwrap(),
                vocab_size: f[3].parse().unwrap(),
                ranks_produced: f[4].parse().unwrap(),
            }
        })
        .collect();
    assert_eq!(cases.len(), 3, "cases.tsv lost a case");
    cases
}

fn expected_ranks_path(name: &str) -> PathBuf {
    fixtures().join(format!("expected_ranks_{name}.tiktoken"))
}

/// Feed the documents in small batches, as `ar prepare` feeds row groups.
fn train(docs: &[String], doc_cap_chars: usize, max_chars: u64, vocab_size: u32) -> Ranks {
    let mut trainer = BpeTrainer::new(SPLIT_PATTERN, max_chars, doc_cap_chars).unwrap();
    for batch in docs.chunks(5) {
        if !trainer.add_documents(batch) {
            break;
        }
    }
    trainer.train(vocab_size, &mut |_, _| {}).unwrap()
}

fn core_bpe(ranks: &Ranks) -> CoreBPE {
    CoreBPE::new(ranks.encoder(), ranks.special_tokens(), SPLIT_PATTERN).unwrap()
}

#[test]
fn test_trained_ranks_match_rustbpe_byte_for_byte() {
    let docs = docs();
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        let ranks = train(&docs, case.doc_cap_chars, case.max_chars, case.vocab_size);
        assert_eq!(ranks.len(), case.ranks_produced, "case {}", case.name);
        let ours = dir.path().join(format!("{}.tiktoken", case.name));
        ranks.save(&ours).unwrap();
        let expected = fs::read(expected_ranks_path(&case.name)).unwrap();
        assert!(fs::read(&ours).unwrap() == expected, "case {}: ranks differ from rustbpe's", case.name);
        assert_eq!(Ranks::load(&expected_ranks_path(&case.name)).unwrap(), ranks);
    }
}

#[test]
fn test_any_pattern_spelling_trains_the_same() {
    // SPLIT_PATTERN itself runs on a faster equivalent pattern; the same
    // pattern spelled differently runs on fancy-regex's backtracker. Both
    // must give rustbpe's ranks.
    let docs = docs();
    let case = &cases()[0];
    let mut trainer =
        BpeTrainer::new(&format!("(?:{SPLIT_PATTERN})"), case.max_chars, case.doc_cap_chars).unwrap();
    trainer.add_documents(&docs);
    let ranks = trainer.train(case.vocab_size, &mut |_, _| {}).unwrap();
    assert_eq!(ranks, Ranks::load(&expected_ranks_path(&case.name)).unwrap());
}

#[test]
fn test_fixture_depends_on_the_cap_and_the_budget() {
    // Guards the fixture itself: if the cap or the budget did not change the
    // result, the parity test above could not catch a mistake in either.
    let docs = docs();
    let cases = cases();
    let expected = |name: &str| Ranks::load(&expected_ranks_path(name)).unwrap();
    let uncapped = train(&docs, usize::MAX, MAX_TRAIN_CHARS, cases[0].vocab_size);
    assert_ne!(uncapped, expected(&cases[0].name), "the 10,000-char cap no longer matters");
    let byte_capped = {
        // Cutting the long document at 10,000 bytes instead of code points must differ too.
        let docs: Vec<String> = docs
            .iter()
            .map(|d| String::from_utf8_lossy(&d.as_bytes()[..d.len().min(DOC_CAP_CHARS)]).into_owned())
            .collect();
        train(&docs, usize::MAX, MAX_TRAIN_CHARS, cases[0].vocab_size)
    };
    assert_ne!(byte_capped, expected(&cases[0].name), "cutting by bytes gives the same ranks");
    let c = &cases[1];
    let unbudgeted = train(&docs, c.doc_cap_chars, MAX_TRAIN_CHARS, c.vocab_size);
    assert_ne!(unbudgeted, expected(&c.name), "the char budget no longer matters");
    // Find the document that crosses the budget: with it the ranks match, without it they must not.
    let mut seen = 0u64;
    let crossing = docs
        .iter()
        .position(|d| {
            seen += prepare::bpe::cap_document(d, c.doc_cap_chars).chars().count() as u64;
            seen >= c.max_chars
        })
        .unwrap();
    assert!(crossing + 1 < docs.len(), "the budget case must stop before the last document");
    let with_it = train(&docs[..=crossing], c.doc_cap_chars, MAX_TRAIN_CHARS, c.vocab_size);
    assert_eq!(with_it, expected(&c.name));
    let without_it = train(&docs[..crossing], c.doc_cap_chars, MAX_TRAIN_CHARS, c.vocab_size);
    assert_ne!(without_it, expected(&c.name), "dropping the crossing document gives the same ranks");
}

#[test]
fn test_tiktoken_rs_encodes_probes_like_python_tiktoken() {
    let expected = json::parse(&fs::read_to_string(fixtures().join("expected_encodings.json")).unwrap());
    let case = &cases()[0];
    assert_eq!(expected.at("ranks").string(), format!("expected_ranks_{}.tiktoken", case.name));
    // Our own trained ranks, not the fixture file: the encoder must work from what `ar prepare` writes.
    let ranks = train(&docs(), case.doc_cap_chars, case.max_chars, case.vocab_size);
    let bpe = core_bpe(&ranks);

    let specials = expected.at("special_tokens");
    for (i, name) in SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(specials.at(name).number(), (ranks.len() + i) as u64);
    }
    let probes = expected.at("encode_ordinary").array();
    assert!(probes.len() >= 10);
    for probe in probes {
        let text = probe.at("text").string();
        let ids: Vec<u32> = probe.at("ids").array().iter().map(|v| v.number() as u32).collect();
        assert_eq!(bpe.encode_ordinary(text), ids, "encode_ordinary({text:?})");
    }
    for probe in expected.at("encode_with_specials").array() {
        let text = probe.at("text").string();
        let ids: Vec<u32> = probe.at("ids").array().iter().map(|v| v.number() as u32).collect();
        assert_eq!(bpe.encode_with_special_tokens(text), ids, "encode_with_special_tokens({text:?})");
        assert_eq!(ids[0], ranks.len() as u32, "{BOS_TOKEN} is the first special id");
    }
}

#[test]
fn test_encode_decode_round_trips_non_ascii_text() {
    let case = &cases()[0];
    let bpe = core_bpe(&Ranks::load(&expected_ranks_path(&case.name)).unwrap());
    for text in [
        "Café naïve Straße — 你好世界 🙂 👨‍👩‍👧‍👦 Привет مرحبا",
        "unseen: ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ⅧⅨ ½ ௫ \u{200b}\u{feff}\r\n\t  end",
        "numbers 00012345678901234567890 and 3.1415926535",
        "",
    ] {
        let ids = bpe.encode_ordinary(text);
        assert_eq!(bpe.decode(&ids).unwrap(), text);
    }
}

/// A copy of the v512 fixture ranks with `edit` applied to its lines.
fn tampered(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<String>)) -> PathBuf {
    let good = fs::read_to_string(expected_ranks_path("v512")).unwrap();
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    edit(&mut lines);
    let path = dir.join(name);
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn assert_rejected(path: &Path, line: usize, reason: &str) {
    let err = Ranks::load(path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, BpeError::Corrupt { line: l, .. } if l == line), "wrong line in: {msg}");
    assert!(msg.contains(&path.display().to_string()), "no path in: {msg}");
    assert!(msg.contains(&format!("line {line}")), "no line in: {msg}");
    assert!(msg.contains("re-run `ar prepare`"), "no fix in: {msg}");
    assert!(msg.contains(reason), "expected {reason:?} in: {msg}");
}

#[test]
fn test_load_rejects_bad_base64() {
    let dir = tempfile::tempdir().unwrap();
    let path = tampered(dir.path(), "bad_base64.tiktoken", |l| l[300] = "@@not-base64@@ 300".into());
    assert_rejected(&path, 301, "bad base64");
}

#[test]
fn test_load_rejects_duplicate_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = tampered(dir.path(), "duplicate.tiktoken", |l| {
        let bytes_of_300 = l[300].split(' ').next().unwrap().to_owned();
        l[400] = format!("{bytes_of_300} 400");
    });
    assert_rejected(&path, 401, "already belong");
}

#[test]
fn test_load_rejects_a_gap_in_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let path = tampered(dir.path(), "gap.tiktoken", |l| {
        l.remove(270);
    });
    assert_rejected(&path, 271, "rank 271 where rank 270 was expected");
}

#[test]
fn test_load_rejects_a_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = fs::read(expected_ranks_path("v512")).unwrap();
    let path = dir.path().join("truncated.tiktoken");
    // Cut in the middle of line 400.
    let cut = good.iter().enumerate().filter(|&(_, &b)| b == b'\n').nth(398).unwrap().0 + 4;
    fs::write(&path, &good[..cut]).unwrap();
    assert_rejected(&path, 400, "cut short");
    fs::write(&path, b"").unwrap();
    assert_rejected(&path, 1, "empty");
    // A file cut exactly at a line boundary inside the byte tokens still fails.
    let cut = good.iter().enumerate().filter(|&(_, &b)| b == b'\n').nth(99).unwrap().0 + 1;
    fs::write(&path, &good[..cut]).unwrap();
    assert_rejected(&path, 100, "fewer than the 256 single bytes");
}

#[test]
fn test_load_rejects_wrong_byte_tokens_and_bad_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = tampered(dir.path(), "swapped.tiktoken", |l| l.swap(65, 66));
    assert_rejected(&path, 66, "rank 66 where rank 65 was expected");
    let path = tampered(dir.path(), "wrong_byte.tiktoken", |l| l[65] = "Qg== 65".into());
    assert_rejected(&path, 66, "must be the single byte 65");
    let path = tampered(dir.path(), "extra_field.tiktoken", |l| l[10] = format!("{} extra", l[10]));
    assert_rejected(&path, 11, "expected `base64 rank`");
    let path = tampered(dir.path(), "bad_rank.tiktoken", |l| l[300] = l[300].replace(" 300", " three"));
    assert_rejected(&path, 301, "bad rank");
}

#[test]
fn test_load_of_a_missing_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.tiktoken");
    let msg = Ranks::load(&path).unwrap_err().to_string();
    assert!(msg.contains(&path.display().to_string()) && msg.contains("ar prepare"), "{msg}");
}

/// Terse accessors over `serde_json::Value` for the fixture files.
mod json {
    pub use serde_json::Value;

    pub fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("fixture is valid JSON")
    }

    pub trait Access {
        fn string(&self) -> &str;
        fn number(&self) -> u64;
        fn array(&self) -> &[Value];
        fn at(&self, key: &str) -> &Value;
    }

    impl Access for Value {
        fn string(&self) -> &str {
            self.as_str().expect("a string")
        }
        fn number(&self) -> u64 {
            self.as_u64().expect("a whole number")
        }
        fn array(&self) -> &[Value] {
            self.as_array().expect("an array")
        }
        fn at(&self, key: &str) -> &Value {
            &self[key]
        }
    }
}
