//! edgetune's `no_std` core: a classification head that keeps learning on the device,
//! its learners (streaming LDA, the gradient learner, online learning with replay), a
//! class-balanced replay buffer, and a power-loss-safe persistence format with its NOR
//! flash slots. No heap: every structure lives in storage the caller gives, so the same
//! code runs on a Linux board and on a Cortex-M microcontroller.
//!
//! The `edgetune` crate re-exports every module here beside the model side (bundle,
//! backbone, images); its README lists them all. Features: `std` (Vec-backed
//! constructors, std error impls), `log` or `defmt` (never both).
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

pub(crate) mod fmt;

pub mod buffer;
pub mod button;
pub mod calibrate;
pub mod classes;
pub mod error;
pub mod flash;
pub mod head;
pub mod learn;
pub mod math;
pub mod online;
pub mod persist;
pub mod rng;
pub mod slda;

pub use error::{Error, Result};
pub use head::{Dims, Head, HeadKind, Prediction};
pub use learn::{Config, Learner, Loss, Optimizer, Schedule};
