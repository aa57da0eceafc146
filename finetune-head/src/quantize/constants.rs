//! Constants made plain before anything is quantized: what an exporter computes from
//! initializers becomes an initializer itself, so that the quantizer sees every weight.
//!
//! `torch.onnx.export` writes a weight that equals another one as `Identity(first)`
//! (an untrained torchvision ResNet18 reaches 16 of its 20 convolution biases that way;
//! `models/torchvision/README.md`), other exporters write weights as `Constant` nodes or
//! reshape and transpose them in the graph. Folded here:
//! - `Constant` (a tensor, or `value_float(s)` / `value_int(s)`) → an initializer;
//! - `Identity` of anything → its readers read the input directly (kept only where its
//!   output is a graph output that is not a constant);
//! - `Reshape`, `Flatten`, `Squeeze`, `Unsqueeze` of an initializer → the same values
//!   with the new shape; `Transpose` of an f32 initializer → the permuted values.
//!
//! Nodes are visited in the graph's (topological) order, so chains fold in one pass.

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;

use super::onnx::{drop_unused_initializers, f32_tensor, floats, i64_tensor};

/// Folds the constant nodes of `model` (see the module docs). Returns how many nodes
/// were removed. On an error the model is left as it was.
pub fn fold_constants(model: &mut ModelProto) -> Result<usize> {
    let graph = model.graph.as_mut().context("the model has no graph")?;
    let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
    // The initializers keep their order; folded constants come after them.
    let original: Vec<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let mut inits: HashMap<String, TensorProto> = graph
        .initializer
        .drain(..)
        .map(|t| (t.name.clone(), t))
        .collect();
    let mut order = original.clone();
    let mut renamed: HashMap<String, String> = HashMap::new();
    let mut kept = Vec::with_capacity(graph.node.len());
    let mut folded = 0;
    // The nodes are read, not consumed, so that an error can put everything back.
    let mut visit = |inits: &mut HashMap<String, TensorProto>| -> Result<()> {
        for node in &graph.node {
            let mut node = node.clone();
            for input in node.input.iter_mut() {
                if let Some(to) = renamed.get(input.as_str()) {
                    *input = to.clone();
                }
            }
            match fold_one(&node, inits, &outputs)? {
                Folded::No => kept.push(node),
                Folded::Initializer(t) => {
                    order.push(t.name.clone());
                    inits.insert(t.name.clone(), *t);
                    folded += 1;
                }
                Folded::Rename { from, to } => {
                    renamed.insert(from, to);
                    folded += 1;
                }
            }
        }
        Ok(())
    };
    if let Err(e) = visit(&mut inits) {
        graph.initializer = original
            .iter()
            .filter_map(|name| inits.remove(name))
            .collect();
        return Err(e);
    }
    graph.node = kept;
    graph.initializer = order
        .into_iter()
        .filter_map(|name| inits.remove(&name))
        .collect();
    drop_unused_initializers(model);
    Ok(folded)
}

enum Folded {
    No,
    Initializer(Box<TensorProto>),
    Rename { from: String, to: String },
}

impl Folded {
    fn initializer(t: TensorProto) -> Self {
        Folded::Initializer(Box::new(t))
    }
}

