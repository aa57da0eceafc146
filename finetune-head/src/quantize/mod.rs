//! Post-training static int8 quantization of a backbone, done on the ONNX graph before
//! tract imports it.
//!
//! What is quantized is chosen for what tract runs fast on ARM, not for coverage: tract has integer kernels for `QLinearConv` and
//! `ConvInteger`, but runs a `DequantizeLinear → Conv → QuantizeLinear` sandwich in f32,
//! and its depthwise convolution has no integer kernel worth using. So:
//! - constants an exporter computes in the graph (`Identity`, `Constant`, reshapes and
//!   transposes of weights) become initializers, so every weight is seen as one;
//! - batch normalizations that follow a convolution are folded into it;
//! - every ordinary convolution (group 1, weights in an initializer), the first one too
//!   (the one that reads the image; `--first-layer-f32` keeps it f32), becomes `QuantizeLinear → ConvInteger → Cast →
//!   Mul → Add`: activations i8 with a per-tensor scale from the calibration range,
//!   weights i8 per output channel, both symmetric (zero point 0), the i32 product
//!   scaled and biased per channel in f32;
//! - where only int8 convolutions read a quantized convolution's output (directly, or
//!   through one `Relu`: a ResNet block's first convolution, a MobileNetV2 block's
//!   projection when no residual follows), that convolution is a `QLinearConv` with i8
//!   output instead, and the `Relu` runs on i8: tract fuses the requantization into the
//!   integer product's epilogue (one scale, the clamp, the `Relu` as a max with 0, the
//!   cast), so the activation never goes to f32 and back. tract fuses only a scalar
//!   requantization scale, so these convolutions' weights are quantized per tensor;
//! - every `MatMul` whose second operand is a constant matrix (a text encoder's
//!   projections and feed-forward layers) becomes `QuantizeLinear → MatMulInteger → Cast
//!   → Mul`, the same scheme with per-column weight scales (`matmul.rs`), and so does
//!   every `Gemm` with constant weights (a fully connected layer inside the backbone,
//!   its bias added after the product);
//! - depthwise and grouped convolutions, products of two activations, and everything
//!   else stay f32, and the first convolution on request (`--first-layer-f32`,
//!   [`Ranges::Calibrate`]'s `first_layer` false; a QDQ model's first convolution is
//!   quantized when its quantizers cover it, as ONNX Runtime's `quantize_static` does).
//!   The first convolution in int8 is the default since 2026-12-05: on torchvision's
//!   ResNet18 at width 1/8 its 7×7 stem in int8 took one inference on the Pi 5 CPU
//!   model from 2.40 M to 2.09 M aarch64 instructions (`scripts/iprofile.sh`), its
//!   embedding's cosine to f32 from mean 0.9989 / min 0.9937 to 0.9987 / 0.9925 (6
//!   held-out images); at full width and 224×224, MobileNetV2 from 72.6 M to 69.0 M and
//!   ResNet18 from 240.8 M to 214.3 M on a Pi 5, within 0.5 % on a Pi 4. It was opt-in
//!   while the shipped demo's device forgot more with it (86.7 % of its host digits
//!   after 50 new labels instead of 88.9 %), which the closed-form learner of MLP heads
//!   ended;
//! - a depthwise or grouped convolution computes in f32, but on its weights rounded to
//!   i8 per output channel, which the bundle stores in 8 bits (`stored.rs`);
//! - the integer products' per-channel scales and biases are rounded to 11 significant
//!   bits under one power of two per tensor (`onnx::f16_precision`), which the bundle
//!   stores in 16 bits ([`store_in_f16`]): MobileNetV2 at width 1/4 from 0.31× to 0.296×
//!   the f32 backbone.
//!
//! Why `ConvInteger` and not `QLinearConv`, measured on the 224×224 MobileNet-style test
//! model (scripts/icount.sh, runtime/examples/profile.rs): tract 0.23.9 lowers a
//! `QLinearConv` to the integer product followed by unfused passes over its output
//! (zero-point compensation unless the weights' zero point is one scalar 0, then
//! requantization: scale, clamp, cast); those passes cost more than the product. With
//! `ConvInteger` the output's scale, bias and the next ReLU fuse into one f32 pass:
//! aarch64 instructions per inference 550 M (`QLinearConv`, u8 activations) → 486 M (i8)
//! → 338 M (the weights' zero point a scalar) → 176 M (`ConvInteger`), against 130 M
//! for f32.
//!
//! The result is an ordinary ONNX model (ONNX Runtime runs it too), which the converter
//! then imports, cuts and writes as NNEF like an f32 one; the quantize and dequantize
//! operators travel through edgetune's own NNEF registry ([`edgetune::nnef`]).
//!
//! A model that arrives quantized in QDQ form is taken back to f32 first (`qdq.rs`), and
//! its quantizers' ranges replace calibration ([`Ranges::Qdq`]): it runs on this same
//! integer path.
//!
//! Here the quantization of convolutions (which stay f32, calibration, scales, the
//! rewrite); `constants.rs` and `fold.rs` hold the rewrites done before it (constants
//! folded, batch norms into convolutions), `qdq.rs` a QDQ model's quantizers taken out,
//! `matmul.rs` the weight products, `stored.rs` the f32 convolutions' weights kept in 8
//! bits, `equalize.rs` the equalization of chained
//! convolutions, `onnx.rs` the graph and tensor helpers they use.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail, ensure};
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;

