//! `finetune-head inspect`: what is in an ONNX model or a bundle, without converting it.
//!
//! The kind of file is told by its content, not its name: a bundle starts with
//! [`edgetune::bundle::MAGIC`]; anything else must decode as an ONNX `ModelProto` with a
//! graph. For an ONNX model the report lists its producer and opsets, inputs and outputs,
//! operator counts, parameters, a MAC estimate, the embedding that `convert` would cut at,
//! the classifier and how the model is quantized. For a bundle it lists the header, the
//! section sizes, the whole manifest, the backbone as the device loads it (operators,
//! parameters, MACs) and the head.
//!
//! MACs are the multiply-accumulates of convolutions and matrix products for one input
//! (a symbolic batch is fixed to 1), from tract's cost model on the typed, decluttered
//! graph: the number papers quote for a network. Element-wise work (biases,
//! activations, normalization, pooling) is reported apart as `other_fma`.
//!
//! Parts that cannot be worked out (no classifier, an operator tract does not know) are
//! reported as missing with the reason; only a file that is neither kind, or a bundle
//! that does not check out, is an error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use edgetune::bundle::{BackboneFormat, Bundle, HEADER_LEN, MAGIC, Manifest, Quantization};
use edgetune::{Config, HeadKind, Learner, Optimizer, persist};
use prost::Message;
use serde::Serialize;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as DimValue;
use tract_onnx::pb::type_proto::Value as TypeValue;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_hir::infer::Factoid;

use crate::detect::find_embedding;

/// What `inspect` found in a file.
// One report per run: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// An ONNX model.
    Onnx(OnnxReport),
    /// An edgetune bundle.
    Bundle(BundleReport),
}

/// An ONNX model.
#[derive(Debug, Clone, Serialize)]
pub struct OnnxReport {
    /// The file as given.
    pub file: String,
    /// Its size in bytes.
    pub file_bytes: u64,
    /// `producer_name` and `producer_version`.
    pub producer: String,
    /// The ONNX IR version.
    pub ir_version: i64,
    /// Operator sets imported, `""` being the default domain.
    pub opsets: Vec<Opset>,
    /// Graph inputs that are not initializers.
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs.
    pub outputs: Vec<TensorInfo>,
    /// Operators, parameters and MACs.
    pub graph: GraphStats,
    /// The embedding `convert` would cut at, if a classifier was found.
    pub embedding: Option<EmbeddingInfo>,
    /// Why there is no embedding (the detector's message), when there is none.
    pub embedding_note: Option<String>,
    /// The trailing classifier, if found.
    pub classifier: Option<ClassifierInfo>,
    /// How the model is quantized.
    pub quantization: QuantizationInfo,
}

/// One imported operator set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Opset {
    /// Its domain (`""` for the default ONNX domain).
    pub domain: String,
    /// Its version.
    pub version: i64,
}

/// A graph input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Element type (`f32`, `i64`, ...; `?` when not declared).
    pub dtype: String,
    /// Shape, symbolic dimensions by name (`?` when unnamed); `None` when not declared.
    pub shape: Option<Vec<Dim>>,
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A symbolic dimension (its name), or `?`.
    Symbolic(String),
}

/// Operators, parameters and MACs of a graph.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GraphStats {
    /// Operator nodes (constants and inputs not counted).
    pub nodes: usize,
    /// Nodes per operator, by name.
    pub op_counts: BTreeMap<String, usize>,
    /// Parameter values: every element of every constant tensor.
    pub parameters: u64,
    /// Parameter values per element type.
    pub parameters_by_dtype: BTreeMap<String, u64>,
    /// Multiply-accumulates of convolutions and matrix products for one input (batch
    /// 1); `None` when they could not be estimated (see `macs_note`).
    pub macs: Option<u64>,
    /// `macs` per operator.
    pub macs_by_op: BTreeMap<String, u64>,
    /// Other multiply-adds tract's cost model counts (element-wise, reductions).
    pub other_fma: Option<u64>,
    /// Why `macs` is missing, or what it assumed.
    pub macs_note: Option<String>,
}

/// The detected embedding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbeddingInfo {
    /// The tensor.
    pub tensor: String,
    /// Its size (values per input).
    pub size: usize,
}

