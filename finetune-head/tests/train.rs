//! `finetune-head train` and `eval` on the shipped data: the digits CNN pre-trained on
//! 0–4 (models/digits-cnn) and the UCI digits 5–9 as PNG folders.
//!
//! - the trained head against a reference trainer on the same embeddings;
//! - the search against the default configuration;
//! - the embedding cache (a second run embeds nothing);
//! - bad input: clear errors or listed skips, and no half-written output;
//! - a full disk under the output: a clear error, the old files as they were.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use edgetune::bundle::{Bundle, Preprocess};
use edgetune_testkit as testkit;
use finetune_head::data::read_csv;
use finetune_head::search::Method;
use finetune_head::train::{self, Embedded, HeadConfig, Options, Prepared};
use image::GrayImage;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn png(path: &Path, row: &[f32]) {
    let px = row
        .iter()
        .map(|v| (v * 255.0 / 16.0).round() as u8)
        .collect();
    GrayImage::from_raw(8, 8, px).unwrap().save(path).unwrap();
}

/// The digits 5–9 as `DIR/<digit>/<row>.png`, and the f32 digits-CNN bundle.
fn shipped() -> &'static (PathBuf, PathBuf) {
    static DATA: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = testkit::scratch("train-shipped");
        let digits = read_csv(&models().join("digits/digits.csv.gz"), 1.0).unwrap();
        let images = dir.join("digits");
        for (i, (x, &y)) in digits.x.iter().zip(&digits.y).enumerate() {
            if y >= 5 {
                let d = images.join(y.to_string());
                std::fs::create_dir_all(&d).unwrap();
                png(&d.join(format!("{i:04}.png")), x);
            }
        }
        let opts = finetune_head::convert::Options {
            preprocess: Preprocess {
                scale: 1.0 / 255.0,
                ..Preprocess::default()
            },
            ..Default::default()
        };
        let (bundle, _) = finetune_head::convert::convert(
            &models().join("digits-cnn/digits-cnn-0to4.onnx"),
            &opts,
        )
        .unwrap();
        let path = dir.join("digits-cnn.bundle");
        bundle.write(&path).unwrap();
        (path, images)
    })
}

fn options(cache: &Path) -> Options {
    let (bundle, images) = shipped();
    let mut o = Options::new(bundle, images);
    o.cache = Some(cache.to_path_buf());
    o.progress = false;
    o
}

fn prepared() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    P.get_or_init(|| {
        let mut o = options(&testkit::scratch("train-prepared-cache"));
        // A larger test split than the default: 0.5 pp is then about one sample.
        o.test = 0.3;
        let bundle = Bundle::read(&o.bundle).unwrap();
        train::prepare(&bundle, &o).unwrap()
    })
}

