//! A user's own corpus: `text:PATH` and `parquet:PATH`, turned into documents.
//!
//! PATH is a file or a folder (searched recursively, in sorted order, for `*.txt` or
//! `*.parquet`). Text must be UTF-8: a bad byte stops everything with the file, the byte
//! offset and the line, before any shard is written. Text is cut into documents on
//! `<|endoftext|>` (the GPT-2 convention) or on blank lines; `auto` picks the first when
//! the file contains the marker.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::data::shard::ShardReader;
use crate::error::{Error, IoContext, Result};

/// The GPT-2 end-of-text marker used to separate documents in plain text dumps.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// How plain text is cut into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DocSeparator {
    /// `<|endoftext|>` if the file contains it, else blank lines.
    #[default]
    Auto,
    /// Only `<|endoftext|>`.
    EndOfText,
    /// One or more blank (or whitespace-only) lines.
    BlankLine,
}

impl FromStr for DocSeparator {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DocSeparator::Auto),
            "eot" | "endoftext" => Ok(DocSeparator::EndOfText),
            "blank" | "blank-line" => Ok(DocSeparator::BlankLine),
            _ => Err(format!("unknown document separator '{s}' (use auto, eot or blank)")),
        }
    }
}

impl DocSeparator {
    pub fn name(self) -> &'static str {
        match self {
            DocSeparator::Auto => "auto",
            DocSeparator::EndOfText => "eot",
            DocSeparator::BlankLine => "blank",
        }
    }
}

/// Files under `path` with the given extension (or `path` itself if it is a file).
pub fn input_files(path: &Path, ext: &str) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).at(path)?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).at(&dir)? {
            let p = entry.at(&dir)?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::EmptyCorpus {
            what: path.display().to_string(),
            detail: format!(" (no *.{ext} files in this folder)"),
        });
    }
    Ok(out)
}

/// Cuts one text into trimmed, non-empty documents.
pub fn split_documents(text: &str, sep: DocSeparator) -> Vec<&str> {
    let eot = match sep {
        DocSeparator::Auto => text.contains(END_OF_TEXT),
        DocSeparator::EndOfText => true,
        DocSeparator::BlankLine => false,
    };
    let pieces: Vec<&str> = if eot { text.split(END_OF_TEXT).collect() } else { split_on_blank_lines(text) };
    pieces.into_iter().map(str::trim).filter(|d| !d.is_empty()).collect()
}

fn split_on_blank_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut line_start = 0;
    let mut in_blank_run = false;
    for (i, c) in text.char_indices() {
        if c == '\n' {
            let line = &text[line_start..i];
            let blank = line.trim().is_empty();
            if blank && !in_blank_run {
                out.push(&text[start..line_start]);
                in_blank_run = true;
            }
            if !blank && in_blank_run {
                start = line_start;
                in_blank_run = false;
            }
            line_start = i + 1;
        }
    }
    let last = &text[line_start..];
    if in_blank_run && !last.trim().is_empty() {
        start = line_start;
    }
    if !in_blank_run || !last.trim().is_empty() {
        out.push(&text[start..]);
    }
    out
}

/// Reads a UTF-8 file, reporting the first bad byte precisely.
pub fn read_utf8(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).at(path)?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = 1 + e.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count();
        Error::BadUtf8 { path: path.to_path_buf(), offset, line }
    })
}

/// Calls `each` with every document of every text file under `path`; returns the count.
pub fn for_each_text_document(
    path: &Path,
    sep: DocSeparator,
    each: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<u64> {
    let mut n = 0;
    for file in input_files(path, "txt")? {
        let text = read_utf8(&file)?;
        for doc in split_documents(&text, sep) {
            each(doc)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Calls `each` with every document of every parquet file under `path`.
pub fn for_each_parquet_document(path: &Path, each: &mut dyn FnMut(&str) -> Result<()>) -> Result<u64> {
    let mut n = 0;
    for file in input_files(path, "parquet")? {
        let reader = ShardReader::open(&file)?;
        for g in 0..reader.num_row_groups() {
            for doc in reader.row_group(g)? {
                let doc = doc.trim();
                if !doc.is_empty() {
                    each(doc)?;
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_blank_lines_separate_documents() {
        let text = "first line\nstill first\n\n  \nsecond\n\n\nthird\n";
        assert_eq!(
            split_documents(text, DocSeparator::Auto),
            vec!["first line\nstill first", "second", "third"]
        );
    }

    #[test]
    fn test_endoftext_wins_in_auto_mode() {
        let text = "a\n\nb<|endoftext|>c<|endoftext|>\n";
        assert_eq!(split_documents(text, DocSeparator::Auto), vec!["a\n\nb", "c"]);
        assert_eq!(split_documents(text, DocSeparator::BlankLine), vec!["a", "b<|endoftext|>c<|endoftext|>"]);
    }

    #[test]
    fn test_bad_utf8_names_offset_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("latin1.txt");
        std::fs::write(&p, b"ok\nalso ok\ncaf\xe9\n").unwrap();
        let err = read_utf8(&p).unwrap_err().to_string();
        assert!(err.contains("latin1.txt") && err.contains("byte 14") && err.contains("line 3"), "{err}");
        assert!(err.contains("iconv"), "{err}");
    }
}
