//! What a conversion found and measured: [`Report`], and [`Int8Report`] for an int8
//! backbone, printed by the CLI.

/// How far the int8 backbone is from the f32 one, on held-out samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Report {
    /// What quantization did.
    pub summary: crate::quantize::Summary,
    /// Held-out samples compared.
    pub holdout_samples: usize,
    /// Mean cosine similarity of int8 to f32 embeddings (none without held-out samples:
    /// a QDQ model converted without `--calib`).
    pub cosine_mean: Option<f32>,
    /// Lowest cosine similarity.
    pub cosine_min: Option<f32>,
    /// Share of held-out samples where the original classifier's top-1 class is the same
    /// on both embeddings (when the model has a classifier).
    pub top1_agreement: Option<f32>,
    /// Bytes of the f32 NNEF backbone, for comparison with the int8 one.
    pub f32_backbone_bytes: usize,
}

/// What the conversion found and measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The tensor the graph was cut at.
    pub embedding: String,
    /// Its size.
    pub embedding_size: usize,
    /// The classifier's node, when there was one.
    pub classifier: Option<String>,
    /// Input shape of the bundle.
    pub input_shape: Vec<usize>,
    /// Nodes of the decluttered backbone.
    pub nodes: usize,
    /// Bytes of the NNEF backbone.
    pub backbone_bytes: usize,
    /// Largest absolute difference between the bundle's embedding (as a device loads it)
    /// and tract's run of the ONNX model (the quantized one for int8), on a probe input.
    pub parity_max_abs: f32,
    /// The int8 quantization, when asked for.
    pub int8: Option<Int8Report>,
    /// What was taken out of a model that arrived quantized in QDQ form (its ranges then
    /// quantize it: `int8`).
    pub qdq: Option<crate::quantize::Qdq>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "embedding      {} ({} values)",
            self.embedding, self.embedding_size
        )?;
        match &self.classifier {
            Some(c) => writeln!(f, "classifier     {c} (cut off)")?,
            None => writeln!(f, "classifier     none")?,
        }
        writeln!(f, "input          {:?}", self.input_shape)?;
        writeln!(
            f,
            "backbone       {} nodes, {} bytes NNEF",
            self.nodes, self.backbone_bytes
        )?;
        write!(
            f,
            "parity         max |bundle - onnx| = {:.2e} on a probe input",
            self.parity_max_abs
        )?;
        if let Some(q) = &self.qdq {
            write!(
                f,
                "\nqdq            a QDQ model: {} quantizer pairs and {} quantized constants taken back to f32 ({} Clip from 0 put back where a quantizer clamped at 0), {} quantize/dequantize nodes left as they were",
                q.pairs, q.constants, q.clips, q.left
            )?;
        }
        if let Some(q) = &self.int8 {
            let s = &q.summary;
            write!(
                f,
                "\nint8           {} convolutions and {} matrix products quantized, {} batch norms and {} constant nodes folded, {}",
                s.quantized_convs,
                s.quantized_matmuls,
                s.folded_batch_norms,
                s.folded_constants,
                if s.qdq_ranges > 0 {
                    format!(
                        "activation ranges from the model's {} quantizers",
                        s.qdq_ranges
                    )
                } else {
                    format!("calibrated on {} samples", s.calibration_samples)
                }
            )?;
            if s.chained_convs > 0 {
                write!(
                    f,
                    "\n               {} of them keep their output i8 (read only by int8 convolutions)",
                    s.chained_convs
                )?;
            }
            for (why, layers) in crate::quantize::kept_by_reason(&s.kept_f32) {
                write!(
                    f,
                    "\n               {} kept f32, {why}: {}",
                    layers.len(),
                    layers.join(", ")
                )?;
            }
            if !s.stored_i8.is_empty() {
                write!(
                    f,
                    "\n               {} of those kept f32 have their weights stored in int8 (per channel; computed in f32)",
                    s.stored_i8.len()
                )?;
            }
            write!(
                f,
                "\n               size {} bytes, {:.2}x the f32 backbone ({} bytes)",
                self.backbone_bytes,
                self.backbone_bytes as f64 / q.f32_backbone_bytes.max(1) as f64,
                q.f32_backbone_bytes
            )?;
            match (q.cosine_mean, q.cosine_min) {
                (Some(mean), Some(min)) => write!(
                    f,
                    "\n               cosine to f32 on {} held-out samples: mean {mean:.4}, min {min:.4}",
                    q.holdout_samples
                )?,
                _ => write!(
                    f,
                    "\n               not measured against f32 (no samples: --calib DIR measures it)"
                )?,
            }
            if let Some(a) = q.top1_agreement {
                write!(
                    f,
                    "\n               classifier top-1 agreement with f32: {:.1}%",
                    100.0 * a
                )?;
            }
        }
        Ok(())
    }
}
