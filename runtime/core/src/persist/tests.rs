//! Unit tests of the record format: encoding, decoding, every way a record is refused.

use super::*;
use crate::learn::{Config, Optimizer};

type Vecs = std::vec::Vec<f32>;

fn trained(dims: Dims, opt: Option<Optimizer>) -> (Head<Vecs>, Option<Learner<Vecs>>) {
    let mut head = Head::new(dims, 2, vec![0.0; dims.param_len()]).unwrap();
    head.init(7);
    let mut learner = opt.map(|o| {
        let cfg = Config {
            optimizer: o,
            lr: 0.05,
            dropout: 0.2,
            seed: 3,
            ..Config::DEFAULT
        };
        Learner::new(dims, cfg, vec![0.0; Learner::<()>::state_len(dims, &o)]).unwrap()
    });
    if let Some(l) = learner.as_mut() {
        for i in 0..5 {
            let x: Vecs = (0..dims.input)
                .map(|j| ((i * 7 + j * 3) % 5) as f32 - 2.0)
                .collect();
            l.step(&mut head, &x, i % 2).unwrap();
        }
    }
    (head, learner)
}

fn fresh(dims: Dims, opt: Option<Optimizer>) -> (Head<Vecs>, Option<Learner<Vecs>>) {
    let mut head = Head::new(dims, 0, vec![0.0; dims.param_len()]).unwrap();
    head.params_mut().fill(0.5);
    let learner = opt.map(|o| {
        let cfg = Config {
            optimizer: o,
            seed: 3,
            ..Config::DEFAULT
        };
        Learner::new(dims, cfg, vec![0.0; Learner::<()>::state_len(dims, &o)]).unwrap()
    });
    (head, learner)
}

fn encode_vec(head: &Head<Vecs>, learner: Option<&Learner<Vecs>>) -> std::vec::Vec<u8> {
    let mut out = vec![0u8; encoded_len(head, learner)];
    assert_eq!(encode(head, learner, &mut out), Ok(out.len()));
    out
}

fn bits(v: &[f32]) -> std::vec::Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Rewrites the trailer so that tampered bytes pass the checksum.
fn fix_crc(bytes: &mut [u8]) {
    let n = bytes.len() - CRC_LEN;
    let crc = CRC32.checksum(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn roundtrips_every_kind_and_optimizer() {
    let opts = [
        None,
        Some(Optimizer::Sgd {
            momentum: 0.0,
            nesterov: false,
        }),
        Some(Optimizer::SGD_MOMENTUM),
    ];
    let opts = opts
        .into_iter()
        .chain([Some(Optimizer::ADAM), Some(Optimizer::ADAMW)]);
    for opt in opts {
        for dims in [Dims::linear(3, 4), Dims::mlp(3, 5, 4)] {
            let (head, learner) = trained(dims, opt);
            let bytes = encode_vec(&head, learner.as_ref());
            let (mut head2, mut learner2) = fresh(dims, opt);
            let h = decode_into(&bytes, &mut head2, learner2.as_mut()).unwrap();
            assert_eq!(h, read_header(&bytes).unwrap());
            assert_eq!(
                (h.dims, h.classes, h.optimizer),
                (dims, 2, opt.map_or(0, |o| o.code()))
            );
            assert_eq!(h.total_len(), bytes.len());
            assert_eq!(bits(head2.params()), bits(head.params()));
            assert_eq!(head2.classes(), 2);
            if let (Some(a), Some(b)) = (&learner, &learner2) {
                assert_eq!(bits(a.opt_state()), bits(b.opt_state()));
                assert_eq!((a.steps(), a.rng_state()), (b.steps(), b.rng_state()));
            }
            assert_eq!(
                encode_vec(&head2, learner2.as_ref()),
                bytes,
                "re-encoding is identical"
            );
        }
    }
}

#[test]
fn head_only_file_resets_a_learner() {
    let dims = Dims::mlp(3, 2, 3);
    let (head, _) = trained(dims, None);
    let (_, mut learner) = trained(dims, Some(Optimizer::ADAM));
    let bytes = encode_vec(&head, None);
    let (mut dst, _) = fresh(dims, None);
    let l = learner.as_mut().unwrap();
    assert!(l.steps() > 0);
    decode_into(&bytes, &mut dst, Some(&mut *l)).unwrap();
    assert_eq!(l.steps(), 0);
    assert!(l.opt_state().iter().all(|v| *v == 0.0));
}

#[test]
fn newer_or_foreign_data_is_refused() {
    let (head, learner) = trained(Dims::linear(2, 3), Some(Optimizer::ADAM));
    let mut bytes = encode_vec(&head, learner.as_ref());
    let (mut dst, mut l) = fresh(Dims::linear(2, 3), Some(Optimizer::ADAM));
    bytes[4..6].copy_from_slice(&2u16.to_le_bytes());
    fix_crc(&mut bytes);
    let want = DecodeError::UnsupportedVersion {
        found: 2,
        supported: VERSION,
    };
    assert_eq!(decode_into(&bytes, &mut dst, l.as_mut()), Err(want));
    assert_eq!(read_header(&bytes), Err(want));
    bytes[..4].copy_from_slice(b"PK\x03\x04");
    assert_eq!(
        decode_into(&bytes, &mut dst, l.as_mut()),
        Err(DecodeError::BadMagic)
    );
    assert_eq!(
        read_header(&bytes[..3]),
        Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            found: 3
        })
    );
    assert!(dst.params().iter().all(|v| *v == 0.5) && dst.classes() == 0);
}

