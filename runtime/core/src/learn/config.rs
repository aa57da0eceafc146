//! Everything that defines a learning rule, and its checks.

use super::{Loss, Optimizer, Schedule};
use crate::error::{Error, Result};

/// Everything that defines a learning rule.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// The loss.
    pub loss: Loss,
    /// The optimizer.
    pub optimizer: Optimizer,
    /// Base learning rate (> 0).
    pub lr: f32,
    /// Weight decay (≥ 0), applied to weights and not to biases; L2 for SGD and Adam,
    /// decoupled for AdamW.
    pub weight_decay: f32,
    /// Clip the gradient's global norm to this value; 0 disables clipping.
    pub clip_norm: f32,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Dropout probability on an MLP's hidden units during learning, in [0, 1).
    pub dropout: f32,
    /// Seed of the dropout generator.
    pub seed: u64,
}

impl Config {
    /// Cross-entropy, Adam at 1e-3, no decay, no clipping, constant rate, no dropout.
    pub const DEFAULT: Config = Config {
        loss: Loss::CrossEntropy {
            label_smoothing: 0.0,
        },
        optimizer: Optimizer::ADAM,
        lr: 1e-3,
        weight_decay: 0.0,
        clip_norm: 0.0,
        schedule: Schedule::CONSTANT,
        dropout: 0.0,
        seed: 0,
    };

    /// Checks every value's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what| Err(Error::Config { what });
        let unit = |v: f32| (0.0..1.0).contains(&v);
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr must be positive and finite");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight_decay must be >= 0 and finite");
        }
        if !(self.clip_norm >= 0.0 && self.clip_norm.is_finite()) {
            return bad("clip_norm must be >= 0 (0 = off) and finite");
        }
        if !unit(self.dropout) {
            return bad("dropout must be in [0, 1)");
        }
        match self.loss {
            Loss::CrossEntropy { label_smoothing } if !unit(label_smoothing) => {
                return bad("label_smoothing must be in [0, 1)");
            }
            Loss::Focal { gamma } if !(gamma >= 0.0 && gamma.is_finite()) => {
                return bad("focal gamma must be >= 0 and finite");
            }
            _ => {}
        }
        match self.optimizer {
            Optimizer::Sgd { momentum, .. } if !unit(momentum) => bad("momentum must be in [0, 1)"),
            Optimizer::Adam { beta1, beta2, eps } | Optimizer::AdamW { beta1, beta2, eps }
                if !(unit(beta1) && unit(beta2) && eps > 0.0 && eps.is_finite()) =>
            {
                bad("Adam betas must be in [0, 1) and eps positive")
            }
            _ => Ok(()),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}
