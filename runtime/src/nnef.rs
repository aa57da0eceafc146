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
//!   BERT's erf-based GELU into (it has no NNEF serializer either);
//! - `edgetune_weights_i8(weights, scale)`: f32 weights stored in 8 bits, `weights as f32
//!   · scale` with one scale per output channel ([`WeightsI8`]); it loads as the f32
//!   constant it evaluates to;
//! - `edgetune_values_f16(values, exponent)`: f32 values that are exactly f16 values
//!   times 2^-exponent, stored in 16 bits ([`ValuesF16`]: the integer products' scales
//!   and biases); it loads as the f32 constant.
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

/// Most bytes a gzipped backbone section may inflate to (2 GiB): past it
/// [`read_model`] stops with an error instead of filling the device's memory.
pub const MAX_NNEF_TAR: u64 = 2 << 30;

/// The two bytes that open a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// `model` as a bundle's backbone section: its NNEF tar through [`framework`], gzipped
/// (flate2, best compression). The tar's headers, padding and graph text compress
/// tenfold or more, int8 weights a little: the tar of an int8 MobileNetV2 at width 0.25
/// (its depthwise weights in f32) is 513 kB, gzipped 307 kB. tract reads the result as
/// it is (a `.nnef.tgz`). The same model gives the same bytes: the tar's timestamps are
/// tract's fixed deterministic one, not the time of writing, and the gzip header has
/// none.
pub fn write_model(model: &TypedModel) -> TractResult<Vec<u8>> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    framework().write_to_tar_with_config(model, &mut gz, false, true)?;
    Ok(gz.finish()?)
}

/// Whether a backbone section is gzipped (else it is a plain tar).
pub fn is_gzipped(section: &[u8]) -> bool {
    section.starts_with(&GZIP_MAGIC)
}

/// The NNEF tar of a backbone section: the section itself, or inflated when it is
/// gzipped ([`write_model`]). A gzip stream that is corrupt, or inflates past
/// [`MAX_NNEF_TAR`], is an error that says so.
pub fn nnef_tar(section: &[u8]) -> TractResult<std::borrow::Cow<'_, [u8]>> {
    nnef_tar_within(section, MAX_NNEF_TAR)
}

fn nnef_tar_within(section: &[u8], limit: u64) -> TractResult<std::borrow::Cow<'_, [u8]>> {
    use std::io::Read as _;
    if !is_gzipped(section) {
        return Ok(section.into());
    }
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(section)
        .take(limit.saturating_add(1))
        .read_to_end(&mut tar)
        .map_err(|e| format_err!("the backbone section is gzipped but does not inflate: {e}"))?;
    if tar.len() as u64 > limit {
        bail!(
            "the backbone section inflates to more than {limit} bytes (the most a backbone may hold)"
        );
    }
    Ok(tar.into())
}

/// Reads a backbone section, a plain or gzipped NNEF tar, with [`framework`]: what the
/// device, the host's tools and the benches all load a bundle's backbone with.
pub fn read_model(section: &[u8]) -> TractResult<TypedModel> {
    let tar = nnef_tar(section)?;
    refuse_panics("reading the backbone's NNEF", || {
        framework().model_for_read(&mut &tar[..])
    })
}

/// Runs `f`, a call into tract on a graph from a file, with a panic in it turned into an
/// error that names `what` and tract's message. tract's NNEF reader asserts on some
/// malformed values instead of returning an error (a convolution's `border =
/// "c-nstant"`: `assertion failed: &*border == "ignore" || &*border == "constant"`), and
/// a device must refuse such a file, not stop. (A build with `panic = "abort"` still
/// stops.)
pub fn refuse_panics<T>(what: &str, f: impl FnOnce() -> TractResult<T>) -> TractResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            bail!("tract stopped with a panic while {what} (the graph is malformed): {message}")
        }
    }
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
    r.register_dumper(dump_weights_i8);
    r.register_primitive(
        "edgetune_weights_i8",
        &[
            TypeName::Integer.tensor().named("weights"),
            TypeName::Scalar.tensor().named("scale"),
        ],
        &[("output", TypeName::Scalar.tensor())],
        load_weights_i8,
    );
    r.register_dumper(dump_values_f16);
    r.register_primitive(
        "edgetune_values_f16",
        &[
            TypeName::Scalar.tensor().named("values"),
            TypeName::Integer.named("exponent"),
        ],
        &[("output", TypeName::Scalar.tensor())],
        load_values_f16,
    );
    r.register_dumper(dump_dequantize);
    r.register_primitive(
        "edgetune_dequantize_linear",
        &params(),
        &[("output", TypeName::Scalar.tensor())],
        load_dequantize,
    );
    r
}

