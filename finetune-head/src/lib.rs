//! Host side of edgetune: data preparation, head training and the demo. The CLI
//! (`finetune-head`) is a thin layer over this library, so tests drive the same code.

pub mod augment;
pub mod calib;
pub mod closed_form;
pub mod convert;
mod csv;
pub mod data;
pub mod dataset;
pub mod demo;
pub mod detect;
pub mod embed;
pub mod eval;
pub mod inspect;
pub mod onnxcut;
pub mod quantize;
pub mod report;
pub mod search;
pub mod sign;
pub mod train;
pub mod utc;
