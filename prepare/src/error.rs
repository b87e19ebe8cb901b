//! The one error type of `prepare`.
//!
//! Every message names the file (or URL) involved and says what to do about it, in the
//! habit of llm.c's `---> HINT`: most of them end in "run `ar prepare`".

use std::path::PathBuf;

/// Errors from preparing, verifying or loading the cache.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown profile '{name}' (known: {known}); pass one of them to `ar prepare --profile`")]
    UnknownProfile { name: String, known: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "no prepared cache for profile '{profile}' at {path}: run `ar prepare --profile {profile}` first"
    )]
    NotPrepared { profile: String, path: PathBuf },

    #[error("{path}: unreadable manifest ({reason}); re-run `ar prepare --profile {profile}`")]
    BadManifest { path: PathBuf, reason: String, profile: String },

    #[error(
        "{path}: this cache was prepared for profile '{found}', but profile '{wanted}' is active; \
         run `ar prepare --profile {wanted}` (each profile has its own cache directory)"
    )]
    WrongProfile { path: PathBuf, found: String, wanted: String },

    #[error(
        "{path}: prepared under different constants for profile '{profile}' (hash {found}, expected {expected}); \
         re-run `ar prepare --profile {profile}`"
    )]
    ProfileChanged { path: PathBuf, profile: String, found: String, expected: String },

    #[error(
        "{path}: sha256 {found} does not match the manifest ({expected}): the file was modified or corrupted \
         after `ar prepare`; re-run `ar prepare --profile {profile}` to rebuild it"
    )]
    Tampered { path: PathBuf, found: String, expected: String, profile: String },

    #[error("{path}: listed in the manifest but missing; re-run `ar prepare --profile {profile}`")]
    MissingArtifact { path: PathBuf, profile: String },

    #[error("{path}: not a usable data shard: {reason}{hint}")]
    BadShard { path: PathBuf, reason: String, hint: String },

    #[error(
        "{path}: invalid UTF-8 at byte {offset} (line {line}); the corpus must be UTF-8 text: convert it, e.g. \
         `iconv -f latin1 -t utf-8 {path} > fixed.txt`, and pass the converted file"
    )]
    BadUtf8 { path: PathBuf, offset: usize, line: usize },

    #[error(
        "{what}: the corpus is empty{detail}; give `ar prepare --source` a file or folder with text in it"
    )]
    EmptyCorpus { what: String, detail: String },

    #[error("bad --source '{spec}': {reason}")]
    BadSource { spec: String, reason: String },

    #[error("{path}: bad tokenizer file: {reason}; re-run `ar prepare`")]
    BadTokenizer { path: PathBuf, reason: String },

    #[error(
        "tokenizer round-trip check failed on {text:?} (decoded {decoded:?}); this is a bug, please report it"
    )]
    RoundTrip { text: String, decoded: String },

    #[error("download failed: {0}")]
    Download(String),

    #[error("evaluation: {0}")]
    Eval(String),

    #[error("data loader: {0}")]
    Loader(String),

    #[error("{path}: could not write the result record: {reason}")]
    Record { path: PathBuf, reason: String },

    #[error("budget {0}")]
    Budget(String),

    #[error("model checkpoint {what}: {reason}")]
    Checkpoint { what: String, reason: String },

    #[error("serving logits to the scorer: {0}")]
    Serve(String),

    #[error("tokenizer training: {0}")]
    Bpe(String),

    #[error(transparent)]
    RanksFile(#[from] crate::bpe::BpeError),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io { path: path.into(), source })
    }
}
