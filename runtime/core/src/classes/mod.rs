//! Per-class running means of L2-normalized embeddings, with no heap: prototypes for
//! weight imprinting ([`ClassMeans::imprint`]) and an out-of-distribution score
//! ([`ClassMeans::nearest`]: one minus the best cosine similarity to a class mean).
//!
//! Each embedding is scaled to unit length before it is averaged, so every sample
//! counts the same whatever its norm, and a mean's direction is the class's average
//! direction (its length, at most 1, shrinks as the class spreads out).
//!
//! The means live in caller storage of [`ClassMeans::storage_len`] values: the means
//! (`capacity × dim`, class-major) followed by the sample counts (`capacity` values,
//! whole numbers stored as `f32`).
//!
//! ```
//! use edgetune_core::classes::ClassMeans;
//!
//! const DIM: usize = 3;
//! const CLASSES: usize = 4;
//! let mut means =
//!     ClassMeans::new(DIM, CLASSES, [0.0f32; ClassMeans::<()>::storage_len(DIM, CLASSES)]).unwrap();
//! means.update(0, &[2.0, 0.0, 0.0]).unwrap();
//! means.update(0, &[0.0, 5.0, 0.0]).unwrap();
//! means.update(1, &[0.0, 0.0, 1.0]).unwrap();
//! assert_eq!(means.count(0), 2);
//! assert_eq!(means.mean(0), &[0.5, 0.5, 0.0]); // mean of the unit vectors
//!
//! // Closest class and its distance 1 - cosine: 0 same direction, 1 orthogonal.
//! let (class, distance) = means.nearest(&[0.1, 0.0, 3.0]).unwrap();
//! assert_eq!(class, 1);
//! assert!(distance < 0.01);
//! let (_, far) = means.nearest(&[-1.0, -1.0, -1.0]).unwrap();
//! assert!(far > 1.0); // unlike every class seen: out of distribution
//! ```

use crate::error::{Error, Result, check_vector};
use crate::head::{Head, Storage};
use crate::math;

/// Counts stop at 2^24, the largest `f32` that still counts in steps of one; the mean
/// then keeps moving with weight 2^-24 per sample.
const MAX_COUNT: f32 = 16_777_216.0;

/// How to turn an embedding into its unit vector without overflow or underflow.
#[derive(Clone, Copy)]
enum Unit {
    /// `x * k`: the norm was a normal, finite number.
    Scale(f32),
    /// `(x / m) / n`: the plain norm overflowed or underflowed; `m` is the largest
    /// magnitude and `n` the norm of `x / m`.
    Rescale(f32, f32),
}

impl Unit {
    /// Smallest norm whose square is still a normal `f32` (with margin).
    const TINY: f32 = 1e-18;

    /// `None` for an all-zero `x` (which has no direction). `x` must be finite.
    fn of(x: &[f32]) -> Option<Unit> {
        let n = math::norm(x);
        if n.is_finite() && n >= Self::TINY {
            return Some(Unit::Scale(1.0 / n));
        }
        let m = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if m == 0.0 {
            return None;
        }
        let s: f32 = x.iter().map(|v| (v / m) * (v / m)).sum();
        Some(Unit::Rescale(m, math::sqrt(s)))
    }

    #[inline]
    fn apply(self, v: f32) -> f32 {
        match self {
            Unit::Scale(k) => v * k,
            Unit::Rescale(m, n) => (v / m) / n,
        }
    }

    /// The dot product of the unit vector of `x` with `y`.
    fn dot(self, x: &[f32], y: &[f32]) -> f32 {
        match self {
            // |x · y| ≤ ‖x‖‖y‖, finite here since ‖x‖ is and means have norm ≤ √dim.
            Unit::Scale(k) => math::dot(x, y) * k,
            Unit::Rescale(..) => x.iter().zip(y).map(|(&a, &b)| self.apply(a) * b).sum(),
        }
    }
}

/// Running means of the unit-normalized embeddings of up to `capacity` classes (see the
/// [module docs](self)).
#[derive(Debug, Clone)]
pub struct ClassMeans<S> {
    dim: usize,
    capacity: usize,
    storage: S,
}

impl<S> ClassMeans<S> {
    /// Storage values for `capacity` classes of `dim`-value embeddings:
    /// `capacity × (dim + 1)` (saturating).
    pub const fn storage_len(dim: usize, capacity: usize) -> usize {
        capacity.saturating_mul(dim.saturating_add(1))
    }
}

