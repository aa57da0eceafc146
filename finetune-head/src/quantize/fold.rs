//! Rewrites before quantization: batch normalizations folded into the convolutions
//! they follow, and a QDQ model's `DequantizeLinear → Conv → QuantizeLinear`
//! sandwiches folded into `QLinearConv`.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result};
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};

use super::onnx::{
    drop_dead_nodes, drop_unused_initializers, f32_tensor, floats, group, i8_tensor, i32_tensor,
    node, producers, u8_tensor,
};

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
        let eps = bn
            .attribute
            .iter()
            .find(|a| a.name == "epsilon")
            .map_or(1e-5, |a| a.f);
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

/// Turns each `DequantizeLinear → Conv → QuantizeLinear` sandwich of a model that
/// arrives quantized in ONNX's QDQ form (ONNX Runtime's `quantize_static`, for one) into
/// the `QLinearConv` it stands for, which tract runs on integer kernels; tract itself
/// would run the convolution in f32. Returns how many were folded.
///
/// Folded when: the convolution is an ordinary one (group 1), its input and weights each come from a
/// `DequantizeLinear` whose scale and zero point are constants (the weights' quantized
/// values too), its bias is absent, an f32 constant (quantized to i32 at input scale ×
/// weight scale), or a `DequantizeLinear` of an i32 constant, and its output goes to a
/// single `QuantizeLinear` only.
pub fn fold_qdq(model: &mut ModelProto) -> Result<usize> {
    let graph = model.graph.as_mut().context("the model has no graph")?;
    let mut folded = 0;
    let mut extra = Vec::new();
    let mut removed: HashSet<usize> = HashSet::new();
    let mut replaced: Vec<(usize, NodeProto)> = Vec::new();
    {
        let inits: HashMap<&str, &TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let producer = producers(graph);
        let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        let dq = |tensor: &str| -> Option<&NodeProto> {
            let n = &graph.node[*producer.get(tensor)?];
            (n.op_type == "DequantizeLinear"
                && n.input[1..].iter().all(|i| inits.contains_key(i.as_str())))
            .then_some(n)
        };
        for (i, conv) in graph.node.iter().enumerate() {
            let grouped = group(conv) != 1;
            // Depthwise and grouped: tract's integer kernels are slower than its f32 ones
            // there, so those sandwiches stay as they are (dequantize, f32, quantize).
            if conv.op_type != "Conv" || grouped || outputs.contains(conv.output[0].as_str()) {
                continue;
            }
            let readers: Vec<usize> = graph
                .node
                .iter()
                .enumerate()
                .filter(|(_, n)| n.input.contains(&conv.output[0]))
                .map(|(k, _)| k)
                .collect();
            let [q] = readers[..] else { continue };
            let q_node = &graph.node[q];
            let q_const = q_node.input[1..]
                .iter()
                .all(|i| inits.contains_key(i.as_str()));
            if q_node.op_type != "QuantizeLinear" || !q_const || q_node.input[0] != conv.output[0] {
                continue;
            }
            let (Some(dx), Some(dw)) = (dq(&conv.input[0]), dq(&conv.input[1])) else {
                continue;
            };
            if !inits.contains_key(dw.input[0].as_str()) {
                continue;
            }
            let name = if conv.name.is_empty() {
                conv.output[0].clone()
            } else {
                conv.name.clone()
            };
            let p = |s: &str| format!("{name}.{s}");
            // Zero points are optional in QDQ and required by QLinearConv.
            let zero_point = |n: &NodeProto, what: &str, extra: &mut Vec<TensorProto>| match n
                .input
                .get(2)
                .filter(|z| !z.is_empty())
            {
                Some(z) => z.clone(),
                None => {
                    let t = if what == "w" {
                        i8_tensor(&p("w_zero_point"), &[], &[0])
                    } else {
                        u8_tensor(&p(&format!("{what}_zero_point")), &[], &[0])
                    };
                    let z = t.name.clone();
                    extra.push(t);
                    z
                }
            };
            let bias = match conv.input.get(2).filter(|b| !b.is_empty()) {
                None => None,
                Some(b) => match (inits.get(b.as_str()), dq(b)) {
                    (Some(t), _) => {
                        // An f32 bias: quantize at input scale × weight scale.
                        let (_, bias) = floats(t)?;
                        let (_, sx) = floats(inits[dx.input[1].as_str()])?;
                        let (_, sw) = floats(inits[dw.input[1].as_str()])?;
                        let bq: Vec<i32> = bias
                            .iter()
                            .enumerate()
                            .map(|(c, b)| {
                                let s = sx[0] * sw[if sw.len() == 1 { 0 } else { c }];
                                (b / s).round() as i32
                            })
                            .collect();
                        let t = i32_tensor(&p("bias_q"), &[bq.len() as i64], &bq);
                        let name = t.name.clone();
                        extra.push(t);
                        Some(name)
                    }
                    (None, Some(db)) if inits.contains_key(db.input[0].as_str()) => {
                        Some(db.input[0].clone())
                    }
                    _ => continue,
                },
            };
            let zx = zero_point(dx, "x", &mut extra);
            let zw = zero_point(dw, "w", &mut extra);
            let zy = zero_point(q_node, "y", &mut extra);
            let mut inputs = vec![
                dx.input[0].as_str(),
                &dx.input[1],
                &zx,
                &dw.input[0],
                &dw.input[1],
                &zw,
                &q_node.input[1],
                &zy,
            ];
            if let Some(b) = &bias {
                inputs.push(b);
            }
            let qconv = node(
                "QLinearConv",
                &p("qlinear"),
                &inputs,
                &q_node.output[0],
                conv.attribute.clone(),
            );
            replaced.push((i, qconv));
            removed.insert(q);
            folded += 1;
        }
    }
    for (i, n) in replaced {
        graph.node[i] = n;
    }
    let mut k = 0;
    graph.node.retain(|_| {
        k += 1;
        !removed.contains(&(k - 1))
    });
    graph.initializer.extend(extra);
    drop_dead_nodes(model);
    drop_unused_initializers(model);
    Ok(folded)
}
