//! The backbone rows: one embedding by edgetune (tract) and by ONNX Runtime, timed
//! interleaved, with their agreement and allocations.

use std::path::Path;

use anyhow::{Context, Result};
use benches::models::{self, Prepared};
use benches::stats::{self, Summary};
use edgetune::backbone::{Backbone, OrtOptions};

use crate::alloc::allocations_per_call;
use crate::args::Plan;

/// One model and precision, both engines.
pub struct BackboneRow {
    pub model: &'static str,
    pub precision: &'static str,
    pub tract: Summary,
    pub tract_allocs: f64,
    /// ONNX Runtime's time and allocations, or why it did not run.
    pub ort: std::result::Result<(Summary, f64), String>,
    /// Max |tract − ORT| over the embedding, and their cosine.
    pub agreement: Option<(f32, f32)>,
    /// For int8: the held-out cosine of tract's int8 embedding to f32, from `convert`.
    pub int8_cosine: Option<f32>,
    pub embedding: usize,
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
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

pub fn backbone_rows(
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
                int8_cosine: report.int8.as_ref().and_then(|r| r.cosine_min),
                embedding: n,
            });
        }
    }
    Ok(rows)
}
