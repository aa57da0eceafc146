//! How well the device learns, in one command:
//!
//!     cargo run -p benches --bin learning [-- --quick] [--draws N] [--backbones a,b] [--json PATH]
//!
//! It runs the real device learning path, `edgetune_device::engine::Engine` as
//! `edgetune serve` builds it (observe a sample, then label it), through fixed protocols
//! on several backbones' embeddings, and fits four batch reference methods on the same
//! embeddings and the same random draws:
//!
//! - **Backbones** (`benches::learning::data`): two small digit CNNs on the digits they
//!   were not pre-trained on (`digits-cnn`: 5–9, `digits-cnn-b`: 0–4), the UCI digits'
//!   raw pixels, the UCI wine measurements, and one draw of Gaussian classes at scales
//!   0.01, 1 and 100. A backbone whose model or data file is missing is skipped with a
//!   note.
//! - **Protocols** (`benches::learning::protocols`): k-shot (1, 5, 10 per class) from an
//!   empty head; one pass over the training split (prequential accuracy, calibration,
//!   the `uncertain` flag); a new class added to a host-trained start (5 and 20 labels);
//!   200 labels of one class in a row after the pass; the host head alone, as
//!   `finetune-head train` trains it with its defaults on every class (no device).
//! - **References** (`benches::learning::refs`, `lr`): nearest class mean (NCM),
//!   SimpleShot (centered on the backbone's pre-training classes when it has some, else
//!   on the labeled samples; L2-normalized; NCM), LDA with Ledoit–Wolf shrinkage, and
//!   L2-penalized logistic regression (LR) with its penalty tuned on held-out data.
//!
//! **Reading the table.** One row per backbone × protocol × metric. Accuracies are on
//! the test split, in percent; the edgetune column is the mean over `--draws` random
//! draws (supports, orders, samples) with its standard deviation after ±, and the
//! references are fitted on the same draws (the one-pass references once, offline, on
//! the whole training split: what a batch learner reaches, not a stream; the `host head`
//! row is the head `finetune-head train` makes, one deterministic training on 80 % of
//! that split early-stopped on the rest, beside those same offline fits). Drops are in
//! points (positive: accuracy fell). ECE is the expected calibration error with 15
//! equal-width confidence bins (NCM and SimpleShot give no probabilities: —).
//! "flagged uncertain" is the share of test predictions the device marks `uncertain`,
//! "errors flagged" the share of its test errors among them. The `gauss (scales)` rows
//! are the spread (largest − smallest) of each metric over the three scales: a learner
//! that does not depend on the embeddings' units shows 0. The target column states the
//! issue's goal for the edgetune value (computed from the same run's references) and
//! whether it is met; nothing fails when one is not: this is a measurement.
//!
//! It prints markdown and writes the same results as JSON (`target/learning.json`, or
//! `--json PATH`): `benches::learning::Results`, one object per row with every method's
//! value and the target. `--quick` runs every protocol with 2 draws (CI).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use benches::learning::{self, Machine, Plan};
use clap::Parser;

/// The device learner through fixed protocols, beside reference methods.
#[derive(Parser, Debug)]
#[command(name = "learning")]
struct Args {
    /// Every protocol with 2 draws (unless --draws), for CI.
    #[arg(long)]
    quick: bool,
    /// Random draws per protocol.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    draws: Option<u64>,
    /// Backbones to run, by name or prefix (e.g. `gauss,wine`); default: all.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    backbones: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

fn run(args: &Args) -> Result<()> {
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full(10)
    };
    if let Some(d) = args.draws {
        plan.draws = d as usize;
    }
    let names: Vec<&str> = args.backbones.iter().map(String::as_str).collect();
    let mut results = learning::run(&plan, &names, |line| eprintln!("{line}"))?;
    results.command = std::env::args().collect::<Vec<_>>().join(" ");
    results.machine = Machine::detect(&benches::models::workspace());
    print!("{}", learning::table::markdown(&results));
    let path = args
        .json
        .clone()
        .unwrap_or_else(|| benches::models::workspace().join("target/learning.json"));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&results).context("encoding the results")?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn main() -> ExitCode {
    match run(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("learning: {e:#}");
            ExitCode::FAILURE
        }
    }
}
