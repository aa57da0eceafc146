//! Finding a pre-trained model's embedding: the input of its trailing classifier.
//!
//! Walking back from the graph's first output: an optional `Softmax`/`LogSoftmax`, then
//! either a `Gemm` whose weights are constants, or an `Add` of a constant bias to a
//! `MatMul` by a constant matrix. The tensor that layer reads is the embedding; its
//! weights can seed the device's head (`--keep-head`). `--embedding NAME` overrides the
//! search with a tensor name or a node name (its first output).

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};
use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;

use crate::quantize::onnx::{float_attr, int_attr};

/// What to do when no classifier is found.
const HINT: &str = "pass --embedding NODE_OR_TENSOR to name the embedding";

/// The classifier found at the end of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifier {
    /// Name of the classifier's node (the Gemm, or the MatMul).
    pub node: String,
    /// The tensor the classifier reads: the embedding.
    pub embedding: String,
    /// Embedding size D.
    pub dim: usize,
    /// Number of classes C.
    pub classes: usize,
    /// Weights, class-major `[C][D]` (the layout of a linear `edgetune::Head`).
    pub weight: Vec<f32>,
    /// Biases `[C]` (zeros when the model has none).
    pub bias: Vec<f32>,
}

impl Classifier {
    /// The class this classifier picks for `embedding` (of size [`Classifier::dim`]).
    pub fn top1(&self, embedding: &[f32]) -> usize {
        let logits: Vec<f32> = self
            .weight
            .chunks(self.dim)
            .zip(&self.bias)
            .map(|(w, b)| w.iter().zip(embedding).map(|(w, x)| w * x).sum::<f32>() + b)
            .collect();
        edgetune::math::argmax(&logits).map_or(0, |(c, _)| c)
    }
}

/// Where the embedding is, and the classifier when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The tensor to cut the graph at.
    pub tensor: String,
    /// The classifier behind it (absent with `--embedding` on a model without one).
    pub classifier: Option<Classifier>,
}

struct Graph<'a> {
    producer: HashMap<&'a str, &'a NodeProto>,
    constants: HashMap<&'a str, &'a TensorProto>,
    model: &'a ModelProto,
}

impl<'a> Graph<'a> {
    fn new(model: &'a ModelProto) -> Result<Self> {
        let graph = model.graph.as_ref().context("the model has no graph")?;
        let mut producer = HashMap::new();
        let mut constants: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        for n in &graph.node {
            for o in &n.output {
                producer.insert(o.as_str(), n);
            }
            let value = || {
                n.attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref())
            };
            if let (true, Some(o), Some(t)) = (n.op_type == "Constant", n.output.first(), value()) {
                constants.insert(o.as_str(), t);
            }
        }
        Ok(Graph {
            producer,
            constants,
            model,
        })
    }

    /// The value of `name` as f32, if it is a constant: an initializer, a `Constant`
    /// node, or a `DequantizeLinear` of constants (a model quantized in QDQ form).
    fn constant(&self, name: &str) -> Result<Option<Tensor>> {
        if let Some(t) = self.constants.get(name) {
            let tensor = tract_onnx::tensor::load_tensor(&FopenDataResolver, t, None)
                .with_context(|| format!("reading the constant {name:?}"))?;
            return Ok(Some(tensor.cast_to::<f32>()?.into_owned()));
        }
        let Some(dq) = self
            .producer
            .get(name)
            .filter(|n| n.op_type == "DequantizeLinear" && n.input.len() >= 2)
        else {
            return Ok(None);
        };
        let (Some(x), Some(scale)) = (self.constant(&dq.input[0])?, self.constant(&dq.input[1])?)
        else {
            return Ok(None);
        };
        let zero_point = match dq.input.get(2).filter(|z| !z.is_empty()) {
            Some(z) => match self.constant(z)? {
                Some(t) => Some(t),
                None => return Ok(None),
            },
            None => None,
        };
        let shape = x.shape().to_vec();
        let per = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect())
        };
        let scale = per(&scale)?;
        let zp = zero_point
            .as_ref()
            .map(per)
            .transpose()?
            .unwrap_or(vec![0.0]);
        let axis = int_attr(dq, "axis", 1);
        let axis = if axis < 0 {
            axis + shape.len() as i64
        } else {
            axis
        } as usize;
        let inner: usize = shape.iter().skip(axis + 1).product();
        let channels = shape.get(axis).copied().unwrap_or(1);
        let pick = |v: &[f32], i: usize| {
            if v.len() == 1 {
                v[0]
            } else {
                v[(i / inner.max(1)) % channels.max(1)]
            }
        };
        let values: Vec<f32> = per(&x)?
            .iter()
            .enumerate()
            .map(|(i, q)| (q - pick(&zp, i)) * pick(&scale, i))
            .collect();
        Ok(Some(Tensor::from_shape(&shape, &values)?))
    }

    fn outputs(&self) -> Vec<&'a str> {
        self.model
            .graph
            .iter()
            .flat_map(|g| g.output.iter().map(|o| o.name.as_str()))
            .collect()
    }
}

