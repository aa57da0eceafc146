//! Writes the fuzz targets' seed corpora (`fuzz/corpus/TARGET/`) with the project's own
//! encoders, so that libFuzzer starts from valid files of every kind and mutates from
//! there. Run from `fuzz/` after a format changes: `cargo run --bin seeds`. Each seed
//! starts with the control byte (`edgetune_fuzz::control`): 1, "fix the checksums",
//! so that mutations of a seed get past them.

use std::fs;
use std::io::Cursor;
use std::path::Path;

use edgetune::bundle::{Bundle, Provenance};
use edgetune_core::flash::Store;
use edgetune_core::slda::{Diagonal, Full, Slda};
use edgetune_core::{Config, Dims, Head, Learner, Optimizer, persist};
use edgetune::trust::SecretKey;
use edgetune_fuzz::Ram;
use edgetune_fuzz::fleet::FleetState;
use edgetune_fuzz::state::{
    self, BufferImage, Counters, DeviceState, FleetPart, Learning, Origin, Samples,
};
use image::{ImageFormat, RgbImage};
use npyz::{AutoSerialize, Order, WriteOptions, WriterBuilder};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let mut add = |target: &'static str, name: String, control: u8, bytes: &[u8]| {
        let mut seed = vec![control];
        seed.extend_from_slice(bytes);
        seeds.push((target, name, seed));
    };

    for (name, record) in records() {
        add("persist", name.clone(), 1, &record);
        let mut bundle = Bundle::features_only(3, ["cat", "dog", "owl", "bee"], provenance());
        let head = persist::decode_head(&record).expect("a seed record decodes");
        if head.dims().hidden == 0 && head.dims().capacity == 4 {
            bundle.head = Some(record.clone());
            bundle.manifest.classes.truncate(head.classes());
            add(
                "bundle",
                name,
                1,
                &bundle.to_bytes().expect("a seed bundle encodes"),
            );
        }
    }
    let bare = Bundle::features_only(5, ["a", "b"], provenance());
    add("bundle", "no-head".into(), 1, &bare.to_bytes().unwrap());

    for (name, image) in flash_images() {
        // The target pads the image with erased bytes: leave them out.
        let end = image.iter().rposition(|&b| b != 0xFF).map_or(0, |i| i + 1);
        add("flash", name, 1, &image[..end]);
    }

    add(
        "state",
        "learned".into(),
        1,
        &state::encode(12, &device_state()),
    );
    let mut reset = device_state();
    reset.head = None;
    reset.learning = Learning::default();
    reset.origin = Origin::Rollback(11);
    add("state", "rollback".into(), 1, &state::encode(13, &reset));

    for (name, control, bytes) in npys() {
        add("npy", name, control, &bytes);
    }
    for (name, control, bytes) in images() {
        add("image", name, control, &bytes);
    }
    for (name, bytes) in fleet_states() {
        add("fleet", name, 1, &bytes);
    }
    // Sentences: the tricky strings whose ids the Python library gave
    // (`models/text/expected_ids.json`), at 64 tokens (control 0) and at 8 (2).
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("../../../models/text/expected_ids.json"))
            .expect("models/text/expected_ids.json");
    let cases = expected["cases"].as_array().expect("its cases");
    for (i, case) in cases.iter().enumerate() {
        let text = case["text"].as_str().expect("a case's text");
        add("text", format!("sentence-{i}"), 0, text.as_bytes());
        add("text", format!("sentence-{i}-short"), 2, text.as_bytes());
    }
    let shipped = include_str!("../../../models/text/tokenizer.json");
    // The tokenizer target has no control byte: the whole input is the file.
    seeds.push(("tokenizer", "tokenizer-json".into(), shipped.as_bytes().to_vec()));
    for (i, line) in REQUESTS.iter().enumerate() {
        // The request target has no control byte: the whole input is the line.
        seeds.push(("request", format!("line-{i}"), line.as_bytes().to_vec()));
    }

    for (target, name, bytes) in &seeds {
        let dir = root.join(target);
        fs::create_dir_all(&dir).expect("creating the corpus directory");
        fs::write(dir.join(name), bytes).expect("writing a seed");
    }
    println!("{} seeds in {}", seeds.len(), root.display());
}

