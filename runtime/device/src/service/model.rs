//! The model side of a bundle as the service uses it: the manifest, the backbone (tract,
//! or ONNX Runtime with `--onnx`), the head to start from and the embedding statistics.
//! Turning a request's bytes into the backbone's input is [`super::input`].

use std::path::Path;

use anyhow::{Context, bail};

use super::{DEFAULT_CAPACITY, Options};
use crate::engine::Engine;
use crate::state;
use edgetune::backbone::Backbone;
use edgetune::bundle::{BackboneFormat, Bundle, Layout, Manifest};
use edgetune::head::{Dims, Head};
use edgetune::persist;
use edgetune::stats::Stats;
#[cfg(feature = "text")]
use edgetune::text::{TextError, TextTokenizer};

/// The model side of a bundle: its manifest, backbone and head.
pub struct Model {
    /// The manifest.
    pub manifest: Manifest,
    backbone: Option<Backbone>,
    /// The bundle's head (or an empty one when it has none).
    pub head: Head<Vec<f32>>,
    /// [`state::backbone_id`] of the bundle.
    pub id: u32,
    /// The bundle's statistics of its head's features, decoded
    /// ([`edgetune::stats::for_head`]).
    pub stats: Option<Stats>,
    /// The tokenizer of a text-encoder bundle converted with one.
    #[cfg(feature = "text")]
    tokenizer: Option<TextTokenizer>,
    pub(super) input_len: usize,
    pub(super) max_input_bytes: u64,
}

impl Model {
    /// Reads a bundle and loads its backbone as `opts` say (threads, or ONNX Runtime).
    pub fn open(path: &Path, opts: &Options) -> anyhow::Result<Model> {
        let bundle = if opts.trusted.is_empty() {
            log::info!(
                "not verifying the signature of bundle {} nor of fleet states (no --trust key given)",
                path.display()
            );
            Bundle::read(path)
        } else {
            Bundle::read_trusted(path, &opts.trusted).map(|(bundle, signer)| {
                log::info!(
                    "bundle {} is signed by trusted key {signer}",
                    path.display()
                );
                bundle
            })
        }
        .with_context(|| format!("bundle {}", path.display()))?;
        let manifest = bundle.manifest.clone();
        let embedding = manifest.embedding.size;
        let head = match &bundle.head {
            Some(bytes) => persist::decode_head(bytes).context("the bundle's head")?,
            None => Head::alloc(Dims::linear(embedding, DEFAULT_CAPACITY), 0)
                .context("an empty head for the bundle")?,
        };
        let stats = edgetune::stats::for_head(&manifest, head.dims(), head.classes())?;
        let backbone = load_backbone(&bundle, opts)?;
        let has_tokenizer = manifest
            .text
            .as_ref()
            .is_some_and(|t| t.tokenizer.is_some());
        #[cfg(feature = "text")]
        let tokenizer = if has_tokenizer {
            Some(TextTokenizer::from_manifest(&manifest).context("the bundle's tokenizer")?)
        } else {
            None
        };
        #[cfg(not(feature = "text"))]
        if has_tokenizer {
            log::warn!("{NO_TEXT}: requests with \"text\" are refused");
        }
        let input_len = manifest.input.shape.iter().product();
        Ok(Model {
            id: state::backbone_id(&bundle),
            stats,
            manifest,
            backbone,
            head,
            #[cfg(feature = "text")]
            tokenizer,
            input_len,
            max_input_bytes: opts
                .max_input_bytes
                .unwrap_or_else(|| Model::default_input_limit(input_len)),
        })
    }

    /// Gives a fresh engine the bundle's statistics of its head's features and its
    /// exemplars, if it has any.
    pub fn seed(&self, engine: &mut Engine) -> anyhow::Result<()> {
        if let Some(stats) = &self.stats {
            engine
                .set_stats(stats)
                .context("the bundle's statistics of its head's features")?;
        }
        let Some(e) = &self.manifest.exemplars else {
            return Ok(());
        };
        let x = e.embeddings(self.manifest.embedding.size, self.head.classes())?;
        engine
            .seed(&x, &e.replay, &e.guard)
            .context("the bundle's exemplars")?;
        Ok(())
    }

