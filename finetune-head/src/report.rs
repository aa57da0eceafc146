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

use crate::closed_form::HeadChoice;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::error::Error;
use std::fmt::{self, Write as _};

// ---------------------------------------------------------------------------------------
// Report types
// ---------------------------------------------------------------------------------------

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
}

// ---------------------------------------------------------------------------------------
// Formatting helpers
// ---------------------------------------------------------------------------------------

/// Placeholder for a missing or non-finite number.
const DASH: &str = "–";

/// A fraction as a percentage with `decimals` decimals, "–" if not finite.
fn pct(x: f64, decimals: usize) -> String {
    let p = x * 100.0;
    if p.is_finite() {
        format!("{p:.decimals$}%")
    } else {
        DASH.into()
    }
}

/// A number with `decimals` decimals, "–" if not finite.
fn num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        DASH.into()
    }
}

/// An optional number with `decimals` decimals, "–" if absent or not finite.
fn opt_num(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| DASH.into(), |x| num(x, decimals))
}

/// `part / whole` as a percentage, "–" when `whole` is 0.
fn share(part: usize, whole: usize) -> String {
    if whole == 0 {
        DASH.into()
    } else {
        pct(part as f64 / whole as f64, 1)
    }
}

/// A JSON value as plain text: strings without quotes, `null` as "–".
fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => DASH.into(),
        other => other.to_string(),
    }
}

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `s`; a longer `s` loses its middle to "…", so that names
/// differing only in their ends ("model_v1_small", "model_v1_large") stay distinct.
fn clip(s: &str, max: usize) -> String {
    let len = s.chars().count();
    if len <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(1);
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(len - tail));
    out
}

/// A UTC date and time from seconds since the Unix epoch.
fn utc(secs: u64) -> String {
    crate::utc::utc(secs, false)
}

/// "1 epoch", "2 epochs".
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Split totals (train, val, test, augmented) over all classes.
fn split_totals(d: &DataSummary) -> (usize, usize, usize, usize) {
    d.classes.iter().fold((0, 0, 0, 0), |(a, b, c, e), k| {
        (a + k.train, b + k.val, c + k.test, e + k.augmented)
    })
}

/// The name of class `i` of `m`: the per-class entry, else `classes[i]`, else "#i".
fn class_name<'a>(m: &'a Metrics, classes: &'a [String], i: usize) -> String {
    m.per_class
        .get(i)
        .map(|c| c.name.clone())
        .or_else(|| classes.get(i).cloned())
        .unwrap_or_else(|| format!("#{i}"))
}

