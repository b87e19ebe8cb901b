//! The runtime tokenizer: encoding through tiktoken-rs's `CoreBPE` with our trained ranks,
//! the BOS token, and the per-token byte lengths the metric divides by.
//!
//! Two departures from the original, both deliberate:
//! - no pickle: the ranks are a plain tiktoken text file (`base64(bytes) rank` per line),
//!   hash-checked against the manifest when loaded (the original's #41);
//! - `token_bytes` are the raw byte lengths of each rank. The original decoded each id to a
//!   `str` and re-encoded it, so a rank holding a partial UTF-8 sequence came back as U+FFFD
//!   and counted 3 bytes instead of its true 1 or 2 (its #384), inflating the byte count.
//!   Special tokens count 0 bytes and are masked out of the metric.

use std::path::Path;

use rayon::prelude::*;
use tiktoken_rs::CoreBPE;

use crate::bpe::{BOS_TOKEN, Ranks, SPECIAL_TOKENS};
use crate::cache::Cache;
use crate::error::{Error, Result};

/// Magic and version of the token byte-length file.
const TOKEN_BYTES_MAGIC: &[u8; 8] = b"ARTOKBYT";
const TOKEN_BYTES_VERSION: u32 = 1;

/// A loaded tokenizer.
pub struct Tokenizer {
    bpe: CoreBPE,
    vocab_size: usize,
    bos_id: u32,
    token_bytes: Vec<u32>,
}

impl Tokenizer {
    /// Builds the tokenizer from trained ranks: specials follow the ranks, BOS first.
    pub fn from_ranks(ranks: &Ranks, pattern: &str) -> Result<Tokenizer> {
        let n = ranks.0.len();
        let bos_id =
            (n + SPECIAL_TOKENS.iter().position(|s| *s == BOS_TOKEN).expect("BOS is special")) as u32;
        let bpe = CoreBPE::new(ranks.encoder(), ranks.special_tokens(), pattern)
            .map_err(|e| Error::Bpe(format!("cannot build the encoder: {e}")))?;
        Ok(Tokenizer {
            bpe,
            vocab_size: n + SPECIAL_TOKENS.len(),
            bos_id,
            token_bytes: token_bytes_of(ranks),
        })
    }

    /// Loads the tokenizer of a prepared cache, checking both files against the manifest
    /// and the stored byte lengths against the ranks they were derived from.
    pub fn load(cache: &Cache) -> Result<Tokenizer> {
        let info = &cache.manifest.tokenizer;
        let ranks_bytes = cache.read_verified(&info.ranks)?;
        let ranks = Ranks::parse(&ranks_bytes, &cache.path(&info.ranks))?;
        let tok = Tokenizer::from_ranks(&ranks, &info.pattern)?;
        let tb_path = cache.path(&info.token_bytes);
        let stored = parse_token_bytes(&cache.read_verified(&info.token_bytes)?, &tb_path)?;
        if stored != tok.token_bytes {
            return Err(Error::BadTokenizer {
                path: tb_path,
                reason: "byte lengths disagree with the ranks file".to_string(),
            });
        }
        if tok.vocab_size != info.vocab_size || tok.bos_id != info.bos_id {
            return Err(Error::BadTokenizer {
                path: cache.path(&info.ranks),
                reason: format!(
                    "vocab {} / BOS {} but the manifest says {} / {}",
                    tok.vocab_size, tok.bos_id, info.vocab_size, info.bos_id
                ),
            });
        }
        Ok(tok)
    }

    /// Vocabulary size including the special tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// Byte length of every token id; 0 for the special tokens.
    pub fn token_bytes(&self) -> &[u32] {
        &self.token_bytes
    }

    /// Encodes text as ordinary text (special-token strings get no special treatment).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }

    /// Encodes many documents in parallel, optionally with BOS in front of each.
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, docs: &[S], prepend_bos: bool) -> Vec<Vec<u32>> {
        docs.par_iter()
            .map(|d| {
                let text = d.as_ref();
                let mut ids = Vec::with_capacity(text.len() / 3 + 2);
                if prepend_bos {
                    ids.push(self.bos_id);
                }
                ids.extend(self.bpe.encode_ordinary(text));
                ids
            })
            .collect()
    }

    /// Decodes ids to bytes (specials decode to their names).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        self.bpe.decode_bytes(ids).map_err(|e| Error::Bpe(format!("decode: {e}")))
    }

    /// Decodes ids to text; invalid UTF-8 (a cut multi-byte character) is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        String::from_utf8(self.decode_bytes(ids)?)
            .map_err(|e| Error::Bpe(format!("decoded bytes are not UTF-8: {e}")))
    }

    /// Encodes and decodes `text`, failing if it does not come back unchanged.
    pub fn check_round_trip(&self, text: &str) -> Result<()> {
        let decoded = self.decode(&self.encode(text))?;
        if decoded != text {
            return Err(Error::RoundTrip { text: text.to_string(), decoded });
        }
        Ok(())
    }
}

/// The true byte length of each rank, then 0 for each special token.
pub fn token_bytes_of(ranks: &Ranks) -> Vec<u32> {
    ranks.0.iter().map(|b| b.len() as u32).chain(std::iter::repeat_n(0, SPECIAL_TOKENS.len())).collect()
}

/// Serialises byte lengths: magic, version, count, then little-endian u32s.
pub fn encode_token_bytes(lengths: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 4 * lengths.len());
    out.extend_from_slice(TOKEN_BYTES_MAGIC);
    out.extend_from_slice(&TOKEN_BYTES_VERSION.to_le_bytes());
    out.extend_from_slice(&(lengths.len() as u32).to_le_bytes());
    for l in lengths {
        out.extend_from_slice(&l.to_le_bytes());
    }
    out
}

/// Parses the byte-length file, refusing anything without our magic and version.
pub fn parse_token_bytes(bytes: &[u8], path: &Path) -> Result<Vec<u32>> {
    let bad = |reason: &str| Error::BadTokenizer { path: path.to_path_buf(), reason: reason.to_string() };
    if bytes.len() < 16 || &bytes[..8] != TOKEN_BYTES_MAGIC {
        return Err(bad("not a token-bytes file (bad magic)"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != TOKEN_BYTES_VERSION {
        return Err(bad(&format!("version {version}, expected {TOKEN_BYTES_VERSION}")));
    }
    let n = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    if bytes.len() != 16 + 4 * n {
        return Err(bad("length does not match its count"));
    }
    Ok(bytes[16..].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect())
}
