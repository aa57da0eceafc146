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

/// A streaming LDA learner over caller storage (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct Slda<S> {
    dim: usize,
    capacity: usize,
    storage: S,
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

const fn layout(d: usize, c: usize) -> Layout {
    let center = META;
    let scale = center + d;
    let counts = scale + d;
    let means = counts + c;
    let scatter = means + c * d;
    let prior = scatter + d * d;
    let inverse = prior + d * d;
    let gram = inverse + d * d;
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

impl<S> Slda<S> {
    /// Storage values for `capacity` classes of `dim`-value embeddings.
    pub const fn storage_len(dim: usize, capacity: usize) -> usize {
        layout(dim, capacity).end
    }

    /// Values of the learner's state (the prefix of the storage that
    /// [`Slda::state`] returns): meta, center, scale, counts, means, scatter.
    pub const fn state_len(dim: usize, capacity: usize) -> usize {
        layout(dim, capacity).prior
    }
}

impl<S: Storage> Slda<S> {
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
        };
        l.refresh();
        Ok(l)
    }

    fn lay(&self) -> Layout {
        layout(self.dim, self.capacity)
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
    /// embeddings: it is standardized here) and its strength. Only before the first
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
        for i in 0..d {
            for j in 0..d {
                let v = cov[i * d + j] * s[l.scale + i] * s[l.scale + j];
                s[l.prior + i * d + j] = v;
            }
        }
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
        for i in 0..d {
            for j in 0..d {
                s[l.scatter + i * d + j] = dof * cov[i * d + j] * s[l.scale + i] * s[l.scale + j];
            }
        }
        s[meta::CLASSES] = k as f32;
        s[meta::LABELS] = n as f32;
        self.refresh();
        Ok(())
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

    /// Makes room for class `classes()` (a label for a new class does this itself).
    fn add_class(&mut self) -> Result<usize> {
        let c = self.classes();
        if c >= self.capacity {
            return Err(Error::Capacity {
                what: "classes",
                requested: c + 1,
                capacity: self.capacity,
            });
        }
        self.s_mut()[meta::CLASSES] = (c + 1) as f32;
        Ok(c)
    }

    /// Checks a label without changing anything: whether it adds a class.
    pub fn check(&self, x: &[f32], class: usize) -> Result<bool> {
        check_vector("embedding", x, self.dim)?;
        let classes = self.classes();
        if class > classes {
            return Err(Error::UnknownClass { class, classes });
        }
        if class == classes && classes >= self.capacity {
            return Err(Error::Capacity {
                what: "classes",
                requested: classes + 1,
                capacity: self.capacity,
            });
        }
        Ok(class == classes)
    }

    /// Learns that `x` (a raw embedding) is of `class` (an existing class, or
    /// [`Slda::classes`] to add one). On an error nothing changed.
    /// Returns whether the label added the class.
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
            self.add_class()?;
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
            let delta = &rest[..d];
            let scatter = &mut head[l.scatter..l.scatter + d * d];
            for i in 0..d {
                math::axpy(k * delta[i], delta, &mut scatter[i * d..(i + 1) * d]);
            }
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
        self.dim <= EXACT_DIM
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
        for i in 0..d {
            let r = &head[l.inverse + i * d..l.inverse + (i + 1) * d];
            gram[c * d + i] = math::dot(r, &head[l.means + c * d..l.means + (c + 1) * d]);
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

    /// Recomputes the inverse of `ν0·Σ0 + S` exactly (Cholesky, in f64).
    pub fn refresh(&mut self) {
        let l = self.lay();
        let d = self.dim;
        let nu0 = self.prior_strength();
        if self.prior() == Prior::Labels {
            self.label_prior();
        }
        let s = self.s_mut();
        s[meta::SINCE_REFRESH] = 0.0;
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
        for c in 0..self.classes() {
            self.gram_row(c);
        }
    }

    /// Folds the learner into `head` (linear, over raw embeddings), with logits divided
    /// by `temperature`. Classes the head has beyond the learner's are left alone.
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
        let classes = self.classes().min(head.classes());
        let s = self.s();
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
            // In standardized units: b = −½ μ·w. Then fold z = (x − center)·scale.
            let mut bias = -0.5 * math::dot(row, mean);
            for i in 0..d {
                row[i] *= scale[i];
                bias -= row[i] * center[i];
            }
            b[c] = bias;
        }
        Ok(())
    }

    /// Adds another learner's statistics (same dimensions, same standardization),
    /// class by class, as if this one had seen its labels too (Chan et al.'s pairwise
    /// update). `map[c]` is this learner's class for the other's class `c` (a value of
    /// [`Slda::classes`] or more adds classes in order).
    pub fn merge<T: Storage>(&mut self, other: &Slda<T>, map: &[usize]) -> Result<()> {
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
        for i in 0..d * d {
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
            let k = na * nb / n;
            for i in 0..d {
                let a = k * delta[i];
                math::axpy(
                    a,
                    delta,
                    &mut head[lm.scatter + i * d..lm.scatter + (i + 1) * d],
                );
            }
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
        let l = self.lay();
        check_vector("streaming LDA state", state, Self::state_len(d, cap))?;
        let classes = state[meta::CLASSES];
        let ok = classes >= 0.0
            && classes <= cap as f32
            && libm::truncf(classes) == classes
            && state[meta::NU0] > 0.0
            && state[l.counts..l.counts + cap]
                .iter()
                .all(|&n| n >= 0.0 && libm::truncf(n) == n)
            && state[l.scale..l.scale + d].iter().all(|&v| v > 0.0);
        if !ok {
            return Err(Error::Config {
                what: "a streaming LDA state with impossible counts or scales",
            });
        }
        let given = self.prior() == Prior::Given;
        let s = self.s_mut();
        s[..state.len()].copy_from_slice(state);
        s[meta::PRIOR] = if given { 1.0 } else { 0.0 };
        self.refresh();
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
