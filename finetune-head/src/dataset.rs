//! A labeled data set for `train` and `eval`: found, cleaned and split.
//!
//! [`load`] reads one of:
//!
//! - **a folder of class folders**: `DATA/<class>/<file>`, where a file is an image
//!   (`.png`, `.jpg`, `.jpeg`) or a `.npy` array (one sample, or a batch `[N, ...]`, in
//!   the backbone's raw input units; see [`crate::calib`]). Class names are the folder
//!   names.
//! - **a split given by folders**: `DATA/train/<class>/…`, `DATA/val/<class>/…` (or
//!   `validation/`) and `DATA/test/<class>/…`.
//! - **a folder of files and a labels CSV** (`--labels FILE`): rows `path,label`, paths
//!   relative to `DATA`; an optional header row (`path,label` or `file,label`…). Rows that
//!   name no file or are malformed are skipped and listed.
//! - **a CSV file** (`.csv`, `.csv.gz`): one sample per row, numeric values and a label
//!   column (by `--label-column NAME|INDEX`; default a header column named `label`,
//!   `class`, `target` or `y`, else the last column). The values are the backbone's raw
//!   input, or the features themselves for a bundle without a backbone.
//!
//! Nothing is decoded here: images are read, hashed, and decoded later by the embedding
//! step, which reports a file it cannot decode as skipped (or refuses it with
//! `--strict`). [`clean`] then drops exact duplicates (same content, same label; the
//! first is kept) and every copy of a sample found under two labels, and [`split`] makes
//! a stratified train/validation/test split with a seed unless the folders gave one.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use edgetune::bundle::InputSpec;
use edgetune::rng::Rng;
use sha2::{Digest, Sha256};

use crate::calib::IMAGE_EXTENSIONS;
use crate::report::{Conflict, DuplicateGroup, Skipped};
use edgetune::npy::read_npy;

/// A content hash (SHA-256).
pub type Hash = [u8; 32];

/// Which part of the data a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// Training.
    Train,
    /// Validation: early stopping and the search's score.
    Val,
    /// Test: scored once at the end.
    Test,
}

/// What a sample is before the backbone sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// An image file, decoded when embedded.
    Image(PathBuf),
    /// A raw input tensor (or a feature vector for a bundle without backbone).
    Tensor(Vec<f32>),
}

/// One labeled sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Where it came from: a path, `path:line` or `path[i]`.
    pub origin: String,
    /// Its class name.
    pub label: String,
    /// Hash of its content (the file's bytes, or the tensor's values).
    pub hash: Hash,
    /// The sample.
    pub input: Input,
    /// The split the folders gave, if they did.
    pub split: Option<Split>,
}

/// What kind of files the data set is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Images.
    Images,
    /// `.npy` arrays.
    Npy,
    /// Rows of a CSV file.
    Csv,
    /// Images and `.npy` arrays.
    Mixed,
}

impl Kind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Images => "images",
            Kind::Npy => "npy",
            Kind::Csv => "csv",
            Kind::Mixed => "images+npy",
        }
    }
}

/// How to read the data.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// A CSV of `path,label` rows for a folder of files.
    pub labels: Option<PathBuf>,
    /// The label column of a CSV data file: a header name or a 0-based index.
    pub label_column: Option<String>,
    /// Refuse, instead of skipping, anything unreadable or malformed.
    pub strict: bool,
}

/// A data set as found on disk.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The samples, in a deterministic order (by path, then row).
    pub items: Vec<Item>,
    /// What they are.
    pub kind: Kind,
    /// Samples found, including the skipped ones.
    pub found: usize,
    /// What was skipped and why.
    pub skipped: Vec<Skipped>,
    /// True when the folders gave the split.
    pub folder_split: bool,
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The content hash of a tensor sample.
pub fn tensor_hash(values: &[f32]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"tensor");
    for v in values {
        h.update(v.to_le_bytes());
    }
    h.finalize().into()
}

