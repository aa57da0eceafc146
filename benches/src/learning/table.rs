//! The targets ([`apply_targets`]), the scale rows ([`scale_rows`]) and the
//! markdown report ([`markdown`]).

use std::fmt::Write as _;

use super::{Method, Results, Row, Target, Unit};

/// The backbone name of the rows comparing the Gaussian scales.
pub const SCALES: &str = "gauss (scales)";

/// How the protocols measuring the gradient learner for comparison begin.
pub const GRADIENT_REFERENCE: &str = "MLP head by gradient";

/// Adds, when two or more `gauss×…` backbones ran, a [`SCALES`] row per metric: the
/// largest minus the smallest value over the scales, for each method.
pub fn scale_rows(rows: &mut Vec<Row>) {
    let gauss: Vec<&Row> = rows
        .iter()
        .filter(|r| r.backbone.starts_with("gauss×"))
        .collect();
    let mut names: Vec<&str> = gauss.iter().map(|r| r.backbone.as_str()).collect();
    names.dedup();
    if names.len() < 2 {
        return;
    }
    let mut out = Vec::new();
    for first in gauss.iter().filter(|r| r.backbone == names[0]) {
        let same: Vec<&&Row> = gauss
            .iter()
            .filter(|r| r.protocol == first.protocol && r.metric == first.metric)
            .collect();
        if same.len() != names.len() {
            continue;
        }
        let mut row = Row {
            backbone: SCALES.into(),
            metric: format!("{} spread", first.metric),
            unit: match first.unit {
                Unit::Ece => Unit::Ece,
                _ => Unit::Points,
            },
            edgetune_sd: None,
            draws: same.iter().map(|r| r.draws).min().unwrap_or(0),
            target: None,
            ..(*first).clone()
        };
        for m in Method::ALL {
            let v: Option<Vec<f64>> = same.iter().map(|r| r.value(m)).collect();
            let spread = v.map(|v| {
                let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                max - min
            });
            match m {
                Method::Edgetune => row.edgetune = spread,
                Method::Ncm => row.ncm = spread,
                Method::SimpleShot => row.simpleshot = spread,
                Method::Lda => row.lda = spread,
                Method::Lr => row.lr = spread,
            }
        }
        out.push(row);
    }
    rows.extend(out);
}

/// Sets each row's target from the issue, and whether edgetune met it:
///
/// - 1-shot accuracy ≥ NCM's; 5- and 10-shot ≥ NCM's + 10 points;
/// - one pass: test accuracy ≥ 97 % of offline logistic regression's (fitted on the
///   whole training split), test ECE ≤ 0.05;
/// - new class: with 20 labels, the new class's test accuracy ≥ 85 % of its offline
///   accuracy (logistic regression on every class); the old classes drop ≤ 2 points;
/// - 200 in a row: the other classes drop ≤ 2 points;
/// - host head: test accuracy ≥ logistic regression's (its penalty tuned on validation,
///   on the same embeddings) − 1 point;
/// - the three Gaussian scales agree within 1 point (0.01 of ECE).
///
/// The `MLP head by gradient` rows (the device's `--learner gradient`, measured beside
/// its default) have none.
pub fn apply_targets(rows: &mut [Row]) {
    let offline_new = |rows: &[Row], backbone: &str| {
        rows.iter()
            .find(|r| {
                r.backbone == backbone
                    && r.protocol == "one pass"
                    && r.metric == "held-out class accuracy"
            })
            .and_then(|r| r.lr)
    };
    let targets: Vec<Option<(String, f64, bool)>> = rows
        .iter()
        .map(|r| {
            let pct = |v: f64| format!("{:.1} %", v * 100.0);
            match (r.protocol.as_str(), r.metric.as_str()) {
                // The gradient learner is a reference here, not the device's default:
                // it is not scale-free, and no target is set for it.
                (p, _) if p.starts_with(GRADIENT_REFERENCE) => None,
                _ if r.backbone == SCALES && r.unit == Unit::Ece => {
                    Some(("≤ 0.01".to_string(), 0.01, false))
                }
                _ if r.backbone == SCALES => Some(("≤ 1 pp".to_string(), 0.01, false)),
                ("1-shot", "accuracy") => r.ncm.map(|n| (format!("≥ {} (NCM)", pct(n)), n, true)),
                ("5-shot" | "10-shot", "accuracy") => r
                    .ncm
                    .map(|n| (format!("≥ {} (NCM + 10 pp)", pct(n + 0.1)), n + 0.1, true)),
                ("one pass", "accuracy") => {
                    r.lr.map(|l| (format!("≥ {} (97 % of LR)", pct(0.97 * l)), 0.97 * l, true))
                }
                ("one pass", "ECE") => Some(("≤ 0.05".into(), 0.05, false)),
                ("one pass", "flagged uncertain") => Some(("≤ 20 %".into(), 0.2, false)),
                ("one pass", "errors flagged") => Some(("≥ 50 %".into(), 0.5, true)),
                ("host head", "accuracy") => {
                    r.lr.map(|l| (format!("≥ {} (LR − 1 pp)", pct(l - 0.01)), l - 0.01, true))
                }
                ("new class 20", "new-class accuracy") => offline_new(rows, &r.backbone).map(|l| {
                    (
                        format!("≥ {} (85 % of offline LR)", pct(0.85 * l)),
                        0.85 * l,
                        true,
                    )
                }),
                (p, "old drop") if p.starts_with("new class") => {
                    Some(("≤ 2 pp".into(), 0.02, false))
                }
                (p, "drop") if p.ends_with("in a row") => Some(("≤ 2 pp".into(), 0.02, false)),
                _ => None,
            }
        })
        .collect();
    for (r, t) in rows.iter_mut().zip(targets) {
        r.target = t.map(|(text, bound, at_least)| Target {
            met: r.edgetune.is_some_and(|e| {
                // Rounding of means over draws must not decide a tie.
                if at_least {
                    e >= bound - 1e-9
                } else {
                    e <= bound + 1e-9
                }
            }),
            text,
            bound,
            at_least,
        });
    }
}

