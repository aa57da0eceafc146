//! The markdown report (ready for the README) from the measured rows.

use std::fmt::Write as _;

use benches::machine::Machine;
use benches::sizes;
use benches::stats::{Summary, human};
use serde_json::{Value, json};

use crate::alloc::Extra;
use crate::backbone::BackboneRow;
use crate::head::HeadRow;

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
pub fn markdown(
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
        "{m}. {} thread{} per engine; tract {}, {}, {}.",
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