/// Reads the data set at `data` (see the [module documentation](self)) for a backbone
/// whose raw input is `input`, `sample_len` values per sample.
pub fn load(
    data: &Path,
    input: &InputSpec,
    sample_len: usize,
    opts: &LoadOptions,
) -> Result<Loaded> {
    let meta = fs::metadata(data).with_context(|| format!("cannot read {}", data.display()))?;
    let mut skipped = Vec::new();
    let mut loaded = if meta.is_file() {
        ensure!(
            opts.labels.is_none(),
            "--labels goes with a folder of files; {} is a file",
            data.display()
        );
        let name = data.to_string_lossy().to_ascii_lowercase();
        ensure!(
            name.ends_with(".csv") || name.ends_with(".csv.gz"),
            "{}: a data file must be a CSV (.csv or .csv.gz); images and .npy files go in \
             one folder per class",
            data.display()
        );
        let items = read_csv(data, sample_len, opts, &mut skipped)?;
        Loaded {
            found: items.len() + skipped.len(),
            items,
            kind: Kind::Csv,
            skipped: Vec::new(),
            folder_split: false,
        }
    } else if let Some(labels) = &opts.labels {
        read_labeled_folder(data, labels, input, sample_len, opts, &mut skipped)?
    } else {
        read_class_folders(data, input, sample_len, opts, &mut skipped)?
    };
    loaded.skipped = skipped;
    ensure!(
        !loaded.items.is_empty(),
        "{} holds no usable samples{}",
        data.display(),
        if loaded.skipped.is_empty() {
            String::new()
        } else {
            format!(
                " ({} skipped, e.g. {}: {})",
                loaded.skipped.len(),
                loaded.skipped[0].path,
                loaded.skipped[0].reason
            )
        }
    );
    Ok(loaded)
}

/// Skips `path` for `reason`, or fails under `--strict`.
fn skip(skipped: &mut Vec<Skipped>, strict: bool, path: String, reason: String) -> Result<()> {
    if strict {
        bail!("{path}: {reason} (--strict refuses it; without --strict it is skipped and listed)");
    }
    log::warn!("skipping {path}: {reason}");
    skipped.push(Skipped { path, reason });
    Ok(())
}

/// The file kind of `path` by extension: image, `.npy`, or neither.
fn file_kind(path: &Path) -> Option<Kind> {
    let e = path.extension()?.to_str()?.to_ascii_lowercase();
    if e == "npy" {
        Some(Kind::Npy)
    } else if IMAGE_EXTENSIONS.contains(&e.as_str()) {
        Some(Kind::Images)
    } else {
        None
    }
}

/// Sorted entries of `dir` (hidden ones left out): (name, path, is_dir).
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let cannot = || format!("cannot read the folder {}", dir.display());
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(cannot)? {
        let e = e.with_context(cannot)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let is_dir = fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
        out.push((name, e.path(), is_dir));
    }
    out.sort();
    Ok(out)
}

/// The samples in one file: an image (hashed, decoded later) or a `.npy` array.
#[allow(clippy::too_many_arguments)]
fn read_file(
    path: &Path,
    kind: Kind,
    label: &str,
    split: Option<Split>,
    input: &InputSpec,
    sample_len: usize,
    opts: &LoadOptions,
    skipped: &mut Vec<Skipped>,
    out: &mut Vec<Item>,
) -> Result<()> {
    let shown = path.display().to_string();
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) => return skip(skipped, opts.strict, shown, format!("cannot be read: {e}")),
    };
    match kind {
        Kind::Npy => match read_npy(path, &bytes, input, sample_len, usize::MAX) {
            Ok(samples) => {
                let many = samples.len() > 1;
                for (i, s) in samples.into_iter().enumerate() {
                    out.push(Item {
                        origin: if many {
                            format!("{shown}[{i}]")
                        } else {
                            shown.clone()
                        },
                        label: label.to_string(),
                        hash: tensor_hash(&s),
                        input: Input::Tensor(s),
                        split,
                    });
                }
            }
            Err(e) => skip(skipped, opts.strict, shown, format!("{e:#}"))?,
        },
        _ => out.push(Item {
            origin: shown,
            label: label.to_string(),
            hash: sha256(&[b"file", &bytes]),
            input: Input::Image(path.to_path_buf()),
            split,
        }),
    }
    Ok(())
}

