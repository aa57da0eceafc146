//! `convert --tokenizer tokenizer.json`: the Hugging Face tokenizer goes into a text
//! bundle's manifest ([`edgetune::bundle::TokenizerSpec`]) after it is checked against the
//! model: its ids must fit the model's embedding table (the `Gather` that reads the token
//! ids), and its special tokens must leave room in the sequence length. The tokenizer's
//! `[PAD]` becomes the bundle's padding id.

use std::path::Path;

use anyhow::{Context, Result, bail};
use edgetune::bundle::TokenizerSpec;
use edgetune::text::TextTokenizer;
use tract_onnx::pb::ModelProto;

use super::input::Input;
use super::manifest::sha256_hex;

/// The checked tokenizer at `path` for the model, and the padding id it implies (the
/// tokenizer's `[PAD]`, else `pad_id`).
pub(super) fn tokenizer(
    path: &Path,
    proto: &ModelProto,
    input: &Input,
    pad_id: i64,
) -> Result<(TokenizerSpec, i64)> {
    let Some(text) = &input.text else {
        bail!(
            "--tokenizer is for text encoders (inputs input_ids, attention_mask…); this \
             model takes {} values",
            input.layout.name()
        );
    };
    let json = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the tokenizer {}", path.display()))?;
    let rows = embedding_rows(proto, &input.name);
    let spec = TextTokenizer::spec(&json, rows, text.seq, sha256_hex(json.as_bytes()))
        .with_context(|| format!("--tokenizer {}", path.display()))?;
    let tok = TextTokenizer::from_json(&spec.json, spec.max_length)?;
    let pad = match tok.pad_id() {
        Some(p) if pad_id != 0 && p != pad_id => bail!(
            "--pad-id {pad_id} but the tokenizer {} pads with id {p}",
            path.display()
        ),
        Some(p) => p,
        None => pad_id,
    };
    Ok((spec, pad))
}

/// Rows of the embedding table that the token ids index: the first input of a `Gather`
/// whose indices are `ids` (directly or through a `Cast`), when it is an initializer.
fn embedding_rows(proto: &ModelProto, ids: &str) -> Option<usize> {
    let graph = proto.graph.as_ref()?;
    let mut names = vec![ids.to_string()];
    for node in &graph.node {
        if node.op_type == "Cast" && node.input.first().is_some_and(|i| names.contains(i)) {
            names.extend(node.output.iter().cloned());
        }
    }
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "Gather" && n.input.get(1).is_some_and(|i| names.contains(i)))
        .find_map(|n| {
            let table = n.input.first()?;
            let init = graph.initializer.iter().find(|t| &t.name == table)?;
            usize::try_from(*init.dims.first()?).ok()
        })
}
