//! The int8 stage: calibration samples (given, read from a directory, or a text
//! encoder's sentences), the backbone quantized on all but a held-out fifth of them
//! ([`crate::quantize`]), and the int8 embeddings measured against f32 ones on the
//! held-out samples.

use std::borrow::Cow;

use anyhow::{Context, Result, bail, ensure};
use edgetune::backbone::Backbone;
use edgetune::bundle::{InputSpec, Pooling, Quantization, TokenizerSpec};
use edgetune::text::TextTokenizer;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use super::graph::{Reference, TextReference, backbone_graph, write_nnef};
use super::input::Input;
use super::{Int8, Int8Report, Options};
use crate::detect::Classifier;
use crate::quantize::{Qdq, Ranges};

/// Calibration samples: raw input tensors, or a text encoder's sentences as token ids.
pub(super) enum Samples<'a> {
    /// Raw inputs (as the device passes them), each the input's number of values.
    Tensors(Cow<'a, [Vec<f32>]>),
    /// Token ids, one sequence per sentence, unpadded.
    Tokens(Vec<Vec<i64>>),
}

impl Samples<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Samples::Tensors(s) => s.len(),
            Samples::Tokens(s) => s.len(),
        }
    }
}

/// Calibration samples (for int8, and for the embedding statistics), when asked for. A
/// text encoder's are sentences, tokenized with its `tokenizer`.
pub(super) fn samples<'a>(
    opts: &'a Options,
    input: &Input,
    tokenizer: Option<&TokenizerSpec>,
) -> Result<Option<Samples<'a>>> {
    Ok(match opts.int8.as_ref().or(opts.stats.as_ref()) {
        None => None,
        Some(Int8::Samples(_)) if input.text.is_some() => {
            bail!("a text encoder calibrates on sentences (a text file), not on tensors")
        }
        Some(Int8::Samples(s)) => Some(Samples::Tensors(Cow::Borrowed(s.as_slice()))),
        Some(Int8::Dir { path, count }) if input.text.is_some() => {
            let Some(spec) = tokenizer else {
                bail!(
                    "a text encoder calibrates on sentences, which need its tokenizer: pass \
                     --tokenizer tokenizer.json"
                );
            };
            let tok = TextTokenizer::from_json(&spec.json, spec.max_length)?;
            let ids = crate::calib::load_text(path, &tok, *count).with_context(|| {
                format!("reading calibration sentences from {}", path.display())
            })?;
            Some(Samples::Tokens(ids))
        }
        Some(Int8::Dir { path, count }) => {
            let spec = InputSpec {
                name: input.name.clone(),
                shape: input.shape.clone(),
                layout: input.layout,
                dtype: "f32".into(),
            };
            let loaded = crate::calib::load_dir(path, &spec, *count)
                .with_context(|| format!("reading calibration samples from {}", path.display()))?;
            Some(Samples::Tensors(Cow::Owned(loaded)))
        }
    })
}

/// Held-out samples, to measure int8 against f32.
enum Held {
    /// Raw, and preprocessed.
    Tensors(Vec<(Vec<f32>, Vec<f32>)>),
    /// Token ids.
    Tokens(Vec<Vec<i64>>),
}

impl Held {
    fn len(&self) -> usize {
        match self {
            Held::Tensors(h) => h.len(),
            Held::Tokens(h) => h.len(),
        }
    }
}

/// A quantized backbone, before it is measured.
pub(super) struct Quantized {
    /// The quantized ONNX graph.
    pub proto: ModelProto,
    /// What quantization did.
    pub summary: crate::quantize::Summary,
    /// The held-out samples.
    held: Held,
    /// Bytes of the f32 NNEF backbone.
    f32_backbone_bytes: usize,
}

