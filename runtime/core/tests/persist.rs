//! Persistence: random heads and learners roundtrip bit for bit, and every single-byte
//! corruption and every truncation of an encoding is refused without touching the
//! destination. Encoding and decoding never allocate.

mod common;

use common::allocations;

use edgetune_core::persist::{self, DecodeError, EncodeError};
use edgetune_core::rng::Rng;
use edgetune_core::{Config, Dims, Head, Learner, Optimizer};
use proptest::collection::vec;
use proptest::prelude::*;

type V = Vec<f32>;

fn optimizer(kind: u8) -> Option<Optimizer> {
    match kind {
        1 => Some(Optimizer::SGD_MOMENTUM),
        2 => Some(Optimizer::ADAM),
        3 => Some(Optimizer::ADAMW),
        _ => None,
    }
}

fn new_learner(dims: Dims, opt: Optimizer, seed: u64) -> Learner<V> {
    let dropout = if dims.hidden > 0 { 0.25 } else { 0.0 };
    let cfg = Config {
        optimizer: opt,
        lr: 0.01,
        weight_decay: 1e-3,
        dropout,
        seed,
        ..Config::DEFAULT
    };
    Learner::new(dims, cfg, vec![0.0; Learner::<()>::state_len(dims, &opt)]).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Finite values, including signed zero and a subnormal.
fn finite() -> impl Strategy<Value = f32> {
    prop_oneof![8 => -4.0f32..4.0, 1 => Just(-0.0f32), 1 => Just(f32::MIN_POSITIVE / 8.0)]
}

fn case() -> impl Strategy<Value = (Dims, usize, V, u8, usize, u64)> {
    (1usize..20, 0usize..8, 2usize..6).prop_flat_map(|(input, hidden, capacity)| {
        let dims = Dims::mlp(input, hidden, capacity);
        (
            Just(dims),
            0..=capacity,
            vec(finite(), dims.param_len()),
            0u8..4,
            0usize..6,
            any::<u64>(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_heads_and_learners_roundtrip_bit_for_bit(
        (dims, classes, params, kind, steps, seed) in case()
    ) {
        let mut head = Head::alloc(dims, classes).unwrap();
        head.params_mut().copy_from_slice(&params);
        let mut learner = optimizer(kind).map(|o| new_learner(dims, o, seed));
        if let Some(l) = learner.as_mut().filter(|_| classes > 0) {
            let mut rng = Rng::new(seed);
            for _ in 0..steps {
                let x: V = (0..dims.input).map(|_| rng.uniform(-1.0, 1.0)).collect();
                l.step(&mut head, &x, rng.below(classes)).unwrap();
            }
        }
        let finite = head.params().iter().chain(learner.iter().flat_map(|l| l.opt_state())).all(|v| v.is_finite());
        prop_assume!(finite);

        let bytes = persist::encode_to_vec(&head, learner.as_ref()).unwrap();
        prop_assert_eq!(bytes.len(), persist::encoded_len(&head, learner.as_ref()));
        let header = persist::read_header(&bytes).unwrap();
        prop_assert_eq!((header.dims, header.classes), (dims, classes));
        prop_assert_eq!(header.optimizer, optimizer(kind).map_or(0, |o| o.code()));

        let mut dst = Head::alloc(dims, 0).unwrap();
        dst.init(seed ^ 1);
        let mut dst_learner = optimizer(kind).map(|o| new_learner(dims, o, seed ^ 2));
        prop_assert_eq!(persist::decode_into(&bytes, &mut dst, dst_learner.as_mut()), Ok(header));
        prop_assert_eq!(bits(dst.params()), bits(head.params()));
        prop_assert_eq!(dst.classes(), classes);
        if let (Some(a), Some(b)) = (&learner, &dst_learner) {
            prop_assert_eq!(bits(b.opt_state()), bits(a.opt_state()));
            prop_assert_eq!(b.steps(), a.steps());
        }
        // Re-encoding gives the same bytes: the generator state came back too.
        prop_assert_eq!(persist::encode_to_vec(&dst, dst_learner.as_ref()).unwrap(), bytes.clone());

        let alone = persist::decode_head(&bytes).unwrap();
        prop_assert_eq!(bits(alone.params()), bits(head.params()));
        prop_assert_eq!(alone.classes(), classes);
    }
}

/// Everything observable about a head and learner, bit for bit.
fn snapshot(head: &Head<V>, learner: &Learner<V>) -> (Vec<u8>, Vec<u32>) {
    (
        persist::encode_to_vec(head, Some(learner)).unwrap(),
        bits(learner.grads()),
    )
}

#[test]
fn every_corruption_and_truncation_is_refused_without_half_loading() {
    let dims = Dims::mlp(3, 2, 3);
    let mut head = Head::alloc(dims, 2).unwrap();
    head.init(5);
    let mut src = new_learner(dims, Optimizer::ADAM, 9);
    for i in 0..4 {
        src.step(&mut head, &[1.0, -0.5, i as f32 * 0.25], i % 2)
            .unwrap();
    }
    let good = persist::encode_to_vec(&head, Some(&src)).unwrap();

    // A destination that differs from the file everywhere, with a pending gradient.
    let mut dst = Head::alloc(dims, 3).unwrap();
    dst.init(77);
    let mut l = new_learner(dims, Optimizer::ADAM, 1);
    for _ in 0..3 {
        l.step(&mut dst, &[0.3, 0.2, -0.1], 2).unwrap();
    }
    l.accumulate(&dst, &[0.1, 0.1, 0.1], 0).unwrap();
    let before = snapshot(&dst, &l);

    let mut bytes = good.clone();
    let mut refused = 0;
    for pos in 0..good.len() {
        for mask in [0xFF, 0x01, 0x02, 0x10, 0x80, 0x55, 0xA5] {
            bytes[pos] ^= mask;
            let r = persist::decode_into(&bytes, &mut dst, Some(&mut l));
            assert!(r.is_err(), "byte {pos} ^ {mask:#04x} was accepted");
            assert!(
                snapshot(&dst, &l) == before,
                "byte {pos} ^ {mask:#04x} half-loaded"
            );
            bytes[pos] ^= mask;
            refused += 1;
        }
    }
    for len in 0..good.len() {
        let r = persist::decode_into(&good[..len], &mut dst, Some(&mut l));
        assert!(
            matches!(r, Err(DecodeError::Truncated { .. })),
            "truncation to {len}: {r:?}"
        );
        assert!(
            snapshot(&dst, &l) == before,
            "truncation to {len} half-loaded"
        );
        assert!(persist::decode_head(&good[..len]).is_err());
    }
    assert_eq!(refused, 7 * good.len());

    // The intact bytes still load, completely.
    persist::decode_into(&good, &mut dst, Some(&mut l)).unwrap();
    assert_eq!(snapshot(&dst, &l).0, good);
}

#[test]
fn errors_read_well() {
    let dims = Dims::linear(4, 3);
    let head = Head::alloc(dims, 2).unwrap();
    let bytes = persist::encode_to_vec(&head, None::<&Learner<V>>).unwrap();
    let msg = persist::decode_head(&bytes[..10]).unwrap_err().to_string();
    assert!(
        msg.contains("truncated") && msg.contains("10 bytes"),
        "{msg}"
    );
    let msg = persist::decode_head(b"GIF89a, not a head file....................")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not an edgetune head file"), "{msg}");
    let mut buf = [0u8; 8];
    let msg = persist::encode(&head, None::<&Learner<V>>, &mut buf)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("too small") && msg.contains("8"), "{msg}");
    assert!(matches!(
        persist::encode(&head, None::<&Learner<V>>, &mut buf),
        Err(EncodeError::BufferTooSmall { .. })
    ));
}

#[test]
fn encode_and_decode_do_not_allocate() {
    let dims = Dims::mlp(6, 4, 3);
    let mut head = Head::alloc(dims, 3).unwrap();
    let mut l = new_learner(dims, Optimizer::ADAMW, 4);
    l.step(&mut head, &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 1)
        .unwrap();
    let mut buf = vec![0u8; persist::encoded_len(&head, Some(&l))];
    let mut dst = Head::alloc(dims, 0).unwrap();
    let mut dst_l = new_learner(dims, Optimizer::ADAMW, 0);
    let (n, count) = allocations(|| {
        let n = persist::encode(&head, Some(&l), &mut buf).unwrap();
        persist::decode_into(&buf[..n], &mut dst, Some(&mut dst_l)).unwrap();
        buf[n / 2] ^= 1;
        assert!(persist::decode_into(&buf[..n], &mut dst, Some(&mut dst_l)).is_err());
        assert!(persist::read_header(&buf).is_ok());
        n
    });
    assert_eq!(count, 0, "persistence allocated");
    assert_eq!(n, buf.len());
    assert_eq!(dst_l.steps(), 1);
}
