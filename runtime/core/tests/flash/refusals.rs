//! What the store refuses before touching the flash, and its other guarantees (sizes
//! at compile time, erasing, sequence numbers, no allocation).

use super::*;

#[test]
fn a_record_too_large_for_a_slot_is_refused_before_erasing() {
    let small = Dims::linear(5, 4);
    let big = Dims::linear(40, 4);
    let (offset, len, total) = region::<4, 128, 1>(small);
    let mut scratch = [0u8; 64];
    let state = trained(small, 1, 2);
    let (sim, _) = save(&Flash::blank(total), small, &state, &mut scratch);
    let mut store = Store::new(sim.reboot(), offset, len).unwrap();
    let (head, l) = trained(big, 1, 1);
    let err = store.save(&head, Some(&l), &mut scratch).unwrap_err();
    let needed = persist::encoded_len(&head, Some(&l));
    assert_eq!(
        err,
        StoreError::SlotTooSmall {
            needed,
            capacity: store.record_capacity()
        }
    );
    assert!(err.to_string().contains("a flash slot holds at most"));
    // Not even an erase happened.
    assert_eq!(store.flash().ops, 0);
    assert_eq!(store.flash().mem, sim.mem);
    // The exact capacity is usable.
    assert!(store.record_capacity() >= persist::encoded_len(&state.0, Some(&state.1)));
    assert!(store.record_capacity() < needed);
}

#[test]
fn unsaveable_and_mismatched_states_are_refused() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let (mut head, l) = trained(dims, 1, 2);
    let mut store = Store::new(Flash::blank(total), offset, len).unwrap();
    let other = learner(Dims::linear(5, 3), Optimizer::ADAM, 1);
    assert!(matches!(
        store.save(&head, Some(&other), &mut scratch),
        Err(StoreError::Encode(EncodeError::DimsMismatch { .. }))
    ));
    head.params_mut()[3] = f32::NAN;
    assert_eq!(
        store.save(&head, Some(&l), &mut scratch),
        Err(StoreError::Encode(EncodeError::NonFinite))
    );
    assert_eq!(store.flash().ops, 0);
    head.params_mut()[3] = 0.0;
    store.save(&head, Some(&l), &mut scratch).unwrap();
    // Loading into another shape or optimizer: refused, destination unchanged.
    let mut wrong = Head::alloc(Dims::linear(5, 5), 0).unwrap();
    assert!(matches!(
        store.load(&mut wrong, None::<&mut Learner<V>>, &mut scratch),
        Err(StoreError::Record(DecodeError::DimsMismatch { .. }))
    ));
    let (mut h2, _) = fresh(dims);
    let mut sgd = learner(dims, Optimizer::SGD_MOMENTUM, 1);
    assert_eq!(
        store.load(&mut h2, Some(&mut sgd), &mut scratch),
        Err(StoreError::Record(DecodeError::OptimizerMismatch {
            stored: 2,
            expected: 1
        }))
    );
    assert!(h2.params().iter().all(|v| *v == 0.125));
}

#[test]
fn misconfigured_regions_and_scratch_are_refused() {
    let config = |r: Result<Store<Flash>, StoreError<PowerLoss>>| match r {
        Err(StoreError::Config { what }) => what,
        other => panic!("{other:?}"),
    };
    let blank = || Flash::blank(1024);
    assert!(config(Store::new(blank(), 64, 512)).contains("erase sector"));
    assert!(config(Store::new(blank(), 0, 384)).contains("two slots"));
    assert!(config(Store::new(blank(), 512, 1024)).contains("beyond"));
    assert!(config(Store::new(blank(), 0, 0)).contains("two slots"));
    assert!(Store::new(blank(), 0, 256).is_ok());
    let mut store = Store::new(blank(), 256, 512).unwrap();
    assert_eq!(store.slot_len(), 256);
    assert_eq!(store.record_capacity(), 256 - 8 - 20);
    let (head, l) = trained(Dims::linear(2, 2), 1, 1);
    assert_eq!(
        store.save(&head, Some(&l), &mut [0u8; 7]),
        Err(StoreError::ScratchTooSmall {
            needed: 8,
            available: 7
        })
    );
    let mut wide = Store::new(Sim::<32, 512, 4>::blank(2048), 0, 1024).unwrap();
    assert!(matches!(
        wide.newest(&mut [0u8; 31]),
        Err(StoreError::ScratchTooSmall { needed: 32, .. })
    ));
}

#[test]
fn sizes_are_computed_at_compile_time() {
    const DIMS: Dims = Dims::linear(64, 10);
    const RECORD: usize = flash::max_record_len(DIMS, Some(&Optimizer::ADAM));
    const REGION: usize = flash::region_len::<Sim<4, 4096, 1>>(RECORD);
    assert_eq!(REGION, 2 * 8192);
    let (head, l) = trained(DIMS, 1, 1);
    let real = persist::encoded_len(&head, Some(&l));
    assert!(real <= RECORD && RECORD - real < 16, "{real} {RECORD}");
    assert_eq!(
        flash::max_record_len(Dims::linear(2, 2), None),
        28 + 5 + 10 + 1 + 1 + 6 * 4 + 4
    );
}

#[test]
fn erase_all_forgets_everything() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let (sim, _) = save(
        &Flash::blank(total),
        dims,
        &trained(dims, 1, 1),
        &mut scratch,
    );
    let mut store = Store::new(sim, offset, len).unwrap();
    assert!(store.newest(&mut scratch).unwrap().is_some());
    store.erase_all().unwrap();
    assert_eq!(store.newest(&mut scratch), Ok(None));
    assert_eq!(
        boot(&store.into_inner(), dims, &mut scratch),
        Err(StoreError::NothingStored)
    );
}

#[test]
fn sequence_numbers_grow_and_slots_alternate() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let mut store = Store::new(Flash::blank(total), offset, len).unwrap();
    for i in 1..=5u64 {
        let state = trained(dims, i, i as usize);
        let saved = store.save(&state.0, Some(&state.1), &mut scratch).unwrap();
        assert_eq!((saved.seq, saved.slot), (i, (i as usize + 1) % 2));
        // A store that knows nothing yet finds the same.
        let mut other = Store::new(store.flash().reboot(), offset, len).unwrap();
        assert_eq!(other.newest(&mut scratch), Ok(Some(saved)));
    }
}

#[test]
fn saving_and_loading_never_allocate() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let state = trained(dims, 1, 3);
    let (mut head, mut l) = fresh(dims);
    let mut store = Store::new(Flash::blank(total), offset, len).unwrap();
    let mut scratch = [0u8; 32];
    let (result, count) = allocations(|| {
        store.save(&state.0, Some(&state.1), &mut scratch)?;
        store.save(&state.0, Some(&state.1), &mut scratch)?;
        store.load(&mut head, Some(&mut l), &mut scratch)
    });
    assert!(result.is_ok());
    assert_eq!(count, 0, "heap allocations");
    assert_eq!(snap(&head, &l), snap(&state.0, &state.1));
}
