//! The engine in a fleet. The closed-form learner's statistics are the sum of three
//! parts: the bundle's (the same on every device), the device's own labels, and the
//! other devices' labels as the fleet last sent them. Only the whole (which writes the
//! head) and the others' part are kept: sufficient statistics subtract, so the device's
//! own labels are whole − bundle − others ([`Engine::fleet_own`]), derived when the fleet
//! asks for them instead of learned twice. A merge ([`Engine::merge_fleet`]) replaces
//! the others' part, never adds to it: a device never counts its own labels twice
//! however many rounds it takes part in, merging the same fleet state twice changes
//! nothing, and its own recent labels are never averaged away: they stay in the sum with
//! their full counts, whatever the fleet sends.
//!
//! A gradient head has no such sum. Its fleet averages heads (FedAvg,
//! [`Engine::merge_head`]): the others' average is mixed into this device's head, each
//! class weighted by each side's labels of it, and the device's replay buffer (its own
//! samples) is rehearsed after, with the others' class means for their classes, drawn with
//! the spread of the device's own classes. That is an average, not a sum: merging the
//! same state twice moves the head twice.

use super::{Engine, EngineError};
use edgetune::error::Error;
use edgetune::slda::{Full, Slda};

/// Draws per step of each class a gradient device knows only by the fleet's mean
/// ([`Online::rehearse_spread`]). Measured on the second backbone (`digits-cnn-b`, three
/// devices): 1 or 2 left the device with three digits at 0.92–0.94× a central head on all
/// ten; 10 cost the device with four digits 3.5 points on its own.
///
/// [`Online::rehearse_spread`]: edgetune::online::Online::rehearse_spread
const REHEARSAL_DRAWS: usize = 4;

/// The part of the statistics a device keeps for its fleet.
#[derive(Debug, Clone, Default)]
pub(super) struct Fleet {
    /// The other devices' labels as last merged ([`Slda::state`] at the engine's
    /// capacity, in this device's class order); empty before the first merge.
    pub(super) others: Vec<f32>,
    /// Labels in `others`.
    pub(super) others_labels: u64,
    /// A version 3 state's own labels, until [`Engine::migrate_fleet`] turns them into
    /// `others`.
    pub(super) own_v3: Vec<f32>,
}

/// A version 3 state's fleet part must be migrated before the fleet reads or replaces it.
const NOT_MIGRATED: &str =
    "the fleet part of a version 3 state is not migrated yet (Engine::migrate_fleet)";
const NOT_CLOSED_FORM: &str = "this device's head learns by gradient steps (--learner gradient, or host classes without statistics): its fleet averages heads (Engine::merge_head), not statistics";

const CLOSED_FORM_NOT_HEAD: &str = "this device's head is written from closed-form statistics; a fleet averages gradient heads only between devices whose heads learn by gradient steps";

/// `dst` ← the average of `dst` (weight `mine`) and `theirs` (weight `labels`); `dst`
/// stays when the others have no labels.
fn mix(dst: &mut [f32], mine: f32, theirs: &[f32], labels: f32) {
    if labels <= 0.0 {
        return;
    }
    let (a, b) = (mine / (mine + labels), labels / (mine + labels));
    for (d, &t) in dst.iter_mut().zip(theirs) {
        *d = a * *d + b * t;
    }
}

/// The other devices' heads averaged (FedAvg), in this device's class order, for
/// [`Engine::merge_head`] (the service matches their classes by name).
#[derive(Debug, Clone)]
pub struct OthersHead<'a> {
    /// Their hidden layer (weights, then biases; empty for a linear head).
    pub hidden: &'a [f32],
    /// Labels their hidden layer learned from (all of theirs).
    pub labels: f32,
    /// Their output rows, each for a class of this device.
    pub rows: Vec<OthersRow<'a>>,
    /// Classes this device has after the merge: new ones are added at the end.
    pub classes: usize,
}

/// One class's output row of the other devices' average.
#[derive(Debug, Clone, Copy)]
pub struct OthersRow<'a> {
    /// The class, in this device's order.
    pub class: usize,
    /// Their labels of it.
    pub labels: f32,
    /// Its output weights.
    pub weights: &'a [f32],
    /// Its output bias.
    pub bias: f32,
    /// The mean of their samples of it (`D` values; empty when not known).
    pub mean: &'a [f32],
}

/// What merging a fleet state did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Merged {
    /// The head is written from the new sum.
    Applied {
        /// Classes before and after.
        classes: (usize, usize),
        /// Guard accuracy before and after, when the guard has samples.
        guard: Option<(f32, f32)>,
    },
    /// The regression guard refused it: accuracy on the guard would fall by more than
    /// the margin. Nothing changed.
    Refused {
        /// Guard accuracy before.
        before: f32,
        /// Guard accuracy it would have left.
        after: f32,
    },
}

