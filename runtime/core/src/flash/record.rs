//! A record streamed through the scratch buffer in both directions: whole-unit reads
//! ([`Reader`]) and writes ([`Writer`]), and the record reader that checks what
//! [`persist::decode_into`] checks, byte by byte, and can copy the values out.

use crc::{Digest, NoTable};
use embedded_storage::nor_flash::NorFlash;

use super::CRC32;
use super::layout::{align_up, unit};
use crate::persist::{self, CRC_LEN, DecodeError, Framed, Header, LearnerState};

/// Something went wrong reading a record: the flash, or the data.
pub(super) enum Fault<E> {
    Flash(E),
    Bad(DecodeError),
}

/// Where a checked record's values go when loading (a learner of any kind and
/// storage: one copy of the record reader serves them all).
pub(super) struct Sink<'a> {
    pub(super) params: &'a mut [f32],
    pub(super) learner: Option<&'a mut dyn LearnerState>,
}

/// Reads `start..end` (whole units) through the scratch chunk, a byte at a time.
pub(super) struct Reader<'a, F> {
    flash: &'a mut F,
    buf: &'a mut [u8],
    next: u32,
    end: u32,
    at: usize,
    filled: usize,
}

impl<'a, F: NorFlash> Reader<'a, F> {
    pub(super) fn new(flash: &'a mut F, buf: &'a mut [u8], start: u32, end: u32) -> Self {
        Reader {
            flash,
            buf,
            next: start,
            end,
            at: 0,
            filled: 0,
        }
    }

    /// The next byte; `None` at the end of the range.
    fn byte(&mut self) -> Result<Option<u8>, F::Error> {
        if self.at == self.filled {
            if self.next >= self.end {
                return Ok(None);
            }
            let n = self.buf.len().min((self.end - self.next) as usize);
            self.flash.read(self.next, &mut self.buf[..n])?;
            self.next += n as u32;
            self.at = 0;
            self.filled = n;
        }
        let b = self.buf[self.at];
        self.at += 1;
        Ok(Some(b))
    }

    /// Fills `out`; bytes past the end of the range read as 0xFF (erased).
    pub(super) fn bytes(&mut self, out: &mut [u8]) -> Result<(), F::Error> {
        for b in out {
            *b = self.byte()?.unwrap_or(0xFF);
        }
        Ok(())
    }

    pub(super) fn skip(&mut self, n: usize) -> Result<(), F::Error> {
        for _ in 0..n {
            self.byte()?;
        }
        Ok(())
    }
}

/// The bytes of one record before its CRC trailer, checksummed as they are read.
struct Record<'r, 'a, F> {
    rd: &'r mut Reader<'a, F>,
    /// Bytes left before the trailer.
    left: usize,
    digest: Digest<'static, u32, NoTable>,
}

impl<F: NorFlash> Record<'_, '_, F> {
    fn byte(&mut self) -> Result<u8, Fault<F::Error>> {
        if self.left == 0 {
            return Err(Fault::Bad(DecodeError::BadPayload {
                what: "the payload ends early",
            }));
        }
        // Reads stay inside the slot: the record length was checked against it.
        let b = self.rd.byte().map_err(Fault::Flash)?.unwrap_or(0xFF);
        self.left -= 1;
        self.digest.update(&[b]);
        Ok(b)
    }

    /// A postcard varint of an integer of `bits` bits (as postcard decodes them).
    fn varint(&mut self, bits: u32) -> Result<u64, Fault<F::Error>> {
        let max = bits.div_ceil(7);
        let last_max = (1u8 << (bits % 7)) - 1;
        let mut out = 0u64;
        for i in 0..max {
            let b = self.byte()?;
            out |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                if i == max - 1 && b > last_max {
                    break;
                }
                // As `persist::decode_into`: the writer never spends a byte on nothing.
                if i > 0 && b == 0 {
                    return Err(Fault::Bad(persist::OVERLONG));
                }
                return Ok(out);
            }
        }
        Err(Fault::Bad(DecodeError::BadPayload {
            what: "a malformed integer",
        }))
    }

    /// A sequence length, which must be `n`.
    fn count(&mut self, n: usize, what: &'static str) -> Result<(), Fault<F::Error>> {
        if self.varint(usize::BITS)? != n as u64 {
            return Err(Fault::Bad(DecodeError::BadPayload { what }));
        }
        Ok(())
    }

    fn float(&mut self) -> Result<f32, Fault<F::Error>> {
        let mut b = [0u8; 4];
        for v in &mut b {
            *v = self.byte()?;
        }
        let v = f32::from_le_bytes(b);
        if !v.is_finite() {
            return Err(Fault::Bad(DecodeError::NonFinite));
        }
        Ok(v)
    }
}

/// Reads and checks a record of `len` bytes (header, payload, CRC) and, with a sink,
/// copies its values there; returns its header. With a sink the record must have been
/// checked before, and the learner (if any) must match it.
pub(super) fn read_record<F: NorFlash>(
    rd: &mut Reader<'_, F>,
    len: usize,
    sink: Option<Sink<'_>>,
) -> Result<Header, Fault<F::Error>> {
    let Some(body) = len.checked_sub(CRC_LEN) else {
        return Err(Fault::Bad(DecodeError::Truncated {
            needed: persist::HEADER_LEN + CRC_LEN,
            found: len,
        }));
    };
    let mut rec = Record {
        rd,
        left: body,
        digest: CRC32.digest(),
    };
    let result = read_fields(&mut rec, len, sink);
    if let Err(Fault::Flash(e)) = result {
        return Err(Fault::Flash(e));
    }
    // The checksum covers every byte before the trailer, and comes first.
    while rec.left > 0 {
        rec.byte()?;
    }
    let mut trailer = [0u8; CRC_LEN];
    rec.rd.bytes(&mut trailer).map_err(Fault::Flash)?;
    let stored = u32::from_le_bytes(trailer);
    let computed = rec.digest.finalize();
    if stored != computed {
        return Err(Fault::Bad(DecodeError::Checksum { stored, computed }));
    }
    result
}

