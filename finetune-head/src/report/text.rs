//! The terminal summaries (`Display`) of the training and evaluation reports.

use super::*;

/// `closed-form LDA (validation accuracy 95.00 % against the gradient head's 91.25 %; temperature 1.3)`.
pub(super) fn choice_text(h: &HeadChoice) -> String {
    match h.closed_form {
        Some((acc, _, t)) => format!(
            "{} (validation accuracy: closed-form LDA {}, temperature {}; gradient {})",
            h.kept,
            pct(acc, 2),
            num(f64::from(t), 3),
            pct(h.gradient.0, 2)
        ),
        None => format!("{} (no closed-form candidate)", h.kept),
    }
}

/// Writes the lines `write` produces to `f` without the last newline, as usual for
/// `Display`: callers use `println!("{report}")`.
fn display(
    f: &mut fmt::Formatter<'_>,
    write: impl FnOnce(&mut String) -> fmt::Result,
) -> fmt::Result {
    let mut text = String::new();
    write(&mut text)?;
    f.write_str(text.trim_end_matches('\n'))
}

impl TrainReport {
    /// The text of the `Display` summary, line by line.
    fn write_text(&self, f: &mut String) -> fmt::Result {
        let d = &self.data;
        let (tr, va, te, au) = split_totals(d);
        writeln!(
            f,
            "{}: {} -> {}",
            self.tool, self.bundle_in, self.bundle_out
        )?;
        writeln!(
            f,
            "data       {} from {}: {} found, {} used ({} duplicate groups, {} conflicts, {} skipped)",
            d.kind,
            d.source,
            d.found,
            d.used,
            d.duplicates.len(),
            d.conflicts.len(),
            d.skipped.len()
        )?;
        let augment = if d.augment.is_empty() {
            String::new()
        } else {
            format!(
                "; augment {} x{} (+{au})",
                d.augment.join(","),
                d.augment_copies
            )
        };
        writeln!(
            f,
            "split      {}: train {tr}, val {va}, test {te}{augment}",
            d.split
        )?;
        let mut names = String::new();
        for (i, c) in self.classes.iter().enumerate() {
            let c = clip(c, 24);
            if names.len() + c.len() > 80 {
                let _ = write!(names, ", … (+{})", self.classes.len() - i);
                break;
            }
            if i > 0 {
                names.push_str(", ");
            }
            names.push_str(&c);
        }
        writeln!(f, "classes    {}: {names}", self.classes.len())?;
        let e = &self.embedding;
        writeln!(
            f,
            "embeddings {} computed, {} cached ({} hits), {} threads, {} s ({}/s)",
            e.computed,
            e.cached,
            share(e.cached, e.computed + e.cached),
            e.threads,
            num(e.seconds, 1),
            num(e.samples_per_s, 1)
        )?;
        if let Some(s) = &self.search {
            write!(
                f,
                "search     {}, {}, {} threads, {} s",
                s.method,
                plural(s.trials.len(), "trial"),
                s.threads,
                num(s.seconds, 1)
            )?;
            match s.winner() {
                Some(t) => writeln!(
                    f,
                    "; winner #{} (val {}): {}",
                    t.index,
                    pct(t.val_accuracy, 2),
                    params_text(&t.params)
                )?,
                None => writeln!(f)?,
            }
        }
        write!(
            f,
            "training   {}{}, best epoch {}",
            plural(self.history.len(), "epoch"),
            if self.stopped_early {
                " (stopped early)"
            } else {
                ""
            },
            self.best_epoch
        )?;
        if let Some(b) = self.history.iter().find(|e| e.epoch == self.best_epoch) {
            write!(
                f,
                " (val loss {}, val acc {})",
                num(b.val_loss, 4),
                pct(b.val_accuracy, 2)
            )?;
        }
        writeln!(f, ", {} s", num(self.train_seconds, 1))?;
        if let Some(h) = &self.head {
            writeln!(f, "head       {}", choice_text(h))?;
        }
        for (name, m) in [("validation", &self.validation), ("test", &self.test)] {
            writeln!(
                f,
                "{name:<10} accuracy {}, macro-F1 {}, loss {} ({} samples)",
                pct(m.accuracy, 2),
                pct(m.macro_f1, 2),
                opt_num(m.loss, 4),
                m.samples
            )?;
        }
        let pc = &self.test.per_class;
        if !pc.is_empty() && pc.len() <= 20 {
            writeln!(f, "test F1 per class:")?;
            let w = pc
                .iter()
                .map(|c| c.name.chars().count())
                .max()
                .unwrap_or(0)
                .min(24);
            for c in pc {
                writeln!(
                    f,
                    "  {:<w$}  {:>6}  (support {})",
                    clip(&c.name, 24),
                    pct(c.f1, 1),
                    c.support
                )?;
            }
        } else if !pc.is_empty() {
            writeln!(
                f,
                "per-class metrics of {} classes: see the HTML or JSON report",
                pc.len()
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for TrainReport {
    /// A compact terminal summary: data, cache, search winner, best epoch, validation and
    /// test metrics, and per-class test F1 (up to 20 classes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        display(f, |text| self.write_text(text))
    }
}

impl EvalReport {
    /// The text of the `Display` summary, line by line.
    fn write_text(&self, f: &mut String) -> fmt::Result {
        let m = &self.metrics;
        writeln!(f, "bundle   {}", self.bundle)?;
        writeln!(
            f,
            "data     {} ({} samples, {} skipped)",
            self.data,
            m.samples,
            self.skipped.len()
        )?;
        for s in self.skipped.iter().take(5) {
            writeln!(f, "  skipped {}: {}", s.path, s.reason)?;
        }
        if self.skipped.len() > 5 {
            writeln!(f, "  … and {} more", self.skipped.len() - 5)?;
        }
        for m in &self.misclassified {
            let what = m.text.as_ref().map_or(String::new(), |t| format!(" {t:?}"));
            writeln!(
                f,
                "  wrong  {}{what}: {} taken for {} ({})",
                m.origin,
                m.truth,
                m.predicted,
                pct(f64::from(m.confidence), 0)
            )?;
        }
        write!(
            f,
            "accuracy {} ({}/{}), macro-F1 {}, loss {}",
            pct(m.accuracy, 2),
            m.correct(),
            m.samples,
            pct(m.macro_f1, 2),
            opt_num(m.loss, 4)
        )?;
        match m.latency_us {
            Some(l) => writeln!(f, ", latency {} µs/sample", num(l, 1))?,
            None => writeln!(f)?,
        }
        if let Some(a) = self.device_head_accuracy {
            writeln!(
                f,
                "device   accuracy {} with the closed-form head edgetune serve writes from \
                 the bundle's statistics (its default --learner slda)",
                pct(a, 2)
            )?;
        }
        if m.per_class.is_empty() {
            return Ok(());
        }
        let w = m
            .per_class
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(5, 24);
        writeln!(
            f,
            "{:<w$}  {:>9}  {:>7}  {:>7}  {:>7}",
            "class", "precision", "recall", "F1", "support"
        )?;
        for c in &m.per_class {
            writeln!(
                f,
                "{:<w$}  {:>9}  {:>7}  {:>7}  {:>7}",
                clip(&c.name, 24),
                pct(c.precision, 1),
                pct(c.recall, 1),
                pct(c.f1, 1),
                c.support
            )?;
        }
        let n = m.confusion.len();
        if n > 0 && n <= 12 {
            // Columns are numbered like the rows: names would make the table too wide.
            writeln!(f, "confusion (rows: true, columns: predicted)")?;
            let names: Vec<String> = (0..n)
                .map(|i| clip(&class_name(m, &self.classes, i), 24))
                .collect();
            let max = m.confusion.iter().flatten().max().copied().unwrap_or(0);
            let cw = max.to_string().len().max(n.to_string().len());
            let rw = names.iter().map(|s| s.chars().count()).max().unwrap_or(1) + 3;
            write!(f, "{:<rw$}", "")?;
            for j in 0..n {
                write!(f, " {j:>cw$}")?;
            }
            writeln!(f)?;
            for (i, name) in names.iter().enumerate() {
                write!(f, "{:<rw$}", format!("{i:>2} {name}"))?;
                for j in 0..n {
                    write!(f, " {:>cw$}", m.confusion[i].get(j).copied().unwrap_or(0))?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for EvalReport {
    /// Accuracy, macro-F1, loss, latency, skipped inputs, the per-class table and (up to 12
    /// classes) the confusion matrix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        display(f, |text| self.write_text(text))
    }
}
