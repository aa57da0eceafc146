//! Unit tests of the replay buffer: filling, eviction, balanced sampling, removing a
//! class, bad input.

use super::*;

/// A buffer whose samples are `[v, label]`, so a slot's value tells which push made it.
fn buf<const N: usize>() -> SampleBuffer<Vec<f32>, N> {
    SampleBuffer::new(2, vec![0.0; N * 2]).unwrap()
}

fn values(b: &SampleBuffer<Vec<f32>, 6>, label: usize) -> Vec<f32> {
    let mut v: Vec<f32> = b
        .iter()
        .filter(|&(_, l)| l == label)
        .map(|(x, _)| x[0])
        .collect();
    v.sort_by(f32::total_cmp);
    v
}

#[test]
fn fills_up_to_capacity() {
    let mut b = buf::<6>();
    assert!(b.is_empty() && !b.is_full() && b.capacity() == 6 && b.dim() == 2);
    for i in 0..6 {
        assert_eq!(
            b.push(&[i as f32, (i % 2) as f32], i % 2),
            Ok(Pushed::Stored)
        );
        assert_eq!(b.len(), i + 1);
    }
    assert!(b.is_full());
    assert_eq!((b.count(0), b.count(1), b.count(2)), (3, 3, 0));
    assert_eq!(b.classes().collect::<Vec<_>>(), [(0, 3), (1, 3)]);
    for i in 0..6 {
        assert_eq!(b.get(i), Some((&[i as f32, (i % 2) as f32][..], i % 2)));
    }
    assert_eq!(b.get(6), None);
    assert_eq!(b.iter().len(), 6);
    assert!(
        b.iter()
            .zip(0..)
            .all(|((x, l), i)| x[0] == i as f32 && l == i % 2)
    );
}

