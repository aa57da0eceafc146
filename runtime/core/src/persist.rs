//! Persistence of a head and its learner's state: a versioned, checksummed,
//! little-endian format that is written into and read from caller-provided bytes with
//! no heap, and that never half-loads.
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic [`MAGIC`] (`b"ETHD"`) |
//! | 2 | format version, u16 ([`VERSION`]) |
//! | 1 | head kind: 0 linear, 1 MLP |
//! | 1 | learner code (below); 0 too when no learner state is stored |
//! | 4 × 4 | input, hidden, capacity, classes, u32 each |
//! | 4 | payload length, u32 |
//! | payload length | postcard: step (u32), generator state (u64), parameters (sequence of f32, [`Dims::param_len`] values), learner state (sequence of f32, empty for code 0) |
//! | 4 | CRC-32 (ISO-HDLC) of everything before it, u32 |
//!
//! The learner state ([`LearnerState`]), by its code:
//!
//! | code | learner | values |
//! | --- | --- | --- |
//! | 0 | none, or plain SGD ([`Learner`]) | none |
//! | 1 | SGD with momentum ([`Learner`]) | [`Dims::param_len`] |
//! | 2, 3 | Adam, AdamW ([`Learner`]): first moments, then second | 2 × [`Dims::param_len`] |
//! | [`SLDA_FULL`] (4) | streaming LDA, full covariance ([`Slda`]`<_, `[`Full`]`>`), linear heads only; step and generator 0 | [`Slda::state_len`] of input and capacity |
//! | [`SLDA_DIAGONAL`] (5) | streaming LDA, diagonal covariance ([`Slda`]`<_, `[`Diagonal`]`>`), linear heads only; step and generator 0 | [`Slda::state_len`] of input and capacity |
//!
//! [`decode_into`] checks the length, the checksum, every header field and (in a dry run)
//! the whole payload before it writes anything: damaged, truncated, foreign or newer data
//! gives a [`DecodeError`] and leaves the destination exactly as it was.
//!
//! ```
//! use edgetune_core::{persist, Config, Dims, Head, Learner, Optimizer};
//! const DIMS: Dims = Dims::mlp(4, 3, 2);
//! const STATE: usize = Learner::<()>::state_len(DIMS, &Optimizer::ADAM);
//! let mut head = Head::new(DIMS, 2, [0.0f32; DIMS.param_len()])?;
//! let mut learner = Learner::new(DIMS, Config::DEFAULT, [0.0f32; STATE])?;
//! learner.step(&mut head, &[1.0, 0.0, 0.5, 0.0], 1)?;
//!
//! let mut buf = [0u8; 512];
//! let n = persist::encode(&head, Some(&learner), &mut buf)?;
//! assert_eq!(n, persist::encoded_len(&head, Some(&learner)));
//!
//! // After a reboot: fresh storage of the same shape.
//! let mut head2 = Head::new(DIMS, 0, [0.0f32; DIMS.param_len()])?;
//! let mut learner2 = Learner::new(DIMS, Config::DEFAULT, [0.0f32; STATE])?;
//! let header = persist::decode_into(&buf[..n], &mut head2, Some(&mut learner2))?;
//! assert_eq!((header.classes, head2.classes(), learner2.steps()), (2, 2, 1));
//! assert_eq!(head2.params(), head.params());
//!
//! // Damaged bytes are refused and the destination is left alone.
//! buf[40] ^= 0x10;
//! let err = persist::decode_into(&buf[..n], &mut head2, Some(&mut learner2)).unwrap_err();
//! assert!(matches!(err, persist::DecodeError::Checksum { .. }));
//! assert_eq!(head2.params(), head.params());
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
//!
//! To save or load a head without a learner, pass `None::<&Learner<[f32; 0]>>` (or
//! `None::<&mut Learner<[f32; 0]>>`).

use core::cell::Cell;
use core::fmt;

use crc::{CRC_32_ISO_HDLC, Crc};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

use crate::error::Error;
use crate::head::{Dims, Head, Storage};
use crate::learn::{Learner, Optimizer};
use crate::slda::{Covariance, Diagonal, Full, Slda};

/// The first four bytes of every encoding.
pub const MAGIC: [u8; 4] = *b"ETHD";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Length of the fixed header in bytes.
pub const HEADER_LEN: usize = 28;
/// Learner code of a streaming LDA with a full covariance.
pub const SLDA_FULL: u8 = 4;
/// Learner code of a streaming LDA with a diagonal covariance.
pub const SLDA_DIAGONAL: u8 = 5;
/// Length of the CRC trailer in bytes.
const CRC_LEN: usize = 4;

