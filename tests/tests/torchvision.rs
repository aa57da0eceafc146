//! int8 on models written by a real exporter (`torch.onnx.export` of torchvision's
//! MobileNetV2 and ResNet18 at reduced width, and ONNX Runtime's QDQ form of them;
//! `models/torchvision/README.md`): the quantizer reaches every convolution it can
//! run on integers, including weights an exporter shares through `Identity` nodes, and
//! stays close to f32 on held-out images.

use std::path::{Path, PathBuf};

use edgetune::bundle::{InputSpec, Layout, Preprocess};
use finetune_head::convert::{Int8, Int8Report, Options, Report, convert};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/torchvision")
}

/// The 32 calibration images, then 8 held-out ones: the converter holds out the last
/// fifth, so it calibrates on the calibration images and measures on held-out ones.
fn samples() -> Vec<Vec<f32>> {
    let spec = InputSpec {
        name: "image".into(),
        shape: vec![1, 3, 64, 64],
        layout: Layout::Nchw,
        dtype: "f32".into(),
    };
    let load = |dir: &str, n| finetune_head::calib::load_dir(&models().join(dir), &spec, n);
    let mut s = load("calib", None).unwrap();
    assert_eq!(s.len(), 32);
    s.extend(load("heldout", Some(8)).unwrap());
    s
}

fn convert_model(file: &str, int8: bool) -> Report {
    convert_with(file, int8, false)
}

fn convert_with(file: &str, int8: bool, int8_first_layer_f32: bool) -> Report {
    let opts = Options {
        preprocess: Preprocess::imagenet(),
        int8: int8.then(|| Int8::Samples(samples())),
        int8_first_layer_f32,
        ..Default::default()
    };
    let (_, report) = convert(&models().join(file), &opts).unwrap();
    println!("{file}:\n{report}\n");
    report
}

/// ONNX Runtime's QDQ form of a model, converted as it is: its own quantizers' ranges,
/// no calibration; measured against its f32 form on the 8 held-out images.
fn convert_qdq(file: &str) -> Report {
    let opts = Options {
        preprocess: Preprocess::imagenet(),
        stats: Some(Int8::Samples(samples()[32..].to_vec())),
        ..Default::default()
    };
    let (_, report) = convert(&models().join(file), &opts).unwrap();
    println!("{file}:\n{report}\n");
    let qdq = report.qdq.as_ref().expect("taken for a QDQ model");
    assert_eq!(qdq.left, 0, "{report}");
    let q = report.int8.as_ref().expect("an int8 report");
    assert_eq!(q.summary.calibration_samples, 0);
    assert_eq!((q.summary.qdq_ranges, q.holdout_samples), (qdq.pairs, 8));
    assert!(q.cosine_min.is_some_and(|c| c >= 0.99), "{q:?}");
    assert_eq!(q.top1_agreement, Some(1.0), "{q:?}");
    report
}

fn int8(report: &Report) -> &Int8Report {
    let q = report.int8.as_ref().expect("an int8 report");
    assert_eq!((q.summary.calibration_samples, q.holdout_samples), (32, 8));
    q
}

fn kept(q: &Int8Report, why: &str) -> usize {
    q.summary
        .kept_f32
        .iter()
        .filter(|(_, w)| w.contains(why))
        .count()
}

#[test]
fn resnet18_int8_quantizes_every_convolution() {
    let f32 = convert_model("resnet18-w8-64.onnx", false);
    let report = convert_model("resnet18-w8-64.onnx", true);
    let q = int8(&report);
    // The stem too (the default).
    assert_eq!(q.summary.quantized_convs, 20, "{q:?}");
    assert_eq!(q.summary.kept_f32.len(), 0, "{q:?}");
    assert!(q.cosine_min.is_some_and(|c| c >= 0.99), "{q:?}");
    assert_eq!(q.top1_agreement, Some(1.0), "{q:?}");
    assert_eq!(q.f32_backbone_bytes, f32.backbone_bytes);
    // Both gzipped: 0.26x (172,732 against 658,969 bytes when this was written).
    let ratio = report.backbone_bytes as f64 / f32.backbone_bytes as f64;
    assert!(ratio <= 0.3, "int8 backbone {ratio:.2}x the f32 one");

    // On request the stem stays f32, and the report says why.
    let stem_f32 = convert_with("resnet18-w8-64.onnx", true, true);
    let qa = int8(&stem_f32);
    assert_eq!(
        (qa.summary.quantized_convs, qa.summary.kept_f32.len()),
        (19, 1)
    );
    assert_eq!(kept(qa, "first layer"), 1, "{qa:?}");
    assert!(qa.cosine_min.is_some_and(|c| c >= 0.99), "{qa:?}");
    assert_eq!(qa.top1_agreement, Some(1.0), "{qa:?}");

    // Its QDQ form, quantized by ONNX Runtime, runs on the same integer path, with the
    // convolutions ONNX Runtime quantized (the stem included), in a bundle of about
    // that size.
    let qdq = convert_qdq("resnet18-w8-64-qdq.onnx");
    let qs = &qdq.int8.as_ref().unwrap().summary;
    assert_eq!((qs.quantized_convs, qs.kept_f32.len()), (20, 0));
    assert_eq!(qs.chained_convs, q.summary.chained_convs);
    let ratio = qdq.backbone_bytes as f64 / report.backbone_bytes as f64;
    assert!(
        ratio <= 1.1,
        "the QDQ bundle is {ratio:.2}x --quantize int8's"
    );
}

