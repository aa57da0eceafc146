//! How a backbone's graph becomes the plan tract runs: tract's own optimization, with
//! steps of edgetune's before and after it, for the integer (int8) layers and for the
//! f32 convolutions around them.
//!
//! tract 0.23.9 runs int8 convolutions at a cost that made int8 slower than f32 on the
//! boards. Counted per function on a Pi 4 and Pi 5 CPU model (`scripts/iprofile.sh`),
//! what it spent beyond the products, and the step that takes it out:
//!
//! - [`products_over_one_row`], before tract's optimization: tract makes an integer 1×1
//!   convolution one small matrix product per image row; this makes it one product over
//!   all the pixels.
//! - [`epilogues`], before tract's optimization: the cast of an integer product's i32 to
//!   f32 and the scale, bias, residual, clamp and quantizer after it, which tract runs as
//!   separate passes (broadcasting per-channel operands at every inference), become one
//!   pass, [`Epilogue`] (`epilogue.rs`).
//! - [`clamped_quantizers`], before tract's optimization: a ReLU or ReLU6 (after an f32
//!   depthwise convolution) and the i8 quantizer after it, two passes of tract's
//!   and one of edgetune's, become one pass, [`ClampQuantize`] (`clamp.rs`).
//! - [`depthwise_zones`], before tract's codegen: an f32 depthwise convolution becomes
//!   [`DepthwiseZones`], whose walk over the output's zones is worked out at load, where
//!   tract's `DepthWise` allocates and rebuilds it at every inference (`zones.rs`; f32
//!   bundles too: MobileNetV2's depthwise layers stay f32).
//! - [`pack_patches`], after it: each eager im2col of an integer convolution becomes
//!   [`PackPatches`], which writes the same packed bytes a run of lanes at a time rather
//!   than value by value (`patches.rs`). tract's was 55 % of an int8 ResNet18 inference.
//! - [`gather_panels`], after it: tract's lazy im2col of an f32 convolution (ResNet18's
//!   stem, kept f32 by the quantizer) becomes [`GatherPanels`], the same panels packed
//!   when the product asks for them, 8 lanes at a time where they lie on one row, and
//!   kept where the product asks for them a third time (`gather.rs`; f32 bundles too).
//! - [`pack_columns`], after it: the packing of the integer products' activations
//!   becomes [`PackColumns`], eight columns or four k's at a time rather than byte by
//!   byte (`columns.rs`).
//! - [`DotProduct`], after it, on aarch64: tract's integer products, with their tile
//!   loop, scratch space, border tiles and strided stores, become 8×8 tiles (`sdot` on a
//!   Pi 5, `smlal` on a Pi 4) stored straight into the output (`product.rs`); on a Pi 4
//!   then most of them sum two k's in 16 bits before widening, their activations packed
//!   in `K4` (`product::pair_products`).
//! - [`max_pools`], after it: tract's max pool, which folds a stride of 2 one value at
//!   a time, becomes [`MaxPoolRows`], whole rows of vectors (`pool.rs`; f32 bundles too).
//! - Not a step: tract's two f32 depthwise kernels have replacements with the same
//!   arithmetic and fewer loads (each tap's weights once for four output positions;
//!   short runs vectorized), filed in tract-linalg's registry of kernels on aarch64, so
//!   that tract's kernel lookup, which [`DepthwiseZones`] uses too, finds them
//!   (`depthwise.rs`).
//!
//! Measured (`scripts/iprofile.sh`, one inference, torchvision's models in
//! `models/torchvision`, 64×64; each step's share is in the README's "ARM cost"):
//! ResNet18 at width 1/8 int8 on a Pi 5 from 4.65 M instructions to 1.92–1.95 M, on a
//! Pi 4 from 4.79 M to 2.56–2.60 M; MobileNetV2 at width 1/4 int8 on a Pi 5 from 5.74 M
//! to 2.36–2.46 M, on a Pi 4 from 6.89 M to 3.16–3.22 M (with the depthwise kernels of
//! `depthwise.rs`); ONNX Runtime's int8 takes 2.05 M, 2.66 M, 2.57 M and 3.45 M. Every
//! step gives tract's outputs bit for bit (`examples/plan_check.rs`, run by
//! `scripts/cross.sh` on the host and on aarch64 as a Pi 4 and a Pi 5; the tests of each
//! step's file).
//!
//! (Until `PackPatches`, a step here lowered the integer convolutions that allowed it
//! through tract's lazy im2col, as tract lowers f32 ones: 4.79 M to 4.09 M for that
//! ResNet18 on a Pi 4. With `PackPatches` for all of them it counts 0.15 M less, so that
//! step, and the one `unsafe` call it needed, are gone.)

mod clamp;
mod columns;
pub mod depthwise;
mod epilogue;
mod gather;
mod patches;
mod pool;
mod product;
mod zones;

