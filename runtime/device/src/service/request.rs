//! One request line, parsed and checked: it asks exactly one thing (the protocol is in
//! the [`super`] module docs).
//!
//! The fuzz crate compiles this file on its own (`fuzz/src/lib.rs`, without tract): it
//! uses nothing else of this crate.

use std::path::PathBuf;

use anyhow::bail;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// One request line, parsed (see the module docs). Serializing gives its normal form,
/// which parses back to the same request (serde_json's `float_roundtrip`: every number,
/// an `id` as much as a `tensor` value, reads back exactly); the `request` fuzz target
/// checks it.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Request {
    /// Echoed in the answer.
    pub id: Option<Value>,
    /// A file to predict.
    pub input: Option<PathBuf>,
    /// Base64 bytes to predict.
    pub data: Option<String>,
    /// Bytes to predict, as `data` holds them once decoded: an upload (`edgetune serve
    /// --http`), never a request line.
    #[serde(skip)]
    pub bytes: Option<Vec<u8>>,
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
    /// Answer the statistics of the device's own labels as a fleet state.
    pub export: Option<bool>,
    /// Merge a fleet state (base64), or a list of them, as the other devices' labels.
    pub merge: Option<Value>,
    /// Roll back: `true` to the state before the newest, a number to that state.
    pub rollback: Option<Value>,
}

impl Request {
    /// Parses a request line; the error is the answer to a line that is no request.
    pub fn parse(line: &str) -> Result<Request, Value> {
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
    pub fn check(&self) -> anyhow::Result<()> {
        let inputs = [
            self.input.is_some(),
            self.data.is_some(),
            self.bytes.is_some(),
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
            + usize::from(self.flush == Some(true))
            + usize::from(self.export == Some(true))
            + usize::from(self.merge.is_some())
            + usize::from(self.rollback.is_some());
        if asks != 1 {
            bail!(
                "a request has exactly one of \"input\", \"data\", \"tensor\", \"tokens\", \"text\", \"label\", \"status\", \"flush\", \"export\", \"merge\", \"rollback\" (this one has {asks})"
            );
        }
        if self.sample.is_some() && self.label.is_none() {
            bail!("\"sample\" goes with \"label\"");
        }
        Ok(())
    }

    /// The state a `"rollback"` goes back to: `None` for the one before the newest.
    pub(super) fn rollback_to(&self) -> anyhow::Result<Option<u64>> {
        match &self.rollback {
            Some(Value::Bool(true)) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            _ => bail!(
                "\"rollback\" is true (back to the state before the newest) or a state number"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `request` fuzz target: a 60-digit `id` was read as a float whose own
    /// text read back as another float (so the echoed id changed); and `2e-60` as
    /// `2.0000000000000002e-60`. Numbers now read back from their normal form exactly.
    #[test]
    fn a_request_reads_back_from_its_normal_form_exactly() {
        for line in [
            r#"{"id": 444444444444444444444444444444444444444444444444444444444444, "status": true}"#,
            r#"[444444444444444444444444444444444444444444444444444444444444]"#,
            r#"{"tensor": [2e-60, 0.1, 3.4028235e38]}"#,
        ] {
            let request = Request::parse(line).unwrap();
            let normal = serde_json::to_string(&request).unwrap();
            assert_eq!(
                Request::parse(&normal).unwrap(),
                request,
                "{line} -> {normal}"
            );
        }
    }
}
