#![doc = include_str!("../README.md")]
#![cfg_attr(not(any(test, feature = "std")), no_std)]
#![warn(missing_docs)]

// The no_std core (crate `edgetune-core`), under the names it always had.
pub use edgetune_core::{Config, Learner, Loss, Optimizer, Schedule};
pub use edgetune_core::{Dims, Head, HeadKind, Prediction};
pub use edgetune_core::{Error, Result};
pub use edgetune_core::{
    buffer, button, calibrate, classes, error, flash, head, learn, math, online, persist, rng, slda,
};

// The model side.
#[cfg(any(feature = "tract", feature = "ort"))]
pub mod backbone;
#[cfg(feature = "ort")]
mod backbone_ort;
#[cfg(feature = "std")]
pub mod bundle;
#[cfg(feature = "image")]
pub mod image;
#[cfg(feature = "tract")]
pub mod nnef;
#[cfg(feature = "npy")]
pub mod npy;
#[cfg(feature = "tract")]
pub mod plan;
#[cfg(feature = "std")]
pub mod stats;
#[cfg(feature = "text")]
pub mod text;
#[cfg(feature = "trust")]
pub mod trust;
