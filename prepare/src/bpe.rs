//! Byte-level BPE tokenizer trainer for `ar prepare`.
//!
//! This replaces the original project's `rustbpe` trainer and must produce the
//! very same merges, in the same order, from the same documents: the
//! tokenizer's ranks decide every token id the model ever sees, so "close" is
//! not good enough. The pieces, in the order `ar prepare` uses them:
//!
//! 1. [`BpeTrainer::add_documents`] takes documents in batches, cuts each to
//!    [`DOC_CAP_CHARS`] code points, stops once [`MAX_TRAIN_CHARS`] characters
//!    have been read (the document that crosses the budget still counts, as in
//!    prepare.py's `text_iterator`), splits them with [`SPLIT_PATTERN`] and
//!    counts the distinct chunks, in parallel.
//! 2. [`BpeTrainer::train`] runs byte-pair merging over the distinct chunks,
//!    weighted by how often each occurred, and returns [`Ranks`].
//! 3. [`Ranks::save`] / [`Ranks::load`] store the ranks in tiktoken's plain
//!    text format (`base64(bytes) rank` per line) for the encoder
//!    (tiktoken-rs) to use; [`Ranks::encoder`] and [`Ranks::special_tokens`]
//!    build its inputs, with the four reserved specials after the last rank.
//!
//! Parity rules, all taken from rustbpe: every step merges the pair with the
//! highest weighted count; ties go to the smallest pair, compared as
//! `(left id, right id)`; the new token's id is `256 + merge index`; inside a
//! chunk a pair is replaced left to right without overlap (`aaa` merging
//! `(a, a)` gives `[aa, a]`); training stops early when no pair is left.
//! Where it costs nothing in parity we do better than rustbpe: counts are
//! `u64` (rustbpe's `i32` holds at the 1e9-character budget but not far
//! beyond it), chunks are counted as borrowed `&str` and copied once per
//! distinct chunk into one byte arena, all chunks are merged in place in one
//! flat id arena, each pair remembers the chunks it occurs in as a plain list
//! instead of a hash set, and long merges are spread over threads.

use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};
use std::fs;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ahash::{AHashMap, AHashSet};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fancy_regex::Regex;
use rayon::prelude::*;

/// GPT-4's split pattern with numbers in runs of at most two digits
/// (`\p{N}{1,2}` instead of `{1,3}`), copied from the original prepare.py.
/// It needs fancy-regex: `?+`/`++` are possessive and `(?!\S)` is a lookahead.
pub const SPLIT_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// Reserved special tokens, appended after the trained ranks (ids `len(ranks) + i`).
pub const SPECIAL_TOKENS: [&str; 4] =
    ["<|reserved_0|>", "<|reserved_1|>", "<|reserved_2|>", "<|reserved_3|>"];

/// The token that starts every training row.
pub const BOS_TOKEN: &str = SPECIAL_TOKENS[0];

/// Each training document is cut to this many Unicode code points (Python's `text[:10000]`).
pub const DOC_CAP_CHARS: usize = 10_000;

/// Documents are read until this many (capped) characters have been seen.
pub const MAX_TRAIN_CHARS: u64 = 1_000_000_000;

/// How many ids the 256 single bytes take before the first merge.
const BYTE_TOKENS: u32 = 256;

/// Everything that can go wrong while training, saving or loading ranks.
#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    #[error(
        "the BPE split pattern {pattern:?} does not compile: {source}; pass a valid fancy-regex pattern (the standard one is prepare::bpe::SPLIT_PATTERN)"
    )]
    Pattern {
        pattern: String,
        #[source]
        source: Box<fancy_regex::Error>,
    },
    #[error("BPE vocab_size {0} is smaller than the 256 byte tokens it must contain; ask for at least 256")]
    VocabTooSmall(u32),
    #[error(
        "splitting training document #{document} with the BPE pattern failed: {message}; the pattern hit a regex runtime limit on that document, so drop or shorten it (or lower the document cap)"
    )]
    Split { document: u64, message: String },
    #[error(
        "the BPE training corpus has {words} distinct chunks totalling {bytes} bytes, more than the trainer's 4-billion-id arena holds; train on fewer characters (a lower character budget)"
    )]
    TooManyChunks { words: usize, bytes: usize },
    #[error(
        "BPE training produced the bytes {bytes:?} twice (ranks {first} and {second}), which tiktoken cannot represent; please report this corpus as a bug"
    )]
    DuplicateToken { bytes: Vec<u8>, first: u32, second: u32 },
    #[error("cannot {action} tokenizer ranks file {}: {source}; {hint}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        hint: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "tokenizer ranks file {}, line {line}: {reason}; the file is damaged or not ours, re-run `ar prepare` to rebuild it",
        path.display()
    )]
    Corrupt { path: PathBuf, line: usize, reason: String },
}

/// Cut `doc` to its first `cap_chars` Unicode code points, like Python's `doc[:cap_chars]`.
pub fn cap_document(doc: &str, cap_chars: usize) -> &str {
    cap_and_count(doc, cap_chars).0
}

/// [`cap_document`] plus the number of code points kept, in one pass.
fn cap_and_count(doc: &str, cap_chars: usize) -> (&str, usize) {
    // A string never has more code points than bytes, so a document no
    // longer in bytes than the cap is kept whole without looking for a cut.
    if doc.len() <= cap_chars {
        return (doc, doc.chars().count());
    }
    match doc.char_indices().nth(cap_chars) {
        Some((end, _)) => (&doc[..end], cap_chars),
        None => (doc, doc.chars().count()),
    }
}

/// [`SPLIT_PATTERN`] with its two fancy features taken out, so that
/// fancy-regex hands the whole pattern to its fast automaton engine instead
/// of its backtracking VM (2-4x faster on our corpora). It splits exactly
/// like [`SPLIT_PATTERN`] once [`Splitter::for_each_chunk`] puts the
/// lookahead back by hand:
///
/// - `[^\r\n\p{L}\p{N}]?+\p{L}+` -> `?`: giving the optional character back
///   could only help if `\p{L}+` then matched at it, and the class excludes
///   `\p{L}`.
/// - ` ?[^\s\p{L}\p{N}]++[\r\n]*` -> `+`: what follows can match empty, so
///   the greedy run is never given back anyway.
/// - `\s+(?!\S)|\s+` -> `\s+`: both match the maximal whitespace run, except
///   that when the run has two or more characters and a non-space follows,
///   `\s+(?!\S)` stops one character short (leaving it to start the next
///   chunk, e.g. `" word"`). The alternatives before it are unchanged, so a
///   match is from this one exactly when it is all whitespace without `\r` or
///   `\n` (a run with a newline is taken by `\s*[\r\n]` first).
///
/// The leftmost-first alternation of the automaton engine keeps the
/// backtracker's preference order. Unit tests compare both splitters on the
/// fixtures and on random text over an adversarial alphabet.
const SPLIT_PATTERN_WITHOUT_FANCY: &str =
    r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+";

