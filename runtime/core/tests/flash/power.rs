//! Power cuts during every operation of a save, and repeated torn saves.

use super::*;

/// Saves a first state and then three more, cutting the power during every single
/// operation of every save (and of the first one) with every kind of tear; returns how
/// many cuts were made.
fn cut_everywhere<const W: usize, const E: usize, const R: usize>(
    dims: Dims,
    scratch_len: usize,
) -> usize {
    let mut scratch = vec![0u8; scratch_len];
    let (offset, len, total) = region::<W, E, R>(dims);
    let states: Vec<_> = (0..5)
        .map(|i| trained(dims, 10 + i, 3 * i as usize))
        .collect();
    let later = trained(dims, 99, 4);
    let marker_ops = flash::unit::<Sim<W, E, R>>().max(flash::MARKER_LEN) / W;
    let mut flash = Sim::<W, E, R>::blank(total);
    assert!(matches!(
        boot(&flash, dims, &mut scratch),
        Err(StoreError::NothingStored)
    ));
    let mut cuts = 0;
    for (i, state) in states.iter().enumerate() {
        let before = (i > 0).then(|| snap(&states[i - 1].0, &states[i - 1].1));
        let after = snap(&state.0, &state.1);
        let (next, n) = save(&flash, dims, state, &mut scratch);
        assert!(n > marker_ops, "a save takes {n} operations");
        for tear in TEARS {
            let mut flipped = false;
            for k in 0..=n {
                let sim = flash.reboot().cut(k, tear, (i * 1000 + k) as u64);
                let mut store = Store::new(sim, offset, len).unwrap();
                let saved = store.save(&state.0, Some(&state.1), &mut scratch);
                let torn = store.into_inner();
                if k < n {
                    assert_eq!(saved, Err(StoreError::Flash(PowerLoss)), "cut at {k}");
                } else {
                    assert!(saved.is_ok(), "uncut save: {saved:?}");
                }
                cuts += usize::from(k < n);
                // Reboot: the old state or the new one, nothing else.
                let loaded = boot(&torn, dims, &mut scratch);
                let is_new = match &loaded {
                    Ok(s) if *s == after => true,
                    Ok(s) if Some(s) == before.as_ref() => false,
                    Err(StoreError::NothingStored) if before.is_none() => false,
                    other => panic!(
                        "save {i}, {tear:?} cut during operation {k} of {n}: loaded {:?}",
                        other.as_ref().map(|s| s.len())
                    ),
                };
                // Until the marker is being written the old state stays; once the new
                // one loads it keeps loading at every later cut point.
                if k < n - marker_ops {
                    assert!(
                        !is_new,
                        "save {i}: new state before the commit (cut at {k})"
                    );
                }
                if k == n {
                    assert!(is_new, "save {i}: completed save does not load");
                }
                assert!(is_new || !flipped, "save {i}, {tear:?}: back to old at {k}");
                flipped |= is_new;
                // The torn flash takes the next save.
                let (again, _) = save(&torn, dims, &later, &mut scratch);
                assert_eq!(
                    boot(&again, dims, &mut scratch),
                    Ok(snap(&later.0, &later.1)),
                    "save after a cut at {k}"
                );
            }
        }
        flash = next;
    }
    cuts
}

#[test]
fn power_cut_during_any_operation_leaves_the_old_or_the_new_state() {
    let mut cuts = 0;
    // 4-byte words, 128-byte sectors (slots of several sectors), byte reads.
    cuts += cut_everywhere::<4, 128, 1>(Dims::linear(5, 4), 64);
    // An MLP head; 8-byte words (ECC flashes), 16-byte reads, a scratch of one unit.
    cuts += cut_everywhere::<8, 256, 16>(Dims::mlp(4, 3, 3), 16);
    // Byte-writable flash with small sectors and a scratch larger than a slot.
    cuts += cut_everywhere::<1, 64, 1>(Dims::linear(3, 2), 4096);
    // 32-byte write units (the marker is padded to one).
    cuts += cut_everywhere::<32, 512, 4>(Dims::linear(6, 3), 96);
    println!("power cut during {cuts} different flash operations");
    assert!(cuts > 4000, "{cuts}");
}

/// Saves with a power cut at a random operation, again and again on the same flash
/// (never a clean reboot in between): each load is the last state that loaded or the
/// one being saved, and states never go back.
#[test]
fn repeated_torn_saves_on_the_same_flash() {
    let dims = Dims::mlp(3, 2, 3);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 40];
    let mut rng = Rng::new(4);
    let mut sim = Flash::blank(total);
    let mut current: Option<Vec<u8>> = None;
    let mut committed = 0;
    for round in 0..300u64 {
        let state = trained(dims, 1000 + round, (round % 7) as usize);
        let want = snap(&state.0, &state.1);
        let k = rng.below(120);
        let tear = TEARS[rng.below(4)];
        let mut store = Store::new(sim.reboot().cut(k, tear, round), offset, len).unwrap();
        let result = store.save(&state.0, Some(&state.1), &mut scratch);
        sim = store.into_inner();
        match boot(&sim, dims, &mut scratch) {
            Ok(s) if s == want => {
                committed += 1;
                current = Some(s);
            }
            Ok(s) => {
                assert_eq!(Some(&s), current.as_ref(), "round {round}");
                assert!(result.is_err(), "round {round}: saved but not loaded");
            }
            Err(StoreError::NothingStored) => assert!(current.is_none()),
            Err(e) => panic!("round {round}: {e}"),
        }
    }
    assert!((30..270).contains(&committed), "{committed} commits");
}
