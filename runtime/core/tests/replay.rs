//! Replay prevents forgetting: a linear head learns classes A and B online, then sees a
//! stream of only class C. Learning from each C sample alone makes the head forget A and
//! B; replaying a few class-balanced samples from a [`SampleBuffer`] with each step keeps
//! them while C is learned. Run with `--nocapture` to see the accuracies.

use edgetune_core::buffer::{Pushed, SampleBuffer};
use edgetune_core::classes::ClassMeans;
use edgetune_core::online::{Online, OnlineConfig};
use edgetune_core::rng::Rng;
use edgetune_core::{Config, Dims, Head, Learner, Optimizer};

const D: usize = 16;
const DIMS: Dims = Dims::linear(D, 4);
const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
/// Replay buffer capacity: 50 samples per class once C is in.
const N: usize = 150;
/// Replayed samples per learning step.
const K: usize = 16;
/// Learning rates: phase 1 (learning from scratch), phase 2 (fine-tuning).
const LR1: f32 = 0.05;
const LR2: f32 = 0.02;
/// Training samples per class and phase; test samples per class.
const TRAIN: usize = 200;
const TEST: usize = 300;

/// Three Gaussian clusters with σ = 1 per dimension. Their centres are standard normal
/// per dimension around a common offset of 1 (embeddings after a ReLU backbone are not
/// centred either). With seed 7 the centres are 4.4σ to 5.0σ apart, so the clusters
/// overlap a little: a Bayes error of 0.6 % to 1.4 % per pair.
struct Clusters {
    centres: [[f32; D]; 3],
    rng: Rng,
}

impl Clusters {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut centres = [[0.0f32; D]; 3];
        for c in &mut centres {
            for v in c.iter_mut() {
                *v = 1.0 + gauss(&mut rng);
            }
        }
        Clusters { centres, rng }
    }

    fn sample(&mut self, class: usize) -> [f32; D] {
        let mut x = self.centres[class];
        for v in &mut x {
            *v += gauss(&mut self.rng);
        }
        x
    }

    fn set(&mut self, class: usize, n: usize) -> Vec<[f32; D]> {
        (0..n).map(|_| self.sample(class)).collect()
    }
}

/// Standard normal by Box-Muller.
fn gauss(rng: &mut Rng) -> f32 {
    let (u, v) = (rng.unit().max(1e-7), rng.unit());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
}

fn accuracy(head: &Head<Vec<f32>>, xs: &[[f32; D]], class: usize) -> f32 {
    let mut probs = [0.0f32; 4];
    let right = xs
        .iter()
        .filter(|x| head.predict(&x[..], &mut probs).unwrap().class == class)
        .count();
    right as f32 / xs.len() as f32
}

/// Accuracy on A and B together (equal test sets).
fn ab_accuracy(head: &Head<Vec<f32>>, test: &[Vec<[f32; D]>]) -> f32 {
    (accuracy(head, &test[A], A) + accuracy(head, &test[B], B)) / 2.0
}

#[derive(Debug, PartialEq)]
struct Outcome {
    phase1_epochs: usize,
    ab_before: f32,
    ood_c: f32,
    ood_ab: f32,
    ab_plain: f32,
    c_plain: f32,
    ab_replay: f32,
    c_replay: f32,
    evicted_ab: usize,
    counts: [usize; 3],
}

