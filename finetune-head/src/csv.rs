//! The one CSV reader of `finetune-head`, for feature tables ([`crate::data`]) and
//! data sets ([`crate::dataset`]): a plain or gzipped file, its non-empty lines with
//! their numbers, and a line's fields: [`fields`] without quoting (the numeric files have
//! none), [`quoted_fields`] with RFC 4180 quoting and any separator (text tables, where
//! a sentence holds commas; a quoted field does not span lines).

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

/// Splits one line at `sep` (`,` or a tab), RFC 4180 style: a field in double quotes may
/// hold the separator, and `""` inside it is one quote. Unquoted fields are trimmed. An
/// unterminated quote is an error naming the column.
pub fn quoted_fields(line: &str, sep: char) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => {
                        return Err(format!(
                            "column {} opens a quote that the line does not close",
                            out.len() + 1
                        ));
                    }
                }
            }
            while chars.peek().is_some_and(|&c| c != sep) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek().filter(|&&c| c != sep) {
                field.push(c);
                chars.next();
            }
            field = field.trim().to_string();
        }
        out.push(field);
        if chars.next().is_none() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::quoted_fields;

    #[test]
    fn quoted_fields_hold_separators_and_quotes() {
        let f = quoted_fields(r#"  "a, ""b"" c",label , x"#, ',').unwrap();
        assert_eq!(f, ["a, \"b\" c", "label", "x"]);
        assert_eq!(quoted_fields("a\tb,c", '\t').unwrap(), ["a", "b,c"]);
        assert_eq!(quoted_fields("a,", ',').unwrap(), ["a", ""]);
        let e = quoted_fields(r#"x,"open"#, ',').unwrap_err();
        assert!(e.contains("column 2"), "{e}");
    }
}
