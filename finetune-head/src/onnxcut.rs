//! Cutting an ONNX model at a tensor, in ONNX: the graph keeps what computes that tensor
//! and returns it as its only output.
//!
//! tract can select any tensor as an output when it loads a model; ONNX Runtime can only
//! return a graph's declared outputs. To run a classifier's backbone with ONNX Runtime
//! (parity tests, benches) the model is cut here first, at the embedding that
//! [`crate::detect::find_embedding`] finds.
//!
//! ```
//! use edgetune_testkit::testmodels;
//! use finetune_head::onnxcut;
//! use prost::Message;
//! use tract_onnx::pb::ModelProto;
//!
//! let bytes = testmodels::mobilenet(&testmodels::MobileNetConfig {
//!     resolution: 32,
//!     ..Default::default()
//! });
//! let model = ModelProto::decode(bytes.as_slice()).unwrap();
//! let backbone = onnxcut::cut(&model, "embedding").unwrap();
//! let graph = backbone.graph.as_ref().unwrap();
//! assert_eq!(graph.output.len(), 1);
//! assert_eq!(graph.output[0].name, "embedding");
//! assert!(graph.node.iter().all(|n| n.name != "classifier"));
//! ```

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail};
use prost::Message;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{GraphProto, ModelProto, NodeProto, TypeProto, ValueInfoProto, type_proto};

/// `proto` with `tensor` as its graph's only output, and without the nodes, initializers,
/// initializer-backed inputs and `value_info` entries that no longer contribute to it.
///
/// The output carries `tensor`'s type and shape from the graph's `value_info` (or inputs,
/// outputs, initializers) when the model declares them; otherwise its element type is
/// inferred from the nodes that compute it and its shape is left out, which ONNX
/// Runtime accepts. Graph inputs that are not initializers are kept even when unused, so
/// the model's interface does not change.
pub fn cut(proto: &ModelProto, tensor: &str) -> Result<ModelProto> {
    let graph = proto.graph.as_ref().context("the model has no graph")?;
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let is_input = graph.input.iter().any(|i| i.name == tensor);
    if !producer.contains_key(tensor) && !is_input && !initializers.contains(tensor) {
        bail!(
            "cannot cut at {tensor:?}: no node of the graph outputs it{}",
            near(graph, tensor)
        );
    }

    // Walk back from the tensor; a node's subgraphs (If, Loop, Scan) may read the outer
    // scope, so every name they read counts as needed too.
    let mut keep = vec![false; graph.node.len()];
    let mut needed: HashSet<&str> = HashSet::new();
    let mut stack = vec![tensor];
    while let Some(t) = stack.pop() {
        if !needed.insert(t) {
            continue;
        }
        if let Some(&i) = producer.get(t)
            && !keep[i]
        {
            keep[i] = true;
            let node = &graph.node[i];
            stack.extend(
                node.input
                    .iter()
                    .map(String::as_str)
                    .filter(|s| !s.is_empty()),
            );
            stack.extend(subgraph_reads(node));
        }
    }

    let mut out = graph.clone();
    out.node = graph
        .node
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(n, _)| n.clone())
        .collect();
    out.initializer.retain(|t| needed.contains(t.name.as_str()));
    out.sparse_initializer.retain(|t| {
        t.values
            .as_ref()
            .is_some_and(|v| needed.contains(v.name.as_str()))
    });
    out.input
        .retain(|i| !initializers.contains(i.name.as_str()) || needed.contains(i.name.as_str()));
    let produced: HashSet<&str> = out
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    out.value_info
        .retain(|v| produced.contains(v.name.as_str()) && v.name != tensor);
    out.output = vec![output_info(graph, tensor)?];
    Ok(ModelProto {
        graph: Some(out),
        ..proto.clone()
    })
}

/// [`cut`] on ONNX bytes, returning ONNX bytes (what `Backbone::from_onnx` loads).
pub fn cut_bytes(onnx: &[u8], tensor: &str) -> Result<Vec<u8>> {
    let proto = ModelProto::decode(onnx).context("not an ONNX model (protobuf)")?;
    Ok(cut(&proto, tensor)?.encode_to_vec())
}

