//! Where things sit in a flash region: the slot header's and commit marker's constants,
//! the read/write unit, and the sizes of a record, a slot and a region ([`super`]'s
//! module docs show the layout).

use embedded_storage::nor_flash::NorFlash;

use crate::head::Dims;
use crate::learn::Optimizer;
use crate::persist::{self, CRC_LEN};

/// The first four bytes of a slot header.
pub const SLOT_MAGIC: [u8; 4] = *b"ETFS";
/// The first four bytes of a commit marker.
pub const COMMIT_MAGIC: [u8; 4] = *b"ETOK";
/// The slot format this build writes and reads.
pub const FORMAT: u16 = 1;
/// Length of a slot header in bytes.
pub const SLOT_HEADER_LEN: usize = field::LEN.end;
/// Length of a commit marker in bytes (before padding to the flash's write unit).
pub const MARKER_LEN: usize = commit::CRC.end;

/// Byte ranges of the slot header's fields; integers are little-endian.
pub(super) mod field {
    use core::ops::Range;

    /// [`SLOT_MAGIC`](super::SLOT_MAGIC).
    pub const MAGIC: Range<usize> = 0..4;
    /// Slot format, u16 ([`FORMAT`](super::FORMAT)).
    pub const FORMAT: Range<usize> = 4..6;
    /// Sequence number, u64 (bytes 6..8 are reserved, `0xFFFF`).
    pub const SEQ: Range<usize> = 8..16;
    /// Record length, u32.
    pub const LEN: Range<usize> = 16..20;
}

/// Byte ranges of the commit marker's fields.
pub(super) mod commit {
    use core::ops::Range;

    /// [`COMMIT_MAGIC`](super::COMMIT_MAGIC).
    pub const MAGIC: Range<usize> = 0..4;
    /// CRC-32 of the slot header, u32.
    pub const CRC: Range<usize> = 4..8;
}

const fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The smallest number of bytes the store reads or writes at once, at offsets that are
/// multiples of it: the least common multiple of the read and write sizes.
pub const fn unit<F: NorFlash>() -> usize {
    let (r, w) = (max1(F::READ_SIZE), max1(F::WRITE_SIZE));
    r / gcd(r, w) * w
}

pub(super) const fn max1(n: usize) -> usize {
    if n == 0 { 1 } else { n }
}

pub(super) const fn align_up(n: usize, to: usize) -> usize {
    n.div_ceil(to).saturating_mul(to)
}

/// Offset of the slot header in a slot (the marker's padded length).
pub(super) const fn body_offset<F: NorFlash>() -> usize {
    align_up(MARKER_LEN, unit::<F>())
}

/// The longest [`persist`] record a head of `dims` can have, with a learner using
/// `optimizer` (`None`: saved without a learner). Use it to size the flash region at
/// compile time ([`region_len`]).
pub const fn max_record_len(dims: Dims, optimizer: Option<&Optimizer>) -> usize {
    let per_param = match optimizer {
        Some(o) => o.state_per_param(),
        None => 0,
    };
    max_record_len_with(dims, dims.param_len().saturating_mul(per_param))
}

/// The longest [`persist`] record a head of `dims` can have with a learner state of
/// `learner_values` values (for a streaming LDA, its
/// [`Slda::state_len`](crate::slda::Slda::state_len)).
pub const fn max_record_len_with(dims: Dims, learner_values: usize) -> usize {
    let params = dims.param_len();
    let opt = learner_values;
    let payload = 5 // step, u32
        + 10 // generator state, u64
        + persist::varint_len(params as u64)
        + persist::varint_len(opt as u64);
    persist::HEADER_LEN
        .saturating_add(payload)
        .saturating_add(params.saturating_add(opt).saturating_mul(4))
        .saturating_add(CRC_LEN)
}

/// Bytes one slot needs on flash `F` for records of up to `record_len` bytes: marker,
/// header and record, rounded up to whole erase sectors.
pub const fn slot_len<F: NorFlash>(record_len: usize) -> usize {
    let body = align_up(SLOT_HEADER_LEN.saturating_add(record_len), unit::<F>());
    align_up(body_offset::<F>().saturating_add(body), max1(F::ERASE_SIZE))
}

/// Bytes the region of a [`Store`](super::Store) needs on flash `F` for records of up to `record_len`
/// bytes: two slots.
pub const fn region_len<F: NorFlash>(record_len: usize) -> usize {
    slot_len::<F>(record_len).saturating_mul(2)
}

/// The record length a slot header holds.
pub(super) fn record_len(header: &[u8; SLOT_HEADER_LEN]) -> usize {
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[field::LEN]);
    u32::from_le_bytes(len) as usize
}
