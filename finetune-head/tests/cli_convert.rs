//! `finetune-head convert --quantize int8 --calib DIR` through the command line: samples
//! read from .npy files, the report on stdout, and option mistakes named on stderr.

use std::path::Path;
use std::process::{Command, Output};

use edgetune::bundle::{Bundle, Quantization};
use edgetune::rng::Rng;
use edgetune_testkit as testkit;
use edgetune_testkit::testmodels::{self, MobileNetConfig};

/// A little-endian f32 .npy file (format version 1.0) of `shape`.
fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_finetune-head"))
        .args(args)
        .output()
        .expect("running finetune-head")
}

#[test]
fn int8_from_a_directory_of_npy_samples() {
    let cfg = MobileNetConfig {
        resolution: 32,
        width: 0.5,
        embedding: 32,
        ..Default::default()
    };
    let model = testkit::dir("cli-convert").join("m.onnx");
    testmodels::write(&model, &testmodels::mobilenet(&cfg)).unwrap();
    let calib = testkit::dir("cli-convert").join("calib");
    std::fs::create_dir_all(&calib).unwrap();
    let mut rng = Rng::new(4);
    for k in 0..6 {
        let x: Vec<f32> = (0..3 * 32 * 32)
            .map(|_| (rng.unit() * 255.0).floor())
            .collect();
        write_npy(&calib.join(format!("s{k}.npy")), &[1, 3, 32, 32], &x);
    }
    let bundle = testkit::dir("cli-convert").join("m.bundle");
    let m = model.to_str().unwrap();
    let quantize = |extra: &[&str]| {
        let mut args = vec![
            "convert",
            m,
            "-o",
            bundle.to_str().unwrap(),
            "--scale",
            "0.00392157",
            "--quantize",
            "int8",
            "--calib",
            calib.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = quantize(&["--calib-count", "5"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("calibrated on 4 samples"), "{out}");
    assert!(out.contains("cosine to f32 on 1 held-out samples"), "{out}");
    let b = Bundle::read(&bundle).unwrap();
    assert!(matches!(
        b.manifest.backbone.quantization,
        Quantization::Int8 {
            calibration_samples: 4,
            cosine_to_f32: Some(_)
        }
    ));

    // The first convolution is int8 too, unless --first-layer-f32 keeps it f32 (and the
    // report names it); the old flag, now the default, is still accepted.
    assert!(!out.contains("first layer"), "{out}");
    let o = quantize(&["--first-layer-f32"]);
    let kept = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        kept.contains("first layer (reads the image itself; kept f32 by --first-layer-f32)"),
        "{kept}"
    );
    let o = quantize(&["--quantize-first-layer"]);
    let all = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!all.contains("first layer"), "{all}");
    let o = quantize(&["--quantize-first-layer", "--first-layer-f32"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("cannot be used with"),
        "{err}"
    );

    // Option mistakes.
    let o = run(&["convert", m, "-o", "x.bundle", "--quantize", "int8"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--calib"), "{err}");
    let o = run(&["convert", m, "-o", "x.bundle", "--first-layer-f32"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--quantize"), "{err}");
    // --calib alone (an f32 bundle): the embedding statistics of the samples, for the
    // device's learner.
    let c = calib.to_str().unwrap();
    let f32_bundle = testkit::dir("cli-convert").join("f32.bundle");
    let o = run(&[
        "convert",
        m,
        "-o",
        f32_bundle.to_str().unwrap(),
        "--calib",
        c,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = Bundle::read(&f32_bundle).unwrap();
    assert_eq!(b.manifest.backbone.quantization, Quantization::F32);
    let stats = b.manifest.embedding_stats.expect("embedding statistics");
    assert_eq!(stats.samples, 6); // every sample in the directory (none held out)
    let s = edgetune::stats::Stats::from_manifest(&stats, b.manifest.embedding.size, 0).unwrap();
    assert_eq!(s.kind, edgetune::stats::CovarianceKind::Total);
    let o = run(&[
        "convert",
        m,
        "-o",
        "x.bundle",
        "--quantize",
        "int4",
        "--calib",
        c,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("int4"), "{err}");

    // A sample of the wrong shape is named.
    write_npy(&calib.join("t-bad.npy"), &[1, 3, 16, 16], &[0.0; 3 * 256]);
    let o = run(&[
        "convert",
        m,
        "-o",
        "x.bundle",
        "--quantize",
        "int8",
        "--calib",
        c,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("t-bad.npy"), "{err}");
}
