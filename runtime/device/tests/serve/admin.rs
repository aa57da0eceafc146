//! The state directory without a running service: `status`, `rollback`, `reset` (and
//! their pins) and one-shot `predict`.

use std::path::{Path, PathBuf};

use edgetune::rng::Rng;

use serde_json::{Value, json};

use crate::{Serve, case, f32_bytes, run, sample, status};

#[test]
fn status_rollback_reset_and_predict() {
    let (dir, model, state, mut rng) = case("admin", 4, 5);
    let st = state.to_str().unwrap();
    let (ok, out, _) = run(&["status", "--state", dir.to_str().unwrap()]);
    assert!(ok && out.contains("no state"), "{out}");
    let mut s = Serve::start(&model, &state, &["--persist-interval", "0"]);
    for _ in 0..3 {
        let p = s.predict(&sample(2, &mut rng));
        s.label("c", &p["sample"]);
    }
    // While serve runs, rollback and reset refuse.
    let (ok, _, err) = run(&["rollback", "--state", st]);
    assert!(
        !ok && err.contains("in use by another edgetune process"),
        "{err}"
    );
    s.stop();

    let (ok, out, _) = run(&["status", "--state", st]);
    assert!(ok, "{out}");
    for want in ["3 labels", "3 updates", "c ", "p50", "state       3"] {
        assert!(out.contains(want), "status lacks {want:?}:\n{out}");
    }
    // One-shot predictions of a raw file and .npy arrays, by the learned head or the
    // bundle's.
    predict_files(&dir, &model, st, &mut rng);

    let (ok, out, err) = run(&["rollback", "--state", st, "--json"]);
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"state": 4, "copy_of": 2})
    );
    assert_eq!(status(&state)["labels"], 2);
    let (ok, _, _) = run(&["rollback", "--state", st, "--to", "3"]);
    assert!(ok);
    assert_eq!(status(&state)["labels"], 3);
    let (ok, _, err) = run(&["rollback", "--state", st, "--to", "99"]);
    assert!(!ok && err.contains("there is no state 99"), "{err}");

    let (ok, _, err) = run(&["reset", "--state", st]);
    assert!(ok, "{err}");
    let after = status(&state);
    assert_eq!(after["labels"], 0);
    assert_eq!(after["states_on_disk"], json!([1, 2, 3, 4, 5, 6]));
    let mut s = Serve::start(&model, &state, &[]);
    let p = s.predict(&sample(2, &mut rng));
    assert_ne!(
        p["class"], "c",
        "after a reset the head is the bundle's: {p}"
    );
    let names: Vec<Value> = s.ask(r#"{"status": true}"#)["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, [json!("a"), json!("b")]);
    s.stop();

    // The states that rollback and reset left behind stay, however long the device
    // serves with a small --keep: they are pinned.
    assert_eq!(after["pinned"], json!([3, 4, 5]));
    let mut s = Serve::start(&model, &state, &["--persist-interval", "0", "--keep", "2"]);
    for _ in 0..4 {
        let p = s.predict(&sample(0, &mut rng));
        s.label("a", &p["sample"]);
    }
    s.stop();
    let st = status(&state);
    assert_eq!(st["states_on_disk"], json!([3, 4, 5, 9, 10]));
    let (ok, _, err) = run(&["rollback", "--state", state.to_str().unwrap(), "--to", "5"]);
    assert!(ok, "{err}");
    assert_eq!(status(&state)["labels"], 3);
}

/// `predict` of the raw file and `.npy` arrays of a sample of class "c": with the head
/// learned in the state directory `st`, and with the bundle's (which knows no "c").
fn predict_files(dir: &Path, model: &Path, st: &str, rng: &mut Rng) {
    let x = dir.join("x.f32");
    let bytes = f32_bytes(&sample(2, rng));
    std::fs::write(&x, bytes).unwrap();
    // `predict --json` with the head learned in the state directory.
    let predict_learned = |input: &Path| {
        run(&[
            "predict",
            model.to_str().unwrap(),
            input.to_str().unwrap(),
            "--state",
            st,
            "--json",
        ])
    };
    let (ok, out, err) = predict_learned(&x);
    assert!(ok, "{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["class"], "c");
    let (ok, out, _) = run(&["predict", model.to_str().unwrap(), x.to_str().unwrap()]);
    assert!(
        ok && !out.contains(" c "),
        "the bundle's head knows no class c: {out}"
    );
    // The same sample as a .npy array; one of another shape is an error naming it.
    let x_values: Vec<f32> = std::fs::read(&x)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let good = npy(dir, "x.npy", "(1, 4)", &x_values);
    let bad = npy(dir, "bad.npy", "(3,)", &x_values[..3]);
    let (ok, out, err) = predict_learned(&good);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["class"], "c");
    let (ok, out, _) = run(&["predict", model.to_str().unwrap(), bad.to_str().unwrap()]);
    assert!(
        !ok && out.contains("has shape [3], the model takes [1, 4]"),
        "{out}"
    );
    let (ok, out, _) = run(&["predict", model.to_str().unwrap(), "/no/file"]);
    assert!(!ok && out.contains("cannot read the input"), "{out}");
}

/// A `.npy` file `name` in `dir` of f32 `values` in `shape` (a Python tuple).
fn npy(dir: &Path, name: &str, shape: &str, values: &[f32]) -> PathBuf {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(f32_bytes(values));
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}
