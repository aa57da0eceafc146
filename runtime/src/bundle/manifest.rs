//! The manifest: what a bundle's input looks like, how to normalize it, where the
//! embedding comes from, the class names and where it all came from, and its checks
//! ([`Manifest::validate`], in `validate.rs`). Stored in the bundle as pretty-printed JSON.

use serde::{Deserialize, Serialize};

use super::{BundleError, VERSION};

/// Everything about a bundle except the bytes of its backbone and head. Stored as
/// pretty-printed JSON; see the field types for the names used there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The bundle format version the manifest was written for; [`VERSION`].
    pub format_version: u16,
    /// The backbone's input (for a features-only bundle, the head's).
    pub input: InputSpec,
    /// How raw input becomes the input tensor.
    pub preprocess: Preprocess,
    /// How a text encoder's per-token outputs become one embedding; `None` when the
    /// embedding tensor is already one vector.
    pub pooling: Option<Pooling>,
    /// The text encoder's other inputs, for the tokens layout (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextInputs>,
    /// The backbone output that feeds the head.
    pub embedding: EmbeddingSpec,
    /// Labeled embeddings from the host's data that a device starts with, so that
    /// learning new classes replays the old ones and the regression guard has samples
    /// of them; absent when the bundle has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exemplars: Option<Exemplars>,
    /// Statistics of the backbone's embeddings ([`crate::stats`]): the device's learner
    /// starts from them; absent in bundles made before them (the device then takes
    /// them from the first labels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_stats: Option<crate::stats::EmbeddingStats>,
    /// For an MLP head trained on the host: the same statistics of its hidden layer's
    /// activations ([`crate::stats::for_head`]), from which the device's closed-form
    /// learner writes the output layer while the hidden layer stays as trained. Absent
    /// for a linear head and in bundles made before them (the device's MLP head then
    /// learns by gradient steps, as it did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_stats: Option<crate::stats::EmbeddingStats>,

    /// What the backbone section holds.
    pub backbone: BackboneSpec,
    /// Class names, in the head's class order (index `i` is class `i`). May be empty
    /// when the device starts with no classes.
    pub classes: Vec<String>,
    /// Where the bundle came from.
    pub provenance: Provenance,
}

/// The input tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Tensor name in the backbone (for a features-only bundle, a label such as
    /// `"features"`).
    pub name: String,
    /// Shape, batch dimension (always 1) included: `[1, 3, 224, 224]` for NCHW.
    pub shape: Vec<usize>,
    /// How the dimensions are to be read.
    pub layout: Layout,
    /// Element type: one of `f32`, `f16`, `u8`, `i8`, `i32`, `i64`.
    pub dtype: String,
}

/// How an input tensor's dimensions are to be read. JSON: `"nchw"`, `"nhwc"`,
/// `"features"`, `"tokens"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Image, `[1, channels, height, width]`.
    Nchw,
    /// Image, `[1, height, width, channels]`.
    Nhwc,
    /// A feature vector that is the embedding itself, `[1, embedding size]`: a bundle
    /// with no backbone, fed by a front end (a DSP, another model).
    Features,
    /// Token ids of a text encoder, `[1, sequence length]`, dtype `i32` or `i64`.
    Tokens,
}

impl Layout {
    /// The layout's name as in the JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "nchw",
            Layout::Nhwc => "nhwc",
            Layout::Features => "features",
            Layout::Tokens => "tokens",
        }
    }

    /// Whether the layout is an image layout ([`Layout::Nchw`] or [`Layout::Nhwc`]).
    pub const fn is_image(self) -> bool {
        matches!(self, Layout::Nchw | Layout::Nhwc)
    }
}

/// How raw input becomes the input tensor: `x = (raw * scale - mean[c]) / std[c]` per
/// channel `c`, after an optional resize and channel reordering. The default is the
/// identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Factor applied to raw values first (`1/255` for 8-bit pixels into `[0, 1]`).
    pub scale: f32,
    /// Per-channel mean to subtract; empty for none.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation to divide by; empty for none, else as long as
    /// `mean`.
    pub std: Vec<f32>,
    /// Channel order the backbone expects.
    pub channel_order: ChannelOrder,
    /// Resize images to `[height, width]` before anything else; `None` for no resize.
    pub resize: Option<[usize; 2]>,
}

impl Preprocess {
    /// ImageNet's: pixels 0–255 in RGB scaled to `[0, 1]`, then normalized with
    /// ImageNet's channel means (0.485, 0.456, 0.406) and deviations (0.229, 0.224,
    /// 0.225), as torchvision's pre-trained models expect.
    pub fn imagenet() -> Preprocess {
        Preprocess {
            scale: 1.0 / 255.0,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            channel_order: ChannelOrder::Rgb,
            resize: None,
        }
    }