/// Cuts documents into chunks with the trainer's pattern. Holds one compiled
/// copy per rayon thread (about 1 ms each to compile): fancy-regex keeps its
/// scratch space in pools that clones share, and threads should not queue
/// for them (tiktoken-rs keeps per-thread copies for the same reason).
struct Splitter {
    /// The pattern as given.
    fancy: Vec<Regex>,
    /// [`SPLIT_PATTERN_WITHOUT_FANCY`], when the pattern is [`SPLIT_PATTERN`].
    fast: Option<Vec<Regex>>,
}

impl Splitter {
    fn new(pattern: &str) -> Result<Self, BpeError> {
        let copies = |p: &str| {
            (0..rayon::current_num_threads().max(1))
                .map(|_| {
                    Regex::new(p).map_err(|source| BpeError::Pattern {
                        pattern: p.to_owned(),
                        source: Box::new(source),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let fancy = copies(pattern)?;
        let fast = if pattern == SPLIT_PATTERN { Some(copies(SPLIT_PATTERN_WITHOUT_FANCY)?) } else { None };
        Ok(Self { fancy, fast })
    }

    /// Call `f` with every chunk of `doc`, in order.
    fn for_each_chunk<'d>(&self, doc: &'d str, f: impl FnMut(&'d str)) -> Result<(), fancy_regex::Error> {
        let thread = rayon::current_thread_index().unwrap_or(0);
        match &self.fast {
            // Both give the same chunks; the choice is only about speed. Code
            // points from U+40000 up (lead byte 0xF1..0xF4: unassigned, tags,
            // private use) are near absent from real text, but where they
            // are frequent and varied the automaton's lazy DFA keeps building
            // states and ran 5x slower than the backtracking VM on our stress
            // corpus, so such documents take the VM.
            Some(fast) if doc.bytes().fold(0, u8::max) < 0xF1 => {
                split_fast(&fast[thread % fast.len()], doc, f)
            }
            _ => split_fancy(&self.fancy[thread % self.fancy.len()], doc, f),
        }
    }
}

/// Split with the pattern exactly as compiled.
fn split_fancy<'d>(
    regex: &Regex,
    doc: &'d str,
    mut f: impl FnMut(&'d str),
) -> Result<(), fancy_regex::Error> {
    for m in regex.find_iter(doc) {
        f(m?.as_str());
    }
    Ok(())
}

/// Split with [`SPLIT_PATTERN_WITHOUT_FANCY`] and put its lookahead back:
/// the same chunks as [`split_fancy`] with [`SPLIT_PATTERN`].
fn split_fast<'d>(regex: &Regex, doc: &'d str, mut f: impl FnMut(&'d str)) -> Result<(), fancy_regex::Error> {
    let mut pos = 0;
    while let Some(m) = regex.find_from_pos(doc, pos)? {
        let chunk = m.as_str();
        let mut end = m.end();
        // `\s+(?!\S)`: a run of two or more whitespace characters followed
        // by something leaves its last character to the next chunk.
        if end < doc.len()
            && !chunk.contains(['\r', '\n'])
            && chunk.chars().all(char::is_whitespace)
            && let Some((last, _)) = chunk.char_indices().last().filter(|&(i, _)| i > 0)
        {
            end = m.start() + last;
        }
        f(&doc[m.start()..end]);
        pos = end;
    }
    Ok(())
}

/// Streams training documents in and keeps the count of every distinct chunk.
pub struct BpeTrainer {
    splitter: Splitter,
    max_chars: u64,
    doc_cap_chars: usize,
    chars_seen: u64,
    documents_seen: u64,
    /// Set once the budget is reached (or a document failed to split): later
    /// batches are ignored, exactly like prepare.py's generator returning.
    finished: bool,
    chunks: ChunkTable,
    error: Option<BpeError>,
}

impl BpeTrainer {
    /// A trainer splitting with `pattern`, reading at most `max_chars` characters
    /// (plus the rest of the document that crosses it), each document cut to
    /// `doc_cap_chars` code points. `ar prepare` passes [`SPLIT_PATTERN`],
    /// [`MAX_TRAIN_CHARS`] and [`DOC_CAP_CHARS`].
    pub fn new(pattern: &str, max_chars: u64, doc_cap_chars: usize) -> Result<Self, BpeError> {
        let splitter = Splitter::new(pattern)?;
        Ok(Self {
            splitter,
            max_chars,
            doc_cap_chars,
            chars_seen: 0,
            documents_seen: 0,
            finished: false,
            chunks: ChunkTable::default(),
            error: None,
        })
    }

    /// Add a batch of documents; returns false once the character budget is
    /// reached (the caller should stop feeding). Documents after the one that
    /// reached the budget, in this batch or later ones, are ignored.
    pub fn add_documents<S: AsRef<str> + Sync>(&mut self, docs: &[S]) -> bool {
        if self.finished {
            return false;
        }
        let cap = self.doc_cap_chars;
        let capped: Vec<(&str, usize)> = docs.par_iter().map(|d| cap_and_count(d.as_ref(), cap)).collect();

        // The budget check is sequential by nature: it depends on the running total.
        let first_doc = self.documents_seen;
        let mut take = capped.len();
        for (i, &(_, chars)) in capped.iter().enumerate() {
            self.chars_seen += chars as u64;
            self.documents_seen += 1;
            if self.chars_seen >= self.max_chars {
                self.finished = true;
                take = i + 1;
                break;
            }
        }
        let batch = &capped[..take];

        let splitter = &self.splitter;
        let counted = batch
            .par_iter()
            .enumerate()
            .try_fold(AHashMap::<&str, u64>::new, |mut counts, (i, &(doc, _))| {
                splitter
                    .for_each_chunk(doc, |chunk| *counts.entry(chunk).or_insert(0) += 1)
                    .map_err(|e| (i, e.to_string()))?;
                Ok(counts)
            })
            .try_reduce(AHashMap::new, |a, b| Ok(merge_counts(a, b)));

        match counted {
            Ok(counts) => {
                for (chunk, n) in counts {
                    self.chunks.add(chunk.as_bytes(), n);
                }
            }
            Err((i, message)) => {
                self.error = Some(BpeError::Split { document: first_doc + i as u64, message });
                self.finished = true;
            }
        }
        !self.finished
    }

    /// Characters (code points, after the per-document cap) read so far.
    pub fn chars_seen(&self) -> u64 {
        self.chars_seen
    }

    /// Documents read so far, including empty ones and the one that crossed the budget.
    pub fn documents_seen(&self) -> u64 {
        self.documents_seen
    }

    /// Run the merges. `vocab_size` counts the 256 byte tokens plus the merges
    /// (not the specials). Returns fewer ranks than asked for when the corpus
    /// runs out of pairs first, as rustbpe does: a tiny corpus simply cannot
    /// supply more merges, and padding with invented tokens would break parity.
    /// `progress(done, total)` is called at every whole percent and at the end.
    pub fn train(self, vocab_size: u32, progress: &mut dyn FnMut(u32, u32)) -> Result<Ranks, BpeError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if vocab_size < BYTE_TOKENS {
            return Err(BpeError::VocabTooSmall(vocab_size));
        }
        let mut words = Words::from_chunks(self.chunks)?;
        let merges = words.run_merges(vocab_size - BYTE_TOKENS, progress);
        Ranks::from_merges(&merges)
    }
}

fn merge_counts<'a>(mut a: AHashMap<&'a str, u64>, mut b: AHashMap<&'a str, u64>) -> AHashMap<&'a str, u64> {
    if a.len() < b.len() {
        std::mem::swap(&mut a, &mut b);
    }
    for (k, v) in b {
        *a.entry(k).or_insert(0) += v;
    }
    a
}

/// The distinct chunks seen so far and their counts. Chunks sit back to back
/// in one byte arena instead of one heap string each: at corpus scale there
/// are millions of them, and allocating (and later freeing) each one
/// separately cost more than counting them. A chunk is found through its
/// hash, with a chain through `next` for the rare hashes shared by two chunks.
struct ChunkTable {
    bytes: Vec<u8>,
    /// End offset in `bytes` of each chunk; chunk `i` starts where `i - 1` ends.
    ends: Vec<usize>,
    counts: Vec<u64>,
    /// Next chunk with the same hash, or `NO_CHUNK`.
    next: Vec<u32>,
    /// First chunk with a given hash.
    heads: HashMap<u64, u32, BuildHasherDefault<PrehashedKey>>,
    hasher: ahash::RandomState,
}

impl Default for ChunkTable {
    fn default() -> Self {
        Self {
            bytes: Vec::new(),
            ends: Vec::new(),
            counts: Vec::new(),
            next: Vec::new(),
            heads: HashMap::default(),
            // Fixed seeds: the table's layout, like everything else here, is
            // the same on every run.
            hasher: ahash::RandomState::with_seeds(1, 2, 3, 4),
        }
    }
}

const NO_CHUNK: u32 = u32::MAX;

impl ChunkTable {
    fn chunk(&self, i: u32) -> &[u8] {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn add(&mut self, chunk: &[u8], n: u64) {
        let hash = self.hasher.hash_one(chunk);
        self.add_hashed(chunk, hash, n);
    }

    fn add_hashed(&mut self, chunk: &[u8], hash: u64, n: u64) {
        let head = self.heads.get(&hash).copied().unwrap_or(NO_CHUNK);
        let mut at = head;
        while at != NO_CHUNK {
            if self.chunk(at) == chunk {
                self.counts[at as usize] += n;
                return;
            }
            at = self.next[at as usize];
        }
        let index = u32::try_from(self.counts.len()).expect("more than 4 billion distinct chunks");
        self.bytes.extend_from_slice(chunk);
        self.ends.push(self.bytes.len());
        self.counts.push(n);
        self.next.push(head);
        self.heads.insert(hash, index);
    }
}

/// Hasher for keys that are already hashes: passes the u64 through.
#[derive(Default)]
struct PrehashedKey(u64);

impl Hasher for PrehashedKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys are hashed with PrehashedKey")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Pair = (u32, u32);

#[inline]
fn pair_key((left, right): Pair) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// A heap entry that orders by count, then by the smaller pair: exactly the
/// order in which rustbpe picks merges. Packed into one integer so the heap
/// compares plain numbers: count in the high 64 bits, then the complemented
/// ids so that a smaller pair sorts higher in the max-heap.
#[inline]
fn heap_entry(count: u64, (left, right): Pair) -> u128 {
    (u128::from(count) << 64) | (u128::from(!left) << 32) | u128::from(!right)
}

#[inline]
fn heap_entry_parts(entry: u128) -> (u64, Pair) {
    ((entry >> 64) as u64, (!((entry >> 32) as u32), !(entry as u32)))
}

/// Replace every non-overlapping `pair` in `ids`, scanning left to right, by
/// `new_id`, in place. Returns the new length. For every adjacent pair that
/// disappears `on_change(pair, -1)` is called and for every pair that appears
/// `on_change(pair, +1)`; summed over a chunk these are exact, so the global
/// pair counts stay exact without recounting.
fn merge_pair_in_place(
    ids: &mut [u32],
    pair: Pair,
    new_id: u32,
    mut on_change: impl FnMut(Pair, i8),
) -> usize {
    let (a, b) = pair;
    let n = ids.len();
    let mut read = 0;
    let mut write = 0;
    while read < n {
        if read + 1 < n && ids[read] == a && ids[read + 1] == b {
            // `write` trails `read`, so ids[write - 1] is already the output
            // (possibly a fresh new_id) and ids[read + 2] is still the input.
            if write > 0 {
                let left = ids[write - 1];
                on_change((left, a), -1);
                on_change((left, new_id), 1);
            }
            on_change(pair, -1);
            if read + 2 < n {
                let right = ids[read + 2];
                on_change((b, right), -1);
                on_change((new_id, right), 1);
            }
            ids[write] = new_id;
            read += 2;
        } else {
            ids[write] = ids[read];
            read += 1;
        }
        write += 1;
    }
    write
}

/// Where a pair stands: its weighted count and the chunks that may hold it.
/// The chunk list can hold stale entries (a later merge may have consumed
/// the pair in that chunk); merging such a chunk is simply a no-op. It never
/// lists a chunk twice, which the parallel merge relies on.
struct PairStats {
    count: u64,
    words: Vec<u32>,
}

/// Every chunk sits in one arena as a header `[len, count_lo, count_hi]`
/// followed by its ids, and is named by the offset of its header. Merging
/// is bound by memory latency, not arithmetic: with the length and count
/// next to the ids, visiting a chunk touches one place in memory, not three.
const HEADER: usize = 3;

/// Merge lists at least this long are split across threads; shorter ones
/// are not worth the hand-off.
const PARALLEL_MIN_WORDS: usize = 2048;

/// The distinct chunks (those with at least two bytes) as id sequences.
struct Words {
    arena: Vec<u32>,
    /// Offset of every chunk, for the initial count.
    offsets: Vec<u32>,
    /// [`PARALLEL_MIN_WORDS`], lowered by tests to exercise the parallel path.
    parallel_min_words: usize,
}

/// What merging one pair in some chunks did to the other pairs.
#[derive(Default)]
struct StepChanges {
    /// Weighted occurrences lost by pairs that already existed.
    lost: AHashMap<u64, u64>,
    /// Net weighted change, and the chunks, of pairs containing the new id.
    fresh: AHashMap<u64, (i64, Vec<u32>)>,
}

/// Merge `pair` into `new_id` in the chunk whose header starts `word`
/// (chunk `w`), and record what changed.
fn merge_word(word: &mut [u32], w: u32, pair: Pair, new_id: u32, changes: &mut StepChanges) {
    let len = word[0] as usize;
    let count = u64::from(word[1]) | (u64::from(word[2]) << 32);
    let StepChanges { lost, fresh } = changes;
    let new_len = merge_pair_in_place(&mut word[HEADER..HEADER + len], pair, new_id, |p, delta| {
        if p.0 == new_id || p.1 == new_id {
            let entry = fresh.entry(pair_key(p)).or_insert_with(|| (0, Vec::new()));
            entry.0 += i64::from(delta) * count as i64;
            if delta > 0 && entry.1.last() != Some(&w) {
                entry.1.push(w);
            }
        } else if p != pair {
            // Old pairs only ever lose occurrences.
            debug_assert!(delta < 0);
            *lost.entry(pair_key(p)).or_insert(0) += count;
        }
    });
    word[0] = new_len as u32;
}

/// How many chunks ahead of the one being merged to start loading.
const PREFETCH_AHEAD: usize = 16;

/// Ask the CPU to start loading chunk `w` into cache. Visiting chunks is
/// memory-latency bound (each visit is a cache miss on the chunk's header),
/// and the merge list tells us the next chunks long before we need them.
#[inline(always)]
fn prefetch(arena: *const u32, arena_len: usize, w: u32) {
    #[cfg(target_arch = "x86_64")]
    if (w as usize) < arena_len {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch neither
        // faults nor reads or writes memory as far as the program can tell;
        // the address is inside the arena anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(arena.wrapping_add(w as usize).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (arena, arena_len, w);
}

/// The arena's base pointer, shared by the threads of one parallel merge.
struct ArenaPtr(*mut u32);

// SAFETY: used only in `Words::merge_parallel`, where each thread writes
// chunks no other thread touches (see there).
unsafe impl Send for ArenaPtr {}
unsafe impl Sync for ArenaPtr {}

impl ArenaPtr {
    fn get(&self) -> *mut u32 {
        self.0
    }
}

impl Words {
    fn from_chunks(chunks: ChunkTable) -> Result<Self, BpeError> {
        let ChunkTable { bytes, ends, counts, .. } = chunks;
        let kept = ends
            .iter()
            .scan(0, |start, &end| {
                let len = end - *start;
                *start = end;
                Some(len)
            })
            .filter(|&len| len >= 2);
        let (words, symbols) = kept.fold((0, 0), |(w, s), len| (w + 1, s + len));
        // Chunks are named by u32 offsets, which halves the merge lists. Natural
        // text at the 1e9-character budget has far fewer distinct chunk bytes
        // than that allows; a corpus that does not is refused, not mangled.
        let ids = words * HEADER + symbols;
        if u32::try_from(ids).is_err() {
            return Err(BpeError::TooManyChunks { words, bytes: symbols });
        }
        let mut arena = Vec::with_capacity(ids);
        let mut offsets = Vec::with_capacity(words);
        let mut start = 0;
        for (&end, &count) in ends.iter().zip(&counts) {
            let chunk = &bytes[start..end];
            start = end;
            // A single byte has no pair to merge; leave it out.
            if chunk.len() < 2 {
                continue;
            }
            offsets.push(arena.len() as u32);
            arena.extend([chunk.len() as u32, count as u32, (count >> 32) as u32]);
            arena.extend(chunk.iter().map(|&b| u32::from(b)));
        }
        Ok(Self { arena, offsets, parallel_min_words: PARALLEL_MIN_WORDS })
    }

    /// Count every adjacent pair once, weighted by chunk count, and note
    /// which chunks hold it. Work is split over threads by chunk ranges and
    /// the partial tables are merged in order.
    fn initial_pair_stats(&self) -> AHashMap<u64, PairStats> {
        let pieces = rayon::current_num_threads().max(1) * 4;
        let step = self.offsets.len().div_ceil(pieces).max(1);
        let partial: Vec<AHashMap<u64, PairStats>> = self
            .offsets
            .par_chunks(step)
            .map(|offsets| {
                let mut stats: AHashMap<u64, PairStats> = AHashMap::new();
                for &w in offsets {
                    let word = &self.arena[w as usize..];
                    let count = u64::from(word[1]) | (u64::from(word[2]) << 32);
                    for ids in word[HEADER..HEADER + word[0] as usize].windows(2) {
                        let s = stats
                            .entry(pair_key((ids[0], ids[1])))
                            .or_insert_with(|| PairStats { count: 0, words: Vec::new() });
                        s.count += count;
                        // A pair repeated inside one chunk lists it once.
                        if s.words.last() != Some(&w) {
                            s.words.push(w);
                        }
                    }
                }
                stats
            })
            .collect();
        let mut iter = partial.into_iter();
        let mut all = iter.next().unwrap_or_default();
        for part in iter {
            for (key, s) in part {
                match all.get_mut(&key) {
                    Some(t) => {
                        t.count += s.count;
                        t.words.extend_from_slice(&s.words);
                    }
                    None => {
                        all.insert(key, s);
                    }
                }
            }
        }
        all
    }

    /// Merge `pair` into `new_id` in the chunks `occurrences`, one thread.
    fn merge_serial(&mut self, occurrences: &[u32], pair: Pair, new_id: u32, changes: &mut StepChanges) {
        for (i, &w) in occurrences.iter().enumerate() {
            if let Some(&ahead) = occurrences.get(i + PREFETCH_AHEAD) {
                prefetch(self.arena.as_ptr(), self.arena.len(), ahead);
            }
            let len = self.arena[w as usize] as usize;
            merge_word(&mut self.arena[w as usize..w as usize + HEADER + len], w, pair, new_id, changes);
        }
    }

    /// The same over all threads, each on a slice of `occurrences`; the
    /// slices' changes come back in order so the merged chunk lists stay in
    /// the same order as the serial path would leave them.
    fn merge_parallel(&mut self, occurrences: &[u32], pair: Pair, new_id: u32) -> Vec<StepChanges> {
        let arena_len = self.arena.len();
        let base = ArenaPtr(self.arena.as_mut_ptr());
        let step = occurrences.len().div_ceil(rayon::current_num_threads() * 2);
        occurrences
            .par_chunks(step)
            .map(|ws| {
                let mut changes = StepChanges::default();
                for (i, &w) in ws.iter().enumerate() {
                    if let Some(&ahead) = ws.get(i + PREFETCH_AHEAD) {
                        prefetch(base.get(), arena_len, ahead);
                    }
                    // SAFETY: `occurrences` never lists a chunk twice and
                    // chunks do not overlap, so every thread reads and writes
                    // only regions no other thread touches; `self.arena` is
                    // borrowed mutably for this whole call, so nothing else
                    // can see it, and every region lies inside it.
                    let word = unsafe {
                        let header = base.get().add(w as usize);
                        let len = HEADER + *header as usize;
                        debug_assert!(w as usize + len <= arena_len);
                        std::slice::from_raw_parts_mut(header, len)
                    };
                    merge_word(word, w, pair, new_id, &mut changes);
                }
                changes
            })
            .collect()
    }

    /// Greedy BPE: up to `num_merges` merges, each of the pair with the highest
    /// count (ties: smallest pair). Returns the merged pairs in order; merge
    /// `i` created token `256 + i`.
    ///
    /// Why a lazy max-heap gives exactly the greedy choice: a merge with new
    /// token `t` only ever *creates* pairs that contain `t`, and `t` did not
    /// exist before, so those pairs are brand new; every pair that already
    /// existed can only lose occurrences. Hence a heap entry's count is always
    /// at least its pair's true count. When the top entry's count equals the true
    /// count, every other pair's true count is <= its entry <= the top, and on
    /// equal counts the heap order already put the smaller pair on top; so the
    /// top is the exact argmax. When it is stale it is pushed back with the
    /// true count (or dropped at zero, since a count never comes back) and we
    /// look again. New pairs are pushed once, at the end of the step that made
    /// them, so every live pair has an entry.
    fn run_merges(&mut self, num_merges: u32, progress: &mut dyn FnMut(u32, u32)) -> Vec<Pair> {
        let mut stats = self.initial_pair_stats();
        self.offsets = Vec::new();
        let mut heap: BinaryHeap<u128> = stats
            .iter()
            .filter(|(_, s)| s.count > 0)
            .map(|(&key, s)| heap_entry(s.count, ((key >> 32) as u32, key as u32)))
            .collect::<Vec<_>>()
            .into();

        let mut merges: Vec<Pair> = Vec::with_capacity(num_merges as usize);
        let mut last_percent = 0;
        let mut changes = StepChanges::default();

        while (merges.len() as u32) < num_merges {
            let Some(top) = heap.pop() else { break };
            let (queued, pair) = heap_entry_parts(top);
            let key = pair_key(pair);
            let current = stats.get(&key).map_or(0, |s| s.count);
            if current == 0 {
                continue;
            }
            if current != queued {
                debug_assert!(current < queued, "an existing pair's count grew");
                heap.push(heap_entry(current, pair));
                continue;
            }

            let new_id = BYTE_TOKENS + merges.len() as u32;
            merges.push(pair);
            // After this step the pair occurs nowhere, and no later merge can
            // recreate it (new pairs contain newer ids), so its entry goes.
            let occurrences = stats.remove(&key).expect("pair was just looked up").words;
            if occurrences.len() >= self.parallel_min_words && rayon::current_num_threads() > 1 {
                for part in self.merge_parallel(&occurrences, pair, new_id) {
                    for (key, lost) in part.lost {
                        *changes.lost.entry(key).or_insert(0) += lost;
                    }
                    for (key, (delta, words)) in part.fresh {
                        match changes.fresh.entry(key) {
                            Entry::Occupied(mut e) => {
                                e.get_mut().0 += delta;
                                e.get_mut().1.extend_from_slice(&words);
                            }
                            Entry::Vacant(e) => {
                                e.insert((delta, words));
                            }
                        }
                    }
                }
            } else {
                self.merge_serial(&occurrences, pair, new_id, &mut changes);
            }
            for (key, lost) in changes.lost.drain() {
                if let Some(s) = stats.get_mut(&key) {
                    s.count -= lost;
                }
            }
            for (key, (delta, words)) in changes.fresh.drain() {
                debug_assert!(delta >= 0, "a new pair's net count went negative");
                if delta > 0 {
                    let count = delta as u64;
                    heap.push(heap_entry(count, ((key >> 32) as u32, key as u32)));
                    let old = stats.insert(key, PairStats { count, words });
                    debug_assert!(old.is_none(), "a pair with the new id already existed");
                }
            }

            let done = merges.len() as u32;
            let percent = (u64::from(done) * 100 / u64::from(num_merges)) as u32;
            if percent > last_percent {
                last_percent = percent;
                progress(done, num_merges);
            }
        }
        let done = merges.len() as u32;
        if done < num_merges || num_merges == 0 {
            // Early stop (or nothing to do): still report where we ended.
            progress(done, num_merges);
        }
        merges
    }
}

/// Mergeable ranks: index = rank, value = the token's raw bytes; the first 256
/// are the single bytes 0..=255 and every later one is a trained merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranks(pub Vec<Vec<u8>>);

impl Ranks {
    /// Rebuild token bytes from the merge list, as rustbpe's
    /// `get_mergeable_ranks` does, and refuse duplicate bytes: prepare.py puts
    /// the ranks in a dict keyed by bytes, so a duplicate would silently drop a
    /// rank and shift the special ids onto a real token. (Byte-level BPE with
    /// left-to-right merging never produced one in any corpus we tried; this
    /// check costs one hash set.)
    fn from_merges(merges: &[Pair]) -> Result<Self, BpeError> {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for &(left, right) in merges {
            let mut bytes = tokens[left as usize].clone();
            bytes.extend_from_slice(&tokens[right as usize]);
            tokens.push(bytes);
        }
        let mut seen: AHashMap<&[u8], u32> = AHashMap::with_capacity(tokens.len());
        for (rank, bytes) in tokens.iter().enumerate() {
            if let Some(&first) = seen.get(bytes.as_slice()) {
                return Err(BpeError::DuplicateToken { bytes: bytes.clone(), first, second: rank as u32 });
            }
            seen.insert(bytes, rank as u32);
        }
        Ok(Self(tokens))
    }

    /// Number of ranks (256 byte tokens + merges), which is also the id of the first special token.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True only for a value built by hand with no tokens (never from training or loading).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Write tiktoken's plain text format, one `base64(bytes) rank` line per
    /// token, to a temporary file that is synced and then renamed over `path`,
    /// so a crash never leaves a half-written tokenizer behind.
    pub fn save(&self, path: &Path) -> Result<(), BpeError> {
        let io_err = |action, path: &Path, source| BpeError::Io {
            action,
            path: path.to_owned(),
            hint: "check that the directory exists, is writable and the disk is not full",
            source,
        };
        let text = self.to_file_bytes();
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&text)?;
            file.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &tmp, e));
        }
        fs::rename(&tmp, path).map_err(|e| io_err("rename into place", path, e))?;
        // Make the rename itself durable. Directories cannot be opened for
        // syncing everywhere, so this part is best effort.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = fs::File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Load and validate a file written by [`Ranks::save`]: every line is
    /// `base64 rank`, ranks run 0, 1, 2, ... in order, no bytes repeat, the
    /// first 256 are the single bytes, and the file ends with a newline (a
    /// missing one means it was cut short).
    pub fn load(path: &Path) -> Result<Self, BpeError> {
        let data = fs::read(path).map_err(|source| BpeError::Io {
            action: "read",
            path: path.to_owned(),
            hint: "re-run `ar prepare` to create it",
            source,
        })?;
        Self::parse(&data, path)
    }

    /// The file's content as [`Ranks::save`] writes it.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut text = String::with_capacity(self.0.len() * 12);
        for (rank, bytes) in self.0.iter().enumerate() {
            BASE64.encode_string(bytes, &mut text);
            text.push(' ');
            text.push_str(&rank.to_string());
            text.push('\n');
        }
        text.into_bytes()
    }

    /// Parses and validates file content already read (so the caller can hash exactly the
    /// bytes it parses); `path` is only used in error messages.
    pub fn parse(data: &[u8], path: &Path) -> Result<Self, BpeError> {
        let corrupt = |line: usize, reason: String| BpeError::Corrupt { path: path.to_owned(), line, reason };
        if data.is_empty() {
            return Err(corrupt(1, "the file is empty".into()));
        }
        let body = match data.strip_suffix(b"\n") {
            Some(body) => body,
            None => {
                let last = data.split(|&b| b == b'\n').count();
                return Err(corrupt(last, "the last line has no newline, so the file was cut short".into()));
            }
        };
        let mut tokens: Vec<Vec<u8>> = Vec::new();
        let mut seen: AHashSet<Vec<u8>> = AHashSet::new();
        for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let text = std::str::from_utf8(raw).map_err(|_| corrupt(line, "the line is not text".into()))?;
            let mut fields = text.split(' ');
            let (Some(b64), Some(rank), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(corrupt(line, format!("expected `base64 rank`, found {text:?}")));
            };
            let bytes = BASE64.decode(b64).map_err(|e| corrupt(line, format!("bad base64 {b64:?}: {e}")))?;
            let rank: usize = rank
                .parse()
                .map_err(|_| corrupt(line, format!("bad rank {rank:?}, expected a whole number")))?;
            if rank != tokens.len() {
                return Err(corrupt(line, format!("rank {rank} where rank {} was expected", tokens.len())));
            }
            if rank < 256 && bytes != [rank as u8] {
                return Err(corrupt(
                    line,
                    format!("rank {rank} must be the single byte {rank}, found {bytes:?}"),
                ));
            }
            if rank >= 256 && bytes.len() < 2 {
                return Err(corrupt(line, format!("merged rank {rank} has only {} byte(s)", bytes.len())));
            }
            if !seen.insert(bytes.clone()) {
                return Err(corrupt(
                    line,
                    format!("the bytes of rank {rank} already belong to an earlier rank"),
                ));
            }
            tokens.push(bytes);
        }
        if tokens.len() < 256 {
            return Err(corrupt(
                tokens.len(),
                format!("only {} ranks, fewer than the 256 single bytes", tokens.len()),
            ));
        }
        Ok(Self(tokens))
    }

    /// bytes -> rank, for `tiktoken_rs::CoreBPE::new`. Generic over the hasher
    /// because tiktoken-rs takes an `FxHashMap`; type inference picks it.
    pub fn encoder<S: BuildHasher + Default>(&self) -> HashMap<Vec<u8>, u32, S> {
        self.0.iter().enumerate().map(|(rank, bytes)| (bytes.clone(), rank as u32)).collect()
    }

    /// The reserved specials with ids `len() + i`, as prepare.py assigns them.
    pub fn special_tokens<S: BuildHasher + Default>(&self) -> HashMap<String, u32, S> {
        SPECIAL_TOKENS
            .iter()
            .enumerate()
            .map(|(i, name)| ((*name).to_owned(), (self.0.len() + i) as u32))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train_docs(docs: &[&str], vocab_size: u32) -> Ranks {
        let mut trainer = BpeTrainer::new(SPLIT_PATTERN, MAX_TRAIN_CHARS, DOC_CAP_CHARS).unwrap();
        trainer.add_documents(docs);
        trainer.train(vocab_size, &mut |_, _| {}).unwrap()
    }

    /// Merge and collect the per-pair changes, summed.
    fn merge_with_changes(ids: &[u32], pair: Pair, new_id: u32) -> (Vec<u32>, Vec<(Pair, i32)>) {
        let mut ids = ids.to_vec();
        let mut changes: Vec<(Pair, i32)> = Vec::new();
        let len = merge_pair_in_place(&mut ids, pair, new_id, |p, d| {
            match changes.iter_mut().find(|(q, _)| *q == p) {
                Some((_, total)) => *total += i32::from(d),
                None => changes.push((p, i32::from(d))),
            }
        });
        ids.truncate(len);
        changes.retain(|&(_, d)| d != 0);
        changes.sort();
        (ids, changes)
    }

    fn pair_counts(ids: &[u32]) -> Vec<(Pair, i32)> {
        let mut counts: Vec<(Pair, i32)> = Vec::new();
        for w in ids.windows(2) {
            match counts.iter_mut().find(|(q, _)| *q == (w[0], w[1])) {
                Some((_, c)) => *c += 1,
                None => counts.push(((w[0], w[1]), 1)),
            }
        }
        counts
    }

    /// The reported changes must turn the old pair counts into the new ones exactly.
    fn assert_changes_exact(before: &[u32], pair: Pair, new_id: u32) {
        let (after, changes) = merge_with_changes(before, pair, new_id);
        let mut expected = pair_counts(before);
        for &(p, d) in &changes {
            match expected.iter_mut().find(|(q, _)| *q == p) {
                Some((_, c)) => *c += d,
                None => expected.push((p, d)),
            }
        }
        expected.retain(|&(_, c)| c != 0);
        expected.sort();
        let mut actual = pair_counts(&after);
        actual.sort();
        assert_eq!(actual, expected, "merging {pair:?} in {before:?} -> {after:?}");
    }

    #[test]
    fn test_word_merge_overlapping_pairs() {
        let a = 97;
        assert_eq!(merge_with_changes(&[a, a, a], (a, a), 300).0, vec![300, a]);
        assert_eq!(merge_with_changes(&[a, a, a, a], (a, a), 300).0, vec![300, 300]);
        assert_eq!(merge_with_changes(&[a, a, a, a, a], (a, a), 300).0, vec![300, 300, a]);
        let (_, changes) = merge_with_changes(&[a, a, a, a], (a, a), 300);
        assert_eq!(changes, vec![((a, a), -3), ((300, 300), 1)]);
        for before in [&[a, a, a][..], &[a, a, a, a], &[a, a, a, a, a], &[98, a, a, a, 98]] {
            assert_changes_exact(before, (a, a), 300);
        }
    }

    #[test]
    fn test_word_merge_changes_are_exact() {
        let cases: [(&[u32], Pair); 6] = [
            (&[1, 2, 3, 1, 2], (1, 2)),
            (&[1, 2, 1, 2, 1, 2], (1, 2)),
            (&[2, 1, 2, 1], (1, 2)),
            (&[1, 2, 3], (4, 5)),
            (&[5, 1, 2, 2, 1, 2, 9], (1, 2)),
            (&[7, 7, 7, 8, 7, 7], (7, 7)),
        ];
        for (ids, pair) in cases {
            assert_changes_exact(ids, pair, 99);
        }
        assert_eq!(merge_with_changes(&[1, 2, 1, 2, 1, 2], (1, 2), 99).0, vec![99, 99, 99]);
        assert_eq!(merge_with_changes(&[1, 2, 3], (4, 5), 99), (vec![1, 2, 3], vec![]));
    }

    #[test]
    fn test_heap_order_is_count_then_smallest_pair() {
        let mut heap = BinaryHeap::from(vec![
            heap_entry(5, (10, 3)),
            heap_entry(5, (2, 900)),
            heap_entry(7, (500, 500)),
            heap_entry(5, (2, 7)),
            heap_entry(1, (0, 0)),
        ]);
        let order: Vec<(u64, Pair)> = std::iter::from_fn(|| heap.pop().map(heap_entry_parts)).collect();
        assert_eq!(order, vec![(7, (500, 500)), (5, (2, 7)), (5, (2, 900)), (5, (10, 3)), (1, (0, 0))]);
        assert_eq!(heap_entry_parts(heap_entry(u64::MAX, (u32::MAX, 0))), (u64::MAX, (u32::MAX, 0)));
    }

    #[test]
    fn test_tie_break_takes_smallest_pair() {
        // "ab" and "cd" both occur twice: (a, b) < (c, d) goes first.
        let ranks = train_docs(&["cd", "ab", "cd", "ab"], 258);
        assert_eq!(ranks.0[256..], [b"ab".to_vec(), b"cd".to_vec()]);
        // The right id breaks ties when the left ids are equal.
        let ranks = train_docs(&["ac", "ab"], 258);
        assert_eq!(ranks.0[256..], [b"ab".to_vec(), b"ac".to_vec()]);
        // A higher count wins regardless of order.
        let ranks = train_docs(&["cd", "cd", "cd", "ab", "ab"], 257);
        assert_eq!(ranks.0[256..], [b"cd".to_vec()]);
    }

    #[test]
    fn test_training_stops_early_when_pairs_run_out() {
        // Chunks "ab" and " ab": after (a,b) and (' ', ab) nothing is left to merge.
        let mut reports = Vec::new();
        let mut trainer = BpeTrainer::new(SPLIT_PATTERN, MAX_TRAIN_CHARS, DOC_CAP_CHARS).unwrap();
        trainer.add_documents(&["ab ab"]);
        let ranks = trainer.train(1000, &mut |done, total| reports.push((done, total))).unwrap();
        assert_eq!(ranks.len(), 258);
        assert_eq!(ranks.0[256], b"ab");
        assert_eq!(ranks.0[257], b" ab");
        assert_eq!(reports.last(), Some(&(2, 744)));
        // Single-character documents give no pairs at all.
        assert_eq!(train_docs(&["a", "b", ""], 300).len(), 256);
    }

    #[test]
    fn test_progress_reports_every_percent_and_the_end() {
        let text = "the quick brown fox jumps over the lazy dog again and again ".repeat(20);
        let mut trainer = BpeTrainer::new(SPLIT_PATTERN, MAX_TRAIN_CHARS, DOC_CAP_CHARS).unwrap();
        trainer.add_documents(&[text]);
        let mut reports = Vec::new();
        let ranks = trainer.train(256 + 20, &mut |done, total| reports.push((done, total))).unwrap();
        assert_eq!(ranks.len(), 276);
        assert_eq!(reports.len(), 20);
        assert_eq!(reports.last(), Some(&(20, 20)));
    }

    #[test]
    fn test_vocab_below_256_is_rejected() {
        let trainer = BpeTrainer::new(SPLIT_PATTERN, MAX_TRAIN_CHARS, DOC_CAP_CHARS).unwrap();
        let err = trainer.train(255, &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, BpeError::VocabTooSmall(255)), "{err}");
    }

    #[test]
    fn test_invalid_pattern_names_the_pattern() {
        let err = BpeTrainer::new("(unclosed", 10, 10).err().unwrap();
        assert!(err.to_string().contains("(unclosed"), "{err}");
    }

    #[test]
    fn test_cap_document_counts_code_points_not_bytes() {
        assert_eq!(cap_document("héllo", 2), "hé");
        assert_eq!(cap_document("你好世界", 3), "你好世");
        assert_eq!(cap_document("🙂🙂🙂", 1), "🙂");
        // Python slices by code point, so a multi-codepoint emoji can be cut inside.
        assert_eq!(cap_document("👍🏽x", 1), "👍");
        assert_eq!(cap_document("abc", 3), "abc");
        assert_eq!(cap_document("abc", 10), "abc");
        assert_eq!(cap_document("你好", 2), "你好");
        assert_eq!(cap_document("abc", 0), "");
        assert_eq!(cap_and_count("naïve café", 100), ("naïve café", 10));
        assert_eq!(cap_and_count("naïve café", 4), ("naïv", 4));
    }

    #[test]
    fn test_budget_includes_the_crossing_document_then_stops() {
        let mut trainer = BpeTrainer::new(SPLIT_PATTERN, 10, 4).unwrap();
        // Capped to 4 chars each: 4, 4 (=8 < 10), then 4 (=12 >= 10) is the last one.
        assert!(trainer.add_documents(&["aaaaaa", "bbbbbb"]));
        assert!(!trainer.add_documents(&["cccccc", "dddddd", "eeeeee"]));
        assert_eq!(trainer.chars_seen(), 12);
        assert_eq!(trainer.documents_seen(), 3);
        // Later batches are ignored.
        assert!(!trainer.add_documents(&["ffffff"]));
        assert_eq!(trainer.documents_seen(), 3);
        let ranks = trainer.train(300, &mut |_, _| {}).unwrap();
        let merged: Vec<&[u8]> = ranks.0[256..].iter().map(Vec::as_slice).collect();
        assert_eq!(merged, vec![&b"aa"[..], b"bb", b"cc", b"aaaa", b"bbbb", b"cccc"]);
    }

    #[test]
    fn test_budget_counts_empty_documents_and_zero_budget_takes_one() {
        // Like prepare.py, the budget is checked after a document is taken.
        let mut trainer = BpeTrainer::new(SPLIT_PATTERN, 0, DOC_CAP_CHARS).unwrap();
        assert!(!trainer.add_documents(&["", "never read"]));
        assert_eq!((trainer.documents_seen(), trainer.chars_seen()), (1, 0));
        let mut trainer = BpeTrainer::new(SPLIT_PATTERN, 3, DOC_CAP_CHARS).unwrap();
        assert!(trainer.add_documents(&["", "", "ab"]));
        assert!(!trainer.add_documents(&["你"]));
        assert_eq!((trainer.documents_seen(), trainer.chars_seen()), (4, 3));
    }

    #[test]
    fn test_batching_does_not_change_the_result() {
        let docs: Vec<String> =
            (0..200).map(|i| format!("doc {i}: the cat's hat, {}!\n", i * 37 % 101)).collect();
        let mut whole = BpeTrainer::new(SPLIT_PATTERN, MAX_TRAIN_CHARS, DOC_CAP_CHARS).unwrap();
        whole.add_documents(&docs);
        let mut batched = BpeTrainer::new(SPLIT_PATTERN, MAX_TRAIN_CHARS, DOC_CAP_CHARS).unwrap();
        for batch in docs.chunks(7) {
            batched.add_documents(batch);
        }
        let a = whole.train(400, &mut |_, _| {}).unwrap();
        let b = batched.train(400, &mut |_, _| {}).unwrap();
        assert_eq!(a, b);
    }

    /// Textbook BPE: recount every pair from scratch each step.
    fn naive_merges(words: &[(Vec<u32>, u64)], num_merges: u32) -> Vec<Pair> {
        let mut words: Vec<(Vec<u32>, u64)> = words.to_vec();
        let mut merges = Vec::new();
        for i in 0..num_merges {
            let mut counts: std::collections::BTreeMap<Pair, u64> = Default::default();
            for (ids, c) in &words {
                for w in ids.windows(2) {
                    *counts.entry((w[0], w[1])).or_default() += c;
                }
            }
            // Highest count; BTreeMap iterates pairs ascending, so `>` keeps the smallest on ties.
            let mut best: Option<(Pair, u64)> = None;
            for (&p, &c) in &counts {
                if best.is_none_or(|(_, bc)| c > bc) {
                    best = Some((p, c));
                }
            }
            let Some((pair, _)) = best else { break };
            for (ids, _) in &mut words {
                let len = merge_pair_in_place(ids, pair, 256 + i, |_, _| {});
                ids.truncate(len);
            }
            merges.push(pair);
        }
        merges
    }

    #[test]
    fn test_lazy_heap_matches_recounting_every_step() {
        // A small deterministic generator over a tiny alphabet gives many ties and overlaps.
        let mut state = 0x2545f4914f6cdd1du64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        // Three threads and a threshold of one chunk force the parallel merge
        // path in every other round, whatever the machine.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        for round in 0..60 {
            let alphabet = [b"ab".as_slice(), b"abc", b"aab", b"a b"][round % 4];
            let mut table = ChunkTable::default();
            let mut as_words: Vec<(Vec<u32>, u64)> = Vec::new();
            for _ in 0..(1 + next(30)) {
                let len = 1 + next(12) as usize;
                let chunk: Vec<u8> =
                    (0..len).map(|_| alphabet[next(alphabet.len() as u64) as usize]).collect();
                let count = 1 + next(5);
                table.add(&chunk, count);
                as_words.push((chunk.iter().map(|&b| u32::from(b)).collect(), count));
            }
            let expected = naive_merges(&as_words, 60);
            let mut words = Words::from_chunks(table).unwrap();
            if round % 2 == 1 {
                words.parallel_min_words = 1;
            }
            let actual = pool.install(|| words.run_merges(60, &mut |_, _| {}));
            assert_eq!(actual, expected, "round {round}");
        }
    }

