//! Converting models the project builds, end to end: ONNX → bundle file → a device that
//! loads it with tract-nnef alone → embeddings equal to the original graph's, and a kept
//! head that predicts what the original classifier predicts.

use std::path::PathBuf;

use edgetune::backbone::Backbone;
use edgetune::bundle::{Bundle, ChannelOrder, Preprocess};
use edgetune::persist;
use edgetune::rng::Rng;
use edgetune_testkit::testmodels::{self, BertConfig, MobileNetConfig, ResNetConfig};
use finetune_head::convert::{Options, convert};
use tract_onnx::prelude::*;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("edgetune-convert-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir().join(name);
    testmodels::write(&p, bytes).unwrap();
    p
}

/// The original model's logits on a preprocessed input, from tract-onnx.
fn onnx_logits(path: &PathBuf, input: &[f32], shape: &[usize]) -> Vec<f32> {
    let mut m = tract_onnx::onnx().model_for_path(path).unwrap();
    m.set_input_fact(0, f32::fact(shape).into()).unwrap();
    let plan = m.into_optimized().unwrap().into_runnable().unwrap();
    let out = plan
        .run(tvec![
            Tensor::from_shape(shape, input).unwrap().into_tvalue()
        ])
        .unwrap();
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

#[test]
fn mobilenet_bundle_embeds_like_onnx_and_keeps_its_classifier() {
    let cfg = MobileNetConfig {
        resolution: 64,
        width: 0.5,
        embedding: 64,
        ..Default::default()
    };
    let model = write("mobilenet.onnx", &testmodels::mobilenet(&cfg));
    let opts = Options {
        preprocess: Preprocess::imagenet(),
        keep_head: true,
        ..Default::default()
    };
    let (bundle, report) = convert(&model, &opts).unwrap();
    println!("{report}");
    assert_eq!(
        (report.embedding.as_str(), report.embedding_size),
        ("embedding", 64)
    );
    assert!(
        report.parity_max_abs <= 1e-4,
        "parity {}",
        report.parity_max_abs
    );

    // The file a device receives.
    let path = dir().join("mobilenet.bundle");
    bundle.write(&path).unwrap();
    let bundle = Bundle::read(&path).unwrap();
    assert_eq!(bundle.manifest.classes.len(), 10);
    assert!(
        bundle
            .manifest
            .provenance
            .source_sha256
            .as_ref()
            .is_some_and(|h| h.len() == 64)
    );
    let backbone = Backbone::from_bundle(&bundle).unwrap();
    let head = persist::decode_head(bundle.head.as_deref().unwrap()).unwrap();
    assert_eq!(head.classes(), 10);
    assert_eq!(head.dims().capacity, 18);

    let mut rng = Rng::new(9);
    let shape = [1, 3, 64, 64];
    for _ in 0..4 {
        let pixels: Vec<f32> = (0..3 * 64 * 64)
            .map(|_| (rng.unit() * 255.0).floor())
            .collect();
        let mut emb = vec![0.0; 64];
        backbone.embed(&pixels, &mut emb).unwrap();
        let mut logits = vec![0.0; 10];
        head.logits(&emb, &mut logits).unwrap();
        let pre: Vec<f32> = pixels
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (p / 255.0 - Preprocess::imagenet().mean[i / 4096])
                    / Preprocess::imagenet().std[i / 4096]
            })
            .collect();
        let want = onnx_logits(&model, &pre, &shape);
        for (a, b) in logits.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "head logits {logits:?} vs model {want:?}"
            );
        }
    }
}

#[test]
fn resnet_converts_with_bgr_preprocessing() {
    let cfg = ResNetConfig {
        resolution: 64,
        stem: 16,
        stages: vec![(16, 1), (32, 1)],
        ..Default::default()
    };
    let model = write("resnet.onnx", &testmodels::resnet(&cfg));
    let opts = Options {
        preprocess: Preprocess {
            channel_order: ChannelOrder::Bgr,
            ..Preprocess::imagenet()
        },
        ..Default::default()
    };
    let (bundle, report) = convert(&model, &opts).unwrap();
    assert_eq!(report.embedding_size, 32);
    assert!(
        report.parity_max_abs <= 1e-4,
        "parity {}",
        report.parity_max_abs
    );
    assert!(bundle.head.is_none() && bundle.manifest.classes.is_empty());
}

#[test]
fn bad_models_and_options_are_clear_errors() {
    let err = |path: &PathBuf, opts: &Options| format!("{:#}", convert(path, opts).unwrap_err());
    let bert = write("bert.onnx", &testmodels::bert(&BertConfig::default()));
    let e = err(&bert, &Options::default());
    assert!(
        e.contains("no classifier found") && e.contains("--embedding"),
        "{e}"
    );
    // (With --embedding the text encoder converts: tests/text.rs.)

    let cfg = MobileNetConfig {
        resolution: 64,
        width: 0.5,
        embedding: 64,
        ..Default::default()
    };
    let m = write("m.onnx", &testmodels::mobilenet(&cfg));
    let e = err(
        &m,
        &Options {
            embedding: Some("no-such-node".into()),
            ..Default::default()
        },
    );
    assert!(e.contains("no tensor or node of that name"), "{e}");
    let e = err(
        &m,
        &Options {
            embedding: Some("stem.conv".into()),
            ..Default::default()
        },
    );
    assert!(e.contains("feature map, not an embedding"), "{e}");
    let e = err(
        &m,
        &Options {
            input_shape: Some(vec![1, 3, 0, 64]),
            ..Default::default()
        },
    );
    assert!(e.contains("must be positive"), "{e}");
    let e = err(
        &m,
        &Options {
            input_shape: Some(vec![1, 5, 64, 64]),
            ..Default::default()
        },
    );
    assert!(
        e.contains("[1, 5, 64, 64]"),
        "names the shape it could not type: {e}"
    );

    let junk = write("junk.onnx", b"definitely not protobuf \xff\xff\xff");
    let e = err(&junk, &Options::default());
    assert!(e.contains("not an ONNX model"), "{e}");
    let e = err(&dir().join("missing.onnx"), &Options::default());
    assert!(
        e.contains("cannot read") && e.contains("missing.onnx"),
        "{e}"
    );
}
