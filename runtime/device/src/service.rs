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
//! | `{"label": "cat", "sample": 12}` | learns that sample 12 is a cat (`sample` left out: the most recent); a name the head does not know adds a class; a number is a class index |
//! | `{"status": true}` | the service's status, as `edgetune status --json` |
//! | `{"flush": true}` | writes the state now if anything is unwritten |
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
//! label, before answering it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::engine::{Engine, EngineConfig, EngineError, Observation, Outcome};
use crate::state::{self, DeviceState, Origin, StateDir};
use edgetune::backbone::Backbone;
use edgetune::bundle::{BackboneFormat, Bundle, Layout, Manifest};
use edgetune::head::{Dims, Head};
use edgetune::persist;
use edgetune::stats::Stats;

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
        }
    }
}

/// The model side of a bundle: its manifest, backbone and head.
pub struct Model {
    /// The manifest.
    pub manifest: Manifest,
    backbone: Option<Backbone>,
    /// The bundle's head (or an empty one when it has none).
    pub head: Head<Vec<f32>>,
    /// [`state::backbone_id`] of the bundle.
    pub id: u32,
    /// The bundle's embedding statistics, decoded ([`edgetune::stats`]).
    pub stats: Option<Stats>,
    input_len: usize,
    max_input_bytes: u64,
}

impl Model {
    /// Reads a bundle and loads its backbone as `opts` say (threads, or ONNX Runtime).
    pub fn open(path: &Path, opts: &Options) -> anyhow::Result<Model> {
        let threads = opts.threads;
        let bundle = Bundle::read(path).with_context(|| format!("bundle {}", path.display()))?;
        let manifest = bundle.manifest.clone();
        let embedding = manifest.embedding.size;
        let head = match &bundle.head {
            Some(bytes) => persist::decode_head(bytes).context("the bundle's head")?,
            None => Head::alloc(Dims::linear(embedding, DEFAULT_CAPACITY), 0)
                .context("an empty head for the bundle")?,
        };
        let stats = match &manifest.embedding_stats {
            Some(s) => Some(Stats::from_manifest(s, embedding, head.classes())?),
            None => None,
        };
        #[cfg(feature = "ort")]
        if let Some((onnx, ort)) = &opts.onnx {
            if manifest.backbone.format == BackboneFormat::None {
                bail!("--onnx is for bundles with a backbone; this one takes embeddings");
            }
            let bytes = std::fs::read(onnx).with_context(|| format!("{}", onnx.display()))?;
            let b = Backbone::from_onnx_with(&bytes, &manifest, ort).with_context(|| {
                format!(
                    "ONNX Runtime ({:?}) on {} cut at the bundle's embedding",
                    ort.provider,
                    onnx.display()
                )
            })?;
            let input_len: usize = manifest.input.shape.iter().product();
            return Ok(Model {
                id: state::backbone_id(&bundle),
                stats,
                input_len,
                max_input_bytes: opts
                    .max_input_bytes
                    .unwrap_or_else(|| Model::default_input_limit(input_len)),
                manifest,
                backbone: Some(b),
                head,
            });
        }
        let backbone = match manifest.backbone.format {
            BackboneFormat::None => None,
            BackboneFormat::NnefTar => {
                let b = Backbone::from_bundle(&bundle).context("the bundle's backbone")?;
                #[cfg(feature = "threads")]
                let b = b.with_threads(threads).context("backbone threads")?;
                #[cfg(not(feature = "threads"))]
                let _ = threads;
                Some(b)
            }
        };
        let input_len = manifest.input.shape.iter().product();
        Ok(Model {
            id: state::backbone_id(&bundle),
            stats,
            manifest,
            backbone,
            head,
            input_len,
            max_input_bytes: opts
                .max_input_bytes
                .unwrap_or_else(|| Model::default_input_limit(input_len)),
        })
    }

    /// The input file size limit for a model of `input_len` raw values: 16 MiB (a
    /// camera frame as PNG or JPEG), or the raw tensor as f32 plus 64 KiB of `.npy`
    /// header when that is larger.
    pub fn default_input_limit(input_len: usize) -> u64 {
        (16u64 << 20).max(
            (input_len as u64)
                .saturating_mul(4)
                .saturating_add(64 << 10),
        )
    }

