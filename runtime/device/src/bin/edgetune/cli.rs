//! The command line: `edgetune serve | predict | status | rollback | reset` and their
//! options, checked and turned into the library's [`Options`] and [`EngineConfig`].

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use edgetune_device::engine::{EngineConfig, LearnerKind};
use edgetune_device::service::Options;

#[derive(Parser)]
#[command(
    name = "edgetune",
    version,
    about = "Edge inference that keeps learning from labels on the device"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log only warnings and errors (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Log debug messages too.
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve predictions and learn from labels: JSON requests, one per line, on stdin
    /// (and a Unix socket), files of a watched directory, label buttons.
    Serve(ServeArgs),
    /// Predict the class of each input once and exit.
    Predict(PredictArgs),
    /// What the state directory holds: classes, samples, updates, guard, latency.
    Status(StatusArgs),
    /// Make an earlier state the newest again (by default the one before the newest).
    Rollback(RollbackArgs),
    /// Start over from the bundle's head; the old states stay on disk.
    Reset(StatusArgs),
    /// The access token of `serve --http` (made if there is none yet).
    Token(StatusArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// The bundle (from `finetune-head train` or `convert`).
    pub bundle: PathBuf,
    /// Where the learned state is kept (created if missing).
    #[arg(long)]
    pub state: PathBuf,
    /// Files to predict first, in order.
    pub inputs: Vec<PathBuf>,
    /// Predict each new file that appears in this directory.
    #[arg(long)]
    pub watch: Option<PathBuf>,
    /// How often to look into the watched directory, in seconds.
    #[arg(long, default_value_t = 0.2)]
    pub watch_interval: f64,
    /// Also take requests on this Unix socket (one JSON request per line per connection).
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Also serve the labeling page and the JSON API over HTTP at this address: a port
    /// (on 127.0.0.1) or HOST:PORT (0.0.0.0:8080 for the whole network). Every request
    /// needs the token `edgetune token --state DIR` shows.
    #[arg(long, value_name = "[HOST:]PORT")]
    pub http: Option<String>,
    /// HTTP requests handled at once (more wait in line).
    #[arg(long, default_value_t = 4, requires = "http")]
    pub http_workers: usize,
    /// Seconds an HTTP client may send or read nothing before it is dropped (a request
    /// body must also arrive whole within six times this): a stalled client never
    /// holds a worker for longer.
    #[arg(long, default_value_t = 10.0, value_name = "SECS", requires = "http")]
    pub http_timeout: f64,
    /// Serve /metrics (Prometheus text) without a token.
    #[arg(long, requires = "http")]
    pub metrics: bool,
    /// Do not read requests from stdin.
    #[arg(long)]
    pub no_stdin: bool,
    /// A label button: GPIOCHIP:LINE=CLASS, e.g. gpiochip0:17=cat; pressing it labels
    /// the most recent sample. Repeat for several classes.
    #[arg(long = "button", value_name = "CHIP:LINE=CLASS")]
    pub buttons: Vec<String>,
    /// Buttons read high when pressed (default: low, a button to ground with a pull-up).
    #[arg(long)]
    pub button_active_high: bool,
    /// Least seconds between two writes of the state: labels in a burst make one write
    /// (0: write after every label, before answering it).
    #[arg(long, default_value_t = 2.0)]
    pub persist_interval: f64,
    /// States kept in the state directory.
    #[arg(long, default_value_t = 5)]
    pub keep: usize,
    #[command(flatten)]
    pub learn: LearnArgs,
    #[command(flatten)]
    pub backbone: BackboneArgs,
}

/// How the bundle is loaded (which signers are trusted) and how its backbone runs.
#[derive(Args)]
pub struct BackboneArgs {
    /// Load the bundle only if it is signed by this public key (`finetune-head keygen`'s
    /// KEY.pub; the signature is BUNDLE.sig, from `finetune-head sign`), and merge only
    /// fleet states signed by it (the fleet's ServerApp signs with its `signing-key`).
    /// Repeat to trust several keys. Without it, signatures are not checked.
    #[arg(long = "trust", value_name = "PUBKEY")]
    pub trust: Vec<PathBuf>,
    /// Backbone threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Run the backbone with ONNX Runtime from this ONNX model (the one the bundle was
    /// converted from), cut at the bundle's embedding, instead of the bundle's tract
    /// graph: the Jetson's GPU path (see --provider).
    #[cfg(feature = "ort")]
    #[arg(long, value_name = "MODEL.onnx")]
    pub onnx: Option<PathBuf>,
    /// ONNX Runtime's execution provider with --onnx (cuda and tensorrt need this build's
    /// `cuda`/`tensorrt` features and an ONNX Runtime library built with them).
    #[cfg(feature = "ort")]
    #[arg(long, value_enum, default_value_t = ProviderArg::Cpu, requires = "onnx")]
    pub provider: ProviderArg,
    /// The GPU's index for --provider cuda/tensorrt.
    #[cfg(feature = "ort")]
    #[arg(long, default_value_t = 0, requires = "onnx")]
    pub gpu: i32,
    /// TensorRT: allow half precision.
    #[cfg(feature = "ort")]
    #[arg(long, requires = "onnx")]
    pub fp16: bool,
    /// TensorRT: keep built engines in this directory (building one takes minutes).
    #[cfg(feature = "ort")]
    #[arg(long, value_name = "DIR", requires = "onnx")]
    pub trt_cache: Option<PathBuf>,
    /// Largest input file read (an image, .npy or raw tensor named by a request, a
    /// watched file), in bytes. Default: 16 MiB, or the model's raw input as f32 plus
    /// 64 KiB when that is larger.
    #[arg(long, value_name = "BYTES")]
    pub max_input_bytes: Option<u64>,
}

#[cfg(feature = "ort")]
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ProviderArg {
    Cpu,
    Cuda,
    Tensorrt,
}

impl BackboneArgs {
    /// Options with the backbone's part and the trusted keys filled in.
    pub fn options(&self) -> Result<Options> {
        let trusted = self
            .trust
            .iter()
            .map(|p| edgetune::trust::read_public_key(p).context("--trust"))
            .collect::<Result<_>>()?;
        #[allow(unused_mut)]
        let mut opts = Options {
            threads: self.threads.max(1),
            max_input_bytes: self.max_input_bytes,
            trusted,
            ..Options::default()
        };
        #[cfg(feature = "ort")]
        if let Some(onnx) = &self.onnx {
            use edgetune::backbone::{OrtOptions, Provider};
            if self.trt_cache.is_some() && !matches!(self.provider, ProviderArg::Tensorrt) {
                bail!("--trt-cache is for --provider tensorrt");
            }
            let provider = match self.provider {
                ProviderArg::Cpu => Provider::Cpu,
                ProviderArg::Cuda => Provider::Cuda { device: self.gpu },
                ProviderArg::Tensorrt => Provider::TensorRt {
                    device: self.gpu,
                    fp16: self.fp16,
                    cache: self.trt_cache.clone(),
                },
            };
            let ort = OrtOptions::default()
                .intra_threads(self.threads.max(1))
                .provider(provider);
            opts.onnx = Some((onnx.clone(), ort));
        }
        Ok(opts)
    }
}

#[derive(Args)]
pub struct LearnArgs {
    /// Which learner writes the head: `slda`, closed-form statistics (learns from one
    /// label, forgets nothing, independent of label order; of an MLP head's hidden
    /// layer, which stays as trained), or `gradient`, gradient steps with replay (which
    /// also train an MLP's hidden layer; --lr, --steps, --replay, --guard-margin).
    #[arg(long, value_enum, default_value_t = LearnerArg::Slda)]
    pub learner: LearnerArg,
    /// Strength of the closed-form learner's covariance prior (the bundle's embedding
    /// statistics), in pseudo-samples.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.prior_strength)]
    pub prior_strength: f32,
    /// Learning rate of the on-device updates.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.learn.lr)]
    pub lr: f32,
    /// Optimizer steps per label.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.online.steps)]
    pub steps: usize,
    /// Samples replayed from the buffer in each step.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.online.replay)]
    pub replay: usize,
    /// Largest drop of the guard's held-out accuracy an update may cause (0.2 = 20
    /// points); a larger drop rolls the update back.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.guard_margin)]
    pub guard_margin: f32,
    /// Flag a prediction as uncertain (ask for a label) when its top-1 minus top-2
    /// probability is below this.
    #[arg(long, default_value_t = EngineConfig::DEFAULT.uncertain_margin)]
    pub uncertain_margin: f32,
    /// With `--learner gradient` in a fleet: gradient steps on the replay buffer and
    /// the fleet's class means after the head took the fleet's average of heads, so
    /// that this device's own samples pull it back toward them (0: keep the average).
    #[arg(long, default_value_t = EngineConfig::DEFAULT.fleet_rehearsal)]
    pub fleet_rehearsal: usize,
    /// In a fleet, with the closed-form learner: the most this device's own-class bias
    /// may cost the other devices' classes, as a share of their samples it would take
    /// by the learner's model (0: no bias, the head of every label; for a device that
    /// sees every class as often as its own).
    #[arg(long, default_value_t = EngineConfig::DEFAULT.fleet_own_budget)]
    pub fleet_own_budget: f32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LearnerArg {
    Slda,
    Gradient,
}

impl LearnArgs {
    pub fn config(&self) -> Result<EngineConfig> {
        let mut cfg = EngineConfig::DEFAULT;
        cfg.learner = match self.learner {
            LearnerArg::Slda => LearnerKind::Slda,
            LearnerArg::Gradient => LearnerKind::Gradient,
        };
        if !(self.prior_strength > 0.0 && self.prior_strength.is_finite()) {
            bail!("--prior-strength is a number of samples above 0");
        }
        cfg.prior_strength = self.prior_strength;
        cfg.learn.lr = self.lr;
        cfg.learn.validate().context("--lr")?;
        if self.steps == 0 || self.replay > edgetune::online::MAX_REPLAY {
            bail!(
                "--steps must be at least 1 and --replay at most {}",
                edgetune::online::MAX_REPLAY
            );
        }
        cfg.online.steps = self.steps;
        cfg.online.replay = self.replay;
        if !(0.0..=1.0).contains(&self.guard_margin)
            || !(0.0..=1.0).contains(&self.uncertain_margin)
        {
            bail!("--guard-margin and --uncertain-margin are between 0 and 1");
        }
        cfg.guard_margin = self.guard_margin;
        cfg.uncertain_margin = self.uncertain_margin;
        if self.fleet_rehearsal > 10_000 {
            bail!("--fleet-rehearsal is a number of steps from 0 to 10000");
        }
        cfg.fleet_rehearsal = self.fleet_rehearsal;
        if !(0.0..=1.0).contains(&self.fleet_own_budget) {
            bail!("--fleet-own-budget is a share between 0 and 1");
        }
        cfg.fleet_own_budget = self.fleet_own_budget;
        Ok(cfg)
    }
}

#[derive(Args)]
pub struct PredictArgs {
    /// The bundle.
    pub bundle: PathBuf,
    /// Images or tensors (PNG, JPEG, .npy, raw f32).
    #[arg(required_unless_present = "text")]
    pub inputs: Vec<PathBuf>,
    /// A sentence to classify, tokenized with the bundle's tokenizer (a text-encoder
    /// bundle converted with --tokenizer); repeat for several.
    #[arg(long, value_name = "TEXT")]
    pub text: Vec<String>,
    /// Use the head learned in this state directory instead of the bundle's.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// One JSON object per input instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub backbone: BackboneArgs,
}

#[derive(Args)]
pub struct StatusArgs {
    /// The state directory.
    #[arg(long)]
    pub state: PathBuf,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// The state directory.
    #[arg(long)]
    pub state: PathBuf,
    /// The state number to go back to (`edgetune status` lists them).
    #[arg(long)]
    pub to: Option<u64>,
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
