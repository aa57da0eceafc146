//! `finetune-head inspect` on the models the project builds and on bundles made from
//! them: the numbers it reports are checked against independent counts (the protobuf's
//! initializers, MACs worked out by hand), and files that are not what they claim give
//! clear errors. The JSON form and the command line are tested in
//! `finetune-head/tests/cli_inspect.rs`.

use std::path::Path;

use edgetune::bundle::{Bundle, BundleError, Quantization};
use edgetune::rng::Rng;
use edgetune_testkit as testkit;
use edgetune_testkit::testmodels::{self, Attr, BertConfig, Builder, DataType, MobileNetConfig};
use finetune_head::convert::{Options, convert};
use finetune_head::inspect::{Dim, Report, TensorInfo, inspect};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

fn mobilenet() -> Vec<u8> {
    testmodels::mobilenet(&MobileNetConfig::small())
}

fn onnx(report: Report) -> finetune_head::inspect::OnnxReport {
    match report {
        Report::Onnx(r) => r,
        Report::Bundle(b) => panic!("expected an ONNX report, got a bundle: {b}"),
    }
}

fn bundle(report: Report) -> finetune_head::inspect::BundleReport {
    match report {
        Report::Bundle(b) => b,
        Report::Onnx(r) => panic!("expected a bundle report, got ONNX: {r}"),
    }
}

fn proto(bytes: &[u8]) -> ModelProto {
    tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .unwrap()
}

fn fixed(name: &str, dtype: &str, dims: &[i64]) -> TensorInfo {
    TensorInfo {
        name: name.into(),
        dtype: dtype.into(),
        shape: Some(dims.iter().map(|&d| Dim::Fixed(d)).collect()),
    }
}

/// The full error chain, as the CLI prints it, and the bundle error in it, if any.
fn error_of(path: &Path) -> (String, Option<String>) {
    let e = inspect(path).expect_err("inspect should refuse this file");
    let bundle = e.downcast_ref::<BundleError>().map(|b| format!("{b:?}"));
    (format!("{e:#}"), bundle)
}

