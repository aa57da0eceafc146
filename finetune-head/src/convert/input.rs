//! The model's input as the bundle records it: one image or feature tensor, or a text
//! encoder's token inputs, with the shape and layout the device feeds.

use anyhow::{Context, Result, bail, ensure};
use edgetune::bundle::Layout;
use tract_onnx::pb::ModelProto;
use tract_onnx::pb::type_proto::Value;
use tract_onnx::prelude::*;

use super::Options;

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
pub(super) enum Role {
    Ids,
    Mask,
    TypeIds,
}

/// A text encoder's inputs (`input_ids`, and optionally `attention_mask` and
/// `token_type_ids`), in the graph's order, with the sequence length.
#[derive(Debug, Clone)]
pub(super) struct Text {
    roles: Vec<Role>,
    names: Vec<String>,
    dt: DatumType,
    /// The sequence length.
    pub(super) seq: usize,
}

impl Text {
    fn facts(&self) -> Vec<InferenceFact> {
        self.roles
            .iter()
            .map(|_| InferenceFact::dt_shape(self.dt, [1, self.seq]))
            .collect()
    }

    pub(super) fn name(&self, role: Role) -> Option<String> {
        self.roles
            .iter()
            .position(|r| *r == role)
            .map(|i| self.names[i].clone())
    }

    /// The graph's inputs for `ids` padded with `pad_id`.
    pub(super) fn tensors(&self, ids: &[i64], pad_id: i64) -> Result<TVec<TValue>> {
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

/// The model's input: one tensor, or a text encoder's token inputs.
pub(super) struct Input {
    /// The text encoder's inputs, when the model is one.
    pub text: Option<Text>,
    /// The input's name (the token ids' for a text encoder).
    pub name: String,
    /// Its shape, batch included.
    pub shape: Vec<usize>,
    /// What tract is told of each fed input.
    pub facts: Vec<InferenceFact>,
    /// How the device lays a sample out.
    pub layout: Layout,
}

impl Input {
    /// The input of `proto` as `opts` shape it.
    pub(super) fn of(proto: &ModelProto, opts: &Options) -> Result<Input> {
        let text = text_inputs(proto, opts.input_shape.as_deref())?;
        let (name, shape) = match &text {
            Some(t) => (t.name(Role::Ids).expect("found above"), vec![1, t.seq]),
            None => input_shape(proto, opts.input_shape.as_deref())?,
        };
        let facts: Vec<InferenceFact> = match &text {
            Some(t) => t.facts(),
            None => vec![f32::fact(&shape).into()],
        };
        let layout = match (opts.layout, shape.len()) {
            _ if text.is_some() => Layout::Tokens,
            (Some(l), _) => l,
            (None, 4) => Layout::Nchw,
            (None, 2) => Layout::Features,
            (None, n) => bail!("input of rank {n}: pass --layout"),
        };
        Ok(Input {
            text,
            name,
            shape,
            facts,
            layout,
        })
    }

    /// The element type the manifest records: f32, or the token ids' type.
    pub(super) fn dtype(&self) -> String {
        match &self.text {
            Some(t) if t.dt == i32::datum_type() => "i32".into(),
            Some(_) => "i64".into(),
            None => "f32".into(),
        }
    }
}
