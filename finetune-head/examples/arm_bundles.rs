//! Writes the 224×224 MobileNet-style and ResNet-style test models (the benchmark's) as
//! f32 and int8 bundles, for counting ARM instructions per inference
//! (`scripts/icount.sh`), and prints each conversion report (int8 size against f32,
//! cosine to f32 on held-out samples).
//!
//! `cargo run --release -p finetune-head --example arm_bundles -- OUT_DIR [MODEL...]`
//! (MODEL: `mobilenet`, `resnet`; default both). `scripts/cross.sh` uses the MobileNet
//! pair for its host/ARM parity check.

use std::path::PathBuf;

use anyhow::{Context, Result};
use edgetune::bundle::{ChannelOrder, Preprocess};
use edgetune_testkit::testmodels::{self, MobileNetConfig, ResNetConfig};
use finetune_head::convert::{Int8, Options, convert};

fn main() -> Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: arm_bundles OUT_DIR")?,
    );
    let only: Vec<String> = std::env::args().skip(2).collect();
    for m in &only {
        anyhow::ensure!(
            m == "mobilenet" || m == "resnet",
            "unknown model {m:?}: mobilenet or resnet"
        );
    }
    std::fs::create_dir_all(&out)?;
    let preprocess = Preprocess {
        scale: 1.0 / 255.0,
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        channel_order: ChannelOrder::Rgb,
        resize: None,
    };
    let models = [
        (
            "mobilenet",
            testmodels::mobilenet(&MobileNetConfig::default()),
        ),
        ("resnet", testmodels::resnet(&ResNetConfig::default())),
    ];
    for (name, onnx) in models {
        if !only.is_empty() && !only.iter().any(|m| m == name) {
            continue;
        }
        let model = out.join(format!("{name}.onnx"));
        testmodels::write(&model, &onnx)?;
        for int8 in [false, true] {
            let opts = Options {
                preprocess: preprocess.clone(),
                int8: int8.then(|| Int8::Samples(testmodels::images(40, 224, 11))),
                ..Default::default()
            };
            let (bundle, report) = convert(&model, &opts)?;
            let file = out.join(format!(
                "{name}-{}.bundle",
                if int8 { "int8" } else { "f32" }
            ));
            bundle.write(&file)?;
            println!("== {}\n{report}\n", file.display());
        }
    }
    Ok(())
}
