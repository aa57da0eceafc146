//! Errors of the head and its learning rules. Persistence has its own
//! ([`crate::persist::DecodeError`], [`crate::persist::EncodeError`]) and so does the
//! sample buffer ([`crate::buffer::Full`]).

use core::fmt;

/// What went wrong in a head, learner or class-statistics call. Nothing is modified when
/// a call returns an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// A size exceeds what the caller's storage (or the format) can hold.
    Capacity {
        /// Which size.
        what: &'static str,
        /// The size asked for.
        requested: usize,
        /// The largest size that fits.
        capacity: usize,
    },
    /// A slice has the wrong length for the head's dimensions.
    Length {
        /// Which slice.
        what: &'static str,
        /// The length the head needs.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// A class index at or beyond the head's current number of classes.
    UnknownClass {
        /// The index given.
        class: usize,
        /// How many classes the head has.
        classes: usize,
    },
    /// An input holds NaN or an infinity.
    NonFinite {
        /// Which input.
        what: &'static str,
    },
    /// A configuration value outside its valid range.
    Config {
        /// Which value, and its valid range.
        what: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Capacity {
                what,
                requested,
                capacity,
            } => {
                write!(
                    f,
                    "{what} of {requested} exceeds the capacity of {capacity}"
                )
            }
            Error::Length {
                what,
                expected,
                found,
            } => {
                write!(f, "{what} has length {found}, expected {expected}")
            }
            Error::UnknownClass { class, classes } => {
                write!(
                    f,
                    "class {class} does not exist (the head has {classes} classes)"
                )
            }
            Error::NonFinite { what } => write!(f, "{what} contains NaN or infinity"),
            Error::Config { what } => write!(f, "invalid configuration: {what}"),
        }
    }
}

impl core::error::Error for Error {}

/// Checks a vector from outside (an embedding, a sample): `expected` values, all finite.
pub fn check_vector(what: &'static str, x: &[f32], expected: usize) -> Result<()> {
    if x.len() != expected {
        return Err(Error::Length {
            what,
            expected,
            found: x.len(),
        });
    }
    if !crate::math::all_finite(x) {
        return Err(Error::NonFinite { what });
    }
    Ok(())
}

/// Result of head, learner and class-statistics calls.
pub type Result<T, E = Error> = core::result::Result<T, E>;
