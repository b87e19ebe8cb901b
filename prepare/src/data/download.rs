//! Resumable, validating downloads of data shards (used by `ar prepare`).
//!
//! The original harness fetched each parquet shard with `requests` into a `.tmp` file, renamed
//! it, and retried five times with `2**attempt` seconds of backoff. This module keeps that
//! shape and closes its gaps:
//!
//! - A file only ever appears at `dest` complete *and validated* (the caller's `validate`,
//!   which for shards checks the parquet magic, footer, row count and `text` column). The body
//!   streams into `dest.part`, which is fsynced, validated, atomically renamed, and the
//!   directory fsynced. A truncated or corrupt file left at `dest` by an older tool is
//!   refetched, never used.
//! - An interrupted transfer resumes: a leftover `.part` is continued with `Range: bytes=N-`
//!   (206 appends, 200 means the server ignored the range and we start over, 416 means the
//!   `.part` may already be whole).
//! - Transient trouble (refused/reset connections, stalls caught by a per-read idle timeout,
//!   5xx, 429, bodies cut short, failed validation) is retried with exponential backoff;
//!   permanent trouble (404/403/401, disk full) stops at once with an error saying what to do.
//! - Mirrors: the endpoint comes from `--endpoint`, else `HF_ENDPOINT`, else huggingface.co
//!   (the original's issue #272).
//!
//! Progress is reported through the small [`Progress`] trait; only the binary draws bars.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use crate::progress::{NoProgress, Progress};

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// The caller's check that a file on disk is whole and usable; `Err` carries the reason.
pub type Validate = dyn Fn(&Path) -> Result<(), String> + Sync;

/// Where downloads come from when neither `--endpoint` nor `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Longest wait we accept from a server's `Retry-After`, so a bad header cannot hang `prepare`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Write buffer: shards are ~100 MB, so write in large blocks rather than per network read.
const WRITE_BUFFER: usize = 1 << 20;

/// Knobs for [`fetch`] and [`fetch_all`]. The defaults are for real networks; tests shrink the
/// backoff and timeouts so misbehaving servers are dealt with in milliseconds.
#[derive(Clone, Debug)]
pub struct DownloadOptions {
    /// Requests per file before giving up (the original used 5).
    pub attempts: u32,
    /// Wait after the first failed attempt; it doubles after each further one (the original
    /// slept `2**attempt` seconds: 2, 4, 8, 16).
    pub backoff: Duration,
    /// Longest silence tolerated while waiting for bytes, so a stalled server is noticed and
    /// the transfer resumed instead of hanging forever.
    pub read_timeout: Duration,
    /// Longest time to resolve the host and open the connection (TLS included).
    pub connect_timeout: Duration,
    /// Sent as `User-Agent`.
    pub user_agent: String,
    /// Honour `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` from the environment.
    pub use_env_proxy: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            attempts: 5,
            backoff: Duration::from_secs(2),
            read_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("autoresearch-rs/", env!("CARGO_PKG_VERSION")).to_string(),
            use_env_proxy: true,
        }
    }
}

/// What [`fetch`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// `dest` already held a valid file; nothing was requested.
    AlreadyPresent,
    /// The file was downloaded (possibly resumed) and validated. `bytes` is its size,
    /// `attempts` the number of requests it took.
    Downloaded { bytes: u64, attempts: u32 },
}

/// One file for [`fetch_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    pub url: String,
    pub dest: PathBuf,
}

/// Why a download did not produce a file. Every message names the file or URL and the fix.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "{url} does not exist (HTTP {status}), so {dest} cannot be downloaded; check that \
         `--endpoint`/HF_ENDPOINT points at Hugging Face or a mirror of it, and that the shard \
         index is within the dataset"
    )]
    NotFound { url: String, dest: PathBuf, status: u16 },

    #[error(
        "{url} refused the request with HTTP {status}, so {dest} cannot be downloaded; check \
         `--endpoint`/HF_ENDPOINT"
    )]
    Refused { url: String, dest: PathBuf, status: u16 },

    #[error("could not request {url} for {dest}: {source}; check the URL and `--endpoint`/HF_ENDPOINT")]
    Request {
        url: String,
        dest: PathBuf,
        #[source]
        source: ureq::Error,
    },

    #[error(
        "the disk is full (or the file exceeds a size limit) while writing {part}: {source}; \
         free some space and re-run `ar prepare` (the partial file is kept and the download \
         resumes from it)"
    )]
    DiskFull {
        part: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("could not {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "could not download {dest} from {url} after {attempts} attempts; last error: {last}. \
         Check the network connection, or use a mirror with `--endpoint` or HF_ENDPOINT; \
         re-running `ar prepare` resumes from the partial file"
    )]
    GaveUp { url: String, dest: PathBuf, attempts: u32, last: String },
}

