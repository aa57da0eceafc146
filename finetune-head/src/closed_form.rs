//! The closed-form candidate for the host head: linear discriminant analysis on the
//! features the head's output layer sees (the training embeddings for a linear head, an
//! MLP's hidden activations under its trained hidden layer; class means and the
//! within-class covariance shrunk by Ledoit and Wolf's rule, [`Stats::estimate`]), the
//! very output layer the device's streaming LDA writes from the bundle's statistics
//! ([`edgetune::slda::Slda`]), with a temperature fitted on validation. `train` keeps it
//! instead of the gradient head when it is better on validation ([`choose`]): on
//! classes that share a covariance (the Gaussian classes of the learning benchmark) it
//! is the better model, and it costs one matrix inverse instead of epochs.

use anyhow::{Context, Result};
use edgetune::Head;
use edgetune::slda::Slda;
use edgetune::stats::{CovarianceKind, Stats};
use serde::{Deserialize, Serialize};

// `edgetune serve`'s default prior strength: with the host's statistics as both prior
// and scatter it does not change the covariance.
use edgetune_device::engine::{Engine, EngineConfig, PRIOR_STRENGTH};

use crate::train::{Embedded, Fitted, score};

/// The closed-form head and how it did on validation.
#[derive(Debug, Clone)]
pub struct ClosedForm {
    /// The head (logits divided by `temperature`).
    pub head: Head<Vec<f32>>,
    /// Fitted on validation (the head's logits are divided by it).
    pub temperature: f32,
    /// Validation accuracy.
    pub val_accuracy: f64,
    /// Mean validation cross-entropy.
    pub val_loss: f64,
}

/// Which head `train` kept, with both candidates' validation scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadChoice {
    /// `"gradient"` (the head trained by epochs) or `"closed-form LDA"`.
    pub kept: String,
    /// The gradient head's validation accuracy and loss.
    pub gradient: (f64, f64),
    /// The closed-form head's validation accuracy and loss, and its temperature; `None`
    /// where it could not be built (no within-class statistics of the head's features).
    pub closed_form: Option<(f64, f64, f32)>,
}

/// The gradient head's name in [`HeadChoice::kept`].
pub const GRADIENT: &str = "gradient";
/// The closed-form head's name in [`HeadChoice::kept`].
pub const CLOSED_FORM: &str = "closed-form LDA";

/// The closed-form head for `classes` classes: `base` (its hidden layer, for an MLP,
/// and its room) with the output layer written from within-class `stats` of the
/// training samples' features under it ([`Head::features`]), its temperature fitted on
/// `val`.
pub fn fit(
    base: &Head<Vec<f32>>,
    stats: &Stats,
    val: &Embedded,
    classes: usize,
) -> Result<ClosedForm> {
    if stats.kind != CovarianceKind::WithinClass || stats.class_counts.len() != classes {
        anyhow::bail!("the closed-form head needs within-class statistics of every class");
    }
    let dims = base.dims();
    if stats.mean.len() != dims.feature_width() {
        anyhow::bail!(
            "statistics of {} values for a head whose output layer takes {}",
            stats.mean.len(),
            dims.feature_width()
        );
    }
    let lda = seeded(stats, dims.capacity)?;
    let mut head = Head::alloc(dims, classes)?;
    head.params_mut()[..dims.out_offset()].copy_from_slice(&base.params()[..dims.out_offset()]);
    lda.write_head(&mut head, 1.0)?;
    let temperature = fit_temperature(&head, val)?;
    lda.write_head(&mut head, temperature)?;
    let (val_accuracy, val_loss) = score(&head, val)?;
    Ok(ClosedForm {
        head,
        temperature,
        val_accuracy,
        val_loss,
    })
}

/// Streaming LDA seeded with `stats` and their class counts and means, as `edgetune
/// serve` seeds it from a bundle (`Engine::set_stats`).
fn seeded(stats: &Stats, capacity: usize) -> Result<Slda<Vec<f32>>> {
    let mut lda = Slda::alloc(stats.mean.len(), capacity, PRIOR_STRENGTH)?;
    lda.set_stats(&stats.mean, &stats.std, &stats.covariance, PRIOR_STRENGTH)?;
    lda.seed_classes(&stats.class_counts, &stats.class_means, &stats.covariance)
        .context("the closed-form head from the class statistics")?;
    Ok(lda)
}

