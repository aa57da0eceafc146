//! Labeled feature data: loading CSV files (plain or gzipped) and stratified splits.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use edgetune::rng::Rng;

use crate::csv;

/// Feature vectors with class indices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    /// One row per sample, all the same length.
    pub x: Vec<Vec<f32>>,
    /// Class index per sample.
    pub y: Vec<usize>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.x.is_empty()
    }

    /// Feature width (0 when empty).
    pub fn dim(&self) -> usize {
        self.x.first().map_or(0, Vec::len)
    }

    /// The samples whose class satisfies `keep`, with classes renumbered by `map`.
    pub fn select(&self, keep: impl Fn(usize) -> bool, map: impl Fn(usize) -> usize) -> Dataset {
        let mut out = Dataset::default();
        for (x, &y) in self.x.iter().zip(&self.y) {
            if keep(y) {
                out.x.push(x.clone());
                out.y.push(map(y));
            }
        }
        out
    }

    /// Splits each class separately so both parts keep the class proportions: a
    /// `test_fraction` of every class (at least one sample of each class with two or
    /// more) goes to the second part. Deterministic for a seed.
    pub fn stratified_split(&self, test_fraction: f32, seed: u64) -> (Dataset, Dataset) {
        let classes = self.y.iter().max().map_or(0, |m| m + 1);
        let mut rng = Rng::new(seed);
        let (mut train, mut test) = (Dataset::default(), Dataset::default());
        for c in 0..classes {
            let mut idx: Vec<usize> = (0..self.len()).filter(|&i| self.y[i] == c).collect();
            for i in (1..idx.len()).rev() {
                idx.swap(i, rng.below(i + 1));
            }
            let n_test = if idx.len() >= 2 {
                ((idx.len() as f32 * test_fraction).round() as usize).clamp(1, idx.len() - 1)
            } else {
                0
            };
            for (k, &i) in idx.iter().enumerate() {
                let part = if k < n_test { &mut test } else { &mut train };
                part.x.push(self.x[i].clone());
                part.y.push(self.y[i]);
            }
        }
        (train, test)
    }
}

/// Reads a CSV of numeric features with the class index in the last column, no header;
/// `.gz` files are decompressed. Every value is multiplied by `scale`. A row of another
/// width, a value that is not a finite number, or a label that is not a non-negative
/// integer is an error naming the file and line.
pub fn read_csv(path: &Path, scale: f32) -> Result<Dataset> {
    let mut data = Dataset::default();
    for line in csv::lines(path)? {
        let (n, line) = line?;
        let at = || format!("{}:{n}", path.display());
        let fields = csv::fields(&line, false);
        ensure!(
            fields.len() >= 2,
            "{}: a row needs at least one feature and a label",
            at()
        );
        let (label, features) = fields.split_last().expect("two or more fields");
        let y: usize = label
            .parse()
            .with_context(|| format!("{}: label {label:?} is not a class index", at()))?;
        let x = features
            .iter()
            .map(|f| match f.parse::<f32>() {
                Ok(v) if v.is_finite() => Ok(v * scale),
                _ => bail!("{}: feature {f:?} is not a finite number", at()),
            })
            .collect::<Result<Vec<f32>>>()?;
        if let Some(first) = data.x.first() {
            ensure!(
                x.len() == first.len(),
                "{}: {} features, but the first row has {}",
                at(),
                x.len(),
                first.len()
            );
        }
        data.x.push(x);
        data.y.push(y);
    }
    ensure!(!data.is_empty(), "{}: no samples", path.display());
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("finetune-head-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_csv_and_names_bad_rows() {
        let d = read_csv(&write("ok.csv", "1,2,0\n3,4,1\n\n5,6,1\n"), 0.5).unwrap();
        assert_eq!(d.x, vec![vec![0.5, 1.0], vec![1.5, 2.0], vec![2.5, 3.0]]);
        assert_eq!(d.y, vec![0, 1, 1]);
        let err = |text: &str| format!("{:#}", read_csv(&write("bad.csv", text), 1.0).unwrap_err());
        assert!(err("1,2,0\n1,2,3,0\n").contains("bad.csv:2: 3 features, but the first row has 2"));
        assert!(err("1,x,0\n").contains("feature \"x\" is not a finite number"));
        assert!(err("1,NaN,0\n").contains("not a finite number"));
        assert!(err("1,2,-1\n").contains("label \"-1\" is not a class index"));
        assert!(err("").contains("no samples"));
        assert!(
            format!(
                "{:#}",
                read_csv(Path::new("/nonexistent.csv"), 1.0).unwrap_err()
            )
            .contains("cannot open")
        );
    }

    #[test]
    fn split_is_stratified_and_deterministic() {
        let mut d = Dataset::default();
        for i in 0..100 {
            d.x.push(vec![i as f32]);
            d.y.push(if i < 80 { 0 } else { 1 });
        }
        let (train, test) = d.stratified_split(0.25, 3);
        assert_eq!(test.y.iter().filter(|&&y| y == 0).count(), 20);
        assert_eq!(test.y.iter().filter(|&&y| y == 1).count(), 5);
        assert_eq!(train.len() + test.len(), 100);
        assert_eq!(d.stratified_split(0.25, 3), (train, test));
    }
}