fn kind_of(items: &[Item]) -> Kind {
    let images = items.iter().any(|i| matches!(i.input, Input::Image(_)));
    let tensors = items.iter().any(|i| matches!(i.input, Input::Tensor(_)));
    match (images, tensors) {
        (true, true) => Kind::Mixed,
        (false, true) => Kind::Npy,
        _ => Kind::Images,
    }
}

fn split_folder(name: &str) -> Option<Split> {
    match name {
        "train" => Some(Split::Train),
        "val" | "validation" => Some(Split::Val),
        "test" => Some(Split::Test),
        _ => None,
    }
}

fn read_class_folders(
    data: &Path,
    input: &InputSpec,
    sample_len: usize,
    opts: &LoadOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<Loaded> {
    let top = entries(data)?;
    let dirs: Vec<_> = top.iter().filter(|e| e.2).collect();
    let splits: Vec<_> = dirs
        .iter()
        .filter_map(|e| split_folder(&e.0).map(|s| (s, e)))
        .collect();
    let mut items = Vec::new();
    let folder_split = !splits.is_empty();
    let roots: Vec<(Option<Split>, &Path)> = if folder_split {
        for needed in [Split::Train, Split::Val, Split::Test] {
            ensure!(
                splits.iter().any(|(s, _)| *s == needed),
                "{}: a split given by folders needs train/, val/ (or validation/) and test/, \
                 each with one folder per class; {} is missing",
                data.display(),
                match needed {
                    Split::Train => "train/",
                    Split::Val => "val/",
                    Split::Test => "test/",
                }
            );
        }
        splits
            .iter()
            .map(|(s, e)| (Some(*s), e.1.as_path()))
            .collect()
    } else {
        vec![(None, data)]
    };
    for (split, root) in roots {
        let classes: Vec<_> = entries(root)?.into_iter().filter(|e| e.2).collect();
        if classes.is_empty() {
            let files = entries(root)?.len();
            bail!(
                "{} has no class folders{}: put each class's samples in a folder named after \
                 the class (or give a CSV file, or --labels FILE)",
                root.display(),
                if files > 0 {
                    format!(" ({files} files directly in it)")
                } else {
                    " (it is empty)".into()
                }
            );
        }
        for (class, dir, _) in classes {
            let mut n = 0;
            for (_, path, is_dir) in entries(&dir)? {
                if is_dir {
                    continue;
                }
                let Some(kind) = file_kind(&path) else {
                    continue;
                };
                n += 1;
                read_file(
                    &path, kind, &class, split, input, sample_len, opts, skipped, &mut items,
                )?;
            }
            ensure!(
                n > 0,
                "class {class:?} ({}) is empty: no .png, .jpg, .jpeg or .npy files",
                dir.display()
            );
        }
    }
    Ok(Loaded {
        found: items.len() + skipped.len(),
        kind: kind_of(&items),
        items,
        skipped: Vec::new(),
        folder_split,
    })
}

/// Splits one CSV line into fields (no quoting: the numeric files and path lists this
/// reads have none; a quoted field keeps its quotes stripped).
fn fields(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|f| f.trim().trim_matches('"'))
        .collect()
}

fn read_labeled_folder(
    data: &Path,
    labels: &Path,
    input: &InputSpec,
    sample_len: usize,
    opts: &LoadOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<Loaded> {
    let text = fs::read_to_string(labels)
        .with_context(|| format!("cannot read the labels file {}", labels.display()))?;
    let mut items = Vec::new();
    let mut rows = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = format!("{}:{}", labels.display(), n + 1);
        let f = fields(line);
        if n == 0
            && f.len() == 2
            && ["path", "file", "filename", "image"].contains(&f[0].to_ascii_lowercase().as_str())
        {
            continue;
        }
        rows += 1;
        if f.len() != 2 || f[0].is_empty() || f[1].is_empty() {
            skip(
                skipped,
                opts.strict,
                at,
                format!("expected `path,label`, found {line:?}"),
            )?;
            continue;
        }
        let path = data.join(f[0]);
        let Some(kind) = file_kind(&path) else {
            skip(
                skipped,
                opts.strict,
                at,
                format!("{} is not a .png, .jpg, .jpeg or .npy file", f[0]),
            )?;
            continue;
        };
        if !path.is_file() {
            skip(
                skipped,
                opts.strict,
                at,
                format!("no file {} in {}", f[0], data.display()),
            )?;
            continue;
        }
        read_file(
            &path, kind, f[1], None, input, sample_len, opts, skipped, &mut items,
        )?;
    }
    ensure!(rows > 0, "the labels file {} has no rows", labels.display());
    Ok(Loaded {
        found: items.len() + skipped.len(),
        kind: kind_of(&items),
        items,
        skipped: Vec::new(),
        folder_split: false,
    })
}

