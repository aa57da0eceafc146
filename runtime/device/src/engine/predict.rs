//! Predictions: the head's calibrated probabilities for an embedding, the top classes
//! and the novelty, and the recent samples a label can refer to. Whether a prediction is
//! flagged `uncertain` (ask the user for a label) follows the recent prequential
//! predictions ([`Engine::uncertain_threshold`]).

use super::{CATCH, Engine, EngineError, MARGIN_WINDOW, RECENT, TOP_K};
use edgetune::head::{Prediction, top_k};
use edgetune::math;

/// One prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The sample's id, for a label.
    pub sample: u64,
    /// The prediction; `None` when the head has no class yet.
    pub prediction: Option<Prediction>,
    /// The most probable classes with their probabilities.
    pub top: heapless::Vec<(usize, f32), TOP_K>,
    /// Distance (1 − cosine) to the nearest labeled class mean, if any class has one.
    pub novelty: Option<f32>,
    /// Whether to ask for a label.
    pub uncertain: bool,
}

impl Engine {
    /// Predicts the class of embedding `x` and remembers it as a new sample.
    pub fn observe(&mut self, x: &[f32]) -> Result<Observation, EngineError> {
        edgetune::error::check_vector("embedding", x, self.dim)?;
        let classes = self.classes();
        let slot = self.recent_next;
        let cap = self.capacity();
        let (prediction, top) = if classes == 0 {
            (None, heapless::Vec::new())
        } else {
            let logits = &mut self.recent_logits[slot * cap..(slot + 1) * cap];
            self.live.head().logits(x, logits)?;
            // Calibrated: softmax(logits / T).
            let t = self.temperature.get();
            let probs = &mut self.probs[..classes];
            for (p, &z) in probs.iter_mut().zip(&logits[..classes]) {
                *p = z / t;
            }
            math::softmax_in_place(probs);
            (Some(Prediction::from_probs(probs)), top_k::<TOP_K>(probs))
        };
        self.recent_classes[slot] = classes as u32;
        self.recent_t[slot] = self.temperature.get();
        let novelty = self.live.novelty(x).map(|(_, d)| d);
        let sample = self.counters.next_sample;
        self.counters.next_sample += 1;
        self.counters.predictions += 1;
        self.recent_ids[slot] = sample;
        self.recent_x[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(x);
        self.recent_next = (slot + 1) % RECENT;
        self.recent_len = (self.recent_len + 1).min(RECENT);
        let uncertain = prediction.is_none_or(|p| p.is_uncertain(self.uncertain_threshold));
        Ok(Observation {
            sample,
            prediction,
            top,
            novelty,
            uncertain,
        })
    }

    /// The id of the most recent sample.
    pub fn last_sample(&self) -> Option<u64> {
        (self.recent_len > 0).then(|| self.recent_ids[(self.recent_next + RECENT - 1) % RECENT])
    }

    pub(super) fn recent_slot(&self, sample: u64) -> Option<usize> {
        (0..self.recent_len)
            .map(|k| (self.recent_next + RECENT - 1 - k) % RECENT)
            .find(|&i| self.recent_ids[i] == sample)
    }

    /// The margin below which a prediction is flagged `uncertain`: at least
    /// [`EngineConfig::uncertain_margin`](super::EngineConfig::uncertain_margin), and, from the recent prequential predictions
    /// (the last [`MARGIN_WINDOW`]), the margin below which [`CATCH`] of their errors
    /// lay, as long as that flags between 2 and 15 % of them (else the margin of that
    /// share): the device asks about the least sure samples, about as many as it needs
    /// to catch most of its mistakes.
    pub fn uncertain_threshold(&self) -> f32 {
        self.uncertain_threshold
    }

    /// Keeps the margin of a prequential prediction, and whether it was right, and moves
    /// the threshold of the `uncertain` flag with them.
    pub(super) fn note_margin(&mut self, margin: f32, right: bool) {
        if self.margins.is_full() {
            self.margins[self.margin_next] = (margin, right);
        } else {
            let _ = self.margins.push((margin, right));
        }
        self.margin_next = (self.margin_next + 1) % MARGIN_WINDOW;
        let n = self.margins.len();
        if n < 16 {
            return;
        }
        let mut sorted = [0.0f32; MARGIN_WINDOW];
        let mut errors = [0.0f32; MARGIN_WINDOW];
        let mut wrong = 0;
        for (o, &(m, right)) in sorted.iter_mut().zip(&self.margins) {
            *o = m;
            if !right {
                errors[wrong] = m;
                wrong += 1;
            }
        }
        let sorted = &mut sorted[..n];
        sorted.sort_unstable_by(f32::total_cmp);
        let errors = &mut errors[..wrong];
        errors.sort_unstable_by(f32::total_cmp);
        // The share of predictions below the margin that catches CATCH of the errors.
        let share = match errors.len() {
            0 => 0.0,
            w => {
                let k = ((CATCH * w as f32).ceil() as usize).clamp(1, w);
                let at = errors[k - 1];
                sorted.partition_point(|&m| m <= at) as f32 / n as f32
            }
        };
        let share = share.clamp(0.02, 0.15);
        let k = ((share * n as f32) as usize).min(n - 1);
        self.uncertain_threshold = sorted[k].max(self.cfg.uncertain_margin);
    }
}
