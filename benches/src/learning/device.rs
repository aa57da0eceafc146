//! The device under test: every [`Engine`] the benchmark uses is made by [`device`], as
//! `edgetune serve` makes one (a fresh engine on the bundle's head, seeded with the
//! bundle's exemplars), so that a change to how the device starts changes here only.
//! [`Device`] wraps one for the protocols: it maps the data set's classes to the
//! device's (a class the device has not got is added by its first label).
//!
//! A host head ([`HostHead`], [`host_head`]) is the head `finetune-head train` would
//! train for some of the classes: [`finetune_head::train::fit`] with the default
//! configuration on 80 % of their training embeddings (early-stopped on the other 20 %),
//! or the closed-form head when that is better on those 20 %
//! ([`finetune_head::closed_form::best_head`]).
//! The `host head` protocol measures it alone, on every class. A host start
//! ([`HostStart`]) is what `finetune-head train` would put in a bundle: that head, the
//! exemplars [`finetune_head::train::exemplars`] picks and the embedding statistics
//! [`finetune_head::train::embedding_stats`] computes. A start without one is a bundle
//! from `finetune-head convert`: no head, no statistics.

use anyhow::{Context, Result, ensure};
use edgetune::Head;
use edgetune::bundle::Exemplars;
use edgetune::head::Dims;
use edgetune::stats::{EmbeddingStats, Stats};
use edgetune_device::engine::{Engine, EngineConfig};
use edgetune_device::service::DEFAULT_CAPACITY;
use finetune_head::closed_form;
use finetune_head::data::Dataset;
use finetune_head::report::{DataSummary, EmbedSummary};
use finetune_head::train::{self, Embedded, HeadConfig, Prepared};

use super::data::{Data, SEED};
use super::guess::Guess;

/// Share of the host classes' training embeddings that early-stops the host's training
/// and gives the guard exemplars.
const HOST_VAL: f32 = 0.2;
/// Room for classes beyond the host's, as `finetune-head train` leaves without
/// `--capacity`.
const HOST_SPARE: usize = 8;

/// A head trained on the host as `finetune-head train` trains one with its defaults:
/// [`finetune_head::train::fit`] with [`HeadConfig::default`] (seeded with [`SEED`]) on
/// 80 % of some classes' training embeddings, early-stopped on the other 20 %, with
/// `finetune-head train`'s spare capacity.
#[derive(Debug, Clone)]
pub struct HostHead {
    /// The trained head (its classes are [`HostHead::classes`], in that order).
    pub head: Head<Vec<f32>>,
    /// The data set's class of each head class.
    pub classes: Vec<usize>,
    /// The host's training embeddings, labeled with head classes.
    pub train: Dataset,
    /// The host's validation embeddings, labeled with head classes.
    pub val: Dataset,
}

/// A training set for [`finetune_head::train`].
fn embedded(d: &Dataset) -> Embedded {
    Embedded {
        x: d.x.clone(),
        y: d.y.clone(),
    }
}

/// Trains the host head for the classes `classes` of `data` (the head's class `i` is
/// `classes[i]`).
pub fn host_head(data: &Data, classes: &[usize]) -> Result<HostHead> {
    host_head_with(data, classes, HeadConfig::default())
}

/// [`host_head`] with another head configuration (its seed is [`SEED`]).
fn host_head_with(data: &Data, classes: &[usize], cfg: HeadConfig) -> Result<HostHead> {
    let host = data.train.select(
        |y| classes.contains(&y),
        |y| classes.iter().position(|&c| c == y).unwrap_or(0),
    );
    let (train, val) = host.stratified_split(HOST_VAL, SEED);
    let cfg = HeadConfig { seed: SEED, ..cfg };
    let n = classes.len();
    let (train_e, val_e) = (embedded(&train), embedded(&val));
    let fitted = train::fit(&cfg, &train_e, &val_e, n, n + HOST_SPARE)
        .with_context(|| format!("{}: training the host head", data.name))?;
    // As `finetune-head train` does: the closed-form head (on an MLP's trained hidden
    // layer) when it is better on validation.
    let stats = train::feature_stats(&fitted.head, &train_e, n)?;
    let (head, _) = closed_form::best_head(&fitted, stats.as_ref(), &val_e, n);
    Ok(HostHead {
        head,
        classes: classes.to_vec(),
        train,
        val,
    })
}

impl HostHead {
    /// The head's predictions of the test split (the most probable class; never
    /// uncertain).
    pub fn test(&self, data: &Data) -> Result<Vec<Guess>> {
        let mut probs = vec![0.0f32; self.head.dims().capacity];
        data.test
            .x
            .iter()
            .map(|x| {
                let p = self.head.predict(x, &mut probs)?;
                Ok(Guess {
                    label: Some(self.classes[p.class]),
                    confidence: f64::from(p.confidence),
                    uncertain: false,
                })
            })
            .collect()
    }
}

/// A head trained on the host for all classes but one, with its exemplars.
#[derive(Debug, Clone)]
pub struct HostStart {
    /// The trained head (its classes are the host classes, in [`HostStart::classes`]
    /// order).
    pub head: Head<Vec<f32>>,
    /// The bundle's exemplars.
    pub exemplars: Exemplars,
    /// The bundle's embedding statistics, as its manifest holds them.
    pub stats: Option<EmbeddingStats>,
    /// With an MLP head, those of its hidden activations.
    pub hidden_stats: Option<EmbeddingStats>,
    /// The data set's class of each head class.
    pub classes: Vec<usize>,
    /// The host's training embeddings, labeled with head classes.
    pub train: Dataset,
    /// The host's validation embeddings, labeled with head classes.
    pub val: Dataset,
}

