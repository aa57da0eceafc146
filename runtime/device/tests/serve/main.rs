//! The `edgetune` program as a user runs it: `serve` on a features-only bundle with
//! requests on stdin, killed at random moments, its newest state file damaged byte by
//! byte, fed bad requests; `status`, `rollback`, `reset` and `predict` on what it left.
//! Plus the learning core's promise of no heap allocation per request.
//!
//! This file holds the harness (a test bundle, samples, a running `serve`); each module
//! one side of the program.

// The counting allocator the core crate's tests use.
#[path = "../../../core/tests/common/mod.rs"]
mod common;

mod admin;
mod allocations;
mod faults;
mod fleet;
mod http;
mod http_load;
mod learning;
mod power_cuts;
mod requests;
mod soak;
mod sources;
mod trust;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use edgetune::bundle::{Bundle, Provenance};
use edgetune::rng::Rng;
use edgetune::{Dims, Head, Learner, persist};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_edgetune");

/// The binary under test. When the tests run under qemu (`scripts/cross.sh`), the
/// binary is an ARM one too and needs the same emulator: `EDGETUNE_TEST_RUNNER` holds
/// that command (e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`); a kill then kills the
/// emulated program with its emulator.
fn edgetune() -> Command {
    match std::env::var("EDGETUNE_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut cmd = Command::new(words.next().unwrap());
            cmd.args(words).arg(BIN);
            cmd
        }
        _ => Command::new(BIN),
    }
}
const DIM: usize = 4;

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A sample of class `c`: near the c-th axis (classes 0..DIM), with noise.
fn sample(c: usize, rng: &mut Rng) -> Vec<f32> {
    (0..DIM)
        .map(|i| if i == c % DIM { 1.0 } else { 0.0 } + rng.uniform(-0.15, 0.15))
        .collect()
}

/// A features-only bundle of classes "a" and "b" (axes 0 and 1), room for `capacity`.
fn bundle(dir: &Path, capacity: usize) -> PathBuf {
    let mut b = Bundle::features_only(DIM, ["a", "b"], Provenance::new("synthetic", "test"));
    let mut head = Head::alloc(Dims::linear(DIM, capacity), 2).unwrap();
    for c in 0..2 {
        let mut axis = [0.0; DIM];
        axis[c] = 1.0;
        head.imprint(c, &axis, None).unwrap();
    }
    b.head = Some(persist::encode_to_vec(&head, None::<&Learner<[f32; 0]>>).unwrap());
    let path = dir.join("model.etb");
    b.write(&path).unwrap();
    path
}

/// What most tests start from: their directory (`name`), a bundle in it with room for
/// `capacity` classes, the path of a state directory (`serve` creates it) and a
/// generator seeded with `seed`.
fn case(name: &str, capacity: usize, seed: u64) -> (PathBuf, PathBuf, PathBuf, Rng) {
    let dir = tmp(name);
    let model = bundle(&dir, capacity);
    let state = dir.join("state");
    (dir, model, state, Rng::new(seed))
}

/// Raw little-endian f32 bytes of `values` (an input file).
fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A running `edgetune serve` with requests on its stdin.
struct Serve {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Serve {
    fn start(bundle: &Path, state: &Path, extra: &[&str]) -> Serve {
        let mut child = edgetune()
            .args([
                "serve",
                bundle.to_str().unwrap(),
                "--state",
                state.to_str().unwrap(),
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("edgetune runs");
        let out = BufReader::new(child.stdout.take().unwrap());
        Serve { child, out }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn ask(&mut self, line: &str) -> Value {
        self.send(line);
        self.answer().expect("an answer")
    }

    fn answer(&mut self) -> Option<Value> {
        let mut s = String::new();
        match self.out.read_line(&mut s) {
            Ok(n) if n > 0 => Some(serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"))),
            _ => None,
        }
    }

    fn predict(&mut self, x: &[f32]) -> Value {
        self.ask(&json!({ "tensor": x }).to_string())
    }

    fn label(&mut self, name: &str, sample: &Value) -> Value {
        self.ask(&json!({ "label": name, "sample": sample }).to_string())
    }

    /// SIGTERM, and waits for a clean exit.
    fn terminate(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status} on SIGTERM");
    }

    /// Closes stdin and waits for a clean exit.
    fn stop(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = edgetune().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `edgetune serve MODEL --state STATE --no-stdin EXTRA…` run to its end: whether it
/// succeeded, its stdout and its stderr.
fn serve_to_end(model: &Path, state: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "serve",
        model.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--no-stdin",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// `edgetune status --json` of a state directory.
fn status(state: &Path) -> Value {
    let (ok, out, err) = run(&["status", "--state", state.to_str().unwrap(), "--json"]);
    assert!(ok, "status failed: {err}");
    serde_json::from_str(&out).unwrap()
}
