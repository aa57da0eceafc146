//! Blank, foreign and damaged flash; records as `persist` writes and reads them.

use super::*;

#[test]
fn blank_flash_holds_nothing() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let mut store = Store::new(Flash::blank(total), offset, len).unwrap();
    assert_eq!(store.newest(&mut scratch), Ok(None));
    let (mut head, mut l) = fresh(dims);
    let err = store
        .load(&mut head, Some(&mut l), &mut scratch)
        .unwrap_err();
    assert_eq!(err, StoreError::NothingStored);
    assert_eq!(err.to_string(), "no saved state in flash");
    assert!(head.params().iter().all(|v| *v == 0.125));
}

#[test]
fn garbage_is_refused_and_then_overwritten() {
    let dims = Dims::linear(5, 4);
    let (_, _, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let state = trained(dims, 3, 5);
    let mut rng = Rng::new(8);
    let random = |rng: &mut Rng| (0..total).map(|_| rng.next_u64() as u8).collect();
    // Random bytes, all zeros (RAM standing in for flash), all 0x55.
    let fills: Vec<Vec<u8>> = vec![
        random(&mut rng),
        random(&mut rng),
        vec![0; total],
        vec![0x55; total],
    ];
    for mem in fills {
        let sim = Flash::new(mem);
        assert_eq!(
            boot(&sim, dims, &mut scratch),
            Err(StoreError::NothingStored)
        );
        let (sim, _) = save(&sim, dims, &state, &mut scratch);
        assert_eq!(boot(&sim, dims, &mut scratch), Ok(snap(&state.0, &state.1)));
    }
}

/// Puts `record` into slot `slot` by hand, in the documented layout, committed.
fn put_slot(sim: &mut Flash, offset: u32, len: u32, slot: usize, seq: u64, record: &[u8]) {
    let start = offset as usize + slot * len as usize / 2;
    let area = &mut sim.mem[start..start + len as usize / 2];
    area.fill(0xFF);
    let mut header = Vec::new();
    header.extend_from_slice(&flash::SLOT_MAGIC);
    header.extend_from_slice(&flash::FORMAT.to_le_bytes());
    header.extend_from_slice(&[0xFF, 0xFF]);
    header.extend_from_slice(&seq.to_le_bytes());
    header.extend_from_slice(&(record.len() as u32).to_le_bytes());
    assert_eq!(header.len(), flash::SLOT_HEADER_LEN);
    let crc = crc32(&header);
    area[..4].copy_from_slice(&flash::COMMIT_MAGIC);
    area[4..8].copy_from_slice(&crc.to_le_bytes());
    area[8..28].copy_from_slice(&header);
    area[28..28 + record.len()].copy_from_slice(record);
}

/// CRC-32 (ISO-HDLC), bitwise.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn fix_crc(record: &mut [u8]) {
    let n = record.len() - 4;
    let crc = crc32(&record[..n]);
    record[n..].copy_from_slice(&crc.to_le_bytes());
}

/// Found by the `flash` fuzz target: a slot numbered `u64::MAX` made the next save
/// number 0, which lost to it, so every later save was silently invisible.
#[test]
fn a_save_after_the_largest_sequence_number_is_refused() {
    let dims = Dims::linear(3, 2);
    let record = flash::max_record_len(dims, Some(&Optimizer::ADAM));
    let len = flash::region_len::<Flash>(record) as u32;
    let mut scratch = [0u8; 16];
    let (head, learner) = trained(dims, 4, 2);
    let mut sim = Flash::blank(len as usize);
    put_slot(&mut sim, 0, len, 0, u64::MAX, &snap(&head, &learner));
    let mut store = Store::new(sim, 0, len).unwrap();
    let got = store.save(&head, Some(&learner), &mut scratch);
    assert!(
        matches!(got, Err(StoreError::Config { what }) if what.contains("largest possible")),
        "{got:?}"
    );
    assert_eq!(store.newest(&mut scratch).unwrap().unwrap().seq, u64::MAX);
}

