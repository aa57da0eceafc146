//! [`HeadConfig`]: every hyperparameter of one head training run, and the learning rule
//! ([`edgetune::Config`]) and head shape ([`edgetune::Dims`]) it makes.

use std::collections::BTreeMap;

use edgetune::learn::{Decay, Loss, Optimizer, Schedule};
use edgetune::{Config, Dims};
use serde::{Deserialize, Serialize};

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

    pub(super) fn dims(&self, input: usize, capacity: usize) -> Dims {
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
    pub(super) fn learn_config(&self, steps_per_epoch: usize) -> Config {
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