    /// The model's input from raw values (e.g. pixels 0–255, RGB) of an input of `shape`
    /// in `layout`: scaled, channels reordered for a BGR model, then normalized per
    /// channel (per feature for [`Layout::Features`]). `raw` and `out` have the shape's
    /// length (the shorter one is used).
    pub fn apply(&self, layout: Layout, shape: &[usize], raw: &[f32], out: &mut [f32]) {
        let dim = |i: usize| shape.get(i).copied().unwrap_or(1).max(1);
        // Channel count and the stride between channels.
        let (channels, stride) = match layout {
            Layout::Nchw => (dim(1), dim(2) * dim(3)),
            Layout::Nhwc => (dim(3), 1),
            Layout::Features | Layout::Tokens => (shape.last().copied().unwrap_or(1).max(1), 1),
        };
        let bgr = self.channel_order == ChannelOrder::Bgr && channels == 3;
        let n = out.len().min(raw.len());
        // Callers give RGB; a BGR model reads its channel 0 from the caller's channel 2.
        let source = |i: usize, c: usize| {
            if bgr {
                i - c * stride + (2 - c) * stride
            } else {
                i
            }
        };
        // One channel's values `x` into `o`: the loop over a run of them is what the
        // compiler vectorizes (an NCHW image is runs of H·W values of one channel; value
        // by value this was 0.23 M aarch64 instructions of a 64×64 image, 8 % of an f32
        // ResNet18 inference on a Pi 5, scripts/iprofile.sh).
        let run = |o: &mut [f32], x: &[f32], c: usize| match (self.mean.get(c), self.std.get(c)) {
            (Some(&m), Some(&s)) => {
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = (x * self.scale - m) / s;
                }
            }
            _ => {
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = x * self.scale;
                }
            }
        };
        if stride > 1 {
            for (k, o) in out[..n].chunks_mut(stride).enumerate() {
                let c = k % channels;
                let start = source(k * stride, c);
                run(o, &raw[start..start + o.len()], c);
            }
        } else {
            for (i, o) in out[..n].iter_mut().enumerate() {
                let c = i % channels;
                run(core::slice::from_mut(o), &raw[source(i, c)..][..1], c);
            }
        }
    }
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            scale: 1.0,
            mean: Vec::new(),
            std: Vec::new(),
            channel_order: ChannelOrder::Rgb,
            resize: None,
        }
    }
}

/// Channel order of a color image. JSON: `"rgb"`, `"bgr"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    /// Red, green, blue (also the value for inputs that are not color images).
    #[default]
    Rgb,
    /// Blue, green, red (OpenCV's order).
    Bgr,
}

/// How a sequence of token outputs becomes one embedding. JSON: `"mean_over_mask"`,
/// `"cls"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over the positions the attention mask keeps.
    MeanOverMask,
    /// The first (`[CLS]`) position.
    Cls,
}

/// A text encoder's inputs besides the token ids ([`Manifest::input`]): the device
/// pads the ids to the sequence length with `pad_id` and builds these from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextInputs {
    /// Name of the attention-mask input (1 for a token, 0 for padding), if the model
    /// has one.
    pub attention_mask: Option<String>,
    /// Name of the token-type (segment) input, fed zeros, if the model has one.
    pub token_type_ids: Option<String>,
    /// Token id that pads a sequence to the input's length.
    pub pad_id: i64,
    /// The tokenizer that turns text into the token ids (`finetune-head convert
    /// --tokenizer`), if the bundle carries one; absent from the JSON when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerSpec>,
}

/// A Hugging Face tokenizer carried in the manifest ([`TextInputs::tokenizer`]), with
/// what the conversion checked of it against the model (`edgetune::text` runs it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerSpec {
    /// The `tokenizer.json` file's text, as the `tokenizers` library reads it.
    pub json: String,
    /// SHA-256 of that text (hex), to tell tokenizers apart.
    pub sha256: String,
    /// Ids the tokenizer can produce: its highest id + 1, at most the rows of the model's
    /// embedding table.
    pub vocab_size: usize,
    /// Sequences are truncated to this many tokens (special tokens included): the
    /// model's sequence length. The file's own padding and truncation are replaced.
    pub max_length: usize,
    /// The tokens the tokenizer adds or treats as special (`[CLS]`, `[SEP]`, `[PAD]`…).
    pub special_tokens: Vec<String>,
}

/// Labeled embeddings in a manifest ([`Manifest::exemplars`]): `replay` ones (from the
/// head's training data) that a device keeps in its replay buffer, and `guard` ones
/// (held out from training) for its regression guard. JSON: the class of each, and the
/// embeddings one after the other (replay then guard), little-endian f32 in base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exemplars {
    /// Class of each replay exemplar.
    pub replay: Vec<u32>,
    /// Class of each guard exemplar.
    pub guard: Vec<u32>,
    /// The embeddings, base64 of little-endian f32.
    pub embeddings: String,
}

