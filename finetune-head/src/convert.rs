//! `finetune-head convert`: a pre-trained ONNX model becomes a bundle a device runs.
//!
//! The embedding is found (or named), the graph is cut there, typed and decluttered
//! with tract, and written as NNEF, which the device loads with tract-nnef alone. The
//! model's own classifier can seed the head (`keep_head`). Every conversion checks
//! itself: the written backbone is loaded the way a device loads it, and its embedding
//! of a probe input is compared with tract's run of the original ONNX graph.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use edgetune::backbone::Backbone;
use edgetune::bundle::{
    BackboneFormat, BackboneSpec, Bundle, EmbeddingSpec, InputSpec, Layout, Manifest, Pooling,
    Preprocess, Provenance, Quantization, TextInputs,
};
use edgetune::rng::Rng;
use edgetune::{Dims, Head, persist};
use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::pb::type_proto::Value;
use tract_onnx::prelude::*;

use crate::detect::{Embedding, find_embedding};

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
    /// Samples for the embedding statistics the device's learner starts from
    /// ([`edgetune::stats`]) when not quantizing (`--calib` alone); an int8 conversion
    /// takes them from its calibration samples.
    pub stats: Option<Int8>,
    /// For a text encoder whose embedding is a sequence output `[1, seq, hidden]`: how
    /// it becomes one vector (default: the mean over the attention mask).
    pub pooling: Option<Pooling>,
    /// For a text encoder: the token id that pads a sequence (default 0, BERT's).
    pub pad_id: i64,
}

/// Post-training int8 quantization ([`crate::quantize`]), calibrated on samples. The
/// last fifth of the samples (at least one) is held out: it does not calibrate, it
/// measures how far int8 embeddings are from f32.
#[derive(Debug, Clone)]
pub enum Int8 {
    /// Raw input samples (as the device passes them: e.g. pixels 0–255, RGB), each with
    /// the input's number of values.
    Samples(Vec<Vec<f32>>),
    /// Images or .npy tensors in a directory ([`crate::calib::load_dir`]), at most
    /// `count` of them.
    Dir {
        /// The directory.
        path: std::path::PathBuf,
        /// Use at most this many samples.
        count: Option<usize>,
    },
}

/// How far the int8 backbone is from the f32 one, on held-out samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Report {
    /// What quantization did.
    pub summary: crate::quantize::Summary,
    /// Held-out samples compared.
    pub holdout_samples: usize,
    /// Mean cosine similarity of int8 to f32 embeddings.
    pub cosine_mean: f32,
    /// Lowest cosine similarity.
    pub cosine_min: f32,
    /// Share of held-out samples where the original classifier's top-1 class is the same
    /// on both embeddings (when the model has a classifier).
    pub top1_agreement: Option<f32>,
    /// Bytes of the f32 NNEF backbone, for comparison with the int8 one.
    pub f32_backbone_bytes: usize,
}

/// What the conversion found and measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The tensor the graph was cut at.
    pub embedding: String,
    /// Its size.
    pub embedding_size: usize,
    /// The classifier's node, when there was one.
    pub classifier: Option<String>,
    /// Input shape of the bundle.
    pub input_shape: Vec<usize>,
    /// Nodes of the decluttered backbone.
    pub nodes: usize,
    /// Bytes of the NNEF backbone.
    pub backbone_bytes: usize,
    /// Largest absolute difference between the bundle's embedding (as a device loads it)
    /// and tract's run of the ONNX model (the quantized one for int8), on a probe input.
    pub parity_max_abs: f32,
    /// The int8 quantization, when asked for.
    pub int8: Option<Int8Report>,
    /// Convolutions of a model that arrived quantized in QDQ form, now `QLinearConv`.
    pub qdq_folded: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "embedding      {} ({} values)",
            self.embedding, self.embedding_size
        )?;
        match &self.classifier {
            Some(c) => writeln!(f, "classifier     {c} (cut off)")?,
            None => writeln!(f, "classifier     none")?,
        }
        writeln!(f, "input          {:?}", self.input_shape)?;
        writeln!(
            f,
            "backbone       {} nodes, {} bytes NNEF",
            self.nodes, self.backbone_bytes
        )?;
        write!(
            f,
            "parity         max |bundle - onnx| = {:.2e} on a probe input",
            self.parity_max_abs
        )?;
        if self.qdq_folded > 0 {
            write!(
                f,
                "\nqdq            {} DequantizeLinear → Conv → QuantizeLinear folded into QLinearConv",
                self.qdq_folded
            )?;
        }
        if let Some(q) = &self.int8 {
            let s = &q.summary;
            write!(
                f,
                "\nint8           {} convolutions quantized, {} batch norms folded, calibrated on {} samples",
                s.quantized_convs, s.folded_batch_norms, s.calibration_samples
            )?;
            for (why, n) in &s.kept_f32 {
                write!(f, "\n               {n} kept f32: {why}")?;
            }
            write!(
                f,
                "\n               size {} bytes, {:.2}x the f32 backbone ({} bytes)",
                self.backbone_bytes,
                self.backbone_bytes as f64 / q.f32_backbone_bytes.max(1) as f64,
                q.f32_backbone_bytes
            )?;
            write!(
                f,
                "\n               cosine to f32 on {} held-out samples: mean {:.4}, min {:.4}",
                q.holdout_samples, q.cosine_mean, q.cosine_min
            )?;
            if let Some(a) = q.top1_agreement {
                write!(
                    f,
                    "\n               classifier top-1 agreement with f32: {:.1}%",
                    100.0 * a
                )?;
            }
        }
        Ok(())
    }
}

