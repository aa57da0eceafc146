//! Learning behaviour: convergence against a reference multinomial logistic regression,
//! determinism, optimizers, schedules, clipping and validation.

use edgetune_core::learn::{Decay, Schedule};
use edgetune_core::rng::Rng;
use edgetune_core::{Config, Dims, Error, Head, Learner, Loss, Optimizer};

struct Data {
    x: Vec<Vec<f32>>,
    y: Vec<usize>,
}

/// Gaussian clusters around random centres; `flip` is the fraction of labels replaced by
/// a random class (noise no classifier can learn).
fn clusters(seed: u64, d: usize, c: usize, n: usize, spread: f32, flip: f32) -> (Data, Data) {
    let mut rng = Rng::new(seed);
    let centres: Vec<Vec<f32>> = (0..c)
        .map(|_| (0..d).map(|_| rng.uniform(-2.0, 2.0)).collect())
        .collect();
    let gauss = move |rng: &mut Rng| {
        // Box-Muller
        let (u, v) = (rng.unit().max(1e-7), rng.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
    };
    let make = |n: usize, rng: &mut Rng| {
        let mut data = Data {
            x: vec![],
            y: vec![],
        };
        for i in 0..n {
            let k = i % c;
            data.x
                .push(centres[k].iter().map(|m| m + spread * gauss(rng)).collect());
            data.y
                .push(if rng.unit() < flip { rng.below(c) } else { k });
        }
        data
    };
    let train = make(n, &mut rng);
    let test = make(4 * n, &mut rng);
    (train, test)
}

/// Reference: multinomial logistic regression with L2 penalty `lambda` on the weights,
/// trained in f64 by full-batch gradient descent with Nesterov momentum until the
/// gradient norm is below 1e-7. Returns (W [c][d], b [c]).
fn reference_logreg(data: &Data, c: usize, lambda: f64) -> (Vec<Vec<f64>>, Vec<f64>) {
    let d = data.x[0].len();
    let n = data.x.len() as f64;
    let (mut w, mut b) = (vec![vec![0.0f64; d]; c], vec![0.0f64; c]);
    let (mut vw, mut vb) = (vec![vec![0.0f64; d]; c], vec![0.0f64; c]);
    let (lr, mom) = (0.1, 0.9);
    for _iter in 0..20_000 {
        // Gradient at the look-ahead point.
        let la_w: Vec<Vec<f64>> = (0..c)
            .map(|k| (0..d).map(|j| w[k][j] + mom * vw[k][j]).collect())
            .collect();
        let la_b: Vec<f64> = (0..c).map(|k| b[k] + mom * vb[k]).collect();
        let (mut gw, mut gb) = (vec![vec![0.0f64; d]; c], vec![0.0f64; c]);
        for (x, &y) in data.x.iter().zip(&data.y) {
            let z: Vec<f64> = (0..c)
                .map(|k| la_b[k] + (0..d).map(|j| la_w[k][j] * x[j] as f64).sum::<f64>())
                .collect();
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
            for k in 0..c {
                let g = (z[k] - m).exp() / s - if k == y { 1.0 } else { 0.0 };
                gb[k] += g / n;
                for j in 0..d {
                    gw[k][j] += g * x[j] as f64 / n;
                }
            }
        }
        let mut norm = 0.0;
        for k in 0..c {
            for j in 0..d {
                gw[k][j] += lambda * la_w[k][j];
                norm += gw[k][j] * gw[k][j];
            }
            norm += gb[k] * gb[k];
        }
        for k in 0..c {
            for j in 0..d {
                vw[k][j] = mom * vw[k][j] - lr * gw[k][j];
                w[k][j] += vw[k][j];
            }
            vb[k] = mom * vb[k] - lr * gb[k];
            b[k] += vb[k];
        }
        if norm.sqrt() < 1e-7 {
            break;
        }
    }
    (w, b)
}

fn reference_accuracy(model: &(Vec<Vec<f64>>, Vec<f64>), data: &Data) -> f64 {
    let (w, b) = model;
    let hits = data
        .x
        .iter()
        .zip(&data.y)
        .filter(|(x, y)| {
            let z: Vec<f64> = (0..b.len())
                .map(|k| {
                    b[k] + w[k]
                        .iter()
                        .zip(x.iter())
                        .map(|(a, v)| a * *v as f64)
                        .sum::<f64>()
                })
                .collect();
            let best = (0..z.len()).fold(0, |bi, k| if z[k] > z[bi] { k } else { bi });
            best == **y
        })
        .count();
    hits as f64 / data.x.len() as f64
}

fn accuracy(head: &Head<Vec<f32>>, data: &Data) -> f64 {
    let mut probs = vec![0.0; head.classes()];
    let hits = data
        .x
        .iter()
        .zip(&data.y)
        .filter(|(x, y)| head.predict(x, &mut probs).unwrap().class == **y)
        .count();
    hits as f64 / data.x.len() as f64
}

fn train(
    dims: Dims,
    classes: usize,
    cfg: Config,
    data: &Data,
    epochs: usize,
    batch: usize,
) -> Head<Vec<f32>> {
    let mut head = Head::alloc(dims, classes).unwrap();
    let mut learner = Learner::alloc(dims, cfg).unwrap();
    let mut order: Vec<usize> = (0..data.x.len()).collect();
    let mut rng = Rng::new(7);
    for _ in 0..epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for chunk in order.chunks(batch) {
            learner
                .step_batch(
                    &mut head,
                    chunk.iter().map(|&i| (data.x[i].as_slice(), data.y[i])),
                )
                .unwrap();
        }
    }
    head
}

