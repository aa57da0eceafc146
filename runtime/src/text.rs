//! Text into a text encoder's token ids, with the Hugging Face tokenizer a bundle carries
//! ([`TokenizerSpec`], written by `finetune-head convert --tokenizer`). Host and device
//! run the same code (the `tokenizers` crate, pure-Rust regexes), so a sentence gets the
//! same ids in training and on the device.
//!
//! The file's own padding is dropped (the backbone pads to the sequence length and builds
//! the attention mask) and its truncation replaced by the model's sequence length, special
//! tokens included; [`Tokens::truncated`] says when a text lost its end.
//!
//! ```no_run
//! use edgetune::bundle::Bundle;
//! use edgetune::text::TextTokenizer;
//!
//! let bundle = Bundle::read("minilm.bundle")?;
//! let tokenizer = TextTokenizer::from_manifest(&bundle.manifest)?;
//! let tokens = tokenizer.encode("turn off the kitchen lights")?;
//! assert!(!tokens.truncated);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::str::FromStr;

use tokenizers::{Tokenizer, TruncationParams};

use crate::bundle::{Layout, Manifest, TokenizerSpec};

/// Why text could not become token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextError {
    /// The bundle's input is not token ids.
    NotText(Layout),
    /// A text-encoder bundle converted without `--tokenizer`.
    NoTokenizer,
    /// The tokenizer file does not parse, or does not fit the model.
    Tokenizer(String),
    /// The text is empty (or only white space).
    Empty,
    /// The tokenizer failed on this text.
    Encode(String),
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextError::NotText(layout) => write!(
                f,
                "this bundle's input is {} values, not text (text needs a text-encoder bundle)",
                layout.name()
            ),
            TextError::NoTokenizer => f.write_str(
                "this text-encoder bundle has no tokenizer: convert it with \
                 `finetune-head convert --tokenizer tokenizer.json`, or send token ids",
            ),
            TextError::Tokenizer(why) => write!(f, "tokenizer: {why}"),
            TextError::Empty => f.write_str("the text is empty"),
            TextError::Encode(why) => write!(f, "tokenizing the text failed: {why}"),
        }
    }
}

impl std::error::Error for TextError {}

/// Token ids of one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The ids, special tokens included, no padding; at most the sequence length.
    pub ids: Vec<i64>,
    /// True when the text had more tokens than the sequence length and was cut.
    pub truncated: bool,
}

