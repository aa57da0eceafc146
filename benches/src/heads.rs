//! The head workloads `compare` puts beside PyTorch: the same shapes, optimizers,
//! inputs, labels and starting weights on both sides (`crate::torch` sends them over).

use std::time::Instant;

use anyhow::{Result, anyhow};
use edgetune::head::top_k;
use edgetune::{Config, Dims, Head, Learner, Optimizer};

/// Predict (softmax, class, confidence, margin, entropy, top-3) or one learning step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Head::predict` and `top_k::<3>`; PyTorch: the forward pass under
    /// `inference_mode`, softmax, `topk(3)`, entropy.
    Predict,
    /// `Learner::step` (one sample) or `Learner::step_batch`; PyTorch: `zero_grad`,
    /// forward, `cross_entropy`, `backward`, `optimizer.step()`, `loss.item()`.
    Step,
}

/// One workload.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// A stable identifier (in the JSON report, for tracking over time), in the `head`
    /// bench's naming.
    pub id: &'static str,
    /// Its name in the report.
    pub name: &'static str,
    /// What runs.
    pub kind: Kind,
    /// The head's shape (capacity = classes: PyTorch has no spare rows).
    pub dims: Dims,
    /// The optimizer, as named on both sides: `adam`, `adamw` or `sgd-momentum`.
    pub optimizer: &'static str,
    /// Samples per call: 1, or a mini-batch.
    pub batch: usize,
}

/// The learning rate of every step case (edgetune's default, PyTorch's Adam default).
pub const LR: f32 = 1e-3;

/// The cases, in report order.
pub const CASES: [Case; 6] = [
    Case {
        id: "predict linear 1280x10",
        name: "predict, linear 1280→10",
        kind: Kind::Predict,
        dims: Dims::linear(1280, 10),
        optimizer: "adam",
        batch: 1,
    },
    Case {
        id: "predict mlp 1280x128x10",
        name: "predict, MLP 1280→128→10",
        kind: Kind::Predict,
        dims: Dims::mlp(1280, 128, 10),
        optimizer: "adam",
        batch: 1,
    },
    Case {
        id: "step linear 1280x10 adam",
        name: "learning step, linear 1280→10, Adam",
        kind: Kind::Step,
        dims: Dims::linear(1280, 10),
        optimizer: "adam",
        batch: 1,
    },
    Case {
        id: "step linear 1280x10 sgd-momentum",
        name: "learning step, linear 1280→10, SGD-momentum",
        kind: Kind::Step,
        dims: Dims::linear(1280, 10),
        optimizer: "sgd-momentum",
        batch: 1,
    },
    Case {
        id: "step mlp 1280x128x10 adam",
        name: "learning step, MLP 1280→128→10, Adam",
        kind: Kind::Step,
        dims: Dims::mlp(1280, 128, 10),
        optimizer: "adam",
        batch: 1,
    },
    Case {
        id: "step linear 1280x10 adam batch32",
        name: "learning step, linear 1280→10, Adam, batch 32",
        kind: Kind::Step,
        dims: Dims::linear(1280, 10),
        optimizer: "adam",
        batch: 32,
    },
];

/// A deterministic embedding-like input (the `head` bench's).
pub fn input(d: usize, seed: f32) -> Vec<f32> {
    (0..d).map(|i| ((i as f32 + seed) * 0.37).sin()).collect()
}

/// One call's samples: indices into [`Case::inputs`] and their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Input indices.
    pub x: Vec<usize>,
    /// Labels.
    pub y: Vec<usize>,
}

impl Case {
    /// The distinct inputs the calls use.
    pub fn inputs(&self) -> Vec<Vec<f32>> {
        let n = if self.batch == 1 { 2 } else { self.batch };
        (0..n).map(|k| input(self.dims.input, k as f32)).collect()
    }

    /// The calls, repeated in a cycle: single samples alternate between two inputs
    /// with labels 0, 1, …, 9; a batch is all inputs, labels `k % 10`.
    pub fn calls(&self) -> Vec<Call> {
        let classes = self.dims.capacity;
        if self.batch == 1 {
            (0..10)
                .map(|k| Call {
                    x: vec![k % 2],
                    y: vec![k % classes],
                })
                .collect()
        } else {
            vec![Call {
                x: (0..self.batch).collect(),
                y: (0..self.batch).map(|k| k % classes).collect(),
            }]
        }
    }

    /// The learner's configuration.
    pub fn config(&self) -> Result<Config> {
        let optimizer = match self.optimizer {
            "adam" => Optimizer::ADAM,
            "adamw" => Optimizer::ADAMW,
            "sgd-momentum" => Optimizer::SGD_MOMENTUM,
            other => return Err(anyhow!("unknown optimizer {other:?}")),
        };
        Ok(Config {
            optimizer,
            lr: LR,
            ..Config::DEFAULT
        })
    }

    /// The case as PyTorch's side sets it up (see `torch_head.py`).
    pub fn torch_spec(&self) -> serde_json::Value {
        let calls: Vec<_> = self
            .calls()
            .into_iter()
            .map(|c| serde_json::json!({ "x": c.x, "y": c.y }))
            .collect();
        serde_json::json!({
            "op": "setup",
            "name": self.name,
            "kind": match self.kind { Kind::Predict => "predict", Kind::Step => "step" },
            "input": self.dims.input,
            "hidden": self.dims.hidden,
            "classes": self.dims.capacity,
            "optimizer": self.optimizer,
            "lr": LR,
            "xs": self.inputs(),
            "calls": calls,
        })
    }
}