/// Reference: multinomial logistic regression with an L2 penalty `lambda`, in f64, full
/// batch gradient descent with Nesterov momentum (step 1/L for the loss's Lipschitz
/// bound L) until the gradient norm is below 1e-6. Returns the weights, `c` rows of
/// `d` weights and a bias.
fn reference_logreg(train: &Embedded, c: usize, lambda: f64) -> Vec<f64> {
    let d = train.x[0].len();
    let n = train.len() as f64;
    let x: Vec<Vec<f64>> = train
        .x
        .iter()
        .map(|r| r.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let max_sq = x
        .iter()
        .map(|r| r.iter().map(|v| v * v).sum::<f64>() + 1.0)
        .fold(0.0, f64::max);
    let lr = 1.0 / (0.5 * max_sq + lambda);
    let mom = 0.9;
    let len = c * (d + 1);
    let (mut w, mut v) = (vec![0.0f64; len], vec![0.0f64; len]);
    for _ in 0..30_000 {
        let la: Vec<f64> = (0..len).map(|i| w[i] + mom * v[i]).collect();
        let mut g = vec![0.0f64; len];
        for (xi, &y) in x.iter().zip(&train.y) {
            let z: Vec<f64> = (0..c)
                .map(|k| {
                    la[k * (d + 1) + d] + (0..d).map(|j| la[k * (d + 1) + j] * xi[j]).sum::<f64>()
                })
                .collect();
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
            for k in 0..c {
                let gk = ((z[k] - m).exp() / s - f64::from(u8::from(k == y))) / n;
                for j in 0..d {
                    g[k * (d + 1) + j] += gk * xi[j];
                }
                g[k * (d + 1) + d] += gk;
            }
        }
        let mut norm = 0.0;
        for k in 0..c {
            for j in 0..d {
                g[k * (d + 1) + j] += lambda * la[k * (d + 1) + j];
            }
        }
        for i in 0..len {
            norm += g[i] * g[i];
            v[i] = mom * v[i] - lr * g[i];
            w[i] += v[i];
        }
        if norm.sqrt() < 1e-6 {
            break;
        }
    }
    w
}

fn reference_accuracy(w: &[f64], test: &Embedded, c: usize) -> f64 {
    let d = test.x[0].len();
    let hits = test
        .x
        .iter()
        .zip(&test.y)
        .filter(|(xi, y)| {
            let z: Vec<f64> = (0..c)
                .map(|k| {
                    w[k * (d + 1) + d]
                        + (0..d)
                            .map(|j| w[k * (d + 1) + j] * f64::from(xi[j]))
                            .sum::<f64>()
                })
                .collect();
            (0..c).fold(0, |b, k| if z[k] > z[b] { k } else { b }) == **y
        })
        .count();
    hits as f64 / test.len() as f64
}

#[test]
fn trained_head_is_as_good_as_a_reference_trainer_on_the_same_embeddings() {
    let p = prepared();
    assert_eq!(p.classes, ["5", "6", "7", "8", "9"]);
    let classes = p.classes.len();
    let fitted = train::fit(
        &HeadConfig::default(),
        &p.train,
        &p.val,
        classes,
        classes + 8,
    )
    .unwrap();
    let (head_acc, _) = train::score(&fitted.head, &p.test).unwrap();
    // The reference's penalty is chosen on validation, as a user of such a tool would.
    let (mut best_val, mut ref_acc) = (-1.0, 0.0);
    for lambda in [1e-4, 1e-3, 1e-2] {
        let w = reference_logreg(&p.train, classes, lambda);
        let val = reference_accuracy(&w, &p.val, classes);
        if val > best_val {
            best_val = val;
            ref_acc = reference_accuracy(&w, &p.test, classes);
        }
    }
    println!(
        "test accuracy on {} samples: head {:.2}% (best epoch {}), reference logistic regression {:.2}%",
        p.test.len(),
        head_acc * 100.0,
        fitted.best_epoch,
        ref_acc * 100.0
    );
    assert!(
        head_acc >= ref_acc - 0.005,
        "head {head_acc} < reference {ref_acc} - 0.5 pp"
    );
}

#[test]
fn the_search_finds_at_least_the_default_on_validation() {
    let p = prepared();
    let o = options(&testkit::scratch("train-search-cache"));
    for method in [Method::Bayes, Method::Random, Method::Grid] {
        let (winner, s) = train::search(p, &o, method, 8).unwrap();
        let default = &s.trials[0];
        let best = &s.trials[s.best];
        println!(
            "{method:?}: default {:.4}, best {:.4} (trial {}), {} trials in {:.1} s",
            default.val_accuracy,
            best.val_accuracy,
            s.best,
            s.trials.len(),
            s.seconds
        );
        assert!(best.val_accuracy >= default.val_accuracy);
        assert_eq!(
            default.params["lr"],
            serde_json::json!(f64::from(HeadConfig::default().lr))
        );
        let refit = train::fit(&winner, &p.train, &p.val, 5, 13).unwrap();
        assert_eq!(
            refit.val_accuracy, best.val_accuracy,
            "the winner retrains to its score"
        );
    }
    // Hyperparameters the user set are kept: an MLP of 64 units, searched otherwise.
    let mut fixed = o.clone();
    fixed.head.head = train::HeadChoice::Mlp;
    fixed.head.hidden = 64;
    fixed.search_fixed = vec!["head".into(), "hidden".into()];
    let (winner, s) = train::search(p, &fixed, Method::Random, 4).unwrap();
    assert_eq!((winner.head, winner.hidden), (train::HeadChoice::Mlp, 64));
    for t in &s.trials {
        assert!(!t.params.contains_key("head") && t.params.contains_key("lr"));
    }
    assert!(
        s.trials
            .iter()
            .any(|t| t.params["lr"] != s.trials[0].params["lr"])
    );
    fixed.search_fixed = vec!["heads".into()];
    let e = train::search(p, &fixed, Method::Random, 4).unwrap_err();
    assert!(
        format!("{e:#}").contains("\"heads\" is not a searched hyperparameter"),
        "{e:#}"
    );
}

#[test]
fn a_second_train_embeds_nothing() {
    let cache = testkit::scratch("train-second-run-cache");
    let out = cache.join("out.bundle");
    let mut o = options(&cache);
    o.augment = finetune_head::augment::Augment::parse(&["crop".into(), "rotate".into()]).unwrap();
    o.augment_copies = 1;
    let (_, first) = train::run(&o, &out).unwrap();
    assert!(first.embedding.computed > 0);
    assert_eq!(first.embedding.cached, 0);
    o.head.lr = 0.01;
    o.head.epochs = 5;
    let (bundle, second) = train::run(&o, &out).unwrap();
    assert_eq!(
        second.embedding.computed, 0,
        "everything comes from the cache"
    );
    assert_eq!(second.embedding.cached, first.embedding.computed);
    assert!(second.data.classes.iter().all(|c| c.augmented > 0));
    train::write(&bundle, &second, &out).unwrap();
    let back = Bundle::read(&out).unwrap();
    assert_eq!(back.manifest.classes, ["5", "6", "7", "8", "9"]);
    assert!(back.head.is_some());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.with_extension("report.json")).unwrap())
            .unwrap();
    assert!(json["test"]["accuracy"].as_f64().unwrap() > 0.8);
    let html = std::fs::read_to_string(out.with_extension("report.html")).unwrap();
    assert!(html.contains("<svg"));
    full_disk(&bundle, &second, &cache);
}

