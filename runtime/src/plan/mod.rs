//! How a backbone's graph becomes the plan tract runs: tract's own optimization, with
//! steps of edgetune's before and after it for the integer (int8) layers.
//!
//! tract 0.23.9 runs int8 convolutions at a cost that made int8 slower than f32 on the
//! boards. Counted per function on a Pi 4 and Pi 5 CPU model (`scripts/iprofile.sh`),
//! what it spent beyond the integer products, and the step that takes it out:
//!
//! - [`lazy_integer_convolutions`], before tract's optimization: a convolution of i8
//!   activations and i8 weights with an i32 output and zero points of 0 (what
//!   `finetune-head`'s quantizer writes, `ConvInteger`) is lowered as tract lowers an f32
//!   one, its patches read in place instead of copied by an eager im2col. Where tract's
//!   kernel for the machine packs its inputs in a way that cannot be written so (the
//!   dot-product kernel's `PackedI8K4`: a Pi 5, x86-64 with VNNI), the convolution keeps
//!   tract's lowering.
//! - [`products_over_one_row`], before it too: tract makes an integer 1×1 convolution one
//!   small matrix product per image row; this makes it one product over all the pixels.
//! - [`pack_patches`], after it: each eager im2col left becomes [`PackPatches`], which
//!   writes the same packed bytes a run of lanes at a time rather than value by value
//!   (`patches.rs`). tract's was 55 % of an int8 ResNet18 inference.
//! - [`pack_columns`], after it: the dot-product kernel's packing of activations becomes
//!   [`PackColumns`], eight columns or four k's at a time rather than byte by byte
//!   (`columns.rs`).
//!
//! Measured (`scripts/iprofile.sh`, one inference, torchvision's models in
//! `models/torchvision`, 64×64): ResNet18 at width 1/8 int8 on a Pi 5 from 4.65 M
//! instructions to 2.47 M, on a Pi 4 from 4.79 M to 3.28 M; MobileNetV2 at width 1/4 int8
//! on a Pi 5 from 5.74 M to 4.17 M (each step's share is in the README's "ARM cost"). On
//! a Pi 4 the lazy lowering stays first: with every convolution through [`PackPatches`]
//! instead, ResNet18 counted 0.2 M more. Every step gives tract's outputs bit for bit
//! (`examples/plan_check.rs`, run by `scripts/cross.sh` on the host and on aarch64; the
//! tests in `patches.rs` and `columns.rs`).

mod columns;
mod patches;

pub use columns::{PackColumns, pack_columns};
pub use patches::{PackPatches, pack_patches};

use tract_nnef::internal::*;
use tract_nnef::tract_core::axes::Axis;
use tract_nnef::tract_core::ops::cnn::Conv;
use tract_nnef::tract_core::ops::einsum::EinSum;

/// What [`optimize`]'s own steps did to a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Steps {
    /// Integer convolutions lowered to a lazy im2col ([`lazy_integer_convolutions`]).
    pub lowered: usize,
    /// Integer products over an image's rows made one product ([`products_over_one_row`]).
    pub one_row: usize,
    /// tract's im2col replaced ([`pack_patches`]).
    pub im2col: usize,
    /// tract's packings of activations replaced ([`pack_columns`]).
    pub packings: usize,
}

/// `model` decluttered, its integer convolutions lowered to a lazy im2col where
/// possible and its integer products over rows made one, then optimized, then tract's
/// eager im2col and packings replaced by edgetune's where they apply: what
/// `TypedModel::into_optimized` does, with those steps.
pub fn optimize(model: TypedModel) -> TractResult<TypedModel> {
    Ok(optimize_steps(model)?.0)
}

/// [`optimize`], saying what each of edgetune's steps did.
pub fn optimize_steps(mut model: TypedModel) -> TractResult<(TypedModel, Steps)> {
    model.declutter()?;
    let lowered = lazy_integer_convolutions(&mut model)?;
    // After declutter, which would split the rows again.
    let one_row = products_over_one_row(&mut model)?;
    model.optimize()?;
    let im2col = pack_patches(&mut model)?;
    let packings = pack_columns(&mut model)?;
    let steps = Steps {
        lowered,
        one_row,
        im2col,
        packings,
    };
    Ok((model, steps))
}