#[test]
fn slots_hold_persist_records_in_the_documented_layout() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let state = trained(dims, 3, 5);
    let (sim, _) = save(&Flash::blank(total), dims, &state, &mut scratch);
    let record = snap(&state.0, &state.1);
    let start = offset as usize;
    assert_eq!(&sim.mem[start..start + 4], &flash::COMMIT_MAGIC);
    assert_eq!(&sim.mem[start + 8..start + 12], &flash::SLOT_MAGIC);
    assert_eq!(&sim.mem[start + 28..start + 28 + record.len()], &record[..]);
    // The same bytes put by hand load the same, in either slot.
    for slot in 0..2 {
        let mut by_hand = Flash::blank(total);
        put_slot(&mut by_hand, offset, len, slot, 7, &record);
        let mut store = Store::new(by_hand.reboot(), offset, len).unwrap();
        let found = store.newest(&mut scratch).unwrap().unwrap();
        assert_eq!((found.slot, found.seq, found.len), (slot, 7, record.len()));
        assert_eq!(boot(&by_hand, dims, &mut scratch), Ok(record.clone()));
    }
}

#[test]
fn damage_falls_back_to_the_older_slot() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let (a, b) = (trained(dims, 1, 2), trained(dims, 2, 4));
    let (sim, _) = save(&Flash::blank(total), dims, &a, &mut scratch);
    let (sim, _) = save(&sim, dims, &b, &mut scratch);
    let slot_b = offset as usize + len as usize / 2;
    // Every single bit flip in the newest slot's header or record: the older state.
    // Marker, header and record.
    for byte in (0..28 + persist::encoded_len(&b.0, Some(&b.1))).step_by(3) {
        let mut rot = sim.reboot();
        rot.mem[slot_b + byte] ^= 1 << (byte % 8);
        assert_eq!(
            boot(&rot, dims, &mut scratch),
            Ok(snap(&a.0, &a.1)),
            "flip at {byte}"
        );
    }
    // Both damaged: refused, with the record's own error.
    let mut rot = sim.reboot();
    rot.mem[slot_b + 100] ^= 4;
    rot.mem[offset as usize + 100] ^= 4;
    assert!(matches!(
        boot(&rot, dims, &mut scratch),
        Err(StoreError::Record(DecodeError::Checksum { .. }))
    ));
    // Saving then replaces the damaged slots.
    let (sim, _) = save(&rot, dims, &b, &mut scratch);
    assert_eq!(boot(&sim, dims, &mut scratch), Ok(snap(&b.0, &b.1)));
}

/// Every single-byte change of a record, with its CRC fixed, is accepted by the store
/// exactly when `persist::decode_into` accepts it, with the same result.
#[test]
fn loading_agrees_with_persist_decode_into() {
    let dims = Dims::mlp(3, 2, 3);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 24];
    let state = trained(dims, 6, 3);
    let good = snap(&state.0, &state.1);
    let mut checked = 0;
    for at in 0..good.len() - 4 {
        for x in [0x01u8, 0x80, 0xFF] {
            let mut record = good.clone();
            record[at] ^= x;
            fix_crc(&mut record);
            let (mut h1, mut l1) = fresh(dims);
            let want = persist::decode_into(&record, &mut h1, Some(&mut l1));
            let mut sim = Flash::blank(total);
            put_slot(&mut sim, offset, len, 0, 1, &record);
            let mut store = Store::new(sim, offset, len).unwrap();
            let (mut h2, mut l2) = fresh(dims);
            let got = store.load(&mut h2, Some(&mut l2), &mut scratch);
            match (&want, &got) {
                (Ok(h), Ok(found)) => assert_eq!(*h, found.header),
                (Err(_), Err(StoreError::Record(_))) => {}
                _ => panic!("byte {at} ^ {x:#x}: persist {want:?}, flash {got:?}"),
            }
            assert_eq!(snap(&h1, &l1), snap(&h2, &l2), "byte {at} ^ {x:#x}");
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * (good.len() - 4));
}

/// An integer in more bytes than it needs (the generator state 0 as `80 00`, found by
/// the `persist` fuzz target): refused by the store as by `persist::decode_into`, and
/// the destination untouched.
#[test]
fn integers_in_more_bytes_than_needed_are_refused_as_by_persist() {
    let dims = Dims::mlp(3, 2, 3);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 24];
    let (head, _) = trained(dims, 6, 3);
    // Saved without a learner: payload step 0, generator 0, then the parameters.
    let good = persist::encode_to_vec(&head, None::<&Learner<V>>).unwrap();
    let at = persist::HEADER_LEN + 1;
    let mut record = good[..at].to_vec();
    record.extend_from_slice(&[0x80, 0x00]);
    record.extend_from_slice(&good[at + 1..]);
    let n = u32::from_le_bytes(record[24..28].try_into().unwrap()) + 1;
    record[24..28].copy_from_slice(&n.to_le_bytes());
    fix_crc(&mut record);
    let (mut h1, mut l1) = fresh(dims);
    let want = persist::decode_into(&record, &mut h1, Some(&mut l1)).unwrap_err();
    assert!(
        want.to_string().contains("more bytes than it needs"),
        "{want}"
    );
    let mut sim = Flash::blank(total);
    put_slot(&mut sim, offset, len, 0, 1, &record);
    let mut store = Store::new(sim, offset, len).unwrap();
    let (mut h2, mut l2) = fresh(dims);
    assert_eq!(
        store.load(&mut h2, Some(&mut l2), &mut scratch),
        Err(StoreError::Record(want))
    );
    let (h0, l0) = fresh(dims);
    assert_eq!(snap(&h2, &l2), snap(&h0, &l0));
    assert_eq!(snap(&h1, &l1), snap(&h0, &l0));
}

