//! The bundle's manifest: the input, preprocessing, pooling, embedding, backbone and
//! provenance of a conversion, and the head seeded from the model's own classifier
//! (`keep_head`).

use std::path::Path;

use anyhow::{Result, bail, ensure};
use edgetune::bundle::{
    BackboneFormat, BackboneSpec, EmbeddingSpec, InputSpec, Manifest, Pooling, Preprocess,
    Provenance, Quantization, TextInputs,
};
use edgetune::{Dims, Head, persist};

use super::Options;
use super::input::{Input, Role};
use crate::detect::Classifier;

/// The class names, and the head encoded from the model's classifier when `keep_head`
/// asks for it (its weights and biases copied into a linear head of `--capacity`).
pub(super) fn keep_head(
    opts: &Options,
    classifier: Option<&Classifier>,
    tensor: &str,
    size: usize,
) -> Result<(Vec<String>, Option<Vec<u8>>)> {
    let classes = classifier.map_or(0, |c| c.classes);
    let class_names = match &opts.class_names {
        Some(names) => names.clone(),
        None if opts.keep_head => (0..classes).map(|c| format!("class{c}")).collect(),
        None => Vec::new(),
    };
    let head = match (classifier, opts.keep_head) {
        (Some(c), true) => {
            ensure!(
                class_names.len() == c.classes,
                "{} class names for a classifier of {} classes",
                class_names.len(),
                c.classes
            );
            ensure!(
                c.dim == size,
                "the classifier reads {} values but the embedding has {size}",
                c.dim
            );
            let capacity = opts.capacity.unwrap_or(c.classes + 8);
            ensure!(
                capacity >= c.classes,
                "--capacity {capacity} is below the classifier's {} classes",
                c.classes
            );
            let dims = Dims::linear(size, capacity);
            let mut head = Head::alloc(dims, c.classes)?;
            let p = head.params_mut();
            p[..c.weight.len()].copy_from_slice(&c.weight);
            p[capacity * size..capacity * size + c.classes].copy_from_slice(&c.bias);
            Some(persist::encode_to_vec(
                &head,
                None::<&edgetune::Learner<Vec<f32>>>,
            )?)
        }
        (None, true) => bail!("--keep-head: the model has no classifier at {tensor:?} to keep"),
        (_, false) => None,
    };
    Ok((class_names, head))
}

/// What the manifest records of the embedding and the backbone.
pub(super) struct Cut {
    /// The tensor the graph was cut at.
    pub tensor: String,
    /// Its size.
    pub size: usize,
    /// How a sequence output becomes one vector.
    pub pooling: Option<Pooling>,
    /// The backbone's quantization.
    pub quantization: Quantization,
}

/// The manifest of the model at `path` (whose bytes are `bytes`), converted with `opts`.
pub(super) fn manifest(
    path: &Path,
    bytes: &[u8],
    opts: &Options,
    input: &Input,
    cut: Cut,
    classes: Vec<String>,
) -> Manifest {
    let mut provenance = Provenance::new(
        path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        concat!("finetune-head ", env!("CARGO_PKG_VERSION")),
    );
    provenance.source_sha256 = Some(sha256_hex(bytes));
    let text = input.text.as_ref();
    Manifest {
        format_version: edgetune::bundle::VERSION,
        input: InputSpec {
            name: input.name.clone(),
            shape: input.shape.clone(),
            layout: input.layout,
            dtype: input.dtype(),
        },
        preprocess: match text {
            Some(_) => Preprocess::default(),
            None => opts.preprocess.clone(),
        },
        pooling: cut.pooling,
        exemplars: None,
        embedding_stats: None,
        hidden_stats: None,
        text: text.map(|t| TextInputs {
            attention_mask: t.name(Role::Mask),
            token_type_ids: t.name(Role::TypeIds),
            pad_id: opts.pad_id,
            tokenizer: None,
        }),
        embedding: EmbeddingSpec {
            tensor: cut.tensor,
            size: cut.size,
        },
        backbone: BackboneSpec {
            format: BackboneFormat::NnefTar,
            quantization: cut.quantization,
        },
        classes,
        provenance,
    }
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
