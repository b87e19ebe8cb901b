//! The shard downloader against a real HTTP server on 127.0.0.1 that misbehaves on purpose.
//!
//! Each test stages one kind of trouble a download meets in the wild (see
//! `support/http_server.rs`) and checks both the outcome (the file at `dest` is byte-identical
//! or absent, the `.part` is kept or gone) and the client's conduct, read from the server's
//! request log (how many requests, which `Range`). Fake "shards" are self-checking like
//! parquet: `PAR1` at both ends and a footer with the length and a checksum, so the validator
//! can tell a whole file from a truncated or corrupt one without knowing the expected bytes.
//!
//! Timeouts and backoff are shrunk to milliseconds so the whole file runs in a few seconds.

#[path = "support/http_server.rs"]
mod http_server;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http_server::{Step, TestServer};
use prepare::data::download::{
    DownloadError, DownloadOptions as Options, Fetched, Job, NoProgress, Progress, fetch, fetch_all,
    part_path,
};

// ---------------------------------------------------------------------------------------------
// Fake shards, options, a recording progress
// ---------------------------------------------------------------------------------------------

const MAGIC: &[u8; 4] = b"PAR1";
/// Footer after the payload: checksum (u64 LE), total length (u64 LE), magic.
const FOOTER: usize = 8 + 8 + 4;
const SHARD_LEN: usize = 256 * 1024;

/// A deterministic fake shard of exactly `len` bytes; different seeds give different bytes.
fn fake_shard(seed: u64, len: usize) -> Vec<u8> {
    assert!(len >= 4 + FOOTER);
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(MAGIC);
    while out.len() < len - FOOTER {
        // xorshift64: cheap, deterministic, and not compressible-looking.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push((state >> 24) as u8);
    }
    let sum = checksum(&out[4..]);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.extend_from_slice(MAGIC);
    out
}

/// FNV-1a over the payload.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The tests' stand-in for the parquet validator.
fn validate_shard(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let n = bytes.len();
    if n < 4 + FOOTER {
        return Err(format!("only {n} bytes"));
    }
    if &bytes[..4] != MAGIC {
        return Err("no PAR1 header".into());
    }
    if &bytes[n - 4..] != MAGIC {
        return Err("no PAR1 footer (truncated?)".into());
    }
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let (sum, len) = (field(n - FOOTER), field(n - FOOTER + 8));
    if len != n as u64 {
        return Err(format!("footer says {len} bytes, file has {n}"));
    }
    if sum != checksum(&bytes[4..n - FOOTER]) {
        return Err("checksum mismatch (corrupt)".into());
    }
    Ok(())
}

fn fast_opts() -> Options {
    Options {
        attempts: 5,
        backoff: Duration::from_millis(10),
        // Generous next to the server's speed: only the stall test wants it short.
        read_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        // Loopback must not be sent to a proxy from the developer's environment.
        use_env_proxy: false,
        ..Options::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Total(u64),
    Inc(u64),
    Restart,
    Retry(u32),
}

/// Records every call, and the cause of every failed attempt.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>, Mutex<Vec<String>>);

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }
    /// Bytes counted since the last restart: what a progress bar would show at the end.
    fn shown(&self) -> u64 {
        let events = self.events();
        let from = events.iter().rposition(|e| *e == Event::Restart).map_or(0, |i| i + 1);
        events[from..].iter().map(|e| if let Event::Inc(n) = e { *n } else { 0 }).sum()
    }
    fn causes(&self) -> Vec<String> {
        self.1.lock().unwrap().clone()
    }
    fn restarts(&self) -> usize {
        self.events().iter().filter(|e| **e == Event::Restart).count()
    }
}

