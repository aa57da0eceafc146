//! The record's bytes, named once: the header's fields as byte ranges ([`field`]), the
//! learner-code table, the CRC, and the sizes of postcard's varints. [`super`]'s module
//! docs show the layout; [`crate::flash`] reads records with these same names.

use core::ops::Range;

use crc::{CRC_32_ISO_HDLC, Crc};

use super::{DecodeError, Header};
use crate::error::Error;
use crate::head::Dims;
use crate::learn::Optimizer;
use crate::slda::{Diagonal, Full, Slda};

/// The first four bytes of every encoding.
pub const MAGIC: [u8; 4] = *b"ETHD";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = field::PAYLOAD_LEN.end;
/// Learner code of a streaming LDA with a full covariance.
pub const SLDA_FULL: u8 = 4;
/// Learner code of a streaming LDA with a diagonal covariance.
pub const SLDA_DIAGONAL: u8 = 5;
/// Length of the CRC trailer in bytes.
pub(crate) const CRC_LEN: usize = 4;
/// The trailer's checksum.
pub(crate) const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Byte ranges of the header's fields; integers are little-endian.
pub(crate) mod field {
    use core::ops::Range;

    /// [`MAGIC`](super::MAGIC).
    pub const MAGIC: Range<usize> = 0..4;
    /// Format version, u16.
    pub const VERSION: Range<usize> = 4..6;
    /// Head kind: 0 linear, 1 MLP.
    pub const KIND: usize = 6;
    /// Learner code; 0 when no learner state is stored.
    pub const LEARNER: usize = 7;
    /// Input width, u32.
    pub const INPUT: Range<usize> = 8..12;
    /// Hidden units (0 for a linear head), u32.
    pub const HIDDEN: Range<usize> = 12..16;
    /// Class capacity, u32.
    pub const CAPACITY: Range<usize> = 16..20;
    /// Active classes, u32.
    pub const CLASSES: Range<usize> = 20..24;
    /// Payload length in bytes, u32.
    pub const PAYLOAD_LEN: Range<usize> = 24..28;
}

/// Values of learner state that learner `code` keeps beside a head of `dims`; `None`
/// for an unknown code, or one that cannot learn such a head.
pub const fn learner_values(code: u8, dims: Dims) -> Option<usize> {
    let params = dims.param_len();
    match code {
        0..=3 => match Optimizer::state_per_param_of(code) {
            Some(n) => params.checked_mul(n),
            None => None,
        },
        SLDA_FULL if dims.hidden == 0 => {
            Some(Slda::<(), Full>::state_len(dims.input, dims.capacity))
        }
        SLDA_DIAGONAL if dims.hidden == 0 => {
            Some(Slda::<(), Diagonal>::state_len(dims.input, dims.capacity))
        }
        _ => None,
    }
}

/// Whether a record of learner `code` may hold this step count and generator state: a
/// streaming LDA has neither, so its records hold 0 and 0 (the module docs).
pub(crate) const fn counters_ok(code: u8, step: u32, rng: u64) -> bool {
    !matches!(code, SLDA_FULL | SLDA_DIAGONAL) || (step == 0 && rng == 0)
}

/// The error for a record whose counters [`counters_ok`] refuses.
pub(crate) const COUNTERS: DecodeError = DecodeError::BadPayload {
    what: "a streaming LDA record with a step count or generator state",
};

/// Whether `v` can be value `index` of learner `code`'s state for a head of `dims`
/// (finite, and for a streaming LDA [`Slda::state_value_ok`]).
pub fn learner_value_ok(code: u8, dims: Dims, index: usize, v: f32) -> bool {
    match code {
        SLDA_FULL => Slda::<(), Full>::state_value_ok(dims.input, dims.capacity, index, v),
        SLDA_DIAGONAL => Slda::<(), Diagonal>::state_value_ok(dims.input, dims.capacity, index, v),
        _ => v.is_finite(),
    }
}

/// What learner `code`'s state is, for error messages.
pub(super) fn optimizer_name(code: u8) -> &'static str {
    match code {
        0 => "no optimizer state (plain SGD)",
        1 => "SGD-with-momentum state",
        2 => "Adam state",
        3 => "AdamW state",
        SLDA_FULL => "streaming LDA statistics (full covariance)",
        SLDA_DIAGONAL => "streaming LDA statistics (diagonal covariance)",
        _ => "unknown learner state",
    }
}

