//! Faults around a running `serve`:
//!
//! - its state directory on a small tmpfs that fills up, then is remounted read-only. A
//!   label is learned either way, its answer says `persist_error`, the newest complete
//!   state on disk stays as it was, and the write goes through once the disk takes
//!   writes again. Mounting needs root (CI runs as root); elsewhere the test says it is
//!   skipped.
//! - the directory's lock: two `serve`s started at once on one directory, or one while
//!   another process holds the lock: exactly one runs, the other says why.
//!
//! Clock jumps cannot move `serve`'s write deadlines (the monotonic clock); the
//! scheduling is unit-tested with a clock of its own in `src/service/schedule.rs`.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use edgetune_testkit::tmpfs::{Tmpfs, fill, has_temporaries};
use serde_json::Value;

use crate::{Serve, case, sample, status};

/// The state files in `dir` and their bytes, oldest first (the lock and pins left out).
fn states(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("state-"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn full_and_read_only_disks() {
    let (_dir, model, state, mut rng) = case("faults-disk", 4, 7);
    let Some(fs) = Tmpfs::mount(&state, "512k") else {
        eprintln!(
            "skipped: cannot mount a tmpfs at {} (needs root)",
            state.display()
        );
        return;
    };
    let mut s = Serve::start(&model, &state, &["--persist-interval", "0"]);
    // Labels of classes a, b, c: each a prediction, then its label.
    let mut label = |s: &mut Serve, c: usize| -> Value {
        let p = s.predict(&sample(c, &mut rng));
        s.label(["a", "b", "c"][c], &p["sample"])
    };
    for c in [0, 1, 2] {
        let a = label(&mut s, c);
        assert!(a["persist_error"].is_null(), "{a}");
    }
    let before = states(&state);
    assert!(!before.is_empty());

    // Full: learned, reported, nothing on disk changed, no temporary file left.
    let filler = state.join("filler");
    fill(&filler);
    let a = label(&mut s, 2);
    assert_eq!(a["result"], "learned", "{a}");
    let err = a["persist_error"].as_str().unwrap_or_else(|| panic!("{a}"));
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(states(&state), before);
    assert!(!has_temporaries(&state));
    assert_eq!(s.ask(r#"{"status": true}"#)["labels"], 4);
    // Space again: the next write goes through.
    std::fs::remove_file(&filler).unwrap();
    let a = s.ask(r#"{"flush": true}"#);
    assert!(a["flushed"].is_u64(), "{a}");

    // Read-only: the same.
    let before = states(&state);
    fs.remount("ro");
    let a = label(&mut s, 0);
    assert_eq!(a["result"], "learned", "{a}");
    let err = a["persist_error"].as_str().unwrap_or_else(|| panic!("{a}"));
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(states(&state), before);
    fs.remount("rw");
    let a = label(&mut s, 1);
    assert!(a["persist_error"].is_null(), "{a}");
    s.stop();
    assert_eq!(status(&state)["labels"], 6);
    drop(fs);
}

/// `edgetune serve` on `state` with requests on stdin, its stderr kept.
fn spawn_serve(model: &Path, state: &Path) -> std::process::Child {
    crate::edgetune()
        .args([
            "serve",
            model.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (at most 60 s) until one of `children` exits; its index and status.
fn first_exit(children: &mut [std::process::Child]) -> (usize, std::process::ExitStatus) {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        for (i, c) in children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait().unwrap() {
                return (i, status);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("neither serve exited within 60 s");
}

fn stderr_of(c: &mut std::process::Child) -> String {
    let mut s = String::new();
    c.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

#[test]
fn one_serve_per_state_directory() {
    let (_dir, model, state, _) = case("faults-lock", 4, 8);
    // Two started at once: exactly one runs, the other says why.
    let mut both = [spawn_serve(&model, &state), spawn_serve(&model, &state)];
    let (loser, status) = first_exit(&mut both);
    assert!(!status.success());
    let err = stderr_of(&mut both[loser]);
    assert!(err.contains("in use by another edgetune process"), "{err}");
    let winner = &mut both[1 - loser];
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        winner.try_wait().unwrap().is_none(),
        "the other serve stopped too"
    );
    drop(winner.stdin.take());
    assert!(winner.wait().unwrap().success());

    // Another process holds the lock (here this test, as `flock` would).
    let lock = std::fs::File::open(state.join(".lock")).unwrap();
    lock.try_lock().unwrap();
    let mut c = spawn_serve(&model, &state);
    let (_, status) = first_exit(std::slice::from_mut(&mut c));
    assert!(!status.success());
    let err = stderr_of(&mut c);
    assert!(err.contains("in use by another edgetune process"), "{err}");
    // Released: serve starts.
    drop(lock);
    let mut c = spawn_serve(&model, &state);
    drop(c.stdin.take());
    assert!(c.wait().unwrap().success(), "{}", stderr_of(&mut c));
}