/// A trial's parameters as "name=value, ...".
fn params_text(params: &BTreeMap<String, serde_json::Value>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------
// HTML
// ---------------------------------------------------------------------------------------

/// Lists longer than this are collapsed in the HTML page (trial tables: 3×).
const OPEN_LIMIT: usize = 10;
/// Lists longer than this are cut in the HTML page (the JSON report has them all).
const LIST_LIMIT: usize = 500;

const CSS: &str = "\
:root{--ink:#1f2933;--muted:#616e7c;--line:#d9e2ec;--bg:#f5f7fa;--accent:#1f77b4}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--ink);\
margin:0 auto;max-width:1200px;padding:12px 24px 48px}
h1{font-size:22px;margin:8px 0 2px}
h2{font-size:18px;margin:30px 0 8px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}
.muted,figcaption,.meta{color:var(--muted)}
nav a{margin-right:14px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:150px;background:var(--bg)}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;margin:6px 0 10px}
th,td{border-bottom:1px solid var(--line);padding:3px 10px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.best td{background:#e6f4ea;font-weight:600}
tfoot td{font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:0}
figcaption{font-size:12px;max-width:640px}
svg.plot{max-width:100%;height:auto;display:block}
details{margin:6px 0}
summary{cursor:pointer}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.bar{display:inline-block;height:9px;background:var(--accent);opacity:.55;border-radius:2px}
.err{color:#b00020}
";

/// Appends formatted text to a `String` (writing to a `String` cannot fail).
macro_rules! w {
    ($dst:expr, $($arg:tt)*) => {{ let _ = write!($dst, $($arg)*); }};
}

/// Renders `report` as one self-contained HTML5 page: summary, data, training curves,
/// test confusion matrix, per-class metrics and the search trials. Inline CSS and SVG,
/// no script and no external URL; every user string (class names, paths, parameters) is
/// escaped. Never panics on odd reports (no epochs, one class, empty search, NaN).
pub fn html(report: &TrainReport) -> String {
    let mut h = String::with_capacity(128 * 1024);
    let r = report;
    w!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Training report: {}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n",
        esc(&r.bundle_out)
    );
    w!(
        h,
        "<header>\n<h1>Training report</h1>\n<p class=\"meta\">{} · {} · <code>{}</code> → \
         <code>{}</code></p>\n<nav><a href=\"#summary\">Summary</a><a href=\"#data\">Data</a>\
         <a href=\"#training\">Training</a><a href=\"#evaluation\">Evaluation</a>{}</nav>\n\
         </header>\n",
        esc(&r.tool),
        utc(r.created_unix),
        esc(&r.bundle_in),
        esc(&r.bundle_out),
        if r.search.is_some() {
            "<a href=\"#search\">Search</a>"
        } else {
            ""
        }
    );
    summary_section(&mut h, r);
    data_section(&mut h, r);
    training_section(&mut h, r);
    evaluation_section(&mut h, r);
    if let Some(search) = &r.search {
        search_section(&mut h, search);
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// Summary: headline metrics, run facts and the final head's configuration.
fn summary_section(h: &mut String, r: &TrainReport) {
    h.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"cards\">\n");
    let mut card = |label: &str, value: String| {
        w!(
            h,
            "<div class=\"card\">{}<b>{}</b></div>\n",
            esc(label),
            esc(&value)
        );
    };
    card("Test accuracy", pct(r.test.accuracy, 2));
    card("Test macro-F1", pct(r.test.macro_f1, 2));
    card("Validation accuracy", pct(r.validation.accuracy, 2));
    card("Validation macro-F1", pct(r.validation.macro_f1, 2));
    if let Some(lat) = r.test.latency_us {
        card("Latency per sample", format!("{} µs", num(lat, 1)));
    }
    h.push_str("</div>\n<table>\n<tbody>\n");

    let mut row = |key: &str, value_html: String| {
        w!(h, "<tr><th>{}</th><td>{value_html}</td></tr>\n", esc(key));
    };
    let shown: Vec<String> = r.classes.iter().take(40).map(|c| esc(c)).collect();
    let more = r.classes.len().saturating_sub(shown.len());
    row(
        "Classes",
        format!(
            "{}: {}{}",
            r.classes.len(),
            shown.join(", "),
            if more > 0 {
                format!(", … ({more} more)")
            } else {
                String::new()
            }
        ),
    );
    let d = &r.data;
    let (tr, va, te, au) = split_totals(d);
    row(
        "Data",
        format!(
            "{} of {} samples used ({} from <code>{}</code>); {} duplicate groups, {} conflicts, \
             {} skipped",
            d.used,
            d.found,
            esc(&d.kind),
            esc(&d.source),
            d.duplicates.len(),
            d.conflicts.len(),
            d.skipped.len()
        ),
    );
    row(
        "Split",
        format!("{}: train {tr}, validation {va}, test {te}", esc(&d.split)),
    );
    row(
        "Augmentation",
        if d.augment.is_empty() {
            "none".into()
        } else {
            format!(
                "{} × {} copies ({au} added)",
                esc(&d.augment.join(", ")),
                d.augment_copies
            )
        },
    );
    let e = &r.embedding;
    row(
        "Embeddings",
        format!(
            "{} computed, {} from cache ({} cache hits); {} threads, {} s ({} samples/s)",
            e.computed,
            e.cached,
            share(e.cached, e.computed + e.cached),
            e.threads,
            num(e.seconds, 1),
            num(e.samples_per_s, 1)
        ),
    );
    row(
        "Backbone SHA-256",
        format!("<code>{}</code>", esc(&e.backbone_sha256)),
    );
    row(
        "Training",
        format!(
            "{}{}, best epoch {}, {} s",
            plural(r.history.len(), "epoch"),
            if r.stopped_early {
                " (stopped early)"
            } else {
                ""
            },
            r.best_epoch,
            num(r.train_seconds, 1)
        ),
    );
    if let Some(h) = &r.head {
        row("Head kept", esc(&choice_text(h)));
    }
    if let Some(s) = &r.search {
        let winner = match s.winner() {
            Some(t) => format!(
                "; selected trial #{} (validation accuracy {})",
                t.index,
                pct(t.val_accuracy, 2)
            ),
            None => String::new(),
        };
        row(
            "Search",
            format!(
                "{}: {}{}",
                esc(&s.method),
                plural(s.trials.len(), "trial"),
                winner
            ),
        );
    }
    row(
        "Loss (val / test)",
        format!(
            "{} / {}",
            opt_num(r.validation.loss, 4),
            opt_num(r.test.loss, 4)
        ),
    );
    h.push_str("</tbody>\n</table>\n<h3>Configuration of the final head</h3>\n");
    if r.config.is_empty() {
        h.push_str("<p class=\"muted\">No configuration recorded.</p>\n");
    } else {
        h.push_str("<table>\n<thead><tr><th>Parameter</th><th>Value</th></tr></thead>\n<tbody>\n");
        for (k, v) in &r.config {
            w!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>\n",
                esc(k),
                esc(&value_text(v))
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</section>\n");
}

/// Opens a `<details>` element with a summary line, expanded if `open`.
fn details_open(h: &mut String, open: bool, summary: &str) {
    let open = if open { " open" } else { "" };
    w!(h, "<details{open}><summary>{}</summary>\n", esc(summary));
}

/// A note for lists cut at [`LIST_LIMIT`].
fn cut_note(h: &mut String, total: usize) {
    if total > LIST_LIMIT {
        w!(
            h,
            "<p class=\"muted\">… and {} more (the JSON report lists all).</p>\n",
            total - LIST_LIMIT
        );
    }
}

/// Data: per-class counts per split, duplicates, conflicts, skipped inputs.
fn data_section(h: &mut String, r: &TrainReport) {
    let d = &r.data;
    h.push_str("<section id=\"data\">\n<h2>Data</h2>\n");
    w!(
        h,
        "<p><code>{}</code> ({}), split: {}.</p>\n",
        esc(&d.source),
        esc(&d.kind),
        esc(&d.split)
    );
    if d.classes.is_empty() {
        h.push_str("<p class=\"muted\">No per-class counts recorded.</p>\n");
    } else {
        let max_total = d
            .classes
            .iter()
            .map(|c| c.train + c.val + c.test)
            .max()
            .unwrap_or(0)
            .max(1);
        h.push_str(
            "<table>\n<thead><tr><th>Class</th><th class=\"n\">Train</th><th class=\"n\">Validation</th>\
             <th class=\"n\">Test</th><th class=\"n\">Augmented</th><th class=\"n\">Total</th>\
             <th></th></tr></thead>\n<tbody>\n",
        );
        for c in &d.classes {
            let total = c.train + c.val + c.test;
            w!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{total}</td><td><span class=\"bar\" \
                 style=\"width:{}px\"></span></td></tr>\n",
                esc(&c.name),
                c.train,
                c.val,
                c.test,
                c.augmented,
                (total * 120).div_ceil(max_total)
            );
        }
        let (tr, va, te, au) = split_totals(d);
        w!(
            h,
            "</tbody>\n<tfoot><tr><td>Total</td><td class=\"n\">{tr}</td><td class=\"n\">{va}</td>\
             <td class=\"n\">{te}</td><td class=\"n\">{au}</td><td class=\"n\">{}</td><td></td></tr>\
             </tfoot>\n</table>\n",
            tr + va + te
        );
    }

    if d.duplicates.is_empty() {
        h.push_str("<p>No duplicates.</p>\n");
    } else {
        let n = d.duplicates.len();
        details_open(
            h,
            n <= OPEN_LIMIT,
            &format!("Duplicates: {n} groups (one sample kept per group)"),
        );
        h.push_str("<ul>\n");
        for g in d.duplicates.iter().take(LIST_LIMIT) {
            let dropped: Vec<String> = g
                .dropped
                .iter()
                .map(|p| format!("<code>{}</code>", esc(p)))
                .collect();
            w!(
                h,
                "<li>{}: kept <code>{}</code>, dropped {}</li>\n",
                esc(&g.label),
                esc(&g.kept),
                dropped.join(", ")
            );
        }
        h.push_str("</ul>\n");
        cut_note(h, n);
        h.push_str("</details>\n");
    }

    if d.conflicts.is_empty() {
        h.push_str("<p>No label conflicts.</p>\n");
    } else {
        let n = d.conflicts.len();
        details_open(
            h,
            n <= OPEN_LIMIT,
            &format!("Label conflicts: {n} (identical samples, different labels; dropped)"),
        );
        h.push_str("<ul>\n");
        for c in d.conflicts.iter().take(LIST_LIMIT) {
            let items: Vec<String> = c
                .items
                .iter()
                .map(|(p, l)| format!("<code>{}</code> ({})", esc(p), esc(l)))
                .collect();
            w!(h, "<li>{}</li>\n", items.join(", "));
        }
        h.push_str("</ul>\n");
        cut_note(h, n);
        h.push_str("</details>\n");
    }

    if d.skipped.is_empty() {
        h.push_str("<p>Nothing skipped.</p>\n");
    } else {
        let n = d.skipped.len();
        details_open(h, n <= OPEN_LIMIT, &format!("Skipped: {n} inputs"));
        h.push_str("<ul>\n");
        for s in d.skipped.iter().take(LIST_LIMIT) {
            w!(
                h,
                "<li><code>{}</code>: {}</li>\n",
                esc(&s.path),
                esc(&s.reason)
            );
        }
        h.push_str("</ul>\n");
        cut_note(h, n);
        h.push_str("</details>\n");
    }
    h.push_str("</section>\n");
}

/// Training: loss and accuracy curves with the best epoch marked, and the epoch table.
fn training_section(h: &mut String, r: &TrainReport) {
    h.push_str("<section id=\"training\">\n<h2>Training</h2>\n");
    if r.history.is_empty() {
        h.push_str("<p class=\"muted\">No epochs recorded.</p>\n</section>\n");
        return;
    }
    let marked = r.history.iter().any(|e| e.epoch == r.best_epoch);
    h.push_str("<div class=\"plots\">\n<figure>\n");
    h.push_str(&epoch_chart(
        "Loss",
        "loss",
        &r.history,
        |e| (e.train_loss, e.val_loss),
        r.best_epoch,
        false,
    ));
    h.push_str("</figure>\n<figure>\n");
    h.push_str(&epoch_chart(
        "Accuracy",
        "accuracy",
        &r.history,
        |e| (e.train_accuracy, e.val_accuracy),
        r.best_epoch,
        true,
    ));
    h.push_str("</figure>\n</div>\n");
    w!(
        h,
        "<p class=\"muted\">{}{}. {}</p>\n",
        plural(r.history.len(), "epoch"),
        if r.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        if marked {
            format!(
                "The kept weights are from epoch {} (dashed line).",
                r.best_epoch
            )
        } else {
            format!("Best epoch {} is not in the history.", r.best_epoch)
        }
    );
    details_open(
        h,
        false,
        &format!("Epoch table ({} epochs)", r.history.len()),
    );
    h.push_str(
        "<table>\n<thead><tr><th class=\"n\">Epoch</th><th class=\"n\">Train loss</th>\
         <th class=\"n\">Val loss</th><th class=\"n\">Train acc.</th><th class=\"n\">Val acc.</th>\
         <th class=\"n\">Learning rate</th></tr></thead>\n<tbody>\n",
    );
    for e in &r.history {
        w!(
            h,
            "<tr{}><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
            if e.epoch == r.best_epoch {
                " class=\"best\""
            } else {
                ""
            },
            e.epoch,
            num(e.train_loss, 4),
            num(e.val_loss, 4),
            pct(e.train_accuracy, 2),
            pct(e.val_accuracy, 2),
            if e.lr.is_finite() {
                format!("{:.3e}", e.lr)
            } else {
                DASH.into()
            }
        );
    }
    h.push_str("</tbody>\n</table>\n</details>\n</section>\n");
}

/// Evaluation: test confusion matrix and per-class tables (test, validation).
fn evaluation_section(h: &mut String, r: &TrainReport) {
    h.push_str("<section id=\"evaluation\">\n<h2>Evaluation</h2>\n");
    w!(
        h,
        "<h3>Test split: confusion matrix</h3>\n<p>{} samples, accuracy {}, macro-F1 {}, loss {}.</p>\n",
        r.test.samples,
        pct(r.test.accuracy, 2),
        pct(r.test.macro_f1, 2),
        opt_num(r.test.loss, 4)
    );
    h.push_str("<figure>\n");
    h.push_str(&confusion_svg(&r.test, &r.classes, "Test confusion matrix"));
    h.push_str(
        "<figcaption>Rows: true class; columns: predicted class; cells: sample counts. \
         Colour: share of the true class's samples (row-normalised, square-root scale), blue \
         on the diagonal (correct), red off it (errors).</figcaption>\n</figure>\n",
    );
    h.push_str("<h3>Test split: per class</h3>\n");
    class_table(h, &r.test);
    h.push_str("<h3>Validation split: per class</h3>\n");
    class_table(h, &r.validation);
    details_open(h, false, "Validation confusion matrix");
    h.push_str(&confusion_svg(
        &r.validation,
        &r.classes,
        "Validation confusion matrix",
    ));
    h.push_str("</details>\n</section>\n");
}

/// Per-class precision/recall/F1/support table with macro and accuracy footer.
fn class_table(h: &mut String, m: &Metrics) {
    if m.per_class.is_empty() {
        h.push_str("<p class=\"muted\">No classes.</p>\n");
        return;
    }
    h.push_str(
        "<table>\n<thead><tr><th>Class</th><th class=\"n\">Precision</th><th class=\"n\">Recall</th>\
         <th class=\"n\">F1</th><th class=\"n\">Support</th></tr></thead>\n<tbody>\n",
    );
    for c in &m.per_class {
        w!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>\n",
            esc(&c.name),
            pct(c.precision, 1),
            pct(c.recall, 1),
            pct(c.f1, 1),
            c.support
        );
    }
    w!(
        h,
        "</tbody>\n<tfoot><tr><td>Macro (classes with support)</td><td></td><td></td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n<tr><td>Accuracy</td><td></td><td></td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td></tr></tfoot>\n</table>\n",
        pct(m.macro_f1, 1),
        m.samples,
        pct(m.accuracy, 1),
        m.samples
    );
}

/// Search: accuracy by trial with running best and winner, and the trial table.
fn search_section(h: &mut String, s: &SearchSummary) {
    h.push_str("<section id=\"search\">\n<h2>Hyperparameter search</h2>\n");
    w!(
        h,
        "<p>{}: {} on {} threads, {} s.{}</p>\n",
        esc(&s.method),
        plural(s.trials.len(), "trial"),
        s.threads,
        num(s.seconds, 1),
        match s.winner() {
            Some(t) => format!(
                " Selected: trial #{} ({}), validation accuracy {}.",
                t.index,
                esc(&params_text(&t.params)),
                pct(t.val_accuracy, 2)
            ),
            None => String::new(),
        }
    );
    if s.trials.is_empty() {
        h.push_str("<p class=\"muted\">The search ran no trials.</p>\n</section>\n");
        return;
    }
    h.push_str("<figure>\n");
    h.push_str(&search_chart(s));
    let unplotted = s
        .trials
        .iter()
        .filter(|t| !t.val_accuracy.is_finite())
        .count();
    w!(
        h,
        "<figcaption>Validation accuracy per trial, the running best (step line) and the \
         selected trial (ringed).{}</figcaption>\n</figure>\n",
        if unplotted > 0 {
            format!(" {unplotted} trials without a finite accuracy are not plotted.")
        } else {
            String::new()
        }
    );
    let keys: BTreeSet<&String> = s.trials.iter().flat_map(|t| t.params.keys()).collect();
    details_open(
        h,
        s.trials.len() <= 3 * OPEN_LIMIT,
        &format!("All {} trials", s.trials.len()),
    );
    h.push_str("<table>\n<thead><tr><th class=\"n\">Trial</th>");
    for k in &keys {
        w!(h, "<th>{}</th>", esc(k));
    }
    h.push_str(
        "<th class=\"n\">Val acc.</th><th class=\"n\">Val loss</th><th class=\"n\">Epochs</th>\
         <th class=\"n\">Seconds</th></tr></thead>\n<tbody>\n",
    );
    let mut order: Vec<usize> = (0..s.trials.len()).collect();
    order.sort_by_key(|&i| (s.trials[i].index, i));
    for i in order {
        let t = &s.trials[i];
        w!(
            h,
            "<tr{}><td class=\"n\">{}</td>",
            if i == s.best { " class=\"best\"" } else { "" },
            t.index
        );
        for k in &keys {
            w!(
                h,
                "<td>{}</td>",
                t.params
                    .get(*k)
                    .map_or_else(String::new, |v| esc(&value_text(v)))
            );
        }
        w!(
            h,
            "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
            pct(t.val_accuracy, 2),
            num(t.val_loss, 4),
            t.epochs,
            num(t.seconds, 1)
        );
    }
    h.push_str("</tbody>\n</table>\n</details>\n</section>\n");
}

// ---------------------------------------------------------------------------------------
// Plots (plotters, SVG backend, no font feature: see the module doc)
// ---------------------------------------------------------------------------------------

/// Colour of training curves and trial points.
const BLUE_C: RGBColor = RGBColor(31, 119, 180);
/// Colour of validation curves and the running best.
const ORANGE_C: RGBColor = RGBColor(230, 115, 0);
/// Colour of the best-epoch marker and the selected trial.
const GREEN_C: RGBColor = RGBColor(34, 139, 34);
/// Text colour.
const INK: RGBColor = RGBColor(31, 41, 51);
/// Grid and frame colour.
const GRID: RGBColor = RGBColor(217, 226, 236);
/// Plot width and height in SVG pixels (scaled down by CSS on narrow screens).
const PLOT_W: u32 = 560;
const PLOT_H: u32 = 320;
/// Curves with more points than this get no point markers.
const MARKER_LIMIT: usize = 60;
/// Confusion matrices with more classes are not drawn.
const HEATMAP_LIMIT: usize = 100;

type PlotResult = Result<(), Box<dyn Error>>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A sans-serif text style whose rendered size is `px` SVG pixels (plotters' SVG
/// backend writes `font-size` as the requested size / 1.24).
fn font(px: f64) -> TextStyle<'static> {
    ("sans-serif", px * 1.24).into_font().color(&INK)
}

/// Runs `draw` on an SVG canvas of `width`×`height` and returns the `<svg>` element ready
/// to inline in HTML, or an error paragraph (never panics on a plotting error).
fn svg_plot(
    width: u32,
    height: u32,
    label: &str,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> PlotResult,
) -> String {
    let mut buf = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut buf, (width, height)).into_drawing_area();
        draw(&root).and_then(|()| root.present().map_err(Into::into))
    };
    match result {
        // Inline SVG in HTML5 needs no namespace declaration: drop it, so the page has no URL.
        Ok(()) => buf
            .replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
            .replacen(
                "<svg ",
                &format!(
                    "<svg class=\"plot\" role=\"img\" aria-label=\"{}\" ",
                    esc(label)
                ),
                1,
            ),
        Err(e) => format!(
            "<p class=\"err\">{}: plot not drawn ({})</p>\n",
            esc(label),
            esc(&e.to_string())
        ),
    }
}

/// The maximal runs of finite points: a NaN breaks a curve instead of crashing it.
fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for &(x, y) in points {
        if y.is_finite() {
            run.push((x, y));
        } else if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// An x range covering the integers `xs`, widened by `pad` on both sides and never empty
/// (a single value gets ±1).
fn x_range(xs: impl Iterator<Item = usize>, pad: f64) -> (f64, f64) {
    let (lo, hi) = xs.fold((usize::MAX, 0), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = (lo as f64, hi as f64);
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - pad.max(1.0), hi + pad.max(1.0))
    } else {
        (lo - pad, hi + pad)
    }
}

/// Labels integral x values ("3") and leaves others blank: epochs and trials are counted.
fn integer_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// A y range for fractions in \[0, 1\]: up to 1, down to just below the smallest value (so a
/// curve between 90% and 99% is readable), in steps of 5%.
fn fraction_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = finite_bounds(values).unwrap_or((0.0, 1.0));
    let top = hi.max(1.0);
    let bottom = (((lo - 0.02) * 20.0).floor() / 20.0).clamp(0.0_f64.min(lo), top - 0.05);
    (bottom, top)
}

