//! The device program in end-to-end tests: the one cargo built beside the test binary.

use std::path::{Path, PathBuf};

/// The `edgetune` program cargo built next to the running test (target/<profile>/
/// edgetune), or the one `EDGETUNE_BIN` names. Cargo builds a dependency's programs only
/// for that crate's own tests, so a missing one is a failure that says how to build it.
pub fn edgetune() -> PathBuf {
    if let Some(bin) = std::env::var_os("EDGETUNE_BIN") {
        return bin.into();
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .join("edgetune");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p edgetune-device` (cargo test --workspace does)",
        bin.display()
    );
    bin
}
