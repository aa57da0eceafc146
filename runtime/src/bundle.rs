//! The bundle: one file that carries everything a device needs to run a model and keep
//! learning. It holds a [`Manifest`] (what the input looks like, how to normalize it,
//! where the embedding comes from, the class names and where it all came from), the
//! frozen backbone as a tract NNEF tar, and optionally a trained head in the
//! [`persist`] format. Bundles need `std`.
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic [`MAGIC`] (`b"ETBUNDLE"`) |
//! | 2 | format version, u16 ([`VERSION`]) |
//! | 3 × 16 | section table: offset (u64) and length (u64) of the manifest, the backbone and the head, in that order |
//! | manifest length | the manifest: pretty-printed JSON (UTF-8), readable in a hex dump or with `strings` |
//! | backbone length | the backbone, a tract NNEF tar; empty for a features-only bundle ([`BackboneFormat::None`]) |
//! | head length | the head in the [`persist`] format; empty (length 0) when the bundle has no head |
//! | 4 | CRC-32 (ISO-HDLC) of everything before it, u32 |
//!
//! All integers are little-endian. The sections follow the header in table order with no
//! gaps: the manifest starts at [`HEADER_LEN`] and each section starts where the previous
//! one ends (an empty section too); the checksum follows the head and ends the file.
//!
//! [`Bundle::from_bytes`] checks the magic, the version, the section table, the length,
//! the checksum, the manifest (JSON syntax, required fields, [`Manifest::validate`]), that
//! the backbone section agrees with the manifest's backbone format, and the head (its
//! whole [`persist`] encoding, and that its input size and class count match the
//! manifest). Anything that does not check out is a [`BundleError`]; no input panics.
//! [`Bundle::to_bytes`] runs the same checks before it writes, so whatever it writes
//! reads back. A reader ignores manifest fields it does not know (a newer writer may add
//! some), but every field this version defines must be present (an `Option` field may
//! be left out for `None`).
//!
//! ```
//! use edgetune::bundle::{Bundle, BundleError, Provenance};
//! use edgetune::{persist, Dims, Head};
//!
//! // A features-only bundle (the input is the embedding itself) with a trained head.
//! let provenance = Provenance::new("synthetic example", "doc test");
//! let mut bundle = Bundle::features_only(4, ["cat", "dog"], provenance);
//! let head = Head::alloc(Dims::linear(4, 8), 2)?;
//! bundle.head = Some(persist::encode_to_vec(&head, None::<&edgetune::Learner<[f32; 0]>>)?);
//!
//! let mut bytes = bundle.to_bytes()?;
//! let back = Bundle::from_bytes(&bytes)?;
//! assert_eq!(back, bundle);
//! assert_eq!(back.manifest.classes, ["cat", "dog"]);
//!
//! // One flipped bit anywhere and the bundle is refused.
//! bytes[100] ^= 0x04;
//! let err = Bundle::from_bytes(&bytes).unwrap_err();
//! assert!(matches!(err, BundleError::Checksum { .. }));
//! assert!(err.to_string().contains("checksum mismatch"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Bundle::write`] replaces a file atomically (a new file, fsync, rename, fsync of the
//! directory): after a crash the path holds the old bundle or the new one, never half of
//! one.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crc::{CRC_32_ISO_HDLC, Crc};
use serde::{Deserialize, Serialize};

use crate::persist::{self, DecodeError};