    /// The raw input tensor of the file at `path` ([`Model::raw_input`]), read with
    /// bounds: only a regular file (no FIFO, device or directory: `/dev/zero` is
    /// refused, not read), opened without blocking, at most the model's input limit
    /// (`--max-input-bytes`). Errors name the path and what is wrong with it, never its
    /// contents or size.
    pub fn read_input(&self, path: &Path) -> anyhow::Result<Vec<f32>> {
        let bytes = read_bounded(path, self.max_input_bytes)?;
        let known = bytes.starts_with(b"\x93NUMPY")
            || bytes.starts_with(b"\x89PNG")
            || bytes.starts_with(&[0xFF, 0xD8, 0xFF]);
        self.raw_input(&bytes).map_err(|e| {
            if known {
                return e.context(format!("the input {}", path.display()));
            }
            // Of a file that is no input format, the reason (its length) would describe
            // a file the request may have no business reading: name what is expected.
            anyhow::anyhow!(
                "the input {} is not a PNG, JPEG or .npy file, nor {} raw little-endian f32 values",
                path.display(),
                self.input_len
            )
        })
    }

    /// Gives a fresh engine the bundle's embedding statistics and exemplars, if it has
    /// any.
    pub fn seed(&self, engine: &mut Engine) -> anyhow::Result<()> {
        if let Some(stats) = &self.stats {
            engine
                .set_stats(stats)
                .context("the bundle's embedding statistics")?;
        }
        let Some(e) = &self.manifest.exemplars else {
            return Ok(());
        };
        let x = e.embeddings(self.manifest.embedding.size, self.head.classes())?;
        engine
            .seed(&x, &e.replay, &e.guard)
            .context("the bundle's exemplars")?;
        Ok(())
    }

    /// The raw input tensor of a file's bytes: a PNG or JPEG image (for an image
    /// backbone), a `.npy` array ([`edgetune::npy`]; of a batch, the first sample), or raw
    /// little-endian f32 values.
    pub fn raw_input(&self, bytes: &[u8]) -> anyhow::Result<Vec<f32>> {
        let layout = self.manifest.input.layout;
        let values = if bytes.starts_with(b"\x93NUMPY") {
            // A batch gives its first sample.
            let mut samples = edgetune::npy::read_npy(
                Path::new("the .npy input"),
                bytes,
                &self.manifest.input,
                self.input_len,
                1,
            )?;
            samples.pop().unwrap_or_default()
        } else if bytes.starts_with(b"\x89PNG") || bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            if !matches!(layout, Layout::Nchw | Layout::Nhwc) {
                bail!(
                    "an image was given, but this model's input is not an image ({:?} {:?})",
                    layout,
                    self.manifest.input.shape
                );
            }
            image_input(bytes, &self.manifest)?
        } else {
            if !bytes.len().is_multiple_of(4) {
                bail!(
                    "the input is not a PNG, JPEG or .npy file, and its {} bytes are not whole little-endian f32 values",
                    bytes.len()
                );
            }
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        self.check_raw(&values)?;
        Ok(values)
    }

    /// Checks the length and finiteness of a raw input.
    pub fn check_raw(&self, values: &[f32]) -> anyhow::Result<()> {
        if values.len() != self.input_len {
            bail!(
                "the input has {} values, this model takes {:?} = {} values",
                values.len(),
                self.manifest.input.shape,
                self.input_len
            );
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "the input holds {} at position {i}: only finite values are accepted",
                values[i]
            );
        }
        Ok(())
    }

    /// The embedding of a raw input into `out`.
    pub fn embed(&self, raw: &[f32], out: &mut [f32]) -> anyhow::Result<()> {
        self.check_raw(raw)?;
        if let Some(b) = &self.backbone {
            b.embed(raw, out).context("the backbone")?;
            return Ok(());
        }
        if raw.len() != out.len() {
            bail!(
                "the features have {} values, the head takes {}",
                raw.len(),
                out.len()
            );
        }
        out.copy_from_slice(raw);
        Ok(())
    }

    /// The embedding of a text encoder's token ids.
    pub fn embed_tokens(&self, ids: &[i64], out: &mut [f32]) -> anyhow::Result<()> {
        if let Some(b) = &self.backbone
            && self.manifest.input.layout == Layout::Tokens
        {
            b.embed_tokens(ids, out).context("the backbone")?;
            return Ok(());
        }
        let _ = (ids, out);
        bail!(
            "\"tokens\" is for text-encoder bundles; this model's input is {:?}",
            self.manifest.input.layout
        )
    }
}

