//! The device's closed-form learner (`edgetune::slda`, what `edgetune serve` learns
//! with by default) at MobileNet's embedding size, one thread.
//!
//! - `slda/learn+write 1280x10`: one label of one of 10 classes with the bundle's
//!   covariance as prior (the Sherman–Morrison path above `slda::EXACT_DIM`: the
//!   Welford update of the class mean and the pooled scatter, the rank-one update of
//!   the inverse) and the head written from it (`Slda::write_head`, one pass over the
//!   inverse). This is the learning cost of one label on the device; read it against
//!   issue 13's 1 ms target. Every `slda::REFRESH_EVERY` labels an exact recomputation
//!   (`slda/refresh`) replaces the rank-one update.
//! - `slda/refresh 1280`: the exact inverse (Cholesky in f64), at start-up, after a
//!   restore or merge, and every `REFRESH_EVERY` labels.
//! - `slda/learn+write 64x10`: the digits CNN's size, exact inverse at every label.
//!
//!     cargo bench -p benches --bench slda

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use edgetune::rng::Rng;
use edgetune::slda::Slda;
use edgetune::{Dims, Head};

fn learner(d: usize, classes: usize, rng: &mut Rng) -> (Slda<Vec<f32>>, Vec<Vec<f32>>) {
    let mut l = Slda::alloc(d, 16, 16.0).unwrap();
    let mut cov = vec![0.0f32; d * d];
    for i in 0..d {
        cov[i * d + i] = 1.0;
        if i + 1 < d {
            cov[i * d + i + 1] = 0.3;
            cov[(i + 1) * d + i] = 0.3;
        }
    }
    l.set_standardization(&vec![0.5; d], &vec![2.0; d]).unwrap();
    l.set_prior(&cov, 16.0).unwrap();
    let xs: Vec<Vec<f32>> = (0..64)
        .map(|k| {
            (0..d)
                .map(|i| rng.uniform(0.0, 1.0) + if i % classes == k % classes { 1.0 } else { 0.0 })
                .collect()
        })
        .collect();
    for (k, x) in xs.iter().enumerate().take(2 * classes) {
        l.learn(x, (k % classes).min(l.classes())).unwrap();
    }
    (l, xs)
}

fn learn(c: &mut Criterion) {
    let mut g = c.benchmark_group("slda");
    g.warm_up_time(Duration::from_secs(1));
    for d in [64usize, 1280] {
        let mut rng = Rng::new(1);
        let (mut l, xs) = learner(d, 10, &mut rng);
        let mut head = Head::alloc(Dims::linear(d, 16), 10).unwrap();
        let mut k = 0usize;
        g.bench_function(format!("learn+write {d}x10"), |b| {
            b.iter(|| {
                k += 1;
                l.learn(black_box(&xs[k % xs.len()]), k % 10).unwrap();
                l.write_head(&mut head, 1.0).unwrap();
            })
        });
    }
    let mut rng = Rng::new(2);
    let (mut l, _) = learner(1280, 10, &mut rng);
    g.sample_size(10);
    g.bench_function("refresh 1280", |b| b.iter(|| l.refresh()));
    g.finish();
}

criterion_group!(benches, learn);
criterion_main!(benches);
