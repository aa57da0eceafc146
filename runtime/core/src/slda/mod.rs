//! Streaming linear discriminant analysis: the device's closed-form learner (Hayes &
//! Kanan, *Lifelong machine learning with deep streaming LDA*, 2020), with no heap.
//!
//! Its state is sufficient statistics of every label it was given: per-class counts and
//! means, and the pooled within-class scatter matrix. So the head it writes does not
//! depend on the order of the labels, old classes are not forgotten when a class is
//! labeled 200 times in a row, a new class is usable from its first label, and two
//! devices' statistics merge exactly ([`Slda::merge`]).
//!
//! **Units.** Everything is kept in standardized units `z = (x − center) · scale`, with
//! `center` and `scale` from the bundle's embedding statistics (or, without them, the
//! first label: that sample as the center and the inverse of its root mean square as a
//! scale), so the learner behaves the same whatever the backbone's units: embeddings
//! multiplied by 0.01 or 100 give the same predictions.
//!
//! **Covariance.** The covariance the classes share is the posterior mean under a prior
//! of strength `ν0` pseudo-samples: `Σ = (ν0·Σ0 + S) / (ν0 + n_w)`, where `S` is the
//! within-class scatter of the labels and `n_w` its degrees of freedom. `Σ0` is the
//! bundle's covariance of embeddings (within-class from `finetune-head train`, or of the
//! calibration samples from `convert --calib`), which lets the learner use the
//! backbone's correlations from the very first label; without one it is diagonal, each
//! dimension at the labels' own total variance (shrunk toward their mean), so that
//! features of very different units (wine's magnesium beside its hue) count alike. Each class's logit is `w_c·z + b_c` with `w_c = Σ⁻¹ μ_c`, `b_c = −½ μ_cᵀ Σ⁻¹ μ_c`
//! (equal class priors: a class labeled more often is not favoured), divided by a
//! temperature the caller fits ([`crate::calibrate`]); [`Slda::write_head`] folds all
//! of it into a linear [`Head`](crate::head::Head) over raw embeddings, so predicting costs what it always
//! did.
//!
//! **Two shapes.** [`Full`] keeps the whole `dim × dim` covariance (the Linux device);
//! [`Diagonal`] keeps only its diagonal (per-dimension variances, a naive-Bayes-like
//! LDA: `dim` values where `Full` needs `dim²`), for microcontrollers whose RAM holds no
//! `dim²` matrix. The shape is a type parameter, so a firmware that uses `Diagonal`
//! links none of the full matrix code (the Cholesky inverse, the rank-one updates).
//! Below, `D·D` parts are `D` values for `Diagonal`.
//!
//! **Cost.** `Σ⁻¹` is kept up to date: at `dim ≤` [`EXACT_DIM`] it is recomputed by a
//! Cholesky factorization at every label; above, each label is a rank-one
//! Sherman–Morrison update (two passes over a `dim × dim` matrix: `Λv`, then `Λ` and the
//! scatter updated together), with an exact recomputation after [`REFRESH_EVERY`]
//! labels and whenever the prior changes. `Λ μ_c` is kept per class (updated in
//! `O(classes·dim)` with the inverse), so writing the head costs no pass over `Λ`.
//!
//! Storage (caller-provided, [`Slda::storage_len`] values, `D = dim`, `C = capacity`):
//!
//! | range | what |
//! | --- | --- |
//! | `META` values | classes, labels, labels since the last exact inverse, prior kind, `ν0`, reserved, standardization set |
//! | `D` | center |
//! | `D` | scale |
//! | `C` | counts |
//! | `C·D` | class means (standardized) |
//! | `D·D` | within-class scatter `S` (standardized) |
//! | `D·D` | prior covariance `Σ0` (standardized; diagonal from the labels without one) |
//! | `D·D` | `Λ = (ν0·Σ0 + S)⁻¹` |
//! | `C·D` | `Λ μ_c` per class |
//! | `2·D` | scratch |
//!
//! Only the first six parts are the learner's state ([`Slda::state_len`]); the rest is
//! derived and rebuilt by [`Slda::refresh`].
//!
//! Files: `update.rs` learning a label and merging statistics, `head.rs` writing the
//! head, `prior.rs` the prior from the labels, `inverse.rs` the Cholesky inverse; this
//! file holds the learner, its storage layout and its setters.

