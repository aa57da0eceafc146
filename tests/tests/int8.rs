//! int8 conversion end to end: calibrate, quantize the ordinary convolutions, write the
//! NNEF through edgetune's registry, load it as a device does, and stay close to f32.

use std::path::PathBuf;

use edgetune::backbone::Backbone;
use edgetune::bundle::{Bundle, Preprocess, Quantization};
use edgetune_testkit as testkit;
use edgetune_testkit::testmodels::{self, MobileNetConfig, ResNetConfig};
use finetune_head::convert::{Int8, Options, convert};

#[test]
fn mobilenet_int8_is_small_and_close_to_f32() {
    let cfg = MobileNetConfig::small();
    let model = testkit::file("int8", "mobilenet.onnx", &testmodels::mobilenet(&cfg));
    let samples = testmodels::images(20, 64, 3);
    let opts = Options {
        preprocess: Preprocess::imagenet(),
        keep_head: true,
        int8: Some(Int8::Samples(samples.clone())),
        ..Default::default()
    };
    let (bundle, report) = convert(&model, &opts).unwrap();
    println!("{report}");
    let q = report.int8.as_ref().unwrap();
    assert_eq!(q.summary.calibration_samples, 16);
    assert_eq!(q.holdout_samples, 4);
    assert!(q.summary.quantized_convs > 0);
    assert!(q.summary.folded_batch_norms > 0);
    assert!(
        q.summary
            .kept_f32
            .iter()
            .any(|(_, why)| why.contains("depthwise")),
        "{:?}",
        q.summary.kept_f32
    );
    // The NNEF the device loads computes what tract computes on the quantized ONNX.
    assert!(
        report.parity_max_abs <= 1e-4,
        "parity {}",
        report.parity_max_abs
    );
    assert!(
        q.cosine_min.is_some_and(|c| c >= 0.99),
        "cosine to f32: {q:?}"
    );
    assert!(q.top1_agreement.is_some());
    // Smaller than f32 (a tiny test model is dominated by the f32 depthwise and stem
    // weights and by the graph text; the 224×224 figure is in the benchmark).
    assert!(report.backbone_bytes < q.f32_backbone_bytes);
    match bundle.manifest.backbone.quantization {
        Quantization::Int8 {
            calibration_samples,
            cosine_to_f32,
        } => {
            assert_eq!(calibration_samples, 16);
            assert_eq!(cosine_to_f32, q.cosine_mean);
        }
        other => panic!("manifest says {other:?}"),
    }

    // Round trip through the file, and the graph really runs integer convolutions.
    let bytes = bundle.to_bytes().unwrap();
    let bundle = Bundle::from_bytes(&bytes).unwrap();
    let nnef =
        String::from_utf8_lossy(&edgetune::nnef::nnef_tar(&bundle.backbone).unwrap()).into_owned();
    assert!(nnef.contains("edgetune_quantize_linear_i8"));
    assert!(
        nnef.contains("tract_core_qconv") || nnef.contains("tract_core_einsum_q"),
        "no integer convolution in the NNEF"
    );
    let backbone = Backbone::from_bundle(&bundle).unwrap();
    let mut e = vec![0.0; 64];
    backbone.embed(&samples[0], &mut e).unwrap();
    assert!(e.iter().all(|v| v.is_finite()) && e.iter().any(|v| *v != 0.0));
}

#[test]
fn resnet_int8_quantizes_its_3x3_convolutions() {
    let cfg = ResNetConfig::small();
    let model = testkit::file("int8", "resnet.onnx", &testmodels::resnet(&cfg));
    let opts = Options {
        preprocess: Preprocess::imagenet(),
        int8: Some(Int8::Samples(testmodels::images(10, 64, 5))),
        ..Default::default()
    };
    let (_, report) = convert(&model, &opts).unwrap();
    println!("{report}");
    let q = report.int8.unwrap();
    assert!(q.summary.quantized_convs >= 4, "{q:?}");
    assert_eq!(q.holdout_samples, 2);
    assert!(q.cosine_min.is_some_and(|c| c >= 0.99), "{q:?}");
    assert_eq!(q.top1_agreement, Some(1.0), "{q:?}");
}

#[test]
fn int8_needs_usable_samples() {
    let cfg = MobileNetConfig::tiny();
    let model = testkit::file("int8", "small.onnx", &testmodels::mobilenet(&cfg));
    let err = |samples: Vec<Vec<f32>>| {
        let opts = Options {
            int8: Some(Int8::Samples(samples)),
            ..Default::default()
        };
        format!("{:#}", convert(&model, &opts).unwrap_err())
    };
    let e = err(testmodels::images(1, 32, 1));
    assert!(e.contains("at least 2 calibration samples"), "{e}");
    let e = err(vec![vec![0.0; 10], vec![0.0; 10]]);
    assert!(e.contains("sample 0 has 10 values"), "{e}");
    let mut bad = testmodels::images(3, 32, 1);
    bad[1][7] = f32::NAN;
    let e = err(bad);
    assert!(e.contains("sample 1 holds NaN"), "{e}");
}

