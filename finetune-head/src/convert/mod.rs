//! `finetune-head convert`: a pre-trained ONNX model becomes a bundle a device runs.
//!
//! The embedding is found (or named), the graph is cut there, typed and decluttered
//! with tract, and written as NNEF, which the device loads with tract-nnef alone. The
//! model's own classifier can seed the head (`keep_head`). Every conversion checks
//! itself: the written backbone is loaded the way a device loads it, and its embedding
//! of a probe input is compared with tract's run of the original ONNX graph.
//!
//! The stages, one file each: `input.rs` (the model's input: a tensor, or a text
//! encoder's tokens), `graph.rs` (the cut, typed graph and its NNEF; the tract
//! reference), `int8.rs` (calibration, quantization and its measurement),
//! `manifest.rs` (the manifest and a kept head), `tokenizer.rs` (a text
//! encoder's tokenizer, checked against the model), `check.rs` (the self-check against
//! ONNX, the embedding statistics) and `report.rs` (what the CLI prints).

use std::path::Path;

use anyhow::{Context, Result, bail};
use edgetune::backbone::Backbone;
use edgetune::bundle::{Bundle, Layout, Pooling, Preprocess};
use prost::Message;
use tract_onnx::pb::ModelProto;

use crate::detect::{Embedding, find_embedding};

mod check;
mod graph;
mod input;
mod int8;
mod manifest;
mod report;
mod tokenizer;

pub(crate) use graph::plan_at;
pub use graph::{Reference, reference_embedding};
pub use report::{Int8Report, Report};

/// What a conversion needs beyond the model.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Tensor or node to cut at, instead of the classifier's input.
    pub embedding: Option<String>,
    /// Input shape, batch included; default: the model's, with a symbolic batch as 1.
    pub input_shape: Option<Vec<usize>>,
    /// Input layout; default NCHW for rank 4, features for rank 2.
    pub layout: Option<Layout>,
    /// Preprocessing recorded in the manifest and applied on the device.
    pub preprocess: Preprocess,
    /// Keep the model's classifier as the head's starting point.
    pub keep_head: bool,
    /// Class capacity of that head (default: the classifier's classes + 8).
    pub capacity: Option<usize>,
    /// Class names (default "class0", "class1", …).
    pub class_names: Option<Vec<String>>,
    /// Quantize the backbone to int8, calibrated on these samples.
    pub int8: Option<Int8>,
    /// With `int8`: keep the first convolution, the one that reads the image, f32
    /// (`--first-layer-f32`; by default it is int8 too: [`crate::quantize`]'s docs have
    /// what each costs).
    pub int8_first_layer_f32: bool,
    /// Samples for the embedding statistics the device's learner starts from
    /// ([`edgetune::stats`]) when not quantizing (`--calib` alone); an int8 conversion
    /// takes them from its calibration samples.
    pub stats: Option<Int8>,
    /// For a text encoder whose embedding is a sequence output `[1, seq, hidden]`: how
    /// it becomes one vector (default: the mean over the attention mask).
    pub pooling: Option<Pooling>,
    /// For a text encoder: the token id that pads a sequence (default: the tokenizer's
    /// `[PAD]`, else 0, BERT's).
    pub pad_id: i64,
    /// For a text encoder: a Hugging Face `tokenizer.json` the bundle carries, so the
    /// device takes text ([`edgetune::text`]).
    pub tokenizer: Option<std::path::PathBuf>,
}

/// Post-training int8 quantization ([`crate::quantize`]), calibrated on samples. The
/// last fifth of the samples (at least one) is held out: it does not calibrate, it
/// measures how far int8 embeddings are from f32.
#[derive(Debug, Clone)]
pub enum Int8 {
    /// Raw input samples (as the device passes them: e.g. pixels 0–255, RGB), each with
    /// the input's number of values.
    Samples(Vec<Vec<f32>>),
    /// Images or .npy tensors in a directory ([`crate::calib::load_dir`]); for a text
    /// encoder, sentences in a file or folder ([`crate::calib::load_text`]). At most
    /// `count` of them.
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// Use at most this many samples.
        count: Option<usize>,
    },
}

