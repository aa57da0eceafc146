use super::*;
use crate::head::{Dims, Head};
use crate::rng::Rng;

/// `n` samples of `classes` Gaussian classes in `d` dimensions with a shared,
/// correlated covariance and a common offset; labels cycle.
fn data(d: usize, classes: usize, n: usize, seed: u64) -> Vec<(Vec<f32>, usize)> {
    let mut rng = Rng::new(seed);
    let mut g = || {
        // Sum of uniforms: close enough to a Gaussian here.
        (0..6).map(|_| rng.unit()).sum::<f32>() - 3.0
    };
    let means: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..d).map(|_| 0.6 * g()).collect())
        .collect();
    let mix: Vec<f32> = (0..d * d).map(|_| g()).collect();
    (0..n)
        .map(|i| {
            let c = i % classes;
            let e: Vec<f32> = (0..d).map(|_| g()).collect();
            let x = (0..d)
                .map(|r| 5.0 + means[c][r] + (0..d).map(|k| mix[r * d + k] * e[k]).sum::<f32>())
                .collect();
            (x, c)
        })
        .collect()
}

/// A learner of either shape with its own storage.
fn alloc<K: Covariance>(d: usize, c: usize, nu0: f32) -> Slda<Vec<f32>, K> {
    Slda::new(d, c, nu0, vec![0.0; Slda::<(), K>::storage_len(d, c)]).unwrap()
}

fn predict<K: Covariance>(l: &Slda<Vec<f32>, K>, x: &[f32]) -> usize {
    let mut head = Head::alloc(Dims::linear(l.dim(), l.capacity()), l.classes()).unwrap();
    l.write_head(&mut head, 1.0).unwrap();
    let mut p = vec![0.0; l.capacity()];
    head.predict(x, &mut p).unwrap().class
}

fn accuracy<K: Covariance>(l: &Slda<Vec<f32>, K>, test: &[(Vec<f32>, usize)]) -> f32 {
    let mut head = Head::alloc(Dims::linear(l.dim(), l.capacity()), l.classes()).unwrap();
    l.write_head(&mut head, 1.0).unwrap();
    let mut p = vec![0.0; l.capacity()];
    let hits = test
        .iter()
        .filter(|(x, y)| head.predict(x, &mut p).unwrap().class == *y)
        .count();
    hits as f32 / test.len() as f32
}

#[test]
fn one_label_per_class_is_nearest_class_mean() {
    one_label_per_class::<Full>();
    one_label_per_class::<Diagonal>();
}

fn one_label_per_class<K: Covariance>() {
    // With an isotropic prior (of any strength), one label per class leaves no
    // within-class scatter: the shared covariance is the prior's.
    let all = data(6, 4, 54, 1);
    let (train, test) = all.split_at(4);
    let mut l = alloc::<K>(6, 8, 16.0);
    l.set_standardization(&[0.0; 6], &[1.0; 6]).unwrap();
    let mut eye = vec![0.0; 36];
    (0..6).for_each(|i| eye[i * 6 + i] = 3.0);
    l.set_prior(&eye, 16.0).unwrap();
    for (x, y) in train {
        l.learn(x, *y).unwrap();
    }
    for (x, _) in test {
        let ncm = (0..4)
            .min_by(|&a, &b| {
                let da: f32 = x
                    .iter()
                    .zip(&train[a].0)
                    .map(|(p, q)| (p - q) * (p - q))
                    .sum();
                let db: f32 = x
                    .iter()
                    .zip(&train[b].0)
                    .map(|(p, q)| (p - q) * (p - q))
                    .sum();
                da.total_cmp(&db)
            })
            .unwrap();
        assert_eq!(predict(&l, x), ncm);
    }
}

