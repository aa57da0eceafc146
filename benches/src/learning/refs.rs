//! The reference methods the device learner is measured against, in plain f64 Rust:
//! nearest class mean ([`Ncm`]), SimpleShot ([`SimpleShot`]), LDA with Ledoit–Wolf
//! shrinkage ([`Lda`]) and L2-penalized logistic regression ([`super::lr::Logistic`]);
//! and the expected calibration error ([`ece`]).
//!
//! Every method fits on the classes its labels hold (a class with no sample is never
//! predicted) and predicts class labels as given. All are batch methods: they see every
//! labeled sample at once, in no order.

/// Class labels present in `y`, sorted, and each sample's index among them.
pub fn compact(y: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut labels: Vec<usize> = y.to_vec();
    labels.sort_unstable();
    labels.dedup();
    let idx = y
        .iter()
        .map(|l| labels.binary_search(l).expect("a label of y"))
        .collect();
    (labels, idx)
}

/// Per-class means of `x` (rows of `dim` values) for the compact labels `idx`.
fn class_means(x: &[&[f32]], idx: &[usize], classes: usize, dim: usize) -> Vec<Vec<f64>> {
    let mut sums = vec![vec![0.0f64; dim]; classes];
    let mut counts = vec![0usize; classes];
    for (row, &c) in x.iter().zip(idx) {
        counts[c] += 1;
        for (s, &v) in sums[c].iter_mut().zip(row.iter()) {
            *s += f64::from(v);
        }
    }
    for (s, &n) in sums.iter_mut().zip(&counts) {
        s.iter_mut().for_each(|v| *v /= n as f64);
    }
    sums
}

fn sq_dist(a: &[f64], b: impl Iterator<Item = f64>) -> f64 {
    a.iter().zip(b).map(|(p, q)| (p - q) * (p - q)).sum()
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, &s) in v.iter().enumerate() {
        if s > v[best] {
            best = i;
        }
    }
    best
}

/// Nearest class mean, Euclidean.
#[derive(Debug, Clone)]
pub struct Ncm {
    labels: Vec<usize>,
    means: Vec<Vec<f64>>,
}

impl Ncm {
    /// The class means of `x` labeled `y` (at least one sample).
    pub fn fit(x: &[&[f32]], y: &[usize]) -> Ncm {
        let (labels, idx) = compact(y);
        let dim = x.first().map_or(0, |r| r.len());
        let means = class_means(x, &idx, labels.len(), dim);
        Ncm { labels, means }
    }

    /// The label of the nearest mean.
    pub fn predict(&self, x: &[f32]) -> usize {
        let d: Vec<f64> = self
            .means
            .iter()
            .map(|m| -sq_dist(m, x.iter().map(|&v| f64::from(v))))
            .collect();
        self.labels[argmax(&d)]
    }
}

/// SimpleShot (Wang et al. 2019, "CL2N"): subtract a center, scale to unit length, then
/// nearest class mean of the normalized samples.
#[derive(Debug, Clone)]
pub struct SimpleShot {
    center: Vec<f64>,
    labels: Vec<usize>,
    means: Vec<Vec<f64>>,
}

impl SimpleShot {
    /// Fits on `x` labeled `y`, centered by `center` (the mean of a base-class pool) or,
    /// when `None`, by the mean of `x` itself.
    pub fn fit(x: &[&[f32]], y: &[usize], center: Option<&[f64]>) -> SimpleShot {
        let dim = x.first().map_or(0, |r| r.len());
        let center = center.map_or_else(|| mean(x.iter().copied(), dim), <[f64]>::to_vec);
        let (labels, idx) = compact(y);
        let mut means = vec![vec![0.0f64; dim]; labels.len()];
        let mut counts = vec![0usize; labels.len()];
        for (row, &c) in x.iter().zip(&idx) {
            let z = normalized(row, &center);
            counts[c] += 1;
            means[c].iter_mut().zip(&z).for_each(|(m, v)| *m += v);
        }
        for (m, &n) in means.iter_mut().zip(&counts) {
            m.iter_mut().for_each(|v| *v /= n as f64);
        }
        SimpleShot {
            center,
            labels,
            means,
        }
    }

