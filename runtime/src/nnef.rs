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
//!
//! `…_i8` loads as [`QuantizeI8`], edgetune's own implementation of tract's
//! `QuantizeLinearI8` (the same values), which the compiler vectorizes.

use std::any::TypeId;

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::element_wise::ElementWiseOp;
use tract_nnef::tract_core::ops::nn::GeluExact;
use tract_nnef::tract_core::ops::quant::{
    DequantizeLinearF32, LookupTable, QuantizeLinearI8, QuantizeLinearU8, lookup_table,
    quantize_linear_u8,
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
    // Loading finds the first entry of an id, writing the entry of the op's type: both
    // tract's i8 quantizer and edgetune's are written as `…_i8`, which loads as edgetune's.
    let quantizers = quantizers.into_iter().chain([(
        "edgetune_quantize_linear_i8",
        TypeId::of::<QuantizeI8>(),
        dump_quantize::<QuantizeI8>("edgetune_quantize_linear_i8", |op| {
            (op.scale.recip(), op.zero_point.into())
        }),
        load_quantize_i8 as ToTract,
    )]);
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
    load_linear(b, i, "i8 zero point", |s, zero_point| {
        ElementWiseOp(
            Box::new(QuantizeI8 {
                scale: s.recip(),
                zero_point,
            }),
            None,
        )
    })
}

/// f32 (or i32) → i8 quantization, the values of tract's `QuantizeLinearI8`:
/// `saturate(round_half_even(x · scale) + zero_point)`, `scale` the reciprocal of the
/// ONNX scale as in tract's op.
///
/// tract rounds each value with bit operations and branches, which the compiler does not
/// vectorize: 0.70 M aarch64 instructions of the 6.56 M of one int8 MobileNetV2
/// inference on a Pi 5 (`scripts/iprofile.sh`). Here the loop is `round_ties_even`, a
/// saturating conversion and a clamp, which become vector instructions (`frintn`,
/// `fcvtzs`, `sqadd`, `smax`/`smin`). One difference: a value beyond i32 plus a positive
/// zero point saturates, where tract's addition overflows.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizeI8 {
    /// `1 / scale`: the input is multiplied by it.
    pub scale: f32,
    /// Added after rounding.
    pub zero_point: i8,
}

impl Eq for QuantizeI8 {}

impl std::hash::Hash for QuantizeI8 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.scale.to_bits().hash(state);
        self.zero_point.hash(state);
    }
}

impl QuantizeI8 {
    pub(crate) fn quantize(&self, x: f32) -> i8 {
        ((x * self.scale).round_ties_even() as i32)
            .saturating_add(self.zero_point.into())
            .clamp(i8::MIN.into(), i8::MAX.into()) as i8
    }
}

impl tract_nnef::tract_core::ops::element_wise::ElementWiseMiniOp for QuantizeI8 {
    fn name(&self) -> String {
        "EdgetuneQuantizeI8".into()
    }

    fn output_type(&self, input_type: DatumType) -> Option<DatumType> {
        [f32::datum_type(), i32::datum_type()]
            .contains(&input_type)
            .then(i8::datum_type)
    }

    fn eval_out_of_place(&self, t: &Tensor, _out_dt: Option<DatumType>) -> TractResult<Tensor> {
        let mut out = Tensor::zero::<i8>(t.shape())?;
        {
            let mut plain = out.try_as_plain_ram_mut()?;
            let ys = plain.as_slice_mut::<i8>()?;
            let input = t.try_as_plain_ram()?;
            if t.datum_type() == f32::datum_type() {
                for (y, &x) in ys.iter_mut().zip(input.as_slice::<f32>()?) {
                    *y = self.quantize(x);
                }
            } else if t.datum_type() == i32::datum_type() {
                for (y, &x) in ys.iter_mut().zip(input.as_slice::<i32>()?) {
                    *y = self.quantize(x as f32);
                }
            } else {
                bail!("{} takes f32 or i32, not {:?}", self.name(), t.datum_type());
            }
        }
        Ok(out)
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale: {} zero_point: {} 1/scale: {}",
            self.scale,
            self.zero_point,
            self.scale.recip()
        )])
    }
}