mod constants;
mod equalize;
mod fold;
mod matmul;
pub(crate) mod onnx;
mod qdq;
mod stored;

pub use constants::fold_constants;
pub use fold::fold_batch_norms;
pub use matmul::quantize_columns;
use onnx::{
    drop_unused_initializers, f16_precision, f32_tensor, floats, group, i8_tensor, i32_tensor,
    integer_product, node, producers,
};
pub use qdq::{Qdq, strip_qdq};
pub use stored::{StoredI8, store_in_f16, store_in_i8};

/// What quantization did to the graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Constant nodes folded into initializers first (`Identity`, `Constant`, reshapes
    /// and transposes of weights: [`fold_constants`]).
    pub folded_constants: usize,
    /// Batch normalizations folded into the convolution before them.
    pub folded_batch_norms: usize,
    /// Convolutions now running on integers (`ConvInteger`, or `QLinearConv` where
    /// chained).
    pub quantized_convs: usize,
    /// Of those, the ones whose output stays i8 because only int8 convolutions read it
    /// (`QLinearConv`, requantized in the integer product's epilogue).
    pub chained_convs: usize,
    /// Matrix products with constant weights now running on integers (`MatMulInteger`:
    /// a text encoder's projections and feed-forward layers, `MatMul`s and `Gemm`s).
    pub quantized_matmuls: usize,
    /// Every convolution and matrix product left in f32, in graph order: its name and
    /// why.
    pub kept_f32: Vec<(String, String)>,
    /// Of those, the depthwise and grouped convolutions whose weights are rounded to i8
    /// per channel, to be stored in 8 bits and computed in f32 ([`StoredI8`]; the
    /// converter keeps the ones it could store so: [`store_in_i8`]).
    pub stored_i8: Vec<StoredI8>,
    /// Samples the activation ranges were taken from.
    pub calibration_samples: usize,
    /// Or: the QDQ model's quantizers they were taken from ([`Ranges::Qdq`]).
    pub qdq_ranges: usize,
}

/// Why a depthwise or grouped convolution stays f32.
const GROUPED: &str = "depthwise or grouped (no fast integer kernel in tract)";

/// Why a convolution stays f32, or `None` if it is quantized.
fn keep_f32(
    node: &NodeProto,
    inits: &HashMap<&str, &TensorProto>,
    graph_inputs: &HashSet<&str>,
    first_layer: bool,
) -> Option<&'static str> {
    let grouped = group(node) != 1;
    let w = node.input.get(1).and_then(|w| inits.get(w.as_str()));
    let b_ok = node
        .input
        .get(2)
        .is_none_or(|b| b.is_empty() || inits.contains_key(b.as_str()));
    if grouped {
        Some(GROUPED)
    } else if w.is_none_or(|w| w.dims.len() != 4) || !b_ok {
        Some("weights or bias not a constant")
    } else if graph_inputs.contains(node.input[0].as_str()) && !first_layer {
        Some("first layer (reads the image itself; kept f32 by --first-layer-f32)")
    } else {
        None
    }
}

