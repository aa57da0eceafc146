//! `finetune-head`: the host tool of edgetune.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "finetune-head",
    version,
    about = "Fine-tune a small classification head for edge devices"
)]
#[command(
    after_help = "Model conversion (convert, inspect), training (train, eval) and bundles arrive with \
issues #3 and #4; today the tool runs the demo."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a head on the host, ship it to a simulated device, and let the device learn
    /// new classes from labels one at a time (on the shipped UCI digits).
    Demo {
        /// The digits CSV (64 features 0-16 and a label per row; .gz accepted).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/digits/digits.csv.gz"))]
        data: PathBuf,
        /// Labels the device receives per new digit.
        #[arg(long, default_value_t = 20)]
        labels_per_class: usize,
        /// Seed of the split and of the stream order.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            data,
            labels_per_class,
            seed,
        } => {
            let opts = finetune_head::demo::Options {
                labels_per_class,
                seed,
                ..Default::default()
            };
            let report = finetune_head::demo::run(&data, &opts)?;
            println!("{report}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("finetune-head: {e:#}");
            ExitCode::FAILURE
        }
    }
}
