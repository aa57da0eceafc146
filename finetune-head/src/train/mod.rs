//! `finetune-head train`: fine-tune only the head on a labeled data set.
//!
//! [`run`] reads the bundle and the data ([`crate::dataset`]), cleans and splits it,
//! embeds every sample once with the bundle's backbone ([`crate::embed`], cached), and
//! trains a head ([`fit`]) with the foundation's learning rules ([`edgetune::Learner`]):
//! mini-batches on standardized embeddings (the scaling folded into the head), a
//! learning-rate schedule, early stopping on the validation loss with tenfold rate drops
//! on plateaus, the best epoch's parameters kept. With `--search` it first runs a
//! hyperparameter search ([`crate::search`]) over [`space`], each trial scored on
//! validation; the winner is retrained and scored once on the test split. The result is
//! the bundle with the head and class names, and a [`TrainReport`].
//!
//! The stages, one file each:
//!
//! | file | stage |
//! |---|---|
//! | `config.rs` | [`HeadConfig`]: every hyperparameter, and the learning rule it makes |
//! | `prepare.rs` | [`Options`] and [`prepare`]: load, clean, embed, split, augment |
//! | `embedded.rs` | [`Embedded`] samples, and [`score`] / [`predictions`] of a head on them |
//! | `fit.rs` | [`fit`]: the epoch loop and early stopping |
//! | `shards.rs` | each mini-batch's shards on threads, the same result for any count |
//! | `scaling.rs` | standardized inputs, folded back into the head's first layer |
//! | `space.rs` | [`space`] and [`search`]: the hyperparameter search over head configurations |
//! | `bundle.rs` | the trained bundle: head, [`exemplars`], [`embedding_stats`]; [`write`] |

mod bundle;
mod config;
mod embedded;
mod fit;
mod prepare;
mod scaling;
mod shards;
mod space;

pub use bundle::{
    GUARD_EXEMPLARS, REPLAY_EXEMPLARS, embedding_stats, exemplars, feature_stats, hidden_stats,
    write,
};
pub use config::{HeadChoice, HeadConfig, LossChoice, OptimizerChoice, ScheduleChoice};
#[cfg(test)]
pub(crate) use embedded::three_classes;
pub use embedded::{Embedded, predictions, score};
pub use fit::{Fitted, fit, fit_with};
pub use prepare::{MAX_COPIES, Options, Prepared, prepare};
pub use space::{apply, apply_in, point_in, point_of, search, space, space_without};

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use edgetune::bundle::Bundle;

use crate::closed_form;
use crate::report::TrainReport;

/// `finetune-head train`: the bundle with the trained head, and the report.
pub fn run(opts: &Options, out: &Path) -> Result<(Bundle, TrainReport)> {
    let mut bundle = Bundle::read(&opts.bundle)
        .with_context(|| format!("reading the bundle {}", opts.bundle.display()))?;
    let prep = prepare(&bundle, opts)?;
    let (cfg, search) = match opts.search {
        Some((method, trials)) => {
            let (c, s) = search(&prep, opts, method, trials)?;
            (c, Some(s))
        }
        None => (opts.head, None),
    };
    let capacity = opts.capacity.unwrap_or(prep.classes.len() + 8);
    let t = Instant::now();
    let fitted = fit_with(
        &cfg,
        &prep.train,
        &prep.val,
        prep.classes.len(),
        capacity,
        opts.threads,
    )?;
    let stats = embedding_stats(&prep);
    let hidden_stats = hidden_stats(&fitted.head, &prep)?;
    // The head has a closed-form rival, its output layer written from the statistics
    // of the features it sees: kept when it is better on validation.
    let feature_stats = if fitted.head.dims().hidden == 0 {
        stats.as_ref()
    } else {
        hidden_stats.as_ref()
    };
    let (head, head_choice) =
        closed_form::best_head(&fitted, feature_stats, &prep.val, prep.classes.len());
    let train_seconds = t.elapsed().as_secs_f64();
    let trained = bundle::Trained {
        head,
        head_choice,
        stats,
        hidden_stats,
        fitted,
        cfg,
        search,
        train_seconds,
    };
    let report = bundle::finish(&mut bundle, &prep, opts, out, trained)?;
    Ok((bundle, report))
}

#[cfg(test)]
mod tests;