/// A node's name, or its first output's where it has none.
fn layer_name(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

/// The layers kept in f32 grouped by reason, reasons in the order they first occur.
pub fn kept_by_reason(kept: &[(String, String)]) -> Vec<(&str, Vec<&str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (layer, why) in kept {
        match groups.iter_mut().find(|(w, _)| w == why) {
            Some((_, layers)) => layers.push(layer),
            None => groups.push((why, vec![layer])),
        }
    }
    groups
}

/// Nodes the tensor `target` depends on.
fn ancestors(model: &ModelProto, target: &str) -> HashSet<usize> {
    let graph = model.graph.as_ref().expect("checked by the caller");
    let producer = producers(graph);
    let mut seen = HashSet::new();
    let mut stack = vec![target];
    while let Some(t) = stack.pop() {
        if let Some(&i) = producer.get(t)
            && seen.insert(i)
        {
            stack.extend(graph.node[i].input.iter().map(String::as_str));
        }
    }
    seen
}

/// Activation range `[lo, hi]` of each tensor, over the calibration inputs (the model's
/// inputs as `facts` describe them).
fn calibrate(
    model: &ModelProto,
    facts: &[InferenceFact],
    tensors: &[String],
    inputs: &[TVec<TValue>],
) -> Result<HashMap<String, (f32, f32)>> {
    let outputs: Vec<&str> = tensors.iter().map(String::as_str).collect();
    let plan = crate::convert::plan_at(model, facts, &outputs)
        .context("observing the quantized layers' inputs and outputs")?;
    let mut ranges: HashMap<String, (f32, f32)> = HashMap::new();
    for (k, input) in inputs.iter().enumerate() {
        let out = plan
            .run(input.clone())
            .with_context(|| format!("running calibration sample {k}"))?;
        for (name, t) in tensors.iter().zip(out.iter()) {
            let v = t.to_plain_array_view::<f32>()?;
            let (lo, hi) = v
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                    (lo.min(x), hi.max(x))
                });
            ensure!(
                lo.is_finite() && hi.is_finite(),
                "calibration sample {k} makes {name:?} non-finite"
            );
            let e = ranges.entry(name.clone()).or_insert((lo, hi));
            *e = (e.0.min(lo), e.1.max(hi));
        }
    }
    Ok(ranges)
}

/// Symmetric i8 scale covering `[lo, hi]`, zero point 0: with both zero points 0, tract
/// has no zero-point compensation to compute at run time.
pub fn i8_params(lo: f32, hi: f32) -> f32 {
    let m = lo.abs().max(hi.abs());
    if m <= f32::MIN_POSITIVE {
        1.0
    } else {
        m / 127.0
    }
}

/// A quantized convolution whose output only int8 convolutions read, directly or through
/// one `Relu`: it is written as a `QLinearConv` with i8 output, so its output never goes
/// to f32 and back. tract fuses the requantization into the integer product (scale, clamp,
/// the `Relu` as a max with 0, cast to i8) when the product's scale is one number, so the
/// weights are quantized per tensor here.
struct Chain {
    /// The tensor the readers read (the `Relu`'s output, or the convolution's).
    output: String,
    /// The `Relu` (or `Clip` from 0) between, dropped from the graph (a `Relu` on i8
    /// instead).
    relu: Option<usize>,
    /// That node is a `Clip`: its upper bound does not commute with equalization's
    /// rescaling.
    bounded: bool,
    /// The convolutions that read it.
    readers: Vec<usize>,
}

/// The chosen convolutions whose output is read only by chosen convolutions (as their
/// input), by index.
fn chains(
    graph: &tract_onnx::pb::GraphProto,
    chosen: &HashSet<usize>,
    embedding: &str,
) -> HashMap<usize, Chain> {
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for x in &n.input {
            readers.entry(x.as_str()).or_default().push(i);
        }
    }
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let inits: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    // Read, and only as the input of chosen convolutions.
    let only_int8 = |t: &str| {
        t != embedding
            && !outputs.contains(t)
            && readers.get(t).is_some_and(|r| {
                r.iter().all(|&j| {
                    chosen.contains(&j) && graph.node[j].input[1..].iter().all(|x| x != t)
                })
            })
    };
    let mut chains = HashMap::new();
    for &i in chosen {
        let y = graph.node[i].output[0].as_str();
        if only_int8(y) {
            let readers = readers[y].clone();
            chains.insert(
                i,
                Chain {
                    output: y.to_string(),
                    relu: None,
                    bounded: false,
                    readers,
                },
            );
            continue;
        }
        if let Some([r]) = readers.get(y).map(Vec::as_slice)
            && relu_like(&graph.node[*r], &inits)
            && !outputs.contains(y)
            && y != embedding
            && only_int8(&graph.node[*r].output[0])
        {
            let output = graph.node[*r].output[0].clone();
            let relu = Some(*r);
            let bounded = graph.node[*r].op_type == "Clip";
            let readers = readers[output.as_str()].clone();
            chains.insert(
                i,
                Chain {
                    output,
                    relu,
                    bounded,
                    readers,
                },
            );
        }
    }
    chains
}

