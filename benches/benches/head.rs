//! The head on this machine, one thread: predict (logits, softmax, prediction) and one
//! learning step (forward, backward, optimizer update) for the shapes a device uses,
//! linear and MLP heads of several sizes, with SGD (plain and with momentum), Adam and
//! AdamW; then the no_std learning path a microcontroller runs: one label through
//! `Online::learn`, and the head with its optimizer state encoded for persistence.
//!
//! - `head/predict/<shape>`: `Head::predict` and `top_k::<3>`.
//! - `head/step/<shape> <optimizer>`: `Learner::step` on one sample (two inputs in turn,
//!   labels cycling over the 10 classes); `… batch32`: `Learner::step_batch` of a
//!   32-sample mini-batch (divide by 32 for the cost per sample). Every measured step is
//!   one of the first 100 from the same weights and a fresh optimizer (the returns to
//!   that start are not timed), because a step's cost depends on its state:
//!   `mlp 1280x128x10 adam after 2000 steps` shows the state this avoids, in which the
//!   Adam moments of hidden units that never fire have decayed into subnormal floats,
//!   several times slower on x86 (the count is printed).
//! - `head/online/learn linear 1280x16`: `Online::learn` of one label by a head with 10
//!   classes (room for 16) whose 256-sample replay buffer is full: class means, buffer,
//!   `OnlineConfig::DEFAULT`'s 2 Adam steps of the sample and 8 replayed ones (runs of
//!   at most 100 labels from the same state, as the steps).
//! - `head/persist/encode linear 1280x10 adam`: `persist::encode` of that head and its
//!   Adam state into a caller's buffer (CRC included; no heap), what a device writes to
//!   flash after learning. The Linux device program's learning and state writes (fsync
//!   included) are in the `serve` bench.
//!
//! Read `head/predict/linear 1280x10` against the 2 µs target and
//! `head/step/linear 1280x10 adam` against the 5 µs target of issue #2. PyTorch on the
//! same workloads, measured interleaved with edgetune: `cargo run --release -p benches
//! --bin compare`.
//!
//!     cargo bench -p benches --bench head

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use edgetune::buffer::SampleBuffer;
use edgetune::classes::ClassMeans;
use edgetune::head::top_k;
use edgetune::online::{Online, OnlineConfig};
use edgetune::rng::Rng;
use edgetune::{Config, Dims, Head, Learner, Optimizer, persist};

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
        ("mlp 512x64x10", Dims::mlp(512, 64, 10)),
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

const SGD: Optimizer = Optimizer::Sgd {
    momentum: 0.0,
    nesterov: false,
};

fn step(c: &mut Criterion) {
    let mut g = c.benchmark_group("head/step");
    let linear = Dims::linear(1280, 10);
    let mlp = Dims::mlp(1280, 128, 10);
    let small_mlp = Dims::mlp(512, 64, 10);
    for (name, dims, optimizer) in [
        ("linear 1280x10 adam", linear, Optimizer::ADAM),
        (
            "linear 1280x10 sgd-momentum",
            linear,
            Optimizer::SGD_MOMENTUM,
        ),
        ("linear 1280x10 adamw", linear, Optimizer::ADAMW),
        ("linear 1280x10 sgd", linear, SGD),
        ("linear 512x10 adam", Dims::linear(512, 10), Optimizer::ADAM),
        (
            "linear 512x10 sgd-momentum",
            Dims::linear(512, 10),
            Optimizer::SGD_MOMENTUM,
        ),
        ("linear 64x10 adam", Dims::linear(64, 10), Optimizer::ADAM),
        (
            "linear 64x10 sgd-momentum",
            Dims::linear(64, 10),
            Optimizer::SGD_MOMENTUM,
        ),
        ("mlp 1280x128x10 adam", mlp, Optimizer::ADAM),
        ("mlp 1280x128x10 sgd-momentum", mlp, Optimizer::SGD_MOMENTUM),
        ("mlp 512x64x10 adam", small_mlp, Optimizer::ADAM),
        (
            "mlp 512x64x10 sgd-momentum",
            small_mlp,
            Optimizer::SGD_MOMENTUM,
        ),
    ] {
        let (mut head, mut learner) = setup(dims, optimizer);
        let xs = [input(dims.input, 0.0), input(dims.input, 1.0)];
        g.bench_function(name, |b| {
            from_start(b, &mut head, &mut learner, |head, learner, i| {
                let i = i as usize;
                learner.step(head, black_box(&xs[i & 1]), i % 10).unwrap()
            })
        });
    }
    let xs: Vec<Vec<f32>> = (0..32).map(|k| input(1280, k as f32)).collect();
    for (name, dims) in [
        ("linear 1280x10 adam batch32", linear),
        ("mlp 1280x128x10 adam batch32", mlp),
    ] {
        let (mut head, mut learner) = setup(dims, Optimizer::ADAM);
        g.bench_function(name, |b| {
            from_start(b, &mut head, &mut learner, |head, learner, _| {
                let batch = xs.iter().enumerate().map(|(k, x)| (x.as_slice(), k % 10));
                learner.step_batch(head, batch).unwrap()
            })
        });
    }
    // The state `from_start` avoids: 2,000 steps on, the MLP's Adam moments of hidden
    // units that never fire have decayed into subnormal floats (and stay there).
    let (mut head, mut learner) = setup(mlp, Optimizer::ADAM);
    let xs = [input(1280, 0.0), input(1280, 1.0)];
    for i in 0..2000 {
        learner.step(&mut head, &xs[i & 1], i % 10).unwrap();
    }
    let subnormal = learner
        .opt_state()
        .iter()
        .filter(|v| v.is_subnormal())
        .count();
    eprintln!("mlp 1280x128x10 adam after 2000 steps: {subnormal} subnormal optimizer values");
    let mut i = 0usize;
    g.bench_function("mlp 1280x128x10 adam after 2000 steps", |b| {
        b.iter(|| {
            i += 1;
            black_box(
                learner
                    .step(&mut head, black_box(&xs[i & 1]), i % 10)
                    .unwrap(),
            )
        })
    });
    g.finish();
}

