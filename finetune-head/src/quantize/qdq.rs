//! A model that arrives quantized in ONNX's QDQ form (ONNX Runtime's `quantize_static`,
//! for one) is taken back to f32, and what its quantizers said is kept as activation
//! ranges. [`super::quantize_with`] then quantizes it with those ranges, by the same
//! rewrite and onto the same integer path as `--quantize int8`, with no calibration
//! samples.
//!
//! Run as it is, tract computes a `DequantizeLinear → Conv → QuantizeLinear` sandwich in
//! f32 between a dequantization and a quantization, and a `QLinearConv` with u8
//! activations through unfused passes over its output. On the Pi 5 CPU model that cost
//! 4× the f32 bundle on torchvision's MobileNetV2 (README, Performance).

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail, ensure};
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};

use super::onnx::{drop_dead_nodes, drop_unused_initializers, f32_tensor, floats, node};

/// What [`strip_qdq`] took out of a model quantized in QDQ form.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Qdq {
    /// The range `[lo, hi]` each quantizer stood for, by the f32 tensor in its place.
    pub ranges: HashMap<String, (f32, f32)>,
    /// `QuantizeLinear → DequantizeLinear` pairs on activations taken out.
    pub pairs: usize,
    /// Quantized constants (weights, biases) now f32 initializers.
    pub constants: usize,
    /// `Clip`s to `[0, hi]` put back where a quantizer's range starts at 0: an exporter
    /// drops the `Relu` (or `Clip`) before such a quantizer, since it clamps at 0 itself.
    pub clips: usize,
    /// Quantize or dequantize nodes left as they were (a quantizer read by anything other
    /// than dequantizers, or one whose parameters are not constants): tract runs those.
    pub left: usize,
}

