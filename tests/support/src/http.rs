//! `edgetune serve --http` in tests: the server started, and plain HTTP/1.1 requests to
//! it (one connection each, so that a test sees exactly what the server answers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Runs `serve` (`cmd`, with `--http 127.0.0.1:0` among its arguments) and waits until
/// it says where it listens: the child, that address and the token it made in `state`.
/// Its error output is read (and, after that line, drained so that it never blocks on a
/// full pipe); `Err` holds it when the program stops before listening.
// The caller waits for the child; it is waited for here when it stops early.
#[allow(clippy::zombie_processes)]
pub fn serve(mut cmd: Command, state: &Path) -> Result<(Child, SocketAddr, String), String> {
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("edgetune runs");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.wait();
            return Err(log);
        }
        log.push_str(&line);
        if let Some(rest) = line.split("API on http://").nth(1) {
            let addr = rest.trim().trim_end_matches('/').parse().unwrap();
            std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
            let token = std::fs::read_to_string(state.join("http-token")).unwrap();
            return Ok((child, addr, token.trim().to_string()));
        }
    }
}

/// One HTTP/1.1 request on a new connection; the status and the body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading all of a large body.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {out:?}"));
    (code, body.to_string())
}
