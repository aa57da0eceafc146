//! The device program's request path on this machine, one thread, for the project's
//! MobileNet-shaped test model (224×224 RGB, 1,280-value embedding) with a 10-class
//! linear head (room for 16):
//!
//! - `serve/request/predict-png-{f32,int8}`: `Service::handle_line` of
//!   `{"input": "x.png"}`, what a client of `edgetune serve` waits for: read and decode
//!   the PNG, resize, the backbone, the head, the JSON answer. The answers' own
//!   breakdown (input, backbone, head; medians) is printed to stderr.
//! - `serve/head/observe`: `Engine::observe`, the head's prediction of one embedding
//!   and the bookkeeping of the sample.
//! - `serve/learn/observe+label`: `Engine::observe` then `Engine::label` of that
//!   sample: the update (`EngineConfig::DEFAULT`: 3 Adam steps of the sample and 24
//!   replayed ones), the snapshot for the regression guard and the guard's check (every
//!   4th label of a class is held out instead).
//! - `serve/persist/write-full-buffer`: `StateDir::write` of a state whose replay buffer
//!   is full (256 × 1,280 values): encode, write a new file, fsync, rename, fsync the
//!   directory, delete the oldest.
//! - `serve/request/label-persist`: `Service::handle_line` of a label with
//!   `--persist-interval 0`: learning and the write, as a client waits for them.
//!
//! Heap allocations in `observe` + `label` after warm-up are counted and printed (the
//! test `predicting_and_learning_allocate_nothing_after_warm_up` asserts 0; `cargo run
//! --release -p benches --bin compare` reports them beside the head's).
//!
//!     cargo bench -p benches --bench serve

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use edgetune::bundle::{ChannelOrder, Preprocess};
use edgetune::rng::Rng;
use edgetune::{Dims, Head, Learner, persist};
use edgetune_device::engine::{Engine, EngineConfig};
use edgetune_device::service::{Options, Service};
use edgetune_device::state::{Origin, StateDir};
use edgetune_testkit::testmodels::{self, MobileNetConfig};
use finetune_head::convert::{Int8, convert};

struct Counting;
thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

const DIM: usize = 1280;
const CLASSES: usize = 10;

fn embedding(rng: &mut Rng, class: usize, x: &mut [f32]) {
    for (i, v) in x.iter_mut().enumerate() {
        *v = rng.uniform(0.0, 0.2) + if i % CLASSES == class { 1.0 } else { 0.0 };
    }
}

