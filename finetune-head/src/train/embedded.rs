//! [`Embedded`]: the samples a head trains on, and what a head scores on them.

use anyhow::Result;
use edgetune::Head;

use crate::data::Dataset;

/// Embeddings with class indices: a [`Dataset`] whose features are a backbone's
/// embeddings.
pub type Embedded = Dataset;

/// `n` samples of three classes in turn (0, 1, 2, 0, …), each drawn by `sample` for its
/// class from one generator seeded with `seed`: the synthetic sets of the unit tests.
#[cfg(test)]
pub(crate) fn three_classes(
    n: usize,
    seed: u64,
    mut sample: impl FnMut(usize, &mut edgetune::rng::Rng) -> Vec<f32>,
) -> Embedded {
    let mut rng = edgetune::rng::Rng::new(seed);
    let mut d = Embedded::default();
    for i in 0..n {
        let c = i % 3;
        d.x.push(sample(c, &mut rng));
        d.y.push(c);
    }
    d
}

/// Accuracy and mean cross-entropy (of the true class) of `head` on `data`.
pub fn score(head: &Head<Vec<f32>>, data: &Embedded) -> Result<(f64, f64)> {
    if data.is_empty() {
        return Ok((0.0, 0.0));
    }
    let mut probs = vec![0.0f32; head.dims().capacity];
    let (mut hits, mut loss) = (0usize, 0.0f64);
    for (x, &y) in data.x.iter().zip(&data.y) {
        let p = head.predict(x, &mut probs)?;
        hits += usize::from(p.class == y);
        loss -= f64::from(probs[y].max(1e-12)).ln();
    }
    let n = data.len() as f64;
    Ok((hits as f64 / n, loss / n))
}

/// Predicted class and the probability of the true class for each sample.
pub fn predictions(head: &Head<Vec<f32>>, data: &Embedded) -> Result<(Vec<usize>, Vec<f32>)> {
    let mut probs = vec![0.0f32; head.dims().capacity];
    let mut pred = Vec::with_capacity(data.len());
    let mut truth_p = Vec::with_capacity(data.len());
    for (x, &y) in data.x.iter().zip(&data.y) {
        pred.push(head.predict(x, &mut probs)?.class);
        truth_p.push(probs[y]);
    }
    Ok((pred, truth_p))
}
