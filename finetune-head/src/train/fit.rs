//! [`fit`]: the epoch loop over shuffled mini-batches, per-epoch scores, and early
//! stopping on the validation loss with tenfold learning-rate drops on plateaus.

use anyhow::{Context, Result, ensure};
use edgetune::rng::Rng;
use edgetune::{Config, Head, Learner};

use super::scaling::Scaling;
use super::shards::{SHARDS, Shards, score_on};
use super::{Embedded, HeadConfig};
use crate::report::Epoch;

/// A trained head and how it got there.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The head with the best epoch's parameters.
    pub head: Head<Vec<f32>>,
    /// Per-epoch losses and accuracies.
    pub history: Vec<Epoch>,
    /// The best epoch (from 1; 0 when no epoch ran).
    pub best_epoch: usize,
    /// True when patience ran out before the last epoch.
    pub stopped_early: bool,
    /// Validation accuracy and loss of the best epoch.
    pub val_accuracy: f64,
    /// Mean cross-entropy on validation at the best epoch.
    pub val_loss: f64,
}

/// The relative decrease of the validation loss that counts as an improvement (early
/// stopping's `min_delta`).
const MIN_DELTA: f64 = 1e-3;

/// Training samples whose accuracy is reported per epoch (a fixed subset: scoring all of
/// a large set every epoch would cost as much as the epoch).
const TRAIN_SCORED: usize = 1000;

/// Trains a head for `classes` classes (room for `capacity`) on `train`, early-stopped on
/// `val`, with `cfg`. Deterministic for `cfg.seed`.
pub fn fit(
    cfg: &HeadConfig,
    train: &Embedded,
    val: &Embedded,
    classes: usize,
    capacity: usize,
) -> Result<Fitted> {
    fit_with(cfg, train, val, classes, capacity, 1)
}

/// [`fit`] on `threads` threads: each mini-batch's [`SHARDS`] shards are accumulated in
/// parallel, as is the per-epoch scoring. The result does not depend on `threads`.
pub fn fit_with(
    cfg: &HeadConfig,
    train: &Embedded,
    val: &Embedded,
    classes: usize,
    capacity: usize,
    threads: usize,
) -> Result<Fitted> {
    ensure!(!train.is_empty(), "no training samples");
    ensure!(cfg.batch > 0, "the batch size must be at least 1");
    let scaling = cfg.standardize.then(|| Scaling::of(train));
    let (train_s, val_s);
    let (train, val) = match &scaling {
        Some(s) => {
            train_s = s.apply(train);
            val_s = s.apply(val);
            (&train_s, &val_s)
        }
        None => (train, val),
    };
    let (head, mut learner, shard_learners) = start(cfg, train, classes, capacity)?;
    let scored = scored_subset(train);
    let mut rng = Rng::new(cfg.seed ^ 0x5EED);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut history = Vec::new();
    let mut stopping = EarlyStop::new(cfg);
    let shards = Shards::new(head, shard_learners, train, threads);
    std::thread::scope(|s| -> Result<()> {
        // Lanes 1.. are persistent workers, fed each batch; lane 0 is this thread.
        for lane in 1..shards.lanes() {
            let shards = &shards;
            s.spawn(move || shards.worker(lane));
        }
        let _stop = shards.stop_on_drop();
        for epoch in 1..=cfg.epochs {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            let mut loss_sum = 0.0f64;
            for chunk in order.chunks(cfg.batch) {
                loss_sum += shards.step(chunk, &mut learner)?;
            }
            let mut head = shards.head()?;
            ensure!(
                head.params().iter().all(|p| p.is_finite()),
                "training diverged at epoch {epoch} (non-finite parameters): lower the learning rate ({})",
                cfg.lr
            );
            let (train_accuracy, _) = score_on(&head, &scored, threads)?;
            let (val_accuracy, val_loss) = if val.is_empty() {
                (train_accuracy, loss_sum / train.len() as f64)
            } else {
                score_on(&head, val, threads)?
            };
            history.push(Epoch {
                epoch,
                train_loss: loss_sum / train.len() as f64,
                train_accuracy,
                val_loss,
                val_accuracy,
                lr: f64::from(learner.lr()),
            });
            match stopping.observe(epoch, val_accuracy, val_loss, head.params()) {
                Verdict::Go => {}
                Verdict::Plateau => {
                    // Back to the best parameters, a tenth of the rate.
                    stopping.restore(&mut head);
                    let mut c = *learner.config();
                    c.lr *= 0.1;
                    learner.set_config(c)?;
                }
                Verdict::Stop => {
                    stopping.stopped_early = epoch < cfg.epochs;
                    break;
                }
            }
        }
        Ok(())
    })?;
    let mut head = shards.into_head()?;
    let (val_accuracy, val_loss, best_epoch, params) = match stopping.best {
        Some(b) => (b.val_accuracy, b.val_loss, b.epoch, b.params),
        None => (0.0, 0.0, 0, head.params().to_vec()),
    };
    head.params_mut().copy_from_slice(&params);
    if let Some(s) = &scaling {
        s.fold(&mut head);
    }
    Ok(Fitted {
        head,
        history,
        best_epoch,
        stopped_early: stopping.stopped_early,
        val_accuracy,
        val_loss,
    })
}

