//! ONNX graph and tensor helpers of the quantization rewrites: who produces a tensor,
//! dead nodes and unused initializers dropped, initializers read and written, nodes
//! made, attributes read (those two also for the classifier's detection, `detect.rs`).

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use edgetune::nnef::{f16_exponent, pow2};
use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::f16;

/// Removes nodes whose outputs nothing reads (left behind by folding).
pub(super) fn drop_dead_nodes(model: &mut ModelProto) {
    let Some(graph) = model.graph.as_mut() else {
        return;
    };
    loop {
        let read: HashSet<String> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .chain(graph.output.iter().map(|o| o.name.clone()))
            .collect();
        let before = graph.node.len();
        graph
            .node
            .retain(|n| n.output.iter().any(|o| read.contains(o)));
        if graph.node.len() == before {
            return;
        }
    }
}

/// Which node computes each tensor (index into the graph's nodes).
pub(super) fn producers(graph: &tract_onnx::pb::GraphProto) -> HashMap<&str, usize> {
    graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect()
}

/// A node's integer attribute `name` (`default` when absent).
pub(crate) fn int_attr(node: &NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.i)
}

/// A node's float attribute `name` (`default` when absent).
pub(crate) fn float_attr(node: &NodeProto, name: &str, default: f32) -> f32 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.f)
}

/// A convolution's `group` attribute (1 when absent).
pub(super) fn group(conv: &NodeProto) -> i64 {
    int_attr(conv, "group", 1)
}

pub(super) fn drop_unused_initializers(model: &mut ModelProto) {
    let Some(graph) = model.graph.as_mut() else {
        return;
    };
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    let dropped: HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| !used.contains(&t.name))
        .map(|t| t.name.clone())
        .collect();
    graph.initializer.retain(|t| !dropped.contains(&t.name));
    // Old models also list initializers among the graph's inputs.
    graph.input.retain(|i| !dropped.contains(&i.name));
}

/// An initializer's values as f32 (row-major) and its shape.
pub(super) fn floats(t: &TensorProto) -> Result<(Vec<usize>, Vec<f32>)> {
    let tensor = tract_onnx::tensor::load_tensor(&FopenDataResolver, t, None)
        .with_context(|| format!("reading the initializer {:?}", t.name))?;
    let tensor = tensor.cast_to::<f32>()?;
    let view = tensor.to_plain_array_view::<f32>()?;
    Ok((view.shape().to_vec(), view.iter().copied().collect()))
}

fn raw_tensor(name: &str, ty: DataType, dims: &[i64], raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.to_vec(),
        data_type: ty as i32,
        name: name.into(),
        raw_data,
        ..Default::default()
    }
}

pub(super) fn f32_tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    raw_tensor(name, DataType::Float, dims, raw)
}

/// `values` times 2^e as f16, with `e` the exponent [`edgetune::nnef::f16_exponent`]
/// shares between them: their f16 form, as [`f16_precision`] rounds them and
/// [`super::store_in_f16`] stores them.
pub(super) fn scaled_f16(values: &[f32]) -> (i32, Vec<f16>) {
    let e = f16_exponent(values);
    (
        e,
        values.iter().map(|v| f16::from_f32(v * pow2(e))).collect(),
    )
}

/// `values` rounded to 11 significant bits, as an f16 times a power of two shared by
/// all of them ([`edgetune::nnef::f16_exponent`]), if every one of them then is a finite
/// f16, and for `normal` a normal one or zero (a scale, whose relative error must stay
/// 2^-11: a subnormal f16 has fewer bits); else unchanged. The bundle then stores them
/// in 16 bits, losslessly ([`super::store_in_f16`]). Used for the integer products'
/// per-channel scales and biases: their rounding is a tenth of the weights' own.
pub(super) fn f16_precision(values: &[f32], normal: bool) -> Vec<f32> {
    let (e, half) = scaled_f16(values);
    let fits = half
        .iter()
        .all(|h| h.is_finite() && (!normal || h.is_normal() || h.to_f32() == 0.0));
    if fits {
        half.iter().map(|h| h.to_f32() * pow2(-e)).collect()
    } else {
        values.to_vec()
    }
}

pub(super) fn i32_tensor(name: &str, dims: &[i64], v: &[i32]) -> TensorProto {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    raw_tensor(name, DataType::Int32, dims, raw)
}

pub(super) fn i64_tensor(name: &str, dims: &[i64], v: &[i64]) -> TensorProto {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    raw_tensor(name, DataType::Int64, dims, raw)
}

pub(super) fn i8_tensor(name: &str, dims: &[i64], v: &[i8]) -> TensorProto {
    let raw = v.iter().map(|&x| x as u8).collect();
    raw_tensor(name, DataType::Int8, dims, raw)
}

pub(super) fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: name.into(),
        op_type: op.into(),
        attribute: attrs,
        ..Default::default()
    }
}

/// A `Cast` of `input` to f32.
fn cast_to_f32(name: &str, input: &str, output: &str) -> NodeProto {
    let to = AttributeProto {
        name: "to".into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
        i: DataType::Float as i64,
        ..Default::default()
    };
    node("Cast", name, &[input], output, vec![to])
}

/// An integer product and its way back to f32, as both rewrites write it: `op`
/// (`ConvInteger` or `MatMulInteger`, with `attrs`) of the quantized input `xq` (zero
/// point `zx`) and the i8 weights `wq` (shape `w_dims`, zero point 0) into i32, `Cast` to
/// f32, `Mul` by `scale` (the input's scale times each output channel's weight scale,
/// shaped `scale_dims` to broadcast, rounded to f16 precision where it fits:
/// [`f16_precision`]) into `y`. Names are `name.*` and `y.*`.
#[allow(clippy::too_many_arguments)]
pub(super) fn integer_product(
    op: &str,
    name: &str,
    (xq, zx): (&str, &str),
    (w_dims, wq): (&[i64], &[i8]),
    (scale_dims, scale): (&[i64], &[f32]),
    attrs: Vec<AttributeProto>,
    y: &str,
    nodes: &mut Vec<NodeProto>,
    initializers: &mut Vec<TensorProto>,
) {
    let p = |s: &str| format!("{name}.{s}");
    initializers.push(i8_tensor(&p("weight_q"), w_dims, wq));
    initializers.push(i8_tensor(&p("weight_zero_point"), &[], &[0]));
    let scale = f16_precision(scale, true);
    initializers.push(f32_tensor(&p("output_scale"), scale_dims, &scale));
    let acc = format!("{y}.i32");
    let accf = format!("{y}.i32_as_f32");
    nodes.push(node(
        op,
        &p("integer"),
        &[xq, &p("weight_q"), zx, &p("weight_zero_point")],
        &acc,
        attrs,
    ));
    nodes.push(cast_to_f32(&p("to_f32"), &acc, &accf));
    nodes.push(node(
        "Mul",
        &p("scale"),
        &[&accf, &p("output_scale")],
        y,
        Vec::new(),
    ));
}
