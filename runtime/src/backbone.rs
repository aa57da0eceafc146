//! The frozen backbone on the device: the bundle's NNEF graph, run by tract, turning an
//! input (an image or a feature vector, in the layout the manifest names) into the
//! embedding the head reads.
//!
//! Loading uses tract-nnef with the ONNX operator registry and nothing else, so the
//! device binary carries no ONNX protobuf parser. The manifest's preprocessing (scale,
//! channel order, per-channel mean and standard deviation) is applied here, so callers
//! pass raw values (e.g. pixels 0–255, RGB).
//!
//! With the `ort` feature the same [`Backbone`] can run an ONNX graph with ONNX Runtime
//! instead ([`Backbone::from_onnx`]): parity tests against tract, benchmarks, and later
//! GPUs through its execution providers. ONNX Runtime is loaded at run time from
//! `ORT_DYLIB_PATH` (or [`Backbone::ort_init`]); `scripts/setup.sh` provides it.

#[cfg(feature = "tract")]
use std::sync::Arc;

#[cfg(feature = "tract")]
use tract_nnef::prelude::*;

#[cfg(feature = "tract")]
use crate::bundle::Bundle;
use crate::bundle::{Layout, Manifest, Pooling, Preprocess};

#[cfg(feature = "ort")]
pub use crate::backbone_ort::{OrtOptions, Provider};

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
    #[cfg(feature = "tract")]
    Load(TractError),
    /// The input has the wrong number of values, or holds NaN or infinity.
    Input {
        /// What is wrong.
        what: String,
    },
    /// tract failed while running.
    #[cfg(feature = "tract")]
    Run(TractError),
    /// The graph's output is not an embedding of the manifest's size.
    Output {
        /// What is wrong.
        what: String,
    },
    /// The ONNX Runtime library could not be loaded (missing, not a library, too old).
    #[cfg(feature = "ort")]
    OrtLibrary {
        /// What was tried, why it failed and how to fix it.
        what: String,
    },
    /// ONNX Runtime refused the ONNX graph.
    #[cfg(feature = "ort")]
    OrtLoad {
        /// ONNX Runtime's message.
        what: String,
    },
    /// ONNX Runtime failed while running.
    #[cfg(feature = "ort")]
    OrtRun {
        /// ONNX Runtime's message.
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
            #[cfg(feature = "tract")]
            BackboneError::Load(e) => write!(f, "cannot load the backbone: {e:#}"),
            BackboneError::Input { what } => write!(f, "bad backbone input: {what}"),
            #[cfg(feature = "tract")]
            BackboneError::Run(e) => write!(f, "the backbone failed: {e:#}"),
            BackboneError::Output { what } => write!(f, "unexpected backbone output: {what}"),
            #[cfg(feature = "ort")]
            BackboneError::OrtLibrary { what } => {
                write!(f, "ONNX Runtime is not available: {what}")
            }
            #[cfg(feature = "ort")]
            BackboneError::OrtLoad { what } => {
                write!(f, "ONNX Runtime cannot load the backbone: {what}")
            }
            #[cfg(feature = "ort")]
            BackboneError::OrtRun { what } => {
                write!(f, "the backbone failed in ONNX Runtime: {what}")
            }
        }
    }
}

impl std::error::Error for BackboneError {}

/// A loaded backbone, ready to embed. Clones share the loaded graph.
#[derive(Debug, Clone)]
pub struct Backbone {
    engine: Engine,
    /// The threads tract's matrix products run on (`None`: the caller's thread).
    #[cfg(feature = "threads")]
    executor: Option<tract_linalg::multithread::Executor>,
    shape: Vec<usize>,
    layout: Layout,
    preprocess: Preprocess,
    embedding: usize,
    /// For a text encoder: what each of the graph's inputs is, in order (text encoders
    /// run under tract only).
    #[cfg_attr(not(feature = "tract"), allow(dead_code))]
    text_inputs: Vec<TextInput>,
    #[cfg_attr(not(feature = "tract"), allow(dead_code))]
    pad_id: i64,
    #[cfg_attr(not(feature = "tract"), allow(dead_code))]
    pooling: Option<Pooling>,
}

