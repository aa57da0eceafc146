//! Trust: Ed25519 signatures over bytes (a bundle file, later a fleet state), made and
//! checked with `ed25519-dalek`; nothing here is hand-written cryptography.
//!
//! A [`Signature`] carries the signer's public key next to the 64 signature bytes, so a
//! check can tell apart data that was changed after a trusted key signed it
//! ([`TrustError::Tampered`]) from data a key nobody trusts signed
//! ([`TrustError::Untrusted`]). The key travels for that message only: trust comes from
//! the list the caller passes to [`verify`], never from the signature.
//!
//! Bundles are signed by a detached file next to them ([`signature_path`]:
//! `model.etb` → `model.etb.sig`) that covers every byte of the bundle file as written,
//! checksum included: nothing in the container changes, an unsigned bundle reads as
//! before, and "which bytes are signed" has one answer. [`verify_detached`] is the
//! device's check; [`crate::bundle::Bundle::read_trusted`] reads a bundle through it.
//!
//! Key files are PEM (`keyfile.rs`): PKCS#8 for the private key, SubjectPublicKeyInfo for
//! the public one, the files `openssl genpkey -algorithm ed25519` and
//! `openssl pkey -pubout` write.
//!
//! ```
//! use edgetune::trust::{self, TrustError};
//!
//! let key = trust::SecretKey::generate()?;
//! let other = trust::SecretKey::generate()?;
//! let data = b"a bundle's bytes";
//! let sig = trust::sign(data, &key);
//! let trusted = [key.public()];
//! assert_eq!(trust::verify(data, &sig, &trusted)?, key.public().id());
//!
//! // One flipped bit, or a key nobody trusts: refused, and the error says which.
//! let err = trust::verify(b"a bundle's bytez", &sig, &trusted).unwrap_err();
//! assert!(matches!(err, TrustError::Tampered { .. }));
//! let err = trust::verify(data, &trust::sign(data, &other), &trusted).unwrap_err();
//! assert!(matches!(err, TrustError::Untrusted { .. }));
//!
//! // The signature file's text reads back.
//! assert_eq!(trust::Signature::from_text(&sig.to_text())?, sig);
//! # Ok::<(), TrustError>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

mod error;
mod keyfile;

pub use error::TrustError;
pub use keyfile::{read_public_key, read_secret_key, write_keypair};

/// The first line of a signature file.
pub const SIGNATURE_HEADER: &str = "edgetune-signature: 1";
/// Largest signature file read: a valid one is under 200 bytes.
const MAX_SIGNATURE_FILE: u64 = 4096;

/// A private signing key. Its bytes are wiped when it is dropped.
pub struct SecretKey(SigningKey);

/// A public key: what a device trusts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

/// A short name of a public key for messages and logs: the first 8 bytes of the SHA-256
/// of its 32 bytes, in hex (`finetune-head keygen` prints it).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

/// A signature and the public key of its signer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Signature {
    /// Who signed (a claim until [`verify`] checks it against trusted keys).
    pub key: PublicKey,
    sig: ed25519_dalek::Signature,
}

impl SecretKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Result<SecretKey, TrustError> {
        let mut seed = [0u8; ed25519_dalek::SECRET_KEY_LENGTH];
        getrandom::fill(&mut seed).map_err(|e| TrustError::Random(e.to_string()))?;
        let key = SecretKey(SigningKey::from_bytes(&seed));
        seed.fill(0);
        Ok(key)
    }

    /// The public key that checks this key's signatures.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public().id())
    }
}

