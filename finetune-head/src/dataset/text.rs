//! Labeled text for a text-encoder bundle, tokenized at once with the bundle's tokenizer
//! ([`edgetune::text`]), so duplicates, conflicts and the embedding cache all go by the
//! token ids (two texts the tokenizer makes equal are one sample). One of:
//!
//! - **a CSV or TSV file** (`.csv`, `.tsv`, optionally `.gz`): a header row naming a text
//!   column (`text`, `sentence`, `utterance`, `message`, `content`) and a label column
//!   (`--label-column NAME|INDEX`, default `label`, `class`, `target`, `y` or `intent`);
//!   without such a header, the first column is the text and the last the label. Fields
//!   may be quoted (RFC 4180), and a quoted field may span lines (a sample's origin is
//!   the line it starts on).
//! - **a JSON lines file** (`.jsonl`, `.ndjson`): one object per line with `"text"` and
//!   `"label"` (a string or a number).
//! - **a folder of class folders of `.txt` files**: `DATA/<class>/*.txt`, **one sample per
//!   non-empty line** (a file of one paragraph is one sample; split long documents
//!   yourself).
//!
//! An empty text or a malformed row is skipped and listed (refused with `--strict`).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use edgetune::text::TextTokenizer;
use serde_json::Value;

use super::{Input, Item, Kind, LoadOptions, Loaded, sha256, skip};
use crate::csv;
use crate::report::Skipped;

/// Header names taken as the text column.
const TEXT_NAMES: [&str; 5] = ["text", "sentence", "utterance", "message", "content"];
/// Header names taken as the label column.
const LABEL_NAMES: [&str; 5] = ["label", "class", "target", "y", "intent"];

/// The content hash of a text sample: its token ids.
pub fn ids_hash(ids: &[i64]) -> super::Hash {
    let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    sha256(&[b"tokens", &bytes])
}

/// Reads labeled text at `data` (a file or a folder), tokenized with `tok`.
pub(crate) fn read_text(
    data: &Path,
    tok: &TextTokenizer,
    opts: &LoadOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<Loaded> {
    let mut rows: Vec<(String, String, String)> = Vec::new(); // origin, text, label
    if data.is_dir() {
        read_folders(data, opts, skipped, &mut rows)?;
    } else {
        let name = data.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        if name.ends_with(".csv") || name.ends_with(".tsv") {
            let sep = if name.ends_with(".tsv") { '\t' } else { ',' };
            read_table(data, sep, opts, skipped, &mut rows)?;
        } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
            read_jsonl(data, opts, skipped, &mut rows)?;
        } else {
            bail!(
                "{}: text data is a CSV or TSV file (text and label columns), a JSON lines \
                 file (.jsonl), or a folder of class folders of .txt files",
                data.display()
            );
        }
    }
    let found = rows.len() + skipped.len();
    let mut items = Vec::with_capacity(rows.len());
    for (origin, text, label) in rows {
        match tok.encode(&text) {
            Ok(t) => items.push(Item {
                origin,
                label,
                hash: ids_hash(&t.ids),
                input: Input::Text { text, ids: t.ids },
                split: None,
            }),
            Err(e) => skip(skipped, opts.strict, origin, e.to_string())?,
        }
    }
    Ok(Loaded {
        items,
        kind: Kind::Text,
        found,
        skipped: Vec::new(),
        folder_split: false,
    })
}

/// The column named by `--label-column` (a name or an index) in `header`.
fn label_column(header: &[String], opts: &LoadOptions, at: &str) -> Result<Option<usize>> {
    Ok(match &opts.label_column {
        Some(c) => Some(match c.parse::<usize>() {
            Ok(i) if i < header.len() => i,
            Ok(i) => bail!(
                "{at}: --label-column {i} but the row has {} columns",
                header.len()
            ),
            Err(_) => header.iter().position(|h| h == c).with_context(|| {
                format!(
                    "{at}: no column {c:?} in the header ({})",
                    header.join(", ")
                )
            })?,
        }),
        None => header
            .iter()
            .position(|h| LABEL_NAMES.contains(&h.to_ascii_lowercase().as_str())),
    })
}

fn read_table(
    path: &Path,
    sep: char,
    opts: &LoadOptions,
    skipped: &mut Vec<Skipped>,
    rows: &mut Vec<(String, String, String)>,
) -> Result<()> {
    let mut columns: Option<(usize, usize)> = None;
    for record in csv::records(path, sep)? {
        let (n, record) = record?;
        let at = format!("{}:{n}", path.display());
        let f = match record {
            Ok(f) => f,
            Err(e) => {
                skip(skipped, opts.strict, at, e)?;
                continue;
            }
        };
        let (text_at, label_at) = match columns {
            Some(c) => c,
            None => {
                if f.len() < 2 {
                    bail!("{at}: a text table needs a text column and a label column");
                }
                let text_at = f
                    .iter()
                    .position(|h| TEXT_NAMES.contains(&h.to_ascii_lowercase().as_str()));
                let label_at = label_column(&f, opts, &at)?;
                let header = text_at.is_some();
                let c = (text_at.unwrap_or(0), label_at.unwrap_or(f.len() - 1));
                if c.0 == c.1 {
                    bail!("{at}: the text and the label are the same column ({})", c.0);
                }
                columns = Some(c);
                if header {
                    continue;
                }
                c
            }
        };
        match (f.get(text_at), f.get(label_at)) {
            (Some(t), Some(l)) if !l.is_empty() => rows.push((at, t.clone(), l.clone())),
            _ => skip(
                skipped,
                opts.strict,
                at,
                format!(
                    "no text in column {} or no label in column {}",
                    text_at + 1,
                    label_at + 1
                ),
            )?,
        }
    }
    Ok(())
}

