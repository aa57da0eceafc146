//! Constants stored in fewer bits than they compute in: the per-channel scales and
//! biases of the integer products in 16 ([`store_in_f16`]), and the weights that stay
//! f32 in the computation but are stored in 8 bits, a depthwise or grouped
//! convolution's (tract has no fast integer kernel for them, so they run in f32).
//! Their weights are rounded to i8 per output channel in the ONNX graph
//! ([`StoredI8::new`]), so every check of the quantized graph (the converter's parity,
//! the cosine to f32) runs on the rounded values; then, in the typed graph written as
//! NNEF, the f32 constant is replaced by the i8 one and the channels' scales
//! ([`store_in_i8`], edgetune's [`WeightsI8`] operator). The device's NNEF reader turns
//! those back into the very same f32 constant (`q as f32 · scale`, one rounding, as
//! here), so the device computes what was checked, from a quarter of the bytes.
//!
//! On torchvision's MobileNetV2 at width 0.25 these are 17 depthwise convolutions,
//! 66 kB of its int8 backbone's 309 kB (gzipped) before.

use std::collections::HashMap;

use anyhow::Result;
use edgetune::nnef::{ValuesF16, WeightsI8, pow2};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::konst::Const;

use super::quantize_weights;

/// One convolution's weights rounded to i8 per output channel (axis 0).
#[derive(Clone, PartialEq)]
pub struct StoredI8 {
    /// The layer.
    pub layer: String,
    /// The weights' shape, output channels first.
    pub shape: Vec<usize>,
    /// The weights in i8.
    pub q: Vec<i8>,
    /// One scale per output channel.
    pub scales: Vec<f32>,
}

impl std::fmt::Debug for StoredI8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredI8({} {:?})", self.layer, self.shape)
    }
}

impl StoredI8 {
    /// `w` (of `shape`, output channels first) rounded to i8 per output channel,
    /// symmetric, as [`quantize_weights`] does for the int8 convolutions.
    pub fn new(layer: &str, shape: &[usize], w: &[f32]) -> Self {
        let (q, scales) = quantize_weights(w, shape[0]);
        StoredI8 {
            layer: layer.to_string(),
            shape: shape.to_vec(),
            q,
            scales,
        }
    }

    /// The f32 weights the convolution computes with: each `q as f32 · scale`, in f32,
    /// as [`WeightsI8`] computes them on the device.
    pub fn values(&self) -> TractResult<Tensor> {
        WeightsI8::values(
            &Tensor::from_shape(&self.shape, &self.q)?,
            &self.scales_tensor()?,
        )
    }

    /// The scales shaped to multiply the weights: `[out, 1, 1, …]`.
    fn scales_tensor(&self) -> TractResult<Tensor> {
        let mut shape = vec![1; self.shape.len()];
        shape[0] = self.scales.len();
        Tensor::from_shape(&shape, &self.scales)
    }
}

/// Replaces each f32 constant of `model` that holds one of `weights`' values (the same
/// shape, bit for bit) with its i8 constant and the channels' scales, through
/// [`WeightsI8`], and keeps in `weights` only those stored so: a constant tract changed
/// on import (another shape, another order) stays f32, which is still correct, only
/// larger.
pub fn store_in_i8(model: &mut TypedModel, weights: &mut Vec<StoredI8>) -> Result<()> {
    let key = |t: &Tensor| (t.shape().to_vec(), t.as_bytes().to_vec());
    let mut wanted: HashMap<(Vec<usize>, Vec<u8>), usize> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| Ok((key(&w.values()?), i)))
        .collect::<TractResult<_>>()?;
    let mut stored = vec![false; weights.len()];
    let consts: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<Const>())
        .map(|n| n.id)
        .collect();
    for id in consts {
        let node = model.node(id);
        let value = node.op_as::<Const>().expect("filtered above").val().clone();
        if value.datum_type() != f32::datum_type() {
            continue;
        }
        let Some(i) = wanted.remove(&key(&value)) else {
            continue;
        };
        let w = &weights[i];
        let name = node.name.clone();
        let mut patch = TypedModelPatch::default();
        let q = patch.add_const(format!("{name}.i8"), Tensor::from_shape(&w.shape, &w.q)?)?;
        let s = patch.add_const(format!("{name}.scale"), w.scales_tensor()?)?;
        let y = patch.wire_node(format!("{name}.weights_i8"), WeightsI8, &[q, s])?;
        patch.shunt_outside(model, OutletId::new(id, 0), y[0])?;
        patch.apply(model)?;
        stored[i] = true;
    }
    let mut stored = stored.into_iter();
    weights.retain(|_| stored.next() == Some(true));
    Ok(())
}

/// Fewest values of a constant [`store_in_f16`] stores in 16 bits: smaller ones are
/// written into the NNEF text, where the operator would cost more than it saves.
const MIN_F16_VALUES: usize = 32;