/// The first eight bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"ETBUNDLE";
/// The format version this build writes, and the newest it reads.
pub const VERSION: u16 = 1;
/// Length of the fixed header (magic, version, section table) in bytes.
pub const HEADER_LEN: usize = 8 + 2 + SECTIONS * 16;
/// Length of the CRC trailer in bytes.
const CRC_LEN: usize = 4;
/// Manifest, backbone, head.
const SECTIONS: usize = 3;
const SECTION_NAMES: [&str; SECTIONS] = ["manifest", "backbone", "head"];
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Element types an input may have.
const DTYPES: [&str; 6] = ["f32", "f16", "u8", "i8", "i32", "i64"];

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
        for (i, o) in out.iter_mut().enumerate().take(raw.len()) {
            let c = (i / stride) % channels;
            // Callers give RGB; a BGR model reads its channel 0 from the caller's channel 2.
            let src = if bgr {
                i - c * stride + (2 - c) * stride
            } else {
                i
            };
            let v = raw[src] * self.scale;
            *o = match (self.mean.get(c), self.std.get(c)) {
                (Some(m), Some(s)) => (v - m) / s,
                _ => v,
            };
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
    /// A tract NNEF archive (tar).
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

/// A bundle in memory: the manifest and the bytes of the backbone and the head.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// What the bundle holds.
    pub manifest: Manifest,
    /// The backbone, a tract NNEF tar; empty when the manifest's backbone format is
    /// [`BackboneFormat::None`].
    pub backbone: Vec<u8>,
    /// The head in the [`persist`] format (with or without learner state), if any.
    pub head: Option<Vec<u8>>,
}

/// Why a bundle could not be read or written.
///
/// The variants that wrap another error ([`BundleError::Head`], [`BundleError::Io`],
/// [`BundleError::InFile`]) say what failed in their message and return the cause from
/// [`source`](std::error::Error::source), as the Rust API guidelines ask: print the whole
/// chain (`anyhow`'s `{:#}`, or walk `source()`) to show a user everything.
#[derive(Debug)]
#[non_exhaustive]
pub enum BundleError {
    /// The data does not start with [`MAGIC`].
    NotABundle,
    /// A format version this build cannot read.
    UnsupportedVersion {
        /// The version in the data.
        found: u16,
        /// The newest version this build reads ([`VERSION`]).
        supported: u16,
    },
    /// Fewer bytes than the bundle needs.
    Truncated {
        /// Bytes a complete bundle needs (as far as known).
        needed: u64,
        /// Bytes given.
        found: u64,
    },
    /// The CRC-32 trailer does not match the data: corruption.
    Checksum {
        /// The checksum stored in the data.
        stored: u32,
        /// The checksum of the data as read.
        computed: u32,
    },
    /// The section table is inconsistent, or there are bytes after the checksum.
    BadLayout {
        /// What is wrong.
        what: String,
    },
    /// The manifest is not valid JSON, lacks a required field, or holds an invalid
    /// value; or the backbone section disagrees with it.
    Manifest {
        /// Which field and what is wrong with it (JSON errors give line and column).
        what: String,
    },
    /// The head section is not a valid [`persist`] encoding.
    Head(DecodeError),
    /// The head does not fit the manifest.
    HeadMismatch {
        /// The manifest field it disagrees with: `"embedding.size"` (the head's input
        /// size) or `"classes"` (the head's class count).
        what: &'static str,
        /// The manifest's value (for `classes`, the number of names).
        manifest: usize,
        /// The head's value.
        head: usize,
    },
    /// Reading or writing a file failed.
    Io {
        /// What was being done, e.g. `"cannot read"`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file at `path` is not a valid bundle (from [`Bundle::read`]).
    InFile {
        /// The file.
        path: PathBuf,
        /// Why it is not valid.
        error: Box<BundleError>,
    },
}

impl BundleError {
    /// The error without the file it happened in: for [`BundleError::InFile`], the
    /// wrapped error; otherwise `self`.
    pub fn inner(&self) -> &BundleError {
        match self {
            BundleError::InFile { error, .. } => error.inner(),
            other => other,
        }
    }

    pub(crate) fn manifest(what: impl Into<String>) -> Self {
        BundleError::Manifest { what: what.into() }
    }

