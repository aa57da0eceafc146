//! `finetune-head eval BUNDLE --data DATA [--json]`: how well a bundle's head does on a
//! labeled data set. Accuracy, macro-F1, per-class precision/recall/F1, the confusion
//! matrix, and the latency of one prediction (backbone and head, one thread).
//!
//! The bundle's head is scored, and beside it the head `edgetune serve` answers with
//! before its first label when that is another one: with the device's default learner
//! (`--learner slda`) the closed-form LDA head it writes from the bundle's embedding
//! statistics, which replaces a gradient head that `train` kept
//! ([`closed_form::device_head`]; `--learner gradient` answers with the bundle's head).
//!
//! The data is read as `train` reads it ([`crate::dataset`]); with a split given by
//! folders only `test/` is scored. Samples of a class the bundle does not know, and files
//! that cannot be read, are skipped and listed (`--strict` refuses them).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use edgetune::backbone::Backbone;
use edgetune::bundle::{BackboneFormat, Bundle, Layout};
use edgetune::persist;
use edgetune::text::TextTokenizer;

use crate::closed_form;
use crate::dataset::{self, Input, LoadOptions, Split};
use crate::embed::{Embedder, Job};
use crate::report::{EvalReport, MISCLASSIFIED_PER_CLASS, Metrics, Misclassified, Skipped};

/// How `eval` is run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bundle (with a head).
    pub bundle: PathBuf,
    /// The data.
    pub data: PathBuf,
    /// How to read it.
    pub load: LoadOptions,
    /// Threads for embedding.
    pub threads: usize,
    /// Embedding cache folder.
    pub cache: Option<PathBuf>,
    /// Samples timed for the latency (one thread, nothing cached).
    pub latency_samples: usize,
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
            threads: crate::embed::all_cores(),
            cache: Some(crate::embed::default_cache_dir()),
            latency_samples: 50,
            progress: true,
        }
    }
}

/// Scores the bundle of `opts` on its data.
pub fn run(opts: &Options) -> Result<EvalReport> {
    let bundle = Bundle::read(&opts.bundle)
        .with_context(|| format!("reading the bundle {}", opts.bundle.display()))?;
    let head_bytes = bundle.head.as_ref().with_context(|| {
        format!(
            "{} has no head: train one first (finetune-head train)",
            opts.bundle.display()
        )
    })?;
    let head = persist::decode_head(head_bytes).context("the bundle's head")?;
    let m = &bundle.manifest;
    let stats = edgetune::stats::for_head(m, head.dims(), head.classes())
        .context("the bundle's statistics of its head's features")?;
    let device_head = match &stats {
        Some(s) => closed_form::device_head(&head, s)?,
        None => None,
    };
    let classes = m.classes.clone();
    let features_only = m.backbone.format == BackboneFormat::None;
    let sample_len: usize = if features_only {
        m.embedding.size
    } else {
        m.input.shape.iter().product()
    };
    let loaded = dataset::load(&opts.data, m, sample_len, &opts.load)?;
    let mut skipped = loaded.skipped;
    let mut items = Vec::new();
    for item in loaded.items {
        if loaded.folder_split && item.split != Some(Split::Test) {
            continue;
        }
        match classes.iter().position(|c| *c == item.label) {
            Some(_) => items.push(item),
            None => {
                let why = format!(
                    "class {:?} is not one of the bundle's classes ({})",
                    item.label,
                    classes.join(", ")
                );
                if opts.load.strict {
                    bail!("{}: {why}", item.origin);
                }
                skipped.push(Skipped {
                    path: item.origin,
                    reason: why,
                });
            }
        }
    }
    ensure!(
        !items.is_empty(),
        "{}: no sample of a class the bundle knows",
        opts.data.display()
    );
    let mut embedder = Embedder::new(&bundle, opts.threads, opts.cache.as_deref());
    embedder.progress = opts.progress;
    let jobs: Vec<Job> = items.iter().map(|item| Job { item, copy: 0 }).collect();
    let (embs, _) = embedder.run(&jobs, "embedding")?;
    let mut probs = vec![0.0f32; head.dims().capacity];
    let (mut truth, mut pred, mut p_truth) = (Vec::new(), Vec::new(), Vec::new());
    let mut device_correct = 0usize;
    let mut misclassified = Vec::new();
    for (item, e) in items.iter().zip(embs) {
        let e = match e {
            Ok(e) => e,
            Err(why) => {
                if opts.load.strict {
                    bail!("{}: {why}", item.origin);
                }
                skipped.push(Skipped {
                    path: item.origin.clone(),
                    reason: why,
                });
                continue;
            }
        };
        let y = classes
            .iter()
            .position(|c| *c == item.label)
            .expect("checked above");
        if let Some(d) = &device_head {
            device_correct += usize::from(d.predict(&e, &mut probs)?.class == y);
        }
        let p = head.predict(&e, &mut probs)?;
        let wrong_of_y = misclassified
            .iter()
            .filter(|m: &&Misclassified| m.truth == item.label);
        if p.class != y && wrong_of_y.count() < MISCLASSIFIED_PER_CLASS {
            misclassified.push(Misclassified {
                origin: item.origin.clone(),
                text: match &item.input {
                    Input::Text { text, .. } => Some(text.clone()),
                    _ => None,
                },
                truth: item.label.clone(),
                predicted: classes.get(p.class).cloned().unwrap_or_default(),
                confidence: p.confidence,
            });
        }
        truth.push(y);
        pred.push(p.class);
        p_truth.push(probs[y]);
    }
    ensure!(
        !truth.is_empty(),
        "{}: no sample could be embedded",
        opts.data.display()
    );
    let mut metrics =
        Metrics::compute(&classes, &truth, &pred, Some(&p_truth)).map_err(anyhow::Error::msg)?;

    // Latency: what one prediction costs on a device, from the raw sample to the class.
    let backbone = if features_only {
        None
    } else {
        Some(Backbone::from_bundle(&bundle)?)
    };
    let tokenizer = match m.input.layout {
        Layout::Tokens => Some(TextTokenizer::from_manifest(m)?),
        _ => None,
    };
    let mut emb = vec![0.0f32; m.embedding.size];
    let mut times = Vec::new();
    for item in items.iter().take(opts.latency_samples) {
        let t = Instant::now();
        let ok = (|| -> Result<()> {
            let raw = match (&item.input, &backbone, &tokenizer) {
                // As the device does: tokenize, then embed the ids.
                (Input::Text { text, .. }, Some(b), Some(tok)) => {
                    b.embed_tokens(&tok.encode(text)?.ids, &mut emb)?;
                    None
                }
                (Input::Text { .. }, _, _) => bail!("text needs a text bundle with a tokenizer"),
                (Input::Tensor(v), _, _) => Some(v.clone()),
                (Input::Image(p), _, _) => {
                    Some(edgetune::image::decode(&std::fs::read(p)?, &m.input)?)
                }
            };
            match (&backbone, raw) {
                (_, None) => {}
                (Some(b), Some(raw)) => b.embed(&raw, &mut emb)?,
                (None, Some(raw)) => emb.copy_from_slice(&raw),
            }
            head.predict(&emb, &mut probs)?;
            Ok(())
        })();
        if ok.is_ok() {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    metrics.latency_us = times.get(times.len() / 2).copied();
    let device_head_accuracy = device_head.map(|_| device_correct as f64 / truth.len() as f64);
    Ok(EvalReport {
        device_head_accuracy,
        bundle: opts.bundle.display().to_string(),
        data: opts.data.display().to_string(),
        classes,
        metrics,
        skipped,
        misclassified,
    })
}
