//! `finetune-head demo`: the most end-to-end run that exists today, on data the
//! repository ships (models/digits, UCI handwritten digits, 8×8 images as 64 features).
//!
//! 1. On the host, a linear head is trained on digits 0–4 (mini-batch Adam, cosine
//!    schedule) and encoded in the persistence format, as a bundle would carry it.
//! 2. A simulated device decodes that head, keeps a few host samples per known class as
//!    replay exemplars, and then receives labeled samples of digits 5–9 one at a time,
//!    as a user would label them: it predicts each first (was it right?), then learns
//!    it — an unknown digit adds a class, imprinted from that one sample.
//! 3. The device persists its state after every label and reloads it at the end.
//!
//! Until the backbone issue lands there is no network in front of the head: the features
//! are the pixels, as on a microcontroller fed by a DSP front end.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use edgetune::buffer::SampleBuffer;
use edgetune::classes::ClassMeans;
use edgetune::learn::{Decay, Schedule};
use edgetune::online::{Online, OnlineConfig};
use edgetune::persist;
use edgetune::rng::Rng;
use edgetune::{Config, Dims, Head, Learner, Prediction};

use crate::data::{Dataset, read_csv};

/// The digits a device learns after deployment.
const NEW: std::ops::Range<usize> = 5..10;
/// Replay buffer capacity on the device.
const BUFFER: usize = 200;

/// Knobs of the demo.
#[derive(Debug, Clone)]
pub struct Options {
    /// Labels the device receives per new digit.
    pub labels_per_class: usize,
    /// Host samples per known digit kept on the device for replay.
    pub exemplars_per_class: usize,
    /// Seed for the split and the order of the stream.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            labels_per_class: 20,
            exemplars_per_class: 20,
            seed: 1,
        }
    }
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Host head's test accuracy on digits 0–4.
    pub host_accuracy_old: f64,
    /// Device accuracy on the whole 0–9 test set before any label (it knows 0–4 only).
    pub before_all: f64,
    /// ... after the labels.
    pub after_all: f64,
    /// ... on 0–4 after the labels (forgetting shows here).
    pub after_old: f64,
    /// ... on 5–9 after the labels.
    pub after_new: f64,
    /// Fraction of streamed samples predicted right before their label arrived, over the
    /// second half of the stream.
    pub online_accuracy_late: f64,
    /// Labels the device learned from.
    pub labels: usize,
    /// Test samples.
    pub test_samples: usize,
    /// Median time of one prediction, µs.
    pub predict_us: f64,
    /// Median time to learn one label (imprint, replay steps), µs.
    pub learn_us: f64,
    /// Median time to encode the persisted state, µs.
    pub persist_us: f64,
    /// Bytes of persisted head + optimizer state.
    pub state_bytes: usize,
}

