//! How a backbone's graph becomes the plan tract runs: tract's own optimization, with one
//! lowering of edgetune's in between and one op of edgetune's after it.
//!
//! tract 0.23.9 lowers every quantized convolution through an eager im2col: each patch
//! is copied into a packed buffer by a per-element writer before the integer product.
//! On a Pi 4 or Pi 5 CPU model that copy was 55 % of an int8 ResNet18 inference
//! (2.56 M of 4.65 M aarch64 instructions, `scripts/iprofile.sh`), where its f32
//! convolutions read their patches in place ("lazy im2col", 0.62 M for all of f32
//! ResNet18). Two steps take it out:
//!
//! - [`lazy_integer_convolutions`], before tract's optimization: a convolution of i8
//!   activations and i8 weights with an i32 output and zero points of 0 (what
//!   `finetune-head`'s quantizer writes, `ConvInteger`) is lowered as tract lowers an f32
//!   one, the same product of integers read in place. Where tract's kernel for the
//!   machine packs its inputs in a way the lazy im2col cannot write (the dot-product
//!   kernel's `PackedI8K4`: a Pi 5, x86-64 with VNNI), the convolution keeps tract's
//!   lowering.
//! - [`pack_patches`], after it: each eager im2col left (those, and the convolutions that
//!   requantize to i8 for the next one, `QLinearConv`) becomes [`PackPatches`], which
//!   writes the same packed bytes a run of lanes at a time rather than value by value
//!   (`patches.rs`).
//!
//! Measured (`scripts/iprofile.sh`, torchvision's ResNet18 at width 1/8, 64×64, one
//! inference): on a Pi 5, 4.65 M instructions before, 2.47 M after (16 im2col
//! replaced, 0.33 M for all their copies); on a Pi 4, 4.79 M before, 4.09 M with the
//! lazy lowering (8 convolutions), 3.28 M with both (8 more replaced). The lazy lowering
//! stays first on a Pi 4: with every convolution through [`PackPatches`] instead it
//! counted 0.2 M more. The outputs are the same bit for bit (`examples/plan_check.rs`,
//! run by `scripts/cross.sh` on the host and on aarch64; the tests in `patches.rs`).

mod patches;

pub use patches::{PackPatches, pack_patches};

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::cnn::Conv;

/// `model` decluttered, its integer convolutions lowered to a lazy im2col where
/// possible, then optimized, then tract's eager im2col replaced by edgetune's where it
/// applies: what `TypedModel::into_optimized` does, with those two steps.
pub fn optimize(mut model: TypedModel) -> TractResult<TypedModel> {
    model.declutter()?;
    lazy_integer_convolutions(&mut model)?;
    model.optimize()?;
    pack_patches(&mut model)?;
    Ok(model)
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
