//! The flash slot reader (`edgetune_core::flash::Store`) on a simulated NOR flash whose
//! contents are the fuzz input: two slots of four 256-byte sectors, 4-byte words.
//!
//! Asserts: the state `newest` reports loads; it holds exactly what `persist` decodes
//! from the record in that slot, and that record re-encodes to the same bytes (or
//! its normal form, `edgetune_fuzz::normal_form`); saving
//! over whatever the flash held works and loads back with the next sequence number; a
//! failed load leaves the head as it was. The scratch buffer's size (8 to 71 bytes)
//! comes from the control byte, so records are streamed in chunks of every size.
#![no_main]

use edgetune_core::flash::{COMMIT_MAGIC, SLOT_HEADER_LEN, SLOT_MAGIC, Store, StoreError};
use edgetune_core::{Dims, Learner, persist};
use edgetune_fuzz::{
    AnyLearner, CRC32, Ram, differences, fix_trailer, head_fingerprint, normal_form, sentinel_head,
};
use libfuzzer_sys::fuzz_target;

const SECTOR: usize = 256;
const SLOT: usize = 4 * SECTOR;
/// Where the slot header starts: the 8-byte commit marker padded to the word.
const BODY: usize = 8;

/// The record bytes of `slot` as its header states them, if they fit the slot.
fn record(image: &[u8], slot: usize) -> Option<std::ops::Range<usize>> {
    let header = slot * SLOT + BODY;
    let len = u32::from_le_bytes(image[header + 16..header + 20].try_into().ok()?) as usize;
    let start = header + SLOT_HEADER_LEN;
    let end = start.checked_add(len).filter(|&e| e <= (slot + 1) * SLOT)?;
    Some(start..end)
}

/// Makes each slot's record CRC and commit marker match (see `edgetune_fuzz::control`).
fn fix(image: &mut [u8]) {
    for slot in 0..2 {
        if let Some(r) = record(image, slot) {
            fix_trailer(&mut image[r]);
        }
        let header = slot * SLOT + BODY;
        let crc = CRC32.checksum(&image[header..header + SLOT_HEADER_LEN]);
        image[slot * SLOT..][4..8].copy_from_slice(&crc.to_le_bytes());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let mut image = vec![0xFF; 2 * SLOT];
    let n = bytes.len().min(image.len());
    image[..n].copy_from_slice(&bytes[..n]);
    if control & 1 == 1 {
        fix(&mut image);
    }
    let mut scratch = vec![0u8; 8 + usize::from(control >> 2)];
    let mut store = Store::new(Ram(image.clone()), 0, (2 * SLOT) as u32).expect("a valid region");
    let newest = store
        .newest(&mut scratch)
        .expect("a RAM flash does not fail");

    let Some(found) = newest else {
        let mut head = sentinel_head(Dims::linear(4, 3), 1.5).unwrap();
        let before = head_fingerprint(&head);
        let none = None::<&mut Learner<[f32; 0]>>;
        assert!(store.load(&mut head, none, &mut scratch).is_err());
        assert_eq!(
            head_fingerprint(&head),
            before,
            "a failed load changed the head"
        );
        return;
    };
    assert_eq!(&image[found.slot * SLOT..][..4], &COMMIT_MAGIC);
    assert_eq!(&image[found.slot * SLOT + BODY..][..4], &SLOT_MAGIC);
    let header = found.header;
    let Some(mut learner) = AnyLearner::for_header(&header) else {
        return;
    };
    let mut head = sentinel_head(header.dims, 1.5).unwrap();
    let loaded = match &mut learner {
        AnyLearner::Gradient(l) => store.load(&mut head, Some(l), &mut scratch),
        AnyLearner::SldaFull(l) => store.load(&mut head, Some(l), &mut scratch),
        AnyLearner::SldaDiagonal(l) => store.load(&mut head, Some(l), &mut scratch),
    };
    assert_eq!(loaded, Ok(found), "the newest valid state did not load");

    // The same record through `persist`: accepted, same head and learner, same bytes.
    let bytes = &image[record(&image, found.slot).expect("a valid slot's record fits")];
    assert_eq!(bytes.len(), found.len);
    let mut learner2 = AnyLearner::for_header(&header).unwrap();
    let mut head2 = sentinel_head(header.dims, 1.5).unwrap();
    learner2
        .state()
        .decode(bytes, &mut head2)
        .expect("persist refused a record the flash store loaded");
    assert_eq!(head_fingerprint(&head2), head_fingerprint(&head));
    assert_eq!(
        learner2.state().fingerprint(),
        learner.state().fingerprint()
    );
    let again = learner.state().encode(&head);
    let n_values = learner.state().fingerprint().2.len();
    let expected = normal_form(&header, bytes, &again, n_values);
    let unlearned = header.optimizer == 0
        && persist::encode_to_vec(&head, None::<&Learner<[f32; 0]>>)
            .ok()
            .as_deref()
            == Some(bytes);
    assert!(
        again == expected || unlearned,
        "a loaded record re-encodes differently: {}",
        differences(&again, &expected)
    );

    // Saving over whatever the flash held, then loading that back; after the largest
    // sequence number, saving is refused (it would lose to the stored state).
    let saved = match &learner {
        AnyLearner::Gradient(l) => store.save(&head, Some(l), &mut scratch),
        AnyLearner::SldaFull(l) => store.save(&head, Some(l), &mut scratch),
        AnyLearner::SldaDiagonal(l) => store.save(&head, Some(l), &mut scratch),
    };
    let saved = match saved {
        Err(StoreError::Config { what }) if found.seq == u64::MAX => {
            assert!(what.contains("largest possible"), "{what}");
            return;
        }
        other => other.expect("a loaded state saves again"),
    };
    assert_eq!(saved.seq, found.seq + 1);
    let mut store = Store::new(store.into_inner(), 0, (2 * SLOT) as u32).unwrap();
    let mut head3 = sentinel_head(header.dims, 2.5).unwrap();
    let none = None::<&mut Learner<[f32; 0]>>;
    let reloaded = store
        .load(&mut head3, none, &mut scratch)
        .expect("a saved state loads");
    assert_eq!(reloaded.seq, saved.seq);
    assert_eq!(head_fingerprint(&head3), head_fingerprint(&head));
});
