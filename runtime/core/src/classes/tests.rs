//! Unit tests of the class means: running means, nearest class, restoring, imprinting, bad input.

use super::*;
use crate::head::Dims;

fn means(dim: usize, cap: usize) -> ClassMeans<Vec<f32>> {
    ClassMeans::new(
        dim,
        cap,
        vec![f32::NAN; ClassMeans::<()>::storage_len(dim, cap)],
    )
    .unwrap()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
}

#[test]
fn running_mean_of_unit_vectors() {
    let mut m = means(2, 3);
    assert!(
        m.mean(1).iter().all(|&v| v == 0.0),
        "new() clears the storage"
    );
    assert_eq!((m.count(0), m.count(1)), (0, 0));
    m.update(1, &[3.0, 4.0]).unwrap();
    assert!(close(m.mean(1), &[0.6, 0.8]));
    m.update(1, &[0.0, 2.0]).unwrap();
    assert!(close(m.mean(1), &[0.3, 0.9]));
    m.update(1, &[-10.0, 0.0]).unwrap();
    assert!(close(m.mean(1), &[(0.6 - 1.0) / 3.0, 1.8 / 3.0]));
    assert_eq!((m.count(0), m.count(1), m.count(2)), (0, 3, 0));
    assert_eq!(m.mean(0), &[0.0, 0.0]);
    // Many updates of one direction converge on it and keep counting.
    for _ in 0..1000 {
        m.update(2, &[0.0, -7.0]).unwrap();
    }
    assert!(close(m.mean(2), &[0.0, -1.0]));
    assert_eq!(m.count(2), 1000);
    assert_eq!(m.as_slice().len(), 9);
}

#[test]
fn tiny_and_huge_embeddings_are_normalized() {
    let mut m = means(2, 2);
    m.update(0, &[1e-40, 0.0]).unwrap(); // subnormal
    assert!(close(m.mean(0), &[1.0, 0.0]));
    m.update(1, &[3e38, -3e38]).unwrap(); // the norm overflows
    let h = core::f32::consts::FRAC_1_SQRT_2;
    assert!(close(m.mean(1), &[h, -h]));
    let (c, d) = m.nearest(&[f32::MAX, -f32::MAX]).unwrap();
    assert!(c == 1 && d.abs() < 1e-6);
    let (c, d) = m.nearest(&[1e-44, 0.0]).unwrap();
    assert!(c == 0 && d.abs() < 1e-6);
}

#[test]
fn nearest_picks_the_highest_cosine_and_reports_the_distance() {
    let mut m = means(3, 4);
    assert_eq!(
        m.try_nearest(&[1.0, 0.0, 0.0]),
        Ok(None),
        "no class has samples"
    );
    assert_eq!(m.nearest(&[1.0, 0.0, 0.0]), None);
    m.update(0, &[1.0, 0.0, 0.0]).unwrap();
    m.update(2, &[0.0, 1.0, 0.0]).unwrap();
    m.update(2, &[0.0, 1.0, 0.2]).unwrap();
    let (c, d) = m.nearest(&[0.1, 2.0, 0.0]).unwrap();
    assert_eq!(c, 2);
    assert!(d > 0.0 && d < 0.02);
    // Orthogonal to every mean but class 2's small z component.
    let (c, d) = m.nearest(&[0.0, 0.0, -1.0]).unwrap();
    assert_eq!(c, 0);
    assert!((d - 1.0).abs() < 1e-6);
    // Opposite.
    let (c, d) = m.nearest(&[-1.0, -1.0, 0.0]).unwrap();
    assert!(d > 1.0 && d <= 2.0 && c < 4);
    // Exact direction: distance 0; ties go to the lower index.
    m.update(3, &[5.0, 0.0, 0.0]).unwrap();
    assert_eq!(m.nearest(&[2.0, 0.0, 0.0]), Some((0, 0.0)));
    // A mean that cancelled to zero has cosine 0.
    m.reset(0).unwrap();
    m.reset(2).unwrap();
    m.reset(3).unwrap();
    m.update(1, &[1.0, 0.0, 0.0]).unwrap();
    m.update(1, &[-1.0, 0.0, 0.0]).unwrap();
    assert_eq!(m.nearest(&[0.0, 1.0, 0.0]), Some((1, 1.0)));
}

#[test]
fn reset_and_clear_forget() {
    let mut m = means(2, 2);
    m.update(0, &[1.0, 1.0]).unwrap();
    m.update(1, &[1.0, -1.0]).unwrap();
    m.reset(0).unwrap();
    assert_eq!((m.count(0), m.mean(0)), (0, &[0.0, 0.0][..]));
    assert_eq!(m.nearest(&[1.0, 1.0]).unwrap().0, 1);
    m.clear();
    assert_eq!(m.count(1), 0);
    assert_eq!(m.nearest(&[1.0, 1.0]), None);
}

