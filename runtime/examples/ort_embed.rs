//! Runs an ONNX model under ONNX Runtime N times on one fixed input: the ONNX Runtime
//! side of the ARM instruction counts (`scripts/icount.sh`), the counterpart of the
//! `embed` example for bundles.
//!
//! `ort_embed MODEL.onnx [N]`: loads ONNX Runtime from `ORT_DYLIB_PATH`, one intra-op
//! thread, graph optimizations at ONNX Runtime's default (all), runs the model's single
//! float input (its fixed shape) N times (default 1) on a pseudo-random image already
//! scaled to about −2…2, and prints the first values of the first output. Count N = 1
//! and N = 1 + k, and divide the difference by k to get one inference without loading.
//!
//! The whole graph runs, classifier included: a bundle stops at the embedding, so the
//! ONNX Runtime count also has the last Gemm (10 × 1,280 multiply-adds for the
//! torchvision MobileNetV2, 10 × 64 for the ResNet: noise at these sizes).

use edgetune::rng::Rng;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: ort_embed MODEL.onnx [N]")?;
    let n: usize = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| format!("N must be a count, got {n:?}"))?,
        None => 1,
    };
    let library = std::env::var_os("ORT_DYLIB_PATH")
        .filter(|p| !p.is_empty())
        .ok_or("set ORT_DYLIB_PATH to the libonnxruntime.so to load")?;
    let env = ort::init_from(&library)
        .map_err(|e| format!("cannot load {}: {e}", library.to_string_lossy()))?
        .with_name("ort_embed")
        .with_telemetry(false)
        .build()?;
    let mut session = Session::builder(&env)?
        .with_intra_threads(1)?
        .with_inter_threads(1)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .commit_from_file(&path)?;
    if session.inputs().len() != 1 {
        return Err(format!("{path}: {} inputs, expected one", session.inputs().len()).into());
    }
    let shape: Vec<usize> = session.inputs()[0]
        .dtype()
        .tensor_shape()
        .ok_or("the input is not a tensor")?
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("input dimension {d} is not fixed")))
        .collect::<Result<_, _>>()?;
    let mut rng = Rng::new(7);
    let len: usize = shape.iter().product();
    // Pixels 0…255 as `embed` draws them, through ImageNet-like scaling, done here once.
    let input: Vec<f32> = (0..len)
        .map(|_| ((rng.unit() * 255.0).floor() / 255.0 - 0.45) / 0.225)
        .collect();
    let mut first = Vec::new();
    for _ in 0..n {
        let tensor = Tensor::from_array((shape.clone(), input.clone()))?;
        let outputs = session.run(ort::inputs![tensor])?;
        let (_, values) = outputs[0].try_extract_tensor::<f32>()?;
        first = values[..values.len().min(4)].to_vec();
    }
    println!("{first:?}");
    Ok(())
}
