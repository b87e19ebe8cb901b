//! The trained model, handed from the training process to the scoring process.
//!
//! The train program no longer scores itself: when training ends it writes its parameters
//! here and exits, and `ar` starts a fresh process of the same binary that loads them and
//! serves logits to `ar`'s scorer (see `prepare::serve`). The format is the train file's
//! own parameters in its own order, with a few `key = value` facts it needs to rebuild the
//! model (its config); `prepare` does not know the architecture and does not need to.
//!
//! Layout (little-endian), in the habit of llm.c's checkpoints: magic `ARCKPT01`, a format
//! version, the metadata as JSON, the tensor count, then per tensor its name, rank, dims
//! and f32 values. Anything else is refused with the reason. The reader takes a byte limit:
//! the file comes from an untrusted program, so a lying header must not make the loader
//! allocate without bound.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use burn::tensor::{Device, FloatDType, Tensor, TensorData};

use crate::error::{Error, IoContext, Result};

/// First bytes of every checkpoint.
pub const MAGIC: &[u8; 8] = b"ARCKPT01";
/// Version of the layout after the magic.
pub const VERSION: u32 = 1;
/// Environment variable naming where the training process writes its checkpoint.
pub const CHECKPOINT_ENV: &str = "AR_CHECKPOINT";
/// Where a run outside `ar` writes it (the current directory).
pub const DEFAULT_FILE: &str = "model.ckpt";

/// One named parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// A model's parameters and the facts needed to rebuild it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Checkpoint {
    meta: BTreeMap<String, String>,
    tensors: Vec<NamedTensor>,
}

impl Checkpoint {
    pub fn new() -> Checkpoint {
        Checkpoint::default()
    }

    /// Records one fact, e.g. `set("n_layer", 4)`.
    pub fn set(&mut self, key: &str, value: impl std::fmt::Display) {
        self.meta.insert(key.to_string(), value.to_string());
    }

    /// Reads a fact back.
    pub fn get<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let text = self.meta.get(key).ok_or_else(|| bad(format!("has no '{key}'")))?;
        text.parse().map_err(|_| bad(format!("'{key}' = {text:?} does not parse")))
    }

    /// Appends a parameter (its values are read back from the device as f32).
    pub fn push<const D: usize>(&mut self, name: &str, tensor: &Tensor<D>) -> Result<()> {
        let shape = tensor.dims().to_vec();
        let values = tensor
            .clone()
            .cast(FloatDType::F32)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| bad(format!("cannot read '{name}' from the device: {e:?}")))?;
        self.tensors.push(NamedTensor { name: name.to_string(), shape, values });
        Ok(())
    }

    /// The parameters in the order they were pushed.
    pub fn tensors(&self) -> &[NamedTensor] {
        &self.tensors
    }

    /// Parameter `index` as a tensor on `device`, checking its rank.
    pub fn tensor<const D: usize>(&self, index: usize, device: &Device) -> Result<Tensor<D>> {
        let t = self.tensors.get(index).ok_or_else(|| bad(format!("has no tensor {index}")))?;
        if t.shape.len() != D {
            return Err(bad(format!("tensor '{}' has rank {}, expected {D}", t.name, t.shape.len())));
        }
        Ok(Tensor::from_data(TensorData::new(t.values.clone(), t.shape.clone()), device))
    }

    /// Total bytes of parameter values.
    pub fn value_bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.values.len() * 4).sum()
    }

    /// Serialises the checkpoint.
    pub fn write_to(&self, w: impl Write) -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 20, w);
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        let meta = serde_json::to_vec(&self.meta).expect("a string map serialises");
        w.write_all(&(meta.len() as u32).to_le_bytes())?;
        w.write_all(&meta)?;
        w.write_all(&(self.tensors.len() as u32).to_le_bytes())?;
        for t in &self.tensors {
            w.write_all(&(t.name.len() as u32).to_le_bytes())?;
            w.write_all(t.name.as_bytes())?;
            w.write_all(&(t.shape.len() as u32).to_le_bytes())?;
            for &d in &t.shape {
                w.write_all(&(d as u64).to_le_bytes())?;
            }
            // f32 little-endian, in chunks so a large tensor is not copied whole.
            for chunk in t.values.chunks(1 << 16) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
        }
        w.flush()
    }

    /// Reads a checkpoint, refusing anything malformed or larger than `limit` bytes.
    pub fn read_from(r: impl Read, limit: u64) -> Result<Checkpoint> {
        Checkpoint::parse(r, limit, true)
    }

    /// The shapes of a checkpoint's tensors, in order, read past their values without
    /// keeping them (what `ar` needs to charge a FLOPs budget; a checkpoint may be GBs).
    /// Refuses what [`Checkpoint::read_from`] refuses.
    pub fn shapes_from(r: impl Read, limit: u64) -> Result<Vec<Vec<usize>>> {
        let ck = Checkpoint::parse(r, limit, false)?;
        Ok(ck.tensors.into_iter().map(|t| t.shape).collect())
    }

    fn parse(r: impl Read, limit: u64, keep_values: bool) -> Result<Checkpoint> {
        let mut r = Limited { inner: BufReader::with_capacity(1 << 20, r), left: limit };
        let mut magic = [0u8; 8];
        r.exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("does not start with ARCKPT01 (not a checkpoint written by prepare)".into()));
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(bad(format!("version {version}, this build reads {VERSION}")));
        }
        let meta_len = r.u32()? as usize;
        let meta_bytes = r.bytes(meta_len)?;
        let meta: BTreeMap<String, String> =
            serde_json::from_slice(&meta_bytes).map_err(|e| bad(format!("metadata: {e}")))?;
        let count = r.u32()? as usize;
        let mut tensors = Vec::new();
        for i in 0..count {
            let name_len = r.u32()? as usize;
            let name = String::from_utf8(r.bytes(name_len)?).map_err(|_| bad(format!("tensor {i}: name")))?;
            let rank = r.u32()? as usize;
            if rank > 8 {
                return Err(bad(format!("tensor '{name}' has rank {rank}")));
            }
            let mut shape = Vec::with_capacity(rank);
            let mut numel: u64 = 1;
            for _ in 0..rank {
                let d = r.u64()?;
                numel = numel.checked_mul(d).ok_or_else(|| bad(format!("tensor '{name}' is too large")))?;
                shape.push(d as usize);
            }
            if numel.saturating_mul(4) > r.left {
                return Err(bad(format!("tensor '{name}' claims {numel} values, more than the file holds")));
            }
            let values = if keep_values {
                let raw = r.bytes(numel as usize * 4)?;
                raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            } else {
                r.skip(numel * 4)?;
                Vec::new()
            };
            tensors.push(NamedTensor { name, shape, values });
        }
        Ok(Checkpoint { meta, tensors })
    }

    /// Writes the checkpoint where `ar` asked (`AR_CHECKPOINT`), else `./model.ckpt`.
    pub fn save_for_scoring(&self) -> Result<PathBuf> {
        let path = std::env::var_os(CHECKPOINT_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
        self.save(&path)?;
        Ok(path)
    }

    /// Writes the checkpoint to `path` (created new or truncated).
    pub fn save(&self, path: &Path) -> Result<()> {
        let file = std::fs::File::create(path).at(path)?;
        self.write_to(&file).at(path)?;
        file.sync_all().at(path)
    }
}