/// Stores in f16, through [`ValuesF16`], each f32 constant of `model` whose values are
/// all exactly f16 values times one power of two (the integer products' scales and
/// biases, rounded so by the quantizer: `onnx::f16_precision`) and that only tract's binary operators read
/// (edgetune's own operators take constants as they are). Lossless: the device loads it
/// as the very f32 constant. Returns how many.
pub fn store_in_f16(model: &mut TypedModel) -> Result<usize> {
    let mut stored = 0;
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let Some(value) = node.op_as::<Const>().map(|c| c.val().clone()) else {
            continue;
        };
        if value.datum_type() != f32::datum_type() || value.len() < MIN_F16_VALUES {
            continue;
        }
        let values = value.try_as_plain_ram()?;
        let values = values.as_slice::<f32>()?;
        let (e, half) = super::onnx::scaled_f16(values);
        let exact = half
            .iter()
            .zip(values)
            .all(|(h, v)| h.is_finite() && (h.to_f32() * pow2(-e)).to_bits() == v.to_bits());
        let readers = &node.outputs[0].successors;
        let binary = !readers.is_empty()
            && readers
                .iter()
                .all(|r| model.node(r.node).op_is::<TypedBinOp>());
        if !exact || !binary {
            continue;
        }
        let name = node.name.clone();
        let mut patch = TypedModelPatch::default();
        let h = patch.add_const(
            format!("{name}.f16"),
            Tensor::from_shape(value.shape(), &half)?,
        )?;
        let y = patch.wire_node(format!("{name}.as_f32"), ValuesF16 { exponent: e }, &[h])?;
        patch.shunt_outside(model, OutletId::new(id, 0), y[0])?;
        patch.apply(model)?;
        stored += 1;
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use tract_onnx::tract_core::ops::math::mul;

    use super::*;

    /// Constants that are exactly f16 values times a power of two, read by tract's
    /// binary operators, are stored in 16 bits and load back as the very f32 values;
    /// others (not exact, too small to be worth it) stay f32; the outputs are the same.
    #[test]
    fn f16_exact_constants_are_stored_in_16_bits() {
        // Scales as they are: no pattern gzip would find.
        let mut seed = 7u32;
        let exact: Vec<f32> = (0..1024)
            .map(|_| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (1 + (seed >> 8) % 10_000) as f32 * 3.1e-7
            })
            .collect();
        let exact = crate::quantize::onnx::f16_precision(&exact, true);
        let other: Vec<f32> = (0..1024).map(|i| 1.0 + i as f32 * 1.0e-7).collect();
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1024])).unwrap();
        let a = model.add_const("a", tensor1(&exact)).unwrap();
        let b = model.add_const("b", tensor1(&other)).unwrap();
        let c = model.add_const("c", tensor1(&exact[..8])).unwrap();
        let y = model.wire_node("y", mul(), &[x, a]).unwrap();
        let z = model.wire_node("z", mul(), &[y[0], b]).unwrap();
        let x8 = model.add_source("x8", f32::fact([8])).unwrap();
        let w = model.wire_node("w", mul(), &[x8, c]).unwrap();
        model.select_output_outlets(&[z[0], w[0]]).unwrap();
        let run = |m: TypedModel| {
            let inputs = tvec!(
                tensor1(&[1.0f32; 1024]).into(),
                tensor1(&[1.0f32; 8]).into()
            );
            let out = m.into_runnable().unwrap().run(inputs).unwrap();
            out.iter()
                .map(|t| t.clone().into_tensor())
                .collect::<Vec<_>>()
        };
        let expected = run(model.clone());
        let f32_size = edgetune::nnef::write_model(&model).unwrap().len();
        assert_eq!(store_in_f16(&mut model).unwrap(), 1, "only a");
        let section = edgetune::nnef::write_model(&model).unwrap();
        let tar = edgetune::nnef::nnef_tar(&section).unwrap();
        let text = String::from_utf8_lossy(&tar);
        assert!(text.contains("edgetune_values_f16("), "{text}");
        assert!(
            section.len() < f32_size,
            "{} bytes against {f32_size}",
            section.len()
        );
        let loaded = edgetune::nnef::read_model(&section).unwrap();
        assert_eq!(run(loaded), expected);
    }

    /// The stored form loads back, through the device's NNEF reader and tract's
    /// folding, as the very constant the ONNX graph was checked with; the NNEF holds
    /// the weights in i8, not f32.
    #[test]
    fn stored_weights_load_back_as_the_checked_constant() {
        let shape = [3usize, 1, 2, 2];
        let w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.3) * 0.37).collect();
        let stored = StoredI8::new("dw", &shape, &w);
        let values = stored.values().unwrap();
        let values: Vec<f32> = values
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect();
        assert_ne!(values, w, "rounded to 8 bits");
        assert!(values.iter().zip(&w).all(|(a, b)| (a - b).abs() <= 0.02));

        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact(shape)).unwrap();
        let k = model
            .add_const("k", Tensor::from_shape(&shape, &values).unwrap())
            .unwrap();
        let other = model
            .add_const("other", Tensor::from_shape(&shape, &w).unwrap())
            .unwrap();
        let y = model.wire_node("y", mul(), &[x, k]).unwrap();
        let z = model.wire_node("z", mul(), &[y[0], other]).unwrap();
        model.select_output_outlets(&z).unwrap();
        let run = |m: TypedModel| {
            let input = Tensor::from_shape(&shape, &[1.0f32; 12]).unwrap();
            m.into_runnable().unwrap().run(tvec!(input.into())).unwrap()[0]
                .clone()
                .into_tensor()
        };
        let expected = run(model.clone());

        let mut done = vec![stored.clone()];
        store_in_i8(&mut model, &mut done).unwrap();
        assert_eq!(done, [stored], "the one matching constant, not the other");
        let section = edgetune::nnef::write_model(&model).unwrap();
        let tar = edgetune::nnef::nnef_tar(&section).unwrap();
        let text = String::from_utf8_lossy(&tar);
        assert!(text.contains("edgetune_weights_i8("), "{text}");
        let loaded = edgetune::nnef::read_model(&section)
            .unwrap()
            .into_decluttered()
            .unwrap();
        let folded: Vec<Tensor> = loaded
            .nodes()
            .iter()
            .filter_map(|n| n.op_as::<Const>().map(|c| c.val().clone().into_tensor()))
            .collect();
        let values = Tensor::from_shape(&shape, &values).unwrap();
        assert!(
            folded.contains(&values),
            "tract folds it back to the same f32 values"
        );
        assert_eq!(run(loaded), expected);
    }
}