    /// The embedding of a raw input into `out`.
    pub fn embed(&self, raw: &[f32], out: &mut [f32]) -> anyhow::Result<()> {
        self.check_raw(raw)?;
        if let Some(b) = &self.backbone {
            b.embed(raw, out).context("the backbone")?;
            return Ok(());
        }
        if raw.len() != out.len() {
            bail!(
                "the features have {} values, the head takes {}",
                raw.len(),
                out.len()
            );
        }
        out.copy_from_slice(raw);
        Ok(())
    }

    /// The embedding of a text encoder's token ids.
    pub fn embed_tokens(&self, ids: &[i64], out: &mut [f32]) -> anyhow::Result<()> {
        if let Some(b) = &self.backbone
            && self.manifest.input.layout == Layout::Tokens
        {
            b.embed_tokens(ids, out).context("the backbone")?;
            return Ok(());
        }
        let _ = (ids, out);
        bail!(
            "\"tokens\" is for text-encoder bundles; this model's input is {:?}",
            self.manifest.input.layout
        )
    }

    /// The ids of `text` by the bundle's tokenizer, for [`Model::embed_tokens`], and
    /// whether they were cut to the sequence length.
    #[cfg(feature = "text")]
    pub fn tokenize(&self, text: &str) -> anyhow::Result<(Vec<i64>, bool)> {
        let tokenizer = match &self.tokenizer {
            Some(t) => t,
            None if self.manifest.input.layout == Layout::Tokens => {
                return Err(TextError::NoTokenizer.into());
            }
            None => return Err(TextError::NotText(self.manifest.input.layout).into()),
        };
        let tokens = tokenizer.encode(text)?;
        Ok((tokens.ids, tokens.truncated))
    }

    /// Without the `text` feature: refused, naming the feature.
    #[cfg(not(feature = "text"))]
    pub fn tokenize(&self, _text: &str) -> anyhow::Result<(Vec<i64>, bool)> {
        bail!("{NO_TEXT}: send token ids ({{\"tokens\": [...]}}) instead")
    }
}

/// Why a device program built without the `text` feature (the tokenizer: 1.77 MB of
/// the aarch64 release-small binary) does not take text.
#[cfg(not(feature = "text"))]
const NO_TEXT: &str = "this edgetune was built without text support \
    (`cargo build -p edgetune-device --features text`)";

/// The bundle's backbone as `opts` say: ONNX Runtime on the ONNX model given with
/// `--onnx`, else the bundle's tract graph on `opts.threads` threads; `None` for a bundle
/// that takes embeddings.
fn load_backbone(bundle: &Bundle, opts: &Options) -> anyhow::Result<Option<Backbone>> {
    let manifest = &bundle.manifest;
    // Without either feature the backbone has nothing to choose.
    #[cfg(not(any(feature = "ort", feature = "threads")))]
    let _ = opts;
    #[cfg(feature = "ort")]
    if let Some((onnx, ort)) = &opts.onnx {
        if manifest.backbone.format == BackboneFormat::None {
            bail!("--onnx is for bundles with a backbone; this one takes embeddings");
        }
        let bytes = std::fs::read(onnx).with_context(|| format!("{}", onnx.display()))?;
        let b = Backbone::from_onnx_with(&bytes, manifest, ort).with_context(|| {
            format!(
                "ONNX Runtime ({:?}) on {} cut at the bundle's embedding",
                ort.provider,
                onnx.display()
            )
        })?;
        return Ok(Some(b));
    }
    Ok(match manifest.backbone.format {
        BackboneFormat::None => None,
        BackboneFormat::NnefTar => {
            let b = Backbone::from_bundle(bundle).context("the bundle's backbone")?;
            #[cfg(feature = "threads")]
            let b = b.with_threads(opts.threads).context("backbone threads")?;
            Some(b)
        }
    })
}
