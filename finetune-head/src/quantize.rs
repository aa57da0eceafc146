//! Post-training static int8 quantization of a backbone, done on the ONNX graph before
//! tract imports it.
//!
//! What is quantized is chosen for what tract runs fast on ARM, not for coverage (see
//! ../shared/NOTES-tract-ort.md): tract has integer kernels for `QLinearConv` and
//! `ConvInteger`, but runs a `DequantizeLinear → Conv → QuantizeLinear` sandwich in f32,
//! and its depthwise convolution has no integer kernel worth using. So:
//! - batch normalizations that follow a convolution are folded into it first;
//! - every ordinary convolution (group 1, weights in an initializer) except the first
//!   one, which reads the image itself, becomes `QuantizeLinear → ConvInteger → Cast →
//!   Mul → Add`: activations i8 with a per-tensor scale from the calibration range,
//!   weights i8 per output channel, both symmetric (zero point 0), the i32 product
//!   scaled and biased per channel in f32;
//! - depthwise and grouped convolutions, the first convolution, and everything else stay
//!   f32.
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

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail, ensure};
use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;

/// What quantization did to the graph.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Batch normalizations folded into the convolution before them.
    pub folded_batch_norms: usize,
    /// Convolutions now running on integers (`ConvInteger`).
    pub quantized_convs: usize,
    /// Convolutions left in f32, by reason (e.g. "depthwise" → 17).
    pub kept_f32: Vec<(String, usize)>,
    /// Samples the activation ranges were taken from.
    pub calibration_samples: usize,
}

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

/// Removes nodes whose outputs nothing reads (left behind by folding).
fn drop_dead_nodes(model: &mut ModelProto) {
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

/// Why a convolution stays f32, or `None` if it is quantized.
fn keep_f32(
    node: &NodeProto,
    inits: &HashMap<&str, &TensorProto>,
    graph_inputs: &HashSet<&str>,
) -> Option<&'static str> {
    let grouped = group(node) != 1;
    let w = node.input.get(1).and_then(|w| inits.get(w.as_str()));
    let b_ok = node
        .input
        .get(2)
        .is_none_or(|b| b.is_empty() || inits.contains_key(b.as_str()));
    if grouped {
        Some("depthwise or grouped (no fast integer kernel in tract)")
    } else if w.is_none_or(|w| w.dims.len() != 4) || !b_ok {
        Some("weights or bias not a constant")
    } else if graph_inputs.contains(node.input[0].as_str()) {
        Some("first layer (reads the image itself)")
    } else {
        None
    }
}

/// Which node computes each tensor (index into the graph's nodes).
fn producers(graph: &tract_onnx::pb::GraphProto) -> HashMap<&str, usize> {
    graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect()
}

