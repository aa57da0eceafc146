//! Tests of the reports: metrics, JSON round trips, the HTML page, the summaries.

use super::*;

use serde_json::json;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// a: support 3, predicted 4 times (2 right); b: support 2, never predicted;
/// c: no support, predicted once.
fn example() -> (Vec<String>, Vec<usize>, Vec<usize>) {
    (
        names(&["a", "b", "c"]),
        vec![0, 0, 0, 1, 1],
        vec![0, 0, 2, 0, 0],
    )
}

#[test]
fn metrics_by_hand() {
    let (classes, truth, predicted) = example();
    let probs = [0.5f32, 0.25, 0.0, 1.0, 0.5];
    let m = Metrics::compute(&classes, &truth, &predicted, Some(&probs)).unwrap();
    assert_eq!(m.samples, 5);
    assert_eq!(
        m.confusion,
        vec![vec![2, 0, 1], vec![2, 0, 0], vec![0, 0, 0]]
    );
    assert!(close(m.accuracy, 0.4));
    assert_eq!(m.correct(), 2);
    let [a, b, c] = &m.per_class[..] else {
        panic!("3 classes")
    };
    assert_eq!(
        (a.name.as_str(), a.support, b.support, c.support),
        ("a", 3, 2, 0)
    );
    assert!(close(a.precision, 0.5) && close(a.recall, 2.0 / 3.0) && close(a.f1, 4.0 / 7.0));
    // Never predicted: precision 0 (zero_division=0), recall 0/2.
    assert!(close(b.precision, 0.0) && close(b.recall, 0.0) && close(b.f1, 0.0));
    // No support: recall 0 (zero_division=0), precision 0/1.
    assert!(close(c.precision, 0.0) && close(c.recall, 0.0) && close(c.f1, 0.0));
    // Mean over a and b only (c has no support).
    assert!(close(m.macro_f1, (4.0 / 7.0 + 0.0) / 2.0));
    let expected_loss = (2f64.ln() + 4f64.ln() - (1e-12f64).ln() + 0.0 + 2f64.ln()) / 5.0;
    assert!(close(m.loss.unwrap(), expected_loss), "{:?}", m.loss);
    assert_eq!(m.latency_us, None);

    let perfect = Metrics::compute(&classes, &truth, &truth, None).unwrap();
    assert!(close(perfect.accuracy, 1.0) && close(perfect.macro_f1, 1.0));
    assert_eq!(perfect.loss, None);
}

#[test]
fn metrics_errors_and_empty() {
    let classes = names(&["a", "b", "c"]);
    let err = Metrics::compute(&classes, &[0, 3], &[0, 0], None).unwrap_err();
    assert!(err.contains("truth[1]") && err.contains('3'), "{err}");
    let err = Metrics::compute(&classes, &[0, 1], &[0, 7], None).unwrap_err();
    assert!(err.contains("predicted[1]") && err.contains('7'), "{err}");
    assert!(Metrics::compute(&classes, &[0, 1], &[0], None).is_err());
    assert!(Metrics::compute(&classes, &[0, 1], &[0, 1], Some(&[0.5])).is_err());
    assert!(Metrics::compute(&[], &[0], &[0], None).is_err());

    let m = Metrics::compute(&classes, &[], &[], Some(&[])).unwrap();
    assert_eq!(
        (m.samples, m.accuracy, m.macro_f1, m.loss),
        (0, 0.0, 0.0, None)
    );
    assert_eq!(m.per_class.len(), 3);
    let nan = Metrics::compute(&classes, &[0], &[0], Some(&[f32::NAN])).unwrap();
    assert!(nan.loss.unwrap().is_nan());
}

