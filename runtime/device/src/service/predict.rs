//! The prediction flow of the service: a request's input (a file, base64 bytes, a tensor
//! or token ids) through the backbone to an embedding, the engine's prediction of it
//! ([`crate::engine::Engine::observe`]), and the answer with the time each stage took.

use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use serde_json::{Value, json};

use super::{Request, Service, ms};
use crate::engine::Observation;

impl Service {
    /// Predicts the input of `req` (one of `input`, `data`, `bytes`, `tensor`, `tokens`,
    /// `text`).
    pub(super) fn predict(&mut self, req: &Request, t0: Instant) -> anyhow::Result<Value> {
        let t_in = Instant::now();
        let mut emb = std::mem::take(&mut self.emb);
        let mut truncated = None;
        let embedded = self.embed_request(req, &mut emb, &mut truncated);
        let input_time = t_in.elapsed();
        let result = embedded.and_then(|backbone| {
            let t = Instant::now();
            let obs = self.engine.observe(&emb).map_err(anyhow::Error::from)?;
            Ok((backbone, t.elapsed(), obs))
        });
        self.emb = emb;
        let (backbone, head, obs) = result?;
        let total = t0.elapsed();
        self.record(total);
        let mut answer = self.prediction_json(
            &obs,
            input_time.saturating_sub(backbone),
            backbone,
            head,
            total,
        );
        if let Some(note) = truncated {
            answer["truncated"] = json!(note);
        }
        Ok(answer)
    }

    /// The embedding of the request's input into `emb`; the time the backbone took. A
    /// text cut to the sequence length leaves a note in `truncated`.
    fn embed_request(
        &self,
        req: &Request,
        emb: &mut [f32],
        truncated: &mut Option<String>,
    ) -> anyhow::Result<Duration> {
        if let Some(text) = &req.text {
            // Tokenizing counts as the input's time, the rest as the backbone's.
            let (ids, cut) = self.model.tokenize(text)?;
            let t = Instant::now();
            self.model.embed_tokens(&ids, emb)?;
            if cut {
                *truncated = Some(format!(
                    "the text was cut to its first {} tokens, the model's sequence length",
                    ids.len()
                ));
            }
            return Ok(t.elapsed());
        }
        if let Some(ids) = &req.tokens {
            let t = Instant::now();
            self.model.embed_tokens(ids, emb)?;
            return Ok(t.elapsed());
        }
        let raw = if let Some(path) = &req.input {
            self.model.read_input(path)?
        } else if let Some(b64) = &req.data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .context("\"data\" is not valid base64")?;
            self.model.raw_input(&bytes)?
        } else if let Some(bytes) = &req.bytes {
            self.model.raw_input(bytes)?
        } else {
            let values: Vec<f32> = req.tensor.iter().flatten().map(|&v| v as f32).collect();
            self.model.check_raw(&values)?;
            values
        };
        let t = Instant::now();
        self.model.embed(&raw, emb)?;
        Ok(t.elapsed())
    }

    fn prediction_json(
        &self,
        obs: &Observation,
        input: Duration,
        backbone: Duration,
        head: Duration,
        total: Duration,
    ) -> Value {
        let top: Vec<Value> = obs
            .top
            .iter()
            .map(|&(c, p)| json!({ "class": self.names[c], "p": p }))
            .collect();
        json!({
            "sample": obs.sample,
            "class": obs.prediction.map(|p| self.names[p.class].clone()),
            "confidence": obs.prediction.map(|p| p.confidence),
            "top": top,
            "uncertainty": obs.prediction.map_or(1.0, |p| 1.0 - p.margin),
            "uncertain": obs.uncertain,
            "novelty": obs.novelty,
            "ms": {
                "input": ms(input), "backbone": ms(backbone), "head": ms(head), "total": ms(total)
            },
        })
    }
}