/// Quantizes the backbone cut at `tensor` on all but the last fifth of `samples`
/// (preprocessed as the device does; token ids padded with `pad_id`), and returns its
/// graph (`typed` is the f32 one). A model that arrived in QDQ form (`qdq`: its
/// quantizers' ranges) needs no samples: those given are all held out, to measure.
#[allow(clippy::too_many_arguments)]
pub(super) fn quantize(
    proto: &ModelProto,
    tensor: &str,
    input: &Input,
    opts: &Options,
    samples: Option<&Samples>,
    qdq: Option<&Qdq>,
    pad_id: i64,
    typed: &TypedModel,
    size: usize,
) -> Result<(TypedModel, Quantized)> {
    let none = Samples::Tensors(Cow::Borrowed(&[]));
    let samples = samples.unwrap_or(&none);
    let n = samples.len();
    let holdout = if qdq.is_some() {
        n
    } else {
        ensure!(
            n >= 2,
            "int8 needs at least 2 calibration samples (one is held out to measure), got {n}"
        );
        (n / 5).max(1)
    };
    let (inputs, held) = match samples {
        Samples::Tensors(s) => {
            let x = preprocessed(input, opts, s)?;
            let model_inputs = x
                .iter()
                .map(|x| Ok(tvec![Tensor::from_shape(&input.shape, x)?.into_tvalue()]))
                .collect::<Result<Vec<_>>>()?;
            let held = s[n - holdout..]
                .iter()
                .cloned()
                .zip(x[n - holdout..].iter().cloned())
                .collect();
            (model_inputs, Held::Tensors(held))
        }
        Samples::Tokens(ids) => {
            let text = input
                .text
                .as_ref()
                .context("token samples for a tensor input")?;
            let model_inputs = ids
                .iter()
                .map(|i| text.tensors(i, pad_id))
                .collect::<Result<Vec<_>>>()?;
            (model_inputs, Held::Tokens(ids[n - holdout..].to_vec()))
        }
    };
    let ranges = match qdq {
        Some(q) => Ranges::Qdq(q),
        None => Ranges::Calibrate {
            facts: &input.facts,
            inputs: &inputs[..n - holdout],
            first_layer: !opts.int8_first_layer_f32,
        },
    };
    let (quantized, mut summary) = crate::quantize::quantize_with(proto, tensor, ranges)
        .context("quantizing the backbone to int8")?;
    let (mut qtyped, qsize, _) =
        backbone_graph(&quantized, &input.facts, tensor, input.text.is_some())
            .context("importing the quantized graph")?;
    ensure!(
        qsize == size,
        "the quantized embedding has {qsize} values, not {size}"
    );
    // The f32 convolutions' rounded weights, stored in 8 bits where tract kept them as
    // they were (the report counts only those).
    crate::quantize::store_in_i8(&mut qtyped, &mut summary.stored_i8)?;
    // The integer products' scales and biases, rounded to f16 precision, in 16 bits.
    crate::quantize::store_in_f16(&mut qtyped)?;
    let f32_backbone_bytes = write_nnef(typed)?.len();
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

/// Raw tensor samples checked and preprocessed as the device does.
fn preprocessed(input: &Input, opts: &Options, samples: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
    let shape = &input.shape;
    samples
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
        .collect()
}

/// The manifest's record of a backbone quantized here (calibrated, or with a QDQ
/// model's ranges).
pub(super) fn quantization(int8: Option<&Quantized>) -> Quantization {
    match int8 {
        None => Quantization::F32,
        Some(q) => Quantization::Int8 {
            calibration_samples: q.summary.calibration_samples,
            cosine_to_f32: None,
        },
    }
}

/// The f32 graph an int8 backbone is measured against: `proto` cut at `tensor`, for a
/// text encoder pooled as the device pools (`pooling`, `pad_id`).
pub(super) struct F32Graph<'a> {
    pub proto: &'a ModelProto,
    pub input: &'a Input,
    pub tensor: &'a str,
    pub pooling: Option<Pooling>,
    pub pad_id: i64,
}

/// The int8 backbone (as `device` loads it) against the f32 graph on the held-out
/// samples; the mean cosine goes into `quantization` too.
pub(super) fn measure(
    q: Quantized,
    f32_graph: &F32Graph,
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
    let F32Graph {
        proto,
        input,
        tensor,
        pooling,
        pad_id,
    } = *f32_graph;
    let pairs: Vec<(Vec<f32>, Vec<f32>)> = match &held {
        Held::Tensors(h) => {
            let reference = Reference::new(proto, &input.shape, tensor)?;
            h.iter()
                .map(|(raw, x)| {
                    device.embed(raw, &mut b)?;
                    Ok((reference.embed(x)?, b.clone()))
                })
                .collect::<Result<_>>()?
        }
        Held::Tokens(h) => {
            let reference = TextReference::new(proto, input, tensor, pooling, pad_id, size)?;
            h.iter()
                .map(|ids| {
                    device.embed_tokens(ids, &mut b)?;
                    Ok((reference.embed(ids)?, b.clone()))
                })
                .collect::<Result<_>>()?
        }
    };
    for (a, b) in &pairs {
        let c = cosine(a, b);
        cos_sum += c as f64;
        cos_min = cos_min.min(c);
        if let Some(cl) = classifier {
            agree += usize::from(cl.top1(a) == cl.top1(b));
        }
    }
    // None without held-out samples (a QDQ model converted without --calib).
    let measured = !pairs.is_empty();
    let cosine_mean = measured.then_some((cos_sum / pairs.len() as f64) as f32);
    if let Quantization::Int8 { cosine_to_f32, .. } = quantization {
        *cosine_to_f32 = cosine_mean;
    }
    Ok(Int8Report {
        summary,
        holdout_samples: held.len(),
        cosine_mean,
        cosine_min: measured.then_some(cos_min),
        top1_agreement: classifier
            .filter(|_| measured)
            .map(|_| agree as f32 / pairs.len() as f32),
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
