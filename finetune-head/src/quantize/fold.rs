//! A rewrite before quantization: batch normalizations folded into the convolutions they
//! follow.

use anyhow::{Context, Result};
use tract_onnx::pb::ModelProto;

use super::onnx::{drop_unused_initializers, f32_tensor, floats};

/// Folds every `BatchNormalization` that alone reads a convolution's output into that
/// convolution's weights and bias. Returns how many were folded.
pub fn fold_batch_norms(model: &mut ModelProto) -> Result<usize> {
    let graph = model.graph.as_mut().context("the model has no graph")?;
    let mut folded = 0;
    let mut i = 0;
    while i < graph.node.len() {
        let bn = &graph.node[i];
        if bn.op_type != "BatchNormalization" || bn.input.len() != 5 || bn.output.len() != 1 {
            i += 1;
            continue;
        }
        let x = bn.input[0].clone();
        let readers = graph.node.iter().filter(|n| n.input.contains(&x)).count();
        let is_output = graph.output.iter().any(|o| o.name == x);
        let Some(c) = graph
            .node
            .iter()
            .position(|n| n.op_type == "Conv" && n.output.first() == Some(&x))
        else {
            i += 1;
            continue;
        };
        let init = |name: &str| graph.initializer.iter().find(|t| t.name == name);
        let conv = &graph.node[c];
        let w = conv.input.get(1).and_then(|n| init(n));
        let params: Option<Vec<_>> = bn.input[1..].iter().map(|n| init(n)).collect();
        let (Some(w), Some(params), 1, false) = (w, params, readers, is_output) else {
            i += 1;
            continue;
        };
        let (w_shape, w_data) = floats(w)?;
        let out = *w_shape.first().context("a convolution weight of rank 0")?;
        let p: Vec<Vec<f32>> = params
            .into_iter()
            .map(|t| floats(t).map(|f| f.1))
            .collect::<Result<_>>()?;
        if p.iter().any(|t| t.len() != out) {
            i += 1;
            continue;
        }
        let eps = super::onnx::float_attr(bn, "epsilon", 1e-5);
        let [gamma, beta, mean, var] = [0, 1, 2, 3].map(|k| &p[k]);
        let bias = match conv.input.get(2).filter(|n| !n.is_empty()) {
            Some(b) => floats(init(b).context("a convolution bias that is not an initializer")?)?.1,
            None => vec![0.0; out],
        };
        let per = w_data.len() / out;
        let mut w_new = w_data;
        let mut b_new = vec![0.0f32; out];
        for o in 0..out {
            let s = gamma[o] / (var[o] + eps).sqrt();
            w_new[o * per..(o + 1) * per]
                .iter_mut()
                .for_each(|v| *v *= s);
            b_new[o] = (bias[o] - mean[o]) * s + beta[o];
        }
        let conv_name = if conv.name.is_empty() { &x } else { &conv.name };
        let w_name = format!("{conv_name}.weight_bn_folded");
        let b_name = format!("{conv_name}.bias_bn_folded");
        let dims = w.dims.clone();
        let y = bn.output[0].clone();
        graph.initializer.push(f32_tensor(&w_name, &dims, &w_new));
        graph
            .initializer
            .push(f32_tensor(&b_name, &[out as i64], &b_new));
        let conv = &mut graph.node[c];
        conv.input.truncate(2);
        conv.input[1] = w_name;
        conv.input.push(b_name);
        conv.output[0] = y;
        graph.node.remove(i);
        folded += 1;
    }
    drop_unused_initializers(model);
    Ok(folded)
}
