//! Plots (plotters, SVG backend, no font feature: see the module doc).

use super::*;

/// Colour of training curves and trial points.
pub(super) const BLUE_C: RGBColor = RGBColor(31, 119, 180);
/// Colour of validation curves and the running best.
pub(super) const ORANGE_C: RGBColor = RGBColor(230, 115, 0);
/// Colour of the best-epoch marker and the selected trial.
pub(super) const GREEN_C: RGBColor = RGBColor(34, 139, 34);
/// Text colour.
pub(super) const INK: RGBColor = RGBColor(31, 41, 51);
/// Grid and frame colour.
pub(super) const GRID: RGBColor = RGBColor(217, 226, 236);
/// Plot width and height in SVG pixels (scaled down by CSS on narrow screens).
pub(super) const PLOT_W: u32 = 560;
pub(super) const PLOT_H: u32 = 320;
/// Curves with more points than this get no point markers.
pub(super) const MARKER_LIMIT: usize = 60;
/// Confusion matrices with more classes are not drawn.
pub(super) const HEATMAP_LIMIT: usize = 100;

type PlotResult = Result<(), Box<dyn Error>>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A sans-serif text style whose rendered size is `px` SVG pixels (plotters' SVG
/// backend writes `font-size` as the requested size / 1.24).
pub(super) fn font(px: f64) -> TextStyle<'static> {
    ("sans-serif", px * 1.24).into_font().color(&INK)
}

/// Runs `draw` on an SVG canvas of `width`×`height` and returns the `<svg>` element ready
/// to inline in HTML, or an error paragraph (never panics on a plotting error).
pub(super) fn svg_plot(
    width: u32,
    height: u32,
    label: &str,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> PlotResult,
) -> String {
    let mut buf = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut buf, (width, height)).into_drawing_area();
        draw(&root).and_then(|()| root.present().map_err(Into::into))
    };
    match result {
        // Inline SVG in HTML5 needs no namespace declaration: drop it, so the page has no URL.
        Ok(()) => buf
            .replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
            .replacen(
                "<svg ",
                &format!(
                    "<svg class=\"plot\" role=\"img\" aria-label=\"{}\" ",
                    esc(label)
                ),
                1,
            ),
        Err(e) => format!(
            "<p class=\"err\">{}: plot not drawn ({})</p>\n",
            esc(label),
            esc(&e.to_string())
        ),
    }
}

/// The maximal runs of finite points: a NaN breaks a curve instead of crashing it.
pub(super) fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut run = Vec::new();
    for &(x, y) in points {
        if y.is_finite() {
            run.push((x, y));
        } else if !run.is_empty() {
            runs.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

/// An x range covering the integers `xs`, widened by `pad` on both sides and never empty
/// (a single value gets ±1).
pub(super) fn x_range(xs: impl Iterator<Item = usize>, pad: f64) -> (f64, f64) {
    let (lo, hi) = xs.fold((usize::MAX, 0), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (lo, hi) = (lo as f64, hi as f64);
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - pad.max(1.0), hi + pad.max(1.0))
    } else {
        (lo - pad, hi + pad)
    }
}

/// Labels integral x values ("3") and leaves others blank: epochs and trials are counted.
pub(super) fn integer_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// A y range for fractions in \[0, 1\]: up to 1, down to just below the smallest value (so a
/// curve between 90% and 99% is readable), in steps of 5%.
pub(super) fn fraction_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = finite_bounds(values).unwrap_or((0.0, 1.0));
    let top = hi.max(1.0);
    let bottom = (((lo - 0.02) * 20.0).floor() / 20.0).clamp(0.0_f64.min(lo), top - 0.05);
    (bottom, top)
}

/// A y range for losses: from 0 (or the minimum, if negative) to 8% above the maximum.
pub(super) fn loss_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = finite_bounds(values).unwrap_or((0.0, 1.0));
    let bottom = lo.min(0.0);
    let top = if hi > bottom {
        hi + (hi - bottom) * 0.08
    } else {
        bottom + 1.0
    };
    (bottom, top)
}

