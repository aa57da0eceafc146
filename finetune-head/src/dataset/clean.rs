//! After loading: the class names, [`clean`] (exact duplicates and conflicting labels
//! dropped) and [`split`] (stratified, with a seed, unless the folders gave one).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, ensure};
use edgetune::rng::Rng;

use super::{Hash, Item, Split};
use crate::report::{Conflict, DuplicateGroup};

/// The class names in `items`, sorted (numerically when every name is an integer).
pub fn class_names(items: &[Item]) -> Vec<String> {
    let mut names: Vec<String> = items.iter().map(|i| i.label.clone()).collect();
    names.sort();
    names.dedup();
    if names.iter().all(|n| n.parse::<i64>().is_ok()) {
        names.sort_by_key(|n| n.parse::<i64>().unwrap_or(0));
    }
    names
}

/// What [`clean`] dropped.
#[derive(Debug, Clone, Default)]
pub struct Cleaned {
    /// Exact duplicates under one label: the first kept, the others dropped.
    pub duplicates: Vec<DuplicateGroup>,
    /// Samples found under two or more labels: every copy dropped.
    pub conflicts: Vec<Conflict>,
}

/// Drops exact duplicates (keeping the first, with a folder split the one in the earliest
/// split: train, then validation, then test, so a test sample never repeats a training
/// one) and every copy of a sample labeled two ways.
pub fn clean(items: Vec<Item>) -> (Vec<Item>, Cleaned) {
    let mut by_hash: HashMap<Hash, Vec<usize>> = HashMap::new();
    for (i, it) in items.iter().enumerate() {
        by_hash.entry(it.hash).or_default().push(i);
    }
    let mut drop = vec![false; items.len()];
    let mut report = Cleaned::default();
    let mut groups: Vec<&Vec<usize>> = by_hash.values().filter(|g| g.len() > 1).collect();
    groups.sort();
    for g in groups {
        let labels: BTreeMap<&str, ()> = g.iter().map(|&i| (items[i].label.as_str(), ())).collect();
        if labels.len() > 1 {
            for &i in g {
                drop[i] = true;
            }
            report.conflicts.push(Conflict {
                items: g
                    .iter()
                    .map(|&i| (items[i].origin.clone(), items[i].label.clone()))
                    .collect(),
            });
        } else {
            let mut g = g.clone();
            g.sort_by_key(|&i| (items[i].split, i));
            for &i in &g[1..] {
                drop[i] = true;
            }
            report.duplicates.push(DuplicateGroup {
                label: items[g[0]].label.clone(),
                kept: items[g[0]].origin.clone(),
                dropped: g[1..].iter().map(|&i| items[i].origin.clone()).collect(),
            });
        }
    }
    let kept = items
        .into_iter()
        .zip(drop)
        .filter(|(_, d)| !d)
        .map(|(i, _)| i)
        .collect();
    (kept, report)
}

/// Assigns a split to every item that has none: per class, shuffled with `seed`, a
/// `test` fraction to test and a `val` fraction to validation (each at least one sample),
/// the rest to training. Errors name a class with too few samples for the split.
pub fn split(items: &mut [Item], classes: &[String], val: f32, test: f32, seed: u64) -> Result<()> {
    ensure!(
        (0.0..1.0).contains(&val)
            && (0.0..1.0).contains(&test)
            && val + test < 1.0
            && val > 0.0
            && test > 0.0,
        "--val and --test must be fractions above 0 whose sum is below 1 (got {val} and {test})"
    );
    if items.iter().all(|i| i.split.is_some()) {
        for c in classes {
            let n = items
                .iter()
                .filter(|i| &i.label == c && i.split == Some(Split::Train))
                .count();
            ensure!(n > 0, "class {c:?} has no training sample in train/");
        }
        return Ok(());
    }
    let mut rng = Rng::new(seed);
    for c in classes {
        let mut idx: Vec<usize> = (0..items.len()).filter(|&i| &items[i].label == c).collect();
        ensure!(
            idx.len() >= 3,
            "class {c:?} has {} sample{} after cleaning; a stratified train/validation/test \
             split needs at least 3 per class (add samples, or give the split by folders)",
            idx.len(),
            if idx.len() == 1 { "" } else { "s" }
        );
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i + 1));
        }
        let n = idx.len() as f32;
        // At least one sample in each part (3 or more in the class).
        let n_test = ((n * test).round() as usize).clamp(1, idx.len() - 2);
        let n_val = ((n * val).round() as usize).clamp(1, idx.len() - n_test - 1);
        for (k, &i) in idx.iter().enumerate() {
            items[i].split = Some(if k < n_test {
                Split::Test
            } else if k < n_test + n_val {
                Split::Val
            } else {
                Split::Train
            });
        }
    }
    Ok(())
}
