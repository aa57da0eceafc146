//! `edgetune serve --http ADDR`: the labeling page (`/`), the JSON API (`/api/…`) and
//! `/metrics`, on a small synchronous server (tiny_http: no async runtime in the device
//! binary). The server only reads requests and forwards them to the service thread as
//! [`Event::Http`], the way the socket does: one engine, one state directory, one
//! lock. It answers with what the service answered.
//!
//! Bounds: at most `--http-workers` requests are handled at once (more wait in line);
//! a body is refused past the service's input limit (`--max-input-bytes`) without being
//! kept; at most [`MAX_STREAMS`] pages receive live events. A slow client holds only
//! its worker or its event stream: the service thread never writes to a client, so
//! the watched directory, the socket and learning go on.
//!
//! `access.rs` holds the token, `routes.rs` the API, `live.rs` what the page shows live,
//! `metrics.rs` the Prometheus text, `page.html` and `login.html` the pages.

pub mod access;
mod live;
mod metrics;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::sources::Event;
use edgetune_device::service::{Request, Service};

pub use live::{Frame, Live};
pub use metrics::HttpCounters;

/// Live event streams served at once.
pub const MAX_STREAMS: usize = 8;
/// Longest wait for the service's answer (it may be writing the state or learning).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// What the HTTP server asks the service thread.
pub enum Call {
    /// A request of the socket protocol, with the uploaded image it predicts, if any.
    Request(Box<Request>, Option<Frame>),
    /// The `/metrics` text.
    Metrics,
}

/// The service thread's answer to a [`Call`].
pub enum Answer {
    Json(Value),
    Text(String),
}

/// How the server runs.
pub struct Config {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests handled at once.
    pub workers: usize,
    /// Serve `/metrics` without a token.
    pub metrics: bool,
    /// The access token.
    pub token: String,
    /// Largest request body, in bytes.
    pub max_body: u64,
}

/// What the workers share.
struct Shared {
    cfg: Config,
    tx: mpsc::SyncSender<Event>,
    live: Arc<Live>,
    counters: Arc<HttpCounters>,
}

/// The address `--http` names: `PORT` (on 127.0.0.1) or `HOST:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse().with_context(|| {
        format!("--http {s:?}: expected a port (8080, on 127.0.0.1) or an address (0.0.0.0:8080)")
    })
}

/// Starts the server; requests go to the service thread through `tx`. Returns the
/// address it listens on.
pub fn start(
    cfg: Config,
    tx: mpsc::SyncSender<Event>,
    live: Arc<Live>,
    counters: Arc<HttpCounters>,
) -> Result<SocketAddr> {
    let server = tiny_http::Server::http(cfg.addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} for HTTP: {e}", cfg.addr))?;
    let addr = server
        .server_addr()
        .to_ip()
        .context("the HTTP server has no IP address")?;
    log::info!("labeling page and API on http://{addr}/");
    let server = Arc::new(server);
    let shared = Arc::new(Shared {
        cfg,
        tx,
        live,
        counters,
    });
    for _ in 0..shared.cfg.workers.max(1) {
        let server = Arc::clone(&server);
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            while let Ok(request) = server.recv() {
                routes::handle(&shared, request);
            }
        });
    }
    Ok(addr)
}

impl Shared {
    /// Asks the service thread and waits for its answer.
    fn ask(&self, call: Call) -> Option<Answer> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.tx.send(Event::Http(call, reply)).ok()?;
        answer.recv_timeout(ANSWER_TIMEOUT).ok()
    }
}

/// Answers a call on the service thread.
pub fn answer(
    service: &mut Service,
    call: Call,
    counters: &HttpCounters,
) -> (Answer, Option<Frame>) {
    match call {
        Call::Request(req, frame) => (Answer::Json(service.answer(*req)), frame),
        Call::Metrics => (Answer::Text(metrics::render(service, counters)), None),
    }
}
