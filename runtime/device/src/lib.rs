//! The edgetune device program's library side: the learning core ([`engine`]), the
//! state directory that survives power cuts ([`state`]), and the service that answers
//! requests ([`service`]), and the fleet state devices exchange ([`fleet`]). The `edgetune` program (`src/bin/edgetune/`) wires them to
//! stdin, a Unix socket, a watched directory and GPIO buttons.
//!
//! The labeling flow on the device: `src/service/label.rs` takes a label (a request or a
//! button press) and writes the state when due; `src/engine/label.rs` learns it under the
//! regression guard. Predictions go the same way through the two `predict.rs`.
//!
//! The head, its learners and their persistence are the `edgetune` crate's `no_std`
//! core; the bundle and the backbone (tract, ONNX Runtime) are its model side. This
//! crate adds what only a device program needs (clap, env_logger, signal-hook, GPIO), so
//! none of it can reach a firmware build.
#![warn(missing_docs)]

pub mod engine;
pub mod fleet;
pub mod service;
pub mod state;