#[test]
fn mobilenet_report_matches_the_model() {
    let bytes = mobilenet();
    let path = testkit::file("inspect", "mobilenet.onnx", &bytes);
    let r = onnx(inspect(&path).unwrap());
    println!("{r}");

    assert_eq!(r.inputs, [fixed("input", "f32", &[1, 3, 64, 64])]);
    assert_eq!(r.outputs, [fixed("logits", "f32", &[1, 10])]);
    assert_eq!(
        r.producer,
        format!("edgetune {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.opsets.len(), 1);
    assert_eq!(r.opsets[0].version, testmodels::OPSET);
    assert_eq!(r.file_bytes, bytes.len() as u64);

    // Operator counts and parameters against the protobuf, counted here.
    let p = proto(&bytes);
    let g = p.graph.as_ref().unwrap();
    let convs = g.node.iter().filter(|n| n.op_type == "Conv").count();
    assert!(convs > 10);
    assert_eq!(r.graph.op_counts["Conv"], convs);
    assert_eq!(r.graph.op_counts["Gemm"], 1);
    assert_eq!(r.graph.op_counts.values().sum::<usize>(), g.node.len());
    assert_eq!(r.graph.nodes, g.node.len());
    let params: u64 = g
        .initializer
        .iter()
        .map(|t| t.dims.iter().product::<i64>() as u64)
        .sum();
    assert_eq!(r.graph.parameters, params);
    assert_eq!(r.graph.parameters_by_dtype["f32"], params);

    let macs = r.graph.macs.expect("MACs of a fixed-shape CNN");
    assert!(macs > 1_000_000, "{macs}");
    assert_eq!(r.graph.macs_by_op.values().sum::<u64>(), macs);
    // 3×3 convolutions stay Conv; tract turns 1×1 ones and the Gemm into EinSum.
    assert!(r.graph.macs_by_op["Conv"] > 0 && r.graph.macs_by_op["EinSum"] > 64 * 10);

    let e = r.embedding.as_ref().unwrap();
    assert_eq!((e.tensor.as_str(), e.size), ("embedding", 64));
    assert!(r.embedding_note.is_none());
    let c = r.classifier.as_ref().unwrap();
    assert_eq!(
        (c.node.as_str(), c.op.as_str(), c.inputs, c.classes),
        ("classifier", "Gemm", 64, 10)
    );
    assert_eq!(r.quantization.state, "f32");
    assert!(r.quantization.ops.is_empty());

    // The human form names the same things.
    let text = r.to_string();
    for want in [
        "input f32 [1, 3, 64, 64]",
        "logits f32 [1, 10]",
        "embedding      embedding (64 values)",
        "classifier (Gemm, 64 → 10 classes)",
        "quantization   f32",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
}

/// Conv 3→8 3×3 on 8×8, depthwise 3×3 stride 2, pointwise 8→16, pooling, Gemm 16→4.
fn tiny() -> Vec<u8> {
    let mut g = Builder::new("tiny", 5);
    let x = g.input("x", DataType::Float, &[1, 3, 8, 8]);
    let x = g.conv("conv", &x, 3, 8, 3, 1);
    let x = g.relu("relu", &x);
    let x = g.depthwise("dw", &x, 8, 3, 2);
    let x = g.conv("pw", &x, 8, 16, 1, 1);
    let x = g.global_avg_pool("pool", &x);
    let x = g.flatten("embedding", &x);
    let y = g.gemm("classifier", &x, 16, 4);
    g.output(&y, "logits", DataType::Float, &[1, 4]);
    g.finish()
}

#[test]
fn macs_of_a_tiny_model_match_a_hand_count() {
    let r = onnx(inspect(&testkit::file("inspect", "tiny.onnx", &tiny())).unwrap());
    println!("{r}");
    // Output elements × (input channels / group) × kernel surface, and rows × columns.
    let conv = (8 * 8 * 8) * 3 * 9; // 13,824
    // Depthwise: 8 groups of one channel; 3×3 stride 2 with padding 1 halves 8×8.
    let dw = (8 * 4 * 4) * 9; // 1,152
    let pw = (16 * 4 * 4) * 8; // 2,048
    let gemm = 4 * 16; // 64
    assert_eq!(r.graph.macs, Some(conv + dw + pw + gemm));
    // Weights + Gemm bias.
    assert_eq!(r.graph.parameters, 8 * 3 * 9 + 8 * 9 + 16 * 8 + 4 * 16 + 4);
    assert_eq!(r.embedding.as_ref().unwrap().size, 16);
    // Pooling and the bias add are work too, but not MACs.
    assert!(r.graph.other_fma.is_some_and(|o| o > 0));
}

#[test]
fn bundle_report_matches_the_conversion() {
    let bytes = mobilenet();
    let model = testkit::file("inspect", "mobilenet-b.onnx", &bytes);
    let onnx_macs = onnx(inspect(&model).unwrap()).graph.macs.unwrap();
    let opts = Options {
        keep_head: true,
        ..Default::default()
    };
    let (b, _) = convert(&model, &opts).unwrap();
    let path = testkit::dir("inspect").join("mobilenet.bundle");
    b.write(&path).unwrap();
    let r = bundle(inspect(&path).unwrap());
    println!("{r}");

    let file_len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(r.file_bytes, file_len);
    assert_eq!(r.format_version, edgetune::bundle::VERSION);
    let s = r.sections;
    assert_eq!(
        s.manifest + s.backbone + s.head + edgetune::bundle::HEADER_LEN as u64 + 4,
        file_len
    );
    assert_eq!(s.backbone, b.backbone.len() as u64);
    // The converter gzips the backbone; inspect says how large its tar is.
    let tar = edgetune::nnef::nnef_tar(&b.backbone).unwrap().len() as u64;
    assert!(s.backbone < tar, "{} against {tar}", s.backbone);
    assert_eq!(s.backbone_inflated, Some(tar));
    assert!(r.to_string().contains("(gzipped NNEF, "), "{r}");
    assert!((1000..1_000_000).contains(&s.head), "{}", s.head);
    let head = format!(
        " B inflated), head {},{:03} B",
        s.head / 1000,
        s.head % 1000
    );
    assert!(r.to_string().contains(&head), "{r}");
    assert_eq!(r.manifest, b.manifest);
    assert_eq!(r.manifest.embedding.tensor, "embedding");
    assert_eq!(r.manifest.embedding.size, 64);
    assert_eq!(r.manifest.backbone.quantization, Quantization::F32);
    assert_eq!(r.manifest.input.shape, [1, 3, 64, 64]);

    let bb = r.backbone.as_ref().expect("the backbone loads");
    assert!(bb.op_counts.contains_key("Conv"), "{:?}", bb.op_counts);
    assert!(bb.parameters > 0);
    // The backbone is the model without its classifier (64 × 10 MACs).
    assert_eq!(bb.macs, Some(onnx_macs - 64 * 10));

    let h = r.head.as_ref().expect("keep_head");
    assert_eq!(
        (h.kind.as_str(), h.input, h.hidden, h.classes, h.capacity),
        ("linear", 64, 0, 10, 18)
    );
    assert_eq!(h.parameters, 18 * 65);
    assert_eq!((h.optimizer_state.as_deref(), h.steps), (None, 0));

    let text = r.to_string();
    for want in [
        "embedding      embedding (64 values)",
        "backbone       NNEF tar, f32",
        "head           linear 64 → 10 classes (capacity 18)",
        "classes        10: class0, class1",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }

    // Without a head.
    let (b, _) = convert(&model, &Options::default()).unwrap();
    let path = testkit::dir("inspect").join("mobilenet-nohead.bundle");
    b.write(&path).unwrap();
    let r = bundle(inspect(&path).unwrap());
    assert!(r.head.is_none());
    assert_eq!(r.sections.head, 0);
    assert!(r.to_string().contains("head           none"));
    assert!(
        r.to_string().contains(" B inflated), head 0 B (none)"),
        "{r}"
    );
}

#[test]
fn a_head_with_learner_state_reports_its_steps() {
    use edgetune::{Config, Dims, Head, Learner, Optimizer, persist};
    let dims = Dims::mlp(8, 4, 6);
    let mut head = Head::alloc(dims, 2).unwrap();
    head.init(1);
    let cfg = Config {
        optimizer: Optimizer::ADAMW,
        ..Config::DEFAULT
    };
    let mut learner = Learner::alloc(dims, cfg).unwrap();
    for i in 0..3 {
        learner.step(&mut head, &[0.5; 8], i % 2).unwrap();
    }
    let provenance = edgetune::bundle::Provenance::new("synthetic", "inspect test");
    let mut b = Bundle::features_only(8, ["a", "b"], provenance);
    b.head = Some(persist::encode_to_vec(&head, Some(&learner)).unwrap());
    let path = testkit::dir("inspect").join("features.bundle");
    b.write(&path).unwrap();
    let r = bundle(inspect(&path).unwrap());
    println!("{r}");
    assert!(r.backbone.is_none());
    let h = r.head.unwrap();
    assert_eq!(
        (h.kind.as_str(), h.input, h.hidden, h.classes, h.capacity),
        ("mlp", 8, 4, 2, 6)
    );
    assert_eq!((h.optimizer_state.as_deref(), h.steps), (Some("AdamW"), 3));
}

#[test]
fn models_without_a_classifier_are_still_inspected() {
    // A text encoder: two i64 inputs, per-token output, no classifier.
    let r = onnx(
        inspect(&testkit::file(
            "inspect",
            "bert.onnx",
            &testmodels::bert(&BertConfig::default()),
        ))
        .unwrap(),
    );
    println!("{r}");
    assert_eq!(r.inputs.len(), 2);
    assert_eq!(r.inputs[0], fixed("input_ids", "i64", &[1, 16]));
    assert!(r.embedding.is_none() && r.classifier.is_none());
    let note = r.embedding_note.as_deref().unwrap();
    assert!(note.contains("no classifier found"), "{note}");
    assert!(
        r.to_string()
            .contains("embedding      not found: no classifier found")
    );
    assert!(
        r.graph.macs.is_some_and(|m| m > 0),
        "{:?}",
        r.graph.macs_note
    );
    assert!(r.graph.op_counts.contains_key("MatMul"));
}

#[test]
fn qdq_models_are_reported_as_quantized() {
    let mut g = Builder::new("qdq", 1);
    let x = g.input("x", DataType::Float, &[1, 3, 8, 8]);
    let scale = g.scalar("scale", 0.05);
    let q = g.node("QuantizeLinear", "q", &[&x, &scale], &[]);
    let dq = g.node("DequantizeLinear", "dq", &[&q, &scale], &[]);
    let y = g.conv("conv", &dq, 3, 4, 3, 1);
    let y = g.node("Flatten", "flat", &[&y], &[("axis", Attr::Int(1))]);
    g.output(&y, "y", DataType::Float, &[1, 256]);
    let r = onnx(inspect(&testkit::file("inspect", "qdq.onnx", &g.finish())).unwrap());
    println!("{r}");
    assert_eq!(
        r.quantization.state,
        "QDQ (QuantizeLinear/DequantizeLinear)"
    );
    assert_eq!(r.quantization.ops["QuantizeLinear"], 1);
    assert_eq!(r.quantization.ops["DequantizeLinear"], 1);
}

#[test]
fn files_that_are_neither_give_clear_errors() {
    let mut rng = Rng::new(7);
    let noise: Vec<u8> = (0..4096).map(|_| (rng.unit() * 256.0) as u8).collect();
    let path = testkit::file("inspect", "noise.bin", &noise);
    let (msg, _) = error_of(&path);
    assert!(
        msg.contains("noise.bin")
            && msg.contains("neither an edgetune bundle")
            && msg.contains("nor an ONNX model"),
        "{msg}"
    );

    let (msg, _) = error_of(&testkit::file("inspect", "empty.onnx", &[]));
    assert!(msg.contains("empty.onnx") && msg.contains("empty"), "{msg}");

    let (msg, _) = error_of(&testkit::dir("inspect").join("missing.onnx"));
    assert!(
        msg.contains("cannot read") && msg.contains("missing.onnx"),
        "{msg}"
    );

    // A bundle cut short, one with a flipped bit, and the magic followed by garbage:
    // the bundle's own errors, never a panic.
    let model = testkit::file("inspect", "mobilenet-e.onnx", &mobilenet());
    let (b, _) = convert(&model, &Options::default()).unwrap();
    let good = b.to_bytes().unwrap();

    let (msg, e) = error_of(&testkit::file(
        "inspect",
        "truncated.bundle",
        &good[..good.len() / 2],
    ));
    assert!(
        msg.contains("invalid bundle")
            && msg.contains("truncated.bundle")
            && msg.contains("truncated:"),
        "{msg}"
    );
    assert!(e.is_some_and(|e| e.starts_with("Truncated")));

    let mut flipped = good.clone();
    flipped[good.len() / 3] ^= 0x20;
    let (msg, _) = error_of(&testkit::file("inspect", "flipped.bundle", &flipped));
    assert!(msg.contains("checksum mismatch"), "{msg}");

    let mut garbage = b"ETBUNDLE".to_vec();
    garbage.extend(&noise[..1000]);
    let (msg, e) = error_of(&testkit::file("inspect", "garbage.bundle", &garbage));
    // Garbage where the version goes reads as a version this build does not know.
    assert!(
        msg.contains("invalid bundle")
            && msg.contains("garbage.bundle")
            && msg.contains("this build reads up to 1"),
        "{msg}"
    );
    assert!(e.is_some_and(|e| e.starts_with("UnsupportedVersion")));
    // With a valid version the same garbage fails on its checksum.
    garbage[8..10].copy_from_slice(&1u16.to_le_bytes());
    let (msg, _) = error_of(&testkit::file("inspect", "garbage1.bundle", &garbage));
    assert!(msg.contains("checksum mismatch"), "{msg}");

    // Shorter than the magic but starting like it: a truncated bundle.
    let (msg, _) = error_of(&testkit::file("inspect", "short.bundle", b"ETBU"));
    assert!(msg.contains("truncated"), "{msg}");
}
