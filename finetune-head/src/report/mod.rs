//! Training and evaluation reports.
//!
//! The types in this module *are* the JSON report: `finetune-head train` writes a
//! [`TrainReport`], `finetune-head eval --json` prints an [`EvalReport`], and both read back
//! with serde, so the terminal summary, the JSON file and the HTML page share one schema.
//!
//! * [`Metrics::compute`] turns predictions into classification metrics (accuracy,
//!   per-class precision/recall/F1, macro-F1, confusion matrix, cross-entropy).
//! * [`html`] renders a [`TrainReport`] as one self-contained HTML page: inline CSS and
//!   inline SVG plots, no script, no external URL, so it opens offline and can be attached
//!   to a ticket or archived next to the bundle.
//! * The `Display` impls are the compact terminal summaries.
//!
//! Non-finite numbers: JSON has no NaN, so serde_json writes NaN and ±inf as `null`. Every
//! `f64` field here reads `null` back as NaN (a trial whose loss diverged must not make its
//! report unreadable); `Option<f64>` fields read it back as `None`. The HTML page and the
//! text summaries print non-finite values as "–".
//!
//! Plots use `plotters`' SVG backend with no font feature (no `ttf`/font-kit, no
//! `ab_glyph`): that backend writes labels as SVG `<text>` elements and leaves the glyphs
//! to the browser, and plotters' built-in fallback font only *estimates* text extents for
//! the layout. So no system font, font file or fontconfig is needed to build or run it.
//!
//! Files: the report types are here; `format.rs` has the helpers, `html.rs` renders the
//! page from `report.html.j2` and `report.css`, `plots.rs` draws its SVG plots, `text.rs`
//! writes the terminal summaries.

use crate::closed_form::HeadChoice;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::{self, Write as _};

mod format;
mod html;
mod plots;
#[cfg(test)]
mod tests;
mod text;

use format::*;
pub use html::html;
use plots::*;
use text::*;

/// Reads an `f64` that may be `null` as NaN: serde_json writes NaN and ±inf as `null`, and a
/// report with a diverged loss must still read back.
fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Metrics of one class, one-vs-rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name.
    pub name: String,
    /// Correct predictions of this class / all predictions of this class; 0 if never
    /// predicted.
    #[serde(deserialize_with = "f64_or_nan")]
    pub precision: f64,
    /// Correct predictions of this class / samples of this class; 0 without support.
    #[serde(deserialize_with = "f64_or_nan")]
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 if both are 0.
    #[serde(deserialize_with = "f64_or_nan")]
    pub f1: f64,
    /// Number of samples whose true class is this one.
    pub support: usize,
}

/// Classification metrics on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Number of evaluated samples.
    pub samples: usize,
    /// Fraction in \[0, 1\] (0 when there are no samples).
    #[serde(deserialize_with = "f64_or_nan")]
    pub accuracy: f64,
    /// Mean F1 over the classes *with support* (classes absent from this split do not
    /// count; 0 when there are no samples). Note: scikit-learn's default macro average also
    /// includes classes that were only predicted.
    #[serde(deserialize_with = "f64_or_nan")]
    pub macro_f1: f64,
    /// Mean cross-entropy of the true class (natural log), if probabilities were given.
    pub loss: Option<f64>,
    /// One entry per class, in class order.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`: sample counts by true and predicted class.
    pub confusion: Vec<Vec<usize>>,
    /// Mean time per sample in microseconds (backbone + head), when measured.
    pub latency_us: Option<f64>,
}

