//! The fleet state (`edgetune_device::fleet`, compiled from its source file: see
//! `src/lib.rs`) as a device reads what the fleet's server sends: the signature check
//! first (`fleet::verify`, against the key the state names), then the decoder, then the
//! learner state a merge makes of it.
//!
//! Asserts: a state that decodes re-encodes to the same bytes, its signature block
//! included (`FleetState::to_bytes`); one that decodes becomes a learner state or a
//! named error, never a panic; a header whose sizes claim gigabytes allocates nothing of
//! the kind (libFuzzer's `-rss_limit_mb`).
//!
//! With the control byte's lowest bit set, the CRC-32 is rewritten where the flags put it
//! (before the 96-byte signature block of a signed state, else last).
#![no_main]

use edgetune::trust::PublicKey;
use edgetune_fuzz::fleet::{self, FleetState, SIGNATURE_LEN, SIGNED};
use edgetune_fuzz::{control, differences, fix_trailer};
use libfuzzer_sys::fuzz_target;

/// Largest state turned into a learner state (its scatter is `D × D`).
const MAX_DIM: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((fix, bytes)) = control(data) else {
        return;
    };
    let mut bytes = bytes.to_vec();
    let signed = bytes.len() >= 12 && u16::from_le_bytes([bytes[10], bytes[11]]) & SIGNED != 0;
    if fix {
        let end = if signed {
            bytes.len().saturating_sub(SIGNATURE_LEN)
        } else {
            bytes.len()
        };
        fix_trailer(&mut bytes[..end]);
    }
    // A device with --trust checks the signature before it reads anything else.
    if signed && bytes.len() >= SIGNATURE_LEN {
        let at = bytes.len() - SIGNATURE_LEN;
        let key: [u8; 32] = bytes[at..at + 32].try_into().expect("32 bytes");
        if let Some(key) = PublicKey::from_bytes(&key) {
            let _ = fleet::verify(&bytes, &[key]);
        }
    }
    let Ok(state) = FleetState::decode(&bytes) else {
        return;
    };
    let again = state.to_bytes();
    assert!(
        again == bytes,
        "a fleet state re-encodes differently: {}",
        differences(&again, &bytes)
    );
    if state.dim <= MAX_DIM && state.classes.len() <= 64 {
        let _ = state.to_slda_state(16.0);
    }
});
