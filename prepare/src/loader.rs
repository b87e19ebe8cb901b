//! The training and evaluation data loader: BOS-aligned best-fit packing, exactly the
//! original's `make_dataloader`, running ahead on a background thread.
//!
//! Why best-fit: every row starts with BOS so no document is seen mid-way without its
//! beginning, and rows are filled completely (no padding, 100 % of tokens train). For each
//! row, from a buffer of tokenized documents, place the largest document that still fits;
//! when none fits, crop the shortest one to fill the row exactly. Cropping wastes the tail
//! of one document per row at most, far less than naive concatenation cuts.
//!
//! Determinism: documents are read in manifest order (shards, row groups, rows), tokenized
//! in batches of 128, and packed on one thread, so a given shard set always gives the same
//! batches. Every shard is hashed as it is read and must match the manifest.
//!
//! The training stream starts at a point chosen by the seed offset `ar` sets for repeated
//! measurements (`AR_SEED_OFFSET`): offset 0 starts at the first document, any other offset
//! a pseudo-random number of documents into the first shard. Repeated runs of one commit so
//! see different data orders even if a train file pins its weight seed, while a candidate
//! and the incumbent measured at the same offset see the same data (paired measurements).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::cache::Cache;
use crate::data::shard::ShardReader;
use crate::error::{Error, Result};
use crate::manifest::Split;
use crate::tokenizer::Tokenizer;

/// Documents tokenized per refill (the original's `tokenizer_batch_size`).
pub const TOKENIZER_BATCH: usize = 128;
/// Documents kept in the packing buffer (the original's `buffer_size`).
pub const PACK_BUFFER: usize = 1000;
/// Batches prepared ahead of the consumer.
pub const PREFETCH: usize = 4;

/// One batch: `inputs` and `targets` are `[batch, seq]` row-major, targets shifted by one.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    pub batch: usize,
    pub seq: usize,
    /// Pass over the split this batch came from, starting at 1.
    pub epoch: u64,
}

impl Batch {
    /// The inputs and targets as `[batch, seq]` integer tensors on `device`.
    pub fn tensors(&self, device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
        (self.input_tensor(device), to_tensor(&self.targets, self.batch, self.seq, device))
    }

    /// Only the inputs, as a `[batch, seq]` integer tensor.
    pub fn input_tensor(&self, device: &Device) -> Tensor<2, Int> {
        to_tensor(&self.inputs, self.batch, self.seq, device)
    }
}

fn to_tensor(ids: &[u32], b: usize, t: usize, device: &Device) -> Tensor<2, Int> {
    let data: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    Tensor::from_data(TensorData::new(data, [b, t]), device)
}

/// A source of tokenized document batches, each tagged with its epoch.
pub trait DocSource {
    fn next_docs(&mut self) -> Result<(Vec<Vec<u32>>, u64)>;
}

/// The packing state machine, independent of where documents come from.
pub struct Packer<S: DocSource> {
    source: S,
    buffer: Vec<Vec<u32>>,
    buffer_size: usize,
    epoch: u64,
}

impl<S: DocSource> Packer<S> {
    pub fn new(source: S, buffer_size: usize) -> Self {
        Packer { source, buffer: Vec::with_capacity(buffer_size + TOKENIZER_BATCH), buffer_size, epoch: 1 }
    }

    /// Fills one row of `row.len()` tokens.
    pub fn fill_row(&mut self, row: &mut [u32]) -> Result<()> {
        let capacity = row.len();
        let mut pos = 0;
        while pos < capacity {
            while self.buffer.len() < self.buffer_size {
                let (docs, epoch) = self.source.next_docs()?;
                self.epoch = epoch;
                self.buffer.extend(docs);
            }
            let remaining = capacity - pos;
            // Largest document that fits entirely; the first one wins ties.
            let mut best: Option<(usize, usize)> = None;
            for (i, doc) in self.buffer.iter().enumerate() {
                let len = doc.len();
                if len <= remaining && best.is_none_or(|(_, l)| len > l) {
                    best = Some((i, len));
                }
            }
            match best {
                Some((i, len)) => {
                    let doc = self.buffer.remove(i);
                    row[pos..pos + len].copy_from_slice(&doc);
                    pos += len;
                }
                None => {
                    // Nothing fits: crop the shortest (first on ties) to fill the row.
                    let (i, _) = self
                        .buffer
                        .iter()
                        .enumerate()
                        .min_by_key(|(i, d)| (d.len(), *i))
                        .expect("buffer is non-empty");
                    let doc = self.buffer.remove(i);
                    row[pos..].copy_from_slice(&doc[..remaining]);
                    pos = capacity;
                }
            }
        }
        Ok(())
    }