fn load_dequantize(b: &mut ModelBuilder, i: &ResolvedInvocation) -> TractResult<Value> {
    load_linear(b, i, "zero point", DequantizeLinearF32::new)
}

#[cfg(test)]
mod tests {
    use tract_nnef::tract_core::ops::element_wise::ElementWiseMiniOp;
    use tract_nnef::tract_core::ops::quant::{quantize_linear_f32_i8, quantize_linear_i8};

    use super::*;

    /// Ties, both signs, values past the i8 range and past i32, infinities, NaN.
    fn values() -> Vec<f32> {
        let mut v: Vec<f32> = (-600..=600).map(|i| i as f32 * 0.25).collect();
        v.extend([
            0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, -127.5, -128.5, 1e9, -1e9, 3e38, -3e38,
        ]);
        v.extend([
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -0.0,
            f32::MIN_POSITIVE,
        ]);
        v
    }

    #[test]
    fn edgetune_i8_quantizer_gives_tracts_values() {
        for (scale, zero_point) in [(1.0f32, 0i8), (1.0 / 0.0371, 0), (4.0, -3), (0.5, 0)] {
            let op = QuantizeI8 { scale, zero_point };
            let x = values();
            let out = op
                .eval_out_of_place(&tensor1(&x), None)
                .unwrap()
                .into_plain_array::<i8>()
                .unwrap();
            for (&x, &y) in x.iter().zip(out.iter()) {
                // Past i32, tract's addition of a zero point overflows; here it saturates.
                let expected = if (x * scale).abs() < 2e9 || x.is_nan() {
                    quantize_linear_f32_i8(x, scale, zero_point.into())
                } else if x > 0.0 {
                    i8::MAX
                } else {
                    i8::MIN
                };
                assert_eq!(y, expected, "{x} at scale {scale}, zero point {zero_point}");
            }
            let ints: Vec<i32> = (-300..300).collect();
            let out = op
                .eval_out_of_place(&tensor1(&ints), None)
                .unwrap()
                .into_plain_array::<i8>()
                .unwrap();
            for (&x, &y) in ints.iter().zip(out.iter()) {
                assert_eq!(
                    y,
                    quantize_linear_f32_i8(x as f32, scale, zero_point.into())
                );
            }
        }
        let op = QuantizeI8 {
            scale: 1.0,
            zero_point: 0,
        };
        assert!(op.eval_out_of_place(&tensor1(&[1u8]), None).is_err());
        assert_eq!(op.output_type(u8::datum_type()), None);
    }

    /// tract's i8 quantizer, written by the host, loads as edgetune's; written again,
    /// the same NNEF.
    #[test]
    fn an_i8_quantizer_loads_as_edgetunes_and_writes_back_the_same() {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([5])).unwrap();
        let q = model
            .wire_node("q", quantize_linear_i8(1.0 / 0.25, -2), &[x])
            .unwrap();
        model.select_output_outlets(&q).unwrap();
        let mut nnef = Vec::new();
        framework().write_to_tar(&model, &mut nnef).unwrap();
        let loaded = framework().model_for_read(&mut &nnef[..]).unwrap();
        let node = loaded.node(loaded.output_outlets().unwrap()[0].node);
        let op = mini_op::<QuantizeI8>(node).expect("edgetune's quantizer");
        assert_eq!((op.scale, op.zero_point), (4.0, -2));
        let mut again = Vec::new();
        framework().write_to_tar(&loaded, &mut again).unwrap();
        let line = b"q = edgetune_quantize_linear_i8(x, scale = 0.25, zero_point = -2);";
        for tar in [&nnef, &again] {
            assert!(tar.windows(line.len()).any(|w| w == line));
        }
        let input = tensor1(&[-1.0f32, 0.1, 0.125, 0.375, 40.0]);
        let run = |m: TypedModel| {
            m.into_runnable()
                .unwrap()
                .run(tvec!(input.clone().into()))
                .unwrap()[0]
                .clone()
                .into_tensor()
        };
        assert_eq!(run(loaded), run(model));
    }
}
