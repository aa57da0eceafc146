//! `finetune-head demo`: the whole workflow on what the repository ships, as a user
//! would run it, with the numbers printed.
//!
//! - The backbone is `models/digits-cnn/digits-cnn-0to4.onnx`, a small CNN pre-trained
//!   on the UCI handwritten digits **0–4** only (its script is beside it).
//! - The data are the UCI digits (`models/digits/digits.csv.gz`), written out as 8×8 PNG
//!   images in one folder per digit, split by folders into train/, val/ and test/.
//!
//! 1. **convert**: cut the classifier off the CNN, quantize the backbone to int8 with
//!    calibration images, write a bundle.
//! 2. **train**: a head for the digits **5–9**, which the backbone never saw (a real
//!    transfer), with a Bayesian hyperparameter search; report in JSON and HTML.
//! 3. **eval**: the trained bundle on the test images.
//! 4. **a simulated device** loads the bundle, and its user labels digits 0–4 (new
//!    classes to the head) one sample at a time: each is predicted first, then learned at
//!    once (an unknown digit adds a class); the state is persisted after every label and
//!    reloaded at the end. Accuracy on all ten digits before and after, and the latency
//!    of a prediction (backbone + head) and of learning one label.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use edgetune::backbone::Backbone;
use edgetune::bundle::{Bundle, Preprocess};
use edgetune::persist;
use edgetune::rng::Rng;
use edgetune_device::engine::{Engine, EngineConfig};
use edgetune_device::state::Origin;
use image::GrayImage;

use crate::convert;
use crate::data::{Dataset, read_csv};
use crate::report::{EvalReport, TrainReport};
use crate::search::Method;
use crate::train;

/// The digits the head is trained for on the host; the device learns the others.
const HOST: std::ops::Range<usize> = 5..10;

/// Knobs of the demo.
#[derive(Debug, Clone)]
pub struct Options {
    /// The digits CSV (64 values 0–16 and a label per row).
    pub data: PathBuf,
    /// The pre-trained ONNX backbone.
    pub model: PathBuf,
    /// Where the images, bundles, reports and the embedding cache go.
    pub workdir: PathBuf,
    /// Labels the device receives per new digit.
    pub labels_per_class: usize,
    /// Trials of the hyperparameter search (0: none).
    pub trials: usize,
    /// Seed of the splits, the search, the training and the stream.
    pub seed: u64,
    /// Threads for embedding and the search.
    pub threads: usize,
    /// Progress bars.
    pub progress: bool,
}

/// The repository's root (this crate's parent folder).
fn repo() -> &'static Path {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest)
}

/// The repository's models/ folder.
pub fn models_dir() -> PathBuf {
    repo().join("models")
}

impl Default for Options {
    fn default() -> Self {
        Options {
            data: models_dir().join("digits/digits.csv.gz"),
            model: models_dir().join("digits-cnn/digits-cnn-0to4.onnx"),
            workdir: repo().join("target/demo"),
            labels_per_class: 10,
            trials: 16,
            seed: 1,
            threads: crate::embed::all_cores(),
            progress: true,
        }
    }
}

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Bytes of the f32 and the int8 backbone.
    pub backbone_bytes: (usize, usize),
    /// Mean cosine of int8 to f32 embeddings on held-out calibration images.
    pub int8_cosine: f32,
    /// The training report (5–9).
    pub train: TrainReport,
    /// The trained bundle.
    pub bundle: PathBuf,
    /// `eval` of the trained bundle on the test images.
    pub eval: EvalReport,
    /// Device accuracy on the test set of all ten digits before any label.
    pub before_all: f64,
    /// ... after the labels.
    pub after_all: f64,
    /// ... on the host's digits (5–9) after the labels: forgetting shows here.
    pub after_host: f64,
    /// ... on the new digits (0–4) after the labels.
    pub after_new: f64,
    /// Share of streamed samples predicted right before their label came, second half.
    pub online_accuracy_late: f64,
    /// Labels the device learned from.
    pub labels: usize,
    /// Test samples of the device's accuracy.
    pub test_samples: usize,
    /// Median time of one prediction on the device (backbone + head), µs.
    pub predict_us: f64,
    /// Median time to learn one label (imprint, replay steps), µs.
    pub learn_us: f64,
    /// Median time to encode the persisted state, µs.
    pub persist_us: f64,
    /// Bytes of the persisted head and learner.
    pub state_bytes: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A digit row (values 0–16) as 8-bit pixels.