fn run() -> Outcome {
    let mut data = Clusters::new(7);
    let train: Vec<Vec<[f32; D]>> = (0..3).map(|k| data.set(k, TRAIN)).collect();
    let test: Vec<Vec<[f32; D]>> = (0..3).map(|k| data.set(k, TEST)).collect();

    let cfg = Config {
        lr: LR1,
        optimizer: Optimizer::ADAM,
        ..Config::DEFAULT
    };
    let mut head = Head::new(DIMS, 2, vec![0.0f32; DIMS.param_len()]).unwrap();
    let mut learner = Learner::new(
        DIMS,
        cfg,
        vec![0.0f32; Learner::<()>::state_len(DIMS, &cfg.optimizer)],
    )
    .unwrap();
    let mut buffer =
        SampleBuffer::<_, N>::new(D, vec![0.0f32; SampleBuffer::<(), N>::storage_len(D)]).unwrap();
    let mut means =
        ClassMeans::new(D, 4, vec![0.0f32; ClassMeans::<()>::storage_len(D, 4)]).unwrap();

    // Phase 1: A and B, one labeled sample at a time, interleaved. Every sample goes
    // into the buffer and the class means once; further passes (if needed) only learn.
    let mut epochs = 0;
    let mut ab_before = 0.0;
    while epochs < 5 && ab_before < 0.97 {
        for (a, b) in train[A].iter().zip(&train[B]) {
            for (k, x) in [(A, a), (B, b)] {
                learner.step(&mut head, x, k).unwrap();
                if epochs == 0 {
                    buffer.push(x, k).unwrap();
                    means.update(k, x).unwrap();
                }
            }
        }
        epochs += 1;
        ab_before = ab_accuracy(&head, &test);
    }
    assert_eq!(
        (buffer.count(A), buffer.count(B)),
        (N / 2, N / 2),
        "balanced after phase 1"
    );

    // The first C sample looks unlike A and B (out-of-distribution distance), then
    // becomes class C, imprinted from its mean.
    let first_c = &train[C][0];
    let ood_c = means.nearest(first_c).unwrap().1;
    let ood_ab = test[A]
        .iter()
        .chain(&test[B])
        .map(|x| means.nearest(x).unwrap().1)
        .sum::<f32>()
        / (2 * TEST) as f32;
    assert_eq!(head.add_class().unwrap(), C);
    means.update(C, first_c).unwrap();
    means.imprint(&mut head, C).unwrap();

    // Phase 2, from the same state (fine-tuning rate, same Adam state): a stream of C
    // samples only.
    learner.set_config(Config { lr: LR2, ..cfg }).unwrap();
    let (mut plain_head, mut plain_learner) = (head.clone(), learner.clone());
    for x in &train[C] {
        plain_learner.step(&mut plain_head, x, C).unwrap();
    }

    let mut replay_rng = Rng::new(7);
    let mut idx = [0usize; K];
    let mut evicted_ab = 0;
    for x in &train[C] {
        let n = buffer.sample_indices(&mut replay_rng, &mut idx);
        let replayed = idx[..n].iter().filter_map(|&i| buffer.get(i));
        learner
            .step_batch(&mut head, std::iter::once((&x[..], C)).chain(replayed))
            .unwrap();
        match buffer.push(x, C).unwrap() {
            Pushed::Evicted { label } if label != C => evicted_ab += 1,
            _ => {}
        }
    }

    Outcome {
        phase1_epochs: epochs,
        ab_before,
        ood_c,
        ood_ab,
        ab_plain: ab_accuracy(&plain_head, &test),
        c_plain: accuracy(&plain_head, &test[C], C),
        ab_replay: ab_accuracy(&head, &test),
        c_replay: accuracy(&head, &test[C], C),
        evicted_ab,
        counts: [buffer.count(A), buffer.count(B), buffer.count(C)],
    }
}

#[test]
fn replay_prevents_forgetting() {
    let start = std::time::Instant::now();
    let o = run();
    let pp = |a: f32| 100.0 * a;
    println!(
        "phase 1: A/B accuracy {:.1}% after {} pass(es)",
        pp(o.ab_before),
        o.phase1_epochs
    );
    println!(
        "OOD distance (1 - cos) to the A/B means: first C sample {:.3}, A/B test mean {:.3}",
        o.ood_c, o.ood_ab
    );
    println!(
        "phase 2 without replay: A/B {:.1}% (drop {:.1} pp), C {:.1}%",
        pp(o.ab_plain),
        pp(o.ab_before - o.ab_plain),
        pp(o.c_plain)
    );
    println!(
        "phase 2 with replay (N = {N}, k = {K}): A/B {:.1}% (drop {:.1} pp), C {:.1}%",
        pp(o.ab_replay),
        pp(o.ab_before - o.ab_replay),
        pp(o.c_replay)
    );
    println!(
        "buffer after phase 2: A/B/C = {:?}, {} A/B samples evicted",
        o.counts, o.evicted_ab
    );

    assert!(o.ab_before >= 0.95, "phase 1 learned A/B: {}", o.ab_before);
    assert!(
        o.ood_c > 2.0 * o.ood_ab,
        "C is out of distribution before it is learned"
    );
    let drop_replay = o.ab_before - o.ab_replay;
    let drop_plain = o.ab_before - o.ab_plain;
    assert!(
        drop_replay < 0.05,
        "with replay A/B fell by {} pp",
        pp(drop_replay)
    );
    assert!(
        drop_plain > 0.10,
        "without replay A/B fell by only {} pp",
        pp(drop_plain)
    );
    assert!(drop_plain > drop_replay);
    assert!(o.c_replay > 0.80, "C learned with replay: {}", o.c_replay);
    assert_eq!(o.counts, [N / 3; 3], "the buffer ends balanced");
    assert_eq!(
        o.evicted_ab,
        N / 3,
        "C took a third of the buffer from A and B"
    );

    // Deterministic: the same run gives the same numbers, bit for bit.
    assert_eq!(run(), o);
    println!("two runs in {:?}", start.elapsed());
}