/// The head `edgetune serve` answers with from a bundle whose head is `head` and whose
/// embedding statistics are `stats`, until its first label: with its default learner
/// (`--learner slda`) the device writes its head from the statistics at start, so a
/// gradient head that `train` kept is replaced by the closed-form one (raw logits: the
/// device's temperature starts at 1). `stats` are of the head's features
/// ([`edgetune::stats::for_head`]). `None` when the device keeps the bundle's head:
/// statistics without every class's count and mean. Computed by the
/// device's own engine, seeded as `serve` seeds it, so the two cannot differ.
pub fn device_head(head: &Head<Vec<f32>>, stats: &Stats) -> Result<Option<Head<Vec<f32>>>> {
    if head.classes() == 0 {
        return Ok(None);
    }
    let mut engine = Engine::new(head.clone(), EngineConfig::DEFAULT)?;
    engine
        .set_stats(stats)
        .context("the closed-form head from the class statistics")?;
    let written = engine
        .slda()
        .is_some_and(|lda| lda.classes() >= head.classes());
    Ok(written.then(|| engine.online().head().clone()))
}

/// The temperature that minimizes the validation cross-entropy of `head`'s logits
/// (1 without validation samples): a grid over 0.1…10, then golden-section search
/// around its best point. Bounded: on separable validation samples the loss falls
/// forever as the temperature does, and probabilities of 0 and 1 help nobody.
fn fit_temperature(head: &Head<Vec<f32>>, val: &Embedded) -> Result<f32> {
    if val.is_empty() {
        return Ok(1.0);
    }
    let k = head.classes();
    let mut logits = vec![0.0f32; head.dims().capacity];
    let mut rows = Vec::with_capacity(val.len() * k);
    for x in &val.x {
        head.logits(x, &mut logits)?;
        rows.extend_from_slice(&logits[..k]);
    }
    let loss = |log_t: f64| {
        let t = log_t.exp();
        let mut sum = 0.0f64;
        for (row, &y) in rows.chunks_exact(k).zip(&val.y) {
            let m = row.iter().fold(f64::MIN, |m, &v| m.max(f64::from(v) / t));
            let lse = m + row
                .iter()
                .map(|&v| (f64::from(v) / t - m).exp())
                .sum::<f64>()
                .ln();
            sum += lse - f64::from(row[y]) / t;
        }
        sum
    };
    let grid: Vec<f64> = (0..=20)
        .map(|i| (-1.0 + 0.1 * i as f64) * 10f64.ln())
        .collect();
    let best = grid
        .iter()
        .copied()
        .min_by(|&a, &b| loss(a).total_cmp(&loss(b)))
        .unwrap_or(0.0);
    let step = 0.1 * 10f64.ln();
    let (lo, hi) = (grid[0], grid[grid.len() - 1]);
    let (mut a, mut b) = ((best - step).max(lo), (best + step).min(hi));
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..30 {
        let (c, d) = (b - g * (b - a), a + g * (b - a));
        if loss(c) < loss(d) {
            b = d;
        } else {
            a = c;
        }
    }
    Ok(((a + b) / 2.0).exp() as f32)
}

/// The head `train` ships for `fitted`: the closed-form head from `stats` (the
/// within-class statistics of the training samples' features under `fitted`'s head:
/// embeddings, or an MLP's hidden activations) when it is better on `val` ([`choose`]),
/// else the gradient head.
pub fn best_head(
    fitted: &Fitted,
    stats: Option<&Stats>,
    val: &Embedded,
    classes: usize,
) -> (Head<Vec<f32>>, HeadChoice) {
    let closed = stats.and_then(|s| {
        fit(&fitted.head, s, val, classes)
            .map_err(|e| log::warn!("no closed-form head: {e:#}"))
            .ok()
    });
    let (head, choice) = choose(fitted, closed);
    log::info!(
        "kept the {} head (validation accuracy: gradient {:.4}{})",
        choice.kept,
        choice.gradient.0,
        choice
            .closed_form
            .map_or(String::new(), |c| format!(", closed-form LDA {:.4}", c.0))
    );
    (head, choice)
}