/// The graph's inputs a caller feeds (old exporters also list initializers there).
fn fed_inputs(proto: &ModelProto) -> Result<Vec<&tract_onnx::pb::ValueInfoProto>> {
    let graph = proto.graph.as_ref().context("the model has no graph")?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    Ok(graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .collect())
}

/// The single input's name and shape: `--input-shape`, or the model's own with a
/// symbolic batch fixed to 1.
fn input_shape(proto: &ModelProto, given: Option<&[usize]>) -> Result<(String, Vec<usize>)> {
    let inputs = fed_inputs(proto)?;
    match inputs.len() {
        1 => {}
        0 => bail!("the model has no inputs"),
        n => bail!(
            "the model has {n} inputs ({}); convert takes one image or feature input, or a text \
             encoder's input_ids with attention_mask and/or token_type_ids",
            inputs
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    let input = inputs[0];
    if let Some(shape) = given {
        ensure!(
            !shape.is_empty() && shape.iter().all(|&d| d > 0),
            "--input-shape {shape:?}: every dimension must be positive"
        );
        return Ok((input.name.clone(), shape.to_vec()));
    }
    let Some(Value::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        bail!("input {:?} is not a tensor; pass --input-shape", input.name)
    };
    let dims = t
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or_default();
    let mut shape = Vec::new();
    for (axis, d) in dims.iter().enumerate() {
        use tract_onnx::pb::tensor_shape_proto::dimension::Value as D;
        match d.value.as_ref() {
            Some(D::DimValue(v)) if *v > 0 => shape.push(*v as usize),
            _ if axis == 0 => shape.push(1),
            _ => bail!(
                "input {:?}: dimension {axis} is not fixed in the model; pass --input-shape",
                input.name
            ),
        }
    }
    ensure!(
        !shape.is_empty(),
        "input {:?} has no declared shape; pass --input-shape",
        input.name
    );
    Ok((input.name.clone(), shape))
}

/// What each input of a text encoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Ids,
    Mask,
    TypeIds,
}

/// A text encoder's inputs (`input_ids`, and optionally `attention_mask` and
/// `token_type_ids`), in the graph's order, with the sequence length.
#[derive(Debug, Clone)]
struct Text {
    roles: Vec<Role>,
    names: Vec<String>,
    dt: DatumType,
    seq: usize,
}

impl Text {
    fn facts(&self) -> Vec<InferenceFact> {
        self.roles
            .iter()
            .map(|_| InferenceFact::dt_shape(self.dt, [1, self.seq]))
            .collect()
    }

    fn name(&self, role: Role) -> Option<String> {
        self.roles
            .iter()
            .position(|r| *r == role)
            .map(|i| self.names[i].clone())
    }

    /// The graph's inputs for `ids` padded with `pad_id`.
    fn tensors(&self, ids: &[i64], pad_id: i64) -> Result<TVec<TValue>> {
        self.roles
            .iter()
            .map(|role| {
                let v: Vec<i64> = (0..self.seq)
                    .map(|p| match role {
                        Role::Ids => ids.get(p).copied().unwrap_or(pad_id),
                        Role::Mask => i64::from(p < ids.len()),
                        Role::TypeIds => 0,
                    })
                    .collect();
                Ok(Tensor::from_shape(&[1, self.seq], &v)?
                    .cast_to_dt(self.dt)?
                    .into_owned()
                    .into_tvalue())
            })
            .collect()
    }
}

/// Recognizes a text encoder by its inputs' names, or explains why the inputs are not
/// ones convert takes.
fn text_inputs(proto: &ModelProto, given: Option<&[usize]>) -> Result<Option<Text>> {
    let inputs = fed_inputs(proto)?;
    if inputs.len() < 2 {
        return Ok(None);
    }
    let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let unsupported = || {
        anyhow::anyhow!(
            "the model has {} inputs ({}); convert takes one image or feature input, or a text \
             encoder's input_ids with attention_mask and/or token_type_ids",
            names.len(),
            names.join(", ")
        )
    };
    let mut roles = Vec::new();
    for n in &names {
        let l = n.to_lowercase();
        roles.push(if l.contains("mask") {
            Role::Mask
        } else if l.contains("type") {
            Role::TypeIds
        } else if l.contains("ids") {
            Role::Ids
        } else {
            return Err(unsupported());
        });
    }
    for role in [Role::Ids, Role::Mask, Role::TypeIds] {
        ensure!(
            roles.iter().filter(|r| **r == role).count() <= 1,
            unsupported()
        );
    }
    let ids = roles
        .iter()
        .position(|r| *r == Role::Ids)
        .ok_or_else(unsupported)?;
    let Some(Value::TensorType(t)) = inputs[ids].r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        bail!("input {:?} is not a tensor", names[ids])
    };
    let dt = match t.elem_type {
        7 => i64::datum_type(),
        6 => i32::datum_type(),
        other => bail!(
            "input {:?} has ONNX element type {other}; token ids must be int64 or int32",
            names[ids]
        ),
    };
    let seq = match given {
        Some([1, s]) if *s > 0 => *s,
        Some(shape) => bail!("--input-shape {shape:?}: a text encoder takes [1, sequence length]"),
        None => {
            use tract_onnx::pb::tensor_shape_proto::dimension::Value as D;
            let dims = t
                .shape
                .as_ref()
                .map(|s| s.dim.as_slice())
                .unwrap_or_default();
            match dims.get(1).and_then(|d| d.value.as_ref()) {
                Some(D::DimValue(v)) if *v > 0 && dims.len() == 2 => *v as usize,
                _ => bail!(
                    "input {:?}: the sequence length is not fixed in the model; pass --input-shape 1,LENGTH",
                    names[ids]
                ),
            }
        }
    };
    Ok(Some(Text {
        roles,
        names,
        dt,
        seq,
    }))
}

