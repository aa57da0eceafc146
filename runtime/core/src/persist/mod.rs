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
//! | payload length | postcard: step (u32), generator state (u64), parameters (sequence of f32, [`Dims::param_len`] values), learner state (sequence of f32, empty for code 0); every integer (step, generator, lengths) in its fewest bytes |
//! | 4 | CRC-32 (ISO-HDLC) of everything before it, u32 |
//!
//! The learner state ([`LearnerState`]), by its code:
//!
//! | code | learner | values |
//! | --- | --- | --- |
//! | 0 | none, or plain SGD ([`Learner`]) | none |
//! | 1 | SGD with momentum ([`Learner`]) | [`Dims::param_len`] |
//! | 2, 3 | Adam, AdamW ([`Learner`]): first moments, then second | 2 × [`Dims::param_len`] |
//! | [`SLDA_FULL`] (4) | streaming LDA, full covariance ([`Slda`]`<_, `[`Full`](crate::slda::Full)`>`), linear heads only; step and generator 0 | [`Slda::state_len`] of input and capacity |
//! | [`SLDA_DIAGONAL`] (5) | streaming LDA, diagonal covariance ([`Slda`]`<_, `[`Diagonal`](crate::slda::Diagonal)`>`), linear heads only; step and generator 0 | [`Slda::state_len`] of input and capacity |
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
//!
//! Files: `format.rs` names the bytes (header fields, learner codes, varint sizes),
//! `error.rs` the reasons a record is refused, `payload.rs` reads the payload; this
//! file writes records ([`encode`]) and decodes them ([`decode_into`]).

mod error;
mod format;
mod payload;

use crate::head::{Dims, Head, Storage};
use crate::learn::Learner;
use crate::slda::{Covariance, Slda};

pub use error::{DecodeError, EncodeError};
pub(crate) use error::{IMPOSSIBLE, OVERLONG};
pub(crate) use format::{COUNTERS, CRC_LEN, counters_ok, varint_len};
use format::{CRC32, RawHeader, leb128, payload_len};
pub use format::{
    HEADER_LEN, MAGIC, SLDA_DIAGONAL, SLDA_FULL, VERSION, learner_value_ok, learner_values,
};
use payload::run;

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

/// A record ready to write: checked as [`encode`] checks (dimensions, finite values,
/// sizes that fit the format) and measured once. The one writer of the format:
/// [`encode`] puts it in a slice, [`crate::flash`] in flash words.
pub(crate) struct Framed<'a> {
    header: RawHeader,
    payload: Payload<'a>,
    /// Header, payload and CRC.
    len: usize,
}

impl<'a> Framed<'a> {
    /// The record of `head` and, if given, `learner`'s state.
    pub(crate) fn new<H: Storage, L: LearnerState>(
        head: &'a Head<H>,
        learner: Option<&'a L>,
    ) -> Result<Self, EncodeError> {
        let dims = head.dims();
        if let Some(l) = learner.filter(|l| l.dims() != dims) {
            return Err(EncodeError::DimsMismatch {
                head: dims,
                learner: l.dims(),
            });
        }
        let (payload, code) = source(head, learner);
        if !(payload.params.iter().all(|v| v.is_finite())
            && payload.opt.iter().all(|v| v.is_finite()))
        {
            return Err(EncodeError::NonFinite);
        }
        let (payload_len, len) = lengths(&payload).ok_or(EncodeError::TooLarge)?;
        let field = |v: usize| u32::try_from(v).map_err(|_| EncodeError::TooLarge);
        let header = RawHeader {
            kind: u8::from(dims.hidden > 0),
            optimizer: code,
            dims: [
                field(dims.input)?,
                field(dims.hidden)?,
                field(dims.capacity)?,
            ],
            classes: field(head.classes())?,
            payload_len: field(payload_len)?,
        };
        Ok(Framed {
            header,
            payload,
            len,
        })
    }

    /// Length of the whole record: header, payload and CRC.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Streams the header and payload to `put`, piece by piece, in the layout of the
    /// module docs (the payload as postcard lays it out: LEB128 varints, little-endian
    /// floats). The caller adds the CRC-32 of all of them.
    pub(crate) fn stream<E>(&self, put: &mut dyn FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let p = &self.payload;
        put(&self.header.to_bytes())?;
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

    /// Writes the record, CRC included, into the start of `out`; returns its length.
    fn write(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let (needed, available) = (self.len, out.len());
        let buf = out
            .get_mut(..needed)
            .ok_or(EncodeError::BufferTooSmall { needed, available })?;
        let (framed, trailer) = buf.split_at_mut(needed - CRC_LEN);
        let mut at = 0;
        let written = self.stream::<()>(&mut |bytes: &[u8]| {
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
    Framed::new(head, learner)?.write(out)
}

/// [`encode`] into a new `Vec` of exactly [`encoded_len`] bytes.
#[cfg(feature = "std")]
pub fn encode_to_vec<H: Storage, L: LearnerState>(
    head: &Head<H>,
    learner: Option<&L>,
) -> Result<std::vec::Vec<u8>, EncodeError> {
    let framed = Framed::new(head, learner)?;
    let mut out = std::vec![0u8; framed.len()];
    framed.write(&mut out)?;
    Ok(out)
}

/// Reads and validates the header from the first [`HEADER_LEN`] bytes of an encoding,
/// without the payload or checksum: enough to size storage before decoding.
pub fn read_header(bytes: &[u8]) -> Result<Header, DecodeError> {
    RawHeader::parse(bytes)?.validate()
}

/// Checks length, checksum and header; returns the header.
fn check_frame(bytes: &[u8]) -> Result<Header, DecodeError> {
    let raw = RawHeader::parse(bytes)?;
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
    raw.validate()
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
    // postcard reads an integer in more bytes than it needs (16 as `90 00`); the writer
    // never does, so such a record is not one of ours, and would re-encode differently.
    if payload_len(step, rng, n_params, n_opt) != Some(header.payload_len) {
        return Err(OVERLONG);
    }
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

#[cfg(test)]
mod tests;
