//! The conversion's self-check: the written backbone loaded the way a device loads it,
//! its embedding of a probe input compared with tract's run of the ONNX graph; and the
//! embedding statistics of the calibration samples (tensors or sentences), through that
//! same loader.

use anyhow::{Context, Result};
use edgetune::backbone::Backbone;
use edgetune::bundle::Bundle;
use edgetune::rng::Rng;
use edgetune::stats::EmbeddingStats;
use tract_onnx::pb::ModelProto;

use super::graph::{Reference, TextReference};
use super::input::Input;
use super::int8::Samples;

/// A deterministic probe input in [0, 1).
fn probe(len: usize) -> Vec<f32> {
    let mut rng = Rng::new(0x5EED);
    (0..len).map(|_| rng.unit()).collect()
}

/// Largest absolute difference between `device`'s embedding of a probe input and
/// tract's run of `source`, the graph `bundle` was made from (the quantized one for
/// int8), cut at its embedding.
pub(super) fn parity(
    device: &Backbone,
    bundle: &Bundle,
    input: &Input,
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
            TextReference::new(source, input, tensor, m.pooling, pad_id, size)?.embed(&ids)?
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
    samples: &Samples,
    size: usize,
) -> Result<Option<EmbeddingStats>> {
    let mut x = vec![0.0f32; samples.len() * size];
    let mut out = x.chunks_exact_mut(size);
    match samples {
        Samples::Tensors(s) => {
            for (raw, out) in s.iter().zip(&mut out) {
                device
                    .embed(raw, out)
                    .context("embedding a calibration sample")?;
            }
        }
        Samples::Tokens(s) => {
            for (ids, out) in s.iter().zip(&mut out) {
                device
                    .embed_tokens(ids, out)
                    .context("embedding a calibration sentence")?;
            }
        }
    }
    Ok(edgetune::stats::Stats::estimate(&x, size, None).map(|s| s.to_manifest()))
}