/// A deterministic probe input in [0, 1).
fn probe(len: usize) -> Vec<f32> {
    let mut rng = Rng::new(0x5EED);
    (0..len).map(|_| rng.unit()).collect()
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
    // A model quantized in QDQ form: its sandwiches become integer convolutions.
    let qdq_folded = crate::quantize::fold_qdq(&mut proto)?;
    let Embedding { tensor, classifier } = find_embedding(&proto, opts.embedding.as_deref())?;
    let text = text_inputs(&proto, opts.input_shape.as_deref())?;
    let (input_name, shape) = match &text {
        Some(t) => (t.name(Role::Ids).expect("found above"), vec![1, t.seq]),
        None => input_shape(&proto, opts.input_shape.as_deref())?,
    };
    let facts: Vec<InferenceFact> = match &text {
        Some(t) => t.facts(),
        None => vec![f32::fact(&shape).into()],
    };
    if text.is_some() && opts.int8.is_some() {
        bail!("int8 quantization of text encoders (their MatMuls) is not supported yet");
    }
    let layout = match (opts.layout, shape.len()) {
        _ if text.is_some() => Layout::Tokens,
        (Some(l), _) => l,
        (None, 4) => Layout::Nchw,
        (None, 2) => Layout::Features,
        (None, n) => bail!("input of rank {n}: pass --layout"),
    };

    let (typed, size, sequence) = backbone_graph(&proto, &facts, &tensor, text.is_some())?;
    let pooling = match (sequence, opts.pooling) {
        (true, p) => Some(p.unwrap_or(Pooling::MeanOverMask)),
        (false, None) => None,
        (false, Some(_)) => bail!(
            "--pooling: the embedding {tensor:?} is already one vector, not a sequence output"
        ),
    };

    // Calibration samples (for int8, and for the embedding statistics).
    let loaded;
    let samples: Option<&Vec<Vec<f32>>> = match opts.int8.as_ref().or(opts.stats.as_ref()) {
        None => None,
        Some(Int8::Samples(s)) => Some(s),
        Some(Int8::Dir { path, count }) => {
            ensure!(
                text.is_none(),
                "calibration samples of a text encoder are not supported"
            );
            let spec = InputSpec {
                name: input_name.clone(),
                shape: shape.clone(),
                layout,
                dtype: "f32".into(),
            };
            loaded = crate::calib::load_dir(path, &spec, *count)
                .with_context(|| format!("reading calibration samples from {}", path.display()))?;
            Some(&loaded)
        }
    };

    // int8: calibrate on the first samples, quantize, and keep the rest to measure.
    let mut int8 = None;
    let (typed, backbone) = match (&opts.int8, samples) {
        (Some(_), Some(samples)) => {
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
                    opts.preprocess.apply(layout, &shape, raw, &mut x);
                    Ok(x)
                })
                .collect::<Result<Vec<_>>>()?;
            let holdout = (n / 5).max(1);
            let (calib, held) = inputs.split_at(n - holdout);
            let (quantized, summary) = crate::quantize::quantize(&proto, &tensor, &shape, calib)
                .context("quantizing the backbone to int8")?;
            let (qtyped, qsize, _) = backbone_graph(&quantized, &facts, &tensor, false)
                .context("importing the quantized graph")?;
            ensure!(
                qsize == size,
                "the quantized embedding has {qsize} values, not {size}"
            );
            let f32_backbone_bytes = write_nnef(&typed)?.len();
            let held: Vec<(Vec<f32>, Vec<f32>)> = samples[n - holdout..]
                .iter()
                .cloned()
                .zip(held.iter().cloned())
                .collect();
            int8 = Some((quantized, summary, held, f32_backbone_bytes));
            let nnef = write_nnef(&qtyped)?;
            (qtyped, nnef)
        }
        _ => {
            let nnef = write_nnef(&typed)?;
            (typed, nnef)
        }
    };

    let classes = classifier.as_ref().map_or(0, |c| c.classes);
    let class_names = match &opts.class_names {
        Some(names) => names.clone(),
        None if opts.keep_head => (0..classes).map(|c| format!("class{c}")).collect(),
        None => Vec::new(),
    };
    let head = match (&classifier, opts.keep_head) {
        (Some(c), true) => {
            ensure!(
                class_names.len() == c.classes,
                "{} class names for a classifier of {} classes",
                class_names.len(),
                c.classes
            );
            ensure!(
                c.dim == size,
                "the classifier reads {} values but the embedding has {size}",
                c.dim
            );
            let capacity = opts.capacity.unwrap_or(c.classes + 8);
            ensure!(
                capacity >= c.classes,
                "--capacity {capacity} is below the classifier's {} classes",
                c.classes
            );
            let dims = Dims::linear(size, capacity);
            let mut head = Head::alloc(dims, c.classes)?;
            let p = head.params_mut();
            p[..c.weight.len()].copy_from_slice(&c.weight);
            p[capacity * size..capacity * size + c.classes].copy_from_slice(&c.bias);
            Some(persist::encode_to_vec(
                &head,
                None::<&edgetune::Learner<Vec<f32>>>,
            )?)
        }
        (None, true) => bail!("--keep-head: the model has no classifier at {tensor:?} to keep"),
        (_, false) => None,
    };
    let mut provenance = Provenance::new(
        path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        concat!("finetune-head ", env!("CARGO_PKG_VERSION")),
    );
    provenance.source_sha256 = Some(sha256_hex(&bytes));
    let manifest = Manifest {
        format_version: edgetune::bundle::VERSION,
        input: InputSpec {
            name: input_name,
            shape: shape.clone(),
            layout,
            dtype: match &text {
                Some(t) if t.dt == i32::datum_type() => "i32".into(),
                Some(_) => "i64".into(),
                None => "f32".into(),
            },
        },
        preprocess: match &text {
            Some(_) => Preprocess::default(),
            None => opts.preprocess.clone(),
        },
        pooling,
        exemplars: None,
        embedding_stats: None,
        text: text.as_ref().map(|t| TextInputs {
            attention_mask: t.name(Role::Mask),
            token_type_ids: t.name(Role::TypeIds),
            pad_id: opts.pad_id,
        }),
        embedding: EmbeddingSpec {
            tensor: tensor.clone(),
            size,
        },
        backbone: BackboneSpec {
            format: BackboneFormat::NnefTar,
            quantization: match &int8 {
                None if qdq_folded > 0 => Quantization::Int8 {
                    calibration_samples: 0,
                    cosine_to_f32: None,
                },
                None => Quantization::F32,
                Some((_, summary, _, _)) => Quantization::Int8 {
                    calibration_samples: summary.calibration_samples,
                    cosine_to_f32: None,
                },
            },
        },
        classes: class_names,
        provenance,
    };
    let mut bundle = Bundle {
        manifest,
        backbone,
        head,
    };
    bundle
        .validate()
        .context("the converted bundle does not validate")?;

    // Self-check: the device's loader against the ONNX graph it was made from (the
    // quantized one for int8), on a probe input.
    let device =
        Backbone::from_bundle(&bundle).context("loading the written backbone as a device would")?;
    let mut got = vec![0.0f32; size];
    let want = match &text {
        Some(t) => {
            // A short sentence of small ids (any vocabulary has them), then padding.
            let ids: Vec<i64> = (0..t.seq.div_ceil(2))
                .map(|i| 1 + (i as i64 * 7) % 20)
                .collect();
            device.embed_tokens(&ids, &mut got)?;
            let mut model = tract_onnx::onnx()
                .with_ignore_value_info(true)
                .model_for_proto_model(&proto)?;
            for (i, f) in facts.iter().enumerate() {
                model.set_input_fact(i, f.clone())?;
            }
            model.select_outputs_by_name([tensor.as_str()])?;
            let plan = model.into_optimized()?.into_runnable()?;
            let out = plan.run(t.tensors(&ids, opts.pad_id)?)?;
            let seq_out: Vec<f32> = out[0]
                .to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect();
            let mut want = vec![0.0f32; size];
            match pooling {
                Some(p) => edgetune::backbone::pool(p, &seq_out, size, ids.len(), &mut want),
                None => want.copy_from_slice(&seq_out),
            }
            want
        }
        None => {
            let raw = probe(device.input_len());
            device.embed(&raw, &mut got)?;
            let mut input = vec![0.0f32; raw.len()];
            bundle
                .manifest
                .preprocess
                .apply(layout, &shape, &raw, &mut input);
            let source = int8.as_ref().map_or(&proto, |(q, ..)| q);
            Reference::new(source, &shape, &tensor)?.embed(&input)?
        }
    };
    let parity_max_abs = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);

    // The embedding statistics of the calibration samples, through the device's loader.
    if let Some(samples) = samples.filter(|s| s.len() >= 2 && text.is_none()) {
        let mut x = vec![0.0f32; samples.len() * size];
        for (raw, out) in samples.iter().zip(x.chunks_exact_mut(size)) {
            device
                .embed(raw, out)
                .context("embedding a calibration sample")?;
        }
        bundle.manifest.embedding_stats =
            edgetune::stats::Stats::estimate(&x, size, None).map(|s| s.to_manifest());
    }

    // int8 against f32 on the held-out samples, through the device's loader.
    let int8 = match int8 {
        None => None,
        Some((_, summary, held, f32_backbone_bytes)) => {
            let f32_ref = Reference::new(&proto, &shape, &tensor)?;
            let (mut cos_sum, mut cos_min, mut agree) = (0.0f64, f32::INFINITY, 0usize);
            let mut b = vec![0.0f32; size];
            for (raw, x) in &held {
                let a = f32_ref.embed(x)?;
                device.embed(raw, &mut b)?;
                let c = cosine(&a, &b);
                cos_sum += c as f64;
                cos_min = cos_min.min(c);
                if let Some(cl) = &classifier {
                    agree += usize::from(cl.top1(&a) == cl.top1(&b));
                }
            }
            let cosine_mean = (cos_sum / held.len() as f64) as f32;
            if let Quantization::Int8 { cosine_to_f32, .. } =
                &mut bundle.manifest.backbone.quantization
            {
                *cosine_to_f32 = Some(cosine_mean);
            }
            Some(Int8Report {
                summary,
                holdout_samples: held.len(),
                cosine_mean,
                cosine_min: cos_min,
                top1_agreement: classifier
                    .as_ref()
                    .map(|_| agree as f32 / held.len() as f32),
                f32_backbone_bytes,
            })
        }
    };
    let report = Report {
        embedding: tensor,
        embedding_size: size,
        classifier: classifier.map(|c| c.node),
        input_shape: shape,
        nodes: typed.nodes().len(),
        backbone_bytes: bundle.backbone.len(),
        parity_max_abs,
        int8,
        qdq_folded,
    };
    Ok((bundle, report))
}

