//! The hyperparameter search over head configurations: the [`space`] `--search`
//! explores, the mapping between its points and [`HeadConfig`], and [`search`] itself.

use std::time::Instant;

use anyhow::{Context, Result, ensure};

use super::{HeadChoice, HeadConfig, LossChoice, Options, Prepared, fit};
use crate::report::{SearchSummary, TrialRecord};
use crate::search::{self, Method, Param, Point, Space, Value};

/// The hyperparameters `--search` explores: learning rate, weight decay, head kind and
/// hidden size, dropout, loss and label smoothing.
pub fn space() -> Space {
    let choice = |v: &[&str]| Param::Choice(v.iter().map(|s| s.to_string()).collect());
    Space {
        dims: vec![
            ("lr".into(), Param::LogUniform { lo: 1e-4, hi: 1e-1 }),
            (
                "weight_decay".into(),
                Param::LogUniform { lo: 1e-6, hi: 1e-2 },
            ),
            ("head".into(), choice(&["linear", "mlp"])),
            ("hidden".into(), choice(&["32", "64", "128", "256"])),
            ("dropout".into(), Param::Uniform { lo: 0.0, hi: 0.5 }),
            ("loss".into(), choice(&["ce", "focal"])),
            (
                "label_smoothing".into(),
                Param::Uniform { lo: 0.0, hi: 0.2 },
            ),
        ],
    }
}

const HIDDEN: [usize; 4] = [32, 64, 128, 256];

/// [`space`] without the hyperparameters named in `fixed` (the search keeps those at
/// the base configuration's values). An unknown name is an error naming the ones there
/// are.
pub fn space_without(fixed: &[String]) -> Result<Space> {
    let mut s = space();
    for name in fixed {
        ensure!(
            s.dims.iter().any(|(n, _)| n == name),
            "{name:?} is not a searched hyperparameter (those are {})",
            s.dims
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s.dims.retain(|(n, _)| !fixed.contains(n));
    Ok(s)
}

/// `base` with a point of [`space`] applied.
pub fn apply(base: &HeadConfig, p: &Point) -> HeadConfig {
    apply_in(&space(), base, p)
}

/// `base` with a point of `space` (a subset of [`space`]'s dimensions) applied.
pub fn apply_in(space: &Space, base: &HeadConfig, p: &Point) -> HeadConfig {
    let real = |v: &Value| match v {
        Value::Real(x) => *x as f32,
        Value::Index(i) => *i as f32,
    };
    let index = |v: &Value| match v {
        Value::Index(i) => *i,
        Value::Real(x) => *x as usize,
    };
    let mut c = *base;
    for ((name, _), v) in space.dims.iter().zip(p) {
        match name.as_str() {
            "lr" => c.lr = real(v),
            "weight_decay" => c.weight_decay = real(v),
            "head" => {
                c.head = if index(v) == 0 {
                    HeadChoice::Linear
                } else {
                    HeadChoice::Mlp
                }
            }
            "hidden" => c.hidden = HIDDEN[index(v).min(HIDDEN.len() - 1)],
            "dropout" => c.dropout = real(v),
            "loss" => {
                c.loss = if index(v) == 0 {
                    LossChoice::Ce
                } else {
                    LossChoice::Focal
                }
            }
            "label_smoothing" => c.label_smoothing = real(v),
            _ => {}
        }
    }
    c
}

/// `base` as a point of [`space`] (values clamped into the space), so the search's first
/// trial is the configuration the user would get without a search.
pub fn point_of(base: &HeadConfig) -> Point {
    point_in(&space(), base)
}

/// [`point_of`] in `space` (a subset of [`space`]'s dimensions).
pub fn point_in(space: &Space, base: &HeadConfig) -> Point {
    let hidden = HIDDEN
        .iter()
        .position(|&h| h >= base.hidden)
        .unwrap_or(HIDDEN.len() - 1);
    space
        .dims
        .iter()
        .map(|(name, _)| match name.as_str() {
            "lr" => Value::Real(f64::from(base.lr).clamp(1e-4, 1e-1)),
            "weight_decay" => Value::Real(f64::from(base.weight_decay).clamp(1e-6, 1e-2)),
            "head" => Value::Index(usize::from(base.head == HeadChoice::Mlp)),
            "hidden" => Value::Index(hidden),
            "dropout" => Value::Real(f64::from(base.dropout).clamp(0.0, 0.5)),
            "loss" => Value::Index(usize::from(base.loss == LossChoice::Focal)),
            _ => Value::Real(f64::from(base.label_smoothing).clamp(0.0, 0.2)),
        })
        .collect()
}

/// Runs the search of `opts` on prepared data, returning the winning configuration and
/// the search's summary.
pub fn search(
    prep: &Prepared,
    opts: &Options,
    method: Method,
    trials: usize,
) -> Result<(HeadConfig, SearchSummary)> {
    ensure!(trials >= 1, "--trials must be at least 1");
    let space = space_without(&opts.search_fixed)?;
    ensure!(
        !space.dims.is_empty(),
        "every searched hyperparameter is fixed: nothing to search"
    );
    let capacity = opts.capacity.unwrap_or(prep.classes.len() + 8);
    let start = Instant::now();
    let results = search::run(
        &space,
        method,
        trials,
        opts.threads,
        opts.seed,
        Some(point_in(&space, &opts.head)),
        |p: &Point| {
            let cfg = apply_in(&space, &opts.head, p);
            let t = Instant::now();
            match fit(&cfg, &prep.train, &prep.val, prep.classes.len(), capacity) {
                Ok(f) => (
                    f.val_accuracy,
                    (f.val_loss, f.history.len(), t.elapsed().as_secs_f64()),
                ),
                Err(e) => {
                    log::warn!("trial failed: {e:#}");
                    (f64::NAN, (f64::NAN, 0, t.elapsed().as_secs_f64()))
                }
            }
        },
    );
    ensure!(!results.is_empty(), "the search ran no trial");
    // Best: highest validation accuracy, then lowest validation loss, then earliest.
    let best = results
        .iter()
        .enumerate()
        .filter(|(_, t)| t.score.is_finite())
        .max_by(|(ia, a), (ib, b)| {
            a.score
                .total_cmp(&b.score)
                .then(b.extra.0.total_cmp(&a.extra.0))
                .then(ib.cmp(ia))
        })
        .map(|(i, _)| i)
        .context("every search trial failed (see the warnings)")?;
    let trials: Vec<TrialRecord> = results
        .iter()
        .map(|t| TrialRecord {
            index: t.index,
            params: space.describe(&t.point).into_iter().collect(),
            val_accuracy: t.score,
            val_loss: t.extra.0,
            epochs: t.extra.1,
            seconds: t.extra.2,
        })
        .collect();
    let winner = apply_in(&space, &opts.head, &results[best].point);
    Ok((
        winner,
        SearchSummary {
            method: format!("{method:?}").to_lowercase(),
            trials,
            best,
            threads: opts.threads,
            seconds: start.elapsed().as_secs_f64(),
        },
    ))
}
