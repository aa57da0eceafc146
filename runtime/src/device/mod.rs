//! The device program's library side (feature `device`): the learning core
//! ([`engine`]), the state directory that survives power cuts ([`state`]), and the
//! service that answers requests ([`service`]). The `edgetune` program (`src/bin`)
//! wires them to stdin, a Unix socket, a watched directory and GPIO buttons.

pub mod engine;
pub mod service;
pub mod state;