/// Names read by a node's subgraph attributes, recursively (over-approximated: names
/// produced inside the subgraph are included too, which at worst keeps a node more).
fn subgraph_reads(node: &NodeProto) -> Vec<&str> {
    fn graph_reads<'a>(g: &'a GraphProto, into: &mut Vec<&'a str>) {
        for n in &g.node {
            into.extend(n.input.iter().map(String::as_str).filter(|s| !s.is_empty()));
            for a in &n.attribute {
                a.g.iter()
                    .chain(&a.graphs)
                    .for_each(|g| graph_reads(g, into));
            }
        }
    }
    let mut reads = Vec::new();
    for a in &node.attribute {
        a.g.iter()
            .chain(&a.graphs)
            .for_each(|g| graph_reads(g, &mut reads));
    }
    reads
}

/// The declared type of `tensor`, else one with its inferred element type and no shape.
fn output_info(graph: &GraphProto, tensor: &str) -> Result<ValueInfoProto> {
    let declared = graph
        .value_info
        .iter()
        .chain(&graph.output)
        .chain(&graph.input)
        .find(|v| v.name == tensor && has_elem_type(v));
    if let Some(v) = declared {
        return Ok(v.clone());
    }
    let elem_type = elem_type(graph, tensor, &mut HashSet::new()).with_context(|| {
        format!(
            "cannot cut at {tensor:?}: its element type is neither declared (value_info) nor \
             inferable from the nodes that compute it"
        )
    })?;
    Ok(ValueInfoProto {
        name: tensor.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn has_elem_type(v: &ValueInfoProto) -> bool {
    matches!(
        v.r#type.as_ref().and_then(|t| t.value.as_ref()),
        Some(type_proto::Value::TensorType(t)) if t.elem_type != DataType::Undefined as i32
    )
}

/// The element type of `tensor`: declared, an initializer's, or from its producer (ops
/// whose output type is fixed or an attribute; otherwise that of its first typed input,
/// which holds for the arithmetic, convolution, pooling, normalization and shape-moving
/// ops a backbone ends with).
fn elem_type(graph: &GraphProto, tensor: &str, seen: &mut HashSet<String>) -> Option<i32> {
    if !seen.insert(tensor.to_string()) {
        return None;
    }
    let declared = graph
        .value_info
        .iter()
        .chain(&graph.input)
        .chain(&graph.output)
        .find(|v| v.name == tensor && has_elem_type(v));
    if let Some(Some(type_proto::Value::TensorType(t))) =
        declared.map(|v| v.r#type.as_ref().and_then(|t| t.value.as_ref()))
    {
        return Some(t.elem_type);
    }
    if let Some(t) = graph.initializer.iter().find(|t| t.name == tensor) {
        return Some(t.data_type);
    }
    let node = graph
        .node
        .iter()
        .find(|n| n.output.iter().any(|o| o == tensor))?;
    let attr_int = |name: &str| node.attribute.iter().find(|a| a.name == name).map(|a| a.i);
    let attr_tensor_type = |name: &str| {
        node.attribute
            .iter()
            .find(|a| a.name == name && a.r#type == AttributeType::Tensor as i32)
            .and_then(|a| a.t.as_ref())
            .map(|t| t.data_type)
    };
    let first_output = node.output.first().is_some_and(|o| o == tensor);
    let fixed = match node.op_type.as_str() {
        "Cast" | "RandomNormal" | "RandomUniform" | "EyeLike" => {
            attr_int("to").or(attr_int("dtype")).map(|t| t as i32)
        }
        "Constant" => attr_tensor_type("value"),
        "ConstantOfShape" => Some(attr_tensor_type("value").unwrap_or(DataType::Float as i32)),
        "Shape" | "Size" | "NonZero" | "ArgMax" | "ArgMin" => Some(DataType::Int64 as i32),
        "TopK" if !first_output => Some(DataType::Int64 as i32),
        "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" | "Not" | "And" | "Or"
        | "Xor" | "IsNaN" | "IsInf" => Some(DataType::Bool as i32),
        "DequantizeLinear" => Some(DataType::Float as i32),
        "QuantizeLinear" => Some(
            node.input
                .get(2)
                .filter(|z| !z.is_empty())
                .and_then(|z| elem_type(graph, z, seen))
                .unwrap_or(DataType::Uint8 as i32),
        ),
        "DynamicQuantizeLinear" if first_output => Some(DataType::Uint8 as i32),
        "DynamicQuantizeLinear" => Some(DataType::Float as i32),
        "MatMulInteger" | "ConvInteger" => Some(DataType::Int32 as i32),
        "Where" => return node.input.get(1).and_then(|x| elem_type(graph, x, seen)),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    node.input
        .iter()
        .filter(|i| !i.is_empty())
        .find_map(|i| elem_type(graph, i, seen))
}

/// "; similar names: …" for a tensor name that is not in the graph.
fn near(graph: &GraphProto, name: &str) -> String {
    let mut near: Vec<(usize, &str)> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter())
        .map(|o| (strsim::levenshtein(o, name), o.as_str()))
        .filter(|(d, o)| *d <= (name.len() / 4).max(2) || o.contains(name))
        .collect();
    near.sort();
    near.dedup();
    if near.is_empty() {
        return String::new();
    }
    let near: Vec<&str> = near.into_iter().take(5).map(|(_, n)| n).collect();
    format!("; similar names: {}", near.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgetune_testkit::testmodels::{self, Builder, MobileNetConfig, ResNetConfig};

    fn decode(bytes: &[u8]) -> ModelProto {
        ModelProto::decode(bytes).unwrap()
    }

    fn output_elem_type(m: &ModelProto) -> i32 {
        let o = &m.graph.as_ref().unwrap().output[0];
        let type_proto::Value::TensorType(t) = o.r#type.as_ref().unwrap().value.as_ref().unwrap();
        t.elem_type
    }

    #[test]
    fn cuts_a_cnn_at_its_embedding() {
        let m = decode(&testmodels::resnet(&ResNetConfig {
            resolution: 32,
            stages: vec![(8, 1), (16, 1)],
            ..Default::default()
        }));
        let cut = cut(&m, "embedding").unwrap();
        let g = cut.graph.as_ref().unwrap();
        let before = m.graph.as_ref().unwrap();
        assert_eq!(g.output.len(), 1);
        assert_eq!(g.output[0].name, "embedding");
        assert_eq!(output_elem_type(&cut), DataType::Float as i32);
        assert_eq!(g.node.len(), before.node.len() - 1);
        assert!(g.node.iter().all(|n| n.op_type != "Gemm"));
        assert!(
            g.initializer
                .iter()
                .all(|t| !t.name.starts_with("classifier"))
        );
        assert_eq!(g.initializer.len(), before.initializer.len() - 2);
        assert_eq!(g.input, before.input);
        assert_eq!(cut.opset_import, m.opset_import);
    }

    #[test]
    fn cut_graph_runs_and_equals_the_original_tensor() {
        use tract_onnx::prelude::*;
        let m = decode(&testmodels::mobilenet(&MobileNetConfig::tiny()));
        let input: Vec<f32> = (0..3 * 32 * 32).map(|i| (i % 7) as f32 * 0.1).collect();
        let want =
            crate::convert::reference_embedding(&m, &[1, 3, 32, 32], "embedding", &input).unwrap();
        let cut = cut(&m, "embedding").unwrap();
        let plan = tract_onnx::onnx()
            .model_for_proto_model(&cut)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = Tensor::from_shape(&[1, 3, 32, 32], &input).unwrap();
        let got = plan.run(tvec![x.into_tvalue()]).unwrap();
        let got = got[0].to_plain_array_view::<f32>().unwrap();
        assert_eq!(got.shape(), &[1, 16]);
        assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= 1e-6));
    }

    #[test]
    fn keeps_a_declared_shape_and_infers_types_through_fixed_ops() {
        let mut g = Builder::new("t", 1);
        let x = g.input("x", DataType::Float, &[1, 4]);
        let y = g.relu("r", &x);
        let s = g.node("Shape", "shape", &[&y], &[]);
        let z = g.linear("lin", &y, 4, 2);
        g.output(&z, "out", DataType::Float, &[1, 2]);
        let m = decode(&g.finish());
        assert_eq!(
            output_elem_type(&cut(&m, &s).unwrap()),
            DataType::Int64 as i32
        );
        let r = cut(&m, "r").unwrap();
        assert_eq!(output_elem_type(&r), DataType::Float as i32);
        assert_eq!(r.graph.as_ref().unwrap().node.len(), 1);
        // A declared output keeps its shape.
        let o = cut(&m, "out").unwrap();
        assert_eq!(
            o.graph.as_ref().unwrap().output,
            m.graph.as_ref().unwrap().output
        );
    }

    #[test]
    fn unknown_tensor_is_refused_with_similar_names() {
        let m = decode(&testmodels::mobilenet(&MobileNetConfig {
            resolution: 32,
            ..Default::default()
        }));
        let e = cut(&m, "embeding").unwrap_err().to_string();
        assert!(
            e.contains("\"embeding\"") && e.contains("similar names: embedding"),
            "{e}"
        );
    }
}
