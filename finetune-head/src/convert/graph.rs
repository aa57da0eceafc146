//! The backbone graph: the ONNX model cut at the embedding, typed and decluttered with
//! tract, written as NNEF; and [`Reference`] (and `TextReference` for a text encoder),
//! tract's run of an ONNX graph that the written backbone is checked against.

use anyhow::{Context, Result, ensure};
use edgetune::bundle::Pooling;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use super::input::Input;

/// The ONNX graph cut at `tensor`, typed and decluttered for `shape`, and the size of the
/// embedding there.
pub(super) fn backbone_graph(
    proto: &ModelProto,
    facts: &[InferenceFact],
    tensor: &str,
    text: bool,
) -> Result<(TypedModel, usize, bool)> {
    let model = graph_at(proto, facts, &[tensor])?;
    let shape = facts
        .first()
        .and_then(|f| f.shape.as_concrete_finite().ok().flatten())
        .map(|s| s.to_vec())
        .unwrap_or_default();
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

/// The backbone as a bundle's section: gzipped NNEF, through edgetune's framework (int8
/// operators included).
pub(super) fn write_nnef(typed: &TypedModel) -> Result<Vec<u8>> {
    edgetune::nnef::write_model(typed).context("writing the backbone as NNEF")
}

/// tract's import of an ONNX graph with its inputs as `facts` describe them and `outputs`
/// (any of its tensors) as its outputs: what the backbone, the references and the int8
/// calibration each build on.
pub(crate) fn graph_at(
    proto: &ModelProto,
    facts: &[InferenceFact],
    outputs: &[&str],
) -> Result<InferenceModel> {
    let mut model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(proto)
        .context("tract cannot import the model")?;
    for (i, fact) in facts.iter().enumerate() {
        model
            .set_input_fact(i, fact.clone())
            .context("setting the input shape")?;
    }
    model
        .select_outputs_by_name(outputs.iter().copied())
        .with_context(|| match outputs {
            [one] => format!("cutting the graph at {one:?}"),
            _ => format!("cutting the graph at {outputs:?}"),
        })?;
    Ok(model)
}

/// [`graph_at`], optimized and planned to run.
pub(crate) fn plan_at(
    proto: &ModelProto,
    facts: &[InferenceFact],
    outputs: &[&str],
) -> Result<Arc<TypedRunnableModel>> {
    graph_at(proto, facts, outputs)?
        .into_optimized()?
        .into_runnable()
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
        let plan = plan_at(proto, &[f32::fact(shape).into()], &[tensor])?;
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

/// tract's run of a text encoder's ONNX graph cut at `tensor`, on token ids padded as the
/// device pads them, pooled as the device pools (a sequence output) or as it is.
pub(super) struct TextReference<'a> {
    plan: Arc<TypedRunnableModel>,
    input: &'a Input,
    pooling: Option<Pooling>,
    pad_id: i64,
    size: usize,
}

impl<'a> TextReference<'a> {
    pub(super) fn new(
        proto: &ModelProto,
        input: &'a Input,
        tensor: &str,
        pooling: Option<Pooling>,
        pad_id: i64,
        size: usize,
    ) -> Result<Self> {
        let plan = plan_at(proto, &input.facts, &[tensor])?;
        Ok(TextReference {
            plan,
            input,
            pooling,
            pad_id,
            size,
        })
    }

    /// The embedding of one sentence's token ids.
    pub(super) fn embed(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let text = self.input.text.as_ref().context("not a text encoder")?;
        let out = self.plan.run(text.tensors(ids, self.pad_id)?)?;
        let seq_out: Vec<f32> = out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        let mut want = vec![0.0f32; self.size];
        match self.pooling {
            Some(p) => edgetune::backbone::pool(p, &seq_out, self.size, ids.len(), &mut want),
            None => want.copy_from_slice(&seq_out),
        }
        Ok(want)
    }
}