pub use clamp::{ClampQuantize, clamped_quantizers};
pub use columns::{PackColumns, pack_columns};
pub use epilogue::{Epilogue, epilogues};
pub use gather::{GatherPanels, gather_panels};
pub use patches::{PackPatches, pack_patches};
pub use pool::{MaxPoolRows, max_pools};
pub use product::{DotProduct, Kernel};
pub use zones::{DepthwiseZones, depthwise_zones};

use tract_nnef::internal::*;
use tract_nnef::tract_core::axes::Axis;
use tract_nnef::tract_core::ops::einsum::EinSum;
use tract_nnef::tract_core::ops::matmul::pack::DynPackedExoticFact;
use tract_nnef::tract_core::tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, PackedExoticFact,
};

/// What [`optimize`]'s own steps did to a model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Steps {
    /// Integer products over an image's rows made one product ([`products_over_one_row`]).
    pub one_row: usize,
    /// tract's im2col replaced ([`pack_patches`]).
    pub im2col: usize,
    /// tract's packings of activations replaced ([`pack_columns`]).
    pub packings: usize,
    /// Casts of integer products to f32 and the steps after them made one pass
    /// ([`epilogues`]).
    pub epilogues: usize,
    /// tract's lazy im2col of f32 convolutions made [`GatherPanels`] ([`gather_panels`]).
    pub gathers: usize,
    /// tract's max pools replaced ([`max_pools`]).
    pub max_pools: usize,
    /// tract's integer products replaced by [`DotProduct`] (on aarch64).
    pub products: usize,
    /// f32 depthwise convolutions made [`DepthwiseZones`] ([`depthwise_zones`]).
    pub depthwise: usize,
    /// Clamps and the quantizers after them made one pass ([`clamped_quantizers`]).
    pub clamps: usize,
    /// Of the [`DotProduct`]s, those whose tiles sum pairs of k's in 16 bits (the Pi 4's
    /// kernel, on aarch64 without the dot product; there the products that requantize
    /// too).
    pub pairs: usize,
}

/// `model` decluttered, its integer products over rows made one and their epilogues one
/// pass each, then optimized, then tract's eager im2col and packings replaced by
/// edgetune's where they apply: what `TypedModel::into_optimized` does, with those steps.
pub fn optimize(model: TypedModel) -> TractResult<TypedModel> {
    Ok(optimize_steps(model)?.0)
}

/// [`optimize`], saying what each of edgetune's steps did.
pub fn optimize_steps(model: TypedModel) -> TractResult<(TypedModel, Steps)> {
    optimize_with(model, Kernel::of_this_cpu())
}

/// [`optimize_steps`], with tract's integer products computed by `kernel` where
/// [`DotProduct`] covers them (with `None`, tract's): `examples/plan_check.rs` checks the
/// portable kernel on whole models on a host whose tract packs as the Pi 5's.
pub fn optimize_with(
    mut model: TypedModel,
    kernel: Option<Kernel>,
) -> TractResult<(TypedModel, Steps)> {
    model.declutter()?;
    // After declutter, which would split the rows again.
    let one_row = products_over_one_row(&mut model)?;
    // Before optimization, which lowers the cast and binary ops into its own.
    let epilogues = epilogues(&mut model)?;
    // After the epilogues, which take the clamps after integer products.
    let clamps = clamped_quantizers(&mut model)?;
    // After declutter, which decides where the channels go; before codegen, which would
    // make them tract's `DepthWise`.
    let depthwise = depthwise_zones(&mut model)?;
    model.optimize()?;
    let im2col = pack_patches(&mut model)?;
    let gathers = gather_panels(&mut model)?;
    let packings = pack_columns(&mut model)?;
    let max_pools = max_pools(&mut model)?;
    let products = match kernel {
        Some(kernel) => product::dot_products_with(&mut model, kernel)?,
        None => 0,
    };
    // After the products, whose activations' packing it changes.
    #[cfg(target_arch = "aarch64")]
    let (pairs, requantizing) = match kernel {
        Some(Kernel::Native) => product::pair_products(&mut model)?,
        _ => (0, 0),
    };
    #[cfg(not(target_arch = "aarch64"))]
    let (pairs, requantizing) = (0, 0);
    let products = products + requantizing;
    let steps = Steps {
        one_row,
        im2col,
        gathers,
        packings,
        epilogues,
        max_pools,
        products,
        depthwise,
        clamps,
        pairs,
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
/// int8, from 5.49 M to 4.17 M instructions (4.34–4.41 M in later runs of all the
/// steps: libc's copies vary), its 34 pointwise convolutions one product each. f32
/// products are left as they are: the same rewrite took f32 MobileNetV2 from 3.28 M to
/// 3.38 M (the reshapes' copies cost more than the products saved).
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
        let (name, inputs) = (node.name.clone(), node.inputs.clone());
        let mut patch = TypedModelPatch::new(format!("edgetune one row {name}"));
        let wired = (|| -> TractResult<OutletId> {
            let out_p = einsum.axes.axis(w_repr)?.outputs[0][0] - 1;
            let op = EinSum {
                axes: einsum.axes.remove_axis(w_repr)?,
                ..einsum.clone()
            };
            let mut taps = patch.taps(model, &inputs)?;
            let hw = tvec![h.to_dim(), w.to_dim()];
            let one = tvec![(h * w).to_dim()];
            taps[0] = patch.wire_node(
                format!("{name}.one_row"),
                AxisOp::Reshape(p, hw.clone(), one.clone()),
                &[taps[0]],
            )?[0];
            let y = patch.wire_node(format!("{name}.over_one_row"), op, &taps)?[0];
            Ok(patch.wire_node(
                format!("{name}.rows"),
                AxisOp::Reshape(out_p, one, hw),
                &[y],
            )?[0])
        })();
        rewritten += replace_output(model, id, patch, wired)? as usize;
    }
    Ok(rewritten)
}

