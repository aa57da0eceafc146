//! ONNX Runtime as the second engine of [`Backbone`](crate::backbone::Backbone) (feature
//! `ort`): host parity tests against tract, side-by-side benchmarks, and later GPUs
//! through ONNX Runtime's execution providers.
//!
//! ort is built with `load-dynamic`: nothing is downloaded or linked at build time, and
//! the library is opened on first use, from `Backbone::ort_init`'s path, else
//! `ORT_DYLIB_PATH`, else `libonnxruntime.so` on the system's library path. ONNX Runtime
//! allows one environment per process, so it lives in a static here; a failed load
//! leaves nothing behind and can be retried with another path.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use crate::backbone::BackboneError;

/// How to get the library when it is missing (the error names it).
const SETUP_HINT: &str = "set ORT_DYLIB_PATH to a libonnxruntime.so (`bash scripts/setup.sh` \
     puts ONNX Runtime 1.32 at target/onnxruntime/libonnxruntime.so, and scripts/test.sh \
     exports it)";

/// How ONNX Runtime runs a backbone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrtOptions {
    /// Threads inside one operator (ONNX Runtime's intra-op pool). Default 1, like tract.
    pub intra_threads: usize,
    /// Graph optimizations at load (fusions, constant folding, layout changes). Default
    /// on; off gives ONNX Runtime's plain kernels, the reference for int8 graphs
    /// (its optimized u8×s8 kernels saturate on CPUs without VNNI).
    pub optimize: bool,
    /// Where the graph runs: the CPU, or an NVIDIA GPU through CUDA or TensorRT (the
    /// Jetson; features `cuda` and `tensorrt`, and an ONNX Runtime library built with
    /// those providers, such as the one JetPack's packages install).
    pub provider: Provider,
}

/// ONNX Runtime's execution provider for a backbone.
///
/// A GPU provider that cannot start (no GPU, a library built without it, missing CUDA
/// libraries) is an error at load, never a silent fall back to the CPU.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Provider {
    /// ONNX Runtime's CPU kernels.
    #[default]
    Cpu,
    /// CUDA on GPU `device` (feature `cuda`).
    Cuda {
        /// The GPU's index (0 on a Jetson).
        device: i32,
    },
    /// TensorRT on GPU `device` (feature `tensorrt`); nodes TensorRT cannot take run on
    /// CUDA when the `cuda` feature is also on, else on the CPU.
    TensorRt {
        /// The GPU's index (0 on a Jetson).
        device: i32,
        /// Let TensorRT run layers in half precision.
        fp16: bool,
        /// Keep built TensorRT engines in this directory: building one takes minutes on
        /// a Jetson, loading a cached one a second.
        cache: Option<PathBuf>,
    },
}

impl Default for OrtOptions {
    fn default() -> Self {
        OrtOptions {
            intra_threads: 1,
            optimize: true,
            provider: Provider::Cpu,
        }
    }
}

impl OrtOptions {
    /// With `n` intra-op threads (at least 1).
    pub fn intra_threads(mut self, n: usize) -> Self {
        self.intra_threads = n.max(1);
        self
    }

    /// With graph optimizations on or off.
    pub fn optimize(mut self, on: bool) -> Self {
        self.optimize = on;
        self
    }

    /// On this execution provider.
    pub fn provider(mut self, provider: Provider) -> Self {
        self.provider = provider;
        self
    }
}

/// ort's execution providers for `provider`, or why this build cannot have it.
fn execution_providers(
    provider: &Provider,
) -> Result<Vec<ort::ep::ExecutionProviderDispatch>, BackboneError> {
    match provider {
        Provider::Cpu => Ok(Vec::new()),
        #[cfg(feature = "cuda")]
        Provider::Cuda { device } => Ok(vec![
            ort::ep::CUDA::default()
                .with_device_id(*device)
                .build()
                .error_on_failure(),
        ]),
        #[cfg(not(feature = "cuda"))]
        Provider::Cuda { .. } => Err(BackboneError::Unsupported {
            what: "the CUDA provider (build edgetune with the `cuda` feature)",
        }),
        #[cfg(feature = "tensorrt")]
        Provider::TensorRt {
            device,
            fp16,
            cache,
        } => {
            let mut trt = ort::ep::TensorRT::default()
                .with_device_id(*device)
                .with_fp16(*fp16);
            if let Some(dir) = cache {
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display());
            }
            #[allow(unused_mut)]
            let mut eps = vec![trt.build().error_on_failure()];
            // What TensorRT does not take goes to CUDA rather than the CPU.
            #[cfg(feature = "cuda")]
            eps.push(ort::ep::CUDA::default().with_device_id(*device).build());
            Ok(eps)
        }
        #[cfg(not(feature = "tensorrt"))]
        Provider::TensorRt { .. } => Err(BackboneError::Unsupported {
            what: "the TensorRT provider (build edgetune with the `tensorrt` feature)",
        }),
    }
}

