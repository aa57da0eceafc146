//! After construction, predicting and learning never touch the heap: a counting global
//! allocator sees zero allocations on this thread during predict, single-sample steps,
//! mini-batch steps and class additions, for both head kinds and every optimizer.

mod common;

use common::allocations;

use edgetune_core::buffer::SampleBuffer;
use edgetune_core::classes::ClassMeans;
use edgetune_core::head::top_k;
use edgetune_core::online::{Online, OnlineConfig};
use edgetune_core::{Config, Dims, Head, Learner, Loss, Optimizer};

#[test]
fn predict_and_learn_do_not_allocate() {
    // The counter must see an allocation when there is one.
    assert_eq!(
        allocations(|| drop(std::hint::black_box(vec![1u8; 10]))).1,
        1
    );

    for dims in [Dims::linear(1280, 12), Dims::mlp(64, 32, 12)] {
        for optimizer in [
            Optimizer::Sgd {
                momentum: 0.9,
                nesterov: true,
            },
            Optimizer::ADAM,
            Optimizer::ADAMW,
        ] {
            let loss = Loss::Focal { gamma: 2.0 };
            let cfg = Config {
                optimizer,
                loss,
                clip_norm: 1.0,
                dropout: 0.1,
                weight_decay: 1e-4,
                ..Config::DEFAULT
            };
            let mut head = Head::alloc(dims, 10).unwrap();
            let mut learner = Learner::alloc(dims, cfg).unwrap();
            let x: Vec<f32> = (0..dims.input).map(|i| (i as f32 * 0.1).sin()).collect();
            let x2: Vec<f32> = x.iter().map(|v| -v).collect();
            let mut probs = vec![0.0; dims.capacity];
            let mean = vec![0.5f32; dims.input];
            let ((), n) = allocations(|| {
                for i in 0..5 {
                    let p = head.predict(&x, &mut probs).unwrap();
                    std::hint::black_box(top_k::<3>(&probs[..head.classes()]));
                    learner.step(&mut head, &x, (p.class + i) % 10).unwrap();
                    learner
                        .step_batch(&mut head, [(x.as_slice(), 1), (x2.as_slice(), 2)])
                        .unwrap();
                }
                let c = head.add_class().unwrap();
                head.imprint(c, &mean, None).unwrap();
                learner.step(&mut head, &x, c).unwrap();
                let _ = learner.step(&mut head, &x, 99); // an error path allocates nothing either
            });
            assert_eq!(n, 0, "{dims:?} {optimizer:?}: {n} heap allocations");
        }
    }
}

#[test]
fn online_learning_does_not_allocate() {
    let dims = Dims::linear(64, 10);
    let head = Head::alloc(dims, 0).unwrap();
    let learner = Learner::new(
        dims,
        Config::DEFAULT,
        vec![0.0; Learner::<()>::state_len(dims, &Optimizer::ADAM)],
    )
    .unwrap();
    let buffer = SampleBuffer::<_, 32>::new(64, vec![0.0; 32 * 64]).unwrap();
    let means = ClassMeans::new(64, 10, vec![0.0; ClassMeans::<()>::storage_len(64, 10)]).unwrap();
    let mut online = Online::new(head, learner, buffer, means, OnlineConfig::DEFAULT).unwrap();
    let xs: Vec<Vec<f32>> = (0..10)
        .map(|c| {
            (0..64)
                .map(|i| ((i * (c + 1)) as f32 * 0.1).sin())
                .collect()
        })
        .collect();
    let mut probs = [0.0f32; 10];
    let ((), n) = allocations(|| {
        for round in 0..5 {
            for (c, x) in xs.iter().enumerate() {
                let _ = online.predict(x, &mut probs);
                online.learn(x, c).unwrap(); // round 0 adds each class
                std::hint::black_box((round, online.novelty(x)));
            }
        }
        let _ = online.learn(&xs[0], 11); // an error allocates nothing either
    });
    assert_eq!(online.head().classes(), 10);
    assert_eq!(n, 0, "{n} heap allocations in online learning");
}
