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
//! The head written from that sum is the head of every label plus one thing: a logit
//! added to the device's own classes, those it had before the fleet: the ones it labeled
//! and its bundle's ([`Engine::is_own`]; [`Engine::choose_own_bias`], chosen at each
//! merge, kept in the state). Before its first merge a device tells only its own classes
//! apart; after it, its own samples can go to a class only the fleet brought. The
//! bias is the least that keeps the device's own samples, each held out of the
//! statistics, recognised among all classes as well as among its own, within what the
//! learner's model says it costs the other classes ([`OWN_BUDGET`], `--fleet-own-budget`).
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

/// The share of a device's new own samples that the own-class bias may let go from
/// recognised among its own classes to taken by another device's class
/// ([`Engine::choose_own_bias`]): half the fleet test's 2 points. The bias keeps all but
/// `k` of the `n` held-out samples, and a new sample like them passes the `k + 1`-th
/// largest gap with probability `(k + 1) / (n + 1)`: `k` is the most that keeps that
/// within the tolerance, so below 199 own samples none may be lost, and with fewer than
/// 99 even the largest gap leaves more than 1 % (at 60–80 own samples the two digits
/// CNNs' devices lost 0.3–1.9 points, `tests/tests/fleet.rs`).
pub const OWN_TOLERANCE: f32 = 0.01;

/// The default most the own-class bias may add, by the learner's model, to the share of
/// the other classes' samples that go to the device's classes
/// ([`EngineConfig::fleet_own_budget`], [`Engine::choose_own_bias`]).
/// The model is optimistic on real embeddings: on the second backbone (`EDGETUNE_FLEET_
/// BACKBONE=digits-cnn-b`, 20 labels a digit) the device of four digits, at a bias the
/// model said cost 2 %, lost 10 points on the other six and fell to 0.93× a head of
/// every label on all ten; at 1 % it stays above 0.95×, and on the digits CNN the
/// devices still keep their own digits within 2 points (0.5 % did not). Chosen on those
/// two runs: see the README's fleet section for the others.
pub const OWN_BUDGET: f32 = 0.01;

