//! A clamp then a quantizer, in one pass: [`ClampQuantize`] in place of tract's `Max`
//! and `Min` by a constant and edgetune's i8 quantizer after them.
//!
//! An int8 MobileNetV2 keeps its depthwise convolutions f32 (`DepthwiseZones`); each
//! one's output goes through its ReLU6 (`Clip`, which tract makes a `Max` with 0 and a
//! `Min` with 6, two passes over the map in tract's element-wise loops) and then the i8
//! quantizer of the projection after it. At 224×224 on the Pi 5 CPU model the two
//! passes of the clamp were 2.4 M of the 69.0 M aarch64 instructions of one inference,
//! the quantizer 4.9 M (`scripts/iprofile.sh`, where tract's element-wise loops show as
//! `LocalKey::with`).
//!
//! The quantizer `q` (multiply by a positive scale, round, add the zero point, saturate
//! to i8) never decreases, so clamping before it is clamping after it:
//! `q(min(max(x, lo), hi)) = min(max(q(x), q(lo)), q(hi))`. NaN too, for a ReLU or a
//! ReLU6 (`lo` 0, `hi` at least 0): tract's `Max` and `Min` make NaN 0 on x86 and keep
//! it NaN on aarch64, and both quantize to the zero point, `q(0)`, which is also what
//! `q(NaN)` clamped gives. (With another lower bound, NaN would come out as `q(lo)` on
//! one and the zero point on the other, so those clamps stay tract's.) [`ClampQuantize`]
//! quantizes the values and clamps the bytes in the same NEON loop: tract's outputs bit
//! for bit (the tests compare them, NaN and infinities included, on both).
//!
//! [`clamped_quantizers`] replaces each edgetune quantizer whose input is a `Max` by 0,
//! or a `Max` by 0 then a `Min` by a value of at least 0, each read only by the next,
//! before tract's optimization. A quantizer whose scale is not positive and finite is
//! left as it is.

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::binary::TypedBinOp;
use tract_nnef::tract_core::ops::element_wise::ElementWiseOp;
use tract_nnef::tract_core::ops::math::{Max, Min};

use super::only_reader;
use crate::nnef::QuantizeI8;

/// `q(x)` clamped to `q(low)` and `q(high)` (see the module docs), f32 in, i8 out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClampQuantize {
    quantize: QuantizeI8,
    /// The quantized bounds (`i8::MAX` above where the graph has no upper bound).
    low: i8,
    high: i8,
}

impl ClampQuantize {
    fn new(quantize: QuantizeI8, low: f32, high: Option<f32>) -> ClampQuantize {
        ClampQuantize {
            low: quantize.quantize(low),
            high: high.map_or(i8::MAX, |v| quantize.quantize(v)),
            quantize,
        }
    }
}

impl Op for ClampQuantize {
    fn name(&self) -> StaticName {
        "edgetune.ClampQuantize".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "quantized × {} + {}, then clamped to {}..={}",
            self.quantize.scale, self.quantize.zero_point, self.low, self.high
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for ClampQuantize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = args_1!(inputs);
        let xs = x.try_as_plain_ram()?;
        let xs = xs.as_slice::<f32>()?;
        // SAFETY: `quantize_clamped_into` writes every one of its values (as many as
        // `xs`, the input's) before anything reads one.
        let mut out = unsafe { Tensor::uninitialized::<i8>(x.shape())? };
        {
            let mut plain = out.try_as_plain_ram_mut()?;
            let ys = plain.as_slice_mut::<i8>()?;
            ensure!(
                ys.len() == xs.len(),
                "ClampQuantize: output of another size"
            );
            // The max, then the min, as tract's order.
            self.quantize
                .quantize_clamped_into(xs, ys, self.low, self.high);
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for ClampQuantize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 1 && inputs[0].datum_type == f32::datum_type(),
            "ClampQuantize takes one f32 input"
        );
        Ok(tvec!(i8::fact(inputs[0].shape.clone())))
    }

    as_op!();
}

