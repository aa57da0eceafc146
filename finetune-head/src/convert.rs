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
    BackboneFormat, BackboneSpec, Bundle, EmbeddingSpec, InputSpec, Layout, Manifest, Preprocess,
    Provenance, Quantization,
};
use edgetune::rng::Rng;
use edgetune::{Dims, Head, persist};
use prost::Message;
use tract_onnx::pb::ModelProto;
use tract_onnx::pb::type_proto::Value;
use tract_onnx::prelude::*;
use tract_onnx_opl::WithOnnx;

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
    /// and tract's run of the ONNX model, on a probe input.
    pub parity_max_abs: f32,
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
        )
    }
}

/// The single input's name and shape: `--input-shape`, or the model's own with a
/// symbolic batch fixed to 1.
fn input_shape(proto: &ModelProto, given: Option<&[usize]>) -> Result<(String, Vec<usize>)> {
    let graph = proto.graph.as_ref().context("the model has no graph")?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .collect();
    match inputs.len() {
        1 => {}
        0 => bail!("the model has no inputs"),
        n => bail!(
            "the model has {n} inputs ({}); models with several inputs (text encoders) are not supported by convert yet",
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

/// A deterministic probe input in [0, 1).
fn probe(len: usize) -> Vec<f32> {
    let mut rng = Rng::new(0x5EED);
    (0..len).map(|_| rng.unit()).collect()
}

/// Converts the ONNX model at `path`.
pub fn convert(path: &Path, opts: &Options) -> Result<(Bundle, Report)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let proto = ModelProto::decode(bytes.as_slice()).with_context(|| {
        format!(
            "{} is not an ONNX model (protobuf decoding failed)",
            path.display()
        )
    })?;
    let Embedding { tensor, classifier } = find_embedding(&proto, opts.embedding.as_deref())?;
    let (input_name, shape) = input_shape(&proto, opts.input_shape.as_deref())?;
    let layout = match (opts.layout, shape.len()) {
        (Some(l), _) => l,
        (None, 4) => Layout::Nchw,
        (None, 2) => Layout::Features,
        (None, n) => bail!("input of rank {n}: pass --layout"),
    };

    let onnx = tract_onnx::onnx().with_ignore_value_info(true);
    let mut model = onnx
        .model_for_proto_model(&proto)
        .context("tract cannot import the model")?;
    model
        .set_input_fact(0, f32::fact(&shape).into())
        .context("setting the input shape")?;
    model
        .select_outputs_by_name([tensor.as_str()])
        .with_context(|| format!("cutting the graph at {tensor:?}"))?;
    let typed = model
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .with_context(|| format!("tract cannot type the graph for input shape {shape:?}"))?;
    let out_fact = typed.output_fact(0)?;
    let out_shape = out_fact.shape.as_concrete().with_context(|| {
        format!(
            "the embedding {tensor:?} has a symbolic shape {:?}",
            out_fact.shape
        )
    })?;
    ensure!(
        out_shape.first() == Some(&1),
        "the embedding {tensor:?} has shape {out_shape:?}, expected batch 1 first"
    );
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
    let mut backbone = Vec::new();
    tract_nnef::nnef()
        .with_onnx()
        .write_to_tar(&typed, &mut backbone)
        .context("writing the backbone as NNEF")?;

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
            dtype: "f32".into(),
        },
        preprocess: opts.preprocess.clone(),
        pooling: None,
        embedding: EmbeddingSpec {
            tensor: tensor.clone(),
            size,
        },
        backbone: BackboneSpec {
            format: BackboneFormat::NnefTar,
            quantization: Quantization::F32,
        },
        classes: class_names,
        provenance,
    };
    let bundle = Bundle {
        manifest,
        backbone,
        head,
    };
    bundle
        .validate()
        .context("the converted bundle does not validate")?;

    // Self-check: the device's loader against the ONNX graph, on a probe input.
    let device =
        Backbone::from_bundle(&bundle).context("loading the written backbone as a device would")?;
    let raw = probe(device.input_len());
    let mut got = vec![0.0f32; size];
    device.embed(&raw, &mut got)?;
    let mut input = vec![0.0f32; raw.len()];
    bundle
        .manifest
        .preprocess
        .apply(layout, &shape, &raw, &mut input);
    let want = reference_embedding(&proto, &shape, &tensor, &input)?;
    let parity_max_abs = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let report = Report {
        embedding: tensor,
        embedding_size: size,
        classifier: classifier.map(|c| c.node),
        input_shape: shape,
        nodes: typed.nodes().len(),
        backbone_bytes: bundle.backbone.len(),
        parity_max_abs,
    };
    Ok((bundle, report))
}

/// tract's run of the original ONNX graph, cut at `tensor`, on an already preprocessed
/// input.
pub fn reference_embedding(
    proto: &ModelProto,
    shape: &[usize],
    tensor: &str,
    input: &[f32],
) -> Result<Vec<f32>> {
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(proto)?;
    model.set_input_fact(0, f32::fact(shape).into())?;
    model.select_outputs_by_name([tensor])?;
    let plan = model.into_optimized()?.into_runnable()?;
    let out = plan.run(tvec![Tensor::from_shape(shape, input)?.into_tvalue()])?;
    Ok(out[0]
        .to_plain_array_view::<f32>()?
        .iter()
        .copied()
        .collect())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