#[test]
fn shared_covariance_beats_nearest_mean_and_units_do_not_matter() {
    let all = data(8, 4, 600, 3);
    let (train, test) = all.split_at(200);
    let accs = |diagonal: bool| {
        let mut accs = Vec::new();
        for scale in [0.01f32, 1.0, 100.0] {
            let x: Vec<_> = train
                .iter()
                .chain(test)
                .map(|(x, y)| (x.iter().map(|v| v * scale).collect::<Vec<f32>>(), *y))
                .collect();
            let (tr, te) = x.split_at(train.len());
            accs.push(if diagonal {
                learned(alloc::<Diagonal>(8, 4, 16.0), tr, te)
            } else {
                learned(alloc::<Full>(8, 4, 16.0), tr, te)
            });
        }
        accs
    };
    let (full, diagonal) = (accs(false), accs(true));
    let ncm = learned(alloc::<Full>(8, 4, 1e9), train, test);
    for accs in [&full, &diagonal] {
        assert!(
            (accs[0] - accs[1]).abs() <= 0.0025 && (accs[2] - accs[1]).abs() <= 0.0025,
            "{accs:?}"
        );
    }
    // The full covariance uses the correlations; the diagonal only each feature's
    // spread (these data are correlated: it is not far from nearest class mean).
    assert!(
        full[1] > ncm + 0.1 && full[1] > diagonal[1] + 0.05,
        "full {full:?}, diagonal {diagonal:?}, nearest class mean {ncm}"
    );
    assert!(
        diagonal[1] >= ncm - 0.03,
        "diagonal {diagonal:?} against nearest class mean {ncm}"
    );
}

/// Nearest class mean in the embeddings' own units: an isotropic prior that no label
/// moves.
fn nearest_class_mean(d: usize, c: usize) -> Slda<Vec<f32>, Full> {
    let mut l = alloc::<Full>(d, c, 1e9);
    let mut eye = vec![0.0; d * d];
    (0..d).for_each(|i| eye[i * d + i] = 1.0);
    l.set_standardization(&vec![0.0; d], &vec![1.0; d]).unwrap();
    l.set_prior(&eye, 1e9).unwrap();
    l
}

/// Test accuracy after learning `train`.
fn learned<K: Covariance>(
    mut l: Slda<Vec<f32>, K>,
    train: &[(Vec<f32>, usize)],
    test: &[(Vec<f32>, usize)],
) -> f32 {
    for (x, y) in train {
        l.learn(x, *y).unwrap();
    }
    accuracy(&l, test)
}

#[test]
fn a_diagonal_learner_weighs_features_by_their_spread() {
    // Independent features, class means apart in every feature, one feature's noise
    // 30 times the others': nearest class mean drowns in it, the diagonal learner
    // discounts it.
    let mut rng = Rng::new(11);
    let mut g = || (0..6).map(|_| rng.unit()).sum::<f32>() - 3.0;
    let means: Vec<Vec<f32>> = (0..3).map(|_| (0..6).map(|_| g()).collect()).collect();
    let all: Vec<(Vec<f32>, usize)> = (0..600)
        .map(|i| {
            let c = i % 3;
            let x = (0..6)
                .map(|k| means[c][k] + g() * if k == 0 { 30.0 } else { 0.7 })
                .collect();
            (x, c)
        })
        .collect();
    let (train, test) = all.split_at(150);
    let ncm = learned(nearest_class_mean(6, 3), train, test);
    let diagonal = learned(alloc::<Diagonal>(6, 3, 16.0), train, test);
    assert!(
        diagonal > ncm + 0.1,
        "diagonal {diagonal} against nearest class mean {ncm}"
    );
}
#[test]
fn order_and_merging_do_not_change_what_is_learned() {
    order_and_merging::<Full>();
    order_and_merging::<Diagonal>();
}

