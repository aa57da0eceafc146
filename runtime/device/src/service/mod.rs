//! The service behind `edgetune serve`: one bundle, one state directory, requests in and
//! answers out, one JSON object per line. The program's threads (stdin, the socket, the
//! watched directory, buttons) only read and forward; everything that changes the state
//! happens here, on one thread.
//!
//! Requests (unknown fields are refused, so a typo is an error, not a silent default):
//!
//! | request | answer |
//! | --- | --- |
//! | `{"input": "PATH"}` | a prediction of the image or tensor file at PATH |
//! | `{"data": "BASE64"}` | a prediction of the bytes: a PNG or JPEG image, a `.npy` array, or raw little-endian f32 |
//! | `{"tensor": [0.1, …]}` | a prediction of these values (the model's input, or the embedding for a features-only bundle) |
//! | `{"tokens": [101, …]}` | a prediction of a text encoder's token ids |
//! | `{"text": "turn off the lights"}` | a prediction of a sentence, tokenized on the device with the bundle's tokenizer (`convert --tokenizer`); a text longer than the model's sequence length is cut, and the answer says so in `"truncated"` |
//! | `{"label": "cat", "sample": 12}` | learns that sample 12 is a cat (`sample` left out: the most recent); a name the head does not know adds a class; a number is a class index |
//! | `{"status": true}` | the service's status, as `edgetune status --json` |
//! | `{"flush": true}` | writes the state now if anything is unwritten |
//! | `{"export": true}` | the statistics of the device's own labels as a fleet state (`"fleet"`: base64, see [`crate::fleet`]); with a gradient head, the head and its own labels per class |
//! | `{"merge": "BASE64"}` | the fleet's sum of the other devices' labels (a fleet state, or a list of them, summed): replaces what the last merge gave, classes matched by name; with a gradient head, the others' average head, mixed in by labels (FedAvg); written before the answer |
//! | `{"rollback": true}` or `{"rollback": 12}` | makes the state before the newest (or state 12) the newest again, as a new state that copies it; the one rolled back from is pinned |
//!
//! Any request may carry an `"id"`, echoed in its answer. A prediction answers with the
//! sample id, the top classes and their probabilities, the uncertainty (1 − the margin
//! between the top two) and whether it is flagged `uncertain` (ask the user for a
//! label), the novelty (distance to the nearest class mean), and the milliseconds spent.
//! A request that cannot be served answers `{"error": "…"}` and changes nothing.
//!
//! **Persistence.** After a label the state is written (see [`crate::state`])
//! once no write happened in the last `persist_interval`, else when the interval has
//! passed: a burst of labels makes one write. `persist_interval` 0 writes after every
//! label, before answering it. A failed write (a full or read-only disk) is answered
//! in `persist_error` and tried again, no sooner than a second later (`schedule.rs`:
//! when, on the monotonic clock).
//!
//! Each flow has its file: `request.rs` (a line parsed and checked), `predict.rs` (an
//! input to a prediction), `label.rs` (a label learned and written), `input.rs` (files
//! and bytes to the model's input, read with bounds), `model.rs` (the bundle's backbone
//! and head), `fleet.rs` (export and merge of fleet states) and `status.rs`.

mod fleet;
mod input;
mod label;
mod model;
mod predict;
mod request;
mod rollback;
mod schedule;
mod status;

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use schedule::Schedule;

use anyhow::bail;
use serde_json::{Value, json};

use crate::engine::{Engine, EngineConfig};
use crate::state::{self, DeviceState, Origin, StateDir};

pub use input::read_bounded;
pub use model::Model;
pub use request::Request;
pub use rollback::{pin_newest_and_write, state_before_newest, state_numbered};
pub use status::{ClassStatus, Status};

/// Latencies kept for the status percentiles.
pub const LATENCIES: usize = 512;
/// Classes of a bundle that has no head yet.
pub const DEFAULT_CAPACITY: usize = 16;
/// Longest class name.
pub const MAX_NAME: usize = 64;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Learning and the guard.
    pub engine: EngineConfig,
    /// States kept in the directory.
    pub keep: usize,
    /// Least time between two writes of the state.
    pub persist_interval: Duration,
    /// Threads of the backbone.
    pub threads: usize,
    /// Run the backbone with ONNX Runtime from this ONNX model (the one the bundle was
    /// converted from) instead of the bundle's tract graph: the Jetson's GPU path.
    #[cfg(feature = "ort")]
    pub onnx: Option<(std::path::PathBuf, edgetune::backbone::OrtOptions)>,
    /// Largest input file read, in bytes; `None` for [`Model::default_input_limit`].
    pub max_input_bytes: Option<u64>,
    /// Load only a bundle signed by one of these keys ([`Bundle::read_trusted`]), and
    /// merge only fleet states signed by one of them ([`crate::fleet::verify`]); empty:
    /// signatures are not checked.
    ///
    /// [`Bundle::read_trusted`]: edgetune::bundle::Bundle::read_trusted
    pub trusted: Vec<edgetune::trust::PublicKey>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            engine: EngineConfig::DEFAULT,
            keep: 5,
            persist_interval: Duration::from_secs(2),
            threads: 1,
            #[cfg(feature = "ort")]
            onnx: None,
            max_input_bytes: None,
            trusted: Vec::new(),
        }
    }
}

