//! The terminal text of both reports.

use super::*;

/// `1234567` as `1,234,567`.
pub(super) fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1234567` as `1.23 M`.
pub(super) fn short(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.2} k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} M", n as f64 / 1e6),
        1_000_000_000.. => format!("{:.2} G", n as f64 / 1e9),
    }
}

pub(super) fn shape(s: &Option<Vec<Dim>>) -> String {
    match s {
        None => "[?]".into(),
        Some(dims) => {
            let d: Vec<String> = dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(v) => v.to_string(),
                    Dim::Symbolic(s) => s.clone(),
                })
                .collect();
            format!("[{}]", d.join(", "))
        }
    }
}

/// A UTC date and time from seconds since the Unix epoch.
pub(super) fn utc(secs: u64) -> String {
    crate::utc::utc(secs, true)
}

pub(super) const W: usize = 14;

pub(super) fn row(
    f: &mut fmt::Formatter<'_>,
    label: &str,
    value: impl fmt::Display,
) -> fmt::Result {
    writeln!(f, "{label:<W$} {value}")
}

impl GraphStats {
    fn fmt_rows(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ops: Vec<(&String, &usize)> = self.op_counts.iter().collect();
        // Most frequent first; ties by name.
        ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let ops: Vec<String> = ops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        row(
            f,
            "operators",
            format!("{} nodes: {}", self.nodes, ops.join(", ")),
        )?;
        let by_dtype: Vec<String> = self
            .parameters_by_dtype
            .iter()
            .map(|(k, v)| format!("{k} {}", grouped(*v)))
            .collect();
        row(
            f,
            "parameters",
            format!(
                "{} ({})",
                grouped(self.parameters),
                if by_dtype.is_empty() {
                    "none".to_string()
                } else {
                    by_dtype.join(", ")
                }
            ),
        )?;
        match self.macs {
            Some(m) => {
                let by_op: Vec<String> = self
                    .macs_by_op
                    .iter()
                    .map(|(k, v)| format!("{k} {}", grouped(*v)))
                    .collect();
                let mut s = format!(
                    "{} ({}; by tract operator: {})",
                    short(m),
                    grouped(m),
                    by_op.join(", ")
                );
                if let Some(o) = self.other_fma {
                    s += &format!("; other FMA {}", grouped(o));
                }
                if let Some(n) = &self.macs_note {
                    s += &format!("; {n}");
                }
                row(f, "MACs", s)
            }
            None => row(
                f,
                "MACs",
                format!(
                    "unknown ({})",
                    self.macs_note.as_deref().unwrap_or("no estimate")
                ),
            ),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Onnx(r) => r.fmt(f),
            Report::Bundle(r) => r.fmt(f),
        }
    }
}

impl fmt::Display for OnnxReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        row(
            f,
            "file",
            format!(
                "{} (ONNX model, {} bytes)",
                self.file,
                grouped(self.file_bytes)
            ),
        )?;
        let opsets: Vec<String> = self
            .opsets
            .iter()
            .map(|o| match o.domain.as_str() {
                "" | "ai.onnx" => format!("opset {}", o.version),
                d => format!("{d} {}", o.version),
            })
            .collect();
        let producer = if self.producer.is_empty() {
            "unknown producer"
        } else {
            &self.producer
        };
        row(
            f,
            "producer",
            format!("{producer}, IR {}, {}", self.ir_version, opsets.join(", ")),
        )?;
        for (label, list) in [("inputs", &self.inputs), ("outputs", &self.outputs)] {
            if list.is_empty() {
                row(f, label, "none")?;
            }
            for (i, t) in list.iter().enumerate() {
                let label = if i == 0 { label } else { "" };
                row(
                    f,
                    label,
                    format!("{} {} {}", t.name, t.dtype, shape(&t.shape)),
                )?;
            }
        }
        self.graph.fmt_rows(f)?;
        match (&self.embedding, &self.embedding_note) {
            (Some(e), _) => row(f, "embedding", format!("{} ({} values)", e.tensor, e.size))?,
            (None, Some(n)) => row(f, "embedding", format!("not found: {n}"))?,
            (None, None) => row(f, "embedding", "not found")?,
        }
        match &self.classifier {
            Some(c) => row(
                f,
                "classifier",
                format!(
                    "{} ({}, {} → {} classes)",
                    c.node, c.op, c.inputs, c.classes
                ),
            )?,
            None => row(f, "classifier", "none")?,
        }
        let q = &self.quantization;
        let ops: Vec<String> = q.ops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if ops.is_empty() {
            write!(
                f,
                "{:<W$} {} (no quantization operators)",
                "quantization", q.state
            )
        } else {
            write!(f, "{:<W$} {}: {}", "quantization", q.state, ops.join(", "))
        }
    }
}

impl fmt::Display for BundleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        row(
            f,
            "file",
            format!(
                "{} (edgetune bundle, format {}, {} bytes)",
                self.file,
                self.format_version,
                grouped(self.file_bytes)
            ),
        )?;
        let s = &self.sections;
        row(
            f,
            "sections",
            format!(
                "manifest {} B, backbone {} B{}, head {}",
                grouped(s.manifest),
                grouped(s.backbone),
                match s.backbone_inflated {
                    Some(n) => format!(" (gzipped NNEF, {} B inflated)", grouped(n)),
                    None => String::new(),
                },
                if s.head == 0 {
                    "0 B (none)".to_string()
                } else {
                    format!("{} B", grouped(s.head))
                }
            ),
        )?;
        let layout = serde_json::to_value(m.input.layout)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        row(
            f,
            "input",
            format!(
                "{} {} {:?} {layout}",
                m.input.name, m.input.dtype, m.input.shape
            ),
        )?;
        let p = &m.preprocess;
        let mut pre = format!("scale {}", p.scale);
        if !p.mean.is_empty() {
            pre += &format!(", mean {:?}", p.mean);
        }
        if !p.std.is_empty() {
            pre += &format!(", std {:?}", p.std);
        }
        pre += match p.channel_order {
            edgetune::bundle::ChannelOrder::Rgb => ", RGB",
            edgetune::bundle::ChannelOrder::Bgr => ", BGR",
        };
        match p.resize {
            Some([h, w]) => pre += &format!(", resize to {h}×{w}"),
            None => pre += ", no resize",
        }
        row(f, "preprocess", pre)?;
        if let Some(pooling) = m.pooling {
            row(f, "pooling", format!("{pooling:?}"))?;
        }
        row(
            f,
            "embedding",
            format!("{} ({} values)", m.embedding.tensor, m.embedding.size),
        )?;
        let q = match m.backbone.quantization {
            Quantization::F32 => "f32".to_string(),
            Quantization::Int8 {
                calibration_samples,
                cosine_to_f32,
            } => {
                let mut s = format!("int8, calibrated on {calibration_samples} samples");
                if let Some(c) = cosine_to_f32 {
                    s += &format!(", cosine to f32 {c:.4}");
                }
                s
            }
        };
        let format = match m.backbone.format {
            BackboneFormat::None => "none",
            BackboneFormat::NnefTar => "NNEF tar",
        };
        row(f, "backbone", format!("{format}, {q}"))?;
        if let Some(e) = &m.exemplars {
            row(
                f,
                "exemplars",
                format!(
                    "{} for replay, {} for the guard (embeddings the device starts with)",
                    e.replay.len(),
                    e.guard.len()
                ),
            )?;
        }
        // The row is labeled once; an MLP head's learner starts from its hidden layer's.
        let mut label = "statistics";
        for (st, of, starts) in [
            (&m.embedding_stats, "embeddings", m.hidden_stats.is_none()),
            (&m.hidden_stats, "MLP hidden activations", true),
        ] {
            let Some(st) = st else { continue };
            let kind = match st.covariance_kind {
                edgetune::stats::CovarianceKind::WithinClass => "within-class covariance",
                edgetune::stats::CovarianceKind::Total => "covariance of unlabeled samples",
            };
            let classes = if st.class_counts.is_empty() {
                String::new()
            } else {
                format!(", means of {} classes", st.class_counts.len())
            };
            let starts = if starts {
                " (the device's learner starts from them)"
            } else {
                ""
            };
            row(
                f,
                label,
                format!(
                    "of {} {of}: mean, spread, {kind}{classes}{starts}",
                    st.samples
                ),
            )?;
            label = "";
        }
        match (&self.backbone, &self.backbone_note) {
            (Some(b), _) => b.fmt_rows(f)?,
            (None, Some(n)) if m.backbone.format != BackboneFormat::None => {
                row(f, "", n)?;
            }
            _ => {}
        }
        match &self.head {
            Some(h) => {
                let shape = if h.hidden == 0 {
                    format!("linear {} → {}", h.input, h.classes)
                } else {
                    format!("MLP {} → {} → {}", h.input, h.hidden, h.classes)
                };
                row(
                    f,
                    "head",
                    format!(
                        "{shape} classes (capacity {}), {} parameters, {}, {} steps",
                        h.capacity,
                        grouped(h.parameters as u64),
                        h.optimizer_state
                            .as_deref()
                            .map_or("no optimizer state".to_string(), |o| format!("{o} state")),
                        h.steps
                    ),
                )?;
            }
            None => row(f, "head", "none")?,
        }
        const SHOWN: usize = 12;
        let mut classes = m
            .classes
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if m.classes.len() > SHOWN {
            classes += &format!(", … ({} more)", m.classes.len() - SHOWN);
        }
        row(
            f,
            "classes",
            if m.classes.is_empty() {
                "none".to_string()
            } else {
                format!("{}: {classes}", m.classes.len())
            },
        )?;
        let pv = &m.provenance;
        let mut prov = pv.source.clone();
        if let Some(h) = &pv.source_sha256 {
            prov += &format!(" (sha256 {h})");
        }
        prov += &format!(", by {}, {}", pv.tool, utc(pv.created_unix));
        write!(f, "{:<W$} {prov}", "provenance")?;
        for n in &pv.notes {
            write!(f, "\n{:<W$} {n}", "")?;
        }
        Ok(())
    }
}
