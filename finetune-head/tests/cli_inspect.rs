//! `finetune-head inspect` through the command line: exit codes, the human report on
//! stdout, `--json` that parses back, and errors on stderr. The numbers themselves are
//! checked against the models in `tests/tests/inspect.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgetune_testkit as testkit;
use edgetune_testkit::testmodels::{self, Builder, DataType, MobileNetConfig};
use finetune_head::convert::{Options, convert};
use prost::Message;
use serde_json::{Value, json};
use tract_onnx::pb::ModelProto;
use tract_onnx::pb::tensor_shape_proto::dimension;
use tract_onnx::pb::type_proto;

fn cli(args: &[&str], path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_finetune-head"))
        .args(args)
        .arg(path)
        .output()
        .expect("running finetune-head")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}, stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json_of(path: &Path) -> Value {
    let out = stdout(&cli(&["inspect", "--json"], path));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: not JSON:\n{out}"))
}

fn mobilenet() -> PathBuf {
    let cfg = MobileNetConfig::small();
    testkit::file(
        "cli-inspect",
        "mobilenet.onnx",
        &testmodels::mobilenet(&cfg),
    )
}

#[test]
fn inspect_prints_a_report_and_json() {
    let model = mobilenet();
    let text = stdout(&cli(&["inspect"], &model));
    for want in [
        "(ONNX model, ",
        "inputs         input f32 [1, 3, 64, 64]",
        "embedding      embedding (64 values)",
        "quantization   f32",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }

    let v = json_of(&model);
    assert_eq!(v["kind"], "onnx");
    assert_eq!(v["inputs"][0]["name"], "input");
    assert_eq!(v["inputs"][0]["dtype"], "f32");
    assert_eq!(v["inputs"][0]["shape"], json!([1, 3, 64, 64]));
    assert_eq!(v["outputs"][0]["name"], "logits");
    assert_eq!(v["embedding"], json!({"tensor": "embedding", "size": 64}));
    assert_eq!(v["classifier"]["node"], "classifier");
    assert_eq!(v["classifier"]["classes"], 10);
    assert_eq!(v["quantization"]["state"], "f32");
    assert!(v["graph"]["op_counts"]["Conv"].as_u64().unwrap() > 0);
    assert!(v["graph"]["parameters"].as_u64().unwrap() > 0);
    let macs = v["graph"]["macs"].as_u64().unwrap();
    assert!(macs > 0);

    let opts = Options {
        keep_head: true,
        ..Default::default()
    };
    let (bundle, _) = convert(&model, &opts).unwrap();
    // The extension says nothing: inspect reads the content.
    let path = testkit::dir("cli-inspect").join("mobilenet.onnx.bak");
    bundle.write(&path).unwrap();
    let text = stdout(&cli(&["inspect"], &path));
    assert!(text.contains("(edgetune bundle, format 1, "), "{text}");
    let v = json_of(&path);
    assert_eq!(v["kind"], "bundle");
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["manifest"]["embedding"]["size"], 64);
    assert_eq!(v["manifest"]["backbone"]["quantization"]["kind"], "f32");
    assert_eq!(v["manifest"]["classes"].as_array().unwrap().len(), 10);
    assert_eq!(v["head"]["kind"], "linear");
    assert_eq!(v["head"]["classes"], 10);
    assert_eq!(v["head"]["capacity"], 18);
    assert!(v["sections"]["backbone"].as_u64().unwrap() > 0);
    assert_eq!(v["backbone"]["macs"].as_u64().unwrap(), macs - 64 * 10);
}

#[test]
fn inspect_fails_with_the_reason_on_stderr() {
    let path = testkit::file(
        "cli-inspect",
        "notes.txt",
        b"these are not the weights you are looking for\n",
    );
    let o = cli(&["inspect"], &path);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("finetune-head: ")
            && err.contains("notes.txt")
            && err.contains("neither an edgetune bundle")
            && err.contains("nor an ONNX model"),
        "{err}"
    );

    let mut bundle = b"ETBUNDLE".to_vec();
    bundle.extend_from_slice(&1u16.to_le_bytes());
    let o = cli(
        &["inspect", "--json"],
        &testkit::file("cli-inspect", "short.bundle", &bundle),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("invalid bundle") && err.contains("truncated"),
        "{err}"
    );
}

/// A model whose input declares a symbolic batch `N`.
fn symbolic_batch() -> Vec<u8> {
    let mut g = Builder::new("tiny", 5);
    let x = g.input("x", DataType::Float, &[1, 3, 8, 8]);
    let x = g.conv("conv", &x, 3, 8, 3, 1);
    let x = g.global_avg_pool("pool", &x);
    let x = g.flatten("embedding", &x);
    let y = g.gemm("classifier", &x, 8, 4);
    g.output(&y, "logits", DataType::Float, &[1, 4]);
    let mut proto = ModelProto::decode(g.finish().as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    for vi in graph.input.iter_mut().chain(graph.output.iter_mut()) {
        let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_mut().unwrap().value.as_mut()
        else {
            unreachable!()
        };
        t.shape.as_mut().unwrap().dim[0].value = Some(dimension::Value::DimParam("N".into()));
    }
    proto.encode_to_vec()
}

#[test]
fn a_symbolic_batch_is_shown_by_name_and_counted_as_one() {
    let v = json_of(&testkit::file(
        "cli-inspect",
        "symbolic.onnx",
        &symbolic_batch(),
    ));
    assert_eq!(v["inputs"][0]["shape"], json!(["N", 3, 8, 8]));
    assert_eq!(v["outputs"][0]["shape"], json!(["N", 4]));
    // (8×8×8) outputs × 3 channels × 3×3, and 4 × 8 for the classifier.
    assert_eq!(v["graph"]["macs"], 8 * 8 * 8 * 3 * 9 + 4 * 8);
    assert_eq!(v["graph"]["macs_note"], "with N=1");
    assert_eq!(v["embedding"]["size"], 8);
}

#[test]
fn help_names_the_subcommands() {
    let o = Command::new(env!("CARGO_BIN_EXE_finetune-head"))
        .arg("--help")
        .output()
        .unwrap();
    let text = stdout(&o);
    for sub in ["convert", "train", "eval", "inspect", "demo"] {
        assert!(text.contains(sub), "{sub} missing from: {text}");
    }
}