/// Rewrites each integer matrix product whose first input and output share two adjacent
/// axes that nothing else has (a 1×1 convolution's rows and columns, `NIHW,OI->NOHW`)
/// as a product over one axis of both, reshaped before and after. tract makes the first
/// of them a batch axis: one small product per image row, each with its packing, its
/// scratch space and its border tiles. Returns how many.
///
/// Measured (`scripts/iprofile.sh`, Pi 5): torchvision's MobileNetV2 at width 1/4, 64×64,
/// int8, from 5.49 M to 4.17 M instructions, its 34 pointwise convolutions one product
/// each. f32 products are left as they are: the same rewrite took f32 MobileNetV2 from
/// 3.28 M to 3.38 M (the reshapes' copies cost more than the products saved).
pub fn products_over_one_row(model: &mut TypedModel) -> TractResult<usize> {
    let mut rewritten = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(einsum) = node.op_as::<EinSum>().filter(|e| e.q_params.is_some()) else {
            continue;
        };
        let x = model.outlet_fact(node.inputs[0])?;
        let Some(shape) = x.shape.as_concrete() else {
            continue;
        };
        // The two axes: in the first input at p, p+1, in the output at q, q+1, nowhere else.
        let only_there = |a: &Axis| {
            a.inputs[0].len() == 1
                && a.outputs[0].len() == 1
                && a.inputs.iter().skip(1).all(|i| i.is_empty())
        };
        let axes: Vec<&Axis> = einsum
            .axes
            .iter_all_axes()
            .filter(|a| only_there(a))
            .collect();
        let pair = axes.iter().find_map(|a| {
            let b = axes.iter().find(|b| {
                b.inputs[0][0] == a.inputs[0][0] + 1 && b.outputs[0][0] == a.outputs[0][0] + 1
            })?;
            Some((a.inputs[0][0], b.repr))
        });
        let Some((p, w_repr)) = pair else {
            continue;
        };
        let (h, w) = (shape[p], shape[p + 1]);
        if h < 2 || w < 1 {
            continue;
        }
        let out_p = einsum.axes.axis(w_repr)?.outputs[0][0] - 1;
        let op = EinSum {
            axes: einsum.axes.remove_axis(w_repr)?,
            ..einsum.clone()
        };
        let (name, inputs) = (node.name.clone(), node.inputs.clone());
        let mut patch = TypedModelPatch::new(format!("edgetune one row {name}"));
        let mut taps = patch.taps(model, &inputs)?;
        let hw = tvec![h.to_dim(), w.to_dim()];
        let one = tvec![(h * w).to_dim()];
        taps[0] = patch.wire_node(
            format!("{name}.one_row"),
            AxisOp::Reshape(p, hw.clone(), one.clone()),
            &[taps[0]],
        )?[0];
        let y = patch.wire_node(format!("{name}.over_one_row"), op, &taps)?[0];
        let y = patch.wire_node(
            format!("{name}.rows"),
            AxisOp::Reshape(out_p, one, hw),
            &[y],
        )?[0];
        if patch.outlet_fact(y)? != model.outlet_fact(OutletId::new(id, 0))? {
            continue;
        }
        patch.shunt_outside(model, OutletId::new(id, 0), y)?;
        patch.obliterate(id)?;
        patch.apply(model)?;
        rewritten += 1;
    }
    Ok(rewritten)
}

/// Replaces the op of each node of `model` for which `op_for` gives one (with the same
/// output facts); returns how many.
fn replace_ops<O: TypedOp>(
    model: &mut TypedModel,
    op_for: impl Fn(&TypedModel, usize) -> TractResult<Option<O>>,
) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        if let Some(op) = op_for(model, id)? {
            model.node_mut(id).op = Box::new(op);
            replaced += 1;
        }
    }
    Ok(replaced)
}

