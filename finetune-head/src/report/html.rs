//! The HTML page of a training report: one self-contained file, inline CSS and SVG.
//!
//! The page is the template `report.html.j2` with the style sheet `report.css`, rendered
//! by minijinja with HTML escaping on: every string from the report is escaped, and only
//! the style sheet and the plots (plotters' SVG) go in as trusted markup. What the
//! template cannot say simply (totals, bar widths, the trial table's columns) is computed
//! here and passed beside the report.

use super::*;
use minijinja::{AutoEscape, Environment, Value, context};

/// Lists longer than this are collapsed in the HTML page (trial tables: 3×).
const OPEN_LIMIT: usize = 10;
/// Lists longer than this are cut in the HTML page (the JSON report has them all).
const LIST_LIMIT: usize = 500;

/// The page (see its opening comment for the conventions it follows).
const TEMPLATE: &str = include_str!("report.html.j2");
/// The page's inline style sheet.
const CSS: &str = include_str!("report.css");

/// Renders `report` as one self-contained HTML5 page: summary, data, training curves,
/// test confusion matrix, per-class metrics and the search trials. Inline CSS and SVG,
/// no script and no external URL; every user string (class names, paths, parameters) is
/// escaped. Never panics on odd reports (no epochs, one class, empty search, NaN).
pub fn html(report: &TrainReport) -> String {
    let r = report;
    let d = &r.data;
    let (train, val, test, augmented) = split_totals(d);
    let max_total = d
        .classes
        .iter()
        .map(|c| c.train + c.val + c.test)
        .max()
        .unwrap_or(0)
        .max(1);
    let bars: Vec<usize> = d
        .classes
        .iter()
        .map(|c| ((c.train + c.val + c.test) * 120).div_ceil(max_total))
        .collect();
    let config: Vec<(&String, String)> = r.config.iter().map(|(k, v)| (k, value_text(v))).collect();
    let svg = |markup: String| Value::from_safe_string(markup);
    let (loss_chart, accuracy_chart) = if r.history.is_empty() {
        (Value::UNDEFINED, Value::UNDEFINED)
    } else {
        (
            svg(epoch_chart(
                "Loss",
                "loss",
                &r.history,
                |e| (e.train_loss, e.val_loss),
                r.best_epoch,
                false,
            )),
            svg(epoch_chart(
                "Accuracy",
                "accuracy",
                &r.history,
                |e| (e.train_accuracy, e.val_accuracy),
                r.best_epoch,
                true,
            )),
        )
    };
    let search = r.search.as_ref();
    let winner = search.and_then(SearchSummary::winner);
    let ctx = context! {
        r => Value::from_serialize(r),
        css => Value::from_safe_string(CSS.into()),
        open_limit => OPEN_LIMIT,
        list_limit => LIST_LIMIT,
        created => utc(r.created_unix),
        totals => context! { train, val, test, augmented },
        bars,
        cache_hits => share(r.embedding.cached, r.embedding.computed + r.embedding.cached),
        head => r.head.as_ref().map(choice_text),
        config,
        best_marked => r.history.iter().any(|e| e.epoch == r.best_epoch),
        loss_chart,
        accuracy_chart,
        test_confusion => svg(confusion_svg(&r.test, &r.classes, "Test confusion matrix")),
        validation_confusion => svg(confusion_svg(
            &r.validation,
            &r.classes,
            "Validation confusion matrix",
        )),
        winner => Value::from_serialize(winner),
        winner_params => winner.map(|t| params_text(&t.params)),
        search_chart => search.filter(|s| !s.trials.is_empty()).map(|s| svg(search_chart(s))),
        unplotted => search.map_or(0, |s| s.trials.iter().filter(|t| !t.val_accuracy.is_finite()).count()),
        ..trial_table(search)
    };
    environment()
        .get_template("report.html")
        .and_then(|t| t.render(ctx))
        .expect("the report template is fixed and renders every report (see the tests)")
}

/// The search's trial table: the parameter names (columns) and the rows in trial order,
/// each with its parameter values as text and whether it is the selected trial.
fn trial_table(search: Option<&SearchSummary>) -> Value {
    let Some(s) = search else {
        return context! {};
    };
    let keys: BTreeSet<&String> = s.trials.iter().flat_map(|t| t.params.keys()).collect();
    let mut order: Vec<usize> = (0..s.trials.len()).collect();
    order.sort_by_key(|&i| (s.trials[i].index, i));
    let rows: Vec<Value> = order
        .into_iter()
        .map(|i| {
            let t = &s.trials[i];
            let cells: Vec<String> = keys
                .iter()
                .map(|k| t.params.get(*k).map_or_else(String::new, value_text))
                .collect();
            context! { trial => Value::from_serialize(t), best => i == s.best, cells }
        })
        .collect();
    context! { trial_keys => keys, trials => rows }
}

/// The template in an environment with HTML escaping on, whitespace control for block
/// tags, and the number filters of the terminal summaries.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    // Strings are escaped with `esc`, as they were before the template: minijinja's own
    // HTML escape also writes `/` as `&#x2f;`, which would make every path unreadable in
    // the page's source.
    env.set_formatter(|out, state, value| match value.as_str() {
        Some(s) if state.auto_escape() == AutoEscape::Html && !value.is_safe() => {
            Ok(out.write_str(&esc(s))?)
        }
        _ => minijinja::escape_formatter(out, state, value),
    });
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.add_filter("pct", |x: f64, decimals: usize| pct(x, decimals));
    env.add_filter("num", |x: f64, decimals: usize| num(x, decimals));
    env.add_filter("opt_num", |x: Option<f64>, decimals: usize| {
        opt_num(x, decimals)
    });
    env.add_filter("plural", |n: usize, word: &str| plural(n, word));
    env.add_filter("sci", |x: f64| {
        if x.is_finite() {
            format!("{x:.3e}")
        } else {
            DASH.into()
        }
    });
    env.add_template("report.html", TEMPLATE)
        .expect("the report template parses (see the tests)");
    env
}