/// Applies `patch`, in which `wired` is to replace node `id`'s output 0, if it was wired
/// and its fact is the node's output's; says whether it did. (A node that cannot be
/// rewritten keeps tract's lowering: the load goes on.)
fn replace_output(
    model: &mut TypedModel,
    id: usize,
    mut patch: TypedModelPatch,
    wired: TractResult<OutletId>,
) -> TractResult<bool> {
    let Ok(y) = wired else {
        return Ok(false);
    };
    if patch.outlet_fact(y)? != model.outlet_fact(OutletId::new(id, 0))? {
        return Ok(false);
    }
    patch.shunt_outside(model, OutletId::new(id, 0), y)?;
    patch.obliterate(id)?;
    patch.apply(model)?;
    Ok(true)
}

/// Applies `patch`, in which `y` is to replace the chain of nodes `nodes` that ends at
/// `end` (none of them read from outside the chain but `end`), if `y`'s fact is `end`'s;
/// says whether it did.
fn replace_chain(
    model: &mut TypedModel,
    mut patch: TypedModelPatch,
    y: OutletId,
    end: OutletId,
    nodes: &[usize],
) -> TractResult<bool> {
    if *patch.outlet_fact(y)? != model.outlet_fact(end)?.without_value() {
        return Ok(false);
    }
    patch.shunt_outside(model, end, y)?;
    for &n in nodes {
        patch.obliterate(n)?;
    }
    patch.apply(model)?;
    Ok(true)
}

/// The only reader of `outlet`, unless the model outputs it.
fn only_reader(model: &TypedModel, outlet: OutletId) -> Option<&TypedNode> {
    let node = model.node(outlet.node);
    match &*node.outputs[outlet.slot].successors {
        [one] if !model.output_outlets().ok()?.contains(&outlet) => Some(model.node(one.node)),
        _ => None,
    }
}

/// How the product's kernel wants its input packed: panels of `r` columns (output
/// pixels), `panel_len` bytes apart, each holding the `k` values of its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Packing {
    /// tract's `PackedFormat`: value (k, lane) at `k·r + lane`.
    KMajor,
    /// tract's `PackedI8K4`: value (k, lane) at `(k/4)·4r + lane·4 + k%4`.
    K4,
}

/// One packed matrix as tract's matrix product takes it: `k` rows of `n` columns in
/// `format`, panels of its width `panel_len` bytes apart, written by `fill` into a zeroed
/// buffer aligned to `align` (not called when there are no columns).
fn packed_matrix(
    format: Box<dyn MMMInputFormat>,
    k: usize,
    n: usize,
    panel_len: usize,
    align: usize,
    fill: impl FnOnce(&mut [u8]),
) -> TractResult<Box<dyn MMMInputValue>> {
    let panels = n.div_ceil(format.r().max(1));
    let mut data = Tensor::zero_aligned::<u8>(&[panels * panel_len], align)?;
    if n > 0 {
        fill(data.as_bytes_mut());
    }
    Ok(Box::new(EagerPackedInput {
        fact: PackedExoticFact {
            format,
            k,
            mn: n.to_dim(),
        },
        packed: data.into_blob()?.into(),
        panel_bytes: if n > 0 { panel_len } else { 0 },
        mn: n,
    }))
}

/// What a packing step reads of a node that packs its one input for a matrix product:
/// the facts of its input 0 and output 0, the input's concrete shape, and the output's
/// packed fact.
type PackingFacts<'a> = (
    &'a TypedFact,
    &'a TypedFact,
    &'a [usize],
    &'a DynPackedExoticFact,
);

/// Node `id`'s [`PackingFacts`] (`None` where the shape is symbolic or the output is not
/// packed).
fn packing_facts(model: &TypedModel, id: usize) -> TractResult<Option<PackingFacts<'_>>> {
    let node = model.node(id);
    let Some(input) = node.inputs.first() else {
        return Ok(None);
    };
    let input = model.outlet_fact(*input)?;
    let output = model.outlet_fact(OutletId::new(id, 0))?;
    let shape = input.shape.as_concrete();
    let packed = output
        .exotic_fact()
        .and_then(|f| f.downcast_ref::<DynPackedExoticFact>());
    Ok(shape
        .zip(packed)
        .map(|(shape, packed)| (input, output, shape, packed)))
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