/// A y range for losses: from 0 (or the minimum, if negative) to 8% above the maximum.
fn loss_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = finite_bounds(values).unwrap_or((0.0, 1.0));
    let bottom = lo.min(0.0);
    let top = if hi > bottom {
        hi + (hi - bottom) * 0.08
    } else {
        bottom + 1.0
    };
    (bottom, top)
}

/// (min, max) of the finite values, `None` without any.
fn finite_bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |acc, v| {
        Some(acc.map_or((v, v), |(lo, hi): (f64, f64)| (lo.min(v), hi.max(v))))
    })
}

/// `v` clamped into `lo..=hi`, NaN if not finite (a gap in the curve). Plotters overflows
/// on coordinates far outside the axis range, which can only happen when [`sane`] replaced
/// an absurd range.
fn fit(v: f64, (lo, hi): (f64, f64)) -> f64 {
    if v.is_finite() {
        v.clamp(lo, hi)
    } else {
        f64::NAN
    }
}

/// Decimals that tell apart ticks about `span / 5` apart.
fn tick_decimals(span: f64) -> usize {
    if span.is_finite() && span > 0.0 {
        (1.0 - (span / 5.0).log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        2
    }
}

/// An axis tick value: fixed-point with `decimals`, scientific when huge, "–" if not finite.
fn tick_text(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        DASH.into()
    } else if v.abs() >= 1e5 {
        format!("{v:.1e}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// `(lo, hi)` if it is a usable axis range (finite, non-empty span), else (0, 1): absurd
/// values (say a loss of 1e308) give a useless plot rather than a panic.
fn sane(range: (f64, f64)) -> (f64, f64) {
    let span = range.1 - range.0;
    if span.is_finite() && span > 0.0 {
        range
    } else {
        (0.0, 1.0)
    }
}

/// A chart with caption, frame, grid and labelled axes; `percent` formats y as percentages.
fn framed_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x: (f64, f64),
    y: (f64, f64),
    percent: bool,
) -> Result<Chart<'a, 'b>, Box<dyn Error>> {
    let ((x_lo, x_hi), (y_lo, y_hi)) = (sane(x), sane(y));
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, font(15.0))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(58)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
    let decimals = if percent {
        tick_decimals((y_hi - y_lo) * 100.0)
    } else {
        tick_decimals(y_hi - y_lo)
    };
    let y_fmt = move |v: &f64| {
        if percent && (v * 100.0).is_finite() {
            tick_text(v * 100.0, decimals.saturating_sub(1)) + "%"
        } else {
            tick_text(*v, decimals)
        }
    };
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(INK.mix(0.6))
        .label_style(font(11.0))
        .axis_desc_style(font(12.0))
        .x_desc(x_desc)
        .y_desc(y_desc)
        // About one label per integer, at most 10: plotters then steps by whole numbers.
        .x_labels(((x_hi - x_lo).floor() as usize + 1).clamp(2, 10))
        .y_labels(6)
        .x_label_formatter(&integer_label)
        .y_label_formatter(&y_fmt)
        .draw()?;
    Ok(chart)
}

/// Draws a named curve (broken at non-finite values) with a legend entry.
fn curve(
    chart: &mut Chart<'_, '_>,
    name: &str,
    color: RGBColor,
    points: &[(f64, f64)],
) -> PlotResult {
    let markers = points.len() <= MARKER_LIMIT;
    let runs = finite_runs(points);
    let legend = move |(x, y): (i32, i32)| {
        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
    };
    if runs.is_empty() {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(name)
            .legend(legend);
    }
    for (i, run) in runs.iter().enumerate() {
        let size = if markers || run.len() == 1 { 3 } else { 0 };
        let drawn = chart.draw_series(
            LineSeries::new(run.iter().copied(), color.stroke_width(2)).point_size(size),
        )?;
        if i == 0 {
            drawn.label(name).legend(legend);
        }
    }
    Ok(())
}

/// Train and validation curves of one quantity per epoch, with the best epoch marked.
fn epoch_chart(
    title: &str,
    y_desc: &str,
    history: &[Epoch],
    values: fn(&Epoch) -> (f64, f64),
    best_epoch: usize,
    percent: bool,
) -> String {
    let train: Vec<(f64, f64)> = history
        .iter()
        .map(|e| (e.epoch as f64, values(e).0))
        .collect();
    let val: Vec<(f64, f64)> = history
        .iter()
        .map(|e| (e.epoch as f64, values(e).1))
        .collect();
    let all = train.iter().chain(&val).map(|p| p.1);
    let y = sane(if percent {
        fraction_range(all)
    } else {
        loss_range(all)
    });
    let train: Vec<(f64, f64)> = train.into_iter().map(|(x, v)| (x, fit(v, y))).collect();
    let val: Vec<(f64, f64)> = val.into_iter().map(|(x, v)| (x, fit(v, y))).collect();
    let x = x_range(history.iter().map(|e| e.epoch), 0.0);
    let best = history.iter().find(|e| e.epoch == best_epoch);
    svg_plot(PLOT_W, PLOT_H, &format!("{title} per epoch"), |root| {
        let mut chart = framed_chart(root, title, "epoch", y_desc, x, y, percent)?;
        curve(&mut chart, "train", BLUE_C, &train)?;
        curve(&mut chart, "validation", ORANGE_C, &val)?;
        if let Some(b) = best {
            let bx = b.epoch as f64;
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(bx, y.0), (bx, y.1)],
                    5,
                    4,
                    GREEN_C.stroke_width(1),
                ))?
                .label(format!("best (epoch {})", b.epoch))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], GREEN_C.stroke_width(1))
                });
            let bv = fit(values(b).1, y);
            if bv.is_finite() {
                chart.draw_series(std::iter::once(Circle::new(
                    (bx, bv),
                    6,
                    GREEN_C.stroke_width(2),
                )))?;
            }
        }
        chart
            .configure_series_labels()
            .position(if percent {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .background_style(WHITE.mix(0.85))
            .border_style(GRID)
            .label_font(font(11.0))
            .draw()?;
        Ok(())
    })
}

