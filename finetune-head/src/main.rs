//! `finetune-head`: the host tool of edgetune.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use edgetune::bundle::{Bundle, ChannelOrder, Pooling, Preprocess, Provenance};
use finetune_head::augment::Augment;
use finetune_head::dataset::LoadOptions;
use finetune_head::search::Method;
use finetune_head::train::{
    self, HeadChoice, HeadConfig, LossChoice, OptimizerChoice, ScheduleChoice,
};
use finetune_head::{convert, demo, eval};

#[derive(Parser)]
#[command(
    name = "finetune-head",
    version,
    about = "Fine-tune a small classification head for edge devices"
)]
#[command(
    after_help = "The workflow: convert (a pre-trained ONNX model to a bundle, optionally int8), \
train (the head, on labeled data), eval (a bundle on labeled data); inspect shows what a model \
or bundle holds, demo runs all of it on the shipped digits."
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
        #[arg(required_unless_present = "features")]
        model: Option<PathBuf>,
        /// Make a bundle without a backbone whose input is a feature vector of N values
        /// (from a DSP front end, a sensor, another model): no ONNX model then.
        #[arg(long, value_name = "N", conflicts_with_all = ["model", "quantize", "keep_head", "embedding"])]
        features: Option<usize>,
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
        /// Calibration samples: a folder of images (.png, .jpg) or .npy tensors of raw
        /// input values, unlabeled, from the backbone's domain; for a text encoder,
        /// sentences (a .txt file, one per line, or labeled text as train reads it; needs
        /// --tokenizer). They give the embedding statistics the device's learner starts
        /// from (mean, spread, covariance); with --quantize they also calibrate int8, and
        /// the last fifth is held out to measure it against f32.
        #[arg(long, value_name = "DIR|FILE")]
        calib: Option<PathBuf>,
        /// Use at most N calibration samples (default: all in DIR).
        #[arg(long, value_name = "N", requires = "calib")]
        calib_count: Option<usize>,
        /// With --quantize int8: keep the first convolution, which reads the image, in
        /// f32 (by default it is int8 like the others: 5–11 % fewer instructions per
        /// inference on a Pi 5, within 0.5 % on a Pi 4, at 224×224). For a model whose
        /// reported cosine to f32 is too low with it.
        #[arg(long, requires = "quantize", conflicts_with = "quantize_first_layer")]
        first_layer_f32: bool,
        /// The default now (the first convolution int8); accepted so that older
        /// scripts keep working.
        #[arg(long, requires = "quantize", hide = true)]
        quantize_first_layer: bool,
        /// Text encoders with a sequence output: mean over the attention mask (default)
        /// or the first ([CLS]) token.
        #[arg(long, value_enum)]
        pooling: Option<PoolingArg>,
        /// Text encoders: the token id that pads a sequence (default: the tokenizer's
        /// [PAD], else 0).
        #[arg(long, default_value_t = 0)]
        pad_id: i64,
        /// Text encoders: the model's Hugging Face tokenizer.json, carried in the bundle
        /// so the device takes text (checked against the model's vocabulary).
        #[arg(long, value_name = "FILE")]
        tokenizer: Option<PathBuf>,
    },
    /// Train the bundle's head on labeled data: clean, split, augment, embed (cached),
    /// train with early stopping (optionally a hyperparameter search), report.
    Train(Box<TrainArgs>),
    /// Score a bundle's head on labeled data: accuracy, macro-F1, per class, confusion
    /// matrix, latency.
    Eval {
        /// The bundle, with a trained head.
        bundle: PathBuf,
        #[command(flatten)]
        data: DataArgs,
        /// Print the report as JSON (top level: accuracy as a fraction, macro_f1, …).
        #[arg(long)]
        json: bool,
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
    /// Make an Ed25519 key pair for signing bundles: the private key in OUT (PKCS#8 PEM,
    /// mode 0600), the public key in OUT.pub (what devices trust with --trust).
    Keygen {
        /// The private key file to write (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a bundle: writes BUNDLE.sig, an Ed25519 signature over every byte of the
    /// bundle, which `edgetune serve --trust KEY.pub` checks before loading it.
    Sign {
        /// The bundle to sign.
        bundle: PathBuf,
        /// The private key (from keygen; refused if its group or others can read it).
        #[arg(long)]
        key: PathBuf,
    },
    /// The whole workflow on the shipped digits: convert the pre-trained CNN (digits 0-4)
    /// to int8, train a head for 5-9 with a search, eval, then a simulated device learns
    /// 0-4 from labels one at a time.
    Demo(DemoArgs),
}

/// The demo's knobs (the rest of [`demo::Options`] keeps its defaults).
#[derive(Args, Debug)]
struct DemoArgs {
    /// The digits CSV (64 values 0-16 and a label per row; .gz accepted).
    #[arg(long, default_value_os_t = demo::Options::default().data)]
    data: PathBuf,
    /// The pre-trained ONNX backbone.
    #[arg(long, default_value_os_t = demo::Options::default().model)]
    model: PathBuf,
    /// Where the images, bundles, reports and embedding cache go.
    #[arg(long, default_value_os_t = demo::Options::default().workdir)]
    workdir: PathBuf,
    /// Labels the device receives per new digit.
    #[arg(long, default_value_t = 10)]
    labels_per_class: usize,
    /// Trials of the Bayesian hyperparameter search (0: none).
    #[arg(long, default_value_t = 16)]
    trials: usize,
    /// Seed of the splits, the search and the stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Where the labeled data is and how to read it (train and eval).
#[derive(Args, Debug)]
struct DataArgs {
    /// The data: a folder with one folder per class (images or .npy), a folder with
    /// train/ val/ test/ in it, a folder of files with --labels, or a CSV file.
    #[arg(long)]
    data: PathBuf,
    /// A CSV of `path,label` rows (paths relative to --data) for a folder of files.
    #[arg(long, value_name = "CSV")]
    labels: Option<PathBuf>,
    /// The label column of a CSV data file: a header name or a 0-based index (default: a
    /// column named label/class/target/y, else the last).
    #[arg(long, value_name = "NAME|INDEX")]
    label_column: Option<String>,
    /// Refuse unreadable or malformed samples instead of skipping and listing them.
    #[arg(long)]
    strict: bool,
    /// Threads for embedding (and search trials) [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Embedding cache folder [default: $XDG_CACHE_HOME/edgetune or ~/.cache/edgetune].
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Do not read or write the embedding cache.
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
}

impl DataArgs {
    fn load(&self) -> LoadOptions {
        LoadOptions {
            labels: self.labels.clone(),
            label_column: self.label_column.clone(),
            strict: self.strict,
        }
    }

    fn threads(&self) -> Result<usize> {
        match self.threads {
            Some(0) => anyhow::bail!("--threads must be at least 1"),
            Some(n) => Ok(n),
            None => Ok(finetune_head::embed::all_cores()),
        }
    }

    fn cache(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            Some(
                self.cache
                    .clone()
                    .unwrap_or_else(finetune_head::embed::default_cache_dir),
            )
        }
    }
}

/// `train`'s arguments.
#[derive(Args, Debug)]
struct TrainArgs {
    /// The bundle (from convert) whose backbone embeds the data.
    bundle: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// The bundle to write, with the trained head; the reports go beside it
    /// (OUT.report.json, OUT.report.html).
    #[arg(short, long)]
    output: PathBuf,
    /// Validation fraction of the stratified split.
    #[arg(long, default_value_t = 0.15)]
    val: f32,
    /// Test fraction of the stratified split.
    #[arg(long, default_value_t = 0.15)]
    test: f32,
    /// Seed of the split, the augmentation, the search and the training.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Augment training images: flip, crop, rotate, color, noise (or all).
    #[arg(long, value_delimiter = ',')]
    augment: Vec<String>,
    /// Augmented copies per training image.
    #[arg(long, default_value_t = 2)]
    augment_copies: u32,
    /// Head kind [default: linear]. Given with --search, the search keeps it (a device
    /// that will learn new classes learns them better with a linear head: README,
    /// Learning quality), as it keeps every searched hyperparameter given here.
    #[arg(long, value_enum)]
    head: Option<HeadChoice>,
    /// Hidden units of an MLP head [default: 128].
    #[arg(long)]
    hidden: Option<usize>,
    /// Dropout on the MLP's hidden units [default: 0].
    #[arg(long)]
    dropout: Option<f32>,
    /// Loss [default: ce].
    #[arg(long, value_enum)]
    loss: Option<LossChoice>,
    /// Label smoothing (cross-entropy) [default: 0].
    #[arg(long)]
    label_smoothing: Option<f32>,
    /// Focal loss gamma.
    #[arg(long, default_value_t = 2.0)]
    focal_gamma: f32,
    /// Weight classes by inverse frequency.
    #[arg(long)]
    balance: bool,
    /// Optimizer.
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerChoice,
    /// Momentum of SGD (Nesterov).
    #[arg(long, default_value_t = 0.9)]
    momentum: f32,
    /// Learning rate [default: 0.03].
    #[arg(long)]
    lr: Option<f32>,
    /// Weight decay [default: 0.0001].
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Gradient clipping by global norm (0: off).
    #[arg(long, default_value_t = 0.0)]
    clip_norm: f32,
    /// Train on the raw embeddings (by default they are standardized for training and
    /// the scaling folded into the head).
    #[arg(long)]
    no_standardize: bool,
    /// Mini-batch size.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Most epochs.
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// Early stopping: epochs without a lower validation loss before the learning rate
    /// drops tenfold or, after --lr-drops drops, training stops (0: off).
    #[arg(long, default_value_t = 5)]
    patience: usize,
    /// Learning-rate drops on a plateau before training stops.
    #[arg(long, default_value_t = 1)]
    lr_drops: usize,
    /// Learning-rate schedule after warm-up.
    #[arg(long, value_enum, default_value = "constant")]
    schedule: ScheduleChoice,
    /// Warm-up epochs.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Hyperparameter search over lr, weight decay, head and hidden size, dropout, loss
    /// and label smoothing, except those given by their flags (kept as given); trial 1
    /// is the configuration given by the flags.
    #[arg(long, value_enum)]
    search: Option<SearchArg>,
    /// Trials of the search.
    #[arg(long, default_value_t = 20, requires = "search")]
    trials: usize,
    /// Class capacity of the head (default: classes + 8, room to learn on the device).
    #[arg(long)]
    capacity: Option<usize>,
    /// Print the report as JSON instead of the summary.
    #[arg(long)]
    json: bool,
}

/// `--search`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum SearchArg {
    /// Every combination of a few levels per hyperparameter.
    Grid,
    /// Independent random draws.
    Random,
    /// Sequential model-based (TPE).
    Bayes,
}