/// Saved with and without a learner, any optimizer, loaded into learners of every
/// optimizer or none: the same outcome as through `persist`.
#[test]
fn every_optimizer_and_destination_matches_persist() {
    let dims = Dims::mlp(3, 2, 3);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 32];
    let opts = [
        Optimizer::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
        Optimizer::SGD_MOMENTUM,
        Optimizer::ADAM,
        Optimizer::ADAMW,
    ];
    for src in [None].into_iter().chain(opts.map(Some)) {
        let mut head = Head::alloc(dims, 2).unwrap();
        head.init(3);
        let mut l = src.map(|o| learner(dims, o, 5));
        if let Some(l) = l.as_mut() {
            for i in 0..4 {
                l.step(&mut head, &[1.0, -0.5, i as f32], i % 2).unwrap();
            }
        }
        let record = persist::encode_to_vec(&head, l.as_ref()).unwrap();
        let mut store = Store::new(Flash::blank(total), offset, len).unwrap();
        store.save(&head, l.as_ref(), &mut scratch).unwrap();
        let start = offset as usize + 28;
        assert_eq!(
            &store.flash().mem[start..start + record.len()],
            &record[..],
            "{src:?}"
        );
        for dst in [None].into_iter().chain(opts.map(Some)) {
            // Two identical destinations that have learned a little.
            let make = || {
                let mut h = Head::alloc(dims, 1).unwrap();
                h.init(11);
                let mut l = dst.map(|o| learner(dims, o, 9));
                if let Some(l) = l.as_mut() {
                    l.step(&mut h, &[0.5, 0.5, 0.5], 0).unwrap();
                }
                (h, l)
            };
            let ((mut h1, mut l1), (mut h2, mut l2)) = (make(), make());
            let want = persist::decode_into(&record, &mut h1, l1.as_mut());
            let got = store.load(&mut h2, l2.as_mut(), &mut scratch);
            match (&want, &got) {
                (Ok(h), Ok(found)) => assert_eq!(*h, found.header),
                (Err(e), Err(StoreError::Record(f))) => assert_eq!(e, f),
                _ => panic!("{src:?} into {dst:?}: persist {want:?}, flash {got:?}"),
            }
            assert_eq!(bits(h1.params()), bits(h2.params()));
            assert_eq!(h1.classes(), h2.classes());
            let state = |l: &Option<Learner<V>>| {
                l.as_ref()
                    .map(|l| persist::encode_to_vec(&h1, Some(l)).unwrap())
            };
            assert_eq!(state(&l1), state(&l2), "{src:?} into {dst:?}");
        }
    }
}

/// A streaming LDA's statistics (both shapes) travel through the flash as through
/// `persist`, byte for byte; a record of the other shape, or with impossible
/// statistics (a count that is not whole) under a valid checksum, is refused by both
/// before anything changes.
#[test]
fn streaming_lda_statistics_roundtrip_and_impossible_ones_are_refused() {
    slda_through_flash::<Diagonal>();
    slda_through_flash::<Full>();
}

