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
//!
//!     cargo bench -p benches --bench fleet

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use edgetune::head::{Dims, Head};
use edgetune::rng::Rng;
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
    let mut engine = Engine::new(head.clone(), EngineConfig::DEFAULT).unwrap();
    let base = Engine::new(head, EngineConfig::DEFAULT).unwrap();
    let base = base.slda().unwrap().state().to_vec();
    let mut rng = Rng::new(2);
    let mut x = vec![0.0; DIM];
    for k in 0..100 {
        let c = k % CLASSES;
        embedding(&mut rng, c, &mut x);
        let s = engine.observe(&x).unwrap().sample;
        engine.label(Some(s), c.min(engine.classes())).unwrap();
    }
    let mut g = c.benchmark_group("fleet");
    g.sample_size(20);
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
