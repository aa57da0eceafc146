//! The bundle container and its manifest (`edgetune::bundle::Bundle::from_bytes`).
//!
//! Asserts: a bundle that reads re-encodes (`to_bytes`) to its normal form — the
//! manifest as pretty JSON and a newline, the sections in order with no gaps — and the
//! normal form reads back to itself byte for byte; a header whose section table claims
//! gigabytes allocates nothing of the kind (libFuzzer's `-rss_limit_mb`).
#![no_main]

use edgetune::bundle::Bundle;
use edgetune_fuzz::file_with_trailer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = file_with_trailer(data) else {
        return;
    };
    let Ok(bundle) = Bundle::from_bytes(&bytes) else {
        return;
    };
    let normal = bundle.to_bytes().expect("a bundle that reads encodes");
    let again = Bundle::from_bytes(&normal).expect("a bundle's normal form reads");
    assert!(
        again == bundle,
        "a bundle's normal form reads back as another bundle"
    );
    let twice = again.to_bytes().expect("a bundle that reads encodes");
    assert!(twice == normal, "the normal form of a bundle is not stable");
});
