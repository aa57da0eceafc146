//! The backbones: each turns a labeled data set into embeddings, split once into a
//! stratified training and test part (30 % test, fixed seed).
//!
//! | name | embedding | classes learned |
//! | --- | --- | --- |
//! | `digits-cnn` | `models/digits-cnn/digits-cnn-0to4.onnx` (pre-trained on digits 0–4), converted by `finetune-head`'s `convert` and run by [`Backbone`] on the UCI digits | 5–9 |
//! | `digits-cnn-b` | `models/digits-cnn-b/digits-cnn-b-5to9.onnx` (PyTorch, digits 5–9, 16×16 input: the 8×8 digits scaled by 1/16 and upsampled by [`upsample2`], as its README says) | 0–4 |
//! | `uci-pixels` | the 64 pixel values 0–16 themselves | 0–9 |
//! | `wine` | `models/wine/wine.csv.gz`: 13 raw measurements | 0–2 |
//! | `gauss×0.01`, `gauss×1`, `gauss×100` | one draw of [`GAUSS_CLASSES`] Gaussian classes in [`GAUSS_DIM`] dimensions, scaled | 8 |
//!
//! A backbone whose file is missing is skipped with a note ([`Loaded::Skipped`]).

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use edgetune::backbone::Backbone;
use edgetune::bundle::Preprocess;
use edgetune::rng::Rng;
use finetune_head::convert;
use finetune_head::data::{Dataset, read_csv};

/// Every backbone, in the order the table shows them.
pub const NAMES: [&str; 7] = [
    "digits-cnn",
    "digits-cnn-b",
    "uci-pixels",
    "wine",
    "gauss×0.01",
    "gauss×1",
    "gauss×100",
];

/// Share of each class in the test split.
pub const TEST_FRACTION: f32 = 0.3;
/// Seed of the splits and of the Gaussian draw.
pub const SEED: u64 = 13;
/// Dimensions of the Gaussian classes.
pub const GAUSS_DIM: usize = 32;
/// Gaussian classes.
pub const GAUSS_CLASSES: usize = 8;
/// Training and test samples per Gaussian class.
const GAUSS_SAMPLES: (usize, usize) = (120, 60);

/// One backbone's embeddings.
#[derive(Debug, Clone)]
pub struct Data {
    /// Its name ([`NAMES`]).
    pub name: String,
    /// What the embedding is, in a few words.
    pub about: String,
    /// Class names; labels index them.
    pub class_names: Vec<String>,
    /// Training embeddings.
    pub train: Dataset,
    /// Test embeddings.
    pub test: Dataset,
    /// The mean embedding of the backbone's own pre-training classes, when there are
    /// some (SimpleShot centers on it).
    pub base_mean: Option<Vec<f64>>,
}

impl Data {
    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.train.dim()
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }
}

/// A backbone's embeddings, or why it was skipped.
#[derive(Debug)]
pub enum Loaded {
    /// Ready.
    Ready(Data),
    /// Its model or data file is missing: the reason.
    Skipped(String),
}

fn models() -> PathBuf {
    crate::models::workspace().join("models")
}

/// The UCI digits: 1,797 rows of 64 pixels 0–16, labels 0–9.
fn digits() -> Result<Dataset> {
    let path = models().join("digits/digits.csv.gz");
    let d = read_csv(&path, 1.0).with_context(|| format!("loading {}", path.display()))?;
    ensure!(
        d.dim() == 64,
        "{}: 64 pixels per row expected",
        path.display()
    );
    Ok(d)
}

