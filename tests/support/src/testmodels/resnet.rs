//! The ResNet-style test model: basic blocks, a 7×7 stem, MaxPool, 1×1 strided shortcuts.

use super::{Builder, DataType};

/// Shape of the ResNet-style model.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// Input height and width.
    pub resolution: usize,
    /// Channels of the 7×7 stride-2 stem conv.
    pub stem: usize,
    /// (channels, basic blocks) per stage; every stage after the first starts with stride 2.
    /// The last stage's channels are the embedding width.
    pub stages: Vec<(usize, usize)>,
    pub classes: usize,
    pub seed: u64,
}

impl Default for ResNetConfig {
    /// ResNet-18's topology at half width (embedding 256) at 224×224, 10 classes.
    fn default() -> Self {
        ResNetConfig {
            resolution: 224,
            stem: 32,
            stages: vec![(32, 2), (64, 2), (128, 2), (256, 2)],
            classes: 10,
            seed: 0,
        }
    }
}

impl ResNetConfig {
    /// 64×64 input, a 16-channel stem and two one-block stages (16, 32): embedding 32.
    pub fn small() -> Self {
        ResNetConfig {
            resolution: 64,
            stem: 16,
            stages: vec![(16, 1), (32, 1)],
            ..Default::default()
        }
    }
}

/// A ResNet-style classifier (basic blocks): input `input` [1, 3, R, R], output `logits`;
/// the Gemm node `classifier` reads `embedding` [1, last stage's channels].
pub fn resnet(cfg: &ResNetConfig) -> Vec<u8> {
    let mut g = Builder::new("resnet", cfg.seed);
    let r = cfg.resolution as i64;
    let x = g.input("input", DataType::Float, &[1, 3, r, r]);
    let mut c = cfg.stem;
    let x = g.conv("stem.conv", &x, 3, c, 7, 2);
    let x = g.bn("stem.bn", &x, c);
    let x = g.relu("stem.relu", &x);
    let mut x = g.max_pool("stem.pool", &x, 3, 2);
    for (s, &(out, blocks)) in cfg.stages.iter().enumerate() {
        for b in 0..blocks {
            let p = format!("stage{s}.block{b}");
            let stride = if s > 0 && b == 0 { 2 } else { 1 };
            let h = g.conv(&format!("{p}.conv1"), &x, c, out, 3, stride);
            let h = g.bn(&format!("{p}.bn1"), &h, out);
            let h = g.relu(&format!("{p}.relu1"), &h);
            let h = g.conv(&format!("{p}.conv2"), &h, out, out, 3, 1);
            let h = g.bn_gamma(&format!("{p}.bn2"), &h, out, 0.5);
            let shortcut = if stride != 1 || c != out {
                let d = g.conv(&format!("{p}.downsample.conv"), &x, c, out, 1, stride);
                g.bn_gamma(&format!("{p}.downsample.bn"), &d, out, 0.5)
            } else {
                x.clone()
            };
            let y = g.add(&format!("{p}.add"), &h, &shortcut);
            x = g.relu(&format!("{p}.relu2"), &y);
            c = out;
        }
    }
    let x = g.global_avg_pool("pool", &x);
    let x = g.flatten("embedding", &x);
    let y = g.gemm("classifier", &x, c, cfg.classes);
    g.output(&y, "logits", DataType::Float, &[1, cfg.classes as i64]);
    g.finish()
}
