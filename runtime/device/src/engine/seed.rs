//! Starting from the bundle: its embedding statistics (the closed-form learner's prior and
//! the host's classes) and its exemplars (the replay buffer, the class means and the
//! regression guard).

use super::Engine;
use edgetune::error::Error;
use edgetune::stats::Stats;

impl Engine {
    /// Gives the closed-form learner the bundle's statistics of the features its head's
    /// output layer sees ([`edgetune::stats::for_head`]: the embeddings' for a linear
    /// head, the hidden activations' for an MLP): its units and covariance prior and,
    /// for a head trained on the host, each class's count and mean. Call on a fresh
    /// engine, before [`Engine::seed`].
    pub fn set_stats(&mut self, stats: &Stats) -> Result<(), Error> {
        self.check_stats(stats)?;
        let Some(slda) = &mut self.slda else {
            return Ok(());
        };
        let d = stats.mean.len();
        slda.set_stats(
            &stats.mean,
            &stats.std,
            &stats.covariance,
            self.cfg.prior_strength,
        )?;
        let classes = self.live.head().classes();
        if !stats.class_counts.is_empty() && stats.class_counts.len() == classes {
            slda.seed_classes(&stats.class_counts, &stats.class_means, &stats.covariance)?;
            debug_assert_eq!(stats.class_means.len(), classes * d);
        }
        self.write_slda_head()?;
        Ok(())
    }

    /// Starts from the host's exemplars ([`edgetune::bundle::Exemplars`]): `embeddings`
    /// holds the `replay` samples then the `guard` ones, `dim` values each, classed by
    /// the two label lists. Replay exemplars go into the replay buffer and the class
    /// means; guard exemplars (up to [`EngineConfig::guard_per_class`](super::EngineConfig::guard_per_class) a class) into the
    /// regression guard. Nothing is learned from them.
    pub fn seed(&mut self, embeddings: &[f32], replay: &[u32], guard: &[u32]) -> Result<(), Error> {
        let d = self.dim;
        if embeddings.len() != (replay.len() + guard.len()) * d {
            return Err(Error::Length {
                what: "exemplar embeddings",
                expected: (replay.len() + guard.len()) * d,
                found: embeddings.len(),
            });
        }
        let (r, g) = embeddings.split_at(replay.len() * d);
        let host = self.classes();
        let learn_stats = self.slda.as_ref().is_some_and(|s| s.classes() < host);
        for (x, &y) in r.chunks_exact(d).zip(replay) {
            self.live.remember(x, y as usize)?;
            // A bundle with exemplars but no class statistics (made before them): the
            // exemplars are the host's labeled samples the device has.
            if learn_stats
                && let Some(slda) = &mut self.slda
                && (y as usize) <= slda.classes()
            {
                self.live.head().features(x, &mut self.features)?;
                slda.learn(&self.features, y as usize)?;
            }
        }
        for (x, &y) in g.chunks_exact(d).zip(guard) {
            let held = self.guard_labels.iter().filter(|&&l| l == y).count();
            if held < self.cfg.guard_per_class
                && self.guard_labels.len() < self.guard_labels.capacity()
            {
                edgetune::error::check_vector("guard exemplar", x, d)?;
                if y as usize >= self.classes() {
                    return Err(Error::UnknownClass {
                        class: y as usize,
                        classes: self.classes(),
                    });
                }
                self.guard_labels.push(y);
                self.guard_x.extend_from_slice(x);
            }
        }
        self.settle_learner();
        self.write_slda_head()?;
        self.guard_accuracy = self.measure_guard();
        self.spare.copy_from(&self.live)?;
        Ok(())
    }
}