/// The detected classifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassifierInfo {
    /// Its node (the Gemm or the MatMul).
    pub node: String,
    /// Its operator.
    pub op: String,
    /// Inputs it reads (the embedding size).
    pub inputs: usize,
    /// Classes it outputs.
    pub classes: usize,
}

/// How an ONNX model is quantized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuantizationInfo {
    /// `f32` (or `f16`), `QDQ (QuantizeLinear/DequantizeLinear)`, `QOperator
    /// (QLinearConv/QLinearMatMul/…)`, `integer ops (ConvInteger/MatMulInteger)`, or
    /// `mixed: ` followed by those that occur.
    pub state: String,
    /// The quantization operators found, with their counts.
    pub ops: BTreeMap<String, usize>,
}

/// An edgetune bundle.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    /// The file as given.
    pub file: String,
    /// Its size in bytes.
    pub file_bytes: u64,
    /// The bundle format version in the header.
    pub format_version: u16,
    /// Bytes of each section.
    pub sections: Sections,
    /// The manifest as stored.
    pub manifest: Manifest,
    /// The backbone as a device loads it; `None` for a features-only bundle or when it
    /// cannot be loaded (see `backbone_note`).
    pub backbone: Option<GraphStats>,
    /// Why `backbone` is missing.
    pub backbone_note: Option<String>,
    /// The head, if the bundle has one.
    pub head: Option<HeadInfo>,
}

/// Section sizes of a bundle, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sections {
    /// The JSON manifest.
    pub manifest: u64,
    /// The backbone (NNEF tar).
    pub backbone: u64,
    /// The head (0: none).
    pub head: u64,
}

/// A bundle's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeadInfo {
    /// `linear` or `mlp`.
    pub kind: String,
    /// Embedding size it reads.
    pub input: usize,
    /// Hidden units (0 for a linear head).
    pub hidden: usize,
    /// Classes in use.
    pub classes: usize,
    /// Most classes it can hold.
    pub capacity: usize,
    /// Parameters (for the full capacity).
    pub parameters: usize,
    /// The optimizer whose state is stored with it, if any.
    pub optimizer_state: Option<String>,
    /// Learning steps taken, as stored.
    pub steps: u32,
}

/// Inspects the ONNX model or bundle at `path`.
pub fn inspect(path: &Path) -> Result<Report> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = path.display().to_string();
    // A bundle by its magic; a file shorter than the magic that begins like it is a
    // truncated bundle.
    let prefix = bytes.len().min(MAGIC.len());
    if prefix > 0 && bytes[..prefix] == MAGIC[..prefix] {
        let bundle = Bundle::from_bytes(&bytes)
            .with_context(|| format!("invalid bundle {}", path.display()))?;
        return Ok(Report::Bundle(bundle_report(file, &bytes, bundle)));
    }
    let why = if bytes.is_empty() {
        "the file is empty".to_string()
    } else {
        match ModelProto::decode(bytes.as_slice()) {
            Ok(proto) if proto.graph.is_some() => {
                return Ok(Report::Onnx(onnx_report(file, bytes.len(), &proto)));
            }
            Ok(_) => "it decodes as protobuf but holds no graph".to_string(),
            Err(e) => format!("protobuf decoding failed: {e}"),
        }
    };
    bail!(
        "{} is neither an edgetune bundle (it does not start with {:?}) nor an ONNX model ({why})",
        path.display(),
        String::from_utf8_lossy(&MAGIC)
    )
}

// ---------------------------------------------------------------------------------------
// ONNX

