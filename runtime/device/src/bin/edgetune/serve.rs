//! `edgetune serve`: opens the service, starts the request sources (stdin, the socket,
//! the watched directory, buttons), answers their events on this one thread, writes the
//! state when due, and writes it once more before stopping (at the end of the input, or
//! on SIGTERM, SIGINT or SIGHUP).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cli::ServeArgs;
use crate::http::{self, Frame, HttpCounters, Live};
use crate::predict::predict_file;
use crate::sources::{self, Event, Reply};
use edgetune_device::service::{Options, Service};

/// Longest wait for an event, so that a signal is seen soon.
const POLL: Duration = Duration::from_millis(200);

/// Runs `edgetune serve`.
pub fn serve(a: ServeArgs) -> Result<()> {
    let mut service = open(&a)?;
    let stop = stop_on_signals()?;
    // Bounded: a client that sends faster than the service answers waits, instead of
    // queueing without limit.
    let (tx, rx) = mpsc::sync_channel::<Event>(64);
    for path in &a.inputs {
        let answer = predict_file(&mut service, path);
        print_line(&answer);
    }
    let web = Web {
        live: a
            .http
            .as_ref()
            .map(|_| Arc::new(Live::new(http::MAX_STREAMS))),
        counters: Arc::default(),
    };
    let sources = start_sources(&a, &service, tx, &web)?;
    if sources == 0 {
        service.flush()?;
        return Ok(());
    }
    answer_events(&mut service, &rx, &stop, sources, &web);
    if let Some(seq) = service.flush()? {
        log::info!("wrote state {seq} before stopping");
    }
    if let Some(path) = &a.socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The service of the bundle and state directory the arguments name, with their options.
fn open(a: &ServeArgs) -> Result<Service> {
    if !(a.persist_interval >= 0.0 && a.persist_interval.is_finite()) {
        bail!("--persist-interval is a number of seconds, at least 0");
    }
    let opts = Options {
        engine: a.learn.config()?,
        keep: a.keep,
        persist_interval: Duration::from_secs_f64(a.persist_interval),
        ..a.backbone.options()?
    };
    let (service, warnings) = Service::open(&a.bundle, &a.state, opts)?;
    for w in &warnings {
        log::warn!("{w}");
    }
    log::info!(
        "serving {} with {} classes from state {} in {}",
        a.bundle.display(),
        service.classes().len(),
        service.seq(),
        a.state.display()
    );
    Ok(service)
}

/// A flag raised by SIGTERM, SIGINT or SIGHUP.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }
    Ok(stop)
}

/// What the HTTP server shares with the service thread.
struct Web {
    /// What open pages see (`None` without `--http`).
    live: Option<Arc<Live>>,
    counters: Arc<HttpCounters>,
}

impl Web {
    /// Tells open pages of an answer.
    fn publish(&self, source: &str, answer: &Value, frame: Option<Frame>) {
        if let Some(live) = &self.live {
            live.publish(source, answer, frame);
        }
    }
}

/// `--http-timeout`: more than nothing, at most a day (a larger one is no bound).
fn http_timeout(secs: f64) -> Result<Duration> {
    if !(secs > 0.0 && secs <= 86_400.0) {
        bail!("--http-timeout is a number of seconds, more than 0 and at most 86400");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Starts the sources the arguments ask for, each sending to `tx`; how many there are.
fn start_sources(
    a: &ServeArgs,
    service: &Service,
    tx: mpsc::SyncSender<Event>,
    web: &Web,
) -> Result<usize> {
    let mut sources = 0;
    if let (Some(addr), Some(live)) = (&a.http, &web.live) {
        sources += 1;
        let cfg = http::Config {
            addr: http::parse_addr(addr)?,
            workers: a.http_workers.max(1),
            metrics: a.metrics,
            token: http::access::load_or_create(&a.state)?,
            max_body: service.input_limit(),
            timeout: http_timeout(a.http_timeout)?,
        };
        http::start(cfg, tx.clone(), Arc::clone(live), Arc::clone(&web.counters))?;
    }
    if !a.no_stdin {
        sources += 1;
        sources::read_stdin(tx.clone());
    }
    if let Some(path) = &a.socket {
        sources += 1;
        sources::listen(path, tx.clone())?;
    }
    if let Some(dir) = &a.watch {
        sources += 1;
        sources::watch(
            dir,
            Duration::from_secs_f64(a.watch_interval.max(0.01)),
            tx.clone(),
        )?;
    }
    for spec in &a.buttons {
        sources += 1;
        sources::button(spec, a.button_active_high, service, tx.clone())?;
    }
    Ok(sources)
}

/// Answers events until a signal, until every source has ended (stdin is the one that
/// ends), and writes the state whenever it is due in between.
fn answer_events(
    service: &mut Service,
    rx: &mpsc::Receiver<Event>,
    stop: &AtomicBool,
    mut sources: usize,
    web: &Web,
) {
    loop {
        if stop.load(Ordering::Relaxed) {
            log::info!("stopping (signal)");
            break;
        }
        let wait = service.flush_deadline().map_or(POLL, |t| {
            t.saturating_duration_since(Instant::now()).min(POLL)
        });
        let event = match rx.recv_timeout(wait) {
            Ok(e) => Some(e),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match event {
            None => {}
            Some(Event::Line(Ok(line), _)) if line.trim().is_empty() => continue,
            Some(Event::StdinClosed) => {
                sources -= 1;
                if sources == 0 {
                    break;
                }
            }
            Some(event) => answer(service, event, web),
        }
        if let Err(e) = service.flush_if_due() {
            log::error!("{e:#}; the state stays in memory and the write is tried again");
        }
    }
}

/// Answers one request line, button press, watched file or HTTP request, and tells open
/// pages.
fn answer(service: &mut Service, event: Event, web: &Web) {
    match event {
        Event::Line(line, reply) => {
            let answer = match line {
                Ok(line) => service.handle_line(&line),
                Err(refused) => json!({ "error": refused }),
            };
            let source = match reply {
                Reply::Stdout => "stdin",
                Reply::Socket(_) => "socket",
            };
            web.publish(source, &answer, None);
            match reply {
                Reply::Stdout => print_line(&answer),
                Reply::Socket(mut s) => {
                    if writeln!(s, "{answer}").is_err() {
                        log::debug!("a socket client went away before its answer");
                    }
                }
            }
        }
        Event::Press(class) => {
            let answer = match service.label(&class, None, Instant::now()) {
                Ok(v) => v,
                Err(e) => json!({ "error": format!("button {class:?}: {e:#}") }),
            };
            web.publish("button", &answer, None);
            print_line(&json!({ "button": class, "answer": answer }));
        }
        Event::File(path) => {
            let answer = predict_file(service, &path);
            // Pages show the watched images (a tensor file has nothing to show).
            let image = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()));
            web.publish("watch", &answer, image.then_some(Frame::File(path)));
            print_line(&answer);
        }
        Event::Http(call, reply) => {
            let (answer, frame) = http::answer(service, call, &web.counters);
            if let http::Answer::Json(v) = &answer {
                web.publish("http", v, frame);
            }
            // The worker waits with room for one answer: this never blocks.
            let _ = reply.try_send(answer);
        }
        Event::StdinClosed => {}
    }
}

/// Prints an answer on stdout.
fn print_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) is no reason to stop learning.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}
