//! What the labeling page shows live: the newest prediction, the queue of recent
//! uncertain ones (labeled ones leave it), the inputs of recent predictions that were
//! images, and the server-sent event streams that tell open pages of each prediction,
//! label and rollback. The service thread publishes here after each answer; it never
//! waits on a page: a stream whose page does not keep up misses events (its page
//! reloads its view on the next one) instead of slowing the service.

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

/// Recent inputs kept for the page (their bytes, for uploads).
const FRAMES: usize = 16;
/// Uncertain predictions kept in the queue.
const QUEUE: usize = 12;
/// Events a stream holds for a page that reads slowly.
const BACKLOG: usize = 32;
/// How often an idle stream sends a comment (a proxy or a phone keeps it open).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The input of a prediction, kept so that the page can show it.
#[derive(Clone)]
pub enum Frame {
    /// Uploaded bytes.
    Bytes(Arc<[u8]>),
    /// A file of the watched directory.
    File(PathBuf),
}

/// The live view (see the module docs).
pub struct Live {
    inner: Mutex<Inner>,
    streams: AtomicUsize,
    max_streams: usize,
}

#[derive(Default)]
struct Inner {
    latest: Option<Value>,
    queue: VecDeque<Value>,
    frames: VecDeque<(u64, Frame)>,
    subscribers: Vec<SyncSender<String>>,
}

impl Live {
    /// A live view that serves at most `max_streams` event streams at once.
    pub fn new(max_streams: usize) -> Live {
        Live {
            inner: Mutex::default(),
            streams: AtomicUsize::new(0),
            max_streams,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock still holds usable data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes note of an answer of the service (`source`: where its request came from)
    /// and tells the open pages.
    pub fn publish(&self, source: &str, answer: &Value, frame: Option<Frame>) {
        if answer.get("error").is_some() {
            return;
        }
        let mut inner = self.lock();
        let kind = if answer.get("top").is_some() {
            let Some(sample) = answer["sample"].as_u64() else {
                return;
            };
            let mut p = answer.clone();
            p["source"] = source.into();
            p["frame"] = frame.is_some().into();
            if let Some(f) = frame {
                if inner.frames.len() == FRAMES {
                    inner.frames.pop_front();
                }
                inner.frames.push_back((sample, f));
            }
            if p["uncertain"] == true {
                if inner.queue.len() == QUEUE {
                    inner.queue.pop_front();
                }
                inner.queue.push_back(p.clone());
            }
            inner.latest = Some(p);
            "prediction"
        } else if answer.get("copy_of").is_some() {
            // The samples before a rollback cannot be labeled any more.
            inner.queue.clear();
            inner.frames.clear();
            "rollback"
        } else if answer.get("label").is_some() {
            let sample = answer["sample"].as_u64();
            inner.queue.retain(|p| p["sample"].as_u64() != sample);
            "label"
        } else {
            // A status or a flush: nothing a page shows changed.
            return;
        };
        let data = if kind == "prediction" {
            inner.latest.clone().unwrap_or_default()
        } else {
            answer.clone()
        };
        let event = format!("event: {kind}\ndata: {data}\n\n");
        inner.subscribers.retain(|s| {
            !matches!(
                s.try_send(event.clone()),
                Err(TrySendError::Disconnected(_))
            )
        });
    }

    /// The newest prediction and the queue of uncertain ones, newest first.
    pub fn snapshot(&self) -> Value {
        let inner = self.lock();
        let queue: Vec<&Value> = inner.queue.iter().rev().collect();
        json!({ "latest": inner.latest, "uncertain": queue })
    }

    /// The input of a recent prediction, if it was an image.
    pub fn frame(&self, sample: u64) -> Option<Frame> {
        let inner = self.lock();
        inner
            .frames
            .iter()
            .find(|(s, _)| *s == sample)
            .map(|(_, f)| f.clone())
    }

    /// A new event stream, unless `max_streams` are open.
    fn subscribe(self: &Arc<Self>) -> Option<(Receiver<String>, StreamGuard)> {
        if self.streams.fetch_add(1, Ordering::SeqCst) >= self.max_streams {
            self.streams.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        let guard = StreamGuard(Arc::clone(self));
        let (tx, rx) = mpsc::sync_channel(BACKLOG);
        self.lock().subscribers.push(tx);
        Some((rx, guard))
    }

    /// Serves the event stream of `request` on a thread of its own (it lasts as long as
    /// the page stays open); `Err` gives the request back when too many are open.
    pub fn stream(
        self: &Arc<Self>,
        request: tiny_http::Request,
    ) -> Result<(), Box<tiny_http::Request>> {
        let Some((rx, guard)) = self.subscribe() else {
            return Err(Box::new(request));
        };
        std::thread::spawn(move || {
            let _guard = guard;
            let mut out = request.into_writer();
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n: hello\n\n";
            if out
                .write_all(head.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return;
            }
            loop {
                let chunk = match rx.recv_timeout(KEEPALIVE) {
                    Ok(event) => event,
                    Err(mpsc::RecvTimeoutError::Timeout) => ": keepalive\n\n".to_string(),
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                };
                if out
                    .write_all(chunk.as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(())
    }
}

/// Counts an open stream until it ends.
struct StreamGuard(Arc<Live>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The image type of `bytes`, if they are a PNG or JPEG image.
pub fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else {
        None
    }
}