#[test]
fn weights_shared_through_identity_nodes_are_quantized() {
    // The untrained export reaches 16 of its 20 convolution biases through Identity
    // nodes; before they were folded only 3 convolutions were quantized.
    let report = convert_model("resnet18-w8-64-untrained.onnx", true);
    let q = int8(&report);
    assert!(q.summary.folded_constants >= 16, "{q:?}");
    assert_eq!(q.summary.quantized_convs, 20, "{q:?}");
    assert_eq!(kept(q, "not a constant"), 0, "{q:?}");
    assert!(q.cosine_min.is_some_and(|c| c >= 0.99), "{q:?}");

    // Exported without constant folding: batch norms stay in the graph and three of
    // their biases are shared through Identity nodes. All 20 fold into the convolutions.
    let report = convert_model("resnet18-w8-64-nofold.onnx", true);
    let q = int8(&report);
    assert_eq!(q.summary.folded_constants, 3, "{q:?}");
    assert_eq!(q.summary.folded_batch_norms, 20, "{q:?}");
    assert_eq!(q.summary.quantized_convs, 20, "{q:?}");
    assert!(q.cosine_min.is_some_and(|c| c >= 0.99), "{q:?}");
    assert_eq!(q.top1_agreement, Some(1.0), "{q:?}");
}

#[test]
fn mobilenet_v2_int8_keeps_only_depthwise_in_f32() {
    let f32 = convert_model("mobilenet_v2-w025-64.onnx", false);
    let report = convert_model("mobilenet_v2-w025-64.onnx", true);
    let q = int8(&report);
    assert_eq!(q.summary.quantized_convs, 35, "{q:?}");
    assert_eq!(kept(q, "depthwise"), 17, "{q:?}");
    assert_eq!(q.summary.kept_f32.len(), 17, "{q:?}");
    // The depthwise convolutions compute in f32 on weights stored in 8 bits.
    assert_eq!(q.summary.stored_i8.len(), 17, "{q:?}");
    assert!(
        report
            .to_string()
            .contains("17 of those kept f32 have their weights stored in int8")
    );
    // Every layer kept in f32 is named in the report, with its reason.
    let text = report.to_string();
    for (layer, _) in &q.summary.kept_f32 {
        assert!(
            text.contains(layer.as_str()),
            "{layer} missing from the report"
        );
    }
    assert!(q.cosine_min.is_some_and(|c| c >= 0.99), "{q:?}");
    assert_eq!(q.top1_agreement, Some(1.0), "{q:?}");
    // Both gzipped: 0.296x (259,242 against 875,230 bytes when this was written), the
    // integer products' per-channel scales and biases in 16 bits (they were 0.31x in
    // f32, over the 0.3x of issue #14).
    let ratio = report.backbone_bytes as f64 / f32.backbone_bytes as f64;
    assert!(ratio <= 0.3, "int8 backbone {ratio:.3}x the f32 one");

    let qdq = convert_qdq("mobilenet_v2-w025-64-qdq.onnx");
    let qs = &qdq.int8.as_ref().unwrap().summary;
    assert_eq!((qs.quantized_convs, qs.kept_f32.len()), (35, 17));
    assert_eq!(qs.stored_i8.len(), 17, "{qs:?}");
    let ratio = qdq.backbone_bytes as f64 / report.backbone_bytes as f64;
    assert!(
        ratio <= 1.1,
        "the QDQ bundle is {ratio:.2}x --quantize int8's"
    );
}