fn order_and_merging<K: Covariance>() {
    let all = data(5, 3, 260, 5);
    let (train, test) = all.split_at(60);
    let mut a = alloc::<K>(5, 4, 8.0);
    for (x, y) in train {
        a.learn(x, *y).unwrap();
    }
    // Reversed order (classes appear as 2, 1, 0: map them).
    let mut b = alloc::<K>(5, 4, 8.0);
    let center = train[0].0.clone();
    let scale: Vec<f32> = vec![1.0; 5];
    b.set_standardization(&center, &scale).unwrap();
    let mut a2 = alloc::<K>(5, 4, 8.0);
    a2.set_standardization(&center, &scale).unwrap();
    for (x, y) in train {
        a2.learn(x, *y).unwrap();
    }
    for (x, y) in train.iter().rev() {
        b.learn(x, 2 - y).unwrap();
    }
    let mut pa = Head::alloc(Dims::linear(5, 4), 3).unwrap();
    let mut pb = Head::alloc(Dims::linear(5, 4), 3).unwrap();
    a2.write_head(&mut pa, 1.0).unwrap();
    b.write_head(&mut pb, 1.0).unwrap();
    let (mut la, mut lb) = ([0.0; 4], [0.0; 4]);
    for (x, _) in test {
        pa.logits(x, &mut la).unwrap();
        pb.logits(x, &mut lb).unwrap();
        for c in 0..3 {
            assert!(
                (la[c] - lb[2 - c]).abs() < 1e-2 * (1.0 + la[c].abs()),
                "{la:?} {lb:?}"
            );
        }
    }
    // Two halves merged = all of it.
    let mut h1 = alloc::<K>(5, 4, 8.0);
    let mut h2 = alloc::<K>(5, 4, 8.0);
    h1.set_standardization(&center, &scale).unwrap();
    h2.set_standardization(&center, &scale).unwrap();
    for (i, (x, y)) in train.iter().enumerate() {
        if i < 30 {
            h1.learn(x, *y).unwrap();
        } else {
            h2.learn(x, *y).unwrap();
        }
    }
    h1.merge(&h2, &[0, 1, 2]).unwrap();
    assert_eq!(h1.labels(), 60);
    let mut pm = Head::alloc(Dims::linear(5, 4), 3).unwrap();
    h1.write_head(&mut pm, 1.0).unwrap();
    for (x, _) in test {
        pa.logits(x, &mut la).unwrap();
        pm.logits(x, &mut lb).unwrap();
        for c in 0..3 {
            assert!(
                (la[c] - lb[c]).abs() < 1e-2 * (1.0 + la[c].abs()),
                "{la:?} {lb:?}"
            );
        }
    }
    assert!(accuracy(&a, test) > 0.5);
}

#[test]
fn rank_one_updates_match_the_exact_inverse() {
    // Above EXACT_DIM with a given prior: Sherman–Morrison at every label, up to the
    // next exact recomputation; the inverse and the head written from the cached
    // `Λ μ` match an exact recomputation from the same statistics.
    let d = EXACT_DIM + 8;
    let train = data(d, 3, REFRESH_EVERY as usize - 1, 7);
    let mut l = Slda::alloc(d, 3, 4.0).unwrap();
    let mut cov = vec![0.0; d * d];
    for i in 0..d {
        cov[i * d + i] = 4.0;
    }
    l.set_standardization(&vec![5.0; d], &vec![1.0; d]).unwrap();
    l.set_prior(&cov, 4.0).unwrap();
    for (x, y) in &train {
        l.learn(x, *y).unwrap();
    }
    assert_eq!(l.s()[meta::SINCE_REFRESH] as u32, REFRESH_EVERY - 1);
    let mut exact = l.clone();
    exact.refresh();
    let a = l.lay();
    let inc = &l.s()[a.inverse..a.inverse + d * d];
    let ex = &exact.s()[a.inverse..a.inverse + d * d];
    let scale = ex.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = inc
        .iter()
        .zip(ex)
        .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(err < 1e-3 * scale, "inverse: {err} of {scale}");
    let mut h1 = Head::alloc(Dims::linear(d, 3), 3).unwrap();
    let mut h2 = Head::alloc(Dims::linear(d, 3), 3).unwrap();
    l.write_head(&mut h1, 1.0).unwrap();
    exact.write_head(&mut h2, 1.0).unwrap();
    let scale = h2.params().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = h1
        .params()
        .iter()
        .zip(h2.params())
        .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(err < 1e-3 * scale, "head: {err} of {scale}");
}

