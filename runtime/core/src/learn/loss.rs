//! The losses a learning step minimizes, and their gradient with respect to the logits.

use crate::math;

/// The loss a learning step minimizes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Loss {
    /// Softmax cross-entropy; the target puts `1 - label_smoothing` on the true class
    /// and spreads `label_smoothing` evenly over all active classes.
    CrossEntropy {
        /// In [0, 1).
        label_smoothing: f32,
    },
    /// Focal loss −(1−p)^γ·ln p (Lin et al. 2017): down-weights samples the head already
    /// gets right. γ = 0 is cross-entropy.
    Focal {
        /// Focusing parameter γ ≥ 0 (2 is the usual choice).
        gamma: f32,
    },
}

/// Turns `logits` into probabilities in place, writes dLoss/dlogits to `dlogits`, and
/// returns the loss, all scaled by the class weight `cw`.
pub(super) fn loss_and_dlogits(
    loss: &Loss,
    logits: &mut [f32],
    dlogits: &mut [f32],
    y: usize,
    cw: f32,
) -> f32 {
    let c = logits.len();
    // Keep the logits: losses are formed from them (log p_k = z_k - lse), which is exact
    // for tiny probabilities and costs no logarithm per class.
    dlogits.copy_from_slice(logits);
    let lse = math::softmax_in_place(logits);
    let probs = &*logits;
    let logp = dlogits[y] - lse;
    match *loss {
        Loss::CrossEntropy {
            label_smoothing: eps,
        } => {
            // Target q: 1 - eps + eps/c on y, eps/c elsewhere; loss = lse - Σ q_k z_k.
            let off = eps / c as f32;
            let mut qz = 0.0f32;
            for k in 0..c {
                let q = if k == y { 1.0 - eps + off } else { off };
                qz += q * dlogits[k];
                dlogits[k] = cw * (probs[k] - q);
            }
            cw * (lse - qz)
        }
        Loss::Focal { gamma } => {
            let p = probs[y];
            // 1 - p as the sum of the other probabilities: exact when p is close to 1.
            let q: f32 = probs
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != y)
                .map(|(_, v)| *v)
                .sum();
            let qg = if gamma == 0.0 {
                1.0
            } else {
                libm::powf(q, gamma)
            };
            let first = if q > 0.0 && gamma > 0.0 {
                gamma * libm::powf(q, gamma - 1.0) * p * logp
            } else {
                0.0
            };
            let g = first - qg; // (dL/dp)·p
            for k in 0..c {
                let delta = if k == y { 1.0 } else { 0.0 };
                dlogits[k] = cw * g * (delta - probs[k]);
            }
            -cw * qg * logp
        }
    }
}