/// A convolution's `group` attribute (1 when absent).
fn group(conv: &NodeProto) -> i64 {
    conv.attribute
        .iter()
        .find(|a| a.name == "group")
        .map_or(1, |a| a.i)
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

/// Activation range `[lo, hi]` of each tensor, over the calibration inputs.
fn calibrate(
    model: &ModelProto,
    shape: &[usize],
    tensors: &[String],
    inputs: &[Vec<f32>],
) -> Result<HashMap<String, (f32, f32)>> {
    let mut m = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(model)
        .context("tract cannot import the model to calibrate it")?;
    m.set_input_fact(0, f32::fact(shape).into())?;
    m.select_outputs_by_name(tensors.iter().map(String::as_str))
        .context("observing the quantized layers' inputs and outputs")?;
    let plan = m.into_optimized()?.into_runnable()?;
    let mut ranges: HashMap<String, (f32, f32)> = HashMap::new();
    for (k, input) in inputs.iter().enumerate() {
        let out = plan
            .run(tvec![Tensor::from_shape(shape, input)?.into_tvalue()])
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

/// Quantizes the convolutions `embedding` depends on (see the module docs), calibrating
/// activation ranges on `inputs` (already preprocessed model inputs of `shape`).
pub fn quantize(
    model: &ModelProto,
    embedding: &str,
    shape: &[usize],
    inputs: &[Vec<f32>],
) -> Result<(ModelProto, Summary)> {
    ensure!(!inputs.is_empty(), "no calibration samples");
    let mut model = model.clone();
    let mut summary = Summary {
        folded_batch_norms: fold_batch_norms(&mut model)?,
        calibration_samples: inputs.len(),
        ..Summary::default()
    };
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let inits: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let graph_inputs: HashSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    let needed = ancestors(&model, embedding);
    let mut chosen = Vec::new();
    let mut kept: HashMap<&'static str, usize> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        if n.op_type != "Conv" || !needed.contains(&i) {
            continue;
        }
        match keep_f32(n, &inits, &graph_inputs) {
            Some(why) => *kept.entry(why).or_default() += 1,
            None => chosen.push(i),
        }
    }
    summary.kept_f32 = kept.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    summary.kept_f32.sort();
    if chosen.is_empty() {
        bail!(
            "nothing to quantize: the backbone has no ordinary convolution past the first layer \
             (kept in f32: {:?})",
            summary.kept_f32
        );
    }
    let mut observed: Vec<String> = Vec::new();
    for &i in &chosen {
        let t = &graph.node[i].input[0];
        if !observed.contains(t) {
            observed.push(t.clone());
        }
    }
    let ranges = calibrate(&model, shape, &observed, inputs)?;

    let graph = model.graph.as_ref().expect("checked above");
    let mut nodes = Vec::with_capacity(graph.node.len() + 2 * chosen.len());
    let mut initializers = Vec::new();
    let mut quantized_inputs: HashMap<String, String> = HashMap::new();
    let chosen: HashSet<usize> = chosen.into_iter().collect();
    for (i, n) in graph.node.iter().enumerate() {
        if !chosen.contains(&i) {
            nodes.push(n.clone());
            continue;
        }
        let name = if n.name.is_empty() {
            n.output[0].clone()
        } else {
            n.name.clone()
        };
        let x = &n.input[0];
        let (x_lo, x_hi) = ranges[x];
        let (sx, zx) = (i8_params(x_lo, x_hi), 0i8);
        let (sx_name, zx_name) = (format!("{x}.q_scale"), format!("{x}.q_zero_point"));
        let xq = match quantized_inputs.get(x) {
            Some(q) => q.clone(),
            None => {
                let q = format!("{x}.q_in");
                initializers.push(f32_tensor(&sx_name, &[], &[sx]));
                initializers.push(i8_tensor(&zx_name, &[], &[zx]));
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
        let (w_shape, w_data) = floats(w)?;
        let out = w_shape[0];
        let (wq, sw) = quantize_weights(&w_data, out);
        let bias = match n.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => floats(inits[b.as_str()])?.1,
            None => vec![0.0; out],
        };
        let y = &n.output[0];
        let p = |s: &str| format!("{name}.{s}");
        // ConvInteger: i8 × i8 → i32, then one f32 scale and bias per channel. tract
        // runs the integer product on its i8 kernels and has no requantization to do
        // (a QLinearConv's output requantization costs three passes over the output:
        // scale, clamp, cast).
        initializers.push(i8_tensor(&p("weight_q"), &w.dims, &wq));
        initializers.push(i8_tensor(&p("weight_zero_point"), &[], &[0]));
        let scale: Vec<f32> = sw.iter().map(|s| s * sx).collect();
        initializers.push(f32_tensor(
            &p("output_scale"),
            &[1, out as i64, 1, 1],
            &scale,
        ));
        initializers.push(f32_tensor(&p("output_bias"), &[1, out as i64, 1, 1], &bias));
        let acc = format!("{y}.i32");
        let accf = format!("{y}.i32_as_f32");
        let scaled = format!("{y}.scaled");
        nodes.push(node(
            "ConvInteger",
            &p("integer"),
            &[&xq, &p("weight_q"), &zx_name, &p("weight_zero_point")],
            &acc,
            n.attribute.clone(),
        ));
        let mut cast = node("Cast", &p("to_f32"), &[&acc], &accf, Vec::new());
        cast.attribute.push(AttributeProto {
            name: "to".into(),
            r#type: tract_onnx::pb::attribute_proto::AttributeType::Int as i32,
            i: DataType::Float as i64,
            ..Default::default()
        });
        nodes.push(cast);
        nodes.push(node(
            "Mul",
            &p("scale"),
            &[&accf, &p("output_scale")],
            &scaled,
            Vec::new(),
        ));
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

fn drop_unused_initializers(model: &mut ModelProto) {
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
fn floats(t: &TensorProto) -> Result<(Vec<usize>, Vec<f32>)> {
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

fn f32_tensor(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    raw_tensor(name, DataType::Float, dims, raw)
}

fn i32_tensor(name: &str, dims: &[i64], v: &[i32]) -> TensorProto {
    let raw = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    raw_tensor(name, DataType::Int32, dims, raw)
}

fn i8_tensor(name: &str, dims: &[i64], v: &[i8]) -> TensorProto {
    let raw = v.iter().map(|&x| x as u8).collect();
    raw_tensor(name, DataType::Int8, dims, raw)
}

fn u8_tensor(name: &str, dims: &[i64], v: &[u8]) -> TensorProto {
    raw_tensor(name, DataType::Uint8, dims, v.to_vec())
}

fn node(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_scales_are_symmetric() {
        assert_eq!(i8_params(-1.0, 3.0), 3.0 / 127.0);
        assert_eq!(i8_params(-4.0, 2.0), 4.0 / 127.0);
        // A constant zero tensor gets a harmless scale.
        assert_eq!(i8_params(0.0, 0.0), 1.0);
    }

    #[test]
    fn weights_are_symmetric_per_channel() {
        let w = [1.0, -0.5, 0.25, 0.0, 0.0, 0.0, -2.0, 2.0, 1.0];
        let (q, s) = quantize_weights(&w, 3);
        assert_eq!(s, vec![1.0 / 127.0, 1.0, 2.0 / 127.0]);
        assert_eq!(&q[..3], &[127, -64, 32]);
        assert_eq!(&q[3..6], &[0, 0, 0]);
        assert_eq!(&q[6..], &[-127, 127, 64]);
    }
}