/// A `Relu`, or a `Clip` whose lower bound is a constant 0: on i8 with zero point 0 both
/// are a max with 0, since the int8 range of its output (calibrated after it, or a QDQ
/// model's quantizer) already saturates where its upper bound would.
fn relu_like(n: &NodeProto, inits: &HashMap<&str, &TensorProto>) -> bool {
    match n.op_type.as_str() {
        "Relu" => true,
        "Clip" => {
            let min = match n.input.get(1).filter(|m| !m.is_empty()) {
                Some(m) => inits
                    .get(m.as_str())
                    .and_then(|t| floats(t).ok())
                    .map(|t| t.1),
                None => n
                    .attribute
                    .iter()
                    .find(|a| a.name == "min")
                    .map(|a| vec![a.f]),
            };
            min.is_some_and(|v| v == [0.0])
        }
        _ => false,
    }
}

/// Adds the initializers `{tensor}.q_scale` (`scale`) and `{tensor}.q_zero_point` (0, i8)
/// and returns the scale's name.
fn scale_and_zero(initializers: &mut Vec<TensorProto>, tensor: &str, scale: f32) -> String {
    let name = format!("{tensor}.q_scale");
    initializers.push(f32_tensor(&name, &[], &[scale]));
    initializers.push(i8_tensor(&format!("{tensor}.q_zero_point"), &[], &[0]));
    name
}

/// Symmetric i8 weights with one scale for the whole tensor.
pub fn quantize_weights_per_tensor(w: &[f32]) -> (Vec<i8>, f32) {
    let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let s = if max > 0.0 { max / 127.0 } else { 1.0 };
    let q = w
        .iter()
        .map(|v| (v / s).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, s)
}

/// Symmetric i8 weights per output channel (axis 0): the quantized weights and one scale
/// per channel.
pub fn quantize_weights(w: &[f32], out: usize) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / out;
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(out);
    for row in w.chunks(per) {
        let max = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = if max > 0.0 { max / 127.0 } else { 1.0 };
        q.extend(
            row.iter()
                .map(|v| (v / s).round().clamp(-127.0, 127.0) as i8),
        );
        scales.push(s);
    }
    (q, scales)
}

/// Quantizes the convolutions and weight products `embedding` depends on (see the module
/// docs), calibrating activation ranges on `inputs` (already preprocessed inputs of a
/// model with one input of `shape`).
pub fn quantize(
    model: &ModelProto,
    embedding: &str,
    shape: &[usize],
    inputs: &[Vec<f32>],
) -> Result<(ModelProto, Summary)> {
    let inputs = inputs
        .iter()
        .map(|x| Ok(tvec![Tensor::from_shape(shape, x)?.into_tvalue()]))
        .collect::<Result<Vec<_>>>()?;
    quantize_inputs(model, embedding, &[f32::fact(shape).into()], &inputs)
}

/// [`quantize`] for a model of any inputs (a text encoder's token ids and mask): `facts`
/// describes them, each calibration sample gives them all.
pub fn quantize_inputs(
    model: &ModelProto,
    embedding: &str,
    facts: &[InferenceFact],
    inputs: &[TVec<TValue>],
) -> Result<(ModelProto, Summary)> {
    quantize_with(
        model,
        embedding,
        Ranges::Calibrate {
            facts,
            inputs,
            first_layer: true,
        },
    )
}

/// Where the activation ranges come from.
pub enum Ranges<'a> {
    /// Calibration: the model run on samples (`facts` describes its inputs, each sample
    /// gives them all).
    Calibrate {
        facts: &'a [InferenceFact],
        inputs: &'a [TVec<TValue>],
        /// Quantize the first convolution too, the one that reads the image (see the
        /// module docs).
        first_layer: bool,
    },
    /// A QDQ model's quantizers ([`strip_qdq`]). A layer whose input had none stays f32,
    /// one whose input had one is quantized (the first convolution included), and no
    /// equalization is done (it would change the ranges).
    Qdq(&'a Qdq),
}

