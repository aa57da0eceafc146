//! Weight imprinting: a new class's output row set from an embedding of it (Qi et al.
//! 2018), plainly or centered on the other classes' samples.

use super::{Head, Layers, Storage, feature};
use crate::error::{Error, Result, check_vector};
use crate::math;

/// Classes whose logit spread [`Head::imprint_centered`] measures (a fixed stack buffer).
const SPREAD_CLASSES: usize = 32;

impl<S: Storage> Head<S> {
    /// The summed row norms and biases of every class but `class`, and their number:
    /// what imprinting scales a new row and sets its bias from.
    fn other_rows(&self, class: usize) -> (f32, f32, usize) {
        let (o, w, cap) = (
            self.dims.out_offset(),
            self.dims.feature_width(),
            self.dims.capacity,
        );
        let (mut norms, mut biases, mut count) = (0.0f32, 0.0f32, 0usize);
        for c in (0..self.classes).filter(|&c| c != class) {
            norms += math::norm(self.class_weights(c));
            biases += self.params()[o + cap * w + c];
            count += 1;
        }
        (norms, biases, count)
    }

    /// Weight imprinting (Qi et al. 2018): sets `class`'s output weights to `scale` × the
    /// unit vector of the class's features, computed from `embedding` (an embedding of
    /// the class, or the mean of several, e.g. from [`crate::classes::ClassMeans`]): the
    /// embedding itself for a linear head, its hidden activations for an MLP. The bias
    /// becomes the mean of the other classes' biases. With `scale` `None`, the mean norm
    /// of the other classes' rows is used (or 1 when there are none), so the new class
    /// competes on equal terms. Needs no scratch memory: the features are computed in the
    /// class's own row.
    pub fn imprint(&mut self, class: usize, embedding: &[f32], scale: Option<f32>) -> Result<()> {
        if class >= self.classes {
            return Err(Error::UnknownClass {
                class,
                classes: self.classes,
            });
        }
        check_vector("imprint embedding", embedding, self.dims.input)?;
        let (d, w) = (self.dims.input, self.dims.feature_width());
        let (norms, biases, count) = self.other_rows(class);
        let scale = match scale {
            Some(s) if s.is_finite() && s > 0.0 => s,
            Some(_) => {
                return Err(Error::Config {
                    what: "imprint scale must be positive and finite",
                });
            }
            None if count > 0 && norms > 0.0 => norms / count as f32,
            None => 1.0,
        };
        let bias = if count > 0 {
            biases / count as f32
        } else {
            0.0
        };
        let out = self.layers_mut();
        let feature = |j: usize| feature(out.w1, out.b1, d, j, embedding);
        // Norm first, so that an error leaves the row as it was.
        let n = math::sqrt(
            (0..w)
                .map(|j| {
                    let f = feature(j);
                    f * f
                })
                .sum::<f32>(),
        );
        if n == 0.0 || !n.is_finite() {
            return Err(Error::Config {
                what: "imprint features are all zero (or overflow)",
            });
        }
        let k = scale / n;
        for (j, r) in out.w2[class * w..(class + 1) * w].iter_mut().enumerate() {
            *r = feature(j) * k;
        }
        out.b2[class] = bias;
        Ok(())
    }