impl Progress for Recorder {
    fn set_total(&self, bytes: u64) {
        self.0.lock().unwrap().push(Event::Total(bytes));
    }
    fn inc(&self, bytes: u64) {
        self.0.lock().unwrap().push(Event::Inc(bytes));
    }
    fn restart(&self) {
        self.0.lock().unwrap().push(Event::Restart);
    }
    fn retrying(&self, attempt: u32, _attempts: u32, cause: &str) {
        self.0.lock().unwrap().push(Event::Retry(attempt));
        self.1.lock().unwrap().push(cause.to_string());
    }
}

/// A temp dir, the shard's destination in it, and the shard's bytes.
fn setup(seed: u64) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join(format!("shard_{seed:05}.parquet"));
    (dir, dest, fake_shard(seed, SHARD_LEN))
}

fn assert_identical(dest: &Path, want: &[u8]) {
    let got = std::fs::read(dest).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
    assert!(got == want, "{} differs from the served file", dest.display());
    assert!(!part_path(dest).exists(), ".part left behind");
}

const PATH: &str = "/datasets/karpathy/test/resolve/main/shard.parquet";

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn fake_shards_validate_only_when_whole_and_intact() {
    let (dir, dest, bytes) = setup(1);
    std::fs::write(&dest, &bytes).unwrap();
    assert_eq!(validate_shard(&dest), Ok(()));
    std::fs::write(&dest, &bytes[..bytes.len() - 1]).unwrap();
    assert!(validate_shard(&dest).is_err());
    let mut flipped = bytes.clone();
    flipped[SHARD_LEN / 2] ^= 1;
    std::fs::write(&dest, &flipped).unwrap();
    assert!(validate_shard(&dest).unwrap_err().contains("checksum"));
    drop(dir);
}

#[test]
fn happy_path_downloads_an_identical_file_with_our_user_agent() {
    let (_dir, dest, bytes) = setup(2);
    let server = TestServer::start();
    server.add_file(PATH, bytes.clone());
    let progress = Recorder::default();

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &progress).unwrap();

    assert_eq!(got, Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 1 });
    assert_identical(&dest, &bytes);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].range, None);
    let agent = requests[0].user_agent.clone().unwrap_or_default();
    assert!(agent.starts_with("autoresearch-rs/"), "User-Agent was {agent:?}");
    assert_eq!(progress.events()[0], Event::Total(SHARD_LEN as u64));
    assert_eq!(progress.shown(), SHARD_LEN as u64);
    assert_eq!(progress.restarts(), 0);
}

#[test]
fn already_present_valid_file_makes_no_request() {
    let (_dir, dest, bytes) = setup(3);
    std::fs::write(&dest, &bytes).unwrap();
    let server = TestServer::start();
    server.add_file(PATH, bytes.clone());

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &NoProgress);

    assert_eq!(got.unwrap(), Fetched::AlreadyPresent);
    assert_eq!(server.requests().len(), 0);
    assert_identical(&dest, &bytes);
}

#[test]
fn corrupt_file_already_at_dest_is_refetched_not_used() {
    let (_dir, dest, bytes) = setup(4);
    // A truncated file from an older tool that renamed before checking.
    std::fs::write(&dest, &bytes[..1000]).unwrap();
    let server = TestServer::start();
    server.add_file(PATH, bytes.clone());

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &NoProgress);

    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 1 });
    assert_identical(&dest, &bytes);
    // Its bytes were not resumed from.
    assert_eq!(server.ranges_to(PATH), vec![None]);
}

#[test]
fn two_server_errors_then_success_takes_three_requests() {
    let (_dir, dest, bytes) = setup(5);
    let server = TestServer::start();
    server.add(PATH, bytes.clone(), vec![Step::Status(500), Step::Status(503)], Step::Serve);
    let progress = Recorder::default();

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &progress);

    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 3 });
    assert_eq!(server.requests().len(), 3);
    assert_identical(&dest, &bytes);
    let retries: Vec<_> = progress.events().into_iter().filter(|e| matches!(e, Event::Retry(_))).collect();
    assert_eq!(retries, vec![Event::Retry(1), Event::Retry(2)]);
}

