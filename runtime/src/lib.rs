#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

pub(crate) mod fmt;

#[cfg(any(feature = "tract", feature = "ort"))]
pub mod backbone;
#[cfg(feature = "ort")]
mod backbone_ort;
pub mod buffer;
#[cfg(feature = "std")]
pub mod bundle;
pub mod button;
pub mod calibrate;
pub mod classes;
pub mod error;
pub mod flash;
pub mod head;
#[cfg(feature = "image")]
pub mod image;
pub mod learn;
pub mod math;
#[cfg(feature = "tract")]
pub mod nnef;
#[cfg(feature = "npy")]
pub mod npy;
pub mod online;
pub mod persist;
pub mod rng;
pub mod slda;
#[cfg(feature = "std")]
pub mod stats;

pub use error::{Error, Result};
pub use head::{Dims, Head, HeadKind, Prediction};
pub use learn::{Config, Learner, Loss, Optimizer, Schedule};