    /// Imprinting relative to earlier samples: like [`Head::imprint`], but the class's
    /// weights follow the *difference* between the features of `embedding` and the mean
    /// features of `others` (samples of the other classes, e.g. the replay buffer), and
    /// the bias is set so that at that mean the new class scores the other classes'
    /// average. Backbone embeddings share a large common part (ReLU outputs are all
    /// positive), so a plain imprint, which follows the embedding itself, makes the new
    /// class win on almost every input; centering removes the common part. With no
    /// `others` this is [`Head::imprint`]. `embedding` is a raw embedding (not a mean of
    /// unit vectors), on the same scale as `others`. Needs no scratch memory; time
    /// O(features × others × (1, or `input` for an MLP)).
    pub fn imprint_centered<'a, I>(
        &mut self,
        class: usize,
        embedding: &[f32],
        others: I,
        scale: Option<f32>,
    ) -> Result<()>
    where
        I: Iterator<Item = &'a [f32]> + Clone,
    {
        let n = others.clone().count();
        if n == 0 {
            return self.imprint(class, embedding, scale);
        }
        if class >= self.classes {
            return Err(Error::UnknownClass {
                class,
                classes: self.classes,
            });
        }
        check_vector("imprint embedding", embedding, self.dims.input)?;
        for x in others.clone() {
            check_vector("imprint reference sample", x, self.dims.input)?;
        }
        if let Some(s) = scale
            && !(s.is_finite() && s > 0.0)
        {
            return Err(Error::Config {
                what: "imprint scale must be positive and finite",
            });
        }
        let (d, w) = (self.dims.input, self.dims.feature_width());
        let inv_n = 1.0 / n as f32;
        // Pass 1, reading only: the norm of the centered features, the other classes'
        // summed weights against the mean features, and the centered features against it.
        let (mut norm2, mut others_at_mean, mut centered_at_mean) = (0.0f32, 0.0f32, 0.0f32);
        let (norms, biases, count) = self.other_rows(class);
        {
            let Layers {
                w1, b1, w2: rows, ..
            } = self.layers();
            let feature = |j: usize, x: &[f32]| feature(w1, b1, d, j, x);
            for j in 0..w {
                let m = others.clone().map(|x| feature(j, x)).sum::<f32>() * inv_n;
                let r = feature(j, embedding) - m;
                norm2 += r * r;
                centered_at_mean += r * m;
                let column: f32 = (0..self.classes)
                    .filter(|&c| c != class)
                    .map(|c| rows[c * w + j])
                    .sum();
                others_at_mean += column * m;
            }
        }
        let norm = math::sqrt(norm2);
        if norm == 0.0 || !norm.is_finite() {
            return Err(Error::Config {
                what: "imprint features equal the reference mean (or overflow)",
            });
        }
        // Nothing fails from here on. Pass 2: the centered features into the row.
        {
            let out = self.layers_mut();
            let feature = |j: usize, x: &[f32]| feature(out.w1, out.b1, d, j, x);
            for (j, r) in out.w2[class * w..(class + 1) * w].iter_mut().enumerate() {
                let m = others.clone().map(|x| feature(j, x)).sum::<f32>() * inv_n;
                *r = feature(j, embedding) - m;
            }
            out.b2[class] = 0.0;
        }
        // The scale: given, else one that gives the new class's logits the same spread
        // over `others` as the other classes' (up to the first SPREAD_CLASSES of them)
        // have, else the other rows' mean norm.
        let k = match scale {
            Some(s) => s / norm,
            None => {
                let spread = self.spread(class, others);
                match spread {
                    Some((others_var, new_var)) if others_var > 0.0 && new_var > 0.0 => {
                        math::sqrt(others_var / new_var)
                    }
                    _ if count > 0 && norms > 0.0 => norms / count as f32 / norm,
                    _ => 1.0 / norm,
                }
            }
        };
        let bias = if count > 0 {
            (others_at_mean + biases) / count as f32 - k * centered_at_mean
        } else {
            -k * centered_at_mean
        };
        let out = self.layers_mut();
        for r in &mut out.w2[class * w..(class + 1) * w] {
            *r *= k;
        }
        out.b2[class] = bias;
        Ok(())
    }

    /// The mean variance over `others` of the logits of the other classes (the first
    /// [`SPREAD_CLASSES`]), and the variance of `class`'s logit.
    fn spread<'a>(
        &self,
        class: usize,
        others: impl Iterator<Item = &'a [f32]>,
    ) -> Option<(f32, f32)> {
        let kc = self.classes.min(SPREAD_CLASSES);
        let mut logits = [0.0f32; SPREAD_CLASSES];
        let (mut sum, mut sq) = ([0.0f32; SPREAD_CLASSES], [0.0f32; SPREAD_CLASSES]);
        let (mut new_sum, mut new_sq, mut n) = (0.0f32, 0.0f32, 0usize);
        let one = &mut [0.0f32; 1];
        for x in others {
            self.logits_unchecked(x, &mut logits[..kc]);
            for c in 0..kc {
                sum[c] += logits[c];
                sq[c] += logits[c] * logits[c];
            }
            // The new class's logit alone: it may be past the first SPREAD_CLASSES.
            self.logit_of(class, x, one);
            new_sum += one[0];
            new_sq += one[0] * one[0];
            n += 1;
        }
        if n < 2 {
            return None;
        }
        let nf = n as f32;
        let var = |s: f32, q: f32| (q / nf - (s / nf) * (s / nf)).max(0.0);
        let (mut total, mut used) = (0.0f32, 0usize);
        for c in (0..kc).filter(|&c| c != class) {
            total += var(sum[c], sq[c]);
            used += 1;
        }
        (used > 0).then(|| (total / used as f32, var(new_sum, new_sq)))
    }

    /// The logit of one class into `out[0]`.
    fn logit_of(&self, class: usize, x: &[f32], out: &mut [f32; 1]) {
        let (d, h) = (self.dims.input, self.dims.hidden);
        let Layers { w1, b1, w2, b2 } = self.layers();
        let w = self.dims.feature_width();
        let row = &w2[class * w..(class + 1) * w];
        let bias = b2[class];
        out[0] = if h == 0 {
            math::dot(row, x) + bias
        } else {
            (0..h)
                .map(|j| row[j] * feature(w1, b1, d, j, x))
                .sum::<f32>()
                + bias
        };
    }
}
