//! The device's learning core: predictions on embeddings, labels, the regression guard
//! and the recent samples that labels refer to. All of its memory is allocated when it is
//! made: predicting and learning from a label allocate nothing (the `serve` benchmark
//! counts).
//!
//! **Learners.** By default ([`LearnerKind::Slda`]) the head's output layer is written
//! after every label from closed-form statistics ([`edgetune::slda`]: class means and a
//! shared covariance with the bundle's as prior), which learn from one label, forget
//! nothing and do not depend on the order of labels. They are kept of the features the
//! output layer sees ([`Engine::learner_dim`]): the embeddings for a linear head, the
//! hidden activations of an MLP head, whose hidden layer then stays as the host trained
//! it. This was decided by the learning-quality benchmark (`cargo run -p benches --bin
//! learning`): on every backbone there it beat the gradient head with replay at 1 to 10
//! labels per class, after a pass over a training set, and on forgetting; and by the
//! demo, where an MLP head learning by gradient steps forgot 7–11 points of the host's
//! digits after 50 labels and by statistics of its hidden layer none (`finetune-head
//! demo`, seeds 1–8: from 0.6 points below to 1.7 above the host's test accuracy).
//! [`LearnerKind::Gradient`] keeps the gradient head with replay ([`Online::learn`])
//! for a bundle whose classes come with neither statistics nor exemplars, and trains an
//! MLP's hidden layer too (`--learner gradient`).
//!
//! **Calibration.** The prediction made for a sample before its label is learned is an
//! honest held-out measurement that costs no label (prequential evaluation): each one
//! feeds the temperature of the probabilities ([`edgetune::calibrate`]) and the running
//! prequential accuracy. No label is withheld from learning.
//!
//! **Regression guard.** The guard samples are the bundle's held-out exemplars of the
//! host's classes: a genuinely new class is always learned. With the gradient head an
//! update is undone (and reported as refused) when it drops the guard's accuracy by more
//! than [`EngineConfig::guard_margin`] once the guard holds
//! [`EngineConfig::guard_min`] samples. Closed-form statistics are never rolled back
//! (that would make them depend on the order of labels); there the guard is reported.
//!
//! The engine's flows have their files: `predict.rs` (a prediction and the recent
//! samples), `label.rs` (a label checked, measured and learned, and the guard), `seed.rs`
//! (the bundle's statistics and exemplars), `fleet.rs` (the other devices' labels apart
//! from the device's own, and a fleet state merged) and `restore.rs` (to and from a
//! [`DeviceState`](crate::state::DeviceState)).

mod fleet;
mod label;
mod predict;
mod restore;
mod seed;

use crate::state::Counters;
use edgetune::buffer::SampleBuffer;
use edgetune::calibrate::Temperature;
use edgetune::classes::ClassMeans;
use edgetune::error::Error;
use edgetune::head::Head;
use edgetune::learn::{Config, Learner};
use edgetune::online::{Online, OnlineConfig};
use edgetune::slda::{Prior, Slda, UNLABELED_LOGIT};

pub use fleet::{Merged, OthersHead, OthersRow};
pub use label::Outcome;
pub use predict::Observation;

/// Samples in the replay buffer.
pub const BUFFER: usize = 256;
/// Recent samples a label can refer to.
pub const RECENT: usize = 64;
/// Most classes in an answer's top list.
pub const TOP_K: usize = 5;
/// Prequential predictions the temperature is fitted to.
pub const CALIBRATION_ROWS: usize = 256;
/// Recent prequential predictions whose margins set the `uncertain` threshold.
pub const MARGIN_WINDOW: usize = 128;
/// The share of recent errors that the `uncertain` flag aims to catch
/// ([`Engine::uncertain_threshold`]).
pub const CATCH: f32 = 0.75;

/// Which learner writes the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnerKind {
    /// Closed-form streaming LDA ([`edgetune::slda`]).
    Slda,
    /// Gradient steps with replay ([`Online::learn`]).
    Gradient,
}