fn sample_report() -> TrainReport {
    let classes = names(&["cat", "<b>&", "bird"]);
    let truth = vec![0, 0, 0, 1, 1, 2, 2, 2, 2];
    let predicted = vec![0, 0, 1, 1, 1, 2, 2, 0, 2];
    let mut test = Metrics::compute(&classes, &truth, &predicted, Some(&[0.9; 9])).unwrap();
    test.latency_us = Some(812.5);
    let validation = Metrics::compute(&classes, &truth, &truth, None).unwrap();
    let history = (1..=12)
        .map(|e| Epoch {
            epoch: e,
            train_loss: 1.2 / e as f64,
            train_accuracy: 1.0 - 0.5 / e as f64,
            val_loss: 1.1 / e as f64 + 0.01 * e as f64,
            val_accuracy: 0.9 - 0.3 / e as f64,
            lr: 1e-3,
        })
        .collect();
    let trials = (0..8)
        .map(|i| TrialRecord {
            index: i,
            params: BTreeMap::from([
                ("lr".to_string(), json!(10f64.powi(-(i as i32 % 4) - 1))),
                (
                    "head".to_string(),
                    json!(if i % 2 == 0 { "linear" } else { "mlp<2>" }),
                ),
            ]),
            val_accuracy: 0.6 + 0.04 * ((i * 5) % 8) as f64,
            val_loss: 0.5,
            epochs: 10,
            seconds: 1.5,
        })
        .collect();
    TrainReport {
        tool: "finetune-head 0.1.0".into(),
        created_unix: 1_735_787_045,
        bundle_in: "in/model.bundle".into(),
        bundle_out: "out/a&b.bundle".into(),
        classes: classes.clone(),
        data: DataSummary {
            source: "data/<pets>".into(),
            kind: "images".into(),
            found: 20,
            used: 17,
            duplicates: vec![DuplicateGroup {
                label: "cat".into(),
                kept: "cat/1.png".into(),
                dropped: vec!["cat/1 copy.png".into()],
            }],
            conflicts: vec![Conflict {
                items: vec![
                    ("x.png".into(), "cat".into()),
                    ("y.png".into(), "<b>&".into()),
                ],
            }],
            skipped: (0..15)
                .map(|i| Skipped {
                    path: format!("bad{i}.gif"),
                    reason: "not PNG/JPEG".into(),
                })
                .collect(),
            split: "stratified 70/15/15, seed 1".into(),
            classes: classes
                .iter()
                .map(|c| ClassCount {
                    name: c.clone(),
                    train: 5,
                    val: 1,
                    test: 3,
                    augmented: 10,
                })
                .collect(),
            augment: vec!["crop".into(), "rotate".into()],
            augment_copies: 2,
        },
        embedding: EmbedSummary {
            backbone_sha256: "ab".repeat(32),
            computed: 12,
            cached: 5,
            threads: 4,
            seconds: 2.5,
            samples_per_s: 4.8,
        },
        config: BTreeMap::from([
            ("lr".to_string(), json!(0.001)),
            ("head".to_string(), json!("linear")),
            ("balance".to_string(), json!(true)),
        ]),
        history,
        best_epoch: 9,
        stopped_early: true,
        train_seconds: 3.25,
        search: Some(SearchSummary {
            method: "random".into(),
            trials,
            best: 3,
            threads: 4,
            seconds: 12.0,
        }),
        head: Some(HeadChoice {
            kept: crate::closed_form::CLOSED_FORM.into(),
            gradient: (0.9125, 0.31),
            closed_form: Some((0.95, 0.2, 1.25)),
        }),
        validation,
        test,
    }
}

/// Checks that every non-void element is closed in order (a small well-formedness test).
fn assert_balanced(html: &str) {
    const VOID: &[&str] = &["meta", "br", "hr", "img", "input", "link", "wbr", "col"];
    let mut stack: Vec<String> = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>').expect("unclosed tag");
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(!name.is_empty(), "bad tag <{tag}>");
        if tag.starts_with('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.as_str()),
                "mismatched </{name}>"
            );
        } else if !VOID.contains(&name.as_str()) {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

fn check_page(page: &str) {
    assert_balanced(page);
    assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "external URL in page"
    );
    assert!(!page.contains("class=\"err\""), "a plot failed");
    assert!(
        !page.contains("NaN") && !page.contains("inf"),
        "raw non-finite number"
    );
}