/// Embeds `name`'s data.
pub fn load(name: &str) -> Result<Loaded> {
    let gauss = |scale: f32| Ok(Loaded::Ready(gaussian(name, scale)));
    match name {
        // Its README: pixel/16 (the bundle's preprocessing), 8×8.
        "digits-cnn" => cnn(
            name,
            "digits-cnn/digits-cnn-0to4.onnx",
            5..10,
            1.0 / 16.0,
            |x| x.to_vec(),
        ),
        // Its README: pixel/16, then upsampled to 16×16, in that order (done here, so the
        // bundle's preprocessing is the identity).
        "digits-cnn-b" => cnn(
            name,
            "digits-cnn-b/digits-cnn-b-5to9.onnx",
            0..5,
            1.0,
            |x| {
                let scaled: Vec<f32> = x.iter().map(|v| v / 16.0).collect();
                upsample2(&scaled, 8, 8)
            },
        ),
        "uci-pixels" => Ok(Loaded::Ready(split(
            name,
            "the 64 raw pixel values (0–16) of the UCI digits",
            &digits()?,
            None,
        ))),
        "wine" => {
            let path = models().join("wine/wine.csv.gz");
            if !path.exists() {
                return Ok(Loaded::Skipped(format!(
                    "{} does not exist",
                    path.display()
                )));
            }
            let d = read_csv(&path, 1.0).with_context(|| format!("loading {}", path.display()))?;
            ensure!(
                d.dim() == 13,
                "{}: 13 values per row expected",
                path.display()
            );
            Ok(Loaded::Ready(split(
                name,
                "13 raw chemical measurements (UCI wine)",
                &d,
                None,
            )))
        }
        "gauss×0.01" => gauss(0.01),
        "gauss×1" => gauss(1.0),
        "gauss×100" => gauss(100.0),
        other => anyhow::bail!("no backbone named {other:?} (known: {})", NAMES.join(", ")),
    }
}

/// Splits `d` into train and test; class names are the labels' numbers.
fn split(name: &str, about: &str, d: &Dataset, base_mean: Option<Vec<f64>>) -> Data {
    let classes = d.y.iter().max().map_or(0, |m| m + 1);
    let (train, test) = d.stratified_split(TEST_FRACTION, SEED);
    Data {
        name: name.into(),
        about: about.into(),
        class_names: (0..classes).map(|c| c.to_string()).collect(),
        train,
        test,
        base_mean,
    }
}

/// A digits CNN at `models/<file>`: its bundle (converted in memory, f32, the raw input
/// multiplied by `scale`), the embeddings of the digits `new` (relabeled from 0), and the
/// mean embedding of the other digits (its pre-training classes). `input` turns a CSV
/// row (64 values 0–16) into the bundle's raw input.
fn cnn(
    name: &str,
    file: &str,
    new: std::ops::Range<usize>,
    scale: f32,
    input: fn(&[f32]) -> Vec<f32>,
) -> Result<Loaded> {
    let path = models().join(file);
    if !path.exists() {
        return Ok(Loaded::Skipped(format!(
            "{} does not exist",
            path.display()
        )));
    }
    let opts = convert::Options {
        preprocess: Preprocess {
            scale,
            ..Preprocess::default()
        },
        ..convert::Options::default()
    };
    let (bundle, report) =
        convert::convert(&path, &opts).with_context(|| format!("converting {}", path.display()))?;
    let backbone = Backbone::from_bundle(&bundle).context("loading the converted backbone")?;
    let digits = digits()?;
    let mut out = vec![0.0f32; backbone.embedding_len()];
    let mut embedded = Dataset::default();
    for (x, &y) in digits.x.iter().zip(&digits.y) {
        backbone
            .embed(&input(x), &mut out)
            .with_context(|| format!("embedding a digit with {}", path.display()))?;
        embedded.x.push(out.clone());
        embedded.y.push(y);
    }
    let base = embedded.select(|y| !new.contains(&y), |y| y);
    let base_mean = super::refs::mean(base.x.iter().map(Vec::as_slice), base.dim());
    let learned = embedded.select(|y| new.contains(&y), |y| y - new.start);
    let mut data = split(
        name,
        &format!(
            "`{}` ({} values) of {file}, digits {}–{}",
            report.embedding,
            report.embedding_size,
            new.start,
            new.end - 1
        ),
        &learned,
        Some(base_mean),
    );
    data.class_names = new.map(|d| d.to_string()).collect();
    Ok(Loaded::Ready(data))
}

