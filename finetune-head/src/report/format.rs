//! Formatting helpers the HTML page and the terminal summaries share.

use super::*;

/// Placeholder for a missing or non-finite number.
pub(super) const DASH: &str = "–";

/// A fraction as a percentage with `decimals` decimals, "–" if not finite.
pub(super) fn pct(x: f64, decimals: usize) -> String {
    let p = x * 100.0;
    if p.is_finite() {
        format!("{p:.decimals$}%")
    } else {
        DASH.into()
    }
}

/// A number with `decimals` decimals, "–" if not finite.
pub(super) fn num(x: f64, decimals: usize) -> String {
    if x.is_finite() {
        format!("{x:.decimals$}")
    } else {
        DASH.into()
    }
}

/// An optional number with `decimals` decimals, "–" if absent or not finite.
pub(super) fn opt_num(x: Option<f64>, decimals: usize) -> String {
    x.map_or_else(|| DASH.into(), |x| num(x, decimals))
}

/// `part / whole` as a percentage, "–" when `whole` is 0.
pub(super) fn share(part: usize, whole: usize) -> String {
    if whole == 0 {
        DASH.into()
    } else {
        pct(part as f64 / whole as f64, 1)
    }
}

/// A JSON value as plain text: strings without quotes, `null` as "–".
pub(super) fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => DASH.into(),
        other => other.to_string(),
    }
}

/// Escapes text for HTML content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters of `s`; a longer `s` loses its middle to "…", so that names
/// differing only in their ends ("model_v1_small", "model_v1_large") stay distinct.
pub(super) fn clip(s: &str, max: usize) -> String {
    let len = s.chars().count();
    if len <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(1);
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push('…');
    out.extend(s.chars().skip(len - tail));
    out
}

/// A UTC date and time from seconds since the Unix epoch.
pub(super) fn utc(secs: u64) -> String {
    crate::utc::utc(secs, false)
}

/// "1 epoch", "2 epochs".
pub(super) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Split totals (train, val, test, augmented) over all classes.
pub(super) fn split_totals(d: &DataSummary) -> (usize, usize, usize, usize) {
    d.classes.iter().fold((0, 0, 0, 0), |(a, b, c, e), k| {
        (a + k.train, b + k.val, c + k.test, e + k.augmented)
    })
}

/// The name of class `i` of `m`: the per-class entry, else `classes[i]`, else "#i".
pub(super) fn class_name<'a>(m: &'a Metrics, classes: &'a [String], i: usize) -> String {
    m.per_class
        .get(i)
        .map(|c| c.name.clone())
        .or_else(|| classes.get(i).cloned())
        .unwrap_or_else(|| format!("#{i}"))
}

/// A trial's parameters as "name=value, ...".
pub(super) fn params_text(params: &BTreeMap<String, serde_json::Value>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect::<Vec<_>>()
        .join(", ")
}
