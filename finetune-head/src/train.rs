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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use edgetune::bundle::{BackboneFormat, Bundle};
use edgetune::learn::{Decay, Loss, Optimizer, Schedule};
use edgetune::rng::Rng;
use edgetune::{Config, Dims, Head, Learner, persist};
use serde::{Deserialize, Serialize};

use crate::augment::Augment;
use crate::closed_form;
use crate::dataset::{self, Item, LoadOptions, Split};
use crate::embed::{self, Embedder, Job};
use crate::report::{
    ClassCount, DataSummary, EmbedSummary, Epoch, Metrics, SearchSummary, TrainReport, TrialRecord,
};
use crate::search::{self, Method, Param, Point, Space, Value};

/// Head kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HeadChoice {
    /// One affine layer.
    Linear,
    /// Affine → ReLU → affine (`--hidden` units).
    Mlp,
}

/// Loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LossChoice {
    /// Cross-entropy (with `--label-smoothing`).
    Ce,
    /// Focal loss (`--focal-gamma`).
    Focal,
}

/// Optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerChoice {
    /// SGD with momentum (`--momentum`), Nesterov.
    Sgd,
    /// Adam.
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// Learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleChoice {
    /// Constant.
    Constant,
    /// ×0.1 every third of the epochs.
    Step,
    /// Cosine down to 1 % over the epochs.
    Cosine,
}

/// Every hyperparameter of one head training run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Head kind.
    pub head: HeadChoice,
    /// Hidden units of an MLP head.
    pub hidden: usize,
    /// Dropout on an MLP's hidden units.
    pub dropout: f32,
    /// Loss.
    pub loss: LossChoice,
    /// Label smoothing of cross-entropy.
    pub label_smoothing: f32,
    /// Focal loss γ.
    pub focal_gamma: f32,
    /// Optimizer.
    pub optimizer: OptimizerChoice,
    /// SGD momentum.
    pub momentum: f32,
    /// Base learning rate.
    pub lr: f32,
    /// Weight decay (L2 for SGD/Adam, decoupled for AdamW).
    pub weight_decay: f32,
    /// Mini-batch size.
    pub batch: usize,
    /// Most epochs.
    pub epochs: usize,
    /// Epochs without a lower validation loss before the learning rate drops (or, after
    /// `lr_drops` drops, training stops); 0: never.
    pub patience: usize,
    /// Times the learning rate is divided by 10 on a plateau before training stops.
    pub lr_drops: usize,
    /// Learning-rate decay.
    pub schedule: ScheduleChoice,
    /// Warm-up, in epochs.
    pub warmup_epochs: usize,
    /// Class weights from frequencies (n / (k · n_c)).
    pub balance: bool,
    /// Global gradient-norm clipping (0: off).
    pub clip_norm: f32,
    /// Train on standardized embeddings (each value minus its training mean, over its
    /// standard deviation) and fold the scaling into the head's first layer at the end:
    /// the same head on raw embeddings, reached in far fewer epochs.
    pub standardize: bool,
    /// Seed of initialization, shuffling and dropout.
    pub seed: u64,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            head: HeadChoice::Linear,
            hidden: 128,
            dropout: 0.0,
            loss: LossChoice::Ce,
            label_smoothing: 0.0,
            focal_gamma: 2.0,
            optimizer: OptimizerChoice::Adam,
            momentum: 0.9,
            lr: 3e-2,
            weight_decay: 1e-4,
            batch: 32,
            epochs: 100,
            patience: 5,
            lr_drops: 1,
            schedule: ScheduleChoice::Constant,
            warmup_epochs: 1,
            balance: false,
            clip_norm: 0.0,
            standardize: true,
            seed: 1,
        }
    }
}