/// One input of a text encoder's graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "tract"), allow(dead_code))]
enum TextInput {
    Ids,
    Mask,
    TypeIds,
}

/// What runs the graph; callers of [`Backbone`] do not see which.
#[derive(Debug, Clone)]
enum Engine {
    #[cfg(feature = "tract")]
    Tract(Arc<TypedRunnableModel>),
    #[cfg(feature = "ort")]
    Ort(crate::backbone_ort::Session),
}

impl Backbone {
    /// Loads the backbone of `bundle` and plans it for this machine.
    #[cfg(feature = "tract")]
    pub fn from_bundle(bundle: &Bundle) -> Result<Self, BackboneError> {
        if bundle.backbone.is_empty() {
            return Err(BackboneError::NoBackbone);
        }
        Self::load(&bundle.backbone, &bundle.manifest)
    }

    /// Loads an NNEF tar (plain or gzipped) described by `manifest`.
    #[cfg(feature = "tract")]
    pub fn load(nnef_tar: &[u8], manifest: &Manifest) -> Result<Self, BackboneError> {
        check_supported(manifest)?;
        let model = crate::nnef::read_model(nnef_tar).map_err(BackboneError::Load)?;
        let plan = crate::nnef::refuse_panics("planning the backbone", || {
            crate::plan::optimize(model).and_then(|m| m.into_runnable())
        })
        .map_err(BackboneError::Load)?;
        let mut backbone = Self::with_engine(Engine::Tract(plan.clone()), manifest);
        if manifest.input.layout == Layout::Tokens {
            let text = manifest.text.as_ref();
            let model = plan.model();
            for outlet in model.input_outlets().map_err(BackboneError::Load)? {
                let name = &model.node(outlet.node).name;
                let input = if *name == manifest.input.name {
                    TextInput::Ids
                } else if text.and_then(|t| t.attention_mask.as_ref()) == Some(name) {
                    TextInput::Mask
                } else if text.and_then(|t| t.token_type_ids.as_ref()) == Some(name) {
                    TextInput::TypeIds
                } else {
                    return Err(BackboneError::Output {
                        what: format!(
                            "the graph's input {name:?} is not one the manifest names (ids, attention mask, token types)"
                        ),
                    });
                };
                backbone.text_inputs.push(input);
            }
        }
        Ok(backbone)
    }

    /// Loads an ONNX graph whose single output is the embedding (for a whole classifier,
    /// cut it first: `finetune_head::onnxcut::cut`), run by ONNX Runtime with
    /// [`OrtOptions::default`] (one intra-op thread). `manifest` gives the input shape,
    /// layout, preprocessing and embedding size, as for [`Backbone::load`].
    ///
    /// ONNX Runtime is loaded on first use from `ORT_DYLIB_PATH` (else
    /// `libonnxruntime.so` from the system's library path) unless [`Backbone::ort_init`]
    /// was called; if it cannot be, this returns [`BackboneError::OrtLibrary`].
    #[cfg(feature = "ort")]
    pub fn from_onnx(onnx: &[u8], manifest: &Manifest) -> Result<Self, BackboneError> {
        Self::from_onnx_with(onnx, manifest, &OrtOptions::default())
    }

    /// [`Backbone::from_onnx`] with options (threads, graph optimization).
    #[cfg(feature = "ort")]
    pub fn from_onnx_with(
        onnx: &[u8],
        manifest: &Manifest,
        options: &OrtOptions,
    ) -> Result<Self, BackboneError> {
        check_supported(manifest)?;
        if manifest.input.layout == Layout::Tokens {
            return Err(BackboneError::Unsupported {
                what: "text encoders under ONNX Runtime",
            });
        }
        let session = crate::backbone_ort::Session::new(onnx, options)?;
        Ok(Self::with_engine(Engine::Ort(session), manifest))
    }

    /// Loads ONNX Runtime from the library at `path` (`libonnxruntime.so`) instead of
    /// `ORT_DYLIB_PATH`. Only the first successful load counts: ONNX Runtime can be
    /// loaded once per process, so later calls do nothing and return `Ok`.
    #[cfg(feature = "ort")]
    pub fn ort_init(path: impl AsRef<std::path::Path>) -> Result<(), BackboneError> {
        crate::backbone_ort::environment(Some(path.as_ref())).map(drop)
    }