/// Takes the quantizers out of `model` (see the module docs). `None` when it has none,
/// and then `model` is unchanged.
pub fn strip_qdq(model: &mut ModelProto) -> Result<Option<Qdq>> {
    let graph = model.graph.as_mut().context("the model has no graph")?;
    let is_qdq =
        |n: &NodeProto| matches!(n.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear");
    if !graph.node.iter().any(is_qdq) {
        return Ok(None);
    }
    let mut qdq = Qdq::default();
    let inits: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let constant_params = |n: &NodeProto| {
        n.input[1..]
            .iter()
            .all(|i| i.is_empty() || inits.contains_key(i.as_str()))
    };
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for x in &n.input {
            readers.entry(x.as_str()).or_default().push(i);
        }
    }
    let producer = super::onnx::producers(graph);

    let mut removed: HashSet<usize> = HashSet::new();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    // The tensor each removed dequantizer's output is now.
    let mut renamed: HashMap<String, String> = HashMap::new();
    // A removed quantizer's place: the Clip put back there, if any.
    let mut replaced: HashMap<usize, NodeProto> = HashMap::new();
    // A node whose output is renamed (old, new): it now writes a graph output.
    let mut outputs_renamed: HashMap<usize, (String, String)> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        if n.op_type == "DequantizeLinear"
            && n.input.len() >= 2
            && constant_params(n)
            && let Some(x) = inits.get(n.input[0].as_str())
        {
            // A quantized constant: the f32 values it stands for.
            let values = dequantize(n, x, &inits)?;
            new_inits.push(f32_tensor(&n.output[0], &x.dims, &values));
            removed.insert(i);
            qdq.constants += 1;
            continue;
        }
        if n.op_type != "QuantizeLinear" || n.input.len() < 2 || !constant_params(n) {
            continue;
        }
        let q_out = n.output[0].as_str();
        let dqs = readers.get(q_out).map_or(&[][..], Vec::as_slice);
        let pairs_only = !dqs.is_empty()
            && !outputs.contains(q_out)
            && dqs.iter().all(|&d| {
                let dq = &graph.node[d];
                dq.op_type == "DequantizeLinear"
                    && dq.input[0] == q_out
                    && dq.input[1..] == n.input[1..]
            });
        if !pairs_only {
            continue;
        }
        // A graph output keeps its name: the pair becomes a node that writes it.
        let output = match dqs {
            [d] if outputs.contains(graph.node[*d].output[0].as_str()) => {
                Some(graph.node[*d].output[0].clone())
            }
            _ if dqs
                .iter()
                .any(|&d| outputs.contains(graph.node[d].output[0].as_str())) =>
            {
                continue;
            }
            _ => None,
        };
        let (lo, hi) = range(n, &inits)?;
        // Its input, after the pairs before it (requantization) are taken out.
        let a = renamed.get(&n.input[0]).unwrap_or(&n.input[0]).clone();
        let a = a.as_str();
        let clipped_already = producer
            .get(a)
            .is_some_and(|&p| super::relu_like(&graph.node[p], &inits));
        let carrier = if lo == 0.0 && !clipped_already {
            let clip = output.clone().unwrap_or_else(|| format!("{a}.qdq_clip"));
            let (min, max) = (format!("{clip}.min"), format!("{clip}.max"));
            new_inits.push(f32_tensor(&min, &[], &[0.0]));
            new_inits.push(f32_tensor(&max, &[], &[hi]));
            replaced.insert(i, node("Clip", &clip, &[a, &min, &max], &clip, Vec::new()));
            qdq.clips += 1;
            clip
        } else if let Some(out) = &output {
            // The node that computes the pair's input writes the output's name instead
            // (so a classifier is still seen as the output's producer), or an Identity.
            match producer.get(a) {
                Some(&p) if readers.get(a).is_some_and(|r| r == &[i]) && !outputs.contains(a) => {
                    outputs_renamed.insert(p, (a.to_string(), out.clone()));
                    removed.insert(i);
                }
                _ => {
                    replaced.insert(i, node("Identity", out, &[a], out, Vec::new()));
                }
            }
            out.clone()
        } else {
            removed.insert(i);
            a.to_string()
        };
        for &d in dqs {
            if output.is_none() {
                renamed.insert(graph.node[d].output[0].clone(), carrier.clone());
            }
            removed.insert(d);
        }
        let r = qdq.ranges.entry(carrier).or_insert((lo, hi));
        *r = (r.0.min(lo), r.1.max(hi));
        qdq.pairs += 1;
    }

    let old = std::mem::take(&mut graph.node);
    for (i, mut n) in old.into_iter().enumerate() {
        if let Some(clip) = replaced.remove(&i) {
            n = clip;
        } else if removed.contains(&i) {
            continue;
        }
        for x in &mut n.input {
            if let Some(to) = renamed.get(x.as_str()) {
                x.clone_from(to);
            }
        }
        if let Some((from, to)) = outputs_renamed.get(&i) {
            for o in n.output.iter_mut().filter(|o| *o == from) {
                o.clone_from(to);
            }
        }
        graph.node.push(n);
    }
    graph.initializer.extend(new_inits);
    drop_dead_nodes(model);
    drop_unused_initializers(model);
    let graph = model.graph.as_ref().expect("checked above");
    qdq.left = graph.node.iter().filter(|n| is_qdq(n)).count();
    Ok(Some(qdq))
}

/// A parameter of a quantize or dequantize node (scale: input 1, zero point: input 2) as
/// f32 values, `None` when it is absent.
fn param(n: &NodeProto, k: usize, inits: &HashMap<&str, &TensorProto>) -> Result<Option<Vec<f32>>> {
    match n.input.get(k).filter(|x| !x.is_empty()) {
        None => Ok(None),
        Some(x) => Ok(Some(floats(inits[x.as_str()])?.1)),
    }
}

/// The node's `axis` attribute (default 1) for a tensor of `rank`.
fn axis(n: &NodeProto, rank: usize) -> Result<usize> {
    let a = super::onnx::int_attr(n, "axis", 1);
    let r = rank as i64;
    ensure!(
        (-r..r).contains(&a),
        "{} {:?}: axis {a} for a tensor of rank {rank}",
        n.op_type,
        n.name
    );
    Ok(a.rem_euclid(r.max(1)) as usize)
}