/// Header names taken as the label column.
const LABEL_NAMES: [&str; 4] = ["label", "class", "target", "y"];

fn read_csv(
    path: &Path,
    sample_len: usize,
    opts: &LoadOptions,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<Item>> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader: Box<dyn Read> = if path.to_string_lossy().to_ascii_lowercase().ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut items = Vec::new();
    let mut label_at: Option<usize> = None;
    let mut width = None;
    let mut first = true;
    for (n, line) in BufReader::new(reader).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}: cannot read line {}", path.display(), n + 1))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = format!("{}:{}", path.display(), n + 1);
        let f = fields(line);
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

/// The class names in `items`, sorted (numerically when every name is an integer).
pub fn class_names(items: &[Item]) -> Vec<String> {
    let mut names: Vec<String> = items.iter().map(|i| i.label.clone()).collect();
    names.sort();
    names.dedup();
    if names.iter().all(|n| n.parse::<i64>().is_ok()) {
        names.sort_by_key(|n| n.parse::<i64>().unwrap_or(0));
    }
    names
}

/// What [`clean`] dropped.
#[derive(Debug, Clone, Default)]
pub struct Cleaned {
    /// Exact duplicates under one label: the first kept, the others dropped.
    pub duplicates: Vec<DuplicateGroup>,
    /// Samples found under two or more labels: every copy dropped.
    pub conflicts: Vec<Conflict>,
}

/// Drops exact duplicates (keeping the first, with a folder split the one in the earliest
/// split: train, then validation, then test, so a test sample never repeats a training
/// one) and every copy of a sample labeled two ways.
pub fn clean(items: Vec<Item>) -> (Vec<Item>, Cleaned) {
    let mut by_hash: HashMap<Hash, Vec<usize>> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        by_hash.entry(it.hash).or_default().push(i);
    }
    let mut drop = vec![false; items.len()];
    let mut report = Cleaned::default();
    let mut groups: Vec<&Vec<usize>> = by_hash.values().filter(|g| g.len() > 1).collect();
    groups.sort();
    for g in groups {
        let labels: BTreeMap<&str, ()> = g.iter().map(|&i| (items[i].label.as_str(), ())).collect();
        if labels.len() > 1 {
            for &i in g {
                drop[i] = true;
            }
            report.conflicts.push(Conflict {
                items: g
                    .iter()
                    .map(|&i| (items[i].origin.clone(), items[i].label.clone()))
                    .collect(),
            });
        } else {
            let mut g = g.clone();
            g.sort_by_key(|&i| (items[i].split, i));
            for &i in &g[1..] {
                drop[i] = true;
            }
            report.duplicates.push(DuplicateGroup {
                label: items[g[0]].label.clone(),
                kept: items[g[0]].origin.clone(),
                dropped: g[1..].iter().map(|&i| items[i].origin.clone()).collect(),
            });
        }
    }
    let kept = items
        .into_iter()
        .zip(drop)
        .filter(|(_, d)| !d)
        .map(|(i, _)| i)
        .collect();
    (kept, report)
}