#[test]
fn bad_input_changes_nothing() {
    let mut l = Slda::alloc(3, 2, 4.0).unwrap();
    l.learn(&[1.0, 2.0, 3.0], 0).unwrap();
    l.learn(&[0.0, 2.0, 3.0], 1).unwrap();
    let before = l.state().to_vec();
    assert!(l.learn(&[1.0, f32::NAN, 3.0], 0).is_err());
    assert!(l.learn(&[1.0, 2.0], 0).is_err());
    assert!(l.learn(&[1.0, 2.0, 3.0], 3).is_err());
    assert!(l.learn(&[0.0, 2.0, 3.0], 2).is_err()); // capacity 2
    assert_eq!(l.state(), &before[..]);
    let mut r = Slda::alloc(3, 2, 4.0).unwrap();
    let mut bad = l.state().to_vec();
    bad[meta::CLASSES] = 7.0;
    assert!(r.restore(&bad).is_err());
    r.restore(l.state()).unwrap();
    assert_eq!(r.state(), l.state());
}

#[test]
fn forgetting_keeps_the_units_and_starts_over() {
    let train = data(4, 3, 30, 13);
    let mut l = alloc::<Diagonal>(4, 3, 4.0);
    l.set_standardization(&[5.0; 4], &[0.5; 4]).unwrap();
    let empty = l.state().to_vec();
    for (x, y) in &train {
        l.learn(x, *y).unwrap();
    }
    l.forget();
    assert_eq!((l.classes(), l.labels()), (0, 0));
    assert_eq!(l.state(), &empty[..]);
    l.learn(&train[0].0, 0).unwrap();
    assert_eq!(l.count(0), 1);
}

#[test]
fn a_class_without_labels_is_never_predicted() {
    // One button per class: the first label may be of any class below the capacity.
    let train = data(4, 4, 40, 17);
    let mut l = alloc::<Diagonal>(4, 4, 4.0);
    assert!(l.learn(&train[2].0, 2).unwrap());
    assert_eq!((l.classes(), l.count(0), l.count(2)), (3, 0, 1));
    assert!(!l.learn(&train[6].0, 2).unwrap());
    let mut head = Head::alloc(Dims::linear(4, 4), 4).unwrap();
    let mut p = vec![0.0; 4];
    l.write_head(&mut head, 1.0).unwrap();
    let bias = &head.params()[16..];
    assert_eq!([bias[0], bias[1], bias[3]], [UNLABELED_LOGIT; 3]);
    assert!(bias[2] > -1e3 && head.params()[..8].iter().all(|&w| w == 0.0));
    for (x, _) in &train {
        assert_eq!(head.predict(x, &mut p).unwrap().class, 2);
    }
    l.learn(&train[0].0, 0).unwrap();
    l.write_head(&mut head, 1.0).unwrap();
    for (x, _) in &train {
        assert!(matches!(head.predict(x, &mut p).unwrap().class, 0 | 2));
    }
    assert!(l.learn(&train[0].0, 4).is_err());
}

#[test]
fn subtracting_a_merged_part_leaves_the_rest() {
    subtract::<Full>();
    subtract::<Diagonal>();
}