impl PublicKey {
    /// The key from its 32 bytes; `None` when they are not a point of the curve.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<PublicKey> {
        VerifyingKey::from_bytes(bytes).ok().map(PublicKey)
    }

    /// The key's 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The key's short name.
    pub fn id(&self) -> KeyId {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(self.0.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&hash[..8]);
        KeyId(id)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl Signature {
    /// Length of [`Signature::to_bytes`]: the public key, then the signature.
    pub const LEN: usize = 32 + 64;

    /// The public key's 32 bytes followed by the signature's 64: for embedding a
    /// signature in another format.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..32].copy_from_slice(&self.key.to_bytes());
        out[32..].copy_from_slice(&self.sig.to_bytes());
        out
    }

    /// Reads [`Signature::to_bytes`]'s layout back.
    pub fn from_bytes(bytes: &[u8]) -> Result<Signature, TrustError> {
        let bad = |what: String| TrustError::BadSignature { what };
        let bytes = <&[u8; Self::LEN]>::try_from(bytes).map_err(|_| {
            bad(format!(
                "{} bytes, a signature has {}",
                bytes.len(),
                Self::LEN
            ))
        })?;
        let (key, sig) = bytes.split_at(32);
        let key = <[u8; 32]>::try_from(key)
            .ok()
            .and_then(|k| PublicKey::from_bytes(&k))
            .ok_or_else(|| bad("its public key is not a valid Ed25519 key".into()))?;
        let sig = ed25519_dalek::Signature::from_slice(sig)
            .map_err(|_| bad("the signature bytes are not an Ed25519 signature".into()))?;
        Ok(Signature { key, sig })
    }

    /// The signature file's text: a header line, then the signer's public key and the
    /// signature in base64, one `name: value` line each.
    ///
    /// ```text
    /// edgetune-signature: 1
    /// key: <base64 of the 32-byte Ed25519 public key>
    /// ed25519: <base64 of the 64-byte signature>
    /// ```
    pub fn to_text(&self) -> String {
        format!(
            "{SIGNATURE_HEADER}\nkey: {}\ned25519: {}\n",
            BASE64.encode(self.key.to_bytes()),
            BASE64.encode(self.sig.to_bytes())
        )
    }

    /// Reads [`Signature::to_text`]'s format; anything else is
    /// [`TrustError::BadSignature`] naming the line.
    pub fn from_text(text: &str) -> Result<Signature, TrustError> {
        let bad = |what: String| TrustError::BadSignature { what };
        let mut lines = text.lines().map(str::trim_end);
        if lines.next() != Some(SIGNATURE_HEADER) {
            return Err(bad(format!(
                "it does not start with the line `{SIGNATURE_HEADER}`"
            )));
        }
        let mut field = |name: &str, len: usize| -> Result<Vec<u8>, TrustError> {
            let line = lines.next().unwrap_or_default();
            let value = line
                .strip_prefix(name)
                .and_then(|l| l.strip_prefix(": "))
                .ok_or_else(|| bad(format!("expected a line `{name}: …`, found `{line}`")))?;
            let bytes = BASE64
                .decode(value)
                .map_err(|e| bad(format!("`{name}` is not base64: {e}")))?;
            if bytes.len() != len {
                return Err(bad(format!(
                    "`{name}` holds {} bytes, expected {len}",
                    bytes.len()
                )));
            }
            Ok(bytes)
        };
        let mut bytes = field("key", 32)?;
        bytes.extend(field("ed25519", 64)?);
        if let Some(extra) = lines.find(|l| !l.is_empty()) {
            return Err(bad(format!(
                "unexpected line `{extra}` after the signature"
            )));
        }
        Signature::from_bytes(&bytes)
    }
}

/// Signs `bytes` with `key`.
pub fn sign(bytes: &[u8], key: &SecretKey) -> Signature {
    Signature {
        key: key.public(),
        sig: key.0.sign(bytes),
    }
}

/// Checks that `sig` signs `bytes` and that its signer is one of `trusted`; returns the
/// signer's id. A signer not in `trusted` is [`TrustError::Untrusted`] whatever the
/// signature; a trusted signer whose signature does not match the bytes is
/// [`TrustError::Tampered`]. Strict verification (no malleable or weak-key signatures).
pub fn verify(bytes: &[u8], sig: &Signature, trusted: &[PublicKey]) -> Result<KeyId, TrustError> {
    let key = sig.key.id();
    if !trusted.contains(&sig.key) {
        return Err(TrustError::Untrusted {
            key,
            trusted: trusted.iter().map(PublicKey::id).collect(),
        });
    }
    sig.key
        .0
        .verify_strict(bytes, &sig.sig)
        .map_err(|_| TrustError::Tampered { key })?;
    Ok(key)
}

/// Where the detached signature of the file at `path` lives: the same name with `.sig`
/// appended (`model.etb.sig`).
pub fn signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".sig");
    PathBuf::from(name)
}

/// Reads the detached signature of the file at `path` ([`signature_path`]); `Ok(None)`
/// when there is none.
pub fn read_signature(path: &Path) -> Result<Option<Signature>, TrustError> {
    let sig_path = signature_path(path);
    let text = match keyfile::read_bounded(&sig_path, MAX_SIGNATURE_FILE) {
        Ok(text) => text,
        Err(TrustError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Signature::from_text(&text)
        .map(Some)
        .map_err(|e| TrustError::InFile {
            path: sig_path,
            error: Box::new(e),
        })
}

/// Checks `bytes`, the contents of the file at `path`, against its detached signature
/// ([`signature_path`]) and the `trusted` keys: [`TrustError::Unsigned`] when there is
/// no signature file, otherwise as [`verify`].
pub fn verify_detached(
    path: &Path,
    bytes: &[u8],
    trusted: &[PublicKey],
) -> Result<KeyId, TrustError> {
    let sig = read_signature(path)?.ok_or_else(|| TrustError::Unsigned {
        signature: signature_path(path),
    })?;
    verify(bytes, &sig, trusted)
}

/// Signs the file at `path` with `key` into its detached signature file, written
/// atomically; returns the signature file's path.
pub fn sign_file(path: &Path, bytes: &[u8], key: &SecretKey) -> Result<PathBuf, TrustError> {
    let sig_path = signature_path(path);
    crate::bundle::write_atomic(&sig_path, sign(bytes, key).to_text().as_bytes()).map_err(|e| {
        TrustError::Write {
            path: sig_path.clone(),
            what: e.to_string(),
        }
    })?;
    Ok(sig_path)
}

#[cfg(test)]
mod tests;