/// (min, max) of the finite values, `None` without any.
pub(super) fn finite_bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |acc, v| {
        Some(acc.map_or((v, v), |(lo, hi): (f64, f64)| (lo.min(v), hi.max(v))))
    })
}

/// `v` clamped into `lo..=hi`, NaN if not finite (a gap in the curve). Plotters overflows
/// on coordinates far outside the axis range, which can only happen when [`sane`] replaced
/// an absurd range.
pub(super) fn fit(v: f64, (lo, hi): (f64, f64)) -> f64 {
    if v.is_finite() {
        v.clamp(lo, hi)
    } else {
        f64::NAN
    }
}

/// Decimals that tell apart ticks about `span / 5` apart.
pub(super) fn tick_decimals(span: f64) -> usize {
    if span.is_finite() && span > 0.0 {
        (1.0 - (span / 5.0).log10().floor()).clamp(0.0, 6.0) as usize
    } else {
        2
    }
}

/// An axis tick value: fixed-point with `decimals`, scientific when huge, "–" if not finite.
pub(super) fn tick_text(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        DASH.into()
    } else if v.abs() >= 1e5 {
        format!("{v:.1e}")
    } else {
        format!("{v:.decimals$}")
    }
}

/// `(lo, hi)` if it is a usable axis range (finite, non-empty span), else (0, 1): absurd
/// values (say a loss of 1e308) give a useless plot rather than a panic.
pub(super) fn sane(range: (f64, f64)) -> (f64, f64) {
    let span = range.1 - range.0;
    if span.is_finite() && span > 0.0 {
        range
    } else {
        (0.0, 1.0)
    }
}

/// A chart with caption, frame, grid and labelled axes; `percent` formats y as percentages.
pub(super) fn framed_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x: (f64, f64),
    y: (f64, f64),
    percent: bool,
) -> Result<Chart<'a, 'b>, Box<dyn Error>> {
    let ((x_lo, x_hi), (y_lo, y_hi)) = (sane(x), sane(y));
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, font(15.0))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(58)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
    let decimals = if percent {
        tick_decimals((y_hi - y_lo) * 100.0)
    } else {
        tick_decimals(y_hi - y_lo)
    };
    let y_fmt = move |v: &f64| {
        if percent && (v * 100.0).is_finite() {
            tick_text(v * 100.0, decimals.saturating_sub(1)) + "%"
        } else {
            tick_text(*v, decimals)
        }
    };
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(INK.mix(0.6))
        .label_style(font(11.0))
        .axis_desc_style(font(12.0))
        .x_desc(x_desc)
        .y_desc(y_desc)
        // About one label per integer, at most 10: plotters then steps by whole numbers.
        .x_labels(((x_hi - x_lo).floor() as usize + 1).clamp(2, 10))
        .y_labels(6)
        .x_label_formatter(&integer_label)
        .y_label_formatter(&y_fmt)
        .draw()?;
    Ok(chart)
}

/// Draws a named curve (broken at non-finite values) with a legend entry.
pub(super) fn curve(
    chart: &mut Chart<'_, '_>,
    name: &str,
    color: RGBColor,
    points: &[(f64, f64)],
) -> PlotResult {
    let markers = points.len() <= MARKER_LIMIT;
    let runs = finite_runs(points);
    let legend = move |(x, y): (i32, i32)| {
        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
    };
    if runs.is_empty() {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(name)
            .legend(legend);
    }
    for (i, run) in runs.iter().enumerate() {
        let size = if markers || run.len() == 1 { 3 } else { 0 };
        let drawn = chart.draw_series(
            LineSeries::new(run.iter().copied(), color.stroke_width(2)).point_size(size),
        )?;
        if i == 0 {
            drawn.label(name).legend(legend);
        }
    }
    Ok(())
}

