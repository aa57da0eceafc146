//! Link settings of the device program's size-optimized build, `--profile release-small`
//! (the workspace's one profile at opt-level "z", with `panic = "abort"`), for Linux
//! boards: the `edgetune` binary is linked without unwind tables (`.eh_frame`, 1.34 MB of
//! the aarch64 binary, and its index `.eh_frame_hdr`, 0.41 MB). Under `panic = "abort"`
//! nothing unwinds; a panic still prints its message, but no backtrace. rustc cannot drop
//! them itself: `-C force-unwind-tables=no` leaves `.eh_frame` as it is under fat LTO
//! (measured, README "Boards"). Other profiles (tests, which unwind) are untouched.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=no-unwind.ld");
    let small = env::var("OPT_LEVEL").is_ok_and(|o| o == "z");
    let linux = env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if small && linux {
        let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let script = Path::new(&dir).join("no-unwind.ld");
        println!("cargo:rustc-link-arg-bin=edgetune=-Wl,--no-eh-frame-hdr");
        println!(
            "cargo:rustc-link-arg-bin=edgetune=-Wl,-T,{}",
            script.display()
        );
    }
}