impl Metrics {
    /// Computes the metrics of predictions against the truth.
    ///
    /// `classes` are the class names; `truth[i]` and `predicted[i]` are class indices of
    /// sample `i`; `probs_of_truth[i]`, if given, is the probability the model assigned to
    /// the true class of sample `i`, for [`Metrics::loss`] (clamped to \[1e-12, 1\]; a NaN
    /// probability gives a NaN loss). Follows scikit-learn's `zero_division=0`: a class
    /// never predicted has precision 0, a class without support has recall 0.
    /// [`Metrics::macro_f1`] averages over the classes with support only.
    /// `latency_us` is left `None` for the caller to fill in.
    ///
    /// # Errors
    ///
    /// A message naming the offending sample for an index `>= classes.len()`, or one
    /// giving both lengths for slices of different lengths.
    pub fn compute(
        classes: &[String],
        truth: &[usize],
        predicted: &[usize],
        probs_of_truth: Option<&[f32]>,
    ) -> Result<Metrics, String> {
        let n = classes.len();
        if truth.len() != predicted.len() {
            return Err(format!(
                "{} true labels but {} predictions",
                truth.len(),
                predicted.len()
            ));
        }
        if let Some(p) = probs_of_truth
            && p.len() != truth.len()
        {
            return Err(format!(
                "{} true labels but {} probabilities",
                truth.len(),
                p.len()
            ));
        }
        let mut confusion = vec![vec![0usize; n]; n];
        for (i, (&t, &p)) in truth.iter().zip(predicted).enumerate() {
            if t >= n {
                return Err(format!("truth[{i}] = {t} is out of range ({n} classes)"));
            }
            if p >= n {
                return Err(format!(
                    "predicted[{i}] = {p} is out of range ({n} classes)"
                ));
            }
            confusion[t][p] += 1;
        }
        let samples = truth.len();
        let correct: usize = (0..n).map(|c| confusion[c][c]).sum();
        let per_class: Vec<ClassMetrics> = classes
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let tp = confusion[c][c];
                let support: usize = confusion[c].iter().sum();
                let predicted_as: usize = confusion.iter().map(|row| row[c]).sum();
                let precision = ratio(tp, predicted_as);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassMetrics {
                    name: name.clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let with_support: Vec<f64> = per_class
            .iter()
            .filter(|c| c.support > 0)
            .map(|c| c.f1)
            .collect();
        let macro_f1 = if with_support.is_empty() {
            0.0
        } else {
            with_support.iter().sum::<f64>() / with_support.len() as f64
        };
        let loss = probs_of_truth.filter(|_| samples > 0).map(|probs| {
            let total: f64 = probs
                .iter()
                .map(|&p| -f64::from(p).clamp(1e-12, 1.0).ln())
                .sum();
            total / samples as f64
        });
        Ok(Metrics {
            samples,
            accuracy: ratio(correct, samples),
            macro_f1,
            loss,
            per_class,
            confusion,
            latency_us: None,
        })
    }

    /// Number of correctly classified samples (the confusion matrix's diagonal).
    pub fn correct(&self) -> usize {
        self.confusion
            .iter()
            .enumerate()
            .map(|(i, row)| row.get(i).copied().unwrap_or(0))
            .sum()
    }
}

/// `a / b`, or 0 when `b` is 0 (scikit-learn's `zero_division=0`).
fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// One epoch of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    /// Epoch number, as the trainer counts it ([`TrainReport::best_epoch`] refers to it).
    pub epoch: usize,
    /// Mean training loss over the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_loss: f64,
    /// Training accuracy, fraction in \[0, 1\].
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_accuracy: f64,
    /// Validation loss after the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_loss: f64,
    /// Validation accuracy after the epoch, fraction in \[0, 1\].
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_accuracy: f64,
    /// Learning rate used in the epoch.
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
}

/// One hyperparameter-search trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Trial number (the order trials were generated in).
    pub index: usize,
    /// The trial's hyperparameters, name → value.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Best validation accuracy of the trial, fraction in \[0, 1\].
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_accuracy: f64,
    /// Validation loss at that point.
    #[serde(deserialize_with = "f64_or_nan")]
    pub val_loss: f64,
    /// Epochs the trial ran.
    pub epochs: usize,
    /// Wall-clock time of the trial.
    #[serde(deserialize_with = "f64_or_nan")]
    pub seconds: f64,
}

/// The hyperparameter search, if one ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSummary {
    /// Search method, e.g. "grid" or "random".
    pub method: String,
    /// All trials.
    pub trials: Vec<TrialRecord>,
    /// The selected trial: an index into `trials` (not a [`TrialRecord::index`]).
    pub best: usize,
    /// Worker threads.
    pub threads: usize,
    /// Wall-clock time of the whole search.
    #[serde(deserialize_with = "f64_or_nan")]
    pub seconds: f64,
}

impl SearchSummary {
    /// The selected trial, if `best` is in range.
    pub fn winner(&self) -> Option<&TrialRecord> {
        self.trials.get(self.best)
    }
}

/// An input that was not used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// File path or row reference.
    pub path: String,
    /// Why it was skipped.
    pub reason: String,
}

/// Identical samples with the same label: one kept, the others dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateGroup {
    /// Their label.
    pub label: String,
    /// The sample that was kept.
    pub kept: String,
    /// The samples that were dropped.
    pub dropped: Vec<String>,
}

/// Identical samples with different labels (all dropped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// (path or row, label) of each sample.
    pub items: Vec<(String, String)>,
}

/// Sample counts of one class per split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassCount {
    /// Class name.
    pub name: String,
    /// Training samples (before augmentation).
    pub train: usize,
    /// Validation samples.
    pub val: usize,
    /// Test samples.
    pub test: usize,
    /// Augmented copies added to the training split.
    pub augmented: usize,
}