/// Calls of a step case between restarts while warming up.
const WARM_CALLS: usize = 10;

/// edgetune's side of a case: a head (random weights, seed 1), its learner, the inputs.
///
/// A learning step's cost depends on the state it starts from: after some 750 Adam
/// steps of an MLP head, the first moments of the weights of hidden units that never
/// fire decay into subnormal floats and stay there (0.9 × the smallest subnormal rounds
/// back to it), which makes every later step several times slower on x86. So that both
/// sides of a comparison do the same work whatever the number of calls each makes,
/// every timed sample of a step case starts from the same weights and a fresh optimizer
/// ([`Runner::restart`]); PyTorch's side does the same.
pub struct Runner {
    /// The case.
    pub case: Case,
    /// The head.
    pub head: Head<Vec<f32>>,
    /// The weights every sample starts from.
    start: Head<Vec<f32>>,
    /// Its learner (unused by predict cases).
    pub learner: Learner<Vec<f32>>,
    xs: Vec<Vec<f32>>,
    calls: Vec<Call>,
    probs: Vec<f32>,
    next: usize,
}

impl Runner {
    /// A fresh head and learner for `case`.
    pub fn new(case: Case) -> Result<Runner> {
        let mut head = Head::alloc(case.dims, case.dims.capacity)?;
        head.init(1);
        let learner = Learner::alloc(case.dims, case.config()?)?;
        Ok(Runner {
            case,
            start: head.clone(),
            head,
            learner,
            xs: case.inputs(),
            calls: case.calls(),
            probs: vec![0.0; case.dims.capacity],
            next: 0,
        })
    }

    /// The next call of the cycle; returns the loss (step) or the confidence (predict).
    pub fn call(&mut self) -> Result<f32> {
        let call = &self.calls[self.next % self.calls.len()];
        self.next += 1;
        Ok(match self.case.kind {
            Kind::Predict => {
                let p = self.head.predict(&self.xs[call.x[0]], &mut self.probs)?;
                std::hint::black_box(top_k::<3>(&self.probs));
                p.confidence
            }
            Kind::Step if call.x.len() == 1 => {
                self.learner
                    .step(&mut self.head, &self.xs[call.x[0]], call.y[0])?
            }
            Kind::Step => self.learner.step_batch(
                &mut self.head,
                call.x
                    .iter()
                    .zip(&call.y)
                    .map(|(&i, &y)| (self.xs[i].as_slice(), y)),
            )?,
        })
    }

    /// Back to the starting weights, a fresh optimizer and the first call (without
    /// allocating).
    pub fn restart(&mut self) -> Result<()> {
        self.head.copy_from(&self.start)?;
        self.learner.reset();
        self.next = 0;
        Ok(())
    }

    /// Warms up (calls for at least `warm_ns` and 3 calls; a step case restarting every
    /// 10 calls, restarts untimed) and returns how many consecutive calls make a sample of about
    /// `target_ns`.
    pub fn calibrate(&mut self, warm_ns: f64, target_ns: f64) -> Result<usize> {
        let (mut spent, mut calls) = (0.0, 0usize);
        while calls < 3 || spent < warm_ns {
            if self.case.kind == Kind::Step && calls % WARM_CALLS == 0 {
                self.restart()?;
            }
            let t = Instant::now();
            self.call()?;
            spent += t.elapsed().as_nanos() as f64;
            calls += 1;
        }
        let per_call = spent / calls as f64;
        Ok(((target_ns / per_call).ceil() as usize).max(1))
    }

    /// `n` samples, each the mean time of `inner` consecutive calls in nanoseconds; a
    /// step case restarts (untimed) before each sample.
    pub fn sample(&mut self, n: usize, inner: usize) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            if self.case.kind == Kind::Step {
                self.restart()?;
            }
            let t = Instant::now();
            for _ in 0..inner.max(1) {
                self.call()?;
            }
            out.push(t.elapsed().as_nanos() as f64 / inner.max(1) as f64);
        }
        Ok(out)
    }

    /// The softmax probabilities of the last predict call.
    pub fn probs(&self) -> &[f32] {
        &self.probs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_runs_and_its_spec_matches() {
        for case in CASES {
            let mut r = Runner::new(case).unwrap();
            for _ in 0..3 {
                assert!(r.call().unwrap().is_finite(), "{}", case.name);
            }
            // A restart gives the first call's result again.
            r.restart().unwrap();
            let first = r.call().unwrap();
            r.call().unwrap();
            r.restart().unwrap();
            assert_eq!(r.call().unwrap(), first, "{}", case.name);
            assert_eq!(r.sample(2, 3).unwrap().len(), 2);
            let spec = case.torch_spec();
            assert_eq!(spec["xs"].as_array().unwrap().len(), case.inputs().len());
            assert_eq!(
                r.head.params().len(),
                case.dims.param_len(),
                "PyTorch's parameters are the head's, in order"
            );
        }
    }
}
