//! What checking a bundle's signature (`edgetune serve --trust`) adds to loading it, on
//! this machine, one thread, for bundles converted from the shipped torchvision models
//! (`models/torchvision`: MobileNetV2 at width 0.25 and ResNet-18 at width 1/8, 64×64
//! input, f32 NNEF backbones):
//!
//! - `trust/read/<model>`: `Bundle::read`, what a device without `--trust` does: read
//!   the file, check its CRC, parse the manifest, decode the head.
//! - `trust/read_trusted/<model>`: `Bundle::read_trusted`, the same after reading
//!   `<bundle>.sig` and checking the Ed25519 signature over every byte of the file.
//! - `trust/verify/<model>`: `trust::verify` alone on the bytes in memory (SHA-512 of the
//!   bundle plus one signature check).
//! - `trust/verify/14MB`: the same for 14 MB of bytes, the size of a full MobileNetV2
//!   bundle at f32 (3.5 M parameters): the check is linear in the bundle's size.
//!
//! The difference between `read_trusted` and `read` is the cost of `--trust` at load.
//! Loading the backbone into tract (not measured here) comes on top of both and takes
//! far longer.
//!
//!     cargo bench -p benches --bench trust

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use edgetune::bundle::{Bundle, Preprocess};
use edgetune::trust::{self, SecretKey};
use finetune_head::convert::{self, Options};

fn bench(c: &mut Criterion) {
    let dir = edgetune_testkit::scratch("bench-trust");
    let key = SecretKey::generate().expect("random bytes");
    let trusted = [key.public()];
    let root = benches::models::workspace().join("models/torchvision");
    let mut group = c.benchmark_group("trust");
    for (name, file) in [
        ("mobilenet_v2-w025", "mobilenet_v2-w025-64.onnx"),
        ("resnet18-w8", "resnet18-w8-64.onnx"),
    ] {
        let opts = Options {
            preprocess: Preprocess::imagenet(),
            ..Default::default()
        };
        let (bundle, _) = convert::convert(&root.join(file), &opts).expect("converting");
        let path = dir.join(format!("{name}.etb"));
        bundle.write(&path).expect("writing the bundle");
        let bytes = std::fs::read(&path).expect("reading it back");
        trust::sign_file(&path, &bytes, &key).expect("signing");
        eprintln!("{name}: bundle of {} bytes", bytes.len());
        group.bench_function(format!("read/{name}"), |b| {
            b.iter(|| Bundle::read(black_box(&path)).expect("valid"))
        });
        group.bench_function(format!("read_trusted/{name}"), |b| {
            b.iter(|| Bundle::read_trusted(black_box(&path), &trusted).expect("trusted"))
        });
        let sig = trust::sign(&bytes, &key);
        group.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| trust::verify(black_box(&bytes), &sig, &trusted).expect("valid"))
        });
    }
    let big: Vec<u8> = (0..14_000_000u32).map(|i| (i % 251) as u8).collect();
    let sig = trust::sign(&big, &key);
    group.bench_function("verify/14MB", |b| {
        b.iter(|| trust::verify(black_box(&big), &sig, &trusted).expect("valid"))
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