fn fold_one(
    node: &NodeProto,
    inits: &HashMap<String, TensorProto>,
    outputs: &[String],
) -> Result<Folded> {
    if (!node.domain.is_empty() && node.domain != "ai.onnx") || node.output.len() != 1 {
        return Ok(Folded::No);
    }
    let out = node.output[0].clone();
    let init = |k: usize| {
        node.input
            .get(k)
            .filter(|n| !n.is_empty())
            .and_then(|n| inits.get(n))
    };
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
    let with = |t: &TensorProto, dims: Vec<i64>| TensorProto {
        name: out.clone(),
        dims,
        ..t.clone()
    };
    Ok(match node.op_type.as_str() {
        "Constant" => match constant_value(node, &out)? {
            Some(t) => Folded::initializer(t),
            None => Folded::No,
        },
        "Identity" => match (outputs.contains(&out), init(0)) {
            (false, _) => Folded::Rename {
                from: out,
                to: node.input[0].clone(),
            },
            (true, Some(t)) => Folded::initializer(with(t, t.dims.clone())),
            (true, None) => Folded::No,
        },
        "Reshape" => match (init(0), init(1)) {
            (Some(t), Some(shape)) => {
                let allow_zero = attr("allowzero").is_some_and(|a| a.i != 0);
                let target = int64s(shape)?;
                Folded::initializer(with(t, reshape(&t.dims, &target, allow_zero)?))
            }
            _ => Folded::No,
        },
        "Flatten" => match init(0) {
            Some(t) => {
                let rank = t.dims.len() as i64;
                let axis = attr("axis").map_or(1, |a| a.i);
                let axis = if axis < 0 { axis + rank } else { axis };
                ensure!(
                    (0..=rank).contains(&axis),
                    "{}: Flatten axis out of range",
                    node.name
                );
                let (a, b) = t.dims.split_at(axis as usize);
                Folded::initializer(with(t, vec![a.iter().product(), b.iter().product()]))
            }
            None => Folded::No,
        },
        "Squeeze" | "Unsqueeze" => {
            let axes = match (attr("axes"), init(1), node.input.len()) {
                (Some(a), _, _) => Some(a.ints.clone()),
                (None, Some(t), _) => Some(int64s(t)?),
                // Squeeze with no axes drops every dimension of size 1.
                (None, None, 1) if node.op_type == "Squeeze" => None,
                _ => return Ok(Folded::No),
            };
            match init(0) {
                Some(t) if node.op_type == "Squeeze" => {
                    Folded::initializer(with(t, squeeze(&t.dims, axes.as_deref())?))
                }
                Some(t) => Folded::initializer(with(t, unsqueeze(&t.dims, &axes.unwrap())?)),
                None => Folded::No,
            }
        }
        "Transpose" => match init(0) {
            Some(t) if t.data_type == DataType::Float as i32 => {
                let (shape, values) = floats(t)?;
                let perm: Vec<usize> = match attr("perm") {
                    Some(a) => a.ints.iter().map(|&p| p as usize).collect(),
                    None => (0..shape.len()).rev().collect(),
                };
                let mut sorted = perm.clone();
                sorted.sort();
                ensure!(
                    sorted == (0..shape.len()).collect::<Vec<_>>(),
                    "{}: Transpose perm {perm:?} is not a permutation of {} axes",
                    node.name,
                    shape.len()
                );
                let permuted = tract_ndarray::ArrayD::from_shape_vec(shape, values)?
                    .permuted_axes(perm)
                    .as_standard_layout()
                    .into_owned();
                let dims: Vec<i64> = permuted.shape().iter().map(|&d| d as i64).collect();
                let values: Vec<f32> = permuted.iter().copied().collect();
                Folded::initializer(f32_tensor(&out, &dims, &values))
            }
            _ => Folded::No,
        },
        _ => Folded::No,
    })
}

/// A `Constant` node's value as an initializer named `out`, or `None` for the kinds
/// not folded (sparse tensors, strings).
fn constant_value(node: &NodeProto, out: &str) -> Result<Option<TensorProto>> {
    let Some(a) = node.attribute.first() else {
        bail!("the Constant node {:?} has no value", node.name)
    };
    Ok(match a.name.as_str() {
        "value" => a.t.clone().map(|t| TensorProto {
            name: out.into(),
            ..t
        }),
        "value_float" => Some(f32_tensor(out, &[], &[a.f])),
        "value_floats" => Some(f32_tensor(out, &[a.floats.len() as i64], &a.floats)),
        "value_int" => Some(i64_tensor(out, &[], &[a.i])),
        "value_ints" => Some(i64_tensor(out, &[a.ints.len() as i64], &a.ints)),
        _ => None,
    })
}

/// An integer initializer's values (a shape or a list of axes).
fn int64s(t: &TensorProto) -> Result<Vec<i64>> {
    let tensor =
        tract_onnx::tensor::load_tensor(&tract_onnx::data_resolver::FopenDataResolver, t, None)
            .with_context(|| format!("reading the initializer {:?}", t.name))?;
    let tensor = tensor.cast_to::<i64>()?;
    Ok(tensor
        .to_plain_array_view::<i64>()?
        .iter()
        .copied()
        .collect())
}

/// ONNX `Reshape`'s output shape: 0 copies the input's dimension (unless `allow_zero`),
/// one -1 takes what is left.
fn reshape(dims: &[i64], target: &[i64], allow_zero: bool) -> Result<Vec<i64>> {
    let total: i64 = dims.iter().product();
    let mut out: Vec<i64> = target
        .iter()
        .enumerate()
        .map(|(k, &d)| match d {
            0 if !allow_zero => dims
                .get(k)
                .copied()
                .context("Reshape: 0 past the input's rank"),
            d => Ok(d),
        })
        .collect::<Result<_>>()?;
    let unknown: Vec<usize> = (0..out.len()).filter(|&k| out[k] == -1).collect();
    ensure!(
        unknown.len() <= 1,
        "Reshape: more than one -1 in {target:?}"
    );
    let known: i64 = out.iter().filter(|&&d| d != -1).product();
    if let [k] = unknown[..] {
        ensure!(
            known > 0 && total % known == 0,
            "Reshape {dims:?} to {target:?}"
        );
        out[k] = total / known;
    }
    ensure!(
        out.iter().all(|&d| d >= 0) && out.iter().product::<i64>() == total,
        "Reshape: {dims:?} cannot take the shape {target:?}"
    );
    Ok(out)
}

fn axis(a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    ensure!(
        (-r..r).contains(&a),
        "axis {a} out of range for rank {rank}"
    );
    Ok(if a < 0 { a + r } else { a } as usize)
}