#[test]
fn rate_limited_429_is_retried() {
    let (_dir, dest, bytes) = setup(6);
    let server = TestServer::start();
    server.add(PATH, bytes.clone(), vec![Step::Status(429)], Step::Serve);

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &NoProgress);

    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 2 });
    assert_eq!(server.requests().len(), 2);
    assert_identical(&dest, &bytes);
}

#[test]
fn missing_file_fails_at_once_naming_the_url_and_the_endpoint() {
    let (_dir, dest, _) = setup(7);
    let server = TestServer::start();
    server.add(PATH, Vec::new(), Vec::new(), Step::Status(404));
    // A long backoff: any retry would show up in the elapsed time.
    let opts = Options { backoff: Duration::from_secs(5), ..fast_opts() };
    let started = Instant::now();

    let err = fetch(&server.url(PATH), &dest, &opts, &validate_shard, &NoProgress).unwrap_err();

    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(matches!(err, DownloadError::NotFound { status: 404, .. }), "{err:?}");
    assert_eq!(server.requests().len(), 1);
    let msg = err.to_string();
    assert!(msg.contains(&server.url(PATH)), "{msg}");
    assert!(msg.contains("does not exist") && msg.contains("HF_ENDPOINT"), "{msg}");
    assert!(!dest.exists() && !part_path(&dest).exists());
}

#[test]
fn connection_cut_short_is_resumed_with_a_range_request() {
    let (_dir, dest, bytes) = setup(8);
    let server = TestServer::start();
    let cut = 100_000;
    server.add(PATH, bytes.clone(), vec![Step::Truncate { after: cut }], Step::Serve);
    let progress = Recorder::default();

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &progress);

    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 2 });
    assert_eq!(server.ranges_to(PATH), vec![None, Some(format!("bytes={cut}-"))]);
    assert_identical(&dest, &bytes);
    let causes = progress.causes();
    assert!(causes[0].contains(&format!("closed after {cut} of {SHARD_LEN} bytes")), "{causes:?}");
    // The resumed bytes were not counted twice, and nothing was thrown away.
    assert_eq!(progress.shown(), SHARD_LEN as u64);
    assert_eq!(progress.restarts(), 0);
}

#[test]
fn leftover_part_from_an_earlier_run_is_resumed() {
    let (_dir, dest, bytes) = setup(9);
    let have = 70_000;
    std::fs::write(part_path(&dest), &bytes[..have]).unwrap();
    let server = TestServer::start();
    server.add_file(PATH, bytes.clone());
    let progress = Recorder::default();

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &progress);

    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 1 });
    assert_eq!(server.ranges_to(PATH), vec![Some(format!("bytes={have}-"))]);
    assert_identical(&dest, &bytes);
    let events = progress.events();
    let first_inc = events.iter().find(|e| matches!(e, Event::Inc(_)));
    assert_eq!(first_inc, Some(&Event::Inc(have as u64)), "{events:?}");
    assert_eq!(progress.shown(), SHARD_LEN as u64);
}

#[test]
fn server_ignoring_range_makes_the_download_start_over() {
    let (_dir, dest, bytes) = setup(10);
    let server = TestServer::start();
    let cut = 50_000;
    server.add(PATH, bytes.clone(), vec![Step::Truncate { after: cut }], Step::IgnoreRange);
    let progress = Recorder::default();

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &progress);

    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 2 });
    // We asked to resume; the full 200 body was written from byte 0, not appended.
    assert_eq!(server.ranges_to(PATH), vec![None, Some(format!("bytes={cut}-"))]);
    assert_identical(&dest, &bytes);
    assert_eq!(progress.restarts(), 1);
    assert_eq!(progress.shown(), SHARD_LEN as u64);
}