fn train(a: &TrainArgs) -> Result<()> {
    let d = HeadConfig::default();
    // The searched hyperparameters given on the command line: the search keeps them.
    let search_fixed: Vec<String> = [
        ("lr", a.lr.is_some()),
        ("weight_decay", a.weight_decay.is_some()),
        ("head", a.head.is_some()),
        ("hidden", a.hidden.is_some()),
        ("dropout", a.dropout.is_some()),
        ("loss", a.loss.is_some()),
        ("label_smoothing", a.label_smoothing.is_some()),
    ]
    .into_iter()
    .filter(|&(_, given)| given)
    .map(|(name, _)| name.to_string())
    .collect();
    let head = HeadConfig {
        head: a.head.unwrap_or(d.head),
        hidden: a.hidden.unwrap_or(d.hidden),
        dropout: a.dropout.unwrap_or(d.dropout),
        loss: a.loss.unwrap_or(d.loss),
        label_smoothing: a.label_smoothing.unwrap_or(d.label_smoothing),
        focal_gamma: a.focal_gamma,
        optimizer: a.optimizer,
        momentum: a.momentum,
        lr: a.lr.unwrap_or(d.lr),
        weight_decay: a.weight_decay.unwrap_or(d.weight_decay),
        batch: a.batch,
        epochs: a.epochs,
        patience: a.patience,
        lr_drops: a.lr_drops,
        schedule: a.schedule,
        warmup_epochs: a.warmup,
        balance: a.balance,
        clip_norm: a.clip_norm,
        standardize: !a.no_standardize,
        seed: a.seed,
    };
    let augment = Augment::parse(&a.augment)?;
    let opts = train::Options {
        bundle: a.bundle.clone(),
        data: a.data.data.clone(),
        load: a.data.load(),
        val: a.val,
        test: a.test,
        seed: a.seed,
        augment,
        augment_copies: a.augment_copies,
        threads: a.data.threads()?,
        cache: a.data.cache(),
        head,
        search: a.search.map(|s| {
            (
                match s {
                    SearchArg::Grid => Method::Grid,
                    SearchArg::Random => Method::Random,
                    SearchArg::Bayes => Method::Bayes,
                },
                a.trials,
            )
        }),
        search_fixed,
        capacity: a.capacity,
        progress: !a.json,
    };
    let (bundle, report) = train::run(&opts, &a.output)?;
    let (json, html) = train::write(&bundle, &report, &a.output)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
        println!(
            "wrote {} (reports: {}, {})",
            a.output.display(),
            json.display(),
            html.display()
        );
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Convert {
            features: Some(n),
            output,
            ..
        } => {
            anyhow::ensure!(n > 0, "--features must be at least 1");
            let bundle = Bundle::features_only(
                n,
                Vec::<String>::new(),
                Provenance::new(
                    format!("features: {n}"),
                    concat!("finetune-head ", env!("CARGO_PKG_VERSION")),
                ),
            );
            bundle.write(&output)?;
            println!("a bundle without backbone: its input is a feature vector of {n} values");
            println!("wrote {}", output.display());
        }
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
            first_layer_f32,
            quantize_first_layer: _,
            pooling,
            pad_id,
            tokenizer,
            features: None,
        } => {
            let model = model.context("the ONNX model to convert")?;
            let samples = calib.map(|path| convert::Int8::Dir {
                path,
                count: calib_count,
            });
            let (int8, stats) = match quantize {
                Some(QuantizeTo::Int8) => (samples, None),
                None => (None, samples),
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
                int8_first_layer_f32: first_layer_f32,
                stats,
                pooling: pooling.map(|p| match p {
                    PoolingArg::Mean => Pooling::MeanOverMask,
                    PoolingArg::Cls => Pooling::Cls,
                }),
                pad_id,
                tokenizer,
            };
            let (bundle, report) = convert::convert(&model, &opts)?;
            bundle.write(&output)?;
            println!("{report}");
            println!("wrote {}", output.display());
        }
        Command::Train(a) => train(&a)?,
        Command::Eval { bundle, data, json } => {
            let opts = eval::Options {
                bundle,
                data: data.data.clone(),
                load: data.load(),
                threads: data.threads()?,
                cache: data.cache(),
                latency_samples: 50,
                progress: !json,
            };
            let report = eval::run(&opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
        }
        Command::Inspect { path, json } => {
            let report = finetune_head::inspect::inspect(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
        }
        Command::Keygen { out } => {
            let (public, id) = finetune_head::sign::keygen(&out)?;
            println!(
                "key {id}: private {} (keep it secret), public {} (for --trust)",
                out.display(),
                public.display()
            );
        }
        Command::Sign { bundle, key } => {
            let (sig, id) = finetune_head::sign::sign(&bundle, &key)?;
            println!(
                "signed {} with key {id}: wrote {}",
                bundle.display(),
                sig.display()
            );
        }
        Command::Demo(a) => {
            let opts = demo::Options {
                data: a.data,
                model: a.model,
                workdir: a.workdir,
                labels_per_class: a.labels_per_class,
                trials: a.trials,
                seed: a.seed,
                ..Default::default()
            };
            let report = demo::run(&opts)?;
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