/// The ONNX graph cut at `tensor`, typed and decluttered for `shape`, and the size of the
/// embedding there.
fn backbone_graph(
    proto: &ModelProto,
    facts: &[InferenceFact],
    tensor: &str,
    text: bool,
) -> Result<(TypedModel, usize, bool)> {
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(proto)
        .context("tract cannot import the model")?;
    for (i, fact) in facts.iter().enumerate() {
        model
            .set_input_fact(i, fact.clone())
            .context("setting the input shape")?;
    }
    let shape = facts
        .first()
        .and_then(|f| f.shape.as_concrete_finite().ok().flatten())
        .map(|s| s.to_vec())
        .unwrap_or_default();
    model
        .select_outputs_by_name([tensor])
        .with_context(|| format!("cutting the graph at {tensor:?}"))?;
    let typed = model
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .with_context(|| format!("tract cannot type the graph for input shape {shape:?}"))?;
    let out_fact = typed.output_fact(0)?;
    let out_shape = out_fact
        .shape
        .as_concrete()
        .with_context(|| {
            format!(
                "the embedding {tensor:?} has a symbolic shape {:?}",
                out_fact.shape
            )
        })?
        .to_vec();
    ensure!(
        out_shape.first() == Some(&1),
        "the embedding {tensor:?} has shape {out_shape:?}, expected batch 1 first"
    );
    if text && out_shape.len() == 3 {
        // A sequence output [1, seq, hidden]: pooled on the device.
        let hidden = out_shape[2];
        return Ok((typed, hidden, true));
    }
    let size: usize = out_shape.iter().skip(1).product();
    let spatial: Vec<usize> = out_shape
        .iter()
        .skip(2)
        .copied()
        .filter(|&d| d != 1)
        .collect();
    ensure!(
        spatial.is_empty(),
        "the tensor {tensor:?} has shape {out_shape:?}: a feature map, not an embedding (cut after pooling)"
    );
    Ok((typed, size, false))
}

