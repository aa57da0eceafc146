//! Test support for edgetune's crates, written once: scratch directories ([`scratch`],
//! [`dir`], [`file`]), full and read-only disks ([`tmpfs`]) and, with the `onnx` feature, the ONNX test models the project builds
//! itself ([`testmodels`]). Not published; the shipped crates only dev-depend on it.

mod scratch;
pub mod tmpfs;

pub use scratch::{dir, file, scratch};

#[cfg(feature = "onnx")]
pub mod testmodels;
