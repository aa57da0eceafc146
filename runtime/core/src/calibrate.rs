//! Calibrated probabilities from labels as they come: a temperature fitted to the
//! predictions that were made *before* each label was learned (prequential evaluation).
//!
//! Every such prediction is a held-out measurement that costs no label: the sample was
//! not yet learned when it was predicted. The newest `rows` of them (logits and the
//! label the user then gave) are kept in caller storage, and the temperature `T` that
//! minimizes their negative log-likelihood of `softmax(logits / T)` is found by a
//! golden-section search on `ln T` (the likelihood is unimodal in `T`). Until
//! [`MIN_ROWS`] predictions of at least two classes are kept, `T` stays 1.
//!
//! Storage: `rows × (2 + capacity)` values; a row is the label, the number of classes
//! when predicted, and the logits (unscaled: divided by the temperature in force then,
//! multiplied back).

use crate::error::{Error, Result};
use crate::head::Storage;

/// Predictions kept before a temperature is fitted.
pub const MIN_ROWS: usize = 10;
/// Once [`MIN_ROWS`]·4 predictions are kept, the temperature is refitted every this
/// many.
pub const REFIT_EVERY: u32 = 8;
/// Smallest and largest temperature.
pub const RANGE: (f32, f32) = (0.02, 50.0);

/// A temperature fitted to prequential predictions (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Temperature<S> {
    capacity: usize,
    rows: usize,
    len: usize,
    next: usize,
    t: f32,
    recorded: u32,
    storage: S,
}

impl<S> Temperature<S> {
    /// Storage values for `rows` predictions of up to `capacity` classes.
    pub const fn storage_len(rows: usize, capacity: usize) -> usize {
        rows * (2 + capacity)
    }
}

impl<S: Storage> Temperature<S> {
    /// No prediction kept, `T` = 1.
    pub fn new(rows: usize, capacity: usize, storage: S) -> Result<Self> {
        if rows == 0 || capacity == 0 {
            return Err(Error::Config {
                what: "a temperature needs rows >= 1 and capacity >= 1",
            });
        }
        let need = Self::storage_len(rows, capacity);
        if storage.as_ref().len() < need {
            return Err(Error::Capacity {
                what: "temperature storage",
                requested: need,
                capacity: storage.as_ref().len(),
            });
        }
        Ok(Temperature {
            capacity,
            rows,
            len: 0,
            next: 0,
            t: 1.0,
            recorded: 0,
            storage,
        })
    }

    /// The temperature: divide logits by it.
    pub fn get(&self) -> f32 {
        self.t
    }