fn squeeze(dims: &[i64], axes: Option<&[i64]>) -> Result<Vec<i64>> {
    let drop: Vec<usize> = match axes {
        None => (0..dims.len()).filter(|&k| dims[k] == 1).collect(),
        Some(axes) => axes
            .iter()
            .map(|&a| axis(a, dims.len()))
            .collect::<Result<_>>()?,
    };
    ensure!(
        drop.iter().all(|&k| dims[k] == 1),
        "Squeeze: axes {drop:?} of {dims:?} are not all 1"
    );
    Ok((0..dims.len())
        .filter(|k| !drop.contains(k))
        .map(|k| dims[k])
        .collect())
}

fn unsqueeze(dims: &[i64], axes: &[i64]) -> Result<Vec<i64>> {
    let rank = dims.len() + axes.len();
    let mut at: Vec<usize> = axes.iter().map(|&a| axis(a, rank)).collect::<Result<_>>()?;
    at.sort();
    at.dedup();
    ensure!(at.len() == axes.len(), "Unsqueeze: repeated axes {axes:?}");
    let mut rest = dims.iter();
    Ok((0..rank)
        .map(|k| {
            if at.contains(&k) {
                1
            } else {
                *rest.next().unwrap()
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::super::onnx::node;
    use super::*;
    use tract_onnx::pb::{AttributeProto, GraphProto, ValueInfoProto};

    #[test]
    fn weights_computed_in_the_graph_become_initializers() {
        let mut perm = AttributeProto {
            name: "perm".into(),
            ints: vec![1, 0],
            ..Default::default()
        };
        perm.r#type = tract_onnx::pb::attribute_proto::AttributeType::Ints as i32;
        let mut value = AttributeProto {
            name: "value".into(),
            t: Some(i64_tensor("", &[1], &[-1])),
            ..Default::default()
        };
        value.r#type = tract_onnx::pb::attribute_proto::AttributeType::Tensor as i32;
        let mut model = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![f32_tensor("w", &[2, 3], &[1., 2., 3., 4., 5., 6.])],
                node: vec![
                    node("Transpose", "t", &["w"], "wt", vec![perm]),
                    node("Constant", "c", &[], "shape", vec![value]),
                    node("Reshape", "r", &["wt", "shape"], "flat", vec![]),
                    node("Identity", "i", &["flat"], "same", vec![]),
                    node("Add", "a", &["x", "same"], "y", vec![]),
                ],
                output: vec![ValueInfoProto {
                    name: "y".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(fold_constants(&mut model).unwrap(), 4);
        let g = model.graph.unwrap();
        assert_eq!(g.node.len(), 1);
        assert_eq!(g.node[0].input, vec!["x", "flat"]);
        // Only what a node still reads is kept: the transposed, reshaped weights.
        assert_eq!(g.initializer.len(), 1);
        let (shape, values) = floats(&g.initializer[0]).unwrap();
        assert_eq!((shape, values), (vec![6], vec![1., 4., 2., 5., 3., 6.]));
    }

    #[test]
    fn a_constant_that_does_not_fold_leaves_the_model_as_it_was() {
        let mut value = AttributeProto {
            name: "value".into(),
            t: Some(i64_tensor("", &[2], &[4, -1])),
            ..Default::default()
        };
        value.r#type = tract_onnx::pb::attribute_proto::AttributeType::Tensor as i32;
        let graph = GraphProto {
            initializer: vec![
                f32_tensor("w", &[2, 3], &[1., 2., 3., 4., 5., 6.]),
                f32_tensor("b", &[1], &[0.5]),
            ],
            node: vec![
                node("Identity", "i", &["b"], "b2", vec![]),
                node("Constant", "c", &[], "shape", vec![value]),
                // 6 values do not reshape to 4 rows: an error, after two nodes folded.
                node("Reshape", "r", &["w", "shape"], "bad", vec![]),
                node("Add", "a", &["bad", "b2"], "y", vec![]),
            ],
            output: vec![ValueInfoProto {
                name: "y".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut model = ModelProto {
            graph: Some(graph.clone()),
            ..Default::default()
        };
        assert!(fold_constants(&mut model).is_err());
        assert_eq!(model.graph.unwrap(), graph);
    }

    #[test]
    fn shapes_follow_onnx() {
        assert_eq!(reshape(&[2, 3, 4], &[0, -1], false).unwrap(), vec![2, 12]);
        assert!(reshape(&[2, 3, 4], &[4, 0, 2], true).is_err());
        assert!(reshape(&[2, 3], &[4, -1], false).is_err());
        assert!(reshape(&[2, 3], &[-1, -1], false).is_err());
        assert_eq!(squeeze(&[1, 3, 1, 2], None).unwrap(), vec![3, 2]);
        assert_eq!(squeeze(&[1, 3, 1, 2], Some(&[-2])).unwrap(), vec![1, 3, 2]);
        assert!(squeeze(&[1, 3], Some(&[1])).is_err());
        assert_eq!(unsqueeze(&[3, 2], &[0, -1]).unwrap(), vec![1, 3, 2, 1]);
        assert!(unsqueeze(&[3], &[0, 0]).is_err());
    }
}
