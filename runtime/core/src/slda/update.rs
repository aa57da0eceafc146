//! Learning: a label updates the class statistics and the inverse covariance
//! (exactly, or by a rank-one update between exact refreshes), and two learners'
//! statistics merge.

use super::inverse::invert_spd;
use super::{Covariance, EXACT_DIM, Layout, Prior, REFRESH_EVERY, Slda, meta, square};
use crate::error::{Error, Result, check_vector};
use crate::head::Storage;
use crate::math;

impl<S: Storage, K: Covariance> Slda<S, K> {
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
    /// per dimension for [`Diagonal`](super::Diagonal)).
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

    /// Adds another learner's statistics (same dimensions, same standardization),
    /// class by class, as if this one had seen its labels too (Chan et al.'s pairwise
    /// update). `map[c]` is this learner's class for the other's class `c` (a value of
    /// [`Slda::classes`] or more adds classes in order).
    pub fn merge<T: Storage>(&mut self, other: &Slda<T, K>, map: &[usize]) -> Result<()> {
        if other.dim != self.dim {
            return Err(Error::Config {
                what: "merged statistics have another embedding size or class map",
            });
        }
        self.merge_state(other.state(), other.capacity, map)
    }

    /// [`Slda::merge`] from a saved state ([`Slda::state`] of a learner of this shape
    /// and embedding size with room for `capacity` classes), as a device receives one
    /// from its fleet. The values are checked first: on an error nothing changed.
    pub fn merge_state(&mut self, other: &[f32], capacity: usize, map: &[usize]) -> Result<()> {
        const BAD: &str =
            "merged statistics have impossible counts or scales, or another class map";
        let d = self.dim;
        Self::check_state(other, d, capacity, "merged statistics", BAD)?;
        if map.len() != other[meta::CLASSES] as usize {
            return Err(Error::Config { what: BAD });
        }
        if other[meta::LABELS] == 0.0 {
            return Ok(());
        }
        let (lo, lm) = (super::layout(d, capacity, K::FULL), self.lay());
        let os = other;
        let (center, scale) = (&os[lo.center..lo.center + d], &os[lo.scale..lo.scale + d]);
        if self.labels() == 0 && !self.standardized() {
            let s = self.storage.as_mut();
            s[lm.center..lm.center + d].copy_from_slice(center);
            s[lm.scale..lm.scale + d].copy_from_slice(scale);
            s[meta::STANDARDIZED] = 1.0;
        }
        if self.s()[lm.center..lm.center + d] != *center
            || self.s()[lm.scale..lm.scale + d] != *scale
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
}

impl<S, K: Covariance> Slda<S, K> {
    /// Removes from the saved state `whole` ([`Slda::state`]) the labels of the saved
    /// state `part` (same embedding size, both with room for `capacity` classes, class
    /// `c` of `part` being class `c` of `whole`), as if `whole` had never seen them: the
    /// inverse of [`Slda::merge_state`]. Sufficient statistics subtract, so a device
    /// derives its own labels' statistics as whole − the rest instead of keeping them
    /// twice. Counts stay whole numbers; means and scatter are exact up to rounding (done
    /// in f64). The class count of `whole` stays. Everything is checked first: `part`
    /// with more labels of a class than `whole`, another standardization or impossible
    /// values is an error, and then nothing changed.
    pub fn subtract_state(
        whole: &mut [f32],
        part: &[f32],
        dim: usize,
        capacity: usize,
    ) -> Result<()> {
        let d = dim;
        check_vector("streaming LDA state", whole, Self::state_len(d, capacity))?;
        Self::check_state(
            part,
            d,
            capacity,
            "subtracted statistics",
            "subtracted statistics have impossible counts or scales",
        )?;
        if part[meta::LABELS] == 0.0 {
            return Ok(());
        }
        let l = super::layout(d, capacity, K::FULL);
        let fits = whole[l.center..l.counts] == part[l.center..l.counts]
            && part[meta::LABELS] <= whole[meta::LABELS]
            && part[meta::CLASSES] <= whole[meta::CLASSES]
            && (0..capacity).all(|c| part[l.counts + c] <= whole[l.counts + c]);
        if !fits {
            return Err(Error::Config {
                what: "subtracted statistics are not part of the whole (more labels of a class, or another standardization)",
            });
        }
        whole[meta::LABELS] -= part[meta::LABELS];
        for i in 0..square(d, K::FULL) {
            whole[l.scatter + i] =
                (whole[l.scatter + i] as f64 - part[l.scatter + i] as f64) as f32;
        }
        for c in 0..part[meta::CLASSES] as usize {
            let nb = part[l.counts + c] as f64;
            if nb == 0.0 {
                continue;
            }
            let n = whole[l.counts + c] as f64;
            let na = n - nb;
            whole[l.counts + c] = na as f32;
            let (m, mb) = (
                l.means + c * d,
                &part[l.means + c * d..l.means + (c + 1) * d],
            );
            for i in 0..d {
                // n·μ = na·μa + nb·μb.
                whole[m + i] = if na > 0.0 {
                    ((n * whole[m + i] as f64 - nb * mb[i] as f64) / na) as f32
                } else {
                    0.0
                };
            }
            if na == 0.0 {
                continue;
            }
            // The merge added (na·nb/n) δδᵀ with δ = μb − μa.
            let k = na * nb / n;
            for i in 0..d {
                let di = mb[i] as f64 - whole[m + i] as f64;
                if K::FULL {
                    for j in 0..d {
                        let dj = mb[j] as f64 - whole[m + j] as f64;
                        let at = l.scatter + i * d + j;
                        whole[at] = (whole[at] as f64 - k * di * dj) as f32;
                    }
                } else {
                    let at = l.scatter + i;
                    whole[at] = (whole[at] as f64 - k * di * di) as f32;
                }
            }
        }
        Ok(())
    }
}