/// Checks a post-processor (as `tokenizers` reads it, serialized back) for what the
/// crate's builder checks but its reader does not: `tokenizers` 0.22.2 reads a
/// `TemplateProcessing` whose template names a special token it does not define, or
/// whose single-sequence template takes the second sequence, and then panics when it
/// encodes (the first found by the tokenizer fuzz target:
/// `fuzz/corpus/tokenizer/template-undefined-special`). A special token must also have
/// as many ids as tokens. `Sequence` processors are checked inside.
fn check_post_processor(p: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    match p.get("type").and_then(Value::as_str) {
        Some("Sequence") => {
            let inner = p.get("processors").and_then(Value::as_array);
            inner
                .into_iter()
                .flatten()
                .try_for_each(check_post_processor)
        }
        Some("TemplateProcessing") => {
            let defined = p.get("special_tokens").and_then(Value::as_object);
            for (name, token) in defined.into_iter().flatten() {
                let len = |field| token.get(field).and_then(Value::as_array).map(Vec::len);
                if len("ids") != len("tokens") {
                    return Err(format!(
                        "its post-processor's special token {name:?} has not as many ids as tokens"
                    ));
                }
            }
            for template in ["single", "pair"] {
                let pieces = p.get(template).and_then(Value::as_array);
                for piece in pieces.into_iter().flatten() {
                    let id = |kind| piece.get(kind)?.get("id")?.as_str();
                    if let Some(id) = id("SpecialToken")
                        && !defined.is_some_and(|d| d.contains_key(id))
                    {
                        return Err(format!(
                            "its {template} template names the special token {id:?}, \
                             which its post-processor does not define"
                        ));
                    }
                    if template == "single" && id("Sequence").is_some_and(|id| id != "A") {
                        return Err(
                            "its single template takes a second sequence, which one text \
                             does not have"
                                .into(),
                        );
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A tokenizer set up for one model's sequence length.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
}

impl TextTokenizer {
    /// Reads a `tokenizer.json` text, for sequences of at most `max_length` tokens.
    pub fn from_json(json: &str, max_length: usize) -> Result<Self, TextError> {
        // The JSON is read whole first, numbers and strings included: `tokenizers` 0.22.2
        // panics (`expect("Helper")` in its decoders' deserializer) instead of failing
        // when the "decoder" field does not read, such as a control character in one of
        // its strings or a number beyond f64 in it (both found by fuzzing:
        // fuzz/corpus/tokenizer/decoder-control-character, decoder-number-out-of-range).
        serde_json::from_str::<serde_json::Value>(json).map_err(|e| {
            TextError::Tokenizer(format!("not a Hugging Face tokenizer.json file: {e}"))
        })?;
        let mut inner = Tokenizer::from_str(json).map_err(|e| {
            TextError::Tokenizer(format!("not a Hugging Face tokenizer.json file: {e}"))
        })?;
        if let Some(post) = inner.get_post_processor() {
            let post = serde_json::to_value(post).map_err(|e| {
                TextError::Tokenizer(format!("its post-processor cannot be read back: {e}"))
            })?;
            check_post_processor(&post).map_err(TextError::Tokenizer)?;
        }
        inner.with_padding(None);
        let trunc = TruncationParams {
            max_length,
            ..Default::default()
        };
        inner
            .with_truncation(Some(trunc))
            .map_err(|e| TextError::Tokenizer(format!("truncation to {max_length}: {e}")))?;
        Ok(TextTokenizer { inner, max_length })
    }

    /// The tokenizer a text-encoder bundle carries.
    pub fn from_manifest(manifest: &Manifest) -> Result<Self, TextError> {
        if manifest.input.layout != Layout::Tokens {
            return Err(TextError::NotText(manifest.input.layout));
        }
        let spec = manifest
            .text
            .as_ref()
            .and_then(|t| t.tokenizer.as_ref())
            .ok_or(TextError::NoTokenizer)?;
        TextTokenizer::from_json(&spec.json, spec.max_length)
    }

    /// Checks a `tokenizer.json` text against a model whose embedding table has `rows`
    /// rows (when known) and whose sequence length is `max_length`, and describes it for
    /// the manifest.
    pub fn spec(
        json: &str,
        rows: Option<usize>,
        max_length: usize,
        sha256: String,
    ) -> Result<TokenizerSpec, TextError> {
        let t = TextTokenizer::from_json(json, max_length)?;
        let vocab_size = t.vocab_size();
        if vocab_size == 0 {
            return Err(TextError::Tokenizer("its vocabulary is empty".into()));
        }
        if let Some(rows) = rows.filter(|&r| vocab_size > r) {
            return Err(TextError::Tokenizer(format!(
                "it produces ids up to {} but the model's embedding table has {rows} rows: \
                 this tokenizer is not the model's",
                vocab_size - 1
            )));
        }
        let specials = t
            .inner
            .encode("", true)
            .map_err(|e| TextError::Tokenizer(format!("it cannot encode an empty text: {e}")))?;
        let added = specials.get_ids().len();
        if added >= max_length {
            return Err(TextError::Tokenizer(format!(
                "it adds {added} special tokens, which leaves no room in the model's \
                 {max_length} tokens"
            )));
        }
        let mut special_tokens: Vec<(u32, String)> = t
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, tok)| tok.special)
            .map(|(id, tok)| (id, tok.content))
            .collect();
        special_tokens.sort();
        Ok(TokenizerSpec {
            json: json.to_string(),
            sha256,
            vocab_size,
            max_length,
            special_tokens: special_tokens.into_iter().map(|(_, s)| s).collect(),
        })
    }

    /// Ids the tokenizer can produce: its highest id + 1.
    pub fn vocab_size(&self) -> usize {
        self.inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1)
    }

    /// The longest sequence it produces.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id of the padding token (`[PAD]`, `<pad>`), if the vocabulary has one.
    pub fn pad_id(&self) -> Option<i64> {
        ["[PAD]", "<pad>"]
            .iter()
            .find_map(|t| self.inner.token_to_id(t))
            .map(i64::from)
    }

    /// The ids of `text` as the reference library gives them (special tokens added,
    /// truncated to the sequence length), an empty text included.
    pub fn tokenize(&self, text: &str) -> Result<Tokens, TextError> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| TextError::Encode(e.to_string()))?;
        Ok(Tokens {
            ids: enc.get_ids().iter().map(|&i| i64::from(i)).collect(),
            truncated: !enc.get_overflowing().is_empty(),
        })
    }

    /// The ids of `text` for the model; an empty (or all-white-space) text is an error.
    pub fn encode(&self, text: &str) -> Result<Tokens, TextError> {
        if text.trim().is_empty() {
            return Err(TextError::Empty);
        }
        self.tokenize(text)
    }
}