/// An engine with 10 learned classes and a full replay buffer.
fn warm_engine() -> Engine {
    let mut head = Head::alloc(Dims::linear(DIM, 16), 0).unwrap();
    head.init(1);
    let mut e = Engine::new(head, EngineConfig::DEFAULT).unwrap();
    let mut rng = Rng::new(2);
    let mut x = vec![0.0; DIM];
    for k in 0..400 {
        let c = k % CLASSES;
        embedding(&mut rng, c, &mut x);
        let s = e.observe(&x).unwrap().sample;
        e.label(Some(s), c.min(e.classes())).unwrap();
    }
    e
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn serve(c: &mut Criterion) {
    let dir = edgetune_testkit::dir("bench-serve");

    // Learning core.
    let mut engine = warm_engine();
    let mut rng = Rng::new(3);
    let mut x = vec![0.0; DIM];
    embedding(&mut rng, 3, &mut x);
    let mut g = c.benchmark_group("serve");
    g.bench_function("head/observe", |b| {
        b.iter(|| black_box(engine.observe(&x).unwrap()))
    });
    let mut k = 0;
    g.bench_function("learn/observe+label", |b| {
        b.iter(|| {
            k += 1;
            let s = engine.observe(&x).unwrap().sample;
            black_box(engine.label(Some(s), k % CLASSES).unwrap())
        })
    });
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    for k in 0..100 {
        let s = engine.observe(&x).unwrap().sample;
        engine.label(Some(s), k % CLASSES).unwrap();
    }
    ARMED.with(|a| a.set(false));
    eprintln!(
        "heap allocations in 100 observe+label after warm-up: {}",
        COUNT.with(Cell::get)
    );

    // Persistence, fsync included.
    let state = engine.to_state(
        0,
        &(0..CLASSES).map(|c| c.to_string()).collect::<Vec<_>>(),
        &[],
        Origin::Learned,
    );
    let states = StateDir::open(&dir.join("states"), true, 5).unwrap();
    let bytes = edgetune_device::state::encode(1, &state).len();
    eprintln!("state with a full replay buffer: {bytes} bytes");
    g.sample_size(30);
    g.bench_function("persist/write-full-buffer", |b| {
        b.iter(|| states.write(&state).unwrap())
    });
    drop(g);

    // Whole requests on a MobileNet-shaped bundle, f32 and int8.
    let onnx = dir.join("mobilenet.onnx");
    let cfg = MobileNetConfig {
        embedding: DIM,
        ..MobileNetConfig::default()
    };
    std::fs::write(&onnx, testmodels::mobilenet(&cfg)).unwrap();
    let opts = finetune_head::convert::Options {
        preprocess: Preprocess {
            scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            channel_order: ChannelOrder::Rgb,
            resize: None,
        },
        ..Default::default()
    };
    let images = testmodels::images(24, 224, 11);
    let png = dir.join("x.png");
    let px: Vec<u8> = images[0]
        .iter()
        .map(|v| v.clamp(0.0, 255.0) as u8)
        .collect();
    // images() are NCHW raw pixels; the PNG is the same picture, interleaved.
    let hw = 224 * 224;
    let rgb: Vec<u8> = (0..hw)
        .flat_map(|i| [px[i], px[hw + i], px[2 * hw + i]])
        .collect();
    image::RgbImage::from_raw(224, 224, rgb)
        .unwrap()
        .save(&png)
        .unwrap();
    let int8 = finetune_head::convert::Options {
        int8: Some(Int8::Samples(images)),
        ..opts.clone()
    };
    for (name, o) in [("f32", opts), ("int8", int8)] {
        let (mut bundle, _) = convert(&onnx, &o).unwrap();
        let mut head = Head::alloc(Dims::linear(DIM, 16), CLASSES).unwrap();
        head.init(4);
        bundle.head = Some(persist::encode_to_vec(&head, None::<&Learner<[f32; 0]>>).unwrap());
        bundle.manifest.classes = (0..CLASSES).map(|c| format!("class {c}")).collect();
        let path = dir.join(format!("mobilenet-{name}.etb"));
        bundle.write(&path).unwrap();
        let state = dir.join(format!("state-{name}"));
        let serve_opts = Options {
            persist_interval: Duration::ZERO,
            ..Options::default()
        };
        let (mut service, _) = Service::open(&path, &state, serve_opts).unwrap();
        let request = serde_json::json!({ "input": png }).to_string();
        let mut parts = (vec![], vec![], vec![]);
        let mut g = c.benchmark_group("serve/request");
        g.sample_size(20);
        g.bench_function(format!("predict-png-{name}"), |b| {
            b.iter(|| {
                let a = service.handle_line(&request);
                parts.0.push(a["ms"]["input"].as_f64().unwrap());
                parts.1.push(a["ms"]["backbone"].as_f64().unwrap());
                parts.2.push(a["ms"]["head"].as_f64().unwrap());
                black_box(a)
            })
        });
        eprintln!(
            "{name}: per request (median ms): input {:.3}, backbone {:.3}, head {:.4}",
            median(parts.0),
            median(parts.1),
            median(parts.2)
        );
        if name == "f32" {
            // The same sample labeled again and again: learning and the write only.
            let s = service.handle_line(&request)["sample"].clone();
            let label = serde_json::json!({ "label": "class 3", "sample": s }).to_string();
            g.bench_function("label-persist", |b| {
                b.iter(|| black_box(service.handle_line(&label)))
            });
        }
        drop(g);
        drop(service);
        let _ = std::fs::remove_dir_all(Path::new(&state));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, serve);
criterion_main!(benches);
