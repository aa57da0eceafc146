//! The HTTP routes: each checks the method and the token, reads the body within bounds,
//! turns it into a request of the socket protocol (uploads only: a request from the
//! network never names a file on the device) and answers with the service's answer.
//!
//! | route | method | what |
//! | --- | --- | --- |
//! | `/` | GET | the labeling page (the login form without a token) |
//! | `/login` | POST | `token=…` (a form): sets the cookie |
//! | `/api/predict` | POST | a prediction of the body: image or tensor bytes, or a JSON request with `data`, `tensor` or `tokens` |
//! | `/api/label` | POST | `{"label": "cat", "sample": 12}` |
//! | `/api/status` | GET | the status |
//! | `/api/flush` | POST | writes the state now |
//! | `/api/rollback` | POST | `{"to": 12}`, or no body: the state before the newest |
//! | `/api/request` | POST | any request of the socket protocol but `input` |
//! | `/api/live` | GET | the newest prediction and the queue of uncertain ones |
//! | `/api/events` | GET | server-sent events: `prediction`, `label`, `rollback` |
//! | `/api/frame/N` | GET | the image of recent sample N |
//! | `/metrics` | GET | Prometheus text, without a token, with `--metrics` only |

use std::io::{Cursor, ErrorKind, Read};
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response};

use super::access::{self, Refusal, Via};
use super::live::{Frame, image_type};
use super::{Answer, Call, Shared};
use edgetune_device::service::Request as ServiceRequest;

const PAGE: &str = include_str!("page.html");
const LOGIN: &str = include_str!("login.html");
/// The pages load nothing from elsewhere: scripts and styles are inline, images come
/// from this server.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'";
/// Largest login form.
const MAX_FORM: u64 = 4096;

type Reply = Response<Cursor<Vec<u8>>>;

/// What a route is.
#[derive(Clone, Copy, PartialEq)]
enum Route {
    Page,
    Predict,
    Label,
    Status,
    Flush,
    Rollback,
    Any,
    Live,
    Events,
    Frame(u64),
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        Some(match path {
            "/" | "/index.html" => Route::Page,
            "/api/predict" => Route::Predict,
            "/api/label" => Route::Label,
            "/api/status" => Route::Status,
            "/api/flush" => Route::Flush,
            "/api/rollback" => Route::Rollback,
            "/api/request" => Route::Any,
            "/api/live" => Route::Live,
            "/api/events" => Route::Events,
            _ => Route::Frame(path.strip_prefix("/api/frame/")?.parse().ok()?),
        })
    }

    /// Whether it changes state (POST only).
    fn changes(self) -> bool {
        matches!(
            self,
            Route::Predict | Route::Label | Route::Flush | Route::Rollback | Route::Any
        )
    }
}

/// Answers one request.
pub(super) fn handle(sh: &Shared, mut req: Request) {
    let url = req.url().to_string();
    let path = url.split('?').next().unwrap_or_default();
    let get = *req.method() == Method::Get || *req.method() == Method::Head;
    let post = *req.method() == Method::Post;
    if path == "/metrics" {
        let reply = if !sh.cfg.metrics {
            error(404, "/metrics is off (serve with --metrics)")
        } else if !get {
            not_allowed("GET")
        } else {
            match sh.ask(Call::Metrics) {
                Some(Answer::Text(t)) => Response::from_string(t)
                    .with_header(header("Content-Type", "text/plain; version=0.0.4")),
                _ => busy(sh),
            }
        };
        return send(req, reply);
    }
    if path == "/login" {
        let reply = if post {
            login(sh, &mut req)
        } else {
            not_allowed("POST")
        };
        return send(req, reply);
    }
    let Some(route) = Route::of(path) else {
        return send(req, error(404, &format!("no such page: {path}")));
    };
    let via = match access::check(
        &sh.cfg.token,
        header_of(&req, "Authorization"),
        header_of(&req, "Cookie"),
    ) {
        Ok(via) => via,
        Err(r) => return send(req, refuse(sh, r, route == Route::Page)),
    };
    if route.changes() != post || (!post && !get) {
        return send(
            req,
            not_allowed(if route.changes() { "POST" } else { "GET" }),
        );
    }
    if post && via == Via::Cookie {
        let marked = header_of(&req, access::CSRF_HEADER) == Some("1");
        if !marked || !access::same_origin(header_of(&req, "Origin"), header_of(&req, "Host")) {
            sh.counters.forbidden.fetch_add(1, Ordering::Relaxed);
            return send(
                req,
                error(
                    403,
                    "a change with the login cookie needs the header X-Edgetune: 1, from this server's own page",
                ),
            );
        }
    }
    let reply = match route {
        Route::Page => Response::from_string(PAGE)
            .with_header(header("Content-Type", "text/html; charset=utf-8"))
            .with_header(header("Content-Security-Policy", CSP))
            .with_header(header("X-Frame-Options", "DENY")),
        Route::Live => json_reply(200, &sh.live.snapshot()),
        Route::Events => match sh.live.stream(req) {
            Ok(()) => return,
            Err(r) => {
                req = *r;
                sh.counters.busy.fetch_add(1, Ordering::Relaxed);
                error(503, "too many pages are open (live events)")
            }
        },
        Route::Frame(sample) => frame(sh, sample),
        Route::Status => call(sh, status_request(), None),
        _ => match body_request(sh, route, &mut req) {
            // The body was read whole: nothing of it is left to drain.
            Ok((r, frame)) => return respond(req, call(sh, r, frame)),
            Err(reply) => reply,
        },
    };
    send(req, reply)
}

