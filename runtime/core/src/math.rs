//! Small dense kernels shared by the head and its learning rules.
//!
//! Reductions use a fixed set of 16 independent accumulators, combined in a fixed order:
//! LLVM turns that into SIMD on every target (no float reassociation is needed; checked
//! in the x86-64 assembly: four 4-wide `mulps`/`addps` chains), and the result is
//! bit-identical across targets because Rust never contracts `a * b + c` into an FMA. `libm` instead of platform `expf`/`logf` keeps that true for transcendental
//! functions too.

const LANES: usize = 16;

/// Defines `pub fn $name` whose body is compiled twice on x86-64 std builds, once for the
/// baseline (SSE2) and once for AVX2, and picks at run time; elsewhere it is the body as
/// is. Safe for determinism: Rust never fuses `a * b + c` into an FMA, and IEEE add, mul,
/// div and sqrt are correctly rounded at any vector width, so both versions give the same
/// bits.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) $(-> $ret)? { imp($($arg),*) }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

/// The standard normal distribution's cumulative function `Φ(t)`.
pub fn normal_cdf(t: f32) -> f32 {
    0.5 * libm::erfcf(-t * core::f32::consts::FRAC_1_SQRT_2)
}

simd_dispatch! {
/// Dot product of two equal-length slices (the shorter length is used).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ac, at) = a.as_chunks::<LANES>();
    let (bc, bt) = b.as_chunks::<LANES>();
    for (x, y) in ac.iter().zip(bc) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in at.iter().zip(bt) {
        tail += x * y;
    }
    sum_lanes(&acc) + tail
}
}

#[inline]
fn sum_lanes(acc: &[f32; LANES]) -> f32 {
    // A plain left-to-right fold: a fixed order, and the one shape that LLVM's SLP
    // vectorizer keeps full-width in the loop above (pairwise folds made it pick 2-wide
    // vectors).
    let mut s = 0.0f32;
    for a in acc {
        s += a;
    }
    s
}

/// Sum of squares.
#[inline]
pub fn sq_norm(a: &[f32]) -> f32 {
    dot(a, a)
}

/// Euclidean norm.
#[inline]
pub fn norm(a: &[f32]) -> f32 {
    sqrt(sq_norm(a))
}

/// Square root. IEEE 754 square roots are correctly rounded on every target, so this is
/// the same number everywhere; with std it is the instruction LLVM can vectorize, without
/// it libm's (scalar inline assembly on x86 and aarch64).
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    #[cfg(any(test, feature = "std"))]
    return x.sqrt();
    #[cfg(not(any(test, feature = "std")))]
    return libm::sqrtf(x);
}

simd_dispatch! {
/// `y += alpha * x`.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
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
    let Some((_, m)) = argmax(v) else {
        return f32::NEG_INFINITY;
    };
    let mut s = 0.0f32;
    for &x in v {
        s += libm::expf(x - m);
    }
    m + libm::logf(s)
}

/// In-place softmax; returns log(sum(exp(logits))) so callers can form log-probabilities
/// (`logit - lse`) without the underflow of `ln(p)`.
pub fn softmax_in_place(v: &mut [f32]) -> f32 {
    softmax_entropy_in_place(v).0
}

/// In-place softmax; returns log(sum(exp(logits))) and the entropy of the result in nats,
/// computed from the logits (`lse - Σ p·z`) so it costs no logarithm per class.
pub fn softmax_entropy_in_place(v: &mut [f32]) -> (f32, f32) {
    let Some((_, m)) = argmax(v) else {
        return (f32::NEG_INFINITY, 0.0);
    };
    let (mut s, mut t) = (0.0f32, 0.0f32);
    for x in v.iter_mut() {
        let z = *x - m;
        *x = libm::expf(z);
        s += *x;
        t += *x * z;
    }
    let inv = 1.0 / s;
    for x in v.iter_mut() {
        *x *= inv;
    }
    let ln_s = libm::logf(s);
    (m + ln_s, (ln_s - t * inv).max(0.0))
}

simd_dispatch! {
/// True when every value is finite (no NaN, no infinity). Branch-free and vectorized:
/// the largest magnitude, compared as bits (an integer `max`, which LLVM may reorder
/// freely, so it runs at full vector width), is below the bits of infinity.
pub fn all_finite(v: &[f32]) -> bool {
    let mut m = 0u32;
    for x in v {
        m = m.max(x.to_bits() & 0x7fff_ffff);
    }
    m < 0x7f80_0000
}
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
    fn all_finite_finds_any_nan_or_infinity() {
        for n in [0usize, 1, 15, 16, 17, 100] {
            let mut v: Vec<f32> = (0..n).map(|i| i as f32 * 1e30 - 5e31).collect();
            assert!(all_finite(&v));
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for i in 0..n {
                    let keep = v[i];
                    v[i] = bad;
                    assert!(!all_finite(&v), "n {n} i {i} {bad}");
                    v[i] = keep;
                }
            }
        }
        assert!(all_finite(&[f32::MAX, -f32::MAX, f32::MIN_POSITIVE]));
    }

    #[test]
    fn entropy_from_logits_matches_definition() {
        let mut v = [0.3, -1.2, 2.0, 0.0];
        let (_, h) = softmax_entropy_in_place(&mut v);
        let direct: f32 = v.iter().map(|p| -p * p.ln()).sum();
        assert!((h - direct).abs() < 1e-6);
    }

    #[test]
    fn argmax_takes_first_of_ties_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), Some((1, 3.0)));
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[f32::NAN, 2.0]).map(|b| b.0), Some(1));
    }
}
