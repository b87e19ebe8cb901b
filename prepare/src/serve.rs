//! Serving logits to `ar`'s scorer: the one door between a trained model and its score.
//!
//! The train program computes no metric. When training ends it writes its parameters (a
//! [`Checkpoint`]) and exits; `ar` then starts the same binary again with `AR_SERVE` set,
//! in a sandbox that can neither write nor open sockets nor read the data. That process
//! loads the checkpoint from a descriptor `ar` opened and answers queries on two pipes:
//! `ar` sends rows of token ids it chose, the model answers with logits, and `ar` computes
//! bits per byte itself (`prepare::scorer`), with probes mixed into the stream that catch a
//! model which looks ahead, mixes rows, or changes while it is being scored.
//!
//! Wire format (little-endian; `ar` checks every header against what it asked):
//! - hello, server → ar, once: magic `ARSERVE1`, protocol version u32, max rows per query u32;
//! - query, ar → server: kind u32 (1 logits, 2 log-probabilities, 3 end), rows u32, seq u32,
//!   `rows·seq` input ids u32, and for kind 2 as many target ids u32;
//! - answer, server → ar: kind u32, rows u32, seq u32, width u32 (the vocabulary the model
//!   outputs for kind 1, 1 for kind 2), then `rows·seq·width` f32 values.
//!
//! [`Request::serve`] is the honest loop every train file calls; [`Server`] is the lower
//! level it is built on (kept public so the loop reads as what it is, and so tests can
//! play a dishonest server: whatever a server answers, `ar` only believes what it checks).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// Environment variable carrying the three descriptors: `query,answer,checkpoint`.
pub const SERVE_ENV: &str = "AR_SERVE";
/// First bytes the server sends.
pub const HELLO_MAGIC: &[u8; 8] = b"ARSERVE1";
/// Version of the wire format.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest checkpoint a server loads (bytes): a guard against a lying header, not a limit
/// any real model of these profiles approaches.
pub const MAX_CHECKPOINT_BYTES: u64 = 64 << 30;

/// What a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Every logit: `[rows, seq, vocab]`.
    Logits = 1,
    /// The log-probability of each given target: `[rows, seq]`.
    LogProbs = 2,
    /// No more queries: the server exits.
    End = 3,
}

impl Ask {
    pub fn from_u32(v: u32) -> Option<Ask> {
        match v {
            1 => Some(Ask::Logits),
            2 => Some(Ask::LogProbs),
            3 => Some(Ask::End),
            _ => None,
        }
    }
}

/// One query as the server receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub ask: Ask,
    pub rows: usize,
    pub seq: usize,
    /// `rows·seq` token ids, row-major.
    pub inputs: Vec<u32>,
    /// For [`Ask::LogProbs`]: the id whose log-probability is wanted at each position.
    pub targets: Option<Vec<u32>>,
}

impl Query {
    /// The inputs as a `[rows, seq]` integer tensor.
    pub fn input_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let data: Vec<i32> = self.inputs.iter().map(|&i| i as i32).collect();
        Tensor::from_data(TensorData::new(data, [self.rows, self.seq]), device)
    }
}

/// The descriptors `ar` handed this process, when it was started to serve.
pub struct Request {
    query: File,
    answer: File,
    checkpoint: File,
}

/// `Some` when `ar` started this process to serve logits (`AR_SERVE` is set).
pub fn request() -> Option<Result<Request>> {
    let text = std::env::var(SERVE_ENV).ok().filter(|t| !t.is_empty())?;
    Some(parse_fds(&text))
}

fn parse_fds(text: &str) -> Result<Request> {
    let fds: Vec<RawFd> = text.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let [q, a, c] = fds[..] else {
        return Err(Error::Serve(format!("{SERVE_ENV}={text:?}: expected three descriptors q,a,c")));
    };
    for fd in [q, a, c] {
        // SAFETY: fcntl(F_GETFD) only asks whether the descriptor is open.
        if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(Error::Serve(format!(
                "descriptor {fd} from {SERVE_ENV} is not open: this mode is started by `ar`, not by hand"
            )));
        }
    }
    // SAFETY: `ar` opened these descriptors for this process and nothing else in it owns them.
    let own = |fd| File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(Request { query: own(q), answer: own(a), checkpoint: own(c) })
}

