//! The frozen backbone on the device: the bundle's NNEF graph, run by tract, turning an
//! input (an image or a feature vector, in the layout the manifest names) into the
//! embedding the head reads.
//!
//! Loading uses tract-nnef with the ONNX operator registry and nothing else, so the
//! device binary carries no ONNX protobuf parser. The manifest's preprocessing (scale,
//! channel order, per-channel mean and standard deviation) is applied here, so callers
//! pass raw values (e.g. pixels 0–255, RGB).

use std::sync::Arc;

use tract_nnef::prelude::*;
use tract_onnx_opl::WithOnnx;

use crate::bundle::{Bundle, Layout, Manifest, Preprocess};

/// Why a backbone could not be loaded or run.
#[derive(Debug)]
#[non_exhaustive]
pub enum BackboneError {
    /// The bundle has no backbone (its input is the feature vector itself).
    NoBackbone,
    /// This build cannot run the bundle's input kind yet.
    Unsupported {
        /// What is missing.
        what: &'static str,
    },
    /// tract refused the NNEF graph.
    Load(TractError),
    /// The input has the wrong number of values, or holds NaN or infinity.
    Input {
        /// What is wrong.
        what: String,
    },
    /// tract failed while running.
    Run(TractError),
    /// The graph's output is not an embedding of the manifest's size.
    Output {
        /// What is wrong.
        what: String,
    },
}

impl std::fmt::Display for BackboneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackboneError::NoBackbone => write!(
                f,
                "the bundle has no backbone: its input is the embedding itself"
            ),
            BackboneError::Unsupported { what } => write!(f, "not supported by this build: {what}"),
            BackboneError::Load(e) => write!(f, "cannot load the backbone: {e:#}"),
            BackboneError::Input { what } => write!(f, "bad backbone input: {what}"),
            BackboneError::Run(e) => write!(f, "the backbone failed: {e:#}"),
            BackboneError::Output { what } => write!(f, "unexpected backbone output: {what}"),
        }
    }
}

impl std::error::Error for BackboneError {}

/// A loaded backbone, ready to embed.
#[derive(Debug, Clone)]
pub struct Backbone {
    plan: Arc<TypedRunnableModel>,
    shape: Vec<usize>,
    layout: Layout,
    preprocess: Preprocess,
    embedding: usize,
}

impl Backbone {
    /// Loads the backbone of `bundle` and plans it for this machine.
    pub fn from_bundle(bundle: &Bundle) -> Result<Self, BackboneError> {
        if bundle.backbone.is_empty() {
            return Err(BackboneError::NoBackbone);
        }
        Self::load(&bundle.backbone, &bundle.manifest)
    }

    /// Loads an NNEF tar (plain or gzipped) described by `manifest`.
    pub fn load(nnef_tar: &[u8], manifest: &Manifest) -> Result<Self, BackboneError> {
        if manifest.input.layout == Layout::Tokens || manifest.pooling.is_some() {
            return Err(BackboneError::Unsupported {
                what: "text-encoder bundles (token inputs, pooling)",
            });
        }
        let model = tract_nnef::nnef()
            .with_onnx()
            .model_for_read(&mut &nnef_tar[..])
            .map_err(BackboneError::Load)?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(BackboneError::Load)?;
        Ok(Backbone {
            plan,
            shape: manifest.input.shape.clone(),
            layout: manifest.input.layout,
            preprocess: manifest.preprocess.clone(),
            embedding: manifest.embedding.size,
        })
    }

    /// Values one input holds (the product of the manifest's input shape).
    pub fn input_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the embedding.
    pub fn embedding_len(&self) -> usize {
        self.embedding
    }

    /// The model's input tensor from raw values ([`Preprocess::apply`]).
    fn preprocess(&self, raw: &[f32]) -> Result<Tensor, BackboneError> {
        if raw.len() != self.input_len() {
            let what = format!(
                "{} values, the model takes {} ({:?})",
                raw.len(),
                self.input_len(),
                self.shape
            );
            return Err(BackboneError::Input { what });
        }
        if !crate::math::all_finite(raw) {
            return Err(BackboneError::Input {
                what: "it contains NaN or infinity".into(),
            });
        }
        let mut data = vec![0.0f32; raw.len()];
        self.preprocess
            .apply(self.layout, &self.shape, raw, &mut data);
        Tensor::from_shape(&self.shape, &data).map_err(|e| BackboneError::Input {
            what: format!("{e:#}"),
        })
    }

    /// The embedding of one raw input (see the module docs), written to `out`.
    pub fn embed(&self, raw: &[f32], out: &mut [f32]) -> Result<(), BackboneError> {
        let input = self.preprocess(raw)?;
        let outputs = self
            .plan
            .run(tvec![input.into_tvalue()])
            .map_err(BackboneError::Run)?;
        let view = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(BackboneError::Run)?;
        if view.len() != self.embedding || out.len() != self.embedding {
            let what = format!(
                "{} values ({:?}) into a buffer of {}, the manifest says {}",
                view.len(),
                view.shape(),
                out.len(),
                self.embedding
            );
            return Err(BackboneError::Output { what });
        }
        for (o, v) in out.iter_mut().zip(view.iter()) {
            *o = *v;
        }
        Ok(())
    }
}
