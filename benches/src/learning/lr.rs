//! Multinomial logistic regression with an L2 penalty, the strongest of the reference
//! methods: features standardized (each minus its training mean, over its standard
//! deviation), then `mean cross-entropy + λ/2 ‖W‖²` (biases not penalized) minimized by
//! full-batch L-BFGS to a gradient below [`TOLERANCE`] (or [`MAX_ITER`] iterations).
//! The loss is convex, so the result does not depend on the starting point: warm starts
//! along a penalty path only save time.
//!
//! The penalty is chosen from [`GRID`] on held-out data: a validation split
//! ([`Logistic::tune`]) or folds of the labeled samples ([`Logistic::cv`]); the most
//! held-out hits win, the larger penalty on ties.

use std::collections::VecDeque;

use super::refs::{argmax, compact, softmax};

/// Penalties tried.
pub const GRID: [f64; 7] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0];
/// Largest gradient value (infinity norm) at convergence.
pub const TOLERANCE: f64 = 1e-6;
/// Most L-BFGS iterations.
pub const MAX_ITER: usize = 400;
/// L-BFGS history.
const MEMORY: usize = 8;

/// A fitted model.
#[derive(Debug, Clone)]
pub struct Logistic {
    labels: Vec<usize>,
    mean: Vec<f64>,
    inv_sd: Vec<f64>,
    /// Per class: `dim` weights then the bias, on standardized features.
    w: Vec<f64>,
    /// The penalty λ.
    pub lambda: f64,
    /// L-BFGS iterations taken.
    pub iterations: usize,
}

/// Standardized samples and compact labels.
struct Problem {
    x: Vec<f64>,
    y: Vec<usize>,
    dim: usize,
    classes: usize,
    lambda: f64,
}

impl Problem {
    /// The objective at `w`, its gradient into `g`.
    fn eval(&self, w: &[f64], g: &mut [f64]) -> f64 {
        let (d, k) = (self.dim, self.classes);
        g.fill(0.0);
        let mut loss = 0.0;
        let mut p = vec![0.0f64; k];
        for (row, &y) in self.x.chunks_exact(d).zip(&self.y) {
            for (c, pc) in p.iter_mut().enumerate() {
                let wc = &w[c * (d + 1)..(c + 1) * (d + 1)];
                *pc = wc[..d].iter().zip(row).map(|(a, b)| a * b).sum::<f64>() + wc[d];
            }
            softmax(&mut p);
            loss -= p[y].max(1e-300).ln();
            for (c, &pc) in p.iter().enumerate() {
                let r = pc - f64::from(u8::from(c == y));
                let gc = &mut g[c * (d + 1)..(c + 1) * (d + 1)];
                gc[..d].iter_mut().zip(row).for_each(|(a, b)| *a += r * b);
                gc[d] += r;
            }
        }
        let n = self.y.len() as f64;
        let mut penalty = 0.0;
        for c in 0..k {
            let (wc, gc) = (
                &w[c * (d + 1)..c * (d + 1) + d],
                &mut g[c * (d + 1)..(c + 1) * (d + 1)],
            );
            gc.iter_mut().for_each(|v| *v /= n);
            for (gv, &wv) in gc[..d].iter_mut().zip(wc) {
                *gv += self.lambda * wv;
                penalty += wv * wv;
            }
        }
        loss / n + 0.5 * self.lambda * penalty
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimizes `p` from `w` by L-BFGS with a backtracking (Armijo) line search; the
/// iterations taken.
fn minimize(p: &Problem, w: &mut [f64]) -> usize {
    let n = w.len();
    let mut g = vec![0.0; n];
    let mut f = p.eval(w, &mut g);
    let mut hist: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(MEMORY);
    let (mut w_new, mut g_new) = (vec![0.0; n], vec![0.0; n]);
    for it in 0..MAX_ITER {
        if g.iter().all(|v| v.abs() < TOLERANCE) {
            return it;
        }
        // Two-loop recursion: d = −H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, y, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let gamma = match hist.back() {
            Some((s, y, _)) => dot(s, y) / dot(y, y),
            None => 1.0 / dot(&g, &g).sqrt().max(1.0),
        };
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&d, &g);
        if slope >= 0.0 {
            hist.clear();
            d = g.iter().map(|v| -v).collect();
            slope = -dot(&g, &g);
        }
        let mut t = 1.0;
        let f_new = loop {
            w_new
                .iter_mut()
                .zip(w.iter().zip(&d))
                .for_each(|(o, (a, b))| *o = a + t * b);
            let f_new = p.eval(&w_new, &mut g_new);
            if f_new <= f + 1e-4 * t * slope {
                break f_new;
            }
            t *= 0.5;
            if t < 1e-16 {
                return it;
            }
        };
        let s: Vec<f64> = w_new.iter().zip(w.iter()).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-300 {
            if hist.len() == MEMORY {
                hist.pop_front();
            }
            hist.push_back((s, y, 1.0 / sy));
        }
        let stalled = f - f_new <= 1e-15 * f.abs().max(1.0);
        w.copy_from_slice(&w_new);
        g.copy_from_slice(&g_new);
        f = f_new;
        if stalled {
            return it + 1;
        }
    }
    MAX_ITER
}

