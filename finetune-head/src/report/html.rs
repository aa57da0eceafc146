//! The HTML page of a training report: one self-contained file, inline CSS and SVG.

use super::*;

/// Lists longer than this are collapsed in the HTML page (trial tables: 3×).
pub(super) const OPEN_LIMIT: usize = 10;
/// Lists longer than this are cut in the HTML page (the JSON report has them all).
pub(super) const LIST_LIMIT: usize = 500;

pub(super) const CSS: &str = "\
:root{--ink:#1f2933;--muted:#616e7c;--line:#d9e2ec;--bg:#f5f7fa;--accent:#1f77b4}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--ink);\
margin:0 auto;max-width:1200px;padding:12px 24px 48px}
h1{font-size:22px;margin:8px 0 2px}
h2{font-size:18px;margin:30px 0 8px;padding-bottom:4px;border-bottom:2px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}
.muted,figcaption,.meta{color:var(--muted)}
nav a{margin-right:14px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:150px;background:var(--bg)}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;margin:6px 0 10px}
th,td{border-bottom:1px solid var(--line);padding:3px 10px;text-align:left;vertical-align:top}
th{background:var(--bg);font-weight:600}
.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.best td{background:#e6f4ea;font-weight:600}
tfoot td{font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:0}
figcaption{font-size:12px;max-width:640px}
svg.plot{max-width:100%;height:auto;display:block}
details{margin:6px 0}
summary{cursor:pointer}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.bar{display:inline-block;height:9px;background:var(--accent);opacity:.55;border-radius:2px}
.err{color:#b00020}
";

/// Appends formatted text to a `String` (writing to a `String` cannot fail).
macro_rules! w {
    ($dst:expr, $($arg:tt)*) => {{ let _ = write!($dst, $($arg)*); }};
}

/// Renders `report` as one self-contained HTML5 page: summary, data, training curves,
/// test confusion matrix, per-class metrics and the search trials. Inline CSS and SVG,
/// no script and no external URL; every user string (class names, paths, parameters) is
/// escaped. Never panics on odd reports (no epochs, one class, empty search, NaN).
pub fn html(report: &TrainReport) -> String {
    let mut h = String::with_capacity(128 * 1024);
    let r = report;
    w!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Training report: {}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n",
        esc(&r.bundle_out)
    );
    w!(
        h,
        "<header>\n<h1>Training report</h1>\n<p class=\"meta\">{} · {} · <code>{}</code> → \
         <code>{}</code></p>\n<nav><a href=\"#summary\">Summary</a><a href=\"#data\">Data</a>\
         <a href=\"#training\">Training</a><a href=\"#evaluation\">Evaluation</a>{}</nav>\n\
         </header>\n",
        esc(&r.tool),
        utc(r.created_unix),
        esc(&r.bundle_in),
        esc(&r.bundle_out),
        if r.search.is_some() {
            "<a href=\"#search\">Search</a>"
        } else {
            ""
        }
    );
    summary_section(&mut h, r);
    data_section(&mut h, r);
    training_section(&mut h, r);
    evaluation_section(&mut h, r);
    if let Some(search) = &r.search {
        search_section(&mut h, search);
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// Summary: headline metrics, run facts and the final head's configuration.
pub(super) fn summary_section(h: &mut String, r: &TrainReport) {
    h.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"cards\">\n");
    let mut card = |label: &str, value: String| {
        w!(
            h,
            "<div class=\"card\">{}<b>{}</b></div>\n",
            esc(label),
            esc(&value)
        );
    };
    card("Test accuracy", pct(r.test.accuracy, 2));
    card("Test macro-F1", pct(r.test.macro_f1, 2));
    card("Validation accuracy", pct(r.validation.accuracy, 2));
    card("Validation macro-F1", pct(r.validation.macro_f1, 2));
    if let Some(lat) = r.test.latency_us {
        card("Latency per sample", format!("{} µs", num(lat, 1)));
    }
    h.push_str("</div>\n<table>\n<tbody>\n");

    let mut row = |key: &str, value_html: String| {
        w!(h, "<tr><th>{}</th><td>{value_html}</td></tr>\n", esc(key));
    };
    let shown: Vec<String> = r.classes.iter().take(40).map(|c| esc(c)).collect();
    let more = r.classes.len().saturating_sub(shown.len());
    row(
        "Classes",
        format!(
            "{}: {}{}",
            r.classes.len(),
            shown.join(", "),
            if more > 0 {
                format!(", … ({more} more)")
            } else {
                String::new()
            }
        ),
    );
    let d = &r.data;
    let (tr, va, te, au) = split_totals(d);
    row(
        "Data",
        format!(
            "{} of {} samples used ({} from <code>{}</code>); {} duplicate groups, {} conflicts, \
             {} skipped",
            d.used,
            d.found,
            esc(&d.kind),
            esc(&d.source),
            d.duplicates.len(),
            d.conflicts.len(),
            d.skipped.len()
        ),
    );
    row(
        "Split",
        format!("{}: train {tr}, validation {va}, test {te}", esc(&d.split)),
    );
    row(
        "Augmentation",
        if d.augment.is_empty() {
            "none".into()
        } else {
            format!(
                "{} × {} copies ({au} added)",
                esc(&d.augment.join(", ")),
                d.augment_copies
            )
        },
    );
    let e = &r.embedding;
    row(
        "Embeddings",
        format!(
            "{} computed, {} from cache ({} cache hits); {} threads, {} s ({} samples/s)",
            e.computed,
            e.cached,
            share(e.cached, e.computed + e.cached),
            e.threads,
            num(e.seconds, 1),
            num(e.samples_per_s, 1)
        ),
    );
    row(
        "Backbone SHA-256",
        format!("<code>{}</code>", esc(&e.backbone_sha256)),
    );
    row(
        "Training",
        format!(
            "{}{}, best epoch {}, {} s",
            plural(r.history.len(), "epoch"),
            if r.stopped_early {
                " (stopped early)"
            } else {
                ""
            },
            r.best_epoch,
            num(r.train_seconds, 1)
        ),
    );
    if let Some(h) = &r.head {
        row("Head kept", esc(&choice_text(h)));
    }
    if let Some(s) = &r.search {
        let winner = match s.winner() {
            Some(t) => format!(
                "; selected trial #{} (validation accuracy {})",
                t.index,
                pct(t.val_accuracy, 2)
            ),
            None => String::new(),
        };
        row(
            "Search",
            format!(
                "{}: {}{}",
                esc(&s.method),
                plural(s.trials.len(), "trial"),
                winner
            ),
        );
    }
    row(
        "Loss (val / test)",
        format!(
            "{} / {}",
            opt_num(r.validation.loss, 4),
            opt_num(r.test.loss, 4)
        ),
    );
    h.push_str("</tbody>\n</table>\n<h3>Configuration of the final head</h3>\n");
    if r.config.is_empty() {
        h.push_str("<p class=\"muted\">No configuration recorded.</p>\n");
    } else {
        h.push_str("<table>\n<thead><tr><th>Parameter</th><th>Value</th></tr></thead>\n<tbody>\n");
        for (k, v) in &r.config {
            w!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>\n",
                esc(k),
                esc(&value_text(v))
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</section>\n");
}

/// Opens a `<details>` element with a summary line, expanded if `open`.
pub(super) fn details_open(h: &mut String, open: bool, summary: &str) {
    let open = if open { " open" } else { "" };
    w!(h, "<details{open}><summary>{}</summary>\n", esc(summary));
}

/// A note for lists cut at [`LIST_LIMIT`].
pub(super) fn cut_note(h: &mut String, total: usize) {
    if total > LIST_LIMIT {
        w!(
            h,
            "<p class=\"muted\">… and {} more (the JSON report lists all).</p>\n",
            total - LIST_LIMIT
        );
    }
}

/// Data: per-class counts per split, duplicates, conflicts, skipped inputs.
pub(super) fn data_section(h: &mut String, r: &TrainReport) {
    let d = &r.data;
    h.push_str("<section id=\"data\">\n<h2>Data</h2>\n");
    w!(
        h,
        "<p><code>{}</code> ({}), split: {}.</p>\n",
        esc(&d.source),
        esc(&d.kind),
        esc(&d.split)
    );
    if d.classes.is_empty() {
        h.push_str("<p class=\"muted\">No per-class counts recorded.</p>\n");
    } else {
        let max_total = d
            .classes
            .iter()
            .map(|c| c.train + c.val + c.test)
            .max()
            .unwrap_or(0)
            .max(1);
        h.push_str(
            "<table>\n<thead><tr><th>Class</th><th class=\"n\">Train</th><th class=\"n\">Validation</th>\
             <th class=\"n\">Test</th><th class=\"n\">Augmented</th><th class=\"n\">Total</th>\
             <th></th></tr></thead>\n<tbody>\n",
        );
        for c in &d.classes {
            let total = c.train + c.val + c.test;
            w!(
                h,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{total}</td><td><span class=\"bar\" \
                 style=\"width:{}px\"></span></td></tr>\n",
                esc(&c.name),
                c.train,
                c.val,
                c.test,
                c.augmented,
                (total * 120).div_ceil(max_total)
            );
        }
        let (tr, va, te, au) = split_totals(d);
        w!(
            h,
            "</tbody>\n<tfoot><tr><td>Total</td><td class=\"n\">{tr}</td><td class=\"n\">{va}</td>\
             <td class=\"n\">{te}</td><td class=\"n\">{au}</td><td class=\"n\">{}</td><td></td></tr>\
             </tfoot>\n</table>\n",
            tr + va + te
        );
    }

    if d.duplicates.is_empty() {
        h.push_str("<p>No duplicates.</p>\n");
    } else {
        let n = d.duplicates.len();
        details_open(
            h,
            n <= OPEN_LIMIT,
            &format!("Duplicates: {n} groups (one sample kept per group)"),
        );
        h.push_str("<ul>\n");
        for g in d.duplicates.iter().take(LIST_LIMIT) {
            let dropped: Vec<String> = g
                .dropped
                .iter()
                .map(|p| format!("<code>{}</code>", esc(p)))
                .collect();
            w!(
                h,
                "<li>{}: kept <code>{}</code>, dropped {}</li>\n",
                esc(&g.label),
                esc(&g.kept),
                dropped.join(", ")
            );
        }
        h.push_str("</ul>\n");
        cut_note(h, n);
        h.push_str("</details>\n");
    }

    if d.conflicts.is_empty() {
        h.push_str("<p>No label conflicts.</p>\n");
    } else {
        let n = d.conflicts.len();
        details_open(
            h,
            n <= OPEN_LIMIT,
            &format!("Label conflicts: {n} (identical samples, different labels; dropped)"),
        );
        h.push_str("<ul>\n");
        for c in d.conflicts.iter().take(LIST_LIMIT) {
            let items: Vec<String> = c
                .items
                .iter()
                .map(|(p, l)| format!("<code>{}</code> ({})", esc(p), esc(l)))
                .collect();
            w!(h, "<li>{}</li>\n", items.join(", "));
        }
        h.push_str("</ul>\n");
        cut_note(h, n);
        h.push_str("</details>\n");
    }

    if d.skipped.is_empty() {
        h.push_str("<p>Nothing skipped.</p>\n");
    } else {
        let n = d.skipped.len();
        details_open(h, n <= OPEN_LIMIT, &format!("Skipped: {n} inputs"));
        h.push_str("<ul>\n");
        for s in d.skipped.iter().take(LIST_LIMIT) {
            w!(
                h,
                "<li><code>{}</code>: {}</li>\n",
                esc(&s.path),
                esc(&s.reason)
            );
        }
        h.push_str("</ul>\n");
        cut_note(h, n);
        h.push_str("</details>\n");
    }
    h.push_str("</section>\n");
}

/// Training: loss and accuracy curves with the best epoch marked, and the epoch table.
pub(super) fn training_section(h: &mut String, r: &TrainReport) {
    h.push_str("<section id=\"training\">\n<h2>Training</h2>\n");
    if r.history.is_empty() {
        h.push_str("<p class=\"muted\">No epochs recorded.</p>\n</section>\n");
        return;
    }
    let marked = r.history.iter().any(|e| e.epoch == r.best_epoch);
    h.push_str("<div class=\"plots\">\n<figure>\n");
    h.push_str(&epoch_chart(
        "Loss",
        "loss",
        &r.history,
        |e| (e.train_loss, e.val_loss),
        r.best_epoch,
        false,
    ));
    h.push_str("</figure>\n<figure>\n");
    h.push_str(&epoch_chart(
        "Accuracy",
        "accuracy",
        &r.history,
        |e| (e.train_accuracy, e.val_accuracy),
        r.best_epoch,
        true,
    ));
    h.push_str("</figure>\n</div>\n");
    w!(
        h,
        "<p class=\"muted\">{}{}. {}</p>\n",
        plural(r.history.len(), "epoch"),
        if r.stopped_early {
            ", stopped early"
        } else {
            ""
        },
        if marked {
            format!(
                "The kept weights are from epoch {} (dashed line).",
                r.best_epoch
            )
        } else {
            format!("Best epoch {} is not in the history.", r.best_epoch)
        }
    );
    details_open(
        h,
        false,
        &format!("Epoch table ({} epochs)", r.history.len()),
    );
    h.push_str(
        "<table>\n<thead><tr><th class=\"n\">Epoch</th><th class=\"n\">Train loss</th>\
         <th class=\"n\">Val loss</th><th class=\"n\">Train acc.</th><th class=\"n\">Val acc.</th>\
         <th class=\"n\">Learning rate</th></tr></thead>\n<tbody>\n",
    );
    for e in &r.history {
        w!(
            h,
            "<tr{}><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
            if e.epoch == r.best_epoch {
                " class=\"best\""
            } else {
                ""
            },
            e.epoch,
            num(e.train_loss, 4),
            num(e.val_loss, 4),
            pct(e.train_accuracy, 2),
            pct(e.val_accuracy, 2),
            if e.lr.is_finite() {
                format!("{:.3e}", e.lr)
            } else {
                DASH.into()
            }
        );
    }
    h.push_str("</tbody>\n</table>\n</details>\n</section>\n");
}

/// Evaluation: test confusion matrix and per-class tables (test, validation).
pub(super) fn evaluation_section(h: &mut String, r: &TrainReport) {
    h.push_str("<section id=\"evaluation\">\n<h2>Evaluation</h2>\n");
    w!(
        h,
        "<h3>Test split: confusion matrix</h3>\n<p>{} samples, accuracy {}, macro-F1 {}, loss {}.</p>\n",
        r.test.samples,
        pct(r.test.accuracy, 2),
        pct(r.test.macro_f1, 2),
        opt_num(r.test.loss, 4)
    );
    h.push_str("<figure>\n");
    h.push_str(&confusion_svg(&r.test, &r.classes, "Test confusion matrix"));
    h.push_str(
        "<figcaption>Rows: true class; columns: predicted class; cells: sample counts. \
         Colour: share of the true class's samples (row-normalised, square-root scale), blue \
         on the diagonal (correct), red off it (errors).</figcaption>\n</figure>\n",
    );
    h.push_str("<h3>Test split: per class</h3>\n");
    class_table(h, &r.test);
    h.push_str("<h3>Validation split: per class</h3>\n");
    class_table(h, &r.validation);
    details_open(h, false, "Validation confusion matrix");
    h.push_str(&confusion_svg(
        &r.validation,
        &r.classes,
        "Validation confusion matrix",
    ));
    h.push_str("</details>\n</section>\n");
}

/// Per-class precision/recall/F1/support table with macro and accuracy footer.
pub(super) fn class_table(h: &mut String, m: &Metrics) {
    if m.per_class.is_empty() {
        h.push_str("<p class=\"muted\">No classes.</p>\n");
        return;
    }
    h.push_str(
        "<table>\n<thead><tr><th>Class</th><th class=\"n\">Precision</th><th class=\"n\">Recall</th>\
         <th class=\"n\">F1</th><th class=\"n\">Support</th></tr></thead>\n<tbody>\n",
    );
    for c in &m.per_class {
        w!(
            h,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>\n",
            esc(&c.name),
            pct(c.precision, 1),
            pct(c.recall, 1),
            pct(c.f1, 1),
            c.support
        );
    }
    w!(
        h,
        "</tbody>\n<tfoot><tr><td>Macro (classes with support)</td><td></td><td></td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n<tr><td>Accuracy</td><td></td><td></td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td></tr></tfoot>\n</table>\n",
        pct(m.macro_f1, 1),
        m.samples,
        pct(m.accuracy, 1),
        m.samples
    );
}

/// Search: accuracy by trial with running best and winner, and the trial table.
pub(super) fn search_section(h: &mut String, s: &SearchSummary) {
    h.push_str("<section id=\"search\">\n<h2>Hyperparameter search</h2>\n");
    w!(
        h,
        "<p>{}: {} on {} threads, {} s.{}</p>\n",
        esc(&s.method),
        plural(s.trials.len(), "trial"),
        s.threads,
        num(s.seconds, 1),
        match s.winner() {
            Some(t) => format!(
                " Selected: trial #{} ({}), validation accuracy {}.",
                t.index,
                esc(&params_text(&t.params)),
                pct(t.val_accuracy, 2)
            ),
            None => String::new(),
        }
    );
    if s.trials.is_empty() {
        h.push_str("<p class=\"muted\">The search ran no trials.</p>\n</section>\n");
        return;
    }
    h.push_str("<figure>\n");
    h.push_str(&search_chart(s));
    let unplotted = s
        .trials
        .iter()
        .filter(|t| !t.val_accuracy.is_finite())
        .count();
    w!(
        h,
        "<figcaption>Validation accuracy per trial, the running best (step line) and the \
         selected trial (ringed).{}</figcaption>\n</figure>\n",
        if unplotted > 0 {
            format!(" {unplotted} trials without a finite accuracy are not plotted.")
        } else {
            String::new()
        }
    );
    let keys: BTreeSet<&String> = s.trials.iter().flat_map(|t| t.params.keys()).collect();
    details_open(
        h,
        s.trials.len() <= 3 * OPEN_LIMIT,
        &format!("All {} trials", s.trials.len()),
    );
    h.push_str("<table>\n<thead><tr><th class=\"n\">Trial</th>");
    for k in &keys {
        w!(h, "<th>{}</th>", esc(k));
    }
    h.push_str(
        "<th class=\"n\">Val acc.</th><th class=\"n\">Val loss</th><th class=\"n\">Epochs</th>\
         <th class=\"n\">Seconds</th></tr></thead>\n<tbody>\n",
    );
    let mut order: Vec<usize> = (0..s.trials.len()).collect();
    order.sort_by_key(|&i| (s.trials[i].index, i));
    for i in order {
        let t = &s.trials[i];
        w!(
            h,
            "<tr{}><td class=\"n\">{}</td>",
            if i == s.best { " class=\"best\"" } else { "" },
            t.index
        );
        for k in &keys {
            w!(
                h,
                "<td>{}</td>",
                t.params
                    .get(*k)
                    .map_or_else(String::new, |v| esc(&value_text(v)))
            );
        }
        w!(
            h,
            "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
            pct(t.val_accuracy, 2),
            num(t.val_loss, 4),
            t.epochs,
            num(t.seconds, 1)
        );
    }
    h.push_str("</tbody>\n</table>\n</details>\n</section>\n");
}
