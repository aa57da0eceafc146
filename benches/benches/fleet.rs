//! What being in a fleet costs a device per label, at the MobileNet embedding size
//! (D = 1,280, 10 classes learned, room for 16), with the closed-form learner:
//!
//! - `fleet/label/1280`: `Engine::observe` then `Engine::label` of that sample, the
//!   device's whole learning path (its statistics, the head written from them, the
//!   guard). A device keeps the whole and, after a merge, the others' part; its own
//!   labels are derived (whole − bundle − others) when the fleet asks, so a label costs
//!   what it costs outside a fleet. Before state format 4 each label also updated a
//!   second learner of the own labels (a rank-one update of its inverse): compare this
//!   number across the two commits.
//! - `fleet/own/1280`: deriving the own labels' statistics for `export` (two
//!   subtractions over the `D × D` scatter), paid once a round instead of per label.
//! - `fleet/merge/1280`: `Engine::merge_fleet` of the others' statistics (10 classes,
//!   5 of them only theirs) into a device with 50 own samples in its replay buffer:
//!   the sum, the own-class bias (each own sample held out: one pass over `Λ` each),
//!   the head written and the guard, paid once a round; `fleet/merge-unbiased/1280`
//!   the same with `--fleet-own-budget 0` (no bias, nothing held out).
//!
//!     cargo bench -p benches --bench fleet

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use edgetune::head::{Dims, Head};
use edgetune::rng::Rng;
use edgetune::stats::Stats;
use edgetune_device::engine::{Engine, EngineConfig};

const DIM: usize = 1280;
const CLASSES: usize = 10;

fn embedding(rng: &mut Rng, class: usize, x: &mut [f32]) {
    for (i, v) in x.iter_mut().enumerate() {
        *v = rng.uniform(0.0, 0.2) + if i % CLASSES == class { 1.0 } else { 0.0 };
    }
}

fn fleet(c: &mut Criterion) {
    let mut head = Head::alloc(Dims::linear(DIM, 16), 0).unwrap();
    head.init(1);
    // The bundle's embedding statistics, of unlabeled samples: every engine learns in
    // their units, and a fresh engine's statistics are the bundle's part.
    let mut rng = Rng::new(2);
    let mut x = vec![0.0; DIM];
    let mut unlabeled = Vec::new();
    for k in 0..200 {
        embedding(&mut rng, k % CLASSES, &mut x);
        unlabeled.extend_from_slice(&x);
    }
    let stats = Stats::estimate(&unlabeled, DIM, None).unwrap();
    let engine_with = |cfg: EngineConfig| {
        let mut e = Engine::new(head.clone(), cfg).unwrap();
        e.set_stats(&stats).unwrap();
        e
    };
    let engine_of = || engine_with(EngineConfig::DEFAULT);
    let learn = |e: &mut Engine, x: &[f32], c: usize| {
        let s = e.observe(x).unwrap().sample;
        e.label(Some(s), c.min(e.classes())).unwrap();
    };
    let base = engine_of().slda().unwrap().state().to_vec();
    let mut engine = engine_of();
    for k in 0..100 {
        embedding(&mut rng, k % CLASSES, &mut x);
        learn(&mut engine, &x, k % CLASSES);
    }
    // A device with 50 labels of classes 0-4, and the others' 100 of all ten.
    let (mut own, mut others) = (engine_of(), engine_of());
    let mut unbiased = engine_with(EngineConfig {
        fleet_own_budget: 0.0,
        ..EngineConfig::DEFAULT
    });
    for k in 0..100 {
        let c = if k < 50 { k % 5 } else { 5 + k % 5 };
        embedding(&mut rng, c, &mut x);
        learn(&mut others, &x, c);
        if k < 50 {
            learn(&mut own, &x, c);
            learn(&mut unbiased, &x, c);
        }
    }
    let theirs = others.fleet_own(&base).unwrap().unwrap();
    let mut g = c.benchmark_group("fleet");
    g.sample_size(20);
    g.bench_function(format!("merge/{DIM}"), |b| {
        b.iter(|| black_box(own.merge_fleet(&theirs).unwrap()))
    });
    g.bench_function(format!("merge-unbiased/{DIM}"), |b| {
        b.iter(|| black_box(unbiased.merge_fleet(&theirs).unwrap()))
    });
    let mut k = 0;
    g.bench_function(format!("label/{DIM}"), |b| {
        b.iter(|| {
            k += 1;
            embedding(&mut rng, k % CLASSES, &mut x);
            let s = engine.observe(&x).unwrap().sample;
            black_box(engine.label(Some(s), k % CLASSES).unwrap())
        })
    });
    g.bench_function(format!("own/{DIM}"), |b| {
        b.iter(|| black_box(engine.fleet_own(&base).unwrap()))
    });
}

criterion_group!(benches, fleet);
criterion_main!(benches);