#[test]
fn stalled_server_is_caught_by_the_idle_timeout_and_resumed() {
    let (_dir, dest, bytes) = setup(11);
    let server = TestServer::start();
    let after = 60_000;
    let stall = Step::Stall { after, pause: Duration::from_secs(10) };
    server.add(PATH, bytes.clone(), vec![stall], Step::Serve);
    let opts = Options { read_timeout: Duration::from_millis(300), ..fast_opts() };
    let progress = Recorder::default();
    let started = Instant::now();

    let got = fetch(&server.url(PATH), &dest, &opts, &validate_shard, &progress);

    // Far sooner than the server's 10 s silence: the client gave up on the read, not the server.
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(got, Ok(Fetched::Downloaded { .. })), "{got:?}");
    assert_eq!(server.ranges_to(PATH), vec![None, Some(format!("bytes={after}-"))]);
    assert_identical(&dest, &bytes);
    let causes = progress.causes();
    assert!(causes[0].contains("stalled") && causes[0].contains("300ms"), "{causes:?}");
}

#[test]
fn corrupt_download_is_discarded_and_fetched_again_from_scratch() {
    let (_dir, dest, bytes) = setup(12);
    let server = TestServer::start();
    server.add(PATH, bytes.clone(), vec![Step::Corrupt], Step::Serve);
    let progress = Recorder::default();

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &progress);

    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 2 });
    // No Range on the second request: the bad .part was deleted, not resumed from.
    assert_eq!(server.ranges_to(PATH), vec![None, None]);
    assert_identical(&dest, &bytes);
    assert_eq!(progress.restarts(), 1);
    assert!(progress.causes()[0].contains("checksum mismatch"), "{:?}", progress.causes());
}

#[test]
fn complete_part_answered_with_416_is_validated_and_moved_into_place() {
    let (_dir, dest, bytes) = setup(13);
    // A crash between the last write and the rename.
    std::fs::write(part_path(&dest), &bytes).unwrap();
    let server = TestServer::start();
    server.add_file(PATH, bytes.clone());

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &NoProgress);

    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 1 });
    assert_eq!(server.ranges_to(PATH), vec![Some(format!("bytes={SHARD_LEN}-"))]);
    assert_identical(&dest, &bytes);
}

#[test]
fn oversized_part_answered_with_416_is_discarded_and_refetched() {
    let (_dir, dest, bytes) = setup(14);
    std::fs::write(part_path(&dest), vec![7u8; SHARD_LEN + 100]).unwrap();
    let server = TestServer::start();
    server.add_file(PATH, bytes.clone());

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &NoProgress);

    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 2 });
    assert_eq!(server.ranges_to(PATH), vec![Some(format!("bytes={}-", SHARD_LEN + 100)), None]);
    assert_identical(&dest, &bytes);
}

#[test]
fn partial_answer_from_the_wrong_offset_is_not_appended() {
    let (_dir, dest, bytes) = setup(19);
    let have = 40_000;
    std::fs::write(part_path(&dest), &bytes[..have]).unwrap();
    let server = TestServer::start();
    server.add(PATH, bytes.clone(), vec![Step::WrongRange], Step::Serve);
    let progress = Recorder::default();

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &progress);

    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 2 });
    assert_eq!(server.ranges_to(PATH), vec![Some(format!("bytes={have}-")), None]);
    assert_identical(&dest, &bytes);
    assert!(progress.causes()[0].contains("Content-Range"), "{:?}", progress.causes());
    // The mismatched body was refused before any of it was written.
    let counted: u64 = progress.events().iter().map(|e| if let Event::Inc(n) = e { *n } else { 0 }).sum();
    assert_eq!(counted, SHARD_LEN as u64);
}

#[test]
fn redirect_to_a_cdn_is_followed_and_the_resume_range_survives_it() {
    let (_dir, dest, bytes) = setup(15);
    let server = TestServer::start();
    let cdn = "/cdn/blob/abc123";
    server.add_redirect(PATH, cdn);
    let cut = 30_000;
    server.add(cdn, bytes.clone(), vec![Step::Truncate { after: cut }], Step::Serve);

    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &NoProgress);

    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 2 });
    let resume = Some(format!("bytes={cut}-"));
    assert_eq!(server.ranges_to(PATH), vec![None, resume.clone()]);
    assert_eq!(server.ranges_to(cdn), vec![None, resume]);
    assert_identical(&dest, &bytes);
}

