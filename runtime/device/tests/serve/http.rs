//! `serve --http`: the token (missing 401, wrong 403, in a query string 401, a GET that
//! would change state 405, a cookie without the page's header 403: each changes
//! nothing), the token file's permissions checked at start, bad uploads and requests
//! (each a clear error, nothing lost), the live events and the pages.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{case, edgetune, sample};
pub use edgetune_testkit::http::request;

/// A running `serve --http 0` (a free port), with the address it listens on.
pub struct Web {
    pub child: Child,
    pub addr: SocketAddr,
    pub token: String,
}

impl Web {
    /// Starts `serve MODEL --state STATE --no-stdin --http 127.0.0.1:0 EXTRA…`; `None`
    /// with its error output when it stops before listening.
    pub fn try_start(model: &Path, state: &Path, extra: &[&str]) -> Result<Web, String> {
        let mut cmd = edgetune();
        cmd.args(["serve", model.to_str().unwrap(), "--state"])
            .arg(state)
            .args(["--no-stdin", "--http", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let (child, addr, token) = edgetune_testkit::http::serve(cmd, state)?;
        Ok(Web { child, addr, token })
    }

    pub fn start(model: &Path, state: &Path, extra: &[&str]) -> Web {
        Web::try_start(model, state, extra).unwrap_or_else(|log| panic!("serve stopped: {log}"))
    }

    /// `method path` with the token and `body` (JSON when it starts with `{`); the
    /// status and the body.
    pub fn ask(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let auth = format!("Bearer {}", self.token);
        let kind = if body.starts_with(b"{") {
            "application/json"
        } else {
            "application/octet-stream"
        };
        let (code, text) = request(
            self.addr,
            method,
            path,
            &[("Authorization", &auth), ("Content-Type", kind)],
            body,
        );
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn post(&self, path: &str, v: &Value) -> (u16, Value) {
        self.ask("POST", path, v.to_string().as_bytes())
    }

    /// Predicts `x`, then labels it `class`; the label's answer.
    pub fn learn(&self, x: &[f32], class: &str) -> Value {
        let (code, p) = self.post("/api/predict", &json!({ "tensor": x }));
        assert_eq!(code, 200, "{p}");
        let (code, a) = self.post(
            "/api/label",
            &json!({ "label": class, "sample": p["sample"] }),
        );
        assert_eq!(code, 200, "{a}");
        a
    }

    pub fn status(&self) -> Value {
        let (code, v) = self.ask("GET", "/api/status", b"");
        assert_eq!(code, 200, "{v}");
        v
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn terminate(mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        assert!(self.child.wait().unwrap().success());
    }
}

/// The counters a refused request must not change.
fn counts(s: &Value) -> Value {
    json!([s["state"], s["labels"], s["predictions"], s["classes"]])
}

#[test]
fn requests_without_the_token_are_refused_and_change_nothing() {
    let (_dir, model, state, mut rng) = case("http-access", 3, 31);
    let web = Web::start(&model, &state, &["--persist-interval", "0"]);
    let (code, p) = web.post("/api/predict", &json!({ "tensor": sample(0, &mut rng) }));
    assert_eq!(code, 200, "{p}");
    let before = web.status();
    let label = json!({ "label": "c", "sample": p["sample"] }).to_string();
    let label = label.as_bytes();
    let a = web.addr;
    let json_type = ("Content-Type", "application/json");
    let cookie = format!("edgetune_token={}", web.token);
    let wrong_cookie = "edgetune_token=0123456789abcdef0123456789abcdef".to_string();
    let refused: Vec<(u16, (u16, String))> = vec![
        // No token.
        (401, request(a, "POST", "/api/label", &[json_type], label)),
        (401, request(a, "GET", "/api/status", &[], b"")),
        // A wrong one, as a header or a cookie.
        (
            403,
            request(
                a,
                "POST",
                "/api/label",
                &[json_type, ("Authorization", "Bearer nope")],
                label,
            ),
        ),
        (
            403,
            request(
                a,
                "POST",
                "/api/label",
                &[json_type, ("Cookie", &wrong_cookie)],
                label,
            ),
        ),
        // In a query string (a link from another origin): never read.
        (
            401,
            request(
                a,
                "POST",
                &format!("/api/label?token={}", web.token),
                &[json_type],
                label,
            ),
        ),
        // The right cookie, but without the page's header, or from another origin.
        (
            403,
            request(
                a,
                "POST",
                "/api/label",
                &[json_type, ("Cookie", &cookie)],
                label,
            ),
        ),
        (
            403,
            request(
                a,
                "POST",
                "/api/label",
                &[
                    json_type,
                    ("Cookie", &cookie),
                    ("X-Edgetune", "1"),
                    ("Origin", "http://evil.example"),
                ],
                label,
            ),
        ),
        (403, request(a, "POST", "/login", &[], b"token=nope")),
    ];
    for (expected, (code, body)) in &refused {
        assert_eq!(code, expected, "{body}");
    }
    // A GET that would change state, with the right token.
    for path in ["/api/label", "/api/flush", "/api/rollback", "/api/predict"] {
        let (code, v) = web.ask("GET", path, b"");
        assert_eq!(code, 405, "GET {path}: {v}");
    }
    // /metrics is off unless asked for.
    assert_eq!(request(a, "GET", "/metrics", &[], b"").0, 404);
    assert_eq!(counts(&web.status()), counts(&before));
    // The page: the login form without a token, the page with the cookie the form sets.
    let (code, login) = request(a, "GET", "/", &[], b"");
    assert!(
        code == 401 && login.contains("name=\"token\""),
        "{code} {login}"
    );
    let (code, page) = request(a, "GET", "/", &[("Cookie", &cookie)], b"");
    assert!(code == 200 && page.contains("EventSource"), "{code}");
    // With the cookie and the page's header, a label is learned.
    let (code, body) = request(
        a,
        "POST",
        "/api/label",
        &[
            json_type,
            ("Cookie", &cookie),
            ("X-Edgetune", "1"),
            ("Origin", &format!("http://{a}")),
        ],
        label,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        web.status()["labels"],
        before["labels"].as_u64().unwrap() + 1
    );
    web.terminate();
    // A token file others can read is refused at start.
    let token = state.join("http-token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Web::try_start(&model, &state, &[]).err().expect("refused");
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn bad_input_over_http_gets_a_clear_error_and_loses_nothing() {
    let (_dir, model, state, mut rng) = case("http-bad", 3, 32);
    let web = Web::start(
        &model,
        &state,
        &[
            "--persist-interval",
            "0",
            "--max-input-bytes",
            "4096",
            "--metrics",
        ],
    );
    web.learn(&sample(0, &mut rng), "a");
    web.learn(&sample(2, &mut rng), "c");
    let before = web.status();
    let huge = vec![0u8; 1 << 20];
    let cases: Vec<(u16, (u16, Value), &str)> = vec![
        (
            413,
            web.ask("POST", "/api/predict", &huge),
            "larger than the limit of 4096 bytes",
        ),
        (
            400,
            web.ask("POST", "/api/predict", b""),
            "the body is empty",
        ),
        (
            400,
            web.ask("POST", "/api/label", b"{\"label\": "),
            "malformed JSON",
        ),
        (
            400,
            web.ask("POST", "/api/label", b"{\"lable\": \"a\"}"),
            "unknown field",
        ),
        // Not UTF-8 (a Latin-1 class name, a text in another encoding): refused whole.
        (
            400,
            web.ask(
                "POST",
                "/api/label",
                b"{\"label\": \"caf\xe9\", \"sample\": 1}",
            ),
            "not UTF-8",
        ),
        (
            400,
            web.ask("POST", "/api/predict", b"{\"text\": \"\xff\xfe\"}"),
            "not UTF-8",
        ),
        (
            400,
            web.ask("POST", "/api/request", b"{\"status\": true, \"\xc3\": 1}"),
            "not UTF-8",
        ),
        (
            400,
            web.post("/api/label", &json!({ "label": "a", "sample": 123456 })),
            "unknown sample",
        ),
        (
            400,
            web.post("/api/predict", &json!({ "input": "/etc/passwd" })),
            "cannot name a file",
        ),
        (
            400,
            web.post("/api/request", &json!({ "input": "/dev/zero" })),
            "cannot name a file",
        ),
        (
            400,
            web.post("/api/predict", &json!({ "tensor": [1.0] })),
            "values",
        ),
        (
            400,
            web.post("/api/rollback", &json!({ "to": 999 })),
            "no state 999",
        ),
        (404, web.ask("GET", "/api/frame/0", b""), "no image"),
        (404, web.ask("GET", "/nowhere", b""), "no such page"),
    ];
    for (expected, (code, v), says) in &cases {
        let e = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {v}"));
        assert!(e.contains(says), "{e:?} does not say {says:?}");
        assert_eq!(code, expected, "{e}");
    }
    // Not an image, not whole f32 values: an upload's own error.
    let (code, v) = web.ask("POST", "/api/predict", b"hello");
    assert!(
        code == 400 && v["error"].as_str().unwrap().contains("not a PNG"),
        "{v}"
    );
    // A fourth class in a head of three: refused, named.
    let (_, p) = web.post("/api/predict", &json!({ "tensor": sample(3, &mut rng) }));
    let (code, v) = web.post(
        "/api/label",
        &json!({ "label": "d", "sample": p["sample"] }),
    );
    assert!(
        code == 400 && v["error"].as_str().unwrap().contains("at most 3 classes"),
        "{v}"
    );
    let after = web.status();
    for k in ["labels", "state", "classes"] {
        assert_eq!(before[k], after[k], "{k} changed");
    }
    // Still serving; the raw f32 bytes of a tensor are an upload too.
    let bytes = crate::f32_bytes(&sample(1, &mut rng));
    let (code, v) = web.ask("POST", "/api/predict", &bytes);
    assert!(
        code == 200 && v["top"].as_array().unwrap().len() == 3,
        "{v}"
    );
    let (code, metrics) = request(web.addr, "GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("edgetune_http_refused_total{code=\"413\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgetune_class_labels_total{class=\"c\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edgetune_request_seconds_count"),
        "{metrics}"
    );
    web.terminate();
}

#[test]
fn pages_see_predictions_labels_and_rollbacks_live() {
    let (_dir, model, state, mut rng) = case("http-live", 4, 33);
    let web = Web::start(&model, &state, &["--persist-interval", "0"]);
    let mut events = TcpStream::connect(web.addr).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        events,
        "GET /api/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        web.addr, web.token
    )
    .unwrap();
    let mut events = BufReader::new(events);
    // The stream is open once its first comment arrives: a prediction before that
    // would not be in it.
    let mut line = String::new();
    while line.trim() != ": hello" {
        line.clear();
        assert!(events.read_line(&mut line).unwrap() > 0, "the stream ended");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next_event = || loop {
        // Keep-alive comments come every few seconds: bound the whole wait.
        assert!(Instant::now() < deadline, "no event within 60 s");
        let mut line = String::new();
        assert!(events.read_line(&mut line).unwrap() > 0, "the stream ended");
        if let Some(kind) = line.strip_prefix("event: ") {
            let mut data = String::new();
            events.read_line(&mut data).unwrap();
            let data = data.strip_prefix("data: ").unwrap();
            return (
                kind.trim().to_string(),
                serde_json::from_str::<Value>(data).unwrap(),
            );
        }
    };
    // A sample far from both classes: uncertain, queued until labeled.
    let (_, p) = web.post("/api/predict", &json!({ "tensor": [0.5, 0.5, 0.0, 0.0] }));
    let (kind, e) = next_event();
    assert_eq!((kind.as_str(), &e["sample"]), ("prediction", &p["sample"]));
    assert_eq!(e["source"], "http");
    let (_, live) = web.ask("GET", "/api/live", b"");
    assert_eq!(live["latest"]["sample"], p["sample"]);
    assert_eq!(live["uncertain"][0]["sample"], p["sample"], "{live}");
    assert_eq!(
        web.post(
            "/api/label",
            &json!({ "label": "a", "sample": p["sample"] })
        )
        .0,
        200
    );
    let (kind, _) = next_event();
    assert_eq!(kind, "label");
    let (_, live) = web.ask("GET", "/api/live", b"");
    assert_eq!(
        live["uncertain"],
        json!([]),
        "a labeled sample leaves the queue"
    );
    // A second label, then undo it: the state before is back.
    let (_, p) = web.post("/api/predict", &json!({ "tensor": sample(2, &mut rng) }));
    next_event();
    assert_eq!(
        web.post(
            "/api/label",
            &json!({ "label": "c", "sample": p["sample"] })
        )
        .0,
        200
    );
    next_event();
    assert_eq!(web.status()["classes"].as_array().unwrap().len(), 3);
    let (code, v) = web.ask("POST", "/api/rollback", b"");
    assert_eq!(code, 200, "{v}");
    let (kind, _) = next_event();
    assert_eq!(kind, "rollback");
    let s = web.status();
    assert_eq!(s["classes"].as_array().unwrap().len(), 2, "{s}");
    assert_eq!(s["origin"], format!("rollback to state {}", v["copy_of"]));
    web.terminate();
}

/// Ten idle seconds stopped the server for good (issue #16): with `--http-timeout`
/// on the listening socket an idle `accept` times out, and tiny_http 0.12.0 ended its
/// accept thread on that. And a request claiming 2^64−1 bytes of body made it allocate
/// them when it drained the body nobody read. (Both fixed in third_party/tiny_http.)
#[test]
fn an_idle_server_still_accepts_and_huge_claimed_bodies_cost_nothing() {
    let (_dir, model, state, mut rng) = case("http-idle", 3, 34);
    let web = Web::start(&model, &state, &["--http-timeout", "1"]);
    web.learn(&sample(0, &mut rng), "a");
    // Idle for more than two timeouts.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(web.status()["labels"], 1, "the server stopped accepting");
    let auth = format!("Bearer {}", web.token);
    for (method, path) in [("POST", "/api/predict"), ("GET", "/api/status")] {
        for length in [
            "18446744073709551615",
            "18446744073709551616",
            "99999999999",
        ] {
            let mut c = TcpStream::connect(web.addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            write!(
                c,
                "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {length}\r\n\r\n0123"
            )
            .unwrap();
            let mut out = Vec::new();
            // The server answers, or drops the connection after its timeout: either way
            // it lives on.
            let _ = c.read_to_end(&mut out);
            let out = String::from_utf8_lossy(&out);
            assert!(
                out.is_empty() || out.starts_with("HTTP/1.1 "),
                "{method} {path} with Content-Length {length}: {out}"
            );
        }
    }
    assert_eq!(web.status()["labels"], 1);
    let pid = web.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let peak_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(peak_kb < 256 * 1024, "peak resident memory {peak_kb} kB");
    web.terminate();
}
