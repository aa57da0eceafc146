//! Standardized training: each embedding value minus its training mean, over its
//! standard deviation, and the scaling folded back into the head's first layer so the
//! bundle's head runs on raw embeddings.

use edgetune::Head;

use super::Embedded;

/// Per-value mean and standard deviation of training embeddings.
pub(super) struct Scaling {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Scaling {
    pub(super) fn of(data: &Embedded) -> Scaling {
        let d = data.x[0].len();
        let n = data.len() as f64;
        let mut mean = vec![0.0f64; d];
        let mut sq = vec![0.0f64; d];
        for x in &data.x {
            for j in 0..d {
                mean[j] += f64::from(x[j]);
                sq[j] += f64::from(x[j]) * f64::from(x[j]);
            }
        }
        let std = (0..d)
            .map(|j| {
                let m = mean[j] / n;
                let v = (sq[j] / n - m * m).max(0.0).sqrt();
                // A constant value is left unscaled.
                if v > 1e-6 { v as f32 } else { 1.0 }
            })
            .collect();
        Scaling {
            mean: mean.iter().map(|m| (m / n) as f32).collect(),
            std,
        }
    }

    pub(super) fn apply(&self, data: &Embedded) -> Embedded {
        Embedded {
            x: data
                .x
                .iter()
                .map(|x| {
                    x.iter()
                        .zip(&self.mean)
                        .zip(&self.std)
                        .map(|((v, m), s)| (v - m) / s)
                        .collect()
                })
                .collect(),
            y: data.y.clone(),
        }
    }

    /// Rewrites the first layer (rows of `W`, then biases) of a head trained on scaled
    /// inputs so that it computes the same on raw ones: `W' = W / σ`,
    /// `b' = b − Σ W μ / σ`.
    pub(super) fn fold(&self, head: &mut Head<Vec<f32>>) {
        let dims = head.dims();
        let d = dims.input;
        let rows = if dims.hidden > 0 {
            dims.hidden
        } else {
            dims.capacity
        };
        let p = head.params_mut();
        for r in 0..rows {
            let mut shift = 0.0f64;
            for j in 0..d {
                let w = p[r * d + j] / self.std[j];
                shift += f64::from(w) * f64::from(self.mean[j]);
                p[r * d + j] = w;
            }
            p[rows * d + r] -= shift as f32;
        }
    }
}
