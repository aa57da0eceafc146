//! Small dense kernels shared by the head and its learning rules.
//!
//! Reductions use a fixed set of 16 independent accumulators, combined in a fixed order:
//! LLVM turns that into SIMD on every target (no float reassociation is needed), and the
//! result is bit-identical across targets because Rust never contracts `a * b + c` into
//! an FMA. `libm` instead of platform `expf`/`logf` keeps that true for transcendental
//! functions too.

const LANES: usize = 16;

/// Dot product of two equal-length slices (the shorter length is used).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ac, at) = a.split_at(n - n % LANES);
    let (bc, bt) = b.split_at(n - n % LANES);
    for (x, y) in ac.chunks_exact(LANES).zip(bc.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in at.iter().zip(bt).enumerate() {
        acc[i] += x * y;
    }
    sum_lanes(&acc)
}

#[inline]
fn sum_lanes(acc: &[f32; LANES]) -> f32 {
    // Pairwise, fixed order.
    let mut s8 = [0.0f32; 8];
    for i in 0..8 {
        s8[i] = acc[i] + acc[i + 8];
    }
    let s4 = [s8[0] + s8[4], s8[1] + s8[5], s8[2] + s8[6], s8[3] + s8[7]];
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

/// Sum of squares.
#[inline]
pub fn sq_norm(a: &[f32]) -> f32 {
    dot(a, a)
}

/// Euclidean norm.
#[inline]
pub fn norm(a: &[f32]) -> f32 {
    libm::sqrtf(sq_norm(a))
}

/// `y += alpha * x`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// `y = alpha * x`.
#[inline]
pub fn scaled_copy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = alpha * x;
    }
}

/// Index and value of the largest element (first one on ties, NaN never wins); `None`
/// for an empty or all-NaN slice.
pub fn argmax(v: &[f32]) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in v.iter().enumerate() {
        match best {
            _ if x.is_nan() => {}
            Some((_, b)) if x <= b => {}
            _ => best = Some((i, x)),
        }
    }
    best
}

/// log(sum(exp(v))), stable for any finite input.
pub fn log_sum_exp(v: &[f32]) -> f32 {
    let Some((_, m)) = argmax(v) else { return f32::NEG_INFINITY };
    let mut s = 0.0f32;
    for &x in v {
        s += libm::expf(x - m);
    }
    m + libm::logf(s)
}

/// In-place softmax; returns log(sum(exp(logits))) so callers can form log-probabilities
/// (`logit - lse`) without the underflow of `ln(p)`.
pub fn softmax_in_place(v: &mut [f32]) -> f32 {
    let Some((_, m)) = argmax(v) else { return f32::NEG_INFINITY };
    let mut s = 0.0f32;
    for x in v.iter_mut() {
        *x = libm::expf(*x - m);
        s += *x;
    }
    let inv = 1.0 / s;
    for x in v.iter_mut() {
        *x *= inv;
    }
    m + libm::logf(s)
}

/// True when every value is finite (no NaN, no infinity).
pub fn all_finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_for_all_tail_lengths() {
        for n in 0..70 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!((dot(&a, &b) as f64 - naive).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn softmax_is_stable_and_normalized() {
        let mut v = [1000.0, 999.0, -1000.0];
        let lse = softmax_in_place(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(v[2] == 0.0 && v[0] > v[1]);
        assert!((lse - (1000.0 + (1.0f32 + (-1.0f32).exp()).ln())).abs() < 1e-3);
        assert_eq!(log_sum_exp(&[1000.0, 999.0, -1000.0]), lse);
    }

    #[test]
    fn argmax_takes_first_of_ties_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some((1, 3.0)));
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[f32::NAN, 2.0]).map(|b| b.0), Some(1));
    }
}