/// Fleet states as a device exports them and as the server sends them (signed by a key
/// made for the run: the signed seed differs from run to run).
fn fleet_states() -> Vec<(String, Vec<u8>)> {
    let d = 4;
    let mut scatter = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            scatter[i * d + j] = if i == j { 3.0 } else { 0.25 * (i + j) as f32 };
        }
    }
    let state = FleetState {
        backbone: 0x5eed_f1ee,
        dim: d,
        classes: vec!["cat".into(), "défaut 7".into(), "owl".into()],
        center: vec![0.1, -0.2, 0.3, 0.0],
        scale: vec![1.0, 2.0, 0.5, 1.5],
        counts: vec![3.0, 1.0, 5.0],
        means: (0..3 * d).map(|i| i as f32 * 0.25 - 1.0).collect(),
        scatter,
        signature: None,
    };
    let key = SecretKey::generate().expect("a key for the signed seed");
    let one = FleetState {
        classes: vec!["cat".into()],
        counts: vec![1.0],
        means: state.means[..d].to_vec(),
        ..state.clone()
    };
    vec![
        ("three-classes".into(), state.encode()),
        ("signed".into(), state.encode_signed(&key)),
        ("one-class".into(), one.encode()),
    ]
}

fn provenance() -> Provenance {
    Provenance::new("fuzz seed", "edgetune-fuzz seeds")
}

/// Records of every head kind and learner kind, after some learning.
fn records() -> Vec<(String, Vec<u8>)> {
    let x = |i: usize, d: usize| -> Vec<f32> {
        (0..d).map(|j| ((i * 7 + j * 3) % 5) as f32 - 2.0).collect()
    };
    let mut out = Vec::new();
    let optimizers = [
        (
            "sgd",
            Optimizer::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
        ),
        ("momentum", Optimizer::SGD_MOMENTUM),
        ("adam", Optimizer::ADAM),
        ("adamw", Optimizer::ADAMW),
    ];
    for (kind, dims) in [("linear", Dims::linear(3, 4)), ("mlp", Dims::mlp(3, 5, 4))] {
        let mut head = Head::alloc(dims, 3).unwrap();
        head.init(7);
        let none = None::<&Learner<[f32; 0]>>;
        out.push((
            format!("{kind}-alone"),
            persist::encode_to_vec(&head, none).unwrap(),
        ));
        for (name, optimizer) in optimizers {
            let cfg = Config {
                optimizer,
                seed: 3,
                ..Config::DEFAULT
            };
            let mut learner = Learner::alloc(dims, cfg).unwrap();
            let mut head = head.clone();
            for i in 0..4 {
                learner.step(&mut head, &x(i, dims.input), i % 3).unwrap();
            }
            let record = persist::encode_to_vec(&head, Some(&learner)).unwrap();
            out.push((format!("{kind}-{name}"), record));
        }
    }
    let mut head = Head::alloc(Dims::linear(3, 4), 2).unwrap();
    head.init(5);
    let mut full = Slda::<Vec<f32>, Full>::alloc(3, 4, 1e-3).unwrap();
    let mut diagonal = Slda::<Vec<f32>, Diagonal>::new(
        3,
        4,
        1e-3,
        vec![0.0; Slda::<Vec<f32>, Diagonal>::storage_len(3, 4)],
    )
    .unwrap();
    for i in 0..6 {
        full.learn(&x(i, 3), i % 2).unwrap();
        diagonal.learn(&x(i, 3), i % 2).unwrap();
    }
    out.push((
        "slda-full".into(),
        persist::encode_to_vec(&head, Some(&full)).unwrap(),
    ));
    out.push((
        "slda-diagonal".into(),
        persist::encode_to_vec(&head, Some(&diagonal)).unwrap(),
    ));
    out
}

/// Flash images after one save (slot A only) and after two (both slots).
fn flash_images() -> Vec<(String, Vec<u8>)> {
    let dims = Dims::linear(3, 4);
    let cfg = Config {
        optimizer: Optimizer::ADAM,
        ..Config::DEFAULT
    };
    let mut head = Head::alloc(dims, 2).unwrap();
    head.init(1);
    let mut learner = Learner::alloc(dims, cfg).unwrap();
    let mut scratch = [0u8; 24];
    let mut store = Store::new(Ram(vec![0xFF; 2048]), 0, 2048).unwrap();
    let mut out = Vec::new();
    for saves in 1..=2 {
        learner
            .step(&mut head, &[1.0, -1.0, 0.5], saves % 2)
            .unwrap();
        store.save(&head, Some(&learner), &mut scratch).unwrap();
        out.push((format!("saves-{saves}"), store.flash().0.clone()));
    }
    out
}

