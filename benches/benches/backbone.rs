//! The backbone on this machine, for the project's MobileNet- and ResNet-shaped test
//! models at 224×224, f32 and int8, tract against ONNX Runtime on the same model and
//! input, on one thread and on all cores:
//!
//! - `backbone/load/*/bundle-nnef`: `Backbone::from_bundle` (parse the NNEF tar,
//!   optimize, plan), what a device does at start; against `onnx`: tract-onnx loading,
//!   optimizing and planning the original model (issue #3's target: bundle ≤ 40 ms where
//!   tract's ONNX load of MobileNetV2 took about 126 ms); and `onnx-ort`:
//!   `Backbone::from_onnx`, ONNX Runtime loading the original model cut at the same
//!   embedding (one intra-op thread, default graph optimizations).
//! - `backbone/embed/*/tract` and `…/ort`: one embedding on one thread, preprocessing
//!   included, by the bundle's tract plan and by that ONNX Runtime session;
//!   `tract-int8` and `ort-int8`: the same for the int8 bundle (`convert --quantize
//!   int8`, calibrated on 20 test images) and for ONNX Runtime running the same quantized
//!   ONNX graph. On this x86 machine int8 time is reported, not targeted: tract's fast
//!   integer kernels are ARM's (scripts/icount.sh counts those).
//! - `…/tract-all-cores`, `…/ort-all-cores`, `…/tract-int8-all-cores`,
//!   `…/ort-int8-all-cores`: the same on every core the process may use (the count is
//!   printed): tract through `Backbone::with_threads` (feature `threads`: its matrix
//!   products and some element-wise operators are split, the rest stays on the calling
//!   thread), ONNX Runtime with as many intra-op threads. Skipped on a one-core machine.
//!
//! `bundle-nnef-parse-only` is the NNEF parse alone: the rest of `bundle-nnef` is
//! tract's optimization and planning. ONNX Runtime comes from `ORT_DYLIB_PATH`, else
//! from where `scripts/setup.sh` puts it. The models are prepared by
//! `benches::models::Prepared`, as for `cargo run --release -p benches --bin compare`,
//! which puts the same embeddings side by side interleaved, with allocations.
//!
//!     cargo bench -p benches --bench backbone

use std::hint::black_box;

use benches::models::{self, Prepared};
use criterion::{Criterion, criterion_group, criterion_main};
use edgetune::backbone::{Backbone, OrtOptions};
use tract_onnx::prelude::*;

fn backbone(c: &mut Criterion) {
    let library = models::ort_library().unwrap_or_else(|e| panic!("{e:#}"));
    Backbone::ort_init(library).unwrap_or_else(|e| panic!("{e}"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("all cores: {cores} threads");
    let dir = edgetune_testkit::dir("bench");
    for name in models::NAMES {
        let p = Prepared::new(name, &dir).unwrap();
        let (bundle, qbundle) = (&p.bundle, &p.int8_bundle);
        eprintln!("{name} int8:\n{}", p.int8_report);
        eprintln!(
            "{name}: onnx {} bytes, bundle backbone {} bytes\n{}",
            p.onnx.len(),
            bundle.backbone.len(),
            p.report
        );

        let mut g = c.benchmark_group(format!("backbone/load/{name}"));
        g.sample_size(10);
        g.bench_function("bundle-nnef", |b| {
            b.iter(|| black_box(Backbone::from_bundle(bundle).unwrap()))
        });
        // Where the load time goes: inflating the section alone, then inflating and
        // parsing the tar, without optimizing and planning.
        g.bench_function("bundle-nnef-inflate-only", |b| {
            b.iter(|| black_box(edgetune::nnef::nnef_tar(&bundle.backbone).unwrap().len()))
        });
        g.bench_function("bundle-nnef-parse-only", |b| {
            b.iter(|| black_box(edgetune::nnef::read_model(&bundle.backbone).unwrap()))
        });
        g.bench_function("onnx", |b| {
            b.iter(|| {
                let m = tract_onnx::onnx().model_for_read(&mut &p.onnx[..]).unwrap();
                black_box(m.into_optimized().unwrap().into_runnable().unwrap())
            })
        });
        g.bench_function("onnx-ort", |b| {
            b.iter(|| black_box(Backbone::from_onnx(&p.cut, &bundle.manifest).unwrap()))
        });
        g.bench_function("bundle-int8", |b| {
            b.iter(|| black_box(Backbone::from_bundle(qbundle).unwrap()))
        });
        g.finish();

        let input = models::bench_input();
        let mut g = c.benchmark_group(format!("backbone/embed/{name}"));
        g.sample_size(20);
        for (threads, suffix) in [(1, ""), (cores, "-all-cores")] {
            if threads == 1 && !suffix.is_empty() {
                continue;
            }
            let ort = OrtOptions::default().intra_threads(threads);
            for (precision, bundle, cut) in [("", bundle, &p.cut), ("-int8", qbundle, &p.int8_cut)]
            {
                let device = Backbone::from_bundle(bundle)
                    .unwrap()
                    .with_threads(threads)
                    .unwrap();
                let peer = Backbone::from_onnx_with(cut, &bundle.manifest, &ort).unwrap();
                let mut out = vec![0.0; device.embedding_len()];
                let mut theirs = vec![0.0; peer.embedding_len()];
                device.embed(&input, &mut out).unwrap();
                peer.embed(&input, &mut theirs).unwrap();
                let diff = out
                    .iter()
                    .zip(&theirs)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                eprintln!(
                    "{name}{precision}{suffix}: max |tract - onnxruntime| = {diff:.2e} on the bench input"
                );
                g.bench_function(format!("tract{precision}{suffix}"), |b| {
                    b.iter(|| device.embed(black_box(&input), &mut out).unwrap())
                });
                g.bench_function(format!("ort{precision}{suffix}"), |b| {
                    b.iter(|| peer.embed(black_box(&input), &mut theirs).unwrap())
                });
            }
        }
        g.finish();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, backbone);
criterion_main!(benches);