impl HeadConfig {
    /// The configuration as name → value, for reports.
    pub fn to_map(&self) -> BTreeMap<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        }
    }

    fn dims(&self, input: usize, capacity: usize) -> Dims {
        Dims {
            input,
            hidden: if self.head == HeadChoice::Mlp {
                self.hidden
            } else {
                0
            },
            capacity,
        }
    }

    /// The learning rule, for `steps_per_epoch` optimizer steps an epoch.
    fn learn_config(&self, steps_per_epoch: usize) -> Config {
        let epoch = steps_per_epoch.max(1) as u32;
        let total = epoch.saturating_mul(self.epochs as u32);
        Config {
            loss: match self.loss {
                LossChoice::Ce => Loss::CrossEntropy {
                    label_smoothing: self.label_smoothing,
                },
                LossChoice::Focal => Loss::Focal {
                    gamma: self.focal_gamma,
                },
            },
            optimizer: match self.optimizer {
                OptimizerChoice::Sgd => Optimizer::Sgd {
                    momentum: self.momentum,
                    nesterov: self.momentum > 0.0,
                },
                OptimizerChoice::Adam => Optimizer::ADAM,
                OptimizerChoice::Adamw => Optimizer::ADAMW,
            },
            lr: self.lr,
            weight_decay: self.weight_decay,
            clip_norm: self.clip_norm,
            schedule: Schedule {
                warmup: epoch.saturating_mul(self.warmup_epochs as u32),
                decay: match self.schedule {
                    ScheduleChoice::Constant => Decay::Constant,
                    ScheduleChoice::Step => Decay::Step {
                        every: (total / 3).max(1),
                        gamma: 0.1,
                    },
                    ScheduleChoice::Cosine => Decay::Cosine {
                        total: total.max(1),
                        min_factor: 0.01,
                    },
                },
            },
            dropout: if self.head == HeadChoice::Mlp {
                self.dropout
            } else {
                0.0
            },
            seed: self.seed,
        }
    }
}

/// Embeddings with class indices.
#[derive(Debug, Clone, Default)]
pub struct Embedded {
    /// One embedding per sample.
    pub x: Vec<Vec<f32>>,
    /// Class index per sample.
    pub y: Vec<usize>,
}

impl Embedded {
    /// Samples.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }
}

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

/// Accuracy and mean cross-entropy (of the true class) of `head` on `data`.
pub fn score(head: &Head<Vec<f32>>, data: &Embedded) -> Result<(f64, f64)> {
    if data.is_empty() {
        return Ok((0.0, 0.0));
    }
    let mut probs = vec![0.0f32; head.dims().capacity];
    let (mut hits, mut loss) = (0usize, 0.0f64);
    for (x, &y) in data.x.iter().zip(&data.y) {
        let p = head.predict(x, &mut probs)?;
        hits += usize::from(p.class == y);
        loss -= f64::from(probs[y].max(1e-12)).ln();
    }
    let n = data.len() as f64;
    Ok((hits as f64 / n, loss / n))
}

