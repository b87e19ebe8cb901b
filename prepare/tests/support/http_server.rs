//! A small, deliberately misbehaving HTTP/1.1 file server for the downloader's tests.
//!
//! It listens on a random port of 127.0.0.1, serves in-memory files by path, and follows a
//! per-path script chosen by the test: each request takes the next [`Step`] of the script,
//! and once the script is used up every request gets the `then` step. That is enough to stage
//! the failures a real download meets (5xx, 429, 404, bodies cut short, stalls, corrupt bytes,
//! servers that ignore `Range`, CDN redirects) and replay them exactly. Every request is logged
//! (method, path, `Range`, `User-Agent`) so tests can assert what the client actually asked.
//!
//! Plain `std::net` and one thread per connection: no async runtime, nothing hidden. Every
//! response carries `Connection: close`, so each request is its own connection and a cut or
//! stalled one can never be reused by the client. Dropping the server stops and joins every
//! thread, stalled ones included.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the server does with one request for a path.
#[derive(Clone, Debug)]
pub enum Step {
    /// Behave: 200 with the whole file, or 206 + `Content-Range` for `Range: bytes=N-`,
    /// or 416 when N is at or past the end.
    Serve,
    /// Always 200 with the whole file, as servers without range support do.
    IgnoreRange,
    /// A bare status with a short text body, e.g. 500, 429, 404.
    Status(u16),
    /// Like `Serve`, but after `after` body bytes the connection is closed even though the
    /// headers promised the full `Content-Length`.
    Truncate { after: usize },
    /// Like `Serve`, but after `after` body bytes the server goes silent for `pause`, then
    /// closes the connection.
    Stall { after: usize, pause: Duration },
    /// Like `Serve` with the right length, but some bytes in the middle of the file flipped.
    Corrupt,
    /// 302 to another path on this server (an absolute URL, as Hugging Face's CDN redirect).
    Redirect { to: String },
    /// Answers `Range: bytes=N-` with a 206 that starts at byte 0 anyway (a broken proxy).
    WrongRange,
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub user_agent: Option<String>,
}

pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    addr: SocketAddr,
    routes: Mutex<HashMap<String, Route>>,
    log: Mutex<Vec<Request>>,
    stop: AtomicBool,
    connections: Mutex<Vec<JoinHandle<()>>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

struct Route {
    content: Arc<Vec<u8>>,
    script: VecDeque<Step>,
    then: Step,
}

/// Poisoned locks only mean another test thread panicked; the data is still fine to read.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TestServer {
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            addr,
            routes: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let worker = shared.clone();
                    let handle = std::thread::spawn(move || worker.handle(stream));
                    lock(&shared.connections).push(handle);
                }
            })
        };
        TestServer { addr, shared, acceptor: Some(acceptor) }
    }

    /// Serves `content` at `path`: the `script` steps for the first requests, `then` after.
    pub fn add(&self, path: &str, content: Vec<u8>, script: Vec<Step>, then: Step) {
        let route = Route { content: Arc::new(content), script: script.into(), then };
        lock(&self.shared.routes).insert(path.to_string(), route);
    }

    /// Serves `content` at `path`, well behaved.
    pub fn add_file(&self, path: &str, content: Vec<u8>) {
        self.add(path, content, Vec::new(), Step::Serve);
    }

    /// Answers every request for `from` with a 302 to `to`.
    pub fn add_redirect(&self, from: &str, to: &str) {
        let to = Step::Redirect { to: to.to_string() };
        self.add(from, Vec::new(), Vec::new(), to);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.log).clone()
    }

    /// The requests so far for one path.
    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        let log = lock(&self.shared.log);
        log.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// The most requests that were being answered at the same moment.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// The `Range` headers of the requests for one path (None where there was none).
    pub fn ranges_to(&self, path: &str) -> Vec<Option<String>> {
        self.requests_to(path).into_iter().map(|r| r.range).collect()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // `accept` blocks; a connection of our own wakes it to see the stop flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let handles = std::mem::take(&mut *lock(&self.shared.connections));
        for handle in handles {
            let _ = handle.join();
        }
    }
}

