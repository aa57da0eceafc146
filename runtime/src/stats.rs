//! Statistics of a backbone's embeddings that a bundle carries, so that the device's
//! learner works in the backbone's own units from the first label
//! ([`crate::slda::Slda`]): the mean and standard deviation per dimension, a covariance
//! (within-class from `finetune-head train`, of unlabeled calibration samples from
//! `convert --calib`), and for a head trained on the host, each class's count and mean.
//!
//! In the manifest (JSON) the vectors are base64 of little-endian f32, like the
//! exemplars'.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::bundle::BundleError;

/// Most rows the covariance is estimated from.
pub const COV_ROWS: usize = 1024;

/// What the covariance was estimated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CovarianceKind {
    /// Pooled within-class covariance of labeled samples.
    WithinClass,
    /// Covariance of unlabeled samples (between-class spread included).
    Total,
}

/// Embedding statistics (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingStats {
    /// Samples they were estimated from.
    pub samples: u64,
    /// Mean per dimension (base64 f32).
    pub mean: String,
    /// Standard deviation per dimension (base64 f32).
    pub std: String,
    /// What the covariance is of.
    pub covariance_kind: CovarianceKind,
    /// Covariance, shrunk toward its diagonal: its upper triangle row by row
    /// (`dim·(dim+1)/2` values, base64 f32; the matrix is symmetric, so this is all of
    /// it at half the size).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub covariance_upper: String,
    /// The whole covariance, `dim × dim` row-major (base64 f32), as bundles written
    /// before `covariance_upper` carry it; read, never written.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub covariance: String,
    /// Per-class sample counts of the head's classes (trained heads only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_counts: Vec<u64>,
    /// Per-class means, class after class (base64 f32; trained heads only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub class_means: String,
}

/// Decoded and checked [`EmbeddingStats`].
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Samples they were estimated from.
    pub samples: u64,
    /// Mean per dimension.
    pub mean: Vec<f32>,
    /// Standard deviation per dimension (each > 0).
    pub std: Vec<f32>,
    /// What the covariance is of.
    pub kind: CovarianceKind,
    /// Covariance, `dim × dim`.
    pub covariance: Vec<f32>,
    /// Per-class counts (empty when none).
    pub class_counts: Vec<u64>,
    /// Per-class means, class after class.
    pub class_means: Vec<f32>,
}

fn encode(v: &[f32]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
}

