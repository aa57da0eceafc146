//! The learning core's promise: no heap allocation per prediction and label after
//! warm-up, with either learner.

use edgetune::rng::Rng;
use edgetune::{Dims, Head};
use edgetune_device::engine::{Engine, EngineConfig, LearnerKind};

use crate::common;

#[test]
fn predicting_and_learning_allocate_nothing_after_warm_up() {
    // MobileNet-shaped for the gradient head: a 1280-value embedding, 10 classes of
    // room. The closed-form learner at 192 values, above slda::EXACT_DIM (rank-one
    // updates): its exact inverses at 1, 2, 4, … labels cost dim³, minutes under qemu
    // at 1280 (its time at 1280 is the serve bench's).
    for (learner, dim) in [(LearnerKind::Slda, 192), (LearnerKind::Gradient, 1280)] {
        let mut head = Head::alloc(Dims::linear(dim, 10), 0).unwrap();
        head.init(1);
        let cfg = EngineConfig {
            learner,
            ..EngineConfig::DEFAULT
        };
        let mut engine = Engine::new(head, cfg).unwrap();
        let mut rng = Rng::new(7);
        let mut x = vec![0.0f32; dim];
        let mut step = |engine: &mut Engine, rng: &mut Rng, class: usize| {
            for (i, v) in x.iter_mut().enumerate() {
                *v = rng.uniform(-0.1, 0.1) + if i % 10 == class { 1.0 } else { 0.0 };
            }
            let obs = engine.observe(&x).unwrap();
            let label = class.min(engine.classes());
            engine.label(Some(obs.sample), label).unwrap();
        };
        for k in 0..300 {
            step(&mut engine, &mut rng, k % 5);
        }
        let ((), n) = common::allocations(|| {
            for k in 0..50 {
                step(&mut engine, &mut rng, k % 5);
            }
        });
        assert_eq!(
            n, 0,
            "{learner:?}: {n} heap allocations in 50 predictions and labels"
        );
        assert_eq!(engine.learner_kind(), learner);
        assert_eq!(engine.counters().updates, 350);
        // The closed-form learner's prequential accuracy on these separable classes is
        // high (the gradient head's is about 40 %).
        if learner == LearnerKind::Slda {
            let (right, of) = engine.prequential();
            assert!(right as f32 > 0.9 * of as f32, "{right} of {of}");
        }
    }
}