    /// The label of the nearest normalized class mean.
    pub fn predict(&self, x: &[f32]) -> usize {
        let z = normalized(x, &self.center);
        let d: Vec<f64> = self
            .means
            .iter()
            .map(|m| -sq_dist(m, z.iter().copied()))
            .collect();
        self.labels[argmax(&d)]
    }
}

/// The mean of rows of `dim` values.
pub fn mean<'a>(rows: impl Iterator<Item = &'a [f32]>, dim: usize) -> Vec<f64> {
    let mut m = vec![0.0f64; dim];
    let mut n = 0usize;
    for r in rows {
        n += 1;
        m.iter_mut().zip(r).for_each(|(s, &v)| *s += f64::from(v));
    }
    m.iter_mut().for_each(|v| *v /= n.max(1) as f64);
    m
}

fn normalized(x: &[f32], center: &[f64]) -> Vec<f64> {
    let mut z: Vec<f64> = x
        .iter()
        .zip(center)
        .map(|(&v, c)| f64::from(v) - c)
        .collect();
    let n = z.iter().map(|v| v * v).sum::<f64>().sqrt();
    if n > 0.0 {
        z.iter_mut().for_each(|v| *v /= n);
    }
    z
}

/// Linear discriminant analysis with equal class priors: one covariance shared by all
/// classes, the pooled within-class covariance `S` shrunk toward `μI` (`μ` = mean
/// eigenvalue of `S`) with the Ledoit–Wolf intensity (Ledoit & Wolf 2004, the estimator
/// scikit-learn's `ledoit_wolf` computes), inverted through its Cholesky factor. With one
/// sample per class there is no within-class spread: the covariance is the identity and
/// LDA is [`Ncm`]. Shrinking toward a multiple of the identity keeps LDA invariant to the
/// embeddings' overall scale, not to per-feature scales.
#[derive(Debug, Clone)]
pub struct Lda {
    labels: Vec<usize>,
    /// Per class: `Σ⁻¹μ_c` then the bias `−½ μ_cᵀ Σ⁻¹ μ_c`.
    w: Vec<Vec<f64>>,
    /// The shrinkage intensity used.
    pub shrinkage: f64,
}

impl Lda {
    /// Fits on `x` labeled `y`.
    pub fn fit(x: &[&[f32]], y: &[usize]) -> Lda {
        let (labels, idx) = compact(y);
        let dim = x.first().map_or(0, |r| r.len());
        let means = class_means(x, &idx, labels.len(), dim);
        let n = x.len();
        // Centered samples' scatter, and the sum of their squared norms squared (the
        // Ledoit–Wolf β term).
        let mut s = vec![0.0f64; dim * dim];
        let mut fourth = 0.0f64;
        let mut z = vec![0.0f64; dim];
        for (row, &c) in x.iter().zip(&idx) {
            for (j, zj) in z.iter_mut().enumerate() {
                *zj = f64::from(row[j]) - means[c][j];
            }
            let sq: f64 = z.iter().map(|v| v * v).sum();
            fourth += sq * sq;
            for i in 0..dim {
                let zi = z[i];
                for (sij, &zj) in s[i * dim..(i + 1) * dim].iter_mut().zip(&z) {
                    *sij += zi * zj;
                }
            }
        }
        let nf = n as f64;
        s.iter_mut().for_each(|v| *v /= nf);
        let d = dim as f64;
        let trace: f64 = (0..dim).map(|i| s[i * dim + i]).sum();
        let mu = trace / d;
        let frob2: f64 = s.iter().map(|v| v * v).sum();
        let shrinkage = if mu <= 0.0 || n <= labels.len() {
            // No within-class spread (one sample per class): the identity.
            s.fill(0.0);
            (0..dim).for_each(|i| s[i * dim + i] = 1.0);
            1.0
        } else {
            let delta = (frob2 - 2.0 * mu * trace + d * mu * mu) / d;
            let beta = ((fourth / nf - frob2) / (d * nf)).min(delta);
            let a = if delta > 0.0 {
                (beta / delta).clamp(0.0, 1.0)
            } else {
                1.0
            };
            s.iter_mut().for_each(|v| *v *= 1.0 - a);
            (0..dim).for_each(|i| s[i * dim + i] += a * mu);
            a
        };
        let l = cholesky(&s, dim).expect("a shrunk covariance is positive definite");
        let w = means
            .iter()
            .map(|m| {
                let mut v = solve(&l, dim, m);
                let bias = -0.5 * m.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
                v.push(bias);
                v
            })
            .collect();
        Lda {
            labels,
            w,
            shrinkage,
        }
    }

