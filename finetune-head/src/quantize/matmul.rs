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
//! Products of two activations (attention scores, the mix of values) have no constant
//! side to quantize ahead of time and stay f32.

use std::collections::HashMap;

use anyhow::{Result, ensure};
use tract_onnx::pb::{NodeProto, TensorProto};

use super::onnx::{floats, integer_product};

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
    let (k, cols) = (shape[0], shape[1]);
    let (wq, sw) = quantize_columns(&data, k, cols);
    let scale: Vec<f32> = sw.iter().map(|s| s * sx).collect();
    integer_product(
        "MatMulInteger",
        name,
        (xq, zx),
        (&w.dims, &wq),
        (&[cols as i64], &scale),
        Vec::new(),
        &n.output[0],
        nodes,
        initializers,
    );
    Ok(())
}
