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

mod alloc;
mod args;
mod backbone;
mod footprint;
mod head;
mod markdown;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use benches::heads::Kind;
use benches::machine::{self, Machine};
use benches::models;
use benches::torch::{self, Torch};
use clap::Parser;
use edgetune::backbone::Backbone;
use serde_json::{Value, json};

use crate::alloc::learning_allocations;
use crate::args::{Args, Plan};
use crate::backbone::backbone_rows;
use crate::footprint::size_report;
use crate::head::head_rows;
use crate::markdown::markdown;

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
        "machine": &machine,
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
