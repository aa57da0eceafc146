//! The f32 steps after an integer product, in one pass: [`Epilogue`] in place of tract's
//! cast, scale, bias, residual, clamp and quantizer.
//!
//! An int8 convolution or `MatMul` (`ConvInteger`, `MatMulInteger`) gives i32. The
//! quantized graph then casts it to f32, multiplies by the per-channel scale, adds the
//! bias, maybe a residual, clamps (`Relu`, `Clip`) and, where an int8 layer reads it,
//! quantizes it again. tract fuses none of that into its integer product (its epilogue
//! takes one scale for i8 output, not a cast to f32), so it runs a cast, a chain of
//! binary ops and a quantizer, each a pass over the map. On the small maps of a 64×64
//! MobileNetV2 the chain broadcasts its per-channel operands to the map's size first, at
//! every inference (`Tensor::broadcast_to_shape`, `repeat_broadcast`).
//!
//! [`Epilogue`] computes `min(max((x as f32) × scale + bias + residual, low), high)` in
//! one loop (each part where the graph has it), then the quantizer if there is one:
//! tract's operations in tract's order on the same f32 values, so the outputs are tract's
//! bit for bit (`examples/plan_check.rs`, the tests below).
//!
//! [`epilogues`] replaces such chains after declutter, before tract's optimization: a
//! `Cast` from i32 to f32, then each node the only reader of the one before, as long as
//! it is the next part in that order (a `Mul` by a constant, an `Add` of a constant, an
//! `Add` of another tensor of the same shape, a `Max`, a `Min` with one value), up to an
//! edgetune quantizer. Anything else ends the chain and stays tract's.

use std::hash::{Hash, Hasher};

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::binary::TypedBinOp;
use tract_nnef::tract_core::ops::cast::Cast;
use tract_nnef::tract_core::ops::element_wise::ElementWiseOp;
use tract_nnef::tract_core::ops::math::{Add, Max, Min, Mul};

use super::only_reader;
use crate::nnef::QuantizeI8;

/// f32 values compared and hashed by their bits (an op must be `Eq` and `Hash`).
#[derive(Debug, Clone)]
struct Floats(Vec<f32>);

impl PartialEq for Floats {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len()
            && self
                .0
                .iter()
                .zip(&other.0)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }
}

impl Eq for Floats {}

impl Hash for Floats {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.iter().for_each(|x| x.to_bits().hash(state));
    }
}

/// A constant operand of the chain.
#[derive(Debug, Clone)]
enum Values {
    /// One value for every element.
    Scalar(f32),
    /// One value per channel along an axis.
    Channels(usize, Vec<f32>),
}

/// One loop over a row: `y = min(max(x × s + b + r, lo), hi)`, each of `+ r`, `max`,
/// `min` only where the const flag says, `s` and `b` one value or one per element.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn affine<V: Operand, const RES: bool, const LO: bool, const HI: bool>(
    y: &mut [f32],
    x: &[i32],
    s: V,
    b: V,
    r: &[f32],
    lo: f32,
    hi: f32,
) {
    let n = y.len();
    let (x, s, b) = (&x[..n], s.take(n), b.take(n));
    let r = if RES { &r[..n] } else { r };
    // Nothing to add: 16 values at a time in NEON, the same operations (`scvtf`, `fmul`,
    // `fadd`, `fmaxnm`, `fminnm`: Rust's `max` and `min`) in fewer instructions than the
    // compiler's loop, whose loads and stores were of 8 values.
    #[cfg(target_arch = "aarch64")]
    let done = if RES {
        0
    } else {
        // SAFETY: NEON is part of aarch64; each step reads and writes the 16 values of
        // its own chunk.
        unsafe { affine_neon::<V, LO, HI>(y, x, s, b, lo, hi) }
    };
    #[cfg(not(target_arch = "aarch64"))]
    let done = 0;
    for i in done..n {
        let mut v = x[i] as f32 * s.at(i) + b.at(i);
        if RES {
            v += r[i];
        }
        if LO {
            v = v.max(lo);
        }
        if HI {
            v = v.min(hi);
        }
        y[i] = v;
    }
}