fn slda_through_flash<K: Covariance>() {
    let dims = Dims::linear(3, 3);
    let values = Slda::<(), K>::state_len(3, 3);
    let record_len = flash::max_record_len_with(dims, values);
    let len = flash::region_len::<Flash>(record_len);
    let (offset, total) = (128u32, len + 256);
    let mut scratch = [0u8; 16];
    let new = || Slda::<V, K>::new(3, 3, 4.0, vec![0.0; Slda::<(), K>::storage_len(3, 3)]).unwrap();
    let mut slda = new();
    let mut rng = Rng::new(21);
    for i in 0..12 {
        let x: V = (0..3)
            .map(|_| rng.uniform(-1.0, 1.0) + i as f32 % 3.0)
            .collect();
        slda.learn(&x, i % 3).unwrap();
    }
    let mut head = Head::alloc(dims, 3).unwrap();
    slda.write_head(&mut head, 1.0).unwrap();
    let record = persist::encode_to_vec(&head, Some(&slda)).unwrap();
    assert!(record.len() <= record_len);
    let mut store = Store::new(Flash::blank(total), offset, len as u32).unwrap();
    store.save(&head, Some(&slda), &mut scratch).unwrap();
    let start = offset as usize + 28;
    assert_eq!(&store.flash().mem[start..start + record.len()], &record[..]);
    let mut store = Store::new(store.into_inner(), offset, len as u32).unwrap();
    let (mut h2, mut l2) = (Head::alloc(dims, 0).unwrap(), new());
    store.load(&mut h2, Some(&mut l2), &mut scratch).unwrap();
    assert_eq!(bits(h2.params()), bits(head.params()));
    assert_eq!(bits(l2.state()), bits(slda.state()));
    // The other shape, or a gradient learner: refused, nothing changed.
    let other = if K::FULL { SLDA_DIAGONAL } else { SLDA_FULL };
    let mut wrong = Slda::<V, Diagonal>::new(3, 3, 4.0, vec![0.0; 200]).unwrap();
    let mut adam = learner(dims, Optimizer::ADAM, 1);
    let mut h3 = Head::alloc(dims, 0).unwrap();
    let refused = |e: Result<_, StoreError<PowerLoss>>| {
        matches!(
            e,
            Err(StoreError::Record(DecodeError::OptimizerMismatch { .. }))
        )
    };
    assert!(refused(store.load(&mut h3, Some(&mut adam), &mut scratch)));
    if other == SLDA_FULL {
        let mut full = Slda::<V, Full>::new(3, 3, 4.0, vec![0.0; 200]).unwrap();
        assert!(refused(store.load(&mut h3, Some(&mut full), &mut scratch)));
    } else {
        assert!(refused(store.load(&mut h3, Some(&mut wrong), &mut scratch)));
    }
    assert_eq!(h3.classes(), 0);
    // Class 1's count (meta, center, scale, then the counts) made 1.5.
    let params = dims.param_len();
    let at = 28 + 1 + 1 + 1 + 4 * params + 1 + 4 * (8 + 3 + 3 + 1);
    assert_eq!(&record[at..at + 4], &4.0f32.to_le_bytes());
    let mut bad = record.clone();
    bad[at..at + 4].copy_from_slice(&1.5f32.to_le_bytes());
    fix_crc(&mut bad);
    let (mut h4, mut l4) = (Head::alloc(dims, 0).unwrap(), new());
    let before = (bits(h4.params()), bits(l4.state()));
    let e = persist::decode_into(&bad, &mut h4, Some(&mut l4)).unwrap_err();
    assert!(matches!(e, DecodeError::BadPayload { .. }), "{e}");
    assert!(
        e.to_string().contains("impossible learner statistics"),
        "{e}"
    );
    // The flash store refuses a record for the same reason, and changes nothing.
    let mut refused_by_flash = |bad: &[u8], e: DecodeError, h: &mut Head<V>, l: &mut Slda<V, K>| {
        let mut sim = Flash::blank(total);
        put_slot(&mut sim, offset, len as u32, 0, 1, bad);
        let mut store = Store::new(sim, offset, len as u32).unwrap();
        let got = store.load(h, Some(l), &mut scratch);
        assert!(
            matches!(got, Err(StoreError::Record(f)) if f == e),
            "{got:?}"
        );
        assert_eq!((bits(h.params()), bits(l.state())), before);
    };
    refused_by_flash(&bad, e, &mut h4, &mut l4);
    // A streaming LDA has no step count or generator: a record with either (found by
    // the `persist` fuzz target, which saw it load and save back as 0) is refused, by
    // `persist` and the flash store alike.
    for (at, what) in [(28, "step"), (29, "generator")] {
        assert_eq!(record[at], 0, "the {what} varint");
        let mut bad = record.clone();
        bad[at] = 1;
        fix_crc(&mut bad);
        let e = persist::decode_into(&bad, &mut h4, Some(&mut l4)).unwrap_err();
        assert!(
            e.to_string().contains("step count or generator"),
            "{what}: {e}"
        );
        refused_by_flash(&bad, e, &mut h4, &mut l4);
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