impl<S: Storage> ClassMeans<S> {
    /// Empty statistics (every count 0, every mean zero) for classes `0..capacity` of
    /// `dim`-value embeddings, over `storage` (at least [`ClassMeans::storage_len`]
    /// values; its first that many are zeroed, the rest left alone).
    ///
    /// Errors: [`Error::Config`] when `dim` or `capacity` is 0 or the size overflows,
    /// [`Error::Capacity`] when the storage is too short.
    pub fn new(dim: usize, capacity: usize, storage: S) -> Result<Self> {
        let mut means = Self::checked(dim, capacity, storage)?;
        means.clear();
        Ok(means)
    }

    /// Statistics kept in `storage` from an earlier [`ClassMeans`] of the same `dim` and
    /// `capacity` (e.g. a persisted or retained buffer), without clearing them. The
    /// contents are checked: [`Error::NonFinite`] for a NaN or infinite value,
    /// [`Error::Config`] for a count that is not a whole number in `0..=2^24` or a mean
    /// longer than 1 + 1e-3 (a mean of unit vectors never is).
    pub fn restore(dim: usize, capacity: usize, storage: S) -> Result<Self> {
        let means = Self::checked(dim, capacity, storage)?;
        let s = &means.storage.as_ref()[..Self::storage_len(dim, capacity)];
        if !math::all_finite(s) {
            return Err(Error::NonFinite {
                what: "class means",
            });
        }
        let (m, counts) = s.split_at(capacity * dim);
        if !counts
            .iter()
            .all(|&c| (0.0..=MAX_COUNT).contains(&c) && c == libm::truncf(c))
        {
            return Err(Error::Config {
                what: "class mean counts must be whole numbers in 0..=2^24",
            });
        }
        if !m.chunks_exact(dim).all(|row| math::norm(row) <= 1.001) {
            return Err(Error::Config {
                what: "class means must have norm at most 1",
            });
        }
        Ok(means)
    }

    fn checked(dim: usize, capacity: usize, storage: S) -> Result<Self> {
        if dim == 0 {
            return Err(Error::Config {
                what: "class mean dimension must be at least 1",
            });
        }
        if capacity == 0 {
            return Err(Error::Config {
                what: "class mean capacity must be at least 1",
            });
        }
        let Some(need) = dim.checked_add(1).and_then(|d| d.checked_mul(capacity)) else {
            return Err(Error::Config {
                what: "class mean size overflows the address space",
            });
        };
        let len = storage.as_ref().len();
        if len < need {
            return Err(Error::Capacity {
                what: "class mean storage",
                requested: need,
                capacity: len,
            });
        }
        Ok(ClassMeans {
            dim,
            capacity,
            storage,
        })
    }

    /// Makes these statistics a copy of `other` (same `dim` and capacity) without
    /// allocating. [`Error::Config`] when the shapes differ.
    pub fn copy_from<T: Storage>(&mut self, other: &ClassMeans<T>) -> Result<()> {
        if (self.dim, self.capacity) != (other.dim, other.capacity) {
            return Err(Error::Config {
                what: "copy_from: the class means' shapes differ",
            });
        }
        let n = Self::storage_len(self.dim, self.capacity);
        self.storage.as_mut()[..n].copy_from_slice(&other.storage.as_ref()[..n]);
        Ok(())
    }

    /// Values per embedding.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of classes tracked (`0..capacity`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The whole used storage: means, then counts.
    pub fn as_slice(&self) -> &[f32] {
        &self.storage.as_ref()[..Self::storage_len(self.dim, self.capacity)]
    }

    /// The storage back, e.g. to reuse a static buffer.
    pub fn into_storage(self) -> S {
        self.storage
    }

    fn check_class(&self, class: usize) -> Result<()> {
        if class >= self.capacity {
            return Err(Error::UnknownClass {
                class,
                classes: self.capacity,
            });
        }
        Ok(())
    }

    fn check_embedding(&self, x: &[f32]) -> Result<Unit> {
        check_vector("embedding", x, self.dim)?;
        Unit::of(x).ok_or(Error::Config {
            what: "embedding is all zero: it has no direction",
        })
    }

    fn count_at(&self, class: usize) -> f32 {
        self.storage.as_ref()[self.capacity * self.dim + class]
    }

    /// Samples averaged into `class` (0 for a class never updated or out of range).
    /// Stops counting at 2^24.
    pub fn count(&self, class: usize) -> usize {
        if class >= self.capacity {
            return 0;
        }
        self.count_at(class) as usize
    }

    /// The mean of `class`'s unit-normalized embeddings, `dim` values (all zero when
    /// its count is 0); an empty slice when `class >= capacity`.
    pub fn mean(&self, class: usize) -> &[f32] {
        if class >= self.capacity {
            return &[];
        }
        let d = self.dim;
        &self.storage.as_ref()[class * d..(class + 1) * d]
    }

