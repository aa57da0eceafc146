//! edgetune beside ONNX Runtime and PyTorch, in one command:
//!
//!     cargo run --release -p benches --bin compare [-- --quick] [--threads N|all] [--json PATH]
//!
//! - **Backbone**: one embedding (preprocessing included) of the same 224×224 input by
//!   edgetune (tract, the bundle's NNEF plan) and by ONNX Runtime (through edgetune's
//!   `ort` feature, on the ONNX model cut at the same embedding), for the MobileNet- and
//!   ResNet-shaped test models, f32 and int8 (the int8 bundle of `convert --quantize
//!   int8`; ONNX Runtime runs the same quantized ONNX graph). Both engines on one thread
//!   unless `--threads`. The two engines' embeddings of that input are compared (max
//!   absolute difference, cosine), so that the times are of the same work.
//! - **Head**: predict and one learning step of edgetune's head and of the same model in
//!   PyTorch (CPU, `torch.set_num_threads` as `--threads`), same shapes, optimizer,
//!   inputs, labels and starting weights; one step from the same weights is compared.
//!   PyTorch runs in one `python3` process (`--python` for another interpreter) driven
//!   over a pipe; where `import torch` fails it is skipped, and says so.
//! - **Allocations**: heap allocations per call after warm-up, counted by this binary's
//!   global allocator: the head's predict and step, `Online::learn`, the device
//!   `Engine`'s observe + label, and a backbone embedding (for ONNX Runtime only the Rust
//!   side: its C++ allocations do not go through Rust's allocator).
//! - **Sizes**: the device program per target (`release-small`), the Cortex-M firmware's
//!   flash and static RAM from its ELF sections, and its stack peak and accuracy under
//!   `qemu-system-arm` when that is on `PATH`; what is not built is listed with the
//!   command that builds it.
//!
//! Times are medians of samples taken in interleaved rounds (edgetune, other, other,
//! edgetune, …; see `benches::stats::interleave`) with the 10th and 90th percentiles in
//! brackets; a sample of a head workload is the mean of as many consecutive calls as
//! take about 2 ms, and a learning step's sample starts, untimed, from the same weights
//! and a fresh optimizer on both sides (`benches::heads::Runner` says why). Ratios are
//! edgetune's median over the other's: below 1, edgetune is faster. It prints markdown
//! (ready for the README) and writes the same as JSON to `target/compare.json` for
//! tracking over time (`--json PATH` elsewhere). Nothing is asserted.
//!
//! The JSON (`"schema": 1`; times in nanoseconds per call as `{median_ns, p10_ns,
//! p90_ns, samples}`, `null` where a side did not run, with a `…_skipped` reason):
//!
//! - `command`, `quick`, `threads`, `plan` (rounds and samples), `seconds`;
//!   `machine` {cpu, cores, os, date, commit}; `versions` {tract, ort_crate,
//!   onnxruntime, pytorch}; `onnxruntime` and `pytorch`: {status: ok|skipped, version or
//!   reason}.
//! - `backbone[]`: {model, precision, embedding, edgetune, onnxruntime,
//!   onnxruntime_skipped, ratio, max_abs_diff, cosine, int8_holdout_cosine_min,
//!   allocations {edgetune, onnxruntime_rust_side}}.
//! - `head[]`: {id, workload, kind, input, hidden, classes, optimizer, batch, edgetune,
//!   edgetune_calls_per_sample, pytorch, pytorch_calls_per_sample, pytorch_skipped,
//!   ratio, loss_abs_diff, max_abs_diff, allocations}.
//! - `allocations[]`: {id, what, per_call, calls} for `Online::learn` and the device engine.
//! - `sizes`: `device[]` {target, path, bytes, limit_bytes, built, build} and
//!   `firmware` {path, built, build | flash_bytes, ram_bytes, flash_limit_bytes,
//!   ram_limit_bytes, sections {name: bytes}, qemu {run, why | command,
//!   stack_peak_bytes, accuracy_before, accuracy_after {percent, correct, total},
//!   exit_code, timed_out, timeout_seconds, output_tail}}.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use benches::heads::{CASES, Case, Kind, Runner};
use benches::machine::{self, Machine};
use benches::models::{self, Prepared};
use benches::sizes;
use benches::stats::{self, Summary, human};
use benches::torch::{self, Torch};
use clap::Parser;
use edgetune::backbone::{Backbone, OrtOptions};
use edgetune::buffer::SampleBuffer;
use edgetune::classes::ClassMeans;
use edgetune::online::{Online, OnlineConfig};
use edgetune::rng::Rng;
use edgetune::{Config, Dims, Head, Learner};
use edgetune_device::engine::{Engine, EngineConfig};
use serde_json::{Value, json};