/// `{endpoint}/datasets/{repo}/resolve/main/{file}`, tolerating stray slashes at the joins.
pub fn hf_url(endpoint: &str, repo: &str, file: &str) -> String {
    format!(
        "{}/datasets/{}/resolve/main/{}",
        endpoint.trim_end_matches('/'),
        repo.trim_matches('/'),
        file.trim_start_matches('/')
    )
}

/// `HF_ENDPOINT` when set (mirror support), else [`DEFAULT_ENDPOINT`]. The CLI's `--endpoint`
/// overrides both; read this once when building the config.
pub fn default_endpoint() -> String {
    endpoint_or_default(std::env::var("HF_ENDPOINT").ok())
}

/// `dest` with `.part` appended: where the body streams until it is validated.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = OsString::from(dest.as_os_str());
    name.push(".part");
    PathBuf::from(name)
}

/// Downloads `url` to `dest` unless a valid file is already there. See the module header.
pub fn fetch(
    url: &str,
    dest: &Path,
    opts: &DownloadOptions,
    validate: &Validate,
    progress: &dyn Progress,
) -> Result<Fetched, DownloadError> {
    fetch_with(&agent(opts), url, dest, opts, validate, progress)
}

/// Downloads every job with `workers` threads pulling from a shared queue (the original used
/// an 8-process pool). Every job is attempted even when others fail; results come back in job
/// order so the caller can report each failure.
pub fn fetch_all<F>(
    jobs: Vec<Job>,
    workers: usize,
    opts: &DownloadOptions,
    validate: &Validate,
    progress_for: F,
) -> Vec<Result<Fetched, DownloadError>>
where
    F: Fn(&Job) -> Box<dyn Progress> + Sync,
{
    // One agent for all workers: its config is shared and it is safe across threads.
    let agent = agent(opts);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Fetched, DownloadError>>>> =
        Mutex::new(jobs.iter().map(|_| None).collect());
    let workers = workers.clamp(1, jobs.len().max(1));

    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let progress = progress_for(job);
                    let result = fetch_with(&agent, &job.url, &job.dest, opts, validate, &*progress);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });

    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every job index is taken by exactly one worker"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The retry loop
// ---------------------------------------------------------------------------------------------

fn agent(opts: &DownloadOptions) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        // Statuses are handled here (206/416 carry meaning, 404 must not be retried), so they
        // come back as responses rather than as `Error::StatusCode`.
        .http_status_as_error(false)
        .user_agent(opts.user_agent.as_str())
        // Hugging Face answers `resolve/main/...` with a 302 to its CDN; Range survives it.
        .max_redirects(10)
        .timeout_resolve(Some(opts.connect_timeout))
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_per_read(Some(opts.read_timeout));
    if !opts.use_env_proxy {
        config = config.proxy(None);
    }
    ureq::Agent::new_with_config(config.build())
}

/// How one attempt went wrong.
enum Failure {
    /// Worth another attempt; `wait` is a server-requested minimum delay (`Retry-After`).
    Retry { cause: String, wait: Option<Duration> },
    /// Retrying cannot help (missing file, full disk): stop now.
    Fatal(DownloadError),
}

impl From<DownloadError> for Failure {
    fn from(e: DownloadError) -> Self {
        Failure::Fatal(e)
    }
}

fn retry(cause: impl Into<String>) -> Failure {
    Failure::Retry { cause: cause.into(), wait: None }
}

fn fetch_with(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    opts: &DownloadOptions,
    validate: &Validate,
    progress: &dyn Progress,
) -> Result<Fetched, DownloadError> {
    if dest.exists() {
        if validate(dest).is_ok() {
            return Ok(Fetched::AlreadyPresent);
        }
        // Left by an older tool or a crash outside our control: never trust it, never resume
        // from it (its bytes may be wrong anywhere, not just at the end).
        fs::remove_file(dest).map_err(|e| io_error("remove the invalid file", dest, e))?;
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| io_error("create the directory", dir, e))?;
    }

    let part = part_path(dest);
    let mut shown = Shown { progress, bytes: 0 };
    let attempts = opts.attempts.max(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        match attempt_once(agent, url, dest, &part, validate, &mut shown, opts) {
            Ok(bytes) => {
                return Ok(Fetched::Downloaded { bytes, attempts: attempt });
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry { cause, wait }) => {
                progress.retrying(attempt, attempts, &cause);
                last = cause;
                if attempt < attempts {
                    let backoff = opts.backoff.saturating_mul(1 << (attempt - 1).min(16));
                    std::thread::sleep(backoff.max(wait.unwrap_or_default()));
                }
            }
        }
    }
    Err(DownloadError::GaveUp { url: url.to_string(), dest: dest.to_path_buf(), attempts, last })
}

