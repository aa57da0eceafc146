//! [`Options`] of a training run and [`prepare`]: the data loaded, cleaned, embedded
//! once with the bundle's backbone, split, and the training images augmented.

use std::path::PathBuf;

use anyhow::{Result, bail, ensure};
use edgetune::bundle::{BackboneFormat, Bundle};

use super::{Embedded, HeadConfig};
use crate::augment::Augment;
use crate::dataset::{self, Item, LoadOptions, Split};
use crate::embed::{self, Embedder, Job};
use crate::report::{ClassCount, DataSummary, EmbedSummary};
use crate::search::Method;

#[derive(Debug, Clone)]
pub struct Options {
    /// The input bundle.
    pub bundle: PathBuf,
    /// The data.
    pub data: PathBuf,
    /// How to read it.
    pub load: LoadOptions,
    /// Validation fraction of a stratified split.
    pub val: f32,
    /// Test fraction.
    pub test: f32,
    /// Seed of the split and the augmentation.
    pub seed: u64,
    /// Augmentations of training images.
    pub augment: Augment,
    /// Augmented copies per training image.
    pub augment_copies: u32,
    /// Threads for embedding and search trials.
    pub threads: usize,
    /// Embedding cache folder (None: no cache).
    pub cache: Option<PathBuf>,
    /// The head's hyperparameters (the search's starting point).
    pub head: HeadConfig,
    /// Hyperparameter search: method and trials.
    pub search: Option<(Method, usize)>,
    /// Hyperparameters of the search's space ([`super::space`]) that it keeps at
    /// `head`'s values, by name: those the user set (e.g. `head`, so that a device that
    /// will learn new classes keeps a linear head).
    pub search_fixed: Vec<String>,
    /// Class capacity of the head (default classes + 8).
    pub capacity: Option<usize>,
    /// Progress bars.
    pub progress: bool,
}

impl Options {
    /// Defaults for `bundle` and `data`.
    pub fn new(bundle: impl Into<PathBuf>, data: impl Into<PathBuf>) -> Options {
        Options {
            bundle: bundle.into(),
            data: data.into(),
            load: LoadOptions::default(),
            val: 0.15,
            test: 0.15,
            seed: 1,
            augment: Augment::default(),
            augment_copies: 0,
            threads: embed::all_cores(),
            cache: Some(embed::default_cache_dir()),
            head: HeadConfig::default(),
            search: None,
            search_fixed: Vec::new(),
            capacity: None,
            progress: true,
        }
    }
}

/// The most augmented copies per training image.
pub const MAX_COPIES: u32 = 64;

/// The data, embedded and split.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Class names, in class-index order.
    pub classes: Vec<String>,
    /// Training embeddings (with augmented copies).
    pub train: Embedded,
    /// Validation embeddings.
    pub val: Embedded,
    /// Test embeddings.
    pub test: Embedded,
    /// What the data held and what was dropped.
    pub summary: DataSummary,
    /// What embedding cost.
    pub embedding: EmbedSummary,
}

