//! The one shard format every source is turned into: a parquet file with a UTF-8 `text`
//! column, one document per row, read one row group at a time.
//!
//! It is the format of the original's climbmix shards, so those are used as downloaded;
//! TinyStories, local text and the synthetic corpus are written into it. Validation is
//! strict because a truncated download that still "opens" silently shrinks the data (the
//! original's #216): magic at both ends, a readable footer, a row count, a `text` column of
//! byte arrays, and, when `deep`, every page decoded and every document valid UTF-8.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{Compression, Repetition, Type as PhysicalType};
use parquet::column::reader::ColumnReader;
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, FileReader};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use crate::error::{Error, IoContext, Result};

/// Name of the column holding the documents.
pub const TEXT_COLUMN: &str = "text";

/// Documents per row group when we write shards: small enough that a reader holds one
/// group in memory comfortably, large enough that compression works.
pub const ROWS_PER_GROUP: usize = 2048;

/// Parquet files start and end with these four bytes.
const MAGIC: &[u8; 4] = b"PAR1";

/// What validation learned about a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardInfo {
    pub rows: u64,
    pub row_groups: usize,
}

fn bad(path: &Path, reason: impl Into<String>) -> Error {
    Error::BadShard {
        path: path.to_path_buf(),
        reason: reason.into(),
        hint: "; delete it and re-run `ar prepare` to fetch or rebuild it".to_string(),
    }
}

/// Reads the documents of a shard, one row group at a time.
pub struct ShardReader<R: ChunkReader + 'static> {
    reader: SerializedFileReader<R>,
    text_col: usize,
    optional: bool,
    path: PathBuf,
}

impl ShardReader<Bytes> {
    /// Parses a shard already in memory (the loader reads whole files so it can hash
    /// exactly the bytes it parses).
    pub fn from_bytes(bytes: Vec<u8>, path: &Path) -> Result<Self> {
        check_magic(&bytes, bytes.len() as u64, path)?;
        Self::new(Bytes::from(bytes), path)
    }
}

impl ShardReader<File> {
    /// Opens a shard from disk.
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        let mut head = [0u8; 4];
        if len >= 12 {
            file.read_exact(&mut head).at(path)?;
        }
        check_magic_head(&head, len, path)?;
        Self::new(file, path)
    }
}

