//! Writing the head: the learner folded into a [`Head`]'s output layer, over the
//! features that layer sees (raw embeddings for a linear head, the hidden layer's
//! activations for an MLP, whose hidden layer stays as it is).

use super::{Covariance, Slda, UNLABELED_LOGIT};
use crate::error::{Error, Result};
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
        let n: f32 = s[l.counts..l.counts + self.classes()].iter().sum();
        let nw = (n - self.classes() as f32).max(0.0);
        // w = (ν0 + n_w) Λ μ: the posterior covariance's inverse.
        let k = (self.prior_strength() + nw) / temperature;
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