    /// Posterior probabilities into `out` (one per fitted class, in label order) and the
    /// predicted label.
    pub fn proba(&self, x: &[f32], out: &mut Vec<f64>) -> usize {
        out.clear();
        out.extend(self.w.iter().map(|w| {
            let (wx, b) = w.split_at(x.len());
            wx.iter()
                .zip(x)
                .map(|(a, &v)| a * f64::from(v))
                .sum::<f64>()
                + b[0]
        }));
        softmax(out);
        self.labels[argmax(out)]
    }

    /// The predicted label.
    pub fn predict(&self, x: &[f32]) -> usize {
        self.proba(x, &mut Vec::new())
    }
}

/// Softmax in place.
pub fn softmax(v: &mut [f64]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for s in v.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    v.iter_mut().for_each(|s| *s /= sum);
}

/// The lower Cholesky factor of the symmetric `n`×`n` matrix `a`; `None` when it is not
/// positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            let v = a[i * n + j] - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * n + i] = v.sqrt();
            } else {
                l[i * n + j] = v / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves `L Lᵀ x = b` for the Cholesky factor `l`.
pub fn solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0f64; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * n + i];
    }
    let mut x = vec![0.0f64; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * n + i];
    }
    x
}

/// Expected calibration error with `bins` equal-width confidence bins on [0, 1]: the
/// sample-weighted mean over bins of |accuracy − mean confidence| (Guo et al. 2017).
/// `None` without samples.
pub fn ece(confidence: &[f64], correct: &[bool], bins: usize) -> Option<f64> {
    if confidence.is_empty() {
        return None;
    }
    let (mut n, mut hits, mut conf) = (vec![0usize; bins], vec![0usize; bins], vec![0.0; bins]);
    for (&c, &ok) in confidence.iter().zip(correct) {
        let b = ((c * bins as f64) as usize).min(bins - 1);
        n[b] += 1;
        hits[b] += usize::from(ok);
        conf[b] += c;
    }
    let total = confidence.len() as f64;
    Some(
        (0..bins)
            .filter(|&b| n[b] > 0)
            .map(|b| (hits[b] as f64 - conf[b]).abs() / total)
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgetune::rng::Rng;

    /// Two Gaussian classes in 3-D with covariance `cov` (diagonal), `n` each.
    fn blobs(n: usize, sd: [f32; 3], seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
        blobs_along([1.0, 0.3, 0.0], n, sd, seed)
    }

    /// Means ±`dir`, labels 7 and 8.
    fn blobs_along(
        dir: [f32; 3],
        n: usize,
        sd: [f32; 3],
        seed: u64,
    ) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let mut normal = || {
            let (u, v) = (rng.unit().max(1e-7), rng.unit());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for c in 0..2 {
            for _ in 0..n {
                let m = if c == 0 { -1.0 } else { 1.0 };
                x.push((0..3).map(|j| m * dir[j] + sd[j] * normal()).collect());
                y.push(c + 7);
            }
        }
        (x, y)
    }

    fn rows(x: &[Vec<f32>]) -> Vec<&[f32]> {
        x.iter().map(Vec::as_slice).collect()
    }

    #[test]
    fn lda_is_ncm_for_isotropic_classes_and_whitens_otherwise() {
        let (x, y) = blobs(200, [1.0; 3], 1);
        let (ncm, lda) = (Ncm::fit(&rows(&x), &y), Lda::fit(&rows(&x), &y));
        let (t, ty) = blobs(300, [1.0; 3], 2);
        let same = t
            .iter()
            .filter(|r| ncm.predict(r) == lda.predict(r))
            .count();
        assert!(same >= t.len() * 99 / 100, "{same} of {}", t.len());
        assert!(
            lda.shrinkage > 0.5,
            "isotropic: shrink a lot ({})",
            lda.shrinkage
        );
        // A noisy first axis and a quiet second one: LDA leans on the second (NCM about
        // 75 %, LDA about 98 %).
        let (x, y) = blobs_along([1.0, 1.0, 0.0], 300, [3.0, 0.5, 1.0], 3);
        let (t, ty2) = blobs_along([1.0, 1.0, 0.0], 300, [3.0, 0.5, 1.0], 4);
        let acc = |f: &dyn Fn(&[f32]) -> usize, t: &[Vec<f32>], ty: &[usize]| {
            t.iter().zip(ty).filter(|(r, y)| f(r) == **y).count() as f64 / t.len() as f64
        };
        let (ncm, lda) = (Ncm::fit(&rows(&x), &y), Lda::fit(&rows(&x), &y));
        let (a_ncm, a_lda) = (
            acc(&|r| ncm.predict(r), &t, &ty2),
            acc(&|r| lda.predict(r), &t, &ty2),
        );
        assert!(
            a_lda > 0.95 && a_lda > a_ncm + 0.15,
            "LDA {a_lda}, NCM {a_ncm}"
        );
        assert!(ty.iter().all(|&l| l == 7 || l == 8));
    }

    #[test]
    fn one_sample_per_class_makes_lda_ncm() {
        let x = [vec![0.0f32, 1.0], vec![2.0, 0.0], vec![5.0, 5.0]];
        let y = [0, 1, 2];
        let (ncm, lda) = (Ncm::fit(&rows(&x), &y), Lda::fit(&rows(&x), &y));
        let mut rng = Rng::new(5);
        for _ in 0..200 {
            let p = [rng.uniform(-2.0, 7.0), rng.uniform(-2.0, 7.0)];
            assert_eq!(ncm.predict(&p), lda.predict(&p));
        }
    }

    #[test]
    fn ncm_and_simpleshot_ignore_the_scale() {
        let (x, y) = blobs(50, [1.0, 1.0, 2.0], 6);
        let (t, _) = blobs(100, [1.0, 1.0, 2.0], 7);
        for s in [0.01f32, 100.0] {
            let xs: Vec<Vec<f32>> = x
                .iter()
                .map(|r| r.iter().map(|v| v * s).collect())
                .collect();
            let (n1, n2) = (Ncm::fit(&rows(&x), &y), Ncm::fit(&rows(&xs), &y));
            let (s1, s2) = (
                SimpleShot::fit(&rows(&x), &y, None),
                SimpleShot::fit(&rows(&xs), &y, None),
            );
            for r in &t {
                let rs: Vec<f32> = r.iter().map(|v| v * s).collect();
                assert_eq!(n1.predict(r), n2.predict(&rs));
                assert_eq!(s1.predict(r), s2.predict(&rs));
            }
        }
    }

    #[test]
    fn cholesky_solves() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let l = cholesky(&a, 3).unwrap();
        let x = solve(&l, 3, &[1.0, 2.0, 3.0]);
        for i in 0..3 {
            let b: f64 = (0..3).map(|j| a[i * 3 + j] * x[j]).sum();
            assert!((b - [1.0, 2.0, 3.0][i]).abs() < 1e-12);
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn ece_of_calibrated_and_overconfident_predictions() {
        // Confidence 0.75, right 3 times in 4: calibrated.
        let c = [0.75; 8];
        let ok = [true, true, true, false, true, false, true, true];
        assert!(ece(&c, &ok, 15).unwrap().abs() < 1e-12);
        // Always sure, right half the time: ECE 0.5.
        assert!((ece(&[1.0; 4], &[true, false, true, false], 15).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(ece(&[], &[], 15), None);
    }
}
