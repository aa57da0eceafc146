//! Host training (issue #4), on this machine:
//!
//! - `train/fit/linear 10000x1280 c10 N thread(s)`: `finetune_head::train::fit_with` with the default
//!   configuration (linear head, Adam, batch 32, cosine schedule, patience 10) on 10,000
//!   synthetic embeddings of 1,280 values in 10 classes (overlapping Gaussian clusters,
//!   2,000 for validation), to its early stop, on 1 and 2 threads (the same head either
//!   way). Target: ≤ 1 s. The epochs it ran are printed once before the measurement.
//! - `train/embed/...`: embedding throughput of `finetune_head::embed::Embedder` on the
//!   shipped digits CNN (f32 and int8 backbone) for all 1,797 UCI digits as 8×8 PNG
//!   images (read, decoded, embedded), no cache, with 1 and 2 threads. Criterion reports elements/s = samples/s.
//!
//!     cargo bench -p benches --bench train

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgetune::bundle::Preprocess;
use edgetune::rng::Rng;
use finetune_head::dataset::{Input, Item, tensor_hash};
use finetune_head::embed::{Embedder, Job};
use finetune_head::train::{Embedded, HeadConfig, fit, fit_with};

fn clusters(n: usize, d: usize, c: usize, seed: u64) -> Embedded {
    let mut centers = Rng::new(99);
    let means: Vec<Vec<f32>> = (0..c)
        .map(|_| (0..d).map(|_| centers.uniform(-1.0, 1.0)).collect())
        .collect();
    let mut rng = Rng::new(seed);
    let mut e = Embedded::default();
    for i in 0..n {
        let y = i % c;
        e.x.push(
            means[y]
                .iter()
                .map(|m| m + 4.0 * rng.uniform(-1.0, 1.0))
                .collect(),
        );
        e.y.push(y);
    }
    e
}

fn fit_bench(c: &mut Criterion) {
    let (train, val) = (clusters(10_000, 1280, 10, 1), clusters(2_000, 1280, 10, 2));
    let cfg = HeadConfig::default();
    let f = fit(&cfg, &train, &val, 10, 18).unwrap();
    println!(
        "fit: {} epochs, best {}, validation accuracy {:.4}",
        f.history.len(),
        f.best_epoch,
        f.val_accuracy
    );
    let mut g = c.benchmark_group("train/fit");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for threads in [1, 2] {
        g.bench_function(format!("linear 10000x1280 c10 {threads} thread(s)"), |b| {
            b.iter(|| {
                black_box(
                    fit_with(&cfg, &train, &val, 10, 18, threads)
                        .unwrap()
                        .best_epoch,
                )
            })
        });
    }
    g.finish();
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn embed_bench(c: &mut Criterion) {
    let digits =
        finetune_head::data::read_csv(&models().join("digits/digits.csv.gz"), 1.0).unwrap();
    let dir = edgetune_testkit::dir("bench-embed");
    let mut items = Vec::new();
    for (i, x) in digits.x.iter().enumerate() {
        let px: Vec<u8> = x.iter().map(|v| (v * 255.0 / 16.0).round() as u8).collect();
        let path = dir.join(format!("{i}.png"));
        image::GrayImage::from_raw(8, 8, px)
            .unwrap()
            .save(&path)
            .unwrap();
        items.push(Item {
            origin: path.display().to_string(),
            label: digits.y[i].to_string(),
            hash: tensor_hash(x),
            input: Input::Image(path),
            split: None,
        });
    }
    let calib: Vec<Vec<f32>> = digits
        .x
        .iter()
        .skip(400)
        .take(100)
        .map(|x| x.iter().map(|v| (v * 255.0 / 16.0).round()).collect())
        .collect();
    let model = models().join("digits-cnn/digits-cnn-0to4.onnx");
    let base = finetune_head::convert::Options {
        preprocess: Preprocess {
            scale: 1.0 / 255.0,
            ..Preprocess::default()
        },
        ..Default::default()
    };
    let int8 = finetune_head::convert::Options {
        int8: Some(finetune_head::convert::Int8::Samples(calib)),
        ..base.clone()
    };
    let jobs: Vec<Job> = items.iter().map(|item| Job { item, copy: 0 }).collect();
    let mut g = c.benchmark_group("train/embed");
    g.throughput(Throughput::Elements(jobs.len() as u64));
    g.sample_size(10);
    for (name, opts) in [("f32", &base), ("int8", &int8)] {
        let (bundle, _) = finetune_head::convert::convert(&model, opts).unwrap();
        for threads in [1, 2] {
            g.bench_function(format!("digits-cnn {name} {threads} thread(s)"), |b| {
                b.iter(|| {
                    let mut e = Embedder::new(&bundle, threads, None);
                    e.progress = false;
                    black_box(e.run(&jobs, "bench").unwrap().1.computed)
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, fit_bench, embed_bench);
criterion_main!(benches);
