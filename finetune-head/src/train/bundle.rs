//! The trained bundle: the head encoded into it, the exemplars and embedding statistics
//! the device starts from, the class names and a provenance note; then the report, and
//! [`write`] putting both on disk.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgetune::bundle::Bundle;
use edgetune::{Head, Learner, persist};

use super::{Embedded, Fitted, HeadConfig, Options, Prepared, predictions};
use crate::closed_form;
use crate::report::{Metrics, SearchSummary, TrainReport};

/// Replay exemplars per class a trained bundle carries for the device (from the
/// training split).
pub const REPLAY_EXEMPLARS: usize = 16;
/// Guard exemplars per class (from the validation split, never trained on).
pub const GUARD_EXEMPLARS: usize = 4;

/// The exemplars a trained bundle carries ([`edgetune::bundle::Exemplars`]): the first
/// [`REPLAY_EXEMPLARS`] training embeddings of each class for the device's replay
/// buffer, and the first [`GUARD_EXEMPLARS`] validation embeddings of each class for
/// its regression guard, so that learning new classes on the device does not forget
/// these.
pub fn exemplars(prep: &Prepared) -> edgetune::bundle::Exemplars {
    fn pick(data: &Embedded, classes: usize, per_class: usize) -> Vec<(&[f32], usize)> {
        let mut taken = vec![0usize; classes];
        let mut out = Vec::new();
        for (x, &y) in data.x.iter().zip(&data.y) {
            if taken[y] < per_class {
                taken[y] += 1;
                out.push((x.as_slice(), y));
            }
        }
        out
    }
    let n = prep.classes.len();
    edgetune::bundle::Exemplars::new(
        pick(&prep.train, n, REPLAY_EXEMPLARS),
        pick(&prep.val, n, GUARD_EXEMPLARS),
    )
}

/// The device learner's start ([`edgetune::stats`]): mean, spread, within-class
/// covariance and each class's count and mean, from the training split (augmented
/// copies included, as the head saw them).
pub fn embedding_stats(prep: &Prepared) -> Option<edgetune::stats::Stats> {
    let x: Vec<f32> = prep.train.x.iter().flatten().copied().collect();
    let dim = prep.train.x.first()?.len();
    edgetune::stats::Stats::estimate(&x, dim, Some((&prep.train.y, prep.classes.len())))
}

/// For an MLP head: the same statistics of its hidden activations over the training
/// split ([`edgetune::bundle::Manifest::hidden_stats`]), from which the device's
/// closed-form learner writes the output layer. `None` for a linear head.
pub fn hidden_stats(
    head: &Head<Vec<f32>>,
    prep: &Prepared,
) -> Result<Option<edgetune::stats::Stats>> {
    if head.dims().hidden == 0 {
        return Ok(None);
    }
    feature_stats(head, &prep.train, prep.classes.len())
}

/// The within-class statistics of `data`'s features under `head` ([`Head::features`]:
/// the embeddings themselves for a linear head, the hidden activations of an MLP), of
/// `classes` classes: what the closed-form output layer is written from.
pub fn feature_stats(
    head: &Head<Vec<f32>>,
    data: &Embedded,
    classes: usize,
) -> Result<Option<edgetune::stats::Stats>> {
    let w = head.dims().feature_width();
    let mut features = vec![0.0f32; data.len() * w];
    for (x, out) in data.x.iter().zip(features.chunks_exact_mut(w)) {
        head.features(x, out)?;
    }
    Ok(edgetune::stats::Stats::estimate(
        &features,
        w,
        Some((&data.y, classes)),
    ))
}

/// What [`super::run`] trained: the head kept, and how it got there.
pub(super) struct Trained {
    /// The head going into the bundle (gradient-trained or closed-form).
    pub head: Head<Vec<f32>>,
    /// Which of the two heads was kept, and why.
    pub head_choice: closed_form::HeadChoice,
    /// Embedding statistics of the training split.
    pub stats: Option<edgetune::stats::Stats>,
    /// Those of an MLP head's hidden activations ([`hidden_stats`]).
    pub hidden_stats: Option<edgetune::stats::Stats>,
    /// The gradient training's history.
    pub fitted: Fitted,
    /// The configuration trained with.
    pub cfg: HeadConfig,
    /// The search that chose it, if any.
    pub search: Option<SearchSummary>,
    /// Seconds of training (search excluded).
    pub train_seconds: f64,
}

/// Scores the trained head on validation and test, puts it into `bundle` with what the
/// device needs, and returns the report.
pub(super) fn finish(
    bundle: &mut Bundle,
    prep: &Prepared,
    opts: &Options,
    out: &Path,
    trained: Trained,
) -> Result<TrainReport> {
    let head = &trained.head;
    let metrics = |data: &Embedded| -> Result<Metrics> {
        let (pred, p) = predictions(head, data)?;
        Metrics::compute(&prep.classes, &data.y, &pred, Some(&p)).map_err(anyhow::Error::msg)
    };
    let validation = metrics(&prep.val)?;
    let test = metrics(&prep.test)?;
    if bundle.head.is_some() {
        log::info!("replacing the bundle's head");
    }
    bundle.head = Some(persist::encode_to_vec(head, None::<&Learner<Vec<f32>>>)?);
    bundle.manifest.exemplars = Some(exemplars(prep));
    bundle.manifest.embedding_stats = trained.stats.map(|s| s.to_manifest());
    bundle.manifest.hidden_stats = trained.hidden_stats.map(|s| s.to_manifest());
    bundle.manifest.classes = prep.classes.clone();
    bundle.manifest.provenance.notes.push(format!(
        "head ({}) trained by finetune-head {} on {} ({} samples): validation accuracy {:.4}, test accuracy {:.4}",
        trained.head_choice.kept,
        env!("CARGO_PKG_VERSION"),
        opts.data.display(),
        prep.summary.used,
        validation.accuracy,
        test.accuracy
    ));
    bundle.validate().context("the trained bundle")?;
    Ok(TrainReport {
        tool: format!("finetune-head {}", env!("CARGO_PKG_VERSION")),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        bundle_in: opts.bundle.display().to_string(),
        bundle_out: out.display().to_string(),
        classes: prep.classes.clone(),
        data: prep.summary.clone(),
        embedding: prep.embedding.clone(),
        config: trained.cfg.to_map(),
        history: trained.fitted.history,
        best_epoch: trained.fitted.best_epoch,
        stopped_early: trained.fitted.stopped_early,
        train_seconds: trained.train_seconds,
        search: trained.search,
        head: Some(trained.head_choice),
        validation,
        test,
    })
}

/// Writes the bundle and its reports (`<out>.report.json`, `<out>.report.html`), each
/// atomically; the reports first, so a bundle never appears without them.
pub fn write(bundle: &Bundle, report: &TrainReport, out: &Path) -> Result<(PathBuf, PathBuf)> {
    let json = out.with_extension("report.json");
    let html = out.with_extension("report.html");
    edgetune::bundle::write_atomic(&json, serde_json::to_string_pretty(report)?.as_bytes())?;
    edgetune::bundle::write_atomic(&html, crate::report::html(report).as_bytes())?;
    bundle.write(out)?;
    Ok((json, html))
}
