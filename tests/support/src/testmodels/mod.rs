//! Test models that the project builds itself (issue 3): nothing is downloaded and no model
//! binary is committed. A small ONNX graph builder over tract-onnx's protobuf types
//! ([`Builder`]) and three generators that return ONNX bytes, deterministic for a seed:
//!
//! - [`mobilenet`]: MobileNetV2-style (conv, BatchNormalization, ReLU6 as Clip, depthwise
//!   conv, inverted residuals, GlobalAveragePool, Gemm classifier);
//! - [`resnet`]: ResNet-style basic blocks (7×7 stem, MaxPool, 1×1 strided shortcuts);
//! - [`bert`]: a BERT-style encoder (embeddings, multi-head attention with a mask,
//!   LayerNormalization, Erf-based GELU), output `last_hidden_state`.
//!
//! The CNNs name their classifier Gemm node `classifier` and the tensor feeding it
//! `embedding`, their output `logits`. Every model declares opset [`OPSET`] and IR version
//! [`IR_VERSION`], which both tract 0.23.9 and ONNX Runtime 1.32 accept.
//!
//! The weights are random, scaled so that activations keep a sane range (He scaling before
//! ReLU/ReLU6, LeCun scaling elsewhere, BatchNormalization close to identity: mean ≈ 0,
//! var ≈ 1, gamma ≈ 1 with small noise). These nets compute nothing meaningful; they have
//! the operators, shapes and costs of the real ones.
//!
//! use edgetune_testkit::testmodels::{self, Builder, DataType, MobileNetConfig};
//!
//! let cnn = testmodels::mobilenet(&MobileNetConfig { resolution: 96, ..Default::default() });
//! // A graph of your own: a linear classifier over a 16-wide feature.
//! let mut g = Builder::new("linear", 42);
//! let x = g.input("embedding", DataType::Float, &[1, 16]);
//! let y = g.gemm("classifier", &x, 16, 3);
//! g.output(&y, "logits", DataType::Float, &[1, 3]);
//! let bytes = g.finish();
//! # assert!(cnn.len() > bytes.len());
//! # use tract_onnx::prelude::*;
//! # tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap().into_optimized().unwrap();
//! ```

use std::path::Path;

use anyhow::Context;
/// Element types of inputs, outputs and constants.
pub use tract_onnx::pb::tensor_proto::DataType;

mod bert;
mod builder;
mod images;
mod mobilenet;
mod resnet;
mod run;

pub use bert::{BertConfig, bert};
pub use builder::{Attr, Builder};
pub use images::images;
pub use mobilenet::{InvertedResidual, MobileNetConfig, mobilenet};
pub use resnet::{ResNetConfig, resnet};
pub use run::run;

/// The ONNX operator set the generated models import (LayerNormalization needs 17).
pub const OPSET: i64 = 17;
/// The ONNX IR version the generated models declare.
pub const IR_VERSION: i64 = 8;

/// Writes model bytes to `path`, creating its parent directories.
pub fn write(path: impl AsRef<Path>, bytes: &[u8]) -> anyhow::Result<()> {
    let path = path.as_ref();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
