//! The labeling flow of the device: a label (from a request, or a button press) names a
//! class for a recent sample; a name the head does not know adds a class. The engine
//! learns it ([`crate::engine::Engine::label`], where the regression guard may refuse
//! it), the state is written when due (see the module docs of [`super`]), and the answer
//! says what happened and how long each stage took.

use std::time::Instant;

use anyhow::bail;
use serde_json::{Map, Value, json};

use super::{MAX_NAME, Service, ms};
use crate::engine::{EngineError, Outcome};

impl Service {
    /// The class name a request's `"label"` gives: a name, or the index of a class the
    /// head has.
    pub(super) fn label_name(&self, label: &Value) -> anyhow::Result<String> {
        Ok(match label {
            Value::String(s) => s.clone(),
            Value::Number(n) => {
                let i = n.as_u64().filter(|&i| (i as usize) < self.names.len()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "class index {n} is not one of the head's {} classes (use a name to add a class)",
                        self.names.len()
                    )
                })?;
                self.names[i as usize].clone()
            }
            _ => bail!("\"label\" is a class name (or a class index)"),
        })
    }

    /// Learns that `sample` (the most recent when `None`) is of class `name`.
    pub fn label(&mut self, name: &str, sample: Option<u64>, t0: Instant) -> anyhow::Result<Value> {
        let known = self.names.iter().position(|n| n == name);
        if known.is_none() {
            check_name(name)?;
        }
        let class = known.unwrap_or(self.names.len());
        let t = Instant::now();
        let outcome = self.learn(name, sample, class)?;
        let learn = t.elapsed();
        let sample = sample.or(self.engine.last_sample());
        if known.is_none() && matches!(outcome, Outcome::Learned { .. }) {
            self.names.push(name.to_string());
            log::info!("new class {name:?} (class {class})");
        }
        self.dirty = true;
        let t = Instant::now();
        let (persisted, persist_error) = self.persist_label();
        let persist = t.elapsed();
        let total = t0.elapsed();
        self.record(total);
        let added = matches!(outcome, Outcome::Learned { learned, .. } if learned.added);
        let mut answer = json!({
            "sample": sample,
            "added": added,
            "label": name,
            "class_index": class,
            "persisted": persisted,
            "persist_error": persist_error,
            "ms": { "learn": ms(learn), "persist": ms(persist), "total": ms(total) },
        });
        if let Some(o) = answer.as_object_mut() {
            self.describe_outcome(outcome, o);
        }
        Ok(answer)
    }

    /// The engine learns `class` (called `name`) for `sample`; a full head is named as
    /// such.
    fn learn(&mut self, name: &str, sample: Option<u64>, class: usize) -> anyhow::Result<Outcome> {
        self.engine.label(sample, class).map_err(|e| match e {
            EngineError::Head(edgetune::Error::Capacity { capacity, .. }) => anyhow::anyhow!(
                "cannot add class {name:?}: the head holds at most {capacity} classes, all taken"
            ),
            e => anyhow::Error::from(e),
        })
    }

    /// Writes the state after a label, at once (`persist_interval` 0) or when due: the
    /// sequence number written, or why the write failed. The label is learned whether or
    /// not the write succeeds: a failed write is reported and tried again with the next
    /// label or flush.
    fn persist_label(&mut self) -> (Option<u64>, Option<String>) {
        let written = if self.opts.persist_interval.is_zero() {
            self.flush()
        } else {
            self.flush_if_due()
        };
        match written {
            Ok(seq) => (seq, None),
            Err(e) => {
                log::error!("{e:#}; the state stays in memory and the write is tried again");
                (None, Some(format!("{e:#}")))
            }
        }
    }

    /// The answer's `result` (`learned` or `refused`), the loss and the guard's accuracy
    /// before and after.
    fn describe_outcome(&self, outcome: Outcome, o: &mut Map<String, Value>) {
        match outcome {
            Outcome::Learned { learned, guard } => {
                o.insert("result".into(), "learned".into());
                o.insert("loss".into(), learned.loss.into());
                if let Some((b, a)) = guard {
                    o.insert("guard".into(), json!({ "before": b, "after": a }));
                }
            }
            Outcome::Refused { before, after } => self.refused("update", before, after, o),
        }
    }

    /// An answer's `result` `refused` by the regression guard, with the guard's
    /// accuracy before and after `what` (an update, a fleet state) and why.
    pub(super) fn refused(&self, what: &str, before: f32, after: f32, o: &mut Map<String, Value>) {
        let msg = format!(
            "the regression guard refused this {what}: accuracy on the {} held-out samples would drop from {:.0}% to {:.0}% (margin {:.0} points); the head is unchanged",
            self.engine.guard_len(),
            before * 100.0,
            after * 100.0,
            self.opts.engine.guard_margin * 100.0
        );
        log::warn!("{msg}");
        o.insert("result".into(), "refused".into());
        o.insert("guard".into(), json!({ "before": before, "after": after }));
        o.insert("message".into(), msg.into());
    }
}

pub(super) fn check_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        bail!("a class name cannot be empty");
    }
    if name.chars().count() > MAX_NAME {
        bail!("a class name has at most {MAX_NAME} characters");
    }
    if name.chars().any(char::is_control) {
        bail!("a class name cannot hold control characters");
    }
    Ok(())
}