use crate::error::{Error, Result, check_vector};
use crate::head::Storage;
use core::marker::PhantomData;

mod head;
mod inverse;
mod prior;
mod update;

/// Up to this embedding size the inverse is recomputed exactly at every label.
pub const EXACT_DIM: usize = 64;
/// Above [`EXACT_DIM`], labels between two exact recomputations of the inverse.
pub const REFRESH_EVERY: u32 = 1024;
/// Within-class degrees of freedom at which a prior from the labels ([`Prior::Labels`])
/// is half isotropic, half each dimension's own variance.
pub const LABEL_PRIOR_SHRINK: f32 = 8.0;
/// Values of the meta block.
pub const META: usize = 8;
/// The logit of a class without labels in a head the learner writes
/// ([`Slda::write_head`]): finite (a head with it saves and loads), and far below any
/// labeled class's.
pub const UNLABELED_LOGIT: f32 = -1e30;

mod meta {
    pub const CLASSES: usize = 0;
    pub const LABELS: usize = 1;
    pub const SINCE_REFRESH: usize = 2;
    pub const PRIOR: usize = 3;
    pub const NU0: usize = 4;
    /// Reserved (zero).
    pub const _RESERVED: usize = 5;
    pub const STANDARDIZED: usize = 6;
}

/// Where the prior covariance comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Prior {
    /// Diagonal, from the labels seen: each dimension's total variance, shrunk toward
    /// their mean (nearest class mean in per-dimension standardized units until classes
    /// have more than one label).
    Labels,
    /// A covariance given by [`Slda::set_prior`] (the bundle's).
    Given,
}

/// The shape of the covariance a learner keeps: [`Full`] or [`Diagonal`].
pub trait Covariance: sealed::Sealed {
    /// Whether it is the whole matrix.
    const FULL: bool;
    /// Its learner code in a [`crate::persist`] record.
    const CODE: u8;
}

/// The whole `dim × dim` covariance.
#[derive(Debug, Clone, Copy)]
pub struct Full;

/// Only the covariance's diagonal: `dim` values instead of `dim²`.
#[derive(Debug, Clone, Copy)]
pub struct Diagonal;

impl Covariance for Full {
    const FULL: bool = true;
    const CODE: u8 = crate::persist::SLDA_FULL;
}

impl Covariance for Diagonal {
    const FULL: bool = false;
    const CODE: u8 = crate::persist::SLDA_DIAGONAL;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Full {}
    impl Sealed for super::Diagonal {}
}

/// A streaming LDA learner over caller storage (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Slda<S, K = Full> {
    dim: usize,
    capacity: usize,
    storage: S,
    shape: PhantomData<K>,
}

/// Offsets of the storage's parts.
#[derive(Clone, Copy)]
struct Layout {
    center: usize,
    scale: usize,
    counts: usize,
    means: usize,
    scatter: usize,
    prior: usize,
    inverse: usize,
    gram: usize,
    scratch: usize,
    end: usize,
}

/// Values of a `d × d` part: `d²`, or `d` when only the diagonal is kept.
const fn square(d: usize, full: bool) -> usize {
    if full { d * d } else { d }
}

const fn layout(d: usize, c: usize, full: bool) -> Layout {
    let sq = square(d, full);
    let center = META;
    let scale = center + d;
    let counts = scale + d;
    let means = counts + c;
    let scatter = means + c * d;
    let prior = scatter + sq;
    let inverse = prior + sq;
    let gram = inverse + sq;
    let scratch = gram + c * d;
    Layout {
        center,
        scale,
        counts,
        means,
        scatter,
        prior,
        inverse,
        gram,
        scratch,
        end: scratch + 2 * d,
    }
}

impl<S, K: Covariance> Slda<S, K> {
    /// Storage values for `capacity` classes of `dim`-value embeddings.
    pub const fn storage_len(dim: usize, capacity: usize) -> usize {
        layout(dim, capacity, K::FULL).end
    }