/// `0, 1, …, n − 1`: a state's classes in the same places.
fn identity(n: usize) -> Vec<usize> {
    (0..n).collect()
}

impl Engine {
    /// The statistics of the device's own labels (a saved [`Slda`] state at the engine's
    /// capacity): the whole minus `base`, the bundle's part (the statistics of a fresh
    /// engine of this bundle), minus the others' part. `None` when the gradient head
    /// learns (its fleet averages heads: [`Engine::merge_head`]).
    pub fn fleet_own(&self, base: &[f32]) -> Result<Option<Vec<f32>>, Error> {
        let (Some(f), Some(all)) = (&self.fleet, &self.slda) else {
            return Ok(None);
        };
        if !f.own_v3.is_empty() {
            return Err(Error::Config { what: NOT_MIGRATED });
        }
        let (d, cap) = (self.learner_dim(), self.capacity());
        let mut own = all.state().to_vec();
        Slda::<(), Full>::subtract_state(&mut own, base, d, cap)?;
        if !f.others.is_empty() {
            Slda::<(), Full>::subtract_state(&mut own, &f.others, d, cap)?;
        }
        Ok(Some(own))
    }

    /// Labels of the other devices as last merged.
    pub fn fleet_others_labels(&self) -> u64 {
        self.fleet.as_ref().map_or(0, |f| f.others_labels)
    }

    /// Whether the fleet part is a version 3 state's, which [`Engine::migrate_fleet`]
    /// turns into this version's.
    pub fn fleet_needs_migration(&self) -> bool {
        self.fleet.as_ref().is_some_and(|f| !f.own_v3.is_empty())
    }

    /// Turns a version 3 state's fleet part (the device's own labels) into this
    /// version's (the others': whole − `base` − own), `base` being the bundle's part.
    /// On an error nothing changed: the own labels are still there to migrate.
    pub fn migrate_fleet(&mut self, base: &[f32]) -> Result<(), Error> {
        let (d, cap) = (self.learner_dim(), self.capacity());
        let (Some(f), Some(all)) = (&mut self.fleet, &self.slda) else {
            return Ok(());
        };
        if f.own_v3.is_empty() {
            return Ok(());
        }
        if f.others_labels > 0 {
            let mut others = all.state().to_vec();
            Slda::<(), Full>::subtract_state(&mut others, base, d, cap)?;
            Slda::<(), Full>::subtract_state(&mut others, &f.own_v3, d, cap)?;
            f.others = others;
        }
        f.own_v3 = Vec::new();
        Ok(())
    }

    /// Replaces the other devices' part with `others` (a saved state at the engine's
    /// capacity, in this device's class order) and writes the head from the whole
    /// without the old others' part and with the new one. Classes the others have and
    /// this device has not are added. The guard may refuse; on a refusal or an error
    /// nothing changed.
    pub fn merge_fleet(&mut self, others: &[f32]) -> Result<Merged, EngineError> {
        let (Some(f), Some(all)) = (&self.fleet, &self.slda) else {
            return Err(Error::Config {
                what: NOT_CLOSED_FORM,
            }
            .into());
        };
        if !f.own_v3.is_empty() {
            return Err(Error::Config { what: NOT_MIGRATED }.into());
        }
        let cap = self.capacity();
        let mut sum = all.clone();
        if !f.others.is_empty() {
            let mut rest = all.state().to_vec();
            Slda::<(), Full>::subtract_state(&mut rest, &f.others, self.learner_dim(), cap)?;
            sum.restore(&rest)?;
        }
        let mut others_labels = 0;
        if !others.is_empty() {
            let p = Slda::<(), Full>::state_parts(others, self.learner_dim(), cap)?;
            others_labels = p.labels as u64;
            sum.merge_state(others, cap, &identity(p.classes))?;
        }
        let before = (self.classes(), self.guard_accuracy);
        self.spare.copy_from(&self.live)?;
        for _ in before.0..sum.classes() {
            if let Err(e) = self.live.head_mut().add_class() {
                self.live.copy_from(&self.spare)?;
                return Err(e.into());
            }
        }
        let old = self.slda.replace(sum);
        let written = self.write_slda_head();
        let after = self.measure_guard();
        let refused = self.guard_refuses(before.1, after);
        if written.is_err() || refused.is_some() {
            self.slda = old;
            self.live.copy_from(&self.spare)?;
            self.guard_accuracy = before.1;
            written?;
            let (before, after) = refused.unwrap_or_default();
            return Ok(Merged::Refused { before, after });
        }
        self.guard_accuracy = after;
        if let Some(f) = &mut self.fleet {
            f.others = if others_labels > 0 {
                others.to_vec()
            } else {
                Vec::new()
            };
            f.others_labels = others_labels;
        }
        Ok(Merged::Applied {
            classes: (before.0, self.classes()),
            guard: before.1.zip(after),
        })
    }