/// f32 weights stored in 8 bits: `y = weights as f32 · scale`, `weights` i8 and `scale`
/// f32 of the weights' rank with one value per output channel (`[out, 1, …]`), each
/// value one rounding of one product. A depthwise convolution, which tract runs in f32,
/// keeps its weights so in an int8 bundle (`finetune-head`'s quantizer rounds them to
/// these values first, so what it checks is what the device computes).
///
/// Loading makes it the f32 constant it evaluates to ([`WeightsI8::values`]): the
/// device's plan sees constant weights, as from an f32 variable. The op itself never
/// evaluates outside a plan, so that tract's NNEF writer, which folds every constant
/// expression before it writes, writes it instead of the f32 values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WeightsI8;

impl WeightsI8 {
    /// `weights as f32 · scale`, or an error naming what does not fit.
    pub fn values(weights: &Tensor, scale: &Tensor) -> TractResult<Tensor> {
        ensure!(
            weights.datum_type() == i8::datum_type() && scale.datum_type() == f32::datum_type(),
            "8-bit weights are i8 with f32 scales, got {:?} and {:?}",
            weights.datum_type(),
            scale.datum_type()
        );
        let (shape, per_channel) = (weights.shape(), scale.shape());
        ensure!(
            !shape.is_empty()
                && per_channel.len() == shape.len()
                && per_channel[0] == shape[0]
                && per_channel[1..].iter().all(|&d| d == 1),
            "8-bit weights of shape {shape:?} take one scale per output channel, shape [{}, 1, …], got {per_channel:?}",
            shape.first().copied().unwrap_or(0)
        );
        let s = scale.to_plain_array_view::<f32>()?;
        let s: Vec<f32> = s.iter().copied().collect();
        ensure!(
            s.iter().all(|v| v.is_finite()),
            "a scale of 8-bit weights is not finite"
        );
        let w = weights.to_plain_array_view::<i8>()?;
        let w: Vec<i8> = w.iter().copied().collect();
        let per = w.len() / shape[0].max(1);
        let values: Vec<f32> = w
            .chunks(per.max(1))
            .zip(&s)
            .flat_map(|(row, &s)| row.iter().map(move |&q| q as f32 * s))
            .collect();
        Tensor::from_shape(shape, &values)
    }
}

impl Op for WeightsI8 {
    fn name(&self) -> StaticName {
        "EdgetuneWeightsI8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for WeightsI8 {
    not_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (weights, scale) = args_2!(inputs);
        Ok(tvec!(Self::values(&weights, &scale)?.into_tvalue()))
    }
}

impl TypedOp for WeightsI8 {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

fn dump_weights_i8(
    ast: &mut IntoAst,
    node: &TypedNode,
    _: &WeightsI8,
) -> TractResult<Option<Arc<RValue>>> {
    let weights = ast.mapping[&node.inputs[0]].clone();
    let scale = ast.mapping[&node.inputs[1]].clone();
    Ok(Some(invocation(
        "edgetune_weights_i8",
        &[],
        &[("weights", (*weights).clone()), ("scale", (*scale).clone())],
    )))
}

fn load_weights_i8(
    builder: &mut ModelBuilder,
    invocation: &ResolvedInvocation,
) -> TractResult<Value> {
    let weights: Arc<Tensor> = invocation.named_arg_as(builder, "weights")?;
    let scale: Arc<Tensor> = invocation.named_arg_as(builder, "scale")?;
    let values = WeightsI8::values(&weights, &scale)?;
    Ok(Value::Wire(builder.add_const(values)?))
}

/// f32 values stored in 16 bits: `y = values as f32 · 2^-exponent`, `values` f16.
/// `finetune-head`'s quantizer rounds the integer products' per-channel scales and
/// biases to 11 significant bits (a tenth of the weights' own rounding), so each is
/// exactly an f16 value times a power of two shared by the tensor (which keeps tiny
/// scales, 1e-6 and below, out of f16's subnormals), and the bundle keeps them in half
/// the bytes, losslessly.
///
/// Loading makes it the f32 constant it stands for, as [`WeightsI8`] does, and, as that
/// one, it never evaluates outside a plan, so that tract's NNEF writer writes it rather
/// than the folded f32 values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValuesF16 {
    /// The power of two the stored values were multiplied by.
    pub exponent: i32,
}

