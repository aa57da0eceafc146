//! Test support for edgetune's crates, written once: scratch directories ([`scratch`],
//! [`dir`], [`file`]), full and read-only disks ([`tmpfs`]), the `edgetune` program
//! cargo built ([`edgetune`]), its HTTP server started and asked ([`http`]) and, with the
//! `onnx` feature, the ONNX test models the project builds itself ([`testmodels`]). Not
//! published; the shipped crates only dev-depend on it.

pub mod http;
mod program;
mod scratch;
pub mod tmpfs;

pub use program::edgetune;
pub use scratch::{dir, file, scratch};

#[cfg(feature = "onnx")]
pub mod testmodels;
