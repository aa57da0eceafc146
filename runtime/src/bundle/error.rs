//! Why a bundle could not be read or written.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::persist::DecodeError;

/// Why a bundle could not be read or written.
///
/// The variants that wrap another error ([`BundleError::Head`], [`BundleError::Io`],
/// [`BundleError::InFile`]) say what failed in their message and return the cause from
/// [`source`](std::error::Error::source), as the Rust API guidelines ask: print the whole
/// chain (`anyhow`'s `{:#}`, or walk `source()`) to show a user everything.
#[derive(Debug)]
#[non_exhaustive]
pub enum BundleError {
    /// The data does not start with [`MAGIC`](super::MAGIC).
    NotABundle,
    /// A format version this build cannot read.
    UnsupportedVersion {
        /// The version in the data.
        found: u16,
        /// The newest version this build reads ([`VERSION`](super::VERSION)).
        supported: u16,
    },
    /// Fewer bytes than the bundle needs.
    Truncated {
        /// Bytes a complete bundle needs (as far as known).
        needed: u64,
        /// Bytes given.
        found: u64,
    },
    /// The CRC-32 trailer does not match the data: corruption.
    Checksum {
        /// The checksum stored in the data.
        stored: u32,
        /// The checksum of the data as read.
        computed: u32,
    },
    /// The section table is inconsistent, or there are bytes after the checksum.
    BadLayout {
        /// What is wrong.
        what: String,
    },
    /// The manifest is not valid JSON, lacks a required field, or holds an invalid
    /// value; or the backbone section disagrees with it.
    Manifest {
        /// Which field and what is wrong with it (JSON errors give line and column).
        what: String,
    },
    /// The head section is not a valid [`persist`](crate::persist) encoding.
    Head(DecodeError),
    /// The head does not fit the manifest.
    HeadMismatch {
        /// The manifest field it disagrees with: `"embedding.size"` (the head's input
        /// size) or `"classes"` (the head's class count).
        what: &'static str,
        /// The manifest's value (for `classes`, the number of names).
        manifest: usize,
        /// The head's value.
        head: usize,
    },
    /// Reading or writing a file failed.
    Io {
        /// What was being done, e.g. `"cannot read"`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file at `path` is not a valid bundle (from [`Bundle::read`](super::Bundle::read)).
    InFile {
        /// The file.
        path: PathBuf,
        /// Why it is not valid.
        error: Box<BundleError>,
    },
    /// The bundle at `path` is not signed by a trusted key (from
    /// [`Bundle::read_trusted`](super::Bundle::read_trusted)): unsigned, tampered with,
    /// or signed by an untrusted key, as `error` says.
    #[cfg(feature = "trust")]
    Refused {
        /// The bundle file.
        path: PathBuf,
        /// Why it is not trusted.
        error: crate::trust::TrustError,
    },
}

impl BundleError {
    /// The error without the file it happened in: for [`BundleError::InFile`], the
    /// wrapped error; otherwise `self`.
    pub fn inner(&self) -> &BundleError {
        match self {
            BundleError::InFile { error, .. } => error.inner(),
            other => other,
        }
    }

    pub(crate) fn manifest(what: impl Into<String>) -> Self {
        BundleError::Manifest { what: what.into() }
    }

    pub(super) fn layout(what: impl Into<String>) -> Self {
        BundleError::BadLayout { what: what.into() }
    }
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::NotABundle => f.write_str("not an edgetune bundle (wrong magic bytes)"),
            BundleError::UnsupportedVersion { found, supported } if found > supported => write!(
                f,
                "bundle written by a newer edgetune: format {found}, this build reads up to {supported}"
            ),
            BundleError::UnsupportedVersion { found, supported } => write!(
                f,
                "bundle format {found} is not supported: this build reads formats 1 to {supported}"
            ),
            BundleError::Truncated { needed, found } => write!(
                f,
                "bundle is truncated: {found} bytes, but a complete bundle needs {needed}"
            ),
            BundleError::Checksum { stored, computed } => write!(
                f,
                "bundle is corrupt: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            BundleError::BadLayout { what } => write!(f, "bundle is malformed: {what}"),
            BundleError::Manifest { what } => write!(f, "manifest: {what}"),
            BundleError::Head(_) => f.write_str("the bundle's head section is invalid"),
            BundleError::HeadMismatch {
                what: "embedding.size",
                manifest,
                head,
            } => write!(
                f,
                "head does not match the manifest: the head takes {head} inputs, embedding.size is {manifest}"
            ),
            BundleError::HeadMismatch {
                what: "classes",
                manifest,
                head,
            } => write!(
                f,
                "head does not match the manifest: the head has {head} classes, the manifest names {manifest}"
            ),
            BundleError::HeadMismatch {
                what,
                manifest,
                head,
            } => write!(
                f,
                "head does not match the manifest: {what} is {manifest}, the head has {head}"
            ),
            BundleError::Io { action, path, .. } => write!(f, "{action} {}", path.display()),
            BundleError::InFile { path, .. } => write!(f, "invalid bundle {}", path.display()),
            #[cfg(feature = "trust")]
            BundleError::Refused { path, .. } => {
                write!(f, "refused to load bundle {}", path.display())
            }
        }
    }
}

impl std::error::Error for BundleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BundleError::Head(e) => Some(e),
            BundleError::Io { source, .. } => Some(source),
            BundleError::InFile { error, .. } => Some(&**error),
            #[cfg(feature = "trust")]
            BundleError::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<DecodeError> for BundleError {
    fn from(e: DecodeError) -> Self {
        BundleError::Head(e)
    }
}