#[test]
fn server_failing_every_time_gives_up_after_the_configured_attempts() {
    let (_dir, dest, bytes) = setup(16);
    let server = TestServer::start();
    server.add(PATH, bytes, Vec::new(), Step::Status(500));
    let opts = Options { attempts: 3, ..fast_opts() };
    let progress = Recorder::default();

    let err = fetch(&server.url(PATH), &dest, &opts, &validate_shard, &progress).unwrap_err();

    assert_eq!(server.requests().len(), 3);
    assert!(matches!(err, DownloadError::GaveUp { attempts: 3, .. }), "{err:?}");
    let msg = err.to_string();
    for needle in [&dest.display().to_string(), &server.url(PATH), "3 attempts", "HTTP 500", "--endpoint"] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    assert!(!dest.exists());
    assert_eq!(progress.events().iter().filter(|e| matches!(e, Event::Retry(_))).count(), 3);
}

#[test]
fn unreachable_endpoint_gives_a_clear_error() {
    let (_dir, dest, _) = setup(17);
    // A port that was just free: nothing listens there, so connecting is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}{PATH}");
    let opts = Options { attempts: 2, ..fast_opts() };

    let err = fetch(&url, &dest, &opts, &validate_shard, &NoProgress).unwrap_err();

    assert!(matches!(err, DownloadError::GaveUp { attempts: 2, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("2 attempts"), "{msg}");
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
    assert!(msg.contains("HF_ENDPOINT") && msg.contains("network"), "{msg}");
    assert!(!dest.exists());
}

#[test]
fn fetch_all_downloads_every_good_file_and_reports_every_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let mut jobs = Vec::new();
    let mut want = Vec::new();
    for i in 0..10u64 {
        let path = format!("/files/shard_{i:05}.parquet");
        let bytes = fake_shard(100 + i, 128 * 1024);
        // Shards 3 and 7 are permanently broken in different ways; the others only wobble.
        let (script, then) = match i {
            1 => (vec![Step::Status(500), Step::Status(500)], Step::Serve),
            2 => (vec![Step::Truncate { after: 10_000 }], Step::Serve),
            3 => (Vec::new(), Step::Status(404)),
            5 => (vec![Step::Corrupt], Step::Serve),
            7 => (Vec::new(), Step::Status(503)),
            8 => (vec![Step::Status(429)], Step::IgnoreRange),
            _ => (Vec::new(), Step::Serve),
        };
        server.add(&path, bytes.clone(), script, then);
        jobs.push(Job { url: server.url(&path), dest: dir.path().join(format!("shard_{i:05}.parquet")) });
        want.push(bytes);
    }
    let opts = Options { attempts: 3, ..fast_opts() };

    let results = fetch_all(jobs.clone(), 4, &opts, &validate_shard, |_| Box::new(NoProgress));

    assert_eq!(results.len(), 10);
    for (i, (result, job)) in results.iter().zip(&jobs).enumerate() {
        match i {
            3 | 7 => {
                let err = result.as_ref().unwrap_err();
                assert!(err.to_string().contains(&job.url), "{err}");
                assert!(!job.dest.exists());
            }
            _ => {
                assert!(matches!(result, Ok(Fetched::Downloaded { .. })), "job {i}: {result:?}");
                assert_identical(&job.dest, &want[i]);
            }
        }
    }
    assert!(matches!(results[3], Err(DownloadError::NotFound { .. })));
    assert!(matches!(results[7], Err(DownloadError::GaveUp { attempts: 3, .. })));
    assert_eq!(server.requests_to("/files/shard_00007.parquet").len(), 3);
}

#[test]
fn fetch_all_runs_its_workers_at_the_same_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let mut jobs = Vec::new();
    for i in 0..4u64 {
        let path = format!("/slow/shard_{i:05}.parquet");
        // Each first answer dawdles, so parallel workers are bound to overlap on the server.
        let slow = Step::Stall { after: 1000, pause: Duration::from_millis(300) };
        server.add(&path, fake_shard(200 + i, 64 * 1024), vec![slow], Step::Serve);
        jobs.push(Job { url: server.url(&path), dest: dir.path().join(format!("{i}.parquet")) });
    }

    let results = fetch_all(jobs, 4, &fast_opts(), &validate_shard, |_| Box::new(NoProgress));

    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert!(server.max_in_flight() >= 2, "max in flight {}", server.max_in_flight());
}