/// A value as its unit reads.
pub fn format(unit: Unit, v: Option<f64>) -> String {
    match (unit, v) {
        (_, None) => "—".into(),
        (Unit::Percent, Some(v)) => format!("{:.1} %", v * 100.0),
        (Unit::Points, Some(v)) => format!("{:+.1} pp", v * 100.0),
        (Unit::Ece, Some(v)) => format!("{v:.3}"),
    }
}

/// The report: what ran, then one table of every row.
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Learning quality\n");
    let _ = writeln!(
        s,
        "{}  \n`{}` · {} draws{} · {:.0} s\n",
        r.machine,
        r.command,
        r.draws,
        if r.quick { " (quick)" } else { "" },
        r.seconds
    );
    for b in &r.backbones {
        let _ = writeln!(
            s,
            "- **{}**: {}; {} classes, {} train / {} test; new class: {}",
            b.name,
            b.about,
            b.classes.len(),
            b.train,
            b.test,
            b.held_out
        );
    }
    for k in &r.skipped {
        let _ = writeln!(s, "- **{}**: skipped, {}", k.name, k.reason);
    }
    let _ = writeln!(
        s,
        "\n| backbone | protocol | metric | edgetune | NCM | SimpleShot | LDA | LR | target | met |"
    );
    let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---|---|");
    let (mut last_b, mut last_p) = ("", "");
    for row in &r.rows {
        let b = if row.backbone == last_b {
            ""
        } else {
            &row.backbone
        };
        let p = if row.backbone == last_b && row.protocol == last_p {
            ""
        } else {
            &row.protocol
        };
        last_b = &row.backbone;
        last_p = &row.protocol;
        let edgetune = match (row.unit, row.edgetune_sd) {
            (Unit::Percent | Unit::Points, Some(sd)) if row.edgetune.is_some() => {
                format!("{} ±{:.1}", format(row.unit, row.edgetune), sd * 100.0)
            }
            _ => format(row.unit, row.edgetune),
        };
        let others: Vec<String> = Method::ALL[1..]
            .iter()
            .map(|&m| format(row.unit, row.value(m)))
            .collect();
        let (target, met) = match &row.target {
            Some(t) => (t.text.as_str(), if t.met { "met" } else { "**not met**" }),
            None => ("", ""),
        };
        let _ = writeln!(
            s,
            "| {b} | {p} | {} | {edgetune} | {} | {target} | {met} |",
            row.metric,
            others.join(" | ")
        );
    }
    let (n, met) = r.targets();
    let _ = writeln!(s, "\nTargets met: {met} of {n}.");
    s
}