    fn layout(what: impl Into<String>) -> Self {
        BundleError::BadLayout { what: what.into() }
    }
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::NotABundle => f.write_str("not an edgetune bundle (wrong magic bytes)"),
            BundleError::UnsupportedVersion { found, supported } if found > supported => write!(
                f,
                "bundle written by a newer edgetune: format {found}, this build reads up to {supported}"
            ),
            BundleError::UnsupportedVersion { found, supported } => write!(
                f,
                "bundle format {found} is not supported: this build reads formats 1 to {supported}"
            ),
            BundleError::Truncated { needed, found } => write!(
                f,
                "bundle is truncated: {found} bytes, but a complete bundle needs {needed}"
            ),
            BundleError::Checksum { stored, computed } => write!(
                f,
                "bundle is corrupt: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            BundleError::BadLayout { what } => write!(f, "bundle is malformed: {what}"),
            BundleError::Manifest { what } => write!(f, "manifest: {what}"),
            BundleError::Head(_) => f.write_str("the bundle's head section is invalid"),
            BundleError::HeadMismatch {
                what: "embedding.size",
                manifest,
                head,
            } => write!(
                f,
                "head does not match the manifest: the head takes {head} inputs, embedding.size is {manifest}"
            ),
            BundleError::HeadMismatch {
                what: "classes",
                manifest,
                head,
            } => write!(
                f,
                "head does not match the manifest: the head has {head} classes, the manifest names {manifest}"
            ),
            BundleError::HeadMismatch {
                what,
                manifest,
                head,
            } => write!(
                f,
                "head does not match the manifest: {what} is {manifest}, the head has {head}"
            ),
            BundleError::Io { action, path, .. } => write!(f, "{action} {}", path.display()),
            BundleError::InFile { path, .. } => write!(f, "invalid bundle {}", path.display()),
        }
    }
}

impl std::error::Error for BundleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BundleError::Head(e) => Some(e),
            BundleError::Io { source, .. } => Some(source),
            BundleError::InFile { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

impl From<DecodeError> for BundleError {
    fn from(e: DecodeError) -> Self {
        BundleError::Head(e)
    }
}

/// Checks a float is finite and positive.
fn positive(what: &str, v: f32) -> Result<(), BundleError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(BundleError::manifest(format!(
            "{what} must be positive and finite (got {v})"
        )))
    }
}

