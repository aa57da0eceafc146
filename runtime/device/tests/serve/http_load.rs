//! `serve --http` under load: concurrent clients stream predictions and labels over
//! loopback for a few seconds (bounded: the test stops by itself). No label is lost or
//! counted twice, the state on disk agrees after a restart, and the service answers
//! its socket meanwhile. HTTP clients that stall mid-request, and a page that stops
//! reading its events, hold their own worker or stream, never the service. The latency of a prediction over HTTP and over the socket is
//! printed (`--nocapture`), not asserted: it is a measurement, not a promise.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use edgetune::rng::Rng;
use serde_json::{Value, json};

use crate::http::Web;
use crate::{case, sample, status};

const CLIENTS: usize = 12;
const RUN: Duration = Duration::from_secs(3);

#[test]
fn concurrent_clients_lose_no_label() {
    let (dir, model, state, _) = case("http-load", 4, 41);
    let sock = dir.join("edgetune.sock");
    let web = Web::start(
        &model,
        &state,
        &[
            "--persist-interval",
            "0.2",
            "--http-workers",
            "4",
            "--socket",
            sock.to_str().unwrap(),
        ],
    );
    let deadline = Instant::now() + RUN;
    let counts: Vec<[u64; 3]> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let web = &web;
                s.spawn(move || {
                    let mut rng = Rng::new(100 + k as u64);
                    let (mut labels, mut gone) = ([0u64; 2], 0);
                    while Instant::now() < deadline {
                        let c = (k + labels.iter().sum::<u64>() as usize) % 2;
                        let x = json!({ "tensor": sample(c, &mut rng) });
                        let (code, p) = web.post("/api/predict", &x);
                        assert_eq!(code, 200, "{p}");
                        let name = ["a", "b"][c];
                        let label = json!({ "label": name, "sample": p["sample"] });
                        let (code, a) = web.post("/api/label", &label);
                        // On a loaded machine a client may be held up while the others
                        // predict more than the engine keeps: its sample is then
                        // unknown, an error that learns nothing.
                        if code == 400
                            && a["error"]
                                .as_str()
                                .is_some_and(|e| e.contains("unknown sample"))
                        {
                            gone += 1;
                            continue;
                        }
                        assert_eq!(code, 200, "{a}");
                        assert!(a["result"] == "learned" || a["result"] == "refused", "{a}");
                        labels[c] += 1;
                    }
                    [labels[0], labels[1], gone]
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let sent: [u64; 2] = [0, 1].map(|c| counts.iter().map(|l| l[c]).sum());
    let s = web.status();
    assert_eq!(s["labels"], sent[0] + sent[1], "{s}");
    for c in 0..2 {
        assert_eq!(s["classes"][c]["labels"], sent[c], "class {c}: {s}");
    }
    let gone: u64 = counts.iter().map(|l| l[2]).sum();
    eprintln!(
        "{CLIENTS} HTTP clients, {:?}: {} labels learned, {gone} for samples no longer kept",
        RUN,
        sent[0] + sent[1]
    );
    latencies(&web, &sock);
    web.terminate();
    // What was written agrees after the stop.
    let disk = status(&state);
    assert_eq!(disk["labels"], sent[0] + sent[1], "{disk}");
}

/// Prints p50 and p99 of 200 predictions, one client at a time, over HTTP and over
/// the socket.
fn latencies(web: &Web, sock: &std::path::Path) {
    let mut rng = Rng::new(7);
    let x = sample(0, &mut rng);
    let body = json!({ "tensor": x }).to_string();
    let mut http = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        assert_eq!(web.ask("POST", "/api/predict", body.as_bytes()).0, 200);
        http.push(t.elapsed());
    }
    let mut conn = UnixStream::connect(sock).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut socket = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        writeln!(conn, "{body}").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        socket.push(t.elapsed());
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("top").is_some(), "{v}");
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
    };
    eprintln!(
        "one prediction of a {}-value tensor: HTTP p50 {:.3} ms, p99 {:.3} ms; socket p50 {:.3} ms, p99 {:.3} ms",
        x.len(),
        pct(&mut http, 0.5),
        pct(&mut http, 0.99),
        pct(&mut socket, 0.5),
        pct(&mut socket, 0.99)
    );
}

#[test]
fn stuck_http_clients_never_stop_the_service() {
    let (dir, model, state, mut rng) = case("http-stuck", 4, 42);
    let sock = dir.join("edgetune.sock");
    let web = Web::start(
        &model,
        &state,
        &["--http-workers", "2", "--socket", sock.to_str().unwrap()],
    );
    // Two clients announce a body and never send it: both workers wait on them, and
    // a page that stops reading its live events holds its stream.
    let auth = format!("Authorization: Bearer {}", web.token);
    let stuck: Vec<std::net::TcpStream> = (0..3)
        .map(|i| {
            let mut c = std::net::TcpStream::connect(web.addr).unwrap();
            let req = if i < 2 {
                "POST /api/predict HTTP/1.1\r\nContent-Length: 1000\r\n"
            } else {
                "GET /api/events HTTP/1.1\r\n"
            };
            write!(c, "{req}Host: x\r\n{auth}\r\n\r\n0123").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The socket still predicts and learns, and those answers go to the live view.
    let mut conn = UnixStream::connect(&sock).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut ask = |v: Value| {
        writeln!(conn, "{v}").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    };
    for _ in 0..50 {
        let p = ask(json!({ "tensor": sample(0, &mut rng) }));
        let a = ask(json!({ "label": "a", "sample": p["sample"] }));
        assert_eq!(a["result"], "learned", "{a}");
    }
    assert_eq!(ask(json!({ "status": true }))["labels"], 50);
    // Once the stuck clients go, HTTP answers again.
    drop(stuck);
    assert_eq!(web.status()["labels"], 50);
    web.terminate();
}