/// Bytes of a postcard (LEB128) varint.
pub(crate) const fn varint_len(v: u64) -> usize {
    let bits = (64 - v.leading_zeros()) as usize;
    if bits == 0 { 1 } else { bits.div_ceil(7) }
}

/// `v` as a postcard (LEB128) varint.
pub(super) fn leb128(mut v: u64, buf: &mut [u8; 10]) -> &[u8] {
    let mut n = 0;
    loop {
        let low = (v & 0x7F) as u8;
        v >>= 7;
        buf[n] = low | if v == 0 { 0 } else { 0x80 };
        n += 1;
        if v == 0 {
            return &buf[..n];
        }
    }
}

/// Exact payload length, `None` on overflow.
pub(super) fn payload_len(step: u32, rng: u64, n_params: usize, n_opt: usize) -> Option<usize> {
    let floats = |n: usize| n.checked_mul(4)?.checked_add(varint_len(n as u64));
    (varint_len(step as u64) + varint_len(rng))
        .checked_add(floats(n_params)?)?
        .checked_add(floats(n_opt)?)
}

/// The header's fields as stored.
pub(super) struct RawHeader {
    pub kind: u8,
    pub optimizer: u8,
    pub dims: [u32; 3],
    pub classes: u32,
    pub payload_len: u32,
}

impl RawHeader {
    /// Reads the header bytes and checks the magic and version (what every version
    /// shares).
    pub fn parse(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header: &[u8; HEADER_LEN] = bytes
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(DecodeError::Truncated {
                needed: HEADER_LEN,
                found: bytes.len(),
            })?;
        if header[field::MAGIC] != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = u16::from_le_bytes([
            header[field::VERSION.start],
            header[field::VERSION.start + 1],
        ]);
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let le = |r: Range<usize>| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&header[r]);
            u32::from_le_bytes(b)
        };
        Ok(RawHeader {
            kind: header[field::KIND],
            optimizer: header[field::LEARNER],
            dims: [le(field::INPUT), le(field::HIDDEN), le(field::CAPACITY)],
            classes: le(field::CLASSES),
            payload_len: le(field::PAYLOAD_LEN),
        })
    }

    /// The header's bytes, with this build's magic and version.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[field::MAGIC].copy_from_slice(&MAGIC);
        out[field::VERSION].copy_from_slice(&VERSION.to_le_bytes());
        out[field::KIND] = self.kind;
        out[field::LEARNER] = self.optimizer;
        let [input, hidden, capacity] = self.dims;
        for (range, v) in [
            (field::INPUT, input),
            (field::HIDDEN, hidden),
            (field::CAPACITY, capacity),
            (field::CLASSES, self.classes),
            (field::PAYLOAD_LEN, self.payload_len),
        ] {
            out[range].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Checks every field, and the payload length against the dimensions.
    pub fn validate(&self) -> Result<Header, DecodeError> {
        let bad = |what| DecodeError::BadHeader { what };
        let size = |v: u32| usize::try_from(v).map_err(|_| bad("a size does not fit this target"));
        let [input, hidden, capacity] = self.dims;
        let dims = Dims {
            input: size(input)?,
            hidden: size(hidden)?,
            capacity: size(capacity)?,
        };
        match (self.kind, dims.hidden) {
            (0, 0) | (1, 1..) => {}
            (0, _) => return Err(bad("a linear head with hidden units")),
            (1, _) => return Err(bad("an MLP head without hidden units")),
            _ => return Err(bad("unknown head kind")),
        }

        dims.check().map_err(|e| {
            bad(if let Error::Config { what } = e {
                what
            } else {
                "invalid dimensions"
            })
        })?;
        let classes = size(self.classes)?;
        if classes > dims.capacity {
            return Err(bad("more classes than the class capacity"));
        }
        let n_params = dims.param_len();
        let n_opt = learner_values(self.optimizer, dims).ok_or(bad(
            "unknown learner code, or a learner that cannot learn this head",
        ))?;
        let min = payload_len(0, 0, n_params, n_opt);
        let max = payload_len(u32::MAX, u64::MAX, n_params, n_opt);
        let max = max.filter(|m| m.checked_add(HEADER_LEN + CRC_LEN).is_some());
        let payload_len = size(self.payload_len)?;
        match (min, max) {
            (Some(min), Some(max)) if (min..=max).contains(&payload_len) => {}
            _ => return Err(bad("payload length does not match the dimensions")),
        }
        Ok(Header {
            version: VERSION,
            dims,
            classes,
            optimizer: self.optimizer,
            payload_len,
        })
    }
}
