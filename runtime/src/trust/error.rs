//! Why data was not trusted, or a key or signature could not be read or written.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::KeyId;

/// Why data was not trusted, or a key or signature could not be read or written.
///
/// As with [`crate::bundle::BundleError`], the variants that wrap another error
/// ([`TrustError::Io`], [`TrustError::InFile`]) return it from `source()`: print the
/// whole chain (`anyhow`'s `{:#}`) to show everything.
#[derive(Debug)]
#[non_exhaustive]
pub enum TrustError {
    /// Trusted keys were given but the data has no signature.
    Unsigned {
        /// Where the signature file was looked for.
        signature: PathBuf,
    },
    /// A trusted key's signature does not match the data: the data (or the signature)
    /// was changed after signing.
    Tampered {
        /// The trusted key the signature names.
        key: KeyId,
    },
    /// The data is signed by a key that is not among the trusted ones.
    Untrusted {
        /// The key that signed.
        key: KeyId,
        /// The keys that are trusted.
        trusted: Vec<KeyId>,
    },
    /// A signature that is not in the format (see [`super::Signature::to_text`]).
    BadSignature {
        /// What is wrong.
        what: String,
    },
    /// A key file that does not hold an Ed25519 key of the expected kind.
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A private key file open to its group or others (any of the permission bits
    /// 0o077).
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file that `keygen` would overwrite.
    KeyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    Io {
        /// What was being done, e.g. `"cannot read"`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Writing a signature file failed.
    Write {
        /// The signature file.
        path: PathBuf,
        /// Why.
        what: String,
    },
    /// The operating system gave no random bytes for a new key.
    Random(String),
    /// The file at `path` is not a valid signature.
    InFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: Box<TrustError>,
    },
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustError::Unsigned { signature } => write!(
                f,
                "unsigned: there is no signature file {} and trusted keys are required (--trust)",
                signature.display()
            ),
            TrustError::Tampered { key } => write!(
                f,
                "tampered: the signature by trusted key {key} does not match the data, which \
                 was changed after signing"
            ),
            TrustError::Untrusted { key, trusted } => {
                write!(
                    f,
                    "untrusted: signed by key {key}, which is not trusted (trusted:"
                )?;
                trusted.iter().try_for_each(|k| write!(f, " {k}"))?;
                write!(f, ")")
            }
            TrustError::BadSignature { what } => write!(f, "not a signature: {what}"),
            TrustError::BadKey { path, what } => write!(f, "key {}: {what}", path.display()),
            TrustError::KeyPermissions { path, mode } => write!(
                f,
                "private key {} is open to its group or others (mode {:04o}); refusing to use \
                 it: `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            TrustError::KeyExists { path } => write!(
                f,
                "{} exists; keygen does not overwrite a key (choose another --out or remove it)",
                path.display()
            ),
            TrustError::Io { action, path, .. } => write!(f, "{action} {}", path.display()),
            TrustError::Write { path, what } => {
                write!(f, "cannot write the signature {}: {what}", path.display())
            }
            TrustError::Random(e) => write!(f, "no random bytes for a new key: {e}"),
            TrustError::InFile { path, .. } => {
                write!(f, "invalid signature file {}", path.display())
            }
        }
    }
}

impl std::error::Error for TrustError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrustError::Io { source, .. } => Some(source),
            TrustError::InFile { error, .. } => Some(&**error),
            _ => None,
        }
    }
}
