//! The learning-quality benchmark (`cargo run -p benches --bin learning`; its opening
//! comment says how to read it): the device learner ([`device::device`], the
//! `edgetune serve` path) through fixed protocols ([`protocols`]) on several backbones
//! ([`data`]), beside batch reference methods ([`refs`], [`lr`]) fitted on the same
//! embeddings and the same draws, against the issue's targets ([`table`]).
//!
//! Results are a flat list of [`Row`]s, one per backbone × protocol × metric, each with a
//! value per [`Method`]; [`Results::get`] finds one:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use benches::learning::{self, Plan};
//! let r = learning::run(&Plan::quick(), &["uci-pixels"], |_| {})?;
//! let five = r.get("uci-pixels", "5-shot", "accuracy").expect("a row");
//! assert!(five.lda.unwrap() > 0.8);
//! # Ok(()) }
//! ```
//!
//! Protocols and their metrics (all values are fractions: 0.95 is 95 %, a drop of 0.02
//! is 2 points):
//!
//! - `1-shot`, `5-shot`, `10-shot`: `accuracy`.
//! - `one pass`: `accuracy`, `prequential accuracy`, `ECE`, `prequential ECE`,
//!   `flagged uncertain`, `errors flagged`, `held-out class accuracy`.
//! - `new class 5`, `new class 20`: `new-class accuracy`, `old before`, `old after`,
//!   `old drop`; the same for `MLP head, new class 20` and `MLP head by gradient, new
//!   class 20`.
//! - `200 in a row`: `others before`, `others after`, `drop`.
//! - `host head`: `accuracy` (one training, no draws).
//! - backbone `gauss (scales)`: every gauss metric as `<metric> spread` (largest minus
//!   smallest over the three scales).

pub mod data;
pub mod device;
pub mod guess;
pub mod lr;
pub mod protocols;
pub mod refs;
pub mod table;

use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

pub use crate::machine::Machine;

/// A learner in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// The device ([`edgetune_device::engine::Engine`]).
    Edgetune,
    /// Nearest class mean.
    Ncm,
    /// SimpleShot.
    SimpleShot,
    /// LDA with Ledoit–Wolf shrinkage.
    Lda,
    /// Logistic regression.
    Lr,
}

impl Method {
    /// All, in column order.
    pub const ALL: [Method; 5] = [
        Method::Edgetune,
        Method::Ncm,
        Method::SimpleShot,
        Method::Lda,
        Method::Lr,
    ];

    /// The column's title.
    pub fn title(self) -> &'static str {
        match self {
            Method::Edgetune => "edgetune",
            Method::Ncm => "NCM",
            Method::SimpleShot => "SimpleShot",
            Method::Lda => "LDA",
            Method::Lr => "LR",
        }
    }
}

/// How a metric reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// A share, shown in percent.
    Percent,
    /// A difference of shares, shown in points.
    Points,
    /// A calibration error (0–1), shown as is.
    Ece,
}

/// An issue's target for a row's edgetune value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// What it asks, e.g. `≥ NCM + 10 pp`.
    pub text: String,
    /// The bound.
    pub bound: f64,
    /// True: edgetune must reach the bound; false: stay at or below it.
    pub at_least: bool,
    /// Whether edgetune met it.
    pub met: bool,
}

/// One backbone × protocol × metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Backbone ([`data::NAMES`], or `gauss (scales)`).
    pub backbone: String,
    /// Protocol (see the module docs).
    pub protocol: String,
    /// Metric (see the module docs).
    pub metric: String,
    /// How it reads.
    pub unit: Unit,
    /// The device's mean over draws.
    pub edgetune: Option<f64>,
    /// Its standard deviation over draws.
    pub edgetune_sd: Option<f64>,
    /// Nearest class mean.
    pub ncm: Option<f64>,
    /// SimpleShot.
    pub simpleshot: Option<f64>,
    /// LDA.
    pub lda: Option<f64>,
    /// Logistic regression.
    pub lr: Option<f64>,
    /// Draws averaged.
    pub draws: usize,
    /// The issue's target, for rows that have one.
    pub target: Option<Target>,
}

impl Row {
    /// The value of `method`.
    pub fn value(&self, method: Method) -> Option<f64> {
        match method {
            Method::Edgetune => self.edgetune,
            Method::Ncm => self.ncm,
            Method::SimpleShot => self.simpleshot,
            Method::Lda => self.lda,
            Method::Lr => self.lr,
        }
    }

    fn value_mut(&mut self, method: Method) -> &mut Option<f64> {
        match method {
            Method::Edgetune => &mut self.edgetune,
            Method::Ncm => &mut self.ncm,
            Method::SimpleShot => &mut self.simpleshot,
            Method::Lda => &mut self.lda,
            Method::Lr => &mut self.lr,
        }
    }

    /// Whether the target was met; `None` without one.
    pub fn met(&self) -> Option<bool> {
        self.target.as_ref().map(|t| t.met)
    }
}

/// A backbone that ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Backbone {
    /// Its name.
    pub name: String,
    /// What its embedding is.
    pub about: String,
    /// Embedding size.
    pub dim: usize,
    /// Class names.
    pub classes: Vec<String>,
    /// Training and test samples.
    pub train: usize,
    /// Test samples.
    pub test: usize,
    /// The class the new-class protocol holds out of the host start.
    pub held_out: String,
    /// Seconds it took (embedding and every protocol).
    pub seconds: f64,
}