/// Validation accuracy by trial index, the running best as a step line, the winner ringed.
fn search_chart(s: &SearchSummary) -> String {
    let mut order: Vec<usize> = (0..s.trials.len()).collect();
    order.sort_by_key(|&i| (s.trials[i].index, i));
    let y = sane(fraction_range(s.trials.iter().map(|t| t.val_accuracy)));
    let points: Vec<(f64, f64)> = order
        .iter()
        .map(|&i| (s.trials[i].index as f64, fit(s.trials[i].val_accuracy, y)))
        .collect();
    let mut steps: Vec<(f64, f64)> = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for &(x, v) in &points {
        if v.is_finite() && v > best {
            if best.is_finite() {
                steps.push((x, best));
            }
            best = v;
        }
        if best.is_finite() {
            steps.push((x, best));
        }
    }
    let winner = s
        .winner()
        .map(|t| (t.index as f64, fit(t.val_accuracy, y)))
        .filter(|p| p.1.is_finite());
    let x = x_range(s.trials.iter().map(|t| t.index), 0.5);
    svg_plot(
        PLOT_W + 80,
        PLOT_H,
        "Validation accuracy per search trial",
        |root| {
            let mut chart = framed_chart(
                root,
                "Search trials",
                "trial",
                "validation accuracy",
                x,
                y,
                true,
            )?;
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|p| p.1.is_finite())
                        .map(|&p| Circle::new(p, 3, BLUE_C.mix(0.75).filled())),
                )?
                .label("trial")
                .legend(|(x, y)| Circle::new((x + 9, y), 3, BLUE_C.filled()));
            chart
                .draw_series(LineSeries::new(steps, ORANGE_C.stroke_width(2)))?
                .label("running best")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], ORANGE_C.stroke_width(2))
                });
            if let Some(p) = winner {
                chart
                    .draw_series(std::iter::once(Circle::new(p, 7, GREEN_C.stroke_width(2))))?
                    .label("selected")
                    .legend(|(x, y)| Circle::new((x + 9, y), 5, GREEN_C.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(GRID)
                .label_font(font(11.0))
                .draw()?;
            Ok(())
        },
    )
}