fn subtract<K: Covariance>() {
    let (d, cap) = (5, 4);
    let train = data(d, 3, 90, 11);
    let (center, scale) = ([5.0; 5], [0.5; 5]);
    let [mut a, mut b, mut whole] = [(); 3].map(|_| alloc::<K>(d, cap, 8.0));
    for l in [&mut a, &mut b, &mut whole] {
        l.set_standardization(&center, &scale).unwrap();
    }
    // Class 2 is only in `b`'s part, class 0 in both.
    for (i, (x, y)) in train.iter().enumerate() {
        if *y != 2 && i % 2 == 0 {
            a.learn(x, *y).unwrap();
        } else if *y != 1 {
            b.learn(x, (*y).min(1) * 2).unwrap();
        }
        if *y != 2 && i % 2 == 0 {
            whole.learn(x, *y).unwrap();
        } else if *y != 1 {
            whole.learn(x, (*y).min(1) * 2).unwrap();
        }
    }
    let mut rest = whole.state().to_vec();
    Slda::<(), K>::subtract_state(&mut rest, b.state(), d, cap).unwrap();
    let want = a.state();
    assert_eq!(
        rest[..META],
        {
            let mut m = want[..META].to_vec();
            m[meta::CLASSES] = whole.classes() as f32;
            m[meta::SINCE_REFRESH] = rest[meta::SINCE_REFRESH];
            m
        }[..]
    );
    for (i, (x, y)) in rest.iter().zip(want).enumerate().skip(META) {
        assert!(
            (x - y).abs() < 1e-3 * (1.0 + y.abs()),
            "value {i}: {x} vs {y}"
        );
    }
    // The counts of a part, read without checking it again: b's labels per class.
    let counts = Slda::<(), K>::state_counts(b.state(), d, cap).unwrap();
    assert_eq!(
        counts,
        Slda::<(), K>::state_parts(b.state(), d, cap)
            .unwrap()
            .counts
    );
    assert_eq!(counts.len(), cap);
    assert_eq!(counts[2], b.count(2) as f32);
    assert!(Slda::<(), K>::state_counts(&rest[1..], d, cap).is_err());
    // Taking away what is not there is refused and changes nothing.
    let before = rest.clone();
    let e = Slda::<(), K>::subtract_state(&mut rest, b.state(), d, cap);
    assert!(e.is_err());
    assert_eq!(rest, before);
}

#[test]
fn an_mlp_heads_output_layer_is_the_linear_head_over_its_hidden_features() {
    // A learner of the hidden activations of an MLP (3 → 5 → up to 4 classes) writes
    // that head's output layer: its logits are those of the linear head the learner
    // writes over the activations, and the hidden layer stays as it was.
    let mut mlp = Head::alloc(Dims::mlp(3, 5, 4), 0).unwrap();
    mlp.init(4);
    let hidden = mlp.params()[..mlp.dims().out_offset()].to_vec();
    let mut l = alloc::<Full>(5, 4, 4.0);
    let mut h = [0.0f32; 5];
    for (x, y) in data(3, 3, 60, 5) {
        mlp.features(&x, &mut h).unwrap();
        if l.learn(&h, y).unwrap() {
            mlp.add_class().unwrap();
        }
    }
    l.write_head(&mut mlp, 1.0).unwrap();
    assert_eq!(&mlp.params()[..hidden.len()], &hidden[..]);
    let mut linear = Head::alloc(Dims::linear(5, 4), 3).unwrap();
    l.write_head(&mut linear, 1.0).unwrap();
    let (mut a, mut b) = ([0.0f32; 4], [0.0f32; 4]);
    for (x, _) in data(3, 3, 20, 6) {
        mlp.features(&x, &mut h).unwrap();
        mlp.logits(&x, &mut a).unwrap();
        linear.logits(&h, &mut b).unwrap();
        for c in 0..3 {
            assert!(
                (a[c] - b[c]).abs() <= 1e-4 * (1.0 + b[c].abs()),
                "{a:?} {b:?}"
            );
        }
    }
    // Another feature width is refused.
    let mut other = Head::alloc(Dims::mlp(3, 6, 4), 3).unwrap();
    assert!(l.write_head(&mut other, 1.0).is_err());
}

#[test]
fn held_out_logits_are_those_of_a_learner_without_the_label() {
    held_out::<Full>();
    held_out::<Diagonal>();
}

