//! Writes one of the project's test models as an ONNX file, to try `convert` and
//! `inspect` without a model of your own, and as the input of models/qdq/make_qdq.py.
//!
//! `cargo run -p finetune-head --example testmodel -- mobilenet|resnet|bert OUT.onnx [RESOLUTION]`
//!
//! RESOLUTION (images, default 224) is the side of the square input; the small MobileNet
//! at 32 uses width 0.5 and a 32-value embedding, as in models/qdq.

use anyhow::{Context, Result, bail};
use edgetune_testkit::testmodels::{self, BertConfig, MobileNetConfig, ResNetConfig};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, out, rest @ ..] = &args[..] else {
        bail!("usage: testmodel mobilenet|resnet|bert OUT.onnx [RESOLUTION]")
    };
    let resolution: usize = match rest.first() {
        Some(r) => r.parse().context("RESOLUTION must be a positive integer")?,
        None => 224,
    };
    let bytes = match kind.as_str() {
        "mobilenet" if resolution <= 64 => testmodels::mobilenet(&MobileNetConfig {
            resolution,
            width: 0.5,
            embedding: 32,
            ..Default::default()
        }),
        "mobilenet" => testmodels::mobilenet(&MobileNetConfig {
            resolution,
            ..Default::default()
        }),
        "resnet" => testmodels::resnet(&ResNetConfig {
            resolution,
            ..Default::default()
        }),
        "bert" => testmodels::bert(&BertConfig::default()),
        other => bail!("unknown test model {other:?}: mobilenet, resnet or bert"),
    };
    testmodels::write(out, &bytes)?;
    println!("wrote {out} ({} bytes)", bytes.len());
    Ok(())
}
