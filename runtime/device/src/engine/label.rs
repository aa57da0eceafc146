//! The labeling flow of the engine: a label for a recent sample is checked, the
//! prediction made before it is measured (a held-out measurement that feeds the
//! calibration and the prequential accuracy), and the label is learned, by the
//! closed-form learner or by gradient steps with replay under the regression guard
//! (see the module docs of [`super`]). The service's side (class names, writing the
//! state, the answer) is `service/label.rs`.

use super::{Engine, EngineError};
use edgetune::error::Error;
use edgetune::head::Prediction;
use edgetune::math;
use edgetune::online::Learned;

/// What a label did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The head learned it.
    Learned {
        /// What learning did.
        learned: Learned,
        /// Guard accuracy before and after, when the guard has samples.
        guard: Option<(f32, f32)>,
    },
    /// The regression guard undid the update.
    Refused {
        /// Guard accuracy before.
        before: f32,
        /// Guard accuracy the update would have left.
        after: f32,
    },
}

/// What the prediction made before a label said ([`Engine::label`]).
#[derive(Clone, Copy)]
struct Before {
    /// Classes the head had then.
    classes: usize,
    /// It was right.
    right: bool,
    /// Its top-1 minus top-2 probability.
    margin: f32,
    /// Its cross-entropy for the label.
    loss: f32,
}

impl Engine {
    /// Checks a label for `sample` (the most recent when `None`) and class `class` (a
    /// class index, or [`Engine::classes`] to add one) without changing anything:
    /// the sample's id.
    pub fn check_label(&self, sample: Option<u64>, class: usize) -> Result<u64, EngineError> {
        let id = match sample {
            Some(id) => id,
            None => self.last_sample().ok_or(EngineError::NoSample)?,
        };
        if self.recent_slot(id).is_none() {
            return Err(EngineError::UnknownSample(id));
        }
        let classes = self.classes();
        if class > classes {
            return Err(Error::UnknownClass { class, classes }.into());
        }
        if class == classes && classes >= self.capacity() {
            return Err(Error::Capacity {
                what: "classes",
                requested: classes + 1,
                capacity: self.capacity(),
            }
            .into());
        }
        Ok(id)
    }

    /// Learns the label `class` for `sample` (see [`Engine::check_label`]). On an error
    /// nothing changed.
    pub fn label(&mut self, sample: Option<u64>, class: usize) -> Result<Outcome, EngineError> {
        let id = self.check_label(sample, class)?;
        self.settle_learner();
        let slot = self.recent_slot(id).ok_or(EngineError::UnknownSample(id))?;
        let d = self.dim;
        self.x
            .copy_from_slice(&self.recent_x[slot * d..(slot + 1) * d]);
        if math::sq_norm(&self.x) == 0.0 {
            return Err(Error::Config {
                what: "an all-zero embedding has no direction to learn from",
            }
            .into());
        }
        let measured = self.measure_before(slot, class);
        let loss = measured.map_or(f32::NAN, |m| m.loss);
        let outcome = if self.slda.is_some() {
            self.learn_slda(class, loss)?
        } else {
            self.learn_gradient(class)?
        };
        // Only once the label is taken: on an error nothing changed.
        if let Some(m) = measured {
            let cap = self.capacity();
            let logits = &self.recent_logits[slot * cap..slot * cap + m.classes];
            self.prequential.0 += u64::from(m.right);
            self.prequential.1 += 1;
            self.temperature.record(logits, 1.0, class);
            self.note_margin(m.margin, m.right);
        }
        Ok(outcome)
    }

