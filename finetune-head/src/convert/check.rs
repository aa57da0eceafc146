//! The conversion's self-check: the written backbone loaded the way a device loads it,
//! its embedding of a probe input compared with tract's run of the ONNX graph; and the
//! embedding statistics of the calibration samples, through that same loader.

use anyhow::{Context, Result};
use edgetune::backbone::Backbone;
use edgetune::bundle::Bundle;
use edgetune::rng::Rng;
use edgetune::stats::EmbeddingStats;
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use super::graph::Reference;
use super::input::Input;

/// A deterministic probe input in [0, 1).
fn probe(len: usize) -> Vec<f32> {
    let mut rng = Rng::new(0x5EED);
    (0..len).map(|_| rng.unit()).collect()
}

/// Largest absolute difference between `device`'s embedding of a probe input and
/// tract's run of the graph `bundle` was made from, cut at its embedding: `proto` for a
/// text encoder, `source` (the quantized graph for int8) for a tensor input.
pub(super) fn parity(
    device: &Backbone,
    bundle: &Bundle,
    input: &Input,
    proto: &ModelProto,
    source: &ModelProto,
) -> Result<f32> {
    let m = &bundle.manifest;
    let (tensor, size) = (m.embedding.tensor.as_str(), m.embedding.size);
    let pad_id = m.text.as_ref().map_or(0, |t| t.pad_id);
    let mut got = vec![0.0f32; size];
    let want = match &input.text {
        Some(t) => {
            // A short sentence of small ids (any vocabulary has them), then padding.
            let ids: Vec<i64> = (0..t.seq.div_ceil(2))
                .map(|i| 1 + (i as i64 * 7) % 20)
                .collect();
            device.embed_tokens(&ids, &mut got)?;
            let mut model = tract_onnx::onnx()
                .with_ignore_value_info(true)
                .model_for_proto_model(proto)?;
            for (i, f) in input.facts.iter().enumerate() {
                model.set_input_fact(i, f.clone())?;
            }
            model.select_outputs_by_name([tensor])?;
            let plan = model.into_optimized()?.into_runnable()?;
            let out = plan.run(t.tensors(&ids, pad_id)?)?;
            let seq_out: Vec<f32> = out[0]
                .to_plain_array_view::<f32>()?
                .iter()
                .copied()
                .collect();
            let mut want = vec![0.0f32; size];
            match m.pooling {
                Some(p) => edgetune::backbone::pool(p, &seq_out, size, ids.len(), &mut want),
                None => want.copy_from_slice(&seq_out),
            }
            want
        }
        None => {
            let raw = probe(device.input_len());
            device.embed(&raw, &mut got)?;
            let mut x = vec![0.0f32; raw.len()];
            m.preprocess.apply(input.layout, &input.shape, &raw, &mut x);
            Reference::new(source, &input.shape, tensor)?.embed(&x)?
        }
    };
    Ok(got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max))
}

/// The embedding statistics of calibration `samples` (at least two), through the
/// device's loader.
pub(super) fn embedding_stats(
    device: &Backbone,
    samples: &[Vec<f32>],
    size: usize,
) -> Result<Option<EmbeddingStats>> {
    let mut x = vec![0.0f32; samples.len() * size];
    for (raw, out) in samples.iter().zip(x.chunks_exact_mut(size)) {
        device
            .embed(raw, out)
            .context("embedding a calibration sample")?;
    }
    Ok(edgetune::stats::Stats::estimate(&x, size, None).map(|s| s.to_manifest()))
}
