//! The backbone on this machine, one thread, for the project's MobileNet- and
//! ResNet-shaped test models at 224×224, f32 and int8, tract against ONNX Runtime on the
//! same model and input:
//!
//! - `backbone/load/*/bundle-nnef`: `Backbone::from_bundle` (parse the NNEF tar,
//!   optimize, plan), what a device does at start; against `onnx`: tract-onnx loading,
//!   optimizing and planning the original model (issue #3's target: bundle ≤ 40 ms where
//!   tract's ONNX load of MobileNetV2 took about 126 ms); and `onnx-ort`:
//!   `Backbone::from_onnx`, ONNX Runtime loading the original model cut at the same
//!   embedding (one intra-op thread, default graph optimizations).
//! - `backbone/embed/*/tract` and `…/ort`: one embedding, preprocessing included, by the
//!   bundle's tract plan and by that ONNX Runtime session; `tract-int8` and `ort-int8`:
//!   the same for the int8 bundle (`convert --quantize int8`, calibrated on 20 test
//!   images) and for ONNX Runtime running the same quantized ONNX graph. On this x86
//!   machine int8 time is reported, not targeted: tract's fast integer kernels are
//!   ARM's (scripts/icount.sh counts those).
//!
//! `bundle-nnef-parse-only` is the NNEF parse alone: the rest of `bundle-nnef` is
//! tract's optimization and planning. ONNX Runtime comes from `ORT_DYLIB_PATH`, else
//! from where `scripts/setup.sh` puts it.
//!
//!     cargo bench -p benches --bench backbone

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use edgetune::backbone::Backbone;
use edgetune::bundle::{ChannelOrder, Preprocess};
use finetune_head::convert::{Int8, Options, convert};
use finetune_head::onnxcut;
use finetune_head::quantize;
use finetune_head::testmodels::{self, MobileNetConfig, ResNetConfig};
use tract_onnx::prelude::*;

fn models() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "mobilenet",
            testmodels::mobilenet(&MobileNetConfig::default()),
        ),
        ("resnet", testmodels::resnet(&ResNetConfig::default())),
    ]
}

/// ONNX Runtime's library: `ORT_DYLIB_PATH`, else scripts/setup.sh's.
fn ort_library() -> PathBuf {
    match std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
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
    }
}

fn backbone(c: &mut Criterion) {
    Backbone::ort_init(ort_library()).unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("edgetune-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, onnx) in models() {
        let path = dir.join(format!("{name}.onnx"));
        std::fs::write(&path, &onnx).unwrap();
        let preprocess = Preprocess {
            scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            channel_order: ChannelOrder::Rgb,
            resize: None,
        };
        let opts = Options {
            preprocess: preprocess.clone(),
            ..Default::default()
        };
        let (bundle, report) = convert(&path, &opts).unwrap();
        let cut = onnxcut::cut_bytes(&onnx, &report.embedding).unwrap();
        // int8: 24 images, the last 4 held out by convert; ONNX Runtime gets the same
        // quantized graph, calibrated on the same 20.
        let images = testmodels::images(24, 224, 11);
        let int8 = Options {
            int8: Some(Int8::Samples(images.clone())),
            ..opts.clone()
        };
        let (qbundle, qreport) = convert(&path, &int8).unwrap();
        let shape = bundle.manifest.input.shape.clone();
        let calib: Vec<Vec<f32>> = images[..20]
            .iter()
            .map(|raw| {
                let mut x = vec![0.0; raw.len()];
                preprocess.apply(bundle.manifest.input.layout, &shape, raw, &mut x);
                x
            })
            .collect();
        let proto = <tract_onnx::pb::ModelProto as prost::Message>::decode(&onnx[..]).unwrap();
        let (qproto, _) = quantize::quantize(&proto, &report.embedding, &shape, &calib).unwrap();
        let qcut = onnxcut::cut(&qproto, &report.embedding).unwrap();
        let qcut = prost::Message::encode_to_vec(&qcut);
        eprintln!("{name} int8:\n{qreport}");
        eprintln!(
            "{name}: onnx {} bytes, bundle backbone {} bytes\n{report}",
            onnx.len(),
            bundle.backbone.len()
        );

        let mut g = c.benchmark_group(format!("backbone/load/{name}"));
        g.sample_size(10);
        g.bench_function("bundle-nnef", |b| {
            b.iter(|| black_box(Backbone::from_bundle(&bundle).unwrap()))
        });
        // Where the load time goes: parsing the tar alone, without optimizing and planning.
        g.bench_function("bundle-nnef-parse-only", |b| {
            b.iter(|| {
                black_box(
                    edgetune::nnef::framework()
                        .model_for_read(&mut &bundle.backbone[..])
                        .unwrap(),
                )
            })
        });
        g.bench_function("onnx", |b| {
            b.iter(|| {
                let m = tract_onnx::onnx().model_for_read(&mut &onnx[..]).unwrap();
                black_box(m.into_optimized().unwrap().into_runnable().unwrap())
            })
        });
        g.bench_function("onnx-ort", |b| {
            b.iter(|| black_box(Backbone::from_onnx(&cut, &bundle.manifest).unwrap()))
        });
        g.bench_function("bundle-int8", |b| {
            b.iter(|| black_box(Backbone::from_bundle(&qbundle).unwrap()))
        });
        g.finish();

        let device = Backbone::from_bundle(&bundle).unwrap();
        let ort = Backbone::from_onnx(&cut, &bundle.manifest).unwrap();
        let qdevice = Backbone::from_bundle(&qbundle).unwrap();
        let qort = Backbone::from_onnx(&qcut, &qbundle.manifest).unwrap();
        let input = testmodels::images(1, 224, 99).remove(0);
        let mut out = vec![0.0; device.embedding_len()];
        let mut peer = vec![0.0; ort.embedding_len()];
        device.embed(&input, &mut out).unwrap();
        ort.embed(&input, &mut peer).unwrap();
        let diff = out
            .iter()
            .zip(&peer)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{name}: max |tract - onnxruntime| = {diff:.2e} on the bench input");
        let mut g = c.benchmark_group(format!("backbone/embed/{name}"));
        g.sample_size(20);
        g.bench_function("tract", |b| {
            b.iter(|| device.embed(black_box(&input), &mut out).unwrap())
        });
        g.bench_function("ort", |b| {
            b.iter(|| ort.embed(black_box(&input), &mut peer).unwrap())
        });
        g.bench_function("tract-int8", |b| {
            b.iter(|| qdevice.embed(black_box(&input), &mut out).unwrap())
        });
        g.bench_function("ort-int8", |b| {
            b.iter(|| qort.embed(black_box(&input), &mut peer).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, backbone);
criterion_main!(benches);