/// A class known only by its mean (another device's, through a fleet) is rehearsed
/// with the spread of the device's own classes ([`Online::rehearse_spread`]): the head
/// learns the class's region, where rehearsing the mean as one point
/// ([`Online::rehearse`]) only keeps that point out of the device's own classes.
#[test]
fn a_class_known_by_its_mean_is_rehearsed_as_a_cloud() {
    let mut data = Clusters::new(7);
    let train: Vec<Vec<[f32; D]>> = (0..2).map(|k| data.set(k, 40)).collect();
    let test: Vec<Vec<[f32; D]>> = (0..3).map(|k| data.set(k, TEST)).collect();
    // The mean another device sends of its C samples.
    let c_train = data.set(C, TRAIN);
    let c_mean: Vec<f32> = (0..D)
        .map(|i| c_train.iter().map(|x| x[i]).sum::<f32>() / TRAIN as f32)
        .collect();
    let cfg = Config {
        lr: LR2,
        optimizer: Optimizer::ADAM,
        ..Config::DEFAULT
    };
    let mut online = Online::<_, 80>::new(
        Head::new(DIMS, 0, vec![0.0f32; DIMS.param_len()]).unwrap(),
        Learner::new(
            DIMS,
            cfg,
            vec![0.0f32; Learner::<()>::state_len(DIMS, &cfg.optimizer)],
        )
        .unwrap(),
        SampleBuffer::new(D, vec![0.0f32; SampleBuffer::<(), 80>::storage_len(D)]).unwrap(),
        ClassMeans::new(D, 4, vec![0.0f32; ClassMeans::<()>::storage_len(D, 4)]).unwrap(),
        OnlineConfig::DEFAULT,
    )
    .unwrap();
    for (a, b) in train[A].iter().zip(&train[B]) {
        online.learn(a, A).unwrap();
        online.learn(b, B).unwrap();
    }
    online.head_mut().add_class().unwrap();
    let extra = [(&c_mean[..], C)];
    let mut points = online.clone();
    points.rehearse(200, &extra).unwrap();
    let mut scratch = vec![0.0f32; D];
    let mut cloud = online.clone();
    cloud.rehearse_spread(200, &extra, 1, &mut scratch).unwrap();
    let (c_points, c_cloud) = (
        accuracy(points.head(), &test[C], C),
        accuracy(cloud.head(), &test[C], C),
    );
    let (ab_points, ab_cloud) = (
        ab_accuracy(points.head(), &test),
        ab_accuracy(cloud.head(), &test),
    );
    println!(
        "C known by its mean: C {:.1}% as a point, {:.1}% as a cloud; A/B {:.1}% / {:.1}%",
        100.0 * c_points,
        100.0 * c_cloud,
        100.0 * ab_points,
        100.0 * ab_cloud
    );
    assert!(c_cloud >= 0.9, "C as a cloud: {c_cloud}");
    assert!(c_cloud > c_points + 0.1, "{c_cloud} against {c_points}");
    assert!(ab_cloud >= 0.9, "A/B after the cloud: {ab_cloud}");

    // Too little scratch, or a mean of another length: an error, nothing changed.
    let before = cloud.clone();
    assert!(cloud.rehearse_spread(1, &extra, 1, &mut []).is_err());
    assert!(cloud.rehearse_spread(1, &extra, 0, &mut scratch).is_err());
    assert!(cloud.rehearse_spread(1, &extra, 2, &mut scratch).is_err());
    assert!(
        cloud
            .rehearse_spread(1, &[(&c_mean[1..], C)], 1, &mut scratch)
            .is_err()
    );
    assert_eq!(cloud.head().params(), before.head().params());
}

#[test]
fn sample_pair_draws_two_samples_of_one_class() {
    let mut b = SampleBuffer::<_, 8>::new(1, vec![0.0f32; 8]).unwrap();
    let mut rng = Rng::new(3);
    assert_eq!(b.sample_pair(&mut rng), None, "empty");
    b.push(&[0.0], 0).unwrap();
    b.push(&[1.0], 1).unwrap();
    assert_eq!(b.sample_pair(&mut rng), None, "no class has two");
    for v in 2..6 {
        b.push(&[v as f32], 2).unwrap();
    }
    let mut seen = [false; 6];
    for _ in 0..200 {
        let (i, j) = b.sample_pair(&mut rng).unwrap();
        assert_ne!(i, j);
        assert_eq!((b.get(i).unwrap().1, b.get(j).unwrap().1), (2, 2));
        seen[i] = true;
        seen[j] = true;
    }
    assert_eq!(seen, [false, false, true, true, true, true]);
}
