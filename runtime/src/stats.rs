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
    /// The covariance from fewer samples than half its dimensions, in place of
    /// `covariance_upper`: a factor `F` of `rows × dim` values (base64 f32, row-major)
    /// whose `FᵀF` is the covariance off its diagonal, `rows < (dim + 1) / 2`. Such a
    /// covariance has rank `rows` off its diagonal, so this is all of it, smaller: for 32
    /// calibration images of a 1,280-value embedding, 164 kB against 3.3 MB.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub covariance_factor: String,
    /// The covariance's diagonal (base64 f32, `dim` values), with `covariance_factor`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub covariance_diagonal: String,
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
    /// When the covariance has low rank off its diagonal (fewer rows than half the
    /// dimensions), a factor `F` (`rows × dim`) with `FᵀF` equal to it there: the
    /// manifest carries it instead of the matrix. Empty otherwise.
    pub covariance_factor: Vec<f32>,
    /// Per-class counts (empty when none).
    pub class_counts: Vec<u64>,
    /// Per-class means, class after class.
    pub class_means: Vec<f32>,
}

fn encode(v: &[f32]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
}

/// `len` f32 values of the base64 `s`, the `what` of statistics named `of`.
fn decode(of: &str, what: &str, s: &str, len: usize) -> Result<Vec<f32>, BundleError> {
    let bad = |m: String| Err(BundleError::manifest(format!("{of}: {what} {m}")));
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

/// Whether a covariance estimated from `rows` rows is smaller written as a factor and a
/// diagonal (`rows·dim + dim` values) than as its upper triangle (`dim·(dim+1)/2`).
fn factor_is_smaller(rows: usize, dim: usize) -> bool {
    rows > 0 && rows.saturating_add(1).saturating_mul(dim) < dim.saturating_mul(dim + 1) / 2
}

/// The `dim × dim` matrix with `diagonal` on its diagonal and `FᵀF` off it, `F` the
/// `rows × dim` matrix `factor` (sums in f64).
fn from_factor(factor: &[f32], diagonal: &[f32], dim: usize) -> Vec<f32> {
    let rows = factor.len() / dim.max(1);
    // Column by column, so that each product below reads two contiguous columns.
    let columns: Vec<f64> = (0..dim)
        .flat_map(|i| factor.chunks_exact(dim).map(move |r| r[i] as f64))
        .collect();
    let column = |i: usize| &columns[i * rows..(i + 1) * rows];
    let mut m = vec![0f32; dim * dim];
    for i in 0..dim {
        m[i * dim + i] = diagonal[i];
        for j in i + 1..dim {
            let v = column(i)
                .iter()
                .zip(column(j))
                .map(|(a, b)| a * b)
                .sum::<f64>() as f32;
            m[i * dim + j] = v;
            m[j * dim + i] = v;
        }
    }
    m
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
        Self::estimate_as(samples, dim, labels, true)
    }

    /// [`Stats::estimate`], keeping the covariance as a factor where that is smaller
    /// only if `factor` (the tests compare both ways).
    fn estimate_as(
        samples: &[f32],
        dim: usize,
        labels: Option<(&[usize], usize)>,
        factor: bool,
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
        // Off its diagonal the covariance is (1 − γ)·RᵀR/dof, R the centered rows: with
        // few rows, R scaled is the smaller way to carry it. The matrix is then the one
        // the factor gives back, so a bundle read again holds the same numbers.
        let (covariance, covariance_factor) = if factor && factor_is_smaller(rows, dim) {
            let scale = ((1.0 - gamma) / dof).sqrt();
            let factor: Vec<f32> = centered.iter().map(|&v| (v * scale) as f32).collect();
            let diagonal: Vec<f32> = (0..dim).map(|i| cov[i * dim + i] as f32).collect();
            (from_factor(&factor, &diagonal, dim), factor)
        } else {
            (f(&cov), Vec::new())
        };
        Some(Stats {
            samples: n as u64,
            mean: f(&mean),
            std,
            kind: if labels.is_some() {
                CovarianceKind::WithinClass
            } else {
                CovarianceKind::Total
            },
            covariance,
            covariance_factor,
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
        let dim = self.mean.len();
        let (covariance_upper, covariance_factor, covariance_diagonal) =
            if self.covariance_factor.is_empty() {
                let upper = encode(&upper_triangle(&self.covariance, dim));
                (upper, String::new(), String::new())
            } else {
                let diagonal: Vec<f32> = (0..dim).map(|i| self.covariance[i * dim + i]).collect();
                (
                    String::new(),
                    encode(&self.covariance_factor),
                    encode(&diagonal),
                )
            };
        EmbeddingStats {
            samples: self.samples,
            mean: encode(&self.mean),
            std: encode(&self.std),
            covariance_kind: self.kind,
            covariance_upper,
            covariance: String::new(),
            covariance_factor,
            covariance_diagonal,
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
        Self::from_manifest_named("embedding statistics", s, dim, classes)
    }

    /// [`Stats::from_manifest`] of statistics of `dim` features, named `of` in errors.
    fn from_manifest_named(
        of: &str,
        s: &EmbeddingStats,
        dim: usize,
        classes: usize,
    ) -> Result<Stats, BundleError> {
        let mean = decode(of, "mean", &s.mean, dim)?;
        let std = decode(of, "std", &s.std, dim)?;
        if std.iter().any(|&v| v <= 0.0) {
            return Err(BundleError::manifest(format!(
                "{of}: a standard deviation is not positive"
            )));
        }
        let bad = |m: &str| Err(BundleError::manifest(format!("{of}: {m}")));
        let given = [
            (!s.covariance_upper.is_empty()).then_some("covariance_upper"),
            (!s.covariance.is_empty()).then_some("covariance"),
            (!s.covariance_factor.is_empty() || !s.covariance_diagonal.is_empty())
                .then_some("covariance_factor"),
        ];
        let mut given = given.into_iter().flatten();
        let (Some(form), None) = (given.next(), given.next()) else {
            return bad(
                "the covariance must be given in one form: covariance_upper, \
                 covariance_factor with covariance_diagonal, or covariance",
            );
        };
        let mut covariance_factor = Vec::new();
        let covariance = match form {
            "covariance_upper" => {
                let packed = dim.saturating_mul(dim.saturating_add(1)) / 2;
                symmetric(
                    &decode(of, "covariance_upper", &s.covariance_upper, packed)?,
                    dim,
                )
            }
            "covariance" => decode(of, "covariance", &s.covariance, dim.saturating_mul(dim))?,
            _ => {
                // Its rows from its length (base64: 3 bytes in 4 characters), so that a
                // factor larger than the matrix it stands for is refused before decoding.
                let rows = (s.covariance_factor.len() / 4 * 3 / 4)
                    .checked_div(dim)
                    .unwrap_or(0);
                if !factor_is_smaller(rows, dim) {
                    return bad(&format!(
                        "a covariance_factor of {rows} rows of {dim} values is not smaller \
                         than the covariance's upper triangle (it is written only when it is)"
                    ));
                }
                // What `estimate` writes; it also bounds the work of reading it back
                // (rows · dim² / 2 products).
                if rows > COV_ROWS {
                    return bad(&format!(
                        "a covariance_factor of {rows} rows, more than the {COV_ROWS} a \
                         covariance is estimated from"
                    ));
                }
                covariance_factor = decode(
                    of,
                    "covariance_factor",
                    &s.covariance_factor,
                    rows.saturating_mul(dim),
                )?;
                let diagonal = decode(of, "covariance_diagonal", &s.covariance_diagonal, dim)?;
                from_factor(&covariance_factor, &diagonal, dim)
            }
        };
        if (0..dim).any(|i| covariance[i * dim + i] <= 0.0) {
            return Err(BundleError::manifest(format!(
                "{of}: a value on the covariance's diagonal is not positive"
            )));
        }
        let k = s.class_counts.len();
        if k != 0 && k != classes {
            return Err(BundleError::manifest(format!(
                "{of}: {k} class counts for a head of {classes} classes"
            )));
        }
        let class_means = if k == 0 {
            Vec::new()
        } else {
            decode(of, "class means", &s.class_means, k.saturating_mul(dim))?
        };
        Ok(Stats {
            samples: s.samples,
            mean,
            std,
            kind: s.covariance_kind,
            covariance,
            covariance_factor,
            class_counts: s.class_counts.clone(),
            class_means,
        })
    }
}

/// The statistics a bundle gives the device's closed-form learner for its head of
/// `dims` with `classes` classes, in the space the head's output layer sees: the
/// embeddings' ([`Manifest::embedding_stats`]) for a linear head, the hidden
/// activations' ([`Manifest::hidden_stats`]) for an MLP. `None` when the bundle has
/// none; an error names what does not fit.
///
/// [`Manifest::embedding_stats`]: crate::bundle::Manifest::embedding_stats
/// [`Manifest::hidden_stats`]: crate::bundle::Manifest::hidden_stats
pub fn for_head(
    manifest: &crate::bundle::Manifest,
    dims: crate::head::Dims,
    classes: usize,
) -> Result<Option<Stats>, BundleError> {
    let stats = if dims.hidden == 0 {
        &manifest.embedding_stats
    } else {
        &manifest.hidden_stats
    };
    let Some(s) = stats else {
        return Ok(None);
    };
    if dims.input != manifest.embedding.size {
        return Err(BundleError::manifest(format!(
            "the head takes {}-value embeddings, the manifest's are {}",
            dims.input, manifest.embedding.size
        )));
    }
    let of = if dims.hidden == 0 {
        "embedding statistics"
    } else {
        "hidden_stats (the MLP head's statistics)"
    };
    Stats::from_manifest_named(of, s, dims.feature_width(), classes).map(Some)
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
        assert!(s.covariance_factor.is_empty() && m.covariance_factor.is_empty());
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

    /// 12 samples of 64 values, correlated: a covariance of rank 11 off its diagonal.
    fn few_samples() -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(3);
        (0..12)
            .flat_map(|_| {
                let (a, b) = (rng.unit(), rng.unit());
                (0..64)
                    .map(|j| a * (j % 5) as f32 + b * (j % 3) as f32 + 0.1 * rng.unit())
                    .collect::<Vec<f32>>()
            })
            .collect()
    }

    #[test]
    fn a_covariance_from_few_samples_travels_as_a_factor() {
        let x = few_samples();
        let s = Stats::estimate(&x, 64, None).unwrap();
        let whole = Stats::estimate_as(&x, 64, None, false).unwrap();
        // 12 rows of 64 and the diagonal, against the 2,080 values of the triangle.
        assert_eq!(s.covariance_factor.len(), 12 * 64);
        assert!(whole.covariance_factor.is_empty());
        for (i, (a, b)) in s.covariance.iter().zip(&whole.covariance).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1e-3),
                "covariance[{i}]: {a} as a factor, {b} whole"
            );
        }
        let m = s.to_manifest();
        assert!(m.covariance_upper.is_empty() && m.covariance.is_empty());
        let w = whole.to_manifest();
        assert!(
            m.covariance_factor.len() + m.covariance_diagonal.len() < w.covariance_upper.len() / 2
        );
        // Read back, the same numbers: a bundle rewritten carries what it was given.
        let back = Stats::from_manifest(&m, 64, 1).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.to_manifest(), m);
        assert_eq!(Stats::from_manifest(&w, 64, 1).unwrap(), whole);
    }

    #[test]
    fn a_bad_covariance_factor_is_refused() {
        let s = Stats::estimate(&few_samples(), 64, None).unwrap();
        let m = s.to_manifest();
        let refused = |e: EmbeddingStats, says: &str| {
            let err = Stats::from_manifest(&e, 64, 1).unwrap_err().to_string();
            assert!(err.contains(says), "{err:?} does not say {says:?}");
        };
        refused(
            EmbeddingStats {
                covariance_upper: Stats::estimate_as(&few_samples(), 64, None, false)
                    .unwrap()
                    .to_manifest()
                    .covariance_upper,
                ..m.clone()
            },
            "in one form",
        );
        refused(
            EmbeddingStats {
                covariance_diagonal: String::new(),
                ..m.clone()
            },
            "covariance_diagonal has 0 bytes",
        );
        refused(
            EmbeddingStats {
                covariance_factor: String::new(),
                ..m.clone()
            },
            "a covariance_factor of 0 rows",
        );
        // As many rows as would make it larger than the triangle: refused unread.
        refused(
            EmbeddingStats {
                covariance_factor: encode(&vec![0.5; 40 * 64]),
                ..m.clone()
            },
            "a covariance_factor of 40 rows of 64 values is not smaller",
        );
        // More rows than a covariance is estimated from (the length alone says so).
        let wide = EmbeddingStats {
            mean: encode(&vec![0.0; 4096]),
            std: encode(&vec![1.0; 4096]),
            covariance_factor: encode(&vec![0.0; (COV_ROWS + 1) * 4096]),
            covariance_diagonal: encode(&vec![1.0; 4096]),
            ..m.clone()
        };
        let err = Stats::from_manifest(&wide, 4096, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("1025 rows, more than the 1024"), "{err}");
        // A row cut short.
        let mut short = s.covariance_factor.clone();
        short.truncate(short.len() - 8);
        refused(
            EmbeddingStats {
                covariance_factor: encode(&short),
                ..m.clone()
            },
            "covariance_factor has 3040 bytes, expected 704 f32 values",
        );
        let mut nan = s.covariance_factor.clone();
        nan[5] = f32::NAN;
        refused(
            EmbeddingStats {
                covariance_factor: encode(&nan),
                ..m.clone()
            },
            "covariance_factor holds NaN",
        );
        // A diagonal that is not positive.
        let mut diagonal = vec![1.0f32; 64];
        diagonal[9] = 0.0;
        refused(
            EmbeddingStats {
                covariance_diagonal: encode(&diagonal),
                ..m
            },
            "not positive",
        );
    }

    /// A head's statistics by its kind: the embeddings' for a linear head, the hidden
    /// layer's for an MLP, each checked against the features it sees and named so.
    #[test]
    fn for_head_picks_the_statistics_of_the_heads_features() {
        use crate::bundle::{Manifest, Provenance};
        use crate::head::Dims;
        let x: Vec<f32> = (0..60).map(|i| ((i * 7) % 11) as f32 * 0.3).collect();
        let labels: Vec<usize> = (0..10).map(|i| i % 2).collect();
        let six = Stats::estimate(&x, 6, Some((&labels, 2))).unwrap();
        let three = Stats::estimate(&x[..30], 3, Some((&labels, 2))).unwrap();
        let mut m = Manifest::features_only(6, ["a", "b"], Provenance::new("t", "t"));
        let (linear, mlp) = (Dims::linear(6, 4), Dims::mlp(6, 3, 4));
        assert_eq!(for_head(&m, linear, 2).unwrap(), None);
        m.embedding_stats = Some(six.to_manifest());
        assert_eq!(for_head(&m, linear, 2).unwrap().unwrap().mean, six.mean);
        assert_eq!(for_head(&m, mlp, 2).unwrap(), None, "no hidden statistics");
        m.hidden_stats = Some(three.to_manifest());
        assert_eq!(for_head(&m, mlp, 2).unwrap().unwrap().mean, three.mean);
        // Hidden statistics of another width: the error names them.
        let e = for_head(&m, Dims::mlp(6, 4, 4), 2).unwrap_err().to_string();
        assert!(
            e.contains("hidden_stats (the MLP head's statistics): mean"),
            "{e}"
        );
        let e = for_head(&m, Dims::mlp(5, 3, 4), 2).unwrap_err().to_string();
        assert!(e.contains("5-value embeddings"), "{e}");
    }
}