#[test]
fn html_full_report() {
    let page = html(&sample_report());
    check_page(&page);
    assert!(page.starts_with("<!DOCTYPE html>"));
    // Loss, accuracy, test and validation confusion matrices, search.
    assert_eq!(page.matches("<svg").count(), 5);
    assert!(page.contains("&lt;b&gt;&amp;") && !page.contains("<b>&"));
    assert!(page.contains("data/&lt;pets&gt;") && page.contains("mlp&lt;2&gt;"));
    assert!(page.contains("best (epoch 9)"));
    assert!(page.contains("2025-01-02 03:04 UTC"));
    for id in ["summary", "data", "training", "evaluation", "search"] {
        assert!(page.contains(&format!("<section id=\"{id}\">")), "{id}");
    }
    // 15 skipped inputs: collapsed; 1 duplicate group: open.
    assert!(page.contains("<details><summary>Skipped: 15 inputs"));
    assert!(page.contains("<details open><summary>Duplicates: 1 groups"));
}

#[test]
fn html_edge_cases() {
    // No epochs, one class, empty search, empty test split, NaN everywhere.
    let one = names(&["only"]);
    let mut r = sample_report();
    r.classes = one.clone();
    r.data.classes.truncate(1);
    r.data.skipped.clear();
    r.history.clear();
    r.search = Some(SearchSummary {
        method: "grid".into(),
        trials: vec![],
        best: 0,
        threads: 1,
        seconds: 0.0,
    });
    r.validation = Metrics::compute(&one, &[0, 0], &[0, 0], None).unwrap();
    r.test = Metrics::compute(&one, &[], &[], None).unwrap();
    r.embedding.samples_per_s = f64::NAN;
    r.train_seconds = f64::INFINITY;
    let page = html(&r);
    check_page(&page);
    assert!(page.contains("No epochs recorded") && page.contains("ran no trials"));
    assert!(r.to_string().contains("best epoch"));

    // NaN history and trials, best epoch not in history, winner out of range, ragged matrix.
    let mut r = sample_report();
    for e in r.history.iter_mut().skip(3).take(2) {
        e.val_loss = f64::NAN;
        e.val_accuracy = f64::NAN;
    }
    r.history.iter_mut().for_each(|e| e.train_loss = f64::NAN);
    r.best_epoch = 99;
    let s = r.search.as_mut().unwrap();
    s.trials.iter_mut().for_each(|t| t.val_accuracy = f64::NAN);
    s.best = 42;
    r.test.accuracy = f64::NAN;
    r.test.confusion[1].pop();
    r.test.per_class.clear();
    let page = html(&r);
    check_page(&page);
    assert!(page.contains("Best epoch 99 is not in the history"));
    assert!(r.to_string().contains("best epoch"));

    // A single epoch, no classes at all, no search.
    let mut r = sample_report();
    r.history.truncate(1);
    r.best_epoch = 1;
    r.classes.clear();
    r.search = None;
    r.test = Metrics::compute(&[], &[], &[], None).unwrap();
    r.validation = r.test.clone();
    let page = html(&r);
    check_page(&page);
    assert!(!page.contains("id=\"search\""));
    assert!(r.to_string().contains("best epoch"));
}

#[test]
fn html_extremes() {
    // Absurd values, many epochs, classes without cell counts, too many for a heatmap.
    let mut r = sample_report();
    r.history = (0..1000)
        .map(|e| Epoch {
            epoch: e,
            train_loss: if e == 3 { 1e308 } else { -1e308 },
            train_accuracy: -2.0,
            val_loss: f64::INFINITY,
            val_accuracy: 7.0,
            lr: f64::NAN,
        })
        .collect();
    r.best_epoch = 999;
    for (n, heatmap) in [(40, true), (150, false)] {
        let classes: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let truth: Vec<usize> = (0..n).collect();
        r.test = Metrics::compute(&classes, &truth, &truth, None).unwrap();
        r.classes = classes;
        let page = html(&r);
        check_page(&page);
        assert_eq!(page.contains("Cells too small for counts"), heatmap);
        assert_eq!(page.contains("too many for a heatmap"), !heatmap);
    }
    assert_eq!(clip("model_v1_small", 9), "mode…mall");
    assert_eq!(clip("ab", 2), "ab");
    assert_eq!(utc(0), "1970-01-01 00:00 UTC");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
}

