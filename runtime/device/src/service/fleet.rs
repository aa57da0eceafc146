//! The fleet flow of the service: `{"export": true}` answers the statistics of the
//! device's own labels as a fleet state ([`crate::fleet`], base64), and `{"merge": …}`
//! takes the fleet's sum of the other devices' labels, one fleet state or a list of them
//! (summed here), and writes the head from the bundle's statistics + the device's own +
//! those ([`crate::engine::Engine::merge_fleet`]). Classes are matched by name; a class
//! only the fleet knows is added. A state that does not decode, or was learned on
//! another backbone, is refused with the reason and nothing changes. A merge is written
//! to the state directory before it is answered.
//!
//! A device started with `--trust` keys applies only fleet states signed by one of them
//! ([`fleet::verify`], checked before anything else of the state is read): an unsigned,
//! tampered or untrusted state is refused by that name, and a list with one such state
//! is refused as a whole.

use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use edgetune::slda::{Full, Slda};
use serde_json::{Value, json};

use super::label::check_name;
use super::{Service, ms};
use crate::engine::{Engine, Merged};
use crate::fleet::{self, FleetState};

impl Service {
    /// The fleet state of the device's own labels.
    pub fn export(&self) -> anyhow::Result<Value> {
        let base = self.bundle_statistics()?;
        let Some(own) = self.engine.fleet_own(&base)? else {
            bail!(
                "this device's head learns by gradient steps (an MLP head, or host classes without statistics); a fleet shares closed-form statistics only"
            );
        };
        let state = FleetState::from_slda_state(
            self.model.id,
            self.engine.dim(),
            self.engine.capacity(),
            &own,
            &self.names,
        )?;
        let bytes = state.encode();
        Ok(json!({
            "fleet": STANDARD.encode(&bytes),
            "bytes": bytes.len(),
            "classes": state.classes,
            "labels": state.labels() as u64,
        }))
    }