    #[test]
    fn test_chunk_table_counts_repeats_and_keeps_order() {
        let mut table = ChunkTable::default();
        for (chunk, n) in [(&b"ab"[..], 1), (b" the", 2), (b"ab", 3), (b"", 1), (b" the", 1)] {
            table.add(chunk, n);
        }
        let chunks: Vec<(&[u8], u64)> =
            (0..table.counts.len() as u32).map(|i| (table.chunk(i), table.counts[i as usize])).collect();
        assert_eq!(chunks, vec![(&b"ab"[..], 4), (b" the", 3), (b"", 1)]);
        // Distinct chunks that share a hash are told apart through the chain.
        let mut table = ChunkTable::default();
        for (chunk, n) in [(&b"x"[..], 1), (b"y", 2), (b"x", 3), (b"z", 4), (b"y", 5)] {
            table.add_hashed(chunk, 42, n);
        }
        assert_eq!(table.counts, vec![4, 7, 4]);
        assert_eq!(table.heads.len(), 1);
    }

    #[test]
    fn test_fast_split_matches_the_fancy_pattern() {
        let fancy = Regex::new(SPLIT_PATTERN).unwrap();
        let fast = Regex::new(SPLIT_PATTERN_WITHOUT_FANCY).unwrap();
        let check = |doc: &str| {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            split_fancy(&fancy, doc, |c| a.push(c)).unwrap();
            split_fast(&fast, doc, |c| b.push(c)).unwrap();
            assert_eq!(b, a, "{doc:?}");
        };
        for doc in [
            "Hello   world  \n\n  x\t\ty \u{a0}\u{a0}z \u{3000}end   ",
            "I DON'T think they'll; it's 'S 'sS ''ll '' 'x",
            " \t\r\n \r\n\r\n  \n a  b\r\n  c\u{2028}\u{2028}d\u{85}\u{85} e   ",
            "!!!   ???\n\n... -- \u{301}\u{301} é 123456 ١٢٣ ²³ ⅠⅡ 你好 🙂🙂 👨\u{200d}👩",
            "tags 🏴\u{e0067}\u{e0062}\u{e007f}  private \u{f0000}\u{10fffd}  x",
            "   ",
            " ",
            "",
            "x  ",
            "  x",
        ] {
            check(doc);
        }
        // Random strings over an alphabet chosen to hit every alternative and their edges.
        let alphabet: Vec<char> =
            " \t\r\n\u{a0}\u{3000}\u{2028}\u{85}\u{b}aZéß你'sStTlLvVrReEdDmM09١²Ⅳ!.,-_\u{301}\u{200d}🙂\u{e0067}\u{f0000}"
                .chars()
                .collect();
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..20_000 {
            let len = next(24);
            let doc: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
            check(&doc);
        }
    }

