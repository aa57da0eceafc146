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
//!
//! Files: the report types and the entry point are here; `onnx.rs` reads a model,
//! `bundle.rs` a bundle, `display.rs` prints either.

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

mod bundle;
mod display;
mod onnx;
#[cfg(test)]
mod tests;

use bundle::*;
use onnx::*;

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
    /// The backbone (NNEF tar, plain or gzipped).
    pub backbone: u64,
    /// The backbone's NNEF tar inflated, when the section is gzipped (`None` for a
    /// plain tar, or one that does not inflate).
    pub backbone_inflated: Option<u64>,
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