// ---------------------------------------------------------------------------------------------
// Disk full, in a child process
// ---------------------------------------------------------------------------------------------

/// Env var that turns `disk_full_child` from a no-op into the child's half of the test.
const CHILD_ENV: &str = "AR_DOWNLOAD_TEST_DISK_FULL_CHILD";
/// The child's file-size limit: well inside the shard, so the write fails midway.
const CHILD_FSIZE_LIMIT: u64 = 100_000;

#[test]
fn disk_full_stops_at_once_keeps_the_part_and_says_so() {
    let (_dir, dest, bytes) = setup(18);
    let server = TestServer::start();
    server.add_file(PATH, bytes.clone());

    // RLIMIT_FSIZE makes writes past the limit fail with EFBIG, as a full disk fails with
    // ENOSPC, without root or a tiny filesystem. It is per process, hence the child.
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["disk_full_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("CHILD_URL", server.url(PATH))
        .env("CHILD_DEST", &dest)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let msg = stdout
        .lines()
        .find_map(|l| l.split_once("CHILD_ERROR: ").map(|(_, msg)| msg))
        .unwrap_or_else(|| panic!("child printed no error:\n{stdout}"));

    let part = part_path(&dest);
    assert!(msg.contains(&part.display().to_string()), "{msg}");
    assert!(msg.contains("disk is full") && msg.contains("re-run"), "{msg}");
    assert!(!dest.exists(), "a partial file reached dest");
    let kept = std::fs::read(&part).expect("the .part must be kept for resuming");
    assert_eq!(kept.len() as u64, CHILD_FSIZE_LIMIT);
    assert!(kept[..] == bytes[..kept.len()]);
    // Not retried: one request only.
    assert_eq!(server.requests().len(), 1);

    // Once there is room again, the same call resumes where the child stopped.
    let got = fetch(&server.url(PATH), &dest, &fast_opts(), &validate_shard, &NoProgress);
    assert_eq!(got.unwrap(), Fetched::Downloaded { bytes: SHARD_LEN as u64, attempts: 1 });
    assert_eq!(server.ranges_to(PATH)[1], Some(format!("bytes={CHILD_FSIZE_LIMIT}-")));
    assert_identical(&dest, &bytes);
}

#[test]
#[ignore = "the child half of disk_full_stops_at_once_keeps_the_part_and_says_so"]
fn disk_full_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let url = std::env::var("CHILD_URL").unwrap();
    let dest = PathBuf::from(std::env::var_os("CHILD_DEST").unwrap());
    // SAFETY: plain libc calls with valid arguments; ignoring SIGXFSZ turns the default
    // "kill the process" into an EFBIG error from write(2), which is what we want to see.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        // Lower only the soft limit: raising the hard one would need privileges.
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
        limit.rlim_cur = CHILD_FSIZE_LIMIT;
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let err = fetch(&url, &dest, &fast_opts(), &validate_shard, &NoProgress).unwrap_err();
    assert!(matches!(err, DownloadError::DiskFull { .. }), "{err:?}");
    println!("CHILD_ERROR: {err}");
}
