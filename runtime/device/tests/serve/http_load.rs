//! `serve --http` under load: 16 concurrent clients stream predictions and labels over
//! loopback for 3 s, or `EDGETUNE_HTTP_LOAD_SECS` (30 for the full run; bounded:
//! the test stops by itself). No label is lost or counted twice, the state on disk
//! agrees after a restart, and the service answers its socket meanwhile. HTTP clients
//! that stall mid-request or trickle their body, and a page that stops reading its
//! events, hold their own worker or stream, never the service, and only until
//! `--http-timeout`. The latency of a prediction over HTTP and over the socket is
//! printed (`--nocapture`), not asserted: it is a measurement, not a promise.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use edgetune::rng::Rng;
use serde_json::{Value, json};

use crate::http::Web;
use crate::{case, sample, status};

const CLIENTS: usize = 16;

/// How long the clients stream: 3 s in CI, `EDGETUNE_HTTP_LOAD_SECS` when set.
fn run_time() -> Duration {
    let var = std::env::var("EDGETUNE_HTTP_LOAD_SECS");
    let secs = var.as_deref().map_or(Ok(3.0), str::parse::<f64>);
    match secs {
        Ok(s) if s > 0.0 && s <= 3600.0 => Duration::from_secs_f64(s),
        _ => panic!("EDGETUNE_HTTP_LOAD_SECS={var:?}: expected seconds, more than 0, at most 3600"),
    }
}

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
    let run = run_time();
    let deadline = Instant::now() + run;
    let counts: Vec<([u64; 3], Vec<Duration>)> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|k| {
                let web = &web;
                s.spawn(move || {
                    let mut rng = Rng::new(100 + k as u64);
                    let (mut labels, mut gone, mut waits) = ([0u64; 2], 0, Vec::new());
                    while Instant::now() < deadline {
                        let c = (k + labels.iter().sum::<u64>() as usize) % 2;
                        let x = json!({ "tensor": sample(c, &mut rng) });
                        let t = Instant::now();
                        let (code, p) = web.post("/api/predict", &x);
                        waits.push(t.elapsed());
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
                    ([labels[0], labels[1], gone], waits)
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let sent: [u64; 2] = [0, 1].map(|c| counts.iter().map(|l| l.0[c]).sum());
    let s = web.status();
    assert_eq!(s["labels"], sent[0] + sent[1], "{s}");
    for c in 0..2 {
        assert_eq!(s["classes"][c]["labels"], sent[c], "class {c}: {s}");
    }
    let gone: u64 = counts.iter().map(|l| l.0[2]).sum();
    let mut waits: Vec<Duration> = counts.into_iter().flat_map(|l| l.1).collect();
    eprintln!(
        "{CLIENTS} HTTP clients, {run:?}: {} labels learned, {gone} for samples no longer kept; {} predictions under load, p50 {:.3} ms, p99 {:.3} ms",
        sent[0] + sent[1],
        waits.len(),
        percentile(&mut waits, 0.5),
        percentile(&mut waits, 0.99)
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
    eprintln!(
        "one prediction of a {}-value tensor: HTTP p50 {:.3} ms, p99 {:.3} ms; socket p50 {:.3} ms, p99 {:.3} ms",
        x.len(),
        percentile(&mut http, 0.5),
        percentile(&mut http, 0.99),
        percentile(&mut socket, 0.5),
        percentile(&mut socket, 0.99)
    );
}

/// The `p` quantile of `v`, in milliseconds.
fn percentile(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

#[test]
fn stuck_http_clients_never_stop_the_service() {
    let (dir, model, state, mut rng) = case("http-stuck", 4, 42);
    let sock = dir.join("edgetune.sock");
    let web = Web::start(
        &model,
        &state,
        &[
            "--http-workers",
            "3",
            "--http-timeout",
            "1",
            "--socket",
            sock.to_str().unwrap(),
        ],
    );
    // As many clients as workers hold one each: two announce a body and never send it,
    // one sends it a byte every 200 ms (bodies over 1 KiB: tiny_http reads smaller ones
    // itself before a worker sees the request). A fourth stops in the middle of its headers (it
    // holds a connection thread, not a worker), and a page stops reading its live
    // events.
    let auth = format!("Authorization: Bearer {}", web.token);
    let head = |c: &mut TcpStream, req: &str| {
        write!(c, "{req}Host: x\r\n{auth}\r\n\r\n0123").unwrap();
    };
    let mut stuck: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut c = TcpStream::connect(web.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            match i {
                0 | 1 => head(
                    &mut c,
                    "POST /api/predict HTTP/1.1\r\nContent-Length: 100000\r\n",
                ),
                2 => head(&mut c, "GET /api/events HTTP/1.1\r\n"),
                _ => write!(c, "POST /api/predict HTTP/1.1\r\nHost: x\r\n").unwrap(),
            }
            c
        })
        .collect();
    let started = Instant::now();
    let trickle = std::thread::spawn({
        let mut c = TcpStream::connect(web.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        head(
            &mut c,
            "POST /api/predict HTTP/1.1\r\nContent-Length: 100000\r\n",
        );
        move || {
            // A byte every 200 ms until the server answers (or 30 s).
            c.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while started.elapsed() < Duration::from_secs(30) && c.write_all(b"0").is_ok() {
                match c.read(&mut buf) {
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        break;
                    }
                    Err(_) => continue,
                }
            }
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            String::from_utf8_lossy(&got).into_owned() + &answer_of(&mut c)
        }
    });
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
    // With the stuck clients still connected, the API and the page answer: the
    // server drops the stalled ones after --http-timeout (408) and the trickling one
    // after six of them.
    let t = Instant::now();
    assert_eq!(web.status()["labels"], 50);
    let api = t.elapsed();
    let (code, page) = web.ask("GET", "/", b"");
    assert_eq!(code, 200);
    assert!(page.as_str().is_some_and(|p| p.contains("<title>edgetune")));
    for c in &mut stuck[..2] {
        let answer = answer_of(c);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("did not arrive in time"), "{answer}");
    }
    // The one stopped in its headers is dropped (without an answer: tiny_http answers
    // 408 only to a read that says TimedOut, and Linux says WouldBlock).
    let answer = answer_of(&mut stuck[3]);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    let answer = trickle.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let trickled = started.elapsed();
    eprintln!(
        "with every HTTP worker held by a stuck client (--http-timeout 1): the API answered after {api:?}; the trickling client was dropped after {trickled:?}"
    );
    web.terminate();
}

/// What the server sent on `c` until it closed it.
fn answer_of(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