/// The backbone as NNEF, through edgetune's framework (int8 operators included).
fn write_nnef(typed: &TypedModel) -> Result<Vec<u8>> {
    let mut nnef = Vec::new();
    edgetune::nnef::framework()
        .write_to_tar(typed, &mut nnef)
        .context("writing the backbone as NNEF")?;
    Ok(nnef)
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

fn run(plan: &Arc<TypedRunnableModel>, shape: &[usize], input: &[f32]) -> Result<Vec<f32>> {
    let out = plan.run(tvec![Tensor::from_shape(shape, input)?.into_tvalue()])?;
    Ok(out[0]
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect())
}

/// tract's run of an ONNX graph cut at a tensor, on already preprocessed inputs.
pub struct Reference {
    plan: Arc<TypedRunnableModel>,
    shape: Vec<usize>,
}

impl Reference {
    /// Plans `proto` cut at `tensor` for inputs of `shape`.
    pub fn new(proto: &ModelProto, shape: &[usize], tensor: &str) -> Result<Self> {
        let mut model = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .model_for_proto_model(proto)?;
        model.set_input_fact(0, f32::fact(shape).into())?;
        model.select_outputs_by_name([tensor])?;
        let plan = model.into_optimized()?.into_runnable()?;
        Ok(Reference {
            plan,
            shape: shape.to_vec(),
        })
    }

    /// The embedding of one preprocessed input.
    pub fn embed(&self, input: &[f32]) -> Result<Vec<f32>> {
        run(&self.plan, &self.shape, input)
    }
}

/// tract's run of the original ONNX graph, cut at `tensor`, on an already preprocessed
/// input.
pub fn reference_embedding(
    proto: &ModelProto,
    shape: &[usize],
    tensor: &str,
    input: &[f32],
) -> Result<Vec<f32>> {
    Reference::new(proto, shape, tensor)?.embed(input)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