/// What data was found, used, dropped and how it was split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSummary {
    /// The `--data` path.
    pub source: String,
    /// "images", "csv", "npy" or "features".
    pub kind: String,
    /// Samples found.
    pub found: usize,
    /// Samples used (after duplicates, conflicts and skipped inputs).
    pub used: usize,
    /// Duplicate groups (one kept each).
    pub duplicates: Vec<DuplicateGroup>,
    /// Same sample, different labels.
    pub conflicts: Vec<Conflict>,
    /// Inputs that could not be used.
    pub skipped: Vec<Skipped>,
    /// How the data was split, e.g. "stratified 70/15/15, seed 1" or "folders".
    pub split: String,
    /// Per-class counts.
    pub classes: Vec<ClassCount>,
    /// Augmentations, e.g. `["crop", "rotate"]`; empty = none.
    pub augment: Vec<String>,
    /// Augmented copies per training sample.
    pub augment_copies: usize,
}

/// Embedding computation and cache use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedSummary {
    /// SHA-256 of the backbone the embeddings come from (the cache key).
    pub backbone_sha256: String,
    /// Embeddings computed in this run.
    pub computed: usize,
    /// Embeddings read from the cache.
    pub cached: usize,
    /// Worker threads.
    pub threads: usize,
    /// Wall-clock time.
    #[serde(deserialize_with = "f64_or_nan")]
    pub seconds: f64,
    /// Throughput of the computed embeddings.
    #[serde(deserialize_with = "f64_or_nan")]
    pub samples_per_s: f64,
}

/// Everything `finetune-head train` did: the JSON report, and the source of [`html`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Tool and version, e.g. "finetune-head 0.1.0".
    pub tool: String,
    /// When the report was made (seconds since the Unix epoch).
    pub created_unix: u64,
    /// Input bundle.
    pub bundle_in: String,
    /// Output bundle.
    pub bundle_out: String,
    /// Class names, in index order.
    pub classes: Vec<String>,
    /// The data.
    pub data: DataSummary,
    /// The embeddings.
    pub embedding: EmbedSummary,
    /// The hyperparameters of the final head, as name → value (lr, weight_decay, head,
    /// hidden, dropout, loss, label_smoothing, optimizer, batch, epochs, schedule, patience,
    /// balance...).
    pub config: BTreeMap<String, serde_json::Value>,
    /// Per-epoch training history of the final head.
    pub history: Vec<Epoch>,
    /// The [`Epoch::epoch`] whose weights were kept.
    pub best_epoch: usize,
    /// Whether early stopping ended training.
    pub stopped_early: bool,
    /// Wall-clock training time of the final head.
    #[serde(deserialize_with = "f64_or_nan")]
    pub train_seconds: f64,
    /// The hyperparameter search, if one ran.
    pub search: Option<SearchSummary>,
    /// Which head was kept: the gradient head or the closed-form one
    /// ([`crate::closed_form`]); absent in reports written before the choice existed.
    #[serde(default)]
    pub head: Option<HeadChoice>,
    /// Metrics on the validation split.
    pub validation: Metrics,
    /// Metrics on the test split.
    pub test: Metrics,
}

/// Result of `finetune-head eval`. With `--json` this is the output, and its top level
/// carries the [`Metrics`] fields (`accuracy` as a fraction, `macro_f1`, ...) directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The evaluated bundle.
    pub bundle: String,
    /// The evaluated data.
    pub data: String,
    /// Class names, in index order.
    pub classes: Vec<String>,
    /// The metrics, flattened into the top level of the JSON.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Inputs that could not be evaluated.
    pub skipped: Vec<Skipped>,
    /// A few misclassified samples per true class (at most
    /// [`MISCLASSIFIED_PER_CLASS`]), in data order.
    #[serde(default)]
    pub misclassified: Vec<Misclassified>,
    /// The accuracy on the same samples of the head `edgetune serve` answers with before
    /// its first label, when it writes one from the bundle's statistics (its default
    /// learner, [`crate::closed_form::device_head`]): equal to `accuracy` when `train`
    /// kept the closed-form head, and not when it kept a gradient head.
    #[serde(default)]
    pub device_head_accuracy: Option<f64>,
}

/// Misclassified samples kept per true class in an [`EvalReport`].
pub const MISCLASSIFIED_PER_CLASS: usize = 3;

/// A sample the head got wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Misclassified {
    /// Where it came from: a path, `path:line` or `path[i]`.
    pub origin: String,
    /// The text, for text data.
    pub text: Option<String>,
    /// Its label.
    pub truth: String,
    /// The head's class.
    pub predicted: String,
    /// The head's probability of that class.
    pub confidence: f32,
}