/// Counts allocations while armed, from any thread (ONNX Runtime's and tract's pools).
struct Counting;
static ARMED: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations (and reallocations) per call of `f` over `calls` calls.
fn allocations_per_call(calls: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    COUNT.store(0, Ordering::SeqCst);
    ARMED.store(true, Ordering::SeqCst);
    let mut result = Ok(());
    for _ in 0..calls {
        result = f();
        if result.is_err() {
            break;
        }
    }
    ARMED.store(false, Ordering::SeqCst);
    result?;
    Ok(COUNT.load(Ordering::SeqCst) as f64 / calls as f64)
}

fn parse_threads(s: &str) -> std::result::Result<usize, String> {
    if s == "all" {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?}: a number of threads ≥ 1, or `all`")),
    }
}

/// edgetune beside ONNX Runtime (backbone) and PyTorch (head); allocations; sizes.
#[derive(Parser, Debug)]
#[command(name = "compare")]
struct Args {
    /// Fewer rounds and samples: a smoke run of every part in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Threads of both backbone engines and of PyTorch (`all`: every core).
    #[arg(long, default_value = "1", value_parser = parse_threads)]
    threads: usize,
    /// Where to write the JSON report (default: target/compare.json in the workspace).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The Python interpreter that has PyTorch (e.g. a virtual environment's).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Seconds the firmware may run under qemu-system-arm before it is stopped.
    #[arg(long, default_value_t = 120)]
    qemu_timeout: u64,
}

/// How many samples to take.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Interleaved rounds and samples per round of a backbone embedding (one call each).
    backbone: (usize, usize),
    /// Embeddings before timing.
    backbone_warmup: usize,
    /// Rounds and samples per round of a head workload.
    head: (usize, usize),
    /// Warm-up of a head workload and the length of one of its samples, ns.
    head_warm_ns: f64,
    head_sample_ns: f64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                backbone: (2, 2),
                backbone_warmup: 1,
                head: (2, 3),
                head_warm_ns: 20e6,
                head_sample_ns: 0.5e6,
            }
        } else {
            Plan {
                backbone: (15, 4),
                backbone_warmup: 3,
                head: (15, 10),
                head_warm_ns: 300e6,
                head_sample_ns: 2e6,
            }
        }
    }

    fn json(&self) -> Value {
        json!({
            "backbone": { "rounds": self.backbone.0, "samples_per_round": self.backbone.1,
                          "warmup_calls": self.backbone_warmup },
            "head": { "rounds": self.head.0, "samples_per_round": self.head.1,
                      "warmup_ns": self.head_warm_ns, "sample_ns": self.head_sample_ns },
        })
    }
}

/// One model and precision, both engines.
struct BackboneRow {
    model: &'static str,
    precision: &'static str,
    tract: Summary,
    tract_allocs: f64,
    /// ONNX Runtime's time and allocations, or why it did not run.
    ort: std::result::Result<(Summary, f64), String>,
    /// Max |tract − ORT| over the embedding, and their cosine.
    agreement: Option<(f32, f32)>,
    /// For int8: the held-out cosine of tract's int8 embedding to f32, from `convert`.
    int8_cosine: Option<f32>,
    embedding: usize,
}

/// How one call from the same weights agrees between edgetune and PyTorch: |Δ loss|
/// (steps only) and the largest |Δ| of the parameters after it (step) or of the
/// probabilities (predict).
type Agreement = (Option<f32>, f32);

/// One head workload, both sides.
struct HeadRow {
    case: Case,
    edgetune: Summary,
    edgetune_inner: usize,
    allocs: f64,
    /// PyTorch's time and sample length, or why it did not run.
    torch: std::result::Result<(Summary, usize), String>,
    /// |Δ loss| and max |Δ| of the parameters after one step from the same weights
    /// (step), or max |Δ| of the probabilities (predict).
    agreement: Option<Agreement>,
}

/// The report's parts that are not timed.
struct Extra {
    id: &'static str,
    what: String,
    per_call: f64,
    calls: usize,
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum();
    (dot / (na.sqrt() * nb.sqrt()).max(f64::MIN_POSITIVE)) as f32
}