/// Trains the host start for every class of `data` but `held_out`: its [`host_head`],
/// then the bundle's exemplars and statistics.
pub fn host_start(data: &Data, held_out: usize) -> Result<HostStart> {
    host_start_with(data, held_out, HeadConfig::default())
}

/// [`host_start`] with another head configuration (an MLP head's start has the
/// statistics of its hidden layer too, as `finetune-head train` writes them).
pub fn host_start_with(data: &Data, held_out: usize, cfg: HeadConfig) -> Result<HostStart> {
    let classes: Vec<usize> = (0..data.classes()).filter(|&c| c != held_out).collect();
    let HostHead {
        head,
        classes,
        train,
        val,
    } = host_head_with(data, &classes, cfg)?;
    let found = train.len() + val.len();
    let prepared = Prepared {
        classes: classes
            .iter()
            .map(|&c| data.class_names[c].clone())
            .collect(),
        train: embedded(&train),
        val: embedded(&val),
        test: Embedded::default(),
        summary: DataSummary {
            source: data.name.clone(),
            kind: "features".into(),
            found,
            used: found,
            duplicates: Vec::new(),
            conflicts: Vec::new(),
            skipped: Vec::new(),
            split: String::new(),
            classes: Vec::new(),
            augment: Vec::new(),
            augment_copies: 0,
        },
        embedding: EmbedSummary {
            backbone_sha256: String::new(),
            computed: 0,
            cached: 0,
            threads: 1,
            seconds: 0.0,
            samples_per_s: 0.0,
        },
    };
    let hidden_stats = train::hidden_stats(&head, &prepared)?.map(|s| s.to_manifest());
    Ok(HostStart {
        head,
        exemplars: train::exemplars(&prepared),
        stats: train::embedding_stats(&prepared).map(|s| s.to_manifest()),
        hidden_stats,
        classes,
        train,
        val,
    })
}

/// A device for embeddings of `dim` values, as `edgetune serve` starts one (`Model::open`
/// and `Model::seed`): with a host start, on its head, given its embedding statistics
/// and then its exemplars; without, on an empty linear head of the capacity `serve`
/// gives a bundle that has none.
pub fn device(dim: usize, host: Option<&HostStart>) -> Result<Engine> {
    device_with(dim, host, EngineConfig::DEFAULT)
}

/// [`device`] with another engine configuration.
pub fn device_with(dim: usize, host: Option<&HostStart>, cfg: EngineConfig) -> Result<Engine> {
    let Some(host) = host else {
        let head = Head::alloc(Dims::linear(dim, DEFAULT_CAPACITY), 0)?;
        return Ok(Engine::new(head, cfg)?);
    };
    let mut engine = Engine::new(host.head.clone(), cfg)?;
    let dims = host.head.dims();
    let stats = if dims.hidden == 0 {
        &host.stats
    } else {
        &host.hidden_stats
    };
    if let Some(s) = stats {
        let stats = Stats::from_manifest(s, dims.feature_width(), host.head.classes())
            .context("the host start's statistics of its head's features")?;
        engine
            .set_stats(&stats)
            .context("giving the device the embedding statistics")?;
    }
    let e = &host.exemplars;
    let x = e
        .embeddings(dim, host.head.classes())
        .context("the host start's exemplars")?;
    engine
        .seed(&x, &e.replay, &e.guard)
        .context("seeding the device with the exemplars")?;
    Ok(engine)
}

/// The device, with the data set's classes mapped to its own.
pub struct Device {
    engine: Engine,
    to_engine: Vec<Option<usize>>,
    from_engine: Vec<usize>,
}

impl Device {
    /// A fresh [`device`] for `data`, from `host` when given.
    pub fn new(data: &Data, host: Option<&HostStart>) -> Result<Device> {
        Device::with(data, host, EngineConfig::DEFAULT)
    }

    /// [`Device::new`] with another engine configuration.
    pub fn with(data: &Data, host: Option<&HostStart>, cfg: EngineConfig) -> Result<Device> {
        let engine = device_with(data.dim(), host, cfg)?;
        let from_engine = host.map_or_else(Vec::new, |h| h.classes.clone());
        let mut to_engine = vec![None; data.classes()];
        for (i, &c) in from_engine.iter().enumerate() {
            to_engine[c] = Some(i);
        }
        ensure!(
            engine.classes() == from_engine.len(),
            "the device's classes"
        );
        Ok(Device {
            engine,
            to_engine,
            from_engine,
        })
    }

    /// The device's prediction of `x` (it remembers `x` as its most recent sample).
    pub fn observe(&mut self, x: &[f32]) -> Result<Guess> {
        let o = self.engine.observe(x)?;
        Ok(Guess {
            label: o.prediction.map(|p| self.from_engine[p.class]),
            confidence: o.prediction.map_or(0.0, |p| f64::from(p.confidence)),
            uncertain: o.uncertain,
        })
    }

    /// Observes `x`, then labels it `y` (adding the class when the device has not got
    /// it): the prediction made before the label.
    pub fn learn(&mut self, x: &[f32], y: usize) -> Result<Guess> {
        let g = self.observe(x)?;
        let class = self.to_engine[y].unwrap_or(self.engine.classes());
        self.engine.label(None, class)?;
        // A class is added unless the regression guard undid the update.
        if self.to_engine[y].is_none() && self.engine.classes() > class {
            self.to_engine[y] = Some(class);
            self.from_engine.push(y);
        }
        Ok(g)
    }

    /// Its predictions of the test split.
    pub fn test(&mut self, data: &Data) -> Result<Vec<Guess>> {
        data.test.x.iter().map(|x| self.observe(x)).collect()
    }
}