/// The service (see the module docs).
pub struct Service {
    model: Model,
    engine: Engine,
    names: Vec<String>,
    dir: StateDir,
    opts: Options,
    seq: u64,
    origin: Origin,
    dirty: bool,
    schedule: Schedule,
    latencies: VecDeque<u32>,
    emb: Vec<f32>,
    persist_errors: u64,
    histogram: Histogram,
}

/// Upper bounds of the latency histogram's buckets, in milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// Every request's latency since the service started, counted into buckets (`/metrics`).
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Requests at or below each bound of [`LATENCY_BUCKETS_MS`] (not cumulative).
    pub buckets: [u64; LATENCY_BUCKETS_MS.len()],
    /// All requests.
    pub count: u64,
    /// Their total, in seconds.
    pub sum_s: f64,
}

/// Starts sample ids of a new run above every id of earlier runs (ids are not persisted
/// with every prediction): a label for a sample from before a restart is then an
/// unknown id, never another sample.
const RUN_IDS: u64 = 1 << 32;

impl Service {
    /// Opens the bundle and the state directory (created if missing, and locked), and
    /// loads the newest valid state. The strings are warnings for the log: newer state
    /// files that were damaged and skipped.
    pub fn open(
        bundle: &Path,
        dir: &Path,
        opts: Options,
    ) -> anyhow::Result<(Service, Vec<String>)> {
        let model = Model::open(bundle, &opts)?;
        let mut dir = StateDir::open(dir, true, opts.keep)?;
        dir.lock()?;
        dir.clean_temporaries();
        let mut warnings = Vec::new();
        let loaded = load_for(&dir, &model, opts.engine)?;
        let mut latencies = VecDeque::with_capacity(LATENCIES);
        let (engine, names, seq, origin) = match loaded {
            Some(l) => {
                for (path, why) in &l.skipped {
                    warnings.push(format!(
                        "state file {} is unusable ({why}); using the previous state {}",
                        path.display(),
                        l.path.display()
                    ));
                }
                latencies.extend(recent_latencies(&l.state));
                resume(&model, &l, opts.engine)?
            }
            None => {
                let mut engine = Engine::new(model.head.clone(), opts.engine)?;
                model.seed(&mut engine)?;
                (engine, model.manifest.classes.clone(), 0, Origin::Learned)
            }
        };
        if names.len() != engine.classes() {
            bail!(
                "the bundle names {} classes but its head has {}",
                names.len(),
                engine.classes()
            );
        }
        let emb = vec![0.0; engine.dim()];
        let schedule = Schedule::new(opts.persist_interval);
        let service = Service {
            model,
            engine,
            names,
            dir,
            opts,
            seq,
            origin,
            dirty: false,
            schedule,
            latencies,
            emb,
            persist_errors: 0,
            histogram: Histogram::default(),
        };
        Ok((service, warnings))
    }

    /// The state's sequence number on disk (0: none yet).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Class names.
    pub fn classes(&self) -> &[String] {
        &self.names
    }

    /// The learning core.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Largest input read, in bytes (`--max-input-bytes`, or the model's default).
    pub fn input_limit(&self) -> u64 {
        self.model.max_input_bytes
    }

    /// Writes of the state that failed since the service started.
    pub fn persist_errors(&self) -> u64 {
        self.persist_errors
    }

    /// The latencies of every request since the start.
    pub fn histogram(&self) -> &Histogram {
        &self.histogram
    }

    /// The current state, as it would be written.
    pub fn state(&self) -> DeviceState {
        let lat: Vec<u32> = self.latencies.iter().copied().collect();
        self.engine
            .to_state(self.model.id, &self.names, &lat, self.origin)
    }