/// A learner whose state a record carries after the head's parameters: a gradient
/// [`Learner`]'s optimizer state or a streaming LDA's statistics ([`Slda`]). The
/// module docs list the codes.
pub trait LearnerState {
    /// Its code in the header.
    fn code(&self) -> u8;
    /// The head dimensions it learns.
    fn dims(&self) -> Dims;
    /// Steps taken (0 for a learner that counts none).
    fn step(&self) -> u32;
    /// Its random generator's state (0 for a learner without one).
    fn rng(&self) -> u64;
    /// The values to save.
    fn values(&self) -> &[f32];
    /// Takes back a saved state of its own code: values already checked (their number,
    /// finite, [`learner_value_ok`]).
    fn restore(&mut self, step: u32, rng: u64, values: &mut dyn Iterator<Item = f32>);
    /// Forgets what it learned (a record without its state was loaded).
    fn reset(&mut self);
}

impl<L: Storage> LearnerState for Learner<L> {
    fn code(&self) -> u8 {
        self.config().optimizer.code()
    }
    fn dims(&self) -> Dims {
        Learner::dims(self)
    }
    fn step(&self) -> u32 {
        self.steps()
    }
    fn rng(&self) -> u64 {
        self.rng_state()
    }
    fn values(&self) -> &[f32] {
        self.opt_state()
    }
    fn restore(&mut self, step: u32, rng: u64, values: &mut dyn Iterator<Item = f32>) {
        Learner::restore(self, step, rng, values);
    }
    fn reset(&mut self) {
        Learner::reset(self);
    }
}

impl<S: Storage, K: Covariance> LearnerState for Slda<S, K> {
    fn code(&self) -> u8 {
        K::CODE
    }
    fn dims(&self) -> Dims {
        Dims::linear(self.dim(), self.capacity())
    }
    fn step(&self) -> u32 {
        0
    }
    fn rng(&self) -> u64 {
        0
    }
    fn values(&self) -> &[f32] {
        self.state()
    }
    fn restore(&mut self, _: u32, _: u64, values: &mut dyn Iterator<Item = f32>) {
        self.restore_checked(values);
    }
    fn reset(&mut self) {
        self.forget();
    }
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

/// Whether `v` can be value `index` of learner `code`'s state for a head of `dims`
/// (finite, and for a streaming LDA [`Slda::state_value_ok`]).
pub fn learner_value_ok(code: u8, dims: Dims, index: usize, v: f32) -> bool {
    match code {
        SLDA_FULL => Slda::<(), Full>::state_value_ok(dims.input, dims.capacity, index, v),
        SLDA_DIAGONAL => Slda::<(), Diagonal>::state_value_ok(dims.input, dims.capacity, index, v),
        _ => v.is_finite(),
    }
}
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// The validated header of an encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Format version.
    pub version: u16,
    /// The head's dimensions (its kind follows from `dims.hidden`).
    pub dims: Dims,
    /// Active classes.
    pub classes: usize,
    /// Optimizer code of the stored learner state
    /// ([`Optimizer::code`](crate::learn::Optimizer::code)); 0 when there
    /// is none.
    pub optimizer: u8,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Header {
    /// Length of the whole encoding: header, payload and checksum.
    pub const fn total_len(&self) -> usize {
        HEADER_LEN
            .saturating_add(self.payload_len)
            .saturating_add(CRC_LEN)
    }
}

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
    /// The data does not start with [`MAGIC`]: not an edgetune head.
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
    /// The output buffer is shorter than the encoding ([`encoded_len`]).
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

fn optimizer_name(code: u8) -> &'static str {
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

/// Bytes of a postcard (LEB128) varint.
pub(crate) const fn varint_len(v: u64) -> usize {
    let bits = (64 - v.leading_zeros()) as usize;
    if bits == 0 { 1 } else { bits.div_ceil(7) }
}

/// Exact payload length, `None` on overflow.
fn payload_len(step: u32, rng: u64, n_params: usize, n_opt: usize) -> Option<usize> {
    let floats = |n: usize| n.checked_mul(4)?.checked_add(varint_len(n as u64));
    (varint_len(step as u64) + varint_len(rng))
        .checked_add(floats(n_params)?)?
        .checked_add(floats(n_opt)?)
}

/// The payload, borrowed from a head and a learner.
struct Payload<'a> {
    step: u32,
    rng: u64,
    params: &'a [f32],
    opt: &'a [f32],
}

/// The payload to write and the learner code.
fn source<'a, H: Storage, L: LearnerState>(
    head: &'a Head<H>,
    learner: Option<&'a L>,
) -> (Payload<'a>, u8) {
    match learner {
        Some(l) => {
            let p = Payload {
                step: l.step(),
                rng: l.rng(),
                params: head.params(),
                opt: l.values(),
            };
            (p, l.code())
        }
        None => (
            Payload {
                step: 0,
                rng: 0,
                params: head.params(),
                opt: &[],
            },
            0,
        ),
    }
}

