//! Timing for the `compare` command: samples of the time per call, taken in
//! interleaved rounds so that two engines see the same machine load, and their median
//! and 10th/90th percentiles.

use std::time::Instant;

use anyhow::Result;

/// The distribution of one contender's samples, in nanoseconds per call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Median.
    pub median: f64,
    /// 10th percentile.
    pub p10: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Samples it summarizes.
    pub samples: usize,
}

/// The `q`-quantile (0–1) of sorted values, linearly interpolated between ranks.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl Summary {
    /// Median and percentiles of `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Summary {
            median: quantile(&v, 0.5),
            p10: quantile(&v, 0.1),
            p90: quantile(&v, 0.9),
            samples: v.len(),
        })
    }

    /// As JSON, in nanoseconds.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "median_ns": self.median,
            "p10_ns": self.p10,
            "p90_ns": self.p90,
            "samples": self.samples,
        })
    }
}

/// A contender: asked for `n` samples, it returns `n` times per call in nanoseconds.
pub type Contender<'a> = dyn FnMut(usize) -> Result<Vec<f64>> + 'a;

/// Takes `rounds × per_round` samples of every contender, interleaved: round `r` asks
/// each contender for `per_round` samples in turn, in forward order on even rounds and
/// reversed on odd ones (A B, B A, A B, …), so that slow drifts of the machine (another
/// process, frequency changes) fall on all of them alike. Returns the samples per
/// contender, in the order given.
pub fn interleave(
    rounds: usize,
    per_round: usize,
    contenders: &mut [&mut Contender<'_>],
) -> Result<Vec<Vec<f64>>> {
    let n = contenders.len();
    let mut out = vec![Vec::with_capacity(rounds * per_round); n];
    for r in 0..rounds {
        for k in 0..n {
            let i = if r % 2 == 0 { k } else { n - 1 - k };
            out[i].extend(contenders[i](per_round)?);
        }
    }
    Ok(out)
}

/// `n` samples of `f`, each the mean time of `inner` consecutive calls, in nanoseconds
/// per call.
pub fn sample(n: usize, inner: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    let inner = inner.max(1);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        for _ in 0..inner {
            f()?;
        }
        out.push(t.elapsed().as_nanos() as f64 / inner as f64);
    }
    Ok(out)
}

/// A time in nanoseconds for a table: in µs below 1 ms, else in ms, with 3 significant
/// digits.
pub fn human(ns: f64) -> String {
    let (v, unit) = if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.median, s.samples), (3.0, 5));
        assert!((s.p10 - 1.4).abs() < 1e-12 && (s.p90 - 4.6).abs() < 1e-12);
        assert_eq!(Summary::of(&[7.0]).unwrap().p90, 7.0);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn rounds_alternate_the_order() {
        let order = std::cell::RefCell::new(Vec::new());
        let mut a = |n: usize| {
            order.borrow_mut().push('a');
            Ok(vec![1.0; n])
        };
        let mut b = |n: usize| {
            order.borrow_mut().push('b');
            Ok(vec![2.0; n])
        };
        let out = interleave(3, 2, &mut [&mut a, &mut b]).unwrap();
        assert_eq!(order.into_inner(), ['a', 'b', 'b', 'a', 'a', 'b']);
        assert_eq!(out, [vec![1.0; 6], vec![2.0; 6]]);
    }

    #[test]
    fn times_read_in_their_unit() {
        assert_eq!(human(1_234.0), "1.23 µs");
        assert_eq!(human(18_100_000.0), "18.1 ms");
        assert_eq!(human(415_000.0), "415 µs");
    }
}