impl<R: ChunkReader + 'static> ShardReader<R> {
    fn new(chunks: R, path: &Path) -> Result<Self> {
        let reader = SerializedFileReader::new(chunks)
            .map_err(|e| bad(path, format!("unreadable parquet footer ({e})")))?;
        let schema = reader.metadata().file_metadata().schema_descr();
        let found = (0..schema.num_columns()).find(|&i| {
            let col = schema.column(i);
            col.path().parts().len() == 1 && col.name() == TEXT_COLUMN
        });
        let Some(text_col) = found else {
            let names: Vec<String> =
                (0..schema.num_columns()).map(|i| schema.column(i).path().string()).collect();
            return Err(Error::BadShard {
                path: path.to_path_buf(),
                reason: format!("no `{TEXT_COLUMN}` column (columns: {})", names.join(", ")),
                hint: "; a shard needs one document per row in a string column named `text`".to_string(),
            });
        };
        let col = schema.column(text_col);
        if col.physical_type() != PhysicalType::BYTE_ARRAY {
            return Err(Error::BadShard {
                path: path.to_path_buf(),
                reason: format!("the `{TEXT_COLUMN}` column holds {:?}, not strings", col.physical_type()),
                hint: String::new(),
            });
        }
        let optional = col.max_def_level() > 0;
        Ok(ShardReader { reader, text_col, optional, path: path.to_path_buf() })
    }

    /// Total rows according to the footer.
    pub fn num_rows(&self) -> u64 {
        self.reader.metadata().file_metadata().num_rows().max(0) as u64
    }

    pub fn num_row_groups(&self) -> usize {
        self.reader.num_row_groups()
    }

    /// Rows of row group `i` according to the footer (nothing is decoded).
    pub fn group_rows(&self, i: usize) -> u64 {
        self.reader.metadata().row_group(i).num_rows().max(0) as u64
    }

    /// The documents of row group `i`. Null rows are skipped; invalid UTF-8 is an error.
    pub fn row_group(&self, i: usize) -> Result<Vec<String>> {
        let group =
            self.reader.get_row_group(i).map_err(|e| bad(&self.path, format!("row group {i}: {e}")))?;
        let expected = group.metadata().num_rows().max(0) as usize;
        let column = group
            .get_column_reader(self.text_col)
            .map_err(|e| bad(&self.path, format!("row group {i}: {e}")))?;
        let ColumnReader::ByteArrayColumnReader(mut column) = column else {
            return Err(bad(&self.path, "the text column is not a byte-array column"));
        };
        let mut docs = Vec::with_capacity(expected);
        let mut values: Vec<ByteArray> = Vec::with_capacity(1024);
        let mut defs: Vec<i16> = Vec::with_capacity(1024);
        let mut rows = 0usize;
        while rows < expected {
            values.clear();
            defs.clear();
            let want = (expected - rows).min(1024);
            let (records, _, _) = column
                .read_records(want, self.optional.then_some(&mut defs), None, &mut values)
                .map_err(|e| bad(&self.path, format!("row group {i}: corrupt page ({e})")))?;
            if records == 0 {
                return Err(bad(
                    &self.path,
                    format!("row group {i}: footer promises {expected} rows, pages hold {rows}"),
                ));
            }
            rows += records;
            for value in values.drain(..) {
                let text = String::from_utf8(value.data().to_vec()).map_err(|e| {
                    bad(&self.path, format!("row group {i}: a document is not valid UTF-8 ({e})"))
                })?;
                docs.push(text);
            }
        }
        Ok(docs)
    }

    /// Decodes every row group, checking the footer's row count against the pages.
    pub fn check_all(&self) -> Result<u64> {
        let mut rows = 0u64;
        for i in 0..self.num_row_groups() {
            let group_rows = self.reader.metadata().row_group(i).num_rows().max(0) as u64;
            let docs = self.row_group(i)?;
            if !self.optional && docs.len() as u64 != group_rows {
                return Err(bad(&self.path, format!("row group {i}: row count mismatch")));
            }
            rows += group_rows;
        }
        Ok(rows)
    }
}

fn check_magic(bytes: &[u8], len: u64, path: &Path) -> Result<()> {
    if len < 12 {
        return Err(bad(path, format!("only {len} bytes: truncated")));
    }
    check_magic_head(&bytes[..4], len, path)?;
    if &bytes[bytes.len() - 4..] != MAGIC {
        return Err(bad(path, "no PAR1 magic at the end: truncated or not parquet"));
    }
    Ok(())
}

fn check_magic_head(head: &[u8], len: u64, path: &Path) -> Result<()> {
    if len < 12 {
        return Err(bad(path, format!("only {len} bytes: truncated")));
    }
    if head != MAGIC {
        return Err(bad(path, "no PAR1 magic at the start: not a parquet file"));
    }
    Ok(())
}

/// Validates a shard on disk. `deep` also decodes every page and every document.
pub fn validate_shard(path: &Path, deep: bool) -> Result<ShardInfo> {
    use std::io::{Seek, SeekFrom};
    let mut file = File::open(path).at(path)?;
    let len = file.metadata().at(path)?.len();
    let mut head = [0u8; 4];
    let mut tail = [0u8; 4];
    if len >= 12 {
        file.read_exact(&mut head).at(path)?;
        file.seek(SeekFrom::End(-4)).at(path)?;
        file.read_exact(&mut tail).at(path)?;
    }
    check_magic_head(&head, len, path)?;
    if &tail != MAGIC {
        return Err(bad(path, "no PAR1 magic at the end: truncated or not parquet"));
    }
    let reader = ShardReader::open(path)?;
    let rows = reader.num_rows();
    if rows == 0 {
        return Err(bad(path, "no rows"));
    }
    let row_groups = reader.num_row_groups();
    if deep {
        let decoded = reader.check_all()?;
        if decoded != rows {
            return Err(bad(path, format!("footer says {rows} rows, row groups hold {decoded}")));
        }
    }
    Ok(ShardInfo { rows, row_groups })
}

