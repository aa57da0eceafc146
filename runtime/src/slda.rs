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
    pub fn learn(&mut self, x: &[f32], class: usize) -> Result<()> {
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
        Ok(())
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

    /// Each dimension's total variance over all labels (standardized units) into the
    /// first scratch vector. Returns the number of labels and the within-class degrees
    /// of freedom.
    fn label_moments(&mut self) -> (f32, f32) {
        let l = self.lay();
        let d = self.dim;
        let classes = self.classes();
        let s = self.s_mut();
        let n: f32 = s[l.counts..l.counts + classes].iter().sum();
        let used = s[l.counts..l.counts + classes]
            .iter()
            .filter(|&&c| c > 0.0)
            .count();
        let (head, scratch) = s.split_at_mut(l.scratch);
        let v = &mut scratch[..d];
        for i in 0..d {
            let mut m = 0.0f32;
            for c in 0..classes {
                m += head[l.counts + c] * head[l.means + c * d + i];
            }
            m /= n.max(1.0);
            let mut between = 0.0f32;
            for c in 0..classes {
                let e = head[l.means + c * d + i] - m;
                between += head[l.counts + c] * e * e;
            }
            v[i] = (head[l.scatter + i * d + i] + between) / n.max(1.0);
        }
        (n, (n - used as f32).max(0.0))
    }

    /// The prior from the labels ([`Prior::Labels`]) into the prior block's diagonal.
    /// With no within-class variation yet it is isotropic, at the mean variance (one
    /// label per class is exactly nearest class mean); as within-class degrees of
    /// freedom `n_w` accumulate it moves (geometrically) to each dimension's own total
    /// variance, with weight `n_w / (n_w + `[`LABEL_PRIOR_SHRINK`]`)`, so that features of very
    /// different units (wine's proline beside its hue) are not all shrunk as the
    /// largest.
    fn label_prior(&mut self) {
        let (n, nw) = self.label_moments();
        let l = self.lay();
        let d = self.dim;
        let s = self.s_mut();
        let (head, scratch) = s.split_at_mut(l.scratch);
        let v = &scratch[..d];
        let vbar = v.iter().sum::<f32>() / d as f32;
        let w = nw / (nw + LABEL_PRIOR_SHRINK);
        for i in 0..d {
            let p = if n < 2.0 || !(vbar > 0.0 && vbar.is_finite()) {
                1.0
            } else {
                // Geometric: a dimension a thousand times smaller than the mean is not
                // swamped by a small share of the mean.
                let vi = v[i].max(1e-12 * vbar);
                libm::expf(w * libm::logf(vi) + (1.0 - w) * libm::logf(vbar))
            };
            let row = &mut head[l.prior + i * d..l.prior + (i + 1) * d];
            row.fill(0.0);
            row[i] = p;
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

/// `Σ a_i b_i` in f64, over contiguous slices (four accumulators: vectorized).
fn dot64(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; 4];
    let (ac, at) = a.as_chunks::<4>();
    let (bc, bt) = b.as_chunks::<4>();
    for (x, y) in ac.iter().zip(bc) {
        for k in 0..4 {
            acc[k] += x[k] as f64 * y[k] as f64;
        }
    }
    let mut tail = 0f64;
    for (x, y) in at.iter().zip(bt) {
        tail += *x as f64 * *y as f64;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Inverts the symmetric positive definite `a` (`n × n`, row-major) in place, with
/// `diag` (`n` values) as scratch. Every inner loop is a dot product of two contiguous
/// rows, summed in f64:
///
/// 1. Cholesky `a = L Lᵀ` row by row: `L` in the strict lower triangle, its diagonal
///    in `diag`.
/// 2. `Y = L⁻¹` column by column (forward substitution of `L y = e_j`), column `j`
///    stored as row `j` of the upper triangle (its entries `j..n`).
/// 3. `a⁻¹[i][j] = Σ_k Y[k][i] Y[k][j]`, the dot product of rows `i` and `j` of the
///    upper triangle, written into the lower triangle (where `L` was), its diagonal
///    into `diag`; then mirrored.
///
/// A pivot that rounding made non-positive is raised to a tiny positive value.
fn invert_spd(a: &mut [f32], diag: &mut [f32], n: usize) {
    for i in 0..n {
        for j in 0..i {
            let v = a[i * n + j] as f64 - dot64(&a[i * n..i * n + j], &a[j * n..j * n + j]);
            a[i * n + j] = (v / diag[j] as f64) as f32;
        }
        let d = a[i * n + i] as f64 - dot64(&a[i * n..i * n + i], &a[i * n..i * n + i]);
        diag[i] = if d > 1e-30 {
            libm::sqrt(d) as f32
        } else {
            1e-15
        };
    }
    for j in 0..n {
        a[j * n + j] = 1.0 / diag[j];
        for i in j + 1..n {
            // y_i = −(Σ_{k=j}^{i−1} L[i][k] y_k) / L[i][i]; y_k is a[j][k].
            let v = -dot64(&a[i * n + j..i * n + i], &a[j * n + j..j * n + i]);
            a[j * n + i] = (v / diag[i] as f64) as f32;
        }
    }
    for i in 0..n {
        for j in i..n {
            // Rows i and j of Y are nonzero from j on (j ≥ i).
            let v = dot64(&a[i * n + j..i * n + n], &a[j * n + j..j * n + n]);
            if i == j {
                diag[i] = v as f32;
            } else {
                a[j * n + i] = v as f32;
            }
        }
    }
    for i in 0..n {
        a[i * n + i] = diag[i];
        for j in i + 1..n {
            a[i * n + j] = a[j * n + i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::Dims;
    use crate::rng::Rng;

    /// `n` samples of `classes` Gaussian classes in `d` dimensions with a shared,
    /// correlated covariance and a common offset; labels cycle.
    fn data(d: usize, classes: usize, n: usize, seed: u64) -> Vec<(Vec<f32>, usize)> {
        let mut rng = Rng::new(seed);
        let mut g = || {
            // Sum of uniforms: close enough to a Gaussian here.
            (0..6).map(|_| rng.unit()).sum::<f32>() - 3.0
        };
        let means: Vec<Vec<f32>> = (0..classes)
            .map(|_| (0..d).map(|_| 0.6 * g()).collect())
            .collect();
        let mix: Vec<f32> = (0..d * d).map(|_| g()).collect();
        (0..n)
            .map(|i| {
                let c = i % classes;
                let e: Vec<f32> = (0..d).map(|_| g()).collect();
                let x = (0..d)
                    .map(|r| 5.0 + means[c][r] + (0..d).map(|k| mix[r * d + k] * e[k]).sum::<f32>())
                    .collect();
                (x, c)
            })
            .collect()
    }

    fn predict(l: &Slda<Vec<f32>>, x: &[f32]) -> usize {
        let mut head = Head::alloc(Dims::linear(l.dim(), l.capacity()), l.classes()).unwrap();
        l.write_head(&mut head, 1.0).unwrap();
        let mut p = vec![0.0; l.capacity()];
        head.predict(x, &mut p).unwrap().class
    }

    fn accuracy(l: &Slda<Vec<f32>>, test: &[(Vec<f32>, usize)]) -> f32 {
        let mut head = Head::alloc(Dims::linear(l.dim(), l.capacity()), l.classes()).unwrap();
        l.write_head(&mut head, 1.0).unwrap();
        let mut p = vec![0.0; l.capacity()];
        let hits = test
            .iter()
            .filter(|(x, y)| head.predict(x, &mut p).unwrap().class == *y)
            .count();
        hits as f32 / test.len() as f32
    }

    #[test]
    fn one_label_per_class_is_nearest_class_mean() {
        // With an isotropic prior (of any strength), one label per class leaves no
        // within-class scatter: the shared covariance is the prior's.
        let all = data(6, 4, 54, 1);
        let (train, test) = all.split_at(4);
        let mut l = Slda::alloc(6, 8, 16.0).unwrap();
        l.set_standardization(&[0.0; 6], &[1.0; 6]).unwrap();
        let mut eye = vec![0.0; 36];
        (0..6).for_each(|i| eye[i * 6 + i] = 3.0);
        l.set_prior(&eye, 16.0).unwrap();
        for (x, y) in train {
            l.learn(x, *y).unwrap();
        }
        for (x, _) in test {
            let ncm = (0..4)
                .min_by(|&a, &b| {
                    let da: f32 = x
                        .iter()
                        .zip(&train[a].0)
                        .map(|(p, q)| (p - q) * (p - q))
                        .sum();
                    let db: f32 = x
                        .iter()
                        .zip(&train[b].0)
                        .map(|(p, q)| (p - q) * (p - q))
                        .sum();
                    da.total_cmp(&db)
                })
                .unwrap();
            assert_eq!(predict(&l, x), ncm);
        }
    }

    #[test]
    fn shared_covariance_beats_nearest_mean_and_units_do_not_matter() {
        let all = data(8, 4, 600, 3);
        let (train, test) = all.split_at(200);
        let mut accs = Vec::new();
        for scale in [0.01f32, 1.0, 100.0] {
            let mut l = Slda::alloc(8, 4, 16.0).unwrap();
            for (x, y) in train {
                let x: Vec<f32> = x.iter().map(|v| v * scale).collect();
                l.learn(&x, *y).unwrap();
            }
            let test: Vec<_> = test
                .iter()
                .map(|(x, y)| (x.iter().map(|v| v * scale).collect(), *y))
                .collect();
            accs.push(accuracy(&l, &test));
        }
        assert!(
            (accs[0] - accs[1]).abs() <= 0.0025 && (accs[2] - accs[1]).abs() <= 0.0025,
            "{accs:?}"
        );
        let ncm = {
            let mut l = Slda::alloc(8, 4, 1e9).unwrap();
            for (x, y) in train {
                l.learn(x, *y).unwrap();
            }
            accuracy(&l, test)
        };
        assert!(
            accs[1] > ncm + 0.1,
            "{accs:?} against nearest class mean {ncm}"
        );
    }

    #[test]
    fn order_and_merging_do_not_change_what_is_learned() {
        let all = data(5, 3, 260, 5);
        let (train, test) = all.split_at(60);
        let mut a = Slda::alloc(5, 4, 8.0).unwrap();
        for (x, y) in train {
            a.learn(x, *y).unwrap();
        }
        // Reversed order (classes appear as 2, 1, 0: map them).
        let mut b = Slda::alloc(5, 4, 8.0).unwrap();
        let center = train[0].0.clone();
        let scale: Vec<f32> = vec![1.0; 5];
        b.set_standardization(&center, &scale).unwrap();
        let mut a2 = Slda::alloc(5, 4, 8.0).unwrap();
        a2.set_standardization(&center, &scale).unwrap();
        for (x, y) in train {
            a2.learn(x, *y).unwrap();
        }
        for (x, y) in train.iter().rev() {
            b.learn(x, 2 - y).unwrap();
        }
        let mut pa = Head::alloc(Dims::linear(5, 4), 3).unwrap();
        let mut pb = Head::alloc(Dims::linear(5, 4), 3).unwrap();
        a2.write_head(&mut pa, 1.0).unwrap();
        b.write_head(&mut pb, 1.0).unwrap();
        let (mut la, mut lb) = ([0.0; 4], [0.0; 4]);
        for (x, _) in test {
            pa.logits(x, &mut la).unwrap();
            pb.logits(x, &mut lb).unwrap();
            for c in 0..3 {
                assert!(
                    (la[c] - lb[2 - c]).abs() < 1e-2 * (1.0 + la[c].abs()),
                    "{la:?} {lb:?}"
                );
            }
        }
        // Two halves merged = all of it.
        let mut h1 = Slda::alloc(5, 4, 8.0).unwrap();
        let mut h2 = Slda::alloc(5, 4, 8.0).unwrap();
        h1.set_standardization(&center, &scale).unwrap();
        h2.set_standardization(&center, &scale).unwrap();
        for (i, (x, y)) in train.iter().enumerate() {
            if i < 30 {
                h1.learn(x, *y).unwrap()
            } else {
                h2.learn(x, *y).unwrap()
            }
        }
        h1.merge(&h2, &[0, 1, 2]).unwrap();
        assert_eq!(h1.labels(), 60);
        let mut pm = Head::alloc(Dims::linear(5, 4), 3).unwrap();
        h1.write_head(&mut pm, 1.0).unwrap();
        for (x, _) in test {
            pa.logits(x, &mut la).unwrap();
            pm.logits(x, &mut lb).unwrap();
            for c in 0..3 {
                assert!(
                    (la[c] - lb[c]).abs() < 1e-2 * (1.0 + la[c].abs()),
                    "{la:?} {lb:?}"
                );
            }
        }
        assert!(accuracy(&a, test) > 0.5);
    }

    #[test]
    fn rank_one_updates_match_the_exact_inverse() {
        // Above EXACT_DIM with a given prior: Sherman–Morrison at every label, up to the
        // next exact recomputation; the inverse and the head written from the cached
        // `Λ μ` match an exact recomputation from the same statistics.
        let d = EXACT_DIM + 8;
        let train = data(d, 3, REFRESH_EVERY as usize - 1, 7);
        let mut l = Slda::alloc(d, 3, 4.0).unwrap();
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            cov[i * d + i] = 4.0;
        }
        l.set_standardization(&vec![5.0; d], &vec![1.0; d]).unwrap();
        l.set_prior(&cov, 4.0).unwrap();
        for (x, y) in &train {
            l.learn(x, *y).unwrap();
        }
        assert_eq!(l.s()[meta::SINCE_REFRESH] as u32, REFRESH_EVERY - 1);
        let mut exact = l.clone();
        exact.refresh();
        let a = l.lay();
        let inc = &l.s()[a.inverse..a.inverse + d * d];
        let ex = &exact.s()[a.inverse..a.inverse + d * d];
        let scale = ex.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = inc
            .iter()
            .zip(ex)
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(err < 1e-3 * scale, "inverse: {err} of {scale}");
        let mut h1 = Head::alloc(Dims::linear(d, 3), 3).unwrap();
        let mut h2 = Head::alloc(Dims::linear(d, 3), 3).unwrap();
        l.write_head(&mut h1, 1.0).unwrap();
        exact.write_head(&mut h2, 1.0).unwrap();
        let scale = h2.params().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = h1
            .params()
            .iter()
            .zip(h2.params())
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(err < 1e-3 * scale, "head: {err} of {scale}");
    }

    #[test]
    fn the_inverse_is_an_inverse() {
        let n = 7;
        let mut rng = Rng::new(9);
        let m: Vec<f32> = (0..n * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let mut a = vec![0.0f32; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| m[i * n + k] * m[j * n + k]).sum::<f32>()
                    + if i == j { 0.5 } else { 0.0 };
            }
        }
        let mut inv = a.clone();
        invert_spd(&mut inv, &mut vec![0.0; n], n);
        for i in 0..n {
            for j in 0..n {
                let v: f32 = (0..n).map(|k| a[i * n + k] * inv[k * n + j]).sum();
                assert!(
                    (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-3,
                    "({i},{j}) {v}"
                );
            }
        }
    }

    #[test]
    fn bad_input_changes_nothing() {
        let mut l = Slda::alloc(3, 2, 4.0).unwrap();
        l.learn(&[1.0, 2.0, 3.0], 0).unwrap();
        l.learn(&[0.0, 2.0, 3.0], 1).unwrap();
        let before = l.state().to_vec();
        assert!(l.learn(&[1.0, f32::NAN, 3.0], 0).is_err());
        assert!(l.learn(&[1.0, 2.0], 0).is_err());
        assert!(l.learn(&[1.0, 2.0, 3.0], 3).is_err());
        assert!(l.learn(&[0.0, 2.0, 3.0], 2).is_err()); // capacity 2
        assert_eq!(l.state(), &before[..]);
        let mut r = Slda::alloc(3, 2, 4.0).unwrap();
        let mut bad = l.state().to_vec();
        bad[meta::CLASSES] = 7.0;
        assert!(r.restore(&bad).is_err());
        r.restore(l.state()).unwrap();
        assert_eq!(r.state(), l.state());
    }
}
