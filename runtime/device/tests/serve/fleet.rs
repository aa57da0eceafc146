//! Fleets: devices that each learned some classes export their own labels' statistics,
//! merge the others', and end with the head one device would have from every label;
//! merging again, restarting or learning more keeps that exact; a fleet state that is
//! cut off, foreign or from another backbone is refused and changes nothing.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use edgetune::bundle::{Bundle, Provenance};
use edgetune::rng::Rng;
use edgetune::stats::Stats;
use edgetune_device::service::{Options, Service};
use serde_json::{Value, json};

use super::tmp;

const D: usize = 8;
const CLASSES: usize = 6;

/// A sample of class `c`: a cluster around a fixed random center.
fn point(c: usize, rng: &mut Rng) -> Vec<f32> {
    let mut centers = Rng::new(99);
    let mut x = Vec::new();
    for k in 0..CLASSES {
        let center: Vec<f32> = (0..D).map(|_| centers.uniform(-2.0, 2.0)).collect();
        if k == c {
            x = center.iter().map(|m| m + rng.uniform(-0.8, 0.8)).collect();
        }
    }
    x
}

/// A features-only bundle without a head, with embedding statistics of unlabeled
/// samples (so that every device learns in the same units).
fn fleet_bundle(dir: &Path, dim: usize) -> PathBuf {
    let mut rng = Rng::new(5);
    let x: Vec<f32> = (0..200)
        .flat_map(|i| {
            let mut p = point(i % CLASSES, &mut rng);
            p.resize(dim, 0.5);
            p
        })
        .collect();
    let mut b = Bundle::features_only(
        dim,
        Vec::<String>::new(),
        Provenance::new("synthetic", "fleet"),
    );
    b.manifest.embedding_stats = Some(Stats::estimate(&x, dim, None).unwrap().to_manifest());
    let path = dir.join(format!("fleet-{dim}.etb"));
    b.write(&path).unwrap();
    path
}

fn open(bundle: &Path, state: &Path) -> Service {
    let opts = Options {
        persist_interval: std::time::Duration::ZERO,
        ..Options::default()
    };
    Service::open(bundle, state, opts).unwrap().0
}

fn ask(s: &mut Service, req: Value) -> Value {
    let a = s.handle_line(&req.to_string());
    assert!(a.get("error").is_none(), "{req} -> {a}");
    a
}

/// Predicts and labels `n` samples of each class in `classes` (padded to the bundle's
/// embedding size as [`fleet_bundle`] does).
fn learn(s: &mut Service, classes: &[usize], n: usize, rng: &mut Rng) {
    for _ in 0..n {
        for &c in classes {
            let mut x = point(c, rng);
            x.resize(s.engine().dim(), 0.5);
            let p = ask(s, json!({ "tensor": x }));
            ask(
                s,
                json!({ "label": format!("c{c}"), "sample": p["sample"] }),
            );
        }
    }
}

/// The head's logit of each class, by name, at `x`.
fn logits(s: &Service, x: &[f32]) -> Vec<(String, f32)> {
    let mut out = vec![0.0; s.engine().capacity()];
    s.engine().online().head().logits(x, &mut out).unwrap();
    let mut v: Vec<(String, f32)> = s.classes().iter().cloned().zip(out).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Asserts that `a`'s head is `b`'s (the same classes, logits within float rounding).
fn same_head(a: &Service, b: &Service, what: &str) {
    let mut rng = Rng::new(7);
    for c in 0..CLASSES {
        let x = point(c, &mut rng);
        let (la, lb) = (logits(a, &x), logits(b, &x));
        assert_eq!(
            la.iter().map(|v| &v.0).collect::<Vec<_>>(),
            lb.iter().map(|v| &v.0).collect::<Vec<_>>(),
            "{what}: classes"
        );
        for ((n, x), (_, y)) in la.iter().zip(&lb) {
            assert!(
                (x - y).abs() <= 1e-3 * (1.0 + y.abs()),
                "{what}: class {n}: {x} vs {y}"
            );
        }
    }
}

fn export(s: &mut Service) -> String {
    ask(s, json!({ "export": true }))["fleet"]
        .as_str()
        .unwrap()
        .to_string()
}

/// One round as the fleet's server runs it: every device sends its own labels and
/// merges the others'.
fn round(devices: &mut [&mut Service]) {
    let states: Vec<String> = devices.iter_mut().map(|d| export(d)).collect();
    for (i, d) in devices.iter_mut().enumerate() {
        let others: Vec<&String> = states
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, s)| s)
            .collect();
        let a = ask(d, json!({ "merge": others }));
        assert_eq!(a["result"], "merged", "{a}");
    }
}