/// Train and validation curves of one quantity per epoch, with the best epoch marked.
pub(super) fn epoch_chart(
    title: &str,
    y_desc: &str,
    history: &[Epoch],
    values: fn(&Epoch) -> (f64, f64),
    best_epoch: usize,
    percent: bool,
) -> String {
    let train: Vec<(f64, f64)> = history
        .iter()
        .map(|e| (e.epoch as f64, values(e).0))
        .collect();
    let val: Vec<(f64, f64)> = history
        .iter()
        .map(|e| (e.epoch as f64, values(e).1))
        .collect();
    let all = train.iter().chain(&val).map(|p| p.1);
    let y = sane(if percent {
        fraction_range(all)
    } else {
        loss_range(all)
    });
    let train: Vec<(f64, f64)> = train.into_iter().map(|(x, v)| (x, fit(v, y))).collect();
    let val: Vec<(f64, f64)> = val.into_iter().map(|(x, v)| (x, fit(v, y))).collect();
    let x = x_range(history.iter().map(|e| e.epoch), 0.0);
    let best = history.iter().find(|e| e.epoch == best_epoch);
    svg_plot(PLOT_W, PLOT_H, &format!("{title} per epoch"), |root| {
        let mut chart = framed_chart(root, title, "epoch", y_desc, x, y, percent)?;
        curve(&mut chart, "train", BLUE_C, &train)?;
        curve(&mut chart, "validation", ORANGE_C, &val)?;
        if let Some(b) = best {
            let bx = b.epoch as f64;
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(bx, y.0), (bx, y.1)],
                    5,
                    4,
                    GREEN_C.stroke_width(1),
                ))?
                .label(format!("best (epoch {})", b.epoch))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], GREEN_C.stroke_width(1))
                });
            let bv = fit(values(b).1, y);
            if bv.is_finite() {
                chart.draw_series(std::iter::once(Circle::new(
                    (bx, bv),
                    6,
                    GREEN_C.stroke_width(2),
                )))?;
            }
        }
        chart
            .configure_series_labels()
            .position(if percent {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .background_style(WHITE.mix(0.85))
            .border_style(GRID)
            .label_font(font(11.0))
            .draw()?;
        Ok(())
    })
}

/// Validation accuracy by trial index, the running best as a step line, the winner ringed.
pub(super) fn search_chart(s: &SearchSummary) -> String {
    let mut order: Vec<usize> = (0..s.trials.len()).collect();
    order.sort_by_key(|&i| (s.trials[i].index, i));
    let y = sane(fraction_range(s.trials.iter().map(|t| t.val_accuracy)));
    let points: Vec<(f64, f64)> = order
        .iter()
        .map(|&i| (s.trials[i].index as f64, fit(s.trials[i].val_accuracy, y)))
        .collect();
    let mut steps: Vec<(f64, f64)> = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for &(x, v) in &points {
        if v.is_finite() && v > best {
            if best.is_finite() {
                steps.push((x, best));
            }
            best = v;
        }
        if best.is_finite() {
            steps.push((x, best));
        }
    }
    let winner = s
        .winner()
        .map(|t| (t.index as f64, fit(t.val_accuracy, y)))
        .filter(|p| p.1.is_finite());
    let x = x_range(s.trials.iter().map(|t| t.index), 0.5);
    svg_plot(
        PLOT_W + 80,
        PLOT_H,
        "Validation accuracy per search trial",
        |root| {
            let mut chart = framed_chart(
                root,
                "Search trials",
                "trial",
                "validation accuracy",
                x,
                y,
                true,
            )?;
            chart
                .draw_series(
                    points
                        .iter()
                        .filter(|p| p.1.is_finite())
                        .map(|&p| Circle::new(p, 3, BLUE_C.mix(0.75).filled())),
                )?
                .label("trial")
                .legend(|(x, y)| Circle::new((x + 9, y), 3, BLUE_C.filled()));
            chart
                .draw_series(LineSeries::new(steps, ORANGE_C.stroke_width(2)))?
                .label("running best")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], ORANGE_C.stroke_width(2))
                });
            if let Some(p) = winner {
                chart
                    .draw_series(std::iter::once(Circle::new(p, 7, GREEN_C.stroke_width(2))))?
                    .label("selected")
                    .legend(|(x, y)| Circle::new((x + 9, y), 5, GREEN_C.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(GRID)
                .label_font(font(11.0))
                .draw()?;
            Ok(())
        },
    )
}