fn backbone_rows(
    plan: &Plan,
    threads: usize,
    ort_ready: &std::result::Result<String, String>,
    dir: &Path,
) -> Result<Vec<BackboneRow>> {
    let input = models::bench_input();
    let mut rows = Vec::new();
    for name in models::NAMES {
        eprintln!("compare: preparing the {name} test model (f32 and int8)…");
        let p = Prepared::new(name, dir)?;
        for (precision, bundle, cut, report) in [
            ("f32", &p.bundle, &p.cut, &p.report),
            ("int8", &p.int8_bundle, &p.int8_cut, &p.int8_report),
        ] {
            eprintln!("compare: backbone {name} {precision}…");
            let tract = Backbone::from_bundle(bundle)
                .and_then(|b| b.with_threads(threads))
                .with_context(|| format!("loading the {name} {precision} bundle"))?;
            let ort = match ort_ready {
                Ok(_) => Backbone::from_onnx_with(
                    cut,
                    &bundle.manifest,
                    &OrtOptions::default().intra_threads(threads),
                )
                .map_err(|e| format!("ONNX Runtime cannot load it: {e}")),
                Err(why) => Err(why.clone()),
            };
            let n = tract.embedding_len();
            let (mut a, mut b) = (vec![0.0f32; n], vec![0.0f32; n]);
            for _ in 0..plan.backbone_warmup {
                tract.embed(&input, &mut a)?;
            }
            let mut ort = ort.and_then(|o| {
                for _ in 0..plan.backbone_warmup {
                    o.embed(&input, &mut b)
                        .map_err(|e| format!("ONNX Runtime cannot run it: {e}"))?;
                }
                Ok(o)
            });
            let agreement = ort
                .as_ref()
                .ok()
                .map(|_| (max_abs_diff(&a, &b), cosine(&a, &b)));
            let (rounds, per) = plan.backbone;
            let mut t = |k: usize| stats::sample(k, 1, || Ok(tract.embed(&input, &mut a)?));
            let (tract_time, ort_time) = match &mut ort {
                Ok(o) => {
                    let mut other = |k: usize| stats::sample(k, 1, || Ok(o.embed(&input, &mut b)?));
                    let s = stats::interleave(rounds, per, &mut [&mut t, &mut other])?;
                    (s[0].clone(), Some(s[1].clone()))
                }
                Err(_) => (
                    stats::interleave(rounds, per, &mut [&mut t])?.remove(0),
                    None,
                ),
            };
            let tract_allocs = allocations_per_call(5, || Ok(tract.embed(&input, &mut a)?))?;
            let ort = match (ort, ort_time) {
                (Ok(o), Some(times)) => {
                    let allocs = allocations_per_call(5, || Ok(o.embed(&input, &mut b)?))?;
                    Ok((Summary::of(&times).context("no samples")?, allocs))
                }
                (Err(why), _) => Err(why),
                (Ok(_), None) => Err("not run".into()),
            };
            rows.push(BackboneRow {
                model: name,
                precision,
                tract: Summary::of(&tract_time).context("no samples")?,
                tract_allocs,
                ort,
                agreement,
                int8_cosine: report.int8.as_ref().map(|r| r.cosine_min),
                embedding: n,
            });
        }
    }
    Ok(rows)
}

/// PyTorch's side of one case: setup, the check from the same weights, calibration.
/// Returns the check's agreement and PyTorch's sample length.
fn torch_setup(torch: &mut Torch, case: Case, plan: &Plan) -> Result<(Agreement, usize)> {
    torch.request(&case.torch_spec())?;
    // The same starting weights on both sides, one call, compared.
    let mut reference = Runner::new(case)?;
    let params = reference.head.params().to_vec();
    let answer = torch.request(&json!({ "op": "check", "name": case.name, "params": params }))?;
    let loss = reference.call()?;
    let agreement = match case.kind {
        Kind::Predict => (
            None,
            max_abs_diff(reference.probs(), &torch::floats(&answer["probs"])?),
        ),
        Kind::Step => {
            let theirs = torch::floats(&answer["params"])?;
            anyhow::ensure!(
                theirs.len() == reference.head.params().len(),
                "PyTorch returned {} parameters, the head has {}",
                theirs.len(),
                reference.head.params().len()
            );
            let their_loss = answer["loss"].as_f64().context("no loss")? as f32;
            (
                Some((loss - their_loss).abs()),
                max_abs_diff(reference.head.params(), &theirs),
            )
        }
    };
    let inner = torch.request(&json!({
        "op": "calibrate", "name": case.name,
        "warm_ns": plan.head_warm_ns, "target_ns": plan.head_sample_ns,
    }))?["inner"]
        .as_u64()
        .context("no inner count")? as usize;
    Ok((agreement, inner))
}

