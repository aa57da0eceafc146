//! The prior from the labels ([`Prior::Labels`](super::Prior::Labels)): what the shared covariance shrinks
//! toward when the bundle brings no statistics.

#[allow(unused_imports)]
use super::{Covariance, LABEL_PRIOR_SHRINK, Slda};
use crate::head::Storage;

impl<S: Storage, K: Covariance> Slda<S, K> {
    /// Each dimension's total variance over all labels (standardized units) into the
    /// first scratch vector. Returns the number of labels and the within-class degrees
    /// of freedom.
    pub(super) fn label_moments(&mut self) -> (f32, f32) {
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
            v[i] = (head[l.scatter + Self::diag(d, i)] + between) / n.max(1.0);
        }
        (n, (n - used as f32).max(0.0))
    }

    /// The prior from the labels ([`Prior::Labels`](super::Prior::Labels)) into the prior block's diagonal.
    /// With no within-class variation yet it is isotropic, at the mean variance (one
    /// label per class is exactly nearest class mean); as within-class degrees of
    /// freedom `n_w` accumulate it moves (geometrically) to each dimension's own total
    /// variance, with weight `n_w / (n_w + `[`LABEL_PRIOR_SHRINK`]`)`, so that features of very
    /// different units (wine's proline beside its hue) are not all shrunk as the
    /// largest.
    pub(super) fn label_prior(&mut self) {
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
            if K::FULL {
                head[l.prior + i * d..l.prior + (i + 1) * d].fill(0.0);
            }
            head[l.prior + Self::diag(d, i)] = p;
        }
    }
}