/// Fraction of `data` that `predict` gets right.
fn accuracy(
    data: &Dataset,
    predict: impl Fn(&[f32], &mut [f32]) -> edgetune::Result<Prediction>,
) -> f64 {
    let mut probs = [0.0f32; 10];
    let hits = data
        .x
        .iter()
        .zip(&data.y)
        .filter(|(x, y)| predict(x, &mut probs).is_ok_and(|p| p.class == **y))
        .count();
    hits as f64 / data.len().max(1) as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the demo on the digits CSV at `data`.
pub fn run(data: &Path, opts: &Options) -> Result<Report> {
    let digits = read_csv(data, 1.0 / 16.0).context("loading the demo data")?;
    ensure!(
        digits.dim() == 64,
        "{}: expected 64 features per digit, found {}",
        data.display(),
        digits.dim()
    );
    let (train, test) = digits.stratified_split(0.3, opts.seed);
    let old_train = train.select(|y| y < NEW.start, |y| y);
    let old_test = test.select(|y| y < NEW.start, |y| y);
    let new_train = train.select(|y| NEW.contains(&y), |y| y);
    let new_test = test.select(|y| NEW.contains(&y), |y| y);

    // Host: train on 0–4.
    let dims = Dims::linear(64, 10);
    let epochs = 30;
    let batch = 16;
    let total = (epochs * old_train.len()).div_ceil(batch) as u32;
    let cfg = Config {
        lr: 0.05,
        weight_decay: 1e-4,
        schedule: Schedule {
            warmup: 10,
            decay: Decay::Cosine {
                total,
                min_factor: 0.02,
            },
        },
        ..Config::DEFAULT
    };
    let mut head = Head::alloc(dims, NEW.start)?;
    let mut learner = Learner::alloc(dims, cfg)?;
    let mut rng = Rng::new(opts.seed);
    let mut order: Vec<usize> = (0..old_train.len()).collect();
    for _ in 0..epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for chunk in order.chunks(batch) {
            learner.step_batch(
                &mut head,
                chunk
                    .iter()
                    .map(|&i| (old_train.x[i].as_slice(), old_train.y[i])),
            )?;
        }
    }
    let shipped = persist::encode_to_vec(&head, None::<&Learner<Vec<f32>>>)?;

    // Device: load the head, keep exemplars, then learn from labels one at a time.
    let device_cfg = Config {
        lr: 0.02,
        weight_decay: 1e-4,
        ..Config::DEFAULT
    };
    let head = persist::decode_head(&shipped).context("device: loading the shipped head")?;
    let learner = Learner::alloc(dims, device_cfg)?;
    let buffer = SampleBuffer::<_, BUFFER>::new(64, vec![0.0; BUFFER * 64])?;
    let means = ClassMeans::new(64, 10, vec![0.0; ClassMeans::<()>::storage_len(64, 10)])?;
    let online_cfg = OnlineConfig {
        replay: 16,
        steps: 2,
        seed: opts.seed,
    };
    let mut device = Online::new(head, learner, buffer, means, online_cfg)?;
    for c in 0..NEW.start {
        let mut kept = 0;
        for (x, &y) in old_train.x.iter().zip(&old_train.y) {
            if y == c && kept < opts.exemplars_per_class {
                device.remember(x, y)?;
                kept += 1;
            }
        }
    }
    let all_test = test.clone();
    let before_all = accuracy(&all_test, |x, p| device.predict(x, p));

    // The stream: new digits, interleaved as a user would meet them.
    let mut stream = Vec::new();
    for c in NEW {
        let idx: Vec<usize> = (0..new_train.len())
            .filter(|&i| new_train.y[i] == c)
            .take(opts.labels_per_class)
            .collect();
        stream.extend(idx);
    }
    for i in (1..stream.len()).rev() {
        stream.swap(i, rng.below(i + 1));
    }
    // A device knows classes by index; the stream's digit 5 becomes the first new class
    // only if it comes first, so map digits to classes in the order they appear.
    let mut class_of: [usize; 10] =
        core::array::from_fn(|d| if d < NEW.start { d } else { usize::MAX });
    let (mut predict_t, mut learn_t, mut persist_t) = (vec![], vec![], vec![]);
    let mut late_hits = 0usize;
    let mut probs = [0.0f32; 10];
    let mut state = vec![0u8; 0];
    for (n, &i) in stream.iter().enumerate() {
        let (x, digit) = (&new_train.x[i], new_train.y[i]);
        let t = Instant::now();
        let p = device.predict(x, &mut probs)?;
        predict_t.push(t.elapsed().as_secs_f64() * 1e6);
        let label = if class_of[digit] == usize::MAX {
            device.head().classes()
        } else {
            class_of[digit]
        };
        if n >= stream.len() / 2 && p.class == label {
            late_hits += 1;
        }
        let t = Instant::now();
        let learned = device.learn(x, label)?;
        learn_t.push(t.elapsed().as_secs_f64() * 1e6);
        if learned.added {
            class_of[digit] = learned.class;
        }
        let t = Instant::now();
        state = persist::encode_to_vec(device.head(), Some(device.learner()))?;
        persist_t.push(t.elapsed().as_secs_f64() * 1e6);
    }

    // A restart: the persisted state must give back the same head.
    let (head, mut learner, buffer, means) = device.into_parts();
    let mut reloaded = Head::alloc(dims, 0)?;
    persist::decode_into(&state, &mut reloaded, Some(&mut learner))
        .context("device: reloading its state")?;
    ensure!(
        reloaded.params() == head.params() && reloaded.classes() == head.classes(),
        "reloaded state differs"
    );
    let device = Online::new(reloaded, learner, buffer, means, online_cfg)?;

    // Score with the device's class numbering.
    let renumber = |d: &Dataset| d.select(|_| true, |y| class_of[y]);
    let host_head = persist::decode_head(&shipped)?;
    let host_head_acc = accuracy(&old_test, |x, p| host_head.predict(x, p));
    Ok(Report {
        host_accuracy_old: host_head_acc,
        before_all,
        after_all: accuracy(&renumber(&all_test), |x, p| device.predict(x, p)),
        after_old: accuracy(&old_test, |x, p| device.predict(x, p)),
        after_new: accuracy(&renumber(&new_test), |x, p| device.predict(x, p)),
        online_accuracy_late: late_hits as f64 / (stream.len() - stream.len() / 2).max(1) as f64,
        labels: stream.len(),
        test_samples: all_test.len(),
        predict_us: median(&mut predict_t),
        learn_us: median(&mut learn_t),
        persist_us: median(&mut persist_t),
        state_bytes: state.len(),
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |v: f64| format!("{:5.1}%", v * 100.0);
        writeln!(
            f,
            "host: head trained on digits 0-4       test accuracy (0-4) {}",
            pct(self.host_accuracy_old)
        )?;
        writeln!(
            f,
            "device, before any label               test accuracy (0-9) {}  (knows 0-4 only)",
            pct(self.before_all)
        )?;
        writeln!(
            f,
            "device, after {:3} labels of 5-9        test accuracy (0-9) {}",
            self.labels,
            pct(self.after_all)
        )?;
        writeln!(
            f,
            "                                         old digits (0-4)  {}",
            pct(self.after_old)
        )?;
        writeln!(
            f,
            "                                         new digits (5-9)  {}",
            pct(self.after_new)
        )?;
        writeln!(
            f,
            "  right before their label, 2nd half of the stream       {}",
            pct(self.online_accuracy_late)
        )?;
        writeln!(
            f,
            "latency (median): predict {:.1} µs, learn one label {:.1} µs, encode state {:.1} µs ({} bytes)",
            self.predict_us, self.learn_us, self.persist_us, self.state_bytes
        )?;
        write!(
            f,
            "test set: {} samples; state reloaded after the stream and checked identical",
            self.test_samples
        )
    }
}