    #[test]
    fn test_splitter_uses_the_fast_path_only_for_the_standard_pattern() {
        assert!(Splitter::new(SPLIT_PATTERN).unwrap().fast.is_some());
        assert!(Splitter::new(&format!("(?:{SPLIT_PATTERN})")).unwrap().fast.is_none());
        let splitter = Splitter::new(SPLIT_PATTERN).unwrap();
        let mut chunks = Vec::new();
        for doc in ["a  b", "a \u{f0000} b"] {
            splitter.for_each_chunk(doc, |c| chunks.push(c)).unwrap();
        }
        assert_eq!(chunks, vec!["a", " ", " b", "a", " \u{f0000}", " b"]);
    }

    #[test]
    fn test_ranks_round_trip_through_save_and_load() {
        let ranks = train_docs(&["hello hello world, héllo wörld 你好 你好"], 270);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.tiktoken");
        ranks.save(&path).unwrap();
        assert_eq!(Ranks::load(&path).unwrap(), ranks);
        assert!(!dir.path().join("tokenizer.tiktoken.tmp").exists());
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().next(), Some("AA== 0"));
        assert_eq!(text.lines().nth(104), Some("aA== 104"));
    }

    #[test]
    fn test_special_tokens_follow_the_ranks() {
        let ranks = train_docs(&["ab ab ab"], 300);
        let specials: HashMap<String, u32> = ranks.special_tokens();
        assert_eq!(specials[BOS_TOKEN], ranks.len() as u32);
        assert_eq!(specials["<|reserved_3|>"], ranks.len() as u32 + 3);
        let encoder: HashMap<Vec<u8>, u32> = ranks.encoder();
        assert_eq!(encoder[&b"ab"[..]], 256);
        assert_eq!(encoder.len(), ranks.len());
    }
}