fn head_rows(plan: &Plan, torch: &mut std::result::Result<Torch, String>) -> Result<Vec<HeadRow>> {
    let mut rows = Vec::new();
    for case in CASES {
        eprintln!("compare: head, {}…", case.name);
        let mut runner = Runner::new(case)?;
        let mut torch_state: std::result::Result<(&mut Torch, Agreement, usize), String> =
            match torch {
                Ok(t) => match torch_setup(t, case, plan) {
                    Ok((agreement, inner)) => Ok((t, agreement, inner)),
                    Err(e) => Err(format!("{e:#}")),
                },
                Err(why) => Err(why.clone()),
            };
        let inner = runner.calibrate(plan.head_warm_ns, plan.head_sample_ns)?;
        let (rounds, per) = plan.head;
        let mut ours = |k: usize| runner.sample(k, inner);
        let (edgetune, torch_result) = match &mut torch_state {
            Ok((t, _, _)) => {
                let mut theirs = |k: usize| t.run(case.name, k);
                match stats::interleave(rounds, per, &mut [&mut ours, &mut theirs]) {
                    Ok(s) => (s[0].clone(), Ok(s[1].clone())),
                    Err(e) => {
                        let why = format!("{e:#}");
                        (
                            stats::interleave(rounds, per, &mut [&mut ours])?.remove(0),
                            Err(why),
                        )
                    }
                }
            }
            Err(why) => (
                stats::interleave(rounds, per, &mut [&mut ours])?.remove(0),
                Err(why.clone()),
            ),
        };
        let allocs = allocations_per_call(1000, || runner.call().map(drop))?;
        let (torch, agreement) = match (torch_state, torch_result) {
            (Ok((_, agreement, inner)), Ok(times)) => (
                Ok((Summary::of(&times).context("no samples")?, inner)),
                Some(agreement),
            ),
            (Err(why), _) | (Ok(_), Err(why)) => (Err(why), None),
        };
        rows.push(HeadRow {
            case,
            edgetune: Summary::of(&edgetune).context("no samples")?,
            edgetune_inner: inner,
            allocs,
            torch,
            agreement,
        });
    }
    Ok(rows)
}

const DIM: usize = 1280;

/// A class-`class` embedding-like sample (the serve bench's).
fn sample(rng: &mut Rng, class: usize, x: &mut [f32]) {
    for (i, v) in x.iter_mut().enumerate() {
        *v = rng.uniform(0.0, 0.2) + if i % 10 == class { 1.0 } else { 0.0 };
    }
}

/// Allocations of the learning paths beyond one step, after warm-up (10 classes learned,
/// buffers full).
fn learning_allocations() -> Result<Vec<Extra>> {
    let calls = 200;
    let dims = Dims::linear(DIM, 16);
    let mut head = Head::alloc(dims, 0)?;
    head.init(1);
    let learner = Learner::alloc(dims, Config::DEFAULT)?;
    let buffer = SampleBuffer::<Vec<f32>, 256>::new(
        DIM,
        vec![0.0; SampleBuffer::<(), 256>::storage_len(DIM)],
    )?;
    let means = ClassMeans::new(DIM, 16, vec![0.0; ClassMeans::<()>::storage_len(DIM, 16)])?;
    let mut online = Online::new(head, learner, buffer, means, OnlineConfig::DEFAULT)?;
    let mut rng = Rng::new(2);
    let mut x = vec![0.0; DIM];
    for k in 0..400 {
        let c = k % 10;
        sample(&mut rng, c, &mut x);
        online.learn(&x, c.min(online.head().classes()))?;
    }
    let mut k = 0;
    let online_allocs = allocations_per_call(calls, || {
        k += 1;
        sample(&mut rng, k % 10, &mut x);
        online.learn(&x, k % 10)?;
        Ok(())
    })?;

    let mut head = Head::alloc(dims, 0)?;
    head.init(1);
    let mut engine = Engine::new(head, EngineConfig::DEFAULT)?;
    for k in 0..400 {
        let c = k % 10;
        sample(&mut rng, c, &mut x);
        let s = engine.observe(&x)?.sample;
        engine.label(Some(s), c.min(engine.classes()))?;
    }
    let mut k = 0;
    let engine_allocs = allocations_per_call(calls, || {
        k += 1;
        sample(&mut rng, k % 10, &mut x);
        let s = engine.observe(&x)?.sample;
        engine.label(Some(s), k % 10)?;
        Ok(())
    })?;
    let d = OnlineConfig::DEFAULT;
    let e = EngineConfig::DEFAULT.online;
    Ok(vec![
        Extra {
            id: "online-learn",
            what: format!(
                "`Online::learn` of one label (linear 1280→10, room for 16; {} Adam steps over the sample and {} replayed; replay buffer of 256 full)",
                d.steps, d.replay
            ),
            per_call: online_allocs,
            calls,
        },
        Extra {
            id: "engine-observe-label",
            what: format!(
                "device `Engine::observe` + `label` (the same head; {} Adam steps over the sample and {} replayed; regression guard)",
                e.steps, e.replay
            ),
            per_call: engine_allocs,
            calls,
        },
    ])
}