    /// The prediction made for recent sample `slot` before its label `class` was
    /// learned, a held-out measurement; `None` for a class the head did not have then.
    fn measure_before(&mut self, slot: usize, class: usize) -> Option<Before> {
        let classes = self.recent_classes[slot] as usize;
        if class >= classes {
            return None;
        }
        let cap = self.capacity();
        let logits = &self.recent_logits[slot * cap..slot * cap + classes];
        let right = math::argmax(logits).is_some_and(|(c, _)| c == class);
        let t = self.recent_t[slot];
        let p = &mut self.probs[..classes];
        for (p, &z) in p.iter_mut().zip(logits) {
            *p = z / t;
        }
        let loss = math::log_sum_exp(p) - p[class];
        math::softmax_in_place(p);
        Some(Before {
            classes,
            right,
            margin: Prediction::from_probs(p).margin,
            loss,
        })
    }

    /// A label for the closed-form learner (in `self.x`): its statistics (of the head's
    /// features of it), then the head written from them. Never refused: rolling back
    /// would make the statistics depend on the order of the labels.
    fn learn_slda(&mut self, class: usize, loss: f32) -> Result<Outcome, EngineError> {
        let Some(slda) = &mut self.slda else {
            return Err(Error::Config {
                what: "no closed-form learner",
            }
            .into());
        };
        self.live.head().features(&self.x, &mut self.features)?;
        let added = slda.learn(&self.features, class)?;
        if added {
            self.live.head_mut().add_class()?;
        }
        let stored = self.live.remember(&self.x, class)?;
        // Counted first: a class the device labels gets its own-class bias.
        self.count_label(class);
        self.write_slda_head()?;
        let before = self.guard_accuracy;
        self.guard_accuracy = self.measure_guard();
        self.counters.updates += 1;
        Ok(Outcome::Learned {
            learned: Learned {
                class,
                added,
                stored,
                loss,
            },
            guard: before.zip(self.guard_accuracy),
        })
    }

    /// A label for the gradient head (in `self.x`): a few steps with replay, undone when
    /// the guard's accuracy falls by more than the margin.
    fn learn_gradient(&mut self, class: usize) -> Result<Outcome, EngineError> {
        self.spare.copy_from(&self.live)?;
        let learned = self.live.learn(&self.x, class)?;
        let before = self.guard_accuracy;
        let after = self.measure_guard();
        self.count_label(class);
        if let Some((before, after)) = self.guard_refuses(before, after) {
            self.live.copy_from(&self.spare)?;
            self.counters.refused += 1;
            return Ok(Outcome::Refused { before, after });
        }
        self.guard_accuracy = after;
        self.counters.updates += 1;
        Ok(Outcome::Learned {
            learned,
            guard: before.zip(after),
        })
    }

    /// Counts a label of `class`.
    fn count_label(&mut self, class: usize) {
        self.counters.labels += 1;
        self.counters.labels_per_class[class] += 1;
    }

    /// The guard's verdict on a change that took its accuracy from `before` to `after`:
    /// `Some((before, after))` when it refuses it, i.e. the accuracy fell by more than
    /// [`EngineConfig::guard_margin`] and the guard holds at least
    /// [`EngineConfig::guard_min`] samples. A label and a fleet merge are judged alike.
    ///
    /// [`EngineConfig::guard_margin`]: super::EngineConfig::guard_margin
    /// [`EngineConfig::guard_min`]: super::EngineConfig::guard_min
    pub(super) fn guard_refuses(
        &self,
        before: Option<f32>,
        after: Option<f32>,
    ) -> Option<(f32, f32)> {
        let (b, a) = before.zip(after)?;
        (self.guard_labels.len() >= self.cfg.guard_min && a < b - self.cfg.guard_margin)
            .then_some((b, a))
    }

    /// Accuracy of the head on the guard samples; `None` without any.
    pub(super) fn measure_guard(&mut self) -> Option<f32> {
        let n = self.guard_labels.len();
        if n == 0 || self.classes() == 0 {
            return None;
        }
        let mut hits = 0;
        for (x, &y) in self.guard_x.chunks_exact(self.dim).zip(&self.guard_labels) {
            if let Ok(p) = self.live.predict(x, &mut self.probs) {
                hits += usize::from(p.class == y as usize);
            }
        }
        Some(hits as f32 / n as f32)
    }
}