    /// The status of the running service.
    pub fn status(&self) -> Status {
        let on_disk = self
            .dir
            .list()
            .map(|l| l.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
        let pinned = self.dir.pinned().unwrap_or_default();
        Status::of(self.dir.path(), self.seq, &self.state(), on_disk, pinned)
    }

    /// Answers one request line; never fails (errors are answers).
    pub fn handle_line(&mut self, line: &str) -> Value {
        match Request::parse(line) {
            Ok(req) => self.answer(req),
            Err(answer) => answer,
        }
    }

    /// Answers one parsed request, echoing its `"id"`; never fails (errors are answers).
    pub fn answer(&mut self, req: Request) -> Value {
        let id = req.id.clone();
        let mut answer = match self.handle(req) {
            Ok(v) => v,
            Err(e) => json!({ "error": format!("{e:#}") }),
        };
        if let (Some(id), Some(obj)) = (id, answer.as_object_mut()) {
            obj.insert("id".into(), id);
        }
        answer
    }

    /// Answers one parsed request.
    pub fn handle(&mut self, req: Request) -> anyhow::Result<Value> {
        let t0 = Instant::now();
        req.check()?;
        if req.status == Some(true) {
            return Ok(serde_json::to_value(self.status())?);
        }
        if req.flush == Some(true) {
            let seq = self.flush()?;
            return Ok(json!({ "flushed": seq, "state": self.seq }));
        }
        if req.export == Some(true) {
            return self.export();
        }
        if let Some(states) = &req.merge {
            return self.merge(states, t0);
        }
        if req.rollback.is_some() {
            return self.rollback(req.rollback_to()?);
        }
        if let Some(label) = &req.label {
            let name = self.label_name(label)?;
            return self.label(&name, req.sample, t0);
        }
        self.predict(&req, t0)
    }

    fn record(&mut self, t: Duration) {
        let h = &mut self.histogram;
        let t_ms = t.as_secs_f64() * 1e3;
        if let Some(i) = LATENCY_BUCKETS_MS.iter().position(|&b| t_ms <= b) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum_s += t.as_secs_f64();
        if self.latencies.len() == LATENCIES {
            self.latencies.pop_front();
        }
        self.latencies
            .push_back(t.as_micros().min(u128::from(u32::MAX)) as u32);
    }

    /// When the unwritten state is due to be written, if there is any.
    pub fn flush_deadline(&self) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        Some(self.schedule.deadline(Instant::now()))
    }

    /// Writes the state if it is unwritten and due; its sequence number if it wrote.
    pub fn flush_if_due(&mut self) -> anyhow::Result<Option<u64>> {
        match self.flush_deadline() {
            Some(t) if t <= Instant::now() => self.flush(),
            _ => Ok(None),
        }
    }

    /// Writes the state now if anything is unwritten; its sequence number if it wrote.
    pub fn flush(&mut self) -> anyhow::Result<Option<u64>> {
        if !self.dirty {
            return Ok(None);
        }
        let t = Instant::now();
        let written = self.dir.write(&self.state());
        self.schedule.attempted(Instant::now(), written.is_ok());
        let seq = written.inspect_err(|_| self.persist_errors += 1)?;
        self.seq = seq;
        self.dirty = false;
        log::debug!("wrote state {seq} in {:.1} ms", ms(t.elapsed()));
        Ok(Some(seq))
    }
}

/// The engine, class names, sequence number and origin of a loaded state.
fn resume(
    model: &Model,
    l: &state::Loaded,
    cfg: EngineConfig,
) -> anyhow::Result<(Engine, Vec<String>, u64, Origin)> {
    let mut engine = Engine::restore(&l.state, &model.head, model.stats.as_ref(), cfg)
        .map_err(|e| anyhow::anyhow!("state {}: {e}", l.path.display()))?;
    if l.state.head.is_none() {
        model.seed(&mut engine)?;
    }
    if engine.fleet_needs_migration() {
        let base = fleet::bundle_statistics(model, cfg)?;
        engine
            .migrate_fleet(&base)
            .map_err(|e| anyhow::anyhow!("state {}: its fleet part: {e}", l.path.display()))?;
    }
    engine.start_ids_at(l.state.counters.next_sample.div_ceil(RUN_IDS) * RUN_IDS);
    let names = if l.state.head.is_some() {
        l.state.classes.clone()
    } else {
        model.manifest.classes.clone()
    };
    Ok((engine, names, l.seq, l.state.origin))
}

/// The newest [`LATENCIES`] latencies of a state.
fn recent_latencies(state: &DeviceState) -> &[u32] {
    let keep = state.latency_us.len().min(LATENCIES);
    &state.latency_us[state.latency_us.len() - keep..]
}

/// Loads the newest state of `dir` that belongs to `model`.
pub fn load_for(
    dir: &StateDir,
    model: &Model,
    cfg: EngineConfig,
) -> anyhow::Result<Option<state::Loaded>> {
    dir.load_newest(|s| {
        if s.backbone != model.id {
            return Err(format!(
                "it was learned on another backbone ({:#010x}, this bundle's is {:#010x}); `edgetune reset` starts over",
                s.backbone, model.id
            ));
        }
        Engine::restore(s, &model.head, model.stats.as_ref(), cfg).map(|_| ())
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
