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
//! - **labeled text**, for a text-encoder bundle converted with a tokenizer: a CSV or
//!   TSV file with text and label columns, a JSON lines file, or class folders of `.txt`
//!   files with one sample per line (`text.rs`). Texts are tokenized as they are read.
//!
//! Nothing is decoded here: images are read, hashed, and decoded later by the embedding
//! step, which reports a file it cannot decode as skipped (or refuses it with
//! `--strict`). [`clean`] then drops exact duplicates (same content, same label; the
//! first is kept) and every copy of a sample found under two labels, and [`split`] makes
//! a stratified train/validation/test split with a seed unless the folders gave one.
//!
//! Files: the sample types and [`load`] here; `folders.rs` (folders of files, a labels
//! CSV), `table.rs` (one CSV file), `text.rs` (labeled text), `clean.rs` ([`clean`],
//! [`split`]).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use edgetune::bundle::{Layout, Manifest};
use edgetune::text::TextTokenizer;
use sha2::{Digest, Sha256};

use crate::report::Skipped;

mod clean;
mod folders;
mod table;
mod text;

pub use clean::{Cleaned, class_names, clean, split};
use folders::{read_class_folders, read_labeled_folder};
use table::read_csv;
pub use text::ids_hash;
pub(crate) use text::read_text;

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
    /// A text and its token ids (the bundle's tokenizer, truncated to its sequence
    /// length).
    Text {
        /// The text as read.
        text: String,
        /// Its token ids.
        ids: Vec<i64>,
    },
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
    /// Labeled text.
    Text,
}

impl Kind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Images => "images",
            Kind::Npy => "npy",
            Kind::Csv => "csv",
            Kind::Mixed => "images+npy",
            Kind::Text => "text",
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

/// Reads the data set at `data` (see the [module documentation](self)) for the bundle
/// whose manifest is `manifest`, `sample_len` values per sample (its raw input).
pub fn load(
    data: &Path,
    manifest: &Manifest,
    sample_len: usize,
    opts: &LoadOptions,
) -> Result<Loaded> {
    let input = &manifest.input;
    let meta = fs::metadata(data).with_context(|| format!("cannot read {}", data.display()))?;
    let mut skipped = Vec::new();
    let mut loaded = if input.layout == Layout::Tokens {
        ensure!(
            opts.labels.is_none(),
            "--labels is for folders of images or tensors; text data carries its labels"
        );
        let tok = TextTokenizer::from_manifest(manifest)?;
        text::read_text(data, &tok, opts, &mut skipped)?
    } else if meta.is_file() {
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

#[cfg(test)]
mod tests;