/// The bound of `node` if it is a `Max` (`max` true) or `Min` of f32 by one constant
/// value, with the input it bounds.
fn bound(model: &TypedModel, node: &TypedNode, max: bool) -> Option<(f32, OutletId)> {
    let op = node.op_as::<TypedBinOp>()?;
    if (max && !op.0.is::<Max>()) || (!max && !op.0.is::<Min>()) || node.inputs.len() != 2 {
        return None;
    }
    let fact = |o: OutletId| model.outlet_fact(o).ok();
    if fact(OutletId::new(node.id, 0))?.datum_type != f32::datum_type() {
        return None;
    }
    // The constant on either side, one value; the other input of the output's shape.
    for (k, x) in [(1, 0), (0, 1)] {
        let (kf, xf) = (fact(node.inputs[k])?, fact(node.inputs[x])?);
        if let Some(v) = &kf.konst
            && v.len() == 1
            && v.datum_type() == f32::datum_type()
            && xf.datum_type == f32::datum_type()
            && xf.shape == fact(OutletId::new(node.id, 0))?.shape
        {
            return Some((v.cast_to_scalar::<f32>().ok()?, node.inputs[x]));
        }
    }
    None
}

/// Replaces each edgetune quantizer after a ReLU or a ReLU6 (a `Max` by 0, maybe then a
/// `Min` by a value of at least 0, each read only by the next) by one [`ClampQuantize`];
/// returns how many.
/// Run after declutter, before tract's optimization (and after [`super::epilogues`],
/// which takes such clamps into an integer product's epilogue where there is one).
pub fn clamped_quantizers(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(q) = node
            .op_as::<ElementWiseOp>()
            .and_then(|e| e.0.downcast_ref::<QuantizeI8>())
        else {
            continue;
        };
        if !(q.scale.is_finite() && q.scale > 0.0) {
            continue;
        }
        let q = q.clone();
        // Walk back: maybe a Min (ReLU6), then the Max (ReLU), which must be there.
        let mut nodes = vec![];
        let mut input = node.inputs[0];
        let (mut low, mut high) = (None, None);
        let producer = model.node(input.node);
        if let Some((v, x)) = bound(model, producer, false)
            && only_reader(model, input).is_some_and(|r| r.id == id)
        {
            high = Some(v);
            nodes.push(producer.id);
            input = x;
        }
        let producer = model.node(input.node);
        let reader = nodes.last().copied().unwrap_or(id);
        if let Some((v, x)) = bound(model, producer, true)
            && only_reader(model, input).is_some_and(|r| r.id == reader)
        {
            low = Some(v);
            nodes.push(producer.id);
            input = x;
        }
        // NaN comes out as tract's on every architecture only for a ReLU or a ReLU6.
        let Some(low) = low.filter(|&lo| lo == 0.0) else {
            continue;
        };
        if !high.is_none_or(|hi| hi >= 0.0) {
            continue;
        }
        let name = node.name.clone();
        let mut patch = TypedModelPatch::new(format!("edgetune clamp and quantize {name}"));
        let x = patch.tap_model(model, input)?;
        let y = patch.wire_node(
            format!("{name}.clamped"),
            ClampQuantize::new(q, low, high),
            &[x],
        )?[0];
        nodes.push(id);
        replaced += super::replace_chain(model, patch, y, OutletId::new(id, 0), &nodes)? as usize;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// `x → [Max lo] → [Min hi] → quantize` on f32 of `shape`.
    fn model(
        shape: &[usize],
        low: Option<f32>,
        high: Option<f32>,
        q: QuantizeI8,
    ) -> TractResult<TypedModel> {
        let mut m = TypedModel::default();
        let mut y = m.add_source("x", f32::fact(shape))?;
        let ones = tvec![1; shape.len()];
        if let Some(lo) = low {
            let lo = m.add_const("lo", Tensor::from_shape(&ones, &[lo])?)?;
            y = m.wire_node("max", TypedBinOp(Box::new(Max), None), &[y, lo])?[0];
        }
        if let Some(hi) = high {
            let hi = m.add_const("hi", Tensor::from_shape(&ones, &[hi])?)?;
            // The constant first: either side is taken.
            y = m.wire_node("min", TypedBinOp(Box::new(Min), None), &[hi, y])?[0];
        }
        y = m.wire_node("quantize", ElementWiseOp(Box::new(q), None), &[y])?[0];
        m.select_output_outlets(&[y])?;
        Ok(m)
    }

    /// Values over and past the bounds, NaN, infinities and both zeros.
    fn input(rng: &mut Rng, len: usize) -> Vec<f32> {
        let special = [
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            6.0,
        ];
        (0..len)
            .map(|_| match rng.below(8) {
                0 => special[rng.below(special.len())],
                1 => (rng.unit() - 0.5) * 1e4,
                _ => rng.unit() * 10.0 - 2.0,
            })
            .collect()
    }

    /// tract's plan and edgetune's give the same bytes: ReLU6, ReLU, −0 and 0 as bounds,
    /// zero points 0 and −3, maps of odd sizes.
    #[test]
    fn one_pass_gives_tracts_bytes() -> TractResult<()> {
        let mut rng = Rng::new(41);
        let cases: [(Option<f32>, Option<f32>); 4] = [
            (Some(0.0), Some(6.0)),
            (Some(0.0), None),
            (Some(-0.0), Some(1.5)),
            (Some(0.0), Some(0.0)),
        ];
        for (low, high) in cases {
            for zero_point in [0i8, -3] {
                for shape in [&[1, 8, 9, 7][..], &[37]] {
                    let q = QuantizeI8 {
                        scale: 127.0 / 6.0,
                        zero_point,
                    };
                    let m = model(shape, low, high, q)?;
                    let tracts = m.clone().into_optimized()?.into_runnable()?;
                    let mut ours = m;
                    ours.declutter()?;
                    assert_eq!(clamped_quantizers(&mut ours)?, 1, "{low:?} {high:?}");
                    // The source and the one pass.
                    assert_eq!(ours.eval_order()?.len(), 2, "{low:?} {high:?}");
                    let ours = ours.into_optimized()?.into_runnable()?;
                    let len: usize = shape.iter().product();
                    for _ in 0..3 {
                        let x = Tensor::from_shape(shape, &input(&mut rng, len))?;
                        let a = tracts.run(tvec![x.clone().into_tvalue()])?.remove(0);
                        let b = ours.run(tvec![x.into_tvalue()])?.remove(0);
                        assert_eq!(a.datum_type(), b.datum_type());
                        assert_eq!(a.as_bytes(), b.as_bytes(), "{low:?} {high:?} {zero_point}");
                    }
                }
            }
        }
        Ok(())
    }

    /// What stays tract's: a clamp read by something else too, a quantizer with no clamp
    /// before it, one whose scale is not positive, and clamps other than a ReLU or a
    /// ReLU6 (NaN would come out otherwise on one architecture).
    #[test]
    fn what_it_leaves_to_tract() -> TractResult<()> {
        let q = |scale| QuantizeI8 {
            scale,
            zero_point: 0,
        };
        let mut m = model(&[4, 4], Some(0.0), Some(6.0), q(10.0))?;
        let min = m.node_id_by_name("min")?;
        m.select_output_outlets(&[
            OutletId::new(m.node_id_by_name("quantize")?, 0),
            OutletId::new(min, 0),
        ])?;
        // The Min is an output: only the Max could go, and it is not right before the
        // quantizer.
        assert_eq!(clamped_quantizers(&mut m)?, 0);
        assert_eq!(
            clamped_quantizers(&mut model(&[4], None, None, q(10.0))?)?,
            0
        );
        assert_eq!(
            clamped_quantizers(&mut model(&[4], Some(0.0), None, q(-1.0))?)?,
            0
        );
        for (low, high) in [
            (None, Some(1.5)),
            (Some(-1.0), Some(6.0)),
            (Some(0.5), Some(6.0)),
            (Some(0.0), Some(-1.0)),
        ] {
            let mut m = model(&[4], low, high, q(10.0))?;
            assert_eq!(clamped_quantizers(&mut m)?, 0, "{low:?} {high:?}");
        }
        Ok(())
    }
}