/// Checks a name is non-empty and free of control characters.
fn name(what: &str, s: &str) -> Result<(), BundleError> {
    if s.is_empty() {
        return Err(BundleError::manifest(format!("{what} must not be empty")));
    }
    if s.chars().any(char::is_control) {
        return Err(BundleError::manifest(format!(
            "{what} {s:?} must not contain control characters"
        )));
    }
    Ok(())
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

    /// Checks every field and how they fit together. The error names the first field
    /// found wrong, e.g. `manifest: preprocess.std[1] must be positive and finite (got
    /// -1)`. [`Bundle::to_bytes`] and [`Bundle::from_bytes`] call this.
    pub fn validate(&self) -> Result<(), BundleError> {
        let bad = |what: String| Err(BundleError::manifest(what));
        if self.format_version != VERSION {
            return bad(format!(
                "format_version is {}, this build writes and reads {VERSION}",
                self.format_version
            ));
        }
        self.validate_input()?;
        self.validate_preprocess()?;
        let layout = self.input.layout;
        if layout == Layout::Features
            && let Some(p) = self.pooling
        {
            return bad(format!(
                "pooling must be null for the features layout (got {p:?})"
            ));
        }
        if layout != Layout::Tokens && self.text.is_some() {
            return bad("text must be null unless the input layout is tokens".to_string());
        }
        if let Some(t) = &self.text {
            for (field, n) in [
                ("text.attention_mask", &t.attention_mask),
                ("text.token_type_ids", &t.token_type_ids),
            ] {
                if let Some(n) = n {
                    name(field, n)?;
                }
            }
        }
        name("embedding.tensor", &self.embedding.tensor)?;
        if self.embedding.size == 0 {
            return bad("embedding.size must be positive".to_string());
        }
        if layout == Layout::Features && self.input.shape != [1, self.embedding.size] {
            return bad(format!(
                "input.shape must be [1, {}] (embedding.size) for the features layout, got {:?}",
                self.embedding.size, self.input.shape
            ));
        }
        self.validate_backbone()?;
        let mut seen = HashMap::with_capacity(self.classes.len());
        for (i, class) in self.classes.iter().enumerate() {
            name(&format!("classes[{i}]"), class)?;
            if let Some(first) = seen.insert(class.as_str(), i) {
                return bad(format!("classes[{i}] {class:?} repeats classes[{first}]"));
            }
        }
        if let Some(e) = &self.exemplars {
            e.embeddings(self.embedding.size, self.classes.len())?;
        }
        let p = &self.provenance;
        name("provenance.source", &p.source)?;
        name("provenance.tool", &p.tool)?;
        if let Some(sha) = &p.source_sha256
            && !(sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            return bad(format!(
                "provenance.source_sha256 must be 64 lowercase hex digits (got {sha:?})"
            ));
        }
        Ok(())
    }

    fn validate_input(&self) -> Result<(), BundleError> {
        let bad = |what: String| Err(BundleError::manifest(what));
        let input = &self.input;
        name("input.name", &input.name)?;
        let shape = &input.shape;
        if shape.is_empty() {
            return bad("input.shape must not be empty".to_string());
        }
        if let Some(i) = shape.iter().position(|&d| d == 0) {
            return bad(format!("input.shape[{i}] must not be 0"));
        }
        if shape.first() != Some(&1) {
            return bad(format!(
                "input.shape[0] (the batch) must be 1, got {:?}",
                shape
            ));
        }
        if shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .is_none()
        {
            return bad(format!("input.shape {shape:?} has too many elements"));
        }
        let rank = match input.layout {
            Layout::Nchw | Layout::Nhwc => 4,
            Layout::Features | Layout::Tokens => 2,
        };
        if shape.len() != rank {
            return bad(format!(
                "input.shape must have {rank} dimensions for the {} layout, got {shape:?}",
                layout_name(input.layout)
            ));
        }
        let dtypes: &[&str] = match input.layout {
            Layout::Nchw | Layout::Nhwc => &["f32", "f16", "u8", "i8"],
            Layout::Features => &["f32"],
            Layout::Tokens => &["i32", "i64"],
        };
        if !dtypes.contains(&input.dtype.as_str()) {
            let known = if DTYPES.contains(&input.dtype.as_str()) {
                ""
            } else {
                " (unknown type)"
            };
            return bad(format!(
                "input.dtype {:?}{known} is not valid for the {} layout; use one of {}",
                input.dtype,
                layout_name(input.layout),
                dtypes.join(", ")
            ));
        }
        Ok(())
    }

    fn validate_preprocess(&self) -> Result<(), BundleError> {
        let bad = |what: String| Err(BundleError::manifest(what));
        let p = &self.preprocess;
        let layout = self.input.layout;
        if layout == Layout::Tokens {
            // Token ids are not scaled, normalized or resized.
            let default = Preprocess::default();
            let field = if p.scale != default.scale {
                "scale"
            } else if !p.mean.is_empty() {
                "mean"
            } else if !p.std.is_empty() {
                "std"
            } else if p.channel_order != default.channel_order {
                "channel_order"
            } else if p.resize.is_some() {
                "resize"
            } else {
                return Ok(());
            };
            return bad(format!(
                "preprocess.{field} must be the identity for the tokens layout"
            ));
        }
        positive("preprocess.scale", p.scale)?;
        if p.mean.len() != p.std.len() {
            return bad(format!(
                "preprocess.mean has {} values but preprocess.std has {}",
                p.mean.len(),
                p.std.len()
            ));
        }
        for (i, m) in p.mean.iter().enumerate() {
            if !m.is_finite() {
                return bad(format!("preprocess.mean[{i}] must be finite (got {m})"));
            }
        }
        for (i, &s) in p.std.iter().enumerate() {
            positive(&format!("preprocess.std[{i}]"), s)?;
        }
        let channels = self.channels();
        if !p.mean.is_empty()
            && let Some(c) = channels.filter(|&c| c != p.mean.len())
        {
            return bad(format!(
                "preprocess.mean and preprocess.std have {} values but the input has {c} channels",
                p.mean.len()
            ));
        }
        if p.channel_order == ChannelOrder::Bgr && !(layout.is_image() && channels == Some(3)) {
            return bad("preprocess.channel_order bgr needs a 3-channel image input".to_string());
        }
        if let Some(size) = p.resize {
            if !layout.is_image() {
                return bad(format!(
                    "preprocess.resize applies only to image layouts, not {}",
                    layout_name(layout)
                ));
            }
            if let Some(i) = size.iter().position(|&d| d == 0) {
                return bad(format!("preprocess.resize[{i}] must not be 0"));
            }
        }
        Ok(())
    }

    fn validate_backbone(&self) -> Result<(), BundleError> {
        let bad = |what: String| Err(BundleError::manifest(what));
        let features = self.input.layout == Layout::Features;
        match (self.backbone.format, features) {
            (BackboneFormat::None, false) => {
                return bad(format!(
                    "backbone.format is none, which needs input.layout features (got {})",
                    layout_name(self.input.layout)
                ));
            }
            (BackboneFormat::NnefTar, true) => {
                return bad(
                    "backbone.format must be none for the features layout (the input is the embedding)"
                        .to_string(),
                );
            }
            _ => {}
        }
        match self.backbone.quantization {
            Quantization::F32 => Ok(()),
            Quantization::Int8 { .. } if self.backbone.format == BackboneFormat::None => {
                bad("backbone.quantization must be f32 when there is no backbone".to_string())
            }
            Quantization::Int8 { cosine_to_f32, .. } => match cosine_to_f32 {
                Some(c) if !(-1.0..=1.0).contains(&c) => bad(format!(
                    "backbone.quantization.cosine_to_f32 must be in [-1, 1] (got {c})"
                )),
                _ => Ok(()),
            },
        }
    }
}