/// Assigns a split to every item that has none: per class, shuffled with `seed`, a
/// `test` fraction to test and a `val` fraction to validation (each at least one sample),
/// the rest to training. Errors name a class with too few samples for the split.
pub fn split(items: &mut [Item], classes: &[String], val: f32, test: f32, seed: u64) -> Result<()> {
    ensure!(
        (0.0..1.0).contains(&val)
            && (0.0..1.0).contains(&test)
            && val + test < 1.0
            && val > 0.0
            && test > 0.0,
        "--val and --test must be fractions above 0 whose sum is below 1 (got {val} and {test})"
    );
    if items.iter().all(|i| i.split.is_some()) {
        for c in classes {
            let n = items
                .iter()
                .filter(|i| &i.label == c && i.split == Some(Split::Train))
                .count();
            ensure!(n > 0, "class {c:?} has no training sample in train/");
        }
        return Ok(());
    }
    let mut rng = Rng::new(seed);
    for c in classes {
        let mut idx: Vec<usize> = (0..items.len()).filter(|&i| &items[i].label == c).collect();
        ensure!(
            idx.len() >= 3,
            "class {c:?} has {} sample{} after cleaning; a stratified train/validation/test \
             split needs at least 3 per class (add samples, or give the split by folders)",
            idx.len(),
            if idx.len() == 1 { "" } else { "s" }
        );
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i + 1));
        }
        let n = idx.len() as f32;
        // At least one sample in each part (3 or more in the class).
        let n_test = ((n * test).round() as usize).clamp(1, idx.len() - 2);
        let n_val = ((n * val).round() as usize).clamp(1, idx.len() - n_test - 1);
        for (k, &i) in idx.iter().enumerate() {
            items[i].split = Some(if k < n_test {
                Split::Test
            } else if k < n_test + n_val {
                Split::Val
            } else {
                Split::Train
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(origin: &str, label: &str, content: &[u8]) -> Item {
        Item {
            origin: origin.into(),
            label: label.into(),
            hash: sha256(&[content]),
            input: Input::Tensor(vec![]),
            split: None,
        }
    }

    #[test]
    fn clean_drops_duplicates_and_conflicts() {
        let items = vec![
            item("a1", "a", b"x"),
            item("a2", "a", b"x"),
            item("b1", "b", b"y"),
            item("a3", "a", b"y"),
            item("a4", "a", b"z"),
        ];
        let (kept, report) = clean(items);
        let kept: Vec<_> = kept.iter().map(|i| i.origin.as_str()).collect();
        assert_eq!(kept, ["a1", "a4"]);
        assert_eq!(report.duplicates.len(), 1);
        assert_eq!(report.duplicates[0].kept, "a1");
        assert_eq!(report.duplicates[0].dropped, ["a2"]);
        assert_eq!(report.conflicts.len(), 1);
        assert_eq!(report.conflicts[0].items.len(), 2);
    }

    #[test]
    fn split_is_stratified_deterministic_and_names_small_classes() {
        let mut items: Vec<Item> = (0..100)
            .map(|i| {
                item(
                    &i.to_string(),
                    if i < 80 { "big" } else { "small" },
                    &[i as u8],
                )
            })
            .collect();
        let classes = class_names(&items);
        split(&mut items, &classes, 0.15, 0.15, 7).unwrap();
        let count = |l: &str, s| {
            items
                .iter()
                .filter(|i| i.label == l && i.split == Some(s))
                .count()
        };
        assert_eq!(
            (
                count("big", Split::Test),
                count("big", Split::Val),
                count("big", Split::Train)
            ),
            (12, 12, 56)
        );
        assert_eq!(
            (count("small", Split::Test), count("small", Split::Val)),
            (3, 3)
        );
        let again = {
            let mut it = items.clone();
            it.iter_mut().for_each(|i| i.split = None);
            split(&mut it, &classes, 0.15, 0.15, 7).unwrap();
            it
        };
        assert_eq!(again, items);
        // Extreme fractions still leave every part a sample.
        let mut three: Vec<Item> = (0..3)
            .map(|i| item(&i.to_string(), "c", &[i as u8]))
            .collect();
        split(&mut three, &["c".into()], 0.05, 0.9, 1).unwrap();
        for s in [Split::Train, Split::Val, Split::Test] {
            assert_eq!(three.iter().filter(|i| i.split == Some(s)).count(), 1);
        }
        let mut two = vec![item("x", "lonely", b"1"), item("y", "lonely", b"2")];
        let err = split(&mut two, &["lonely".into()], 0.15, 0.15, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("class \"lonely\" has 2 samples"), "{err}");
    }

    #[test]
    fn numeric_class_names_sort_as_numbers() {
        let items = [item("", "10", b""), item("", "9", b""), item("", "2", b"")];
        assert_eq!(class_names(&items), ["2", "9", "10"]);
    }
}
