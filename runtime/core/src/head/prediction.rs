//! What a prediction says: the class, its confidence, margin and entropy, and the top
//! classes.

use crate::math;

/// The result of one prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Prediction {
    /// The most probable class.
    pub class: usize,
    /// Its probability.
    pub confidence: f32,
    /// Top-1 minus top-2 probability: near 0 when the head hesitates between two classes.
    pub margin: f32,
    /// Entropy of the probabilities divided by ln(classes): 0 certain, 1 uniform.
    pub entropy: f32,
}

impl Prediction {
    /// Fills from softmax probabilities (at least one class).
    pub fn from_probs(probs: &[f32]) -> Self {
        let mut h = 0.0f32;
        for &p in probs {
            if p > 0.0 {
                h -= p * libm::logf(p);
            }
        }
        Self::from_softmax(probs, h)
    }

    /// From probabilities and their entropy in nats.
    pub(super) fn from_softmax(probs: &[f32], entropy_nats: f32) -> Self {
        let (class, confidence) = math::argmax(probs).unwrap_or((0, 0.0));
        let second = probs
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != class)
            .map(|(_, &p)| p)
            .fold(0.0f32, f32::max);
        let n = probs.len();
        let entropy = if n > 1 {
            entropy_nats / libm::logf(n as f32)
        } else {
            0.0
        };
        Prediction {
            class,
            confidence,
            margin: confidence - second,
            entropy: entropy.clamp(0.0, 1.0),
        }
    }

    /// Whether to ask the user for a label (active learning): the margin is below
    /// `min_margin`.
    pub fn is_uncertain(&self, min_margin: f32) -> bool {
        self.margin < min_margin
    }
}

/// The `K` most probable classes, most probable first (ties: lower index first).
pub fn top_k<const K: usize>(probs: &[f32]) -> heapless::Vec<(usize, f32), K> {
    let mut top: heapless::Vec<(usize, f32), K> = heapless::Vec::new();
    for (i, &p) in probs.iter().enumerate() {
        if p.is_nan() {
            continue;
        }
        let pos = top.iter().position(|&(_, q)| p > q).unwrap_or(top.len());
        if pos < K {
            if top.is_full() {
                top.pop();
            }
            let _ = top.insert(pos, (i, p));
        }
    }
    top
}
