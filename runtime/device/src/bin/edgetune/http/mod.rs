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
//! the watched directory, the socket and learning go on. And it holds them for a
//! bounded time: every connection has a read and a write timeout (`--http-timeout`,
//! set on the listening socket, whose connections inherit it: tiny_http has no hook
//! for them), and a body must arrive whole within [`BODY_TIMEOUTS`] of them. The
//! listener's own timeout makes an idle `accept` fail every `--http-timeout`: the
//! patched tiny_http (third_party/tiny_http/PATCHED.md) accepts on after that, where
//! 0.12.0 stopped serving.
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
/// A request body must arrive within this many `--http-timeout`s, however it trickles.
pub const BODY_TIMEOUTS: u32 = 6;
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
    /// How long a connection may send or take nothing before it is dropped.
    pub timeout: Duration,
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
    let listener = std::net::TcpListener::bind(cfg.addr)
        .with_context(|| format!("cannot listen on {} for HTTP", cfg.addr))?;
    set_timeouts(&listener, cfg.timeout).with_context(|| {
        format!(
            "cannot set the timeouts of HTTP connections on {}",
            cfg.addr
        )
    })?;
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| anyhow::anyhow!("cannot serve HTTP on {}: {e}", cfg.addr))?;
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

/// Sets `SO_RCVTIMEO` and `SO_SNDTIMEO` on the listening socket: on Linux every
/// connection it accepts inherits them, so a read from a client that stalls (half a
/// request, half a body) and a write to one that stops reading fail after `timeout`
/// and free their thread.
fn set_timeouts(listener: &std::net::TcpListener, timeout: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below a million: fits every target's suseconds_t. Never 0 with 0 seconds,
        // which would mean no timeout.
        tv_usec: timeout.subsec_micros().max(1) as libc::suseconds_t,
    };
    for option in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: setsockopt(2) on a socket this function borrows, with a pointer to a
        // timeval that lives across the call and its exact size.
        let r = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
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
