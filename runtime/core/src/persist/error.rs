//! Why a record could not be encoded or decoded, and how each reason reads.

use core::fmt;

use super::format::optimizer_name;
use crate::head::Dims;

/// Why bytes could not be decoded. The destination is unchanged whenever this is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header says the encoding has.
    Truncated {
        /// Bytes a complete encoding needs (as far as known).
        needed: usize,
        /// Bytes given.
        found: usize,
    },
    /// The data does not start with [`MAGIC`](super::MAGIC): not an edgetune head.
    BadMagic,
    /// A format version this build cannot read.
    UnsupportedVersion {
        /// The version in the data.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The CRC-32 trailer does not match the data: corruption.
    Checksum {
        /// The checksum stored in the data.
        stored: u32,
        /// The checksum of the data as read.
        computed: u32,
    },
    /// A header field is invalid or inconsistent.
    BadHeader {
        /// Which field, and what is wrong with it.
        what: &'static str,
    },
    /// The payload is malformed or disagrees with the header.
    BadPayload {
        /// What is wrong.
        what: &'static str,
    },
    /// A stored parameter or optimizer value is NaN or infinite.
    NonFinite,
    /// The stored head's dimensions differ from the destination's (head or learner).
    DimsMismatch {
        /// Dimensions in the data.
        stored: Dims,
        /// Dimensions of the destination.
        expected: Dims,
    },
    /// The stored learner state belongs to another learner (or optimizer) than the
    /// destination's.
    OptimizerMismatch {
        /// Learner code in the data.
        stored: u8,
        /// The destination learner's code.
        expected: u8,
    },
}

/// Why a head could not be encoded. The output buffer is left alone whenever this is
/// returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is shorter than the encoding ([`encoded_len`](super::encoded_len)).
    BufferTooSmall {
        /// Bytes the encoding needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The learner was made for other dimensions than the head's.
    DimsMismatch {
        /// The head's dimensions.
        head: Dims,
        /// The learner's dimensions.
        learner: Dims,
    },
    /// A parameter or optimizer value is NaN or infinite; such a head would not load.
    NonFinite,
    /// The encoding would exceed the format's 4 GiB payload limit.
    TooLarge,
}

/// Displays dimensions for error messages.
struct Shape(Dims);

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Dims {
            input,
            hidden,
            capacity,
        } = self.0;
        if hidden == 0 {
            write!(f, "linear head (input {input}, capacity {capacity})")
        } else {
            write!(
                f,
                "MLP head (input {input}, hidden {hidden}, capacity {capacity})"
            )
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Truncated { needed, found } => {
                write!(
                    f,
                    "data is truncated: {found} bytes, but a complete head file needs {needed}"
                )
            }
            DecodeError::BadMagic => f.write_str("not an edgetune head file (wrong magic bytes)"),
            DecodeError::UnsupportedVersion { found, supported } => {
                write!(
                    f,
                    "head file format version {found} is not supported (this build reads version {supported})"
                )
            }
            DecodeError::Checksum { stored, computed } => write!(
                f,
                "head file is corrupt: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            DecodeError::BadHeader { what } => write!(f, "invalid head file header: {what}"),
            DecodeError::BadPayload { what } => write!(f, "invalid head file payload: {what}"),
            DecodeError::NonFinite => f.write_str("head file holds NaN or infinite values"),
            DecodeError::DimsMismatch { stored, expected } => {
                write!(
                    f,
                    "head file holds a {} but the destination is a {}",
                    Shape(stored),
                    Shape(expected)
                )
            }
            DecodeError::OptimizerMismatch { stored, expected } => write!(
                f,
                "head file holds {} but the learner expects {}",
                optimizer_name(stored),
                optimizer_name(expected)
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::BufferTooSmall { needed, available } => {
                write!(
                    f,
                    "output buffer too small: the head needs {needed} bytes, the buffer has {available}"
                )
            }
            EncodeError::DimsMismatch { head, learner } => {
                write!(
                    f,
                    "the learner was made for a {}, not for this {}",
                    Shape(learner),
                    Shape(head)
                )
            }
            EncodeError::NonFinite => f.write_str(
                "the head or its optimizer state holds NaN or infinite values; refusing to save it",
            ),
            EncodeError::TooLarge => {
                f.write_str("the head is too large for the format (payload over 4 GiB)")
            }
        }
    }
}

impl core::error::Error for EncodeError {}

/// An integer in more bytes than it needs (postcard reads 16 as `90 00`; the writer never
/// writes it so): refused, so that every record accepted re-encodes to its own bytes.
pub(crate) const OVERLONG: DecodeError = DecodeError::BadPayload {
    what: "an integer stored in more bytes than it needs",
};

/// A learner value that is finite but impossible (a negative count, a zero scale).
pub(crate) const IMPOSSIBLE: DecodeError = DecodeError::BadPayload {
    what: "impossible learner statistics (a count that is not whole, a scale that is not positive)",
};
