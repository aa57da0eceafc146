//! Learning on the device from one label at a time: the rule that ties a [`Head`], its
//! [`Learner`], a [`SampleBuffer`] for replay and [`ClassMeans`] together. The Linux
//! device program and the Cortex-M firmware both learn through it.
//!
//! A label for a class the head does not know yet (the index one past the last class)
//! adds the class and imprints it from the sample, relative to the mean of the samples
//! in the buffer ([`Head::imprint_centered`]), so it is recognised at once; then
//! every label takes `steps` mini-batch steps of the new sample plus `replay` samples
//! drawn class-balanced from the buffer, so learning a new class does not erase the old.
//!
//! ```
//! use edgetune_core::buffer::SampleBuffer;
//! use edgetune_core::classes::ClassMeans;
//! use edgetune_core::online::{Online, OnlineConfig};
//! use edgetune_core::{Config, Dims, Head, Learner, Optimizer};
//!
//! // All parts share one storage type: slices of static arrays on a microcontroller,
//! // `Vec<f32>` on Linux.
//! const DIMS: Dims = Dims::linear(2, 4);
//! let (mut p, mut l, mut b, mut m) = ([0.0f32; DIMS.param_len()],
//!     [0.0f32; Learner::<()>::state_len(DIMS, &Optimizer::ADAM)], [0.0f32; 16 * 2],
//!     [0.0f32; ClassMeans::<()>::storage_len(2, 4)]);
//! let head = Head::new(DIMS, 0, &mut p[..])?;
//! let learner = Learner::new(DIMS, Config { lr: 0.05, ..Config::DEFAULT }, &mut l[..])?;
//! let buffer = SampleBuffer::<_, 16>::new(2, &mut b[..])?;
//! let means = ClassMeans::new(2, 4, &mut m[..])?;
//! let mut online = Online::new(head, learner, buffer, means, OnlineConfig::DEFAULT)?;
//! online.learn(&[1.0, 0.1], 0)?; // a new class 0
//! online.learn(&[0.1, 1.0], 1)?; // a new class 1
//! let mut probs = [0.0; 4];
//! assert_eq!(online.predict(&[0.9, 0.2], &mut probs)?.class, 0);
//! # Ok::<(), edgetune_core::Error>(())
//! ```

use crate::buffer::SampleBuffer;
use crate::classes::ClassMeans;
use crate::error::{Error, Result, check_vector};
use crate::head::{Head, Prediction, Storage};
use crate::learn::Learner;
use crate::math;
use crate::rng::Rng;

/// Most replayed samples per step.
pub const MAX_REPLAY: usize = 32;

/// How much work one label triggers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OnlineConfig {
    /// Buffer samples replayed beside the new one in each step (at most [`MAX_REPLAY`]).
    pub replay: usize,
    /// Optimizer steps per label (at least 1).
    pub steps: usize,
    /// Seed of the replay sampler.
    pub seed: u64,
}

impl OnlineConfig {
    /// 8 replayed samples, 2 steps per label.
    pub const DEFAULT: OnlineConfig = OnlineConfig {
        replay: 8,
        steps: 2,
        seed: 0,
    };
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig::DEFAULT
    }
}

/// What one label did.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Learned {
    /// The class learned.
    pub class: usize,
    /// The label added this class.
    pub added: bool,
    /// The sample went into the replay buffer (false when the buffer handed it back).
    pub stored: bool,
    /// Mean loss of the last step's batch.
    pub loss: f32,
}

/// A head that learns from labels as they come.
#[derive(Debug, Clone)]
pub struct Online<S, const N: usize> {
    head: Head<S>,
    learner: Learner<S>,
    buffer: SampleBuffer<S, N>,
    means: ClassMeans<S>,
    cfg: OnlineConfig,
    rng: Rng,
}

impl<S: Storage, const N: usize> Online<S, N> {
    /// Ties the parts together; their dimensions must agree.
    pub fn new(
        head: Head<S>,
        learner: Learner<S>,
        buffer: SampleBuffer<S, N>,
        means: ClassMeans<S>,
        cfg: OnlineConfig,
    ) -> Result<Self> {
        let dims = head.dims();
        if learner.dims() != dims {
            return Err(Error::Config {
                what: "learner dimensions differ from the head's",
            });
        }
        if buffer.dim() != dims.input || means.dim() != dims.input {
            return Err(Error::Config {
                what: "buffer or class means have another embedding size than the head",
            });
        }
        if means.capacity() < dims.capacity {
            return Err(Error::Capacity {
                what: "class means",
                requested: dims.capacity,
                capacity: means.capacity(),
            });
        }
        if cfg.steps == 0 || cfg.replay > MAX_REPLAY {
            return Err(Error::Config {
                what: "online steps must be >= 1 and replay <= MAX_REPLAY",
            });
        }
        Ok(Online {
            head,
            learner,
            buffer,
            means,
            cfg,
            rng: Rng::new(cfg.seed),
        })
    }

