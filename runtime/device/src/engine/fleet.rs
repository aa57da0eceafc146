//! The engine in a fleet. The closed-form learner's statistics are kept as three parts
//! whose sum writes the head: the bundle's (the same on every device), the device's
//! own labels ([`Engine::fleet_local`], what it exports) and the sum of the other
//! devices' labels as the fleet last sent them ([`Engine::merge_fleet`] replaces that
//! part, never adds to it). So a device never counts its own labels twice however many
//! rounds it takes part in, merging the same fleet state twice changes nothing, and its
//! own recent labels are never averaged away: they stay in the sum with their full
//! counts, whatever the fleet sends.

use super::{Engine, EngineError};
use edgetune::error::Error;
use edgetune::slda::Slda;

/// The parts of the statistics a device keeps for its fleet.
#[derive(Debug, Clone)]
pub(super) struct Fleet {
    /// The device's own labels only.
    pub(super) local: Slda<Vec<f32>>,
    /// Labels of the other devices as last merged (their statistics are in the whole;
    /// the next merge replaces them, so they need not be kept apart).
    pub(super) others_labels: u64,
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
    /// The device's own labels' statistics (a saved [`Slda`] state at the engine's
    /// capacity); `None` when the gradient head learns, which a fleet does not merge.
    pub fn fleet_local(&self) -> Option<&[f32]> {
        self.fleet.as_ref().map(|f| f.local.state())
    }

    /// Labels of the other devices as last merged.
    pub fn fleet_others_labels(&self) -> u64 {
        self.fleet.as_ref().map_or(0, |f| f.others_labels)
    }

    /// Labels of the device's own.
    pub fn fleet_local_labels(&self) -> u64 {
        self.fleet.as_ref().map_or(0, |f| f.local.labels())
    }

    /// Learns a label of the device's own into its local part (`x` raw, `class` a class
    /// index of the head, already learned by the whole).
    pub(super) fn learn_local(&mut self, class: usize) -> Result<(), Error> {
        let (Some(f), Some(all)) = (&mut self.fleet, &self.slda) else {
            return Ok(());
        };
        if !f.local.standardized() && all.standardized() {
            f.local.set_standardization(all.center(), all.scale())?;
        }
        f.local.learn(&self.x, class)?;
        Ok(())
    }

    /// Replaces the other devices' part with `others` (a saved state at the engine's
    /// capacity, in this device's class order) and writes the head from bundle + own +
    /// others, `base` being the bundle's part (the statistics of a fresh engine of this
    /// bundle). Classes the others have and this device has not are added. The guard
    /// may refuse; on a refusal or an error nothing changed.
    pub fn merge_fleet(&mut self, base: &[f32], others: &[f32]) -> Result<Merged, EngineError> {
        let (Some(f), Some(all)) = (&self.fleet, &self.slda) else {
            return Err(Error::Config {
                what: "this device's head learns by gradient steps (an MLP head, or host classes without statistics); a fleet merges closed-form statistics only",
            }
            .into());
        };
        let cap = self.capacity();
        let mut sum = all.clone();
        sum.restore(base)?;
        let own = f.local.classes();
        sum.merge_state(f.local.state(), cap, &identity(own))?;
        let mut others_labels = 0;
        if !others.is_empty() {
            let p = Slda::<(), edgetune::slda::Full>::state_parts(others, self.dim, cap)?;
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
        let refused = match (before.1, after) {
            (Some(b), Some(a)) => {
                self.guard_labels.len() >= self.cfg.guard_min && a < b - self.cfg.guard_margin
            }
            _ => false,
        };
        if written.is_err() || refused {
            self.slda = old;
            self.live.copy_from(&self.spare)?;
            self.guard_accuracy = before.1;
            written?;
            let (b, a) = (before.1.unwrap_or(0.0), after.unwrap_or(0.0));
            return Ok(Merged::Refused {
                before: b,
                after: a,
            });
        }
        self.guard_accuracy = after;
        if let Some(f) = &mut self.fleet {
            f.others_labels = others_labels;
        }
        Ok(Merged::Applied {
            classes: (before.0, self.classes()),
            guard: before.1.zip(after),
        })
    }

    /// The fleet part of a restored state (`local` empty: no own labels yet);
    /// `stats` sets the local part's units and prior as the whole's.
    pub(super) fn restore_fleet(
        &mut self,
        local: &[f32],
        others_labels: u64,
        stats: Option<&edgetune::stats::Stats>,
    ) -> Result<(), String> {
        let prior = self.cfg.prior_strength;
        let Some(f) = &mut self.fleet else {
            return Ok(());
        };
        if let Some(stats) = stats {
            f.local
                .set_stats(&stats.mean, &stats.std, &stats.covariance, prior)
                .map_err(|e| format!("the bundle's embedding statistics: {e}"))?;
        }
        if !local.is_empty() {
            f.local
                .restore(local)
                .map_err(|e| format!("its own labels' statistics: {e}"))?;
        }
        f.others_labels = others_labels;
        Ok(())
    }
}