/// The largest exponent [`ValuesF16`] takes either way: 2^±100 and every f16 times it
/// are normal f32 values, so the scaling is exact.
pub const F16_EXPONENTS: i32 = 100;

/// 2^`k`, exactly, for `k` within ±[`F16_EXPONENTS`].
pub fn pow2(k: i32) -> f32 {
    f32::from_bits(((127 + k.clamp(-F16_EXPONENTS, F16_EXPONENTS)) as u32) << 23)
}

/// The exponent [`ValuesF16`] stores `values` with: the one that puts the largest
/// magnitude in [2^14, 2^15), the top binade of f16, so that the smaller ones keep as
/// many normal binades below it as f16 has; 0 for zeros or values that are not finite.
pub fn f16_exponent(values: &[f32]) -> i32 {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if max == 0.0 || !max.is_finite() {
        return 0;
    }
    let binade = ((max.to_bits() >> 23) & 0xff) as i32 - 127;
    (14 - binade).clamp(-F16_EXPONENTS, F16_EXPONENTS)
}

impl ValuesF16 {
    /// `values` (f16) times 2^-`exponent` as f32, or an error naming what is wrong.
    pub fn values(values: &Tensor, exponent: i32) -> TractResult<Tensor> {
        ensure!(
            values.datum_type() == f16::datum_type(),
            "values stored in 16 bits are f16, got {:?}",
            values.datum_type()
        );
        ensure!(
            exponent.abs() <= F16_EXPONENTS,
            "values stored in 16 bits with exponent {exponent}, beyond ±{F16_EXPONENTS}"
        );
        let half = values.try_as_plain_ram()?;
        let half = half.as_slice::<f16>()?;
        ensure!(
            half.iter().all(|v| v.is_finite()),
            "a value stored in 16 bits is not finite"
        );
        let unit = pow2(-exponent);
        let v: Vec<f32> = half.iter().map(|h| h.to_f32() * unit).collect();
        Tensor::from_shape(values.shape(), &v)
    }
}

impl Op for ValuesF16 {
    fn name(&self) -> StaticName {
        "EdgetuneValuesF16".into()
    }

    op_as_typed_op!();
}

impl EvalOp for ValuesF16 {
    not_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let values = args_1!(inputs);
        Ok(tvec!(Self::values(&values, self.exponent)?.into_tvalue()))
    }
}

