//! Learning rules for a [`Head`](crate::Head): losses, optimizers, weight decay, gradient
//! clipping and a learning-rate schedule, one sample at a time or in mini-batches, with no heap.
//!
//! A [`Learner`] owns the gradient, the optimizer state and its scratch in one flat
//! buffer of [`Learner::state_len`] values. Learning is deterministic: the same samples
//! in the same order give bit-identical weights on one target (and, since every kernel
//! fixes its summation order and uses `libm`, across targets too).
//!
//! ```
//! use edgetune_core::head::{Dims, Head};
//! use edgetune_core::learn::{Config, Learner, Optimizer};
//! const DIMS: Dims = Dims::linear(2, 2);
//! const CFG: Config = Config { lr: 0.1, ..Config::DEFAULT };
//! let mut head = Head::new(DIMS, 2, [0.0f32; DIMS.param_len()]).unwrap();
//! let mut learner =
//!     Learner::new(DIMS, CFG, [0.0f32; Learner::<()>::state_len(DIMS, &Optimizer::ADAM)]).unwrap();
//! for _ in 0..50 {
//!     learner.step(&mut head, &[1.0, 0.0], 0).unwrap();
//!     learner.step(&mut head, &[0.0, 1.0], 1).unwrap();
//! }
//! let mut probs = [0.0; 2];
//! assert_eq!(head.predict(&[0.9, 0.1], &mut probs).unwrap().class, 0);
//! ```
//!
//! One concept per file: the [`Loss`] (`loss.rs`), the [`Optimizer`] (`optimizer/`, one
//! file per optimizer: `sgd.rs`, `adam.rs`), learning-rate schedules (`schedule.rs`), the rule's [`Config`]
//! (`config.rs`) and the [`Learner`] with its passes (`learner.rs`).

mod config;
mod learner;
mod loss;
mod optimizer;
mod schedule;

pub use config::Config;
pub use learner::Learner;
pub use loss::Loss;
pub use optimizer::Optimizer;
pub use schedule::{Decay, Schedule};