/// `base` blended with white: `t` = 0 gives white, 1 gives `base`.
pub(super) fn tint(base: RGBColor, t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mix = |c: u8| (255.0 - (255.0 - f64::from(c)) * t).round() as u8;
    RGBColor(mix(base.0), mix(base.1), mix(base.2))
}

/// The confusion matrix as a heatmap: counts in the cells, class names on both axes,
/// colour by row share (blue diagonal, red errors). Drawn on the raw pixel canvas:
/// categorical axes are simpler placed by hand than through plotters' segmented ranges.
pub(super) fn confusion_svg(m: &Metrics, classes: &[String], label: &str) -> String {
    let n = m.confusion.len();
    if n == 0 {
        return "<p class=\"muted\">No confusion matrix (no classes).</p>\n".into();
    }
    if n > HEATMAP_LIMIT {
        return format!(
            "<p class=\"muted\">{n} classes: too many for a heatmap; the JSON report has the matrix.</p>\n"
        );
    }
    let counts_note = if (520 / n) < 16 {
        "<p class=\"muted\">Cells too small for counts: the JSON report has them.</p>\n"
    } else {
        ""
    };
    let cell = (520 / n as i32).clamp(8, 60);
    let label_px = if cell >= 16 {
        12.0
    } else {
        (f64::from(cell) - 2.0).max(7.0)
    };
    let count_px = (f64::from(cell) * 0.36).clamp(8.0, 13.0);
    let names: Vec<String> = (0..n)
        .map(|i| clip(&class_name(m, classes, i), 20))
        .collect();
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(1) as f64;
    let label_w = (longest * label_px * 0.56).ceil() as i32 + 10;
    let (left, top) = (label_w + 26, 12);
    let side = cell * n as i32;
    let (width, height) = (left + side + 14, top + side + label_w + 30);
    let cell_at = |i: usize, j: usize| m.confusion[i].get(j).copied().unwrap_or(0);
    let svg = svg_plot(width as u32, height as u32, label, |root| {
        root.fill(&WHITE)?;
        for i in 0..n {
            let row_total: usize = m.confusion[i].iter().sum();
            for j in 0..n {
                let v = cell_at(i, j);
                // Square root: a 4% confusion still shows as a visible tint.
                let t = if row_total == 0 {
                    0.0
                } else {
                    (v as f64 / row_total as f64).sqrt()
                };
                let fill = tint(
                    if i == j {
                        BLUE_C
                    } else {
                        RGBColor(214, 39, 40)
                    },
                    t,
                );
                let (x0, y0) = (left + j as i32 * cell, top + i as i32 * cell);
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell, y0 + cell)],
                    fill.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell, y0 + cell)],
                    WHITE.stroke_width(1),
                ))?;
                if cell >= 16 {
                    let color = if t > 0.7 {
                        &WHITE
                    } else if v == 0 {
                        &GRID
                    } else {
                        &INK
                    };
                    let style = ("sans-serif", count_px * 1.24)
                        .into_font()
                        .color(color)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    root.draw(&Text::new(
                        v.to_string(),
                        (x0 + cell / 2, y0 + cell / 2),
                        style,
                    ))?;
                }
            }
        }
        root.draw(&Rectangle::new(
            [(left, top), (left + side, top + side)],
            INK.mix(0.5).stroke_width(1),
        ))?;
        let row_style = font(label_px).pos(Pos::new(HPos::Right, VPos::Center));
        let col_style = font(label_px)
            .pos(Pos::new(HPos::Right, VPos::Center))
            .transform(FontTransform::Rotate270);
        for (i, name) in names.iter().enumerate() {
            let mid = i as i32 * cell + cell / 2;
            root.draw(&Text::new(
                name.clone(),
                (left - 6, top + mid),
                row_style.clone(),
            ))?;
            root.draw(&Text::new(
                name.clone(),
                (left + mid, top + side + 6),
                col_style.clone(),
            ))?;
        }
        let title = font(12.0).pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(
            "predicted",
            (left + side / 2, height - 12),
            title.clone(),
        ))?;
        root.draw(&Text::new(
            "true",
            (10, top + side / 2),
            title.transform(FontTransform::Rotate270),
        ))?;
        Ok(())
    });
    svg + counts_note
}