    fn with_engine(engine: Engine, manifest: &Manifest) -> Self {
        Backbone {
            engine,
            #[cfg(feature = "threads")]
            executor: None,
            shape: manifest.input.shape.clone(),
            layout: manifest.input.layout,
            preprocess: manifest.preprocess.clone(),
            embedding: manifest.embedding.size,
            text_inputs: Vec::new(),
            pad_id: manifest.text.as_ref().map_or(0, |t| t.pad_id),
            pooling: manifest.pooling,
        }
    }

    /// Runs tract's matrix products for this backbone (and its clones) on `threads`
    /// threads of a pool of its own; the default, and `threads == 1`, is the calling
    /// thread. Only matrix products and some element-wise operators are split (tract's
    /// executor). Feature `threads`; ONNX Runtime takes its thread count in
    /// [`OrtOptions`] instead.
    #[cfg(feature = "threads")]
    pub fn with_threads(mut self, threads: usize) -> Result<Self, BackboneError> {
        if threads == 0 {
            return Err(BackboneError::Input {
                what: "0 threads: at least 1".into(),
            });
        }
        self.executor =
            (threads > 1).then(|| tract_linalg::multithread::Executor::multithread(threads));
        Ok(self)
    }

    /// Runs the tract plan on this backbone's threads.
    #[cfg(feature = "tract")]
    fn run_tract(
        &self,
        plan: &Arc<TypedRunnableModel>,
        inputs: TVec<TValue>,
    ) -> Result<TVec<TValue>, BackboneError> {
        #[cfg(feature = "threads")]
        if let Some(executor) = &self.executor {
            return tract_linalg::multithread::multithread_tract_scope(executor.clone(), || {
                plan.run(inputs)
            })
            .map_err(BackboneError::Run);
        }
        plan.run(inputs).map_err(BackboneError::Run)
    }

    /// Values one input holds (the product of the manifest's input shape).
    pub fn input_len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the embedding.
    pub fn embedding_len(&self) -> usize {
        self.embedding
    }

    /// The model's input values from raw values ([`Preprocess::apply`]).
    fn preprocess(&self, raw: &[f32]) -> Result<Vec<f32>, BackboneError> {
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
        Ok(data)
    }

    /// Longest token sequence a text encoder takes (0 for other backbones).
    pub fn max_tokens(&self) -> usize {
        if self.layout == Layout::Tokens {
            self.shape.last().copied().unwrap_or(0)
        } else {
            0
        }
    }

    /// The embedding of a text encoder's token ids (without padding; at most
    /// [`Backbone::max_tokens`]), written to `out`: the ids are padded with the
    /// manifest's pad id, the attention mask marks the real tokens, token types are 0,
    /// and the sequence output is pooled as the manifest says.
    #[cfg(feature = "tract")]
    pub fn embed_tokens(&self, ids: &[i64], out: &mut [f32]) -> Result<(), BackboneError> {
        let seq = self.max_tokens();
        if self.layout != Layout::Tokens {
            return Err(BackboneError::Input {
                what: "token ids for a backbone that does not read tokens (use embed)".into(),
            });
        }
        if ids.is_empty() || ids.len() > seq {
            return Err(BackboneError::Input {
                what: format!("{} tokens, the model takes 1 to {seq}", ids.len()),
            });
        }
        // `from_onnx` refuses text encoders, so this is tract's; an error, not a panic,
        // if that ever changes.
        #[allow(irrefutable_let_patterns)]
        let Engine::Tract(plan) = &self.engine else {
            return Err(BackboneError::Unsupported {
                what: "text encoders run on tract only",
            });
        };
        let mut inputs = TVec::new();
        for (ix, input) in self.text_inputs.iter().enumerate() {
            let values: Vec<i64> = (0..seq)
                .map(|p| match input {
                    TextInput::Ids => ids.get(p).copied().unwrap_or(self.pad_id),
                    TextInput::Mask => i64::from(p < ids.len()),
                    TextInput::TypeIds => 0,
                })
                .collect();
            let dt = plan
                .model()
                .input_fact(ix)
                .map_err(BackboneError::Run)?
                .datum_type;
            let t = Tensor::from_shape(&[1, seq], &values)
                .and_then(|t| t.cast_to_dt(dt).map(|t| t.into_owned()))
                .map_err(BackboneError::Run)?;
            inputs.push(t.into_tvalue());
        }
        let outputs = self.run_tract(plan, inputs)?;
        let view = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(BackboneError::Run)?;
        match self.pooling {
            None => self.copy_embedding(view.iter().copied(), view.shape(), out),
            Some(pooling) => {
                let hidden = self.embedding;
                if view.len() != seq * hidden || out.len() != hidden {
                    let what = format!(
                        "{:?} into a buffer of {}, the manifest says [1, {seq}, {hidden}]",
                        view.shape(),
                        out.len()
                    );
                    return Err(BackboneError::Output { what });
                }
                let values: Vec<f32> = view.iter().copied().collect();
                pool(pooling, &values, hidden, ids.len(), out);
                Ok(())
            }
        }
    }

