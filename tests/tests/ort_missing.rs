//! A missing or broken ONNX Runtime library is an error that says what to do, not a
//! panic. Its own test binary with a single test: ONNX Runtime can be loaded only once
//! per process, and this test sets `ORT_DYLIB_PATH`.

use std::path::{Path, PathBuf};

use edgetune::backbone::{Backbone, BackboneError};
use edgetune::bundle::{Manifest, Provenance};
use edgetune_testkit as testkit;
use edgetune_testkit::testmodels::{Builder, DataType};

#[test]
fn missing_or_bad_library_is_a_clear_error_and_a_good_one_still_loads() {
    let mut g = Builder::new("relu", 1);
    let x = g.input("x", DataType::Float, &[1, 4]);
    let y = g.relu("r", &x);
    g.output(&y, "y", DataType::Float, &[1, 4]);
    let onnx = g.finish();
    // A [1, 4] feature input that is its own embedding: the ReLU graph above fits it.
    let manifest = Manifest::features_only(4, ["a"], Provenance::new("relu", "test"));
    // The real library, for the end (before the variable is changed below).
    let real = match std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/onnxruntime/libonnxruntime.so")
        }
    };

    // A path that does not exist, from the variable.
    // SAFETY: this binary has a single test, so no other thread reads the environment.
    unsafe { std::env::set_var("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so") };
    let e = Backbone::from_onnx(&onnx, &manifest).unwrap_err();
    let text = e.to_string();
    println!("{text}");
    assert!(matches!(e, BackboneError::OrtLibrary { .. }), "{text}");
    for part in [
        "/nonexistent/libonnxruntime.so",
        "ORT_DYLIB_PATH",
        "scripts/setup.sh",
    ] {
        assert!(text.contains(part), "{text:?} does not name {part:?}");
    }

    // A file that is not a library.
    let junk = testkit::file("not-ort", "libonnxruntime.so", b"not a shared library");
    let e = Backbone::ort_init(&junk).unwrap_err();
    let text = e.to_string();
    println!("{text}");
    assert!(
        text.contains("cannot load") && text.contains("scripts/setup.sh"),
        "{text}"
    );
    let _ = std::fs::remove_file(&junk);

    // Failures leave nothing behind: the real library still loads afterwards.
    assert!(
        real.exists(),
        "ONNX Runtime is not at {}: run scripts/setup.sh",
        real.display()
    );
    Backbone::ort_init(&real).unwrap_or_else(|e| panic!("{e}"));
    let b = Backbone::from_onnx(&onnx, &manifest).unwrap();
    let mut out = [0.0; 4];
    b.embed(&[-1.0, 2.0, -3.0, 4.0], &mut out).unwrap();
    assert_eq!(out, [0.0, 2.0, 0.0, 4.0]);
}