fn onnx_report(file: String, len: usize, proto: &ModelProto) -> OnnxReport {
    let graph = proto.graph.as_ref().expect("checked by the caller");
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .map(tensor_info)
        .collect();
    let outputs = graph.output.iter().map(tensor_info).collect();

    let mut stats = GraphStats::default();
    count_graph(graph, &mut stats);
    match onnx_typed(proto) {
        Ok((model, fixed)) => {
            costs(&model, &mut stats);
            if stats.macs_note.is_none() && !fixed.is_empty() {
                stats.macs_note = Some(format!("with {}", fixed.join(", ")));
            }
        }
        Err(e) => stats.macs_note = Some(format!("tract cannot type the graph: {e:#}")),
    }

    let (embedding, embedding_note, classifier) = match find_embedding(proto, None) {
        Ok(e) => {
            let c = e.classifier.as_ref();
            let op = c.and_then(|c| {
                graph
                    .node
                    .iter()
                    .find(|n| n.name == c.node)
                    .map(|n| n.op_type.clone())
            });
            (
                c.map(|c| EmbeddingInfo {
                    tensor: e.tensor.clone(),
                    size: c.dim,
                }),
                None,
                c.map(|c| ClassifierInfo {
                    node: c.node.clone(),
                    op: op.unwrap_or_default(),
                    inputs: c.dim,
                    classes: c.classes,
                }),
            )
        }
        Err(e) => (None, Some(format!("{e:#}")), None),
    };
    let quantization = quantization(&stats.op_counts, &stats.parameters_by_dtype);
    OnnxReport {
        file,
        file_bytes: len as u64,
        producer: format!("{} {}", proto.producer_name, proto.producer_version)
            .trim()
            .to_string(),
        ir_version: proto.ir_version,
        opsets: proto
            .opset_import
            .iter()
            .map(|o| Opset {
                domain: o.domain.clone(),
                version: o.version,
            })
            .collect(),
        inputs,
        outputs,
        graph: stats,
        embedding,
        embedding_note,
        classifier,
        quantization,
    }
}

/// ONNX element type names in tract's spelling.
fn dtype_name(code: i32) -> String {
    let Ok(dt) = DataType::try_from(code) else {
        return format!("type{code}");
    };
    match dt {
        DataType::Undefined => "?",
        DataType::Float => "f32",
        DataType::Uint8 => "u8",
        DataType::Int8 => "i8",
        DataType::Uint16 => "u16",
        DataType::Int16 => "i16",
        DataType::Int32 => "i32",
        DataType::Int64 => "i64",
        DataType::String => "string",
        DataType::Bool => "bool",
        DataType::Float16 => "f16",
        DataType::Double => "f64",
        DataType::Uint32 => "u32",
        DataType::Uint64 => "u64",
        DataType::Bfloat16 => "bf16",
        other => return other.as_str_name().to_lowercase(),
    }
    .to_string()
}

fn tensor_info(v: &ValueInfoProto) -> TensorInfo {
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => {
            let shape = t.shape.as_ref().map(|s| {
                s.dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(DimValue::DimValue(v)) => Dim::Fixed(*v),
                        Some(DimValue::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
                        _ => Dim::Symbolic("?".into()),
                    })
                    .collect()
            });
            (dtype_name(t.elem_type), shape)
        }
        None => ("?".to_string(), None),
    };
    TensorInfo {
        name: v.name.clone(),
        dtype,
        shape,
    }
}

fn elements(dims: &[i64]) -> u64 {
    dims.iter()
        .map(|&d| u64::try_from(d).unwrap_or(0))
        .product()
}

fn add_param(stats: &mut GraphStats, dtype: String, n: u64) {
    stats.parameters += n;
    *stats.parameters_by_dtype.entry(dtype).or_default() += n;
}

fn add_tensor(stats: &mut GraphStats, t: &TensorProto) {
    add_param(stats, dtype_name(t.data_type), elements(&t.dims));
}

/// The operator's name: its type, prefixed by its domain outside the default one.
fn op_name(n: &NodeProto) -> String {
    match n.domain.as_str() {
        "" | "ai.onnx" => n.op_type.clone(),
        d => format!("{d}.{}", n.op_type),
    }
}

/// Operators and parameters of `graph` and of the subgraphs of its nodes (If, Loop...).
fn count_graph(graph: &GraphProto, stats: &mut GraphStats) {
    for t in &graph.initializer {
        add_tensor(stats, t);
    }
    for s in &graph.sparse_initializer {
        if let Some(v) = &s.values {
            add_tensor(stats, v);
        }
    }
    for n in &graph.node {
        if n.op_type == "Constant" && n.domain.is_empty() {
            // A Constant node is a parameter, not work.
            for a in &n.attribute {
                match a.name.as_str() {
                    "value" => a.t.iter().for_each(|t| add_tensor(stats, t)),
                    "sparse_value" => {
                        if let Some(v) = a.sparse_tensor.as_ref().and_then(|s| s.values.as_ref()) {
                            add_tensor(stats, v);
                        }
                    }
                    "value_float" => add_param(stats, "f32".into(), 1),
                    "value_floats" => add_param(stats, "f32".into(), a.floats.len() as u64),
                    "value_int" => add_param(stats, "i64".into(), 1),
                    "value_ints" => add_param(stats, "i64".into(), a.ints.len() as u64),
                    "value_string" => add_param(stats, "string".into(), 1),
                    "value_strings" => add_param(stats, "string".into(), a.strings.len() as u64),
                    _ => {}
                }
            }
            continue;
        }
        stats.nodes += 1;
        *stats.op_counts.entry(op_name(n)).or_default() += 1;
        for a in &n.attribute {
            for g in a.g.iter().chain(&a.graphs) {
                count_graph(g, stats);
            }
        }
    }
}