fn status_request() -> ServiceRequest {
    ServiceRequest {
        status: Some(true),
        ..Default::default()
    }
}

/// The service request of a POST route's body (an upload to predict, a JSON request),
/// or the answer refusing it.
fn body_request(
    sh: &Shared,
    route: Route,
    req: &mut Request,
) -> Result<(ServiceRequest, Option<Frame>), Reply> {
    let body = read_body(sh, req, sh.cfg.max_body)?;
    let json = header_of(req, "Content-Type")
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    let empty = body.iter().all(u8::is_ascii_whitespace);
    match route {
        Route::Predict if !json => {
            if body.is_empty() {
                return Err(error(
                    400,
                    "the body is empty: send the image or tensor bytes",
                ));
            }
            let frame = image_type(&body).map(|_| Frame::Bytes(body.clone().into()));
            let r = ServiceRequest {
                bytes: Some(body),
                ..Default::default()
            };
            Ok((r, frame))
        }
        Route::Flush => Ok((
            ServiceRequest {
                flush: Some(true),
                ..Default::default()
            },
            None,
        )),
        Route::Rollback => {
            let to = if empty {
                Value::Bool(true)
            } else {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Body {
                    to: Option<u64>,
                }
                let b: Body = serde_json::from_slice(&body).map_err(|e| {
                    error(
                        400,
                        &format!("the body is {{\"to\": STATE}} or nothing: {e}"),
                    )
                })?;
                b.to.map_or(Value::Bool(true), Value::from)
            };
            Ok((
                ServiceRequest {
                    rollback: Some(to),
                    ..Default::default()
                },
                None,
            ))
        }
        _ => {
            let text =
                std::str::from_utf8(&body).map_err(|_| error(400, "the body is not UTF-8 JSON"))?;
            let r = ServiceRequest::parse(text).map_err(|answer| json_reply(400, &answer))?;
            if r.input.is_some() {
                return Err(error(
                    400,
                    "a request over HTTP cannot name a file on the device (\"input\"): upload its bytes to /api/predict",
                ));
            }
            let fits = match route {
                Route::Predict => r.data.is_some() || r.tensor.is_some() || r.tokens.is_some(),
                Route::Label => r.label.is_some(),
                _ => true,
            };
            if !fits {
                let what = if route == Route::Label {
                    "{\"label\": CLASS, \"sample\": ID}"
                } else {
                    "a JSON request with \"data\", \"tensor\" or \"tokens\", or the image's bytes"
                };
                return Err(error(400, &format!("this route takes {what}")));
            }
            Ok((r, None))
        }
    }
}

/// Asks the service and turns its answer into a reply: 400 when it is an error.
fn call(sh: &Shared, r: ServiceRequest, frame: Option<Frame>) -> Reply {
    match sh.ask(Call::Request(Box::new(r), frame)) {
        Some(Answer::Json(v)) => json_reply(if v.get("error").is_some() { 400 } else { 200 }, &v),
        _ => busy(sh),
    }
}

/// The body, at most `limit` bytes.
fn read_body(sh: &Shared, req: &mut Request, limit: u64) -> Result<Vec<u8>, Reply> {
    let too_large = || {
        sh.counters.too_large.fetch_add(1, Ordering::Relaxed);
        error(
            413,
            &format!("the body is larger than the limit of {limit} bytes"),
        )
        .with_header(header("Connection", "close"))
    };
    if req.body_length().is_some_and(|n| n as u64 > limit) {
        return Err(too_large());
    }
    // The connection's read timeout bounds each read; this deadline bounds a body that
    // trickles in a byte at a time.
    let timeout = sh.cfg.timeout * super::BODY_TIMEOUTS;
    let deadline = Instant::now() + timeout;
    let too_slow = || {
        sh.counters.too_slow.fetch_add(1, Ordering::Relaxed);
        error(
            408,
            &format!(
                "the body did not arrive in time (nothing for {:?}, or not all within {timeout:?})",
                sh.cfg.timeout
            ),
        )
        .with_header(header("Connection", "close"))
    };
    let mut body = Vec::new();
    let mut reader = req.as_reader().take(limit + 1);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(too_slow());
            }
            Err(e) => return Err(error(400, &format!("cannot read the body: {e}"))),
        }
        if Instant::now() > deadline {
            return Err(too_slow());
        }
    }
    if body.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// `POST /login`: the form's token checked, the cookie set.
