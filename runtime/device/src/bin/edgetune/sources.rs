//! Where `edgetune serve` gets its requests: stdin, a Unix socket, a watched directory
//! and GPIO label buttons (and the HTTP server, in `http/`). Each is a thread that only reads and forwards an [`Event`] to
//! the service thread; request lines are read with a bound on their length.

use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use edgetune_device::service::Service;

/// Longest request line: a base64 image or a JSON tensor of a large input fits.
const MAX_LINE: usize = 64 << 20;

/// The next request line of `r`: `Ok` with the line, `Err` with why it cannot be one (too
/// long, not UTF-8: the line is skipped and the stream goes on), `None` at the end of the
/// stream or on a read error.
fn next_request(r: &mut impl BufRead) -> Option<Result<String, String>> {
    let mut buf = Vec::new();
    let n = std::io::Read::take(&mut *r, MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .ok()?;
    if n == 0 {
        return None;
    }
    if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
        // Skip the rest of the line, a bounded piece at a time.
        loop {
            buf.clear();
            let n = std::io::Read::take(&mut *r, 1 << 20)
                .read_until(b'\n', &mut buf)
                .ok()?;
            if n == 0 || buf.last() == Some(&b'\n') {
                break;
            }
        }
        return Some(Err(format!(
            "request line longer than {} MiB: skipped",
            MAX_LINE >> 20
        )));
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    Some(String::from_utf8(buf).map_err(|e| {
        format!(
            "the request is not UTF-8 text (invalid byte at {})",
            e.utf8_error().valid_up_to()
        )
    }))
}

/// What the reader threads hand to the service thread.
pub enum Event {
    /// A request line (or why it is none) and where its answer goes.
    Line(Result<String, String>, Reply),
    /// A label button was pressed.
    Press(String),
    /// A new file in the watched directory.
    File(PathBuf),
    /// Stdin ended.
    StdinClosed,
    /// A request of the HTTP server, and where its answer goes.
    Http(crate::http::Call, mpsc::SyncSender<crate::http::Answer>),
}

/// Where the answer to a request line goes.
pub enum Reply {
    /// Standard output.
    Stdout,
    /// The socket connection the line came from.
    Socket(UnixStream),
}

/// Reads request lines from stdin until it ends.
pub fn read_stdin(tx: mpsc::SyncSender<Event>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        while let Some(line) = next_request(&mut stdin) {
            if tx.send(Event::Line(line, Reply::Stdout)).is_err() {
                return;
            }
        }
        let _ = tx.send(Event::StdinClosed);
    });
}

/// Takes request lines on the Unix socket at `path` (one reader thread per connection);
/// a socket file left by a process that died is replaced.
pub fn listen(path: &Path, tx: mpsc::SyncSender<Event>) -> Result<()> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("the socket {} is in use by another process", path.display());
        }
        // A socket file left by a process that died.
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    log::info!("listening on {}", path.display());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let Ok(writer) = conn.try_clone() else { return };
                let _ = writer.set_write_timeout(Some(Duration::from_secs(5)));
                let mut conn = BufReader::new(conn);
                while let Some(line) = next_request(&mut conn) {
                    let Ok(reply) = writer.try_clone() else { break };
                    if tx.send(Event::Line(line, Reply::Socket(reply))).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(())
}

/// Forwards each new file of `dir` once its size held still for one interval of
/// `every`; files present at start, hidden ones and `.tmp`/`.part` files are skipped.
pub fn watch(dir: &Path, every: Duration, tx: mpsc::SyncSender<Event>) -> Result<()> {
    // Files present at start are not new.
    let mut seen: std::collections::HashSet<PathBuf> = list_files(dir)
        .with_context(|| format!("cannot read the watched directory {}", dir.display()))?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let dir = dir.to_path_buf();
    log::info!("watching {}", dir.display());
    std::thread::spawn(move || {
        // A file is taken once its size held still for one interval (still being
        // written otherwise).
        let mut sizes: std::collections::HashMap<PathBuf, u64> = Default::default();
        loop {
            std::thread::sleep(every);
            let files = match list_files(&dir) {
                Ok(f) => f,
                Err(e) => {
                    log::warn!("cannot read the watched directory {}: {e}", dir.display());
                    continue;
                }
            };
            for (path, len) in files {
                if seen.contains(&path) {
                    continue;
                }
                if sizes.get(&path) == Some(&len) {
                    sizes.remove(&path);
                    seen.insert(path.clone());
                    if tx.send(Event::File(path)).is_err() {
                        return;
                    }
                } else {
                    sizes.insert(path, len);
                }
            }
        }
    });
    Ok(())
}

/// The files of `dir` a watch looks at, sorted, with their sizes.
fn list_files(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part") {
            continue;
        }
        let meta = e.metadata()?;
        if meta.is_file() {
            files.push((e.path(), meta.len()));
        }
    }
    files.sort();
    Ok(files)
}

/// Forwards a press of the button `spec` (`CHIP:LINE=CLASS`) as a label of CLASS.
#[cfg(target_os = "linux")]
pub fn button(
    spec: &str,
    active_high: bool,
    service: &Service,
    tx: mpsc::SyncSender<Event>,
) -> Result<()> {
    use edgetune::button::{Active, Button};
    use linux_embedded_hal::CdevPin;
    use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};

    let bad =
        || anyhow::anyhow!("--button {spec:?}: expected CHIP:LINE=CLASS, e.g. gpiochip0:17=cat");
    let (pin, class) = spec.split_once('=').ok_or_else(bad)?;
    let (chip, line) = pin.split_once(':').ok_or_else(bad)?;
    let line: u32 = line.parse().map_err(|_| bad())?;
    if class.is_empty() {
        return Err(bad());
    }
    if !service.classes().iter().any(|c| c == class) {
        log::info!("button {spec}: class {class:?} is new; its first press adds it");
    }
    let dev = if chip.starts_with('/') {
        chip.to_string()
    } else {
        format!("/dev/{chip}")
    };
    let mut chip =
        Chip::new(&dev).with_context(|| format!("--button {spec}: cannot open {dev}"))?;
    let handle = chip
        .get_line(line)
        .and_then(|l| l.request(LineRequestFlags::INPUT, 0, "edgetune"))
        .with_context(|| format!("--button {spec}: cannot request line {line} of {dev}"))?;
    let pin = CdevPin::new(handle).with_context(|| format!("--button {spec}: line {line}"))?;
    let active = if active_high {
        Active::High
    } else {
        Active::Low
    };
    let mut button = Button::new(pin, active, 3);
    let class = class.to_string();
    std::thread::spawn(move || {
        loop {
            match button.poll() {
                Ok(true) => {
                    if tx.send(Event::Press(class.clone())).is_err() {
                        return;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    log::error!(
                        "button {class:?}: cannot read its pin ({e:?}); it is ignored from now on"
                    );
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn button(spec: &str, _: bool, _: &Service, _: mpsc::SyncSender<Event>) -> Result<()> {
    bail!("--button {spec}: GPIO buttons need Linux GPIO character devices")
}