fn bad(reason: String) -> Error {
    Error::Checkpoint { what: "file".into(), reason }
}

/// A reader that refuses to go past a byte limit.
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Limited<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<()> {
        if buf.len() as u64 > self.left {
            return Err(bad(format!("is larger than the {} bytes allowed", self.left)));
        }
        self.inner.read_exact(buf).map_err(|e| bad(format!("is truncated: {e}")))?;
        self.left -= buf.len() as u64;
        Ok(())
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        if n as u64 > self.left {
            return Err(bad(format!("claims {n} more bytes than the file may hold")));
        }
        let mut v = vec![0u8; n];
        self.exact(&mut v)?;
        Ok(v)
    }

    /// Reads past `n` bytes in bounded chunks.
    fn skip(&mut self, mut n: u64) -> Result<()> {
        let mut buf = vec![0u8; (1 << 16).min(n as usize)];
        while n > 0 {
            let take = n.min(buf.len() as u64) as usize;
            self.exact(&mut buf[..take])?;
            n -= take as u64;
        }
        Ok(())
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut c = Checkpoint::new();
        c.set("n_layer", 2);
        c.set("window_pattern", "SSSL");
        c.tensors.push(NamedTensor {
            name: "w".into(),
            shape: vec![2, 3],
            values: vec![1., 2., 3., 4., 5., -6.],
        });
        c.tensors.push(NamedTensor { name: "s".into(), shape: vec![1], values: vec![0.5] });
        c
    }

    #[test]
    fn test_round_trip_keeps_meta_and_values() {
        let c = sample();
        let mut bytes = Vec::new();
        c.write_to(&mut bytes).unwrap();
        let back = Checkpoint::read_from(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(back, c);
        let shapes = Checkpoint::shapes_from(&bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(shapes, vec![vec![2, 3], vec![1]]);
        assert_eq!(back.get::<usize>("n_layer").unwrap(), 2);
        assert_eq!(back.get::<String>("window_pattern").unwrap(), "SSSL");
        assert!(back.get::<usize>("missing").is_err());
    }

    #[test]
    fn test_truncated_foreign_or_oversized_files_are_refused() {
        let mut bytes = Vec::new();
        sample().write_to(&mut bytes).unwrap();
        let cut = Checkpoint::read_from(&bytes[..bytes.len() - 3], u64::MAX).unwrap_err().to_string();
        assert!(cut.contains("truncated"), "{cut}");
        let cut = Checkpoint::shapes_from(&bytes[..bytes.len() - 3], u64::MAX).unwrap_err().to_string();
        assert!(cut.contains("truncated"), "{cut}");
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        assert!(Checkpoint::read_from(&foreign[..], u64::MAX).unwrap_err().to_string().contains("ARCKPT01"));
        let small = Checkpoint::read_from(&bytes[..], 40).unwrap_err().to_string();
        assert!(small.contains("bytes"), "{small}");
    }

    #[test]
    fn test_a_lying_tensor_header_does_not_allocate() {
        let mut c = Checkpoint::new();
        c.tensors.push(NamedTensor { name: "x".into(), shape: vec![1], values: vec![1.0] });
        let mut bytes = Vec::new();
        c.write_to(&mut bytes).unwrap();
        // Patch the one dim (after magic, version, meta, count, name, rank) to 2^40.
        let dim_at = bytes.len() - 4 - 8;
        bytes[dim_at..dim_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = Checkpoint::read_from(&bytes[..], bytes.len() as u64).unwrap_err().to_string();
        assert!(e.contains("more than the file holds"), "{e}");
    }
}
