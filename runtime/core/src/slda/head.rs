//! Writing the head: the learner folded into a [`Head`]'s output layer, over the
//! features that layer sees (raw embeddings for a linear head, the hidden layer's
//! activations for an MLP, whose hidden layer stays as it is).

use super::{Covariance, Slda, UNLABELED_LOGIT};
use crate::error::{Error, Result, check_vector};
use crate::head::{Head, Storage};
use crate::math;

impl<S: Storage, K: Covariance> Slda<S, K> {
    /// Folds the learner into `head`'s output layer (over its features: the raw
    /// embeddings of a linear head, the hidden activations of an MLP,
    /// [`Head::features`]), with logits divided by `temperature`. A class of the head
    /// that has no label yet (or that the learner does not have) gets no weights and the
    /// logit [`UNLABELED_LOGIT`]: it is never predicted while another class has labels.
    pub fn write_head<T: Storage>(&self, head: &mut Head<T>, temperature: f32) -> Result<()> {
        let dims = head.dims();
        if dims.feature_width() != self.dim || dims.capacity < self.classes() {
            return Err(Error::Config {
                what: "streaming LDA writes a head output layer of its feature size and capacity",
            });
        }
        let l = self.lay();
        let d = self.dim;
        let cap = dims.capacity;
        let active = head.classes();
        let classes = self.classes().min(active);
        let s = self.s();
        let labeled = |c: usize| c < classes && s[l.counts + c] > 0.0;
        // w = (ν0 + n_w) Λ μ: the posterior covariance's inverse.
        let k = self.pooled_weight(0.0) / temperature;
        let center = &s[l.center..l.center + d];
        let scale = &s[l.scale..l.scale + d];
        let out = dims.out_offset();
        let p = &mut head.params_mut()[out..];
        let (w, b) = p.split_at_mut(cap * d);
        for c in 0..classes {
            let row = &mut w[c * d..(c + 1) * d];
            if !labeled(c) {
                row.fill(0.0);
                b[c] = UNLABELED_LOGIT;
                continue;
            }
            math::scaled_copy(k, &s[l.gram + c * d..l.gram + (c + 1) * d], row);
            let mean = &s[l.means + c * d..l.means + (c + 1) * d];
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
}

impl<S: Storage, K: Covariance> Slda<S, K> {
    /// The logits [`Slda::write_head`]'s head (at temperature 1) would give `x`, one of
    /// the learner's labels of `class` (a raw embedding, or the features the head's
    /// output layer sees), had that label not been learned: a leave-one-out
    /// measurement on a label the learner holds. The label leaves its class's mean and
    /// the shared scatter (a rank-one downdate of `Λ`, Sherman–Morrison; exact for a
    /// [`Diagonal`](super::Diagonal) learner's diagonal); a prior from the labels
    /// ([`super::Prior::Labels`]) stays as it is. A class with no label (or `class` with
    /// only this one) gets [`UNLABELED_LOGIT`]. `logits` takes [`Slda::classes`]
    /// values, `scratch` `3 · dim`. Costs one pass over `Λ` and one over the class
    /// means.
    pub fn held_out_logits(
        &self,
        x: &[f32],
        class: usize,
        logits: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<()> {
        let d = self.dim;
        let classes = self.classes();
        check_vector("embedding", x, d)?;
        for (what, found, expected) in [
            ("logits", logits.len(), classes),
            ("scratch", scratch.len(), 3 * d),
        ] {
            if found != expected {
                return Err(Error::Length {
                    what,
                    expected,
                    found,
                });
            }
        }
        if class >= classes {
            return Err(Error::UnknownClass { class, classes });
        }
        let l = self.lay();
        let s = self.s();
        let count = |c: usize| s[l.counts + c];
        let mean = |c: usize| &s[l.means + c * d..l.means + (c + 1) * d];
        let gram = |c: usize| &s[l.gram + c * d..l.gram + (c + 1) * d];
        let n = count(class);
        // z: the sample standardized; lz: Λz; u: Λv with v = z − μ, the sample's
        // deviation from its class's mean, whose scatter n/(n − 1)·v vᵀ it leaves.
        let (z, rest) = scratch.split_at_mut(d);
        let (lz, u) = rest.split_at_mut(d);
        for i in 0..d {
            z[i] = (x[i] - s[l.center + i]) * s[l.scale + i];
        }
        for i in 0..d {
            lz[i] = if K::FULL {
                math::dot(&s[l.inverse + i * d..l.inverse + (i + 1) * d], z)
            } else {
                s[l.inverse + i] * z[i]
            };
            u[i] = lz[i] - gram(class)[i];
        }
        let a = if n > 1.0 { n / (n - 1.0) } else { 0.0 };
        let (mu, g) = (mean(class), gram(class));
        let vu: f32 = (0..d).map(|i| (z[i] - mu[i]) * u[i]).sum();
        let left = 1.0 - a * vu;
        // Λ' = Λ + b·u uᵀ. A downdate that would leave no positive definite matrix
        // (rounding only) keeps Λ.
        let b = if K::FULL && left > 1e-6 {
            a / left
        } else {
            0.0
        };
        let k = self.pooled_weight(1.0);
        // A logit k·(w·z − ½ w·μ) with w = Λ'μ: Λμ is `lm`, `um` is u·μ.
        let logit = |lm_z: f32, lm_mu: f32, um: f32, uz: f32| {
            k * (lm_z + b * um * uz - 0.5 * (lm_mu + b * um * um))
        };
        let uz = math::dot(u, z);
        for (c, out) in logits.iter_mut().enumerate() {
            *out = if count(c) <= 0.0 || (c == class && n <= 1.0) {
                UNLABELED_LOGIT
            } else if !K::FULL {
                // Λ'ᵢᵢ = Λᵢᵢ / (1 − a vᵢ² Λᵢᵢ), per dimension.
                let m = mean(c);
                let mut acc = 0.0;
                for i in 0..d {
                    let li = s[l.inverse + i];
                    let vi = z[i] - mu[i];
                    let left = 1.0 - a * vi * vi * li;
                    let li = if left > 1e-6 { li / left } else { li };
                    let mi = if c == class {
                        (n * mu[i] - z[i]) / (n - 1.0)
                    } else {
                        m[i]
                    };
                    acc += li * mi * (z[i] - 0.5 * mi);
                }
                k * acc
            } else if c != class {
                let (m, gc) = (mean(c), gram(c));
                logit(math::dot(gc, z), math::dot(gc, m), math::dot(u, m), uz)
            } else {
                // μ' = (n μ − z) / (n − 1) and Λμ' = (n Λμ − Λz) / (n − 1).
                let (mut h_z, mut h_mu, mut um) = (0.0, 0.0, 0.0);
                for i in 0..d {
                    let h = (n * g[i] - lz[i]) / (n - 1.0);
                    let m = (n * mu[i] - z[i]) / (n - 1.0);
                    h_z += h * z[i];
                    h_mu += h * m;
                    um += u[i] * m;
                }
                logit(h_z, h_mu, um, uz)
            };
        }
        Ok(())
    }

    /// The model's share of class `from`'s samples that [`Slda::write_head`]'s head
    /// gives to class `by` once `bias` is added to `by`'s logit: with the shared
    /// covariance, `from`'s logit exceeds `by`'s by a normal amount of mean `Δ²/2` and
    /// variance `Δ²`, `Δ²` the squared Mahalanobis distance of their means, so the share
    /// is `Φ((bias − Δ²/2) / Δ)`. 0 for a class without labels.
    pub fn taken(&self, from: usize, by: usize, bias: f32) -> f32 {
        let classes = self.classes();
        let (l, d, s) = (self.lay(), self.dim, self.s());
        if from >= classes || by >= classes || s[l.counts + from] <= 0.0 || s[l.counts + by] <= 0.0
        {
            return 0.0;
        }
        let k = self.pooled_weight(0.0);
        let (ga, gb) = (l.gram + from * d, l.gram + by * d);
        let (ma, mb) = (l.means + from * d, l.means + by * d);
        let d2 = k
            * (0..d)
                .map(|i| (s[ga + i] - s[gb + i]) * (s[ma + i] - s[mb + i]))
                .sum::<f32>();
        if d2 > 0.0 {
            math::normal_cdf((bias - 0.5 * d2) / math::sqrt(d2))
        } else if bias > 0.0 {
            1.0
        } else {
            0.5
        }
    }

    /// `ν0 + n_w`, the posterior covariance's weight (`Σ = (ν0·Σ0 + S) / (ν0 + n_w)`,
    /// so `Σ⁻¹ = (ν0 + n_w) Λ`), with `held_out` labels taken away.
    fn pooled_weight(&self, held_out: f32) -> f32 {
        let (l, s) = (self.lay(), self.s());
        let n: f32 = s[l.counts..l.counts + self.classes()].iter().sum();
        self.prior_strength() + (n - held_out - self.classes() as f32).max(0.0)
    }
}