/// Sizes of the device program and the firmware, and the firmware's run under QEMU.
fn size_report(workspace: &Path, qemu_timeout: Duration) -> Value {
    let devices: Vec<Value> = sizes::devices(workspace)
        .into_iter()
        .map(|d| {
            json!({
                "target": d.target,
                "path": d.path,
                "bytes": d.bytes,
                "limit_bytes": sizes::DEVICE_LIMIT,
                "built": d.bytes.is_some(),
                "build": d.build,
            })
        })
        .collect();
    let path = sizes::firmware_path(workspace);
    let firmware = if !path.exists() {
        json!({ "path": path, "built": false, "build": sizes::FIRMWARE_BUILD })
    } else {
        match sizes::firmware(&path) {
            Err(e) => json!({ "path": path, "built": true, "error": format!("{e:#}") }),
            Ok(f) => {
                let qemu = if !sizes::on_path("qemu-system-arm") {
                    json!({ "run": false, "why": "qemu-system-arm is not on PATH" })
                } else {
                    eprintln!("compare: running the firmware under qemu-system-arm…");
                    match sizes::run_qemu(&path, qemu_timeout) {
                        Err(e) => json!({ "run": false, "why": format!("{e:#}") }),
                        Ok(r) => json!({
                            "run": true,
                            "command": format!("qemu-system-arm {}", sizes::qemu_args(&path).join(" ")),
                            "stack_peak_bytes": r.stack_peak,
                            "accuracy_before": r.accuracy_before.map(accuracy_json),
                            "accuracy_after": r.accuracy_after.map(accuracy_json),
                            "timeout_seconds": qemu_timeout.as_secs(),
                            "exit_code": r.exit_code,
                            "timed_out": r.timed_out,
                            "output_tail": r.tail,
                        }),
                    }
                };
                json!({
                    "path": path,
                    "built": true,
                    "flash_bytes": f.flash,
                    "ram_bytes": f.ram,
                    "flash_limit_bytes": sizes::FLASH_LIMIT,
                    "ram_limit_bytes": sizes::RAM_LIMIT,
                    "sections": f.sections.iter().map(|(n, s)| (n.clone(), json!(s))).collect::<serde_json::Map<_, _>>(),
                    "qemu": qemu,
                })
            }
        }
    };
    json!({ "device": devices, "firmware": firmware })
}

fn accuracy_json((percent, correct, total): (f64, u64, u64)) -> Value {
    json!({ "percent": percent, "correct": correct, "total": total })
}

/// `median unit [p10–p90]`, the percentiles in the median's unit.
fn range(s: &Summary) -> String {
    let median = human(s.median);
    let unit = median.rsplit(' ').next().unwrap_or("");
    let scale = match unit {
        "µs" => 1e3,
        "ms" => 1e6,
        _ => 1e9,
    };
    let digits = |v: f64| {
        if v >= 100.0 {
            0
        } else if v >= 10.0 {
            1
        } else {
            2
        }
    };
    let (lo, hi) = (s.p10 / scale, s.p90 / scale);
    format!(
        "{median} [{lo:.a$}–{hi:.b$}]",
        a = digits(lo),
        b = digits(hi)
    )
}

fn within(bytes: u64, limit: u64) -> &'static str {
    if bytes <= limit { "met" } else { "not met" }
}

fn pretty_model(name: &str) -> &str {
    match name {
        "mobilenet" => "MobileNet-style",
        "resnet" => "ResNet-style",
        other => other,
    }
}