/// [`affine`]'s chunks of 16 with no residual; returns how many values it did.
///
/// # Safety
/// aarch64 with NEON (always).
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn affine_neon<V: Operand, const LO: bool, const HI: bool>(
    y: &mut [f32],
    x: &[i32],
    s: V,
    b: V,
    lo: f32,
    hi: f32,
) -> usize {
    use std::arch::aarch64::*;
    let n = y.len().min(x.len()) / 16 * 16;
    unsafe {
        let (lo, hi) = (vdupq_n_f32(lo), vdupq_n_f32(hi));
        let one = |v: int32x4_t, s: float32x4_t, b: float32x4_t| {
            let mut v = vaddq_f32(vmulq_f32(vcvtq_f32_s32(v), s), b);
            if LO {
                v = vmaxnmq_f32(v, lo);
            }
            if HI {
                v = vminnmq_f32(v, hi);
            }
            v
        };
        for i in (0..n).step_by(16) {
            let v = vld1q_s32_x4(x[i..i + 16].as_ptr());
            let (s, b) = (s.sixteen(i), b.sixteen(i));
            let out = float32x4x4_t(
                one(v.0, s.0, b.0),
                one(v.1, s.1, b.1),
                one(v.2, s.2, b.2),
                one(v.3, s.3, b.3),
            );
            vst1q_f32_x4(y[i..i + 16].as_mut_ptr(), out);
        }
    }
    n
}

/// A row's scale or bias: one value, or one per element.
trait Operand: Copy {
    fn take(self, n: usize) -> Self;
    fn at(self, i: usize) -> f32;
    /// Values `i..i + 16` in NEON registers (the one value in each lane, or 16 of the
    /// row's; `i + 16` at most the row's length).
    #[cfg(target_arch = "aarch64")]
    fn sixteen(self, i: usize) -> std::arch::aarch64::float32x4x4_t;
}

impl Operand for f32 {
    #[inline(always)]
    fn take(self, _: usize) -> f32 {
        self
    }
    #[inline(always)]
    fn at(self, _: usize) -> f32 {
        self
    }
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    fn sixteen(self, _: usize) -> std::arch::aarch64::float32x4x4_t {
        use std::arch::aarch64::*;
        // SAFETY: NEON is part of aarch64.
        unsafe {
            let v = vdupq_n_f32(self);
            float32x4x4_t(v, v, v, v)
        }
    }
}

impl Operand for &[f32] {
    #[inline(always)]
    fn take(self, n: usize) -> Self {
        &self[..n]
    }
    #[inline(always)]
    fn at(self, i: usize) -> f32 {
        self[i]
    }
    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    fn sixteen(self, i: usize) -> std::arch::aarch64::float32x4x4_t {
        let v = &self[i..i + 16];
        // SAFETY: NEON is part of aarch64; the 16 values are in the slice.
        unsafe { std::arch::aarch64::vld1q_f32_x4(v.as_ptr()) }
    }
}

/// [`affine`] with the flags of `low`, `high` and `residual`.
#[allow(clippy::too_many_arguments)]
fn affine_row<V: Operand>(
    y: &mut [f32],
    x: &[i32],
    s: V,
    b: V,
    residual: Option<&[f32]>,
    low: Option<f32>,
    high: Option<f32>,
) {
    let (r, lo, hi) = (
        residual.unwrap_or(&[]),
        low.unwrap_or(0.0),
        high.unwrap_or(0.0),
    );
    macro_rules! arms {
        ($(($res:literal, $lo:literal, $hi:literal)),*) => {
            match (residual.is_some(), low.is_some(), high.is_some()) {
                $(($res, $lo, $hi) => affine::<V, $res, $lo, $hi>(y, x, s, b, r, lo, hi),)*
            }
        };
    }
    arms!(
        (false, false, false),
        (false, false, true),
        (false, true, false),
        (false, true, true),
        (true, false, false),
        (true, false, true),
        (true, true, false),
        (true, true, true)
    );
}

