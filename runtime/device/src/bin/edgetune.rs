//! `edgetune`: the device program. Predicts in real time, takes labels, learns from each
//! at once, and keeps what it learned across power cuts. See `edgetune --help`, and the
//! request protocol in `edgetune_device::service`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use edgetune_device::engine::{EngineConfig, LearnerKind};
use edgetune_device::service::{Model, Options, Service, Status, load_for};
use edgetune_device::state::{DeviceState, Origin, StateDir};

#[derive(Parser)]
#[command(
    name = "edgetune",
    version,
    about = "Edge inference that keeps learning from labels on the device"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log only warnings and errors (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Log debug messages too.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Serve predictions and learn from labels: JSON requests, one per line, on stdin
    /// (and a Unix socket), files of a watched directory, label buttons.
    Serve(ServeArgs),
    /// Predict the class of each input once and exit.
    Predict(PredictArgs),
    /// What the state directory holds: classes, samples, updates, guard, latency.
    Status(StatusArgs),
    /// Make an earlier state the newest again (by default the one before the newest).
    Rollback(RollbackArgs),
    /// Start over from the bundle's head; the old states stay on disk.
    Reset(StatusArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// The bundle (from `finetune-head train` or `convert`).
    bundle: PathBuf,
    /// Where the learned state is kept (created if missing).
    #[arg(long)]
    state: PathBuf,
    /// Files to predict first, in order.
    inputs: Vec<PathBuf>,
    /// Predict each new file that appears in this directory.
    #[arg(long)]
    watch: Option<PathBuf>,
    /// How often to look into the watched directory, in seconds.
    #[arg(long, default_value_t = 0.2)]
    watch_interval: f64,
    /// Also take requests on this Unix socket (one JSON request per line per connection).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Do not read requests from stdin.
    #[arg(long)]
    no_stdin: bool,
    /// A label button: GPIOCHIP:LINE=CLASS, e.g. gpiochip0:17=cat; pressing it labels
    /// the most recent sample. Repeat for several classes.
    #[arg(long = "button", value_name = "CHIP:LINE=CLASS")]
    buttons: Vec<String>,
    /// Buttons read high when pressed (default: low, a button to ground with a pull-up).
    #[arg(long)]
    button_active_high: bool,
    /// Least seconds between two writes of the state: labels in a burst make one write
    /// (0: write after every label, before answering it).
    #[arg(long, default_value_t = 2.0)]
    persist_interval: f64,
    /// States kept in the state directory.
    #[arg(long, default_value_t = 5)]
    keep: usize,
    #[command(flatten)]
    learn: LearnArgs,
    #[command(flatten)]
    backbone: BackboneArgs,
}

/// How the backbone runs.
#[derive(Args)]
struct BackboneArgs {
    /// Backbone threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Run the backbone with ONNX Runtime from this ONNX model (the one the bundle was
    /// converted from), cut at the bundle's embedding, instead of the bundle's tract
    /// graph: the Jetson's GPU path (see --provider).
    #[cfg(feature = "ort")]
    #[arg(long, value_name = "MODEL.onnx")]
    onnx: Option<PathBuf>,
    /// ONNX Runtime's execution provider with --onnx (cuda and tensorrt need this build's
    /// `cuda`/`tensorrt` features and an ONNX Runtime library built with them).
    #[cfg(feature = "ort")]
    #[arg(long, value_enum, default_value_t = ProviderArg::Cpu, requires = "onnx")]
    provider: ProviderArg,
    /// The GPU's index for --provider cuda/tensorrt.
    #[cfg(feature = "ort")]
    #[arg(long, default_value_t = 0, requires = "onnx")]
    gpu: i32,
    /// TensorRT: allow half precision.
    #[cfg(feature = "ort")]
    #[arg(long, requires = "onnx")]
    fp16: bool,
    /// TensorRT: keep built engines in this directory (building one takes minutes).
    #[cfg(feature = "ort")]
    #[arg(long, value_name = "DIR", requires = "onnx")]
    trt_cache: Option<PathBuf>,
    /// Largest input file read (an image, .npy or raw tensor named by a request, a
    /// watched file), in bytes. Default: 16 MiB, or the model's raw input as f32 plus
    /// 64 KiB when that is larger.
    #[arg(long, value_name = "BYTES")]
    max_input_bytes: Option<u64>,
}

#[cfg(feature = "ort")]
#[derive(Clone, Copy, clap::ValueEnum)]
enum ProviderArg {
    Cpu,
    Cuda,
    Tensorrt,
}

impl BackboneArgs {
    /// Options with the backbone's part filled in.
    fn options(&self) -> Result<Options> {
        #[allow(unused_mut)]
        let mut opts = Options {
            threads: self.threads.max(1),
            max_input_bytes: self.max_input_bytes,
            ..Options::default()
        };
        #[cfg(feature = "ort")]
        if let Some(onnx) = &self.onnx {
            use edgetune::backbone::{OrtOptions, Provider};
            if self.trt_cache.is_some() && !matches!(self.provider, ProviderArg::Tensorrt) {
                bail!("--trt-cache is for --provider tensorrt");
            }
            let provider = match self.provider {
                ProviderArg::Cpu => Provider::Cpu,
                ProviderArg::Cuda => Provider::Cuda { device: self.gpu },
                ProviderArg::Tensorrt => Provider::TensorRt {
                    device: self.gpu,
                    fp16: self.fp16,
                    cache: self.trt_cache.clone(),
                },
            };
            let ort = OrtOptions::default()
                .intra_threads(self.threads.max(1))
                .provider(provider);
            opts.onnx = Some((onnx.clone(), ort));
        }
        Ok(opts)
    }
}

#[derive(Args)]
struct LearnArgs {
    /// Which learner writes the head: `slda`, closed-form statistics (learns from one
    /// label, forgets nothing, independent of label order), or `gradient`, gradient
    /// steps with replay (MLP heads; --lr, --steps, --replay, --guard-margin).
    #[arg(long, value_enum, default_value_t = LearnerArg::Slda)]
    learner: LearnerArg,
    /// Strength of the closed-form learner's covariance prior (the bundle's embedding
    /// statistics), in pseudo-samples.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.prior_strength)]
    prior_strength: f32,
    /// Learning rate of the on-device updates.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.learn.lr)]
    lr: f32,
    /// Optimizer steps per label.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.online.steps)]
    steps: usize,
    /// Samples replayed from the buffer in each step.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.online.replay)]
    replay: usize,
    /// Largest drop of the guard's held-out accuracy an update may cause (0.2 = 20
    /// points); a larger drop rolls the update back.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.guard_margin)]
    guard_margin: f32,
    /// Flag a prediction as uncertain (ask for a label) when its top-1 minus top-2
    /// probability is below this.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.uncertain_margin)]
    uncertain_margin: f32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LearnerArg {
    Slda,
    Gradient,
}

impl LearnArgs {
    fn config(&self) -> Result<EngineConfig> {
        let mut cfg = EngineConfig::DEFAULT;
        cfg.learner = match self.learner {
            LearnerArg::Slda => LearnerKind::Slda,
            LearnerArg::Gradient => LearnerKind::Gradient,
        };
        if !(self.prior_strength > 0.0 && self.prior_strength.is_finite()) {
            bail!("--prior-strength is a number of samples above 0");
        }
        cfg.prior_strength = self.prior_strength;
        cfg.learn.lr = self.lr;
        cfg.learn.validate().context("--lr")?;
        if self.steps == 0 || self.replay > edgetune::online::MAX_REPLAY {
            bail!(
                "--steps must be at least 1 and --replay at most {}",
                edgetune::online::MAX_REPLAY
            );
        }
        cfg.online.steps = self.steps;
        cfg.online.replay = self.replay;
        if !(0.0..=1.0).contains(&self.guard_margin)
            || !(0.0..=1.0).contains(&self.uncertain_margin)
        {
            bail!("--guard-margin and --uncertain-margin are between 0 and 1");
        }
        cfg.guard_margin = self.guard_margin;
        cfg.uncertain_margin = self.uncertain_margin;
        Ok(cfg)
    }
}

#[derive(Args)]
struct PredictArgs {
    /// The bundle.
    bundle: PathBuf,
    /// Images or tensors (PNG, JPEG, .npy, raw f32).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Use the head learned in this state directory instead of the bundle's.
    #[arg(long)]
    state: Option<PathBuf>,
    /// One JSON object per input instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    backbone: BackboneArgs,
}

#[derive(Args)]
struct StatusArgs {
    /// The state directory.
    #[arg(long)]
    state: PathBuf,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RollbackArgs {
    /// The state directory.
    #[arg(long)]
    state: PathBuf,
    /// The state number to go back to (`edgetune status` lists them).
    #[arg(long)]
    to: Option<u64>,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (_, true) => "debug",
        _ => "info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        Command::Serve(a) => serve(a),
        Command::Predict(a) => predict(a),
        Command::Status(a) => status(a),
        Command::Rollback(a) => rollback(a),
        Command::Reset(a) => reset(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Longest request line: a base64 image or a JSON tensor of a large input fits.
const MAX_LINE: usize = 64 << 20;

/// The next request line of `r`: `Ok` with the line, `Err` with why it cannot be one (too
/// long, not UTF-8: the line is skipped and the stream goes on), `None` at the end of the
/// stream or on a read error.
fn next_request(r: &mut impl BufRead) -> Option<Result<String, String>> {
    let mut buf = Vec::new();
    let n = std::io::Read::take(&mut *r, MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .ok()?;
    if n == 0 {
        return None;
    }
    if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
        // Skip the rest of the line, a bounded piece at a time.
        loop {
            buf.clear();
            let n = std::io::Read::take(&mut *r, 1 << 20)
                .read_until(b'\n', &mut buf)
                .ok()?;
            if n == 0 || buf.last() == Some(&b'\n') {
                break;
            }
        }
        return Some(Err(format!(
            "request line longer than {} MiB: skipped",
            MAX_LINE >> 20
        )));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Some(String::from_utf8(buf).map_err(|e| {
        format!(
            "the request is not UTF-8 text (invalid byte at {})",
            e.utf8_error().valid_up_to()
        )
    }))
}

/// What the reader threads hand to the service thread.
enum Event {
    /// A request line (or why it is none) and where its answer goes.
    Line(Result<String, String>, Reply),
    /// A label button was pressed.
    Press(String),
    /// A new file in the watched directory.
    File(PathBuf),
    /// Stdin ended.
    StdinClosed,
}

enum Reply {
    Stdout,
    Socket(UnixStream),
}

fn print_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) is no reason to stop learning.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn serve(a: ServeArgs) -> Result<()> {
    if !(a.persist_interval >= 0.0 && a.persist_interval.is_finite()) {
        bail!("--persist-interval is a number of seconds, at least 0");
    }
    let opts = Options {
        engine: a.learn.config()?,
        keep: a.keep,
        persist_interval: Duration::from_secs_f64(a.persist_interval),
        ..a.backbone.options()?
    };
    let (mut service, warnings) = Service::open(&a.bundle, &a.state, opts)?;
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
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }
    // Bounded: a client that sends faster than the service answers waits, instead of
    // queueing without limit.
    let (tx, rx) = mpsc::sync_channel::<Event>(64);
    for path in &a.inputs {
        let answer = predict_file(&mut service, path);
        print_line(&answer);
    }
    let mut sources = 0;
    if !a.no_stdin {
        sources += 1;
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            while let Some(line) = next_request(&mut stdin) {
                if tx.send(Event::Line(line, Reply::Stdout)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::StdinClosed);
        });
    }
    if let Some(path) = &a.socket {
        sources += 1;
        listen(path, tx.clone())?;
    }
    if let Some(dir) = &a.watch {
        sources += 1;
        watch(
            dir,
            Duration::from_secs_f64(a.watch_interval.max(0.01)),
            tx.clone(),
        )?;
    }
    for spec in &a.buttons {
        sources += 1;
        button(spec, a.button_active_high, &service, tx.clone())?;
    }
    drop(tx);
    if sources == 0 {
        service.flush()?;
        return Ok(());
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            log::info!("stopping (signal)");
            break;
        }
        let wait = service
            .flush_deadline()
            .map_or(Duration::from_millis(200), |t| {
                t.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200))
            });
        let event = match rx.recv_timeout(wait) {
            Ok(e) => Some(e),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match event {
            None => {}
            Some(Event::Line(line, reply)) => {
                let answer = match line {
                    Ok(line) if line.trim().is_empty() => continue,
                    Ok(line) => service.handle_line(&line),
                    Err(refused) => json!({ "error": refused }),
                };
                match reply {
                    Reply::Stdout => print_line(&answer),
                    Reply::Socket(mut s) => {
                        if writeln!(s, "{answer}").is_err() {
                            log::debug!("a socket client went away before its answer");
                        }
                    }
                }
            }
            Some(Event::Press(class)) => {
                let answer = match service.label(&class, None, Instant::now()) {
                    Ok(v) => v,
                    Err(e) => json!({ "error": format!("button {class:?}: {e:#}") }),
                };
                print_line(&json!({ "button": class, "answer": answer }));
            }
            Some(Event::File(path)) => print_line(&predict_file(&mut service, &path)),
            Some(Event::StdinClosed) => {
                sources -= 1;
                if sources == 0 {
                    break;
                }
            }
        }
        if let Err(e) = service.flush_if_due() {
            log::error!("{e:#}; the state stays in memory and the write is tried again");
        }
    }
    if let Some(seq) = service.flush()? {
        log::info!("wrote state {seq} before stopping");
    }
    if let Some(path) = &a.socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

fn predict_file(service: &mut Service, path: &Path) -> Value {
    let mut answer = service.handle_line(&json!({ "input": path }).to_string());
    if let Some(o) = answer.as_object_mut() {
        o.insert("input".into(), json!(path));
    }
    answer
}

fn listen(path: &Path, tx: mpsc::SyncSender<Event>) -> Result<()> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("the socket {} is in use by another process", path.display());
        }
        // A socket file left by a process that died.
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    log::info!("listening on {}", path.display());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let Ok(writer) = conn.try_clone() else { return };
                let _ = writer.set_write_timeout(Some(Duration::from_secs(5)));
                let mut conn = BufReader::new(conn);
                while let Some(line) = next_request(&mut conn) {
                    let Ok(reply) = writer.try_clone() else { break };
                    if tx.send(Event::Line(line, Reply::Socket(reply))).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}

fn watch(dir: &Path, every: Duration, tx: mpsc::SyncSender<Event>) -> Result<()> {
    let list = |dir: &Path| -> std::io::Result<Vec<(PathBuf, u64)>> {
        let mut files = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part") {
                continue;
            }
            let meta = e.metadata()?;
            if meta.is_file() {
                files.push((e.path(), meta.len()));
            }
        }
        files.sort();
        Ok(files)
    };
    // Files present at start are not new.
    let mut seen: std::collections::HashSet<PathBuf> = list(dir)
        .with_context(|| format!("cannot read the watched directory {}", dir.display()))?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let dir = dir.to_path_buf();
    log::info!("watching {}", dir.display());
    std::thread::spawn(move || {
        // A file is taken once its size held still for one interval (still being
        // written otherwise).
        let mut sizes: std::collections::HashMap<PathBuf, u64> = Default::default();
        loop {
            std::thread::sleep(every);
            let files = match list(&dir) {
                Ok(f) => f,
                Err(e) => {
                    log::warn!("cannot read the watched directory {}: {e}", dir.display());
                    continue;
                }
            };
            for (path, len) in files {
                if seen.contains(&path) {
                    continue;
                }
                if sizes.get(&path) == Some(&len) {
                    sizes.remove(&path);
                    seen.insert(path.clone());
                    if tx.send(Event::File(path)).is_err() {
                        return;
                    }
                } else {
                    sizes.insert(path, len);
                }
            }
        }
    });
    Ok(())
}