/// `base` blended with white: `t` = 0 gives white, 1 gives `base`.
fn tint(base: RGBColor, t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mix = |c: u8| (255.0 - (255.0 - f64::from(c)) * t).round() as u8;
    RGBColor(mix(base.0), mix(base.1), mix(base.2))
}

/// The confusion matrix as a heatmap: counts in the cells, class names on both axes,
/// colour by row share (blue diagonal, red errors). Drawn on the raw pixel canvas:
/// categorical axes are simpler placed by hand than through plotters' segmented ranges.
fn confusion_svg(m: &Metrics, classes: &[String], label: &str) -> String {
    let n = m.confusion.len();
    if n == 0 {
        return "<p class=\"muted\">No confusion matrix (no classes).</p>\n".into();
    }
    if n > HEATMAP_LIMIT {
        return format!(
            "<p class=\"muted\">{n} classes: too many for a heatmap; the JSON report has the matrix.</p>\n"
        );
    }
    let counts_note = if (520 / n) < 16 {
        "<p class=\"muted\">Cells too small for counts: the JSON report has them.</p>\n"
    } else {
        ""
    };
    let cell = (520 / n as i32).clamp(8, 60);
    let label_px = if cell >= 16 {
        12.0
    } else {
        (f64::from(cell) - 2.0).max(7.0)
    };
    let count_px = (f64::from(cell) * 0.36).clamp(8.0, 13.0);
    let names: Vec<String> = (0..n)
        .map(|i| clip(&class_name(m, classes, i), 20))
        .collect();
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(1) as f64;
    let label_w = (longest * label_px * 0.56).ceil() as i32 + 10;
    let (left, top) = (label_w + 26, 12);
    let side = cell * n as i32;
    let (width, height) = (left + side + 14, top + side + label_w + 30);
    let cell_at = |i: usize, j: usize| m.confusion[i].get(j).copied().unwrap_or(0);
    let svg = svg_plot(width as u32, height as u32, label, |root| {
        root.fill(&WHITE)?;
        for i in 0..n {
            let row_total: usize = m.confusion[i].iter().sum();
            for j in 0..n {
                let v = cell_at(i, j);
                // Square root: a 4% confusion still shows as a visible tint.
                let t = if row_total == 0 {
                    0.0
                } else {
                    (v as f64 / row_total as f64).sqrt()
                };
                let fill = tint(
                    if i == j {
                        BLUE_C
                    } else {
                        RGBColor(214, 39, 40)
                    },
                    t,
                );
                let (x0, y0) = (left + j as i32 * cell, top + i as i32 * cell);
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell, y0 + cell)],
                    fill.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell, y0 + cell)],
                    WHITE.stroke_width(1),
                ))?;
                if cell >= 16 {
                    let color = if t > 0.7 {
                        &WHITE
                    } else if v == 0 {
                        &GRID
                    } else {
                        &INK
                    };
                    let style = ("sans-serif", count_px * 1.24)
                        .into_font()
                        .color(color)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    root.draw(&Text::new(
                        v.to_string(),
                        (x0 + cell / 2, y0 + cell / 2),
                        style,
                    ))?;
                }
            }
        }
        root.draw(&Rectangle::new(
            [(left, top), (left + side, top + side)],
            INK.mix(0.5).stroke_width(1),
        ))?;
        let row_style = font(label_px).pos(Pos::new(HPos::Right, VPos::Center));
        let col_style = font(label_px)
            .pos(Pos::new(HPos::Right, VPos::Center))
            .transform(FontTransform::Rotate270);
        for (i, name) in names.iter().enumerate() {
            let mid = i as i32 * cell + cell / 2;
            root.draw(&Text::new(
                name.clone(),
                (left - 6, top + mid),
                row_style.clone(),
            ))?;
            root.draw(&Text::new(
                name.clone(),
                (left + mid, top + side + 6),
                col_style.clone(),
            ))?;
        }
        let title = font(12.0).pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(
            "predicted",
            (left + side / 2, height - 12),
            title.clone(),
        ))?;
        root.draw(&Text::new(
            "true",
            (10, top + side / 2),
            title.transform(FontTransform::Rotate270),
        ))?;
        Ok(())
    });
    svg + counts_note
}

// ---------------------------------------------------------------------------------------
// Terminal summaries
// ---------------------------------------------------------------------------------------

/// `closed-form LDA (validation accuracy 95.00 % against the gradient head's 91.25 %; temperature 1.3)`.
fn choice_text(h: &HeadChoice) -> String {
    match h.closed_form {
        Some((acc, _, t)) => format!(
            "{} (validation accuracy: closed-form LDA {}, temperature {}; gradient {})",
            h.kept,
            pct(acc, 2),
            num(f64::from(t), 3),
            pct(h.gradient.0, 2)
        ),
        None => format!("{} (no closed-form candidate)", h.kept),
    }
}