/// How the device learns and when it asks for labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineConfig {
    /// Which learner writes the head.
    pub learner: LearnerKind,
    /// Strength of the covariance prior of the closed-form learner, in pseudo-samples.
    pub prior_strength: f32,
    /// The gradient head's optimizer and its learning rate.
    pub learn: Config,
    /// Steps and replay per label.
    pub online: OnlineConfig,
    /// Guard samples kept per class.
    pub guard_per_class: usize,
    /// Guard samples needed before the guard refuses anything.
    pub guard_min: usize,
    /// Largest accepted drop of guard accuracy (0.2 = 20 points).
    pub guard_margin: f32,
    /// A prediction whose top-1 minus top-2 probability is below this is flagged
    /// uncertain (at least; see [`Engine::uncertain_threshold`]).
    pub uncertain_margin: f32,
    /// Gradient steps on the replay buffer (and the fleet's class means) after the
    /// gradient head took a fleet's average ([`Engine::merge_head`]).
    pub fleet_rehearsal: usize,
    /// The most the own-class bias may add, by the learner's model, to the share of the
    /// other devices' classes' samples that go to this device's classes
    /// (chosen at each [`Engine::merge_fleet`]); 0: no bias.
    pub fleet_own_budget: f32,
}

impl EngineConfig {
    /// Adam at 0.003 with a little weight decay, 3 steps of 24 replayed samples, 4 guard
    /// samples per class, refuse drops of more than 20 points once 4 are held,
    /// uncertain below a margin of 0.3, [`FLEET_REHEARSAL`] steps after a fleet's
    /// average of heads, an own-class bias that may cost the others' classes
    /// 1 % of their samples by the learner's model.
    pub const DEFAULT: EngineConfig = EngineConfig {
        learner: LearnerKind::Slda,
        prior_strength: PRIOR_STRENGTH,
        learn: Config {
            lr: 0.003,
            weight_decay: 1e-4,
            ..Config::DEFAULT
        },
        online: OnlineConfig {
            replay: 24,
            steps: 3,
            seed: 0,
        },
        guard_per_class: 4,
        guard_min: 4,
        guard_margin: 0.2,
        uncertain_margin: 0.3,
        fleet_rehearsal: FLEET_REHEARSAL,
        fleet_own_budget: fleet::OWN_BUDGET,
    };
}

/// Default gradient steps after a fleet's average of heads ([`Engine::merge_head`]).
/// Measured with `EDGETUNE_FLEET_LEARNER=gradient cargo test -p edgetune-tests --test
/// fleet` (3 devices, digits CNN): after one round, on all ten digits 0 steps gave
/// 42.5 % (0.59× a device that learned every label itself), 50 steps 68–72 %, 200 steps
/// 75.0–76.7 % (1.04–1.06×), the others' classes rehearsed as their means. With their
/// means drawn with this device's spread ([`Online::rehearse_spread`]) on the second
/// backbone (`EDGETUNE_FLEET_BACKBONE=digits-cnn-b`), 400 steps gave 0.97–1.00× the
/// central head, and 1.09–1.16× on the digits CNN.
///
/// [`Online::rehearse_spread`]: edgetune::online::Online::rehearse_spread
pub const FLEET_REHEARSAL: usize = 400;

/// Default strength of the covariance prior (pseudo-samples): see
/// [`EngineConfig::prior_strength`] and the learning benchmark.
pub const PRIOR_STRENGTH: f32 = 16.0;

