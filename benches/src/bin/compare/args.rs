//! The command line and the sampling plan it selects.

use std::path::PathBuf;

use clap::Parser;
use serde_json::{Value, json};

fn parse_threads(s: &str) -> std::result::Result<usize, String> {
    if s == "all" {
        return Ok(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?}: a number of threads ≥ 1, or `all`")),
    }
}

/// edgetune beside ONNX Runtime (backbone) and PyTorch (head); allocations; sizes.
#[derive(Parser, Debug)]
#[command(name = "compare")]
pub struct Args {
    /// Fewer rounds and samples: a smoke run of every part in well under a minute.
    #[arg(long)]
    pub quick: bool,
    /// Threads of both backbone engines and of PyTorch (`all`: every core).
    #[arg(long, default_value = "1", value_parser = parse_threads)]
    pub threads: usize,
    /// Where to write the JSON report (default: target/compare.json in the workspace).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The Python interpreter that has PyTorch (e.g. a virtual environment's).
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Seconds the firmware may run under qemu-system-arm before it is stopped.
    #[arg(long, default_value_t = 120)]
    pub qemu_timeout: u64,
}

/// How many samples to take.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Interleaved rounds and samples per round of a backbone embedding (one call each).
    pub backbone: (usize, usize),
    /// Embeddings before timing.
    pub backbone_warmup: usize,
    /// Rounds and samples per round of a head workload.
    pub head: (usize, usize),
    /// Warm-up of a head workload and the length of one of its samples, ns.
    pub head_warm_ns: f64,
    pub head_sample_ns: f64,
}

impl Plan {
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                backbone: (2, 2),
                backbone_warmup: 1,
                head: (2, 3),
                head_warm_ns: 20e6,
                head_sample_ns: 0.5e6,
            }
        } else {
            Plan {
                backbone: (15, 4),
                backbone_warmup: 3,
                head: (15, 10),
                head_warm_ns: 300e6,
                head_sample_ns: 2e6,
            }
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "backbone": { "rounds": self.backbone.0, "samples_per_round": self.backbone.1,
                          "warmup_calls": self.backbone_warmup },
            "head": { "rounds": self.head.0, "samples_per_round": self.head.1,
                      "warmup_ns": self.head_warm_ns, "sample_ns": self.head_sample_ns },
        })
    }
}