/// Loads, cleans, embeds and splits the data of `opts` for `bundle`.
pub fn prepare(bundle: &Bundle, opts: &Options) -> Result<Prepared> {
    let (loaded, items, cleaned) = load(bundle, opts)?;
    let mut skipped = loaded.skipped;
    // Every sample once: the embedding also tells which images decode.
    let mut embedder = Embedder::new(bundle, opts.threads, opts.cache.as_deref());
    embedder.augment = opts.augment;
    embedder.seed = opts.seed;
    embedder.progress = opts.progress;
    let (kept, mut stats) = embed_all(&mut embedder, &items, opts, &mut skipped)?;
    let classes = classes_of(&items, &kept, opts)?;
    let (items, mut parts) = split(kept, &classes, opts)?;
    let augmented = augment(
        &mut embedder,
        &items,
        &classes,
        opts,
        &mut parts[0],
        &mut stats,
    )?;
    let [train, val, test] = parts;
    let summary = DataSummary {
        source: opts.data.display().to_string(),
        kind: if bundle.manifest.backbone.format == BackboneFormat::None {
            "features".into()
        } else {
            loaded.kind.name().into()
        },
        found: loaded.found,
        used: items.len(),
        duplicates: cleaned.duplicates,
        conflicts: cleaned.conflicts,
        skipped,
        split: if loaded.folder_split {
            "folders (train/, val/, test/)".into()
        } else {
            format!(
                "stratified {:.0}/{:.0}/{:.0}, seed {}",
                (1.0 - opts.val - opts.test) * 100.0,
                opts.val * 100.0,
                opts.test * 100.0,
                opts.seed
            )
        },
        classes: class_counts(&items, &classes, &augmented),
        augment: opts.augment.names(),
        augment_copies: if opts.augment.is_none() {
            0
        } else {
            opts.augment_copies as usize
        },
    };
    let embedding = embed_summary(&embedder, &stats, opts.threads);
    Ok(Prepared {
        classes,
        train,
        val,
        test,
        summary,
        embedding,
    })
}

/// Reads the data (the samples' length from the bundle: its input, or its embedding when
/// it has no backbone), drops duplicates and conflicts, and checks the augmentation
/// options against it.
fn load(bundle: &Bundle, opts: &Options) -> Result<(dataset::Loaded, Vec<Item>, dataset::Cleaned)> {
    let m = &bundle.manifest;
    let sample_len: usize = if m.backbone.format == BackboneFormat::None {
        m.embedding.size
    } else {
        m.input.shape.iter().product()
    };
    let mut loaded = dataset::load(&opts.data, m, sample_len, &opts.load)?;
    let (items, cleaned) = dataset::clean(std::mem::take(&mut loaded.items));
    ensure!(
        opts.augment_copies <= MAX_COPIES,
        "--augment-copies {} is more than {MAX_COPIES}",
        opts.augment_copies
    );
    if !opts.augment.is_none() && opts.augment_copies > 0 {
        ensure!(
            items
                .iter()
                .all(|i| matches!(i.input, dataset::Input::Image(_))),
            "--augment applies to images; {} holds tensors (CSV or .npy)",
            opts.data.display()
        );
    }
    Ok((loaded, items, cleaned))
}

/// The items that embedded, each with its embedding.
type Kept = Vec<(Item, Vec<f32>)>;

/// Embeds every item once; one that fails (an image that does not decode) is skipped and
/// listed, or refused with `--strict`.
fn embed_all(
    embedder: &mut Embedder,
    items: &[Item],
    opts: &Options,
    skipped: &mut Vec<crate::report::Skipped>,
) -> Result<(Kept, embed::Stats)> {
    let jobs: Vec<Job> = items.iter().map(|item| Job { item, copy: 0 }).collect();
    let (embs, stats) = embedder.run(&jobs, "embedding")?;
    let mut kept: Kept = Vec::new();
    for (item, e) in items.iter().zip(embs) {
        match e {
            Ok(v) => kept.push((item.clone(), v)),
            Err(why) => {
                if opts.load.strict {
                    bail!(
                        "{}: {why} (--strict refuses it; without --strict it is skipped and listed)",
                        item.origin
                    );
                }
                log::warn!("skipping {}: {why}", item.origin);
                skipped.push(crate::report::Skipped {
                    path: item.origin.clone(),
                    reason: why,
                });
            }
        }
    }
    Ok((kept, stats))
}