/// The head to ship: the closed-form one when its validation accuracy is higher (or
/// equal with a lower loss), else the gradient head; and the record of the choice.
pub fn choose(fitted: &Fitted, closed: Option<ClosedForm>) -> (Head<Vec<f32>>, HeadChoice) {
    let gradient = (fitted.val_accuracy, fitted.val_loss);
    let scores = closed
        .as_ref()
        .map(|c| (c.val_accuracy, c.val_loss, c.temperature));
    let better = |c: &ClosedForm| {
        c.val_accuracy > fitted.val_accuracy
            || (c.val_accuracy == fitted.val_accuracy && c.val_loss < fitted.val_loss)
    };
    let (head, kept) = match closed {
        Some(c) if better(&c) => (c.head, CLOSED_FORM),
        _ => (fitted.head.clone(), GRADIENT),
    };
    (
        head,
        HeadChoice {
            kept: kept.into(),
            gradient,
            closed_form: scores,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{HeadConfig, fit as fit_gradient, three_classes};
    use edgetune::Dims;

    /// Three classes whose means differ along a direction the shared, strongly
    /// correlated noise hides: what LDA models exactly and a few epochs do not.
    fn correlated(n: usize, seed: u64) -> Embedded {
        three_classes(n, seed, |c, rng| {
            let common = 3.0 * rng.uniform(-1.0, 1.0);
            (0..6)
                .map(|j| {
                    let signal = if j == c { 0.4 } else { 0.0 };
                    signal + common + 0.5 * rng.uniform(-1.0, 1.0)
                })
                .collect()
        })
    }

    fn stats(train: &Embedded) -> Stats {
        let x: Vec<f32> = train.x.iter().flatten().copied().collect();
        Stats::estimate(&x, 6, Some((&train.y, 3))).unwrap()
    }

    #[test]
    fn the_closed_form_head_is_kept_where_it_is_better_on_validation() {
        let (train, val, test) = (correlated(300, 1), correlated(300, 2), correlated(600, 3));
        let cfg = HeadConfig::default();
        let fitted = fit_gradient(&cfg, &train, &val, 3, 5).unwrap();
        let (head, choice) = best_head(&fitted, Some(&stats(&train)), &val, 3);
        let (acc, _, t) = choice.closed_form.unwrap();
        assert_eq!(choice.kept, CLOSED_FORM, "{choice:?}");
        assert!(acc > choice.gradient.0 && t > 0.0, "{choice:?}");
        assert_eq!((head.dims().capacity, head.classes()), (5, 3));
        let (gradient_test, _) = score(&fitted.head, &test).unwrap();
        let (kept_test, _) = score(&head, &test).unwrap();
        assert!(kept_test >= gradient_test, "{kept_test} vs {gradient_test}");
        // The temperature is the validation loss's minimum: a little either way is worse.
        let closed = fit(&fitted.head, &stats(&train), &val, 3).unwrap();
        for k in [0.8f32, 1.25] {
            let mut lda = Slda::alloc(6, 5, PRIOR_STRENGTH).unwrap();
            let s = stats(&train);
            lda.set_stats(&s.mean, &s.std, &s.covariance, PRIOR_STRENGTH)
                .unwrap();
            lda.seed_classes(&s.class_counts, &s.class_means, &s.covariance)
                .unwrap();
            let mut h = Head::alloc(Dims::linear(6, 5), 3).unwrap();
            lda.write_head(&mut h, closed.temperature * k).unwrap();
            assert!(score(&h, &val).unwrap().1 > closed.val_loss);
        }
    }

    #[test]
    fn the_gradient_head_is_kept_otherwise() {
        let (train, val) = (correlated(90, 4), correlated(90, 5));
        let fitted = fit_gradient(&HeadConfig::default(), &train, &val, 3, 3).unwrap();
        let mut worse = fit(&fitted.head, &stats(&train), &val, 3).unwrap();
        worse.val_accuracy = fitted.val_accuracy - 0.01;
        let (head, choice) = choose(&fitted, Some(worse));
        assert_eq!(choice.kept, GRADIENT);
        assert_eq!(head.params(), fitted.head.params());
        // No statistics of every class, or of other features: no candidate.
        let mut partial = stats(&train);
        partial.class_counts.pop();
        assert!(fit(&fitted.head, &partial, &val, 3).is_err());
        let mlp = Head::alloc(Dims::mlp(6, 4, 3), 3).unwrap();
        assert!(fit(&mlp, &stats(&train), &val, 3).is_err());
        let (_, choice) = best_head(&fitted, None, &val, 3);
        assert_eq!((choice.kept.as_str(), choice.closed_form), (GRADIENT, None));
    }
}
