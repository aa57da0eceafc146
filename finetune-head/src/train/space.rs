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

/// `base` with a point of [`space`] applied.
pub fn apply(base: &HeadConfig, p: &Point) -> HeadConfig {
    let real = |v: &Value| match v {
        Value::Real(x) => *x as f32,
        Value::Index(i) => *i as f32,
    };
    let index = |v: &Value| match v {
        Value::Index(i) => *i,
        Value::Real(x) => *x as usize,
    };
    let mut c = *base;
    c.lr = real(&p[0]);
    c.weight_decay = real(&p[1]);
    c.head = if index(&p[2]) == 0 {
        HeadChoice::Linear
    } else {
        HeadChoice::Mlp
    };
    c.hidden = HIDDEN[index(&p[3]).min(HIDDEN.len() - 1)];
    c.dropout = real(&p[4]);
    c.loss = if index(&p[5]) == 0 {
        LossChoice::Ce
    } else {
        LossChoice::Focal
    };
    c.label_smoothing = real(&p[6]);
    c
}

/// `base` as a point of [`space`] (values clamped into the space), so the search's first
/// trial is the configuration the user would get without a search.
pub fn point_of(base: &HeadConfig) -> Point {
    let hidden = HIDDEN
        .iter()
        .position(|&h| h >= base.hidden)
        .unwrap_or(HIDDEN.len() - 1);
    vec![
        Value::Real(f64::from(base.lr).clamp(1e-4, 1e-1)),
        Value::Real(f64::from(base.weight_decay).clamp(1e-6, 1e-2)),
        Value::Index(usize::from(base.head == HeadChoice::Mlp)),
        Value::Index(hidden),
        Value::Real(f64::from(base.dropout).clamp(0.0, 0.5)),
        Value::Index(usize::from(base.loss == LossChoice::Focal)),
        Value::Real(f64::from(base.label_smoothing).clamp(0.0, 0.2)),
    ]
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
    let space = space();
    let capacity = opts.capacity.unwrap_or(prep.classes.len() + 8);
    let start = Instant::now();
    let results = search::run(
        &space,
        method,
        trials,
        opts.threads,
        opts.seed,
        Some(point_of(&opts.head)),
        |p: &Point| {
            let cfg = apply(&opts.head, p);
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
    let winner = apply(&opts.head, &results[best].point);
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