    /// Packs `batch` rows of `seq + 1` tokens into a batch.
    pub fn next_batch(&mut self, batch: usize, seq: usize) -> Result<Batch> {
        let mut row = vec![0u32; seq + 1];
        let mut inputs = Vec::with_capacity(batch * seq);
        let mut targets = Vec::with_capacity(batch * seq);
        for _ in 0..batch {
            self.fill_row(&mut row)?;
            inputs.extend_from_slice(&row[..seq]);
            targets.extend_from_slice(&row[1..]);
        }
        Ok(Batch { inputs, targets, batch, seq, epoch: self.epoch })
    }
}

/// Documents of one split, read shard by shard forever, tokenized with BOS in front.
pub struct ShardDocs {
    cache: Cache,
    tokenizer: Arc<Tokenizer>,
    split: Split,
    epoch: u64,
    shard: usize,
    reader: Option<ShardReader<bytes::Bytes>>,
    group: usize,
    pending: std::collections::VecDeque<String>,
    docs_this_epoch: u64,
    /// Documents still to skip before the first one is used (the seed-offset start).
    skip: Option<u64>,
    offset: u64,
}

impl ShardDocs {
    /// Reads `split` from its first document.
    pub fn new(cache: Cache, tokenizer: Arc<Tokenizer>, split: Split) -> Result<Self> {
        Self::starting(cache, tokenizer, split, 0)
    }

    /// Reads `split` from a start chosen by `offset` (0: the first document).
    pub fn starting(cache: Cache, tokenizer: Arc<Tokenizer>, split: Split, offset: u64) -> Result<Self> {
        if cache.shards(split).is_empty() {
            return Err(Error::Loader(format!(
                "the manifest lists no {split} shards; re-run `ar prepare --profile {}`",
                cache.profile.name
            )));
        }
        Ok(ShardDocs {
            cache,
            tokenizer,
            split,
            epoch: 1,
            shard: 0,
            reader: None,
            group: 0,
            pending: Default::default(),
            docs_this_epoch: 0,
            skip: (offset == 0).then_some(0),
            offset,
        })
    }

    /// Refills `pending` with the next row group, advancing shards and epochs.
    fn refill(&mut self) -> Result<()> {
        loop {
            if let Some(reader) = &self.reader {
                if self.skip.is_none() {
                    // First shard open: choose how far into it this offset starts.
                    let rows = reader.num_rows().max(1);
                    let mix = self.offset.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
                    self.skip = Some(mix % rows);
                }
                while self.skip.unwrap_or(0) > 0 && self.group < reader.num_row_groups() {
                    let rows = reader.group_rows(self.group);
                    if rows > self.skip.unwrap_or(0) {
                        break;
                    }
                    self.skip = self.skip.map(|s| s - rows);
                    self.group += 1;
                }
                if self.group < reader.num_row_groups() {
                    let mut docs = reader.row_group(self.group)?;
                    self.group += 1;
                    let drop = (self.skip.unwrap_or(0) as usize).min(docs.len());
                    docs.drain(..drop);
                    self.skip = Some(0);
                    self.docs_this_epoch += docs.len() as u64;
                    self.pending.extend(docs);
                    if !self.pending.is_empty() {
                        return Ok(());
                    }
                    continue;
                }
                self.reader = None;
                self.shard += 1;
            }
            let shards = self.cache.shards(self.split);
            if self.shard == shards.len() {
                if self.docs_this_epoch == 0 {
                    return Err(Error::Loader(format!("the {} split holds no documents", self.split)));
                }
                self.shard = 0;
                self.epoch += 1;
                self.docs_this_epoch = 0;
            }
            let rel = &shards[self.shard];
            let bytes = self.cache.read_verified(rel)?;
            self.reader = Some(ShardReader::from_bytes(bytes, &self.cache.path(rel))?);
            self.group = 0;
        }
    }
}

impl DocSource for ShardDocs {
    fn next_docs(&mut self) -> Result<(Vec<Vec<u32>>, u64)> {
        if self.pending.is_empty() {
            self.refill()?;
        }
        let epoch = self.epoch;
        let n = self.pending.len().min(TOKENIZER_BATCH);
        let docs: Vec<String> = self.pending.drain(..n).collect();
        Ok((self.tokenizer.encode_batch(&docs, true), epoch))
    }
}