/// The model typed and decluttered by tract, with a symbolic batch fixed to 1; also the
/// dimensions that were fixed (`batch=1`).
fn onnx_typed(proto: &ModelProto) -> Result<(TypedModel, Vec<String>)> {
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(proto)?;
    let graph = proto.graph.as_ref().context("no graph")?;
    let initializers: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let declared: Vec<&ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .collect();
    let mut fixed = Vec::new();
    for (ix, input) in declared.iter().enumerate() {
        let Some(TypeValue::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            continue;
        };
        let (Some(shape), Some(dt)) = (
            t.shape.as_ref(),
            model.input_fact(ix)?.datum_type.concretize(),
        ) else {
            continue;
        };
        let mut dims: Vec<TDim> = Vec::new();
        for (axis, d) in shape.dim.iter().enumerate() {
            dims.push(match d.value.as_ref() {
                Some(DimValue::DimValue(v)) if *v > 0 => (*v).to_dim(),
                Some(DimValue::DimParam(p)) if axis == 0 => {
                    if !fixed
                        .iter()
                        .any(|f: &String| f.starts_with(&format!("{p}=")))
                    {
                        fixed.push(format!("{p}=1"));
                    }
                    1.to_dim()
                }
                _ if axis == 0 => {
                    if !fixed.iter().any(|f| f == "batch=1") {
                        fixed.push("batch=1".into());
                    }
                    1.to_dim()
                }
                Some(DimValue::DimParam(p)) if !p.is_empty() => {
                    model.symbols.sym(p.as_str()).into()
                }
                _ => model.symbols.new_with_prefix("unk").into(),
            });
        }
        model.set_input_fact(ix, TypedFact::dt_shape(dt, dims).into())?;
    }
    Ok((model.into_typed()?.into_decluttered()?, fixed))
}

/// Operators whose FMA cost counts as MACs: convolutions and matrix products.
fn is_linear(op: &str) -> bool {
    matches!(op, "Conv" | "Deconv" | "EinSum") || op.contains("MatMul") || op.contains("Matmul")
}

/// tract's cost model over a typed graph: MACs of linear operators and other FMAs.
fn costs(model: &TypedModel, stats: &mut GraphStats) {
    let run = || -> Result<(TDim, TDim, BTreeMap<String, TDim>)> {
        let (mut linear, mut other) = (0.to_dim(), 0.to_dim());
        let mut by_op: BTreeMap<String, TDim> = BTreeMap::new();
        for id in model.eval_order()? {
            let node = model.node(id);
            let inputs = model.node_input_facts(id)?;
            let name = node.op.name().to_string();
            let cost = node
                .op
                .cost(&inputs)
                .with_context(|| format!("cost of node {:?} ({name})", node.name))?;
            for (kind, n) in cost {
                if !matches!(kind, Cost::FMA(_)) {
                    continue;
                }
                if is_linear(&name) {
                    linear += n.clone();
                    *by_op.entry(name.clone()).or_insert_with(|| 0.to_dim()) += n;
                } else {
                    other += n;
                }
            }
        }
        Ok((linear, other, by_op))
    };
    match run() {
        Ok((linear, other, by_op)) => {
            let linear = linear.simplify();
            match linear.to_i64() {
                Ok(v) => {
                    stats.macs = u64::try_from(v).ok();
                    stats.macs_by_op = by_op
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, u64::try_from(v.to_i64().ok()?).ok()?)))
                        .collect();
                }
                Err(_) => {
                    stats.macs_note = Some(format!("MACs depend on symbolic dimensions: {linear}"))
                }
            }
            stats.other_fma = other
                .simplify()
                .to_i64()
                .ok()
                .and_then(|v| u64::try_from(v).ok());
        }
        Err(e) => stats.macs_note = Some(format!("tract's cost model failed: {e:#}")),
    }
}