#[cfg(target_os = "linux")]
fn button(
    spec: &str,
    active_high: bool,
    service: &Service,
    tx: mpsc::SyncSender<Event>,
) -> Result<()> {
    use edgetune::button::{Active, Button};
    use linux_embedded_hal::CdevPin;
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};

    let bad =
        || anyhow::anyhow!("--button {spec:?}: expected CHIP:LINE=CLASS, e.g. gpiochip0:17=cat");
    let (pin, class) = spec.split_once('=').ok_or_else(bad)?;
    let (chip, line) = pin.split_once(':').ok_or_else(bad)?;
    let line: u32 = line.parse().map_err(|_| bad())?;
    if class.is_empty() {
        return Err(bad());
    }
    if !service.classes().iter().any(|c| c == class) {
        log::info!("button {spec}: class {class:?} is new; its first press adds it");
    }
    let dev = if chip.starts_with('/') {
        chip.to_string()
    } else {
        format!("/dev/{chip}")
    };
    let mut chip =
        Chip::new(&dev).with_context(|| format!("--button {spec}: cannot open {dev}"))?;
    let handle = chip
        .get_line(line)
        .and_then(|l| l.request(LineRequestFlags::INPUT, 0, "edgetune"))
        .with_context(|| format!("--button {spec}: cannot request line {line} of {dev}"))?;
    let pin = CdevPin::new(handle).with_context(|| format!("--button {spec}: line {line}"))?;
    let active = if active_high {
        Active::High
    } else {
        Active::Low
    };
    let mut button = Button::new(pin, active, 3);
    let class = class.to_string();
    std::thread::spawn(move || {
        loop {
            match button.poll() {
                Ok(true) => {
                    if tx.send(Event::Press(class.clone())).is_err() {
                        return;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    log::error!(
                        "button {class:?}: cannot read its pin ({e:?}); it is ignored from now on"
                    );
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn button(spec: &str, _: bool, _: &Service, _: mpsc::SyncSender<Event>) -> Result<()> {
    bail!("--button {spec}: GPIO buttons need Linux GPIO character devices")
}

fn predict(a: PredictArgs) -> Result<()> {
    let bundle = a.bundle.clone();
    // A one-shot run keeps nothing: a private, temporary state directory, seeded with
    // the learned state when one was asked for.
    let tmp = std::env::temp_dir().join(format!("edgetune-predict-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(tmp.clone());
    if let Some(dir) = &a.state {
        let model = Model::open(&bundle, &a.backbone.options()?)?;
        let src = StateDir::open(dir, false, 5)?;
        let loaded = load_for(&src, &model, EngineConfig::DEFAULT)?.with_context(|| {
            format!(
                "no state in {}: leave out --state to use the bundle's head",
                dir.display()
            )
        })?;
        for (path, why) in &loaded.skipped {
            log::warn!(
                "state file {} is unusable ({why}); using {}",
                path.display(),
                loaded.path.display()
            );
        }
        std::fs::create_dir_all(&tmp)?;
        StateDir::open(&tmp, false, 2)?.write(&loaded.state)?;
    }
    let (mut service, _) = Service::open(&bundle, &tmp, a.backbone.options()?)?;
    let mut failed = 0;
    for path in &a.inputs {
        let answer = predict_file(&mut service, path);
        if answer.get("error").is_some() {
            failed += 1;
        }
        if a.json {
            println!("{answer}");
        } else if let Some(e) = answer.get("error") {
            println!(
                "{}: error: {}",
                path.display(),
                e.as_str().unwrap_or_default()
            );
        } else {
            let top: Vec<String> = answer["top"]
                .as_array()
                .into_iter()
                .flatten()
                .take(3)
                .map(|t| {
                    format!(
                        "{} {:.3}",
                        t["class"].as_str().unwrap_or("?"),
                        t["p"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            let flag = if answer["uncertain"] == true {
                "  (uncertain)"
            } else {
                ""
            };
            println!(
                "{}: {}{flag}  [{:.2} ms]",
                path.display(),
                if top.is_empty() {
                    "no classes yet".to_string()
                } else {
                    top.join(", ")
                },
                answer["ms"]["total"].as_f64().unwrap_or(0.0)
            );
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} inputs could not be predicted",
            a.inputs.len()
        );
    }
    Ok(())
}

struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The newest readable state of a directory (no bundle at hand: every state that
/// decodes counts), with warnings for the newer ones skipped.
fn newest(dir: &StateDir) -> Result<Option<(u64, DeviceState)>> {
    let Some(l) = dir.load_newest(|_| Ok(()))? else {
        return Ok(None);
    };
    for (path, why) in &l.skipped {
        log::warn!(
            "state file {} is unusable ({why}); using {}",
            path.display(),
            l.path.display()
        );
    }
    Ok(Some((l.seq, l.state)))
}

fn status(a: StatusArgs) -> Result<()> {
    let dir = StateDir::open(&a.state, false, 5)?;
    let on_disk: Vec<u64> = dir.list()?.into_iter().map(|(s, _)| s).collect();
    let Some((seq, state)) = newest(&dir)? else {
        if a.json {
            println!(
                "{}",
                json!({ "state_dir": a.state, "state": 0, "states_on_disk": [], "pinned": [] })
            );
        } else {
            println!(
                "no state in {} yet: a device serving from it starts from the bundle's head",
                a.state.display()
            );
        }
        return Ok(());
    };
    let status = Status::of(&a.state, seq, &state, on_disk, dir.pinned()?);
    if a.json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        print!("{status}");
    }
    Ok(())
}

fn rollback(a: RollbackArgs) -> Result<()> {
    let mut dir = StateDir::open(&a.state, false, usize::MAX)?;
    dir.lock()?;
    let files = dir.list()?;
    let (from, state) = match a.to {
        Some(n) => {
            let path = files
                .iter()
                .find(|(s, _)| *s == n)
                .map(|(_, p)| p.clone())
                .with_context(|| {
                    format!(
                        "there is no state {n} in {} (states on disk: {:?})",
                        a.state.display(),
                        files.iter().map(|(s, _)| s).collect::<Vec<_>>()
                    )
                })?;
            let state = dir
                .read(n, &path)
                .map_err(|why| anyhow::anyhow!("state {n} is unusable: {why}"))?;
            (n, state)
        }
        None => {
            // The newest usable state, then the usable one before it.
            let mut usable = files
                .iter()
                .rev()
                .filter_map(|(s, p)| dir.read(*s, p).ok().map(|st| (*s, st)));
            let newest = usable
                .next()
                .context("there is no usable state to roll back from")?;
            usable.next().with_context(|| {
                format!(
                    "state {} is the only usable state: there is nothing to roll back to",
                    newest.0
                )
            })?
        }
    };
    if let Some((newest, _)) = files.last() {
        dir.pin(*newest)?;
    }
    let mut state = state;
    state.origin = Origin::Rollback(from);
    let seq = dir.write(&state)?;
    if a.json {
        println!("{}", json!({ "state": seq, "copy_of": from }));
    } else {
        println!(
            "state {seq} is now a copy of state {from}; a restarted `edgetune serve` continues from it (the state before is pinned)"
        );
    }
    Ok(())
}

fn reset(a: StatusArgs) -> Result<()> {
    let mut dir = StateDir::open(&a.state, false, usize::MAX)?;
    dir.lock()?;
    let backbone = newest(&dir)?.map(|(_, s)| s.backbone);
    let Some(backbone) = backbone else {
        if a.json {
            println!("{}", json!({ "state": 0, "reset": false }));
        } else {
            println!(
                "no state in {}: a device serving from it already starts from the bundle's head",
                a.state.display()
            );
        }
        return Ok(());
    };
    let state = DeviceState {
        backbone,
        classes: Vec::new(),
        head: None,
        buffer: Default::default(),
        means: Vec::new(),
        guard: Default::default(),
        replay_rng: 0,
        counters: Default::default(),
        guard_accuracy: None,
        latency_us: Vec::new(),
        origin: Origin::Reset,
        learning: Default::default(),
    };
    if let Some((newest, _)) = dir.list()?.last() {
        dir.pin(*newest)?;
    }
    let seq = dir.write(&state)?;
    if a.json {
        println!("{}", json!({ "state": seq, "reset": true }));
    } else {
        println!(
            "state {seq}: back to the bundle's head; the earlier states stay on disk, the last one pinned (`edgetune rollback --to N`)"
        );
    }
    Ok(())
}