/// Whether `fact` is a constant whose values are all 0.
fn is_zero(fact: &TypedFact) -> bool {
    fact.konst
        .as_ref()
        .and_then(|k| k.cast_to::<i32>().ok())
        .and_then(|k| {
            k.try_as_plain_ram()
                .ok()
                .and_then(|p| p.as_slice::<i32>().ok().map(|s| s.iter().all(|&v| v == 0)))
        })
        .unwrap_or(false)
}

/// The convolution `id` with f32 parameters (the lazy im2col's lowering takes no
/// quantization), its name and inputs, if it qualifies (see the module docs).
fn qualifies(model: &TypedModel, id: usize) -> TractResult<Option<(Conv, String, Vec<OutletId>)>> {
    let node = model.node(id);
    let Some(conv) = node.op_as::<Conv>() else {
        return Ok(None);
    };
    if conv.q_params != Some(i32::datum_type()) || node.inputs.len() != 9 {
        return Ok(None);
    }
    let facts = model.node_input_facts(id)?;
    let (x, kernel, bias) = (facts[0], facts[1], facts[2]);
    // i8, or i8 quantized around 0 (the types say what the values mean; the product
    // of the values is the same).
    let plain_i8 = |dt: DatumType| dt.unquantized() == i8::datum_type() && dt.zp_scale().0 == 0;
    if !plain_i8(x.datum_type)
        || !plain_i8(kernel.datum_type)
        || kernel.konst.is_none()
        || bias.konst.is_none()
        || !is_zero(facts[3])
        || !is_zero(facts[5])
        || x.shape.as_concrete().is_none_or(|s| s.first() != Some(&1))
    {
        return Ok(None);
    }
    let plain = Conv {
        q_params: None,
        ..conv.clone()
    };
    Ok(Some((plain, node.name.clone(), node.inputs.clone())))
}

/// Rewrites each convolution that qualifies (see the module docs); returns how many.
pub fn lazy_integer_convolutions(model: &mut TypedModel) -> TractResult<usize> {
    let mut lowered = 0;
    for id in model.eval_order()? {
        let Some((plain, name, inputs)) = qualifies(model, id)? else {
            continue;
        };
        let mut patch = TypedModelPatch::new(format!("edgetune lazy integer conv {name}"));
        let wired = (|| -> TractResult<OutletId> {
            let mut taps = patch.taps(model, &inputs[..3])?;
            for (i, what) in [(0, "x"), (1, "kernel")] {
                if patch.outlet_fact(taps[i])?.datum_type != i8::datum_type() {
                    taps[i] = patch.wire_node(
                        format!("{name}.{what}_i8"),
                        tract_nnef::tract_core::ops::cast::cast(i8::datum_type()),
                        &[taps[i]],
                    )?[0];
                }
            }
            if patch.outlet_fact(taps[2])?.datum_type != i32::datum_type() {
                taps[2] = patch.wire_node(
                    format!("{name}.bias_i32"),
                    tract_nnef::tract_core::ops::cast::cast(i32::datum_type()),
                    &[taps[2]],
                )?[0];
            }
            // SAFETY: what tract's own codegen calls for a convolution with a concrete
            // input shape and a batch of 1, both checked above.
            let wire = unsafe { plain.wire_as_lazy_im2col(&mut patch, &name, &taps)? };
            Ok(wire[0])
        })();
        // tract refuses the kernels it cannot feed lazily (see the module docs): the
        // convolution keeps its lowering.
        let Ok(wire) = wired else {
            continue;
        };
        if patch.outlet_fact(wire)? != model.outlet_fact(OutletId::new(id, 0))? {
            continue;
        }
        patch.shunt_outside(model, OutletId::new(id, 0), wire)?;
        patch.obliterate(id)?;
        patch.apply(model)?;
        lowered += 1;
    }
    Ok(lowered)
}