fn pixels(row: &[f32]) -> Vec<u8> {
    row.iter()
        .map(|v| (v * 255.0 / 16.0).round().clamp(0.0, 255.0) as u8)
        .collect()
}

fn write_png(path: &Path, row: &[f32]) -> Result<()> {
    let img = GrayImage::from_raw(8, 8, pixels(row)).context("an 8×8 digit")?;
    img.save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `data`'s rows of the host digits as `dir/<split>/<digit>/<row>.png`.
fn write_split(dir: &Path, split: &str, data: &Dataset, ids: &[usize]) -> Result<()> {
    for (&i, (x, &y)) in ids.iter().zip(data.x.iter().zip(&data.y)) {
        let d = dir.join(split).join(y.to_string());
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        write_png(&d.join(format!("{i:04}.png")), x)?;
    }
    Ok(())
}

/// Runs the demo.
pub fn run(opts: &Options) -> Result<Report> {
    let data = write_data(opts)?;
    let host = on_the_host(opts, &data)?;
    on_the_device(opts, &data, host)
}

/// The digits, split: the host's as images on disk, the new ones kept for the device.
struct Data {
    /// `train/`, `val/` and `test/` images of the host's digits.
    images: PathBuf,
    /// Calibration images (training images of the host's digits).
    calib: PathBuf,
    /// The host's test digits, for the device's accuracy.
    host_test: Dataset,
    /// The new digits the device's user labels from.
    new_pool: Dataset,
    /// The new digits' test samples.
    new_test: Dataset,
}

/// Reads the digits, splits them (host digits into train/val/test, new ones into a
/// labeling pool and a test set) and writes the host's images and the calibration ones.
fn write_data(opts: &Options) -> Result<Data> {
    let digits = read_csv(&opts.data, 1.0).context("loading the demo data")?;
    ensure!(
        digits.dim() == 64,
        "{}: expected 64 values (8×8 pixels) per digit, found {}",
        opts.data.display(),
        digits.dim()
    );
    ensure!(
        opts.labels_per_class > 0,
        "the device needs at least one label per new digit"
    );
    let work = &opts.workdir;
    let images = work.join("digits-5to9");
    if images.exists() {
        std::fs::remove_dir_all(&images)
            .with_context(|| format!("cannot clear {}", images.display()))?;
    }
    // Row numbers ride along as a feature so that file names name the CSV row.
    let mut numbered = digits.clone();
    for (i, x) in numbered.x.iter_mut().enumerate() {
        x.push(i as f32);
    }
    let host = numbered.select(|y| HOST.contains(&y), |y| y);
    let new = numbered.select(|y| !HOST.contains(&y), |y| y);
    let (host_train, rest) = host.stratified_split(0.4, opts.seed);
    let (host_val, host_test) = rest.stratified_split(0.5, opts.seed);
    let (new_pool, new_test) = new.stratified_split(0.3, opts.seed);
    let strip = |d: &Dataset| -> (Dataset, Vec<usize>) {
        let ids = d.x.iter().map(|x| x[64] as usize).collect();
        let mut d = d.clone();
        d.x.iter_mut().for_each(|x| x.truncate(64));
        (d, ids)
    };
    let (host_train, train_ids) = strip(&host_train);
    let (host_val, val_ids) = strip(&host_val);
    let (host_test, test_ids) = strip(&host_test);
    let (new_pool, _) = strip(&new_pool);
    let (new_test, _) = strip(&new_test);
    write_split(&images, "train", &host_train, &train_ids)?;
    write_split(&images, "val", &host_val, &val_ids)?;
    write_split(&images, "test", &host_test, &test_ids)?;
    // Calibration: training images of the deployment's digits.
    let calib = work.join("calib");
    if calib.exists() {
        std::fs::remove_dir_all(&calib)
            .with_context(|| format!("cannot clear {}", calib.display()))?;
    }
    std::fs::create_dir_all(&calib)?;
    for (i, x) in host_train.x.iter().take(100).enumerate() {
        write_png(&calib.join(format!("{i:03}.png")), x)?;
    }
    Ok(Data {
        images,
        calib,
        host_test,
        new_pool,
        new_test,
    })
}

/// What the host side made and measured.
struct Host {
    /// Bytes of the f32 and the int8 backbone.
    backbone_bytes: (usize, usize),
    /// Mean cosine of int8 to f32 embeddings.
    int8_cosine: f32,
    /// The training report.
    train: TrainReport,
    /// The trained bundle.
    bundle: PathBuf,
    /// `eval` on the test images.
    eval: EvalReport,
}

/// Steps 1–3 on the host: convert and quantize, train the head for the host's digits,
/// evaluate it on the test images.
fn on_the_host(opts: &Options, data: &Data) -> Result<Host> {
    let work = &opts.workdir;
    // 1. convert + quantize.
    let copts = convert::Options {
        preprocess: Preprocess {
            scale: 1.0 / 255.0,
            ..Preprocess::default()
        },
        int8: Some(convert::Int8::Dir {
            path: data.calib.clone(),
            count: None,
        }),
        ..convert::Options::default()
    };
    let (bundle, creport) = convert::convert(&opts.model, &copts).context("convert")?;
    let converted = work.join("digits-cnn-int8.bundle");
    bundle.write(&converted)?;
    let int8 = creport.int8.as_ref().context("the int8 report")?;

    // 2. train the head for 5–9.
    let mut topts = train::Options::new(&converted, &data.images);
    topts.cache = Some(work.join("cache"));
    topts.threads = opts.threads;
    topts.seed = opts.seed;
    topts.progress = opts.progress;
    topts.search = (opts.trials > 0).then_some((Method::Bayes, opts.trials));
    let trained = work.join("digits-5to9.bundle");
    let (tbundle, treport) = train::run(&topts, &trained).context("train")?;
    train::write(&tbundle, &treport, &trained)?;

    // 3. eval on the test images.
    let mut eopts = crate::eval::Options::new(&trained, &data.images);
    eopts.cache = Some(work.join("cache"));
    eopts.threads = opts.threads;
    eopts.progress = opts.progress;
    let eval = crate::eval::run(&eopts).context("eval")?;
    Ok(Host {
        backbone_bytes: (int8.f32_backbone_bytes, creport.backbone_bytes),
        int8_cosine: int8
            .cosine_mean
            .context("the int8 report has no cosine to f32 (no held-out samples)")?,
        train: treport,
        bundle: trained,
        eval,
    })
}

/// The device's test set: all ten digits, embedded once.
struct TestSet {
    x: Vec<Vec<f32>>,
    digit: Vec<usize>,
    capacity: usize,
}

impl TestSet {
    /// `device`'s accuracy on the test digits that `keep` keeps, digit `d` being the
    /// device's class `class_of[d]` (none yet: a miss).
    fn accuracy(
        &self,
        device: &Engine,
        class_of: &[Option<usize>; 10],
        keep: &dyn Fn(usize) -> bool,
    ) -> f64 {
        let mut probs = vec![0.0f32; self.capacity];
        let (mut hits, mut n) = (0usize, 0usize);
        for (e, &d) in self.x.iter().zip(&self.digit) {
            if !keep(d) {
                continue;
            }
            n += 1;
            if let (Ok(p), Some(c)) = (device.online().predict(e, &mut probs), class_of[d]) {
                hits += usize::from(p.class == c);
            }
        }
        hits as f64 / n.max(1) as f64
    }
}

/// The device as `edgetune serve` starts it from the bundle: the host's statistics of
/// its head's features, then its exemplars.
fn start_device(bundle: &Bundle) -> Result<Engine> {
    let dim = bundle.manifest.embedding.size;
    let classes = bundle.manifest.classes.len();
    let head = persist::decode_head(bundle.head.as_deref().context("a head")?)?;
    let stats = edgetune::stats::for_head(&bundle.manifest, head.dims(), classes)?;
    let mut device = Engine::new(head, EngineConfig::DEFAULT)?;
    if let Some(stats) = &stats {
        device.set_stats(stats)?;
    }
    if let Some(e) = &bundle.manifest.exemplars {
        device.seed(&e.embeddings(dim, classes)?, &e.replay, &e.guard)?;
    }
    Ok(device)
}

/// The labels the user gives: `labels_per_class` samples of each new digit from the
/// pool, shuffled.
fn label_stream(opts: &Options, new_pool: &Dataset) -> Vec<usize> {
    let mut rng = Rng::new(opts.seed);
    let mut stream: Vec<usize> = Vec::new();
    for d in 0..10 {
        if HOST.contains(&d) {
            continue;
        }
        stream.extend(
            (0..new_pool.len())
                .filter(|&i| new_pool.y[i] == d)
                .take(opts.labels_per_class),
        );
    }
    for i in (1..stream.len()).rev() {
        stream.swap(i, rng.below(i + 1));
    }
    stream
}

/// A restart: the persisted `state` gives back the same head.
fn restart(device: &Engine, state: &[u8], bundle: &Bundle) -> Result<Engine> {
    let classes = bundle.manifest.classes.len();
    let (_, saved) = edgetune_device::state::decode(state)
        .map_err(|e| anyhow::anyhow!("device: reloading its state: {e}"))?;
    let stats =
        edgetune::stats::for_head(&bundle.manifest, device.online().head().dims(), classes)?;
    let reloaded = Engine::restore(
        &saved,
        &device.online().head().clone(),
        stats.as_ref(),
        EngineConfig::DEFAULT,
    )
    .map_err(|e| anyhow::anyhow!("device: reloading its state: {e}"))?;
    ensure!(
        reloaded.online().head().params() == device.online().head().params()
            && reloaded.classes() == device.classes(),
        "the reloaded state differs from the device's"
    );
    Ok(reloaded)
}

/// Step 4: the simulated device loads the trained bundle, and its user labels the new
/// digits one at a time (each predicted first, then learned; the state persisted after
/// every label), then it restarts from the persisted state. The report of both sides.
fn on_the_device(opts: &Options, data: &Data, host: Host) -> Result<Report> {
    let bundle = Bundle::read(&host.bundle)?;
    let backbone = Backbone::from_bundle(&bundle)?;
    let dim = bundle.manifest.embedding.size;
    let classes = bundle.manifest.classes.clone();
    let class_of_name = |d: usize| classes.iter().position(|c| *c == d.to_string());
    let raw = |x: &[f32]| -> Vec<f32> { pixels(x).into_iter().map(f32::from).collect() };
    let mut emb = vec![0.0f32; dim];
    let mut device = start_device(&bundle)?;
    let capacity = device.online().head().dims().capacity;
    let mut test = TestSet {
        x: Vec::new(),
        digit: Vec::new(),
        capacity,
    };
    for (x, &y) in data
        .host_test
        .x
        .iter()
        .zip(&data.host_test.y)
        .chain(data.new_test.x.iter().zip(&data.new_test.y))
    {
        backbone.embed(&raw(x), &mut emb)?;
        test.x.push(emb.clone());
        test.digit.push(y);
    }
    // Digit → the device's class; new digits get one when first labeled.
    let mut class_of: [Option<usize>; 10] = core::array::from_fn(class_of_name);
    let before_all = test.accuracy(&device, &class_of, &|_| true);

    let stream = label_stream(opts, &data.new_pool);
    let (mut predict_t, mut learn_t, mut persist_t) = (vec![], vec![], vec![]);
    let mut late_hits = 0usize;
    let mut state = Vec::new();
    let names: Vec<String> = (0..capacity).map(|c| c.to_string()).collect();
    for (n, &i) in stream.iter().enumerate() {
        let (x, digit) = (&data.new_pool.x[i], data.new_pool.y[i]);
        let pixels = raw(x);
        let t = Instant::now();
        backbone.embed(&pixels, &mut emb)?;
        let seen = device.observe(&emb)?;
        predict_t.push(t.elapsed().as_secs_f64() * 1e6);
        let label = class_of[digit].unwrap_or(device.classes());
        if n >= stream.len() / 2 && seen.prediction.is_some_and(|p| p.class == label) {
            late_hits += 1;
        }
        let t = Instant::now();
        device.label(Some(seen.sample), label)?;
        learn_t.push(t.elapsed().as_secs_f64() * 1e6);
        class_of[digit] = Some(label);
        let t = Instant::now();
        let s = device.to_state(0, &names[..device.classes()], &[], Origin::Learned);
        state = edgetune_device::state::encode(n as u64 + 1, &s);
        persist_t.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let device = restart(&device, &state, &bundle)?;
    Ok(Report {
        backbone_bytes: host.backbone_bytes,
        int8_cosine: host.int8_cosine,
        train: host.train,
        bundle: host.bundle,
        eval: host.eval,
        before_all,
        after_all: test.accuracy(&device, &class_of, &|_| true),
        after_host: test.accuracy(&device, &class_of, &|d| HOST.contains(&d)),
        after_new: test.accuracy(&device, &class_of, &|d| !HOST.contains(&d)),
        online_accuracy_late: late_hits as f64 / (stream.len() - stream.len() / 2).max(1) as f64,
        labels: stream.len(),
        test_samples: test.x.len(),
        predict_us: median(&mut predict_t),
        learn_us: median(&mut learn_t),
        persist_us: median(&mut persist_t),
        state_bytes: state.len(),
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |v: f64| format!("{:5.1}%", v * 100.0);
        let t = &self.train;
        writeln!(
            f,
            "1. convert   digits CNN (pre-trained on 0-4), classifier cut off, int8 backbone"
        )?;
        writeln!(
            f,
            "             {} bytes f32 -> {} bytes int8, embedding cosine int8/f32 {:.4}",
            self.backbone_bytes.0, self.backbone_bytes.1, self.int8_cosine
        )?;
        writeln!(
            f,
            "2. train     head for digits 5-9 on {} images ({} embedded, {} from the cache)",
            t.data.used, t.embedding.computed, t.embedding.cached
        )?;
        if let Some(s) = &t.search {
            writeln!(
                f,
                "             {} search, {} trials: best validation accuracy {} (trial {}; the default scored {})",
                s.method,
                s.trials.len(),
                pct(s.trials.get(s.best).map_or(0.0, |b| b.val_accuracy)),
                s.best + 1,
                pct(s.trials.first().map_or(0.0, |b| b.val_accuracy)),
            )?;
        }
        writeln!(
            f,
            "             best epoch {} of {}, validation {}, test {}, test macro-F1 {:.3}",
            t.best_epoch,
            t.history.len(),
            pct(t.validation.accuracy),
            pct(t.test.accuracy),
            t.test.macro_f1
        )?;
        writeln!(
            f,
            "             bundle {} (+ .report.json, .report.html)",
            self.bundle.display()
        )?;
        writeln!(
            f,
            "3. eval      test accuracy {}, macro-F1 {:.3}, {:.0} µs per sample (backbone + head)",
            pct(self.eval.metrics.accuracy),
            self.eval.metrics.macro_f1,
            self.eval.metrics.latency_us.unwrap_or(f64::NAN)
        )?;
        writeln!(
            f,
            "4. device    its user labels digits 0-4, new to the head, one at a time"
        )?;
        writeln!(
            f,
            "             before any label   test accuracy (0-9) {}  (knows 5-9 only)",
            pct(self.before_all)
        )?;
        writeln!(
            f,
            "             after {:3} labels   test accuracy (0-9) {}",
            self.labels,
            pct(self.after_all)
        )?;
        writeln!(
            f,
            "                                 host digits (5-9)   {}",
            pct(self.after_host)
        )?;
        writeln!(
            f,
            "                                 new digits (0-4)    {}",
            pct(self.after_new)
        )?;
        writeln!(
            f,
            "             right before their label, 2nd half of the stream: {}",
            pct(self.online_accuracy_late)
        )?;
        writeln!(
            f,
            "             latency (median): predict {:.0} µs (backbone + head), learn one label {:.1} µs, persist {:.1} µs ({} bytes)",
            self.predict_us, self.learn_us, self.persist_us, self.state_bytes
        )?;
        writeln!(
            f,
            "             {} test samples; state reloaded after the stream and checked identical",
            self.test_samples
        )?;
        write!(
            f,
            "the device program on this bundle (JSON requests on stdin, e.g. {{\"input\": \"some.png\"}}):\n  \
             cargo run --release -p edgetune-device --bin edgetune -- serve {} --state {}",
            self.bundle.display(),
            self.bundle.with_file_name("device-state").display()
        )
    }
}
