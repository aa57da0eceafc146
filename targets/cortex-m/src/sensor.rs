//! The sensor front end, simulated: 64-value feature vectors (the embedding a backbone
//! or a DSP stage would deliver) for 10 classes, computed on the fly from fixed seeds so
//! that they cost neither flash nor RAM. Each class has a prototype direction; a sample
//! is its class prototype, weak compared with per-sample noise, plus an offset that all
//! classes share, all times a random gain (distance to the sensor). Classes overlap:
//! after 300 labels the head gets about nine in ten held-out samples right, not all.

use edgetune_core::rng::Rng;

/// Values per feature vector.
pub const DIM: usize = 64;
/// Classes.
pub const CLASSES: usize = 10;

/// Prototype amplitude relative to the noise (standard deviation 1).
const SEPARATION: f32 = 0.5;
/// Amplitude of the offset every class shares.
const OFFSET: f32 = 1.0;
const PROTOTYPES: u64 = 0x5EED_0001;
const SHARED: u64 = 0x5EED_0002;

/// A stream of labeled samples: sample `i` is always the same.
#[derive(Clone, Copy)]
pub struct Stream {
    seed: u64,
}

impl Stream {
    /// The stream of `seed`.
    pub const fn new(seed: u64) -> Self {
        Stream { seed }
    }

    /// Sample `i` into `x`; returns its label.
    pub fn sample(&self, i: u32, x: &mut [f32; DIM]) -> usize {
        let mut rng = Rng::new(mix(self.seed, u64::from(i)));
        let label = rng.below(CLASSES);
        let gain = rng.uniform(0.7, 1.3);
        for (j, v) in x.iter_mut().enumerate() {
            let signal = SEPARATION * value(PROTOTYPES, label * DIM + j);
            let shared = OFFSET * value(SHARED, j);
            *v = gain * (signal + shared + normal(&mut rng));
        }
        label
    }
}

/// A well-mixed generator seed for item `i` of the stream `seed`.
fn mix(seed: u64, i: u64) -> u64 {
    Rng::new(seed ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// Fixed value `i` of the table `table`: standard normal.
fn value(table: u64, i: usize) -> f32 {
    normal(&mut Rng::new(mix(table, i as u64)))
}

/// Approximately standard normal: a sum of four uniforms, scaled to variance 1.
fn normal(rng: &mut Rng) -> f32 {
    let s: f32 = (0..4).map(|_| rng.uniform(-1.0, 1.0)).sum();
    s * 0.866_025_4
}
