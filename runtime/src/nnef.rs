//! tract's NNEF as edgetune writes and reads it: the core operator set, tract's ONNX
//! extension, and one registry of edgetune's own, `edgetune_quant`, for the int8 graph.
//!
//! tract-nnef 0.23.9 has no serializer for the operators tract imports ONNX's
//! `QuantizeLinear` and `DequantizeLinear` as (`QuantizeLinearU8`, `QuantizeLinearI8`,
//! `DequantizeLinearF32`), so an int8 backbone could not be written as NNEF. This
//! registry gives them a dumper and a loader. The host writes with [`framework`] and the
//! device reads with it, so both always agree; an f32 graph uses none of these operators
//! and its NNEF does not name the extension.
//!
//! The operators, in NNEF:
//! - `edgetune_quantize_linear_u8(input, scale, zero_point)` and `…_i8`: `y =
//!   saturate(round_half_even(x / scale) + zero_point)`;
//! - `edgetune_dequantize_linear(input, scale, zero_point)`: `y = (x - zero_point) * scale`
//!   as f32;
//! - `edgetune_lookup_table(input, table)`: `y = table[x]` on 8-bit values. tract turns a
//!   dequantize → element-wise → quantize chain (e.g. two int8 convolutions in a row)
//!   into such a table when it declutters;
//! - `edgetune_gelu_exact(input)`: `x/2 · (1 + erf(x/√2))`, which tract fuses an ONNX
//!   BERT's erf-based GELU into (it has no NNEF serializer either).

use std::any::TypeId;

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::element_wise::ElementWiseOp;
use tract_nnef::tract_core::ops::nn::GeluExact;
use tract_nnef::tract_core::ops::quant::{
    DequantizeLinearF32, LookupTable, QuantizeLinearI8, QuantizeLinearU8, lookup_table,
    quantize_linear_i8, quantize_linear_u8,
};
use tract_onnx_opl::WithOnnx;

/// Identifier of edgetune's registry (`extension edgetune_quant` in a graph that uses it).
pub const REGISTRY: &str = "edgetune_quant";

/// The NNEF framework both sides use: core operators, the ONNX extension and
/// [`REGISTRY`].
pub fn framework() -> tract_nnef::framework::Nnef {
    tract_nnef::nnef().with_onnx().with_registry(registry())
}

fn registry() -> Registry {
    let mut r = Registry::new(REGISTRY).with_doc(
        "Operators tract-nnef cannot write: int8 (de)quantization, GELU (see edgetune::nnef).",
    );
    let params = || {
        vec![
            TypeName::Scalar.tensor().named("input"),
            TypeName::Scalar.named("scale"),
            TypeName::Integer.named("zero_point"),
        ]
    };
    let quantizers: [(_, _, FromTract, ToTract); 2] = [
        (
            "edgetune_quantize_linear_u8",
            TypeId::of::<QuantizeLinearU8>(),
            dump_quantize::<QuantizeLinearU8>("edgetune_quantize_linear_u8", |op| {
                (op.scale.recip(), op.zero_point.into())
            }),
            load_quantize_u8,
        ),
        (
            "edgetune_quantize_linear_i8",
            TypeId::of::<QuantizeLinearI8>(),
            dump_quantize::<QuantizeLinearI8>("edgetune_quantize_linear_i8", |op| {
                (op.scale.recip(), op.zero_point.into())
            }),
            load_quantize_i8,
        ),
    ];
    for (id, type_id, dump, load) in quantizers {
        r.register_element_wise(id, type_id, dump, params(), load);
    }
    r.register_element_wise(
        "edgetune_lookup_table",
        TypeId::of::<LookupTable>(),
        Box::new(dump_lookup_table),
        vec![
            TypeName::Scalar.tensor().named("input"),
            TypeName::Integer.tensor().named("table"),
        ],
        load_lookup_table,
    );
    r.register_unit_element_wise("edgetune_gelu_exact", &GeluExact {});
    r.register_dumper(dump_dequantize);
    r.register_primitive(
        "edgetune_dequantize_linear",
        &params(),
        &[("output", TypeName::Scalar.tensor())],
        load_dequantize,
    );
    r
}

/// The invocation of `id` on the node's input with a scale and a zero point.
///
/// tract's quantize operators store `1 / scale` (they multiply); the NNEF argument is the
/// ONNX scale, so that the file reads like the ONNX graph it came from.
fn invoke(ast: &IntoAst, node: &TypedNode, id: &str, scale: f32, zero_point: i64) -> Arc<RValue> {
    let input = ast.mapping[&node.inputs[0]].clone();
    invocation(
        id,
        &[input],
        &[
            ("scale", numeric(scale)),
            ("zero_point", numeric(zero_point)),
        ],
    )
}