    /// Values of the learner's state (the prefix of the storage that
    /// [`Slda::state`] returns): meta, center, scale, counts, means, scatter.
    pub const fn state_len(dim: usize, capacity: usize) -> usize {
        layout(dim, capacity, K::FULL).prior
    }

    /// Whether `v` can be value `index` of a saved state ([`Slda::state`]) of this
    /// shape: counts are whole and not negative, scales positive, the prior strength
    /// positive, the number of classes within the capacity. One value at a time, so a
    /// record streamed from flash is checked before anything is written.
    pub fn state_value_ok(dim: usize, capacity: usize, index: usize, v: f32) -> bool {
        let l = layout(dim, capacity, K::FULL);
        let whole = v >= 0.0 && libm::truncf(v) == v;
        match index {
            meta::CLASSES => whole && v <= capacity as f32,
            meta::NU0 => v > 0.0,
            i if (l.scale..l.counts).contains(&i) => v > 0.0,
            i if (l.counts..l.means).contains(&i) => whole,
            _ => v.is_finite(),
        }
    }

    /// Checks a whole saved state of this shape before anything of it is used: its
    /// length (an error naming `what`) and every value ([`Slda::state_value_ok`]; an
    /// error saying `impossible`).
    pub(crate) fn check_state(
        state: &[f32],
        dim: usize,
        capacity: usize,
        what: &'static str,
        impossible: &'static str,
    ) -> Result<()> {
        check_vector(what, state, Self::state_len(dim, capacity))?;
        let ok = state
            .iter()
            .enumerate()
            .all(|(i, &v)| Self::state_value_ok(dim, capacity, i, v));
        if ok {
            Ok(())
        } else {
            Err(Error::Config { what: impossible })
        }
    }

    /// The offset of entry `(i, i)` of a `d × d` part.
    const fn diag(d: usize, i: usize) -> usize {
        if K::FULL { i * d + i } else { i }
    }
}

impl<S: Storage, K: Covariance> Slda<S, K> {
    /// An empty learner (no class, isotropic prior of strength `nu0`, no
    /// standardization yet) over `storage` of at least [`Slda::storage_len`] values.
    pub fn new(dim: usize, capacity: usize, nu0: f32, mut storage: S) -> Result<Self> {
        if dim == 0 || capacity == 0 || !(nu0 > 0.0 && nu0.is_finite()) {
            return Err(Error::Config {
                what: "streaming LDA needs dim >= 1, capacity >= 1 and a prior strength > 0",
            });
        }
        let need = Self::storage_len(dim, capacity);
        let s = storage.as_mut();
        if s.len() < need {
            return Err(Error::Capacity {
                what: "streaming LDA storage",
                requested: need,
                capacity: s.len(),
            });
        }
        s[..need].fill(0.0);
        s[meta::NU0] = nu0;
        let mut l = Slda {
            dim,
            capacity,
            storage,
            shape: PhantomData,
        };
        l.refresh();
        Ok(l)
    }

    fn lay(&self) -> Layout {
        layout(self.dim, self.capacity, K::FULL)
    }

    fn s(&self) -> &[f32] {
        self.storage.as_ref()
    }

