//! Benchmarks of edgetune, and the comparison with ONNX Runtime and PyTorch.
//!
//! - `benches/` holds the criterion benchmarks (`cargo bench -p benches --bench
//!   head|backbone|train|serve`); each file opens with what it measures and how to read
//!   it.
//! - `src/bin/compare/` is the comparison command, `cargo run --release -p benches
//!   --bin compare`: edgetune and ONNX Runtime on the same backbones and inputs,
//!   edgetune's head and PyTorch on the same workloads, measured interleaved; heap
//!   allocations per call; sizes of the device program and the firmware. It prints
//!   markdown tables and writes JSON (`target/compare.json`).
//!
//! - `src/bin/learning.rs` is the learning-quality benchmark, `cargo run -p benches
//!   --bin learning`: the device learner through fixed protocols on several backbones,
//!   beside reference methods ([`learning`]).
//!
//! This library is what they share: the test models ([`models`]), the head workloads
//! ([`heads`]), the PyTorch bridge ([`torch`]), timing ([`stats`]), sizes ([`sizes`]) and
//! the machine's description ([`machine`]).

pub mod heads;
pub mod learning;
pub mod machine;
pub mod models;
pub mod sizes;
pub mod stats;
pub mod torch;
