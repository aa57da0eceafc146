//! Sizes of what ships, for the `compare` report: the device program `edgetune` per
//! target (profile `release-small`, stripped), and the Cortex-M firmware's flash and
//! static RAM from its ELF section headers, plus its stack peak and accuracy when it runs
//! under `qemu-system-arm`. An artifact that is not built is reported with the command
//! that builds it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use object::{Object, ObjectSection};

/// Size target of the device program (issue #6): 8 MiB.
pub const DEVICE_LIMIT: u64 = 8 << 20;
/// Flash target of the firmware: 32 KiB.
pub const FLASH_LIMIT: u64 = 32 << 10;
/// Static RAM target of the firmware: 16 KiB.
pub const RAM_LIMIT: u64 = 16 << 10;

/// Sections that occupy flash (`.data` is copied from flash to RAM at start).
pub const FLASH_SECTIONS: [&str; 4] = [".vector_table", ".text", ".rodata", ".data"];
/// Sections that occupy RAM before the stack.
pub const RAM_SECTIONS: [&str; 3] = [".data", ".bss", ".uninit"];

/// The device program for one target.
#[derive(Debug, Clone)]
pub struct Device {
    /// Rust target triple, or `host`.
    pub target: String,
    /// Where `cargo build` puts it.
    pub path: PathBuf,
    /// Its size, when it is built.
    pub bytes: Option<u64>,
    /// The command that builds it.
    pub build: String,
}

/// The device program for the host, aarch64 and armv7 Linux, built or not.
pub fn devices(workspace: &Path) -> Vec<Device> {
    [
        ("host", None),
        ("aarch64", Some("aarch64-unknown-linux-gnu")),
        ("armv7", Some("armv7-unknown-linux-gnueabihf")),
    ]
    .into_iter()
    .map(|(name, triple)| {
        let (dir, flag) = match triple {
            Some(t) => (
                format!("target/{t}/release-small"),
                format!(" --target {t}"),
            ),
            None => ("target/release-small".to_string(), String::new()),
        };
        let path = workspace.join(dir).join("edgetune");
        Device {
            target: triple.unwrap_or(name).to_string(),
            bytes: std::fs::metadata(&path).ok().map(|m| m.len()),
            path,
            build: format!(
                "cargo build --profile release-small -p edgetune-device --bin edgetune{flag}"
            ),
        }
    })
    .collect()
}

/// Where the Cortex-M firmware's ELF is once built.
pub fn firmware_path(workspace: &Path) -> PathBuf {
    workspace.join("targets/cortex-m/target/thumbv7em-none-eabihf/release/edgetune-firmware")
}

/// The command that builds the firmware.
pub const FIRMWARE_BUILD: &str = "cd targets/cortex-m && cargo build --release";

/// Flash and static RAM of a firmware ELF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// `.vector_table + .text + .rodata + .data`, bytes.
    pub flash: u64,
    /// `.data + .bss + .uninit`, bytes.
    pub ram: u64,
    /// The size of every section counted, by name (absent sections are 0).
    pub sections: Vec<(String, u64)>,
}

/// Reads the section headers of the ELF at `path`.
pub fn firmware(path: &Path) -> Result<Firmware> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf = object::File::parse(&*data)
        .with_context(|| format!("{} is not an ELF file", path.display()))?;
    let size = |name: &str| elf.section_by_name(name).map_or(0, |s| s.size());
    let mut names: Vec<&str> = FLASH_SECTIONS.to_vec();
    names.extend(RAM_SECTIONS.iter().filter(|n| !FLASH_SECTIONS.contains(n)));
    Ok(Firmware {
        flash: FLASH_SECTIONS.iter().map(|n| size(n)).sum(),
        ram: RAM_SECTIONS.iter().map(|n| size(n)).sum(),
        sections: names.iter().map(|n| (n.to_string(), size(n))).collect(),
    })
}

/// What the firmware printed under QEMU.
#[derive(Debug, Clone, PartialEq)]
pub struct QemuRun {
    /// `stack peak: N bytes`.
    pub stack_peak: Option<u64>,
    /// `accuracy before: NN.N% (k/n)`: the percentage, k and n.
    pub accuracy_before: Option<(f64, u64, u64)>,
    /// `accuracy after: NN.N% (k/n)`.
    pub accuracy_after: Option<(f64, u64, u64)>,
    /// QEMU's exit code (`None`: killed by a signal or at the timeout).
    pub exit_code: Option<i32>,
    /// Whether it was stopped at the timeout.
    pub timed_out: bool,
    /// Its last lines of output (stdout, then stderr).
    pub tail: Vec<String>,
}

