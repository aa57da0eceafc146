//! A class-balanced replay buffer of labeled embeddings, with no heap.
//!
//! Learning only from the samples a user labels right now makes a head forget what it
//! learned before (catastrophic forgetting): a stream of one class pushes every input
//! towards that class. A [`SampleBuffer`] keeps up to `N` earlier embeddings with their
//! labels so that each learning step can replay a few of them next to the new sample
//! ([`SampleBuffer::sample_indices`] draws a class-balanced mini-batch).
//!
//! The features live in caller storage (`N × dim` values: a static array on a
//! microcontroller, a `Vec` on Linux); the per-slot bookkeeping (label and insertion
//! order) and the per-class counts live in fixed-capacity [`heapless::Vec`]s inside the
//! buffer.
//!
//! **Eviction.** Once the buffer is full, a new sample replaces the *oldest* sample of
//! the class that holds the *most* samples (on a tie, the class whose oldest sample is
//! the oldest), so the classes stay balanced and a rare class never loses its only
//! sample to a frequent one. When the new sample's own class is (one of) the largest, it
//! replaces its own class's oldest sample. When every class present holds exactly one
//! sample and the new sample belongs to a class not present, there is no room without
//! dropping a class entirely: [`SampleBuffer::push`] refuses it with [`Full`] and leaves
//! the buffer unchanged (like [`heapless::Vec::push`]).
//!
//! ```
//! use edgetune_core::buffer::{Pushed, SampleBuffer};
//! use edgetune_core::rng::Rng;
//!
//! const DIM: usize = 2;
//! const N: usize = 4;
//! let mut buf = SampleBuffer::<_, N>::new(DIM, [0.0f32; N * DIM]).unwrap();
//! for i in 0..3 {
//!     assert_eq!(buf.push(&[i as f32, 0.0], 0).unwrap(), Pushed::Stored);
//! }
//! buf.push(&[0.0, 1.0], 1).unwrap();
//! // Full: class 0 is the largest, so its oldest sample ([0, 0]) makes room.
//! assert_eq!(buf.push(&[0.0, 2.0], 1).unwrap(), Pushed::Evicted { label: 0 });
//! assert_eq!((buf.count(0), buf.count(1)), (2, 2));
//! assert!(buf.iter().all(|(x, _)| x != [0.0, 0.0]));
//!
//! // A replay mini-batch: classes drawn uniformly, then a sample of the class.
//! let mut idx = [0usize; 6];
//! let n = buf.sample_indices(&mut Rng::new(7), &mut idx);
//! let batch = idx[..n].iter().filter_map(|&i| buf.get(i));
//! assert_eq!(batch.count(), 6);
//! ```

use core::fmt;

use crate::error::{Error, Result, check_vector};
use crate::head::Storage;
use crate::math;
use crate::rng::Rng;

/// What [`SampleBuffer::push`] did with a sample it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Pushed {
    /// Stored in a free slot; nothing was dropped.
    Stored,
    /// Stored in place of the oldest sample of class `label` (which may be the new
    /// sample's own class).
    Evicted {
        /// The class that lost a sample.
        label: usize,
    },
}

/// The buffer is full, every class in it holds a single sample, and the refused sample
/// belongs to a class not present: storing it would drop a class entirely. The buffer is
/// unchanged; the caller still holds the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Full {
    /// The refused sample's class.
    pub label: usize,
    /// The buffer's capacity `N` (and the number of classes in it).
    pub capacity: usize,
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replay buffer full: its {} samples are {} classes of one sample each, no room for class {}",
            self.capacity, self.capacity, self.label
        )
    }
}

impl core::error::Error for Full {}

impl From<Full> for Error {
    /// As [`Error::Capacity`] of the buffer's classes, for callers that propagate with `?`.
    fn from(full: Full) -> Self {
        Error::Capacity {
            what: "replay buffer classes",
            requested: full.capacity.saturating_add(1),
            capacity: full.capacity,
        }
    }
}

/// Why [`SampleBuffer::push`] did not store a sample. The buffer is unchanged in both
/// cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PushError {
    /// The sample is invalid: wrong length ([`Error::Length`]) or NaN/infinity
    /// ([`Error::NonFinite`]).
    Invalid(Error),
    /// No room without dropping a class's only sample.
    Full(Full),
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Invalid(e) => fmt::Display::fmt(e, f),
            PushError::Full(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl core::error::Error for PushError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            PushError::Invalid(e) => Some(e),
            PushError::Full(e) => Some(e),
        }
    }
}

