//! Who may use the HTTP server: everyone who shows the device's token. The token is made
//! at the first start (32 random bytes, hex) and kept in the state directory as
//! `http-token`, readable by its owner only (checked at every start: a token others can
//! read is refused). `edgetune token --state DIR` shows it.
//!
//! A script sends it as `Authorization: Bearer TOKEN`. A browser enters it once on the
//! login form and then holds it in a cookie (HttpOnly, SameSite=Strict); a request that
//! changes state with the cookie must also carry the header `X-Edgetune: 1`, which a
//! page of another origin cannot send without a CORS preflight this server never
//! grants, and an `Origin` header, when present, must be this server's. A token in the
//! query string is never read (it would end up in logs and history).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::cli::StatusArgs;

/// The token file in a state directory.
pub const FILE: &str = "http-token";
/// The cookie that holds the token in a browser.
pub const COOKIE: &str = "edgetune_token";
/// The header a cookie-authenticated request that changes state carries.
pub const CSRF_HEADER: &str = "X-Edgetune";

/// The token of the state directory `dir`, made now if there is none yet. A token file
/// that others than its owner may read or write is refused with how to fix it.
pub fn load_or_create(dir: &Path) -> Result<String> {
    let path = dir.join(FILE);
    match fs::symlink_metadata(&path) {
        Ok(meta) => {
            if !meta.is_file() {
                bail!("{} is not a regular file", path.display());
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "the token file {} can be read or written by others (mode {mode:o}): `chmod 600 {}`, or delete it to make a new token",
                    path.display(),
                    path.display()
                );
            }
            let token = fs::read_to_string(&path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            let token = token.trim().to_string();
            if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "the token file {} does not hold a token (at least 32 hex digits); delete it to make a new one",
                    path.display()
                );
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(e) => Err(e).with_context(|| format!("cannot read the token file {}", path.display())),
    }
}

/// Makes a new token in a new file at `path` (mode 0600 from its creation on).
fn create(path: &PathBuf) -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no random bytes for the access token: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create the token file {}", path.display()))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write the token file {}", path.display()))?;
    log::info!("made a new access token in {}", path.display());
    Ok(token)
}

/// Runs `edgetune token`: prints the token of a state directory (made if missing).
pub fn token(a: StatusArgs) -> Result<()> {
    if !a.state.is_dir() {
        bail!(
            "{} is no state directory (it is made by `edgetune serve`)",
            a.state.display()
        );
    }
    let token = load_or_create(&a.state)?;
    if a.json {
        println!("{}", serde_json::json!({ "token": token }));
    } else {
        println!("{token}");
    }
    Ok(())
}

/// How a request showed its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer`.
    Header,
    /// The login cookie.
    Cookie,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It shows no token: 401.
    Missing,
    /// It shows a wrong one, or a cookie without the CSRF header on a change: 403.
    Wrong,
}

/// Checks the token a request shows (`authorization` and `cookie` are its headers'
/// values).
pub fn check(
    token: &str,
    authorization: Option<&str>,
    cookie: Option<&str>,
) -> Result<Via, Refusal> {
    if let Some(auth) = authorization {
        let shown = auth.strip_prefix("Bearer ").unwrap_or("").trim();
        return if same(shown, token) {
            Ok(Via::Header)
        } else {
            Err(Refusal::Wrong)
        };
    }
    let shown = cookie.and_then(|c| {
        c.split(';')
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.trim())
    });
    match shown {
        Some(v) if same(v, token) => Ok(Via::Cookie),
        Some(_) => Err(Refusal::Wrong),
        None => Err(Refusal::Missing),
    }
}

/// The login cookie's `Set-Cookie` value.
pub fn cookie(token: &str) -> String {
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000")
}

/// Compares in time independent of where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Whether an `Origin` header (when there is one) names the server the `Host` header
/// names.
pub fn same_origin(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    let Some(host) = host else { return false };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    origin_host == host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_from_the_header_then_the_cookie() {
        let t = "ab".repeat(32);
        assert_eq!(
            check(&t, Some(&format!("Bearer {t}")), None),
            Ok(Via::Header)
        );
        assert_eq!(check(&t, Some("Bearer nope"), None), Err(Refusal::Wrong));
        // A wrong header is not rescued by a right cookie.
        let c = format!("a=b; {COOKIE}={t}");
        assert_eq!(check(&t, Some("Basic x"), Some(&c)), Err(Refusal::Wrong));
        assert_eq!(check(&t, None, Some(&c)), Ok(Via::Cookie));
        assert_eq!(check(&t, None, Some("a=b")), Err(Refusal::Missing));
        assert_eq!(check(&t, None, None), Err(Refusal::Missing));
        assert!(same_origin(None, None));
        assert!(same_origin(Some("http://pi:8080"), Some("pi:8080")));
        assert!(!same_origin(Some("http://evil.example"), Some("pi:8080")));
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("edgetune-token-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let t = load_or_create(&dir).unwrap();
        assert_eq!(t.len(), 64);
        let path = dir.join(FILE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create(&dir).unwrap(), t);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&dir).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        let _ = fs::remove_dir_all(&dir);
    }
}