fn mini_op<T: tract_nnef::tract_core::ops::element_wise::ElementWiseMiniOp>(
    node: &TypedNode,
) -> Option<&T> {
    node.op_as::<ElementWiseOp>()?.0.downcast_ref::<T>()
}

/// The dumper of a quantize operator `T` as the invocation `id`, with its scale and
/// zero point.
fn dump_quantize<T: tract_nnef::tract_core::ops::element_wise::ElementWiseMiniOp>(
    id: &'static str,
    params: fn(&T) -> (f32, i64),
) -> FromTract {
    Box::new(move |ast, node| {
        let Some(op) = mini_op::<T>(node) else {
            return Ok(None);
        };
        let (scale, zero_point) = params(op);
        Ok(Some(invoke(ast, node, id, scale, zero_point)))
    })
}

fn dump_dequantize(
    ast: &mut IntoAst,
    node: &TypedNode,
    op: &DequantizeLinearF32,
) -> TractResult<Option<Arc<RValue>>> {
    let id = "edgetune_dequantize_linear";
    Ok(Some(invoke(ast, node, id, op.scale, op.zero_point.into())))
}

fn dump_lookup_table(ast: &mut IntoAst, node: &TypedNode) -> TractResult<Option<Arc<RValue>>> {
    let Some(op) = mini_op::<LookupTable>(node) else {
        return Ok(None);
    };
    let input = ast.mapping[&node.inputs[0]].clone();
    let table = tensor1(op.table.table()).into_arc_tensor();
    let table = ast.konst(format!("{}.table", node.name), &table)?;
    Ok(Some(invocation(
        "edgetune_lookup_table",
        &[input],
        &[("table", (*table).clone())],
    )))
}

fn load_lookup_table(
    builder: &mut ModelBuilder,
    invocation: &ResolvedInvocation,
) -> TractResult<Value> {
    let input: OutletId = invocation.named_arg_as(builder, "input")?;
    let table: Arc<Tensor> = invocation.named_arg_as(builder, "table")?;
    ensure!(
        table.datum_type() == u8::datum_type() && table.len() == 256,
        "a lookup table holds 256 u8 values, got {} {:?}",
        table.len(),
        table.datum_type()
    );
    let values = table.to_plain_array_view::<u8>()?;
    let values: Vec<u8> = values.iter().copied().collect();
    let lut = tract_nnef::tract_core::tract_linalg::routines::lut_u8(&values)?;
    builder.wire(lookup_table(lut), &[input])
}

/// Input, scale (checked positive and finite) and zero point of an invocation.
fn args(
    builder: &mut ModelBuilder,
    invocation: &ResolvedInvocation,
) -> TractResult<(OutletId, f32, i64)> {
    let input: OutletId = invocation.named_arg_as(builder, "input")?;
    let scale: f32 = invocation.named_arg_as(builder, "scale")?;
    let zero_point: i64 = invocation.named_arg_as(builder, "zero_point")?;
    ensure!(
        scale.is_finite() && scale > 0.0,
        "quantization scale {scale} is not a positive number"
    );
    Ok((input, scale, zero_point))
}

/// Loads a (de)quantization: the op `make` builds from the invocation's scale and its
/// zero point as a `Z` (`what` names the zero point when it does not fit).
fn load_linear<Z: TryFrom<i64>, O: Into<Box<dyn TypedOp>>>(
    builder: &mut ModelBuilder,
    invocation: &ResolvedInvocation,
    what: &str,
    make: impl FnOnce(f32, Z) -> O,
) -> TractResult<Value> {
    let (input, scale, zero_point) = args(builder, invocation)?;
    let zero =
        Z::try_from(zero_point).map_err(|_| format_err!("{what} {zero_point} out of range"))?;
    builder.wire(make(scale, zero), &[input])
}

fn load_quantize_u8(b: &mut ModelBuilder, i: &ResolvedInvocation) -> TractResult<Value> {
    load_linear(b, i, "u8 zero point", |s, z| {
        quantize_linear_u8(s.recip(), z)
    })
}

fn load_quantize_i8(b: &mut ModelBuilder, i: &ResolvedInvocation) -> TractResult<Value> {
    load_linear(b, i, "i8 zero point", |s, z| {
        quantize_linear_i8(s.recip(), z)
    })
}

fn load_dequantize(b: &mut ModelBuilder, i: &ResolvedInvocation) -> TractResult<Value> {
    load_linear(b, i, "zero point", DequantizeLinearF32::new)
}