impl Shared {
    fn handle(&self, mut stream: TcpStream) {
        // A client that connects and says nothing must not pin this thread forever.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let Some(request) = read_request(&mut stream) else {
            return;
        };
        lock(&self.log).push(request.clone());
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);

        let (content, step) = {
            let mut routes = lock(&self.routes);
            match routes.get_mut(&request.path) {
                Some(route) => {
                    let step = route.script.pop_front().unwrap_or_else(|| route.then.clone());
                    (route.content.clone(), step)
                }
                None => (Arc::new(Vec::new()), Step::Status(404)),
            }
        };
        // Write errors just mean the client went away (it may have timed out on purpose).
        let _ = self.respond(&mut stream, &request, &content, step);
        let _ = stream.flush();
        let _ = stream.shutdown(Shutdown::Both);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn respond(
        &self,
        stream: &mut TcpStream,
        request: &Request,
        content: &[u8],
        step: Step,
    ) -> std::io::Result<()> {
        let len = content.len();
        let wanted_start = match step {
            Step::IgnoreRange => None,
            _ => request.range.as_deref().and_then(parse_range_start),
        };
        match step {
            Step::Status(code) => {
                let body = format!("{code} {}\n", reason(code));
                write_head(stream, code, body.len(), &[])?;
                stream.write_all(body.as_bytes())
            }
            Step::Redirect { to } => {
                let location = format!("Location: http://{}{}", self.addr, to);
                write_head(stream, 302, 0, &[location])
            }
            Step::Serve
            | Step::IgnoreRange
            | Step::Truncate { .. }
            | Step::Stall { .. }
            | Step::Corrupt
            | Step::WrongRange => {
                let start = wanted_start.unwrap_or(0);
                if wanted_start.is_some() && start >= len {
                    write_head(stream, 416, 0, &[format!("Content-Range: bytes */{len}")])?;
                    return Ok(());
                }
                let mut body = content[start..].to_vec();
                if let Step::Corrupt = step {
                    // Flip a run of bytes in the middle of the file (same length, magic intact).
                    let mid = len / 2;
                    for i in mid..(mid + 16).min(len) {
                        if i >= start {
                            body[i - start] ^= 0xA5;
                        }
                    }
                }
                if let (Step::WrongRange, Some(_)) = (&step, wanted_start) {
                    let range = format!("Content-Range: bytes 0-{}/{len}", len - 1);
                    write_head(stream, 206, len, &[range])?;
                    return stream.write_all(content);
                }
                if wanted_start.is_some() {
                    let range = format!("Content-Range: bytes {start}-{}/{len}", len - 1);
                    write_head(stream, 206, body.len(), &[range])?;
                } else {
                    write_head(stream, 200, body.len(), &[])?;
                }
                match step {
                    Step::Truncate { after } => stream.write_all(&body[..after.min(body.len())]),
                    Step::Stall { after, pause } => {
                        stream.write_all(&body[..after.min(body.len())])?;
                        stream.flush()?;
                        // Sleep in slices so dropping the server is not held up by a stall.
                        let until = Instant::now() + pause;
                        while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Ok(())
                    }
                    _ => stream.write_all(&body),
                }
            }
        }
    }
}

fn write_head(
    stream: &mut TcpStream,
    code: u16,
    content_length: usize,
    extra: &[String],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Length: {content_length}\r\nConnection: close\r\n\
         Accept-Ranges: bytes\r\n",
        reason(code)
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

/// Reads the request head (GETs have no body) and picks out what the tests look at.
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return None;
        }
        // One byte at a time is slow but exact: nothing after the head is swallowed.
        match stream.read(&mut byte[..1]) {
            Ok(0) | Err(_) => return None,
            Ok(_) => head.push(byte[0]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let mut range = None;
    let mut user_agent = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = Some(value.trim().to_string());
            match name.trim().to_ascii_lowercase().as_str() {
                "range" => range = value,
                "user-agent" => user_agent = value,
                _ => {}
            }
        }
    }
    Some(Request { method, path, range, user_agent })
}

/// `bytes=N-` or `bytes=N-M` → N (only the start matters to these tests).
fn parse_range_start(value: &str) -> Option<usize> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (start, _end) = spec.split_once('-')?;
    start.trim().parse().ok()
}