impl From<Error> for PushError {
    fn from(e: Error) -> Self {
        PushError::Invalid(e)
    }
}

impl From<Full> for PushError {
    fn from(e: Full) -> Self {
        PushError::Full(e)
    }
}

impl From<PushError> for Error {
    /// The validation error itself, or [`Full`] as [`Error::Capacity`].
    fn from(e: PushError) -> Self {
        match e {
            PushError::Invalid(e) => e,
            PushError::Full(full) => full.into(),
        }
    }
}

/// Bookkeeping of one occupied slot.
#[derive(Debug, Clone, Copy)]
struct Slot {
    label: usize,
    /// Insertion sequence number: smaller is older. A u64 never wraps in practice.
    seq: u64,
}

/// How many slots one class occupies.
#[derive(Debug, Clone, Copy)]
struct ClassCount {
    label: usize,
    count: usize,
}

/// Up to `N` labeled embeddings of `dim` values each, evicted class-balanced (see the
/// [module docs](self)).
///
/// Samples are addressed by slot index `0..len()`. An index stays valid until the next
/// call that modifies the buffer: eviction overwrites a slot in place, and
/// [`SampleBuffer::remove_class`] moves the last sample into each freed slot.
#[derive(Debug, Clone)]
pub struct SampleBuffer<S, const N: usize> {
    dim: usize,
    storage: S,
    slots: heapless::Vec<Slot, N>,
    /// Classes present, in order of first appearance, each with count ≥ 1.
    classes: heapless::Vec<ClassCount, N>,
    next_seq: u64,
}

impl<S, const N: usize> SampleBuffer<S, N> {
    /// Storage values a buffer of `N` samples of `dim` values needs (saturating).
    pub const fn storage_len(dim: usize) -> usize {
        N.saturating_mul(dim)
    }
}

impl<S: Storage, const N: usize> SampleBuffer<S, N> {
    /// An empty buffer of `dim`-value samples over `storage` (at least
    /// [`SampleBuffer::storage_len`] values; extra values are left alone).
    ///
    /// Errors: [`Error::Config`] when `dim` or `N` is 0 or `N × dim` overflows,
    /// [`Error::Capacity`] when the storage is too short.
    pub fn new(dim: usize, storage: S) -> Result<Self> {
        if dim == 0 {
            return Err(Error::Config {
                what: "sample dimension must be at least 1",
            });
        }
        if N == 0 {
            return Err(Error::Config {
                what: "buffer capacity N must be at least 1",
            });
        }
        let Some(need) = N.checked_mul(dim) else {
            return Err(Error::Config {
                what: "buffer size N * dim overflows the address space",
            });
        };
        let len = storage.as_ref().len();
        if len < need {
            return Err(Error::Capacity {
                what: "buffer storage",
                requested: need,
                capacity: len,
            });
        }
        Ok(SampleBuffer {
            dim,
            storage,
            slots: heapless::Vec::new(),
            classes: heapless::Vec::new(),
            next_seq: 0,
        })
    }

    /// Rebuilds a buffer from what [`SampleBuffer::slots`], [`SampleBuffer::classes`] and
    /// [`SampleBuffer::next_seq`] reported, with `storage` holding the samples in slot
    /// order (e.g. read back from a file): the result behaves exactly as the buffer that
    /// was saved. `slots` are `(label, seq)` per slot; `class_order` is every label
    /// present, in the order [`SampleBuffer::classes`] gave them.
    ///
    /// Errors: as [`SampleBuffer::new`], and [`Error::Config`] when the parts disagree
    /// (more than `N` slots, a sequence number repeated or not below `next_seq`, a class
    /// order that is not exactly the labels present), [`Error::NonFinite`] for a NaN or
    /// infinite sample.
    pub fn restore(
        dim: usize,
        storage: S,
        slots: &[(usize, u64)],
        class_order: &[usize],
        next_seq: u64,
    ) -> Result<Self> {
        let mut buf = Self::new(dim, storage)?;
        let bad = |what| Err(Error::Config { what });
        if slots.len() > N {
            return bad("restored buffer: more slots than its capacity");
        }
        if !math::all_finite(&buf.storage.as_ref()[..slots.len() * dim]) {
            return Err(Error::NonFinite {
                what: "restored buffer samples",
            });
        }
        for (i, &(label, seq)) in slots.iter().enumerate() {
            if seq >= next_seq || slots[..i].iter().any(|s| s.1 == seq) {
                return bad("restored buffer: sequence numbers repeat or reach next_seq");
            }
            if !class_order.contains(&label) {
                return bad("restored buffer: a slot's label is missing from the class order");
            }
            let _ = buf.slots.push(Slot { label, seq });
        }
        for (k, &label) in class_order.iter().enumerate() {
            let count = slots.iter().filter(|s| s.0 == label).count();
            if count == 0 || class_order[..k].contains(&label) {
                return bad(
                    "restored buffer: the class order lists a class twice or one with no slot",
                );
            }
            // At most N distinct labels were found in at most N slots.
            let _ = buf.classes.push(ClassCount { label, count });
        }
        buf.next_seq = next_seq;
        Ok(buf)
    }

