//! The head on this machine, one thread: predict (logits, softmax, prediction) and one
//! learning step (forward, backward, optimizer update) for the shapes a device uses.
//!
//! Read `head/predict/linear 1280x10` against the 2 µs target and
//! `head/step/linear 1280x10 adam` against the 5 µs target of issue #2 (PyTorch takes
//! about 24 µs and 640 µs for the same on this machine). `batch32` is a 32-sample
//! mini-batch step: divide by 32 for the cost per sample.
//!
//!     cargo bench -p benches --bench head

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use edgetune::head::top_k;
use edgetune::{Config, Dims, Head, Learner, Optimizer};

fn input(d: usize, seed: f32) -> Vec<f32> {
    (0..d).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
}

fn setup(dims: Dims, optimizer: Optimizer) -> (Head<Vec<f32>>, Learner<Vec<f32>>) {
    let mut head = Head::alloc(dims, 10).unwrap();
    head.init(1);
    let cfg = Config {
        optimizer,
        ..Config::DEFAULT
    };
    let learner = Learner::alloc(dims, cfg).unwrap();
    (head, learner)
}

fn predict(c: &mut Criterion) {
    let mut g = c.benchmark_group("head/predict");
    for (name, dims) in [
        ("linear 1280x10", Dims::linear(1280, 10)),
        ("linear 512x10", Dims::linear(512, 10)),
        ("linear 64x10", Dims::linear(64, 10)),
        ("mlp 1280x128x10", Dims::mlp(1280, 128, 10)),
    ] {
        let (head, _) = setup(dims, Optimizer::ADAM);
        let x = input(dims.input, 0.0);
        let mut probs = vec![0.0f32; 10];
        g.bench_function(name, |b| {
            b.iter(|| {
                let p = head.predict(black_box(&x), &mut probs).unwrap();
                black_box((p, top_k::<3>(&probs)))
            })
        });
    }
    g.finish();
}

fn step(c: &mut Criterion) {
    let mut g = c.benchmark_group("head/step");
    for (name, dims, optimizer) in [
        (
            "linear 1280x10 adam",
            Dims::linear(1280, 10),
            Optimizer::ADAM,
        ),
        (
            "linear 1280x10 sgd-momentum",
            Dims::linear(1280, 10),
            Optimizer::SGD_MOMENTUM,
        ),
        (
            "linear 1280x10 adamw",
            Dims::linear(1280, 10),
            Optimizer::ADAMW,
        ),
        ("linear 64x10 adam", Dims::linear(64, 10), Optimizer::ADAM),
        (
            "mlp 1280x128x10 adam",
            Dims::mlp(1280, 128, 10),
            Optimizer::ADAM,
        ),
    ] {
        let (mut head, mut learner) = setup(dims, optimizer);
        let xs = [input(dims.input, 0.0), input(dims.input, 1.0)];
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                black_box(
                    learner
                        .step(&mut head, black_box(&xs[i & 1]), i % 10)
                        .unwrap(),
                )
            })
        });
    }
    let dims = Dims::linear(1280, 10);
    let (mut head, mut learner) = setup(dims, Optimizer::ADAM);
    let xs: Vec<Vec<f32>> = (0..32).map(|k| input(1280, k as f32)).collect();
    g.bench_function("linear 1280x10 adam batch32", |b| {
        b.iter(|| {
            learner
                .step_batch(
                    &mut head,
                    xs.iter().enumerate().map(|(k, x)| (x.as_slice(), k % 10)),
                )
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, predict, step);
criterion_main!(benches);