#[test]
fn a_round_gives_every_device_the_head_of_all_labels_exactly() {
    let dir = tmp("fleet-exact");
    let bundle = fleet_bundle(&dir, D);
    let mut rng = Rng::new(1);
    let [mut a, mut b, mut c, mut central] =
        ["a", "b", "c", "central"].map(|n| open(&bundle, &dir.join(n)));
    // Class c0 is labeled on two devices: its statistics must add up, not average.
    let parts: [&[usize]; 3] = [&[0, 1], &[2, 3], &[4, 5, 0]];
    for (dev, classes) in [&mut a, &mut b, &mut c].into_iter().zip(parts) {
        let mut r = rng.clone();
        learn(dev, classes, 5, &mut r);
        learn(&mut central, classes, 5, &mut rng);
    }
    round(&mut [&mut a, &mut b, &mut c]);
    for (d, n) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        same_head(d, &central, &format!("device {n} after a round"));
    }
    // A device's own labels are kept in full: its export is still only its own.
    let own = ask(&mut a, json!({ "export": true }));
    assert_eq!(own["labels"], 10, "{own}");
    assert_eq!(own["classes"], json!(["c0", "c1"]));

    // The same round again counts nothing twice.
    round(&mut [&mut a, &mut b, &mut c]);
    same_head(&a, &central, "after a second round");

    // New labels on one device reach the others on the next round.
    let mut r = rng.clone();
    learn(&mut b, &[1, 5], 3, &mut r);
    learn(&mut central, &[1, 5], 3, &mut rng);
    round(&mut [&mut a, &mut b, &mut c]);
    for (d, n) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        same_head(d, &central, &format!("device {n} after new labels"));
    }

    // What was merged is on disk: a restarted device has the same head.
    drop(a);
    let a = open(&bundle, &dir.join("a"));
    same_head(&a, &central, "device a restarted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_fleet_state_is_refused_by_name_and_changes_nothing() {
    let dir = tmp("fleet-refused");
    let bundle = fleet_bundle(&dir, D);
    let other = fleet_bundle(&dir, D + 1);
    let mut rng = Rng::new(2);
    let mut a = open(&bundle, &dir.join("a"));
    let mut b = open(&bundle, &dir.join("b"));
    let mut foreign = open(&other, &dir.join("foreign"));
    learn(&mut a, &[0], 3, &mut rng);
    learn(&mut b, &[1], 3, &mut rng);
    learn(&mut foreign, &[2], 3, &mut rng);
    let good = base64::engine::general_purpose::STANDARD
        .decode(export(&mut b))
        .unwrap();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut flipped = good.clone();
    flipped[40] ^= 1;
    let mut version = good.clone();
    version[8] = 9;
    let cases = [
        (b64(&good[..good.len() / 2]), "truncated"),
        (b64(&flipped), "checksum"),
        (b64(&version), "version 9"),
        (
            b64(b"ETSTATE\0 a device state, not a fleet state"),
            "bad magic",
        ),
        ("not base64!".to_string(), "not base64"),
        (export(&mut foreign), "another backbone"),
    ];
    let probe = point(0, &mut Rng::new(3));
    let before = (a.seq(), a.classes().to_vec(), logits(&a, &probe));
    for (state, why) in cases {
        let answer = a.handle_line(&json!({ "merge": state }).to_string());
        let e = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{why}: {answer}"));
        assert!(e.contains(why), "{why}: {e}");
        // A list with one bad state is refused as a whole, naming which.
        let answer = a.handle_line(&json!({ "merge": [b64(&good), state] }).to_string());
        let e = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{why}: {answer}"));
        assert!(e.contains("fleet state 1"), "{why}: {e}");
    }
    let after = (a.seq(), a.classes().to_vec(), logits(&a, &probe));
    assert_eq!(before.0, after.0, "nothing written");
    assert_eq!(before.1, after.1, "no class added");
    assert_eq!(before.2, after.2, "the head is unchanged");
    let _ = std::fs::remove_dir_all(&dir);
}