impl Request {
    /// Reads the checkpoint the training run wrote, from the descriptor `ar` opened.
    pub fn checkpoint(&mut self) -> Result<Checkpoint> {
        Checkpoint::read_from(&mut self.checkpoint, MAX_CHECKPOINT_BYTES)
    }

    /// Opens the conversation: sends the hello with the most rows the model takes per query.
    pub fn into_server(self, max_rows: usize) -> Result<Server> {
        Server::over(self.query, self.answer, max_rows)
    }

    /// The honest loop: answers every query with the model's logits (or the log-probabilities
    /// of the given targets, computed here from those logits) until `ar` says it is done.
    /// `max_rows` caps the rows per query (the train file's batch size is a good value).
    pub fn serve<F>(self, device: &Device, max_rows: usize, logits_fn: F) -> Result<()>
    where
        F: Fn(Tensor<2, Int>) -> Tensor<3> + Sync,
    {
        let Server { mut reader, writer } = self.into_server(max_rows)?;
        let answer_of = |query: &Query| -> Result<(usize, Vec<f32>)> {
            let logits = logits_fn(query.input_tensor(device)).cast(FloatDType::F32);
            match &query.targets {
                None => Ok((logits.dims()[2], to_vec(logits)?)),
                Some(targets) => {
                    let ids: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
                    let index =
                        Tensor::<3, Int>::from_data(TensorData::new(ids, [query.rows, query.seq, 1]), device);
                    Ok((1, to_vec(log_softmax(logits, 2).gather(2, index))?))
                }
            }
        };
        // `ar` keeps two queries outstanding. Two threads compute them side by side (each
        // forward has stretches one core runs alone: the other thread's forward fills them)
        // and a third writes the answers in query order, so the model keeps computing while
        // an answer (tens of MB of logits) streams through the pipe.
        type Answered = Result<(Query, usize, Vec<f32>)>;
        std::thread::scope(|scope| {
            let mut inboxes = Vec::new();
            let mut outboxes = Vec::new();
            for _ in 0..COMPUTE_THREADS {
                let (query_tx, query_rx) = std::sync::mpsc::sync_channel::<Query>(1);
                let (answer_tx, answer_rx) = std::sync::mpsc::sync_channel::<Answered>(1);
                let answer_of = &answer_of;
                scope.spawn(move || {
                    for query in query_rx {
                        let answered = answer_of(&query).map(|(width, values)| (query, width, values));
                        if answer_tx.send(answered).is_err() {
                            break;
                        }
                    }
                });
                inboxes.push(query_tx);
                outboxes.push(answer_rx);
            }
            let (order_tx, order_rx) = std::sync::mpsc::channel::<usize>();
            let sender = scope.spawn(move || -> Result<()> {
                let mut writer = writer;
                for worker in order_rx {
                    let answered = outboxes[worker]
                        .recv()
                        .map_err(|_| Error::Serve("a compute thread stopped without an answer".into()))?;
                    let (query, width, values) = answered?;
                    write_answer(&mut writer, &query, width, &values)?;
                }
                Ok(())
            });
            let mut n = 0usize;
            let read = loop {
                match read_query(&mut reader) {
                    Ok(Some(query)) => {
                        let worker = n % COMPUTE_THREADS;
                        n += 1;
                        // A send fails only when the writer stopped: its error is returned below.
                        if inboxes[worker].send(query).is_err() || order_tx.send(worker).is_err() {
                            break Ok(());
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            drop(inboxes);
            drop(order_tx);
            let written =
                sender.join().unwrap_or_else(|_| Err(Error::Serve("the answer writer panicked".into())));
            written.and(read)
        })
    }
}

/// Forward passes a server runs at once (see [`Request::serve`]).
const COMPUTE_THREADS: usize = 2;

fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Serve(format!("cannot read the model's output: {e:?}")))
}

/// The server side of the wire format.
pub struct Server {
    reader: BufReader<File>,
    writer: BufWriter<File>,
}

impl Server {
    /// A server reading queries from `query` and answering on `answer`; sends the hello.
    pub fn over(query: File, answer: File, max_rows: usize) -> Result<Server> {
        let mut server = Server {
            reader: BufReader::with_capacity(1 << 16, query),
            writer: BufWriter::with_capacity(1 << 20, answer),
        };
        server.hello(max_rows)?;
        Ok(server)
    }

    fn hello(&mut self, max_rows: usize) -> Result<()> {
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(HELLO_MAGIC);
        b.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b.extend_from_slice(&(max_rows.max(1) as u32).to_le_bytes());
        self.writer.write_all(&b).and_then(|_| self.writer.flush()).map_err(io)
    }

    /// The next query, or `None` when `ar` has no more.
    pub fn next(&mut self) -> Result<Option<Query>> {
        read_query(&mut self.reader)
    }

    /// Answers `query` with `values` (`rows·seq·width` f32).
    pub fn answer(&mut self, query: &Query, width: usize, values: &[f32]) -> Result<()> {
        write_answer(&mut self.writer, query, width, values)
    }
}

/// Reads the next query; `None` when `ar` sent the end or closed the pipe.
fn read_query(reader: &mut impl Read) -> Result<Option<Query>> {
    let mut head = [0u8; 12];
    match reader.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io(e)),
    }
    let word =
        |i: usize| u32::from_le_bytes([head[4 * i], head[4 * i + 1], head[4 * i + 2], head[4 * i + 3]]);
    let ask =
        Ask::from_u32(word(0)).ok_or_else(|| Error::Serve(format!("unknown query kind {}", word(0))))?;
    if ask == Ask::End {
        return Ok(None);
    }
    let (rows, seq) = (word(1) as usize, word(2) as usize);
    let inputs = read_u32s(reader, rows * seq)?;
    let targets = if ask == Ask::LogProbs { Some(read_u32s(reader, rows * seq)?) } else { None };
    Ok(Some(Query { ask, rows, seq, inputs, targets }))
}

