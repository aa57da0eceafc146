//! The MobileNetV2-style test model: conv, BatchNormalization, ReLU6 as Clip, depthwise
//! conv, inverted residuals, GlobalAveragePool, Gemm classifier.

use super::{Builder, DataType};

/// One MobileNetV2 inverted-residual block (channel counts before the width multiplier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvertedResidual {
    /// Expansion ratio of the 1×1 expand conv (1: no expand conv).
    pub expand: usize,
    /// Output channels.
    pub out: usize,
    /// Stride of the depthwise conv (1 or 2).
    pub stride: usize,
}

/// Shape of the MobileNet-style model.
#[derive(Debug, Clone, PartialEq)]
pub struct MobileNetConfig {
    /// Input height and width.
    pub resolution: usize,
    /// Width multiplier applied to `stem` and every block's channels (rounded to 8).
    pub width: f32,
    /// Channels of the 3×3 stride-2 stem conv.
    pub stem: usize,
    pub blocks: Vec<InvertedResidual>,
    /// Width of the embedding (the final 1×1 conv, pooled), not scaled by `width`.
    pub embedding: usize,
    pub classes: usize,
    pub seed: u64,
}

impl Default for MobileNetConfig {
    /// MobileNetV2's first four stages (down to 1/16 of the resolution) at 224×224,
    /// a 256-wide embedding and 10 classes.
    fn default() -> Self {
        let b = |expand, out, stride| InvertedResidual {
            expand,
            out,
            stride,
        };
        MobileNetConfig {
            resolution: 224,
            width: 1.0,
            stem: 32,
            blocks: vec![
                b(1, 16, 1),
                b(6, 24, 2),
                b(6, 24, 1),
                b(6, 32, 2),
                b(6, 32, 1),
                b(6, 64, 2),
                b(6, 64, 1),
                b(6, 96, 1),
            ],
            embedding: 256,
            classes: 10,
            seed: 0,
        }
    }
}

impl MobileNetConfig {
    /// 64×64 input, width 0.5, a 64-wide embedding: the tests' usual CNN, quick to convert.
    pub fn small() -> Self {
        MobileNetConfig {
            resolution: 64,
            width: 0.5,
            embedding: 64,
            ..Default::default()
        }
    }

    /// 32×32 input, width 0.25, a 16-wide embedding: for tests where only the plumbing
    /// matters.
    pub fn tiny() -> Self {
        MobileNetConfig {
            resolution: 32,
            width: 0.25,
            embedding: 16,
            ..Default::default()
        }
    }
}

fn scaled(c: usize, width: f32) -> usize {
    (((c as f32 * width / 8.0).round() as usize) * 8).max(8)
}

/// A MobileNetV2-style classifier: input `input` [1, 3, R, R] (NCHW f32), output `logits`
/// [1, classes]; the Gemm node `classifier` reads the tensor `embedding` [1, embedding].
pub fn mobilenet(cfg: &MobileNetConfig) -> Vec<u8> {
    let mut g = Builder::new("mobilenet", cfg.seed);
    let r = cfg.resolution as i64;
    let x = g.input("input", DataType::Float, &[1, 3, r, r]);
    let mut c = scaled(cfg.stem, cfg.width);
    let x = g.conv("stem.conv", &x, 3, c, 3, 2);
    let x = g.bn("stem.bn", &x, c);
    let mut x = g.clip("stem.relu6", &x, 0.0, 6.0);
    for (i, blk) in cfg.blocks.iter().enumerate() {
        let p = format!("block{i}");
        let out = scaled(blk.out, cfg.width);
        let hidden = c * blk.expand;
        let mut h = x.clone();
        if blk.expand != 1 {
            h = g.conv(&format!("{p}.expand.conv"), &h, c, hidden, 1, 1);
            h = g.bn(&format!("{p}.expand.bn"), &h, hidden);
            h = g.clip(&format!("{p}.expand.relu6"), &h, 0.0, 6.0);
        }
        h = g.depthwise(&format!("{p}.dw.conv"), &h, hidden, 3, blk.stride);
        h = g.bn(&format!("{p}.dw.bn"), &h, hidden);
        h = g.clip(&format!("{p}.dw.relu6"), &h, 0.0, 6.0);
        h = g.conv(&format!("{p}.project.conv"), &h, hidden, out, 1, 1);
        h = g.bn(&format!("{p}.project.bn"), &h, out);
        x = if blk.stride == 1 && c == out {
            g.add(&format!("{p}.add"), &x, &h)
        } else {
            h
        };
        c = out;
    }
    let x = g.conv("head.conv", &x, c, cfg.embedding, 1, 1);
    let x = g.bn("head.bn", &x, cfg.embedding);
    let x = g.clip("head.relu6", &x, 0.0, 6.0);
    let x = g.global_avg_pool("pool", &x);
    let x = g.flatten("embedding", &x);
    let y = g.gemm("classifier", &x, cfg.embedding, cfg.classes);
    g.output(&y, "logits", DataType::Float, &[1, cfg.classes as i64]);
    g.finish()
}