    /// The head.
    pub fn head(&self) -> &Head<S> {
        &self.head
    }

    /// The head, to be written by another learner ([`crate::slda::Slda::write_head`]).
    pub fn head_mut(&mut self) -> &mut Head<S> {
        &mut self.head
    }

    /// The learner (optimizer state, step count).
    pub fn learner(&self) -> &Learner<S> {
        &self.learner
    }

    /// The replay buffer.
    pub fn buffer(&self) -> &SampleBuffer<S, N> {
        &self.buffer
    }

    /// The per-class embedding means.
    pub fn means(&self) -> &ClassMeans<S> {
        &self.means
    }

    /// The parts back.
    pub fn into_parts(self) -> (Head<S>, Learner<S>, SampleBuffer<S, N>, ClassMeans<S>) {
        (self.head, self.learner, self.buffer, self.means)
    }

    /// Makes this learner a copy of `other` (same dimensions) without allocating: take a
    /// snapshot before an update that may have to be rolled back.
    pub fn copy_from<T: Storage>(&mut self, other: &Online<T, N>) -> Result<()> {
        self.head.copy_from(&other.head)?;
        self.learner.copy_from(&other.learner)?;
        self.buffer.copy_from(&other.buffer)?;
        self.means.copy_from(&other.means)?;
        self.cfg = other.cfg;
        self.rng = other.rng.clone();
        Ok(())
    }

    /// The replay sampler's state, for persisting ([`Online::set_replay_state`]).
    pub fn replay_state(&self) -> u64 {
        self.rng.state()
    }

    /// Restores the replay sampler's state saved by [`Online::replay_state`].
    pub fn set_replay_state(&mut self, state: u64) {
        self.rng = Rng::new(state);
    }

    /// The learning configuration.
    pub fn config(&self) -> OnlineConfig {
        self.cfg
    }

    /// Predicts; see [`Head::predict`].
    pub fn predict(&self, x: &[f32], probs: &mut [f32]) -> Result<Prediction> {
        self.head.predict(x, probs)
    }

    /// The nearest class mean and the out-of-distribution distance (1 − cosine) of `x`.
    pub fn novelty(&self, x: &[f32]) -> Option<(usize, f32)> {
        self.means.nearest(x)
    }

    fn check(&self, x: &[f32], label: usize) -> Result<bool> {
        let dims = self.head.dims();
        let classes = self.head.classes();
        check_vector("embedding", x, dims.input)?;
        if math::sq_norm(x) == 0.0 {
            return Err(Error::Config {
                what: "an all-zero embedding has no direction to learn from",
            });
        }
        if label > classes {
            return Err(Error::UnknownClass {
                class: label,
                classes,
            });
        }
        let added = label == classes;
        if added && classes >= dims.capacity {
            return Err(Error::Capacity {
                what: "classes",
                requested: classes + 1,
                capacity: dims.capacity,
            });
        }
        Ok(added)
    }

    /// Keeps a labeled sample for replay and in the class means without a learning step
    /// (e.g. exemplars shipped with a head trained on the host). `label` must be a class
    /// the head has.
    pub fn remember(&mut self, x: &[f32], label: usize) -> Result<bool> {
        if self.check(x, label)? {
            return Err(Error::UnknownClass {
                class: label,
                classes: self.head.classes(),
            });
        }
        self.means.update(label, x)?;
        Ok(self.buffer.push(x, label).is_ok())
    }

    /// Learns one labeled sample. `label` is a class index, or the number of classes to
    /// add a class. On an error nothing has changed.
    pub fn learn(&mut self, x: &[f32], label: usize) -> Result<Learned> {
        let added = self.check(x, label)?;
        if added {
            self.head.add_class()?;
        }
        self.means.update(label, x)?;
        if added {
            // Imprinted against the mean of the buffer's samples (of the other classes:
            // the new one has none there yet), so that the features all inputs share do
            // not make the new class win everywhere. Features that are all zero (a dead
            // MLP layer) or equal to that mean leave the class at zero weights:
            // fine-tuning below still learns it.
            let buffer = &self.buffer;
            let others = (0..buffer.len()).filter_map(|i| buffer.get(i).map(|(s, _)| s));
            let _ = self.head.imprint_centered(label, x, others, None);
        }
        let stored = self.buffer.push(x, label).is_ok();
        if added {
            crate::fmt::debug!("online: added class {}", label);
        }
        if !stored {
            crate::fmt::warning!(
                "online: replay buffer full, class {} sample not kept",
                label
            );
        }
        let mut idx = [0usize; MAX_REPLAY];
        let k = self.cfg.replay;
        let mut loss = 0.0;
        for _ in 0..self.cfg.steps {
            let n = self.buffer.sample_indices(&mut self.rng, &mut idx[..k]);
            let buffer = &self.buffer;
            let batch =
                core::iter::once((x, label)).chain(idx[..n].iter().filter_map(|&i| buffer.get(i)));
            loss = self.learner.step_batch(&mut self.head, batch)?;
        }
        Ok(Learned {
            class: label,
            added,
            stored,
            loss,
        })
    }

