//! Test images: smooth random RGB pictures, inputs for calibration and benchmarks.

use edgetune_core::rng::Rng;

/// `n` smooth random RGB images of `side`×`side`, raw pixels 0–255 in NCHW order
/// (colour gradients with noise rather than white noise, so a network's activations
/// look more like an image's): calibration and benchmark inputs for the test models.
pub fn images(n: usize, side: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let mut img = vec![0.0f32; 3 * side * side];
            for c in 0..3 {
                let (fx, fy, ph) = (rng.unit() * 6.0, rng.unit() * 6.0, rng.unit() * 6.3);
                let (base, amp) = (rng.unit() * 128.0 + 64.0, rng.unit() * 60.0);
                for y in 0..side {
                    for x in 0..side {
                        let u = (x as f32 * fx + y as f32 * fy) / side as f32;
                        let v = base + amp * (u + ph).sin() + (rng.unit() - 0.5) * 20.0;
                        img[(c * side + y) * side + x] = v.clamp(0.0, 255.0).floor();
                    }
                }
            }
            img
        })
        .collect()
}
