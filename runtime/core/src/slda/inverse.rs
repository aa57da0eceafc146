//! The exact inverse of the learner's symmetric positive definite matrix: Cholesky,
//! then `L⁻ᵀ L⁻¹`, with every inner loop a contiguous dot product summed in f64.

/// `Σ a_i b_i` in f64, over contiguous slices (four accumulators: vectorized).
fn dot64(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; 4];
    let (ac, at) = a.as_chunks::<4>();
    let (bc, bt) = b.as_chunks::<4>();
    for (x, y) in ac.iter().zip(bc) {
        for k in 0..4 {
            acc[k] += x[k] as f64 * y[k] as f64;
        }
    }
    let mut tail = 0f64;
    for (x, y) in at.iter().zip(bt) {
        tail += *x as f64 * *y as f64;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Inverts the symmetric positive definite `a` (`n × n`, row-major) in place, with
/// `diag` (`n` values) as scratch. Every inner loop is a dot product of two contiguous
/// rows, summed in f64:
///
/// 1. Cholesky `a = L Lᵀ` row by row: `L` in the strict lower triangle, its diagonal
///    in `diag`.
/// 2. `Y = L⁻¹` column by column (forward substitution of `L y = e_j`), column `j`
///    stored as row `j` of the upper triangle (its entries `j..n`).
/// 3. `a⁻¹[i][j] = Σ_k Y[k][i] Y[k][j]`, the dot product of rows `i` and `j` of the
///    upper triangle, written into the lower triangle (where `L` was), its diagonal
///    into `diag`; then mirrored.
///
/// A pivot that rounding made non-positive is raised to a tiny positive value.
pub(super) fn invert_spd(a: &mut [f32], diag: &mut [f32], n: usize) {
    for i in 0..n {
        for j in 0..i {
            let v = a[i * n + j] as f64 - dot64(&a[i * n..i * n + j], &a[j * n..j * n + j]);
            a[i * n + j] = (v / diag[j] as f64) as f32;
        }
        let d = a[i * n + i] as f64 - dot64(&a[i * n..i * n + i], &a[i * n..i * n + i]);
        diag[i] = if d > 1e-30 {
            libm::sqrt(d) as f32
        } else {
            1e-15
        };
    }
    for j in 0..n {
        a[j * n + j] = 1.0 / diag[j];
        for i in j + 1..n {
            // y_i = −(Σ_{k=j}^{i−1} L[i][k] y_k) / L[i][i]; y_k is a[j][k].
            let v = -dot64(&a[i * n + j..i * n + i], &a[j * n + j..j * n + i]);
            a[j * n + i] = (v / diag[i] as f64) as f32;
        }
    }
    for i in 0..n {
        for j in i..n {
            // Rows i and j of Y are nonzero from j on (j ≥ i).
            let v = dot64(&a[i * n + j..i * n + n], &a[j * n + j..j * n + n]);
            if i == j {
                diag[i] = v as f32;
            } else {
                a[j * n + i] = v as f32;
            }
        }
    }
    for i in 0..n {
        a[i * n + i] = diag[i];
        for j in i + 1..n {
            a[i * n + j] = a[j * n + i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn the_inverse_is_an_inverse() {
        let n = 7;
        let mut rng = Rng::new(9);
        let m: Vec<f32> = (0..n * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let mut a = vec![0.0f32; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| m[i * n + k] * m[j * n + k]).sum::<f32>()
                    + if i == j { 0.5 } else { 0.0 };
            }
        }
        let mut inv = a.clone();
        invert_spd(&mut inv, &mut vec![0.0; n], n);
        for i in 0..n {
            for j in 0..n {
                let v: f32 = (0..n).map(|k| a[i * n + k] * inv[k * n + j]).sum();
                assert!(
                    (v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-3,
                    "({i},{j}) {v}"
                );
            }
        }
    }
}