/// One request. Returns the final size once `dest` holds the validated file.
fn attempt_once(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    part: &Path,
    validate: &Validate,
    shown: &mut Shown,
    opts: &DownloadOptions,
) -> Result<u64, Failure> {
    let have = match fs::metadata(part) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_error("inspect", part, e).into()),
    };

    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| call_failure(e, url, dest))?;
    let status = response.status().as_u16();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);

    let (start, total) = match status {
        200 => {
            // A fresh download, or the server ignored our Range: either way, from byte 0.
            (0, response.body().content_length())
        }
        206 => {
            let range = header("content-range").unwrap_or_default();
            match parse_content_range(&range) {
                Some((start, total)) if start == have => (start, total),
                _ => {
                    // The server resumed somewhere else: appending would corrupt the file.
                    discard(part, shown)?;
                    return Err(retry(format!(
                        "asked to resume at byte {have} but the server answered \
                         Content-Range {range:?}; starting over"
                    )));
                }
            }
        }
        416 if have > 0 => {
            // Nothing left after byte `have`: the .part may already be the whole file (a crash
            // before the rename), or it is longer than the file (garbage). Let validation say.
            drop(response);
            if validate(part).is_ok() {
                shown.progress.set_total(have);
                shown.at(have);
                return finish(part, dest, have);
            }
            discard(part, shown)?;
            return Err(retry(format!(
                "the server says the {have}-byte partial file is already past the end \
                 (HTTP 416) and it is not a valid file; starting over"
            )));
        }
        401 | 403 | 404 | 410 => {
            return Err(Failure::Fatal(DownloadError::NotFound {
                url: url.to_string(),
                dest: dest.to_path_buf(),
                status,
            }));
        }
        408 | 429 | 500..=599 => {
            let wait = header("retry-after")
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
            return Err(Failure::Retry { cause: format!("HTTP {status} from {url}"), wait });
        }
        400..=499 => {
            return Err(Failure::Fatal(DownloadError::Refused {
                url: url.to_string(),
                dest: dest.to_path_buf(),
                status,
            }));
        }
        _ => return Err(retry(format!("unexpected HTTP {status} from {url}"))),
    };
    let expected = response.body().content_length();

    let file = if start == 0 {
        if have > 0 {
            shown.at(0);
        }
        File::create(part).map_err(|e| disk_error(part, "create", e))?
    } else {
        OpenOptions::new().append(true).open(part).map_err(|e| disk_error(part, "open", e))?
    };
    if let Some(total) = total {
        shown.progress.set_total(total);
    }
    shown.at(start);

    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    let cut = loop {
        match body.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                out.write_all(&buf[..n]).map_err(|e| disk_error(part, "write", e))?;
                received += n as u64;
                shown.inc(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Some(read_cause(e, received, expected, opts)),
        }
    };
    // Whatever arrived is kept (and made durable) so the next attempt resumes after it.
    let file = out.into_inner().map_err(|e| disk_error(part, "write", e.into_error()))?;
    file.sync_all().map_err(|e| disk_error(part, "sync", e))?;
    drop(file);
    if let Some(cause) = cut {
        return Err(retry(cause));
    }
    if let Some(expected) = expected
        && received < expected
    {
        return Err(retry(format!("the connection closed after {received} of {expected} bytes")));
    }

    if let Err(why) = validate(part) {
        // Do not resume from garbage: the bad bytes could be anywhere in the file.
        discard(part, shown)?;
        return Err(retry(format!("the downloaded file failed validation ({why}); fetching it again")));
    }
    finish(part, dest, start + received)
}

/// Moves the validated `.part` into place and makes the rename durable.
fn finish(part: &Path, dest: &Path, bytes: u64) -> Result<u64, Failure> {
    fs::rename(part, dest).map_err(|e| io_error("rename into place", dest, e))?;
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        sync_dir(dir).map_err(|e| io_error("sync the directory", dir, e))?;
    }
    Ok(bytes)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        // Some filesystems cannot fsync a directory; the rename has still happened.
        Err(e) if matches!(e.kind(), io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported) => Ok(()),
        other => other,
    }
}

/// Deletes a `.part` whose bytes cannot be trusted and resets the progress.
fn discard(part: &Path, shown: &mut Shown) -> Result<(), Failure> {
    match fs::remove_file(part) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("remove", part, e).into()),
    }
    shown.restart();
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Keeps the caller's progress equal to the bytes in the `.part`, across retries: a resumed
/// attempt only reports bytes not yet reported, a discarded file resets it.
struct Shown<'a> {
    progress: &'a dyn Progress,
    bytes: u64,
}

