//! The soak: `serve` on its Unix socket for a given time with a mix of predictions,
//! labels (some of new classes), status and flush requests, malformed requests,
//! reconnecting clients and `rollback`s tried while it runs; then checks that its
//! resident memory stayed flat after warm-up (within 5 %), that it leaked no file
//! descriptor, that no more than `--keep` state files are left, and that every label it
//! acknowledged is in the final state.
//!
//! Opt-in (it is ignored by default): `scripts/soak.sh SECONDS`, or
//! `EDGETUNE_SOAK_SECS=3600 cargo test --workspace --test serve soak -- --ignored
//! --nocapture` for an hour. It prints the memory curve.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Serve, case, run, sample, status};

/// Classes the head has room for; the soak adds new ones up to this.
const CAPACITY: usize = 12;
/// `--keep`.
const KEEP: usize = 3;

/// Requests that are not valid, each with a piece of its expected error.
const MALFORMED: &[(&str, &str)] = &[
    ("oops", "malformed JSON"),
    (r#"{"tensor": [1.0, 2.0]}"#, "values"),
    (r#"{"input": "/dev/zero"}"#, "regular file"),
    (r#"{"input": "/nonexistent/x.png"}"#, "/nonexistent/x.png"),
    (r#"{"data": "!!!"}"#, "base64"),
    (r#"{"label": "a", "sample": 987654321}"#, "987654321"),
    (r#"{"unknown": 1}"#, "unknown field"),
    (r#"{"sample": 3}"#, "exactly one"),
    (r#"{"status": true, "flush": true}"#, "exactly one"),
];

/// A client connection of the socket.
struct Client {
    write: UnixStream,
    read: BufReader<UnixStream>,
}

impl Client {
    fn connect(sock: &Path) -> Client {
        let write = UnixStream::connect(sock).expect("the socket accepts");
        write
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let read = BufReader::new(write.try_clone().unwrap());
        Client { write, read }
    }

    fn ask(&mut self, line: &str) -> Value {
        writeln!(self.write, "{line}").unwrap();
        let mut answer = String::new();
        self.read.read_line(&mut answer).expect("an answer in time");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?} to {line}"))
    }
}

/// Resident memory (kB) and open descriptors of process `pid`.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

#[test]
#[ignore = "a soak of EDGETUNE_SOAK_SECS seconds (default 60): scripts/soak.sh SECONDS"]
fn soak() {
    let secs: u64 = std::env::var("EDGETUNE_SOAK_SECS")
        .ok()
        .map(|s| {
            s.parse()
                .expect("EDGETUNE_SOAK_SECS is a number of seconds")
        })
        .unwrap_or(60);
    let (dir, model, state, mut rng) = case("soak", CAPACITY, 31);
    let sock = dir.join("edgetune.sock");
    let keep = KEEP.to_string();
    let s = Serve::start(
        &model,
        &state,
        &[
            "--socket",
            sock.to_str().unwrap(),
            "--persist-interval",
            "0.2",
            "--keep",
            &keep,
        ],
    );
    let pid = s.child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }

    let start = Instant::now();
    let duration = Duration::from_secs(secs);
    // Warm-up: the first quarter (at least 5 s), while buffers and caches fill.
    let warm_up = (duration / 4).max(Duration::from_secs(5));
    let mut classes: Vec<String> = vec!["a".into(), "b".into()];
    let mut acknowledged: BTreeMap<String, u64> = BTreeMap::new();
    let mut curve: Vec<(f64, u64, usize)> = vec![];
    let mut next_sample_at = start;
    let mut client = Client::connect(&sock);
    let mut last_sample = Value::Null;
    let (mut requests, mut rollbacks, mut labels) = (0u64, 0u64, 0u64);
    while start.elapsed() < duration {
        if Instant::now() >= next_sample_at {
            let (rss, fds) = usage(pid);
            curve.push((start.elapsed().as_secs_f64(), rss, fds));
            next_sample_at += Duration::from_secs(1);
        }
        requests += 1;
        match requests % 12 {
            0..=5 => {
                let c = rng.below(classes.len());
                let a = client.ask(&json!({ "tensor": sample(c, &mut rng) }).to_string());
                assert!(a["sample"].is_u64(), "{a}");
                last_sample = a["sample"].clone();
            }
            6 | 7 => {
                labels += 1;
                // Every 25th label names a new class while the head has room.
                if labels % 25 == 0 && classes.len() < CAPACITY {
                    classes.push(format!("class-{}", classes.len()));
                }
                let name = classes[rng.below(classes.len())].clone();
                let a = client.ask(&json!({ "label": name, "sample": last_sample }).to_string());
                assert!(a["result"].is_string(), "{a}");
                assert!(a["persist_error"].is_null(), "{a}");
                *acknowledged.entry(name).or_default() += 1;
            }
            8 => {
                let a = client.ask(r#"{"status": true}"#);
                assert!(a["classes"].is_array(), "{a}");
            }
            9 => {
                let a = client.ask(r#"{"flush": true}"#);
                assert!(a.get("error").is_none(), "{a}");
            }
            10 => {
                let (line, expected) = MALFORMED[(requests / 12) as usize % MALFORMED.len()];
                let a = client.ask(line);
                let error = a["error"].as_str().unwrap_or_else(|| panic!("{line}: {a}"));
                assert!(error.contains(expected), "{line}: {error}");
            }
            _ => {
                // A new client now and then (the old one's descriptor must go), and a
                // rollback, which refuses while `serve` holds the directory.
                client = Client::connect(&sock);
                if requests % 120 == 11 {
                    rollbacks += 1;
                    let (ok, _, err) = run(&["rollback", "--state", state.to_str().unwrap()]);
                    assert!(
                        !ok && err.contains("in use by another"),
                        "rollback during serve: {err}"
                    );
                }
            }
        }
    }
    // The service closes a dropped client's descriptor when it sees its end: let it.
    std::thread::sleep(Duration::from_millis(300));
    let (rss_end, fds_end) = usage(pid);
    drop(client);
    s.terminate();

    let at = |t: Duration| {
        curve
            .iter()
            .find(|c| c.0 >= t.as_secs_f64())
            .unwrap_or(&curve[0])
    };
    let (_, rss_start, _) = curve[0];
    let (t_warm, rss_warm, _) = *at(warm_up);
    let after: Vec<_> = curve.iter().filter(|c| c.0 >= t_warm).collect();
    let rss_max = after.iter().map(|c| c.1).max().unwrap();
    // With one client connected, the median; a sample may catch a client between its
    // closing and the next one's accepting (one fewer, or one more).
    let mut fds: Vec<usize> = after.iter().map(|c| c.2).collect();
    fds.sort_unstable();
    let fds_warm = fds[fds.len() / 2];
    println!(
        "soak: {secs} s, {requests} requests, {labels} labels, {} classes, {rollbacks} \
         rollbacks refused; RSS kB: start {rss_start}, after warm-up ({t_warm:.0} s) \
         {rss_warm}, max after warm-up {rss_max}, end {rss_end}; descriptors {fds_warm} \
         after warm-up, {fds_end} at the end",
        classes.len()
    );
    for (t, rss, fds) in curve.iter().step_by((curve.len() / 20).max(1)) {
        println!("soak: {t:6.1} s  RSS {rss} kB  {fds} descriptors");
    }
    assert!(
        rss_max as f64 <= rss_warm as f64 * 1.05,
        "resident memory grew after warm-up: {rss_warm} kB -> {rss_max} kB"
    );
    // Thousands of clients came and went: a leak would show as thousands.
    assert!(
        fds_end <= fds_warm + 1,
        "descriptors leaked: {fds_warm} -> {fds_end}"
    );

    let files = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("state-") && n.ends_with(".bin"))
        .count();
    assert!(files <= KEEP, "{files} state files, --keep {KEEP}");
    let last = status(&state);
    println!(
        "soak: {files} state files (--keep {KEEP}); the final state has {} labels, {} \
         acknowledged",
        last["labels"],
        acknowledged.values().sum::<u64>()
    );
    assert_eq!(last["labels"], acknowledged.values().sum::<u64>(), "{last}");
    for class in last["classes"].as_array().unwrap() {
        let name = class["name"].as_str().unwrap();
        let want = acknowledged.get(name).copied().unwrap_or(0);
        assert_eq!(class["labels"], want, "labels of {name}: {last}");
    }
    // Once `serve` is gone, rollback works.
    let (ok, _, err) = run(&["rollback", "--state", state.to_str().unwrap()]);
    assert!(ok, "rollback after serve: {err}");
}