/// Writes documents into a new shard. The file appears at its final path only after
/// `finish` has closed and synced it (written as `<path>.part`, then renamed).
pub struct ShardWriter {
    writer: SerializedFileWriter<File>,
    pending: Vec<ByteArray>,
    rows: u64,
    part: PathBuf,
    path: PathBuf,
}

impl ShardWriter {
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let part = part_path(path);
        let file = File::create(&part).at(&part)?;
        let schema = Type::group_type_builder("schema")
            .with_fields(vec![Arc::new(
                Type::primitive_type_builder(TEXT_COLUMN, PhysicalType::BYTE_ARRAY)
                    .with_repetition(Repetition::REQUIRED)
                    .with_logical_type(Some(parquet::basic::LogicalType::String))
                    .build()
                    .expect("valid text column"),
            )])
            .build()
            .expect("valid schema");
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(false)
            .set_created_by("autoresearch-rs prepare".to_string())
            .build();
        let writer = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props))
            .map_err(|e| bad(&part, format!("cannot start writing: {e}")))?;
        Ok(ShardWriter {
            writer,
            pending: Vec::with_capacity(ROWS_PER_GROUP),
            rows: 0,
            part,
            path: path.to_path_buf(),
        })
    }

    /// Appends one document.
    pub fn push(&mut self, doc: &str) -> Result<()> {
        self.pending.push(ByteArray::from(doc.as_bytes().to_vec()));
        self.rows += 1;
        if self.pending.len() >= ROWS_PER_GROUP {
            self.flush_group()?;
        }
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn flush_group(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let err = |e: parquet::errors::ParquetError| bad(&self.part, format!("write failed: {e}"));
        let mut group = self.writer.next_row_group().map_err(err)?;
        let mut column = group.next_column().map_err(err)?.expect("one column");
        column.typed::<ByteArrayType>().write_batch(&self.pending, None, None).map_err(err)?;
        column.close().map_err(err)?;
        group.close().map_err(err)?;
        self.pending.clear();
        Ok(())
    }

    /// Closes the file, fsyncs it and moves it into place. Returns the row count.
    pub fn finish(mut self) -> Result<u64> {
        self.flush_group()?;
        let part = self.part.clone();
        let file = self.writer.into_inner().map_err(|e| bad(&part, format!("close failed: {e}")))?;
        file.sync_all().at(&part)?;
        drop(file);
        std::fs::rename(&part, &self.path).at(&self.path)?;
        if let Some(dir) = self.path.parent() {
            crate::manifest::sync_dir(dir);
        }
        Ok(self.rows)
    }
}

/// `<path>.part`: where a file is written before it is complete.
pub fn part_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, docs: &[&str]) {
        let mut w = ShardWriter::create(path).unwrap();
        for d in docs {
            w.push(d).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn test_round_trip_across_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        let docs: Vec<String> = (0..ROWS_PER_GROUP + 10).map(|i| format!("doc {i} é")).collect();
        let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
        write(&path, &refs);
        let info = validate_shard(&path, true).unwrap();
        assert_eq!(info, ShardInfo { rows: docs.len() as u64, row_groups: 2 });
        let reader = ShardReader::open(&path).unwrap();
        let mut back = reader.row_group(0).unwrap();
        back.extend(reader.row_group(1).unwrap());
        assert_eq!(back, docs);
        assert!(!part_path(&path).exists());
    }

    #[test]
    fn test_truncated_shard_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        write(&path, &["a", "b", "c"]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = validate_shard(&path, false).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        assert!(err.contains("s.parquet"), "{err}");
    }

    #[test]
    fn test_not_parquet_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        std::fs::write(&path, b"<html>rate limited</html> and some more bytes").unwrap();
        let err = validate_shard(&path, false).unwrap_err().to_string();
        assert!(err.contains("not a parquet file"), "{err}");
    }
}