/// The quantization state from operator counts and parameter types.
fn quantization(ops: &BTreeMap<String, usize>, params: &BTreeMap<String, u64>) -> QuantizationInfo {
    const QDQ: &str = "QDQ (QuantizeLinear/DequantizeLinear)";
    const QOP: &str = "QOperator (QLinearConv/QLinearMatMul/…)";
    const INT: &str = "integer ops (ConvInteger/MatMulInteger)";
    let class = |op: &str| -> Option<&'static str> {
        let op = op.rsplit('.').next().unwrap_or(op);
        match op {
            "QuantizeLinear" | "DequantizeLinear" => Some(QDQ),
            "ConvInteger"
            | "MatMulInteger"
            | "DynamicQuantizeLinear"
            | "MatMulIntegerToFloat"
            | "DynamicQuantizeMatMul" => Some(INT),
            "QGemm" | "QAttention" | "QEmbedLayerNormalization" => Some(QOP),
            _ if op.starts_with("QLinear") => Some(QOP),
            _ => None,
        }
    };
    let mut found: Vec<&'static str> = Vec::new();
    let mut counts = BTreeMap::new();
    for (op, n) in ops {
        if let Some(c) = class(op) {
            counts.insert(op.clone(), *n);
            if !found.contains(&c) {
                found.push(c);
            }
        }
    }
    // A fixed order: QDQ, QOperator, integer.
    found.sort_by_key(|c| [QDQ, QOP, INT].iter().position(|x| x == c));
    let state = match found.as_slice() {
        [] => {
            let f16 =
                params.get("f16").copied().unwrap_or(0) + params.get("bf16").copied().unwrap_or(0);
            if f16 > params.get("f32").copied().unwrap_or(0) {
                "f16".to_string()
            } else {
                "f32".to_string()
            }
        }
        [one] => one.to_string(),
        many => format!("mixed: {}", many.join(" + ")),
    };
    QuantizationInfo { state, ops: counts }
}

// ---------------------------------------------------------------------------------------
// Bundles

fn bundle_report(file: String, bytes: &[u8], bundle: Bundle) -> BundleReport {
    // from_bytes checked the header and the section table.
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let len_at = |section: usize| {
        let at = MAGIC.len() + 2 + section * 16 + 8;
        u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    };
    debug_assert!(bytes.len() >= HEADER_LEN);
    let sections = Sections {
        manifest: len_at(0),
        backbone: len_at(1),
        head: len_at(2),
    };
    let (backbone, backbone_note) = match bundle.manifest.backbone.format {
        BackboneFormat::None => (None, Some("no backbone: the input is the embedding".into())),
        BackboneFormat::NnefTar => match nnef_stats(&bundle.backbone) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(format!("cannot load the NNEF backbone: {e:#}"))),
        },
    };
    // The bundle validated its head: decoding it again cannot fail.
    let head = bundle.head.as_deref().and_then(|h| head_info(h).ok());
    BundleReport {
        file,
        file_bytes: bytes.len() as u64,
        format_version: u16_at(MAGIC.len()),
        sections,
        manifest: bundle.manifest,
        backbone,
        backbone_note,
        head,
    }
}

fn datum_name(dt: DatumType) -> String {
    let name = |dt: DatumType| format!("{dt:?}").to_lowercase();
    if dt.is_quantized() {
        format!("q{}", name(dt.unquantized()))
    } else {
        name(dt)
    }
}

/// The backbone loaded as a device loads it ([`edgetune::nnef::framework`]), then
/// decluttered: the loader wires helper nodes (casts of constants, reshapes) that the
/// device's plan folds away.
fn nnef_stats(tar: &[u8]) -> Result<GraphStats> {
    let model = edgetune::nnef::framework()
        .model_for_read(&mut &tar[..])?
        .into_decluttered()?;
    let mut stats = GraphStats::default();
    for node in model.nodes() {
        if let Some(k) = node.op_as::<Const>() {
            let v = k.val();
            add_param(&mut stats, datum_name(v.datum_type()), v.len() as u64);
        } else if !model.input_outlets()?.iter().any(|o| o.node == node.id) {
            stats.nodes += 1;
            *stats
                .op_counts
                .entry(node.op.name().to_string())
                .or_default() += 1;
        }
    }
    costs(&model, &mut stats);
    Ok(stats)
}