/// The name of a layout as in the JSON.
fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Nchw => "nchw",
        Layout::Nhwc => "nhwc",
        Layout::Features => "features",
        Layout::Tokens => "tokens",
    }
}

/// The section table: (offset, length) of each section.
type Table = [(u64, u64); SECTIONS];

/// Checks the table describes sections in order, contiguous from the header on; returns
/// the total length of the bundle (checksum included).
fn check_table(table: &Table) -> Result<u64, String> {
    let mut at = HEADER_LEN as u64;
    for (&(offset, len), name) in table.iter().zip(SECTION_NAMES) {
        if offset != at {
            return Err(format!(
                "the {name} section starts at byte {offset}, expected {at}"
            ));
        }
        at = at
            .checked_add(len)
            .ok_or_else(|| format!("the {name} section's length {len} is out of range"))?;
    }
    if table[0].1 == 0 {
        return Err("the manifest section is empty".to_string());
    }
    at.checked_add(CRC_LEN as u64)
        .ok_or_else(|| "the sections' lengths are out of range".to_string())
}

/// Checks the CRC trailer of `bytes` (at least [`CRC_LEN`] long).
fn check_crc(bytes: &[u8]) -> Result<(), BundleError> {
    let split = bytes.len().checked_sub(CRC_LEN);
    let (data, trailer) = split
        .and_then(|n| bytes.split_at_checked(n))
        .unwrap_or((bytes, &[]));
    let computed = CRC32.checksum(data);
    match <[u8; CRC_LEN]>::try_from(trailer).map(u32::from_le_bytes) {
        Ok(stored) if stored == computed => Ok(()),
        Ok(stored) => Err(BundleError::Checksum { stored, computed }),
        // No room for a trailer: nothing was stored.
        Err(_) => Err(BundleError::Checksum {
            stored: 0,
            computed,
        }),
    }
}

