//! Converting models the project builds, end to end: ONNX → bundle file → a device that
//! loads it with tract-nnef alone → embeddings equal to the original graph's, and a kept
//! head that predicts what the original classifier predicts.

use std::path::PathBuf;

use edgetune::backbone::Backbone;
use edgetune::bundle::{Bundle, ChannelOrder, Preprocess};
use edgetune::persist;
use edgetune::rng::Rng;
use edgetune_testkit::testmodels::{BertConfig, MobileNetConfig, ResNetConfig};
use edgetune_testkit::{self as testkit, testmodels};
use finetune_head::convert::{Options, convert};
use tract_onnx::prelude::*;

#[test]
fn mobilenet_bundle_embeds_like_onnx_and_keeps_its_classifier() {
    let cfg = MobileNetConfig::small();
    let model = testkit::file("convert", "mobilenet.onnx", &testmodels::mobilenet(&cfg));
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
    let path = testkit::dir("convert").join("mobilenet.bundle");
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
        let want = testmodels::run(&model, tvec![Tensor::from_shape(&shape, &pre).unwrap()]);
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
    let cfg = ResNetConfig::small();
    let model = testkit::file("convert", "resnet.onnx", &testmodels::resnet(&cfg));
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

/// tract's NNEF reader asserts on some malformed values instead of returning an error;
/// a backbone section with one is refused with an error that says so, on every path
/// that loads it, and nothing panics.
#[test]
fn a_backbone_that_panics_tracts_reader_is_refused() {
    let cfg = ResNetConfig::small();
    let model = testkit::file("convert", "resnet-bad.onnx", &testmodels::resnet(&cfg));
    let (mut bundle, _) = convert(&model, &Options::default()).unwrap();
    assert!(edgetune::nnef::is_gzipped(&bundle.backbone));
    let mut tar = edgetune::nnef::nnef_tar(&bundle.backbone)
        .unwrap()
        .into_owned();
    // The same length, so the tar's headers still hold.
    let (from, to) = (&b"border = \"constant\""[..], &b"border = \"c-nstant\""[..]);
    let at = tar
        .windows(from.len())
        .position(|w| w == from)
        .expect("a convolution's border");
    tar[at..at + to.len()].copy_from_slice(to);
    let e = Backbone::load(&tar, &bundle.manifest)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tract stopped with a panic while reading the backbone's NNEF"),
        "{e}"
    );
    assert!(e.contains("c-nstant"), "{e}");
    let e = edgetune::nnef::read_model(&tar).unwrap_err().to_string();
    assert!(e.contains("the graph is malformed"), "{e}");
    // In a bundle, read back from its bytes (its checksum is made for the new section).
    bundle.backbone = tar;
    let bundle = Bundle::from_bytes(&bundle.to_bytes().unwrap()).unwrap();
    let e = Backbone::from_bundle(&bundle).unwrap_err().to_string();
    assert!(e.contains("panic") && e.contains("c-nstant"), "{e}");
}

#[test]
fn bad_models_and_options_are_clear_errors() {
    let err = |path: &PathBuf, opts: &Options| format!("{:#}", convert(path, opts).unwrap_err());
    let bert = testkit::file(
        "convert",
        "bert.onnx",
        &testmodels::bert(&BertConfig::default()),
    );
    let e = err(&bert, &Options::default());
    assert!(
        e.contains("no classifier found") && e.contains("--embedding"),
        "{e}"
    );
    // (With --embedding the text encoder converts: tests/text.rs.)

    let cfg = MobileNetConfig::small();
    let m = testkit::file("convert", "m.onnx", &testmodels::mobilenet(&cfg));
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

    let junk = testkit::file(
        "convert",
        "junk.onnx",
        b"definitely not protobuf \xff\xff\xff",
    );
    let e = err(&junk, &Options::default());
    assert!(e.contains("not an ONNX model"), "{e}");
    let e = err(
        &testkit::dir("convert").join("missing.onnx"),
        &Options::default(),
    );
    assert!(
        e.contains("cannot read") && e.contains("missing.onnx"),
        "{e}"
    );
}