/// The class names of the embedded samples: every class of the data still there, at
/// least two, and no more than `--capacity`.
fn classes_of(items: &[Item], kept: &[(Item, Vec<f32>)], opts: &Options) -> Result<Vec<String>> {
    let all_classes = dataset::class_names(items);
    let mut classes = dataset::class_names(&kept.iter().map(|k| k.0.clone()).collect::<Vec<_>>());
    for c in &all_classes {
        ensure!(
            classes.contains(c),
            "class {c:?} has no usable sample (every one was skipped: see the list above)"
        );
    }
    ensure!(
        classes.len() >= 2,
        "a classifier needs at least 2 classes; {} has {}",
        opts.data.display(),
        classes.len()
    );
    if let Some(cap) = opts.capacity {
        ensure!(
            cap >= classes.len(),
            "--capacity {cap} is below the {} classes",
            classes.len()
        );
    }
    classes.dedup();
    Ok(classes)
}

/// The index of class `label` in `classes`.
fn class_index(classes: &[String], label: &str) -> usize {
    classes
        .iter()
        .position(|c| c == label)
        .expect("a known class")
}

/// Splits the embedded items (stratified, or as the folders say) into training,
/// validation and test embeddings; the items come back with their split set.
fn split(kept: Kept, classes: &[String], opts: &Options) -> Result<(Vec<Item>, [Embedded; 3])> {
    let mut items: Vec<Item> = kept.iter().map(|k| k.0.clone()).collect();
    dataset::split(&mut items, classes, opts.val, opts.test, opts.seed)?;
    let mut parts: [Embedded; 3] = Default::default();
    for (item, (_, e)) in items.iter().zip(kept) {
        let part = match item.split.expect("split above") {
            Split::Train => &mut parts[0],
            Split::Val => &mut parts[1],
            Split::Test => &mut parts[2],
        };
        part.x.push(e);
        part.y.push(class_index(classes, &item.label));
    }
    Ok((items, parts))
}

/// Adds `--augment-copies` augmented copies of each training image to `train`, and
/// returns how many each class got.
fn augment(
    embedder: &mut Embedder,
    items: &[Item],
    classes: &[String],
    opts: &Options,
    train: &mut Embedded,
    stats: &mut embed::Stats,
) -> Result<Vec<usize>> {
    let mut augmented = vec![0usize; classes.len()];
    if opts.augment.is_none() || opts.augment_copies == 0 {
        return Ok(augmented);
    }
    let train_items: Vec<&Item> = items
        .iter()
        .filter(|i| i.split == Some(Split::Train))
        .collect();
    let jobs: Vec<Job> = train_items
        .iter()
        .flat_map(|&item| (1..=opts.augment_copies).map(move |copy| Job { item, copy }))
        .collect();
    let (embs, s) = embedder.run(&jobs, "augmenting")?;
    stats.computed += s.computed;
    stats.cached += s.cached;
    stats.seconds += s.seconds;
    for (job, e) in jobs.iter().zip(embs) {
        if let Ok(v) = e {
            let c = class_index(classes, &job.item.label);
            train.x.push(v);
            train.y.push(c);
            augmented[c] += 1;
        }
    }
    Ok(augmented)
}

/// Samples per class and split, for the report.
fn class_counts(items: &[Item], classes: &[String], augmented: &[usize]) -> Vec<ClassCount> {
    let count = |s: Split, c: &str| {
        items
            .iter()
            .filter(|i| i.split == Some(s) && i.label == c)
            .count()
    };
    classes
        .iter()
        .enumerate()
        .map(|(i, c)| ClassCount {
            name: c.clone(),
            train: count(Split::Train, c),
            val: count(Split::Val, c),
            test: count(Split::Test, c),
            augmented: augmented[i],
        })
        .collect()
}

/// What embedding cost, for the report.
fn embed_summary(embedder: &Embedder, stats: &embed::Stats, threads: usize) -> EmbedSummary {
    let total = stats.computed + stats.cached;
    EmbedSummary {
        backbone_sha256: embed::hex(embedder.id()),
        computed: stats.computed,
        cached: stats.cached,
        threads,
        seconds: stats.seconds,
        samples_per_s: if stats.seconds > 0.0 {
            total as f64 / stats.seconds
        } else {
            0.0
        },
    }
}