/// Writes one answer: its header, then `rows·seq·width` f32.
fn write_answer(writer: &mut impl Write, query: &Query, width: usize, values: &[f32]) -> Result<()> {
    if values.len() != query.rows * query.seq * width {
        return Err(Error::Serve(format!(
            "answer has {} values for {} rows × {} positions × width {width}",
            values.len(),
            query.rows,
            query.seq
        )));
    }
    let mut head = Vec::with_capacity(16);
    for w in [query.ask as u32, query.rows as u32, query.seq as u32, width as u32] {
        head.extend_from_slice(&w.to_le_bytes());
    }
    writer.write_all(&head).map_err(io)?;
    write_f32s(writer, values).map_err(io)?;
    writer.flush().map_err(io)
}

fn io(e: std::io::Error) -> Error {
    Error::Serve(format!("the pipe to ar broke: {e}"))
}

/// Reads `n` little-endian u32.
pub fn read_u32s(r: &mut impl Read, n: usize) -> Result<Vec<u32>> {
    let mut bytes = vec![0u8; n * 4];
    r.read_exact(&mut bytes).map_err(io)?;
    Ok(bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Writes f32 values little-endian, without a copy on little-endian machines.
pub fn write_f32s(w: &mut impl Write, values: &[f32]) -> std::io::Result<()> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding and any byte pattern is a valid u8; the slice covers
        // exactly the values' memory.
        let bytes = unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, values.len() * 4) };
        w.write_all(bytes)
    }
    #[cfg(not(target_endian = "little"))]
    {
        for chunk in values.chunks(1 << 14) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write_all(&bytes)?;
        }
        Ok(())
    }
}

/// Reads f32 values little-endian into `out`, without a copy on little-endian machines.
pub fn read_f32s_into(r: &mut impl Read, out: &mut [f32]) -> std::io::Result<()> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: as in `write_f32s`; every bit pattern is a valid f32.
        let bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, out.len() * 4) };
        r.read_exact(bytes)
    }
    #[cfg(not(target_endian = "little"))]
    {
        let mut bytes = vec![0u8; out.len() * 4];
        r.read_exact(&mut bytes)?;
        for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }
}