    fn s_mut(&mut self) -> &mut [f32] {
        self.storage.as_mut()
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Most classes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Classes that have (or had room made for) statistics.
    pub fn classes(&self) -> usize {
        self.s()[meta::CLASSES] as usize
    }

    /// Labels learned.
    pub fn labels(&self) -> u64 {
        self.s()[meta::LABELS] as u64
    }

    /// Labels of `class`.
    pub fn count(&self, class: usize) -> u64 {
        if class >= self.capacity {
            return 0;
        }
        self.s()[self.lay().counts + class] as u64
    }

    /// Where the prior covariance comes from.
    pub fn prior(&self) -> Prior {
        if self.s()[meta::PRIOR] == 1.0 {
            Prior::Given
        } else {
            Prior::Labels
        }
    }

    /// The prior's strength `ν0` in pseudo-samples.
    pub fn prior_strength(&self) -> f32 {
        self.s()[meta::NU0]
    }

    /// Whether the standardization (center and scale) is set.
    pub fn standardized(&self) -> bool {
        self.s()[meta::STANDARDIZED] == 1.0
    }

    /// The learner's state: the prefix of the storage to persist or send
    /// ([`Slda::state_len`] values).
    pub fn state(&self) -> &[f32] {
        &self.s()[..Self::state_len(self.dim, self.capacity)]
    }

    /// The standardization's center (zeros before it is set).
    pub fn center(&self) -> &[f32] {
        let l = self.lay();
        &self.s()[l.center..l.center + self.dim]
    }

    /// The standardization's scale (zeros before it is set).
    pub fn scale(&self) -> &[f32] {
        let l = self.lay();
        &self.s()[l.scale..l.scale + self.dim]
    }

    /// Sets the standardization `z = (x − center) · scale` (the bundle's embedding
    /// mean and the inverse of its standard deviation, per dimension). Only before the
    /// first label.
    pub fn set_standardization(&mut self, center: &[f32], scale: &[f32]) -> Result<()> {
        check_vector("standardization center", center, self.dim)?;
        check_vector("standardization scale", scale, self.dim)?;
        if scale.iter().any(|&v| v <= 0.0) {
            return Err(Error::Config {
                what: "standardization scales must be > 0",
            });
        }
        if self.labels() > 0 {
            return Err(Error::Config {
                what: "the standardization is set before the first label",
            });
        }
        let l = self.lay();
        let s = self.s_mut();
        s[l.center..l.center + center.len()].copy_from_slice(center);
        s[l.scale..l.scale + scale.len()].copy_from_slice(scale);
        s[meta::STANDARDIZED] = 1.0;
        Ok(())
    }

    /// Starts from a bundle's embedding statistics: units `z = (x − mean) / std`
    /// ([`Slda::set_standardization`] with scale `1/std`), then `cov` as the prior of
    /// strength `nu0` ([`Slda::set_prior`]). Only before the first label.
    pub fn set_stats(&mut self, mean: &[f32], std: &[f32], cov: &[f32], nu0: f32) -> Result<()> {
        check_vector("standardization center", mean, self.dim)?;
        check_vector("standardization spread", std, self.dim)?;
        if std.iter().any(|&v| v <= 0.0) {
            return Err(Error::Config {
                what: "standardization spreads must be > 0",
            });
        }
        if self.labels() > 0 {
            return Err(Error::Config {
                what: "the standardization is set before the first label",
            });
        }
        let before = self.s()[meta::STANDARDIZED];
        let l = self.lay();
        let s = self.s_mut();
        s[l.center..l.center + mean.len()].copy_from_slice(mean);
        for (o, &v) in s[l.scale..l.scale + std.len()].iter_mut().zip(std) {
            *o = 1.0 / v;
        }
        s[meta::STANDARDIZED] = 1.0;
        let set = self.set_prior(cov, nu0);
        if set.is_err() {
            // Nothing changed: the units go back to unset when they were.
            self.s_mut()[meta::STANDARDIZED] = before;
        }
        set
    }

    /// Sets the prior covariance `Σ0` (`dim × dim`, row-major, in the units of the
    /// embeddings: it is standardized here; a [`Diagonal`] learner keeps its diagonal)
    /// and its strength. Only before the first
    /// label, and after [`Slda::set_standardization`].
    pub fn set_prior(&mut self, cov: &[f32], nu0: f32) -> Result<()> {
        let d = self.dim;
        check_vector("prior covariance", cov, d * d)?;
        if !(nu0 > 0.0 && nu0.is_finite()) {
            return Err(Error::Config {
                what: "the prior strength must be > 0",
            });
        }
        if self.labels() > 0 || !self.standardized() {
            return Err(Error::Config {
                what: "the prior is set after the standardization and before the first label",
            });
        }
        for i in 0..d {
            if cov[i * d + i].is_nan() || cov[i * d + i] <= 0.0 {
                return Err(Error::Config {
                    what: "a prior covariance has a positive diagonal",
                });
            }
        }
        let l = self.lay();
        let s = self.s_mut();
        let (head, prior) = s.split_at_mut(l.prior);
        Self::scaled_square(cov, 1.0, d, &head[l.scale..l.scale + d], prior);
        s[meta::PRIOR] = 1.0;
        s[meta::NU0] = nu0;
        self.refresh();
        Ok(())
    }

    /// Starts from the host's statistics of classes `0..counts.len()`: their counts
    /// and means (`means`, class after class, in the embeddings' units), and the
    /// within-class covariance `cov` they share (its scatter is `cov` times the degrees
    /// of freedom). Only on an empty learner, after [`Slda::set_standardization`].
    pub fn seed_classes(&mut self, counts: &[u64], means: &[f32], cov: &[f32]) -> Result<()> {
        let d = self.dim;
        let k = counts.len();
        if self.labels() > 0 || !self.standardized() || k > self.capacity {
            return Err(Error::Config {
                what: "host class statistics go into an empty, standardized learner with room for them",
            });
        }
        check_vector("host class means", means, k * d)?;
        check_vector("host covariance", cov, d * d)?;
        let n: u64 = counts.iter().sum();
        let dof = n.saturating_sub(counts.iter().filter(|&&c| c > 0).count() as u64) as f32;
        let l = self.lay();
        let s = self.s_mut();
        for (c, &count) in counts.iter().enumerate() {
            s[l.counts + c] = count as f32;
            for i in 0..d {
                s[l.means + c * d + i] = (means[c * d + i] - s[l.center + i]) * s[l.scale + i];
            }
        }
        let (head, rest) = s.split_at_mut(l.scatter);
        Self::scaled_square(cov, dof, d, &head[l.scale..l.scale + d], rest);
        s[meta::CLASSES] = k as f32;
        s[meta::LABELS] = n as f32;
        self.refresh();
        Ok(())
    }

    /// `out[i][j] = k · m[i][j] · scale[i] · scale[j]` for a `d × d` matrix `m` into a
    /// part of this shape (its diagonal only, for [`Diagonal`]).
    fn scaled_square(m: &[f32], k: f32, d: usize, scale: &[f32], out: &mut [f32]) {
        for i in 0..d {
            if K::FULL {
                for j in 0..d {
                    out[i * d + j] = k * m[i * d + j] * scale[i] * scale[j];
                }
            } else {
                out[i] = k * m[i * d + i] * scale[i] * scale[i];
            }
        }
    }

    /// Restores a state saved from [`Slda::state`] into this learner (same dimensions;
    /// its prior covariance, if given, stays). The values are checked: on an error
    /// nothing changed.
    pub fn restore(&mut self, state: &[f32]) -> Result<()> {
        Self::check_state(
            state,
            self.dim,
            self.capacity,
            "streaming LDA state",
            "a streaming LDA state with impossible counts or scales",
        )?;
        self.restore_checked(&mut state.iter().copied());
        Ok(())
    }

    /// [`Slda::restore`] from values already checked ([`Slda::state_value_ok`]), as
    /// many as [`Slda::state_len`].
    pub(crate) fn restore_checked(&mut self, values: &mut dyn Iterator<Item = f32>) {
        let n = Self::state_len(self.dim, self.capacity);
        let given = self.prior() == Prior::Given;
        let s = self.s_mut();
        for (d, v) in s[..n].iter_mut().zip(values) {
            *d = v;
        }
        s[meta::PRIOR] = if given { 1.0 } else { 0.0 };
        self.refresh();
    }

    /// Forgets every label: no class, no counts, means or scatter. The units and a
    /// given prior stay.
    pub fn forget(&mut self) {
        let l = self.lay();
        let s = self.s_mut();
        s[meta::CLASSES] = 0.0;
        s[meta::LABELS] = 0.0;
        s[l.counts..l.prior].fill(0.0);
        self.refresh();
    }
}

/// The statistics in a saved state ([`Slda::state`]), by name, as a device sends them
/// to its fleet: means and scatter in standardized units.
#[derive(Debug, Clone, Copy)]
pub struct StateParts<'a> {
    /// Classes with statistics.
    pub classes: usize,
    /// Labels learned.
    pub labels: f32,
    /// The standardization's center.
    pub center: &'a [f32],
    /// The standardization's scale.
    pub scale: &'a [f32],
    /// Labels per class (`classes` values or more; the rest are zero).
    pub counts: &'a [f32],
    /// Class means, class after class (`dim` values each, as many as `counts`).
    pub means: &'a [f32],
    /// The within-class scatter (`dim × dim`, or its diagonal for [`Diagonal`]).
    pub scatter: &'a [f32],
}