/// The largest logit added to a device's own classes: a bound on what a state may hold.
/// The budget is what bounds it in practice; the head's logits are squared Mahalanobis
/// distances, which grow with the embedding size (the digits CNNs' gaps reached 24).
pub const MAX_OWN_BIAS: f32 = 1e6;

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
    /// Added to the logits of the device's own classes ([`Engine::is_own`]), chosen at
    /// each merge ([`Engine::choose_own_bias`]); 0 before the first.
    pub(super) own_bias: f32,
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
        let old_bias = self.own_bias();
        // The new others' part is in place when the head is written: it says which
        // classes are theirs (Engine::is_own).
        let new_others = if others_labels > 0 {
            others.to_vec()
        } else {
            Vec::new()
        };
        let old_others = self.fleet.as_mut().map(|f| {
            (
                std::mem::replace(&mut f.others, new_others),
                std::mem::replace(&mut f.others_labels, others_labels),
            )
        });
        let bias = if others_labels > 0 {
            self.choose_own_bias()
        } else {
            Ok(0.0)
        };
        let written = bias.and_then(|b| {
            self.set_own_bias(b);
            self.write_slda_head()
        });
        let after = self.measure_guard();
        let refused = self.guard_refuses(before.1, after);
        if written.is_err() || refused.is_some() {
            self.slda = old;
            self.set_own_bias(old_bias);
            if let (Some(f), Some((others, labels))) = (&mut self.fleet, old_others) {
                f.others = others;
                f.others_labels = labels;
            }
            self.live.copy_from(&self.spare)?;
            self.guard_accuracy = before.1;
            written?;
            let (before, after) = refused.unwrap_or_default();
            return Ok(Merged::Refused { before, after });
        }
        self.guard_accuracy = after;
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
    /// the buffer has no sample of, each drawn `REHEARSAL_DRAWS` (4) times a step with the
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

    /// The logit added to the device's own classes, those it had before the fleet (the
    /// ones it labeled and its bundle's), chosen at each merge.
    pub fn own_bias(&self) -> f32 {
        self.fleet.as_ref().map_or(0.0, |f| f.own_bias)
    }

    fn set_own_bias(&mut self, bias: f32) {
        if let Some(f) = &mut self.fleet {
            f.own_bias = bias;
        }
    }

    /// Whether `class` is one of the device's own classes, those it had before the
    /// fleet: it labeled it, or it has statistics besides the other devices' (a class
    /// of the bundle's head). The others are the classes only the fleet brought.
    pub(super) fn is_own(&self, class: usize) -> bool {
        if self
            .counters
            .labels_per_class
            .get(class)
            .is_some_and(|&n| n > 0)
        {
            return true;
        }
        let (d, cap) = (self.learner_dim(), self.capacity());
        let theirs = self
            .fleet
            .as_ref()
            .filter(|f| !f.others.is_empty())
            .and_then(|f| Slda::<(), Full>::state_counts(&f.others, d, cap).ok())
            .and_then(|counts| counts.get(class).copied())
            .unwrap_or(0.0);
        self.slda
            .as_ref()
            .is_some_and(|s| s.count(class) as f32 > theirs + 0.5)
    }

    /// The logit to add to the device's own classes ([`Engine::is_own`]), for the
    /// statistics now in the learner (after a merge). Before a fleet a device tells only
    /// its own classes apart; after it, a sample of its own class may go to a class only
    /// the fleet brought (the others). The bias is the least that keeps the device's own
    /// samples in the replay buffer, each held out of the statistics
    /// ([`Slda::held_out_logits`]), recognised among all classes as well as among its
    /// own alone, but for what leaves new own samples within [`OWN_TOLERANCE`]; and at
    /// most what gives the own classes
    /// [`EngineConfig::fleet_own_budget`] more of the others' samples by the learner's
    /// model ([`Slda::taken`]). 0 when the device has no class of its own, or the fleet
    /// brought none, or the budget is 0.
    ///
    /// [`EngineConfig::fleet_own_budget`]: super::EngineConfig::fleet_own_budget
    pub(super) fn choose_own_bias(&self) -> Result<f32, Error> {
        let budget = self.cfg.fleet_own_budget;
        let Some(slda) = self.slda.as_ref().filter(|_| budget > 0.0) else {
            return Ok(0.0);
        };
        let classes = slda.classes();
        let (own, others): (Vec<usize>, Vec<usize>) = (0..classes)
            .filter(|&c| slda.count(c) > 0)
            .partition(|&c| self.is_own(c));
        if own.is_empty() || others.is_empty() {
            return Ok(0.0);
        }
        let d = self.learner_dim();
        let (mut logits, mut scratch, mut features) =
            (vec![0.0; classes], vec![0.0; 3 * d], vec![0.0; d]);
        let best = |logits: &[f32], among: &[usize]| {
            among
                .iter()
                .copied()
                .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        };
        // Per own sample recognised among the own classes: by how much the best other
        // class's logit passes its class's (when it does).
        let (mut held, mut gaps) = (0usize, Vec::new());
        for (x, y) in self.live.buffer().iter() {
            if !own.contains(&y) {
                continue;
            }
            self.live.head().features(x, &mut features)?;
            slda.held_out_logits(&features, y, &mut logits, &mut scratch)?;
            held += 1;
            if best(&logits, &own) != Some(y) {
                continue;
            }
            let rival = best(&logits, &others).map_or(f32::NEG_INFINITY, |c| logits[c]);
            if rival > logits[y] {
                gaps.push(rival - logits[y]);
            }
        }
        gaps.sort_by(|a, b| b.total_cmp(a));
        // A new own sample passes the (allowed + 1)-th largest of `held` exchangeable
        // held-out gaps with probability (allowed + 1) / (held + 1) (OWN_TOLERANCE).
        let allowed = ((OWN_TOLERANCE * (held + 1) as f32) as usize).saturating_sub(1);
        let wanted = gaps.get(allowed).map_or(0.0, |&g| g.min(MAX_OWN_BIAS));
        // The model's share of the other classes' samples the own classes take.
        let taken = |bias: f32| {
            let per_class = others.iter().map(|&f| {
                own.iter()
                    .map(|&o| slda.taken(f, o, bias))
                    .sum::<f32>()
                    .min(1.0)
            });
            per_class.sum::<f32>() / others.len() as f32
        };
        let (mut bias, base) = (wanted, taken(0.0));
        if taken(wanted) - base > budget {
            let (mut lo, mut hi) = (0.0, wanted);
            for _ in 0..32 {
                let mid = 0.5 * (lo + hi);
                if taken(mid) - base > budget {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            bias = lo;
        }
        log::info!(
            "fleet: own-class bias {bias:.3} ({} of {held} own samples held out would go to another class without it, {allowed} may; by the model it gives the own classes {:.2} % of the others' samples, {:.2} % more than without)",
            gaps.len(),
            100.0 * taken(bias),
            100.0 * (taken(bias) - base)
        );
        Ok(bias)
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
        if !(0.0..=MAX_OWN_BIAS).contains(&part.own_bias) {
            return Err(format!(
                "its own-class bias {} is not between 0 and {MAX_OWN_BIAS}",
                part.own_bias
            ));
        }
        f.others = part.others.clone();
        f.others_labels = part.others_labels;
        f.own_v3 = part.own_v3.clone();
        f.own_bias = part.own_bias;
        Ok(())
    }
}