#[test]
fn bad_input_is_an_error_and_changes_nothing() {
    assert!(matches!(
        ClassMeans::new(0, 2, [0.0f32; 4]),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        ClassMeans::new(2, 0, [0.0f32; 4]),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        ClassMeans::new(usize::MAX, 2, [0.0f32; 4]),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        ClassMeans::new(2, usize::MAX, [0.0f32; 4]),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        ClassMeans::new(2, 3, [0.0f32; 8]),
        Err(Error::Capacity {
            requested: 9,
            capacity: 8,
            ..
        })
    ));
    assert_eq!(ClassMeans::<()>::storage_len(usize::MAX, 2), usize::MAX);

    let mut m = means(2, 2);
    m.update(0, &[1.0, 0.0]).unwrap();
    let before = m.as_slice().to_vec();
    assert_eq!(
        m.update(2, &[1.0, 0.0]),
        Err(Error::UnknownClass {
            class: 2,
            classes: 2
        })
    );
    assert!(matches!(
        m.update(0, &[1.0]),
        Err(Error::Length {
            expected: 2,
            found: 1,
            ..
        })
    ));
    assert!(matches!(
        m.update(0, &[f32::NAN, 1.0]),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        m.update(0, &[f32::INFINITY, 1.0]),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        m.update(0, &[0.0, -0.0]),
        Err(Error::Config { .. })
    ));
    assert_eq!(m.as_slice(), &before[..]);
    assert!(m.mean(2).is_empty() && m.mean(usize::MAX).is_empty());
    assert!(m.reset(2).is_err());
    assert_eq!(m.count(usize::MAX), 0);
    assert!(matches!(
        m.try_nearest(&[1.0, 0.0, 0.0]),
        Err(Error::Length { .. })
    ));
    assert!(matches!(
        m.try_nearest(&[f32::NAN, 0.0]),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        m.try_nearest(&[0.0, 0.0]),
        Err(Error::Config { .. })
    ));
    assert_eq!(m.try_nearest(&[1.0, 0.0]), Ok(Some((0, 0.0))));
    for bad in [&[1.0, 0.0, 0.0][..], &[f32::NAN, 0.0], &[0.0, 0.0], &[]] {
        assert_eq!(m.nearest(bad), None);
    }
}

#[test]
fn restore_keeps_valid_statistics_and_rejects_garbage() {
    let mut m = means(2, 2);
    m.update(1, &[0.0, 3.0]).unwrap();
    m.update(1, &[3.0, 0.0]).unwrap();
    let saved = m.into_storage();
    let r = ClassMeans::restore(2, 2, saved.clone()).unwrap();
    assert_eq!(r.count(1), 2);
    assert!(close(r.mean(1), &[0.5, 0.5]));
    for (i, bad) in [(0, f32::NAN), (4, -1.0), (5, 2.5), (5, 1e30), (2, 1.5)] {
        let mut s = saved.clone();
        s[i] = bad;
        assert!(ClassMeans::restore(2, 2, s).is_err(), "value {bad} at {i}");
    }
    assert!(ClassMeans::restore(2, 2, [0.0f32; 5]).is_err());
}

#[test]
fn imprint_points_a_new_class_at_its_mean() {
    let dims = Dims::linear(2, 3);
    let mut head = Head::new(dims, 2, [0.0f32; 9]).unwrap();
    head.params_mut()[..4].copy_from_slice(&[2.0, 0.0, 0.0, 2.0]);
    let mut m = means(2, 3);
    m.update(2, &[-1.0, -0.9]).unwrap();
    m.update(2, &[-0.9, -1.0]).unwrap();
    // Not yet a class of the head; then no samples; wrong head size.
    assert!(matches!(
        m.imprint(&mut head, 2),
        Err(Error::UnknownClass {
            class: 2,
            classes: 2
        })
    ));
    let c = head.add_class().unwrap();
    assert_eq!(c, 2);
    assert!(matches!(m.imprint(&mut head, 1), Err(Error::Config { .. })));
    assert!(matches!(
        m.imprint(&mut head, 3),
        Err(Error::UnknownClass {
            class: 3,
            classes: 3
        })
    ));
    let mut other = Head::new(Dims::linear(3, 3), 3, [0.0f32; 12]).unwrap();
    assert!(matches!(
        m.imprint(&mut other, 2),
        Err(Error::Length { .. })
    ));
    m.imprint(&mut head, 2).unwrap();
    let row = head.class_weights(2);
    let h = core::f32::consts::FRAC_1_SQRT_2;
    assert!(close(row, &[-2.0 * h, -2.0 * h]), "{row:?}");
    let mut probs = [0.0; 3];
    assert_eq!(head.predict(&[-1.0, -1.0], &mut probs).unwrap().class, 2);
    assert_eq!(head.predict(&[1.0, 0.0], &mut probs).unwrap().class, 0);
}

#[test]
fn imprint_an_mlp_head_from_input_space_means() {
    let dims = Dims::mlp(3, 5, 3);
    let mut head = Head::new(dims, 2, vec![0.0; dims.param_len()]).unwrap();
    head.init(3);
    let mut m = means(3, 3);
    let e = [0.6, 0.0, 0.8];
    m.update(2, &e).unwrap();
    head.add_class().unwrap();
    m.imprint(&mut head, 2).unwrap();
    let mut want = head.clone();
    want.imprint(2, &e, None).unwrap();
    assert!(close(head.class_weights(2), want.class_weights(2)));
}