/// The cast of i32 to f32 and what follows it, one row at a time (see the module docs).
///
/// A row is the values of one channel where a channel has at least `MIN_ROW` of them
/// (a convolution's map in channels-first layout), and the scale and bias are one value
/// for the row. Where it has fewer (channels last, as tract lays out the input of its
/// depthwise convolution on ARM; the 2×2 maps at a network's end), a row is whole
/// periods of the channels (`channels × inner` values each, as many as divide the map up
/// to `PERIODS_ROW` values: with one period to a row, the rows' own cost was 0.07 M of
/// MobileNetV2's int8 inference on a Pi 5), and the scale and bias are that many values,
/// expanded at load.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Epilogue {
    /// Values per row.
    row: usize,
    /// Rows are one channel each (else whole periods of the channels).
    per_channel_rows: bool,
    /// Row `r` is channel `r % channels` when rows are per channel.
    channels: usize,
    /// Per channel, or per value of a row (1 where the graph has no `Mul`).
    scale: Floats,
    /// Likewise (-0, which adds nothing to any value, where it has no `Add`).
    bias: Floats,
    /// Input 1 is added after the bias.
    residual: bool,
    low: Option<u32>,
    high: Option<u32>,
    quantize: Option<QuantizeI8>,
}

/// The fewest values of a channel that make it a row of its own.
const MIN_ROW: usize = 16;

/// The most values a row of whole periods of the channels takes.
const PERIODS_ROW: usize = 1024;

impl Epilogue {
    /// The op for `chain`'s values and parts, with its quantizer if any.
    fn new(chain: &Chain, quantize: Option<QuantizeI8>) -> Epilogue {
        let (shape, axis) = (&chain.shape, chain.axis.unwrap_or(0));
        let channels = shape.get(axis).copied().unwrap_or(1);
        let inner: usize = shape.iter().skip(axis + 1).product();
        let per_channel_rows = inner >= MIN_ROW;
        // Where a row is a period of the channels, as many periods as divide the map up
        // to PERIODS_ROW values: the loop's per-row cost is paid once for them all.
        let period = (channels * inner).max(1);
        let periods = shape.iter().product::<usize>() / period;
        let repeat = (1..=periods.min(PERIODS_ROW / period).max(1))
            .rev()
            .find(|m| periods.is_multiple_of(*m))
            .unwrap_or(1);
        let expand = |v: &Option<Values>, missing: f32| {
            let per_channel = match v {
                None => vec![missing; channels],
                Some(Values::Scalar(x)) => vec![*x; channels],
                Some(Values::Channels(_, v)) => v.clone(),
            };
            Floats(if per_channel_rows {
                per_channel
            } else {
                let one: Vec<f32> = (per_channel.iter())
                    .flat_map(|x| std::iter::repeat_n(*x, inner))
                    .collect();
                one.repeat(repeat)
            })
        };
        Epilogue {
            row: if per_channel_rows {
                inner.max(1)
            } else {
                period * repeat
            },
            per_channel_rows,
            channels: channels.max(1),
            scale: expand(&chain.scale, 1.0),
            bias: expand(&chain.bias, -0.0),
            residual: chain.residual.is_some(),
            low: chain.low.map(f32::to_bits),
            high: chain.high.map(f32::to_bits),
            quantize,
        }
    }
}