#[test]
fn eval_json_has_top_level_accuracy() {
    let (classes, truth, predicted) = example();
    let mut metrics = Metrics::compute(&classes, &truth, &predicted, None).unwrap();
    metrics.latency_us = Some(120.0);
    let report = EvalReport {
        bundle: "b.bundle".into(),
        data: "test/".into(),
        classes,
        metrics,
        skipped: vec![Skipped {
            path: "x.gif".into(),
            reason: "unsupported".into(),
        }],
        device_head_accuracy: Some(0.5),
        misclassified: vec![Misclassified {
            origin: "d.csv:3".into(),
            text: Some("play some jazz".into()),
            truth: "music".into(),
            predicted: "lights".into(),
            confidence: 0.6,
        }],
    };
    let text = serde_json::to_string_pretty(&report).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["accuracy"].as_f64(), Some(0.4));
    assert!(v["macro_f1"].is_f64() && v["confusion"].is_array() && v.get("metrics").is_none());
    let back: EvalReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, report);
}

#[test]
fn json_round_trip_with_nan() {
    let mut r = sample_report();
    r.history[0].val_loss = f64::NAN;
    r.test.loss = Some(f64::NAN);
    let text = serde_json::to_string(&r).unwrap();
    let back: TrainReport = serde_json::from_str(&text).unwrap();
    assert!(back.history[0].val_loss.is_nan());
    assert_eq!(back.test.loss, None);
    // serde_json's default float parser may be off by one ulp (its `float_roundtrip`
    // feature makes it exact): compare with a tolerance.
    for (a, b) in back.history.iter().zip(&r.history).skip(1) {
        assert_eq!(a.epoch, b.epoch);
        for (x, y) in [
            (a.train_loss, b.train_loss),
            (a.val_loss, b.val_loss),
            (a.val_accuracy, b.val_accuracy),
        ] {
            assert!((x - y).abs() <= 1e-15 * y.abs().max(1.0), "{x} != {y}");
        }
    }
    assert_eq!(back.search.as_ref().map(|s| s.trials.len()), Some(8));
    assert_eq!(back.config, r.config);
    assert_eq!(back.data, r.data);
}

#[test]
fn display_summaries() {
    let r = sample_report();
    let text = r.to_string();
    assert!(
        text.contains("best epoch 9") && text.contains("winner #3"),
        "{text}"
    );
    assert!(
        text.contains("head       closed-form LDA (validation accuracy: closed-form LDA 95.00%"),
        "{text}"
    );
    assert!(html(&r).contains("Head kept"));
    assert!(text.lines().count() <= 20, "{text}");
    assert!(!text.ends_with('\n'));

    let (classes, truth, predicted) = example();
    let metrics = Metrics::compute(&classes, &truth, &predicted, Some(&[0.5; 5])).unwrap();
    let mut e = EvalReport {
        bundle: "b".into(),
        data: "d".into(),
        classes,
        metrics,
        skipped: vec![],
        misclassified: vec![],
        device_head_accuracy: None,
    };
    let text = e.to_string();
    assert!(
        text.contains("accuracy 40.00% (2/5)") && text.contains("confusion"),
        "{text}"
    );
    assert!(!text.contains("closed-form"), "{text}");
    e.device_head_accuracy = Some(0.5);
    let text = e.to_string();
    assert!(
        text.contains("device   accuracy 50.00% with the closed-form head"),
        "{text}"
    );
    // Edge cases: no classes, NaN, ragged matrix, many classes.
    e.metrics.accuracy = f64::NAN;
    e.metrics.confusion[0].clear();
    e.to_string();
    e.metrics = Metrics::compute(&[], &[], &[], None).unwrap();
    e.to_string();
    let many: Vec<String> = (0..30).map(|i| format!("class{i}")).collect();
    e.metrics = Metrics::compute(&many, &[29], &[0], None).unwrap();
    assert!(!e.to_string().contains("confusion"));
}