/// models/qdq/mobilenet-32-qdq.onnx: the small MobileNet-style test model quantized by
/// ONNX Runtime's `quantize_static` in QDQ form (models/qdq/make_qdq.py). It is taken
/// back to f32 and quantized again with its own quantizers' ranges, onto the integer path
/// `--quantize int8` uses, with no calibration samples.
#[test]
fn a_qdq_model_from_onnx_runtime_runs_on_integer_convolutions() {
    let model = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/qdq/mobilenet-32-qdq.onnx"
    ));
    let opts = Options {
        preprocess: Preprocess::imagenet(),
        keep_head: true,
        ..Default::default()
    };
    let (bundle, report) = convert(&model, &opts).unwrap();
    println!("{report}");
    let qdq = report.qdq.as_ref().expect("a QDQ model");
    assert_eq!((qdq.pairs, qdq.left), (32, 0), "{report}");
    // The exporter dropped the Relus before quantizers that clamp at 0: put back.
    assert!(qdq.clips > 0, "{report}");
    let q = report
        .int8
        .as_ref()
        .expect("quantized with the model's ranges");
    assert_eq!(
        (q.summary.qdq_ranges, q.summary.calibration_samples),
        (32, 0)
    );
    // Every ordinary convolution ONNX Runtime quantized, the stem included; the
    // depthwise ones stay f32.
    assert_eq!(q.summary.quantized_convs, 17, "{report}");
    assert!(q.summary.chained_convs > 0, "{report}");
    assert_eq!((q.holdout_samples, q.cosine_min), (0, None));
    assert!(
        report.parity_max_abs <= 1e-4,
        "parity {}",
        report.parity_max_abs
    );
    assert!(matches!(
        bundle.manifest.backbone.quantization,
        Quantization::Int8 {
            calibration_samples: 0,
            cosine_to_f32: None
        }
    ));
    let nnef =
        String::from_utf8_lossy(&edgetune::nnef::nnef_tar(&bundle.backbone).unwrap()).into_owned();
    assert!(nnef.contains("tract_core_qconv") || nnef.contains("tract_core_einsum_q"));
    // i8 activations, as --quantize int8 writes them; no u8 and no dequantized weights.
    assert!(nnef.contains("edgetune_quantize_linear_i8"));
    assert!(!nnef.contains("edgetune_quantize_linear_u8"));

    // It computes what ONNX Runtime's QDQ graph computes, up to a few quantization
    // steps: compare embeddings with tract's run of the QDQ file as it is (its
    // embedding before the quantizer that the bundle's Clip stands for).
    assert_eq!(report.embedding, "embedding.qdq_clip");
    let backbone = Backbone::from_bundle(&bundle).unwrap();
    let bytes = std::fs::read(&model).unwrap();
    let proto = <tract_onnx::pb::ModelProto as prost::Message>::decode(bytes.as_slice()).unwrap();
    let reference =
        finetune_head::convert::Reference::new(&proto, &[1, 3, 32, 32], "embedding").unwrap();
    for raw in testmodels::images(3, 32, 8) {
        let mut got = vec![0.0; report.embedding_size];
        backbone.embed(&raw, &mut got).unwrap();
        let mut x = vec![0.0; raw.len()];
        Preprocess::imagenet().apply(
            edgetune::bundle::Layout::Nchw,
            &[1, 3, 32, 32],
            &raw,
            &mut x,
        );
        let want = reference.embed(&x).unwrap();
        let dot: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
        let cos = dot / (norm(&got) * norm(&want));
        assert!(cos >= 0.99, "cosine {cos} to the QDQ graph");
    }
}

/// A fully connected layer inside the backbone (a bottleneck before the classifier) runs
/// on integers too: PyTorch's `Linear` as a `Gemm` with `transB = 1`, and a `Gemm` with
/// its weights as `[in, out]`, `alpha` and `beta`. Each stays close to f32.
#[test]
fn a_gemm_inside_the_backbone_is_quantized() {
    use testmodels::{Attr, Builder, DataType};
    for variant in ["transB", "alpha-beta"] {
        let mut g = Builder::new("bottleneck", 7);
        let x = g.input("input", DataType::Float, &[1, 3, 16, 16]);
        let c = g.conv("stem", &x, 3, 8, 3, 1);
        let r = g.relu("stem_relu", &c);
        let c = g.conv("conv", &r, 8, 16, 3, 2);
        let r = g.relu("conv_relu", &c);
        let p = g.global_avg_pool("pool", &r);
        let f = g.flatten("flat", &p);
        let b = if variant == "transB" {
            g.gemm("bottleneck", &f, 16, 32)
        } else {
            let w = g.weight("bottleneck", &[16, 32], 16);
            let bias = g.uniform("bottleneck.bias", &[32], 0.0, 0.1);
            let attrs = [("alpha", Attr::Float(0.5)), ("beta", Attr::Float(2.0))];
            g.node("Gemm", "bottleneck", &[&f, &w, &bias], &attrs)
        };
        let e = g.relu("embedding", &b);
        let y = g.gemm("classifier", &e, 32, 4);
        g.output(&y, "logits", DataType::Float, &[1, 4]);
        let model = testkit::file("int8", format!("gemm-{variant}.onnx"), &g.finish());
        let opts = Options {
            preprocess: Preprocess::imagenet(),
            int8: Some(Int8::Samples(testmodels::images(20, 16, 3))),
            ..Default::default()
        };
        let (bundle, report) = convert(&model, &opts).unwrap();
        println!("{variant}:\n{report}");
        assert_eq!(report.embedding, "embedding");
        let q = report.int8.as_ref().unwrap();
        assert_eq!(q.summary.quantized_matmuls, 1, "{variant}: {q:?}");
        assert_eq!(q.summary.quantized_convs, 2, "{variant}: {q:?}");
        assert!(q.summary.kept_f32.is_empty(), "{variant}: {q:?}");
        assert!(q.cosine_min.is_some_and(|c| c >= 0.99), "{variant}: {q:?}");
        let tar = edgetune::nnef::nnef_tar(&bundle.backbone).unwrap();
        let nnef = String::from_utf8_lossy(&tar);
        assert!(
            nnef.contains("tract_core_einsum_q"),
            "{variant}: no integer product"
        );
    }
}
