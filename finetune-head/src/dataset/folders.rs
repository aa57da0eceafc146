//! Data sets of files: a folder of class folders (with or without a split given by
//! `train/`, `val/`, `test/` folders), or a folder of files with a labels CSV.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use edgetune::bundle::InputSpec;
use edgetune::npy::read_npy;

use super::{Input, Item, Kind, LoadOptions, Loaded, Split, sha256, skip, tensor_hash};
use crate::calib::IMAGE_EXTENSIONS;
use crate::csv;
use crate::report::Skipped;

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
pub(super) fn entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
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

pub(super) fn read_class_folders(
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

pub(super) fn read_labeled_folder(
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
        let f = csv::fields(line, true);
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