/// The head, its learner and the shards' learners, as [`start`] makes them.
type Start = (Head<Vec<f32>>, Learner<Vec<f32>>, Vec<Learner<Vec<f32>>>);

/// The initialized head, the learner that steps it, and one accumulating learner per
/// shard (each with its own dropout stream, and the class weights of `--balance`).
fn start(cfg: &HeadConfig, train: &Embedded, classes: usize, capacity: usize) -> Result<Start> {
    let dims = cfg.dims(train.x[0].len(), capacity);
    let steps_per_epoch = train.len().div_ceil(cfg.batch);
    let mut head = Head::alloc(dims, classes).context("the head")?;
    head.init(cfg.seed);
    let rule = cfg.learn_config(steps_per_epoch);
    let learner = Learner::alloc(dims, rule).context("the learning rule")?;
    let mut shards = (0..SHARDS as u64)
        .map(|k| {
            Learner::alloc(
                dims,
                Config {
                    seed: rule.seed.wrapping_add(k),
                    ..rule
                },
            )
        })
        .collect::<edgetune::Result<Vec<_>>>()?;
    if cfg.balance {
        let w = class_weights(train, classes);
        for l in &mut shards {
            l.set_class_weights(&w)?;
        }
    }
    Ok((head, learner, shards))
}

/// Class weights from frequencies, n / (k · n_c) (0 for a class with no sample).
fn class_weights(train: &Embedded, classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    train.y.iter().for_each(|&y| counts[y] += 1);
    let n = train.len() as f32;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n / (classes as f32 * c as f32)
            }
        })
        .collect()
}

/// The at most [`TRAIN_SCORED`] training samples scored each epoch, evenly spaced.
fn scored_subset(train: &Embedded) -> Embedded {
    let step = train.len().div_ceil(TRAIN_SCORED).max(1);
    let idx: Vec<usize> = (0..train.len()).step_by(step).collect();
    Embedded {
        x: idx.iter().map(|&i| train.x[i].clone()).collect(),
        y: idx.iter().map(|&i| train.y[i]).collect(),
    }
}

/// The best epoch so far.
struct Best {
    val_accuracy: f64,
    val_loss: f64,
    epoch: usize,
    params: Vec<f32>,
}

/// What early stopping says after an epoch.
enum Verdict {
    /// Train on.
    Go,
    /// A plateau: drop the learning rate from the best parameters.
    Plateau,
    /// Patience and rate drops ran out.
    Stop,
}

/// Early stopping on the validation loss (a small validation set's accuracy moves in
/// steps of one sample and stalls long before the head has converged).
struct EarlyStop {
    patience: usize,
    lr_drops: usize,
    best: Option<Best>,
    since_best: usize,
    drops: usize,
    stopped_early: bool,
}

impl EarlyStop {
    fn new(cfg: &HeadConfig) -> EarlyStop {
        EarlyStop {
            patience: cfg.patience,
            lr_drops: cfg.lr_drops,
            best: None,
            since_best: 0,
            drops: 0,
            stopped_early: false,
        }
    }

    /// Records an epoch's validation scores (and the head's parameters when they are
    /// the best yet).
    fn observe(
        &mut self,
        epoch: usize,
        val_accuracy: f64,
        val_loss: f64,
        params: &[f32],
    ) -> Verdict {
        let better = match &self.best {
            None => true,
            Some(b) => val_loss < b.val_loss * (1.0 - MIN_DELTA),
        };
        if better {
            self.best = Some(Best {
                val_accuracy,
                val_loss,
                epoch,
                params: params.to_vec(),
            });
            self.since_best = 0;
            return Verdict::Go;
        }
        self.since_best += 1;
        if self.patience == 0 || self.since_best < self.patience {
            return Verdict::Go;
        }
        if self.drops < self.lr_drops {
            self.drops += 1;
            self.since_best = 0;
            return Verdict::Plateau;
        }
        Verdict::Stop
    }

    /// Puts the best parameters back into `head`.
    fn restore(&self, head: &mut Head<Vec<f32>>) {
        if let Some(b) = &self.best {
            head.params_mut().copy_from_slice(&b.params);
        }
    }
}