#[allow(clippy::too_many_arguments)]
fn markdown(
    command: &str,
    m: &Machine,
    threads: usize,
    ort: &std::result::Result<String, String>,
    torch: &std::result::Result<String, String>,
    backbone: &[BackboneRow],
    head: &[HeadRow],
    extra: &[Extra],
    sizes: &Value,
) -> String {
    let mut s = String::new();
    let ort_name = match ort {
        Ok(v) => format!("ONNX Runtime {v} (ort {})", m.ort_crate),
        Err(_) => "ONNX Runtime not loaded".into(),
    };
    let torch_name = match torch {
        Ok(v) => format!("PyTorch {v} (CPU)"),
        Err(_) => "PyTorch skipped".into(),
    };
    let _ = writeln!(s, "`{command}`\n");
    let _ = writeln!(
        s,
        "{}, {} logical cores, {}; {}, commit {}. {} thread{} per engine; tract {}, {}, {}.",
        m.cpu,
        m.cores,
        m.os,
        m.date,
        m.commit,
        threads,
        if threads == 1 { "" } else { "s" },
        m.tract,
        ort_name,
        torch_name
    );
    let _ = writeln!(
        s,
        "Medians of interleaved samples, [10th–90th percentile]; ratio = edgetune's median / the other's (below 1: edgetune is faster).\n"
    );

    let _ = writeln!(
        s,
        "**Backbone**: one embedding of a 224×224 RGB image, ImageNet preprocessing included\n"
    );
    let _ = writeln!(
        s,
        "| model | edgetune (tract) | ONNX Runtime | edgetune / ORT | max abs diff, cosine |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- |");
    for r in backbone {
        let model = format!("{} {}", pretty_model(r.model), r.precision);
        let (ort_cell, ratio) = match &r.ort {
            Ok((o, _)) => (range(o), format!("{:.2}×", r.tract.median / o.median)),
            Err(_) => ("skipped".into(), "–".into()),
        };
        let agree = r
            .agreement
            .map_or("–".into(), |(d, c)| format!("{d:.1e}, {c:.6}"));
        let _ = writeln!(
            s,
            "| {model} | {} | {ort_cell} | {ratio} | {agree} |",
            range(&r.tract)
        );
    }
    match ort {
        Err(why) => {
            let _ = writeln!(s, "\nONNX Runtime skipped: {why}");
        }
        Ok(_) => {
            let skipped: Vec<String> = backbone
                .iter()
                .filter_map(|r| {
                    let e = r.ort.as_ref().err()?;
                    Some(format!("{} {}: {e}", pretty_model(r.model), r.precision))
                })
                .collect();
            if !skipped.is_empty() {
                let _ = writeln!(s, "\nONNX Runtime skipped: {}", skipped.join("; "));
            }
        }
    }
    let cosines: Vec<String> = backbone
        .iter()
        .filter_map(|r| {
            Some(format!(
                "{} ≥ {:.4}",
                pretty_model(r.model),
                floor4(r.int8_cosine?)
            ))
        })
        .collect();
    if let Some(r) = backbone.first() {
        let _ = writeln!(
            s,
            "\nEmbeddings of {} values. int8 is the bundle of `convert --quantize int8` (cosine of its embeddings to f32 on held-out images: {}); ONNX Runtime runs the same quantized graph with its default optimizations. On x86 int8 is reported, not targeted.",
            r.embedding,
            cosines.join(", ")
        );
    }

    let _ = writeln!(s, "\n**Head**: one call, edgetune beside PyTorch\n");
    let _ = writeln!(
        s,
        "| workload | edgetune | PyTorch | edgetune / PyTorch | same result (max abs diff) |"
    );
    let _ = writeln!(s, "| --- | --- | --- | --- | --- |");
    for r in head {
        let (torch_cell, ratio) = match &r.torch {
            Ok((t, _)) => (range(t), format!("{:.3}×", r.edgetune.median / t.median)),
            Err(_) => ("skipped".into(), "–".into()),
        };
        let agree = match r.agreement {
            Some((Some(loss), p)) => format!("loss {loss:.1e}, weights {p:.1e}"),
            Some((None, p)) => format!("probabilities {p:.1e}"),
            None => "–".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {torch_cell} | {ratio} | {agree} |",
            r.case.name,
            range(&r.edgetune)
        );
    }
    match torch {
        Err(why) => {
            let _ = writeln!(s, "\n{why}");
        }
        Ok(_) => {
            let errors: Vec<String> = head
                .iter()
                .filter_map(|r| {
                    r.torch
                        .as_ref()
                        .err()
                        .map(|e| format!("{}: {e}", r.case.name))
                })
                .collect();
            if !errors.is_empty() {
                let _ = writeln!(s, "\nPyTorch failed: {}", errors.join("; "));
            }
        }
    }
    let _ = writeln!(
        s,
        "\nlr 1e-3, PyTorch's defaults otherwise (Adam β 0.9/0.999, ε 1e-8; SGD momentum 0.9); cross-entropy, mean over the batch. PyTorch's predict is the forward pass under `inference_mode`, softmax, top-3 and entropy; its step is `zero_grad`, forward, loss, `backward`, `step`, `loss.item()`. Each timed sample of a learning step starts, untimed, from the same weights and a fresh optimizer on both sides (an MLP's Adam moments decay into slow subnormal floats after some 750 steps). The last column is one call from the same weights and input on both sides."
    );

    let _ = writeln!(s, "\n**Heap allocations per call**, after warm-up\n");
    let _ = writeln!(s, "| what | allocations |");
    let _ = writeln!(s, "| --- | --- |");
    for r in head {
        let _ = writeln!(s, "| head: {} | {} |", r.case.name, count(r.allocs));
    }
    for e in extra {
        let _ = writeln!(s, "| {} | {} |", e.what, count(e.per_call));
    }
    for r in backbone {
        let model = format!("{} {}", pretty_model(r.model), r.precision);
        let _ = writeln!(
            s,
            "| backbone embedding, {model}, tract | {} |",
            count(r.tract_allocs)
        );
        if let Ok((_, a)) = &r.ort {
            let _ = writeln!(
                s,
                "| backbone embedding, {model}, ONNX Runtime (Rust side only) | {} |",
                count(*a)
            );
        }
    }

    let _ = writeln!(s, "\n**Sizes**\n");
    let _ = writeln!(s, "| artifact | size | target | |");
    let _ = writeln!(s, "| --- | --- | --- | --- |");
    for d in sizes["device"].as_array().into_iter().flatten() {
        let target = d["target"].as_str().unwrap_or("?");
        let name = if target == "host" {
            format!(
                "device program `edgetune`, host ({})",
                std::env::consts::ARCH
            )
        } else {
            format!("device program `edgetune`, {target}")
        };
        let limit = format!("≤ {}", sizes::human(sizes::DEVICE_LIMIT));
        match d["bytes"].as_u64() {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "| {name} | {} | {limit} | {} |",
                    sizes::human(b),
                    within(b, sizes::DEVICE_LIMIT)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "| {name} | not built: `{}` | {limit} | |",
                    d["build"].as_str().unwrap_or("?")
                );
            }
        }
    }
    let f = &sizes["firmware"];
    if f["built"] != json!(true) {
        let _ = writeln!(
            s,
            "| Cortex-M4 firmware | not built: `{}` | ≤ {} flash, ≤ {} RAM | |",
            sizes::FIRMWARE_BUILD,
            sizes::human(sizes::FLASH_LIMIT),
            sizes::human(sizes::RAM_LIMIT)
        );
    } else if let Some(e) = f["error"].as_str() {
        let _ = writeln!(s, "| Cortex-M4 firmware | unreadable: {e} | | |");
    } else {
        let (flash, ram) = (
            f["flash_bytes"].as_u64().unwrap_or(0),
            f["ram_bytes"].as_u64().unwrap_or(0),
        );
        let _ = writeln!(
            s,
            "| Cortex-M4 firmware, flash (.vector_table + .text + .rodata + .data) | {} | ≤ {} | {} |",
            sizes::human(flash),
            sizes::human(sizes::FLASH_LIMIT),
            within(flash, sizes::FLASH_LIMIT)
        );
        let _ = writeln!(
            s,
            "| Cortex-M4 firmware, static RAM (.data + .bss + .uninit) | {} | ≤ {} | {} |",
            sizes::human(ram),
            sizes::human(sizes::RAM_LIMIT),
            within(ram, sizes::RAM_LIMIT)
        );
        let q = &f["qemu"];
        if q["run"] == json!(true) {
            let stack = q["stack_peak_bytes"]
                .as_u64()
                .map_or("not printed".into(), |b| format!("{b} bytes"));
            let _ = writeln!(
                s,
                "| firmware stack peak, under QEMU (mps2-an386) | {stack} | | |"
            );
            let pct = |a: &Value| {
                a.as_object().map(|a| {
                    format!(
                        "{:.1}% ({}/{})",
                        a["percent"].as_f64().unwrap_or(0.0),
                        a["correct"],
                        a["total"]
                    )
                })
            };
            let acc = match (pct(&q["accuracy_before"]), pct(&q["accuracy_after"])) {
                (Some(b), Some(a)) => format!("{b} before, {a} after"),
                (None, Some(a)) => format!("{a} after"),
                (_, None) => "`accuracy after` not printed".into(),
            };
            let status = if q["timed_out"] == json!(true) {
                format!("stopped at the {} s timeout", q["timeout_seconds"])
            } else {
                format!("exit code {}", q["exit_code"])
            };
            let _ = writeln!(
                s,
                "| firmware accuracy, learning under QEMU | {acc} | | {status} |"
            );
        } else {
            let _ = writeln!(
                s,
                "| firmware under QEMU | not run: {} | | |",
                q["why"].as_str().unwrap_or("?")
            );
        }
    }
    s
}

