//! Key files: PEM text, the formats OpenSSL uses for Ed25519 keys.
//!
//! - private key (`KEY`): PKCS#8, `-----BEGIN PRIVATE KEY-----` (RFC 8410), written with
//!   mode 0600 and refused when its group or others have any access (like `ssh`);
//! - public key (`KEY.pub`): SubjectPublicKeyInfo, `-----BEGIN PUBLIC KEY-----`.
//!
//! `openssl genpkey -algorithm ed25519 -out KEY` and `openssl pkey -in KEY -pubout -out
//! KEY.pub` make the same files, and `openssl pkey -in KEY -text` shows one (the tests
//! check both ways when `openssl` is installed).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{SigningKey, VerifyingKey};

use super::{PublicKey, SecretKey, TrustError};

/// Largest key file read: an Ed25519 PEM key is under 200 bytes.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Reads at most `max` bytes of UTF-8 text from `path`; a larger file is an error (a
/// key or signature path that names a device or a huge file must not fill memory).
pub(super) fn read_bounded(path: &Path, max: u64) -> Result<String, TrustError> {
    let io = |action| {
        move |source| TrustError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = fs::File::open(path).map_err(io("cannot open"))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io("cannot read"))?;
    if bytes.len() as u64 > max {
        return Err(TrustError::BadKey {
            path: path.to_path_buf(),
            what: format!("larger than {max} bytes: not a key or signature file"),
        });
    }
    String::from_utf8(bytes).map_err(|_| TrustError::BadKey {
        path: path.to_path_buf(),
        what: "not text (PEM or a signature file is text)".into(),
    })
}

/// The private key in the PEM file at `path`, after checking that only its owner can
/// read it.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, TrustError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(path).map_err(|source| TrustError::Io {
            action: "cannot open",
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(TrustError::KeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let text = read_bounded(path, MAX_KEY_FILE)?;
    SigningKey::from_pkcs8_pem(&text)
        .map(SecretKey)
        .map_err(|e| TrustError::BadKey {
            path: path.to_path_buf(),
            what: if text.contains("PUBLIC KEY-----") {
                "this is a public key; signing needs the private key (the file without .pub)".into()
            } else {
                format!("not an Ed25519 private key in PKCS#8 PEM (BEGIN PRIVATE KEY): {e}")
            },
        })
}

/// The public key in the PEM file at `path`.
pub fn read_public_key(path: &Path) -> Result<PublicKey, TrustError> {
    let text = read_bounded(path, MAX_KEY_FILE)?;
    VerifyingKey::from_public_key_pem(&text)
        .map(PublicKey)
        .map_err(|e| TrustError::BadKey {
            path: path.to_path_buf(),
            what: if text.contains("PRIVATE KEY-----") {
                "this is a private key; a device trusts the public key (the .pub file)".into()
            } else {
                format!("not an Ed25519 public key in PEM (BEGIN PUBLIC KEY): {e}")
            },
        })
}

/// Writes `key` to `path` (PKCS#8 PEM, mode 0600) and its public key to `path.pub`
/// (returned). Refuses to overwrite either file.
pub fn write_keypair(path: &Path, key: &SecretKey) -> Result<PathBuf, TrustError> {
    let mut pub_name = path.as_os_str().to_os_string();
    pub_name.push(".pub");
    let pub_path = PathBuf::from(pub_name);
    for p in [path, &pub_path] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(TrustError::KeyExists {
                path: p.to_path_buf(),
            });
        }
    }
    let encode = |what: String| TrustError::BadKey {
        path: path.to_path_buf(),
        what: format!("cannot encode: {what}"),
    };
    // PKCS#8 v1, the secret alone: OpenSSL 3 does not read the v2 form with the public
    // key inside, which `SigningKey::to_pkcs8_pem` writes.
    let private = KeypairBytes {
        secret_key: key.0.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .map_err(|e| encode(e.to_string()))?;
    let public = key
        .public()
        .0
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| encode(e.to_string()))?;
    write_new(path, private.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&pub_path, public.as_bytes(), 0o644) {
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(pub_path)
}

/// Creates `path` (never over an existing file) with permission bits `mode` from the
/// start, so a private key is never readable by others, not even for a moment.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TrustError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let io = |action| {
        move |source: io::Error| match source.kind() {
            io::ErrorKind::AlreadyExists => TrustError::KeyExists {
                path: path.to_path_buf(),
            },
            _ => TrustError::Io {
                action,
                path: path.to_path_buf(),
                source,
            },
        }
    };
    let mut file = options.open(path).map_err(io("cannot create"))?;
    // Ours from here on: a failed write removes it rather than leave half a key.
    let written = file
        .write_all(bytes)
        .map_err(io("cannot write"))
        .and_then(|()| file.sync_all().map_err(io("cannot flush")));
    if written.is_err() {
        let _ = fs::remove_file(path);
    }
    written
}
