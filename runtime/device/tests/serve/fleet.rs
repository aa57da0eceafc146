//! Fleets: devices that each learned some classes export their own labels' statistics,
//! merge the others', and end with the head one device would have from every label;
//! merging again, restarting or learning more keeps that exact; a fleet state that is
//! cut off, foreign or from another backbone is refused and changes nothing.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use edgetune::bundle::{Bundle, Provenance};
use edgetune::rng::Rng;
use edgetune::stats::Stats;
use edgetune_device::engine::{EngineConfig, LearnerKind};
use edgetune_device::fleet::HeadState;
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

/// Opens a device in this process. Reopening one just dropped can find its lock still
/// held for a moment: the other tests of this binary start `edgetune` processes, and a
/// child forked in that instant holds a copy of the lock's descriptor until it execs
/// (the lock belongs to the open file, which both copies share). A restarted device is
/// a new process and never meets this; here it is waited out, up to 10 s.
fn open(bundle: &Path, state: &Path) -> Service {
    open_with(bundle, state, EngineConfig::default())
}

/// [`open`] with another learning configuration.
fn open_with(bundle: &Path, state: &Path, engine: EngineConfig) -> Service {
    let opts = || Options {
        persist_interval: std::time::Duration::ZERO,
        engine,
        ..Options::default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Service::open(bundle, state, opts()) {
            Ok((s, _)) => return s,
            Err(e)
                if format!("{e:#}").contains("in use") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("opening {}: {e:#}", state.display()),
        }
    }
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

/// [`logits`] without the own-class bias: those of the head of the device's
/// statistics alone. (Its own classes taken as those it labeled: right for the bundles
/// without classes of the tests that use it.)
fn unbiased_logits(s: &Service, x: &[f32]) -> Vec<(String, f32)> {
    let e = s.engine();
    let mut v = logits(s, x);
    for (name, z) in &mut v {
        let c = s.classes().iter().position(|n| n == name).unwrap();
        if e.counters().labels_per_class[c] > 0 {
            *z -= e.own_bias();
        }
    }
    v
}

/// Asserts that `a`'s head is `b`'s (the same classes, logits within float rounding),
/// each without its own-class bias.
fn same_head(a: &Service, b: &Service, what: &str) {
    let mut rng = Rng::new(7);
    for c in 0..CLASSES {
        let x = point(c, &mut rng);
        let (la, lb) = (unbiased_logits(a, &x), unbiased_logits(b, &x));
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

#[test]
fn with_trusted_keys_only_signed_fleet_states_are_merged() {
    use edgetune::trust::SecretKey;
    use edgetune_device::fleet::FleetState;
    let dir = tmp("fleet-signed");
    let bundle = fleet_bundle(&dir, D);
    let (key, stranger) = (
        SecretKey::generate().unwrap(),
        SecretKey::generate().unwrap(),
    );
    // `--trust` keys are the device's for its bundle and its fleet alike: the bundle is
    // signed too, or the device refuses to start.
    let bytes = std::fs::read(&bundle).unwrap();
    edgetune::trust::sign_file(&bundle, &bytes, &key).unwrap();
    let mut rng = Rng::new(4);
    let opts = Options {
        persist_interval: std::time::Duration::ZERO,
        trusted: vec![key.public()],
        ..Options::default()
    };
    let mut a = Service::open(&bundle, &dir.join("a"), opts).unwrap().0;
    let mut b = open(&bundle, &dir.join("b"));
    learn(&mut a, &[0], 3, &mut rng);
    learn(&mut b, &[1], 3, &mut rng);
    let b64 = base64::engine::general_purpose::STANDARD;
    let unsigned = b64.decode(export(&mut b)).unwrap();
    let state = FleetState::decode(&unsigned).unwrap();
    let signed = state.encode_signed(&key);
    // A changed count with its checksum made right again: only the signature tells.
    let mut tampered = signed.clone();
    let crc_at = tampered.len() - edgetune_device::fleet::SIGNATURE_LEN - 4;
    let count_at = crc_at - 4 * (D * (D + 1) / 2 + D) - 4;
    tampered[count_at..count_at + 4].copy_from_slice(&30.0f32.to_le_bytes());
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&tampered[..crc_at]);
    tampered[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    assert!(
        FleetState::decode(&tampered).is_ok(),
        "only the signature is wrong"
    );
    let id = key.public().id().to_string();
    let cases = [
        (unsigned.clone(), vec!["unsigned".to_string()]),
        (tampered, vec!["tampered".into(), id.clone()]),
        (
            state.encode_signed(&stranger),
            vec!["untrusted".into(), stranger.public().id().to_string()],
        ),
    ];
    let probe = point(0, &mut Rng::new(3));
    let before = (a.seq(), a.classes().to_vec(), logits(&a, &probe));
    for (bytes, why) in &cases {
        for merge in [
            json!(b64.encode(bytes)),
            json!([b64.encode(&signed), b64.encode(bytes)]),
        ] {
            let answer = a.handle_line(&json!({ "merge": merge }).to_string());
            let e = answer["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{why:?}: {answer}"));
            for w in why {
                assert!(e.contains(w.as_str()), "{why:?}: {e}");
            }
        }
    }
    let after = (a.seq(), a.classes().to_vec(), logits(&a, &probe));
    assert_eq!(before.0, after.0, "nothing written");
    assert_eq!(before.1, after.1, "no class added");
    assert_eq!(before.2, after.2, "the head is unchanged");

    // Signed by the trusted key: merged, the class of the other device added.
    let answer = ask(&mut a, json!({ "merge": b64.encode(&signed) }));
    assert_eq!(answer["result"], "merged", "{answer}");
    assert_eq!(a.classes(), ["c0", "c1"]);
    // A device without trusted keys merges unsigned and signed states alike.
    let mut c = open(&bundle, &dir.join("c"));
    for s in [&unsigned, &signed] {
        let answer = ask(&mut c, json!({ "merge": b64.encode(s) }));
        assert_eq!(answer["result"], "merged", "{answer}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_version_3_state_keeps_its_own_labels_apart() {
    use edgetune::slda::{Full, Slda};
    use edgetune_device::state;
    let dir = tmp("fleet-v3");
    let bundle = fleet_bundle(&dir, D);
    let mut rng = Rng::new(6);
    let [mut a, mut b, mut central] = ["a", "b", "central"].map(|n| open(&bundle, &dir.join(n)));
    for (dev, classes) in [(&mut a, [0, 1]), (&mut b, [2, 3])] {
        let mut r = rng.clone();
        learn(dev, &classes, 4, &mut r);
        learn(&mut central, &classes, 4, &mut rng);
    }
    round(&mut [&mut a, &mut b]);
    let exported = ask(&mut a, json!({ "export": true }));
    let (seq, cap) = (a.seq(), a.engine().capacity());
    drop(a);
    // What version 3 wrote: the own labels' statistics (whole − others) in the fleet
    // part, where version 4 writes the others'.
    let path = dir.join("a").join(state::file_name(seq));
    let (_, mut s) = state::decode(&std::fs::read(&path).unwrap()).unwrap();
    assert!(!s.fleet.others.is_empty());
    let mut own = s.learning.slda.clone();
    Slda::<(), Full>::subtract_state(&mut own, &s.fleet.others, D, cap).unwrap();
    s.fleet.others = own;
    // Nor had it the own-class bias of version 5: the last 4 bytes of the payload.
    let mut bytes = state::encode(seq + 1, &s);
    bytes.truncate(bytes.len() - 4 - 4);
    bytes[8..10].copy_from_slice(&3u16.to_le_bytes());
    let payload = (bytes.len() - 22) as u32;
    bytes[18..22].copy_from_slice(&payload.to_le_bytes());
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.join("a").join(state::file_name(seq + 1)), bytes).unwrap();

    let mut a = open(&bundle, &dir.join("a"));
    assert_eq!(a.seq(), seq + 1, "the version 3 state is the one loaded");
    same_head(&a, &central, "device a from a version 3 state");
    let again = ask(&mut a, json!({ "export": true }));
    assert_eq!(again["labels"], exported["labels"], "{again}");
    assert_eq!(again["classes"], exported["classes"], "{again}");
    // Its fleet part is migrated: the next rounds stay exact.
    round(&mut [&mut a, &mut b]);
    same_head(&a, &central, "after a round");
    drop(a);
    let a = open(&bundle, &dir.join("a"));
    same_head(&a, &central, "restarted");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The whole's labels and the fleet part's (the others') in the newest state of `state`.
fn newest_labels(state: &Path, capacity: usize) -> (u64, u64) {
    use edgetune::slda::{Full, Slda};
    use edgetune_device::state;
    let seq = std::fs::read_dir(state)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("state-")?
                .strip_suffix(".bin")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .expect("a state on disk");
    let bytes = std::fs::read(state.join(state::file_name(seq))).unwrap();
    let (_, s) = state::decode(&bytes).unwrap_or_else(|e| panic!("state {seq}: {e}"));
    let whole = Slda::<(), Full>::state_parts(&s.learning.slda, D, capacity).unwrap();
    (whole.labels as u64, s.fleet.others_labels)
}

/// `serve` killed (SIGKILL) while it starts, merges a fleet state and writes the result:
/// the newest state on disk is always a whole one, from before a merge or after it, never
/// half of one: the whole holds the device's own labels plus exactly the labels of the
/// others' part it records, and the device's export is its own labels. The kills sweep
/// evenly from the program's start to past the merge's answer (timed first on a copy of
/// the state), so they land while the state is read, while the merge is computed and
/// while it is written, not mostly after it.
#[test]
fn killed_while_merging_it_keeps_a_whole_state() {
    const KILLS: u32 = 48;
    let dir = tmp("fleet-kill");
    let bundle = fleet_bundle(&dir, D);
    let mut rng = Rng::new(8);
    // Two fleet states of other devices, of 6 and 10 labels.
    let mut fleet = Vec::new();
    for (name, classes, n) in [("x", [2, 3], 3), ("y", [3, 4], 5)] {
        let mut s = open(&bundle, &dir.join(name));
        learn(&mut s, &classes, n, &mut rng);
        fleet.push((export(&mut s), 2 * n as u64));
    }
    let state = dir.join("device");
    let own = 8;
    let capacity = {
        let mut s = open(&bundle, &state);
        learn(&mut s, &[0, 1], 4, &mut rng);
        s.engine().capacity()
    };
    assert_eq!(newest_labels(&state, capacity), (own, 0));
    // From the program's start to the merge's answer (written by then), the fastest of
    // three on copies of the state.
    let window = (0..3)
        .map(|i| {
            let copy = dir.join(format!("probe{i}"));
            std::fs::create_dir_all(&copy).unwrap();
            for f in std::fs::read_dir(&state).unwrap() {
                let f = f.unwrap().path();
                if f.is_file() {
                    std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
                }
            }
            let t = std::time::Instant::now();
            let mut s = crate::Serve::start(&bundle, &copy, &["--persist-interval", "0"]);
            s.send(&json!({ "merge": fleet[0].0 }).to_string());
            assert_eq!(s.answer().unwrap()["result"], "merged");
            t.elapsed()
        })
        .min()
        .unwrap();
    let (mut before, mut after) = (0, 0);
    for k in 0..KILLS {
        let t = std::time::Instant::now();
        let mut s = crate::Serve::start(&bundle, &state, &["--persist-interval", "0"]);
        let (others, n) = &fleet[k as usize % 2];
        s.send(&json!({ "merge": others }).to_string());
        // Kill k at k/KILLS of 1.5 windows after the start.
        let at = window * 3 * k / (2 * KILLS);
        std::thread::sleep(at.saturating_sub(t.elapsed()));
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        let (whole, others_labels) = newest_labels(&state, capacity);
        assert!(
            [0, 6, 10].contains(&others_labels),
            "kill {k}: {others_labels} labels of others"
        );
        assert_eq!(whole, own + others_labels, "kill {k}: a torn merge");
        if others_labels == *n {
            after += 1;
        } else {
            before += 1;
        }
    }
    println!(
        "{KILLS} kills over {:.1} ms from start (a merge answered after {:.1} ms): {before} before the merge was written, {after} after",
        window.as_secs_f64() * 1.5e3,
        window.as_secs_f64() * 1e3
    );
    // The device goes on from whatever the last kill left: its own labels apart.
    let mut s = open(&bundle, &state);
    assert_eq!(ask(&mut s, json!({ "export": true }))["labels"], own);
    assert_eq!(
        ask(&mut s, json!({ "merge": fleet[1].0 }))["result"],
        "merged"
    );
    assert_eq!(newest_labels(&state, capacity), (own + 10, 10));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A features-only bundle whose head is an MLP (`D` → 16 → up to 8 classes) with no
/// classes yet, initialized from `seed` (devices of it learn by gradient steps with
/// [`LearnerKind::Gradient`]); with `hidden_stats`, the statistics of its hidden
/// activations on unlabeled samples (so that closed-form learners of every device
/// learn in the same units).
fn mlp_bundle_with(dir: &Path, seed: u64, hidden_stats: bool) -> PathBuf {
    use edgetune::{Dims, Head, persist};
    let mut head = Head::alloc(Dims::mlp(D, 16, 8), 0).unwrap();
    head.init(seed);
    let mut b = Bundle::features_only(
        D,
        Vec::<String>::new(),
        Provenance::new("synthetic", "fleet"),
    );
    if hidden_stats {
        let mut rng = Rng::new(5);
        let mut h = vec![0.0f32; 200 * 16];
        for (i, out) in h.chunks_exact_mut(16).enumerate() {
            head.features(&point(i % CLASSES, &mut rng), out).unwrap();
        }
        b.manifest.hidden_stats = Some(Stats::estimate(&h, 16, None).unwrap().to_manifest());
    }
    b.head = Some(persist::encode_to_vec(&head, None::<&edgetune::Learner<Vec<f32>>>).unwrap());
    let path = dir.join(format!("mlp-{seed}-{hidden_stats}.etb"));
    b.write(&path).unwrap();
    path
}

fn mlp_bundle(dir: &Path, seed: u64) -> PathBuf {
    mlp_bundle_with(dir, seed, false)
}

#[test]
fn an_mlp_heads_closed_form_fleet_sums_the_statistics_of_its_hidden_layer() {
    let dir = tmp("fleet-mlp-closed-form");
    let bundle = mlp_bundle_with(&dir, 1, true);
    let mut rng = Rng::new(1);
    let [mut a, mut b, mut central] = ["a", "b", "central"].map(|n| open(&bundle, &dir.join(n)));
    assert_eq!(a.engine().learner_kind(), LearnerKind::Slda);
    assert_eq!((a.engine().dim(), a.engine().learner_dim()), (D, 16));
    let hidden = a.engine().online().head().params()[..16 * (D + 1)].to_vec();
    let parts: [&[usize]; 2] = [&[0, 1, 2], &[3, 4, 5]];
    for (dev, classes) in [&mut a, &mut b].into_iter().zip(parts) {
        let mut r = rng.clone();
        learn(dev, classes, 5, &mut r);
        learn(&mut central, classes, 5, &mut rng);
    }
    round(&mut [&mut a, &mut b]);
    same_head(&a, &central, "device a after a round");
    same_head(&b, &central, "device b after a round");
    // Learning and merging write the output layer only: the hidden layer is the
    // bundle's, so every device's statistics are of the same features.
    assert_eq!(
        &a.engine().online().head().params()[..hidden.len()],
        &hidden[..]
    );
    assert!(accuracy(&mut a, &[0, 1, 2, 3, 4, 5], 20) > 0.9);
    // A device on another MLP head (other hidden units, as many) refuses them by name.
    let other = mlp_bundle_with(&dir, 2, true);
    let mut c = open(&other, &dir.join("c"));
    let answer = c.handle_line(&json!({ "merge": export(&mut a) }).to_string());
    let e = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(e.contains("the hidden layer of another MLP head"), "{e}");
    assert_eq!(c.classes().len(), 0, "nothing changed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Share of `n` fresh samples of each class in `classes` that `s` predicts right.
fn accuracy(s: &mut Service, classes: &[usize], n: usize) -> f64 {
    let mut rng = Rng::new(1234);
    let mut right = 0;
    for _ in 0..n {
        for &c in classes {
            let p = ask(s, json!({ "tensor": point(c, &mut rng) }));
            right += usize::from(p["top"][0]["class"] == format!("c{c}"));
        }
    }
    right as f64 / (n * classes.len()) as f64
}

fn head_state(s: &mut Service) -> HeadState {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(export(s))
        .unwrap();
    HeadState::decode(&bytes).unwrap()
}

#[test]
fn gradient_heads_average_by_labels_and_keep_their_own() {
    let dir = tmp("fleet-heads");
    let bundle = mlp_bundle(&dir, 1);
    let gradient = EngineConfig {
        learner: LearnerKind::Gradient,
        ..EngineConfig::default()
    };
    let exact = EngineConfig {
        fleet_rehearsal: 0,
        ..gradient
    };
    let mut rng = Rng::new(8);
    let [mut a, mut b, mut c] = ["a", "b", "c"].map(|n| open_with(&bundle, &dir.join(n), gradient));
    let mut mix = open_with(&bundle, &dir.join("mix"), exact);
    let parts: [&[usize]; 3] = [&[0, 1], &[2, 3], &[4, 5]];
    for (dev, classes) in [&mut a, &mut b, &mut c].into_iter().zip(parts) {
        learn(dev, classes, 8, &mut rng);
    }
    learn(&mut mix, &[0, 1], 8, &mut Rng::new(8));
    let own_before: Vec<f64> = [&mut a, &mut b, &mut c]
        .into_iter()
        .zip(parts)
        .map(|(d, classes)| accuracy(d, classes, 10))
        .collect();

    // The exact mix, without rehearsal: the hidden layer weighted by all labels (16
    // each), each class's row by its labels: c0 and c1 stay mix's, c2 and c3 are b's.
    let (m, sb) = (head_state(&mut mix), head_state(&mut b));
    assert_eq!((m.labels(), sb.labels()), (16.0, 16.0));
    let answer = ask(&mut mix, json!({ "merge": export(&mut b) }));
    assert_eq!(answer["result"], "merged", "{answer}");
    assert_eq!(answer["added"], json!(["c2", "c3"]), "{answer}");
    let after = head_state(&mut mix);
    assert_eq!(after.classes, ["c0", "c1", "c2", "c3"]);
    assert_eq!(after.counts, [8.0, 8.0, 0.0, 0.0], "its own labels only");
    for (i, v) in after.hidden_params.iter().enumerate() {
        let want = 0.5 * (m.hidden_params[i] + sb.hidden_params[i]);
        assert!((v - want).abs() < 1e-6, "hidden value {i}: {v} vs {want}");
    }
    let f = after.feature_width();
    assert_eq!(after.weights[..2 * f], m.weights[..]);
    assert_eq!(after.weights[2 * f..], sb.weights[..]);
    assert_eq!(after.biases[2..], sb.biases[..]);

    // Rounds (each device merges the others' heads, as the ServerApp sends them): every
    // device knows every class, and its own stay recognized. Without the rehearsal on
    // the others' class means (fleet_rehearsal 0) a device took the others' rows as they
    // are, rows that never learned to say "not mine": 33 % on all six classes, 0 % on
    // its own.
    round(&mut [&mut a, &mut b, &mut c]);
    round(&mut [&mut a, &mut b, &mut c]);
    let all: Vec<usize> = (0..6).collect();
    for ((d, classes), before) in [&mut a, &mut b, &mut c]
        .into_iter()
        .zip(parts)
        .zip(&own_before)
    {
        assert_eq!(d.classes().len(), 6, "{:?}", d.classes());
        let (all, own) = (accuracy(d, &all, 10), accuracy(d, classes, 10));
        println!("device of {classes:?}: all six classes {all:.2}, own {before:.2} -> {own:.2}");
        assert!(all >= 0.9, "device of {classes:?}: {all} on all classes");
        assert!(
            own >= before - 0.05,
            "device of {classes:?}: own {before} -> {own}"
        );
    }

    // What was merged is on disk.
    let probe = point(3, &mut Rng::new(3));
    let before = logits(&a, &probe);
    drop(a);
    let a = open_with(&bundle, &dir.join("a"), gradient);
    assert_eq!(logits(&a, &probe), before, "restarted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_state_of_the_other_kind_or_another_start_is_refused_by_name() {
    let dir = tmp("fleet-heads-refused");
    let bundle = mlp_bundle(&dir, 1);
    let other_start = mlp_bundle(&dir, 2);
    let stats = fleet_bundle(&dir, D);
    let gradient = EngineConfig {
        learner: LearnerKind::Gradient,
        ..EngineConfig::default()
    };
    let mut rng = Rng::new(9);
    let mut a = open_with(&bundle, &dir.join("a"), gradient);
    let mut other = open_with(&other_start, &dir.join("other"), gradient);
    let mut closed = open(&stats, &dir.join("closed"));
    for d in [&mut a, &mut other, &mut closed] {
        learn(d, &[0, 1], 3, &mut rng);
    }
    let probe = point(0, &mut Rng::new(3));
    let before = (a.seq(), logits(&a, &probe));
    for (state, why) in [
        (export(&mut closed), "it holds closed-form statistics"),
        (export(&mut other), "started from another bundle's"),
    ] {
        let answer = a.handle_line(&json!({ "merge": state }).to_string());
        let e = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(e.contains(why), "{why}: {e}");
    }
    assert_eq!((a.seq(), logits(&a, &probe)), before, "nothing changed");
    let answer = closed.handle_line(&json!({ "merge": export(&mut a) }).to_string());
    let e = answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(e.contains("it holds a gradient head's parameters"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sample of the two-class scene of [`a_device_keeps_its_own_classes_apart_from_the_fleets`]:
/// `near` 0 and 1 are 2 apart along the first axis (3.5 times the spread), `far` 2 and
/// 3 well away from both.
fn scene(c: usize, rng: &mut Rng) -> Vec<f32> {
    let center = [[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]][c];
    (0..D)
        .map(|i| {
            let noise: f32 = (0..4).map(|_| rng.uniform(-0.5, 0.5)).sum();
            center.get(i).copied().unwrap_or(0.0) + noise
        })
        .collect()
}

/// Share of `n` fresh samples of class `c` of [`scene`] that `s` names `c{c}`.
fn scene_accuracy(s: &mut Service, c: usize, n: usize, rng: &mut Rng) -> f64 {
    let hits = (0..n)
        .filter(|_| {
            let a = ask(s, json!({ "tensor": scene(c, rng) }));
            a["class"] == format!("c{c}")
        })
        .count();
    hits as f64 / n as f64
}

#[test]
fn a_device_keeps_its_own_classes_apart_from_the_fleets() {
    let dir = tmp("fleet-own");
    let bundle = fleet_bundle(&dir, D);
    let [mut a, mut b, mut central] = ["a", "b", "central"].map(|n| open(&bundle, &dir.join(n)));
    // Device a's twin, with no budget for the bias.
    let unbiased = EngineConfig {
        fleet_own_budget: 0.0,
        ..EngineConfig::default()
    };
    let mut twin = open_with(&bundle, &dir.join("twin"), unbiased);
    let mut rng = Rng::new(3);
    // Device a labels classes 0 and 2, device b 1 and 3: 0 and 1 overlap in their tails.
    for (dev, classes) in [(&mut a, [0, 2]), (&mut b, [1, 3])] {
        for _ in 0..40 {
            for c in classes {
                let x = scene(c, &mut rng);
                let twin = (classes[0] == 0).then_some(&mut twin);
                for d in [Some(&mut *dev), Some(&mut central), twin]
                    .into_iter()
                    .flatten()
                {
                    let p = ask(d, json!({ "tensor": x }));
                    ask(
                        d,
                        json!({ "label": format!("c{c}"), "sample": p["sample"] }),
                    );
                }
            }
        }
    }
    let mut test = Rng::new(4);
    let own_alone = scene_accuracy(&mut a, 0, 1000, &mut test);
    let (ea, eb) = (export(&mut a), export(&mut b));
    let answer = ask(&mut a, json!({ "merge": [eb.clone()] }));
    assert_eq!(answer["result"], "merged", "{answer}");
    ask(&mut b, json!({ "merge": [ea] }));
    let untouched = ask(&mut twin, json!({ "merge": [eb.clone()] }));
    assert_eq!(untouched["own_bias"], 0.0, "{untouched}");
    same_head(&twin, &central, "without a budget for the bias");
    // Some of a's own samples of class 0, held out, would go to b's class 1: its own
    // classes get a bias, and it is the only difference from a head of every label.
    let bias = a.engine().own_bias();
    assert!(bias > 0.0 && answer["own_bias"] == json!(bias), "{answer}");
    biased_as(&a, &central, bias);
    // On fresh samples: a's class 0 is recognised as well as before the fleet, better
    // than by the head of every label; b's class 1 loses at most the budget's share.
    let t = || Rng::new(4);
    let own_after = scene_accuracy(&mut a, 0, 1000, &mut t());
    let own_central = scene_accuracy(&mut central, 0, 1000, &mut t());
    let theirs = scene_accuracy(&mut a, 1, 1000, &mut t());
    let theirs_central = scene_accuracy(&mut central, 1, 1000, &mut t());
    println!(
        "own-class bias {bias}: class 0 on a {own_alone} alone, {own_after} after (central {own_central}); class 1 {theirs} (central {theirs_central})"
    );
    assert!(own_after > own_central, "{own_after} vs {own_central}");
    assert!(
        theirs >= theirs_central - 0.03,
        "{theirs} vs {theirs_central}"
    );
    // Merging the same state again chooses the same bias; a restart keeps it.
    ask(&mut a, json!({ "merge": [export(&mut b)] }));
    assert_eq!(a.engine().own_bias(), bias);
    drop(a);
    let mut a = open(&bundle, &dir.join("a"));
    assert_eq!(a.engine().own_bias(), bias);
    // On the classes it had before the fleet only, and still after a label rewrites
    // the head from the restored statistics.
    biased_as(&a, &central, bias);
    let x = scene(0, &mut rng);
    for d in [&mut a, &mut central] {
        let p = ask(d, json!({ "tensor": x }));
        ask(d, json!({ "label": "c0", "sample": p["sample"] }));
    }
    biased_as(&a, &central, bias);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Asserts that `a`'s logits are `central`'s plus `bias` on `a`'s own classes of
/// [`a_device_keeps_its_own_classes_apart_from_the_fleets`] (`c0` and `c2`), on
/// samples of each class of [`scene`].
fn biased_as(a: &Service, central: &Service, bias: f32) {
    let mut rng = Rng::new(7);
    for c in 0..4 {
        let x = scene(c, &mut rng);
        for ((name, la), (_, lc)) in logits(a, &x).iter().zip(logits(central, &x)) {
            let own = if ["c0", "c2"].contains(&name.as_str()) {
                bias
            } else {
                0.0
            };
            assert!(
                (la - lc - own).abs() <= 1e-3 * (1.0 + lc.abs()),
                "{name}: {la} {lc}"
            );
        }
    }
}

/// A bundle whose head the host trained on classes `c0` and `c2` of [`scene`]: their
/// statistics in its manifest, as `finetune-head` writes them.
fn host_bundle(dir: &Path) -> PathBuf {
    use edgetune::{Dims, Head, persist};
    let mut rng = Rng::new(8);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..200 {
        x.extend(scene(2 * (i % 2), &mut rng));
        y.push(i % 2);
    }
    let mut b = Bundle::features_only(D, ["c0", "c2"], Provenance::new("synthetic", "host"));
    let stats = Stats::estimate(&x, D, Some((&y, 2))).unwrap();
    b.manifest.embedding_stats = Some(stats.to_manifest());
    let head = Head::alloc(Dims::linear(D, 8), 2).unwrap();
    b.head = Some(persist::encode_to_vec(&head, None::<&edgetune::Learner<Vec<f32>>>).unwrap());
    let path = dir.join("host.etb");
    b.write(&path).unwrap();
    path
}

/// With the host's classes, the classes a device had before the fleet are the host's
/// and those it labeled: the bias keeps its samples from the classes only the fleet
/// brought, not from the host's, which the fleet did not change. Device a labels `c1`,
/// which overlaps the host's `c0` (some of its samples went to `c0` before any fleet);
/// device b labels `c3`, far from `c1`. After the merge a's `c1` samples lose nothing to
/// `c3`, so a needs no bias, and the host's `c0` is recognised as before.
#[test]
fn with_host_classes_the_bias_guards_only_against_the_fleets_classes() {
    let dir = tmp("fleet-host-classes");
    let bundle = host_bundle(&dir);
    let [mut a, mut b] = ["a", "b"].map(|n| open(&bundle, &dir.join(n)));
    assert_eq!(a.classes(), ["c0", "c2"]);
    let mut rng = Rng::new(3);
    for (dev, c) in [(&mut a, 1), (&mut b, 3)] {
        for _ in 0..40 {
            let p = ask(dev, json!({ "tensor": scene(c, &mut rng) }));
            ask(
                dev,
                json!({ "label": format!("c{c}"), "sample": p["sample"] }),
            );
        }
    }
    let t = || Rng::new(4);
    let host_before = scene_accuracy(&mut a, 0, 1000, &mut t());
    let own_before = scene_accuracy(&mut a, 1, 1000, &mut t());
    let answer = ask(&mut a, json!({ "merge": [export(&mut b)] }));
    assert_eq!(answer["result"], "merged", "{answer}");
    let host_after = scene_accuracy(&mut a, 0, 1000, &mut t());
    let own_after = scene_accuracy(&mut a, 1, 1000, &mut t());
    let theirs = scene_accuracy(&mut a, 3, 1000, &mut t());
    println!(
        "own-class bias {}: host's c0 {host_before} -> {host_after}, own c1 {own_before} -> {own_after}, the fleet's c3 {theirs}",
        answer["own_bias"]
    );
    assert_eq!(answer["own_bias"], 0.0, "{answer}");
    assert!(
        host_after >= host_before - 0.01,
        "{host_before} -> {host_after}"
    );
    assert!(
        own_after >= own_before - 0.01,
        "{own_before} -> {own_after}"
    );
    // The fleet's class as well as on the device that labeled it (`c3` overlaps the
    // host's `c2` as `c1` does `c0`).
    let answer = ask(&mut b, json!({ "merge": [export(&mut a)] }));
    assert_eq!(answer["own_bias"], 0.0, "{answer}");
    let at_b = scene_accuracy(&mut b, 3, 1000, &mut t());
    assert!((theirs - at_b).abs() <= 0.01, "{theirs} vs {at_b}");
    let _ = std::fs::remove_dir_all(&dir);
}
