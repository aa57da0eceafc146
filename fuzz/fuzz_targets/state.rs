//! The device state file (`edgetune_device::state::decode`, compiled from its source
//! file: see `src/lib.rs`).
//!
//! Asserts: a state file of the current version that decodes re-encodes to the same
//! bytes, or to its normal form (the same with postcard's shortest varints: shorter); a
//! version 1 file's normal form is the current version's encoding of what it
//! decoded to, which decodes to the same state; a payload whose lengths claim
//! gigabytes allocates nothing of the kind (libFuzzer's `-rss_limit_mb`).
#![no_main]

use edgetune_fuzz::state::{self, VERSION};
use edgetune_fuzz::{differences, file_with_trailer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = file_with_trailer(data) else {
        return;
    };
    let Ok((seq, decoded)) = state::decode(&bytes) else {
        return;
    };
    let normal = state::encode(seq, &decoded);
    // postcard reads a varint written longer than needed (`80 00` for 0); its normal
    // form is the shortest, so only such a file may re-encode differently: shorter.
    if bytes[8..10] == VERSION.to_le_bytes() {
        assert!(
            normal == bytes || normal.len() < bytes.len(),
            "a state file re-encodes differently: {}",
            differences(&normal, &bytes)
        );
    }
    let (seq2, again) = state::decode(&normal).expect("a state's normal form decodes");
    assert_eq!(seq2, seq);
    assert!(
        state::encode(seq2, &again) == normal,
        "the normal form of a state is not stable"
    );
});