fn image_input(bytes: &[u8], manifest: &Manifest) -> anyhow::Result<Vec<f32>> {
    Ok(edgetune::image::decode(bytes, &manifest.input)?)
}

/// One request line, parsed (see the module docs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Echoed in the answer.
    #[serde(default)]
    pub id: Option<Value>,
    /// A file to predict.
    #[serde(default)]
    pub input: Option<PathBuf>,
    /// Base64 bytes to predict.
    #[serde(default)]
    pub data: Option<String>,
    /// Values to predict.
    #[serde(default)]
    pub tensor: Option<Vec<f64>>,
    /// Token ids to predict.
    #[serde(default)]
    pub tokens: Option<Vec<i64>>,
    /// A class name (or index) for a sample.
    #[serde(default)]
    pub label: Option<Value>,
    /// The sample a label is for.
    #[serde(default)]
    pub sample: Option<u64>,
    /// Ask for the status.
    #[serde(default)]
    pub status: Option<bool>,
    /// Write the state now.
    #[serde(default)]
    pub flush: Option<bool>,
}

/// Reads at most `limit` bytes of the regular file at `path`. The file is opened with
/// `O_NONBLOCK` so that a FIFO cannot block the caller's thread; anything but a regular
/// file is refused before a byte is read, and a file that is (or grows) larger than
/// `limit` is refused too.
pub fn read_bounded(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("cannot read the input {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read the input {}", path.display()))?;
    if !meta.is_file() {
        bail!("the input {} is not a regular file", path.display());
    }
    if meta.len() > limit {
        bail!(
            "the input {} is larger than the input limit of {limit} bytes (--max-input-bytes)",
            path.display()
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the limit tells a file that grew since its size was read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the input {}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!(
            "the input {} is larger than the input limit of {limit} bytes (--max-input-bytes)",
            path.display()
        );
    }
    Ok(bytes)
}

/// What the status shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The state's sequence number (0: none written yet).
    pub state: u64,
    /// How it came about.
    pub origin: String,
    /// States on disk.
    pub states_on_disk: Vec<u64>,
    /// States kept by a reset or rollback, never pruned.
    pub pinned: Vec<u64>,
    /// Per class: name, labels received, samples in the replay buffer, guard samples.
    pub classes: Vec<ClassStatus>,
    /// Predictions made.
    pub predictions: u64,
    /// Labels received.
    pub labels: u64,
    /// Updates kept.
    pub updates: u64,
    /// Updates the guard refused.
    pub refused: u64,
    /// Guard accuracy.
    pub guard_accuracy: Option<f32>,
    /// Guard samples.
    pub guard_samples: usize,
    /// Which learner writes the head: `"slda"` (closed-form) or `"gradient"`.
    pub learner: &'static str,
    /// Share of labels (of classes the head had) whose prediction before learning
    /// them was right: accuracy measured on samples not yet learned.
    pub prequential_accuracy: Option<f32>,
    /// Labels that measured it.
    pub prequential_labels: u64,
    /// Temperature of the probabilities, fitted to those predictions.
    pub temperature: f32,
    /// Median request latency, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile request latency, ms.
    pub p99_ms: Option<f64>,
}

/// One class in the status.
#[derive(Debug, Clone, Serialize)]
pub struct ClassStatus {
    /// Its name.
    pub name: String,
    /// Labels received.
    pub labels: u32,
    /// Samples in the replay buffer.
    pub buffered: usize,
    /// Samples in the guard.
    pub guard: usize,
}

