//! [`Embedded`]: the samples a head trains on, and what a head scores on them.

use anyhow::Result;
use edgetune::Head;

/// Embeddings with class indices.
#[derive(Debug, Clone, Default)]
pub struct Embedded {
    /// One embedding per sample.
    pub x: Vec<Vec<f32>>,
    /// Class index per sample.
    pub y: Vec<usize>,
}

impl Embedded {
    /// Samples.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }
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