impl Exemplars {
    /// Exemplars of `replay` and `guard` samples `(embedding, class)`.
    pub fn new<'a>(
        replay: impl IntoIterator<Item = (&'a [f32], usize)>,
        guard: impl IntoIterator<Item = (&'a [f32], usize)>,
    ) -> Exemplars {
        use base64::Engine as _;
        let (mut bytes, mut r, mut g) = (Vec::new(), Vec::new(), Vec::new());
        for (labels, samples) in [
            (&mut r, replay.into_iter().collect::<Vec<_>>()),
            (&mut g, guard.into_iter().collect()),
        ] {
            for (x, y) in samples {
                labels.push(y as u32);
                bytes.extend(x.iter().flat_map(|v| v.to_le_bytes()));
            }
        }
        Exemplars {
            replay: r,
            guard: g,
            embeddings: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The embeddings of `dim` values each (replay ones, then guard ones), checked:
    /// their number, finiteness, and classes below `classes`.
    pub fn embeddings(&self, dim: usize, classes: usize) -> Result<Vec<f32>, BundleError> {
        use base64::Engine as _;
        let bad = |what: String| Err(BundleError::manifest(format!("exemplars: {what}")));
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&self.embeddings) else {
            return bad("embeddings is not valid base64".into());
        };
        let n = self.replay.len() + self.guard.len();
        if bytes.len() != n.saturating_mul(dim).saturating_mul(4) {
            return bad(format!(
                "{} bytes of embeddings for {n} exemplars of {dim} values",
                bytes.len()
            ));
        }
        if let Some(&c) = self
            .replay
            .iter()
            .chain(&self.guard)
            .find(|&&c| c as usize >= classes)
        {
            return bad(format!("class {c} of {classes}"));
        }
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if values.iter().any(|v| !v.is_finite()) {
            return bad("an embedding holds NaN or infinity".into());
        }
        Ok(values)
    }
}

/// The backbone output that feeds the head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    /// Tensor name in the backbone (for a features-only bundle, the input's name).
    pub tensor: String,
    /// Length of the embedding: the head's input size.
    pub size: usize,
}

/// What the backbone section holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneSpec {
    /// Its format.
    pub format: BackboneFormat,
    /// How its weights are stored.
    pub quantization: Quantization,
}

/// Format of the backbone section. JSON: `"none"`, `"nnef_tar"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackboneFormat {
    /// No backbone: the section is empty and the input is the embedding
    /// ([`Layout::Features`]).
    None,
    /// A tract NNEF archive: a tar, or a gzipped one (`.nnef.tgz`), which
    /// [`crate::nnef::read_model`] tells apart by its first bytes. Bundles written before
    /// the gzipped form load as they did, and tract's own reader takes both.
    NnefTar,
}

/// How the backbone's weights are stored. JSON: `{"kind": "f32"}` or
/// `{"kind": "int8", "calibration_samples": 512, "cosine_to_f32": 0.998}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Quantization {
    /// 32-bit floats (also the value when there is no backbone).
    F32,
    /// 8-bit integers, calibrated on samples.
    Int8 {
        /// How many samples calibrated the quantization; 0 when the model arrived
        /// already quantized (ONNX QDQ form), calibrated elsewhere.
        calibration_samples: usize,
        /// Mean cosine similarity of the int8 embeddings to the f32 ones on held-out
        /// samples, if measured.
        cosine_to_f32: Option<f32>,
    },
}

/// Where a bundle came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The source model (a file name, a URL, a hub id).
    pub source: String,
    /// SHA-256 of the source model file, 64 lowercase hex digits, if known.
    pub source_sha256: Option<String>,
    /// The tool that wrote the bundle and its version, e.g. `"finetune-head 0.1.0"`.
    pub tool: String,
    /// When the bundle was made, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Free-form remarks (data sets, settings, measurements).
    pub notes: Vec<String>,
}

impl Provenance {
    /// Provenance made now by `tool` from `source`, with no checksum and no notes.
    pub fn new(source: impl Into<String>, tool: impl Into<String>) -> Self {
        let created_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Provenance {
            source: source.into(),
            source_sha256: None,
            tool: tool.into(),
            created_unix,
            notes: Vec::new(),
        }
    }
}

impl Manifest {
    /// A manifest for a features-only bundle: no backbone, the input is a feature vector
    /// of `size` values (`[1, size]`, f32, named `"features"`) that is the embedding
    /// itself, identity preprocessing.
    pub fn features_only(
        size: usize,
        classes: impl IntoIterator<Item = impl Into<String>>,
        provenance: Provenance,
    ) -> Self {
        Manifest {
            format_version: VERSION,
            input: InputSpec {
                name: "features".to_string(),
                shape: vec![1, size],
                layout: Layout::Features,
                dtype: "f32".to_string(),
            },
            preprocess: Preprocess::default(),
            pooling: None,
            text: None,
            exemplars: None,
            embedding_stats: None,
            hidden_stats: None,
            embedding: EmbeddingSpec {
                tensor: "features".to_string(),
                size,
            },
            backbone: BackboneSpec {
                format: BackboneFormat::None,
                quantization: Quantization::F32,
            },
            classes: classes.into_iter().map(Into::into).collect(),
            provenance,
        }
    }

    /// The number of channels of an image or feature input (`None` for tokens or a
    /// shape that does not fit the layout).
    pub fn channels(&self) -> Option<usize> {
        let shape = &self.input.shape;
        match self.input.layout {
            Layout::Nchw => shape.get(1).copied().filter(|_| shape.len() == 4),
            Layout::Nhwc => shape.get(3).copied().filter(|_| shape.len() == 4),
            Layout::Features => Some(self.embedding.size),
            Layout::Tokens => None,
        }
    }
}