fn device_state() -> DeviceState {
    let mut head = Head::alloc(Dims::linear(3, 4), 2).unwrap();
    head.init(9);
    DeviceState {
        backbone: 0x5eed,
        classes: vec!["cat".into(), "dog".into()],
        head: Some(persist::encode_to_vec(&head, None::<&Learner<[f32; 0]>>).unwrap()),
        buffer: BufferImage {
            slots: vec![(0, 0), (1, 1)],
            class_order: vec![0, 1],
            next_seq: 2,
            features: vec![0.5, -1.0, 2.0, 0.0, 1.5, -0.25],
        },
        means: vec![0.25; 6],
        guard: Samples {
            labels: vec![1],
            features: vec![1.0, 2.0, 3.0],
        },
        replay_rng: 99,
        counters: Counters {
            predictions: 5,
            labels: 3,
            updates: 2,
            refused: 1,
            labels_per_class: vec![2, 1],
            next_sample: 6,
        },
        guard_accuracy: Some(1.0),
        latency_us: vec![1200, 900],
        origin: Origin::Learned,
        learning: Learning {
            slda: vec![1.0, 2.0],
            calibration: (1, 1, 1.5, vec![0.0, 2.0, 0.5, 0.25]),
            prequential: (3, 4),
        },
        fleet: FleetPart {
            others: vec![3.0, 4.0],
            others_labels: 12,
            own_v3: Vec::new(),
            own_bias: 2.5,
        },
    }
}

fn npy<T: AutoSerialize + Copy>(shape: &[u64], order: Order, data: &[T]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut writer = WriteOptions::<T>::new()
        .default_dtype()
        .shape(shape)
        .order(order)
        .writer(&mut bytes)
        .begin_nd()
        .unwrap();
    for v in data {
        writer.push(v).unwrap();
    }
    writer.finish().unwrap();
    bytes
}

/// Arrays of every element type read, both orders, one sample and batches. The control
/// byte picks the target's input: bit 1 the image input `[1, 3, 2, 2]`, bits 2–4 how
/// many samples are wanted (here 2).
fn npys() -> Vec<(String, u8, Vec<u8>)> {
    let c = Order::C;
    let f = Order::Fortran;
    let features: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 3.0).collect();
    let pixels: Vec<u8> = (0..24).map(|i| i * 10).collect();
    let wide = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    vec![
        ("f32-one".into(), 4, npy(&[1, 6], c, &features[..6])),
        ("f32-flat".into(), 4, npy(&[6], c, &features[..6])),
        ("f64-batch".into(), 4, npy(&[2, 6], c, &wide(&features))),
        ("f32-fortran".into(), 4, npy(&[2, 6], f, &features)),
        (
            "i32-batch".into(),
            4,
            npy(&[2, 6], c, &(0..12).collect::<Vec<i32>>()),
        ),
        (
            "i64-one".into(),
            4,
            npy(&[1, 6], c, &(0..6).collect::<Vec<i64>>()),
        ),
        ("u8-image".into(), 6, npy(&[2, 3, 2, 2], c, &pixels)),
        (
            "u8-image-fortran".into(),
            6,
            npy(&[1, 3, 2, 2], f, &pixels[..12]),
        ),
    ]
}

fn encoded(img: &image::DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

/// Small PNG and JPEG images, RGB and luma, for both inputs (control bit 0).
fn images() -> Vec<(String, u8, Vec<u8>)> {
    let rgb = image::DynamicImage::ImageRgb8(RgbImage::from_fn(12, 9, |x, y| {
        image::Rgb([(x * 20) as u8, (y * 25) as u8, ((x + y) * 9) as u8])
    }));
    let luma = image::DynamicImage::ImageLuma8(rgb.to_luma8());
    let tiny = image::DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, image::Rgb([9, 99, 199])));
    vec![
        ("rgb.png".into(), 0, encoded(&rgb, ImageFormat::Png)),
        ("luma.png".into(), 1, encoded(&luma, ImageFormat::Png)),
        ("rgb.jpg".into(), 0, encoded(&rgb, ImageFormat::Jpeg)),
        ("luma.jpg".into(), 1, encoded(&luma, ImageFormat::Jpeg)),
        ("tiny.png".into(), 0, encoded(&tiny, ImageFormat::Png)),
    ]
}

/// Lines of the protocol (README, "serve"): every kind of request, and some that are not.
const REQUESTS: &[&str] = &[
    r#"{"id": 1, "input": "photos/cat.jpg"}"#,
    r#"{"id": "a", "data": "iVBORw0KGgo="}"#,
    r#"{"tensor": [0.5, -1.25, 3e-7, 1e10]}"#,
    r#"{"tokens": [101, 2023, 102]}"#,
    r#"{"id": 7, "label": "cat", "sample": 12}"#,
    r#"{"label": 2}"#,
    r#"{"status": true}"#,
    r#"{"flush": true}"#,
    r#"{"input": "a.png", "label": "dog"}"#,
    r#"{"sample": 3}"#,
    r#"{"id": [1, {"x": null}], "status": false}"#,
    r#"{"unknown": 1}"#,
    r#"{"tensor": "#,
];
