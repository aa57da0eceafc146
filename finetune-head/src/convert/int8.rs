//! The int8 stage: calibration samples (given, or read from a directory), the backbone
//! quantized on all but a held-out fifth of them ([`crate::quantize`]), and the int8
//! embeddings measured against f32 ones on the held-out samples.

use std::borrow::Cow;

use anyhow::{Context, Result, ensure};
use edgetune::backbone::Backbone;
use edgetune::bundle::{InputSpec, Quantization};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use super::graph::{Reference, backbone_graph, write_nnef};
use super::input::Input;
use super::{Int8, Int8Report, Options};
use crate::detect::Classifier;

/// Calibration samples (for int8, and for the embedding statistics), when asked for.
pub(super) fn samples<'a>(opts: &'a Options, input: &Input) -> Result<Option<Cow<'a, [Vec<f32>]>>> {
    Ok(match opts.int8.as_ref().or(opts.stats.as_ref()) {
        None => None,
        Some(Int8::Samples(s)) => Some(Cow::Borrowed(s.as_slice())),
        Some(Int8::Dir { path, count }) => {
            ensure!(
                input.text.is_none(),
                "calibration samples of a text encoder are not supported"
            );
            let spec = InputSpec {
                name: input.name.clone(),
                shape: input.shape.clone(),
                layout: input.layout,
                dtype: "f32".into(),
            };
            let loaded = crate::calib::load_dir(path, &spec, *count)
                .with_context(|| format!("reading calibration samples from {}", path.display()))?;
            Some(Cow::Owned(loaded))
        }
    })
}

/// A quantized backbone, before it is measured.
pub(super) struct Quantized {
    /// The quantized ONNX graph.
    pub proto: ModelProto,
    /// What quantization did.
    pub summary: crate::quantize::Summary,
    /// The held-out samples: raw, and preprocessed.
    held: Vec<(Vec<f32>, Vec<f32>)>,
    /// Bytes of the f32 NNEF backbone.
    f32_backbone_bytes: usize,
}

/// Quantizes the backbone cut at `tensor` on all but the last fifth of `samples`
/// (preprocessed as the device does), and returns its graph (`typed` is the f32 one).
pub(super) fn quantize(
    proto: &ModelProto,
    tensor: &str,
    input: &Input,
    opts: &Options,
    samples: &[Vec<f32>],
    typed: &TypedModel,
    size: usize,
) -> Result<(TypedModel, Quantized)> {
    let shape = &input.shape;
    let n = samples.len();
    ensure!(
        n >= 2,
        "int8 needs at least 2 calibration samples (one is held out to measure), got {n}"
    );
    let inputs = samples
        .iter()
        .enumerate()
        .map(|(k, raw)| {
            ensure!(
                raw.len() == shape.iter().product::<usize>(),
                "calibration sample {k} has {} values, the model takes {shape:?}",
                raw.len()
            );
            ensure!(
                raw.iter().all(|v| v.is_finite()),
                "calibration sample {k} holds NaN or infinity"
            );
            let mut x = vec![0.0f32; raw.len()];
            opts.preprocess.apply(input.layout, shape, raw, &mut x);
            Ok(x)
        })
        .collect::<Result<Vec<_>>>()?;
    let holdout = (n / 5).max(1);
    let (calib, held) = inputs.split_at(n - holdout);
    let (quantized, summary) = crate::quantize::quantize(proto, tensor, shape, calib)
        .context("quantizing the backbone to int8")?;
    let (qtyped, qsize, _) = backbone_graph(&quantized, &input.facts, tensor, false)
        .context("importing the quantized graph")?;
    ensure!(
        qsize == size,
        "the quantized embedding has {qsize} values, not {size}"
    );
    let f32_backbone_bytes = write_nnef(typed)?.len();
    let held: Vec<(Vec<f32>, Vec<f32>)> = samples[n - holdout..]
        .iter()
        .cloned()
        .zip(held.iter().cloned())
        .collect();
    Ok((
        qtyped,
        Quantized {
            proto: quantized,
            summary,
            held,
            f32_backbone_bytes,
        },
    ))
}

/// The manifest's record of a backbone quantized here, or that arrived quantized in QDQ
/// form (`qdq_folded` convolutions).
pub(super) fn quantization(int8: Option<&Quantized>, qdq_folded: usize) -> Quantization {
    match int8 {
        None if qdq_folded > 0 => Quantization::Int8 {
            calibration_samples: 0,
            cosine_to_f32: None,
        },
        None => Quantization::F32,
        Some(q) => Quantization::Int8 {
            calibration_samples: q.summary.calibration_samples,
            cosine_to_f32: None,
        },
    }
}

/// The int8 backbone (as `device` loads it) against the f32 graph (`f32_ref`) on the
/// held-out samples; the mean cosine goes into `quantization` too.
pub(super) fn measure(
    q: Quantized,
    f32_ref: &Reference,
    device: &Backbone,
    classifier: Option<&Classifier>,
    size: usize,
    quantization: &mut Quantization,
) -> Result<Int8Report> {
    let Quantized {
        summary,
        held,
        f32_backbone_bytes,
        ..
    } = q;
    let (mut cos_sum, mut cos_min, mut agree) = (0.0f64, f32::INFINITY, 0usize);
    let mut b = vec![0.0f32; size];
    for (raw, x) in &held {
        let a = f32_ref.embed(x)?;
        device.embed(raw, &mut b)?;
        let c = cosine(&a, &b);
        cos_sum += c as f64;
        cos_min = cos_min.min(c);
        if let Some(cl) = classifier {
            agree += usize::from(cl.top1(&a) == cl.top1(&b));
        }
    }
    let cosine_mean = (cos_sum / held.len() as f64) as f32;
    if let Quantization::Int8 { cosine_to_f32, .. } = quantization {
        *cosine_to_f32 = Some(cosine_mean);
    }
    Ok(Int8Report {
        summary,
        holdout_samples: held.len(),
        cosine_mean,
        cosine_min: cos_min,
        top1_agreement: classifier.map(|_| agree as f32 / held.len() as f32),
        f32_backbone_bytes,
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    (dot / (na * nb)) as f32
}
