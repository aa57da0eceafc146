//! The engine to and from a [`DeviceState`]: what is written to the state directory, and
//! an engine that continues from it, each part checked against the bundle it is loaded
//! with.

use super::{BUFFER, Engine, EngineConfig};
use crate::state::{BufferImage, DeviceState, FleetPart, Learning, Origin, Samples};
use edgetune::buffer::SampleBuffer;
use edgetune::classes::ClassMeans;
use edgetune::head::Head;
use edgetune::learn::Learner;
use edgetune::online::Online;
use edgetune::persist;
use edgetune::stats::Stats;

impl Engine {
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
        let (head, learner) = restore_head(state, bundle_head, cfg)?;
        let buffer = restore_buffer(&state.buffer, dims.input, head.classes())?;
        let means = restore_means(&state.means, dims.input, dims.capacity)?;
        let g = &state.guard;
        check_guard(
            g,
            dims.input,
            dims.capacity * cfg.guard_per_class,
            head.classes(),
        )?;
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
            engine.restore_learning(&state.learning, &state.fleet, stats)?;
        }
        Ok(engine)
    }

    /// The closed-form learner and the calibration of a restored state (one with a
    /// head: after a reset the bundle's statistics and exemplars start over,
    /// [`Engine::set_stats`] and [`Engine::seed`]). A state
    /// without statistics (format version 1, or learned by the gradient head) rebuilds
    /// them from its replay buffer, the labeled samples it still has.
    fn restore_learning(
        &mut self,
        l: &Learning,
        fleet: &FleetPart,
        stats: Option<&Stats>,
    ) -> Result<(), String> {
        let (rows, next, t, values) = &l.calibration;
        if !values.is_empty() {
            self.temperature
                .restore(*rows as usize, *next as usize, *t, values)
                .map_err(|e| format!("its calibration: {e}"))?;
        }
        self.prequential = l.prequential;
        if let Some(stats) = stats {
            self.check_stats(stats)
                .map_err(|e| format!("the bundle's statistics: {e}"))?;
        }
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
            .map_err(|e| format!("the bundle's statistics: {e}"))?;
        }
        let rebuilt = l.slda.is_empty();
        if !rebuilt {
            slda.restore(&l.slda)
                .map_err(|e| format!("its class statistics: {e}"))?;
        } else {
            let buffer = self.live.buffer();
            for i in 0..buffer.len() {
                if let Some((x, y)) = buffer.get(i) {
                    // In class order: a class first seen here is the next index.
                    if y <= slda.classes() {
                        self.live
                            .head()
                            .features(x, &mut self.features)
                            .and_then(|()| slda.learn(&self.features, y))
                            .map_err(|e| format!("its replay buffer: {e}"))?;
                    }
                }
            }
        }
        self.restore_fleet(fleet)?;
        self.settle_learner();
        // A saved head was written from the statistics saved with it: it is kept, so
        // that a restart answers exactly as before. (Above `slda::EXACT_DIM` features
        // the inverse recomputed here differs in its last bits from the one updated
        // label by label.) Statistics rebuilt from the buffer write the head.
        if rebuilt {
            self.write_slda_head().map_err(|e| e.to_string())?;
        }
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
            fleet: self
                .fleet
                .as_ref()
                .map_or_else(FleetPart::default, |f| FleetPart {
                    others: f.others.clone(),
                    others_labels: f.others_labels,
                    own_v3: f.own_v3.clone(),
                    own_bias: f.own_bias,
                }),
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
}

/// A head with its optimizer state.
type HeadAndOptimizer = (Head<Vec<f32>>, Learner<Vec<f32>>);

/// The head and its optimizer of a state (the bundle's head after a reset), with the
/// learning rate and steps of this run.
fn restore_head(
    state: &DeviceState,
    bundle_head: &Head<Vec<f32>>,
    cfg: EngineConfig,
) -> Result<HeadAndOptimizer, String> {
    let mut head = bundle_head.clone();
    let mut learner = Learner::alloc(head.dims(), cfg.learn).map_err(|e| e.to_string())?;
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
    Ok((head, learner))
}

/// The replay buffer of a state, of `d`-value samples of the head's `classes`.
fn restore_buffer(
    b: &BufferImage,
    d: usize,
    classes: usize,
) -> Result<SampleBuffer<Vec<f32>, BUFFER>, String> {
    if b.features.len() != b.slots.len() * d {
        return Err("its replay buffer's samples do not match their count".into());
    }
    let mut storage = vec![0.0; BUFFER * d];
    storage[..b.features.len()].copy_from_slice(&b.features);
    let slots: Vec<(usize, u64)> = b.slots.iter().map(|&(l, s)| (l as usize, s)).collect();
    let order: Vec<usize> = b.class_order.iter().map(|&l| l as usize).collect();
    if slots.iter().any(|&(l, _)| l >= classes) {
        return Err("its replay buffer holds a class the head does not have".into());
    }
    SampleBuffer::restore(d, storage, &slots, &order, b.next_seq)
        .map_err(|e| format!("its replay buffer: {e}"))
}

/// The class means of a state (empty: none yet).
fn restore_means(means: &[f32], d: usize, capacity: usize) -> Result<ClassMeans<Vec<f32>>, String> {
    let means_len = ClassMeans::<()>::storage_len(d, capacity);
    if means.is_empty() {
        ClassMeans::new(d, capacity, vec![0.0; means_len])
    } else if means.len() == means_len {
        ClassMeans::restore(d, capacity, means.to_vec())
    } else {
        return Err("its class means have another size than the bundle's".into());
    }
    .map_err(|e| format!("its class means: {e}"))
}

/// Checks a state's guard samples: `d` finite values each, at most `most`, of the head's
/// `classes`.
fn check_guard(g: &Samples, d: usize, most: usize, classes: usize) -> Result<(), String> {
    if g.features.len() != g.labels.len() * d
        || g.labels.len() > most
        || g.labels.iter().any(|&l| l as usize >= classes)
        || !edgetune::math::all_finite(&g.features)
    {
        return Err("its guard samples are malformed".into());
    }
    Ok(())
}