/// Steps between two (untimed) returns to the starting weights and a fresh optimizer.
const RESTART: u64 = 100;

/// Times `iters` calls of `step(head, learner, i)` in runs of at most [`RESTART`] from
/// the head's and learner's state at entry: a step's cost depends on its state (Adam
/// moments and gradients that decay into subnormal floats are several times slower on
/// x86; see `mlp 1280x128x10 adam after 2000 steps`), so every measured step is one of
/// the first 100 from the same start, whatever number of iterations criterion asks for.
fn from_start(
    b: &mut criterion::Bencher,
    head: &mut Head<Vec<f32>>,
    learner: &mut Learner<Vec<f32>>,
    mut step: impl FnMut(&mut Head<Vec<f32>>, &mut Learner<Vec<f32>>, u64) -> f32,
) {
    let start = (head.clone(), learner.clone());
    b.iter_custom(|iters| {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            head.copy_from(&start.0).unwrap();
            learner.copy_from(&start.1).unwrap();
            let n = (iters - done).min(RESTART);
            let t = Instant::now();
            for i in 0..n {
                black_box(step(head, learner, i));
            }
            total += t.elapsed();
            done += n;
        }
        total
    });
}

/// An embedding-like sample of `class` (one bump every 10 values, noise).
fn sample(rng: &mut Rng, class: usize, x: &mut [f32]) {
    for (i, v) in x.iter_mut().enumerate() {
        *v = rng.uniform(0.0, 0.2) + if i % 10 == class { 1.0 } else { 0.0 };
    }
}

fn online(c: &mut Criterion) {
    const D: usize = 1280;
    const N: usize = 256;
    let dims = Dims::linear(D, 16);
    let mut head = Head::alloc(dims, 0).unwrap();
    head.init(1);
    let learner = Learner::alloc(dims, Config::DEFAULT).unwrap();
    let buffer =
        SampleBuffer::<Vec<f32>, N>::new(D, vec![0.0; SampleBuffer::<(), N>::storage_len(D)])
            .unwrap();
    let means = ClassMeans::new(D, 16, vec![0.0; ClassMeans::<()>::storage_len(D, 16)]).unwrap();
    let mut online = Online::new(head, learner, buffer, means, OnlineConfig::DEFAULT).unwrap();
    let mut rng = Rng::new(2);
    let mut x = vec![0.0; D];
    // 10 classes, the buffer full.
    for k in 0..400 {
        let class = k % 10;
        sample(&mut rng, class, &mut x);
        online
            .learn(&x, class.min(online.head().classes()))
            .unwrap();
    }
    let xs: Vec<Vec<f32>> = (0..10)
        .map(|class| {
            sample(&mut rng, class, &mut x);
            x.clone()
        })
        .collect();
    let mut g = c.benchmark_group("head/online");
    // As `from_start`: runs of at most 100 labels from the same state.
    let start = online.clone();
    g.bench_function("learn linear 1280x16", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                online.copy_from(&start).unwrap();
                let n = (iters - done).min(RESTART);
                let t = Instant::now();
                for k in 0..n as usize {
                    black_box(online.learn(black_box(&xs[k % 10]), k % 10).unwrap());
                }
                total += t.elapsed();
                done += n;
            }
            total
        })
    });
    g.finish();

    let (mut head, mut learner) = setup(Dims::linear(1280, 10), Optimizer::ADAM);
    let x = input(1280, 0.0);
    learner.step(&mut head, &x, 3).unwrap();
    let mut out = vec![0u8; persist::encoded_len(&head, Some(&learner))];
    let mut g = c.benchmark_group("head/persist");
    g.bench_function("encode linear 1280x10 adam", |b| {
        b.iter(|| black_box(persist::encode(&head, Some(&learner), &mut out).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, predict, step, online);
criterion_main!(benches);