fn head_info(bytes: &[u8]) -> Result<HeadInfo> {
    let header = persist::read_header(bytes)?;
    let mut head = persist::decode_head(bytes)?;
    let dims = head.dims();
    let optimizer = match header.optimizer {
        1 => Some(("SGD with momentum", Optimizer::SGD_MOMENTUM)),
        2 => Some(("Adam", Optimizer::ADAM)),
        3 => Some(("AdamW", Optimizer::ADAMW)),
        _ => None,
    };
    // The step count lives in the payload: decode again into a learner of the stored
    // kind (plain SGD when no optimizer state is stored) to read it.
    let cfg = Config {
        optimizer: optimizer.map_or(
            Optimizer::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            |(_, o)| o,
        ),
        ..Config::DEFAULT
    };
    let mut learner = Learner::alloc(dims, cfg)?;
    persist::decode_into(bytes, &mut head, Some(&mut learner))?;
    Ok(HeadInfo {
        kind: match dims.kind() {
            HeadKind::Linear => "linear",
            HeadKind::Mlp { .. } => "mlp",
        }
        .into(),
        input: dims.input,
        hidden: dims.hidden,
        classes: head.classes(),
        capacity: dims.capacity,
        parameters: dims.param_len(),
        optimizer_state: optimizer.map(|(n, _)| n.to_string()),
        steps: learner.steps(),
    })
}

// ---------------------------------------------------------------------------------------
// Display

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
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
fn short(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.2} k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} M", n as f64 / 1e6),
        1_000_000_000.. => format!("{:.2} G", n as f64 / 1e9),
    }
}

fn shape(s: &Option<Vec<Dim>>) -> String {
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
fn utc(secs: u64) -> String {
    crate::utc::utc(secs, true)
}

const W: usize = 14;

fn row(f: &mut fmt::Formatter<'_>, label: &str, value: impl fmt::Display) -> fmt::Result {
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
                "manifest {} B, backbone {} B, head {} B",
                grouped(s.manifest),
                grouped(s.backbone),
                if s.head == 0 {
                    "0 (none)".to_string()
                } else {
                    grouped(s.head)
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
        if let Some(st) = &m.embedding_stats {
            let kind = match st.covariance_kind {
                edgetune::stats::CovarianceKind::WithinClass => "within-class covariance",
                edgetune::stats::CovarianceKind::Total => "covariance of unlabeled samples",
            };
            let classes = if st.class_counts.is_empty() {
                String::new()
            } else {
                format!(", means of {} classes", st.class_counts.len())
            };
            row(
                f,
                "statistics",
                format!(
                    "of {} embeddings: mean, spread, {kind}{classes} (the device's learner starts from them)",
                    st.samples
                ),
            )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_dates() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(short(12_345_678), "12.35 M");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn quantization_states() {
        let ops = |names: &[&str]| names.iter().map(|n| (n.to_string(), 2)).collect();
        let none = BTreeMap::new();
        assert_eq!(quantization(&ops(&["Conv"]), &none).state, "f32");
        let q = quantization(&ops(&["Conv", "QuantizeLinear", "DequantizeLinear"]), &none);
        assert_eq!(q.state, "QDQ (QuantizeLinear/DequantizeLinear)");
        assert_eq!(q.ops.len(), 2);
        let q = quantization(&ops(&["QLinearConv", "com.microsoft.QGemm"]), &none);
        assert!(q.state.starts_with("QOperator"));
        let q = quantization(&ops(&["MatMulInteger", "DequantizeLinear"]), &none);
        assert_eq!(
            q.state,
            "mixed: QDQ (QuantizeLinear/DequantizeLinear) + integer ops (ConvInteger/MatMulInteger)"
        );
        let f16 = [("f16".to_string(), 10)].into_iter().collect();
        assert_eq!(quantization(&ops(&["Conv"]), &f16).state, "f16");
    }
}