    /// Mixes the other devices' heads (`others`, their FedAvg average, in this device's
    /// class order) into the gradient head: each output row is the average of this
    /// device's and theirs weighted by each side's labels of that class, the hidden layer
    /// by all labels; a row or layer the others have no label for stays this device's.
    /// Classes up to `others.classes` are added. Then [`EngineConfig::fleet_rehearsal`]
    /// gradient steps on the replay buffer, with the others' class means for the classes
    /// the buffer has no sample of, each drawn [`REHEARSAL_DRAWS`] times a step with the
    /// spread of this device's own classes ([`Online::rehearse_spread`]: a class known by
    /// its mean alone is learned as a region, not a point), pull the head back toward this
    /// device's own samples (its personal corrections are not averaged away) and teach it
    /// to tell them from the others' classes, which no device has learned apart yet. The
    /// guard may refuse. On a refusal or an error nothing changed.
    ///
    /// [`Online::rehearse_spread`]: edgetune::online::Online::rehearse_spread
    ///
    /// [`EngineConfig::fleet_rehearsal`]: super::EngineConfig::fleet_rehearsal
    pub fn merge_head(&mut self, others: &OthersHead<'_>) -> Result<Merged, EngineError> {
        if self.slda.is_some() {
            return Err(Error::Config {
                what: CLOSED_FORM_NOT_HEAD,
            }
            .into());
        }
        let dims = self.live.head().dims();
        let (f, hidden_len) = (dims.feature_width(), dims.out_offset());
        let fits = others.hidden.len() == hidden_len
            && others.classes <= dims.capacity
            && others.classes >= self.classes()
            && others
                .rows
                .iter()
                .all(|r| r.class < others.classes && r.weights.len() == f);
        if !fits {
            return Err(Error::Config {
                what: "the other devices' head does not fit this head's dimensions",
            }
            .into());
        }
        let before = (self.classes(), self.guard_accuracy);
        self.spare.copy_from(&self.live)?;
        if let Err(e) = self.mix_head(others) {
            self.live.copy_from(&self.spare)?;
            return Err(e.into());
        }
        let after = self.measure_guard();
        if let Some((before_acc, after_acc)) = self.guard_refuses(before.1, after) {
            self.live.copy_from(&self.spare)?;
            self.guard_accuracy = before.1;
            return Ok(Merged::Refused {
                before: before_acc,
                after: after_acc,
            });
        }
        self.guard_accuracy = after;
        Ok(Merged::Applied {
            classes: (before.0, self.classes()),
            guard: before.1.zip(after),
        })
    }

    /// [`Engine::merge_head`]'s change of the head, checked dimensions given.
    fn mix_head(&mut self, others: &OthersHead<'_>) -> Result<(), Error> {
        for _ in self.classes()..others.classes {
            self.live.head_mut().add_class()?;
        }
        let own = &self.counters.labels_per_class;
        let own_labels: f32 = own.iter().map(|&n| n as f32).sum();
        let dims = self.live.head().dims();
        let (f, hidden_len, cap) = (dims.feature_width(), dims.out_offset(), dims.capacity);
        let p = self.live.head_mut().params_mut();
        mix(
            &mut p[..hidden_len],
            own_labels,
            others.hidden,
            others.labels,
        );
        for row in &others.rows {
            let mine = own.get(row.class).map_or(0.0, |&n| n as f32);
            let at = hidden_len + row.class * f;
            mix(&mut p[at..at + f], mine, row.weights, row.labels);
            let b = hidden_len + cap * f + row.class;
            mix(&mut p[b..b + 1], mine, &[row.bias], row.labels);
        }
        // The others' classes this device has no sample of, at their samples' means with
        // the spread of the device's own classes.
        let buffer = self.live.buffer();
        let extra: Vec<(&[f32], usize)> = others
            .rows
            .iter()
            .filter(|r| r.mean.len() == dims.input && buffer.count(r.class) == 0)
            .map(|r| (r.mean, r.class))
            .collect();
        let draws = REHEARSAL_DRAWS;
        let mut scratch = vec![0.0; extra.len() * draws * dims.input];
        self.live
            .rehearse_spread(self.cfg.fleet_rehearsal, &extra, draws, &mut scratch)?;
        Ok(())
    }

    /// The fleet part of a restored state.
    pub(super) fn restore_fleet(&mut self, part: &crate::state::FleetPart) -> Result<(), String> {
        let (d, cap) = (self.learner_dim(), self.capacity());
        let Some(f) = &mut self.fleet else {
            return Ok(());
        };
        for (what, v) in [
            ("the other devices' statistics", &part.others),
            ("its own labels' statistics", &part.own_v3),
        ] {
            if !v.is_empty() {
                Slda::<(), Full>::state_parts(v, d, cap).map_err(|e| format!("{what}: {e}"))?;
            }
        }
        f.others = part.others.clone();
        f.others_labels = part.others_labels;
        f.own_v3 = part.own_v3.clone();
        Ok(())
    }
}