impl Status {
    /// The status of a stored state.
    pub fn of(
        dir: &Path,
        seq: u64,
        state: &DeviceState,
        on_disk: Vec<u64>,
        pinned: Vec<u64>,
    ) -> Status {
        let buffered = |c: usize| {
            state
                .buffer
                .slots
                .iter()
                .filter(|s| s.0 as usize == c)
                .count()
        };
        let classes = state
            .classes
            .iter()
            .enumerate()
            .map(|(c, name)| ClassStatus {
                name: name.clone(),
                labels: state.counters.labels_per_class.get(c).copied().unwrap_or(0),
                buffered: buffered(c),
                guard: state
                    .guard
                    .labels
                    .iter()
                    .filter(|&&l| l as usize == c)
                    .count(),
            })
            .collect();
        let mut lat: Vec<u32> = state.latency_us.clone();
        lat.sort_unstable();
        let pct = |q: f64| {
            (!lat.is_empty()).then(|| {
                let i = ((lat.len() - 1) as f64 * q).round() as usize;
                f64::from(lat[i]) / 1000.0
            })
        };
        Status {
            state_dir: dir.to_path_buf(),
            state: seq,
            origin: match state.origin {
                Origin::Learned => "learned".into(),
                Origin::Reset => "reset to the bundle's head".into(),
                Origin::Rollback(n) => format!("rollback to state {n}"),
            },
            states_on_disk: on_disk,
            pinned,
            classes,
            predictions: state.counters.predictions,
            labels: state.counters.labels,
            updates: state.counters.updates,
            refused: state.counters.refused,
            guard_accuracy: state.guard_accuracy,
            guard_samples: state.guard.labels.len(),
            learner: if state.learning.slda.is_empty() && state.head.is_some() {
                "gradient"
            } else {
                "slda"
            },
            prequential_accuracy: {
                let (right, of) = state.learning.prequential;
                (of > 0).then(|| right as f32 / of as f32)
            },
            prequential_labels: state.learning.prequential.1,
            temperature: state.learning.calibration.2,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "state dir   {}", self.state_dir.display())?;
        writeln!(
            f,
            "state       {} ({}); on disk: {:?}, pinned: {:?}",
            self.state, self.origin, self.states_on_disk, self.pinned
        )?;
        writeln!(
            f,
            "counts      {} predictions, {} labels, {} updates, {} refused by the guard",
            self.predictions, self.labels, self.updates, self.refused
        )?;
        match self.guard_accuracy {
            Some(a) => writeln!(
                f,
                "guard       {:.1}% on {} held-out samples",
                a * 100.0,
                self.guard_samples
            )?,
            None => writeln!(f, "guard       no held-out samples yet")?,
        }
        match self.prequential_accuracy {
            Some(a) => writeln!(
                f,
                "learning    {}; {:.1}% of {} labels predicted right before they were learned; temperature {:.2}",
                self.learner,
                a * 100.0,
                self.prequential_labels,
                self.temperature
            )?,
            None => writeln!(
                f,
                "learning    {}; no label of a known class yet",
                self.learner
            )?,
        }
        match (self.p50_ms, self.p99_ms) {
            (Some(a), Some(b)) => writeln!(f, "latency     p50 {a:.2} ms, p99 {b:.2} ms")?,
            _ => writeln!(f, "latency     no requests yet")?,
        }
        writeln!(f, "classes     {}", self.classes.len())?;
        for c in &self.classes {
            writeln!(
                f,
                "  {:<24} {:>6} labels {:>5} in replay {:>3} in guard",
                c.name, c.labels, c.buffered, c.guard
            )?;
        }
        Ok(())
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
    last_write: Option<Instant>,
    latencies: VecDeque<u32>,
    emb: Vec<f32>,
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
                let mut engine =
                    Engine::restore(&l.state, &model.head, model.stats.as_ref(), opts.engine)
                        .map_err(|e| anyhow::anyhow!("state {}: {e}", l.path.display()))?;
                if l.state.head.is_none() {
                    model.seed(&mut engine)?;
                }
                engine.start_ids_at(l.state.counters.next_sample.div_ceil(RUN_IDS) * RUN_IDS);
                let keep = l.state.latency_us.len().min(LATENCIES);
                latencies.extend(&l.state.latency_us[l.state.latency_us.len() - keep..]);
                let names = if l.state.head.is_some() {
                    l.state.classes.clone()
                } else {
                    model.manifest.classes.clone()
                };
                (engine, names, l.seq, l.state.origin)
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
        let service = Service {
            model,
            engine,
            names,
            dir,
            opts,
            seq,
            origin,
            dirty: false,
            last_write: None,
            latencies,
            emb,
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
        let req: Request = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_data() {
                    "invalid request"
                } else {
                    "malformed JSON"
                };
                return json!({ "error": format!("{what}: {e}") });
            }
        };
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
        let inputs = [
            req.input.is_some(),
            req.data.is_some(),
            req.tensor.is_some(),
            req.tokens.is_some(),
        ]
        .iter()
        .filter(|&&b| b)
        .count();
        let asks = inputs
            + usize::from(req.label.is_some())
            + usize::from(req.status == Some(true))
            + usize::from(req.flush == Some(true));
        if asks != 1 {
            bail!(
                "a request has exactly one of \"input\", \"data\", \"tensor\", \"tokens\", \"label\", \"status\", \"flush\" (this one has {asks})"
            );
        }
        if req.sample.is_some() && req.label.is_none() {
            bail!("\"sample\" goes with \"label\"");
        }
        if req.status == Some(true) {
            return Ok(serde_json::to_value(self.status())?);
        }
        if req.flush == Some(true) {
            let seq = self.flush()?;
            return Ok(json!({ "flushed": seq, "state": self.seq }));
        }
        if let Some(label) = &req.label {
            let name = match label {
                Value::String(s) => s.clone(),
                Value::Number(n) => {
                    let i = n.as_u64().filter(|&i| (i as usize) < self.names.len()).ok_or_else(|| {
                        anyhow::anyhow!(
                            "class index {n} is not one of the head's {} classes (use a name to add a class)",
                            self.names.len()
                        )
                    })?;
                    self.names[i as usize].clone()
                }
                _ => bail!("\"label\" is a class name (or a class index)"),
            };
            let answer = self.label(&name, req.sample, t0)?;
            return Ok(answer);
        }
        let t_in = Instant::now();
        let mut emb = std::mem::take(&mut self.emb);
        let embedded = (|| -> anyhow::Result<Duration> {
            if let Some(ids) = &req.tokens {
                let t = Instant::now();
                self.model.embed_tokens(ids, &mut emb)?;
                return Ok(t.elapsed());
            }
            let raw = if let Some(path) = &req.input {
                self.model.read_input(path)?
            } else if let Some(b64) = &req.data {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .context("\"data\" is not valid base64")?;
                self.model.raw_input(&bytes)?
            } else {
                let values: Vec<f32> = req.tensor.iter().flatten().map(|&v| v as f32).collect();
                self.model.check_raw(&values)?;
                values
            };
            let t = Instant::now();
            self.model.embed(&raw, &mut emb)?;
            Ok(t.elapsed())
        })();
        let input_time = t_in.elapsed();
        let result = embedded.and_then(|backbone| {
            let t = Instant::now();
            let obs = self.engine.observe(&emb).map_err(anyhow::Error::from)?;
            Ok((backbone, t.elapsed(), obs))
        });
        self.emb = emb;
        let (backbone, head, obs) = result?;
        let total = t0.elapsed();
        self.record(total);
        Ok(self.prediction_json(
            &obs,
            input_time.saturating_sub(backbone),
            backbone,
            head,
            total,
        ))
    }

    fn prediction_json(
        &self,
        obs: &Observation,
        input: Duration,
        backbone: Duration,
        head: Duration,
        total: Duration,
    ) -> Value {
        let top: Vec<Value> = obs
            .top
            .iter()
            .map(|&(c, p)| json!({ "class": self.names[c], "p": p }))
            .collect();
        json!({
            "sample": obs.sample,
            "class": obs.prediction.map(|p| self.names[p.class].clone()),
            "confidence": obs.prediction.map(|p| p.confidence),
            "top": top,
            "uncertainty": obs.prediction.map_or(1.0, |p| 1.0 - p.margin),
            "uncertain": obs.uncertain,
            "novelty": obs.novelty,
            "ms": {
                "input": ms(input), "backbone": ms(backbone), "head": ms(head), "total": ms(total)
            },
        })
    }

    /// Learns that `sample` (the most recent when `None`) is of class `name`.
    pub fn label(&mut self, name: &str, sample: Option<u64>, t0: Instant) -> anyhow::Result<Value> {
        let known = self.names.iter().position(|n| n == name);
        if known.is_none() {
            check_name(name)?;
        }
        let class = known.unwrap_or(self.names.len());
        let t = Instant::now();
        let outcome = self.engine.label(sample, class).map_err(|e| match e {
            EngineError::Head(edgetune::Error::Capacity { capacity, .. }) => anyhow::anyhow!(
                "cannot add class {name:?}: the head holds at most {capacity} classes, all taken"
            ),
            e => anyhow::Error::from(e),
        })?;
        let learn = t.elapsed();
        let sample = sample.or(self.engine.last_sample());
        if known.is_none() && matches!(outcome, Outcome::Learned { .. }) {
            self.names.push(name.to_string());
            log::info!("new class {name:?} (class {class})");
        }
        self.dirty = true;
        let t = Instant::now();
        // The label is learned whether or not the write succeeds: a failed write is
        // reported and tried again with the next label or flush.
        let written = if self.opts.persist_interval.is_zero() {
            self.flush()
        } else {
            self.flush_if_due()
        };
        let persist = t.elapsed();
        let (persisted, persist_error) = match written {
            Ok(seq) => (seq, None),
            Err(e) => {
                log::error!("{e:#}; the state stays in memory and the write is tried again");
                (None, Some(format!("{e:#}")))
            }
        };
        let total = t0.elapsed();
        self.record(total);
        let added = matches!(outcome, Outcome::Learned { learned, .. } if learned.added);
        let mut answer = json!({
            "sample": sample,
            "added": added,
            "label": name,
            "class_index": class,
            "persisted": persisted,
            "persist_error": persist_error,
            "ms": { "learn": ms(learn), "persist": ms(persist), "total": ms(total) },
        });
        if let Some(o) = answer.as_object_mut() {
            match outcome {
                Outcome::Learned { learned, guard } => {
                    o.insert("result".into(), "learned".into());
                    o.insert("loss".into(), learned.loss.into());
                    if let Some((b, a)) = guard {
                        o.insert("guard".into(), json!({ "before": b, "after": a }));
                    }
                }
                Outcome::Refused { before, after } => {
                    let msg = format!(
                        "the regression guard refused this update: accuracy on the {} held-out samples would drop from {:.0}% to {:.0}% (margin {:.0} points); the head is unchanged",
                        self.engine.guard_len(),
                        before * 100.0,
                        after * 100.0,
                        self.opts.engine.guard_margin * 100.0
                    );
                    log::warn!("{msg}");
                    o.insert("result".into(), "refused".into());
                    o.insert("guard".into(), json!({ "before": before, "after": after }));
                    o.insert("message".into(), msg.into());
                }
            }
        }
        Ok(answer)
    }

    fn record(&mut self, t: Duration) {
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
        Some(match self.last_write {
            Some(t) => t + self.opts.persist_interval,
            None => Instant::now(),
        })
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
        let seq = self.dir.write(&self.state())?;
        self.seq = seq;
        self.dirty = false;
        self.last_write = Some(Instant::now());
        log::debug!("wrote state {seq} in {:.1} ms", ms(t.elapsed()));
        Ok(Some(seq))
    }
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

fn check_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        bail!("a class name cannot be empty");
    }
    if name.chars().count() > MAX_NAME {
        bail!("a class name has at most {MAX_NAME} characters");
    }
    if name.chars().any(char::is_control) {
        bail!("a class name cannot hold control characters");
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