/// Checks magic, version, table, length and checksum; returns where the three sections
/// are (ranges that lie inside `bytes`).
fn sections(bytes: &[u8]) -> Result<[Range<usize>; SECTIONS], BundleError> {
    let found = bytes.len() as u64;
    let minimum = || BundleError::Truncated {
        needed: (HEADER_LEN + CRC_LEN) as u64,
        found,
    };
    match bytes.get(..MAGIC.len()) {
        Some(magic) if magic != MAGIC => return Err(BundleError::NotABundle),
        None if !MAGIC.starts_with(bytes) => return Err(BundleError::NotABundle),
        None => return Err(minimum()),
        Some(_) => {}
    }
    let version = bytes
        .get(MAGIC.len()..MAGIC.len() + 2)
        .and_then(|v| <[u8; 2]>::try_from(v).ok())
        .map(u16::from_le_bytes)
        .ok_or_else(minimum)?;
    if version != VERSION {
        return Err(BundleError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    let raw = bytes.get(MAGIC.len() + 2..HEADER_LEN).ok_or_else(minimum)?;
    if bytes.len() < HEADER_LEN + CRC_LEN {
        return Err(minimum());
    }
    let mut table: Table = [(0, 0); SECTIONS];
    let (pairs, _) = raw.as_chunks::<16>();
    for (entry, pair) in table.iter_mut().zip(pairs) {
        let (offset, len) = pair.split_at(8);
        let le = |b: &[u8]| <[u8; 8]>::try_from(b).map_or(u64::MAX, u64::from_le_bytes);
        *entry = (le(offset), le(len));
    }
    match (check_table(&table), check_crc(bytes)) {
        (Ok(total), Ok(())) if total == found => {}
        // A valid checksum over a table that lies: a broken writer, not corruption.
        (Ok(total), Ok(())) => {
            return Err(BundleError::layout(format!(
                "the section table describes {total} bytes but the bundle has {found}"
            )));
        }
        (Err(what), Ok(())) => return Err(BundleError::layout(what)),
        (Ok(total), Err(_)) if total > found => {
            return Err(BundleError::Truncated {
                needed: total,
                found,
            });
        }
        (Ok(total), Err(e)) => {
            let end = usize::try_from(total).unwrap_or(usize::MAX);
            return Err(match bytes.get(..end) {
                Some(framed) if check_crc(framed).is_ok() => BundleError::layout(format!(
                    "{} unexpected bytes after the checksum",
                    found.saturating_sub(total)
                )),
                _ => e,
            });
        }
        (Err(_), Err(e)) => return Err(e),
    }
    // The table was checked against the length, so every range lies inside `bytes`.
    let mut out: [Range<usize>; SECTIONS] = Default::default();
    for (section, &(offset, len)) in out.iter_mut().zip(&table) {
        *section = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(start, len)| Some(start..start.checked_add(len)?))
            .filter(|r| bytes.get(r.clone()).is_some())
            .ok_or_else(|| BundleError::layout("a section lies outside the bundle"))?;
    }
    Ok(out)
}

/// Parses the manifest and copies the head out of checked sections.
fn manifest_and_head(
    bytes: &[u8],
    manifest: Range<usize>,
    head: Range<usize>,
) -> Result<(Manifest, Option<Vec<u8>>), BundleError> {
    let manifest = bytes.get(manifest).unwrap_or_default();
    let manifest: Manifest =
        serde_json::from_slice(manifest).map_err(|e| BundleError::manifest(e.to_string()))?;
    let head = bytes.get(head).unwrap_or_default();
    Ok((manifest, (!head.is_empty()).then(|| head.to_vec())))
}

/// A name for the temporary file next to `path` that [`write_atomic`] renames over it.
fn temp_path(path: &Path) -> Result<PathBuf, BundleError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| BundleError::Io {
        action: "cannot write to",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
    })?;
    let mut tmp = file_name.to_os_string();
    tmp.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(tmp))
}

impl Bundle {
    /// A bundle with no backbone and no head whose input is a feature vector of `size`
    /// values, the embedding itself ([`Manifest::features_only`]): for a device whose
    /// front end (a DSP, another model) computes the features. Set [`Bundle::head`] to
    /// add a head.
    pub fn features_only(
        size: usize,
        classes: impl IntoIterator<Item = impl Into<String>>,
        provenance: Provenance,
    ) -> Self {
        Bundle {
            manifest: Manifest::features_only(size, classes, provenance),
            backbone: Vec::new(),
            head: None,
        }
    }