/// Payload length and total length, if they fit the format.
fn lengths(p: &Payload<'_>) -> Option<(usize, usize)> {
    let n = payload_len(p.step, p.rng, p.params.len(), p.opt.len())
        .filter(|&n| u32::try_from(n).is_ok())?;
    Some((n, n.checked_add(HEADER_LEN + CRC_LEN)?))
}

/// Streams the header and payload of the record of `head` and `learner` to `put`, piece
/// by piece, in the layout of the module docs (the payload as postcard lays it out:
/// LEB128 varints, little-endian floats). The one writer of the format: [`encode`]
/// puts the pieces in a slice, [`crate::flash`] in flash words; each adds the CRC-32 of
/// all of them. The caller has checked what [`encode`] checks (dimensions, finite
/// values, sizes that fit).
pub(crate) fn stream_framed<H: Storage, L: LearnerState, E>(
    head: &Head<H>,
    learner: Option<&L>,
    put: &mut dyn FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let (p, code) = source(head, learner);
    let dims = head.dims();
    let payload_len = lengths(&p).map_or(0, |(n, _)| n);
    put(&MAGIC)?;
    put(&VERSION.to_le_bytes())?;
    put(&[u8::from(dims.hidden > 0), code])?;
    for v in [
        dims.input,
        dims.hidden,
        dims.capacity,
        head.classes(),
        payload_len,
    ] {
        put(&(v as u32).to_le_bytes())?;
    }
    let mut buf = [0u8; 10];
    put(leb128(u64::from(p.step), &mut buf))?;
    put(leb128(p.rng, &mut buf))?;
    for values in [p.params, p.opt] {
        put(leb128(values.len() as u64, &mut buf))?;
        for v in values {
            put(&v.to_le_bytes())?;
        }
    }
    Ok(())
}