#[test]
fn mismatched_destinations_are_refused() {
    let dims = Dims::mlp(3, 2, 3);
    let (head, learner) = trained(dims, Some(Optimizer::SGD_MOMENTUM));
    let bytes = encode_vec(&head, learner.as_ref());
    let (mut other, _) = fresh(Dims::mlp(3, 3, 3), None);
    let err = decode_into(&bytes, &mut other, None::<&mut Learner<Vecs>>).unwrap_err();
    assert_eq!(
        err,
        DecodeError::DimsMismatch {
            stored: dims,
            expected: Dims::mlp(3, 3, 3)
        }
    );
    assert!(
        err.to_string()
            .contains("MLP head (input 3, hidden 2, capacity 3)")
    );
    let (mut dst, mut adam) = fresh(dims, Some(Optimizer::ADAM));
    let err = decode_into(&bytes, &mut dst, adam.as_mut()).unwrap_err();
    assert_eq!(
        err,
        DecodeError::OptimizerMismatch {
            stored: 1,
            expected: 2
        }
    );
    assert!(err.to_string().contains("SGD-with-momentum"));
    let (_, mut small) = fresh(Dims::mlp(3, 2, 4), Some(Optimizer::SGD_MOMENTUM));
    assert!(matches!(
        decode_into(&bytes, &mut dst, small.as_mut()),
        Err(DecodeError::DimsMismatch { .. })
    ));
    assert!(dst.params().iter().all(|v| *v == 0.5) && adam.unwrap().steps() == 0);
    // Without a learner the stored state is validated and ignored.
    assert!(decode_into(&bytes, &mut dst, None::<&mut Learner<Vecs>>).is_ok());
}

#[test]
fn encode_errors() {
    let dims = Dims::linear(3, 2);
    let (mut head, learner) = trained(dims, Some(Optimizer::ADAM));
    let needed = encoded_len(&head, learner.as_ref());
    let mut small = vec![0u8; needed - 1];
    let err = encode(&head, learner.as_ref(), &mut small);
    assert_eq!(
        err,
        Err(EncodeError::BufferTooSmall {
            needed,
            available: needed - 1
        })
    );
    let mut big = vec![0u8; needed + 10];
    assert_eq!(encode(&head, learner.as_ref(), &mut big), Ok(needed));
    let (_, other) = fresh(Dims::linear(3, 3), Some(Optimizer::ADAM));
    assert!(matches!(
        encode(&head, other.as_ref(), &mut big),
        Err(EncodeError::DimsMismatch { .. })
    ));
    head.params_mut()[1] = f32::NAN;
    assert_eq!(
        encode(&head, learner.as_ref(), &mut big),
        Err(EncodeError::NonFinite)
    );
    assert!(EncodeError::NonFinite.to_string().contains("refusing"));
}

