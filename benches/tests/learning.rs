//! The learning benchmark's `--quick` run on the cheap backbones (the Gaussian scales,
//! the UCI pixels and wine): its JSON holds every backbone × protocol, and the reference
//! methods are sane. The device's own targets are read the same way
//! (`results.get(backbone, protocol, metric)`), one line each.

use std::process::Command;

use benches::learning::{Results, Row, data};

const PROTOCOLS: [(&str, &[&str]); 10] = [
    ("1-shot", &["accuracy"]),
    ("5-shot", &["accuracy"]),
    ("10-shot", &["accuracy"]),
    (
        "one pass",
        &[
            "accuracy",
            "prequential accuracy",
            "ECE",
            "prequential ECE",
            "flagged uncertain",
            "held-out class accuracy",
        ],
    ),
    ("200 in a row", &["others before", "others after", "drop"]),
    (
        "new class 5",
        &["new-class accuracy", "old before", "old after", "old drop"],
    ),
    (
        "new class 20",
        &["new-class accuracy", "old before", "old after", "old drop"],
    ),
    ("host head", &["accuracy"]),
    (
        "MLP head, new class 20",
        &["new-class accuracy", "old before", "old after", "old drop"],
    ),
    (
        "MLP head by gradient, new class 20",
        &["new-class accuracy", "old before", "old after", "old drop"],
    ),
];

fn quick_run() -> Results {
    let dir = edgetune_testkit::scratch("learning");
    let json = dir.join("learning.json");
    let out = Command::new(env!("CARGO_BIN_EXE_learning"))
        .args(["--quick", "--backbones", "gauss,uci-pixels,wine", "--json"])
        .arg(&json)
        .output()
        .expect("running the learning benchmark");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "learning --quick failed:\n{stderr}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| backbone | protocol | metric | edgetune |"),
        "{table}"
    );
    let results: Results =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("the JSON");
    std::fs::remove_dir_all(&dir).ok();
    results
}

fn row<'a>(r: &'a Results, backbone: &str, protocol: &str, metric: &str) -> &'a Row {
    r.get(backbone, protocol, metric)
        .unwrap_or_else(|| panic!("no row {backbone} / {protocol} / {metric}"))
}

