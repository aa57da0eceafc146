//! One request line, parsed and checked: it asks exactly one thing (the protocol is in
//! the [`super`] module docs).

use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;
use serde_json::{Value, json};

/// One request line, parsed (see the module docs).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Request {
    /// Echoed in the answer.
    pub id: Option<Value>,
    /// A file to predict.
    pub input: Option<PathBuf>,
    /// Base64 bytes to predict.
    pub data: Option<String>,
    /// Values to predict.
    pub tensor: Option<Vec<f64>>,
    /// Token ids to predict.
    pub tokens: Option<Vec<i64>>,
    /// Text to predict (a text-encoder bundle with a tokenizer).
    pub text: Option<String>,
    /// A class name (or index) for a sample.
    pub label: Option<Value>,
    /// The sample a label is for.
    pub sample: Option<u64>,
    /// Ask for the status.
    pub status: Option<bool>,
    /// Write the state now.
    pub flush: Option<bool>,
}

impl Request {
    /// Parses a request line; the error is the answer to a line that is no request.
    pub(super) fn parse(line: &str) -> Result<Request, Value> {
        serde_json::from_str(line).map_err(|e| {
            let what = if e.is_data() {
                "invalid request"
            } else {
                "malformed JSON"
            };
            json!({ "error": format!("{what}: {e}") })
        })
    }

    /// Checks that the request asks exactly one thing, and that a `"sample"` goes with a
    /// `"label"`.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        let inputs = [
            self.input.is_some(),
            self.data.is_some(),
            self.tensor.is_some(),
            self.tokens.is_some(),
            self.text.is_some(),
        ]
        .iter()
        .filter(|&&b| b)
        .count();
        let asks = inputs
            + usize::from(self.label.is_some())
            + usize::from(self.status == Some(true))
            + usize::from(self.flush == Some(true));
        if asks != 1 {
            bail!(
                "a request has exactly one of \"input\", \"data\", \"tensor\", \"tokens\", \"text\", \"label\", \"status\", \"flush\" (this one has {asks})"
            );
        }
        if self.sample.is_some() && self.label.is_none() {
            bail!("\"sample\" goes with \"label\"");
        }
        Ok(())
    }
}
