//! Directories for test files under [`std::env::temp_dir`], named after the test and the
//! process (`edgetune-{name}-{pid}`), so that parallel runs of the suite do not meet.

use std::path::{Path, PathBuf};

/// `edgetune-{name}-{pid}` under the system's temporary directory, created if missing.
/// Tests of one file may share it when each writes its own file names.
pub fn dir(name: &str) -> PathBuf {
    let d = path(name);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
    d
}

/// A fresh, empty [`dir`] for one test: whatever an earlier run left there is removed.
/// Give each test its own `name`.
pub fn scratch(name: &str) -> PathBuf {
    let _ = std::fs::remove_dir_all(path(name));
    dir(name)
}

/// Writes `bytes` to `file` in [`dir`]`(dir_name)` (creating its parent directories) and
/// returns the path.
pub fn file(dir_name: &str, file: impl AsRef<Path>, bytes: &[u8]) -> PathBuf {
    let p = dir(dir_name).join(file);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    p
}

fn path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("edgetune-{name}-{}", std::process::id()))
}
