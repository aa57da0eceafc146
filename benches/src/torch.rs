//! PyTorch beside edgetune's head: `torch_head.py` (embedded in the binary) runs in one
//! `python3` process for the whole comparison and answers JSON requests on a pipe, so
//! the Rust side can alternate between its own samples and PyTorch's (see that script's
//! docstring for the protocol).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// The script, as `python3 -c` runs it.
pub const SCRIPT: &str = include_str!("torch_head.py");

/// What a user is told when PyTorch cannot be imported.
pub const NOT_INSTALLED: &str = "PyTorch not installed: skipped (pip install torch)";

/// A running PyTorch side.
pub struct Torch {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// `torch.__version__`.
    pub version: String,
    /// `torch.get_num_threads()` after setting it.
    pub threads: usize,
}

/// Why PyTorch is not compared: `python` missing or `import torch` failing, with the
/// interpreter's own last line of error.
#[derive(Debug, Clone)]
pub struct Skipped(pub String);

impl Torch {
    /// Starts `python` (e.g. `python3`, or a virtual environment's interpreter) with the
    /// script on `threads` intra-op threads. `Ok(Err(Skipped))` when PyTorch is not
    /// there to compare with; `Err` when it is but the script fails.
    pub fn start(python: &str, threads: usize) -> Result<std::result::Result<Torch, Skipped>> {
        let probe = match Command::new(python)
            .args(["-c", "import torch"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                return Ok(Err(Skipped(format!(
                    "{python} cannot be run ({e}): PyTorch skipped"
                ))));
            }
        };
        if !probe.status.success() {
            let stderr = String::from_utf8_lossy(&probe.stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
            let why = last.map_or(String::new(), |l| format!(" ({})", l.trim()));
            return Ok(Err(Skipped(format!("{NOT_INSTALLED}{why}"))));
        }
        let mut child = Command::new(python)
            .args(["-u", "-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {python}"))?;
        let stdin = child.stdin.take().context("python's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("python's stdout")?);
        let mut torch = Torch {
            child,
            stdin: Some(stdin),
            stdout,
            version: String::new(),
            threads: 0,
        };
        let hello = torch.request(&json!({ "op": "hello", "threads": threads }))?;
        torch.version = hello["torch"].as_str().unwrap_or("?").to_string();
        torch.threads = hello["threads"].as_u64().unwrap_or(0) as usize;
        Ok(Ok(torch))
    }

    /// Sends one request and reads its answer; an `{"error": …}` answer is an error.
    pub fn request(&mut self, req: &Value) -> Result<Value> {
        let stdin = self.stdin.as_mut().context("PyTorch's process is closed")?;
        writeln!(stdin, "{req}")
            .and_then(|()| stdin.flush())
            .context("writing to the PyTorch process")?;
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .context("reading from the PyTorch process")?;
        if n == 0 {
            bail!("the PyTorch process exited (its stderr is above)");
        }
        let answer: Value = serde_json::from_str(&line)
            .with_context(|| format!("PyTorch's answer is not JSON: {line:?}"))?;
        if let Some(e) = answer.get("error") {
            return Err(anyhow!(
                "PyTorch ({}): {}",
                req["op"].as_str().unwrap_or("?"),
                e.as_str().unwrap_or("?")
            ));
        }
        Ok(answer)
    }

    /// `n` samples of case `name`, in nanoseconds per call.
    pub fn run(&mut self, name: &str, n: usize) -> Result<Vec<f64>> {
        let a = self.request(&json!({ "op": "run", "name": name, "samples": n }))?;
        a["ns"]
            .as_array()
            .context("no \"ns\" in PyTorch's answer")?
            .iter()
            .map(|v| v.as_f64().context("a time that is not a number"))
            .collect()
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        // End of input ends the script's loop.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A list of numbers from an answer.
pub fn floats(v: &Value) -> Result<Vec<f32>> {
    v.as_array()
        .context("expected a list of numbers")?
        .iter()
        .map(|x| {
            x.as_f64()
                .map(|f| f as f32)
                .context("expected a list of numbers")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interpreter_or_torch_is_a_skip_not_an_error() {
        let Skipped(why) = Torch::start("/nonexistent/python3", 1)
            .unwrap()
            .err()
            .unwrap();
        assert!(why.contains("cannot be run"), "{why}");
        // Here python3 may or may not have PyTorch; either way, no error.
        match Torch::start("python3", 1).unwrap() {
            Ok(mut t) => {
                assert!(!t.version.is_empty());
                let e = t.request(&json!({ "op": "nonsense" })).unwrap_err();
                assert!(format!("{e}").contains("unknown op"), "{e}");
            }
            Err(Skipped(why)) => assert!(
                why.starts_with(NOT_INSTALLED) || why.contains("cannot be run"),
                "{why}"
            ),
        }
    }

    #[test]
    fn the_script_parses() {
        let Ok(mut child) = Command::new("python3")
            .args(["-c", "import ast, sys; ast.parse(sys.stdin.read())"])
            .stdin(Stdio::piped())
            .spawn()
        else {
            eprintln!("python3 is not on PATH: the script is not checked");
            return;
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(SCRIPT.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
}
