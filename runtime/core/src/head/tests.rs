//! Unit tests of the head: logits, shapes, imprinting.

use super::*;

/// Embeddings that share a large common part (as ReLU outputs do): a plain imprint
/// of a new class wins on the old classes' samples, a centered one does not, and
/// still wins on its own.
#[test]
fn centered_imprint_ignores_the_common_part() {
    let common = [5.0f32, 5.0, 5.0, 5.0];
    let sample = |axis: usize| -> [f32; 4] {
        let mut x = common;
        x[axis] += 1.0;
        x
    };
    // Two classes told apart by axis 0 against axis 1, around the common part.
    let mut head = Head::alloc(Dims::linear(4, 3), 2).unwrap();
    head.params_mut()[..8].copy_from_slice(&[1.0, -1.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0]);
    let old = [sample(0), sample(1), sample(0), sample(1)];
    let others = || old.iter().map(|x| &x[..]);
    let mut probs = [0.0; 3];
    let mut plain = head.clone();
    plain.add_class().unwrap();
    plain.imprint(2, &sample(2), None).unwrap();
    let wins = |h: &Head<Vec<f32>>, probs: &mut [f32; 3]| {
        others()
            .filter(|x| h.predict(x, probs).unwrap().class == 2)
            .count()
    };
    assert_eq!(
        wins(&plain, &mut probs),
        4,
        "plain imprint takes the old samples"
    );
    head.add_class().unwrap();
    head.imprint_centered(2, &sample(2), others(), None)
        .unwrap();
    assert_eq!(wins(&head, &mut probs), 0);
    for c in 0..3 {
        assert_eq!(head.predict(&sample(c), &mut probs).unwrap().class, c);
    }
    // Nothing to center on: a plain imprint. A bad reference sample: an error.
    let mut h2 = head.clone();
    h2.imprint_centered(2, &sample(2), core::iter::empty(), None)
        .unwrap();
    let bad = [f32::NAN; 4];
    assert!(
        head.imprint_centered(2, &sample(2), [&bad[..]].into_iter(), None)
            .is_err()
    );
}

#[test]
fn linear_logits_are_affine() {
    let dims = Dims::linear(3, 4);
    let mut head = Head::new(dims, 2, vec![0.0; dims.param_len()]).unwrap();
    let p = head.params_mut();
    p[..3].copy_from_slice(&[1.0, 2.0, 3.0]); // class 0
    p[3..6].copy_from_slice(&[-1.0, 0.0, 1.0]); // class 1
    p[12] = 0.5; // b0
    p[13] = -0.5; // b1
    let mut out = [0.0; 2];
    head.logits(&[1.0, 1.0, 1.0], &mut out).unwrap();
    assert_eq!(out, [6.5, -0.5]);
}

#[test]
fn mlp_logits_match_explicit_forward() {
    let dims = Dims::mlp(5, 7, 3);
    let mut head = Head::new(dims, 3, vec![0.0; dims.param_len()]).unwrap();
    head.init(42);
    let x = [0.3, -1.0, 2.0, 0.5, 0.0];
    let mut hidden = [0.0; 7];
    head.features(&x, &mut hidden).unwrap();
    let p = head.params();
    let o = 7 * 6;
    let mut want = [0.0f32; 3];
    for c in 0..3 {
        want[c] = p[o + 3 * 7 + c] + (0..7).map(|j| p[o + c * 7 + j] * hidden[j]).sum::<f32>();
    }
    let mut got = [0.0; 3];
    head.logits(&x, &mut got).unwrap();
    for c in 0..3 {
        assert!((got[c] - want[c]).abs() < 1e-5);
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let dims = Dims::linear(3, 2);
    assert!(matches!(
        Head::new(dims, 3, [0.0; 8]),
        Err(Error::Capacity {
            what: "classes",
            ..
        })
    ));
    assert!(matches!(
        Head::new(dims, 2, [0.0; 7]),
        Err(Error::Capacity {
            what: "parameters",
            ..
        })
    ));
    assert!(matches!(
        Head::new(Dims::linear(0, 2), 2, [0.0; 8]),
        Err(Error::Config { .. })
    ));
    let head = Head::new(dims, 2, [0.0; 8]).unwrap();
    let mut probs = [0.0; 2];
    assert!(matches!(
        head.predict(&[1.0, 2.0], &mut probs),
        Err(Error::Length { .. })
    ));
    assert!(matches!(
        head.predict(&[1.0, f32::NAN, 0.0], &mut probs),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        head.predict(&[1.0, 2.0, 3.0], &mut [0.0; 1]),
        Err(Error::Length { .. })
    ));
    let mut full = Head::new(dims, 2, [0.0; 8]).unwrap();
    assert!(matches!(full.add_class(), Err(Error::Capacity { .. })));
}

#[test]
fn top_k_and_uncertainty() {
    let probs = [0.1, 0.45, 0.4, 0.05];
    let top = top_k::<3>(&probs);
    assert_eq!(top.as_slice(), &[(1, 0.45), (2, 0.4), (0, 0.1)]);
    let p = Prediction::from_probs(&probs);
    assert_eq!(p.class, 1);
    assert!((p.margin - 0.05).abs() < 1e-6 && p.is_uncertain(0.1));
    assert!(Prediction::from_probs(&[0.25; 4]).entropy > 0.999);
    assert!(Prediction::from_probs(&[1.0, 0.0, 0.0]).entropy == 0.0);
}

#[test]
fn added_class_can_be_imprinted() {
    let dims = Dims::linear(2, 3);
    let mut head = Head::new(dims, 2, [0.0; 9]).unwrap();
    head.params_mut()[..4].copy_from_slice(&[2.0, 0.0, 0.0, 2.0]);
    let c = head.add_class().unwrap();
    head.imprint(c, &[-3.0, -3.0], None).unwrap();
    assert!((math::norm(head.class_weights(c)) - 2.0).abs() < 1e-6);
    let mut probs = [0.0; 3];
    assert_eq!(head.predict(&[-1.0, -1.0], &mut probs).unwrap().class, c);
    assert!(head.imprint(3, &[1.0, 0.0], None).is_err());
    assert!(head.imprint(c, &[0.0, 0.0], None).is_err());
    assert!(head.imprint(c, &[1.0, 0.0], Some(f32::NAN)).is_err());
    // A failed imprint leaves a trained row as it was.
    let before = head.params().to_vec();
    assert!(head.imprint(0, &[0.0, 0.0], None).is_err());
    assert_eq!(head.params(), &before[..]);
}

#[test]
fn mlp_imprint_uses_hidden_features_of_the_embedding() {
    let dims = Dims::mlp(3, 4, 3);
    let mut head = Head::new(dims, 2, vec![0.0; dims.param_len()]).unwrap();
    head.init(5);
    let e = [0.5, -1.0, 2.0];
    let mut f = [0.0; 4];
    head.features(&e, &mut f).unwrap();
    let c = head.add_class().unwrap();
    head.imprint(c, &e, Some(3.0)).unwrap();
    let row = head.class_weights(c);
    let n = math::norm(&f);
    for j in 0..4 {
        assert!((row[j] - 3.0 * f[j] / n).abs() < 1e-6);
    }
}
