//! Requests that cannot be served: each gets an error naming why and changes nothing;
//! files are read only within the input limit.

use std::io::Write;
use std::path::Path;

use edgetune::rng::Rng;

use crate::{Serve, bundle, case, f32_bytes, sample, serve_to_end, status, tmp};

#[test]
fn bad_requests_get_an_error_each_and_change_nothing() {
    let (dir, model, state, mut rng) = case("bad", 3, 2);
    let mut s = Serve::start(&model, &state, &["--persist-interval", "0"]);
    let p = s.predict(&sample(0, &mut rng));
    s.label("a", &p["sample"]);
    let p = s.predict(&sample(2, &mut rng));
    assert!(s.label("c", &p["sample"])["added"] == true);
    let before = s.ask(r#"{"status": true}"#);
    let cases = bad_lines(&dir);
    for (line, expected) in &cases {
        let a = s.ask(line);
        let e = a["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{line}: no error in {a}"));
        assert!(
            e.contains(expected),
            "{line}: {e:?} does not say {expected:?}"
        );
        assert!(!e.contains("1294"), "{e:?} describes the file");
    }
    // Bytes that are no request line at all: invalid UTF-8, and a line longer than the
    // 64 MiB limit. Each gets an error; the stream goes on.
    let stdin = s.child.stdin.as_mut().unwrap();
    stdin.write_all(b"{\"label\": \"\xff\xfe\"}\n").unwrap();
    let a = s.answer().unwrap();
    assert!(a["error"].as_str().unwrap().contains("not UTF-8"), "{a}");
    let stdin = s.child.stdin.as_mut().unwrap();
    let long = vec![b' '; (64 << 20) + 10];
    stdin.write_all(&long).unwrap();
    stdin.write_all(b"\n").unwrap();
    let a = s.answer().unwrap();
    assert!(
        a["error"].as_str().unwrap().contains("longer than 64 MiB"),
        "{a}"
    );
    // Capacity 3, all taken: a fourth class is refused with the reason.
    let p = s.predict(&sample(3, &mut rng));
    let a = s.label("d", &p["sample"]);
    assert!(
        a["error"].as_str().unwrap().contains("at most 3 classes"),
        "{a}"
    );
    let after = s.ask(r#"{"status": true}"#);
    for k in ["labels", "updates", "state", "classes"] {
        assert_eq!(before[k], after[k], "{k} changed");
    }
    // Still serving.
    assert_eq!(s.predict(&sample(0, &mut rng))["class"], "a");

    // The state directory disappears under the service: the label is learned and
    // answered, the write error is reported, and the next write catches up.
    state_dir_goes_away_and_comes_back(&mut s, &dir, &state, &mut rng);
    s.stop();
    assert_eq!(status(&state)["labels"], 4);

    // A state directory that cannot be one: a clear error at start.
    let file = dir.join("file");
    std::fs::write(&file, b"x").unwrap();
    let (ok, _, err) = serve_to_end(&model, &file, &[]);
    assert!(!ok);
    assert!(
        err.contains("is not a directory") || err.contains("cannot create"),
        "{err}"
    );
}

#[test]
fn input_files_are_read_within_the_input_limit() {
    let dir = tmp("limit");
    let model = bundle(&dir, 2);
    let raw = dir.join("x.f32");
    let bytes = f32_bytes(&[1.0f32, 0.0, 0.0, 0.0]);
    std::fs::write(&raw, &bytes).unwrap();
    let line = format!(r#"{{"input": {raw:?}}}"#);
    let mut s = Serve::start(&model, &dir.join("a"), &["--max-input-bytes", "8"]);
    let a = s.ask(&line);
    assert!(
        a["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than the input limit of 8 bytes")),
        "{a}"
    );
    s.stop();
    let mut s = Serve::start(&model, &dir.join("b"), &[]);
    let a = s.ask(&line);
    assert!(a.get("error").is_none() && a["sample"].is_u64(), "{a}");
    s.stop();
}

/// Request lines that cannot be served, each with what its error must say. Makes the
/// files some of them name in `dir`.
fn bad_lines(dir: &Path) -> Vec<(String, &'static str)> {
    let nan = {
        let mut bytes = Vec::new();
        for v in [1.0f32, f32::NAN, 0.0, 0.0] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    // Files no input may be read from: a device that never ends, a FIFO nobody writes
    // (opening it must not block the service), a file of the wrong size (the error
    // must not describe it).
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let odd = dir.join("odd.bin");
    std::fs::write(&odd, [0u8; 1294]).unwrap();
    vec![
        (r#"{"input": "/dev/zero"}"#.into(), "is not a regular file"),
        (
            format!(r#"{{"input": {:?}}}"#, fifo),
            "is not a regular file",
        ),
        (
            format!(r#"{{"input": {:?}}}"#, dir),
            "is not a regular file",
        ),
        (
            format!(r#"{{"input": {:?}}}"#, odd),
            "is not a PNG, JPEG or .npy file, nor 4 raw little-endian f32 values",
        ),
        ("{not json".into(), "malformed JSON"),
        (
            r#"{"tensor": [1, 2]}"#.into(),
            "has 2 values, this model takes [1, 4] = 4",
        ),
        (format!(r#"{{"data": "{nan}"}}"#), "NaN at position 1"),
        (r#"{"data": "***"}"#.into(), "not valid base64"),
        (r#"{"tensor": [1e39, 0, 0, 0]}"#.into(), "inf at position 0"),
        (
            r#"{"input": "/no/such/file.png"}"#.into(),
            "cannot read the input /no/such/file.png",
        ),
        (
            r#"{"label": "a", "sample": 999999}"#.into(),
            "unknown sample id 999999",
        ),
        (
            r#"{"label": 7}"#.into(),
            "class index 7 is not one of the head's 3 classes",
        ),
        (r#"{"label": ""}"#.into(), "cannot be empty"),
        (r#"{"lable": "a"}"#.into(), "unknown field `lable`"),
        (
            r#"{"tensor": [0, 0, 0, 1], "label": "a"}"#.into(),
            "exactly one of",
        ),
        (r#"[1, 2]"#.into(), "invalid request"),
    ]
}

/// Moves the state directory away (a file in its place) while `s` serves, labels,
/// and moves it back.
fn state_dir_goes_away_and_comes_back(s: &mut Serve, dir: &Path, state: &Path, rng: &mut Rng) {
    let moved = dir.join("moved");
    std::fs::rename(state, &moved).unwrap();
    std::fs::write(state, b"not a directory").unwrap();
    let p = s.predict(&sample(1, rng));
    let a = s.label("b", &p["sample"]);
    assert_eq!(a["result"], "learned", "{a}");
    assert!(
        a["persist_error"].as_str().unwrap().contains("cannot"),
        "{a}"
    );
    std::fs::remove_file(state).unwrap();
    std::fs::rename(&moved, state).unwrap();
    let a = s.label("b", &p["sample"]);
    assert!(a["persisted"].is_u64(), "{a}");
}