fn compare_with_reference(name: &str, spread: f32, flip: f32) {
    let (d, c, lambda) = (10, 4, 1e-3);
    let (train_set, test_set) = clusters(11, d, c, 800, spread, flip);
    let reference = reference_accuracy(&reference_logreg(&train_set, c, lambda), &test_set);
    let (epochs, batch) = (60, 16);
    let total = (epochs * train_set.x.len() / batch) as u32;
    let schedule = Schedule {
        warmup: 0,
        decay: Decay::Cosine {
            total,
            min_factor: 0.01,
        },
    };
    let cfg = Config {
        lr: 0.02,
        weight_decay: lambda as f32,
        schedule,
        ..Config::DEFAULT
    };
    let head = train(Dims::linear(d, c), c, cfg, &train_set, epochs, batch);
    let ours = accuracy(&head, &test_set);
    println!(
        "{name}: edgetune linear head {:.2}% vs reference logistic regression {:.2}%",
        ours * 100.0,
        reference * 100.0
    );
    assert!(
        ours >= reference - 0.01,
        "{name}: {ours} is more than 1 pp below the reference {reference}"
    );
}

#[test]
fn linear_head_matches_reference_on_separable_data() {
    compare_with_reference("separable", 0.5, 0.0);
}

#[test]
fn linear_head_matches_reference_on_noisy_data() {
    compare_with_reference("noisy", 1.6, 0.1);
}

#[test]
fn every_optimizer_and_loss_learns_an_mlp() {
    let (train_set, test_set) = clusters(3, 8, 3, 300, 0.8, 0.0);
    let dims = Dims::mlp(8, 16, 4);
    for optimizer in [
        Optimizer::SGD_MOMENTUM,
        Optimizer::Sgd {
            momentum: 0.9,
            nesterov: true,
        },
        Optimizer::ADAM,
        Optimizer::ADAMW,
    ] {
        for loss in [
            Loss::CrossEntropy {
                label_smoothing: 0.1,
            },
            Loss::Focal { gamma: 2.0 },
        ] {
            let lr = if matches!(optimizer, Optimizer::Sgd { .. }) {
                0.05
            } else {
                0.01
            };
            let cfg = Config {
                optimizer,
                loss,
                lr,
                weight_decay: 1e-4,
                dropout: 0.1,
                clip_norm: 5.0,
                ..Config::DEFAULT
            };
            let acc = accuracy(&train(dims, 3, cfg, &train_set, 20, 8), &test_set);
            assert!(acc > 0.9, "{optimizer:?} {loss:?}: accuracy {acc}");
        }
    }
}