impl TypedOp for ValuesF16 {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

fn dump_values_f16(
    ast: &mut IntoAst,
    node: &TypedNode,
    op: &ValuesF16,
) -> TractResult<Option<Arc<RValue>>> {
    let values = ast.mapping[&node.inputs[0]].clone();
    Ok(Some(invocation(
        "edgetune_values_f16",
        &[],
        &[
            ("values", (*values).clone()),
            ("exponent", numeric(op.exponent)),
        ],
    )))
}

fn load_values_f16(
    builder: &mut ModelBuilder,
    invocation: &ResolvedInvocation,
) -> TractResult<Value> {
    let values: Arc<Tensor> = invocation.named_arg_as(builder, "values")?;
    let exponent: i64 = invocation.named_arg_as(builder, "exponent")?;
    let exponent = i32::try_from(exponent).unwrap_or(i32::MAX);
    Ok(Value::Wire(
        builder.add_const(ValuesF16::values(&values, exponent)?)?,
    ))
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
/// saturating conversion and a clamp, in NEON on aarch64 (`QuantizeI8::quantize_into`).
/// One difference: a value beyond i32 plus a positive zero point saturates, where
/// tract's addition overflows.
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

    /// [`Self::quantize`] of each of `xs` into `ys` (as many as both hold). On aarch64
    /// sixteen at a time in NEON: the product, `fcvtns` (rounded to the nearest, ties to
    /// even, saturated, NaN to 0: `round_ties_even() as i32`), the zero point added with
    /// saturation (where it is not 0), then saturating narrowings (the clamp to i8): 21
    /// instructions per 16 values with a zero point of 0, where the compiler's vector
    /// code took 37 (and eight at a time, 15 per 8).
    pub(crate) fn quantize_into(&self, xs: &[f32], ys: &mut [i8]) {
        self.quantize_clamped_into(xs, ys, i8::MIN, i8::MAX);
    }

    /// [`Self::quantize_into`], each byte then raised to `low` and lowered to `high`, in
    /// that order (`ClampQuantize`'s clamp, in the same pass).
    pub(crate) fn quantize_clamped_into(&self, xs: &[f32], ys: &mut [i8], low: i8, high: i8) {
        let n = xs.len().min(ys.len());
        let (xs, ys) = (&xs[..n], &mut ys[..n]);
        #[cfg(target_arch = "aarch64")]
        let done = {
            let clamp = (low, high) != (i8::MIN, i8::MAX);
            // SAFETY: NEON is part of aarch64; each step reads the 16 values of its
            // chunk and writes the 16 bytes of its own.
            unsafe {
                match (self.zero_point != 0, clamp) {
                    (false, false) => self.neon::<false, false>(xs, ys, low, high),
                    (false, true) => self.neon::<false, true>(xs, ys, low, high),
                    (true, false) => self.neon::<true, false>(xs, ys, low, high),
                    (true, true) => self.neon::<true, true>(xs, ys, low, high),
                }
            }
            n / 16 * 16
        };
        #[cfg(not(target_arch = "aarch64"))]
        let done = 0;
        for (y, x) in ys[done..].iter_mut().zip(&xs[done..]) {
            *y = self.quantize(*x).max(low).min(high);
        }
    }

    /// The chunks of 16 of [`Self::quantize_clamped_into`], with the zero point added
    /// (`ZP`) and the clamp (`CLAMP`) only where they change something.
    ///
    /// # Safety
    /// aarch64 with NEON (always).
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    unsafe fn neon<const ZP: bool, const CLAMP: bool>(
        &self,
        xs: &[f32],
        ys: &mut [i8],
        low: i8,
        high: i8,
    ) {
        use std::arch::aarch64::*;
        unsafe {
            let (scale, zero) = (vdupq_n_f32(self.scale), vdupq_n_s32(self.zero_point.into()));
            let (low, high) = (vdupq_n_s8(low), vdupq_n_s8(high));
            let q = |p: *const f32| {
                let v = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(p), scale));
                if ZP { vqaddq_s32(v, zero) } else { v }
            };
            for (x, y) in xs.chunks_exact(16).zip(ys.chunks_exact_mut(16)) {
                let p = x.as_ptr();
                let h0 = vqmovn_high_s32(vqmovn_s32(q(p)), q(p.add(4)));
                let h1 = vqmovn_high_s32(vqmovn_s32(q(p.add(8))), q(p.add(12)));
                let mut b = vqmovn_high_s16(vqmovn_s16(h0), h1);
                if CLAMP {
                    b = vminq_s8(vmaxq_s8(b, low), high);
                }
                vst1q_s8(y.as_mut_ptr(), b);
            }
        }
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
                self.quantize_into(input.as_slice::<f32>()?, ys);
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
        // Slices from every offset: each value through the vector loop (aarch64) and
        // through the scalar one, the same i8.
        for zero_point in [0i8, -3, 127, -128] {
            let op = QuantizeI8 {
                scale: 4.0,
                zero_point,
            };
            let x = values();
            assert!(x.len() >= 48);
            for from in 0..16 {
                let mut y = vec![0i8; x.len() - from];
                op.quantize_into(&x[from..], &mut y);
                for (x, y) in x[from..].iter().zip(&y) {
                    assert_eq!(
                        *y,
                        op.quantize(*x),
                        "{x} from {from}, zero point {zero_point}"
                    );
                }
                // Clamped in the same pass: the max, then the min.
                for (low, high) in [(-3i8, 20i8), (10, -10)] {
                    op.quantize_clamped_into(&x[from..], &mut y, low, high);
                    for (x, y) in x[from..].iter().zip(&y) {
                        assert_eq!(*y, op.quantize(*x).max(low).min(high), "{x} {low} {high}");
                    }
                }
            }
        }
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