/// 2× bilinear upsampling of an `h`×`w` image (row-major), exactly as PyTorch's
/// `F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)`: output
/// pixel `o` reads the input at `(o + 0.5) / 2 − 0.5`, clamped below at 0, between the
/// two neighbouring pixels (the second clamped to the last row or column) with linear
/// weights. Rows and columns are independent, so edges repeat the border pixel.
pub fn upsample2(src: &[f32], h: usize, w: usize) -> Vec<f32> {
    // (first neighbour, second neighbour, weight of the second) of output index `o`.
    let taps = |o: usize, n: usize| -> (usize, usize, f32) {
        let s = ((o as f32 + 0.5) * 0.5 - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(n - 1);
        (i0, (i0 + 1).min(n - 1), s - i0 as f32)
    };
    let mut out = vec![0.0f32; 4 * h * w];
    for oy in 0..2 * h {
        let (y0, y1, fy) = taps(oy, h);
        for ox in 0..2 * w {
            let (x0, x1, fx) = taps(ox, w);
            let at = |y: usize, x: usize| src[y * w + x];
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out[oy * 2 * w + ox] = top * (1.0 - fy) + bottom * fy;
        }
    }
    out
}

/// A standard normal value (Box–Muller).
pub fn normal(rng: &mut Rng) -> f64 {
    let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let v = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// [`GAUSS_CLASSES`] classes in [`GAUSS_DIM`] dimensions sharing one anisotropic
/// covariance `Q diag(σ²) Qᵀ` (σ log-spaced from 0.25 to 4, `Q` a random rotation, so
/// NCM is misled by the noisy directions and LDA is not), class means drawn around a
/// common offset of 3 in every coordinate; the same draw for every `scale`, which
/// multiplies the embeddings.
fn gaussian(name: &str, scale: f32) -> Data {
    let (d, k) = (GAUSS_DIM, GAUSS_CLASSES);
    let mut rng = Rng::new(SEED);
    // A random rotation: Gram–Schmidt on a Gaussian matrix.
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(d);
    while q.len() < d {
        let mut v: Vec<f64> = (0..d).map(|_| normal(&mut rng)).collect();
        for u in &q {
            let p: f64 = v.iter().zip(u).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(a, b)| *a -= p * b);
        }
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if n > 1e-6 {
            q.push(v.into_iter().map(|a| a / n).collect());
        }
    }
    let sd: Vec<f64> = (0..d)
        .map(|j| 0.25 * 16f64.powf(j as f64 / (d - 1) as f64))
        .collect();
    let means: Vec<Vec<f64>> = (0..k)
        .map(|_| (0..d).map(|_| 3.0 + 0.4 * normal(&mut rng)).collect())
        .collect();
    let mut sample = |c: usize| -> Vec<f32> {
        let z: Vec<f64> = sd.iter().map(|s| s * normal(&mut rng)).collect();
        (0..d)
            .map(|i| {
                let noise: f64 = (0..d).map(|j| q[j][i] * z[j]).sum();
                (means[c][i] + noise) as f32 * scale
            })
            .collect()
    };
    let (mut train, mut test) = (Dataset::default(), Dataset::default());
    for (part, n) in [(&mut train, GAUSS_SAMPLES.0), (&mut test, GAUSS_SAMPLES.1)] {
        for c in 0..k {
            for _ in 0..n {
                part.x.push(sample(c));
                part.y.push(c);
            }
        }
    }
    Data {
        name: name.into(),
        about: format!(
            "{k} Gaussian classes in {d} dimensions, shared rotated anisotropic covariance, ×{scale}"
        ),
        class_names: (0..k).map(|c| c.to_string()).collect(),
        train,
        test,
        base_mean: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsampling_matches_pytorch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]),
        //     scale_factor=2, mode="bilinear", align_corners=False)
        let want = [
            1.0, 1.25, 1.75, 2.0, //
            1.5, 1.75, 2.25, 2.5, //
            2.5, 2.75, 3.25, 3.5, //
            3.0, 3.25, 3.75, 4.0,
        ];
        assert_eq!(upsample2(&[1.0, 2.0, 3.0, 4.0], 2, 2), want);
        // A constant image stays constant; 8×8 becomes 16×16.
        let up = upsample2(&[5.0; 64], 8, 8);
        assert_eq!(up.len(), 256);
        assert!(up.iter().all(|&v| v == 5.0));
    }

    #[test]
    fn gaussian_scales_share_one_draw() {
        let (a, b) = (gaussian("a", 1.0), gaussian("b", 100.0));
        assert_eq!(a.train.len(), GAUSS_CLASSES * GAUSS_SAMPLES.0);
        for (x, y) in a.train.x.iter().zip(&b.train.x) {
            for (u, v) in x.iter().zip(y) {
                assert_eq!(u * 100.0, *v);
            }
        }
    }
}