    /// Predictions kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every prediction; `T` back to 1.
    pub fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
        self.t = 1.0;
    }

    /// The kept rows and the temperature, for persisting: `(rows, next, t, values)`.
    pub fn parts(&self) -> (usize, usize, f32, &[f32]) {
        let w = 2 + self.capacity;
        (
            self.len,
            self.next,
            self.t,
            &self.storage.as_ref()[..self.len.max(self.next) * w],
        )
    }

    /// Restores what [`Temperature::parts`] gave. Checked: on an error nothing changed.
    pub fn restore(&mut self, len: usize, next: usize, t: f32, values: &[f32]) -> Result<()> {
        let w = 2 + self.capacity;
        let ok = len <= self.rows
            && next < self.rows.max(1)
            && (next <= len)
            && values.len() == len * w
            && (RANGE.0..=RANGE.1).contains(&t)
            && values.chunks_exact(w).all(|r| {
                r[0] >= 0.0
                    && r[0] < r[1]
                    && r[1] as usize <= self.capacity
                    && r[2..].iter().all(|v| v.is_finite())
            });
        if !ok {
            return Err(Error::Config {
                what: "a temperature state that does not fit",
            });
        }
        self.storage.as_mut()[..values.len()].copy_from_slice(values);
        self.len = len;
        self.next = next;
        self.t = t;
        Ok(())
    }

    /// Records a prediction made before its label: `logits` of the classes then (as the
    /// head gave them at temperature `t_used`), and the label. A label for a class that
    /// did not exist then (a new class) says nothing about calibration and is not kept.
    /// Then refits the temperature.
    pub fn record(&mut self, logits: &[f32], t_used: f32, label: usize) {
        let classes = logits.len();
        if label >= classes || classes < 2 || classes > self.capacity {
            return;
        }
        if !logits.iter().all(|v| v.is_finite()) {
            return;
        }
        let w = 2 + self.capacity;
        let row = &mut self.storage.as_mut()[self.next * w..(self.next + 1) * w];
        row[0] = label as f32;
        row[1] = classes as f32;
        for (o, &v) in row[2..2 + classes].iter_mut().zip(logits) {
            *o = v * t_used;
        }
        self.next = (self.next + 1) % self.rows;
        self.len = (self.len + 1).min(self.rows);
        self.recorded = self.recorded.wrapping_add(1);
        // A fit costs rows × classes × 24 exponentials: at every label while few are
        // kept, then every REFIT_EVERY labels (one more changes little).
        if self.len < 4 * MIN_ROWS || self.recorded.is_multiple_of(REFIT_EVERY) {
            self.fit();
        }
    }

    /// Negative log-likelihood of the kept rows at temperature `t`.
    fn nll(&self, t: f32) -> f32 {
        let w = 2 + self.capacity;
        let mut total = 0.0f32;
        for r in self.storage.as_ref()[..self.len * w].chunks_exact(w) {
            let (y, k) = (r[0] as usize, r[1] as usize);
            let z = &r[2..2 + k];
            let m = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) / t;
            let s: f32 = z.iter().map(|&v| libm::expf(v / t - m)).sum();
            total += m + libm::logf(s) - z[y] / t;
        }
        total
    }

    fn fit(&mut self) {
        if self.len < MIN_ROWS {
            return;
        }
        let (mut a, mut b) = (libm::logf(RANGE.0), libm::logf(RANGE.1));
        let g = 0.618_034f32;
        let mut c = b - g * (b - a);
        let mut d = a + g * (b - a);
        let (mut fc, mut fd) = (self.nll(libm::expf(c)), self.nll(libm::expf(d)));
        // 24 golden-section steps narrow ln T's range of 7.8 to 8e-5.
        for _ in 0..24 {
            if fc < fd {
                b = d;
                d = c;
                fd = fc;
                c = b - g * (b - a);
                fc = self.nll(libm::expf(c));
            } else {
                a = c;
                c = d;
                fc = fd;
                d = a + g * (b - a);
                fd = self.nll(libm::expf(d));
            }
        }
        let t = libm::expf(0.5 * (a + b));
        if t.is_finite() {
            self.t = t.clamp(RANGE.0, RANGE.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overconfident_logits_get_a_temperature_above_one() {
        // Logits that claim ~100 % but are right 70 % of the time.
        let mut t =
            Temperature::new(64, 3, vec![0.0; Temperature::<()>::storage_len(64, 3)]).unwrap();
        for i in 0..64 {
            let label = if i % 10 < 7 { 0 } else { 1 };
            t.record(&[20.0, 0.0, 0.0], 1.0, label);
        }
        assert!(t.get() > 5.0, "{}", t.get());
        // p(class 0) at the fitted temperature is near 0.7.
        let z = [20.0 / t.get(), 0.0, 0.0];
        let p0 = libm::expf(z[0]) / (libm::expf(z[0]) + 2.0);
        assert!((p0 - 0.7).abs() < 0.05, "{p0}");
    }

    #[test]
    fn new_classes_and_short_histories_leave_it_at_one() {
        let mut t =
            Temperature::new(16, 4, vec![0.0; Temperature::<()>::storage_len(16, 4)]).unwrap();
        t.record(&[1.0, 2.0], 1.0, 2); // a label that added a class
        for _ in 0..MIN_ROWS - 1 {
            t.record(&[5.0, 0.0], 1.0, 0);
        }
        assert_eq!(t.get(), 1.0);
        assert_eq!(t.len(), MIN_ROWS - 1);
    }
}