fn describe(node: Option<&NodeProto>) -> String {
    match node {
        Some(n) => format!("a {} node ({:?})", n.op_type, n.name),
        None => "a graph input or constant".to_string(),
    }
}

/// Finds the classifier at the end of `model`.
pub fn find_classifier(model: &ModelProto) -> Result<Classifier> {
    let g = Graph::new(model)?;
    let outputs = g.outputs();
    let out = *outputs.first().context("the model has no outputs")?;
    let mut node = g.producer.get(out).copied();
    // Look through a trailing softmax and, in a QDQ model, the quantize/dequantize pair
    // after the classifier.
    while let Some(n) = node.filter(|n| {
        matches!(
            n.op_type.as_str(),
            "Softmax" | "LogSoftmax" | "QuantizeLinear" | "DequantizeLinear"
        )
    }) {
        node = n
            .input
            .first()
            .and_then(|i| g.producer.get(i.as_str()).copied());
    }
    match node {
        Some(n) if n.op_type == "Gemm" => gemm(&g, n),
        Some(n) if n.op_type == "Add" => matmul_add(&g, n),
        other => bail!(
            "no classifier found: the output {out:?} comes from {}, not from a Gemm or a MatMul + Add \
             (optionally followed by Softmax); {HINT}",
            describe(other)
        ),
    }
}

/// The constant 2-D weight matrix `name` read by `node`, or why it is not one.
fn matrix(g: &Graph, name: &str, node: &NodeProto) -> Result<tract_ndarray::Array2<f32>> {
    let w = g.constant(name)?.with_context(|| {
        format!("{} {:?}: its weights {name:?} are not constant, so it is not a trained classifier; {HINT}", node.op_type, node.name)
    })?;
    ensure!(
        w.rank() == 2,
        "{} {:?}: weights of rank {}",
        node.op_type,
        node.name,
        w.rank()
    );
    Ok(w.to_plain_array_view::<f32>()?
        .into_dimensionality::<tract_ndarray::Ix2>()?
        .to_owned())
}

fn gemm(g: &Graph, n: &NodeProto) -> Result<Classifier> {
    ensure!(
        n.input.len() >= 2,
        "Gemm {:?} has {} inputs",
        n.name,
        n.input.len()
    );
    ensure!(
        int_attr(n, "transA", 0) == 0,
        "Gemm {:?} transposes its input (transA=1): not a classifier over an embedding",
        n.name
    );
    let (alpha, beta) = (float_attr(n, "alpha", 1.0), float_attr(n, "beta", 1.0));
    let w = matrix(g, &n.input[1], n)?;
    // Class-major [C][D]: B is [C][D] with transB=1, else [D][C].
    let w = if int_attr(n, "transB", 0) == 1 {
        w
    } else {
        w.reversed_axes()
    };
    let (classes, dim) = w.dim();
    let weight: Vec<f32> = w.iter().map(|v| v * alpha).collect();
    let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
        Some(b) => bias(g, b, classes, &n.name)?
            .into_iter()
            .map(|v| v * beta)
            .collect(),
        None => vec![0.0; classes],
    };
    Ok(Classifier {
        node: n.name.clone(),
        embedding: n.input[0].clone(),
        dim,
        classes,
        weight,
        bias,
    })
}