    /// The embedding of one raw input (see the module docs), written to `out`.
    pub fn embed(&self, raw: &[f32], out: &mut [f32]) -> Result<(), BackboneError> {
        if self.layout == Layout::Tokens {
            return Err(BackboneError::Input {
                what: "a text encoder takes token ids (use embed_tokens)".into(),
            });
        }
        let input = self.preprocess(raw)?;
        match &self.engine {
            #[cfg(feature = "tract")]
            Engine::Tract(plan) => {
                let input =
                    Tensor::from_shape(&self.shape, &input).map_err(|e| BackboneError::Input {
                        what: format!("{e:#}"),
                    })?;
                let outputs = self.run_tract(plan, tvec![input.into_tvalue()])?;
                let view = outputs[0]
                    .to_plain_array_view::<f32>()
                    .map_err(BackboneError::Run)?;
                self.copy_embedding(view.iter().copied(), view.shape(), out)
            }
            #[cfg(feature = "ort")]
            Engine::Ort(session) => session.run(&self.shape, input, |values, shape| {
                self.copy_embedding(values.iter().copied(), shape, out)
            }),
        }
    }

    /// Checks the graph's output against the manifest and `out`, and copies it there.
    fn copy_embedding<D: std::fmt::Debug + ?Sized>(
        &self,
        values: impl ExactSizeIterator<Item = f32>,
        shape: &D,
        out: &mut [f32],
    ) -> Result<(), BackboneError> {
        if values.len() != self.embedding || out.len() != self.embedding {
            let what = format!(
                "{} values ({shape:?}) into a buffer of {}, the manifest says {}",
                values.len(),
                out.len(),
                self.embedding
            );
            return Err(BackboneError::Output { what });
        }
        for (o, v) in out.iter_mut().zip(values) {
            *o = v;
        }
        Ok(())
    }
}

/// One embedding from a text encoder's sequence output `[seq, hidden]` (row-major)
/// whose first `tokens` positions are real: their mean, or the first position's vector.
pub fn pool(pooling: Pooling, sequence: &[f32], hidden: usize, tokens: usize, out: &mut [f32]) {
    match pooling {
        Pooling::Cls => out.copy_from_slice(&sequence[..hidden]),
        Pooling::MeanOverMask => {
            out.fill(0.0);
            for row in sequence.chunks(hidden).take(tokens) {
                for (o, v) in out.iter_mut().zip(row) {
                    *o += v;
                }
            }
            let n = tokens.max(1) as f32;
            out.iter_mut().for_each(|o| *o /= n);
        }
    }
}

/// Refuses what the engines do not run yet (text encoders run under tract only).
fn check_supported(manifest: &Manifest) -> Result<(), BackboneError> {
    if manifest.input.layout == Layout::Tokens && !cfg!(feature = "tract") {
        return Err(BackboneError::Unsupported {
            what: "text-encoder bundles need the tract feature",
        });
    }
    Ok(())
}