#[test]
fn quick_run_has_every_row_and_sane_references() {
    let r = quick_run();
    assert!(r.quick && r.draws == 2);
    let mut expected = vec!["uci-pixels", "gauss×0.01", "gauss×1", "gauss×100"];
    let wine = benches::models::workspace().join("models/wine/wine.csv.gz");
    if wine.exists() {
        expected.push("wine");
    } else {
        assert!(r.skipped.iter().any(|s| s.name == "wine"));
    }
    let ran: Vec<&str> = r.backbones.iter().map(|b| b.name.as_str()).collect();
    for name in &expected {
        assert!(ran.contains(name), "{name} did not run: {ran:?}");
    }
    assert!(
        !ran.contains(&"digits-cnn"),
        "only the cheap backbones were asked for"
    );

    for b in &expected {
        let classes = r
            .backbones
            .iter()
            .find(|x| x.name == *b)
            .unwrap()
            .classes
            .len();
        let chance = 1.0 / classes as f64;
        for (protocol, metrics) in PROTOCOLS {
            for metric in metrics {
                let row = row(&r, b, protocol, metric);
                assert!(
                    row.edgetune.is_some(),
                    "{b} / {protocol} / {metric}: no edgetune value"
                );
            }
        }
        for protocol in ["1-shot", "5-shot", "10-shot", "one pass", "host head"] {
            let row = row(&r, b, protocol, "accuracy");
            for v in [row.edgetune, row.ncm, row.simpleshot, row.lda, row.lr] {
                let v = v.unwrap();
                assert!((0.0..=1.0).contains(&v), "{b} / {protocol}: {v}");
            }
        }
        // Fitted on the whole training split, LDA and LR are far above chance.
        let offline = row(&r, b, "one pass", "accuracy");
        let (lda, lr) = (offline.lda.unwrap(), offline.lr.unwrap());
        assert!(lda > 0.8 && lda > 2.5 * chance, "{b}: offline LDA {lda}");
        assert!(lr > 0.9 && lr > 2.5 * chance, "{b}: offline LR {lr}");
        assert!(
            row(&r, b, "one pass", "ECE").lr.unwrap() < 0.1,
            "{b}: LR calibration"
        );
        // With one sample per class LDA has no covariance: it is NCM.
        let one = row(&r, b, "1-shot", "accuracy");
        assert_eq!(one.lda, one.ncm, "{b}: 1-shot LDA and NCM");
        // Nothing a batch method refits drops much after 200 labels of one class.
        assert!(row(&r, b, "200 in a row", "drop").lr.unwrap() < 0.05, "{b}");
        // Every row with a target says whether it was met.
        assert!(
            r.rows
                .iter()
                .filter(|x| x.backbone == *b)
                .any(|x| x.target.is_some())
        );
    }

    // The Gaussian classes share one rotated anisotropic covariance: LDA beats NCM.
    let ten = row(&r, "gauss×1", "10-shot", "accuracy");
    assert!(ten.lda.unwrap() > ten.ncm.unwrap() + 0.1, "{ten:?}");
    let pass = row(&r, "gauss×1", "one pass", "accuracy");
    assert!(pass.lda.unwrap() > pass.ncm.unwrap() + 0.3, "{pass:?}");

    // Scale: NCM does not see it at all; the others only through rounding.
    let scales: Vec<&Row> = r
        .rows
        .iter()
        .filter(|x| x.backbone == benches::learning::table::SCALES)
        .collect();
    assert!(scales.len() >= 10, "{} scale rows", scales.len());
    for s in &scales {
        if let Some(v) = s.ncm {
            assert_eq!(v, 0.0, "NCM {} / {}", s.protocol, s.metric);
        }
        for v in [s.simpleshot, s.lda, s.lr].into_iter().flatten() {
            assert!(v.abs() <= 0.005, "{} / {}: {v}", s.protocol, s.metric);
        }
    }
    assert_eq!(data::NAMES.len(), 7);

    // The device learner against the targets (#13), where the full run meets
    // them (the README's table): its units never matter, one pass reaches the offline
    // logistic regression, a class labeled 200 times in a row costs the others nothing,
    // and one label per class is nearest class mean.
    for s in &scales {
        if s.protocol
            .starts_with(benches::learning::table::GRADIENT_REFERENCE)
        {
            continue; // the gradient learner, measured for comparison, is not scale-free
        }
        if let Some(v) = s.edgetune {
            // 1 pp (or 0.01 of calibration error) at most.
            assert!(
                v.abs() <= 0.01,
                "edgetune {} / {}: {v}",
                s.protocol,
                s.metric
            );
        }
    }
    for b in &expected {
        for (protocol, metric) in [
            ("one pass", "accuracy"),
            ("one pass", "ECE"),
            ("200 in a row", "drop"),
            ("10-shot", "accuracy"),
        ] {
            let x = row(&r, b, protocol, metric);
            if *b == "uci-pixels" && protocol == "10-shot" {
                continue; // not met: no reference reaches NCM + 10 pp there either
            }
            assert_eq!(x.met(), Some(true), "{b} / {protocol} / {metric}: {x:?}");
        }
        let one = row(&r, b, "1-shot", "accuracy");
        assert_eq!(one.edgetune, one.ncm, "{b}: 1-shot edgetune and NCM");
    }
    // An MLP host head: the device's closed-form learner (statistics of the hidden layer)
    // forgets less of the host's classes than gradient steps with replay, and learns the
    // new class.
    for b in ["gauss×1", "uci-pixels"] {
        let drop = |p: &str| row(&r, b, p, "old drop").edgetune.unwrap();
        let (closed, gradient) = (
            drop("MLP head, new class 20"),
            drop("MLP head by gradient, new class 20"),
        );
        assert!(
            closed < 0.05 && closed < 0.5 * gradient,
            "{b}: {closed} vs {gradient}"
        );
        let new = row(&r, b, "MLP head, new class 20", "new-class accuracy");
        assert!(new.edgetune.unwrap() > 0.5, "{b}: {new:?}");
    }
}