/// A backbone that did not run, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Everything one run measured (also its JSON, `"schema": 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Format version of the JSON.
    pub schema: u32,
    /// The command line.
    pub command: String,
    /// A `--quick` run.
    pub quick: bool,
    /// Random draws per protocol.
    pub draws: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// What it ran on.
    pub machine: Machine,
    /// The backbones that ran.
    pub backbones: Vec<Backbone>,
    /// The ones that did not.
    pub skipped: Vec<Skipped>,
    /// The measurements.
    pub rows: Vec<Row>,
}

impl Results {
    /// The row of `backbone`, `protocol` and `metric`.
    pub fn get(&self, backbone: &str, protocol: &str, metric: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.backbone == backbone && r.protocol == protocol && r.metric == metric)
    }

    /// Rows with a target, and how many of them edgetune met.
    pub fn targets(&self) -> (usize, usize) {
        let with: Vec<bool> = self.rows.iter().filter_map(Row::met).collect();
        (with.len(), with.iter().filter(|&&m| m).count())
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Random draws per protocol (k-shot supports, orders, the new class's samples).
    pub draws: usize,
    /// Shots per class of the k-shot protocols.
    pub shots: Vec<usize>,
    /// Labels of the held-out class in the new-class protocol, cumulative.
    pub new_labels: Vec<usize>,
    /// Labels of one class in a row after the pass.
    pub in_a_row: usize,
    /// A `--quick` run (fewer draws).
    pub quick: bool,
}

impl Plan {
    /// The full benchmark with `draws` draws.
    pub fn full(draws: usize) -> Plan {
        Plan {
            draws: draws.max(1),
            shots: vec![1, 5, 10],
            new_labels: vec![5, 20],
            in_a_row: 200,
            quick: false,
        }
    }

    /// Every protocol with 2 draws: a smoke run for CI.
    pub fn quick() -> Plan {
        Plan {
            quick: true,
            ..Plan::full(2)
        }
    }
}

/// Values collected per row and method, over draws.
#[derive(Debug, Default)]
pub struct Tally {
    rows: Vec<(String, String, Unit, [Vec<f64>; 5])>,
}

impl Tally {
    /// Adds one draw's `value` of `method`.
    pub fn add(&mut self, protocol: &str, metric: &str, unit: Unit, method: Method, value: f64) {
        let k = Method::ALL.iter().position(|&m| m == method).unwrap_or(0);
        match self
            .rows
            .iter_mut()
            .find(|r| r.0 == protocol && r.1 == metric)
        {
            Some(r) => r.3[k].push(value),
            None => {
                let mut v: [Vec<f64>; 5] = Default::default();
                v[k].push(value);
                self.rows.push((protocol.into(), metric.into(), unit, v));
            }
        }
    }

    /// The rows of `backbone`: means (and edgetune's standard deviation) over draws.
    pub fn rows(self, backbone: &str) -> Vec<Row> {
        self.rows
            .into_iter()
            .map(|(protocol, metric, unit, values)| {
                let mut row = Row {
                    backbone: backbone.into(),
                    protocol,
                    metric,
                    unit,
                    edgetune: None,
                    edgetune_sd: None,
                    ncm: None,
                    simpleshot: None,
                    lda: None,
                    lr: None,
                    draws: values[0].len(),
                    target: None,
                };
                for (m, v) in Method::ALL.iter().zip(&values) {
                    *row.value_mut(*m) = mean(v);
                }
                row.edgetune_sd = sd(&values[0]);
                row
            })
            .collect()
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn sd(v: &[f64]) -> Option<f64> {
    let m = mean(v)?;
    (v.len() > 1)
        .then(|| (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt())
}

/// Runs `plan` on the backbones `names` (a name, or a prefix such as `gauss`; all when
/// empty),
/// reporting progress lines to `log`. The command, machine and time are left for the
/// caller.
pub fn run(plan: &Plan, names: &[&str], mut log: impl FnMut(&str)) -> Result<Results> {
    let start = Instant::now();
    let mut results = Results {
        schema: 1,
        command: String::new(),
        quick: plan.quick,
        draws: plan.draws,
        seconds: 0.0,
        machine: Machine::default(),
        backbones: Vec::new(),
        skipped: Vec::new(),
        rows: Vec::new(),
    };
    let selected: Vec<&str> = data::NAMES
        .iter()
        .copied()
        .filter(|n| {
            names.is_empty()
                || names.iter().any(|s| {
                    // A full name is itself only (`gauss×1` is not `gauss×100`).
                    s == n || (!data::NAMES.contains(s) && n.starts_with(s))
                })
        })
        .collect();
    anyhow::ensure!(
        !selected.is_empty(),
        "no backbone matches {names:?} (known: {})",
        data::NAMES.join(", ")
    );
    for name in selected {
        let t = Instant::now();
        let d = match data::load(name)? {
            data::Loaded::Ready(d) => d,
            data::Loaded::Skipped(reason) => {
                log(&format!("{name}: skipped, {reason}"));
                results.skipped.push(Skipped {
                    name: name.into(),
                    reason,
                });
                continue;
            }
        };
        let (rows, held_out) = protocols::all(&d, plan)?;
        let seconds = t.elapsed().as_secs_f64();
        log(&format!(
            "{name}: {} train / {} test embeddings of {} values, {} classes, {seconds:.1} s",
            d.train.len(),
            d.test.len(),
            d.dim(),
            d.classes()
        ));
        results.rows.extend(rows);
        results.backbones.push(Backbone {
            name: name.into(),
            about: d.about.clone(),
            dim: d.dim(),
            classes: d.class_names.clone(),
            train: d.train.len(),
            test: d.test.len(),
            held_out: d.class_names[held_out].clone(),
            seconds,
        });
    }
    table::scale_rows(&mut results.rows);
    table::apply_targets(&mut results.rows);
    results.seconds = start.elapsed().as_secs_f64();
    Ok(results)
}