/// Converts the ONNX model at `path`.
pub fn convert(path: &Path, opts: &Options) -> Result<(Bundle, Report)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut proto = ModelProto::decode(bytes.as_slice()).with_context(|| {
        format!(
            "{} is not an ONNX model (protobuf decoding failed)",
            path.display()
        )
    })?;
    // A model quantized in QDQ form: back to f32, its quantizers' ranges kept to quantize
    // it again on edgetune's integer path (below), with no calibration samples needed.
    let qdq = crate::quantize::strip_qdq(&mut proto)?;
    let Embedding { tensor, classifier } = find_embedding(&proto, opts.embedding.as_deref())?;
    let input = input::Input::of(&proto, opts)?;
    let tokenizer = match &opts.tokenizer {
        Some(path) => Some(tokenizer::tokenizer(path, &proto, &input, opts.pad_id)?),
        None => None,
    };

    let (typed, size, sequence) =
        graph::backbone_graph(&proto, &input.facts, &tensor, input.text.is_some())?;
    let pooling = match (sequence, opts.pooling) {
        (true, p) => Some(p.unwrap_or(Pooling::MeanOverMask)),
        (false, None) => None,
        (false, Some(_)) => bail!(
            "--pooling: the embedding {tensor:?} is already one vector, not a sequence output"
        ),
    };

    // Calibration samples (for int8, and for the embedding statistics).
    let samples = int8::samples(opts, &input, tokenizer.as_ref().map(|(spec, _)| spec))?;
    let pad_id = tokenizer.as_ref().map_or(opts.pad_id, |(_, pad)| *pad);
    // int8: calibrate on the first samples, quantize, and keep the rest to measure.
    // A QDQ model with --quantize int8 is calibrated again, on the samples given.
    let qdq_ranges = qdq.as_ref().filter(|_| opts.int8.is_none());
    let (typed, backbone, int8) = match (&opts.int8, &samples, qdq_ranges) {
        (Some(_), Some(_), _) | (None, _, Some(_)) => {
            let (qtyped, q) = int8::quantize(
                &proto,
                &tensor,
                &input,
                opts,
                samples.as_ref(),
                qdq_ranges,
                pad_id,
                &typed,
                size,
            )?;
            let nnef = graph::write_nnef(&qtyped)?;
            (qtyped, nnef, Some(q))
        }
        _ => {
            let nnef = graph::write_nnef(&typed)?;
            (typed, nnef, None)
        }
    };

    let (classes, head) = manifest::keep_head(opts, classifier.as_ref(), &tensor, size)?;
    let cut = manifest::Cut {
        tensor: tensor.clone(),
        size,
        pooling,
        quantization: int8::quantization(int8.as_ref()),
    };
    let mut bundle = Bundle {
        manifest: manifest::manifest(path, &bytes, opts, &input, cut, classes),
        backbone,
        head,
    };
    if let (Some(text), Some((spec, pad_id))) = (bundle.manifest.text.as_mut(), tokenizer) {
        text.pad_id = pad_id;
        text.tokenizer = Some(spec);
    }
    bundle
        .validate()
        .context("the converted bundle does not validate")?;

    // Self-check: the device's loader against the ONNX graph it was made from (the
    // quantized one for int8), on a probe input.
    let device =
        Backbone::from_bundle(&bundle).context("loading the written backbone as a device would")?;
    let source = int8.as_ref().map_or(&proto, |q| &q.proto);
    let parity_max_abs = check::parity(&device, &bundle, &input, source)?;

    // The embedding statistics of the calibration samples, through the device's loader.
    if let Some(samples) = samples.filter(|s| s.len() >= 2) {
        bundle.manifest.embedding_stats = check::embedding_stats(&device, &samples, size)?;
    }

    // int8 against f32 on the held-out samples, through the device's loader.
    let int8 = match int8 {
        None => None,
        Some(q) => {
            let f32_graph = int8::F32Graph {
                proto: &proto,
                input: &input,
                tensor: &tensor,
                pooling,
                pad_id: bundle.manifest.text.as_ref().map_or(0, |t| t.pad_id),
            };
            Some(int8::measure(
                q,
                &f32_graph,
                &device,
                classifier.as_ref(),
                size,
                &mut bundle.manifest.backbone.quantization,
            )?)
        }
    };
    let report = Report {
        embedding: tensor,
        embedding_size: size,
        classifier: classifier.map(|c| c.node),
        input_shape: input.shape,
        nodes: typed.nodes().len(),
        backbone_bytes: bundle.backbone.len(),
        parity_max_abs,
        int8,
        qdq,
    };
    Ok((bundle, report))
}
