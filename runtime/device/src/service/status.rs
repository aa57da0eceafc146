//! The status of a device (`edgetune status`, the `{"status": true}` request): its state
//! on disk, what it counted, its guard, learner and calibration, request latencies, and
//! per class its labels, replayed and guard samples. Shown as JSON or as text.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::state::{DeviceState, Origin};

/// What the status shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The state directory.
    pub state_dir: PathBuf,
    /// The state's sequence number (0: none written yet).
    pub state: u64,
    /// How it came about.
    pub origin: String,
    /// States on disk.
    pub states_on_disk: Vec<u64>,
    /// States kept by a reset or rollback, never pruned.
    pub pinned: Vec<u64>,
    /// Per class: name, labels received, samples in the replay buffer, guard samples.
    pub classes: Vec<ClassStatus>,
    /// Predictions made.
    pub predictions: u64,
    /// Labels received.
    pub labels: u64,
    /// Updates kept.
    pub updates: u64,
    /// Updates the guard refused.
    pub refused: u64,
    /// Guard accuracy.
    pub guard_accuracy: Option<f32>,
    /// Guard samples.
    pub guard_samples: usize,
    /// Which learner writes the head: `"slda"` (closed-form) or `"gradient"`.
    pub learner: &'static str,
    /// Share of labels (of classes the head had) whose prediction before learning
    /// them was right: accuracy measured on samples not yet learned.
    pub prequential_accuracy: Option<f32>,
    /// Labels that measured it.
    pub prequential_labels: u64,
    /// Temperature of the probabilities, fitted to those predictions.
    pub temperature: f32,
    /// Median request latency, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile request latency, ms.
    pub p99_ms: Option<f64>,
}

/// One class in the status.
#[derive(Debug, Clone, Serialize)]
pub struct ClassStatus {
    /// Its name.
    pub name: String,
    /// Labels received.
    pub labels: u32,
    /// Samples in the replay buffer.
    pub buffered: usize,
    /// Samples in the guard.
    pub guard: usize,
}

impl Status {
    /// The status of a stored state.
    pub fn of(
        dir: &Path,
        seq: u64,
        state: &DeviceState,
        on_disk: Vec<u64>,
        pinned: Vec<u64>,
    ) -> Status {
        let buffered = |c: usize| {
            state
                .buffer
                .slots
                .iter()
                .filter(|s| s.0 as usize == c)
                .count()
        };
        let classes = state
            .classes
            .iter()
            .enumerate()
            .map(|(c, name)| ClassStatus {
                name: name.clone(),
                labels: state.counters.labels_per_class.get(c).copied().unwrap_or(0),
                buffered: buffered(c),
                guard: state
                    .guard
                    .labels
                    .iter()
                    .filter(|&&l| l as usize == c)
                    .count(),
            })
            .collect();
        let mut lat: Vec<u32> = state.latency_us.clone();
        lat.sort_unstable();
        let pct = |q: f64| {
            (!lat.is_empty()).then(|| {
                let i = ((lat.len() - 1) as f64 * q).round() as usize;
                f64::from(lat[i]) / 1000.0
            })
        };
        Status {
            state_dir: dir.to_path_buf(),
            state: seq,
            origin: match state.origin {
                Origin::Learned => "learned".into(),
                Origin::Reset => "reset to the bundle's head".into(),
                Origin::Rollback(n) => format!("rollback to state {n}"),
            },
            states_on_disk: on_disk,
            pinned,
            classes,
            predictions: state.counters.predictions,
            labels: state.counters.labels,
            updates: state.counters.updates,
            refused: state.counters.refused,
            guard_accuracy: state.guard_accuracy,
            guard_samples: state.guard.labels.len(),
            learner: if state.learning.slda.is_empty() && state.head.is_some() {
                "gradient"
            } else {
                "slda"
            },
            prequential_accuracy: {
                let (right, of) = state.learning.prequential;
                (of > 0).then(|| right as f32 / of as f32)
            },
            prequential_labels: state.learning.prequential.1,
            temperature: state.learning.calibration.2,
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "state dir   {}", self.state_dir.display())?;
        writeln!(
            f,
            "state       {} ({}); on disk: {:?}, pinned: {:?}",
            self.state, self.origin, self.states_on_disk, self.pinned
        )?;
        writeln!(
            f,
            "counts      {} predictions, {} labels, {} updates, {} refused by the guard",
            self.predictions, self.labels, self.updates, self.refused
        )?;
        match self.guard_accuracy {
            Some(a) => writeln!(
                f,
                "guard       {:.1}% on {} held-out samples",
                a * 100.0,
                self.guard_samples
            )?,
            None => writeln!(f, "guard       no held-out samples yet")?,
        }
        match self.prequential_accuracy {
            Some(a) => writeln!(
                f,
                "learning    {}; {:.1}% of {} labels predicted right before they were learned; temperature {:.2}",
                self.learner,
                a * 100.0,
                self.prequential_labels,
                self.temperature
            )?,
            None => writeln!(
                f,
                "learning    {}; no label of a known class yet",
                self.learner
            )?,
        }
        match (self.p50_ms, self.p99_ms) {
            (Some(a), Some(b)) => writeln!(f, "latency     p50 {a:.2} ms, p99 {b:.2} ms")?,
            _ => writeln!(f, "latency     no requests yet")?,
        }
        writeln!(f, "classes     {}", self.classes.len())?;
        for c in &self.classes {
            writeln!(
                f,
                "  {:<24} {:>6} labels {:>5} in replay {:>3} in guard",
                c.name, c.labels, c.buffered, c.guard
            )?;
        }
        Ok(())
    }
}