/// Rounded down to 4 decimals: a lower bound that reads as one.
fn floor4(v: f32) -> f32 {
    (v * 1e4).floor() / 1e4
}

fn count(per_call: f64) -> String {
    if per_call == per_call.round() {
        format!("{per_call:.0}")
    } else {
        format!("{per_call:.2}")
    }
}

fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let workspace = models::workspace();
    let plan = Plan::new(args.quick);
    let machine = Machine::detect(&workspace);
    let mut command = "cargo run --release -p benches --bin compare".to_string();
    let given: Vec<String> = std::env::args().skip(1).collect();
    if !given.is_empty() {
        command = format!("{command} -- {}", given.join(" "));
    }

    // ONNX Runtime, loaded once for the process.
    let ort: std::result::Result<String, String> = models::ort_library()
        .map_err(|e| format!("{e:#}"))
        .and_then(|lib| {
            Backbone::ort_init(&lib).map_err(|e| format!("{e}"))?;
            Ok(machine::onnxruntime_version(&lib).unwrap_or_else(|| {
                // The build string, when the version function cannot be reached.
                std::panic::catch_unwind(ort::info)
                    .unwrap_or("unknown version")
                    .to_string()
            }))
        });
    if let Err(why) = &ort {
        eprintln!("compare: ONNX Runtime not available, its rows are skipped: {why}");
    }

    // PyTorch, one process for the whole run.
    let started_torch = Torch::start(&args.python, args.threads).unwrap_or_else(|e| {
        Err(torch::Skipped(format!(
            "PyTorch is installed but its side could not start: {e:#}"
        )))
    });
    let mut torch: std::result::Result<Torch, String> = match started_torch {
        Ok(t) => {
            eprintln!("compare: PyTorch {} on {} thread(s)", t.version, t.threads);
            Ok(t)
        }
        Err(torch::Skipped(why)) => {
            eprintln!("compare: {why}");
            Err(why)
        }
    };

    let dir = std::env::temp_dir().join(format!("edgetune-compare-{}", std::process::id()));
    let backbone = backbone_rows(&plan, args.threads, &ort, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    let backbone = backbone?;
    let head = head_rows(&plan, &mut torch)?;
    let torch_version = torch
        .as_ref()
        .map(|t| t.version.clone())
        .map_err(Clone::clone);
    drop(torch);
    eprintln!("compare: allocations of the learning paths…");
    let extra = learning_allocations()?;
    let sizes = size_report(&workspace, Duration::from_secs(args.qemu_timeout));

    let md = markdown(
        &command,
        &machine,
        args.threads,
        &ort,
        &torch_version,
        &backbone,
        &head,
        &extra,
        &sizes,
    );
    print!("{md}");

    let report = json!({
        "schema": 1,
        "command": command,
        "quick": args.quick,
        "threads": args.threads,
        "plan": plan.json(),
        "seconds": started.elapsed().as_secs_f64(),
        "machine": {
            "cpu": machine.cpu, "cores": machine.cores, "os": machine.os,
            "date": machine.date, "commit": machine.commit,
        },
        "versions": {
            "tract": machine.tract,
            "ort_crate": machine.ort_crate,
            "onnxruntime": ort.as_ref().ok(),
            "pytorch": torch_version.as_ref().ok(),
        },
        "onnxruntime": match &ort { Ok(v) => json!({ "status": "ok", "version": v }),
                                    Err(w) => json!({ "status": "skipped", "reason": w }) },
        "pytorch": match &torch_version { Ok(v) => json!({ "status": "ok", "version": v }),
                                          Err(w) => json!({ "status": "skipped", "reason": w }) },
        "backbone": backbone.iter().map(|r| json!({
            "model": r.model,
            "precision": r.precision,
            "embedding": r.embedding,
            "edgetune": r.tract.json(),
            "onnxruntime": match &r.ort { Ok((s, _)) => s.json(), Err(_) => Value::Null },
            "onnxruntime_skipped": r.ort.as_ref().err(),
            "ratio": r.ort.as_ref().ok().map(|(o, _)| r.tract.median / o.median),
            "max_abs_diff": r.agreement.map(|a| a.0),
            "cosine": r.agreement.map(|a| a.1),
            "int8_holdout_cosine_min": r.int8_cosine,
            "allocations": { "edgetune": r.tract_allocs,
                             "onnxruntime_rust_side": r.ort.as_ref().ok().map(|(_, a)| *a) },
        })).collect::<Vec<_>>(),
        "head": head.iter().map(|r| json!({
            "id": r.case.id,
            "workload": r.case.name,
            "kind": match r.case.kind { Kind::Predict => "predict", Kind::Step => "step" },
            "input": r.case.dims.input,
            "hidden": r.case.dims.hidden,
            "classes": r.case.dims.capacity,
            "optimizer": r.case.optimizer,
            "batch": r.case.batch,
            "edgetune": r.edgetune.json(),
            "edgetune_calls_per_sample": r.edgetune_inner,
            "pytorch": match &r.torch { Ok((s, _)) => s.json(), Err(_) => Value::Null },
            "pytorch_calls_per_sample": r.torch.as_ref().ok().map(|(_, k)| *k),
            "pytorch_skipped": r.torch.as_ref().err(),
            "ratio": r.torch.as_ref().ok().map(|(t, _)| r.edgetune.median / t.median),
            "loss_abs_diff": r.agreement.and_then(|a| a.0),
            "max_abs_diff": r.agreement.map(|a| a.1),
            "allocations": r.allocs,
        })).collect::<Vec<_>>(),
        "allocations": extra.iter().map(|e| json!({
            "id": e.id, "what": e.what, "per_call": e.per_call, "calls": e.calls,
        })).collect::<Vec<_>>(),
        "sizes": sizes,
    });
    let path = args
        .json
        .unwrap_or_else(|| workspace.join("target/compare.json"));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "compare: JSON in {} ({:.0} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).map_err(|e| anyhow!(e)) {
        eprintln!("compare: error: {e:#}");
        std::process::exit(1);
    }
}
