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
//! of it into a linear [`Head`] over raw embeddings, so predicting costs what it always
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

use crate::error::{Error, Result, check_vector};
use crate::head::{Head, Storage};
use crate::math;
use core::marker::PhantomData;

mod inverse;
mod prior;

use inverse::invert_spd;

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

    /// `part += a · v vᵀ` for a `d × d` part of this shape (its diagonal only, for
    /// [`Diagonal`]).
    fn add_outer(part: &mut [f32], a: f32, v: &[f32]) {
        let d = v.len();
        for i in 0..d {
            if K::FULL {
                math::axpy(a * v[i], v, &mut part[i * d..(i + 1) * d]);
            } else {
                part[i] += a * v[i] * v[i];
            }
        }
    }

    /// Standardizes `x` into the first scratch vector.
    fn standardize(&mut self, x: &[f32]) {
        let l = self.lay();
        let d = self.dim;
        let s = self.s_mut();
        for i in 0..d {
            s[l.scratch + i] = (x[i] - s[l.center + i]) * s[l.scale + i];
        }
    }

    /// Checks a label without changing anything: whether it adds a class.
    pub fn check(&self, x: &[f32], class: usize) -> Result<bool> {
        check_vector("embedding", x, self.dim)?;
        if class >= self.capacity {
            return Err(Error::Capacity {
                what: "classes",
                requested: class + 1,
                capacity: self.capacity,
            });
        }
        Ok(class >= self.classes())
    }

    /// Learns that `x` (a raw embedding) is of `class`: an existing class, or a new
    /// one below the capacity ([`Slda::classes`] adds one; a higher class also adds
    /// the ones between, without labels, as a device with one button per class
    /// needs). On an error nothing changed. Returns whether the label added classes.
    pub fn learn(&mut self, x: &[f32], class: usize) -> Result<bool> {
        let added = self.check(x, class)?;
        if !self.standardized() {
            // The first label's own scale: its root mean square (nonzero: else 1).
            let rms = math::sqrt(math::sq_norm(x) / self.dim as f32);
            let k = if rms > 0.0 && rms.is_finite() {
                1.0 / rms
            } else {
                1.0
            };
            let l = self.lay();
            let d = self.dim;
            let s = self.s_mut();
            s[l.center..l.center + d].copy_from_slice(x);
            s[l.scale..l.scale + d].fill(k);
            s[meta::STANDARDIZED] = 1.0;
        }
        if added {
            self.s_mut()[meta::CLASSES] = (class + 1) as f32;
        }
        self.standardize(x);
        let l = self.lay();
        let d = self.dim;
        let s = self.s_mut();
        let n = s[l.counts + class];
        let n1 = n + 1.0;
        s[l.counts + class] = n1;
        s[meta::LABELS] += 1.0;
        // Welford: δ = z − μ_old, μ += δ / n', S += (n / n') δ δᵀ.
        let (head, rest) = s.split_at_mut(l.scratch);
        let delta = &mut rest[..d];
        let mean = &mut head[l.means + class * d..l.means + (class + 1) * d];
        for i in 0..d {
            let z = delta[i];
            delta[i] = z - mean[i];
            mean[i] += delta[i] / n1;
        }
        let k = n / n1;
        let exact = self.exact_due();
        if n == 0.0 {
            // A class's first label: its mean is the sample, no scatter.
            if !exact {
                self.gram_row(class);
            }
        } else if exact {
            let (head, rest) = self.s_mut().split_at_mut(l.scratch);
            Self::add_outer(&mut head[l.scatter..l.prior], k, &rest[..d]);
        } else {
            self.rank_one(k, class, n1);
        }
        if exact {
            self.refresh();
        }
        Ok(added)
    }

    /// Counts a label toward the next exact recomputation of the inverse, and whether
    /// this label makes one.
    fn exact_due(&mut self) -> bool {
        let from_labels = self.prior() == Prior::Labels;
        let labels = self.labels();
        let since = self.s()[meta::SINCE_REFRESH] as u32 + 1;
        self.s_mut()[meta::SINCE_REFRESH] = since as f32;
        // The diagonal inverse is exact in O(dim) anyway.
        !K::FULL
            || self.dim <= EXACT_DIM
            || since >= REFRESH_EVERY
            // A prior from the labels follows their variance: re-estimated at 1, 2, 4, …
            // labels (exactly at every label while the inverse is cheap).
            || (from_labels && labels.is_power_of_two())
    }

    /// `Λ μ_c` of class `c` from the inverse (one pass).
    fn gram_row(&mut self, c: usize) {
        let l = self.lay();
        let d = self.dim;
        let s = self.s_mut();
        let (head, gram) = s.split_at_mut(l.gram);
        let mean = &head[l.means + c * d..l.means + (c + 1) * d];
        for i in 0..d {
            gram[c * d + i] = if K::FULL {
                math::dot(&head[l.inverse + i * d..l.inverse + (i + 1) * d], mean)
            } else {
                head[l.inverse + i] * mean[i]
            };
        }
    }

    /// A label of class `c` (now `n1` labels) whose deviation from the class's old mean
    /// is the first scratch vector `δ`: with `v = √k δ`, the scatter gains `v vᵀ`, the
    /// inverse becomes `Λ − (Λv)(Λv)ᵀ / κ` with `κ = 1 + vᵀΛv` (Sherman–Morrison), and
    /// each `Λ μ` follows in `O(classes·dim)`: `Λ' M' = Λ M + Λ δ/n1 e_cᵀ − u (uᵀ M') / κ`,
    /// with `u = Λv` and `Λδ = u/√k`.
    fn rank_one(&mut self, k: f32, c: usize, n1: f32) {
        let l = self.lay();
        let (d, classes) = (self.dim, self.classes());
        let s = self.s_mut();
        let (head, scratch) = s.split_at_mut(l.scratch);
        let (v, u) = scratch.split_at_mut(d);
        let r = math::sqrt(k);
        for x in v.iter_mut() {
            *x *= r;
        }
        let (before, rest) = head.split_at_mut(l.inverse);
        let (inv, gram) = rest.split_at_mut(l.gram - l.inverse);
        for i in 0..d {
            u[i] = math::dot(&inv[i * d..(i + 1) * d], v);
        }
        let kappa = 1.0 + math::dot(v, u);
        if !(kappa > 0.0 && kappa.is_finite()) {
            return;
        }
        for cc in 0..classes {
            let t = math::dot(u, &before[l.means + cc * d..l.means + (cc + 1) * d]);
            let row = &mut gram[cc * d..(cc + 1) * d];
            math::axpy(-t / kappa, u, row);
            if cc == c {
                math::axpy(1.0 / (r * n1), u, row);
            }
        }
        let scatter = &mut before[l.scatter..l.scatter + d * d];
        for i in 0..d {
            math::axpy(-u[i] / kappa, u, &mut inv[i * d..(i + 1) * d]);
            math::axpy(v[i], v, &mut scatter[i * d..(i + 1) * d]);
        }
    }

    /// Recomputes the inverse of `ν0·Σ0 + S` exactly (Cholesky, in f64; one division
    /// per dimension for [`Diagonal`]).
    pub fn refresh(&mut self) {
        let l = self.lay();
        let d = self.dim;
        let nu0 = self.prior_strength();
        if self.prior() == Prior::Labels {
            self.label_prior();
        }
        let s = self.s_mut();
        s[meta::SINCE_REFRESH] = 0.0;
        if K::FULL {
            Self::full_inverse(s, l, d, nu0);
        } else {
            for i in 0..d {
                let a = nu0 * s[l.prior + i] + s[l.scatter + i];
                // As the full inverse's ridge does on an equilibrated diagonal.
                s[l.inverse + i] = if a > 0.0 && a.is_finite() {
                    1.0 / (a * (1.0 + 1e-6))
                } else {
                    0.0
                };
            }
        }
        for c in 0..self.classes() {
            self.gram_row(c);
        }
    }

    /// `Λ = (ν0·Σ0 + S)⁻¹` of a [`Full`] learner's storage `s`, exactly.
    fn full_inverse(s: &mut [f32], l: Layout, d: usize, nu0: f32) {
        let (head, rest) = s.split_at_mut(l.inverse);
        let (inv, scratch) = rest.split_at_mut(l.scratch - l.inverse);
        for i in 0..d {
            for j in 0..d {
                inv[i * d + j] = nu0 * head[l.prior + i * d + j] + head[l.scatter + i * d + j];
            }
        }
        // Equilibrated (unit diagonal) before it is factored, and scaled back after:
        // features of very different units (wine's proline beside its hue) would make
        // the matrix too ill-conditioned for f32 otherwise. A little ridge keeps the
        // factorization defined whatever rounding did.
        let (diag, e) = scratch.split_at_mut(d);
        for i in 0..d {
            let a = inv[i * d + i];
            e[i] = if a > 0.0 && a.is_finite() {
                1.0 / math::sqrt(a)
            } else {
                1.0
            };
        }
        for i in 0..d {
            for j in 0..d {
                inv[i * d + j] *= e[i] * e[j];
            }
            inv[i * d + i] += 1e-6;
        }
        invert_spd(inv, diag, d);
        for i in 0..d {
            for j in 0..d {
                inv[i * d + j] *= e[i] * e[j];
            }
        }
    }

    /// Folds the learner into `head` (linear, over raw embeddings), with logits divided
    /// by `temperature`. A class of the head that has no label yet (or that the
    /// learner does not have) gets no weights and the logit [`UNLABELED_LOGIT`]: it is
    /// never predicted while another class has labels.
    pub fn write_head<T: Storage>(&self, head: &mut Head<T>, temperature: f32) -> Result<()> {
        let dims = head.dims();
        if dims.hidden != 0 || dims.input != self.dim || dims.capacity < self.classes() {
            return Err(Error::Config {
                what: "streaming LDA writes a linear head of its embedding size and capacity",
            });
        }
        let l = self.lay();
        let d = self.dim;
        let cap = dims.capacity;
        let active = head.classes();
        let classes = self.classes().min(active);
        let s = self.s();
        let labeled = |c: usize| c < classes && s[l.counts + c] > 0.0;
        let n: f32 = s[l.counts..l.counts + self.classes()].iter().sum();
        let nw = (n - self.classes() as f32).max(0.0);
        // w = (ν0 + n_w) Λ μ: the posterior covariance's inverse.
        let k = (self.prior_strength() + nw) / temperature;
        let center = &s[l.center..l.center + d];
        let scale = &s[l.scale..l.scale + d];
        let p = head.params_mut();
        let (w, b) = p.split_at_mut(cap * d);
        for c in 0..classes {
            math::scaled_copy(
                k,
                &s[l.gram + c * d..l.gram + (c + 1) * d],
                &mut w[c * d..(c + 1) * d],
            );
        }
        for c in 0..classes {
            let mean = &s[l.means + c * d..l.means + (c + 1) * d];
            let row = &mut w[c * d..(c + 1) * d];
            if !labeled(c) {
                row.fill(0.0);
                b[c] = UNLABELED_LOGIT;
                continue;
            }
            // In standardized units: b = −½ μ·w. Then fold z = (x − center)·scale.
            let mut bias = -0.5 * math::dot(row, mean);
            for i in 0..d {
                row[i] *= scale[i];
                bias -= row[i] * center[i];
            }
            b[c] = bias;
        }
        for c in classes..active {
            w[c * d..(c + 1) * d].fill(0.0);
            b[c] = UNLABELED_LOGIT;
        }
        Ok(())
    }

    /// Adds another learner's statistics (same dimensions, same standardization),
    /// class by class, as if this one had seen its labels too (Chan et al.'s pairwise
    /// update). `map[c]` is this learner's class for the other's class `c` (a value of
    /// [`Slda::classes`] or more adds classes in order).
    pub fn merge<T: Storage>(&mut self, other: &Slda<T, K>, map: &[usize]) -> Result<()> {
        let d = self.dim;
        if other.dim != d || map.len() != other.classes() {
            return Err(Error::Config {
                what: "merged statistics have another embedding size or class map",
            });
        }
        if other.labels() == 0 {
            return Ok(());
        }
        let (lo, lm) = (other.lay(), self.lay());
        if self.labels() == 0 && !self.standardized() {
            let os = other.s();
            let (c, sc) = (&os[lo.center..lo.center + d], &os[lo.scale..lo.scale + d]);
            let s = self.storage.as_mut();
            s[lm.center..lm.center + d].copy_from_slice(c);
            s[lm.scale..lm.scale + d].copy_from_slice(sc);
            s[meta::STANDARDIZED] = 1.0;
        }
        if self.s()[lm.center..lm.center + d] != other.s()[lo.center..lo.center + d]
            || self.s()[lm.scale..lm.scale + d] != other.s()[lo.scale..lo.scale + d]
        {
            return Err(Error::Config {
                what: "merged statistics are standardized differently",
            });
        }
        let needed = map.iter().map(|&c| c + 1).max().unwrap_or(0);
        if needed > self.capacity {
            return Err(Error::Capacity {
                what: "classes",
                requested: needed,
                capacity: self.capacity,
            });
        }
        let os = other.s();
        let s = self.storage.as_mut();
        s[meta::CLASSES] = (s[meta::CLASSES] as usize).max(needed) as f32;
        s[meta::LABELS] += os[meta::LABELS];
        for i in 0..square(d, K::FULL) {
            s[lm.scatter + i] += os[lo.scatter + i];
        }
        for (oc, &c) in map.iter().enumerate() {
            let nb = os[lo.counts + oc];
            if nb == 0.0 {
                continue;
            }
            let na = s[lm.counts + c];
            let n = na + nb;
            let (head, scratch) = s.split_at_mut(lm.scratch);
            let delta = &mut scratch[..d];
            for i in 0..d {
                delta[i] = os[lo.means + oc * d + i] - head[lm.means + c * d + i];
                head[lm.means + c * d + i] += delta[i] * nb / n;
            }
            Self::add_outer(&mut head[lm.scatter..lm.prior], na * nb / n, delta);
            head[lm.counts + c] = n;
        }
        self.refresh();
        Ok(())
    }

    /// Restores a state saved from [`Slda::state`] into this learner (same dimensions;
    /// its prior covariance, if given, stays). The values are checked: on an error
    /// nothing changed.
    pub fn restore(&mut self, state: &[f32]) -> Result<()> {
        let (d, cap) = (self.dim, self.capacity);
        check_vector("streaming LDA state", state, Self::state_len(d, cap))?;
        let ok = state
            .iter()
            .enumerate()
            .all(|(i, &v)| Self::state_value_ok(d, cap, i, v));
        if !ok {
            return Err(Error::Config {
                what: "a streaming LDA state with impossible counts or scales",
            });
        }
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