/// The header and payload of a record of `len` bytes.
fn read_fields<F: NorFlash>(
    rec: &mut Record<'_, '_, F>,
    len: usize,
    sink: Option<Sink<'_>>,
) -> Result<Header, Fault<F::Error>> {
    let mut raw = [0u8; persist::HEADER_LEN];
    for b in &mut raw {
        *b = rec.byte().map_err(|e| match e {
            Fault::Bad(_) => Fault::Bad(DecodeError::Truncated {
                needed: persist::HEADER_LEN + CRC_LEN,
                found: len,
            }),
            e => e,
        })?;
    }
    let header = persist::read_header(&raw).map_err(Fault::Bad)?;
    if header.total_len() != len {
        return Err(Fault::Bad(DecodeError::BadHeader {
            what: "payload length field disagrees with the data's size",
        }));
    }
    let step = rec.varint(u32::BITS)? as u32;
    let rng = rec.varint(u64::BITS)?;
    if !persist::counters_ok(header.optimizer, step, rng) {
        return Err(Fault::Bad(persist::COUNTERS));
    }
    let n_params = header.dims.param_len();
    let n_opt = persist::learner_values(header.optimizer, header.dims).unwrap_or(0);
    rec.count(
        n_params,
        "number of parameters does not match the dimensions",
    )?;
    let (mut params, learner) = match sink {
        Some(Sink { params, learner }) => (Some(params), learner),
        None => (None, None),
    };
    for i in 0..n_params {
        let v = rec.float()?;
        if let Some(p) = params.as_deref_mut() {
            p[i] = v;
        }
    }
    rec.count(
        n_opt,
        "number of optimizer values does not match the dimensions",
    )?;
    // As `persist::decode_into`: a learner with the stored optimizer gets the state
    // back, any other learner is reset (so is a plain-SGD one when the record was saved
    // without a learner: step 0, generator 0).
    let code = header.optimizer;
    // Each learner value is checked as it is read, in the checking pass as in the
    // loading one.
    let mut taken = 0;
    let mut value = |rec: &mut Record<'_, '_, F>| {
        let v = rec.float()?;
        let ok = persist::learner_value_ok(code, header.dims, taken, v);
        taken += 1;
        if ok {
            Ok(v)
        } else {
            Err(Fault::Bad(persist::IMPOSSIBLE))
        }
    };
    let (target, reset) = match learner {
        Some(l) if code == l.code() && (code != 0 || (step, rng) != (0, 0)) => (Some(l), None),
        other => (None, other),
    };
    match target {
        Some(l) => {
            let mut fault = None;
            let mut values = core::iter::from_fn(|| match value(rec) {
                Ok(v) => Some(v),
                Err(e) => {
                    fault = Some(e);
                    None
                }
            })
            .take(n_opt);
            l.restore(step, rng, &mut values);
            if let Some(e) = fault {
                return Err(e);
            }
            if taken != n_opt {
                return Err(Fault::Bad(DecodeError::BadPayload {
                    what: "number of optimizer values does not match the learner",
                }));
            }
        }
        None => {
            for _ in 0..n_opt {
                value(rec)?;
            }
        }
    }
    if rec.left != 0 {
        return Err(Fault::Bad(DecodeError::BadPayload {
            what: "unexpected bytes after the optimizer state",
        }));
    }
    if let Some(l) = reset {
        l.reset();
    }
    Ok(header)
}

/// Writes whole units through the scratch chunk, starting at `next`.
pub(super) struct Writer<'a, F> {
    pub(super) flash: &'a mut F,
    pub(super) buf: &'a mut [u8],
    pub(super) fill: usize,
    pub(super) next: u32,
}

impl<F: NorFlash> Writer<'_, F> {
    pub(super) fn put(&mut self, bytes: &[u8]) -> Result<(), F::Error> {
        for &b in bytes {
            self.buf[self.fill] = b;
            self.fill += 1;
            if self.fill == self.buf.len() {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered, padded with 0xFF to a whole unit.
    pub(super) fn flush(&mut self) -> Result<(), F::Error> {
        if self.fill == 0 {
            return Ok(());
        }
        let n = align_up(self.fill, unit::<F>());
        self.buf[self.fill..n].fill(0xFF);
        self.flash.write(self.next, &self.buf[..n])?;
        self.next += n as u32;
        self.fill = 0;
        Ok(())
    }
}

/// Streams a checked [`persist`] record: [`persist`] writes its header and payload,
/// this adds the CRC trailer (bitwise: no table in a firmware's flash).
pub(super) fn write_record<F: NorFlash>(
    w: &mut Writer<'_, F>,
    record: &Framed<'_>,
) -> Result<(), F::Error> {
    let mut digest = CRC32.digest();
    record.stream(&mut |bytes: &[u8]| {
        digest.update(bytes);
        w.put(bytes)
    })?;
    w.put(&digest.finalize().to_le_bytes())
}
