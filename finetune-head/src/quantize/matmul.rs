//! Matrix products with constant weights in int8: a `MatMul` whose second operand is a
//! 2-D initializer (a text encoder's query, key, value and output projections and its
//! feed-forward layers; any linear layer an exporter writes as `MatMul` then `Add`).
//! Each becomes `QuantizeLinear → MatMulInteger → Cast → Mul`: activations i8 with a
//! per-tensor scale from calibration (one `QuantizeLinear` shared by the products that
//! read the same tensor, as a layer's query, key and value do), weights i8 per output
//! column, both symmetric, and the i32 product scaled back per column in f32. tract
//! imports `MatMulInteger` as an integer einsum and runs it on its i8 kernels. The bias
//! `Add` after it stays as the exporter wrote it.
//!
//! A `Gemm` with constant weights (PyTorch's `Linear` as most exporters write it, with
//! `transB = 1`: a fully connected layer inside the backbone, such as a bottleneck before
//! the classifier) is the same product: its weights are taken to `[k, n]` and multiplied
//! by `alpha`, and its bias `C`, times `beta`, is added after the product in f32.
//!
//! Products of two activations (attention scores, the mix of values) have no constant
//! side to quantize ahead of time and stay f32.

use std::collections::HashMap;

use anyhow::{Result, ensure};
use tract_onnx::pb::{NodeProto, TensorProto};

use super::onnx::{f32_tensor, float_attr, floats, int_attr, integer_product, node};

/// Why a `MatMul` stays f32, or `None` if it is quantized.
pub(super) fn keep_f32(n: &NodeProto, inits: &HashMap<&str, &TensorProto>) -> Option<&'static str> {
    let constant = |i: usize| n.input.get(i).and_then(|t| inits.get(t.as_str()));
    match constant(1) {
        None if constant(0).is_some() => {
            Some("constant weights as the first operand (not quantized yet)")
        }
        None => Some("a product of two activations (no constant weights)"),
        Some(w) if w.dims.len() != 2 => Some("weights that are not one matrix"),
        Some(_) => None,
    }
}

/// Why a `Gemm` stays f32, or `None` if it is quantized.
pub(super) fn gemm_keep_f32(
    n: &NodeProto,
    inits: &HashMap<&str, &TensorProto>,
) -> Option<&'static str> {
    let constant = |i: usize| n.input.get(i).and_then(|t| inits.get(t.as_str()));
    let bias_ok = n
        .input
        .get(2)
        .is_none_or(|c| c.is_empty() || inits.contains_key(c.as_str()));
    let (alpha, beta) = (float_attr(n, "alpha", 1.0), float_attr(n, "beta", 1.0));
    match constant(1) {
        _ if int_attr(n, "transA", 0) != 0 => Some("Gemm with transA (not quantized yet)"),
        None => Some("Gemm whose weights are not a constant"),
        Some(w) if w.dims.len() != 2 => Some("weights that are not one matrix"),
        Some(_) if !bias_ok => Some("Gemm whose bias is not a constant"),
        Some(_) if !(alpha.is_finite() && beta.is_finite()) => {
            Some("Gemm with a non-finite alpha or beta")
        }
        Some(_) => None,
    }
}

/// Writes the int8 form of the `Gemm` `n` (named `name`, checked by [`gemm_keep_f32`]):
/// the product of `alpha · B` (or `alpha · Bᵀ` with `transB`) as [`rewrite`] writes a
/// `MatMul`'s, then `beta · C` added in f32 where there is a `C`.
pub(super) fn rewrite_gemm(
    n: &NodeProto,
    name: &str,
    xq: (&str, f32, &str),
    inits: &HashMap<&str, &TensorProto>,
    nodes: &mut Vec<NodeProto>,
    initializers: &mut Vec<TensorProto>,
) -> Result<()> {
    let (shape, data) = floats(inits[n.input[1].as_str()])?;
    ensure!(shape.len() == 2, "{name}: weights of rank {}", shape.len());
    let alpha = float_attr(n, "alpha", 1.0);
    let (k, cols, w): (usize, usize, Vec<f32>) = if int_attr(n, "transB", 0) != 0 {
        let (cols, k) = (shape[0], shape[1]);
        let w = (0..k * cols)
            .map(|i| alpha * data[(i % cols) * k + i / cols])
            .collect();
        (k, cols, w)
    } else {
        (shape[0], shape[1], data.iter().map(|v| alpha * v).collect())
    };
    let y = &n.output[0];
    let bias = n.input.get(2).filter(|c| !c.is_empty());
    let product = match bias {
        Some(_) => format!("{y}.product"),
        None => y.clone(),
    };
    product_of(name, xq, (k, cols, &w), &product, nodes, initializers);
    if let Some(c) = bias {
        let beta = float_attr(n, "beta", 1.0);
        let c = inits[c.as_str()];
        let (_, values) = floats(c)?;
        let scaled: Vec<f32> = values.iter().map(|v| beta * v).collect();
        let c_name = format!("{name}.bias_times_beta");
        initializers.push(f32_tensor(&c_name, &c.dims, &scaled));
        nodes.push(node(
            "Add",
            &format!("{name}.bias"),
            &[&product, &c_name],
            y,
            Vec::new(),
        ));
    }
    Ok(())
}

/// Symmetric i8 weights of a `[k, n]` matrix, one scale per output column.
pub fn quantize_columns(w: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
    let scales: Vec<f32> = (0..n)
        .map(|c| {
            let max = (0..k).fold(0.0f32, |m, r| m.max(w[r * n + c].abs()));
            if max > 0.0 { max / 127.0 } else { 1.0 }
        })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[i % n]).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scales)
}

/// Writes the int8 form of the product `n` (named `name`), whose input is already
/// quantized as `xq` with scale `sx` and the i8 zero point `zx`.
pub(super) fn rewrite(
    n: &NodeProto,
    name: &str,
    (xq, sx, zx): (&str, f32, &str),
    w: &TensorProto,
    nodes: &mut Vec<NodeProto>,
    initializers: &mut Vec<TensorProto>,
) -> Result<()> {
    let (shape, data) = floats(w)?;
    ensure!(shape.len() == 2, "{name}: weights of rank {}", shape.len());
    let xq = (xq, sx, zx);
    product_of(
        name,
        xq,
        (shape[0], shape[1], &data),
        &n.output[0],
        nodes,
        initializers,
    );
    Ok(())
}

/// `QuantizeLinear`'d `xq` times the `[k, cols]` matrix `w` into `y`: `MatMulInteger`
/// on i8 weights per column, then the scale back to f32.
fn product_of(
    name: &str,
    (xq, sx, zx): (&str, f32, &str),
    (k, cols, w): (usize, usize, &[f32]),
    y: &str,
    nodes: &mut Vec<NodeProto>,
    initializers: &mut Vec<TensorProto>,
) {
    let (wq, sw) = quantize_columns(w, k, cols);
    let scale: Vec<f32> = sw.iter().map(|s| s * sx).collect();
    integer_product(
        "MatMulInteger",
        name,
        (xq, zx),
        (&[k as i64, cols as i64], &wq),
        (&[cols as i64], &scale),
        Vec::new(),
        y,
        nodes,
        initializers,
    );
}
