//! Cross-target parity: what a board computes against what the host computes, on the same
//! inputs. `scripts/cross.sh` runs `parity run` on x86_64 and under qemu for aarch64 and
//! armv7, then `parity compare` on the host.
//!
//! `parity run OUT BUNDLE...` writes a JSON dump of:
//! - `embed/<bundle>/<i>`: the backbone's embedding of three fixed pseudo-random inputs
//!   per bundle (f32 and int8 bundles alike);
//! - `head/linear-adam`: a 1280 → 10 linear head after 300 Adam steps on synthetic
//!   clustered samples, and `head/mlp-online`: a 64 → 16 → 10 MLP head after 120 labels
//!   of online learning (`Online`: replay buffer, class means, replay sampler);
//! - `persist/*`: the `persist::encode` bytes of both learned heads with their optimizer
//!   state, what a device writes to its storage.
//!
//! `parity compare REFERENCE OTHER [--tol T]` prints, per entry, the largest absolute
//! difference and whether the values are bit-identical, and fails when
//! - a `head/` or `persist/` entry is not bit-identical: the head and its learning are
//!   plain scalar Rust with `libm` (no fused multiply-add, no platform math library), so
//!   they must match to the bit;
//! - an f32 `embed/` entry differs by more than T (default 1e-5) relative to the
//!   embedding's largest magnitude: the backbone's matrix products run in tract's
//!   per-architecture kernels (AVX2/FMA here, NEON on ARM), which sum in another order;
//! - an int8 `embed/` entry (a bundle named `*int8*`) differs by more than 1e-2 relative:
//!   the integer products are exact, but the f32 rescaling between layers is not done in
//!   the same order, so an activation that lands on a rounding boundary can be one
//!   quantization step apart, and that step carries through the later layers (seen:
//!   one of three inputs bit-identical, the others about 1e-3 apart).

use std::collections::BTreeMap;
use std::path::Path;

use edgetune::backbone::Backbone;
use edgetune::buffer::SampleBuffer;
use edgetune::bundle::Bundle;
use edgetune::classes::ClassMeans;
use edgetune::online::{Online, OnlineConfig};
use edgetune::rng::Rng;
use edgetune::{Config, Dims, Head, Learner, Optimizer, persist};
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error>;

/// Relative tolerance of int8 embeddings (see the module's documentation).
const INT8_TOL: f64 = 1e-2;

const USAGE: &str = "usage: parity run OUT BUNDLE... | parity compare REFERENCE OTHER [--tol T]";

fn main() {
    if let Err(e) = real_main() {
        eprintln!("parity: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") if args.len() >= 2 => run(&args[1], &args[2..]),
        Some("compare") if args.len() == 3 || args.len() == 5 => {
            let tol = match args.get(3).map(String::as_str) {
                None => 1e-5,
                Some("--tol") => args[4]
                    .parse()
                    .map_err(|_| format!("--tol takes a number, got {:?}", args[4]))?,
                Some(other) => return Err(format!("unknown option {other:?}; {USAGE}").into()),
            };
            compare(&args[1], &args[2], tol)
        }
        _ => Err(USAGE.into()),
    }
}

/// Synthetic clustered samples: class `c` is centered on a fixed pseudo-random point.
fn sample(rng: &mut Rng, centers: &[Vec<f32>], c: usize) -> Vec<f32> {
    centers[c]
        .iter()
        .map(|m| m + rng.uniform(-1.0, 1.0))
        .collect()
}

fn centers(rng: &mut Rng, classes: usize, dim: usize) -> Vec<Vec<f32>> {
    (0..classes)
        .map(|_| (0..dim).map(|_| rng.uniform(-1.0, 1.0)).collect())
        .collect()
}