    /// `(label, seq)` of every slot, in slot order: what [`SampleBuffer::restore`] takes.
    pub fn slots(&self) -> impl ExactSizeIterator<Item = (usize, u64)> + '_ {
        self.slots.iter().map(|s| (s.label, s.seq))
    }

    /// The sequence number the next pushed sample gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Makes this buffer a copy of `other` (same `dim`) without allocating.
    /// [`Error::Config`] when the dimensions differ.
    pub fn copy_from<T: Storage>(&mut self, other: &SampleBuffer<T, N>) -> Result<()> {
        if self.dim != other.dim {
            return Err(Error::Config {
                what: "copy_from: the buffers' sample sizes differ",
            });
        }
        let n = other.slots.len() * self.dim;
        self.storage.as_mut()[..n].copy_from_slice(&other.storage.as_ref()[..n]);
        self.slots.clone_from(&other.slots);
        self.classes.clone_from(&other.classes);
        self.next_seq = other.next_seq;
        Ok(())
    }

    /// Values per sample.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Most samples the buffer holds (`N`).
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the buffer holds no sample.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether the buffer holds `N` samples (the next push evicts or is refused).
    pub fn is_full(&self) -> bool {
        self.slots.is_full()
    }

    /// Samples of class `label` held (0 for a class not present).
    pub fn count(&self, label: usize) -> usize {
        self.classes
            .iter()
            .find(|c| c.label == label)
            .map_or(0, |c| c.count)
    }

    /// Number of distinct classes held.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The classes held with their sample counts, `(label, count)`, in order of first
    /// appearance.
    pub fn classes(&self) -> impl ExactSizeIterator<Item = (usize, usize)> + '_ {
        self.classes.iter().map(|c| (c.label, c.count))
    }

    /// The sample in slot `i` and its label; `None` when `i >= len()`.
    pub fn get(&self, i: usize) -> Option<(&[f32], usize)> {
        let slot = self.slots.get(i)?;
        Some((self.features(i), slot.label))
    }

    /// Every sample and its label, in slot order (not insertion order).
    pub fn iter(
        &self,
    ) -> impl ExactSizeIterator<Item = (&[f32], usize)> + DoubleEndedIterator + '_ {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| (self.features(i), s.label))
    }

    /// Stores a copy of `x` labeled `label`, evicting as described in the
    /// [module docs](self) when the buffer is full. On an error nothing changes:
    /// [`PushError::Invalid`] when `x` does not have `dim` values or holds NaN or an
    /// infinity, [`PushError::Full`] when there is no room without dropping a class.
    ///
    /// Time: O(N) bookkeeping plus the copy of `x` when there is room; when full,
    /// O(N × classes) to find the oldest sample of the largest class.
    pub fn push(&mut self, x: &[f32], label: usize) -> core::result::Result<Pushed, PushError> {
        check_vector("sample", x, self.dim)?;
        let seq = self.next_seq;
        if !self.slots.is_full() {
            let i = self.slots.len();
            self.write(i, x);
            // Cannot fail: the buffer is not full.
            let _ = self.slots.push(Slot { label, seq });
            self.add(label);
            self.next_seq += 1;
            return Ok(Pushed::Stored);
        }
        let largest = self.classes.iter().map(|c| c.count).max().unwrap_or(0);
        let own = self.count(label);
        let victim = if own == largest {
            // The incoming class is (one of) the largest: replace its own oldest.
            self.oldest_where(|s| s.label == label)
        } else if largest <= 1 {
            // Every class holds one sample and this one is new.
            return Err(Full { label, capacity: N }.into());
        } else {
            // The oldest sample among the largest classes is the oldest sample of the
            // tied class whose oldest sample is oldest.
            self.oldest_where(|s| self.count(s.label) == largest)
        };
        // `None` cannot happen when full (N ≥ 1, so the largest class has a sample);
        // report it as Full rather than panic.
        let Some(v) = victim else {
            return Err(Full { label, capacity: N }.into());
        };
        let evicted = self.slots[v].label;
        self.write(v, x);
        self.slots[v] = Slot { label, seq };
        self.sub(evicted);
        self.add(label);
        self.next_seq += 1;
        Ok(Pushed::Evicted { label: evicted })
    }

    /// Empties the buffer (the storage's values are left as they are).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.classes.clear();
        self.next_seq = 0;
    }

    /// Removes every sample of class `label` (e.g. when the user deletes the class) and
    /// returns how many there were. The last samples move into the freed slots.
    pub fn remove_class(&mut self, label: usize) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.slots.len() {
            if self.slots[i].label != label {
                i += 1;
                continue;
            }
            let last = self.slots.len() - 1;
            if i != last {
                let d = self.dim;
                self.storage
                    .as_mut()
                    .copy_within(last * d..(last + 1) * d, i * d);
            }
            self.slots.swap_remove(i);
            removed += 1;
        }
        if let Some(k) = self.classes.iter().position(|c| c.label == label) {
            self.classes.remove(k);
        }
        removed
    }

    /// Fills `out` with slot indices for a class-balanced replay mini-batch and returns
    /// how many it wrote: `out.len()`, or 0 when the buffer is empty. Each index is drawn
    /// by picking a class uniformly among the classes present, then one of its samples
    /// uniformly, so a rare class is replayed as often as a frequent one. Draws are with
    /// replacement (an index may repeat). Deterministic: the same buffer and generator
    /// state give the same indices. Time: O(N) per index.
    pub fn sample_indices(&self, rng: &mut Rng, out: &mut [usize]) -> usize {
        if self.classes.is_empty() {
            return 0;
        }
        for o in out.iter_mut() {
            let class = self.classes[rng.below(self.classes.len())];
            let k = rng.below(class.count);
            // The k-th slot of the class; the counts match the slots, so it exists.
            *o = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.label == class.label)
                .nth(k)
                .map_or(0, |(i, _)| i);
        }
        out.len()
    }

    /// Two distinct slots of one class, for the spread of a class around its mean: the
    /// class drawn uniformly among those with at least two samples, then two of its
    /// samples. `None` when no class has two. Time: O(N).
    pub fn sample_pair(&self, rng: &mut Rng) -> Option<(usize, usize)> {
        let pairs = self.classes.iter().filter(|c| c.count >= 2);
        let class = pairs.clone().nth(rng.below(pairs.count()))?;
        let a = rng.below(class.count);
        // The second is drawn among the others, so the two differ.
        let b = (a + 1 + rng.below(class.count - 1)) % class.count;
        let mut slots = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.label == class.label)
            .map(|(i, _)| i);
        let (first, second) = if a < b { (a, b) } else { (b, a) };
        let i = slots.nth(first)?;
        let j = slots.nth(second - first - 1)?;
        Some((i, j))
    }

    /// The storage back, e.g. to reuse a static buffer.
    pub fn into_storage(self) -> S {
        self.storage
    }

    fn features(&self, i: usize) -> &[f32] {
        &self.storage.as_ref()[i * self.dim..(i + 1) * self.dim]
    }

    fn write(&mut self, i: usize, x: &[f32]) {
        let d = self.dim;
        self.storage.as_mut()[i * d..(i + 1) * d].copy_from_slice(x);
    }

    /// Index of the oldest slot satisfying `pred`.
    fn oldest_where(&self, pred: impl Fn(&Slot) -> bool) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| pred(s))
            .min_by_key(|(_, s)| s.seq)
            .map(|(i, _)| i)
    }

    fn add(&mut self, label: usize) {
        match self.classes.iter_mut().find(|c| c.label == label) {
            Some(c) => c.count += 1,
            // Cannot fail: every class present holds at least one of the ≤ N slots.
            None => {
                let _ = self.classes.push(ClassCount { label, count: 1 });
            }
        }
    }

    fn sub(&mut self, label: usize) {
        if let Some(k) = self.classes.iter().position(|c| c.label == label) {
            self.classes[k].count -= 1;
            if self.classes[k].count == 0 {
                self.classes.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests;