impl Op for Epilogue {
    fn name(&self) -> StaticName {
        "edgetune.Epilogue".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let bound = |b: Option<u32>| b.map(|b| f32::from_bits(b).to_string());
        Ok(vec![format!(
            "i32 as f32 × scale + bias{}{}{}{}, rows of {} ({})",
            if self.residual { " + input 1" } else { "" },
            bound(self.low)
                .map(|l| format!(", max with {l}"))
                .unwrap_or_default(),
            bound(self.high)
                .map(|h| format!(", min with {h}"))
                .unwrap_or_default(),
            if self.quantize.is_some() {
                ", quantized to i8"
            } else {
                ""
            },
            self.row,
            if self.per_channel_rows {
                "one channel each"
            } else {
                "whole periods of the channels"
            }
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for Epilogue {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let shape = inputs[0].shape();
        let len: usize = shape.iter().product();
        ensure!(
            len.is_multiple_of(self.row) && inputs.len() == 1 + self.residual as usize,
            "Epilogue: rows of {} for {shape:?}, {} inputs",
            self.row,
            inputs.len()
        );
        let x = inputs[0].try_as_plain_ram()?;
        let xs = x.as_slice::<i32>()?;
        let residual = match inputs.get(1) {
            Some(t) => {
                ensure!(
                    t.shape() == shape,
                    "Epilogue: input of shape {:?} for {shape:?}",
                    t.shape()
                );
                Some(t.try_as_plain_ram()?)
            }
            None => None,
        };
        let residual = residual.as_ref().map(|r| r.as_slice::<f32>()).transpose()?;
        let (low, high) = (self.low.map(f32::from_bits), self.high.map(f32::from_bits));
        // SAFETY: every row of the output is written below (`len` is a whole number of
        // rows) before anything reads it.
        let mut out = unsafe {
            match self.quantize {
                Some(_) => Tensor::uninitialized::<i8>(shape)?,
                None => Tensor::uninitialized::<f32>(shape)?,
            }
        };
        let affine = |r: usize, xrow: &[i32], y: &mut [f32]| {
            let res = residual.map(|v| &v[r * self.row..(r + 1) * self.row]);
            if self.per_channel_rows {
                let c = r % self.channels;
                affine_row(y, xrow, self.scale.0[c], self.bias.0[c], res, low, high);
            } else {
                let (s, b) = (&self.scale.0[..], &self.bias.0[..]);
                affine_row(y, xrow, s, b, res, low, high);
            }
        };
        {
            let mut plain = out.try_as_plain_ram_mut()?;
            let rows = xs.chunks_exact(self.row).enumerate();
            match &self.quantize {
                // Each row through a buffer, then quantized into the output.
                Some(q) => {
                    let mut buffer = vec![0f32; self.row];
                    let out = plain.as_slice_mut::<i8>()?.chunks_exact_mut(self.row);
                    for ((r, xrow), qrow) in rows.zip(out) {
                        affine(r, xrow, &mut buffer);
                        q.quantize_into(&buffer, qrow);
                    }
                }
                None => {
                    let out = plain.as_slice_mut::<f32>()?.chunks_exact_mut(self.row);
                    for ((r, xrow), y) in rows.zip(out) {
                        affine(r, xrow, y);
                    }
                }
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Epilogue {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let dt = if self.quantize.is_some() {
            i8::datum_type()
        } else {
            f32::datum_type()
        };
        Ok(tvec!(dt.fact(inputs[0].shape.clone())))
    }
}

/// A chain being gathered: its parts so far, the axis of its per-channel operands.
#[derive(Default)]
struct Chain {
    shape: TVec<usize>,
    axis: Option<usize>,
    /// How far the chain has come: 0 nothing yet, then 1 scale, 2 bias, 3 residual, 4 low,
    /// 5 high.
    part: u8,
    scale: Option<Values>,
    bias: Option<Values>,
    residual: Option<OutletId>,
    low: Option<f32>,
    high: Option<f32>,
}

impl Chain {
    /// Takes `node`, reading the chain's value at `from`, as the chain's next part, or
    /// returns `None` if it is not one (which ends the chain).
    fn take(&mut self, model: &TypedModel, node: &TypedNode, from: OutletId) -> Option<()> {
        let op = node.op_as::<TypedBinOp>()?;
        let out = model.outlet_fact(OutletId::new(node.id, 0)).ok()?;
        if node.inputs.len() != 2
            || out.datum_type != f32::datum_type()
            || out.shape.as_concrete()? != &*self.shape
        {
            return None;
        }
        let other = node.inputs[(node.inputs[0] == from) as usize];
        let fact = model.outlet_fact(other).ok()?;
        if fact.datum_type != f32::datum_type() || fact.rank() != self.shape.len() {
            return None;
        }
        let values = match &fact.konst {
            Some(k) => {
                let v = k.try_as_plain_ram().ok()?;
                let v = v.as_slice::<f32>().ok()?;
                let wide: Vec<usize> = (0..k.rank()).filter(|&a| k.shape()[a] != 1).collect();
                match *wide {
                    [] => Some(Values::Scalar(v[0])),
                    [a] if k.shape()[a] == self.shape[a] && self.axis.is_none_or(|b| b == a) => {
                        Some(Values::Channels(a, v.to_vec()))
                    }
                    _ => return None,
                }
            }
            None if fact.shape.as_concrete()? == &*self.shape => None,
            None => return None,
        };
        let scalar = match &values {
            Some(Values::Scalar(v)) => Some(*v),
            _ => None,
        };
        let part = if op.0.is::<Mul>() && values.is_some() {
            1
        } else if op.0.is::<Add>() {
            if values.is_some() { 2 } else { 3 }
        } else if op.0.is::<Max>() && scalar.is_some() {
            4
        } else if op.0.is::<Min>() && scalar.is_some() {
            5
        } else {
            return None;
        };
        if part <= self.part {
            return None;
        }
        if let Some(Values::Channels(a, _)) = &values {
            self.axis = Some(*a);
        }
        match part {
            1 => self.scale = values,
            2 => self.bias = values,
            3 => self.residual = Some(other),
            4 => self.low = scalar,
            _ => self.high = scalar,
        }
        self.part = part;
        Some(())
    }
}

/// Replaces each chain of a cast from i32 to f32 and the parts after it (see the module
/// docs) by one [`Epilogue`]; returns how many. Run after declutter, before tract's
/// optimization.
pub fn epilogues(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(cast) = node.op_as::<Cast>() else {
            continue;
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let Some(shape) = input.shape.as_concrete() else {
            continue;
        };
        if cast.to != f32::datum_type() || input.datum_type != i32::datum_type() {
            continue;
        }
        let mut chain = Chain {
            shape: shape.into(),
            ..Chain::default()
        };
        let mut nodes = vec![id];
        let mut end = OutletId::new(id, 0);
        let mut quantize = None;
        while let Some(next) = only_reader(model, end) {
            if let Some(q) = next
                .op_as::<ElementWiseOp>()
                .and_then(|e| e.0.downcast_ref::<QuantizeI8>())
            {
                quantize = Some(q.clone());
                nodes.push(next.id);
                end = OutletId::new(next.id, 0);
                break;
            }
            if chain.take(model, next, end).is_none() {
                break;
            }
            nodes.push(next.id);
            end = OutletId::new(next.id, 0);
        }
        if chain.part == 0 {
            continue;
        }
        let op = Epilogue::new(&chain, quantize);
        let name = model.node(end.node).name.clone();
        let mut patch = TypedModelPatch::new(format!("edgetune epilogue {name}"));
        let mut inputs = tvec![model.node(id).inputs[0]];
        inputs.extend(chain.residual);
        let taps = patch.taps(model, &inputs)?;
        let y = patch.wire_node(format!("{name}.epilogue"), op, &taps)?[0];
        replaced += super::replace_chain(model, patch, y, end, &nodes)? as usize;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use tract_nnef::tract_core::ops::binary::BinMiniOp;

    fn random(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|_| (rng.below(2001) as f32 - 1000.0) * scale / 1000.0)
            .collect()
    }

    /// An i32 input `x` of `shape` cast to f32.
    fn cast_source(m: &mut TypedModel, shape: &[usize]) -> TractResult<OutletId> {
        let x = m.add_source("x", i32::fact(shape))?;
        let to = f32::datum_type();
        Ok(m.wire_node("cast", Cast { to }, &[x])?[0])
    }

    /// `Cast → Mul → Add → [Add input] → Max → Min → [quantize]` on i32 of `shape`, the
    /// per-channel operands along `axis`.
    fn model(
        rng: &mut Rng,
        shape: &[usize],
        axis: usize,
        residual: bool,
        quantize: bool,
    ) -> TractResult<TypedModel> {
        let mut m = TypedModel::default();
        let mut y = cast_source(&mut m, shape)?;
        let mut per_channel = tvec![1; shape.len()];
        per_channel[axis] = shape[axis];
        let scale = Tensor::from_shape(&per_channel, &random(rng, shape[axis], 0.001))?;
        let bias = Tensor::from_shape(&per_channel, &random(rng, shape[axis], 1.0))?;
        let scale = m.add_const("scale", scale)?;
        let bias = m.add_const("bias", bias)?;
        y = m.wire_node("mul", TypedBinOp(Box::new(Mul), None), &[y, scale])?[0];
        y = m.wire_node("add", TypedBinOp(Box::new(Add), None), &[bias, y])?[0];
        if residual {
            let r = m.add_source("r", f32::fact(shape))?;
            y = m.wire_node("residual", TypedBinOp(Box::new(Add), None), &[r, y])?[0];
        }
        let ones = tvec![1; shape.len()];
        let zero = m.add_const("zero", Tensor::from_shape(&ones, &[0f32])?)?;
        let six = m.add_const("six", Tensor::from_shape(&ones, &[6f32])?)?;
        y = m.wire_node("max", TypedBinOp(Box::new(Max), None), &[y, zero])?[0];
        y = m.wire_node("min", TypedBinOp(Box::new(Min), None), &[six, y])?[0];
        if quantize {
            let q = QuantizeI8 {
                scale: 127.0 / 6.0,
                zero_point: -3,
            };
            y = m.wire_node("quantize", ElementWiseOp(Box::new(q), None), &[y])?[0];
        }
        m.select_output_outlets(&[y])?;
        Ok(m)
    }

    /// tract's plan and edgetune's give the same bits, with and without a residual and a
    /// quantizer, per-channel operands on the first, a middle and the last axis, and maps
    /// from 1×1 to 32×32 (tract broadcasts differently below 16 values a channel).
    #[test]
    fn one_pass_gives_tracts_bits() -> TractResult<()> {
        let mut rng = Rng::new(11);
        let shapes: [(&[usize], usize); 7] = [
            (&[1, 8, 32, 32], 1),
            (&[48, 4, 4], 0),
            (&[1, 24, 2, 2], 1),
            (&[1, 16, 1, 1], 1),
            // Channels last: 21 periods of 40 in one row; 30 in two rows of 15.
            (&[3, 7, 40], 2),
            (&[6, 5, 40], 2),
            (&[1, 5, 9], 1),
        ];
        for (shape, axis) in shapes {
            for (residual, quantize) in [(false, false), (false, true), (true, false), (true, true)]
            {
                let model = model(&mut rng, shape, axis, residual, quantize)?;
                let tracts = model.clone().into_optimized()?.into_runnable()?;
                let mut ours = model;
                ours.declutter()?;
                assert_eq!(epilogues(&mut ours)?, 1, "{shape:?}");
                let ours = ours.into_optimized()?;
                assert!(
                    ours.nodes().iter().all(|n| !n.op_is::<Cast>()),
                    "{shape:?}: a cast is left"
                );
                let ours = ours.into_runnable()?;
                let len: usize = shape.iter().product();
                for _ in 0..2 {
                    let x: Vec<i32> = (0..len).map(|_| rng.below(40001) as i32 - 20000).collect();
                    let mut inputs = tvec![Tensor::from_shape(shape, &x)?.into_tvalue()];
                    if residual {
                        let r = random(&mut rng, len, 3.0);
                        inputs.push(Tensor::from_shape(shape, &r)?.into_tvalue());
                    }
                    let a = tracts.run(inputs.clone())?.remove(0);
                    let b = ours.run(inputs)?.remove(0);
                    assert_eq!(a.datum_type(), b.datum_type());
                    assert_eq!(
                        a.as_bytes(),
                        b.as_bytes(),
                        "{shape:?} {residual} {quantize}"
                    );
                }
            }
        }
        Ok(())
    }

    /// A cast of 2×3 i32 to f32, then `op` with 2: the model's output, with the cast's
    /// too if `cast_out`.
    fn cast_then(op: Box<dyn BinMiniOp>, cast_out: bool) -> TractResult<TypedModel> {
        let mut m = TypedModel::default();
        let y = cast_source(&mut m, &[2, 3])?;
        let two = m.add_const("two", Tensor::from_shape(&[1, 1], &[2f32])?)?;
        let z = m.wire_node("op", TypedBinOp(op, None), &[y, two])?[0];
        let outputs = if cast_out { vec![z, y] } else { vec![z] };
        m.select_output_outlets(&outputs)?;
        Ok(m)
    }

    /// A chain is only what edgetune can run in one pass: a step that is not one, or a
    /// value read twice, ends it, and nothing changes when the cast has no step after it.
    #[test]
    fn chains_end_where_a_step_is_not_one() -> TractResult<()> {
        let div = Box::new(tract_nnef::tract_core::ops::math::Div);
        assert_eq!(epilogues(&mut cast_then(div, false)?)?, 0);
        // The cast read twice: by the product and by the output.
        assert_eq!(epilogues(&mut cast_then(Box::new(Mul), true)?)?, 0);
        // Read once, it goes.
        assert_eq!(epilogues(&mut cast_then(Box::new(Mul), false)?)?, 1);
        Ok(())
    }

    /// A part out of order (a scale after the bias, a second bias) ends the chain there:
    /// the cast and the bias become one pass, the rest stays tract's, and the result is
    /// tract's bit for bit.
    #[test]
    fn a_part_out_of_order_ends_the_chain() -> TractResult<()> {
        let mut rng = Rng::new(12);
        let shape = [1, 4, 5, 5];
        let mut m = TypedModel::default();
        let mut y = cast_source(&mut m, &shape)?;
        let ops: [(&str, Box<dyn BinMiniOp>); 3] = [
            ("bias", Box::new(Add)),
            ("scale", Box::new(Mul)),
            ("again", Box::new(Add)),
        ];
        for (name, op) in ops {
            let c = Tensor::from_shape(&[1, 4, 1, 1], &random(&mut rng, 4, 0.01))?;
            let c = m.add_const(name, c)?;
            y = m.wire_node(format!("{name}.op"), TypedBinOp(op, None), &[y, c])?[0];
        }
        m.select_output_outlets(&[y])?;
        let tracts = m.clone().into_optimized()?.into_runnable()?;
        let mut ours = m;
        ours.declutter()?;
        assert_eq!(epilogues(&mut ours)?, 1);
        let chained = ours
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<Epilogue>())
            .next()
            .expect("an epilogue");
        assert_eq!(chained.scale, Floats(vec![1.0; 4]));
        assert!(!chained.residual && chained.low.is_none() && chained.quantize.is_none());
        let ours = ours.into_optimized()?.into_runnable()?;
        let x: Vec<i32> = (0..100).map(|_| rng.below(2001) as i32 - 1000).collect();
        let x = tvec![Tensor::from_shape(&shape, &x)?.into_tvalue()];
        let (a, b) = (tracts.run(x.clone())?.remove(0), ours.run(x)?.remove(0));
        assert_eq!(a.as_bytes(), b.as_bytes());
        Ok(())
    }
}