    /// Gradient steps on the replay buffer and `extra` labeled samples (e.g. the means of
    /// classes this device has no sample of): `steps` steps, each on a class-balanced
    /// batch of [`MAX_REPLAY`] buffer samples drawn by the replay sampler plus every
    /// `extra` sample. After the head was written from outside (a fleet's average of
    /// heads), this pulls it toward what the device's own samples say and teaches it to
    /// tell them from the extra classes. Returns the last batch's mean loss (0 when
    /// there is nothing to rehearse). On an error the head may have taken some of the
    /// steps (the caller keeps a copy to roll back to).
    pub fn rehearse(&mut self, steps: usize, extra: &[(&[f32], usize)]) -> Result<f32> {
        self.rehearse_with(steps, extra, 1, None)
    }

    /// [`Online::rehearse`] with each `extra` sample taken as a class's mean and given
    /// the spread of this device's own classes: in every step it is drawn `draws` times
    /// as `mean + (a − b)/√2` for two buffer samples `a`, `b` of one class picked at
    /// random (their difference, scaled so, has the class's covariance around 0). A
    /// class the device knows only by its mean is then rehearsed as a cloud shaped like
    /// its own classes rather than as one point, which the head would learn to keep out
    /// of its own classes and no more. `scratch` holds at least `extra.len() × draws ×
    /// dim` floats. When no class in the buffer has two samples, each mean is used as it
    /// is, `draws` times.
    pub fn rehearse_spread(
        &mut self,
        steps: usize,
        extra: &[(&[f32], usize)],
        draws: usize,
        scratch: &mut [f32],
    ) -> Result<f32> {
        let d = self.head.dims().input;
        let needed = extra.len() * draws * d;
        if scratch.len() < needed || draws == 0 {
            return Err(Error::Capacity {
                what: "rehearsal scratch floats (at least one draw)",
                requested: needed.max(d),
                capacity: scratch.len(),
            });
        }
        for (mean, _) in extra {
            check_vector("class mean", mean, d)?;
        }
        self.rehearse_with(steps, extra, draws, Some(&mut scratch[..needed]))
    }

    fn rehearse_with(
        &mut self,
        steps: usize,
        extra: &[(&[f32], usize)],
        draws: usize,
        mut scratch: Option<&mut [f32]>,
    ) -> Result<f32> {
        if self.buffer.is_empty() && extra.is_empty() {
            return Ok(0.0);
        }
        let d = self.head.dims().input;
        let spread = self.buffer.classes().any(|(_, n)| n >= 2);
        let mut idx = [0usize; MAX_REPLAY];
        let mut loss = 0.0;
        for _ in 0..steps {
            if let Some(s) = scratch.as_deref_mut() {
                for (k, out) in s.chunks_exact_mut(d).enumerate() {
                    let mean = extra[k / draws].0;
                    let pair = spread
                        .then(|| self.buffer.sample_pair(&mut self.rng))
                        .flatten()
                        .and_then(|(a, b)| Some((self.buffer.get(a)?.0, self.buffer.get(b)?.0)));
                    let Some((a, b)) = pair else {
                        out.copy_from_slice(mean);
                        continue;
                    };
                    for (((o, &m), &a), &b) in out.iter_mut().zip(mean).zip(a).zip(b) {
                        *o = m + (a - b) * core::f32::consts::FRAC_1_SQRT_2;
                    }
                }
            }
            let k = self.buffer.sample_indices(&mut self.rng, &mut idx);
            let buffer = &self.buffer;
            // The draws when there is scratch, else the means themselves.
            let drawn = scratch.as_deref();
            let draws_of = drawn.into_iter().flat_map(|s| {
                s.chunks_exact(d)
                    .enumerate()
                    .map(|(k, x)| (x, extra[k / draws].1))
            });
            let means = extra.iter().copied().filter(|_| drawn.is_none());
            let batch = idx[..k]
                .iter()
                .filter_map(|&i| buffer.get(i))
                .chain(draws_of)
                .chain(means);
            loss = self.learner.step_batch(&mut self.head, batch)?;
        }
        Ok(loss)
    }
}