impl Shown<'_> {
    fn at(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.restart();
        }
        if bytes > self.bytes {
            self.inc(bytes - self.bytes);
        }
    }

    fn inc(&mut self, bytes: u64) {
        self.bytes += bytes;
        self.progress.inc(bytes);
    }

    fn restart(&mut self) {
        if self.bytes > 0 {
            self.bytes = 0;
            self.progress.restart();
        }
    }
}

/// Failures of `call()` (connect, headers, redirects). Malformed URLs and redirect loops are
/// permanent; everything else is the network and worth retrying.
fn call_failure(e: ureq::Error, url: &str, dest: &Path) -> Failure {
    match e {
        ureq::Error::BadUri(_)
        | ureq::Error::Http(_)
        | ureq::Error::TooManyRedirects
        | ureq::Error::RedirectFailed
        | ureq::Error::RequireHttpsOnly(_)
        | ureq::Error::InvalidProxyUrl => Failure::Fatal(DownloadError::Request {
            url: url.to_string(),
            dest: dest.to_path_buf(),
            source: e,
        }),
        e => retry(format!("{e} (requesting {url})")),
    }
}

/// Describes a failed body read; ureq hands its own errors back wrapped in `io::Error`.
fn read_cause(e: io::Error, received: u64, expected: Option<u64>, opts: &DownloadOptions) -> String {
    let of = expected.map(|n| format!(" of {n}")).unwrap_or_default();
    match ureq::Error::from(e) {
        ureq::Error::Timeout(_) => {
            format!("the server stalled: no data for {:?} after {received}{of} bytes", opts.read_timeout)
        }
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            format!("the connection closed after {received}{of} bytes")
        }
        e => format!("the transfer broke after {received}{of} bytes: {e}"),
    }
}

/// Local write failures are never retried; a full disk gets its own message because the fix
/// (free space, re-run, it resumes) is different from a broken disk or a permissions problem.
fn disk_error(part: &Path, action: &'static str, e: io::Error) -> DownloadError {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge | io::ErrorKind::QuotaExceeded => {
            DownloadError::DiskFull { part: part.to_path_buf(), source: e }
        }
        _ => io_error(action, part, e),
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> DownloadError {
    DownloadError::Io { action, path: path.to_path_buf(), source }
}

/// `bytes START-END/TOTAL` → (START, TOTAL if known).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((start, total))
}

fn endpoint_or_default(env: Option<String>) -> String {
    match env {
        Some(e) if !e.trim().is_empty() => e.trim().trim_end_matches('/').to_string(),
        _ => DEFAULT_ENDPOINT.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_url_joins_endpoint_repo_and_file_whatever_the_slashes() {
        let want = "https://hf-mirror.com/datasets/karpathy/climbmix/resolve/main/shard_00001.parquet";
        for endpoint in ["https://hf-mirror.com", "https://hf-mirror.com/"] {
            for repo in ["karpathy/climbmix", "/karpathy/climbmix/"] {
                for file in ["shard_00001.parquet", "/shard_00001.parquet"] {
                    assert_eq!(hf_url(endpoint, repo, file), want);
                }
            }
        }
    }

    #[test]
    fn endpoint_comes_from_hf_endpoint_when_set_else_huggingface() {
        assert_eq!(endpoint_or_default(None), "https://huggingface.co");
        assert_eq!(endpoint_or_default(Some("  ".into())), "https://huggingface.co");
        assert_eq!(endpoint_or_default(Some("https://hf-mirror.com/".into())), "https://hf-mirror.com");
    }

    #[test]
    fn part_path_appends_part_to_the_whole_name() {
        assert_eq!(
            part_path(Path::new("/d/shard_00001.parquet")),
            PathBuf::from("/d/shard_00001.parquet.part")
        );
    }

    #[test]
    fn content_range_is_parsed_or_refused() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("bytes 9-3/20"), None);
        assert_eq!(parse_content_range("items 0-9/10"), None);
    }

    #[test]
    fn full_disk_errors_are_told_apart_from_other_write_errors() {
        let part = Path::new("/d/x.part");
        let full = disk_error(part, "write", io::Error::from(io::ErrorKind::StorageFull));
        assert!(matches!(full, DownloadError::DiskFull { .. }));
        assert!(full.to_string().contains("/d/x.part"));
        let denied = disk_error(part, "write", io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(matches!(denied, DownloadError::Io { .. }));
    }
}
