//! `ar`'s side of the wire format (`prepare::serve`): send rows, receive what the model
//! says about them, and believe nothing that does not match what was asked.
//!
//! Queries are written by a thread of their own, so `ar` can keep the next query queued
//! while it reads an answer (the server computes while `ar` scores) without the two ends
//! ever waiting on each other's full pipe. A server that hangs is not this module's
//! concern: the process supervisor kills it at its timeout, the pipe closes, and the read
//! here fails.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

use crate::serve::{Ask, HELLO_MAGIC, PROTOCOL_VERSION, read_f32s_into};

use super::ScoreError;

/// Most columns an answer may carry per position: more than any vocabulary here, small
/// enough that a lying header cannot make `ar` allocate without bound.
const MAX_WIDTH: usize = 1 << 20;

/// One answer, as received.
pub struct Answer {
    pub ask: Ask,
    pub rows: usize,
    pub seq: usize,
    /// Values per position: the logit count for [`Ask::Logits`], 1 for [`Ask::LogProbs`].
    pub width: usize,
    pub values: Vec<f32>,
}

/// A connection to one serving process.
pub struct Client {
    tx: Option<Sender<Vec<u8>>>,
    writer: Option<JoinHandle<std::io::Result<()>>>,
    reader: BufReader<File>,
    pending: VecDeque<(Ask, usize, usize)>,
    /// Most rows the server takes per query (from its hello).
    pub max_rows: usize,
    /// The logit width of the first answer; every later one must match it.
    width: Option<usize>,
    /// Bytes received in answers (for the record: what scoring moved).
    pub bytes_received: u64,
    /// Every answer byte, hashed in order: the commitment of the audited variant (None
    /// until [`Client::commit_answers`]: the full variant needs no commitment, and hashing
    /// its gigabytes of logits cost 2–3 % of a cpu run).
    hasher: Option<sha2::Sha256>,
}

impl Client {
    /// Reads the server's hello from `answers`; queries go to `queries`.
    pub fn connect(queries: File, answers: File) -> Result<Client, ScoreError> {
        let mut reader = BufReader::with_capacity(1 << 20, answers);
        let mut hello = [0u8; 16];
        reader.read_exact(&mut hello).map_err(|e| {
            ScoreError::Protocol(format!(
                "the scoring process sent no hello ({e}); did the train file call serve?"
            ))
        })?;
        if &hello[..8] != HELLO_MAGIC {
            return Err(ScoreError::Protocol("the scoring process did not answer with ARSERVE1".into()));
        }
        let version = u32::from_le_bytes(hello[8..12].try_into().unwrap());
        if version != PROTOCOL_VERSION {
            return Err(ScoreError::Protocol(format!(
                "protocol version {version}, expected {PROTOCOL_VERSION}"
            )));
        }
        let max_rows = u32::from_le_bytes(hello[12..16].try_into().unwrap()).max(1) as usize;
        let (tx, rx) = channel::<Vec<u8>>();
        let writer = std::thread::Builder::new()
            .name("scorer-queries".into())
            .spawn(move || {
                let mut out = queries;
                for bytes in rx {
                    out.write_all(&bytes)?;
                }
                Ok(())
            })
            .map_err(|e| ScoreError::Protocol(format!("cannot start the query writer: {e}")))?;
        Ok(Client {
            tx: Some(tx),
            writer: Some(writer),
            reader,
            pending: VecDeque::new(),
            max_rows,
            width: None,
            bytes_received: 0,
            hasher: None,
        })
    }

    /// Queues a query; its answer comes back, in order, from [`Client::receive`].
    pub fn submit(&mut self, ask: Ask, inputs: &[u32], targets: Option<&[u32]>, rows: usize, seq: usize) {
        debug_assert_eq!(inputs.len(), rows * seq);
        let mut bytes = Vec::with_capacity(12 + 8 * inputs.len());
        for w in [ask as u32, rows as u32, seq as u32] {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        for &id in inputs.iter().chain(targets.unwrap_or(&[])) {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        self.pending.push_back((ask, rows, seq));
        if let Some(tx) = &self.tx {
            // A send error means the writer stopped (the pipe broke); receive() reports it.
            let _ = tx.send(bytes);
        }
    }

    /// The answer to the oldest query not yet received.
    pub fn receive(&mut self) -> Result<Answer, ScoreError> {
        let (ask, rows, seq) =
            self.pending.pop_front().ok_or_else(|| ScoreError::Protocol("receive without a query".into()))?;
        let mut head = [0u8; 16];
        self.reader.read_exact(&mut head).map_err(|e| self.broken(e))?;
        let word = |i: usize| u32::from_le_bytes(head[4 * i..4 * i + 4].try_into().unwrap()) as usize;
        let (got_ask, got_rows, got_seq, width) = (word(0), word(1), word(2), word(3));
        if got_ask != ask as usize || got_rows != rows || got_seq != seq {
            return Err(ScoreError::Protocol(format!(
                "asked for kind {} of {rows}×{seq}, the answer says kind {got_ask} of {got_rows}×{got_seq}",
                ask as u32
            )));
        }
        let expected_width = match ask {
            Ask::LogProbs => Some(1),
            _ => self.width,
        };
        if width == 0 || width > MAX_WIDTH || expected_width.is_some_and(|w| w != width) {
            return Err(ScoreError::Protocol(format!(
                "answer width {width} (expected {})",
                expected_width.map_or("a vocabulary size".to_string(), |w| w.to_string())
            )));
        }
        if ask == Ask::Logits {
            self.width = Some(width);
        }
        let mut values = vec![0f32; rows * seq * width];
        read_f32s_into(&mut self.reader, &mut values).map_err(|e| self.broken(e))?;
        self.bytes_received += 16 + values.len() as u64 * 4;
        if let Some(hasher) = &mut self.hasher {
            sha2::Digest::update(hasher, head);
            // SAFETY: viewing initialised f32s as bytes (no padding) for hashing only.
            let raw = unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, values.len() * 4) };
            sha2::Digest::update(hasher, raw);
        }
        Ok(Answer { ask, rows, seq, width, values })
    }

    /// From now on every answer byte is hashed into the commitment.
    pub fn commit_answers(&mut self) {
        self.hasher.get_or_insert_with(sha2::Digest::new);
    }

    /// sha256 of every answer byte received since [`Client::commit_answers`].
    pub fn commitment(&self) -> String {
        let hasher = self.hasher.clone().unwrap_or_default();
        crate::profile::hex(&sha2::Digest::finalize(hasher))
    }

    /// Tells the server there are no more queries and waits for the writer to drain.
    pub fn finish(mut self) {
        if let Some(tx) = &self.tx {
            let mut bytes = Vec::new();
            for w in [Ask::End as u32, 0, 0] {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            let _ = tx.send(bytes);
        }
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }

    fn broken(&self, e: std::io::Error) -> ScoreError {
        ScoreError::Protocol(format!(
            "the scoring process stopped answering ({e}): it crashed, ran out of memory or was killed at its timeout"
        ))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Dropping the sender ends the writer thread once the pipe is closed or drained.
        self.tx = None;
    }
}