impl TrainReport {
    /// The text of the `Display` summary, line by line.
    fn write_text(&self, f: &mut String) -> fmt::Result {
        let d = &self.data;
        let (tr, va, te, au) = split_totals(d);
        writeln!(
            f,
            "{}: {} -> {}",
            self.tool, self.bundle_in, self.bundle_out
        )?;
        writeln!(
            f,
            "data       {} from {}: {} found, {} used ({} duplicate groups, {} conflicts, {} skipped)",
            d.kind,
            d.source,
            d.found,
            d.used,
            d.duplicates.len(),
            d.conflicts.len(),
            d.skipped.len()
        )?;
        let augment = if d.augment.is_empty() {
            String::new()
        } else {
            format!(
                "; augment {} x{} (+{au})",
                d.augment.join(","),
                d.augment_copies
            )
        };
        writeln!(
            f,
            "split      {}: train {tr}, val {va}, test {te}{augment}",
            d.split
        )?;
        let mut names = String::new();
        for (i, c) in self.classes.iter().enumerate() {
            let c = clip(c, 24);
            if names.len() + c.len() > 80 {
                let _ = write!(names, ", … (+{})", self.classes.len() - i);
                break;
            }
            if i > 0 {
                names.push_str(", ");
            }
            names.push_str(&c);
        }
        writeln!(f, "classes    {}: {names}", self.classes.len())?;
        let e = &self.embedding;
        writeln!(
            f,
            "embeddings {} computed, {} cached ({} hits), {} threads, {} s ({}/s)",
            e.computed,
            e.cached,
            share(e.cached, e.computed + e.cached),
            e.threads,
            num(e.seconds, 1),
            num(e.samples_per_s, 1)
        )?;
        if let Some(s) = &self.search {
            write!(
                f,
                "search     {}, {}, {} threads, {} s",
                s.method,
                plural(s.trials.len(), "trial"),
                s.threads,
                num(s.seconds, 1)
            )?;
            match s.winner() {
                Some(t) => writeln!(
                    f,
                    "; winner #{} (val {}): {}",
                    t.index,
                    pct(t.val_accuracy, 2),
                    params_text(&t.params)
                )?,
                None => writeln!(f)?,
            }
        }
        write!(
            f,
            "training   {}{}, best epoch {}",
            plural(self.history.len(), "epoch"),
            if self.stopped_early {
                " (stopped early)"
            } else {
                ""
            },
            self.best_epoch
        )?;
        if let Some(b) = self.history.iter().find(|e| e.epoch == self.best_epoch) {
            write!(
                f,
                " (val loss {}, val acc {})",
                num(b.val_loss, 4),
                pct(b.val_accuracy, 2)
            )?;
        }
        writeln!(f, ", {} s", num(self.train_seconds, 1))?;
        if let Some(h) = &self.head {
            writeln!(f, "head       {}", choice_text(h))?;
        }
        for (name, m) in [("validation", &self.validation), ("test", &self.test)] {
            writeln!(
                f,
                "{name:<10} accuracy {}, macro-F1 {}, loss {} ({} samples)",
                pct(m.accuracy, 2),
                pct(m.macro_f1, 2),
                opt_num(m.loss, 4),
                m.samples
            )?;
        }
        let pc = &self.test.per_class;
        if !pc.is_empty() && pc.len() <= 20 {
            writeln!(f, "test F1 per class:")?;
            let w = pc
                .iter()
                .map(|c| c.name.chars().count())
                .max()
                .unwrap_or(0)
                .min(24);
            for c in pc {
                writeln!(
                    f,
                    "  {:<w$}  {:>6}  (support {})",
                    clip(&c.name, 24),
                    pct(c.f1, 1),
                    c.support
                )?;
            }
        } else if !pc.is_empty() {
            writeln!(
                f,
                "per-class metrics of {} classes: see the HTML or JSON report",
                pc.len()
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for TrainReport {
    /// A compact terminal summary: data, cache, search winner, best epoch, validation and
    /// test metrics, and per-class test F1 (up to 20 classes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        self.write_text(&mut text)?;
        // No trailing newline, as usual for `Display`: callers use `println!("{report}")`.
        f.write_str(text.trim_end_matches('\n'))
    }
}

impl EvalReport {
    /// The text of the `Display` summary, line by line.
    fn write_text(&self, f: &mut String) -> fmt::Result {
        let m = &self.metrics;
        writeln!(f, "bundle   {}", self.bundle)?;
        writeln!(
            f,
            "data     {} ({} samples, {} skipped)",
            self.data,
            m.samples,
            self.skipped.len()
        )?;
        for s in self.skipped.iter().take(5) {
            writeln!(f, "  skipped {}: {}", s.path, s.reason)?;
        }
        if self.skipped.len() > 5 {
            writeln!(f, "  … and {} more", self.skipped.len() - 5)?;
        }
        write!(
            f,
            "accuracy {} ({}/{}), macro-F1 {}, loss {}",
            pct(m.accuracy, 2),
            m.correct(),
            m.samples,
            pct(m.macro_f1, 2),
            opt_num(m.loss, 4)
        )?;
        match m.latency_us {
            Some(l) => writeln!(f, ", latency {} µs/sample", num(l, 1))?,
            None => writeln!(f)?,
        }
        if m.per_class.is_empty() {
            return Ok(());
        }
        let w = m
            .per_class
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(5, 24);
        writeln!(
            f,
            "{:<w$}  {:>9}  {:>7}  {:>7}  {:>7}",
            "class", "precision", "recall", "F1", "support"
        )?;
        for c in &m.per_class {
            writeln!(
                f,
                "{:<w$}  {:>9}  {:>7}  {:>7}  {:>7}",
                clip(&c.name, 24),
                pct(c.precision, 1),
                pct(c.recall, 1),
                pct(c.f1, 1),
                c.support
            )?;
        }
        let n = m.confusion.len();
        if n > 0 && n <= 12 {
            // Columns are numbered like the rows: names would make the table too wide.
            writeln!(f, "confusion (rows: true, columns: predicted)")?;
            let names: Vec<String> = (0..n)
                .map(|i| clip(&class_name(m, &self.classes, i), 24))
                .collect();
            let max = m.confusion.iter().flatten().max().copied().unwrap_or(0);
            let cw = max.to_string().len().max(n.to_string().len());
            let rw = names.iter().map(|s| s.chars().count()).max().unwrap_or(1) + 3;
            write!(f, "{:<rw$}", "")?;
            for j in 0..n {
                write!(f, " {j:>cw$}")?;
            }
            writeln!(f)?;
            for (i, name) in names.iter().enumerate() {
                write!(f, "{:<rw$}", format!("{i:>2} {name}"))?;
                for j in 0..n {
                    write!(f, " {:>cw$}", m.confusion[i].get(j).copied().unwrap_or(0))?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for EvalReport {
    /// Accuracy, macro-F1, loss, latency, skipped inputs, the per-class table and (up to 12
    /// classes) the confusion matrix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        self.write_text(&mut text)?;
        // No trailing newline, as usual for `Display`: callers use `println!("{report}")`.
        f.write_str(text.trim_end_matches('\n'))
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// a: support 3, predicted 4 times (2 right); b: support 2, never predicted;
    /// c: no support, predicted once.
    fn example() -> (Vec<String>, Vec<usize>, Vec<usize>) {
        (
            names(&["a", "b", "c"]),
            vec![0, 0, 0, 1, 1],
            vec![0, 0, 2, 0, 0],
        )
    }

    #[test]
    fn metrics_by_hand() {
        let (classes, truth, predicted) = example();
        let probs = [0.5f32, 0.25, 0.0, 1.0, 0.5];
        let m = Metrics::compute(&classes, &truth, &predicted, Some(&probs)).unwrap();
        assert_eq!(m.samples, 5);
        assert_eq!(
            m.confusion,
            vec![vec![2, 0, 1], vec![2, 0, 0], vec![0, 0, 0]]
        );
        assert!(close(m.accuracy, 0.4));
        assert_eq!(m.correct(), 2);
        let [a, b, c] = &m.per_class[..] else {
            panic!("3 classes")
        };
        assert_eq!(
            (a.name.as_str(), a.support, b.support, c.support),
            ("a", 3, 2, 0)
        );
        assert!(close(a.precision, 0.5) && close(a.recall, 2.0 / 3.0) && close(a.f1, 4.0 / 7.0));
        // Never predicted: precision 0 (zero_division=0), recall 0/2.
        assert!(close(b.precision, 0.0) && close(b.recall, 0.0) && close(b.f1, 0.0));
        // No support: recall 0 (zero_division=0), precision 0/1.
        assert!(close(c.precision, 0.0) && close(c.recall, 0.0) && close(c.f1, 0.0));
        // Mean over a and b only (c has no support).
        assert!(close(m.macro_f1, (4.0 / 7.0 + 0.0) / 2.0));
        let expected_loss = (2f64.ln() + 4f64.ln() - (1e-12f64).ln() + 0.0 + 2f64.ln()) / 5.0;
        assert!(close(m.loss.unwrap(), expected_loss), "{:?}", m.loss);
        assert_eq!(m.latency_us, None);

        let perfect = Metrics::compute(&classes, &truth, &truth, None).unwrap();
        assert!(close(perfect.accuracy, 1.0) && close(perfect.macro_f1, 1.0));
        assert_eq!(perfect.loss, None);
    }

    #[test]
    fn metrics_errors_and_empty() {
        let classes = names(&["a", "b", "c"]);
        let err = Metrics::compute(&classes, &[0, 3], &[0, 0], None).unwrap_err();
        assert!(err.contains("truth[1]") && err.contains('3'), "{err}");
        let err = Metrics::compute(&classes, &[0, 1], &[0, 7], None).unwrap_err();
        assert!(err.contains("predicted[1]") && err.contains('7'), "{err}");
        assert!(Metrics::compute(&classes, &[0, 1], &[0], None).is_err());
        assert!(Metrics::compute(&classes, &[0, 1], &[0, 1], Some(&[0.5])).is_err());
        assert!(Metrics::compute(&[], &[0], &[0], None).is_err());

        let m = Metrics::compute(&classes, &[], &[], Some(&[])).unwrap();
        assert_eq!(
            (m.samples, m.accuracy, m.macro_f1, m.loss),
            (0, 0.0, 0.0, None)
        );
        assert_eq!(m.per_class.len(), 3);
        let nan = Metrics::compute(&classes, &[0], &[0], Some(&[f32::NAN])).unwrap();
        assert!(nan.loss.unwrap().is_nan());
    }

    fn sample_report() -> TrainReport {
        let classes = names(&["cat", "<b>&", "bird"]);
        let truth = vec![0, 0, 0, 1, 1, 2, 2, 2, 2];
        let predicted = vec![0, 0, 1, 1, 1, 2, 2, 0, 2];
        let mut test = Metrics::compute(&classes, &truth, &predicted, Some(&[0.9; 9])).unwrap();
        test.latency_us = Some(812.5);
        let validation = Metrics::compute(&classes, &truth, &truth, None).unwrap();
        let history = (1..=12)
            .map(|e| Epoch {
                epoch: e,
                train_loss: 1.2 / e as f64,
                train_accuracy: 1.0 - 0.5 / e as f64,
                val_loss: 1.1 / e as f64 + 0.01 * e as f64,
                val_accuracy: 0.9 - 0.3 / e as f64,
                lr: 1e-3,
            })
            .collect();
        let trials = (0..8)
            .map(|i| TrialRecord {
                index: i,
                params: BTreeMap::from([
                    ("lr".to_string(), json!(10f64.powi(-(i as i32 % 4) - 1))),
                    (
                        "head".to_string(),
                        json!(if i % 2 == 0 { "linear" } else { "mlp<2>" }),
                    ),
                ]),
                val_accuracy: 0.6 + 0.04 * ((i * 5) % 8) as f64,
                val_loss: 0.5,
                epochs: 10,
                seconds: 1.5,
            })
            .collect();
        TrainReport {
            tool: "finetune-head 0.1.0".into(),
            created_unix: 1_735_787_045,
            bundle_in: "in/model.bundle".into(),
            bundle_out: "out/a&b.bundle".into(),
            classes: classes.clone(),
            data: DataSummary {
                source: "data/<pets>".into(),
                kind: "images".into(),
                found: 20,
                used: 17,
                duplicates: vec![DuplicateGroup {
                    label: "cat".into(),
                    kept: "cat/1.png".into(),
                    dropped: vec!["cat/1 copy.png".into()],
                }],
                conflicts: vec![Conflict {
                    items: vec![
                        ("x.png".into(), "cat".into()),
                        ("y.png".into(), "<b>&".into()),
                    ],
                }],
                skipped: (0..15)
                    .map(|i| Skipped {
                        path: format!("bad{i}.gif"),
                        reason: "not PNG/JPEG".into(),
                    })
                    .collect(),
                split: "stratified 70/15/15, seed 1".into(),
                classes: classes
                    .iter()
                    .map(|c| ClassCount {
                        name: c.clone(),
                        train: 5,
                        val: 1,
                        test: 3,
                        augmented: 10,
                    })
                    .collect(),
                augment: vec!["crop".into(), "rotate".into()],
                augment_copies: 2,
            },
            embedding: EmbedSummary {
                backbone_sha256: "ab".repeat(32),
                computed: 12,
                cached: 5,
                threads: 4,
                seconds: 2.5,
                samples_per_s: 4.8,
            },
            config: BTreeMap::from([
                ("lr".to_string(), json!(0.001)),
                ("head".to_string(), json!("linear")),
                ("balance".to_string(), json!(true)),
            ]),
            history,
            best_epoch: 9,
            stopped_early: true,
            train_seconds: 3.25,
            search: Some(SearchSummary {
                method: "random".into(),
                trials,
                best: 3,
                threads: 4,
                seconds: 12.0,
            }),
            head: Some(HeadChoice {
                kept: crate::closed_form::CLOSED_FORM.into(),
                gradient: (0.9125, 0.31),
                closed_form: Some((0.95, 0.2, 1.25)),
            }),
            validation,
            test,
        }
    }

    /// Checks that every non-void element is closed in order (a small well-formedness test).
    fn assert_balanced(html: &str) {
        const VOID: &[&str] = &["meta", "br", "hr", "img", "input", "link", "wbr", "col"];
        let mut stack: Vec<String> = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find('<') {
            let end = start + rest[start..].find('>').expect("unclosed tag");
            let tag = &rest[start + 1..end];
            rest = &rest[end + 1..];
            if tag.starts_with('!') || tag.ends_with('/') {
                continue;
            }
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(!name.is_empty(), "bad tag <{tag}>");
            if tag.starts_with('/') {
                assert_eq!(
                    stack.pop().as_deref(),
                    Some(name.as_str()),
                    "mismatched </{name}>"
                );
            } else if !VOID.contains(&name.as_str()) {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    fn check_page(page: &str) {
        assert_balanced(page);
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "external URL in page"
        );
        assert!(!page.contains("class=\"err\""), "a plot failed");
        assert!(
            !page.contains("NaN") && !page.contains("inf"),
            "raw non-finite number"
        );
    }

    #[test]
    fn html_full_report() {
        let page = html(&sample_report());
        check_page(&page);
        assert!(page.starts_with("<!DOCTYPE html>"));
        // Loss, accuracy, test and validation confusion matrices, search.
        assert_eq!(page.matches("<svg").count(), 5);
        assert!(page.contains("&lt;b&gt;&amp;") && !page.contains("<b>&"));
        assert!(page.contains("data/&lt;pets&gt;") && page.contains("mlp&lt;2&gt;"));
        assert!(page.contains("best (epoch 9)"));
        assert!(page.contains("2025-01-02 03:04 UTC"));
        for id in ["summary", "data", "training", "evaluation", "search"] {
            assert!(page.contains(&format!("<section id=\"{id}\">")), "{id}");
        }
        // 15 skipped inputs: collapsed; 1 duplicate group: open.
        assert!(page.contains("<details><summary>Skipped: 15 inputs"));
        assert!(page.contains("<details open><summary>Duplicates: 1 groups"));
    }

    #[test]
    fn html_edge_cases() {
        // No epochs, one class, empty search, empty test split, NaN everywhere.
        let one = names(&["only"]);
        let mut r = sample_report();
        r.classes = one.clone();
        r.data.classes.truncate(1);
        r.data.skipped.clear();
        r.history.clear();
        r.search = Some(SearchSummary {
            method: "grid".into(),
            trials: vec![],
            best: 0,
            threads: 1,
            seconds: 0.0,
        });
        r.validation = Metrics::compute(&one, &[0, 0], &[0, 0], None).unwrap();
        r.test = Metrics::compute(&one, &[], &[], None).unwrap();
        r.embedding.samples_per_s = f64::NAN;
        r.train_seconds = f64::INFINITY;
        let page = html(&r);
        check_page(&page);
        assert!(page.contains("No epochs recorded") && page.contains("ran no trials"));
        assert!(r.to_string().contains("best epoch"));

        // NaN history and trials, best epoch not in history, winner out of range, ragged matrix.
        let mut r = sample_report();
        for e in r.history.iter_mut().skip(3).take(2) {
            e.val_loss = f64::NAN;
            e.val_accuracy = f64::NAN;
        }
        r.history.iter_mut().for_each(|e| e.train_loss = f64::NAN);
        r.best_epoch = 99;
        let s = r.search.as_mut().unwrap();
        s.trials.iter_mut().for_each(|t| t.val_accuracy = f64::NAN);
        s.best = 42;
        r.test.accuracy = f64::NAN;
        r.test.confusion[1].pop();
        r.test.per_class.clear();
        let page = html(&r);
        check_page(&page);
        assert!(page.contains("Best epoch 99 is not in the history"));
        assert!(r.to_string().contains("best epoch"));

        // A single epoch, no classes at all, no search.
        let mut r = sample_report();
        r.history.truncate(1);
        r.best_epoch = 1;
        r.classes.clear();
        r.search = None;
        r.test = Metrics::compute(&[], &[], &[], None).unwrap();
        r.validation = r.test.clone();
        let page = html(&r);
        check_page(&page);
        assert!(!page.contains("id=\"search\""));
        assert!(r.to_string().contains("best epoch"));
    }

    #[test]
    fn html_extremes() {
        // Absurd values, many epochs, classes without cell counts, too many for a heatmap.
        let mut r = sample_report();
        r.history = (0..1000)
            .map(|e| Epoch {
                epoch: e,
                train_loss: if e == 3 { 1e308 } else { -1e308 },
                train_accuracy: -2.0,
                val_loss: f64::INFINITY,
                val_accuracy: 7.0,
                lr: f64::NAN,
            })
            .collect();
        r.best_epoch = 999;
        for (n, heatmap) in [(40, true), (150, false)] {
            let classes: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
            let truth: Vec<usize> = (0..n).collect();
            r.test = Metrics::compute(&classes, &truth, &truth, None).unwrap();
            r.classes = classes;
            let page = html(&r);
            check_page(&page);
            assert_eq!(page.contains("Cells too small for counts"), heatmap);
            assert_eq!(page.contains("too many for a heatmap"), !heatmap);
        }
        assert_eq!(clip("model_v1_small", 9), "mode…mall");
        assert_eq!(clip("ab", 2), "ab");
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
    }

    #[test]
    fn eval_json_has_top_level_accuracy() {
        let (classes, truth, predicted) = example();
        let mut metrics = Metrics::compute(&classes, &truth, &predicted, None).unwrap();
        metrics.latency_us = Some(120.0);
        let report = EvalReport {
            bundle: "b.bundle".into(),
            data: "test/".into(),
            classes,
            metrics,
            skipped: vec![Skipped {
                path: "x.gif".into(),
                reason: "unsupported".into(),
            }],
        };
        let text = serde_json::to_string_pretty(&report).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["accuracy"].as_f64(), Some(0.4));
        assert!(v["macro_f1"].is_f64() && v["confusion"].is_array() && v.get("metrics").is_none());
        let back: EvalReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn json_round_trip_with_nan() {
        let mut r = sample_report();
        r.history[0].val_loss = f64::NAN;
        r.test.loss = Some(f64::NAN);
        let text = serde_json::to_string(&r).unwrap();
        let back: TrainReport = serde_json::from_str(&text).unwrap();
        assert!(back.history[0].val_loss.is_nan());
        assert_eq!(back.test.loss, None);
        // serde_json's default float parser may be off by one ulp (its `float_roundtrip`
        // feature makes it exact): compare with a tolerance.
        for (a, b) in back.history.iter().zip(&r.history).skip(1) {
            assert_eq!(a.epoch, b.epoch);
            for (x, y) in [
                (a.train_loss, b.train_loss),
                (a.val_loss, b.val_loss),
                (a.val_accuracy, b.val_accuracy),
            ] {
                assert!((x - y).abs() <= 1e-15 * y.abs().max(1.0), "{x} != {y}");
            }
        }
        assert_eq!(back.search.as_ref().map(|s| s.trials.len()), Some(8));
        assert_eq!(back.config, r.config);
        assert_eq!(back.data, r.data);
    }

    #[test]
    fn display_summaries() {
        let r = sample_report();
        let text = r.to_string();
        assert!(
            text.contains("best epoch 9") && text.contains("winner #3"),
            "{text}"
        );
        assert!(
            text.contains(
                "head       closed-form LDA (validation accuracy: closed-form LDA 95.00%"
            ),
            "{text}"
        );
        assert!(html(&r).contains("Head kept"));
        assert!(text.lines().count() <= 20, "{text}");
        assert!(!text.ends_with('\n'));

        let (classes, truth, predicted) = example();
        let metrics = Metrics::compute(&classes, &truth, &predicted, Some(&[0.5; 5])).unwrap();
        let mut e = EvalReport {
            bundle: "b".into(),
            data: "d".into(),
            classes,
            metrics,
            skipped: vec![],
        };
        let text = e.to_string();
        assert!(
            text.contains("accuracy 40.00% (2/5)") && text.contains("confusion"),
            "{text}"
        );
        // Edge cases: no classes, NaN, ragged matrix, many classes.
        e.metrics.accuracy = f64::NAN;
        e.metrics.confusion[0].clear();
        e.to_string();
        e.metrics = Metrics::compute(&[], &[], &[], None).unwrap();
        e.to_string();
        let many: Vec<String> = (0..30).map(|i| format!("class{i}")).collect();
        e.metrics = Metrics::compute(&many, &[29], &[0], None).unwrap();
        assert!(!e.to_string().contains("confusion"));
    }
}