/// The loader: packs on a background thread and hands out batches in order.
///
/// Dropping it drops the channel; the worker ends at its next send, within one batch.
pub struct Loader {
    rx: Receiver<Result<Batch>>,
    failed: bool,
}

impl Loader {
    /// Starts a loader over `split` producing `[batch, seq]` batches.
    pub fn new(
        cache: &Cache,
        tokenizer: &Arc<Tokenizer>,
        batch: usize,
        seq: usize,
        split: Split,
    ) -> Result<Loader> {
        if batch == 0 || seq == 0 {
            return Err(Error::Loader(format!("batch {batch} × seq {seq}: both must be positive")));
        }
        // Training data starts where the seed offset says; val and test always at the start.
        let offset = if split == Split::Train { crate::seed_offset() } else { 0 };
        let source = ShardDocs::starting(cache.clone(), tokenizer.clone(), split, offset)?;
        let (tx, rx) = sync_channel(PREFETCH);
        std::thread::Builder::new()
            .name(format!("loader-{split}"))
            .spawn(move || produce(Packer::new(source, PACK_BUFFER), batch, seq, tx))
            .map_err(|e| Error::Loader(format!("cannot start the loader thread: {e}")))?;
        Ok(Loader { rx, failed: false })
    }

    /// The next batch; an error (a tampered shard, say) is returned once and then sticks.
    pub fn next_batch(&mut self) -> Result<Batch> {
        if self.failed {
            return Err(Error::Loader("the loader stopped after an earlier error".to_string()));
        }
        match self.rx.recv() {
            Ok(Ok(batch)) => Ok(batch),
            Ok(Err(e)) => {
                self.failed = true;
                Err(e)
            }
            Err(_) => {
                self.failed = true;
                Err(Error::Loader("the loader thread stopped unexpectedly".to_string()))
            }
        }
    }
}

fn produce<S: DocSource>(mut packer: Packer<S>, batch: usize, seq: usize, tx: SyncSender<Result<Batch>>) {
    loop {
        let next = packer.next_batch(batch, seq);
        let stop = next.is_err();
        if tx.send(next).is_err() || stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Documents from a fixed list, cycled, in refills of `per_refill`.
    struct ListDocs {
        docs: Vec<Vec<u32>>,
        next: usize,
        per_refill: usize,
        epoch: u64,
    }

    impl DocSource for ListDocs {
        fn next_docs(&mut self) -> Result<(Vec<Vec<u32>>, u64)> {
            let mut out = Vec::new();
            let mut epoch = self.epoch;
            for _ in 0..self.per_refill {
                if self.next == self.docs.len() {
                    self.next = 0;
                    self.epoch += 1;
                    if !out.is_empty() {
                        break;
                    }
                    epoch = self.epoch;
                }
                out.push(self.docs[self.next].clone());
                self.next += 1;
            }
            Ok((out, epoch))
        }
    }

    fn docs(lens: &[usize]) -> Vec<Vec<u32>> {
        lens.iter()
            .enumerate()
            .map(|(d, &l)| {
                let mut v = vec![0u32];
                v.extend((1..l).map(|i| (d * 100 + i) as u32));
                v
            })
            .collect()
    }

    #[test]
    fn test_rows_start_with_bos_and_are_full() {
        let source = ListDocs { docs: docs(&[5, 9, 3, 17, 2, 8]), next: 0, per_refill: 2, epoch: 1 };
        let mut packer = Packer::new(source, 4);
        for _ in 0..20 {
            let b = packer.next_batch(3, 10).unwrap();
            assert_eq!(b.inputs.len(), 30);
            for r in 0..3 {
                assert_eq!(b.inputs[r * 10], 0, "row {r} starts with BOS");
                assert_eq!(&b.inputs[r * 10 + 1..r * 10 + 10], &b.targets[r * 10..r * 10 + 9]);
            }
        }
    }

    #[test]
    fn test_best_fit_prefers_largest_that_fits_then_crops_shortest() {
        // Row capacity 11 (seq 10). Buffer [5, 9, 3, 17]: 9 fits best, then 2 left:
        // nothing fits (5, 3, 17), so the shortest (3) is cropped to 2.
        let source = ListDocs { docs: docs(&[5, 9, 3, 17]), next: 0, per_refill: 4, epoch: 1 };
        let mut packer = Packer::new(source, 4);
        let mut row = vec![0u32; 11];
        packer.fill_row(&mut row).unwrap();
        let d = docs(&[5, 9, 3, 17]);
        let mut expected = d[1].clone();
        expected.extend_from_slice(&d[2][..2]);
        assert_eq!(row, expected);
    }
}