    /// Checks the manifest ([`Manifest::validate`]), that the backbone bytes agree with
    /// the manifest's backbone format, and the head: a complete, valid [`persist`]
    /// encoding whose input size is `embedding.size` and whose class count is the
    /// number of class names.
    pub fn validate(&self) -> Result<(), BundleError> {
        self.manifest.validate()?;
        match (self.manifest.backbone.format, self.backbone.is_empty()) {
            (BackboneFormat::None, false) => {
                return Err(BundleError::manifest(format!(
                    "backbone.format is none but the bundle holds {} backbone bytes",
                    self.backbone.len()
                )));
            }
            (BackboneFormat::NnefTar, true) => {
                return Err(BundleError::manifest(
                    "backbone.format is nnef_tar but the backbone section is empty",
                ));
            }
            _ => {}
        }
        if let Some(head) = &self.head {
            let header = persist::read_header(head)?;
            let mismatch = |what, manifest, head| {
                Err(BundleError::HeadMismatch {
                    what,
                    manifest,
                    head,
                })
            };
            let size = self.manifest.embedding.size;
            if header.dims.input != size {
                return mismatch("embedding.size", size, header.dims.input);
            }
            let classes = self.manifest.classes.len();
            if header.classes != classes {
                return mismatch("classes", classes, header.classes);
            }
            // Length, checksum and every stored value (learner state is checked too).
            persist::decode_head(head)?;
        }
        Ok(())
    }

    /// Encodes the bundle after [`Bundle::validate`]: a bundle that would not read back
    /// is not written.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BundleError> {
        self.validate()?;
        let mut manifest = serde_json::to_vec_pretty(&self.manifest)
            .map_err(|e| BundleError::manifest(format!("cannot encode: {e}")))?;
        manifest.push(b'\n');
        let head = self.head.as_deref().unwrap_or_default();
        let parts: [&[u8]; SECTIONS] = [&manifest, &self.backbone, head];
        let too_large = || BundleError::layout("the bundle is too large");
        let total = parts
            .iter()
            .try_fold(HEADER_LEN + CRC_LEN, |n, p| n.checked_add(p.len()))
            .ok_or_else(too_large)?;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let mut at = HEADER_LEN as u64;
        for part in parts {
            let len = u64::try_from(part.len()).map_err(|_| too_large())?;
            out.extend_from_slice(&at.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            at = at.checked_add(len).ok_or_else(too_large)?;
        }
        for part in parts {
            out.extend_from_slice(part);
        }
        let crc = CRC32.checksum(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), total);
        Ok(out)
    }

    /// Decodes and checks a bundle (see the [module documentation](self)).
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let [manifest, backbone, head] = sections(bytes)?;
        let (manifest, head) = manifest_and_head(bytes, manifest, head)?;
        let bundle = Bundle {
            manifest,
            backbone: bytes.get(backbone).unwrap_or_default().to_vec(),
            head,
        };
        bundle.validate()?;
        Ok(bundle)
    }

    /// [`Bundle::from_bytes`] that keeps the backbone in `bytes`' allocation instead of
    /// copying it: a large backbone is not held twice.
    fn from_vec(mut bytes: Vec<u8>) -> Result<Bundle, BundleError> {
        let [manifest, backbone, head] = sections(&bytes)?;
        let (manifest, head) = manifest_and_head(&bytes, manifest, head)?;
        bytes.truncate(backbone.end);
        bytes.drain(..backbone.start);
        let bundle = Bundle {
            manifest,
            backbone: bytes,
            head,
        };
        bundle.validate()?;
        Ok(bundle)
    }

    /// Reads and checks the bundle at `path`. Errors name the path
    /// ([`BundleError::Io`], or [`BundleError::InFile`] around the reason the contents
    /// were refused).
    pub fn read(path: impl AsRef<Path>) -> Result<Bundle, BundleError> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(io("cannot read", path))?;
        Bundle::from_vec(bytes).map_err(|e| BundleError::InFile {
            path: path.to_path_buf(),
            error: Box::new(e),
        })
    }

    /// Writes the bundle to `path` atomically ([`write_atomic`]): after a crash `path`
    /// holds the old bundle or the new one, never a part.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), BundleError> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }
}