/// Predicted class and the probability of the true class for each sample.
pub fn predictions(head: &Head<Vec<f32>>, data: &Embedded) -> Result<(Vec<usize>, Vec<f32>)> {
    let mut probs = vec![0.0f32; head.dims().capacity];
    let mut pred = Vec::with_capacity(data.len());
    let mut truth_p = Vec::with_capacity(data.len());
    for (x, &y) in data.x.iter().zip(&data.y) {
        pred.push(head.predict(x, &mut probs)?.class);
        truth_p.push(probs[y]);
    }
    Ok((pred, truth_p))
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

/// Shards of every mini-batch: each is accumulated by its own learner and the shards'
/// gradients are merged in order before the step, so the result is the same bit for bit
/// whatever the number of threads that run them.
const SHARDS: usize = 2;

/// Sets the flag when dropped: the training workers stop on every way out of the loop.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The summed loss of the samples `idx` of `data`, accumulated into `learner` (nothing
/// accumulated on an error).
fn accumulate(
    learner: &mut Learner<Vec<f32>>,
    head: &Head<Vec<f32>>,
    data: &Embedded,
    idx: &[usize],
) -> Result<f64> {
    let mut sum = 0.0f64;
    for &i in idx {
        match learner.accumulate(head, &data.x[i], data.y[i]) {
            Ok(l) => sum += f64::from(l),
            Err(e) => {
                learner.discard();
                return Err(e.into());
            }
        }
    }
    Ok(sum)
}

/// Runs `f` on each shard, the shards dealt round-robin to `threads` threads (the
/// caller's among them), and returns the results in shard order.
fn on_threads<T: Send, R: Send>(
    items: &mut [T],
    threads: usize,
    f: impl Fn(&mut T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter_mut().map(&f).collect();
    }
    let mut lanes: Vec<Vec<(usize, &mut T)>> = (0..threads).map(|_| Vec::new()).collect();
    for (k, item) in items.iter_mut().enumerate() {
        lanes[k % threads].push((k, item));
    }
    let f = &f;
    let mut out: Vec<(usize, R)> = std::thread::scope(|s| {
        let mut lanes = lanes.into_iter();
        let mine = lanes.next().unwrap_or_default();
        let handles: Vec<_> = lanes
            .map(|lane| {
                s.spawn(move || lane.into_iter().map(|(k, t)| (k, f(t))).collect::<Vec<_>>())
            })
            .collect();
        let mut out: Vec<(usize, R)> = mine.into_iter().map(|(k, t)| (k, f(t))).collect();
        for h in handles {
            out.extend(h.join().expect("a training thread panicked"));
        }
        out
    });
    out.sort_by_key(|(k, _)| *k);
    out.into_iter().map(|(_, r)| r).collect()
}

/// [`score`] with the samples split into [`SHARDS`] parts on `threads` threads (the same
/// result for any number of threads).
fn score_on(head: &Head<Vec<f32>>, data: &Embedded, threads: usize) -> Result<(f64, f64)> {
    if data.is_empty() {
        return Ok((0.0, 0.0));
    }
    let per = data.len().div_ceil(SHARDS);
    let mut parts: Vec<std::ops::Range<usize>> = (0..SHARDS)
        .map(|k| (k * per).min(data.len())..((k + 1) * per).min(data.len()))
        .collect();
    let scored = on_threads(&mut parts, threads, |r| -> Result<(usize, f64)> {
        let mut probs = vec![0.0f32; head.dims().capacity];
        let (mut hits, mut loss) = (0usize, 0.0f64);
        for i in r.clone() {
            let p = head.predict(&data.x[i], &mut probs)?;
            hits += usize::from(p.class == data.y[i]);
            loss -= f64::from(probs[data.y[i]].max(1e-12)).ln();
        }
        Ok((hits, loss))
    });
    let (mut hits, mut loss) = (0usize, 0.0f64);
    for r in scored {
        let (h, l) = r?;
        hits += h;
        loss += l;
    }
    let n = data.len() as f64;
    Ok((hits as f64 / n, loss / n))
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
    let dim = train.x[0].len();
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
    let dims = cfg.dims(dim, capacity);
    let steps_per_epoch = train.len().div_ceil(cfg.batch);
    let mut head = Head::alloc(dims, classes).context("the head")?;
    head.init(cfg.seed);
    let rule = cfg.learn_config(steps_per_epoch);
    let mut learner = Learner::alloc(dims, rule).context("the learning rule")?;
    // The shards' learners only accumulate (each with its own dropout stream).
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
        let mut counts = vec![0usize; classes];
        train.y.iter().for_each(|&y| counts[y] += 1);
        let n = train.len() as f32;
        let w: Vec<f32> = counts
            .iter()
            .map(|&c| {
                if c == 0 {
                    0.0
                } else {
                    n / (classes as f32 * c as f32)
                }
            })
            .collect();
        for l in &mut shards {
            l.set_class_weights(&w)?;
        }
    }
    let scored = {
        let step = train.len().div_ceil(TRAIN_SCORED).max(1);
        let idx: Vec<usize> = (0..train.len()).step_by(step).collect();
        Embedded {
            x: idx.iter().map(|&i| train.x[i].clone()).collect(),
            y: idx.iter().map(|&i| train.y[i]).collect(),
        }
    };
    let mut rng = Rng::new(cfg.seed ^ 0x5EED);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut history = Vec::new();
    let mut best: Option<(f64, f64, usize, Vec<f32>)> = None;
    let mut since_best = 0;
    let mut drops = 0;
    let mut stopped_early = false;
    let head = RwLock::new(head);
    let shards: Vec<Mutex<Learner<Vec<f32>>>> = shards.into_iter().map(Mutex::new).collect();
    let lanes = threads.clamp(1, SHARDS);
    // Shard k of a batch: the k-th of SHARDS nearly equal runs.
    let shard = |batch: &[usize], k: usize| -> std::ops::Range<usize> {
        let per = batch.len().div_ceil(SHARDS);
        (k * per).min(batch.len())..((k + 1) * per).min(batch.len())
    };
    let run_shard = |batch: &[usize], k: usize| -> Result<f64> {
        let head = head
            .read()
            .map_err(|_| anyhow::anyhow!("a training thread failed"))?;
        let mut l = shards[k]
            .lock()
            .map_err(|_| anyhow::anyhow!("a training thread failed"))?;
        accumulate(&mut l, &head, train, &batch[shard(batch, k)])
    };
    // Hand-off to the workers: the batch in a slot, a generation counter they spin on
    // (a blocking channel's wake-up costs as much as a shard's work on small batches),
    // and a count of shards done.
    let slot: Mutex<Arc<[usize]>> = Mutex::new(Arc::from(Vec::new()));
    let generation = AtomicUsize::new(0);
    let finished = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<f64>>>> = (0..SHARDS).map(|_| Mutex::new(None)).collect();
    let stop = AtomicBool::new(false);
    let failed = || anyhow::anyhow!("a training thread failed");
    std::thread::scope(|s| -> Result<()> {
        // Lanes 1.. are persistent workers, fed each batch; lane 0 is this thread.
        for lane in 1..lanes {
            let (slot, generation, finished, results, stop, run_shard) =
                (&slot, &generation, &finished, &results, &stop, &run_shard);
            s.spawn(move || {
                let mut seen = 0;
                loop {
                    let mut spins = 0u32;
                    while generation.load(Ordering::Acquire) == seen {
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        spins += 1;
                        if spins < 1 << 14 {
                            std::hint::spin_loop();
                        } else {
                            std::thread::yield_now();
                        }
                    }
                    seen = generation.load(Ordering::Acquire);
                    let batch = slot
                        .lock()
                        .map(|b| b.clone())
                        .unwrap_or_else(|_| Arc::from(Vec::new()));
                    for k in (lane..SHARDS).step_by(lanes) {
                        let r = run_shard(&batch, k);
                        if let Ok(mut slot) = results[k].lock() {
                            *slot = Some(r);
                        }
                        finished.fetch_add(1, Ordering::AcqRel);
                    }
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        let theirs = (0..SHARDS).filter(|k| k % lanes != 0).count();
        for epoch in 1..=cfg.epochs {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            let mut loss_sum = 0.0f64;
            for chunk in order.chunks(cfg.batch) {
                let batch: Arc<[usize]> = chunk.into();
                if lanes > 1 {
                    *slot.lock().map_err(|_| failed())? = batch.clone();
                    finished.store(0, Ordering::Release);
                    generation.fetch_add(1, Ordering::AcqRel);
                }
                let mut losses = [0.0f64; SHARDS];
                let mut error = None;
                for k in (0..SHARDS).step_by(lanes) {
                    match run_shard(&batch, k) {
                        Ok(l) => losses[k] = l,
                        Err(e) => error = error.or(Some(e)),
                    }
                }
                let mut spins = 0u32;
                while finished.load(Ordering::Acquire) < theirs {
                    // Spin briefly, then give the core away (a worker may be waiting
                    // for it when threads outnumber cores).
                    spins += 1;
                    if spins < 1 << 14 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                for (k, r) in results.iter().enumerate() {
                    match r.lock().map_err(|_| failed())?.take() {
                        Some(Ok(l)) => losses[k] = l,
                        Some(Err(e)) => error = error.or(Some(e)),
                        None => {}
                    }
                }
                if let Some(e) = error {
                    return Err(e);
                }
                loss_sum += losses.iter().sum::<f64>();
                let mut head = head.write().map_err(|_| failed())?;
                for l in &shards {
                    learner.merge(&mut *l.lock().map_err(|_| failed())?)?;
                }
                learner.apply(&mut *head)?;
            }
            let mut head = head
                .write()
                .map_err(|_| anyhow::anyhow!("a training thread failed"))?;
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
            // Early stopping watches the validation loss (a small validation set's
            // accuracy moves in steps of one sample and stalls long before the head has
            // converged).
            let better = match &best {
                None => true,
                Some((_, loss, _, _)) => val_loss < *loss * (1.0 - MIN_DELTA),
            };
            if better {
                best = Some((val_accuracy, val_loss, epoch, head.params().to_vec()));
                since_best = 0;
            } else {
                since_best += 1;
                if cfg.patience > 0 && since_best >= cfg.patience {
                    if drops < cfg.lr_drops {
                        // A plateau: back to the best parameters, a tenth of the rate.
                        drops += 1;
                        since_best = 0;
                        if let Some((_, _, _, p)) = &best {
                            head.params_mut().copy_from_slice(p);
                        }
                        let mut c = *learner.config();
                        c.lr *= 0.1;
                        learner.set_config(c)?;
                        continue;
                    }
                    stopped_early = epoch < cfg.epochs;
                    break;
                }
            }
        }
        Ok(())
    })?;
    let mut head = head
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a training thread failed"))?;
    let (val_accuracy, val_loss, best_epoch, params) =
        best.unwrap_or((0.0, 0.0, 0, head.params().to_vec()));
    head.params_mut().copy_from_slice(&params);
    if let Some(s) = &scaling {
        s.fold(&mut head);
    }
    Ok(Fitted {
        head,
        history,
        best_epoch,
        stopped_early,
        val_accuracy,
        val_loss,
    })
}

/// Per-value mean and standard deviation of training embeddings.
struct Scaling {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Scaling {
    fn of(data: &Embedded) -> Scaling {
        let d = data.x[0].len();
        let n = data.len() as f64;
        let mut mean = vec![0.0f64; d];
        let mut sq = vec![0.0f64; d];
        for x in &data.x {
            for j in 0..d {
                mean[j] += f64::from(x[j]);
                sq[j] += f64::from(x[j]) * f64::from(x[j]);
            }
        }
        let std = (0..d)
            .map(|j| {
                let m = mean[j] / n;
                let v = (sq[j] / n - m * m).max(0.0).sqrt();
                // A constant value is left unscaled.
                if v > 1e-6 { v as f32 } else { 1.0 }
            })
            .collect();
        Scaling {
            mean: mean.iter().map(|m| (m / n) as f32).collect(),
            std,
        }
    }

    fn apply(&self, data: &Embedded) -> Embedded {
        Embedded {
            x: data
                .x
                .iter()
                .map(|x| {
                    x.iter()
                        .zip(&self.mean)
                        .zip(&self.std)
                        .map(|((v, m), s)| (v - m) / s)
                        .collect()
                })
                .collect(),
            y: data.y.clone(),
        }
    }

    /// Rewrites the first layer (rows of `W`, then biases) of a head trained on scaled
    /// inputs so that it computes the same on raw ones: `W' = W / σ`,
    /// `b' = b − Σ W μ / σ`.
    fn fold(&self, head: &mut Head<Vec<f32>>) {
        let dims = head.dims();
        let d = dims.input;
        let rows = if dims.hidden > 0 {
            dims.hidden
        } else {
            dims.capacity
        };
        let p = head.params_mut();
        for r in 0..rows {
            let mut shift = 0.0f64;
            for j in 0..d {
                let w = p[r * d + j] / self.std[j];
                shift += f64::from(w) * f64::from(self.mean[j]);
                p[r * d + j] = w;
            }
            p[rows * d + r] -= shift as f32;
        }
    }
}

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

/// How `train` is run.
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
    let m = &bundle.manifest;
    let sample_len: usize = if m.backbone.format == BackboneFormat::None {
        m.embedding.size
    } else {
        m.input.shape.iter().product()
    };
    let loaded = dataset::load(&opts.data, &m.input, sample_len, &opts.load)?;
    let kind = loaded.kind;
    let found = loaded.found;
    let mut skipped = loaded.skipped;
    let (items, cleaned) = dataset::clean(loaded.items);
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

    // Every sample once: the embedding also tells which images decode.
    let mut embedder = Embedder::new(bundle, opts.threads, opts.cache.as_deref());
    embedder.augment = opts.augment;
    embedder.seed = opts.seed;
    embedder.progress = opts.progress;
    let jobs: Vec<Job> = items.iter().map(|item| Job { item, copy: 0 }).collect();
    let (embs, mut stats) = embedder.run(&jobs, "embedding")?;
    let mut kept: Vec<(Item, Vec<f32>)> = Vec::new();
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
    let all_classes = dataset::class_names(&items);
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
    let mut items: Vec<Item> = kept.iter().map(|k| k.0.clone()).collect();
    dataset::split(&mut items, &classes, opts.val, opts.test, opts.seed)?;
    let index = |l: &str| classes.iter().position(|c| c == l).expect("a known class");
    let (mut train, mut val, mut test) = (
        Embedded::default(),
        Embedded::default(),
        Embedded::default(),
    );
    for (item, (_, e)) in items.iter().zip(&kept) {
        let part = match item.split.expect("split above") {
            Split::Train => &mut train,
            Split::Val => &mut val,
            Split::Test => &mut test,
        };
        part.x.push(e.clone());
        part.y.push(index(&item.label));
    }
    let mut augmented = vec![0usize; classes.len()];
    if !opts.augment.is_none() && opts.augment_copies > 0 {
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
                let c = index(&job.item.label);
                train.x.push(v);
                train.y.push(c);
                augmented[c] += 1;
            }
        }
    }
    let count = |s: Split, c: &str| {
        items
            .iter()
            .filter(|i| i.split == Some(s) && i.label == c)
            .count()
    };
    let summary = DataSummary {
        source: opts.data.display().to_string(),
        kind: if m.backbone.format == BackboneFormat::None {
            "features".into()
        } else {
            kind.name().into()
        },
        found,
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
        classes: classes
            .iter()
            .enumerate()
            .map(|(i, c)| ClassCount {
                name: c.clone(),
                train: count(Split::Train, c),
                val: count(Split::Val, c),
                test: count(Split::Test, c),
                augmented: augmented[i],
            })
            .collect(),
        augment: opts.augment.names(),
        augment_copies: if opts.augment.is_none() {
            0
        } else {
            opts.augment_copies as usize
        },
    };
    let total = stats.computed + stats.cached;
    let embedding = EmbedSummary {
        backbone_sha256: embed::hex(embedder.id()),
        computed: stats.computed,
        cached: stats.cached,
        threads: opts.threads,
        seconds: stats.seconds,
        samples_per_s: if stats.seconds > 0.0 {
            total as f64 / stats.seconds
        } else {
            0.0
        },
    };
    Ok(Prepared {
        classes,
        train,
        val,
        test,
        summary,
        embedding,
    })
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
    // A linear head has a closed-form rival: kept when it is better on validation.
    let (head, head_choice) =
        closed_form::best_head(&fitted, stats.as_ref(), &prep.val, prep.classes.len());
    let train_seconds = t.elapsed().as_secs_f64();
    let metrics = |data: &Embedded| -> Result<Metrics> {
        let (pred, p) = predictions(&head, data)?;
        Metrics::compute(&prep.classes, &data.y, &pred, Some(&p)).map_err(anyhow::Error::msg)
    };
    let validation = metrics(&prep.val)?;
    let test = metrics(&prep.test)?;
    if bundle.head.is_some() {
        log::info!("replacing the bundle's head");
    }
    bundle.head = Some(persist::encode_to_vec(&head, None::<&Learner<Vec<f32>>>)?);
    bundle.manifest.exemplars = Some(exemplars(&prep));
    bundle.manifest.embedding_stats = stats.map(|s| s.to_manifest());
    bundle.manifest.classes = prep.classes.clone();
    bundle.manifest.provenance.notes.push(format!(
        "head ({}) trained by finetune-head {} on {} ({} samples): validation accuracy {:.4}, test accuracy {:.4}",
        head_choice.kept,
        env!("CARGO_PKG_VERSION"),
        opts.data.display(),
        prep.summary.used,
        validation.accuracy,
        test.accuracy
    ));
    bundle.validate().context("the trained bundle")?;
    let report = TrainReport {
        tool: format!("finetune-head {}", env!("CARGO_PKG_VERSION")),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        bundle_in: opts.bundle.display().to_string(),
        bundle_out: out.display().to_string(),
        classes: prep.classes.clone(),
        data: prep.summary.clone(),
        embedding: prep.embedding.clone(),
        config: cfg.to_map(),
        history: fitted.history,
        best_epoch: fitted.best_epoch,
        stopped_early: fitted.stopped_early,
        train_seconds,
        search,
        head: Some(head_choice),
        validation,
        test,
    };
    Ok((bundle, report))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n: usize, seed: u64) -> Embedded {
        let mut rng = Rng::new(seed);
        let mut d = Embedded::default();
        for i in 0..n {
            let c = i % 3;
            // Overlapping clusters: the validation loss has a minimum to stop at.
            let x: Vec<f32> = (0..8)
                .map(|j| if j == c { 1.0 } else { 0.0 } + rng.uniform(-1.0, 1.0))
                .collect();
            d.x.push(x);
            d.y.push(c);
        }
        d
    }

    #[test]
    fn fit_learns_and_stops_early() {
        let (train, val) = (blobs(300, 1), blobs(90, 2));
        let cfg = HeadConfig {
            epochs: 200,
            patience: 5,
            ..Default::default()
        };
        let f = fit(&cfg, &train, &val, 3, 4).unwrap();
        assert!(f.val_accuracy > 0.6, "{}", f.val_accuracy);
        let last: Vec<_> = f
            .history
            .iter()
            .rev()
            .take(5)
            .map(|e| (e.val_accuracy, e.val_loss))
            .collect();
        assert!(
            f.stopped_early && f.history.len() < 200,
            "{} epochs, best {}, last {last:?}",
            f.history.len(),
            f.best_epoch
        );
        assert_eq!(score(&f.head, &val).unwrap().0, f.val_accuracy);
        // Deterministic, whatever the threads.
        let g = fit(&cfg, &train, &val, 3, 4).unwrap();
        assert_eq!(f.head.params(), g.head.params());
        let h = fit_with(&cfg, &train, &val, 3, 4, 3).unwrap();
        assert_eq!(f.head.params(), h.head.params());
        let mlp = HeadConfig {
            head: HeadChoice::Mlp,
            hidden: 8,
            dropout: 0.3,
            epochs: 5,
            ..cfg
        };
        let (a, b) = (
            fit(&mlp, &train, &val, 3, 4).unwrap(),
            fit_with(&mlp, &train, &val, 3, 4, 2).unwrap(),
        );
        assert_eq!(a.head.params(), b.head.params());
    }

    #[test]
    fn standardizing_folds_into_the_same_function_on_raw_inputs() {
        let mut train = blobs(200, 3);
        train.x.iter_mut().for_each(|x| {
            x[0] = x[0] * 50.0 + 7.0;
            x[5] = 3.0;
        });
        for head in [HeadChoice::Linear, HeadChoice::Mlp] {
            let cfg = HeadConfig {
                head,
                hidden: 16,
                epochs: 3,
                patience: 0,
                ..Default::default()
            };
            let s = Scaling::of(&train);
            let scaled = s.apply(&train);
            let raw = fit(
                &HeadConfig {
                    standardize: false,
                    ..cfg
                },
                &scaled,
                &scaled,
                3,
                4,
            )
            .unwrap();
            let mut folded = raw.head.clone();
            s.fold(&mut folded);
            let (mut a, mut b) = ([0.0f32; 4], [0.0f32; 4]);
            for (x, xs) in train.x.iter().zip(&scaled.x) {
                raw.head.logits(xs, &mut a).unwrap();
                folded.logits(x, &mut b).unwrap();
                for k in 0..3 {
                    assert!(
                        (a[k] - b[k]).abs() < 1e-3 * (1.0 + a[k].abs()),
                        "{head:?} {a:?} {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn space_round_trips_the_default() {
        let base = HeadConfig::default();
        assert_eq!(apply(&base, &point_of(&base)), base);
        let mlp = HeadConfig {
            head: HeadChoice::Mlp,
            hidden: 64,
            dropout: 0.2,
            ..base
        };
        assert_eq!(apply(&base, &point_of(&mlp)), mlp);
        assert!(space().validate().is_ok());
    }
}
