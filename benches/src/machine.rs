//! What a measurement ran on, for the `compare` report: the CPU, cores, kernel, date,
//! the repository's commit and the engines' versions.

use std::fmt;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The machine and the code measured; also the `machine` of both benchmarks' JSON (without
/// the versions, which `compare` reports under `versions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from `/proc/cpuinfo` (or `unknown`).
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub cores: usize,
    /// `uname -sr`-like: the OS and kernel release.
    pub os: String,
    /// Today, UTC, `YYYY-MM-DD`.
    pub date: String,
    /// `git describe --always --dirty` of the workspace (or `unknown`).
    pub commit: String,
    /// Versions from the workspace's Cargo.lock: tract-core, ort.
    #[serde(skip)]
    pub tract: String,
    /// The ort crate's version.
    #[serde(skip)]
    pub ort_crate: String,
}

impl fmt::Display for Machine {
    /// `CPU, 4 logical cores, linux 6.1; 2026-11-24, commit 140185b3ff7e`: the reports' line
    /// on what ran.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {} logical cores, {}; {}, commit {}",
            self.cpu, self.cores, self.os, self.date, self.commit
        )
    }
}

impl Machine {
    /// Reads it all; what cannot be read is `unknown`.
    pub fn detect(workspace: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                matches!(k.trim(), "model name" | "Model" | "Hardware").then(|| v.trim())
            })
            .filter(|v| !v.is_empty())
            .unwrap_or("unknown")
            .to_string();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let os = format!("{} {}", std::env::consts::OS, release.trim())
            .trim()
            .to_string();
        let commit = Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(["describe", "--always", "--dirty", "--abbrev=12"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let lock = std::fs::read_to_string(workspace.join("Cargo.lock")).unwrap_or_default();
        Machine {
            cpu,
            cores,
            os,
            date: today(),
            commit,
            tract: locked_version(&lock, "tract-core").unwrap_or_else(|| "unknown".into()),
            ort_crate: locked_version(&lock, "ort").unwrap_or_else(|| "unknown".into()),
        }
    }
}

/// The version Cargo.lock records for package `name` (the first, if several).
pub fn locked_version(lock: &str, name: &str) -> Option<String> {
    let needle = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == needle {
            let v = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(v.trim_end_matches('"').to_string());
        }
    }
    None
}

pub use finetune_head::utc::today;

/// The version of the ONNX Runtime library at `library` (`1.32.0`), from its
/// `OrtGetApiBase()->GetVersionString()`: the build string `ort::info()` gives does not
/// always name it. `None` when the library cannot be opened or has no such function.
pub fn onnxruntime_version(library: &Path) -> Option<String> {
    use std::ffi::{CStr, CString, c_char, c_void};
    use std::os::unix::ffi::OsStrExt;
    /// ONNX Runtime's `OrtApiBase`, part of its stable C ABI.
    #[repr(C)]
    struct ApiBase {
        get_api: unsafe extern "C" fn(u32) -> *const c_void,
        get_version_string: unsafe extern "C" fn() -> *const c_char,
    }
    let path = CString::new(library.as_os_str().as_bytes()).ok()?;
    // SAFETY: dlopen/dlsym/dlclose with valid C strings; the symbol, when present, is
    // ONNX Runtime's `const OrtApiBase* OrtGetApiBase(void)`, whose version string is a
    // static NUL-terminated string. The library stays loaded while it is read (ort holds
    // its own handle; dlclose only drops ours).
    unsafe {
        let handle = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if handle.is_null() {
            return None;
        }
        let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        let version = if symbol.is_null() {
            None
        } else {
            let get_base = std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn() -> *const ApiBase,
            >(symbol);
            let base = get_base();
            if base.is_null() {
                None
            } else {
                let s = ((*base).get_version_string)();
                (!s.is_null()).then(|| CStr::from_ptr(s).to_string_lossy().into_owned())
            }
        };
        libc::dlclose(handle);
        version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let lock = "[[package]]\nname = \"ort\"\nversion = \"2.0.0-rc.15\"\n";
        assert_eq!(locked_version(lock, "ort").as_deref(), Some("2.0.0-rc.15"));
        assert_eq!(locked_version(lock, "tract-core"), None);
        assert_eq!(
            onnxruntime_version(Path::new("/nonexistent/libonnxruntime.so")),
            None
        );
    }
}
