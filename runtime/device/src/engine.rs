//! The device's learning core: predictions on embeddings, labels, the regression guard
//! and the recent samples that labels refer to. All of its memory is allocated when it is
//! made: predicting and learning from a label allocate nothing (the `serve` benchmark
//! counts).
//!
//! **Learners.** By default ([`LearnerKind::Slda`]) the head is written after every
//! label from closed-form statistics ([`edgetune::slda`]: class means and a shared
//! covariance with the bundle's as prior), which learn from one label, forget nothing
//! and do not depend on the order of labels. This was decided by the learning-quality
//! benchmark (`cargo run -p benches --bin learning`): on every backbone there it beat
//! the gradient head with replay at 1 to 10 labels per class, after a pass over a
//! training set, and on forgetting. [`LearnerKind::Gradient`] keeps the gradient head
//! with replay ([`Online::learn`]) for heads the statistics cannot describe (an MLP
//! head, or a bundle whose classes come with neither statistics nor exemplars).
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

use crate::state::{BufferImage, Counters, DeviceState, Learning, Origin, Samples};
use edgetune::buffer::SampleBuffer;
use edgetune::calibrate::Temperature;
use edgetune::classes::ClassMeans;
use edgetune::error::Error;
use edgetune::head::{Head, Prediction, top_k};
use edgetune::learn::{Config, Learner};
use edgetune::math;
use edgetune::online::{Learned, Online, OnlineConfig};
use edgetune::persist;
use edgetune::slda::Slda;
use edgetune::stats::Stats;

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
}

impl EngineConfig {
    /// Adam at 0.003 with a little weight decay, 3 steps of 24 replayed samples, 4 guard
    /// samples per class, refuse drops of more than 20 points once 4 are held,
    /// uncertain below a margin of 0.3.
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
    };
}

/// Default strength of the covariance prior (pseudo-samples): see
/// [`EngineConfig::prior_strength`] and the learning benchmark.
pub const PRIOR_STRENGTH: f32 = 16.0;

impl Default for EngineConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The sample's id, for a label.
    pub sample: u64,
    /// The prediction; `None` when the head has no class yet.
    pub prediction: Option<Prediction>,
    /// The most probable classes with their probabilities.
    pub top: heapless::Vec<(usize, f32), TOP_K>,
    /// Distance (1 − cosine) to the nearest labeled class mean, if any class has one.
    pub novelty: Option<f32>,
    /// Whether to ask for a label.
    pub uncertain: bool,
}

/// What a label did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The head learned it.
    Learned {
        /// What learning did.
        learned: Learned,
        /// Guard accuracy before and after, when the guard has samples.
        guard: Option<(f32, f32)>,
    },
    /// The regression guard undid the update.
    Refused {
        /// Guard accuracy before.
        before: f32,
        /// Guard accuracy the update would have left.
        after: f32,
    },
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