fn read_jsonl(
    path: &Path,
    opts: &LoadOptions,
    skipped: &mut Vec<Skipped>,
    rows: &mut Vec<(String, String, String)>,
) -> Result<()> {
    for line in csv::lines(path)? {
        let (n, line) = line?;
        let at = format!("{}:{n}", path.display());
        let row: Result<(String, String), String> = serde_json::from_str::<Value>(&line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|v| {
                let text = v["text"].as_str().ok_or("no \"text\" string")?.to_string();
                let label = match &v["label"] {
                    Value::String(s) if !s.is_empty() => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err("no \"label\" (a string or a number)".to_string()),
                };
                Ok((text, label))
            });
        match row {
            Ok((text, label)) => rows.push((at, text, label)),
            Err(e) => skip(skipped, opts.strict, at, e)?,
        }
    }
    Ok(())
}

fn read_folders(
    data: &Path,
    opts: &LoadOptions,
    skipped: &mut Vec<Skipped>,
    rows: &mut Vec<(String, String, String)>,
) -> Result<()> {
    for (class, dir, is_dir) in super::folders::entries(data)? {
        if !is_dir {
            continue;
        }
        for (name, path, is_dir) in super::folders::entries(&dir)? {
            if is_dir || !name.to_ascii_lowercase().ends_with(".txt") {
                continue;
            }
            let shown = path.display().to_string();
            let content = match fs::read(&path).map(String::from_utf8) {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    skip(skipped, opts.strict, shown, format!("not UTF-8 text: {e}"))?;
                    continue;
                }
                Err(e) => {
                    skip(skipped, opts.strict, shown, format!("cannot be read: {e}"))?;
                    continue;
                }
            };
            for (n, line) in content.lines().enumerate() {
                if !line.trim().is_empty() {
                    rows.push((
                        format!("{shown}:{}", n + 1),
                        line.to_string(),
                        class.clone(),
                    ));
                }
            }
        }
    }
    if rows.is_empty() {
        bail!(
            "{} has no class folders of .txt files (one sample per line)",
            data.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgetune_testkit as testkit;

    fn tokenizer() -> TextTokenizer {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/text/tokenizer.json");
        TextTokenizer::from_json(&fs::read_to_string(file).unwrap(), 64).unwrap()
    }

    fn read(data: &Path) -> (Result<Loaded>, Vec<Skipped>) {
        let mut skipped = Vec::new();
        let loaded = read_text(data, &tokenizer(), &LoadOptions::default(), &mut skipped);
        (loaded, skipped)
    }

    #[test]
    fn a_quoted_text_spans_lines_and_an_unclosed_quote_is_skipped() {
        let csv = "text,label\n\"turn on\nthe lights\",lights\nplay music,music\n\
                   \"stop, \"\"now\"\"\nplease\",timer\nx,\"open\n";
        let data = testkit::file("text-csv-lines", "t.csv", csv.as_bytes());
        let (loaded, skipped) = read(&data);
        let loaded = loaded.unwrap();
        let rows: Vec<_> = loaded
            .items
            .iter()
            .map(|i| match &i.input {
                Input::Text { text, .. } => (i.origin.rsplit(':').next().unwrap(), text.as_str()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("2", "turn on\nthe lights"),
                ("4", "play music"),
                ("5", "stop, \"now\"\nplease"),
            ]
        );
        // The line break is whitespace to the tokenizer.
        assert_eq!(
            tokenizer().encode("turn on\nthe lights").unwrap().ids,
            tokenizer().encode("turn on the lights").unwrap().ids
        );
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(skipped[0].path.ends_with("t.csv:7"), "{skipped:?}");
        assert!(skipped[0].reason.contains("column 2"), "{skipped:?}");
    }

    #[test]
    fn text_that_is_not_utf8_is_a_clear_error() {
        // A class folder's file: skipped and listed.
        let dir = testkit::scratch("text-utf8-folders");
        testkit::file("text-utf8-folders", "a/ok.txt", b"turn on the lights\n");
        testkit::file("text-utf8-folders", "b/bad.txt", b"caf\xe9 music\n");
        let (loaded, skipped) = read(&dir);
        assert_eq!(loaded.unwrap().items.len(), 1);
        assert!(skipped[0].path.ends_with("bad.txt"), "{skipped:?}");
        assert!(skipped[0].reason.contains("not UTF-8 text"), "{skipped:?}");
        // A table or a JSON lines file: an error naming the file and the line.
        for (name, bytes) in [
            ("t.csv", &b"text,label\nok,a\ncaf\xe9,b\n"[..]),
            (
                "t.jsonl",
                &b"{\"text\": \"ok\", \"label\": \"a\"}\n{\"text\": \"caf\xe9\"}\n"[..],
            ),
        ] {
            let data = testkit::file("text-utf8-files", name, bytes);
            let e = format!("{:#}", read(&data).0.unwrap_err());
            assert!(e.contains(name) && e.contains("cannot read line"), "{e}");
            assert!(e.contains("UTF-8"), "{e}");
        }
    }
}