fn held_out<K: Covariance>() {
    let (d, c) = (6, 3);
    let train = data(d, c, 31, 5);
    // A weak prior: the label's share of the covariance matters.
    let fresh = || {
        let mut l = alloc::<K>(d, c + 1, 2.0);
        let mut eye = vec![0.0; d * d];
        (0..d).for_each(|i| eye[i * d + i] = 1.0);
        l.set_standardization(&[5.0; 6], &[0.5; 6]).unwrap();
        l.set_prior(&eye, 2.0).unwrap();
        l
    };
    let mut all = fresh();
    for (x, y) in &train {
        all.learn(x, *y).unwrap();
    }
    // Class 3 has one label, the last: held out, it has none.
    let lone = vec![5.0; d];
    all.learn(&lone, 3).unwrap();
    let logits_of = |l: &Slda<Vec<f32>, K>, x: &[f32]| {
        let mut head = Head::alloc(Dims::linear(d, c + 1), c + 1).unwrap();
        l.write_head(&mut head, 1.0).unwrap();
        let mut z = vec![0.0; c + 1];
        head.logits(x, &mut z).unwrap();
        z
    };
    let (mut held, mut scratch) = (vec![0.0; c + 1], vec![0.0; 3 * d]);
    for i in [0, 7, 30] {
        let (x, y) = &train[i];
        all.held_out_logits(x, *y, &mut held, &mut scratch).unwrap();
        let mut without = fresh();
        for (j, (x, y)) in train.iter().enumerate() {
            if j != i {
                without.learn(x, *y).unwrap();
            }
        }
        without.learn(&lone, 3).unwrap();
        let want = logits_of(&without, x);
        let whole = logits_of(&all, x);
        for k in 0..=c {
            let tol = 1e-3 * want[k].abs().max(1.0);
            assert!(
                (held[k] - want[k]).abs() < tol,
                "sample {i}, class {k}: {held:?} {want:?}"
            );
        }
        // Learned, its own class scored it higher than held out.
        assert!(whole[*y] > held[*y]);
    }
    all.held_out_logits(&lone, 3, &mut held, &mut scratch)
        .unwrap();
    assert_eq!(held[3], UNLABELED_LOGIT);
    // Bad input is refused.
    assert!(
        all.held_out_logits(&lone, 4, &mut held, &mut scratch)
            .is_err()
    );
    assert!(
        all.held_out_logits(&lone[..3], 0, &mut held, &mut scratch)
            .is_err()
    );
    assert!(
        all.held_out_logits(&lone, 0, &mut held[..2], &mut scratch)
            .is_err()
    );
    assert!(
        all.held_out_logits(&[f32::NAN; 6], 0, &mut held, &mut scratch)
            .is_err()
    );
}

#[test]
fn the_model_share_taken_matches_what_the_head_does() {
    let (d, c) = (4, 2);
    let train = data(d, c, 400, 8);
    let test = data(d, c, 4000, 8);
    let mut l = alloc::<Full>(d, c, 1.0);
    for (x, y) in &train {
        l.learn(x, *y).unwrap();
    }
    let mut head = Head::alloc(Dims::linear(d, c), c).unwrap();
    l.write_head(&mut head, 1.0).unwrap();
    let mut z = vec![0.0; c];
    for bias in [0.0, 1.0, 3.0] {
        let zeros: Vec<&Vec<f32>> = test
            .iter()
            .filter(|(_, y)| *y == 0)
            .map(|(x, _)| x)
            .collect();
        let taken = zeros
            .iter()
            .filter(|x| {
                head.logits(x, &mut z).unwrap();
                z[1] + bias > z[0]
            })
            .count() as f32
            / zeros.len() as f32;
        let model = l.taken(0, 1, bias);
        assert!(
            (model - taken).abs() < 0.05,
            "bias {bias}: model {model}, head {taken}"
        );
    }
    assert!(l.taken(0, 1, 3.0) > l.taken(0, 1, 0.0));
    assert_eq!(l.taken(0, 5, 0.0), 0.0);
}
