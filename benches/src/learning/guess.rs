//! What a learner predicted for each sample ([`Guess`]), how it scores ([`accuracy`],
//! [`calibration`]), and the reference methods fitted together ([`Refs`]).

use super::Method;
use super::lr::Logistic;
use super::refs::{Lda, Ncm, SimpleShot, ece};

/// Confidence bins of the expected calibration error.
pub const ECE_BINS: usize = 15;
/// Logistic regression's penalty with one sample per class, where no fold can be held
/// out to choose it.
pub const ONE_SHOT_PENALTY: f64 = 1.0;

/// One prediction of a test or stream sample.
#[derive(Debug, Clone, Copy)]
pub struct Guess {
    /// The data set's class; `None` before any class exists.
    pub label: Option<usize>,
    /// The top probability; NaN for a method without probabilities.
    pub confidence: f64,
    /// The device flagged it uncertain.
    pub uncertain: bool,
}

/// Share of the samples kept by `keep` (on their true class) that `g` got right.
pub fn accuracy(g: &[Guess], y: &[usize], keep: impl Fn(usize) -> bool) -> f64 {
    let (mut hits, mut n) = (0usize, 0usize);
    for (g, &y) in g.iter().zip(y).filter(|(_, y)| keep(**y)) {
        n += 1;
        hits += usize::from(g.label == Some(y));
    }
    hits as f64 / n.max(1) as f64
}

/// Expected calibration error of the guesses that have a confidence.
pub fn calibration(g: &[Guess], y: &[usize]) -> Option<f64> {
    let (conf, ok): (Vec<f64>, Vec<bool>) = g
        .iter()
        .zip(y)
        .filter(|(g, _)| g.label.is_some() && g.confidence.is_finite())
        .map(|(g, &y)| (g.confidence, g.label == Some(y)))
        .unzip();
    ece(&conf, &ok, ECE_BINS)
}

/// How logistic regression's penalty is chosen.
pub enum Penalty<'a> {
    /// This one, starting from that model's weights.
    Fixed(f64, Option<&'a Logistic>),
    /// Cross-validated over these folds.
    Cv(&'a [usize]),
}

/// The reference methods fitted on one labeled set.
pub struct Refs {
    /// Nearest class mean.
    pub ncm: Ncm,
    /// SimpleShot.
    pub simpleshot: SimpleShot,
    /// LDA.
    pub lda: Lda,
    /// Logistic regression.
    pub lr: Logistic,
}

impl Refs {
    /// Fits every reference on `x` labeled `y`; SimpleShot centers on `center` (else on
    /// the mean of `x`).
    pub fn fit(x: &[&[f32]], y: &[usize], center: Option<&[f64]>, penalty: Penalty) -> Refs {
        let (lambda, init) = match penalty {
            Penalty::Fixed(l, init) => (l, init),
            Penalty::Cv(folds) => (Logistic::cv(x, y, folds).unwrap_or(ONE_SHOT_PENALTY), None),
        };
        Refs {
            ncm: Ncm::fit(x, y),
            simpleshot: SimpleShot::fit(x, y, center),
            lda: Lda::fit(x, y),
            lr: Logistic::fit(x, y, lambda, init),
        }
    }

    /// Each method's guesses on `x` (NCM and SimpleShot give no confidence).
    pub fn guess(&self, x: &[Vec<f32>]) -> Vec<(Method, Vec<Guess>)> {
        let plain = |label: usize| Guess {
            label: Some(label),
            confidence: f64::NAN,
            uncertain: false,
        };
        let mut p = Vec::new();
        let with_p = |label: usize, p: &[f64]| Guess {
            label: Some(label),
            confidence: p.iter().copied().fold(0.0, f64::max),
            uncertain: false,
        };
        let ncm = x.iter().map(|r| plain(self.ncm.predict(r))).collect();
        let ss = x
            .iter()
            .map(|r| plain(self.simpleshot.predict(r)))
            .collect();
        let lda = x
            .iter()
            .map(|r| {
                let l = self.lda.proba(r, &mut p);
                with_p(l, &p)
            })
            .collect();
        let lr = x
            .iter()
            .map(|r| {
                let l = self.lr.proba(r, &mut p);
                with_p(l, &p)
            })
            .collect();
        vec![
            (Method::Ncm, ncm),
            (Method::SimpleShot, ss),
            (Method::Lda, lda),
            (Method::Lr, lr),
        ]
    }
}
