//! A small tmpfs for tests of full and read-only disks ([`Tmpfs::mount`]), and
//! [`fill`] to fill one up. Mounting needs root: CI runs as root; elsewhere `mount`
//! returns `None` and the test says it is skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at a directory for as long as this lives (unmounted on drop, lazily,
/// so a failed test leaves no mount behind).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount`'s syntax: `512k`, `1m`) at `dir`, created if
    /// missing; `None` (with a line on stderr) where mounting is not allowed.
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            _ => {
                eprintln!(
                    "skipped: cannot mount a tmpfs at {} (needs root)",
                    dir.display()
                );
                None
            }
        }
    }

    /// Remounts it `ro` or `rw`.
    pub fn remount(&self, how: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until its file system is full.
pub fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

/// Whether `dir` holds a temporary file of an atomic write (`NAME.tmp-PID-N`).
pub fn has_temporaries(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp-"))
}
