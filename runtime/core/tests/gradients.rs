//! Every loss and head kind: the learner's analytic gradient against central finite
//! differences of its own loss, parameter by parameter.

use edgetune_core::rng::Rng;
use edgetune_core::{Config, Dims, Head, Learner, Loss, Optimizer};

fn losses() -> [(&'static str, Loss, bool); 5] {
    [
        (
            "cross-entropy",
            Loss::CrossEntropy {
                label_smoothing: 0.0,
            },
            false,
        ),
        (
            "cross-entropy, smoothed",
            Loss::CrossEntropy {
                label_smoothing: 0.1,
            },
            false,
        ),
        (
            "cross-entropy, class-weighted",
            Loss::CrossEntropy {
                label_smoothing: 0.05,
            },
            true,
        ),
        ("focal gamma 2", Loss::Focal { gamma: 2.0 }, true),
        ("focal gamma 0.5", Loss::Focal { gamma: 0.5 }, false),
    ]
}

fn check(dims: Dims, classes: usize, seed: u64) {
    for (name, loss, weighted) in losses() {
        let mut rng = Rng::new(seed);
        let mut head = Head::new(dims, classes, vec![0.0; dims.param_len()]).unwrap();
        head.init(seed);
        for w in head.params_mut() {
            *w += rng.uniform(-0.5, 0.5);
        }
        let cfg = Config {
            loss,
            optimizer: Optimizer::ADAM,
            ..Config::DEFAULT
        };
        let mut learner = Learner::alloc(dims, cfg).unwrap();
        if weighted {
            let w: Vec<f32> = (0..classes).map(|c| 0.5 + c as f32 * 0.4).collect();
            learner.set_class_weights(&w).unwrap();
        }
        for sample in 0..3 {
            let x: Vec<f32> = (0..dims.input).map(|_| rng.uniform(-1.5, 1.5)).collect();
            let y = rng.below(classes);
            learner.discard();
            learner.accumulate(&head, &x, y).unwrap();
            let analytic = learner.grads().to_vec();

            let mut hidden = vec![0.0; dims.hidden.max(1)];
            let pattern = |head: &Head<Vec<f32>>, hidden: &mut Vec<f32>| {
                if dims.hidden == 0 {
                    return vec![];
                }
                head.features(&x, hidden).unwrap();
                hidden.iter().map(|a| *a > 0.0).collect::<Vec<_>>()
            };
            let base_pattern = pattern(&head, &mut hidden);
            let h = 1e-2f32;
            let mut checked = 0;
            #[allow(clippy::needless_range_loop)] // i indexes the head's params and analytic alike
            for i in 0..dims.param_len() {
                let orig = head.params()[i];
                head.params_mut()[i] = orig + h;
                let up = learner.loss(&head, &x, y).unwrap();
                let up_pattern = pattern(&head, &mut hidden);
                head.params_mut()[i] = orig - h;
                let down = learner.loss(&head, &x, y).unwrap();
                let down_pattern = pattern(&head, &mut hidden);
                head.params_mut()[i] = orig;
                if up_pattern != base_pattern || down_pattern != base_pattern {
                    continue; // a ReLU kink lies within ±h: the loss is not differentiable there
                }
                let numeric = (up - down) / (2.0 * h);
                let a = analytic[i];
                assert!(
                    (numeric - a).abs() <= 2e-3 + 1e-2 * a.abs(),
                    "{name}, {dims:?}, sample {sample}, param {i}: analytic {a} vs numeric {numeric}"
                );
                checked += 1;
            }
            assert!(
                checked > dims.param_len() * 9 / 10,
                "{name}: only {checked} parameters checked"
            );
        }
    }
}

#[test]
fn linear_head_gradients_match_finite_differences() {
    check(Dims::linear(6, 5), 4, 1);
}

#[test]
fn mlp_head_gradients_match_finite_differences() {
    check(Dims::mlp(5, 7, 4), 3, 2);
}

#[test]
fn inactive_classes_get_no_gradient_and_no_update() {
    let dims = Dims::linear(4, 5);
    let mut head = Head::alloc(dims, 2).unwrap();
    let cfg = Config {
        optimizer: Optimizer::ADAMW,
        weight_decay: 0.1,
        lr: 0.1,
        ..Config::DEFAULT
    };
    let mut learner = Learner::alloc(dims, cfg).unwrap();
    learner.step(&mut head, &[1.0, 2.0, 3.0, 4.0], 1).unwrap();
    // Rows of classes 2..5 and their biases stay exactly zero.
    assert!(head.params()[2 * 4..5 * 4].iter().all(|w| *w == 0.0));
    assert!(head.params()[5 * 4 + 2..].iter().all(|w| *w == 0.0));
    assert!(head.params()[..8].iter().any(|w| *w != 0.0));
}