#[test]
fn an_mlp_head_ships_the_statistics_of_its_hidden_layer_for_the_device() {
    let cache = testkit::scratch("train-mlp-cache");
    let out = cache.join("mlp.bundle");
    let mut o = options(&cache);
    o.head.head = train::HeadChoice::Mlp;
    o.head.hidden = 32;
    o.head.epochs = 15;
    let (bundle, report) = train::run(&o, &out).unwrap();
    let head = edgetune::persist::decode_head(bundle.head.as_deref().unwrap()).unwrap();
    assert_eq!(head.dims().hidden, 32);
    // The closed-form rival was built on the trained hidden layer and scored.
    let choice = report.head.clone().unwrap();
    assert!(choice.closed_form.is_some(), "{choice:?}");
    let stats = edgetune::stats::for_head(&bundle.manifest, head.dims(), head.classes())
        .unwrap()
        .expect("the hidden layer's statistics");
    assert_eq!(stats.mean.len(), 32);
    assert_eq!(stats.class_counts.len(), 5);
    // The device writes its output layer from them; the hidden layer stays.
    let device = finetune_head::closed_form::device_head(&head, &stats)
        .unwrap()
        .expect("a closed-form head");
    let hidden = head.dims().out_offset();
    assert_eq!(&device.params()[..hidden], &head.params()[..hidden]);
    // On the run's own test split (its embeddings from the cache).
    let prep = train::prepare(&Bundle::read(&o.bundle).unwrap(), &o).unwrap();
    let (device_acc, _) = train::score(&device, &prep.test).unwrap();
    assert!(
        device_acc > report.test.accuracy - 0.03,
        "device head {device_acc}, bundle head {}",
        report.test.accuracy
    );
    // A linear head's bundle carries none.
    o.head.head = train::HeadChoice::Linear;
    let (linear, _) = train::run(&o, &out).unwrap();
    assert!(linear.manifest.hidden_stats.is_none());
    assert!(linear.manifest.embedding_stats.is_some());
}

