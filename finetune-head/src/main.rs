//! `finetune-head`: the host tool of edgetune.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use edgetune::bundle::{ChannelOrder, Pooling, Preprocess};
use finetune_head::convert;

#[derive(Parser)]
#[command(
    name = "finetune-head",
    version,
    about = "Fine-tune a small classification head for edge devices"
)]
#[command(
    after_help = "Subcommands today: convert (ONNX model to bundle), inspect (what an ONNX model or a \
bundle holds) and demo. Training (train, eval) comes with issue #4."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--pooling`: how a text encoder's sequence output becomes one embedding.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum PoolingArg {
    /// Mean over the tokens the attention mask keeps.
    Mean,
    /// The first token ([CLS]).
    Cls,
}

/// What `--quantize` turns the backbone into.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum QuantizeTo {
    /// 8-bit integers: i8 activations and per-channel i8 weights, i32 bias.
    Int8,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a pre-trained ONNX model into a bundle: find the embedding, cut the
    /// classifier off, write the backbone as NNEF for the device.
    Convert {
        /// The ONNX model.
        model: PathBuf,
        /// The bundle to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Cut at this tensor or node instead of the classifier's input.
        #[arg(long, value_name = "NODE_OR_TENSOR")]
        embedding: Option<String>,
        /// Input shape, batch first, e.g. 1,3,224,224 (default: the model's).
        #[arg(long, value_delimiter = ',')]
        input_shape: Option<Vec<usize>>,
        /// Multiply raw input values by this first (e.g. 0.00392157 for pixels 0-255).
        #[arg(long, default_value_t = 1.0)]
        scale: f32,
        /// Per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406.
        #[arg(long, value_delimiter = ',')]
        mean: Vec<f32>,
        /// Per-channel standard deviation divided by, e.g. 0.229,0.224,0.225.
        #[arg(long, value_delimiter = ',')]
        std: Vec<f32>,
        /// The model reads BGR (callers still pass RGB).
        #[arg(long)]
        bgr: bool,
        /// Keep the model's classifier as the initial head.
        #[arg(long)]
        keep_head: bool,
        /// Class capacity of the kept head (default: its classes + 8).
        #[arg(long)]
        capacity: Option<usize>,
        /// A text file with one class name per line, for the kept head.
        #[arg(long)]
        classes: Option<PathBuf>,
        /// Quantize the backbone: int8 (post-training, static, per-channel weights).
        #[arg(long, value_enum, requires = "calib")]
        quantize: Option<QuantizeTo>,
        /// Calibration samples for --quantize: images (.png, .jpg) or .npy tensors of raw
        /// input values. The last fifth is held out to measure int8 against f32.
        #[arg(long, value_name = "DIR")]
        calib: Option<PathBuf>,
        /// Use at most N calibration samples (default: all in DIR).
        #[arg(long, value_name = "N", requires = "calib")]
        calib_count: Option<usize>,
        /// Text encoders with a sequence output: mean over the attention mask (default)
        /// or the first ([CLS]) token.
        #[arg(long, value_enum)]
        pooling: Option<PoolingArg>,
        /// Text encoders: the token id that pads a sequence.
        #[arg(long, default_value_t = 0)]
        pad_id: i64,
    },
    /// Show what an ONNX model or a bundle holds: inputs, outputs, operators, parameters,
    /// MACs, the embedding, the classifier or head, quantization.
    Inspect {
        /// The ONNX model or bundle (told apart by content, not by extension).
        path: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
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
        Command::Convert {
            model,
            output,
            embedding,
            input_shape,
            scale,
            mean,
            std,
            bgr,
            keep_head,
            capacity,
            classes,
            quantize,
            calib,
            calib_count,
            pooling,
            pad_id,
        } => {
            let int8 = match (quantize, calib) {
                (Some(QuantizeTo::Int8), Some(path)) => Some(convert::Int8::Dir {
                    path,
                    count: calib_count,
                }),
                (None, Some(_)) => anyhow::bail!("--calib is only used with --quantize int8"),
                (_, None) => None,
            };
            let class_names = match classes {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from)
                        .collect(),
                ),
                None => None,
            };
            let channel_order = if bgr {
                ChannelOrder::Bgr
            } else {
                ChannelOrder::Rgb
            };
            let preprocess = Preprocess {
                scale,
                mean,
                std,
                channel_order,
                resize: None,
            };
            let opts = convert::Options {
                embedding,
                input_shape,
                layout: None,
                preprocess,
                keep_head,
                capacity,
                class_names,
                int8,
                pooling: pooling.map(|p| match p {
                    PoolingArg::Mean => Pooling::MeanOverMask,
                    PoolingArg::Cls => Pooling::Cls,
                }),
                pad_id,
            };
            let (bundle, report) = convert::convert(&model, &opts)?;
            bundle.write(&output)?;
            println!("{report}");
            println!("wrote {}", output.display());
        }
        Command::Inspect { path, json } => {
            let report = finetune_head::inspect::inspect(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
        }
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