/// The QEMU command line that runs a Cortex-M4 firmware ELF.
pub fn qemu_args(elf: &Path) -> Vec<String> {
    [
        "-cpu",
        "cortex-m4",
        "-machine",
        "mps2-an386",
        "-nographic",
        "-semihosting-config",
        "enable=on,target=native",
        "-kernel",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([elf.display().to_string()])
    .collect()
}

/// Whether `program` is on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Runs the firmware under `qemu-system-arm`, stopping it after `timeout`.
pub fn run_qemu(elf: &Path, timeout: Duration) -> Result<QemuRun> {
    let mut child = Command::new("qemu-system-arm")
        .args(qemu_args(elf))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-arm")?;
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = r.read_to_end(&mut s);
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().context("qemu's stdout")?));
    let err = reader(Box::new(child.stderr.take().context("qemu's stderr")?));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            timed_out = true;
            // SIGTERM first: QEMU then flushes what the firmware printed; SIGKILL if
            // it does not stop.
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: a signal to our own child, which has not been waited for.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let grace = Instant::now() + Duration::from_secs(3);
            while Instant::now() < grace {
                if child.try_wait()?.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    let lines: Vec<&str> = text.lines().collect();
    Ok(QemuRun {
        stack_peak: lines.iter().find_map(|l| stack_peak(l)),
        accuracy_before: lines.iter().find_map(|l| accuracy(l, "accuracy before:")),
        accuracy_after: lines.iter().find_map(|l| accuracy(l, "accuracy after:")),
        exit_code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        timed_out,
        tail: lines[lines.len().saturating_sub(20)..]
            .iter()
            .map(|l| l.to_string())
            .collect(),
    })
}

/// `N` from a line `… stack peak: N bytes …`.
pub fn stack_peak(line: &str) -> Option<u64> {
    let rest = &line[line.find("stack peak:")? + "stack peak:".len()..];
    let rest = rest.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = rest[digits.len()..].trim_start();
    after.starts_with("bytes").then(|| digits.parse().ok())?
}

/// `(NN.N, k, n)` from a line `… <label> NN.N% (k/n) …`, e.g. with the label
/// `accuracy after:`.
pub fn accuracy(line: &str, label: &str) -> Option<(f64, u64, u64)> {
    let rest = &line[line.find(label)? + label.len()..];
    let (pct, rest) = rest.split_once('%')?;
    let pct: f64 = pct.trim().parse().ok()?;
    let inner = rest.trim_start().strip_prefix('(')?;
    let (counts, _) = inner.split_once(')')?;
    let (k, n) = counts.split_once('/')?;
    Some((pct, k.trim().parse().ok()?, n.trim().parse().ok()?))
}

/// Bytes for a table: KiB below 1 MiB, else MiB.
pub fn human(bytes: u64) -> String {
    if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_lines_parse() {
        assert_eq!(stack_peak("stack peak: 5312 bytes"), Some(5312));
        assert_eq!(
            stack_peak("INFO  stack peak:  880 bytes (of 8192)"),
            Some(880)
        );
        assert_eq!(stack_peak("stack peak: 12 words"), None);
        assert_eq!(stack_peak("no stack here"), None);
        let after = |l| accuracy(l, "accuracy after:");
        assert_eq!(after("accuracy after: 93.8% (30/32)"), Some((93.8, 30, 32)));
        assert_eq!(
            after("  accuracy after:100.0% ( 8/8 ) done"),
            Some((100.0, 8, 8))
        );
        assert_eq!(after("accuracy before: 20.0% (2/10)"), None);
        assert_eq!(after("accuracy after: n/a"), None);
        assert_eq!(
            accuracy("accuracy before: 10.8% (27/250)", "accuracy before:"),
            Some((10.8, 27, 250))
        );
        // The first match wins: `accuracy after reload:` comes later and differs.
        assert_eq!(after("accuracy after reload: 90.0% (9/10)"), None);
    }

    #[test]
    fn an_elf_is_measured_by_its_sections() {
        // This test's own executable is an ELF with .text and .rodata at least.
        let exe = std::env::current_exe().unwrap();
        let f = firmware(&exe).unwrap();
        let get = |n: &str| f.sections.iter().find(|(s, _)| s == n).unwrap().1;
        assert!(get(".text") > 0);
        assert_eq!(
            f.flash,
            get(".vector_table") + get(".text") + get(".rodata") + get(".data")
        );
        assert_eq!(f.ram, get(".data") + get(".bss") + get(".uninit"));
        assert!(
            firmware(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("Cargo.toml")
                    .as_path()
            )
            .is_err()
        );
    }

    #[test]
    fn missing_artifacts_name_their_build_command() {
        let nowhere = Path::new("/nonexistent-workspace");
        let d = devices(nowhere);
        assert_eq!(d.len(), 3);
        assert!(d.iter().all(|d| d.bytes.is_none()));
        assert!(d[1].build.ends_with("--target aarch64-unknown-linux-gnu"));
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 20), "3.00 MiB");
    }
}
