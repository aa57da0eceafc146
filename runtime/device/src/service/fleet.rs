//! The fleet flow of the service: `{"export": true}` answers the statistics of the
//! device's own labels as a fleet state ([`crate::fleet`], base64), and `{"merge": …}`
//! takes the fleet's sum of the other devices' labels, one fleet state or a list of them
//! (summed here), and writes the head from the bundle's statistics + the device's own +
//! those ([`crate::engine::Engine::merge_fleet`]). Classes are matched by name; a class
//! only the fleet knows is added. A state that does not decode, or was learned on
//! another backbone, is refused with the reason and nothing changes. A merge is written
//! to the state directory before it is answered.
//!
//! A device whose head learns by gradient steps (`--learner gradient`)
//! exports its head and its own labels per class instead ([`HeadState`]), and merges the
//! other devices' heads (their average, or a list averaged here, weighted by labels:
//! FedAvg) into its own by [`Engine::merge_head`]. The two kinds never mix: a state of
//! the other kind is refused by that name.
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
use crate::engine::{Engine, LearnerKind, Merged, OthersHead, OthersRow};
use crate::fleet::{self, Decoded, FleetState, HeadState, head_origin};

impl Service {
    /// The fleet state of the device's own labels: their statistics, or with a head that
    /// learns by gradient steps the head and its own labels per class.
    pub fn export(&self) -> anyhow::Result<Value> {
        if self.engine.learner_kind() == LearnerKind::Gradient {
            let online = self.engine.online();
            let state = HeadState::from_head(
                self.model.id,
                head_origin(self.model.head.params()),
                online.head(),
                &self.engine.counters().labels_per_class,
                &buffer_means(online.buffer(), self.engine.capacity()),
                &self.names,
            );
            let bytes = state.encode();
            return Ok(json!({
                "fleet": STANDARD.encode(&bytes),
                "bytes": bytes.len(),
                "classes": state.classes,
                "labels": state.labels() as u64,
            }));
        }
        let base = self.bundle_statistics()?;
        let Some(own) = self.engine.fleet_own(&base)? else {
            bail!("this device has no closed-form statistics to export");
        };
        let state = FleetState::from_slda_state(
            fleet::features_id(self.model.id, &self.model.head),
            self.engine.learner_dim(),
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
        // What this device's own states are of: the backbone's embeddings for a gradient
        // head, the features of its closed-form learner otherwise (a state of the other
        // kind is refused below, by its kind).
        let ours = if self.engine.learner_kind() == LearnerKind::Gradient {
            (self.model.id, self.engine.dim())
        } else {
            (
                fleet::features_id(self.model.id, &self.model.head),
                self.engine.learner_dim(),
            )
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
            let s = fleet::decode(&bytes).map_err(|e| anyhow!("{} is refused: {e}", name(i)))?;
            let (backbone, dim) = match &s {
                Decoded::Statistics(s) => (s.backbone, s.dim),
                Decoded::Head(s) => (s.backbone, s.dim),
            };
            if backbone != ours.0 {
                bail!(
                    "{} was learned on another backbone{} ({:#010x}, this bundle's is {:#010x})",
                    name(i),
                    if ours.0 != self.model.id {
                        " or the hidden layer of another MLP head"
                    } else {
                        ""
                    },
                    backbone,
                    ours.0
                );
            }
            if dim != ours.1 {
                bail!(
                    "{} has {}-value features, this bundle's head takes {}",
                    name(i),
                    dim,
                    ours.1
                );
            }
            states.push(s);
        }
        let gradient = self.engine.learner_kind() == LearnerKind::Gradient;
        let t = Instant::now();
        let (names, outcome, fleet_labels) = if gradient {
            let heads = of_kind(states, Decoded::into_head, &name)?;
            let avg = self.average_heads(&heads, &name)?;
            let outcome = self.engine.merge_head(&avg.others())?;
            (avg.names, outcome, avg.labels as u64)
        } else {
            let stats = of_kind(states, Decoded::into_statistics, &name)?;
            let (names, others) = self.sum_states(&stats)?;
            let outcome = self.engine.merge_fleet(&others)?;
            (names, outcome, self.engine.fleet_others_labels())
        };
        let merge = t.elapsed();
        let own = if gradient {
            self.engine
                .counters()
                .labels_per_class
                .iter()
                .map(|&n| u64::from(n))
                .sum()
        } else {
            self.own_labels()?
        };
        let mut answer = json!({
            "merged": texts.len(),
            "fleet_labels": fleet_labels,
            "own_labels": own,
        });
        if !gradient {
            let o = answer.as_object_mut().expect("an object");
            o.insert("own_bias".into(), json!(self.engine.own_bias()));
        }
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
        let (dim, cap) = (self.engine.learner_dim(), self.engine.capacity());
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

    /// The weighted average (FedAvg) of the other devices' `heads`, classes matched by
    /// name to this device's (new ones appended): each class's output row weighted by
    /// the labels each state has of it, the hidden layer by all their labels.
    fn average_heads(
        &self,
        heads: &[HeadState],
        name: &dyn Fn(usize) -> String,
    ) -> anyhow::Result<Average> {
        let dims = self.engine.online().head().dims();
        let origin = head_origin(self.model.head.params());
        let f = dims.feature_width();
        let mut names = self.names.clone();
        names.truncate(self.engine.classes());
        let hidden_len = dims.out_offset();
        let d = dims.input;
        let mut hidden = vec![0.0f64; hidden_len];
        let mut labels = 0.0f64;
        // Per class of `names`: labels, Σ labels × row, Σ labels × bias, Σ labels × mean.
        let mut rows: Vec<(f64, Vec<f64>, f64, Vec<f64>)> = Vec::new();
        for (i, h) in heads.iter().enumerate() {
            if h.hidden != dims.hidden {
                bail!(
                    "{} is refused: its head has {} hidden units, this bundle's has {}",
                    name(i),
                    h.hidden,
                    dims.hidden
                );
            }
            if h.origin != origin {
                bail!(
                    "{} is refused: its head started from another bundle's (origin {:#010x}, this bundle's is {:#010x}); heads average only from the same start",
                    name(i),
                    h.origin,
                    origin
                );
            }
            let n = f64::from(h.labels());
            labels += n;
            for (a, &b) in hidden.iter_mut().zip(&h.hidden_params) {
                *a += n * f64::from(b);
            }
            for (k, class) in h.classes.iter().enumerate() {
                let c = match names.iter().position(|x| x == class) {
                    Some(c) => c,
                    None => {
                        check_name(class).with_context(|| format!("fleet class {class:?}"))?;
                        if names.len() >= dims.capacity {
                            bail!(
                                "cannot add the fleet's class {class:?}: the head holds at most {} classes, all taken",
                                dims.capacity
                            );
                        }
                        names.push(class.clone());
                        names.len() - 1
                    }
                };
                if rows.len() <= c {
                    rows.resize(c + 1, (0.0, vec![0.0; f], 0.0, vec![0.0; d]));
                }
                let n = f64::from(h.counts[k]);
                let row = &mut rows[c];
                row.0 += n;
                for (a, &b) in row.1.iter_mut().zip(&h.weights[k * f..(k + 1) * f]) {
                    *a += n * f64::from(b);
                }
                row.2 += n * f64::from(h.biases[k]);
                for (a, &b) in row.3.iter_mut().zip(&h.means[k * d..(k + 1) * d]) {
                    *a += n * f64::from(b);
                }
            }
        }
        let mean = |sum: f64, n: f64| if n > 0.0 { (sum / n) as f32 } else { 0.0 };
        Ok(Average {
            hidden: hidden.iter().map(|&v| mean(v, labels)).collect(),
            labels,
            rows: rows
                .into_iter()
                .enumerate()
                .filter(|(_, r)| r.0 > 0.0)
                .map(|(c, (n, w, b, m))| AverageRow {
                    class: c,
                    labels: n as f32,
                    weights: w.iter().map(|&v| mean(v, n)).collect(),
                    bias: mean(b, n),
                    mean: m.iter().map(|&v| mean(v, n)).collect(),
                })
                .collect(),
            names,
        })
    }

    /// Labels of the device's own: the whole's minus the bundle's minus the others'.
    fn own_labels(&self) -> anyhow::Result<u64> {
        let base = self.bundle_statistics()?;
        let base = Slda::<(), Full>::state_parts(
            &base,
            self.engine.learner_dim(),
            self.engine.capacity(),
        )?;
        let whole = self.engine.slda().map_or(0, |s| s.labels());
        Ok(whole.saturating_sub(base.labels as u64 + self.engine.fleet_others_labels()))
    }

    /// The closed-form statistics the bundle gives (those of a device that learned
    /// nothing yet): the part of the sum that every device of the fleet has.
    fn bundle_statistics(&self) -> anyhow::Result<Vec<f32>> {
        bundle_statistics(&self.model, self.opts.engine)
    }
}

/// The other devices' heads averaged ([`Service::average_heads`]).
struct Average {
    /// This device's class names, then the classes the fleet adds.
    names: Vec<String>,
    hidden: Vec<f32>,
    labels: f64,
    /// The classes (this device's order) with labels.
    rows: Vec<AverageRow>,
}

/// [`OthersRow`]'s values.
struct AverageRow {
    class: usize,
    labels: f32,
    weights: Vec<f32>,
    bias: f32,
    mean: Vec<f32>,
}

impl Average {
    fn others(&self) -> OthersHead<'_> {
        OthersHead {
            hidden: &self.hidden,
            labels: self.labels as f32,
            rows: self
                .rows
                .iter()
                .map(|r| OthersRow {
                    class: r.class,
                    labels: r.labels,
                    weights: &r.weights,
                    bias: r.bias,
                    mean: &r.mean,
                })
                .collect(),
            classes: self.names.len(),
        }
    }
}

/// Per class (up to `classes`), the mean of the buffer's samples of it, `D` values each
/// (zeros for a class it holds none of).
fn buffer_means<S: edgetune::head::Storage, const N: usize>(
    buffer: &edgetune::buffer::SampleBuffer<S, N>,
    classes: usize,
) -> Vec<f32> {
    let d = buffer.dim();
    let mut sum = vec![0.0f64; classes * d];
    let mut n = vec![0usize; classes];
    for i in 0..buffer.len() {
        if let Some((x, c)) = buffer.get(i).filter(|&(_, c)| c < classes) {
            n[c] += 1;
            for (s, &v) in sum[c * d..(c + 1) * d].iter_mut().zip(x) {
                *s += f64::from(v);
            }
        }
    }
    sum.iter()
        .enumerate()
        .map(|(i, &s)| {
            if n[i / d] > 0 {
                (s / n[i / d] as f64) as f32
            } else {
                0.0
            }
        })
        .collect()
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

/// The states as one kind, taken by `pick`; the first of the other kind is refused, named
/// by `name`.
fn of_kind<T>(
    states: Vec<Decoded>,
    pick: fn(Decoded) -> Result<T, &'static str>,
    name: &dyn Fn(usize) -> String,
) -> anyhow::Result<Vec<T>> {
    states
        .into_iter()
        .enumerate()
        .map(|(i, s)| pick(s).map_err(|why| anyhow!("{} is refused: {why}", name(i))))
        .collect()
}