/// What the prediction made before a label said ([`Engine::label`]).
#[derive(Clone, Copy)]
struct Before {
    /// Classes the head had then.
    classes: usize,
    /// It was right.
    right: bool,
    /// Its top-1 minus top-2 probability.
    margin: f32,
    /// Its cross-entropy for the label.
    loss: f32,
}

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
    probs: Vec<f32>,
    counters: Counters,
    /// The closed-form learner, when it writes the head.
    slda: Option<Slda<Vec<f32>>>,
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
            probs: vec![0.0; dims.capacity],
            counters: Counters {
                labels_per_class: vec![0; dims.capacity],
                ..Counters::default()
            },
            slda: match cfg.learner {
                // With host classes, usable once their statistics are given
                // (Engine::set_stats, Engine::seed; see Engine::settle_learner).
                LearnerKind::Slda if dims.hidden == 0 => {
                    Some(Slda::alloc(dims.input, dims.capacity, cfg.prior_strength)?)
                }
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

    /// Gives the closed-form learner the bundle's embedding statistics: its units and
    /// covariance prior and, for a head trained on the host, each class's count and
    /// mean. Call on a fresh engine, before [`Engine::seed`].
    pub fn set_stats(&mut self, stats: &Stats) -> Result<(), Error> {
        let Some(slda) = &mut self.slda else {
            return Ok(());
        };
        let d = self.dim;
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
        slda.write_head(self.live.head_mut(), 1.0)
    }

    /// After seeding or restoring: a head whose classes the statistics do not cover
    /// stays with the gradient learner.
    fn settle_learner(&mut self) {
        let classes = self.live.head().classes();
        if self.slda.as_ref().is_some_and(|s| s.classes() < classes) {
            log::warn!(
                "engine: the head's classes come without statistics; the gradient head learns"
            );
            self.slda = None;
        }
    }

    /// A device that continues from `state`; `bundle_head` is the head to start from
    /// when the state has none (after a reset), `stats` the bundle's embedding
    /// statistics. Errors name what does not fit.
    pub fn restore(
        state: &DeviceState,
        bundle_head: &Head<Vec<f32>>,
        stats: Option<&Stats>,
        cfg: EngineConfig,
    ) -> Result<Engine, String> {
        let dims = bundle_head.dims();
        let mut head = bundle_head.clone();
        let mut learner = Learner::alloc(dims, cfg.learn).map_err(|e| e.to_string())?;
        if let Some(bytes) = &state.head {
            persist::decode_into(bytes, &mut head, Some(&mut learner))
                .map_err(|e| format!("its head does not fit the bundle's: {e}"))?;
            // The stored optimizer state is kept; the rate and steps come from this run.
            let mut learn = cfg.learn;
            learn.optimizer = learner.config().optimizer;
            learner
                .set_config(learn)
                .map_err(|e| format!("its optimizer cannot continue: {e}"))?;
        }
        if state.head.is_some() && state.classes.len() != head.classes() {
            return Err(format!(
                "it names {} classes but its head has {}",
                state.classes.len(),
                head.classes()
            ));
        }
        let b = &state.buffer;
        let d = dims.input;
        if b.features.len() != b.slots.len() * d {
            return Err("its replay buffer's samples do not match their count".into());
        }
        let mut storage = vec![0.0; BUFFER * d];
        storage[..b.features.len()].copy_from_slice(&b.features);
        let slots: Vec<(usize, u64)> = b.slots.iter().map(|&(l, s)| (l as usize, s)).collect();
        let order: Vec<usize> = b.class_order.iter().map(|&l| l as usize).collect();
        if slots.iter().any(|&(l, _)| l >= head.classes()) {
            return Err("its replay buffer holds a class the head does not have".into());
        }
        let buffer = SampleBuffer::restore(d, storage, &slots, &order, b.next_seq)
            .map_err(|e| format!("its replay buffer: {e}"))?;
        let means_len = ClassMeans::<()>::storage_len(d, dims.capacity);
        let means = if state.means.is_empty() {
            ClassMeans::new(d, dims.capacity, vec![0.0; means_len])
        } else if state.means.len() == means_len {
            ClassMeans::restore(d, dims.capacity, state.means.clone())
        } else {
            return Err("its class means have another size than the bundle's".into());
        }
        .map_err(|e| format!("its class means: {e}"))?;
        let g = &state.guard;
        if g.features.len() != g.labels.len() * d
            || g.labels.len() > dims.capacity * cfg.guard_per_class
            || g.labels.iter().any(|&l| l as usize >= head.classes())
            || !edgetune::math::all_finite(&g.features)
        {
            return Err("its guard samples are malformed".into());
        }
        let mut engine = Engine::new(head.clone(), cfg).map_err(|e| e.to_string())?;
        engine.live =
            Online::new(head, learner, buffer, means, cfg.online).map_err(|e| e.to_string())?;
        engine.live.set_replay_state(state.replay_rng);
        engine
            .spare
            .copy_from(&engine.live)
            .map_err(|e| e.to_string())?;
        engine.guard_labels.extend_from_slice(&g.labels);
        engine.guard_x.extend_from_slice(&g.features);
        engine.guard_accuracy = engine.measure_guard();
        let mut counters = state.counters.clone();
        counters.labels_per_class.resize(dims.capacity, 0);
        engine.counters = counters;
        if state.head.is_some() {
            engine.restore_learning(&state.learning, stats)?;
        }
        Ok(engine)
    }

    /// The closed-form learner and the calibration of a restored state (one with a
    /// head: after a reset the bundle's statistics and exemplars start over,
    /// [`Engine::set_stats`] and [`Engine::seed`]). A state
    /// without statistics (format version 1, or learned by the gradient head) rebuilds
    /// them from its replay buffer, the labeled samples it still has.
    fn restore_learning(&mut self, l: &Learning, stats: Option<&Stats>) -> Result<(), String> {
        let (rows, next, t, values) = &l.calibration;
        if !values.is_empty() {
            self.temperature
                .restore(*rows as usize, *next as usize, *t, values)
                .map_err(|e| format!("its calibration: {e}"))?;
        }
        self.prequential = l.prequential;
        let Some(slda) = &mut self.slda else {
            return Ok(());
        };
        if let Some(stats) = stats {
            slda.set_stats(
                &stats.mean,
                &stats.std,
                &stats.covariance,
                self.cfg.prior_strength,
            )
            .map_err(|e| format!("the bundle's embedding statistics: {e}"))?;
        }
        if !l.slda.is_empty() {
            slda.restore(&l.slda)
                .map_err(|e| format!("its class statistics: {e}"))?;
        } else {
            let buffer = self.live.buffer();
            for i in 0..buffer.len() {
                if let Some((x, y)) = buffer.get(i) {
                    // In class order: a class first seen here is the next index.
                    if y <= slda.classes() {
                        slda.learn(x, y)
                            .map_err(|e| format!("its replay buffer: {e}"))?;
                    }
                }
            }
        }
        self.settle_learner();
        self.write_slda_head().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Starts from the host's exemplars ([`edgetune::bundle::Exemplars`]): `embeddings`
    /// holds the `replay` samples then the `guard` ones, `dim` values each, classed by
    /// the two label lists. Replay exemplars go into the replay buffer and the class
    /// means; guard exemplars (up to [`EngineConfig::guard_per_class`] a class) into the
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
                slda.learn(x, y as usize)?;
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

    /// What to write to disk, with the class names and latencies the caller keeps.
    pub fn to_state(
        &self,
        backbone: u32,
        classes: &[String],
        latency_us: &[u32],
        origin: Origin,
    ) -> DeviceState {
        let buffer = self.live.buffer();
        let mut features = Vec::with_capacity(buffer.len() * self.dim);
        for (x, _) in buffer.iter() {
            features.extend_from_slice(x);
        }
        DeviceState {
            backbone,
            classes: classes.to_vec(),
            head: Some(
                persist::encode_to_vec(self.live.head(), Some(self.live.learner()))
                    .unwrap_or_default(),
            ),
            buffer: BufferImage {
                slots: buffer.slots().map(|(l, s)| (l as u32, s)).collect(),
                class_order: buffer.classes().map(|(l, _)| l as u32).collect(),
                next_seq: buffer.next_seq(),
                features,
            },
            means: self.live.means().as_slice().to_vec(),
            guard: Samples {
                labels: self.guard_labels.clone(),
                features: self.guard_x.clone(),
            },
            replay_rng: self.live.replay_state(),
            counters: self.counters.clone(),
            guard_accuracy: self.guard_accuracy,
            latency_us: latency_us.to_vec(),
            origin,
            learning: {
                let (rows, next, t, values) = self.temperature.parts();
                Learning {
                    slda: self
                        .slda
                        .as_ref()
                        .map_or(Vec::new(), |s| s.state().to_vec()),
                    calibration: (rows as u32, next as u32, t, values.to_vec()),
                    prequential: self.prequential,
                }
            },
        }
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

    /// Predicts the class of embedding `x` and remembers it as a new sample.
    pub fn observe(&mut self, x: &[f32]) -> Result<Observation, EngineError> {
        edgetune::error::check_vector("embedding", x, self.dim)?;
        let classes = self.classes();
        let slot = self.recent_next;
        let cap = self.capacity();
        let (prediction, top) = if classes == 0 {
            (None, heapless::Vec::new())
        } else {
            let logits = &mut self.recent_logits[slot * cap..(slot + 1) * cap];
            self.live.head().logits(x, logits)?;
            // Calibrated: softmax(logits / T).
            let t = self.temperature.get();
            let probs = &mut self.probs[..classes];
            for (p, &z) in probs.iter_mut().zip(&logits[..classes]) {
                *p = z / t;
            }
            math::softmax_in_place(probs);
            (Some(Prediction::from_probs(probs)), top_k::<TOP_K>(probs))
        };
        self.recent_classes[slot] = classes as u32;
        self.recent_t[slot] = self.temperature.get();
        let novelty = self.live.novelty(x).map(|(_, d)| d);
        let sample = self.counters.next_sample;
        self.counters.next_sample += 1;
        self.counters.predictions += 1;
        self.recent_ids[slot] = sample;
        self.recent_x[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(x);
        self.recent_next = (slot + 1) % RECENT;
        self.recent_len = (self.recent_len + 1).min(RECENT);
        let uncertain = prediction.is_none_or(|p| p.is_uncertain(self.uncertain_threshold));
        Ok(Observation {
            sample,
            prediction,
            top,
            novelty,
            uncertain,
        })
    }

    /// The id of the most recent sample.
    pub fn last_sample(&self) -> Option<u64> {
        (self.recent_len > 0).then(|| self.recent_ids[(self.recent_next + RECENT - 1) % RECENT])
    }

    fn recent_slot(&self, sample: u64) -> Option<usize> {
        (0..self.recent_len)
            .map(|k| (self.recent_next + RECENT - 1 - k) % RECENT)
            .find(|&i| self.recent_ids[i] == sample)
    }

    /// Checks a label for `sample` (the most recent when `None`) and class `class` (a
    /// class index, or [`Engine::classes`] to add one) without changing anything:
    /// the sample's id.
    pub fn check_label(&self, sample: Option<u64>, class: usize) -> Result<u64, EngineError> {
        let id = match sample {
            Some(id) => id,
            None => self.last_sample().ok_or(EngineError::NoSample)?,
        };
        if self.recent_slot(id).is_none() {
            return Err(EngineError::UnknownSample(id));
        }
        let classes = self.classes();
        if class > classes {
            return Err(Error::UnknownClass { class, classes }.into());
        }
        if class == classes && classes >= self.capacity() {
            return Err(Error::Capacity {
                what: "classes",
                requested: classes + 1,
                capacity: self.capacity(),
            }
            .into());
        }
        Ok(id)
    }

    /// Learns the label `class` for `sample` (see [`Engine::check_label`]). On an error
    /// nothing changed.
    pub fn label(&mut self, sample: Option<u64>, class: usize) -> Result<Outcome, EngineError> {
        let id = self.check_label(sample, class)?;
        self.settle_learner();
        let slot = self.recent_slot(id).ok_or(EngineError::UnknownSample(id))?;
        let d = self.dim;
        self.x
            .copy_from_slice(&self.recent_x[slot * d..(slot + 1) * d]);
        if math::sq_norm(&self.x) == 0.0 {
            return Err(Error::Config {
                what: "an all-zero embedding has no direction to learn from",
            }
            .into());
        }
        let measured = self.measure_before(slot, class);
        let loss = measured.map_or(f32::NAN, |m| m.loss);
        let outcome = if self.slda.is_some() {
            self.learn_slda(class, loss)?
        } else {
            self.learn_gradient(class)?
        };
        // Only once the label is taken: on an error nothing changed.
        if let Some(m) = measured {
            let cap = self.capacity();
            let logits = &self.recent_logits[slot * cap..slot * cap + m.classes];
            self.prequential.0 += u64::from(m.right);
            self.prequential.1 += 1;
            self.temperature.record(logits, 1.0, class);
            self.note_margin(m.margin, m.right);
        }
        Ok(outcome)
    }

    /// The prediction made for recent sample `slot` before its label `class` was
    /// learned, a held-out measurement; `None` for a class the head did not have then.
    fn measure_before(&mut self, slot: usize, class: usize) -> Option<Before> {
        let classes = self.recent_classes[slot] as usize;
        if class >= classes {
            return None;
        }
        let cap = self.capacity();
        let logits = &self.recent_logits[slot * cap..slot * cap + classes];
        let right = math::argmax(logits).is_some_and(|(c, _)| c == class);
        let t = self.recent_t[slot];
        let p = &mut self.probs[..classes];
        for (p, &z) in p.iter_mut().zip(logits) {
            *p = z / t;
        }
        let loss = math::log_sum_exp(p) - p[class];
        math::softmax_in_place(p);
        Some(Before {
            classes,
            right,
            margin: Prediction::from_probs(p).margin,
            loss,
        })
    }

    /// A label for the closed-form learner (in `self.x`): its statistics, then the head
    /// written from them. Never refused: rolling back would make the statistics depend
    /// on the order of the labels.
    fn learn_slda(&mut self, class: usize, loss: f32) -> Result<Outcome, EngineError> {
        let Some(slda) = &mut self.slda else {
            return Err(Error::Config {
                what: "no closed-form learner",
            }
            .into());
        };
        let added = slda.learn(&self.x, class)?;
        if added {
            self.live.head_mut().add_class()?;
        }
        let stored = self.live.remember(&self.x, class)?;
        self.write_slda_head()?;
        let before = self.guard_accuracy;
        self.guard_accuracy = self.measure_guard();
        self.count_label(class);
        self.counters.updates += 1;
        Ok(Outcome::Learned {
            learned: Learned {
                class,
                added,
                stored,
                loss,
            },
            guard: before.zip(self.guard_accuracy),
        })
    }

    /// A label for the gradient head (in `self.x`): a few steps with replay, undone when
    /// the guard's accuracy falls by more than the margin.
    fn learn_gradient(&mut self, class: usize) -> Result<Outcome, EngineError> {
        self.spare.copy_from(&self.live)?;
        let learned = self.live.learn(&self.x, class)?;
        let before = self.guard_accuracy;
        let after = self.measure_guard();
        self.count_label(class);
        if let (Some(b), Some(a)) = (before, after)
            && self.guard_labels.len() >= self.cfg.guard_min
            && a < b - self.cfg.guard_margin
        {
            self.live.copy_from(&self.spare)?;
            self.counters.refused += 1;
            return Ok(Outcome::Refused {
                before: b,
                after: a,
            });
        }
        self.guard_accuracy = after;
        self.counters.updates += 1;
        Ok(Outcome::Learned {
            learned,
            guard: before.zip(after),
        })
    }

    /// The margin below which a prediction is flagged `uncertain`: at least
    /// [`EngineConfig::uncertain_margin`], and, from the recent prequential predictions
    /// (the last [`MARGIN_WINDOW`]), the margin below which [`CATCH`] of their errors
    /// lay, as long as that flags between 2 and 15 % of them (else the margin of that
    /// share): the device asks about the least sure samples, about as many as it needs
    /// to catch most of its mistakes.
    pub fn uncertain_threshold(&self) -> f32 {
        self.uncertain_threshold
    }

    fn note_margin(&mut self, margin: f32, right: bool) {
        if self.margins.is_full() {
            self.margins[self.margin_next] = (margin, right);
        } else {
            let _ = self.margins.push((margin, right));
        }
        self.margin_next = (self.margin_next + 1) % MARGIN_WINDOW;
        let n = self.margins.len();
        if n < 16 {
            return;
        }
        let mut sorted = [0.0f32; MARGIN_WINDOW];
        let mut errors = [0.0f32; MARGIN_WINDOW];
        let mut wrong = 0;
        for (o, &(m, right)) in sorted.iter_mut().zip(&self.margins) {
            *o = m;
            if !right {
                errors[wrong] = m;
                wrong += 1;
            }
        }
        let sorted = &mut sorted[..n];
        sorted.sort_unstable_by(f32::total_cmp);
        let errors = &mut errors[..wrong];
        errors.sort_unstable_by(f32::total_cmp);
        // The share of predictions below the margin that catches CATCH of the errors.
        let share = match errors.len() {
            0 => 0.0,
            w => {
                let k = ((CATCH * w as f32).ceil() as usize).clamp(1, w);
                let at = errors[k - 1];
                sorted.partition_point(|&m| m <= at) as f32 / n as f32
            }
        };
        let share = share.clamp(0.02, 0.15);
        let k = ((share * n as f32) as usize).min(n - 1);
        self.uncertain_threshold = sorted[k].max(self.cfg.uncertain_margin);
    }

    fn count_label(&mut self, class: usize) {
        self.counters.labels += 1;
        self.counters.labels_per_class[class] += 1;
    }

    fn measure_guard(&mut self) -> Option<f32> {
        let n = self.guard_labels.len();
        if n == 0 || self.classes() == 0 {
            return None;
        }
        let mut hits = 0;
        for (x, &y) in self.guard_x.chunks_exact(self.dim).zip(&self.guard_labels) {
            if let Ok(p) = self.live.predict(x, &mut self.probs) {
                hits += usize::from(p.class == y as usize);
            }
        }
        Some(hits as f32 / n as f32)
    }
}