/// Replaces the file at `path` with `bytes` atomically: into a new file next to it
/// (`<path>.tmp-<pid>-<n>`), flushed to disk, renamed over `path`, then the directory
/// flushed too. After a crash `path` holds the old contents or the new ones, never a
/// part; a failed write removes its temporary file and leaves `path` alone. Bundles,
/// reports and anything else a tool must not leave half-written go through here.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let tmp = temp_path(path)?;
    let written = (|| {
        let mut file = File::create(&tmp).map_err(io("cannot create", &tmp))?;
        file.write_all(bytes).map_err(io("cannot write", &tmp))?;
        file.sync_all().map_err(io("cannot flush to disk", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io("cannot rename the new file over", path))
    })();
    if let Err(e) = written {
        // Best effort: the temporary file may not exist, and the error that matters
        // is the one above.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path)
}

/// A `map_err` adapter for I/O errors on `path`.
fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BundleError {
    let path = path.to_path_buf();
    move |source| BundleError::Io {
        action,
        path,
        source,
    }
}

/// Flushes the directory that holds `path`, so that the rename survives a crash.
#[cfg(unix)]
fn sync_dir(path: &Path) -> Result<(), BundleError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot flush to disk the directory", dir))
}

/// Directories cannot be opened for syncing here; the rename is as durable as the
/// platform makes it.
#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> Result<(), BundleError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_scales_reorders_and_normalizes() {
        let p = Preprocess {
            scale: 0.5,
            mean: vec![1.0, 2.0, 3.0],
            std: vec![1.0, 2.0, 4.0],
            channel_order: ChannelOrder::Bgr,
            resize: None,
        };
        // NCHW 1×3×1×2: caller's RGB planes R = [2, 4], G = [6, 8], B = [10, 12].
        let raw = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0];
        let mut out = [0.0; 6];
        p.apply(Layout::Nchw, &[1, 3, 1, 2], &raw, &mut out);
        // Model channel 0 is the caller's B: (5 - 1)/1, (6 - 1)/1; channel 1 G: (3 - 2)/2, (4 - 2)/2;
        // channel 2 R: (1 - 3)/4, (2 - 3)/4.
        assert_eq!(out, [4.0, 5.0, 0.5, 1.0, -0.5, -0.25]);
        // NHWC 1×1×2×3: pixels [R, G, B] = [2, 6, 10] and [4, 8, 12].
        let raw = [2.0, 6.0, 10.0, 4.0, 8.0, 12.0];
        p.apply(Layout::Nhwc, &[1, 1, 2, 3], &raw, &mut out);
        assert_eq!(out, [4.0, 0.5, -0.5, 5.0, 1.0, -0.25]);
        // RGB, no normalization: scaling only.
        let id = Preprocess {
            scale: 2.0,
            ..Preprocess::default()
        };
        id.apply(Layout::Features, &[1, 6], &raw, &mut out);
        assert_eq!(out, [4.0, 12.0, 20.0, 8.0, 16.0, 24.0]);
    }

    #[test]
    fn header_len_matches_the_table() {
        assert_eq!(HEADER_LEN, 58);
    }

    #[test]
    fn table_checks() {
        let h = HEADER_LEN as u64;
        let good: Table = [(h, 10), (h + 10, 0), (h + 10, 5)];
        assert_eq!(check_table(&good), Ok(h + 15 + 4));
        let gap: Table = [(h, 10), (h + 11, 0), (h + 11, 5)];
        assert!(check_table(&gap).unwrap_err().contains("backbone"));
        let overlap: Table = [(h, 10), (h + 9, 1), (h + 10, 5)];
        assert!(check_table(&overlap).unwrap_err().contains("backbone"));
        let overflow: Table = [(h, u64::MAX), (0, 0), (0, 0)];
        assert!(check_table(&overflow).unwrap_err().contains("manifest"));
        let overflow: Table = [(h, 1), (h + 1, 1), (h + 2, u64::MAX - h - 2)];
        assert!(check_table(&overflow).unwrap_err().contains("out of range"));
        let empty: Table = [(h, 0), (h, 0), (h, 0)];
        assert!(check_table(&empty).unwrap_err().contains("empty"));
    }

    #[test]
    fn crc_of_short_input_does_not_panic() {
        assert!(check_crc(&[]).is_err());
        assert!(check_crc(&[1, 2]).is_err());
    }
}
