//! A data set in one CSV file (`.csv`, `.csv.gz`): one sample per row, numeric values
//! and a label column found by header name or index.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};

use super::{Input, Item, LoadOptions, skip, tensor_hash};
use crate::csv;
use crate::report::Skipped;

/// Header names taken as the label column.
const LABEL_NAMES: [&str; 4] = ["label", "class", "target", "y"];

pub(super) fn read_csv(
    path: &Path,
    sample_len: usize,
    opts: &LoadOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut label_at: Option<usize> = None;
    let mut width = None;
    let mut first = true;
    for line in csv::lines(path)? {
        let (n, line) = line?;
        let at = format!("{}:{n}", path.display());
        let f = csv::fields(&line, true);
        if first {
            first = false;
            // A header: some field other than a label is not a number.
            let numeric = f.iter().filter(|v| v.parse::<f32>().is_ok()).count();
            if numeric + 1 < f.len() {
                label_at = Some(match &opts.label_column {
                    Some(c) => match c.parse::<usize>() {
                        Ok(i) if i < f.len() => i,
                        Ok(i) => bail!(
                            "{at}: --label-column {i} but the header has {} columns",
                            f.len()
                        ),
                        Err(_) => f.iter().position(|h| h == c).with_context(|| {
                            format!(
                                "{at}: no column {c:?} in the header (it has {})",
                                f.join(", ")
                            )
                        })?,
                    },
                    None => f
                        .iter()
                        .position(|h| LABEL_NAMES.contains(&h.to_ascii_lowercase().as_str()))
                        .unwrap_or(f.len() - 1),
                });
                width = Some(f.len());
                continue;
            }
            label_at = Some(match &opts.label_column {
                Some(c) => match c.parse::<usize>() {
                    Ok(i) if i < f.len() => i,
                    _ => bail!(
                        "{at}: the file has no header, so --label-column must be a column index below {}",
                        f.len()
                    ),
                },
                None => f.len() - 1,
            });
        }
        let label_at = label_at.expect("set on the first row");
        let width = *width.get_or_insert(f.len());
        if f.len() != width {
            skip(
                skipped,
                opts.strict,
                at,
                format!("{} columns, the first row has {width}", f.len()),
            )?;
            continue;
        }
        let label = f[label_at];
        if label.is_empty() {
            skip(skipped, opts.strict, at, "empty label".into())?;
            continue;
        }
        let mut values = Vec::with_capacity(f.len() - 1);
        let mut bad = None;
        for (i, v) in f.iter().enumerate() {
            if i == label_at {
                continue;
            }
            match v.parse::<f32>() {
                Ok(x) if x.is_finite() => values.push(x),
                _ => {
                    bad = Some(format!("column {} ({v:?}) is not a finite number", i + 1));
                    break;
                }
            }
        }
        if let Some(why) = bad {
            skip(skipped, opts.strict, at, why)?;
            continue;
        }
        ensure!(
            values.len() == sample_len,
            "{at}: {} values per row, the bundle's input takes {sample_len}",
            values.len()
        );
        items.push(Item {
            origin: at,
            label: label.to_string(),
            hash: tensor_hash(&values),
            input: Input::Tensor(values),
            split: None,
        });
    }
    Ok(items)
}