#[test]
fn learning_is_bit_for_bit_deterministic() {
    let (train_set, _) = clusters(5, 6, 3, 200, 1.0, 0.05);
    let dims = Dims::mlp(6, 8, 3);
    let cfg = Config {
        dropout: 0.2,
        seed: 9,
        lr: 0.01,
        clip_norm: 1.0,
        ..Config::DEFAULT
    };
    let a = train(dims, 3, cfg, &train_set, 3, 4);
    let b = train(dims, 3, cfg, &train_set, 3, 4);
    let bits = |h: &Head<Vec<f32>>| h.params().iter().map(|w| w.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
    let c = train(dims, 3, Config { seed: 10, ..cfg }, &train_set, 3, 4);
    assert_ne!(bits(&a), bits(&c), "the dropout seed must matter");
}

#[test]
fn single_sample_steps_equal_batches_of_one() {
    let (data, _) = clusters(8, 5, 3, 30, 1.0, 0.0);
    let dims = Dims::linear(5, 3);
    let cfg = Config {
        optimizer: Optimizer::SGD_MOMENTUM,
        lr: 0.1,
        ..Config::DEFAULT
    };
    let len = Learner::<()>::state_len(dims, &cfg.optimizer);
    let (mut h1, mut h2) = (Head::alloc(dims, 3).unwrap(), Head::alloc(dims, 3).unwrap());
    let (mut l1, mut l2) = (
        Learner::new(dims, cfg, vec![0.0; len]).unwrap(),
        Learner::new(dims, cfg, vec![0.0; len]).unwrap(),
    );
    for (x, &y) in data.x.iter().zip(&data.y) {
        l1.step(&mut h1, x, y).unwrap();
        l2.step_batch(&mut h2, [(x.as_slice(), y)]).unwrap();
    }
    assert_eq!(h1.params(), h2.params());
    assert_eq!(l1.steps(), 30);
}

#[test]
fn schedules_warm_up_and_decay() {
    let s = Schedule {
        warmup: 4,
        decay: Decay::Cosine {
            total: 10,
            min_factor: 0.1,
        },
    };
    assert!((s.factor(0) - 0.2).abs() < 1e-6 && (s.factor(3) - 0.8).abs() < 1e-6);
    assert!((s.factor(4) - 1.0).abs() < 1e-6);
    assert!((s.factor(9) - 0.55).abs() < 1e-5);
    assert!((s.factor(14) - 0.1).abs() < 1e-6 && (s.factor(1000) - 0.1).abs() < 1e-6);
    let step = Schedule {
        warmup: 0,
        decay: Decay::Step {
            every: 3,
            gamma: 0.5,
        },
    };
    assert_eq!(
        [
            step.factor(0),
            step.factor(2),
            step.factor(3),
            step.factor(7)
        ],
        [1.0, 1.0, 0.5, 0.25]
    );
    let custom = Schedule {
        warmup: 0,
        decay: Decay::Custom(|t| 1.0 / (1.0 + t as f32)),
    };
    assert_eq!(custom.factor(3), 0.25);

    // The learner follows its schedule.
    let dims = Dims::linear(2, 2);
    let cfg = Config {
        schedule: s,
        lr: 1.0,
        ..Config::DEFAULT
    };
    let mut head = Head::alloc(dims, 2).unwrap();
    let mut l = Learner::alloc(dims, cfg).unwrap();
    assert!((l.lr() - 0.2).abs() < 1e-6);
    l.step(&mut head, &[1.0, 0.0], 0).unwrap();
    assert!((l.lr() - 0.4).abs() < 1e-6);
}

#[test]
fn clipping_bounds_the_first_sgd_step() {
    let dims = Dims::linear(3, 2);
    let cfg = Config {
        optimizer: Optimizer::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
        lr: 1.0,
        clip_norm: 0.01,
        ..Config::DEFAULT
    };
    let mut head = Head::alloc(dims, 2).unwrap();
    let mut l = Learner::alloc(dims, cfg).unwrap();
    l.step(&mut head, &[100.0, -50.0, 30.0], 1).unwrap();
    let moved: f32 = head.params().iter().map(|w| w * w).sum::<f32>().sqrt();
    assert!((moved - 0.01).abs() < 1e-5, "step of norm {moved}");
}

#[test]
fn bad_inputs_are_errors_and_change_nothing() {
    let dims = Dims::linear(3, 3);
    let mut head = Head::alloc(dims, 2).unwrap();
    let mut l = Learner::new(
        dims,
        Config::DEFAULT,
        vec![0.0; Learner::<()>::state_len(dims, &Optimizer::ADAM)],
    )
    .unwrap();
    l.step(&mut head, &[1.0, 2.0, 3.0], 0).unwrap();
    let before = head.params().to_vec();
    assert!(matches!(
        l.step(&mut head, &[1.0, 2.0], 0),
        Err(Error::Length { .. })
    ));
    assert!(matches!(
        l.step(&mut head, &[1.0, f32::INFINITY, 3.0], 0),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        l.step(&mut head, &[1.0, 2.0, 3.0], 2),
        Err(Error::UnknownClass {
            class: 2,
            classes: 2
        })
    ));
    let batch = [(&[1.0f32, 2.0, 3.0][..], 0usize), (&[1.0f32, 2.0][..], 1)];
    assert!(l.step_batch(&mut head, batch).is_err());
    assert_eq!(head.params(), &before[..]);
    assert!(
        l.grads().iter().all(|g| *g == 0.0),
        "a failed batch leaves no pending gradient"
    );
    assert_eq!(l.steps(), 1);

    for bad in [
        Config {
            lr: 0.0,
            ..Config::DEFAULT
        },
        Config {
            lr: f32::NAN,
            ..Config::DEFAULT
        },
        Config {
            dropout: 1.0,
            ..Config::DEFAULT
        },
        Config {
            loss: Loss::CrossEntropy {
                label_smoothing: -0.1,
            },
            ..Config::DEFAULT
        },
        Config {
            loss: Loss::Focal { gamma: -1.0 },
            ..Config::DEFAULT
        },
        Config {
            optimizer: Optimizer::Adam {
                beta1: 1.0,
                beta2: 0.999,
                eps: 1e-8,
            },
            ..Config::DEFAULT
        },
        Config {
            optimizer: Optimizer::Sgd {
                momentum: 1.5,
                nesterov: false,
            },
            ..Config::DEFAULT
        },
        Config {
            weight_decay: -1.0,
            ..Config::DEFAULT
        },
    ] {
        assert!(
            matches!(
                Learner::new(dims, bad, vec![0.0; 100]),
                Err(Error::Config { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        Learner::new(dims, Config::DEFAULT, vec![0.0; 3]),
        Err(Error::Capacity { .. })
    ));
    assert!(l.set_class_weights(&[1.0, -1.0]).is_err());
    assert!(
        l.set_config(Config {
            optimizer: Optimizer::SGD_MOMENTUM,
            ..Config::DEFAULT
        })
        .is_err()
    );
}

#[test]
fn merged_shards_step_like_one_batch() {
    let (data, _) = clusters(3, 6, 3, 40, 1.0, 0.0);
    let dims = Dims::mlp(6, 8, 4);
    let mut head = Head::alloc(dims, 3).unwrap();
    head.init(2);
    let cfg = Config {
        lr: 0.05,
        ..Config::DEFAULT
    };
    let (mut whole, mut a, mut b) = (
        Learner::alloc(dims, cfg).unwrap(),
        Learner::alloc(dims, cfg).unwrap(),
        Learner::alloc(dims, cfg).unwrap(),
    );
    for (i, (x, &y)) in data.x.iter().zip(&data.y).enumerate() {
        whole.accumulate(&head, x, y).unwrap();
        let shard = if i < data.x.len() / 2 { &mut a } else { &mut b };
        shard.accumulate(&head, x, y).unwrap();
    }
    a.merge(&mut b).unwrap();
    assert!(
        b.grads().iter().all(|g| *g == 0.0),
        "the merged learner is cleared"
    );
    for (g, w) in a.grads().iter().zip(whole.grads()) {
        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{g} vs {w}");
    }
    let mut other = head.clone();
    a.apply(&mut head).unwrap();
    whole.apply(&mut other).unwrap();
    for (p, q) in head.params().iter().zip(other.params()) {
        assert!((p - q).abs() < 1e-5, "{p} vs {q}");
    }
    let mut wrong = Learner::alloc(Dims::linear(6, 4), cfg).unwrap();
    assert!(a.merge(&mut wrong).is_err(), "dimensions must agree");
}