/// `v` as a postcard (LEB128) varint.
fn leb128(mut v: u64, buf: &mut [u8; 10]) -> &[u8] {
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

/// Exact length of [`encode`]'s output for this head and learner (`usize::MAX` when the
/// head is too large for the format).
pub fn encoded_len<H: Storage, L: LearnerState>(head: &Head<H>, learner: Option<&L>) -> usize {
    lengths(&source(head, learner).0).map_or(usize::MAX, |(_, total)| total)
}

/// Encodes `head` and, if given, `learner`'s state (a gradient learner's step count,
/// generator and optimizer state; a streaming LDA's statistics) into `out`; returns
/// the bytes written ([`encoded_len`]). A gradient learner's pending (accumulated, not
/// applied) gradient is not saved.
pub fn encode<H: Storage, L: LearnerState>(
    head: &Head<H>,
    learner: Option<&L>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let dims = head.dims();
    if let Some(l) = learner.filter(|l| l.dims() != dims) {
        return Err(EncodeError::DimsMismatch {
            head: dims,
            learner: l.dims(),
        });
    }
    let (payload, _) = source(head, learner);
    if !(payload.params.iter().all(|v| v.is_finite()) && payload.opt.iter().all(|v| v.is_finite()))
    {
        return Err(EncodeError::NonFinite);
    }
    let (len, needed) = lengths(&payload).ok_or(EncodeError::TooLarge)?;
    let field = |v: usize| u32::try_from(v).map_err(|_| EncodeError::TooLarge);
    for v in [dims.input, dims.hidden, dims.capacity, head.classes(), len] {
        field(v)?;
    }
    let available = out.len();
    let buf = out
        .get_mut(..needed)
        .ok_or(EncodeError::BufferTooSmall { needed, available })?;
    let (framed, trailer) = buf.split_at_mut(HEADER_LEN + len);
    let mut at = 0;
    let written = stream_framed::<H, L, ()>(head, learner, &mut |bytes: &[u8]| {
        let end = at + bytes.len();
        framed.get_mut(at..end).ok_or(())?.copy_from_slice(bytes);
        at = end;
        Ok(())
    });
    // `payload_len` is exact (the tests check it); never emit a file that disagrees.
    debug_assert!(
        written.is_ok() && at == framed.len(),
        "payload length mismatch"
    );
    if written.is_err() || at != framed.len() {
        return Err(EncodeError::BufferTooSmall { needed, available });
    }
    trailer.copy_from_slice(&CRC32.checksum(framed).to_le_bytes());
    Ok(needed)
}

/// [`encode`] into a new `Vec` of exactly [`encoded_len`] bytes.
#[cfg(feature = "std")]
pub fn encode_to_vec<H: Storage, L: LearnerState>(
    head: &Head<H>,
    learner: Option<&L>,
) -> Result<std::vec::Vec<u8>, EncodeError> {
    let (_, total) = lengths(&source(head, learner).0).ok_or(EncodeError::TooLarge)?;
    let mut out = std::vec![0u8; total];
    let n = encode(head, learner, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// The header's fields as stored.
struct RawHeader {
    kind: u8,
    optimizer: u8,
    dims: [u32; 3],
    classes: u32,
    payload_len: u32,
}

/// Reads the header bytes and checks the magic and version (what every version shares).
fn raw_header(bytes: &[u8]) -> Result<RawHeader, DecodeError> {
    let truncated = DecodeError::Truncated {
        needed: HEADER_LEN,
        found: bytes.len(),
    };
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(truncated)?;
    let [m0, m1, m2, m3, v0, v1, kind, optimizer, rest @ ..] = *header;
    if [m0, m1, m2, m3] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u16::from_le_bytes([v0, v1]);
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    let &[input, hidden, capacity, classes, payload_len] = rest.as_chunks::<4>().0 else {
        return Err(truncated);
    };
    let le = u32::from_le_bytes;
    let dims = [le(input), le(hidden), le(capacity)];
    Ok(RawHeader {
        kind,
        optimizer,
        dims,
        classes: le(classes),
        payload_len: le(payload_len),
    })
}

/// Checks every header field, and the payload length against the dimensions.
fn validate(raw: &RawHeader) -> Result<Header, DecodeError> {
    let bad = |what| DecodeError::BadHeader { what };
    let size = |v: u32| usize::try_from(v).map_err(|_| bad("a size does not fit this target"));
    let [input, hidden, capacity] = raw.dims;
    let dims = Dims {
        input: size(input)?,
        hidden: size(hidden)?,
        capacity: size(capacity)?,
    };
    match (raw.kind, dims.hidden) {
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
    let classes = size(raw.classes)?;
    if classes > dims.capacity {
        return Err(bad("more classes than the class capacity"));
    }
    let n_params = dims.param_len();
    let n_opt = learner_values(raw.optimizer, dims).ok_or(bad(
        "unknown learner code, or a learner that cannot learn this head",
    ))?;
    let min = payload_len(0, 0, n_params, n_opt);
    let max = payload_len(u32::MAX, u64::MAX, n_params, n_opt);
    let max = max.filter(|m| m.checked_add(HEADER_LEN + CRC_LEN).is_some());
    let payload_len = size(raw.payload_len)?;
    match (min, max) {
        (Some(min), Some(max)) if (min..=max).contains(&payload_len) => {}
        _ => return Err(bad("payload length does not match the dimensions")),
    }
    Ok(Header {
        version: VERSION,
        dims,
        classes,
        optimizer: raw.optimizer,
        payload_len,
    })
}

/// Reads and validates the header from the first [`HEADER_LEN`] bytes of an encoding,
/// without the payload or checksum: enough to size storage before decoding.
pub fn read_header(bytes: &[u8]) -> Result<Header, DecodeError> {
    validate(&raw_header(bytes)?)
}

/// Checks length, checksum and header; returns the header.
fn check_frame(bytes: &[u8]) -> Result<Header, DecodeError> {
    let raw = raw_header(bytes)?;
    let total = usize::try_from(raw.payload_len)
        .ok()
        .and_then(|n| n.checked_add(HEADER_LEN + CRC_LEN))
        .ok_or(DecodeError::BadHeader {
            what: "payload length does not fit this target",
        })?;
    if bytes.len() < total {
        return Err(DecodeError::Truncated {
            needed: total,
            found: bytes.len(),
        });
    }
    if bytes.len() > total {
        return Err(DecodeError::BadHeader {
            what: "payload length field disagrees with the data's size",
        });
    }
    let truncated = DecodeError::Truncated {
        needed: total,
        found: bytes.len(),
    };
    let (framed, trailer) = bytes.split_at_checked(total - CRC_LEN).ok_or(truncated)?;
    let stored = u32::from_le_bytes(trailer.try_into().map_err(|_| truncated)?);
    let computed = CRC32.checksum(framed);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    validate(&raw)
}

/// Decodes `bytes` into `head` and, if given, `learner`, and returns the header.
///
/// The head (and learner) must have the stored dimensions ([`DecodeError::DimsMismatch`]).
/// When the data carries optimizer state, the learner's optimizer must be the stored one
/// ([`DecodeError::OptimizerMismatch`]) and gets its state, step count and generator
/// back; when it carries none (code 0), a plain-SGD learner gets the stored step count
/// and generator, and any other learner is reset (so is a plain-SGD learner when the
/// data was saved without a learner). With no learner given, stored optimizer state is
/// validated and ignored. Everything is validated before anything is written: on error,
/// head and learner are unchanged.
pub fn decode_into<H: Storage, L: LearnerState>(
    bytes: &[u8],
    head: &mut Head<H>,
    learner: Option<&mut L>,
) -> Result<Header, DecodeError> {
    let header = check_frame(bytes)?;
    let stored = header.dims;
    if head.dims() != stored {
        return Err(DecodeError::DimsMismatch {
            stored,
            expected: head.dims(),
        });
    }
    if let Some(l) = &learner {
        if l.dims() != stored {
            return Err(DecodeError::DimsMismatch {
                stored,
                expected: l.dims(),
            });
        }
        let expected = l.code();
        if header.optimizer != 0 && header.optimizer != expected {
            return Err(DecodeError::OptimizerMismatch {
                stored: header.optimizer,
                expected,
            });
        }
    }
    let payload = bytes
        .get(HEADER_LEN..HEADER_LEN + header.payload_len)
        .ok_or(DecodeError::Truncated {
            needed: header.total_len(),
            found: bytes.len(),
        })?;
    let n_params = stored.param_len();
    let n_opt = learner_values(header.optimizer, stored).unwrap_or(0);
    let code = header.optimizer;
    // Dry run: every count, every value, no trailing bytes.
    let (step, rng) = run::<L>(payload, (code, stored), n_params, n_opt, None, None)?;
    // Restore the learner from matching state; a file saved without a learner holds
    // step 0 and generator 0, which resets a plain-SGD learner instead.
    let restore = |l: &L| code == l.code() && (code != 0 || (step, rng) != (0, 0));
    let (target, reset) = match learner {
        Some(l) if restore(l) => (Some(l), None),
        other => (None, other),
    };
    // The same bytes again, now writing: cannot fail after the dry run.
    run(
        payload,
        (code, stored),
        n_params,
        n_opt,
        Some(head.params_mut()),
        target,
    )?;
    if let Some(l) = reset {
        l.reset();
    }
    head.set_classes(header.classes);
    Ok(header)
}

/// Decodes a head (without learner state) into newly allocated storage.
#[cfg(feature = "std")]
pub fn decode_head(bytes: &[u8]) -> Result<Head<std::vec::Vec<f32>>, DecodeError> {
    // Checksum and header first: never allocate from unverified sizes.
    let header = check_frame(bytes)?;
    let mut head =
        Head::alloc(header.dims, header.classes).map_err(|_| DecodeError::BadHeader {
            what: "invalid dimensions",
        })?;
    decode_into(bytes, &mut head, None::<&mut Learner<[f32; 0]>>)?;
    Ok(head)
}

/// One pass over the payload; writes where the destinations are `Some`.
fn run<L: LearnerState>(
    payload: &[u8],
    learner_kind: (u8, Dims),
    n_params: usize,
    n_opt: usize,
    params: Option<&mut [f32]>,
    learner: Option<&mut L>,
) -> Result<(u32, u64), DecodeError> {
    let fail = Cell::new(None);
    let mut de = postcard::Deserializer::from_bytes(payload);
    let seed = PayloadSeed {
        fail: &fail,
        learner_kind,
        n_params,
        n_opt,
        params,
        learner,
    };
    let out = seed.deserialize(&mut de).map_err(|e| {
        fail.get().unwrap_or(match e {
            postcard::Error::DeserializeUnexpectedEnd => DecodeError::BadPayload {
                what: "the payload ends early",
            },
            postcard::Error::DeserializeBadVarint => DecodeError::BadPayload {
                what: "a malformed integer",
            },
            _ => DecodeError::BadPayload {
                what: "malformed data",
            },
        })
    })?;
    match de.finalize() {
        Ok([]) => Ok(out),
        _ => Err(DecodeError::BadPayload {
            what: "unexpected bytes after the optimizer state",
        }),
    }
}

/// A learner value that is finite but impossible (a negative count, a zero scale).
pub(crate) const IMPOSSIBLE: DecodeError = DecodeError::BadPayload {
    what: "impossible learner statistics (a count that is not whole, a scale that is not positive)",
};

/// Records `e` for [`run`] and returns a serde error to unwind with.
fn raise<E: de::Error>(fail: &Cell<Option<DecodeError>>, e: DecodeError) -> E {
    fail.set(Some(e));
    E::custom(e)
}

/// The payload (a 4-tuple in postcard).
struct PayloadSeed<'a, 'f, L> {
    fail: &'f Cell<Option<DecodeError>>,
    /// The stored learner's code and the head's dimensions.
    learner_kind: (u8, Dims),
    n_params: usize,
    n_opt: usize,
    params: Option<&'a mut [f32]>,
    learner: Option<&'a mut L>,
}

impl<'de, L: LearnerState> DeserializeSeed<'de> for PayloadSeed<'_, '_, L> {
    type Value = (u32, u64);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_tuple(4, self)
    }
}

impl<'de, L: LearnerState> Visitor<'de> for PayloadSeed<'_, '_, L> {
    type Value = (u32, u64);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an edgetune head payload")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let fail = self.fail;
        let short = || {
            raise(
                fail,
                DecodeError::BadPayload {
                    what: "the payload ends early",
                },
            )
        };
        let step: u32 = seq.next_element()?.ok_or_else(short)?;
        let rng: u64 = seq.next_element()?.ok_or_else(short)?;
        let what = "number of parameters does not match the dimensions";
        let sink = self.params.map_or(Sink::<L>::Check, Sink::Slice);
        seq.next_element_seed(Floats {
            fail,
            n: self.n_params,
            what,
            learner_kind: None,
            sink,
        })?
        .ok_or_else(short)?;
        let what = "number of learner values does not match the dimensions";
        let sink = self
            .learner
            .map_or(Sink::Check, |l| Sink::Learner(l, step, rng));
        seq.next_element_seed(Floats {
            fail,
            n: self.n_opt,
            what,
            learner_kind: Some(self.learner_kind),
            sink,
        })?
        .ok_or_else(short)?;
        Ok((step, rng))
    }
}

/// Where decoded values go.
enum Sink<'a, L> {
    /// Nowhere: validate only.
    Check,
    /// Into a slice of exactly the expected length.
    Slice(&'a mut [f32]),
    /// Into a learner's state, with this step count and generator state.
    Learner(&'a mut L, u32, u64),
}

/// A sequence of exactly `n` finite f32 (of a learner's state when `learner_kind`
/// is given: each checked by [`learner_value_ok`]).
struct Floats<'a, 'f, L> {
    fail: &'f Cell<Option<DecodeError>>,
    n: usize,
    what: &'static str,
    learner_kind: Option<(u8, Dims)>,
    sink: Sink<'a, L>,
}

impl<'de, L: LearnerState> DeserializeSeed<'de> for Floats<'_, '_, L> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, L: LearnerState> Visitor<'de> for Floats<'_, '_, L> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of f32")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Floats {
            fail,
            n,
            what,
            learner_kind,
            sink,
        } = self;
        let miscount = || raise(fail, DecodeError::BadPayload { what });
        // postcard knows the exact length unless it exceeds the remaining bytes.
        if seq.size_hint() != Some(n) {
            return Err(miscount());
        }
        let (mut count, mut err) = (0usize, None);
        let mut values = core::iter::from_fn(|| {
            if count == n {
                return None;
            }
            match seq.next_element::<f32>() {
                Ok(Some(v)) if !v.is_finite() => err = Some(raise(fail, DecodeError::NonFinite)),
                Ok(Some(v))
                    if learner_kind.is_some_and(|(c, d)| !learner_value_ok(c, d, count, v)) =>
                {
                    err = Some(raise(fail, IMPOSSIBLE))
                }
                Ok(Some(v)) => {
                    count += 1;
                    return Some(v);
                }
                Ok(None) => err = Some(miscount()),
                Err(e) => err = Some(e),
            }
            None
        });
        match sink {
            Sink::Check => values.by_ref().for_each(drop),
            Sink::Slice(dst) => dst
                .iter_mut()
                .zip(values.by_ref())
                .for_each(|(d, v)| *d = v),
            Sink::Learner(l, step, rng) => l.restore(step, rng, values.by_ref()),
        }
        if let Some(e) = err {
            return Err(e);
        }
        match seq.next_element::<f32>()? {
            None if count == n => Ok(()),
            _ => Err(miscount()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::{Config, Optimizer};

    type Vecs = std::vec::Vec<f32>;

    fn trained(dims: Dims, opt: Option<Optimizer>) -> (Head<Vecs>, Option<Learner<Vecs>>) {
        let mut head = Head::new(dims, 2, vec![0.0; dims.param_len()]).unwrap();
        head.init(7);
        let mut learner = opt.map(|o| {
            let cfg = Config {
                optimizer: o,
                lr: 0.05,
                dropout: 0.2,
                seed: 3,
                ..Config::DEFAULT
            };
            Learner::new(dims, cfg, vec![0.0; Learner::<()>::state_len(dims, &o)]).unwrap()
        });
        if let Some(l) = learner.as_mut() {
            for i in 0..5 {
                let x: Vecs = (0..dims.input)
                    .map(|j| ((i * 7 + j * 3) % 5) as f32 - 2.0)
                    .collect();
                l.step(&mut head, &x, i % 2).unwrap();
            }
        }
        (head, learner)
    }

    fn fresh(dims: Dims, opt: Option<Optimizer>) -> (Head<Vecs>, Option<Learner<Vecs>>) {
        let mut head = Head::new(dims, 0, vec![0.0; dims.param_len()]).unwrap();
        head.params_mut().fill(0.5);
        let learner = opt.map(|o| {
            let cfg = Config {
                optimizer: o,
                seed: 3,
                ..Config::DEFAULT
            };
            Learner::new(dims, cfg, vec![0.0; Learner::<()>::state_len(dims, &o)]).unwrap()
        });
        (head, learner)
    }

    fn encode_vec(head: &Head<Vecs>, learner: Option<&Learner<Vecs>>) -> std::vec::Vec<u8> {
        let mut out = vec![0u8; encoded_len(head, learner)];
        assert_eq!(encode(head, learner, &mut out), Ok(out.len()));
        out
    }

    fn bits(v: &[f32]) -> std::vec::Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Rewrites the trailer so that tampered bytes pass the checksum.
    fn fix_crc(bytes: &mut [u8]) {
        let n = bytes.len() - CRC_LEN;
        let crc = CRC32.checksum(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn roundtrips_every_kind_and_optimizer() {
        let opts = [
            None,
            Some(Optimizer::Sgd {
                momentum: 0.0,
                nesterov: false,
            }),
            Some(Optimizer::SGD_MOMENTUM),
        ];
        let opts = opts
            .into_iter()
            .chain([Some(Optimizer::ADAM), Some(Optimizer::ADAMW)]);
        for opt in opts {
            for dims in [Dims::linear(3, 4), Dims::mlp(3, 5, 4)] {
                let (head, learner) = trained(dims, opt);
                let bytes = encode_vec(&head, learner.as_ref());
                let (mut head2, mut learner2) = fresh(dims, opt);
                let h = decode_into(&bytes, &mut head2, learner2.as_mut()).unwrap();
                assert_eq!(h, read_header(&bytes).unwrap());
                assert_eq!(
                    (h.dims, h.classes, h.optimizer),
                    (dims, 2, opt.map_or(0, |o| o.code()))
                );
                assert_eq!(h.total_len(), bytes.len());
                assert_eq!(bits(head2.params()), bits(head.params()));
                assert_eq!(head2.classes(), 2);
                if let (Some(a), Some(b)) = (&learner, &learner2) {
                    assert_eq!(bits(a.opt_state()), bits(b.opt_state()));
                    assert_eq!((a.steps(), a.rng_state()), (b.steps(), b.rng_state()));
                }
                assert_eq!(
                    encode_vec(&head2, learner2.as_ref()),
                    bytes,
                    "re-encoding is identical"
                );
            }
        }
    }

    #[test]
    fn head_only_file_resets_a_learner() {
        let dims = Dims::mlp(3, 2, 3);
        let (head, _) = trained(dims, None);
        let (_, mut learner) = trained(dims, Some(Optimizer::ADAM));
        let bytes = encode_vec(&head, None);
        let (mut dst, _) = fresh(dims, None);
        let l = learner.as_mut().unwrap();
        assert!(l.steps() > 0);
        decode_into(&bytes, &mut dst, Some(&mut *l)).unwrap();
        assert_eq!(l.steps(), 0);
        assert!(l.opt_state().iter().all(|v| *v == 0.0));
    }

    #[test]
    fn newer_or_foreign_data_is_refused() {
        let (head, learner) = trained(Dims::linear(2, 3), Some(Optimizer::ADAM));
        let mut bytes = encode_vec(&head, learner.as_ref());
        let (mut dst, mut l) = fresh(Dims::linear(2, 3), Some(Optimizer::ADAM));
        bytes[4..6].copy_from_slice(&2u16.to_le_bytes());
        fix_crc(&mut bytes);
        let want = DecodeError::UnsupportedVersion {
            found: 2,
            supported: VERSION,
        };
        assert_eq!(decode_into(&bytes, &mut dst, l.as_mut()), Err(want));
        assert_eq!(read_header(&bytes), Err(want));
        bytes[..4].copy_from_slice(b"PK\x03\x04");
        assert_eq!(
            decode_into(&bytes, &mut dst, l.as_mut()),
            Err(DecodeError::BadMagic)
        );
        assert_eq!(
            read_header(&bytes[..3]),
            Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                found: 3
            })
        );
        assert!(dst.params().iter().all(|v| *v == 0.5) && dst.classes() == 0);
    }

    #[test]
    fn mismatched_destinations_are_refused() {
        let dims = Dims::mlp(3, 2, 3);
        let (head, learner) = trained(dims, Some(Optimizer::SGD_MOMENTUM));
        let bytes = encode_vec(&head, learner.as_ref());
        let (mut other, _) = fresh(Dims::mlp(3, 3, 3), None);
        let err = decode_into(&bytes, &mut other, None::<&mut Learner<Vecs>>).unwrap_err();
        assert_eq!(
            err,
            DecodeError::DimsMismatch {
                stored: dims,
                expected: Dims::mlp(3, 3, 3)
            }
        );
        assert!(
            err.to_string()
                .contains("MLP head (input 3, hidden 2, capacity 3)")
        );
        let (mut dst, mut adam) = fresh(dims, Some(Optimizer::ADAM));
        let err = decode_into(&bytes, &mut dst, adam.as_mut()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::OptimizerMismatch {
                stored: 1,
                expected: 2
            }
        );
        assert!(err.to_string().contains("SGD-with-momentum"));
        let (_, mut small) = fresh(Dims::mlp(3, 2, 4), Some(Optimizer::SGD_MOMENTUM));
        assert!(matches!(
            decode_into(&bytes, &mut dst, small.as_mut()),
            Err(DecodeError::DimsMismatch { .. })
        ));
        assert!(dst.params().iter().all(|v| *v == 0.5) && adam.unwrap().steps() == 0);
        // Without a learner the stored state is validated and ignored.
        assert!(decode_into(&bytes, &mut dst, None::<&mut Learner<Vecs>>).is_ok());
    }

    #[test]
    fn encode_errors() {
        let dims = Dims::linear(3, 2);
        let (mut head, learner) = trained(dims, Some(Optimizer::ADAM));
        let needed = encoded_len(&head, learner.as_ref());
        let mut small = vec![0u8; needed - 1];
        let err = encode(&head, learner.as_ref(), &mut small);
        assert_eq!(
            err,
            Err(EncodeError::BufferTooSmall {
                needed,
                available: needed - 1
            })
        );
        let mut big = vec![0u8; needed + 10];
        assert_eq!(encode(&head, learner.as_ref(), &mut big), Ok(needed));
        let (_, other) = fresh(Dims::linear(3, 3), Some(Optimizer::ADAM));
        assert!(matches!(
            encode(&head, other.as_ref(), &mut big),
            Err(EncodeError::DimsMismatch { .. })
        ));
        head.params_mut()[1] = f32::NAN;
        assert_eq!(
            encode(&head, learner.as_ref(), &mut big),
            Err(EncodeError::NonFinite)
        );
        assert!(EncodeError::NonFinite.to_string().contains("refusing"));
    }

    #[test]
    fn tampered_payloads_with_valid_checksums_are_refused() {
        let dims = Dims::linear(2, 2);
        let (head, _) = trained(dims, None);
        let good = encode_vec(&head, None);
        let (mut dst, _) = fresh(dims, None);
        let none = None::<&mut Learner<Vecs>>;
        // Payload: step 0, rng 0, len 6, 6 floats, len 0. First float at HEADER_LEN + 3.
        let mut nan = good.clone();
        nan[HEADER_LEN + 3..HEADER_LEN + 7].copy_from_slice(&f32::INFINITY.to_le_bytes());
        fix_crc(&mut nan);
        assert_eq!(
            decode_into(&nan, &mut dst, none),
            Err(DecodeError::NonFinite)
        );
        let mut count = good.clone();
        count[HEADER_LEN + 2] = 5;
        fix_crc(&mut count);
        let none = None::<&mut Learner<Vecs>>;
        assert!(matches!(
            decode_into(&count, &mut dst, none),
            Err(DecodeError::BadPayload { .. })
        ));
        let mut opt = good.clone();
        opt[7] = 2; // claims Adam state that is not there
        fix_crc(&mut opt);
        assert!(matches!(
            read_header(&opt),
            Err(DecodeError::BadHeader { .. })
        ));
        let mut classes = good.clone();
        classes[20..24].copy_from_slice(&3u32.to_le_bytes());
        fix_crc(&mut classes);
        assert!(matches!(
            read_header(&classes),
            Err(DecodeError::BadHeader { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_into(&trailing, &mut dst, None::<&mut Learner<Vecs>>).is_err());
        assert!(dst.params().iter().all(|v| *v == 0.5) && dst.classes() == 0);
    }

    #[test]
    fn lengths_are_exact_for_large_varints() {
        let dims = Dims::linear(1, 200);
        let (head, mut learner) = fresh(dims, Some(Optimizer::SGD_MOMENTUM));
        let l = learner.as_mut().unwrap();
        l.restore(u32::MAX, u64::MAX, core::iter::repeat(1.0));
        let bytes = encode_vec(&head, Some(l));
        assert_eq!(
            read_header(&bytes).unwrap().payload_len,
            5 + 10 + 2 + 1600 + 2 + 1600
        );
    }
}