impl Logistic {
    /// Fits `x` labeled `y` with penalty `lambda`, from zero or from `init`'s weights
    /// when it has the same classes and size.
    pub fn fit(x: &[&[f32]], y: &[usize], lambda: f64, init: Option<&Logistic>) -> Logistic {
        let dim = x.first().map_or(0, |r| r.len());
        let (labels, idx) = compact(y);
        let n = x.len() as f64;
        let mut mean = vec![0.0f64; dim];
        for r in x {
            mean.iter_mut()
                .zip(r.iter())
                .for_each(|(m, &v)| *m += f64::from(v) / n);
        }
        let mut var = vec![0.0f64; dim];
        for r in x {
            var.iter_mut()
                .zip(r.iter().zip(&mean))
                .for_each(|(s, (&v, m))| *s += (f64::from(v) - m).powi(2) / n);
        }
        // A constant feature (up to rounding of its mean) is left unscaled.
        let inv_sd: Vec<f64> = var
            .iter()
            .zip(&mean)
            .map(|(&v, m)| {
                if v > 1e-24 * m * m && v > 0.0 {
                    1.0 / v.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        let mut xs = Vec::with_capacity(x.len() * dim);
        for r in x {
            xs.extend(
                r.iter()
                    .zip(&mean)
                    .zip(&inv_sd)
                    .map(|((&v, m), s)| (f64::from(v) - m) * s),
            );
        }
        let k = labels.len();
        let problem = Problem {
            x: xs,
            y: idx,
            dim,
            classes: k,
            lambda,
        };
        let mut w = match init {
            Some(m) if m.labels == labels && m.mean.len() == dim => m.w.clone(),
            _ => vec![0.0; k * (dim + 1)],
        };
        let iterations = if k > 1 { minimize(&problem, &mut w) } else { 0 };
        Logistic {
            labels,
            mean,
            inv_sd,
            w,
            lambda,
            iterations,
        }
    }

    /// Class probabilities into `out` (one per fitted class, in label order) and the
    /// predicted label.
    pub fn proba(&self, x: &[f32], out: &mut Vec<f64>) -> usize {
        let d = self.mean.len();
        let z: Vec<f64> = x
            .iter()
            .zip(&self.mean)
            .zip(&self.inv_sd)
            .map(|((&v, m), s)| (f64::from(v) - m) * s)
            .collect();
        out.clear();
        out.extend(
            self.w
                .chunks_exact(d + 1)
                .map(|wc| dot(&wc[..d], &z) + wc[d]),
        );
        softmax(out);
        self.labels[argmax(out)]
    }

    /// The predicted label.
    pub fn predict(&self, x: &[f32]) -> usize {
        self.proba(x, &mut Vec::new())
    }

    /// The penalty of [`GRID`] with the most hits on `val` when fitted on `train`.
    pub fn tune(train: (&[&[f32]], &[usize]), val: (&[&[f32]], &[usize])) -> f64 {
        let mut scores = Vec::with_capacity(GRID.len());
        let mut warm: Option<Logistic> = None;
        for &lambda in GRID.iter().rev() {
            let m = Logistic::fit(train.0, train.1, lambda, warm.as_ref());
            scores.push((lambda, hits(&m, val.0, val.1)));
            warm = Some(m);
        }
        best(&scores)
    }

    /// The penalty of [`GRID`] with the most hits over the folds (`fold[i]` is sample
    /// `i`'s fold; each fold is held out once). `None` with fewer than two folds.
    pub fn cv(x: &[&[f32]], y: &[usize], fold: &[usize]) -> Option<f64> {
        let folds = fold.iter().max().map_or(0, |m| m + 1);
        if folds < 2 {
            return None;
        }
        let mut scores: Vec<(f64, usize)> = GRID.iter().rev().map(|&l| (l, 0)).collect();
        for f in 0..folds {
            let pick = |keep: bool| -> (Vec<&[f32]>, Vec<usize>) {
                (0..x.len())
                    .filter(|&i| (fold[i] == f) != keep)
                    .map(|i| (x[i], y[i]))
                    .unzip()
            };
            let ((tx, ty), (vx, vy)) = (pick(true), pick(false));
            let mut warm: Option<Logistic> = None;
            for (lambda, score) in scores.iter_mut() {
                let m = Logistic::fit(&tx, &ty, *lambda, warm.as_ref());
                *score += hits(&m, &vx, &vy);
                warm = Some(m);
            }
        }
        Some(best(&scores))
    }
}

fn hits(m: &Logistic, x: &[&[f32]], y: &[usize]) -> usize {
    x.iter().zip(y).filter(|(r, l)| m.predict(r) == **l).count()
}

/// The penalty with the most hits; `scores` run from the largest penalty down, and the
/// first best wins (the larger penalty on ties).
fn best(scores: &[(f64, usize)]) -> f64 {
    let mut b = scores[0];
    for &s in &scores[1..] {
        if s.1 > b.1 {
            b = s;
        }
    }
    b.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgetune::rng::Rng;

    fn rows(x: &[Vec<f32>]) -> Vec<&[f32]> {
        x.iter().map(Vec::as_slice).collect()
    }

    /// Three separable classes along the axes, one feature on a scale of 1000.
    fn toy(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..n {
            let c = i % 3;
            let mut r: Vec<f32> = (0..4).map(|_| rng.uniform(-0.3, 0.3)).collect();
            if c < 2 {
                r[c] += 1.0;
            }
            r[3] = rng.uniform(0.0, 1000.0); // noise on a large scale
            x.push(r);
            y.push(c * 2 + 1);
        }
        (x, y)
    }

    #[test]
    fn separable_data_is_learned_exactly() {
        let (x, y) = toy(90, 1);
        let m = Logistic::fit(&rows(&x), &y, 1e-4, None);
        assert!(
            m.iterations < MAX_ITER,
            "converged in {} iterations",
            m.iterations
        );
        let (t, ty) = toy(300, 2);
        let hits = hits(&m, &rows(&t), &ty);
        assert_eq!(hits, t.len());
        let mut p = Vec::new();
        m.proba(&t[0], &mut p);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_optimum_has_a_zero_gradient_and_the_penalty_shrinks_it() {
        let (x, y) = toy(60, 3);
        let small = Logistic::fit(&rows(&x), &y, 1e-2, None);
        let large = Logistic::fit(&rows(&x), &y, 10.0, Some(&small));
        let norm = |m: &Logistic| m.w.iter().map(|v| v * v).sum::<f64>();
        assert!(norm(&large) < norm(&small) / 10.0);
        // Warm and cold starts reach the same optimum (the loss is convex).
        let cold = Logistic::fit(&rows(&x), &y, 10.0, None);
        for (a, b) in cold.w.iter().zip(&large.w) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn tuning_and_cv_pick_a_grid_value() {
        let (x, y) = toy(60, 4);
        let (v, vy) = toy(60, 5);
        let l = Logistic::tune((&rows(&x), &y), (&rows(&v), &vy));
        assert!(GRID.contains(&l));
        let fold: Vec<usize> = (0..x.len()).map(|i| (i / 3) % 4).collect();
        assert!(GRID.contains(&Logistic::cv(&rows(&x), &y, &fold).unwrap()));
        assert_eq!(Logistic::cv(&rows(&x), &y, &vec![0; x.len()]), None);
    }
}