    /// A gzipped section is what `write_model` writes: smaller than the plain tar, and
    /// it loads as the same graph, through `read_model` and through tract's own reader.
    #[test]
    fn a_gzipped_section_reads_as_its_tar() {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([64])).unwrap();
        let w = model.add_const("w", tensor1(&[0.5f32; 64])).unwrap();
        let y = model
            .wire_node("y", tract_nnef::tract_core::ops::math::mul(), &[x, w])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        let mut tar = Vec::new();
        framework()
            .write_to_tar_with_config(&model, &mut tar, false, true)
            .unwrap();
        let section = write_model(&model).unwrap();
        assert!(is_gzipped(&section) && !is_gzipped(&tar));
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert_eq!(
            write_model(&model).unwrap(),
            section,
            "written again, a second later"
        );
        assert!(
            section.len() * 4 < tar.len(),
            "{} against {}",
            section.len(),
            tar.len()
        );
        assert_eq!(nnef_tar(&section).unwrap()[..], tar[..]);
        assert_eq!(nnef_tar(&tar).unwrap()[..], tar[..]);
        let input = tensor1(&[2.0f32; 64]);
        for bytes in [&section, &tar] {
            for m in [
                read_model(bytes).unwrap(),
                framework().model_for_read(&mut &bytes[..]).unwrap(),
            ] {
                let out = m
                    .into_runnable()
                    .unwrap()
                    .run(tvec!(input.clone().into()))
                    .unwrap();
                assert_eq!(out[0].clone().into_tensor(), tensor1(&[1.0f32; 64]));
            }
        }
    }

    /// A gzip stream that is cut short, or inflates past the limit, is an error that
    /// says which; nothing panics.
    #[test]
    fn a_bad_or_oversized_gzip_section_is_refused() {
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([4])).unwrap();
        model.select_output_outlets(&[x]).unwrap();
        let section = write_model(&model).unwrap();
        let tar = nnef_tar(&section).unwrap().len() as u64;
        assert!(nnef_tar_within(&section, tar).is_ok());
        let e = nnef_tar_within(&section, tar - 1).unwrap_err().to_string();
        assert!(
            e.contains(&format!("inflates to more than {} bytes", tar - 1)),
            "{e}"
        );
        for cut in [3, section.len() / 2, section.len() - 1] {
            let e = read_model(&section[..cut]).unwrap_err().to_string();
            assert!(e.contains("gzipped but does not inflate"), "{cut}: {e}");
        }
        let mut flipped = section.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x55;
        assert!(read_model(&flipped).is_err());
    }

    /// Values stored in 16 bits are written as f16 (half the bytes of f32) and read back
    /// as the very f32 constant; anything but finite f16 values is a clear error.
    #[test]
    fn values_in_16_bits_load_as_the_f32_constant() {
        // Tiny values, as some channels' scales are: f16 alone would make them subnormal.
        let tiny: Vec<f32> = (0..64)
            .map(|i| (i as f32 - 20.5) * 1e-7 * pow2(-3))
            .collect();
        let e = f16_exponent(&tiny);
        assert_eq!(e, 35, "5.4e-7 at most: 2^-21 up to 2^14");
        let half: Vec<f16> = tiny.iter().map(|v| f16::from_f32(v * pow2(e))).collect();
        assert!(half.iter().all(|h| h.is_normal() || h.to_f32() == 0.0));
        let values = Tensor::from_shape(&[64], &half).unwrap();
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([64])).unwrap();
        let h = model.add_const("h", values.clone()).unwrap();
        let v = model
            .wire_node("v", ValuesF16 { exponent: e }, &[h])
            .unwrap();
        let y = model
            .wire_node("y", tract_nnef::tract_core::ops::math::mul(), &[x, v[0]])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        let section = write_model(&model).unwrap();
        let text = String::from_utf8_lossy(&nnef_tar(&section).unwrap()).into_owned();
        assert!(text.contains("edgetune_values_f16("), "{text}");
        assert!(text.contains("exponent = 35"), "{text}");
        let loaded = read_model(&section).unwrap();
        assert!(loaded.nodes().iter().all(|n| !n.op_is::<ValuesF16>()));
        let out = loaded
            .into_runnable()
            .unwrap()
            .run(tvec!(tensor1(&[1.0f32; 64]).into()))
            .unwrap();
        let want: Vec<f32> = half.iter().map(|h| h.to_f32() * pow2(-e)).collect();
        assert_eq!(*out[0], tensor1(&want));
        for (bad, exponent, want) in [
            (tensor1(&tiny), 0, "are f16"),
            (
                tensor1(&[f16::from_f32(1.0), f16::INFINITY]),
                0,
                "not finite",
            ),
            (values.clone(), 101, "beyond ±100"),
        ] {
            let e = ValuesF16::values(&bad, exponent).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    /// 8-bit weights with scales that do not fit them are an error naming what is
    /// wrong, at load as in `WeightsI8::values`; ones that fit load as a constant.
    #[test]
    fn eight_bit_weights_load_as_a_constant_or_a_clear_error() {
        let w = Tensor::from_shape(&[2, 1, 3], &[1i8, -2, 127, -127, 0, 5]).unwrap();
        let s = Tensor::from_shape(&[2, 1, 1], &[0.5f32, 0.25]).unwrap();
        let v = WeightsI8::values(&w, &s).unwrap();
        let want = Tensor::from_shape(&[2, 1, 3], &[0.5f32, -1.0, 63.5, -31.75, 0.0, 1.25]);
        assert_eq!(v, want.unwrap());
        let bad = [
            (
                w.clone(),
                tensor1(&[0.5f32, 0.25]),
                "one scale per output channel",
            ),
            (
                w.clone(),
                Tensor::from_shape(&[3, 1, 1], &[1.0f32; 3]).unwrap(),
                "[2, 1, …]",
            ),
            (
                w.clone(),
                Tensor::from_shape(&[2, 1, 1], &[1.0f32, f32::NAN]).unwrap(),
                "not finite",
            ),
            (
                w.cast_to::<f32>().unwrap().into_owned(),
                s.clone(),
                "i8 with f32 scales",
            ),
        ];
        for (w, s, want) in &bad {
            let e = WeightsI8::values(w, s).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }

        // Through the NNEF reader: the op is written, and read back as the constant.
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([2, 1, 3])).unwrap();
        let qw = model.add_const("w", w.clone()).unwrap();
        let qs = model.add_const("s", s.clone()).unwrap();
        let k = model.wire_node("k", WeightsI8, &[qw, qs]).unwrap();
        let y = model
            .wire_node("y", tract_nnef::tract_core::ops::math::mul(), &[x, k[0]])
            .unwrap();
        model.select_output_outlets(&y).unwrap();
        let section = write_model(&model).unwrap();
        let loaded = read_model(&section).unwrap();
        assert!(loaded.nodes().iter().all(|n| !n.op_is::<WeightsI8>()));
        let out = loaded
            .into_runnable()
            .unwrap()
            .run(tvec!(
                Tensor::from_shape(&[2, 1, 3], &[1.0f32; 6]).unwrap().into()
            ))
            .unwrap();
        assert_eq!(out[0].clone().into_tensor(), v);
        // The same file with the scales' shape broken is refused, naming why.
        let tar = nnef_tar(&section).unwrap().into_owned();
        let text = String::from_utf8_lossy(&tar).into_owned();
        let from = "s = [[[0.5]], [[0.25]]];";
        assert!(text.contains(from), "{text}");
        // Same length, so the tar's header still fits.
        let to = b"s = [[[0.5, 0.25]]];    ";
        let at = tar
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        let mut broken = tar.clone();
        broken[at..at + to.len()].copy_from_slice(to);
        let e = format!("{:#}", read_model(&broken).unwrap_err());
        assert!(e.contains("one scale per output channel"), "{e}");
    }
}
