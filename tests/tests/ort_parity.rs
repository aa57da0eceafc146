//! ONNX Runtime against tract on the same backbone: the bundle a device loads (NNEF, run
//! by tract) and the original ONNX model cut at the same embedding (run by ONNX Runtime
//! through `Backbone::from_onnx`) must give the same embedding of the same raw input.
//!
//! ONNX Runtime comes from `ORT_DYLIB_PATH`, else from where `scripts/setup.sh` puts it
//! (`target/onnxruntime/libonnxruntime.so`).

use std::path::{Path, PathBuf};

use edgetune::backbone::{Backbone, BackboneError, OrtOptions};
use edgetune::bundle::{Bundle, Preprocess};
use edgetune::rng::Rng;
use edgetune_testkit as testkit;
use edgetune_testkit::testmodels::{self, MobileNetConfig, ResNetConfig};
use finetune_head::convert::{Options, convert};
use finetune_head::onnxcut;

/// Loads ONNX Runtime once for this test binary (later calls do nothing).
fn init_ort() {
    let path = match std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            let p = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/onnxruntime/libonnxruntime.so");
            assert!(
                p.exists(),
                "ONNX Runtime is not at {} and ORT_DYLIB_PATH is not set: run scripts/setup.sh",
                p.display()
            );
            p
        }
    };
    Backbone::ort_init(&path).unwrap_or_else(|e| panic!("{e}"));
}

/// The model converted to a bundle, and the original cut at the bundle's embedding.
fn bundle_and_cut(name: &str, onnx: &[u8]) -> (Bundle, Vec<u8>) {
    let path = testkit::file("ort-parity", format!("{name}.onnx"), onnx);
    let opts = Options {
        preprocess: Preprocess::imagenet(),
        ..Default::default()
    };
    let (bundle, report) = convert(&path, &opts).unwrap();
    let cut = onnxcut::cut_bytes(onnx, &report.embedding).unwrap();
    (bundle, cut)
}

/// Largest |tract − ONNX Runtime| over a few random images of raw pixels (0–255).
fn parity(name: &str, onnx: &[u8]) -> f32 {
    init_ort();
    let (bundle, cut) = bundle_and_cut(name, onnx);
    let tract = Backbone::from_bundle(&bundle).unwrap();
    let ort = Backbone::from_onnx(&cut, &bundle.manifest).unwrap();
    assert_eq!(ort.input_len(), tract.input_len());
    assert_eq!(ort.embedding_len(), tract.embedding_len());

    let mut rng = Rng::new(17);
    let (mut a, mut b) = (
        vec![0.0; tract.embedding_len()],
        vec![0.0; ort.embedding_len()],
    );
    let (mut max_diff, mut max_value) = (0.0f32, 0.0f32);
    let inputs = 5;
    for _ in 0..inputs {
        let pixels: Vec<f32> = (0..tract.input_len())
            .map(|_| (rng.unit() * 255.0).floor())
            .collect();
        tract.embed(&pixels, &mut a).unwrap();
        ort.embed(&pixels, &mut b).unwrap();
        for (x, y) in a.iter().zip(&b) {
            max_diff = max_diff.max((x - y).abs());
            max_value = max_value.max(x.abs());
        }
    }
    println!(
        "{name}: max |tract - onnxruntime| = {max_diff:.2e} over {inputs} inputs × {} values \
         (largest |value| {max_value:.2})",
        a.len()
    );
    assert!(max_value > 0.0, "{name}: all-zero embeddings prove nothing");
    max_diff
}

#[test]
fn mobilenet_embeddings_match_tract() {
    let onnx = testmodels::mobilenet(&MobileNetConfig::small());
    let d = parity("mobilenet", &onnx);
    assert!(d <= 1e-4, "mobilenet: max |tract - onnxruntime| = {d:e}");
}

#[test]
fn resnet_embeddings_match_tract() {
    let onnx = testmodels::resnet(&ResNetConfig {
        stages: vec![(16, 1), (32, 1), (64, 1)],
        ..ResNetConfig::small()
    });
    let d = parity("resnet", &onnx);
    assert!(d <= 1e-4, "resnet: max |tract - onnxruntime| = {d:e}");
}

#[test]
fn clones_share_the_session_across_threads() {
    init_ort();
    let onnx = testmodels::mobilenet(&MobileNetConfig::tiny());
    let (bundle, cut) = bundle_and_cut("mobilenet-small", &onnx);
    let options = OrtOptions::default().intra_threads(2).optimize(false);
    let ort = Backbone::from_onnx_with(&cut, &bundle.manifest, &options).unwrap();
    let pixels = vec![128.0; ort.input_len()];
    let mut want = vec![0.0; ort.embedding_len()];
    ort.embed(&pixels, &mut want).unwrap();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (ort, pixels) = (ort.clone(), pixels.clone());
            std::thread::spawn(move || {
                let mut out = vec![0.0; ort.embedding_len()];
                ort.embed(&pixels, &mut out).unwrap();
                out
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), want);
    }
}

#[test]
fn bad_graphs_and_inputs_are_clear_errors() {
    init_ort();
    let onnx = testmodels::mobilenet(&MobileNetConfig::tiny());
    let (bundle, _) = bundle_and_cut("mobilenet-errors", &onnx);

    let e = Backbone::from_onnx(b"not an onnx model", &bundle.manifest).unwrap_err();
    assert!(matches!(e, BackboneError::OrtLoad { .. }), "{e}");

    // The uncut classifier loads (one output) but returns logits, not the embedding.
    let whole = Backbone::from_onnx(&onnx, &bundle.manifest).unwrap();
    let mut out = vec![0.0; whole.embedding_len()];
    let e = whole
        .embed(&vec![0.0; whole.input_len()], &mut out)
        .unwrap_err();
    assert!(matches!(e, BackboneError::Output { .. }), "{e}");
    println!("{e}");

    let e = whole.embed(&[0.0; 5], &mut out).unwrap_err();
    assert!(matches!(e, BackboneError::Input { .. }), "{e}");
}