impl<S, K: Covariance> Slda<S, K> {
    /// The parts of a saved state of a learner with room for `capacity` classes.
    pub fn state_parts(state: &[f32], dim: usize, capacity: usize) -> Result<StateParts<'_>> {
        check_vector("streaming LDA state", state, Self::state_len(dim, capacity))?;
        let l = layout(dim, capacity, K::FULL);
        Ok(StateParts {
            classes: state[meta::CLASSES] as usize,
            labels: state[meta::LABELS],
            center: &state[l.center..l.scale],
            scale: &state[l.scale..l.counts],
            counts: &state[l.counts..l.means],
            means: &state[l.means..l.scatter],
            scatter: &state[l.scatter..l.prior],
        })
    }

    /// The labels per class of a saved state of a learner with room for `capacity`
    /// classes (`capacity` values). Only its length is checked: for a state checked
    /// once, by [`Slda::state_parts`], and read again on a learner's hot path.
    pub fn state_counts(state: &[f32], dim: usize, capacity: usize) -> Result<&[f32]> {
        let expected = Self::state_len(dim, capacity);
        if state.len() != expected {
            return Err(Error::Length {
                what: "streaming LDA state",
                expected,
                found: state.len(),
            });
        }
        let l = layout(dim, capacity, K::FULL);
        Ok(&state[l.counts..l.means])
    }

    /// Writes a saved state ([`Slda::restore`], [`Slda::merge_state`]) of a learner
    /// with room for `capacity` classes and prior strength `nu0` from its parts into
    /// `out` ([`Slda::state_len`] values). The parts' lengths are checked; their values
    /// are checked when the state is restored or merged.
    pub fn compose_state(
        out: &mut [f32],
        dim: usize,
        capacity: usize,
        nu0: f32,
        p: &StateParts,
    ) -> Result<()> {
        let need = Self::state_len(dim, capacity);
        if out.len() != need {
            return Err(Error::Length {
                what: "streaming LDA state",
                expected: need,
                found: out.len(),
            });
        }
        let k = p.counts.len();
        if k > capacity || p.classes > k {
            return Err(Error::Capacity {
                what: "classes",
                requested: k.max(p.classes),
                capacity,
            });
        }
        check_vector("standardization center", p.center, dim)?;
        check_vector("standardization scale", p.scale, dim)?;
        check_vector("class means", p.means, k * dim)?;
        check_vector("within-class scatter", p.scatter, square(dim, K::FULL))?;
        let l = layout(dim, capacity, K::FULL);
        out.fill(0.0);
        out[meta::CLASSES] = p.classes as f32;
        out[meta::LABELS] = p.labels;
        out[meta::NU0] = nu0;
        out[meta::STANDARDIZED] = 1.0;
        out[l.center..l.scale].copy_from_slice(p.center);
        out[l.scale..l.counts].copy_from_slice(p.scale);
        out[l.counts..l.counts + k].copy_from_slice(p.counts);
        out[l.means..l.means + k * dim].copy_from_slice(p.means);
        out[l.scatter..l.prior].copy_from_slice(p.scatter);
        Ok(())
    }
}

#[cfg(feature = "std")]
impl Slda<std::vec::Vec<f32>> {
    /// A learner with its own heap storage.
    pub fn alloc(dim: usize, capacity: usize, nu0: f32) -> Result<Self> {
        Self::new(
            dim,
            capacity,
            nu0,
            std::vec![0.0; Self::storage_len(dim, capacity)],
        )
    }
}

#[cfg(test)]
mod tests;
