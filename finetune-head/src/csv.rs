//! The one CSV reader of `finetune-head`, for feature tables ([`crate::data`]) and
//! data sets ([`crate::dataset`]): a plain or gzipped file, its non-empty lines with
//! their numbers, and a line's fields: [`fields`] without quoting (the numeric files have
//! none), and [`records`] of RFC 4180 quoting with any separator (text tables, where a
//! sentence holds commas and a quoted field may hold line breaks).

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
fn open(path: &Path) -> Result<BufReader<Box<dyn Read>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader: Box<dyn Read> = if path.to_string_lossy().to_ascii_lowercase().ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    Ok(BufReader::new(reader))
}

/// The non-empty lines of `path` (see [`open`]).
pub fn lines(path: &Path) -> Result<Lines> {
    Ok(Lines {
        path: path.to_path_buf(),
        inner: open(path)?.lines().enumerate(),
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

/// A record longer than this (an unclosed quote, most likely) is refused rather than
/// read to the end of the file.
pub const MAX_RECORD: usize = 1 << 20;

/// The records of a CSV or TSV file split at `sep` (`,` or a tab), RFC 4180 style: a
/// field in double quotes may hold the separator and line breaks (one record over several
/// lines), and `""` inside it is one quote. Unquoted fields are trimmed; blank lines
/// between records are skipped. Each record comes with the number of the line it starts
/// on; a record whose quote is not closed (by the end of the file, or within
/// [`MAX_RECORD`] bytes) is an `Err` naming the column, and reading goes on after it.
pub fn records(path: &Path, sep: char) -> Result<Records<BufReader<Box<dyn Read>>>> {
    Ok(Records::new(open(path)?, path, sep))
}

/// A record: the line it starts on, and its fields or why it is malformed.
pub type Record = (usize, std::result::Result<Vec<String>, String>);

/// The iterator of [`records`].
pub struct Records<R> {
    path: PathBuf,
    lines: std::iter::Enumerate<std::io::Lines<R>>,
    sep: char,
}

impl<R: BufRead> Records<R> {
    /// Records of `reader`; `path` names it in I/O errors.
    pub fn new(reader: R, path: &Path, sep: char) -> Records<R> {
        Records {
            path: path.to_path_buf(),
            lines: reader.lines().enumerate(),
            sep,
        }
    }

    fn line(&mut self) -> Option<Result<(usize, String)>> {
        let (n, line) = self.lines.next()?;
        Some(
            line.with_context(|| format!("{}: cannot read line {}", self.path.display(), n + 1))
                .map(|l| (n + 1, l)),
        )
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        let (first, mut line) = loop {
            match self.line()? {
                Ok((_, l)) if l.trim().is_empty() => {}
                Ok(numbered) => break numbered,
                Err(e) => return Some(Err(e)),
            }
        };
        let mut split = Split::new(self.sep);
        let mut read = 0;
        loop {
            read += line.len() + 1;
            if split.feed(&line) {
                return Some(Ok((first, Ok(split.out))));
            }
            let open = split.out.len() + 1;
            if read > MAX_RECORD {
                let e = format!(
                    "column {open} opens a quote that is still open after {} KiB (line {})",
                    MAX_RECORD >> 10,
                    first
                );
                return Some(Ok((first, Err(e))));
            }
            line = match self.line() {
                Some(Ok((_, l))) => l,
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    let e = format!("column {open} opens a quote that the file does not close");
                    return Some(Ok((first, Err(e))));
                }
            };
        }
    }
}

/// Where the splitter is within a record.
#[derive(Clone, Copy, PartialEq)]
enum At {
    /// Before a field (leading spaces are skipped).
    Start,
    /// In an unquoted field.
    Bare,
    /// In a quoted field.
    Quoted,
    /// After a quoted field's closing quote (anything up to the separator is dropped).
    Closed,
}

/// RFC 4180 splitting fed a line at a time.
struct Split {
    sep: char,
    out: Vec<String>,
    field: String,
    at: At,
}

impl Split {
    fn new(sep: char) -> Split {
        Split {
            sep,
            out: Vec::new(),
            field: String::new(),
            at: At::Start,
        }
    }

    fn end_field(&mut self) {
        let field = std::mem::take(&mut self.field);
        self.out.push(match self.at {
            At::Quoted | At::Closed => field,
            At::Start | At::Bare => field.trim().to_string(),
        });
        self.at = At::Start;
    }

    /// Splits one more line; `true` when the record ends with it, `false` when a quoted
    /// field goes on to the next line (the line break is part of the field).
    fn feed(&mut self, line: &str) -> bool {
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (self.at, c) {
                (At::Quoted, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    self.field.push('"');
                }
                (At::Quoted, '"') => self.at = At::Closed,
                (At::Quoted, c) => self.field.push(c),
                (_, c) if c == self.sep => self.end_field(),
                (At::Start, ' ') | (At::Closed, _) => {}
                (At::Start, '"') => self.at = At::Quoted,
                (At::Start | At::Bare, c) => {
                    self.field.push(c);
                    self.at = At::Bare;
                }
            }
        }
        if self.at == At::Quoted {
            self.field.push('\n');
            return false;
        }
        self.end_field();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_RECORD, Records};
    use std::path::Path;

    fn split(text: &str, sep: char) -> Vec<(usize, Result<Vec<String>, String>)> {
        Records::new(text.as_bytes(), Path::new("t.csv"), sep)
            .map(|r| r.unwrap())
            .collect()
    }

    fn fields(r: &[&str]) -> Result<Vec<String>, String> {
        Ok(r.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn quoted_fields_hold_separators_and_quotes() {
        let f = split("  \"a, \"\"b\"\" c\",label , x\n", ',');
        assert_eq!(f, [(1, fields(&["a, \"b\" c", "label", "x"]))]);
        assert_eq!(split("a\tb,c", '\t'), [(1, fields(&["a", "b,c"]))]);
        assert_eq!(split("a,", ','), [(1, fields(&["a", ""]))]);
        // A quote inside an unquoted field is a character like any other.
        assert_eq!(
            split("5\" screen,tv", ','),
            [(1, fields(&["5\" screen", "tv"]))]
        );
    }

    #[test]
    fn a_quoted_field_spans_lines() {
        let text = "text,label\n\"two\nlines, and \"\"quotes\"\"\r\n\n  end\",a\n\nnext,b\r\n";
        let r = split(text, ',');
        assert_eq!(
            r,
            [
                (1, fields(&["text", "label"])),
                (2, fields(&["two\nlines, and \"quotes\"\n\n  end", "a"])),
                (7, fields(&["next", "b"])),
            ]
        );
    }

    #[test]
    fn an_unclosed_quote_is_an_error_naming_the_column() {
        let r = split("a,b\nx,\"open\nmore\n", ',');
        assert_eq!(r[0], (1, fields(&["a", "b"])));
        let (line, e) = (r[1].0, r[1].1.clone().unwrap_err());
        assert_eq!(line, 2);
        assert!(
            e.contains("column 2") && e.contains("does not close"),
            "{e}"
        );
        // A quote left open does not swallow an unbounded file: reading goes on after
        // MAX_RECORD bytes.
        let long = format!("\"{}\nafter,c\n", "x,\n".repeat(MAX_RECORD / 3 + 10));
        let r = split(&long, ',');
        let e = r[0].1.clone().unwrap_err();
        assert!(
            e.contains("column 1") && e.contains("still open after 1024 KiB"),
            "{e}"
        );
        assert_eq!(r.last().unwrap().1, fields(&["after", "c"]));
    }

    #[test]
    fn invalid_utf8_is_an_error_naming_the_line() {
        let bytes: &[u8] = b"text,label\nok,a\n\xff\xfe,b\n";
        let r: Vec<_> = Records::new(bytes, Path::new("t.csv"), ',').collect();
        let e = format!("{:#}", r[2].as_ref().unwrap_err());
        assert!(
            e.contains("t.csv: cannot read line 3") && e.contains("UTF-8"),
            "{e}"
        );
    }
}