fn bias(g: &Graph, name: &str, classes: usize, node: &str) -> Result<Vec<f32>> {
    let b = g
        .constant(name)?
        .with_context(|| format!("{node:?}: its bias {name:?} is not constant"))?;
    let v: Vec<f32> = b.to_plain_array_view::<f32>()?.iter().copied().collect();
    match v.len() {
        1 => Ok(vec![v[0]; classes]),
        n if n == classes => Ok(v),
        n => bail!("{node:?}: bias of {n} values for {classes} classes"),
    }
}

fn matmul_add(g: &Graph, add: &NodeProto) -> Result<Classifier> {
    let (mm, b) = add
        .input
        .iter()
        .enumerate()
        .find_map(|(i, x)| {
            let n = g.producer.get(x.as_str()).filter(|n| n.op_type == "MatMul")?;
            Some((*n, add.input.get(1 - i)?))
        })
        .with_context(|| format!("no classifier found: the output comes from an Add ({:?}) that is not MatMul + bias; {HINT}", add.name))?;
    ensure!(
        mm.input.len() == 2,
        "MatMul {:?} has {} inputs",
        mm.name,
        mm.input.len()
    );
    let w = matrix(g, &mm.input[1], mm)?.reversed_axes();
    let (classes, dim) = w.dim();
    Ok(Classifier {
        node: mm.name.clone(),
        embedding: mm.input[0].clone(),
        dim,
        classes,
        weight: w.iter().copied().collect(),
        bias: bias(g, b, classes, &add.name)?,
    })
}

/// The embedding of `model`: the tensor `name` (a tensor, or a node whose first output
/// it is) when given, else the input of the trailing classifier.
pub fn find_embedding(model: &ModelProto, name: Option<&str>) -> Result<Embedding> {
    let Some(name) = name else {
        let c = find_classifier(model)?;
        return Ok(Embedding {
            tensor: c.embedding.clone(),
            classifier: Some(c),
        });
    };
    let g = Graph::new(model)?;
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let tensor = if g.producer.contains_key(name) || graph.input.iter().any(|i| i.name == name) {
        name.to_string()
    } else if let Some(n) = graph.node.iter().find(|n| n.name == name) {
        n.output
            .first()
            .with_context(|| format!("node {name:?} has no output"))?
            .clone()
    } else {
        let names = graph
            .node
            .iter()
            .flat_map(|n| std::iter::once(&n.name).chain(&n.output));
        let mut near: Vec<(usize, &str)> = names
            .map(|n| (strsim::levenshtein(n, name), n.as_str()))
            .filter(|(d, n)| similar(*d, n, name))
            .collect();
        near.sort();
        near.dedup();
        let near: Vec<&str> = near.into_iter().take(5).map(|(_, n)| n).collect();
        let near = if near.is_empty() {
            String::new()
        } else {
            format!("; similar names: {}", near.join(", "))
        };
        bail!("--embedding {name:?}: the model has no tensor or node of that name{near}");
    };
    // Keep the classifier if it reads exactly this tensor.
    let classifier = find_classifier(model)
        .ok()
        .filter(|c| c.embedding == tensor);
    Ok(Embedding { tensor, classifier })
}

/// A typo away (edit distance within a quarter of the name, at least 2) or containing it.
fn similar(distance: usize, candidate: &str, name: &str) -> bool {
    distance <= (name.len() / 4).max(2) || (name.len() > 2 && candidate.contains(name))
}
