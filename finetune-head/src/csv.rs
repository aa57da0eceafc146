//! The one CSV reader of `finetune-head`, for feature tables ([`crate::data`]) and
//! data sets ([`crate::dataset`]): a plain or gzipped file, its non-empty lines with
//! their numbers, and a line's fields (no quoting: the numeric files this reads have
//! none).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The non-empty lines of a CSV file, trimmed, each with its line number (from 1).
pub struct Lines {
    path: PathBuf,
    inner: std::iter::Enumerate<std::io::Lines<BufReader<Box<dyn Read>>>>,
}

/// Opens `path`, decompressing it when its name ends in `.gz` (any case).
pub fn lines(path: &Path) -> Result<Lines> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader: Box<dyn Read> = if path.to_string_lossy().to_ascii_lowercase().ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(Lines {
        path: path.to_path_buf(),
        inner: BufReader::new(reader).lines().enumerate(),
    })
}

impl Iterator for Lines {
    type Item = Result<(usize, String)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (n, line) = self.inner.next()?;
            let line = match line
                .with_context(|| format!("{}: cannot read line {}", self.path.display(), n + 1))
            {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            let line = line.trim();
            if !line.is_empty() {
                return Some(Ok((n + 1, line.to_string())));
            }
        }
    }
}

/// Splits one CSV line into trimmed fields; with `unquote`, a quoted field loses its
/// quotes.
pub fn fields(line: &str, unquote: bool) -> Vec<&str> {
    line.split(',')
        .map(|f| {
            if unquote {
                f.trim().trim_matches('"')
            } else {
                f.trim()
            }
        })
        .collect()
}