    /// Adds the embedding `x` of `class` to its running mean (after scaling `x` to unit
    /// length). Nothing changes on an error: [`Error::UnknownClass`] when
    /// `class >= capacity`, [`Error::Length`] for a wrong length, [`Error::NonFinite`]
    /// for NaN or infinity, and [`Error::Config`] for an all-zero `x`, which has no
    /// direction (skip such samples).
    pub fn update(&mut self, class: usize, x: &[f32]) -> Result<()> {
        self.check_class(class)?;
        let unit = self.check_embedding(x)?;
        let (d, cap) = (self.dim, self.capacity);
        let s = self.storage.as_mut();
        let n = (s[cap * d + class] + 1.0).min(MAX_COUNT);
        s[cap * d + class] = n;
        let w = 1.0 / n;
        for (m, &v) in s[class * d..(class + 1) * d].iter_mut().zip(x) {
            *m += w * (unit.apply(v) - *m);
        }
        Ok(())
    }

    /// Forgets `class`: count 0, mean zero. [`Error::UnknownClass`] when
    /// `class >= capacity`.
    pub fn reset(&mut self, class: usize) -> Result<()> {
        self.check_class(class)?;
        let (d, cap) = (self.dim, self.capacity);
        let s = self.storage.as_mut();
        s[class * d..(class + 1) * d].fill(0.0);
        s[cap * d + class] = 0.0;
        Ok(())
    }

    /// Forgets every class.
    pub fn clear(&mut self) {
        let n = Self::storage_len(self.dim, self.capacity);
        self.storage.as_mut()[..n].fill(0.0);
    }

    /// The class whose mean has the highest cosine similarity to `x`, among classes with
    /// a count above 0, and its distance `1 - cosine` (0 same direction, 1 orthogonal, up
    /// to 2 opposite): a large distance flags an input unlike anything seen, an
    /// out-of-distribution score. A mean of length zero (samples that cancel out) has
    /// cosine 0. Ties go to the lower class index.
    ///
    /// `None` when no class has samples, and also when `x` is invalid (wrong length,
    /// NaN or infinity, all zero): [`ClassMeans::try_nearest`] tells these apart. Time:
    /// O(capacity × dim).
    pub fn nearest(&self, x: &[f32]) -> Option<(usize, f32)> {
        self.try_nearest(x).ok().flatten()
    }

    /// [`ClassMeans::nearest`], with the reason when `x` is invalid: `Ok(None)` when no
    /// class has samples; errors as for [`ClassMeans::update`] (an all-zero `x` has no
    /// cosine).
    pub fn try_nearest(&self, x: &[f32]) -> Result<Option<(usize, f32)>> {
        let unit = self.check_embedding(x)?;
        let mut best: Option<(usize, f32)> = None;
        for class in 0..self.capacity {
            if self.count_at(class) < 1.0 {
                continue;
            }
            let d = self.dim;
            let mean = &self.storage.as_ref()[class * d..(class + 1) * d];
            let norm = math::norm(mean);
            let cos = if norm > 0.0 {
                (unit.dot(x, mean) / norm).clamp(-1.0, 1.0)
            } else {
                0.0
            };
            if best.is_none_or(|(_, b)| cos > b) {
                best = Some((class, cos));
            }
        }
        Ok(best.map(|(class, cos)| (class, 1.0 - cos)))
    }

    /// Imprints `class` of `head` from its mean: [`Head::imprint`]`(class, mean, None)`,
    /// so the class's output row points along the mean with the average norm of the
    /// other rows.
    ///
    /// The means must be of the head's *input* embeddings (`dim` equal to the head's
    /// `Dims::input`): for an MLP head, [`Head::imprint`] itself passes the mean through
    /// the hidden layer. Since the mean is of unit vectors, that works as intended when
    /// the backbone's embeddings are themselves about unit length (the hidden layer's
    /// biases do not scale with the input); otherwise imprint an MLP head from a raw
    /// embedding with [`Head::imprint`]. For a linear head the length does not matter.
    ///
    /// Errors: [`Error::UnknownClass`] when `class` is beyond these statistics or the
    /// head's active classes (add it with [`Head::add_class`] first), [`Error::Config`]
    /// when the class has no samples, and [`Head::imprint`]'s errors (e.g.
    /// [`Error::Length`] when `dim` is not the head's input size). The head is unchanged
    /// on an error.
    pub fn imprint<H: Storage>(&self, head: &mut Head<H>, class: usize) -> Result<()> {
        self.check_class(class)?;
        let mean = self.mean(class);
        if self.count_at(class) < 1.0 {
            return Err(Error::Config {
                what: "class has no samples to imprint from",
            });
        }
        head.imprint(class, mean, None)
    }
}

#[cfg(test)]
mod tests;