/// The process's ONNX Runtime environment, once it is loaded.
static ENVIRONMENT: Mutex<Option<Environment>> = Mutex::new(None);

/// The environment, loading ONNX Runtime first if needed: from `path`, else
/// `ORT_DYLIB_PATH`, else the system's library path.
pub(crate) fn environment(path: Option<&Path>) -> Result<Environment, BackboneError> {
    let mut env = ENVIRONMENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(env) = env.as_ref() {
        return Ok(env.clone());
    }
    let variable = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty());
    let (path, from) = match (path, variable) {
        (Some(p), _) => (p.to_path_buf(), "given to Backbone::ort_init"),
        (None, Some(p)) => (PathBuf::from(p), "from ORT_DYLIB_PATH"),
        (None, None) => (
            PathBuf::from(format!(
                "{}onnxruntime{}",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_SUFFIX
            )),
            "on the system's library path, as ORT_DYLIB_PATH is not set",
        ),
    };
    // Checked before ort sees the path: for a relative one it would also look beside the
    // executable, and its message would not say where the path came from.
    if path.components().count() > 1 && !path.exists() {
        let what = format!("{} ({from}) does not exist; {SETUP_HINT}", path.display());
        return Err(BackboneError::OrtLibrary { what });
    }
    let library = |what: String| BackboneError::OrtLibrary { what };
    let built = ort::init_from(&path)
        .map_err(|e| {
            library(format!(
                "cannot load {} ({from}): {e}; {SETUP_HINT}",
                path.display()
            ))
        })?
        .with_name("edgetune")
        .with_telemetry(false)
        .build()
        .map_err(|e| library(format!("{} ({from}) loaded, but: {e}", path.display())))?;
    *env = Some(built.clone());
    Ok(built)
}

/// A loaded ONNX Runtime session. ort's `run` takes `&mut self` (some of ONNX Runtime's
/// internals are not thread-safe), so clones share it behind a lock.
#[derive(Debug, Clone)]
pub(crate) struct Session(Arc<Mutex<ort::session::Session>>);

impl Session {
    /// Loads the ONNX graph `onnx`, which must have one input and one output.
    pub(crate) fn new(onnx: &[u8], options: &OrtOptions) -> Result<Self, BackboneError> {
        let env = environment(None)?;
        let load = |what: String| BackboneError::OrtLoad { what };
        // ort's builder errors carry the builder (for recovery) and are not `Sync`: keep
        // their text only.
        let level = if options.optimize {
            GraphOptimizationLevel::All
        } else {
            GraphOptimizationLevel::Disable
        };
        let session = ort::session::Session::builder(&env)
            .map_err(|e| load(e.to_string()))?
            .with_intra_threads(options.intra_threads.max(1))
            .map_err(|e| load(e.to_string()))?
            .with_optimization_level(level)
            .map_err(|e| load(e.to_string()))?
            .with_execution_providers(execution_providers(&options.provider)?)
            .map_err(|e| load(format!("{:?}: {e}", options.provider)))?
            .commit_from_memory(onnx)
            .map_err(|e| load(e.to_string()))?;
        let names = |o: &[ort::value::Outlet]| {
            o.iter()
                .map(|o| o.name().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if session.inputs().len() != 1 {
            return Err(load(format!(
                "the graph has {} inputs ({}); a backbone takes one",
                session.inputs().len(),
                names(session.inputs())
            )));
        }
        if session.outputs().len() != 1 {
            return Err(load(format!(
                "the graph has {} outputs ({}); cut it at the embedding first \
                 (finetune_head::onnxcut::cut)",
                session.outputs().len(),
                names(session.outputs())
            )));
        }
        Ok(Session(Arc::new(Mutex::new(session))))
    }

    /// Runs the graph on `input` (of `shape`) and hands the output's values and shape to
    /// `read`.
    pub(crate) fn run<R>(
        &self,
        shape: &[usize],
        input: Vec<f32>,
        read: impl FnOnce(&[f32], &[i64]) -> Result<R, BackboneError>,
    ) -> Result<R, BackboneError> {
        let fail = |e: ort::Error| BackboneError::OrtRun {
            what: e.to_string(),
        };
        let tensor =
            Tensor::from_array((shape.to_vec(), input)).map_err(|e| BackboneError::Input {
                what: e.to_string(),
            })?;
        let mut session = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs = session.run(ort::inputs![tensor]).map_err(fail)?;
        let (out_shape, values) = outputs[0].try_extract_tensor::<f32>().map_err(fail)?;
        read(values, out_shape)
    }
}
