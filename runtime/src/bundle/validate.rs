//! The manifest's checks ([`Manifest::validate`]): every field, and how they fit
//! together; the error names the first field found wrong.

use super::manifest::*;
use std::collections::HashMap;

use super::{BundleError, VERSION};

/// Element types an input may have.
const DTYPES: [&str; 6] = ["f32", "f16", "u8", "i8", "i32", "i64"];

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
    /// Checks every field and how they fit together. The error names the first field
    /// found wrong, e.g. `manifest: preprocess.std[1] must be positive and finite (got
    /// -1)`. [`Bundle::to_bytes`](super::Bundle::to_bytes) and
    /// [`Bundle::from_bytes`](super::Bundle::from_bytes) call this.
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
            if let Some(tok) = &t.tokenizer {
                let seq = self.input.shape.get(1).copied().unwrap_or(0);
                if tok.max_length != seq {
                    return bad(format!(
                        "text.tokenizer.max_length is {} but the input's sequence length is {seq}",
                        tok.max_length
                    ));
                }
                if tok.vocab_size == 0 || tok.json.is_empty() {
                    return bad("text.tokenizer has no vocabulary or no file".to_string());
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
                input.layout.name()
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
                input.layout.name(),
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
                    layout.name()
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
                    self.input.layout.name()
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
