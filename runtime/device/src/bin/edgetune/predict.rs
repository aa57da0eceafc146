//! `edgetune predict`: one prediction of each input file, by the bundle's head or the
//! head learned in a state directory, printed as text or JSON; nothing is kept.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cli::PredictArgs;
use crate::states::warn_skipped;
use edgetune_device::engine::EngineConfig;
use edgetune_device::service::{Model, Service, load_for};
use edgetune_device::state::StateDir;

/// Runs `edgetune predict`.
pub fn predict(a: PredictArgs) -> Result<()> {
    let bundle = a.bundle.clone();
    // A one-shot run keeps nothing: a private, temporary state directory, seeded with
    // the learned state when one was asked for.
    let tmp = std::env::temp_dir().join(format!("edgetune-predict-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(tmp.clone());
    if let Some(dir) = &a.state {
        copy_learned_state(&a, dir, &tmp)?;
    }
    let (mut service, _) = Service::open(&bundle, &tmp, a.backbone.options()?)?;
    let mut failed = 0;
    let files = a.inputs.iter().map(|path| {
        let answer = predict_file(&mut service, path);
        (path.display().to_string(), answer)
    });
    let answers: Vec<(String, Value)> = files.collect();
    let texts = a.text.iter().map(|t| {
        let mut answer = service.handle_line(&json!({ "text": t }).to_string());
        if let Some(o) = answer.as_object_mut() {
            o.insert("text".into(), json!(t));
        }
        (format!("{t:?}"), answer)
    });
    let answers: Vec<(String, Value)> = answers.into_iter().chain(texts).collect();
    for (name, answer) in &answers {
        if answer.get("error").is_some() {
            failed += 1;
        }
        if a.json {
            println!("{answer}");
        } else {
            println!("{}", text(name, answer));
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} inputs could not be predicted",
            answers.len()
        );
    }
    Ok(())
}

/// Writes the newest state of `dir` that belongs to the bundle into the private state
/// directory `tmp`.
fn copy_learned_state(a: &PredictArgs, dir: &Path, tmp: &Path) -> Result<()> {
    let model = Model::open(&a.bundle, &a.backbone.options()?)?;
    let src = StateDir::open(dir, false, 5)?;
    let loaded = load_for(&src, &model, EngineConfig::DEFAULT)?.with_context(|| {
        format!(
            "no state in {}: leave out --state to use the bundle's head",
            dir.display()
        )
    })?;
    warn_skipped(&loaded);
    std::fs::create_dir_all(tmp)?;
    StateDir::open(tmp, false, 2)?.write(&loaded.state)?;
    Ok(())
}

/// The answer to a prediction of the file at `path`, naming it.
pub fn predict_file(service: &mut Service, path: &Path) -> Value {
    let mut answer = service.handle_line(&json!({ "input": path }).to_string());
    if let Some(o) = answer.as_object_mut() {
        o.insert("input".into(), json!(path));
    }
    answer
}

/// One line of text for the answer about `name` (a path, or a quoted text): the error,
/// or the three most probable classes, whether it is uncertain or was truncated, and the
/// time taken.
fn text(name: &str, answer: &Value) -> String {
    if let Some(e) = answer.get("error") {
        return format!("{name}: error: {}", e.as_str().unwrap_or_default());
    }
    let top: Vec<String> = answer["top"]
        .as_array()
        .into_iter()
        .flatten()
        .take(3)
        .map(|t| {
            format!(
                "{} {:.3}",
                t["class"].as_str().unwrap_or("?"),
                t["p"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    let mut flag = if answer["uncertain"] == true {
        "  (uncertain)".to_string()
    } else {
        String::new()
    };
    if let Some(note) = answer["truncated"].as_str() {
        flag.push_str(&format!("  ({note})"));
    }
    format!(
        "{name}: {}{flag}  [{:.2} ms]",
        if top.is_empty() {
            "no classes yet".to_string()
        } else {
            top.join(", ")
        },
        answer["ms"]["total"].as_f64().unwrap_or(0.0)
    )
}

/// Removes the directory when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