fn login(sh: &Shared, req: &mut Request) -> Reply {
    let Ok(body) = read_body(sh, req, MAX_FORM) else {
        return login_page(400, "The form is too large.");
    };
    let body = String::from_utf8_lossy(&body);
    let shown = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    match access::check(&sh.cfg.token, Some(&format!("Bearer {shown}")), None) {
        Ok(_) => Response::from_string("")
            .with_status_code(303)
            .with_header(header("Location", "/"))
            .with_header(header("Set-Cookie", &access::cookie(&sh.cfg.token))),
        Err(_) => {
            sh.counters.forbidden.fetch_add(1, Ordering::Relaxed);
            login_page(403, "That is not this device's token.")
        }
    }
}

fn login_page(code: u16, message: &str) -> Reply {
    let html = LOGIN.replace("{{message}}", message);
    Response::from_string(html)
        .with_status_code(code)
        .with_header(header("Content-Type", "text/html; charset=utf-8"))
        .with_header(header("Content-Security-Policy", CSP))
        .with_header(header("X-Frame-Options", "DENY"))
}

/// The refusal of a request without the right token: the login form for the page.
fn refuse(sh: &Shared, r: Refusal, page: bool) -> Reply {
    let (code, msg) = match r {
        Refusal::Missing => {
            sh.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
            (
                401,
                "this needs the device's token (`edgetune token --state DIR` shows it): header Authorization: Bearer TOKEN",
            )
        }
        Refusal::Wrong => {
            sh.counters.forbidden.fetch_add(1, Ordering::Relaxed);
            (403, "wrong token")
        }
    };
    if page {
        let message = if code == 401 {
            ""
        } else {
            "That is not this device's token."
        };
        return login_page(code, message);
    }
    error(code, msg).with_header(header("WWW-Authenticate", "Bearer"))
}

/// The image of a recent sample.
fn frame(sh: &Shared, sample: u64) -> Reply {
    let bytes = match sh.live.frame(sample) {
        Some(Frame::Bytes(b)) => b.to_vec(),
        Some(Frame::File(path)) => {
            match edgetune_device::service::read_bounded(&path, sh.cfg.max_body) {
                Ok(b) => b,
                Err(e) => {
                    return error(404, &format!("the image of sample {sample} is gone: {e:#}"));
                }
            }
        }
        None => {
            return error(
                404,
                &format!("no image of sample {sample} (only recent image inputs are kept)"),
            );
        }
    };
    let Some(kind) = image_type(&bytes) else {
        return error(404, &format!("the input of sample {sample} is no image"));
    };
    Response::from_data(bytes).with_header(header("Content-Type", kind))
}

fn busy(sh: &Shared) -> Reply {
    sh.counters.busy.fetch_add(1, Ordering::Relaxed);
    error(503, "the service did not answer in time; try again")
}

fn not_allowed(allow: &str) -> Reply {
    error(405, &format!("this route takes {allow} only")).with_header(header("Allow", allow))
}

fn error(code: u16, message: &str) -> Reply {
    json_reply(code, &json!({ "error": message }))
}

fn json_reply(code: u16, v: &Value) -> Reply {
    Response::from_string(v.to_string())
        .with_status_code(code)
        .with_header(header("Content-Type", "application/json"))
}

/// Sends a reply to a request whose body may be unread. tiny_http reads what is left
/// of a body when the request is dropped, to reuse the connection: a client trickling
/// it would hold the worker that long (each read is bounded by `--http-timeout`, not
/// the whole), so such a request is answered and dropped on a thread of its own.
fn send(req: Request, reply: Reply) {
    let body = req
        .body_length()
        .map_or_else(|| header_of(&req, "Transfer-Encoding").is_some(), |n| n > 0);
    if body {
        std::thread::spawn(move || respond(req, reply));
    } else {
        respond(req, reply);
    }
}

/// Sends a reply with the headers every reply has; a client gone is not an error.
fn respond(req: Request, reply: Reply) {
    let reply = reply
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"));
    if req.respond(reply).is_err() {
        log::debug!("an HTTP client went away before its answer");
    }
}

/// The value of a request's header `name`.
fn header_of<'a>(req: &'a Request, name: &'static str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// A header of ASCII text this program writes (never a client's).
fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}
