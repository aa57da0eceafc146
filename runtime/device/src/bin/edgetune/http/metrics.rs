//! `/metrics`: the service's counters in the Prometheus text format (version 0.0.4), so
//! that a fleet's devices can be watched with the tools people already run. Rendered on
//! the service thread, from the same numbers `{"status": true}` shows.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use edgetune_device::service::{LATENCY_BUCKETS_MS, Service};

/// What the HTTP server counts itself.
#[derive(Default)]
pub struct HttpCounters {
    /// Requests refused for their token: no token (401), a wrong one (403).
    pub unauthorized: AtomicU64,
    pub forbidden: AtomicU64,
    /// Requests refused as too large (413), as too slow to send their body (408), or
    /// for lack of room (503).
    pub too_large: AtomicU64,
    pub too_slow: AtomicU64,
    pub busy: AtomicU64,
}

/// The metrics text.
pub fn render(service: &Service, http: &HttpCounters) -> String {
    let c = service.engine().counters();
    let mut o = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, f64)]| {
        let _ = writeln!(
            o,
            "# HELP edgetune_{name} {help}\n# TYPE edgetune_{name} {kind}"
        );
        for (labels, v) in lines {
            let _ = writeln!(o, "edgetune_{name}{labels} {v}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    let counters = [
        ("predictions_total", "Predictions made.", c.predictions),
        (
            "labels_total",
            "Labels received (learned, held out or refused).",
            c.labels,
        ),
        (
            "updates_total",
            "Updates of the head that were kept.",
            c.updates,
        ),
        (
            "guard_refusals_total",
            "Updates the regression guard rolled back.",
            c.refused,
        ),
    ];
    for (name, help, v) in counters {
        metric(name, "counter", help, &one(v as f64));
    }
    let names = service.classes();
    let per_class: Vec<(String, f64)> = names
        .iter()
        .zip(&c.labels_per_class)
        .map(|(n, &l)| (format!("{{class=\"{}\"}}", escape(n)), f64::from(l)))
        .collect();
    metric(
        "class_labels_total",
        "counter",
        "Labels received per class.",
        &per_class,
    );
    metric(
        "classes",
        "gauge",
        "Classes of the head.",
        &one(names.len() as f64),
    );
    if let Some(a) = service.engine().guard_accuracy() {
        metric(
            "guard_accuracy",
            "gauge",
            "Accuracy on the guard's held-out samples.",
            &one(f64::from(a)),
        );
    }
    let (right, all) = service.engine().prequential();
    if all > 0 {
        metric(
            "prequential_accuracy",
            "gauge",
            "Share of labels whose prediction before learning them was right.",
            &one(right as f64 / all as f64),
        );
    }
    metric(
        "persist_errors_total",
        "counter",
        "Writes of the state that failed since the start.",
        &one(service.persist_errors() as f64),
    );
    metric(
        "state",
        "gauge",
        "Sequence number of the newest state written.",
        &one(service.seq() as f64),
    );
    let refused = [
        ("401", &http.unauthorized),
        ("403", &http.forbidden),
        ("408", &http.too_slow),
        ("413", &http.too_large),
        ("503", &http.busy),
    ];
    let refused: Vec<(String, f64)> = refused
        .iter()
        .map(|(code, n)| {
            (
                format!("{{code=\"{code}\"}}"),
                n.load(Ordering::Relaxed) as f64,
            )
        })
        .collect();
    metric(
        "http_refused_total",
        "counter",
        "HTTP requests refused, by status code.",
        &refused,
    );
    let h = service.histogram();
    let mut lines = Vec::new();
    let mut cumulative = 0;
    for (bound, n) in LATENCY_BUCKETS_MS.iter().zip(h.buckets) {
        cumulative += n;
        lines.push((
            format!("_bucket{{le=\"{}\"}}", bound / 1e3),
            cumulative as f64,
        ));
    }
    lines.push(("_bucket{le=\"+Inf\"}".into(), h.count as f64));
    lines.push(("_sum".into(), h.sum_s));
    lines.push(("_count".into(), h.count as f64));
    metric(
        "request_seconds",
        "histogram",
        "Time to answer a request (prediction or label).",
        &lines,
    );
    o
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