    /// Merges the fleet states of `value` (one base64 string or a list of them) as the
    /// other devices' part (see the module docs).
    pub fn merge(&mut self, value: &Value, t0: Instant) -> anyhow::Result<Value> {
        let texts: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) if !a.is_empty() => a
                .iter()
                .map(|v| v.as_str())
                .collect::<Option<_>>()
                .ok_or_else(|| anyhow!("\"merge\" is a base64 fleet state or a list of them"))?,
            _ => bail!("\"merge\" is a base64 fleet state or a list of them"),
        };
        let name = |i: usize| {
            if texts.len() == 1 {
                "the fleet state".to_string()
            } else {
                format!("fleet state {i}")
            }
        };
        let mut states = Vec::with_capacity(texts.len());
        for (i, text) in texts.iter().enumerate() {
            let bytes = STANDARD
                .decode(text.trim())
                .with_context(|| format!("{} is not base64", name(i)))?;
            if !self.opts.trusted.is_empty() {
                let signer = fleet::verify(&bytes, &self.opts.trusted)
                    .map_err(|e| anyhow!("{} is refused: {e}", name(i)))?;
                log::info!("{} is signed by trusted key {signer}", name(i));
            }
            let s =
                FleetState::decode(&bytes).map_err(|e| anyhow!("{} is refused: {e}", name(i)))?;
            if s.backbone != self.model.id {
                bail!(
                    "{} was learned on another backbone ({:#010x}, this bundle's is {:#010x})",
                    name(i),
                    s.backbone,
                    self.model.id
                );
            }
            if s.dim != self.engine.dim() {
                bail!(
                    "{} has {}-value embeddings, this bundle's have {}",
                    name(i),
                    s.dim,
                    self.engine.dim()
                );
            }
            states.push(s);
        }
        let t = Instant::now();
        let (names, others) = self.sum_states(&states)?;
        let outcome = self.engine.merge_fleet(&others)?;
        let merge = t.elapsed();
        let own = self.own_labels()?;
        let mut answer = json!({
            "merged": states.len(),
            "fleet_labels": self.engine.fleet_others_labels(),
            "own_labels": own,
        });
        match outcome {
            Merged::Applied { classes, guard } => {
                let added = names[classes.0..classes.1].to_vec();
                for n in &added {
                    log::info!("new class {n:?} from the fleet");
                }
                self.names = names;
                self.names.truncate(self.engine.classes());
                self.dirty = true;
                let t = Instant::now();
                let (seq, persist_error) = match self.flush() {
                    Ok(seq) => (seq.or(Some(self.seq)), None),
                    Err(e) => {
                        log::error!(
                            "{e:#}; the state stays in memory and the write is tried again"
                        );
                        (None, Some(format!("{e:#}")))
                    }
                };
                let o = answer.as_object_mut().expect("an object");
                o.insert("result".into(), "merged".into());
                o.insert("classes".into(), json!(self.names));
                o.insert("added".into(), json!(added));
                o.insert("persisted".into(), json!(seq));
                o.insert("persist_error".into(), json!(persist_error));
                if let Some((b, a)) = guard {
                    o.insert("guard".into(), json!({ "before": b, "after": a }));
                }
                let ms = json!({ "merge": ms(merge), "persist": ms(t.elapsed()), "total": ms(t0.elapsed()) });
                o.insert("ms".into(), ms);
            }
            Merged::Refused { before, after } => {
                let o = answer.as_object_mut().expect("an object");
                self.refused("fleet state", before, after, o);
            }
        }
        Ok(answer)
    }

    /// The class names after `states` are matched by name (new ones appended), and the
    /// sum of their statistics in this device's class order (a saved learner state at
    /// the engine's capacity).
    fn sum_states(&self, states: &[FleetState]) -> anyhow::Result<(Vec<String>, Vec<f32>)> {
        let (dim, cap) = (self.engine.dim(), self.engine.capacity());
        let nu0 = self.opts.engine.prior_strength;
        let mut names = self.names.clone();
        let mut sum = Slda::alloc(dim, cap, nu0)?;
        for (i, s) in states.iter().enumerate() {
            let mut map = Vec::with_capacity(s.classes.len());
            for n in &s.classes {
                let c = match names.iter().position(|x| x == n) {
                    Some(c) => c,
                    None => {
                        check_name(n).with_context(|| format!("fleet class {n:?}"))?;
                        if names.len() >= cap {
                            bail!(
                                "cannot add the fleet's class {n:?}: the head holds at most {cap} classes, all taken"
                            );
                        }
                        names.push(n.clone());
                        names.len() - 1
                    }
                };
                map.push(c);
            }
            let state = s.to_slda_state(nu0)?;
            sum.merge_state(&state, s.classes.len(), &map)
                .map_err(|e| anyhow!("fleet state {i} does not fit the others: {e}"))?;
        }
        Ok((names, sum.state().to_vec()))
    }

    /// Labels of the device's own: the whole's minus the bundle's minus the others'.
    fn own_labels(&self) -> anyhow::Result<u64> {
        let base = self.bundle_statistics()?;
        let base = Slda::<(), Full>::state_parts(&base, self.engine.dim(), self.engine.capacity())?;
        let whole = self.engine.slda().map_or(0, |s| s.labels());
        Ok(whole.saturating_sub(base.labels as u64 + self.engine.fleet_others_labels()))
    }

    /// The closed-form statistics the bundle gives (those of a device that learned
    /// nothing yet): the part of the sum that every device of the fleet has.
    fn bundle_statistics(&self) -> anyhow::Result<Vec<f32>> {
        bundle_statistics(&self.model, self.opts.engine)
    }
}

/// The closed-form statistics `model` gives a fresh engine of `cfg`.
pub(super) fn bundle_statistics(
    model: &super::model::Model,
    cfg: crate::engine::EngineConfig,
) -> anyhow::Result<Vec<f32>> {
    let mut fresh = Engine::new(model.head.clone(), cfg)?;
    model.seed(&mut fresh)?;
    fresh
        .slda()
        .map(|s| s.state().to_vec())
        .ok_or_else(|| anyhow!("the bundle's head has no closed-form statistics"))
}