/// Refuses what this reading of the scales does not cover.
fn check_scales(n: &NodeProto, scale: &[f32], zero: Option<&[f32]>) -> Result<()> {
    if n.attribute
        .iter()
        .any(|a| a.name == "block_size" && a.i != 0)
    {
        bail!(
            "{} {:?} quantizes in blocks (block_size), which edgetune does not read",
            n.op_type,
            n.name
        );
    }
    ensure!(
        !scale.is_empty() && scale.iter().all(|s| s.is_finite() && *s > 0.0),
        "{} {:?} has a scale that is not a positive number: {scale:?}",
        n.op_type,
        n.name
    );
    if let Some(z) = zero {
        ensure!(
            z.len() == scale.len(),
            "{} {:?} has {} scales but {} zero points",
            n.op_type,
            n.name,
            scale.len(),
            z.len()
        );
    }
    Ok(())
}

/// The f32 values a `DequantizeLinear` of the constant `x` gives: `(x - zero) × scale`,
/// per tensor or along the node's axis.
fn dequantize(
    n: &NodeProto,
    x: &TensorProto,
    inits: &HashMap<&str, &TensorProto>,
) -> Result<Vec<f32>> {
    let (shape, q) = floats(x)?;
    let scale = param(n, 1, inits)?.context("no scale")?;
    let zero = param(n, 2, inits)?;
    check_scales(n, &scale, zero.as_deref())?;
    let at = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
    if scale.len() == 1 {
        let z = zero.as_ref().map_or(0.0, |z| z[0]);
        return Ok(q.iter().map(|v| (v - z) * scale[0]).collect());
    }
    let ax = axis(n, shape.len())?;
    ensure!(
        shape.get(ax) == Some(&scale.len()),
        "DequantizeLinear {:?}: {} scales along axis {ax} of a {shape:?} constant",
        n.name,
        scale.len()
    );
    let inner: usize = shape[ax + 1..].iter().product();
    Ok(q.iter()
        .enumerate()
        .map(|(k, v)| {
            let c = (k / inner) % scale.len();
            (v - zero.as_ref().map_or(0.0, |z| at(z, c))) * at(&scale, c)
        })
        .collect())
}

/// The range `[lo, hi]` a `QuantizeLinear` represents: its integer type's limits less its
/// zero point, times its scale (the widest over channels when it has one per channel).
fn range(n: &NodeProto, inits: &HashMap<&str, &TensorProto>) -> Result<(f32, f32)> {
    let scale = param(n, 1, inits)?.context("no scale")?;
    let zero = param(n, 2, inits)?;
    check_scales(n, &scale, zero.as_deref())?;
    // The output type is the zero point's; without one, u8 (or `output_dtype`).
    let ty = match n.input.get(2).filter(|z| !z.is_empty()) {
        Some(z) => inits[z.as_str()].data_type,
        None => n
            .attribute
            .iter()
            .find(|a| a.name == "output_dtype" && a.i != 0)
            .map_or(DataType::Uint8 as i32, |a| a.i as i32),
    };
    let (qmin, qmax) = match DataType::try_from(ty) {
        Ok(DataType::Uint8) => (0.0, 255.0),
        Ok(DataType::Int8) => (-128.0, 127.0),
        Ok(DataType::Uint16) => (0.0, 65535.0),
        Ok(DataType::Int16) => (-32768.0, 32767.0),
        _ => bail!(
            "QuantizeLinear {:?} quantizes to ONNX type {ty}, which edgetune does not read \
             (u8, i8, u16, i16)",
            n.name
        ),
    };
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for (c, s) in scale.iter().enumerate() {
        let z = zero.as_ref().map_or(0.0, |z| z[c]);
        lo = lo.min((qmin - z) * s);
        hi = hi.max((qmax - z) * s);
    }
    Ok((lo, hi))
}