/// Quantizes the convolutions and weight products `embedding` depends on (see the module
/// docs), with activation ranges from `ranges`.
pub fn quantize_with(
    model: &ModelProto,
    embedding: &str,
    ranges: Ranges,
) -> Result<(ModelProto, Summary)> {
    let mut model = model.clone();
    let mut summary = Summary {
        folded_constants: fold_constants(&mut model)?,
        folded_batch_norms: fold_batch_norms(&mut model)?,
        ..Summary::default()
    };
    match ranges {
        Ranges::Calibrate { inputs, .. } => {
            ensure!(!inputs.is_empty(), "no calibration samples");
            summary.calibration_samples = inputs.len();
        }
        Ranges::Qdq(qdq) => summary.qdq_ranges = qdq.pairs,
    }
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let inits: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let graph_inputs: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    let needed = ancestors(&model, embedding);
    let first_layer = match ranges {
        Ranges::Calibrate { first_layer, .. } => first_layer,
        Ranges::Qdq(_) => true,
    };
    let (mut chosen, mut products, mut grouped) = (Vec::new(), HashSet::new(), HashSet::new());
    for (i, n) in graph.node.iter().enumerate() {
        if !needed.contains(&i) {
            continue;
        }
        let kept = match n.op_type.as_str() {
            "Conv" => keep_f32(n, &inits, &graph_inputs, first_layer),
            "MatMul" => matmul::keep_f32(n, &inits),
            "Gemm" => matmul::gemm_keep_f32(n, &inits),
            _ => continue,
        };
        let kept = kept.or_else(|| match &ranges {
            Ranges::Qdq(q) if !q.ranges.contains_key(n.input[0].as_str()) => {
                Some("its input has no quantizer in the QDQ model")
            }
            _ => None,
        });
        match kept {
            Some(why) => {
                let constant = |t: Option<&String>| t.and_then(|t| inits.get(t.as_str()));
                if why == GROUPED && constant(n.input.get(1)).is_some_and(|w| w.dims.len() >= 3) {
                    grouped.insert(i);
                }
                summary.kept_f32.push((layer_name(n), why.to_string()))
            }
            None if n.op_type == "MatMul" || n.op_type == "Gemm" => {
                products.insert(i);
            }
            None => chosen.push(i),
        }
    }
    if chosen.is_empty() && products.is_empty() {
        bail!(
            "nothing to quantize: the backbone has no ordinary convolution past the first layer \
             and no matrix product with constant weights (kept in f32: {})",
            kept_by_reason(&summary.kept_f32)
                .iter()
                .map(|(why, layers)| format!("{} {why}", layers.len()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut observed: Vec<String> = Vec::new();
    for &i in chosen.iter().chain(&products) {
        let t = &graph.node[i].input[0];
        if !observed.contains(t) {
            observed.push(t.clone());
        }
    }
    let chosen: HashSet<usize> = chosen.into_iter().collect();
    let chains = chains(graph, &chosen, embedding);
    let ranges = match ranges {
        Ranges::Calibrate { facts, inputs, .. } => {
            // Exact in f32, so the ranges are calibrated after it.
            equalize::equalize(&mut model, &chains)?;
            calibrate(&model, facts, &observed, inputs)?
        }
        Ranges::Qdq(q) => q.ranges.clone(),
    };

    let graph = model.graph.as_ref().expect("checked above");
    let inits: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let skipped: HashSet<usize> = chains.values().filter_map(|c| c.relu).collect();
    let mut nodes = Vec::with_capacity(graph.node.len() + 2 * chosen.len());
    let mut initializers = Vec::new();
    let mut quantized_inputs: HashMap<String, String> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        if skipped.contains(&i) {
            continue;
        }
        if grouped.contains(&i) {
            // Computed in f32 on weights rounded to 8 bits, which the NNEF stores so.
            let w = inits[n.input[1].as_str()];
            let (w_shape, w_data) = floats(w)?;
            let stored = StoredI8::new(&layer_name(n), &w_shape, &w_data);
            let name = format!("{}.weight_rounded_i8", layer_name(n));
            let values = stored.values()?;
            let values = values.to_plain_array_view::<f32>()?;
            initializers.push(f32_tensor(
                &name,
                &w.dims,
                &values.iter().copied().collect::<Vec<_>>(),
            ));
            let mut n = n.clone();
            n.input[1] = name;
            nodes.push(n);
            summary.stored_i8.push(stored);
            continue;
        }
        if !chosen.contains(&i) && !products.contains(&i) {
            nodes.push(n.clone());
            continue;
        }
        let name = layer_name(n);
        let x = &n.input[0];
        let (x_lo, x_hi) = ranges[x];
        let sx = i8_params(x_lo, x_hi);
        let zx_name = format!("{x}.q_zero_point");
        let xq = match quantized_inputs.get(x) {
            Some(q) => q.clone(),
            None => {
                let q = format!("{x}.q_in");
                let sx_name = scale_and_zero(&mut initializers, x, sx);
                nodes.push(node(
                    "QuantizeLinear",
                    &format!("{x}.quantize"),
                    &[x, &sx_name, &zx_name],
                    &q,
                    Vec::new(),
                ));
                quantized_inputs.insert(x.clone(), q.clone());
                q
            }
        };
        let w = inits[n.input[1].as_str()];
        if products.contains(&i) {
            let xq = (xq.as_str(), sx, zx_name.as_str());
            if n.op_type == "Gemm" {
                matmul::rewrite_gemm(n, &name, xq, &inits, &mut nodes, &mut initializers)?;
            } else {
                matmul::rewrite(n, &name, xq, w, &mut nodes, &mut initializers)?;
            }
            summary.quantized_matmuls += 1;
            continue;
        }
        let (w_shape, w_data) = floats(w)?;
        let out = w_shape[0];
        let bias = match n.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => floats(inits[b.as_str()])?.1,
            None => vec![0.0; out],
        };
        let y = &n.output[0];
        let p = |s: &str| format!("{name}.{s}");
        if let Some(chain) = chains.get(&i) {
            // Every reader is an int8 convolution: the output stays i8, requantized in
            // the integer product's epilogue (see `Chain`).
            let t = &chain.output;
            let (t_lo, t_hi) = ranges[t];
            let sy = i8_params(t_lo, t_hi);
            let sy_name = scale_and_zero(&mut initializers, t, sy);
            let (wq, sw) = quantize_weights_per_tensor(&w_data);
            let bias_q: Vec<i32> = bias
                .iter()
                .map(|b| {
                    (b / (sx * sw))
                        .round()
                        .clamp(i32::MIN as f32, i32::MAX as f32) as i32
                })
                .collect();
            initializers.push(i8_tensor(&p("weight_q"), &w.dims, &wq));
            initializers.push(f32_tensor(&p("weight_scale"), &[], &[sw]));
            initializers.push(i8_tensor(&p("weight_zero_point"), &[], &[0]));
            initializers.push(i32_tensor(&p("bias_q"), &[out as i64], &bias_q));
            let tq = format!("{t}.q_in");
            let conv_out = if chain.relu.is_some() {
                format!("{t}.q_before_relu")
            } else {
                tq.clone()
            };
            nodes.push(node(
                "QLinearConv",
                &p("integer"),
                &[
                    &xq,
                    &format!("{x}.q_scale"),
                    &zx_name,
                    &p("weight_q"),
                    &p("weight_scale"),
                    &p("weight_zero_point"),
                    &sy_name,
                    &format!("{t}.q_zero_point"),
                    &p("bias_q"),
                ],
                &conv_out,
                n.attribute.clone(),
            ));
            if chain.relu.is_some() {
                // On i8 with zero point 0 this is a max with 0, which tract fuses into
                // the product's epilogue with the clamp.
                nodes.push(node("Relu", &p("relu"), &[&conv_out], &tq, Vec::new()));
            }
            quantized_inputs.insert(t.clone(), tq);
            summary.quantized_convs += 1;
            summary.chained_convs += 1;
            continue;
        }
        let (wq, sw) = quantize_weights(&w_data, out);
        // ConvInteger: i8 × i8 → i32, then one f32 scale and bias per channel. tract
        // runs the integer product on its i8 kernels and has no requantization to do
        // (a QLinearConv's output requantization costs three passes over the output:
        // scale, clamp, cast).
        let scale: Vec<f32> = sw.iter().map(|s| s * sx).collect();
        // In f16 precision where it fits, stored in 16 bits (as the scale).
        let bias = f16_precision(&bias, false);
        initializers.push(f32_tensor(&p("output_bias"), &[1, out as i64, 1, 1], &bias));
        let scaled = format!("{y}.scaled");
        integer_product(
            "ConvInteger",
            &name,
            (&xq, &zx_name),
            (&w.dims, &wq),
            (&[1, out as i64, 1, 1], &scale),
            n.attribute.clone(),
            &scaled,
            &mut nodes,
            &mut initializers,
        );
        nodes.push(node(
            "Add",
            &p("bias"),
            &[&scaled, &p("output_bias")],
            y,
            Vec::new(),
        ));
        summary.quantized_convs += 1;
    }
    let graph = model.graph.as_mut().expect("checked above");
    graph.node = nodes;
    graph.initializer.extend(initializers);
    drop_unused_initializers(&mut model);
    Ok((model, summary))
}

#[cfg(test)]
mod tests;