/// `train`'s output on a full disk (issue #19): a clear error, the old bundle and reports
/// as they were, no temporary file left.
fn full_disk(bundle: &Bundle, report: &finetune_head::report::TrainReport, dir: &Path) {
    let disk = dir.join("full");
    let Some(_mount) = testkit::tmpfs::Tmpfs::mount(&disk, "64k") else {
        return;
    };
    let out = disk.join("model.bundle");
    let old = [
        (out.clone(), "old bundle"),
        (out.with_extension("report.json"), "old report"),
        (out.with_extension("report.html"), "old page"),
    ];
    for (path, text) in &old {
        std::fs::write(path, text).unwrap();
    }
    testkit::tmpfs::fill(&disk.join("filler"));
    let err = format!("{:#}", train::write(bundle, report, &out).unwrap_err());
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("model.report.json"), "names the file: {err}");
    for (path, text) in &old {
        assert_eq!(std::fs::read_to_string(path).unwrap(), *text);
    }
    assert!(!testkit::tmpfs::has_temporaries(&disk));
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_finetune-head"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small copy of the shipped images: `n` per digit.
fn small_copy(dir: &Path, n: usize) {
    let (_, images) = shipped();
    for d in 5..10 {
        let to = dir.join(d.to_string());
        std::fs::create_dir_all(&to).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(images.join(d.to_string()))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(n) {
            std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn cli_train_and_eval_with_a_corrupt_image_and_duplicates() {
    let dir = testkit::scratch("train-cli");
    let data = dir.join("data");
    small_copy(&data, 12);
    std::fs::write(data.join("5/corrupt.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let first = std::fs::read_dir(data.join("6"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(&first, data.join("6/copy-of-first.png")).unwrap();
    std::fs::copy(&first, data.join("7/labeled-twice.png")).unwrap();
    let (bundle, _) = shipped();
    let out = dir.join("out.bundle");
    let cache = dir.join("cache");
    let (b, s, c) = (
        bundle.to_str().unwrap(),
        out.to_str().unwrap(),
        cache.to_str().unwrap(),
    );
    let d = data.to_str().unwrap();
    let (ok, stdout, stderr) = cli(&[
        "train", b, "--data", d, "-o", s, "--cache", c, "--epochs", "30", "--json",
    ]);
    assert!(ok, "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let skipped = r["data"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("corrupt.png")
    );
    assert_eq!(r["data"]["conflicts"].as_array().unwrap().len(), 1);
    assert_eq!(
        r["data"]["duplicates"].as_array().unwrap().len(),
        0,
        "the copy is part of the conflict"
    );
    // --strict refuses the corrupt image and writes nothing.
    let strict_out = dir.join("strict.bundle");
    let (ok, _, stderr) = cli(&[
        "train",
        b,
        "--data",
        d,
        "-o",
        strict_out.to_str().unwrap(),
        "--cache",
        c,
        "--strict",
    ]);
    assert!(!ok);
    assert!(stderr.contains("corrupt.png"), "{stderr}");
    assert!(!strict_out.exists() && !strict_out.with_extension("report.json").exists());
    // eval --json: accuracy at the top level, as a fraction.
    let (ok, stdout, stderr) = cli(&["eval", s, "--data", d, "--cache", c, "--json"]);
    assert!(ok, "{stderr}");
    let e: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let acc = e["accuracy"].as_f64().unwrap();
    assert!((0.5..=1.0).contains(&acc), "{acc}");
    assert!(e["latency_us"].as_f64().unwrap() > 0.0);
    assert_eq!(e["confusion"].as_array().unwrap().len(), 5);
    // --search keeps what the flags set: here the head kind, for a device that will
    // learn new classes.
    let searched = dir.join("searched.bundle");
    let (ok, stdout, stderr) = cli(&[
        "train",
        b,
        "--data",
        d,
        "-o",
        searched.to_str().unwrap(),
        "--cache",
        c,
        "--epochs",
        "10",
        "--search",
        "random",
        "--trials",
        "3",
        "--head",
        "linear",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["config"]["head"], "linear");
    for t in r["search"]["trials"].as_array().unwrap() {
        assert!(
            t["params"].get("head").is_none() && t["params"].get("lr").is_some(),
            "{t}"
        );
    }
}

#[test]
fn bad_data_is_a_clear_error_and_writes_nothing() {
    let dir = testkit::scratch("train-bad");
    let (bundle, _) = shipped();
    let b = bundle.to_str().unwrap();
    let out = dir.join("out.bundle");
    let o = out.to_str().unwrap();
    let cache = dir.join("cache");
    let c = cache.to_str().unwrap();
    let fails = |data: &Path, extra: &[&str], wanted: &str| {
        let mut args = vec![
            "train",
            b,
            "--data",
            data.to_str().unwrap(),
            "-o",
            o,
            "--cache",
            c,
        ];
        args.extend_from_slice(extra);
        let (ok, _, stderr) = cli(&args);
        assert!(!ok, "{data:?} should fail");
        assert!(stderr.contains(wanted), "wanted {wanted:?} in: {stderr}");
        assert!(
            !out.exists()
                && !out.with_extension("report.json").exists()
                && !out.with_extension("report.html").exists()
        );
    };
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails(&empty, &[], "has no class folders");
    let empty_class = dir.join("empty-class");
    small_copy(&empty_class, 5);
    std::fs::create_dir_all(empty_class.join("ghost")).unwrap();
    fails(&empty_class, &[], "class \"ghost\"");
    let one = dir.join("one-sample");
    small_copy(&one, 5);
    let keep: Vec<_> = std::fs::read_dir(one.join("9"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    for f in &keep[1..] {
        std::fs::remove_file(f).unwrap();
    }
    fails(&one, &[], "class \"9\" has 1 sample");
    // A labels CSV with unknown rows: listed and skipped.
    let flat = dir.join("flat");
    small_copy(&flat, 6);
    let mut csv = String::from("path,label\n");
    for d in 5..10 {
        for e in std::fs::read_dir(flat.join(d.to_string())).unwrap() {
            let p = e.unwrap().path();
            csv.push_str(&format!(
                "{d}/{},{d}\n",
                p.file_name().unwrap().to_str().unwrap()
            ));
        }
    }
    csv.push_str("5/no-such-file.png,5\nthis row is wrong\n");
    let labels = dir.join("labels.csv");
    std::fs::write(&labels, csv).unwrap();
    let (ok, stdout, stderr) = cli(&[
        "train",
        b,
        "--data",
        flat.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
        "-o",
        o,
        "--cache",
        c,
        "--epochs",
        "5",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let skipped: Vec<String> = r["data"]["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("no file 5/no-such-file.png")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|s| s.contains("expected `path,label`")),
        "{skipped:?}"
    );
}

#[test]
fn a_features_only_bundle_trains_on_a_csv() {
    let dir = testkit::scratch("train-features");
    let bundle = dir.join("features.bundle");
    let (ok, _, stderr) = cli(&[
        "convert",
        "--features",
        "64",
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let out = dir.join("out.bundle");
    let data = models().join("digits/digits.csv.gz");
    let (ok, stdout, stderr) = cli(&[
        "train",
        bundle.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--no-cache",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(r["data"]["kind"], "features");
    assert_eq!(r["classes"].as_array().unwrap().len(), 10);
    assert!(
        r["test"]["accuracy"].as_f64().unwrap() > 0.9,
        "{}",
        r["test"]["accuracy"]
    );
}