fn decode(what: &str, s: &str, len: usize) -> Result<Vec<f32>, BundleError> {
    let bad = |m: String| {
        Err(BundleError::manifest(format!(
            "embedding statistics: {what} {m}"
        )))
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(s) else {
        return bad("is not valid base64".into());
    };
    if bytes.len() != len.saturating_mul(4) {
        return bad(format!(
            "has {} bytes, expected {len} f32 values",
            bytes.len()
        ));
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if v.iter().any(|x| !x.is_finite()) {
        return bad("holds NaN or infinity".into());
    }
    Ok(v)
}

/// The upper triangle of the symmetric `dim × dim` matrix `m`, row by row.
fn upper_triangle(m: &[f32], dim: usize) -> Vec<f32> {
    (0..dim)
        .flat_map(|i| m[i * dim + i..(i + 1) * dim].iter().copied())
        .collect()
}

/// The symmetric `dim × dim` matrix whose upper triangle (row by row) is `upper`.
fn symmetric(upper: &[f32], dim: usize) -> Vec<f32> {
    let mut m = vec![0f32; dim * dim];
    let mut k = 0;
    for i in 0..dim {
        for j in i..dim {
            m[i * dim + j] = upper[k];
            m[j * dim + i] = upper[k];
            k += 1;
        }
    }
    m
}

impl Stats {
    /// Estimates them from `samples` (rows of `dim` values) with their `labels` (then
    /// the covariance is within-class and the class statistics are kept for
    /// `classes` classes) or without (total covariance). The covariance is shrunk
    /// toward its diagonal by Ledoit and Wolf's rule, so it is well conditioned even
    /// from fewer samples than dimensions. `None` with fewer than two samples.
    pub fn estimate(
        samples: &[f32],
        dim: usize,
        labels: Option<(&[usize], usize)>,
    ) -> Option<Stats> {
        let n = samples.len().checked_div(dim)?;
        if n < 2 || samples.len() != n * dim {
            return None;
        }
        let mut mean = vec![0f64; dim];
        for x in samples.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(x) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let classes = labels.map_or(1, |(_, c)| c.max(1));
        let mut counts = vec![0u64; classes];
        let mut cmeans = vec![0f64; classes * dim];
        for (i, x) in samples.chunks_exact(dim).enumerate() {
            let c = labels.map_or(0, |(l, _)| l[i]);
            if c >= classes {
                return None;
            }
            counts[c] += 1;
            for (m, &v) in cmeans[c * dim..(c + 1) * dim].iter_mut().zip(x) {
                *m += v as f64;
            }
        }
        for c in 0..classes {
            let k = counts[c].max(1) as f64;
            cmeans[c * dim..(c + 1) * dim]
                .iter_mut()
                .for_each(|m| *m /= k);
        }
        // Centered rows (by their class mean, or the overall mean); the covariance
        // costs n·dim², so it is estimated from at most COV_ROWS evenly spaced rows.
        let step = n.div_ceil(COV_ROWS);
        let centered: Vec<f64> = samples
            .chunks_exact(dim)
            .enumerate()
            .step_by(step)
            .flat_map(|(i, x)| {
                let c = labels.map_or(0, |(l, _)| l[i]);
                let m = &cmeans[c * dim..(c + 1) * dim];
                x.iter()
                    .zip(m)
                    .map(|(&v, &m)| v as f64 - m)
                    .collect::<Vec<_>>()
            })
            .collect();
        let rows = centered.len() / dim;
        let used = labels.map_or(1, |_| counts.iter().filter(|&&k| k > 0).count());
        let dof = (rows.saturating_sub(used)).max(1) as f64;
        let mut cov = vec![0f64; dim * dim];
        for r in centered.chunks_exact(dim) {
            for i in 0..dim {
                let a = r[i];
                if a != 0.0 {
                    for j in 0..dim {
                        cov[i * dim + j] += a * r[j];
                    }
                }
            }
        }
        cov.iter_mut().for_each(|v| *v /= dof);
        // Ledoit–Wolf shrinkage toward the diagonal: γ = Σ var(s_ij) / Σ s_ij², i ≠ j.
        let (mut num, mut den) = (0f64, 0f64);
        for r in centered.chunks_exact(dim) {
            for i in 0..dim {
                for j in 0..dim {
                    if i != j {
                        let d = r[i] * r[j] - cov[i * dim + j];
                        num += d * d;
                    }
                }
            }
        }
        num /= (rows as f64) * (rows as f64);
        for i in 0..dim {
            for j in 0..dim {
                if i != j {
                    den += cov[i * dim + j] * cov[i * dim + j];
                }
            }
        }
        let gamma = if den > 0.0 {
            (num / den).clamp(0.0, 1.0)
        } else {
            1.0
        };
        // Per-dimension sums of squared deviations: the spread, and their total the
        // covariance's floor.
        let mut sq = vec![0f64; dim];
        for x in samples.chunks_exact(dim) {
            for (i, &v) in x.iter().enumerate() {
                let e = v as f64 - mean[i];
                sq[i] += e * e;
            }
        }
        let var_total: f64 = sq.iter().sum();
        let floor = (var_total / (n * dim) as f64).max(f64::MIN_POSITIVE) * 1e-6;
        for i in 0..dim {
            for j in 0..dim {
                if i != j {
                    cov[i * dim + j] *= 1.0 - gamma;
                } else {
                    cov[i * dim + i] = cov[i * dim + i].max(floor);
                }
            }
        }
        let std: Vec<f32> = sq
            .iter()
            .map(|s| ((s / (n - 1) as f64).sqrt().max(floor.sqrt())) as f32)
            .collect();
        let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        Some(Stats {
            samples: n as u64,
            mean: f(&mean),
            std,
            kind: if labels.is_some() {
                CovarianceKind::WithinClass
            } else {
                CovarianceKind::Total
            },
            covariance: f(&cov),
            class_counts: if labels.is_some() { counts } else { Vec::new() },
            class_means: if labels.is_some() {
                f(&cmeans)
            } else {
                Vec::new()
            },
        })
    }

    /// For the manifest.
    pub fn to_manifest(&self) -> EmbeddingStats {
        EmbeddingStats {
            samples: self.samples,
            mean: encode(&self.mean),
            std: encode(&self.std),
            covariance_kind: self.kind,
            covariance_upper: encode(&upper_triangle(&self.covariance, self.mean.len())),
            covariance: String::new(),
            class_counts: self.class_counts.clone(),
            class_means: encode(&self.class_means),
        }
    }

    /// From the manifest, checked against the embedding size and the head's classes.
    pub fn from_manifest(
        s: &EmbeddingStats,
        dim: usize,
        classes: usize,
    ) -> Result<Stats, BundleError> {
        let mean = decode("mean", &s.mean, dim)?;
        let std = decode("std", &s.std, dim)?;
        if std.iter().any(|&v| v <= 0.0) {
            return Err(BundleError::manifest(
                "embedding statistics: a standard deviation is not positive".to_string(),
            ));
        }
        let covariance = match (s.covariance_upper.is_empty(), s.covariance.is_empty()) {
            (false, true) => {
                let packed = dim.saturating_mul(dim.saturating_add(1)) / 2;
                symmetric(
                    &decode("covariance_upper", &s.covariance_upper, packed)?,
                    dim,
                )
            }
            (true, false) => decode("covariance", &s.covariance, dim.saturating_mul(dim))?,
            (false, false) => {
                return Err(BundleError::manifest(
                    "embedding statistics: both covariance and covariance_upper are given"
                        .to_string(),
                ));
            }
            (true, true) => {
                return Err(BundleError::manifest(
                    "embedding statistics: no covariance (covariance_upper)".to_string(),
                ));
            }
        };
        if (0..dim).any(|i| covariance[i * dim + i] <= 0.0) {
            return Err(BundleError::manifest(
                "embedding statistics: a covariance has a positive diagonal".to_string(),
            ));
        }
        let k = s.class_counts.len();
        if k != 0 && k != classes {
            return Err(BundleError::manifest(format!(
                "embedding statistics: {k} class counts for a head of {classes} classes"
            )));
        }
        let class_means = if k == 0 {
            Vec::new()
        } else {
            decode("class means", &s.class_means, k.saturating_mul(dim))?
        };
        Ok(Stats {
            samples: s.samples,
            mean,
            std,
            kind: s.covariance_kind,
            covariance,
            class_counts: s.class_counts.clone(),
            class_means,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_and_checks() {
        let x: Vec<f32> = (0..40)
            .map(|i| ((i * 7) % 11) as f32 * 0.3 + (i % 4) as f32)
            .collect();
        let labels: Vec<usize> = (0..10).map(|i| i % 2).collect();
        let s = Stats::estimate(&x, 4, Some((&labels, 2))).unwrap();
        assert_eq!(s.class_counts, vec![5, 5]);
        let m = s.to_manifest();
        assert_eq!(Stats::from_manifest(&m, 4, 2).unwrap(), s);
        // Half the covariance is written; a bundle with the whole matrix still reads.
        assert!(m.covariance.is_empty());
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&m.covariance_upper)
                .unwrap()
                .len(),
            10 * 4
        );
        let old = EmbeddingStats {
            covariance: encode(&s.covariance),
            covariance_upper: String::new(),
            ..m.clone()
        };
        assert_eq!(Stats::from_manifest(&old, 4, 2).unwrap(), s);
        let both = EmbeddingStats {
            covariance: encode(&s.covariance),
            ..m.clone()
        };
        assert!(Stats::from_manifest(&both, 4, 2).is_err());
        let none = EmbeddingStats {
            covariance_upper: String::new(),
            ..m.clone()
        };
        assert!(Stats::from_manifest(&none, 4, 2).is_err());
        assert!(Stats::from_manifest(&m, 5, 2).is_err());
        assert!(Stats::from_manifest(&m, 4, 3).is_err());
        let t = Stats::estimate(&x, 4, None).unwrap();
        assert_eq!(t.kind, CovarianceKind::Total);
        assert!(t.class_counts.is_empty());
        // Symmetric, positive diagonal.
        for i in 0..4 {
            assert!(t.covariance[i * 4 + i] > 0.0);
            for j in 0..4 {
                assert_eq!(t.covariance[i * 4 + j], t.covariance[j * 4 + i]);
            }
        }
    }
}
