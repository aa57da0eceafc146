//! The project's MobileNet- and ResNet-shaped test models at 224×224
//! (`edgetune_testkit::testmodels`), prepared the same way for the `backbone` bench and the
//! `compare` command: a bundle for tract (f32, and int8 from `convert --quantize int8`
//! calibrated on 20 test images), and for ONNX Runtime the original model cut at the same
//! embedding and the same quantized ONNX graph, calibrated on the same 20 images.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgetune::bundle::{Bundle, Preprocess};
use edgetune_testkit::testmodels::{self, MobileNetConfig, ResNetConfig};
use finetune_head::convert::{self, Int8, Options};
use finetune_head::{onnxcut, quantize};

/// The test models' names, in the order the bench and the report show them.
pub const NAMES: [&str; 2] = ["mobilenet", "resnet"];

/// Side of the test models' square RGB input.
pub const SIDE: usize = 224;

/// A test model's ONNX bytes: `mobilenet` (MobileNetV2's first four stages, a 256-value
/// embedding) or `resnet` (ResNet-18's topology at half width, 256 values).
pub fn onnx(name: &str) -> Result<Vec<u8>> {
    Ok(match name {
        "mobilenet" => testmodels::mobilenet(&MobileNetConfig::default()),
        "resnet" => testmodels::resnet(&ResNetConfig::default()),
        other => anyhow::bail!("no test model named {other:?} (known: {NAMES:?})"),
    })
}

/// One test model in every form the benchmarks run.
pub struct Prepared {
    /// `mobilenet` or `resnet`.
    pub name: &'static str,
    /// The whole classifier as ONNX.
    pub onnx: Vec<u8>,
    /// The f32 bundle (NNEF backbone, manifest).
    pub bundle: Bundle,
    /// `convert`'s report of it.
    pub report: convert::Report,
    /// The int8 bundle (`convert --quantize int8`).
    pub int8_bundle: Bundle,
    /// `convert`'s report of it (the int8 embedding's cosine to f32, held out).
    pub int8_report: convert::Report,
    /// The ONNX model cut at the embedding, for ONNX Runtime.
    pub cut: Vec<u8>,
    /// The same quantized graph as the int8 bundle's, cut at the embedding, as ONNX.
    pub int8_cut: Vec<u8>,
}

/// Raw calibration images (24: `convert` holds the last 4 out) and the benchmark input.
pub fn calibration_images() -> Vec<Vec<f32>> {
    testmodels::images(24, SIDE, 11)
}

/// The one raw input every engine embeds in the benchmarks (pixels 0–255, NCHW).
pub fn bench_input() -> Vec<f32> {
    testmodels::images(1, SIDE, 99).remove(0)
}

impl Prepared {
    /// Builds and converts test model `name`; `dir` receives the ONNX file `convert`
    /// reads. Takes a few seconds (int8 calibration runs the f32 model 20 times).
    pub fn new(name: &'static str, dir: &Path) -> Result<Self> {
        let onnx = onnx(name)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{name}.onnx"));
        std::fs::write(&path, &onnx).with_context(|| format!("writing {}", path.display()))?;
        let preprocess = Preprocess::imagenet();
        let opts = Options {
            preprocess: preprocess.clone(),
            ..Default::default()
        };
        let (bundle, report) =
            convert::convert(&path, &opts).with_context(|| format!("converting {name}"))?;
        let cut = onnxcut::cut_bytes(&onnx, &report.embedding)?;
        let images = calibration_images();
        let int8 = Options {
            int8: Some(Int8::Samples(images.clone())),
            ..opts
        };
        let (int8_bundle, int8_report) =
            convert::convert(&path, &int8).with_context(|| format!("converting {name} to int8"))?;
        // ONNX Runtime gets the same quantized graph, calibrated on the same 20 images
        // (convert holds out the last 4).
        let shape = bundle.manifest.input.shape.clone();
        let calib: Vec<Vec<f32>> = images[..20]
            .iter()
            .map(|raw| {
                let mut x = vec![0.0; raw.len()];
                preprocess.apply(bundle.manifest.input.layout, &shape, raw, &mut x);
                x
            })
            .collect();
        let proto = <tract_onnx::pb::ModelProto as prost::Message>::decode(&onnx[..])
            .context("decoding the test model")?;
        let (qproto, _) = quantize::quantize(&proto, &report.embedding, &shape, &calib)?;
        let int8_cut = prost::Message::encode_to_vec(&onnxcut::cut(&qproto, &report.embedding)?);
        Ok(Prepared {
            name,
            onnx,
            bundle,
            report,
            int8_bundle,
            int8_report,
            cut,
            int8_cut,
        })
    }
}

/// Where ONNX Runtime's library is: `ORT_DYLIB_PATH`, else where `scripts/setup.sh` puts
/// it (`target/onnxruntime/libonnxruntime.so`); an error saying both when neither exists.
pub fn ort_library() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        anyhow::ensure!(
            p.exists(),
            "ORT_DYLIB_PATH is {}, which does not exist",
            p.display()
        );
        return Ok(p);
    }
    let p = workspace().join("target/onnxruntime/libonnxruntime.so");
    anyhow::ensure!(
        p.exists(),
        "ONNX Runtime is not at {} and ORT_DYLIB_PATH is not set: run scripts/setup.sh",
        p.display()
    );
    Ok(p)
}

/// The workspace's root directory (where this crate was built from).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