#[test]
fn tampered_payloads_with_valid_checksums_are_refused() {
    let dims = Dims::linear(2, 2);
    let (head, _) = trained(dims, None);
    let good = encode_vec(&head, None);
    let (mut dst, _) = fresh(dims, None);
    let none = None::<&mut Learner<Vecs>>;
    // Payload: step 0, rng 0, len 6, 6 floats, len 0. First float at HEADER_LEN + 3.
    let mut nan = good.clone();
    nan[HEADER_LEN + 3..HEADER_LEN + 7].copy_from_slice(&f32::INFINITY.to_le_bytes());
    fix_crc(&mut nan);
    assert_eq!(
        decode_into(&nan, &mut dst, none),
        Err(DecodeError::NonFinite)
    );
    let mut count = good.clone();
    count[HEADER_LEN + 2] = 5;
    fix_crc(&mut count);
    let none = None::<&mut Learner<Vecs>>;
    assert!(matches!(
        decode_into(&count, &mut dst, none),
        Err(DecodeError::BadPayload { .. })
    ));
    let mut opt = good.clone();
    opt[7] = 2; // claims Adam state that is not there
    fix_crc(&mut opt);
    assert!(matches!(
        read_header(&opt),
        Err(DecodeError::BadHeader { .. })
    ));
    let mut classes = good.clone();
    classes[20..24].copy_from_slice(&3u32.to_le_bytes());
    fix_crc(&mut classes);
    assert!(matches!(
        read_header(&classes),
        Err(DecodeError::BadHeader { .. })
    ));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(decode_into(&trailing, &mut dst, None::<&mut Learner<Vecs>>).is_err());
    assert!(dst.params().iter().all(|v| *v == 0.5) && dst.classes() == 0);
}

#[test]
fn lengths_are_exact_for_large_varints() {
    let dims = Dims::linear(1, 200);
    let (head, mut learner) = fresh(dims, Some(Optimizer::SGD_MOMENTUM));
    let l = learner.as_mut().unwrap();
    l.restore(u32::MAX, u64::MAX, core::iter::repeat(1.0));
    let bytes = encode_vec(&head, Some(l));
    assert_eq!(
        read_header(&bytes).unwrap().payload_len,
        5 + 10 + 2 + 1600 + 2 + 1600
    );
}

/// Found by the `persist` fuzz target: postcard accepts an integer in more bytes than it
/// needs (the generator state 16 as `90 00`), so a record the writer never makes decoded
/// and re-encoded one byte shorter.
#[test]
fn integers_in_more_bytes_than_needed_are_refused() {
    let dims = Dims::linear(2, 2);
    let (head, _) = trained(dims, None);
    let good = encode_vec(&head, None);
    let (mut dst, _) = fresh(dims, None);
    // Payload: step 0, rng 0, len 6, ...; rng becomes `80 00`, the payload one byte longer.
    let mut long = good[..HEADER_LEN + 1].to_vec();
    long.extend_from_slice(&[0x80, 0x00]);
    long.extend_from_slice(&good[HEADER_LEN + 2..]);
    let n = u32::from_le_bytes(long[24..28].try_into().unwrap()) + 1;
    long[24..28].copy_from_slice(&n.to_le_bytes());
    fix_crc(&mut long);
    assert_eq!(
        decode_into(&long, &mut dst, None::<&mut Learner<Vecs>>),
        Err(DecodeError::BadPayload {
            what: "an integer stored in more bytes than it needs"
        })
    );
    assert!(decode_head(&long).is_err());
    assert!(dst.params().iter().all(|v| *v == 0.5) && dst.classes() == 0);
    // The same record with its integers in the fewest bytes decodes.
    assert!(decode_into(&good, &mut dst, None::<&mut Learner<Vecs>>).is_ok());
}
