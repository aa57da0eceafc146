//! Power-cut-safe storage of a head and its learner's state (a gradient learner's
//! optimizer state, or a streaming LDA's statistics) in NOR flash, over the
//! [`embedded_storage::nor_flash::NorFlash`] driver traits: `no_std`, no heap, with a
//! caller-provided scratch buffer of any size from 8 bytes (or the flash's write unit,
//! if larger) up.
//!
//! A [`Store`] splits a flash region into two equal slots, A and B, each a whole number
//! of erase sectors. A slot holds one [`persist`] record (the head, the learner's state,
//! its own CRC-32), after a header with a sequence number that grows by one with every
//! save, and before that a commit marker:
//!
//! | slot offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 8, padded to the flash's write (and read) unit | commit marker: [`COMMIT_MAGIC`], CRC-32 of the slot header (u32) |
//! | unit | 4 | [`SLOT_MAGIC`] |
//! | +4 | 2 | slot format [`FORMAT`], u16 |
//! | +6 | 2 | reserved, `0xFFFF` |
//! | +8 | 8 | sequence number, u64 |
//! | +16 | 4 | record length, u32 |
//! | +20 | record length, padded to the unit with `0xFF` | the [`persist`] record, byte for byte what [`persist::encode`] writes |
//!
//! All integers are little-endian. [`Store::save`] never touches the slot holding the
//! newest valid state: it erases the other slot (sector by sector, the marker's sector
//! first), writes header and record in unit-aligned chunks, reads them back and checks
//! them, and only then writes the marker. A power cut at any point leaves the marker of
//! the new slot erased or incomplete, so the slot does not count and [`Store::load`]
//! finds the previous state intact; once the marker is written the new state is
//! complete and, having the higher sequence number, wins. Loading checks both slots
//! (marker, header, record CRC and structure) and takes the valid one with the highest
//! sequence number. So after the first completed save there is always a loadable state,
//! the last one saved or the one before it, never a mixture. Before it,
//! [`StoreError::NothingStored`].
//!
//! NOR semantics are respected throughout: a word is written once after an erase (never
//! rewritten, so flashes with ECC words are fine), every write and read is aligned to
//! and a multiple of [`NorFlash::WRITE_SIZE`] and
//! [`ReadNorFlash::READ_SIZE`](embedded_storage::nor_flash::ReadNorFlash::READ_SIZE),
//! erases are whole sectors of [`NorFlash::ERASE_SIZE`].
//!
//! The record is streamed through the scratch buffer in both directions (a 64 × 10 head
//! with Adam is 7.8 kB, more than a small microcontroller can spare twice). Writing, the
//! bytes come from [`persist`]'s own writer, piece by piece (this module adds the CRC);
//! reading, this module checks the format itself rather than calling
//! [`persist::decode_into`], which needs the whole record in RAM. It accepts exactly the records `decode_into` accepts, with the same effect on the
//! head and learner (the tests check both against `persist`). Loading reads a slot
//! twice: once to check everything, once to copy it into the head and learner, so a
//! refused record leaves them unchanged, as `decode_into` does. Only a fault in the
//! second read (the flash driver failing, or data changing on the chip between the two
//! reads) can leave them partly written; that is reported, and the caller should then
//! reset them.
//!
//! Files: `layout.rs` names the slot's bytes and sizes, `record.rs` streams a record
//! through the scratch buffer (reading and checking it, writing it); this file holds
//! the A/B slot store.
//!
//! ```
//! use edgetune_core::flash::{Store, StoreError};
//! use edgetune_core::{Config, Dims, Head, Learner, Optimizer};
//! # use embedded_storage::nor_flash::{check_erase, check_read, check_write};
//! # use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
//! # /// A RAM-backed NOR flash: 4-byte words, 256-byte sectors.
//! # struct Ram([u8; 1024]);
//! # impl ErrorType for Ram { type Error = NorFlashErrorKind; }
//! # impl ReadNorFlash for Ram {
//! #     const READ_SIZE: usize = 1;
//! #     fn read(&mut self, at: u32, out: &mut [u8]) -> Result<(), Self::Error> {
//! #         check_read(self, at, out.len())?;
//! #         out.copy_from_slice(&self.0[at as usize..][..out.len()]);
//! #         Ok(())
//! #     }
//! #     fn capacity(&self) -> usize { self.0.len() }
//! # }
//! # impl NorFlash for Ram {
//! #     const WRITE_SIZE: usize = 4;
//! #     const ERASE_SIZE: usize = 256;
//! #     fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
//! #         check_erase(self, from, to)?;
//! #         self.0[from as usize..to as usize].fill(0xFF);
//! #         Ok(())
//! #     }
//! #     fn write(&mut self, at: u32, data: &[u8]) -> Result<(), Self::Error> {
//! #         check_write(self, at, data.len())?;
//! #         self.0[at as usize..].iter_mut().zip(data).for_each(|(d, s)| *d &= s);
//! #         Ok(())
//! #     }
//! # }
//! const DIMS: Dims = Dims::linear(4, 3);
//! const STATE: usize = Learner::<()>::state_len(DIMS, &Optimizer::ADAM);
//! let mut head = Head::new(DIMS, 2, [0.0f32; DIMS.param_len()])?;
//! let mut learner = Learner::new(DIMS, Config::DEFAULT, [0.0f32; STATE])?;
//! learner.step(&mut head, &[1.0, 0.0, 0.5, 0.0], 1)?;
//!
//! // Two slots of two 256-byte sectors each, over a flash that came erased.
//! let mut scratch = [0u8; 64];
//! let mut store = Store::new(Ram([0xFF; 1024]), 0, 1024)?;
//! assert!(matches!(store.load(&mut head, Some(&mut learner), &mut scratch),
//!     Err(StoreError::NothingStored)));
//! let saved = store.save(&head, Some(&learner), &mut scratch)?;
//!
//! // After a reboot: fresh storage of the same shape.
//! let mut store = Store::new(store.into_inner(), 0, 1024)?;
//! let mut head2 = Head::new(DIMS, 0, [0.0f32; DIMS.param_len()])?;
//! let mut learner2 = Learner::new(DIMS, Config::DEFAULT, [0.0f32; STATE])?;
//! let loaded = store.load(&mut head2, Some(&mut learner2), &mut scratch)?;
//! assert_eq!((loaded.seq, head2.params()), (saved.seq, head.params()));
//! assert_eq!(learner2.opt_state(), learner.opt_state());
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```

mod layout;
mod record;

use core::fmt;

use crc::{CRC_32_ISO_HDLC, Crc, NoTable};
use embedded_storage::nor_flash::{NorFlash, NorFlashError};

use crate::head::{Head, Storage};
use crate::persist::{self, CRC_LEN, DecodeError, EncodeError, Framed, Header, LearnerState};
pub use layout::{
    COMMIT_MAGIC, FORMAT, MARKER_LEN, SLOT_HEADER_LEN, SLOT_MAGIC, max_record_len,
    max_record_len_with, region_len, slot_len, unit,
};
use layout::{align_up, body_offset, commit, field, max1, record_len};
use record::{Fault, Reader, Sink, Writer, read_record, write_record};

/// Bitwise: no 1 KiB table in the firmware's flash, and fast enough for a few kB.
static CRC32: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&CRC_32_ISO_HDLC);

/// Why a [`Store`] call failed. `E` is the flash driver's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum StoreError<E> {
    /// The flash driver failed (or the power went).
    Flash(E),
    /// The region is not usable with this flash: misaligned, beyond the flash's
    /// capacity, not an even number of erase sectors, or too small for any record.
    Config {
        /// What is wrong.
        what: &'static str,
    },
    /// The scratch buffer is shorter than a commit marker padded to the flash's
    /// read/write unit ([`unit()`]; 8 bytes on most flashes).
    ScratchTooSmall {
        /// Bytes the scratch buffer needs at least.
        needed: usize,
        /// Bytes it has.
        available: usize,
    },
    /// The record does not fit a slot. Nothing was erased or written.
    SlotTooSmall {
        /// Bytes the record needs ([`persist::encoded_len`]).
        needed: usize,
        /// The largest record a slot holds ([`Store::record_capacity`]).
        capacity: usize,
    },
    /// No slot holds a committed state: blank or foreign flash, or no save has completed
    /// yet. Start from a fresh head.
    NothingStored,
    /// The newest committed state cannot be loaded: it is damaged (and no other slot
    /// holds a valid one), or it does not fit the destination (another head shape,
    /// another optimizer). The destination is unchanged.
    Record(DecodeError),
    /// The head or learner cannot be saved (NaN or infinite values, mismatched
    /// dimensions, too large for the format). Nothing was erased or written.
    Encode(EncodeError),
    /// Data read back from the flash differs from what was written or checked: a faulty
    /// flash or driver. After [`Store::save`] the previous state is still the one that
    /// loads; after [`Store::load`] the destination may be partly written.
    Verify {
        /// What differed.
        what: &'static str,
    },
}

impl<E: NorFlashError> fmt::Display for StoreError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Flash(e) => write!(f, "flash error: {:?} ({})", e, e.kind()),
            StoreError::Config { what } => write!(f, "invalid flash region: {what}"),
            StoreError::ScratchTooSmall { needed, available } => write!(
                f,
                "scratch buffer too small: {available} bytes, the flash needs at least {needed}"
            ),
            StoreError::SlotTooSmall { needed, capacity } => write!(
                f,
                "the head needs {needed} bytes but a flash slot holds at most {capacity}"
            ),
            StoreError::NothingStored => f.write_str("no saved state in flash"),
            StoreError::Record(e) => write!(f, "saved state in flash cannot be loaded: {e}"),
            StoreError::Encode(e) => write!(f, "cannot save: {e}"),
            StoreError::Verify { what } => write!(f, "flash read-back mismatch: {what}"),
        }
    }
}

impl<E: NorFlashError> core::error::Error for StoreError<E> {}

/// A state found in a slot, or just saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stored {
    /// The slot: 0 (A) or 1 (B).
    pub slot: usize,
    /// Its sequence number (the first save is 1).
    pub seq: u64,
    /// The record's length in bytes.
    pub len: usize,
    /// The record's header (dimensions, classes, optimizer).
    pub header: Header,
}

/// What one slot holds.
enum SlotState {
    /// No committed state (erased, torn, foreign).
    Empty,
    /// A committed state whose record is damaged.
    Corrupt(DecodeError),
    /// A committed, complete, checked state.
    Valid(Stored),
}

/// Two A/B slots in a NOR flash region holding the newest head (see the
/// [module docs](self)).
#[derive(Debug)]
pub struct Store<F> {
    flash: F,
    base: u32,
    slot_len: u32,
    /// The newest valid state, once the slots have been scanned.
    newest: Option<Option<Stored>>,
}

impl<F: NorFlash> Store<F> {
    /// A store over `len` bytes of `flash` from `offset`: two slots of `len / 2` bytes.
    /// `offset` and `len / 2` must be multiples of the erase size ([`region_len`] gives
    /// a fitting length). Nothing is read or written yet.
    pub fn new(flash: F, offset: u32, len: u32) -> Result<Self, StoreError<F::Error>> {
        let bad = |what| Err(StoreError::Config { what });
        let erase = max1(F::ERASE_SIZE);
        let end = (offset as usize).checked_add(len as usize);
        // Offsets are u32: the end of the region must be one too.
        if end.is_none_or(|end| end > flash.capacity() || end > u32::MAX as usize) {
            return bad("the region extends beyond the flash");
        }
        if !(offset as usize).is_multiple_of(erase) {
            return bad("the region does not start at an erase sector");
        }
        let slot = len / 2;
        if slot == 0 || !len.is_multiple_of(2) || !(slot as usize).is_multiple_of(erase) {
            return bad("the region is not two slots of whole erase sectors");
        }
        if !(F::WRITE_SIZE > 0 && F::READ_SIZE > 0 && erase.is_multiple_of(unit::<F>())) {
            return bad("the flash's read and write sizes do not divide its erase size");
        }
        let store = Store {
            flash,
            base: offset,
            slot_len: slot,
            newest: None,
        };
        if store.record_capacity() < persist::HEADER_LEN + CRC_LEN {
            return bad("the slots are too small for any record");
        }
        Ok(store)
    }

    /// The largest record a slot holds, in bytes (compare with
    /// [`persist::encoded_len`] or [`max_record_len`]).
    pub fn record_capacity(&self) -> usize {
        let room = (self.slot_len as usize).saturating_sub(body_offset::<F>());
        (room / unit::<F>() * unit::<F>()).saturating_sub(SLOT_HEADER_LEN)
    }

    /// Bytes per slot.
    pub fn slot_len(&self) -> u32 {
        self.slot_len
    }

    /// The flash.
    pub fn flash(&self) -> &F {
        &self.flash
    }

    /// The flash, mutably. Writing to the store's region behind its back is noticed
    /// only by the next [`Store::load`] or [`Store::newest`].
    pub fn flash_mut(&mut self) -> &mut F {
        self.newest = None;
        &mut self.flash
    }

    /// The flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    /// Checks both slots and returns the newest valid state without loading it, or
    /// `None` when nothing valid is stored.
    pub fn newest(&mut self, scratch: &mut [u8]) -> Result<Option<Stored>, StoreError<F::Error>> {
        let chunk = chunk::<F>(scratch)?;
        Ok(self.scan(chunk)?.0)
    }

    /// Loads the newest valid state into `head` and, if given, `learner` (exactly as
    /// [`persist::decode_into`] would: the destination must have the stored dimensions,
    /// a learner the stored optimizer or none stored), and returns where it was found.
    ///
    /// Errors: [`StoreError::NothingStored`] when no save has completed,
    /// [`StoreError::Record`] when the newest committed state is damaged and nothing
    /// older is valid, or it does not fit the destination; in both cases `head` and
    /// `learner` are unchanged.
    pub fn load<H: Storage, L: LearnerState>(
        &mut self,
        head: &mut Head<H>,
        learner: Option<&mut L>,
        scratch: &mut [u8],
    ) -> Result<Stored, StoreError<F::Error>> {
        let chunk = chunk::<F>(scratch)?;
        let (newest, damage) = self.scan(chunk)?;
        let found = match (newest, damage) {
            (Some(found), _) => found,
            (None, Some(e)) => return Err(StoreError::Record(e)),
            (None, None) => return Err(StoreError::NothingStored),
        };
        let stored = found.header;
        let mismatch = |expected| {
            StoreError::Record(DecodeError::DimsMismatch {
                stored: stored.dims,
                expected,
            })
        };
        if head.dims() != stored.dims {
            return Err(mismatch(head.dims()));
        }
        if let Some(l) = &learner {
            if l.dims() != stored.dims {
                return Err(mismatch(l.dims()));
            }
            let expected = l.code();
            if stored.optimizer != 0 && stored.optimizer != expected {
                return Err(StoreError::Record(DecodeError::OptimizerMismatch {
                    stored: stored.optimizer,
                    expected,
                }));
            }
        }
        // Second pass: the same bytes again, now into the destination.
        let start = self.slot_start(found.slot) + body_offset::<F>() as u32;
        let end = start + align_up(SLOT_HEADER_LEN + found.len, unit::<F>()) as u32;
        let mut rd = Reader::new(&mut self.flash, chunk, start, end);
        rd.skip(SLOT_HEADER_LEN).map_err(StoreError::Flash)?;
        let sink = Sink {
            params: head.params_mut(),
            learner: learner.map(|l| l as &mut dyn LearnerState),
        };
        match read_record(&mut rd, found.len, Some(sink)) {
            Ok(h) if h == stored => {}
            Ok(_) | Err(Fault::Bad(_)) => {
                self.newest = None;
                return Err(StoreError::Verify {
                    what: "the record changed between checking and loading it",
                });
            }
            Err(Fault::Flash(e)) => {
                self.newest = None;
                return Err(StoreError::Flash(e));
            }
        }
        head.set_classes(stored.classes);
        Ok(found)
    }

    /// Saves `head` and, if given, `learner`'s step count, generator and optimizer
    /// state (as [`persist::encode`] would) into the slot that does not hold the newest
    /// valid state, and returns the new state's place. A power cut or error at any
    /// point leaves the previous state loadable.
    ///
    /// Errors: [`StoreError::Encode`] and [`StoreError::SlotTooSmall`] before anything
    /// is erased; [`StoreError::Flash`] and [`StoreError::Verify`] from the writing.
    pub fn save<H: Storage, L: LearnerState>(
        &mut self,
        head: &Head<H>,
        learner: Option<&L>,
        scratch: &mut [u8],
    ) -> Result<Stored, StoreError<F::Error>> {
        let chunk = chunk::<F>(scratch)?;
        let record = Framed::new(head, learner).map_err(StoreError::Encode)?;
        let len = record.len();
        // The slot header stores the record's length as a u32.
        if u32::try_from(len).is_err() {
            return Err(StoreError::Encode(EncodeError::TooLarge));
        }
        let capacity = self.record_capacity();
        if len > capacity {
            return Err(StoreError::SlotTooSmall {
                needed: len,
                capacity,
            });
        }
        let previous = match self.newest {
            Some(known) => known,
            None => self.scan(chunk)?.0,
        };
        // A sequence number that wrapped to 0 would lose to the state before it: only a
        // forged or foreign flash gets there (2^64 saves), and it must be erased.
        let (slot, seq) = match previous {
            Some(p) => match p.seq.checked_add(1) {
                Some(seq) => (1 - p.slot, seq),
                None => {
                    return Err(StoreError::Config {
                        what: "the stored sequence number is the largest possible: erase the store",
                    });
                }
            },
            None => (0, 1),
        };
        // From here on the cached knowledge holds only if everything succeeds.
        self.newest = None;
        let start = self.slot_start(slot);
        let erase = max1(F::ERASE_SIZE) as u32;
        let mut sector = start;
        while sector < start + self.slot_len {
            self.flash
                .erase(sector, sector + erase)
                .map_err(StoreError::Flash)?;
            sector += erase;
        }
        let mut header = [0xFFu8; SLOT_HEADER_LEN];
        header[field::MAGIC].copy_from_slice(&SLOT_MAGIC);
        header[field::FORMAT].copy_from_slice(&FORMAT.to_le_bytes());
        header[field::SEQ].copy_from_slice(&seq.to_le_bytes());
        header[field::LEN].copy_from_slice(&(len as u32).to_le_bytes());
        let body = start + body_offset::<F>() as u32;
        let mut w = Writer {
            flash: &mut self.flash,
            buf: &mut *chunk,
            fill: 0,
            next: body,
        };
        w.put(&header).map_err(StoreError::Flash)?;
        write_record(&mut w, &record).map_err(StoreError::Flash)?;
        w.flush().map_err(StoreError::Flash)?;
        // Read back before committing: only a checked record gets a marker.
        let end = body + align_up(SLOT_HEADER_LEN + len, unit::<F>()) as u32;
        let found = match self.check_body(slot, chunk, end) {
            Ok(Ok((h, stored))) if h == header && stored.len == len => stored,
            Ok(_) => {
                return Err(StoreError::Verify {
                    what: "the record read back differs from the one written",
                });
            }
            Err(e) => return Err(StoreError::Flash(e)),
        };
        let marker_len = body_offset::<F>();
        let marker = &mut chunk[..marker_len];
        marker.fill(0xFF);
        marker[commit::MAGIC].copy_from_slice(&COMMIT_MAGIC);
        marker[commit::CRC].copy_from_slice(&CRC32.checksum(&header).to_le_bytes());
        self.flash
            .write(start, &chunk[..marker_len])
            .map_err(StoreError::Flash)?;
        match self.check_slot(slot, chunk) {
            Ok(SlotState::Valid(s)) if s == found => {}
            Ok(_) => {
                return Err(StoreError::Verify {
                    what: "the commit marker read back differs from the one written",
                });
            }
            Err(e) => return Err(StoreError::Flash(e)),
        }
        self.newest = Some(Some(found));
        Ok(found)
    }

    /// Erases both slots: afterwards nothing is stored.
    pub fn erase_all(&mut self) -> Result<(), StoreError<F::Error>> {
        self.newest = None;
        let erase = max1(F::ERASE_SIZE) as u32;
        let mut sector = self.base;
        while sector < self.base + 2 * self.slot_len {
            self.flash
                .erase(sector, sector + erase)
                .map_err(StoreError::Flash)?;
            sector += erase;
        }
        self.newest = Some(None);
        Ok(())
    }

    fn slot_start(&self, slot: usize) -> u32 {
        self.base + slot as u32 * self.slot_len
    }

    /// Checks both slots: the newest valid state, and why a committed slot was not
    /// valid (if one was not).
    #[allow(clippy::type_complexity)]
    fn scan(
        &mut self,
        chunk: &mut [u8],
    ) -> Result<(Option<Stored>, Option<DecodeError>), StoreError<F::Error>> {
        let mut newest: Option<Stored> = None;
        let mut damage = None;
        for slot in 0..2 {
            match self.check_slot(slot, chunk).map_err(StoreError::Flash)? {
                SlotState::Valid(s) => {
                    if newest.is_none_or(|n| s.seq > n.seq) {
                        newest = Some(s);
                    }
                }
                SlotState::Corrupt(e) => damage = Some(e),
                SlotState::Empty => {}
            }
        }
        self.newest = Some(newest);
        Ok((newest, damage))
    }

    /// Reads and checks one slot: marker, header, record.
    fn check_slot(&mut self, slot: usize, chunk: &mut [u8]) -> Result<SlotState, F::Error> {
        let start = self.slot_start(slot);
        let marker_len = body_offset::<F>();
        let mut marker = [0u8; MARKER_LEN];
        Reader::new(&mut self.flash, chunk, start, start + marker_len as u32).bytes(&mut marker)?;
        if marker[commit::MAGIC] != COMMIT_MAGIC {
            return Ok(SlotState::Empty);
        }
        let body = start + marker_len as u32;
        let end = start + self.slot_len;
        let mut header = [0u8; SLOT_HEADER_LEN];
        Reader::new(&mut self.flash, chunk, body, end).bytes(&mut header)?;
        if marker[commit::CRC] != CRC32.checksum(&header).to_le_bytes() {
            // A torn marker, or one left from before a torn erase.
            return Ok(SlotState::Empty);
        }
        let bad = |what| Ok(SlotState::Corrupt(DecodeError::BadHeader { what }));
        if header[field::MAGIC] != SLOT_MAGIC {
            return bad("not an edgetune flash slot");
        }
        if header[field::FORMAT] != FORMAT.to_le_bytes() {
            return bad("unsupported flash slot format");
        }
        let len = record_len(&header);
        if len > self.record_capacity() {
            return bad("record length exceeds the slot");
        }
        let end = body + align_up(SLOT_HEADER_LEN + len, unit::<F>()) as u32;
        Ok(match self.check_body(slot, chunk, end)? {
            Ok((_, stored)) => SlotState::Valid(stored),
            Err(e) => SlotState::Corrupt(e),
        })
    }

    /// Reads a slot's header and record (up to `end`) and checks the record.
    #[allow(clippy::type_complexity)]
    fn check_body(
        &mut self,
        slot: usize,
        chunk: &mut [u8],
        end: u32,
    ) -> Result<Result<([u8; SLOT_HEADER_LEN], Stored), DecodeError>, F::Error> {
        let body = self.slot_start(slot) + body_offset::<F>() as u32;
        let mut rd = Reader::new(&mut self.flash, chunk, body, end);
        let mut header = [0u8; SLOT_HEADER_LEN];
        rd.bytes(&mut header)?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&header[field::SEQ]);
        let seq = u64::from_le_bytes(seq);
        let len = record_len(&header);
        match read_record(&mut rd, len, None) {
            Ok(h) => Ok(Ok((
                header,
                Stored {
                    slot,
                    seq,
                    len,
                    header: h,
                },
            ))),
            Err(Fault::Bad(e)) => Ok(Err(e)),
            Err(Fault::Flash(e)) => Err(e),
        }
    }
}

/// The scratch buffer cut to whole read/write units; it must hold a padded marker.
fn chunk<F: NorFlash>(scratch: &mut [u8]) -> Result<&mut [u8], StoreError<F::Error>> {
    let u = unit::<F>();
    let n = scratch.len() / u * u;
    if n < body_offset::<F>() {
        return Err(StoreError::ScratchTooSmall {
            needed: body_offset::<F>(),
            available: scratch.len(),
        });
    }
    Ok(&mut scratch[..n])
}