fn run(out: &str, bundles: &[String]) -> Result<(), Error> {
    let mut entries: BTreeMap<String, Value> = BTreeMap::new();
    for path in bundles {
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.clone());
        let bundle = Bundle::read(path).map_err(|e| format!("{path}: {e}"))?;
        let backbone = Backbone::from_bundle(&bundle).map_err(|e| format!("{path}: {e}"))?;
        let mut rng = Rng::new(7);
        let mut emb = vec![0.0f32; backbone.embedding_len()];
        for i in 0..3 {
            let raw: Vec<f32> = (0..backbone.input_len())
                .map(|_| (rng.unit() * 255.0).floor())
                .collect();
            backbone.embed(&raw, &mut emb)?;
            entries.insert(format!("embed/{name}/{i}"), json!(emb));
        }
    }

    // A device-sized linear head, trained step by step with Adam.
    let mut rng = Rng::new(11);
    let dims = Dims::linear(1280, 10);
    let cs = centers(&mut rng, 10, 1280);
    let mut head = Head::alloc(dims, 10)?;
    head.init(3);
    let mut learner = Learner::alloc(dims, Config::DEFAULT)?;
    for i in 0..300 {
        let c = i % 10;
        let x = sample(&mut rng, &cs, c);
        learner.step(&mut head, &x, c)?;
    }
    entries.insert("head/linear-adam".into(), json!(head.params()));
    let mut bytes = vec![0u8; persist::encoded_len(&head, Some(&learner))];
    let n = persist::encode(&head, Some(&learner), &mut bytes)?;
    entries.insert("persist/linear-adam".into(), json!(bytes[..n]));

    // The firmware's shape, learned online with replay.
    let dims = Dims::mlp(64, 16, 10);
    let cs = centers(&mut rng, 10, 64);
    let mut head = Head::alloc(dims, 0)?;
    head.init(5);
    let cfg = Config {
        optimizer: Optimizer::ADAM,
        ..Config::DEFAULT
    };
    let learner = Learner::alloc(dims, cfg)?;
    let buffer = SampleBuffer::<_, 32>::new(64, vec![0.0f32; 32 * 64])?;
    let means = ClassMeans::new(64, 10, vec![0.0f32; ClassMeans::<()>::storage_len(64, 10)])?;
    let mut online = Online::new(head, learner, buffer, means, OnlineConfig::DEFAULT)?;
    for i in 0..120 {
        let c = i % 10;
        let x = sample(&mut rng, &cs, c);
        online.learn(&x, c)?;
    }
    entries.insert("head/mlp-online".into(), json!(online.head().params()));
    let len = persist::encoded_len(online.head(), Some(online.learner()));
    let mut bytes = vec![0u8; len];
    let n = persist::encode(online.head(), Some(online.learner()), &mut bytes)?;
    entries.insert("persist/mlp-online".into(), json!(bytes[..n]));

    let dump = json!({
        "target": format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        "entries": entries,
    });
    std::fs::write(out, serde_json::to_vec(&dump)?).map_err(|e| format!("{out}: {e}"))?;
    println!(
        "parity: wrote {} entries to {out}",
        dump["entries"].as_object().map_or(0, |m| m.len())
    );
    Ok(())
}

fn load(path: &str) -> Result<(String, BTreeMap<String, Vec<f64>>), Error> {
    let text = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let dump: Value = serde_json::from_slice(&text).map_err(|e| format!("{path}: {e}"))?;
    let target = dump["target"].as_str().unwrap_or("?").to_string();
    let entries = dump["entries"]
        .as_object()
        .ok_or_else(|| format!("{path}: no \"entries\" object"))?;
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let values = v
            .as_array()
            .ok_or_else(|| format!("{path}: entry {k} is not an array"))?
            .iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| format!("{path}: entry {k} holds a non-number"))
            })
            .collect::<Result<Vec<f64>, String>>()?;
        out.insert(k.clone(), values);
    }
    Ok((target, out))
}

fn compare(reference: &str, other: &str, tol: f64) -> Result<(), Error> {
    let (ta, a) = load(reference)?;
    let (tb, b) = load(other)?;
    println!(
        "parity: {tb} against {ta} (embeddings: relative tolerance {tol:e}, int8 {INT8_TOL:e}; heads: bit-identical)"
    );
    println!(
        "{:<40} {:>7} {:>12} {:>12}  verdict",
        "entry", "values", "max |diff|", "relative"
    );
    let mut failed = Vec::new();
    for (key, va) in &a {
        let Some(vb) = b.get(key) else {
            failed.push(format!("{key}: missing from {other}"));
            continue;
        };
        if va.len() != vb.len() {
            failed.push(format!("{key}: {} values against {}", vb.len(), va.len()));
            continue;
        }
        // JSON keeps each f32 exactly (shortest round-trip form), so equal f64 here means
        // equal bits there.
        let identical = va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits());
        let diff = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        let scale = va.iter().map(|x| x.abs()).fold(1e-30, f64::max);
        let rel = diff / scale;
        let ok = if !key.starts_with("embed/") {
            identical
        } else if key.contains("int8") {
            rel <= INT8_TOL
        } else {
            rel <= tol
        };
        let verdict = match (identical, ok) {
            (true, _) => "bit-identical",
            (false, true) => "within tolerance",
            (false, false) => "DIFFERS",
        };
        println!(
            "{key:<40} {:>7} {diff:>12.3e} {rel:>12.3e}  {verdict}",
            va.len()
        );
        if !ok {
            failed.push(format!(
                "{key}: {verdict} (max |diff| {diff:e}, relative {rel:e})"
            ));
        }
    }
    for key in b.keys().filter(|k| !a.contains_key(*k)) {
        failed.push(format!("{key}: only in {other}"));
    }
    if failed.is_empty() {
        println!("parity: {tb} matches {ta}");
        Ok(())
    } else {
        Err(format!("{tb} does not match {ta}:\n  {}", failed.join("\n  ")).into())
    }
}