impl Default for EngineConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a label or a prediction was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineError {
    /// No recent sample has this id.
    UnknownSample(u64),
    /// No sample was predicted yet (a label without a sample id).
    NoSample,
    /// The head, learner or buffer refused.
    Head(Error),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::UnknownSample(id) => write!(
                f,
                "unknown sample id {id}: labels refer to one of the last {RECENT} samples predicted since the service started"
            ),
            EngineError::NoSample => write!(f, "no sample to label: nothing was predicted yet"),
            EngineError::Head(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<Error> for EngineError {
    fn from(e: Error) -> Self {
        EngineError::Head(e)
    }
}

type Learn = Online<Vec<f32>, BUFFER>;

/// The learning core (see the module docs).
#[derive(Debug)]
pub struct Engine {
    live: Learn,
    spare: Learn,
    cfg: EngineConfig,
    dim: usize,
    recent_ids: Vec<u64>,
    recent_x: Vec<f32>,
    recent_len: usize,
    recent_next: usize,
    guard_labels: Vec<u32>,
    guard_x: Vec<f32>,
    guard_accuracy: Option<f32>,
    x: Vec<f32>,
    /// The output layer's features of `x` ([`edgetune::head::Head::features`]).
    features: Vec<f32>,
    probs: Vec<f32>,
    counters: Counters,
    /// The closed-form learner, when it writes the head.
    slda: Option<Slda<Vec<f32>>>,
    /// With it, the other devices' labels as the fleet last sent them.
    fleet: Option<fleet::Fleet>,
    temperature: Temperature<Vec<f32>>,
    /// Per recent slot: the logits predicted, at temperature `recent_t`, over
    /// `recent_classes` classes.
    recent_logits: Vec<f32>,
    recent_classes: Vec<u32>,
    recent_t: Vec<f32>,
    prequential: (u64, u64),
    /// Margins of the recent prequential predictions and whether each was right.
    margins: heapless::Vec<(f32, bool), MARGIN_WINDOW>,
    margin_next: usize,
    uncertain_threshold: f32,
}

fn online(head: Head<Vec<f32>>, cfg: &EngineConfig) -> Result<Learn, Error> {
    let dims = head.dims();
    let learner = Learner::alloc(dims, cfg.learn)?;
    let buffer = SampleBuffer::new(dims.input, vec![0.0; BUFFER * dims.input])?;
    let means = ClassMeans::new(
        dims.input,
        dims.capacity,
        vec![0.0; ClassMeans::<()>::storage_len(dims.input, dims.capacity)],
    )?;
    Online::new(head, learner, buffer, means, cfg.online)
}

impl Engine {
    /// A device that starts from `head` (the bundle's), having learned nothing.
    pub fn new(head: Head<Vec<f32>>, cfg: EngineConfig) -> Result<Engine, Error> {
        let dims = head.dims();
        let live = online(head.clone(), &cfg)?;
        let spare = online(head, &cfg)?;
        let guard_cap = dims.capacity * cfg.guard_per_class;
        Ok(Engine {
            live,
            spare,
            cfg,
            dim: dims.input,
            recent_ids: vec![0; RECENT],
            recent_x: vec![0.0; RECENT * dims.input],
            recent_len: 0,
            recent_next: 0,
            guard_labels: Vec::with_capacity(guard_cap),
            guard_x: Vec::with_capacity(guard_cap * dims.input),
            guard_accuracy: None,
            x: vec![0.0; dims.input],
            features: vec![0.0; dims.feature_width()],
            probs: vec![0.0; dims.capacity],
            counters: Counters {
                labels_per_class: vec![0; dims.capacity],
                ..Counters::default()
            },
            slda: match cfg.learner {
                // With host classes, usable once their statistics are given
                // (Engine::set_stats, Engine::seed; see Engine::settle_learner).
                LearnerKind::Slda => Some(Slda::alloc(
                    dims.feature_width(),
                    dims.capacity,
                    cfg.prior_strength,
                )?),
                _ => None,
            },
            fleet: match cfg.learner {
                LearnerKind::Slda => Some(fleet::Fleet::default()),
                _ => None,
            },
            temperature: Temperature::new(
                CALIBRATION_ROWS,
                dims.capacity,
                vec![0.0; Temperature::<()>::storage_len(CALIBRATION_ROWS, dims.capacity)],
            )?,
            recent_logits: vec![0.0; RECENT * dims.capacity],
            recent_classes: vec![0; RECENT],
            recent_t: vec![1.0; RECENT],
            prequential: (0, 0),
            margins: heapless::Vec::new(),
            margin_next: 0,
            uncertain_threshold: cfg.uncertain_margin,
        })
    }

    /// Which learner writes the head.
    pub fn learner_kind(&self) -> LearnerKind {
        if self.slda.is_some() {
            LearnerKind::Slda
        } else {
            LearnerKind::Gradient
        }
    }

    /// Writes the head from the closed-form learner, when it has every class the head
    /// has; otherwise (a head from the host with no statistics of its classes) the
    /// gradient head takes over.
    fn write_slda_head(&mut self) -> Result<(), Error> {
        let classes = self.live.head().classes();
        let Some(slda) = &self.slda else {
            return Ok(());
        };
        if slda.classes() < classes {
            return Ok(());
        }
        // The head's logits stay raw: the temperature applies to every learner's
        // logits alike, when they become probabilities (Engine::observe).
        slda.write_head(self.live.head_mut(), 1.0)?;
        let bias = self.own_bias();
        if bias != 0.0 {
            let dims = self.live.head().dims();
            let at = dims.out_offset() + dims.capacity * dims.feature_width();
            for c in 0..classes {
                if !self.is_own(c) {
                    continue;
                }
                let b = &mut self.live.head_mut().params_mut()[at + c];
                if *b > UNLABELED_LOGIT {
                    *b += bias;
                }
            }
        }
        Ok(())
    }

    /// After seeding or restoring: a head whose classes the statistics do not cover
    /// stays with the gradient learner, and so does an MLP head whose bundle has no
    /// statistics of its hidden layer (one made before them: the learner would have
    /// only the exemplars' 16 samples a class in that layer's units, no better than
    /// gradient steps in the demo; the gradient head learns, as it did then).
    fn settle_learner(&mut self) {
        let head = self.live.head();
        let Some(slda) = &self.slda else {
            return;
        };
        if slda.classes() < head.classes() {
            log::warn!(
                "engine: the head's classes come without statistics; the gradient head learns"
            );
        } else if head.dims().hidden > 0 && slda.prior() != Prior::Given {
            log::warn!(
                "engine: the bundle's MLP head comes without statistics of its hidden layer \
                 (made before them); the gradient head learns. Train it again with \
                 finetune-head train to learn without forgetting"
            );
        } else {
            return;
        }
        self.slda = None;
        self.fleet = None;
    }

    /// The temperature the head's logits are divided by.
    pub fn temperature(&self) -> f32 {
        self.temperature.get()
    }

    /// Labels of classes the head already had, and how many of them were predicted
    /// right before they were learned.
    pub fn prequential(&self) -> (u64, u64) {
        self.prequential
    }

    /// The closed-form learner, when it writes the head.
    pub fn slda(&self) -> Option<&Slda<Vec<f32>>> {
        self.slda.as_ref()
    }

    /// Gives the next samples ids from `first` on (a new run's ids stay above the last
    /// run's).
    pub fn start_ids_at(&mut self, first: u64) {
        self.counters.next_sample = self.counters.next_sample.max(first);
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Size of the features the closed-form learner keeps statistics of (and that its
    /// fleet states hold): the head's output layer's input, the embedding size for a
    /// linear head, the hidden units of an MLP ([`edgetune::Dims::feature_width`]).
    pub fn learner_dim(&self) -> usize {
        self.live.head().dims().feature_width()
    }

    /// Refuses statistics of other features than those the learner keeps
    /// ([`Engine::learner_dim`]): an MLP head's learner takes its hidden layer's.
    fn check_stats(&self, stats: &edgetune::stats::Stats) -> Result<(), Error> {
        let d = self.learner_dim();
        if stats.mean.len() != d {
            return Err(Error::Length {
                what: "statistics of the head's features",
                expected: d,
                found: stats.mean.len(),
            });
        }
        Ok(())
    }

    /// Classes the head has.
    pub fn classes(&self) -> usize {
        self.live.head().classes()
    }

    /// Most classes the head can have.
    pub fn capacity(&self) -> usize {
        self.live.head().dims().capacity
    }

    /// Counts of what happened.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Accuracy on the guard samples, when there are any.
    pub fn guard_accuracy(&self) -> Option<f32> {
        self.guard_accuracy
    }

    /// Guard samples held.
    pub fn guard_len(&self) -> usize {
        self.guard_labels.len()
    }

    /// The learner (head, optimizer, buffer, class means).
    pub fn online(&self) -> &Online<Vec<f32>, BUFFER> {
        &self.live
    }
}