#[test]
fn eviction_takes_the_oldest_of_the_largest_class() {
    let mut b = buf::<6>();
    for v in 0..5 {
        b.push(&[v as f32, 0.0], 0).unwrap();
    }
    b.push(&[100.0, 1.0], 1).unwrap();
    // Class 0 (5 samples) pays for the newcomers, oldest first.
    assert_eq!(b.push(&[200.0, 2.0], 2), Ok(Pushed::Evicted { label: 0 }));
    assert_eq!(values(&b, 0), [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(b.push(&[201.0, 2.0], 2), Ok(Pushed::Evicted { label: 0 }));
    assert_eq!(b.push(&[202.0, 2.0], 2), Ok(Pushed::Evicted { label: 0 }));
    assert_eq!((b.count(0), b.count(1), b.count(2)), (2, 1, 3));
    assert_eq!(values(&b, 0), [3.0, 4.0]);
    // Class 2 is now the largest: it replaces its own oldest.
    assert_eq!(b.push(&[203.0, 2.0], 2), Ok(Pushed::Evicted { label: 2 }));
    assert_eq!(values(&b, 2), [201.0, 202.0, 203.0]);
    // A class-1 sample takes from class 2 (largest), not class 0.
    assert_eq!(b.push(&[101.0, 1.0], 1), Ok(Pushed::Evicted { label: 2 }));
    assert_eq!((b.count(0), b.count(1), b.count(2)), (2, 2, 2));
    assert_eq!(b.len(), 6);
}

#[test]
fn ties_evict_from_the_class_with_the_oldest_sample() {
    let mut b = buf::<4>();
    b.push(&[0.0, 1.0], 1).unwrap(); // class 1's oldest is the oldest overall
    b.push(&[1.0, 0.0], 0).unwrap();
    b.push(&[2.0, 0.0], 0).unwrap();
    b.push(&[3.0, 1.0], 1).unwrap();
    assert_eq!(b.push(&[4.0, 2.0], 2), Ok(Pushed::Evicted { label: 1 }));
    assert!(b.iter().all(|(x, _)| x[0] != 0.0));
    // Now 0 has 2, 1 has 1, 2 has 1: class 0 gives up sample 1.
    assert_eq!(b.push(&[5.0, 3.0], 3), Ok(Pushed::Evicted { label: 0 }));
    let mut left: Vec<f32> = b.iter().map(|(x, _)| x[0]).collect();
    left.sort_by(f32::total_cmp);
    assert_eq!(left, [2.0, 3.0, 4.0, 5.0]);
}

#[test]
fn a_rare_class_keeps_its_only_sample() {
    let mut b = buf::<6>();
    b.push(&[-1.0, 9.0], 9).unwrap();
    for i in 0..100 {
        let label = i % 2;
        b.push(&[i as f32, label as f32], label).unwrap();
        assert_eq!(b.count(9), 1, "after push {i}");
    }
    // The last push (class 1) took a slot from class 0, the larger one then.
    assert_eq!((b.count(0), b.count(1), b.count(9)), (2, 3, 1));
    assert!(b.iter().any(|(x, l)| l == 9 && x == [-1.0, 9.0]));
    // The classes kept their newest samples.
    assert_eq!(values(&b, 0), [96.0, 98.0]);
    assert_eq!(values(&b, 1), [95.0, 97.0, 99.0]);
}

#[test]
fn a_new_class_is_refused_when_every_class_has_one_sample() {
    let mut b = buf::<3>();
    for l in 0..3 {
        b.push(&[l as f32, 0.0], l).unwrap();
    }
    let before: Vec<(Vec<f32>, usize)> = b.iter().map(|(x, l)| (x.to_vec(), l)).collect();
    let e = b.push(&[7.0, 7.0], 3).unwrap_err();
    assert_eq!(
        e,
        PushError::Full(Full {
            label: 3,
            capacity: 3
        })
    );
    assert_eq!(
        b.iter().map(|(x, l)| (x.to_vec(), l)).collect::<Vec<_>>(),
        before
    );
    // A class already present replaces its own single sample instead.
    assert_eq!(b.push(&[8.0, 8.0], 1), Ok(Pushed::Evicted { label: 1 }));
    assert_eq!(b.get(1), Some((&[8.0, 8.0][..], 1)));
    // Errors print and convert.
    assert!(e.to_string().contains("class 3"));
    assert!(matches!(
        Error::from(e),
        Error::Capacity {
            requested: 4,
            capacity: 3,
            ..
        }
    ));
    let _: &dyn core::error::Error = &e;
}

#[test]
fn sample_indices_are_class_balanced_and_deterministic() {
    let mut b = SampleBuffer::<_, 40>::new(1, [0.0f32; 40]).unwrap();
    for i in 0..30 {
        b.push(&[i as f32], 0).unwrap();
    }
    for i in 0..5 {
        b.push(&[i as f32], 1).unwrap();
        b.push(&[i as f32], 2).unwrap();
    }
    let mut idx = [0usize; 3000];
    assert_eq!(b.sample_indices(&mut Rng::new(1), &mut idx), 3000);
    let mut per_class = [0usize; 3];
    let mut per_slot = [0usize; 40];
    for &i in &idx {
        per_class[b.get(i).unwrap().1] += 1;
        per_slot[i] += 1;
    }
    for n in per_class {
        assert!(
            (n as f32 / 3000.0 - 1.0 / 3.0).abs() < 0.04,
            "{per_class:?}"
        );
    }
    assert!(
        per_slot.iter().all(|&n| n > 0),
        "every sample gets replayed"
    );
    let mut again = [0usize; 3000];
    b.sample_indices(&mut Rng::new(1), &mut again);
    assert_eq!(idx, again);
    b.sample_indices(&mut Rng::new(2), &mut again);
    assert_ne!(idx, again);
    assert_eq!(b.sample_indices(&mut Rng::new(1), &mut []), 0);
    b.clear();
    assert!(b.is_empty() && b.num_classes() == 0);
    assert_eq!(b.sample_indices(&mut Rng::new(1), &mut idx), 0);
}

#[test]
fn remove_class_compacts_and_keeps_the_rest() {
    let mut b = buf::<6>();
    for i in 0..6 {
        b.push(&[i as f32, 0.0], [0, 1, 0, 2, 0, 1][i]).unwrap();
    }
    assert_eq!(b.remove_class(0), 3);
    assert_eq!(b.remove_class(0), 0);
    assert_eq!(b.remove_class(5), 0);
    assert_eq!((b.len(), b.count(0), b.num_classes()), (3, 0, 2));
    let mut left: Vec<(f32, usize)> = b.iter().map(|(x, l)| (x[0], l)).collect();
    left.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(left, [(1.0, 1), (3.0, 2), (5.0, 1)]);
    // Room again: no eviction until full.
    for _ in 0..3 {
        assert_eq!(b.push(&[9.0, 0.0], 0), Ok(Pushed::Stored));
    }
    assert_eq!(b.push(&[9.0, 0.0], 2), Ok(Pushed::Evicted { label: 0 }));
}

#[test]
fn bad_dimensions_and_samples_are_errors_not_panics() {
    assert!(matches!(
        SampleBuffer::<_, 4>::new(0, [0.0f32; 4]),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        SampleBuffer::<_, 0>::new(2, [0.0f32; 4]),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        SampleBuffer::<_, 4>::new(3, [0.0f32; 11]),
        Err(Error::Capacity {
            requested: 12,
            capacity: 11,
            ..
        })
    ));
    assert!(matches!(
        SampleBuffer::<_, 4>::new(usize::MAX, [0.0f32; 4]),
        Err(Error::Config { .. })
    ));
    assert_eq!(SampleBuffer::<(), 4>::storage_len(3), 12);
    assert_eq!(SampleBuffer::<(), 4>::storage_len(usize::MAX), usize::MAX);

    let mut b = buf::<2>();
    b.push(&[1.0, 1.0], 0).unwrap();
    assert_eq!(
        b.push(&[1.0], 0),
        Err(PushError::Invalid(Error::Length {
            what: "sample",
            expected: 2,
            found: 1
        }))
    );
    assert!(matches!(
        b.push(&[1.0, 2.0, 3.0], 0),
        Err(PushError::Invalid(Error::Length { .. }))
    ));
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_eq!(
            b.push(&[bad, 0.0], 0),
            Err(PushError::Invalid(Error::NonFinite { what: "sample" }))
        );
    }
    assert_eq!((b.len(), b.count(0)), (1, 1));
    assert_eq!(b.get(usize::MAX), None);
    assert_eq!(b.count(usize::MAX), 0);
    // Any label is fine for the buffer; the head checks its range when learning.
    assert_eq!(b.push(&[0.0, 0.0], usize::MAX), Ok(Pushed::Stored));
    assert_eq!(
        b.push(&[0.0, 0.0], 3),
        Err(PushError::Full(Full {
            label: 3,
            capacity: 2
        }))
    );
    assert!(
        !PushError::from(Error::NonFinite { what: "sample" })
            .to_string()
            .is_empty()
    );
}
