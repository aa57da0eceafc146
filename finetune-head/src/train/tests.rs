use super::scaling::Scaling;
use super::*;

fn blobs(n: usize, seed: u64) -> Embedded {
    // Overlapping clusters: the validation loss has a minimum to stop at.
    three_classes(n, seed, |c, rng| {
        (0..8)
            .map(|j| if j == c { 1.0 } else { 0.0 } + rng.uniform(-1.0, 1.0))
            .collect()
    })
}

#[test]
fn fit_learns_and_stops_early() {
    let (train, val) = (blobs(300, 1), blobs(90, 2));
    let cfg = HeadConfig {
        epochs: 200,
        patience: 5,
        ..Default::default()
    };
    let f = fit(&cfg, &train, &val, 3, 4).unwrap();
    assert!(f.val_accuracy > 0.6, "{}", f.val_accuracy);
    let last: Vec<_> = f
        .history
        .iter()
        .rev()
        .take(5)
        .map(|e| (e.val_accuracy, e.val_loss))
        .collect();
    assert!(
        f.stopped_early && f.history.len() < 200,
        "{} epochs, best {}, last {last:?}",
        f.history.len(),
        f.best_epoch
    );
    assert_eq!(score(&f.head, &val).unwrap().0, f.val_accuracy);
    // Deterministic, whatever the threads.
    let g = fit(&cfg, &train, &val, 3, 4).unwrap();
    assert_eq!(f.head.params(), g.head.params());
    let h = fit_with(&cfg, &train, &val, 3, 4, 3).unwrap();
    assert_eq!(f.head.params(), h.head.params());
    let mlp = HeadConfig {
        head: HeadChoice::Mlp,
        hidden: 8,
        dropout: 0.3,
        epochs: 5,
        ..cfg
    };
    let (a, b) = (
        fit(&mlp, &train, &val, 3, 4).unwrap(),
        fit_with(&mlp, &train, &val, 3, 4, 2).unwrap(),
    );
    assert_eq!(a.head.params(), b.head.params());
}

#[test]
fn standardizing_folds_into_the_same_function_on_raw_inputs() {
    let mut train = blobs(200, 3);
    train.x.iter_mut().for_each(|x| {
        x[0] = x[0] * 50.0 + 7.0;
        x[5] = 3.0;
    });
    for head in [HeadChoice::Linear, HeadChoice::Mlp] {
        let cfg = HeadConfig {
            head,
            hidden: 16,
            epochs: 3,
            patience: 0,
            ..Default::default()
        };
        let s = Scaling::of(&train);
        let scaled = s.apply(&train);
        let raw = fit(
            &HeadConfig {
                standardize: false,
                ..cfg
            },
            &scaled,
            &scaled,
            3,
            4,
        )
        .unwrap();
        let mut folded = raw.head.clone();
        s.fold(&mut folded);
        let (mut a, mut b) = ([0.0f32; 4], [0.0f32; 4]);
        for (x, xs) in train.x.iter().zip(&scaled.x) {
            raw.head.logits(xs, &mut a).unwrap();
            folded.logits(x, &mut b).unwrap();
            for k in 0..3 {
                assert!(
                    (a[k] - b[k]).abs() < 1e-3 * (1.0 + a[k].abs()),
                    "{head:?} {a:?} {b:?}"
                );
            }
        }
    }
}

#[test]
fn space_round_trips_the_default() {
    let base = HeadConfig::default();
    assert_eq!(apply(&base, &point_of(&base)), base);
    let mlp = HeadConfig {
        head: HeadChoice::Mlp,
        hidden: 64,
        dropout: 0.2,
        ..base
    };
    assert_eq!(apply(&base, &point_of(&mlp)), mlp);
    assert!(space().validate().is_ok());
}
