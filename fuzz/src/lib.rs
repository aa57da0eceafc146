//! What the fuzz targets share: the control byte that lets a mutated input get past a
//! checksum, and a head with a learner of whatever kind a record's header names.
//!
//! Every target's input but the request line's starts with one control byte; the rest
//! is the file.
//! When its lowest bit is set, the target rewrites the file's CRC-32 trailer(s) before
//! decoding, so that libFuzzer's mutations reach the code behind the checksum instead
//! of stopping at it; when it is clear, the bytes are decoded as they are (so damaged
//! checksums are fuzzed too). The seeds (`fuzz/corpus/`, written by
//! `scripts/fuzz.sh seeds`) carry the byte.

// edgetune-device's state file, request line and fleet state, compiled here from the
// crate's own source files: the device crate needs tract, which built with the sanitizer
// took 20 minutes, while these modules need only serde, postcard, anyhow, crc and
// `edgetune`'s bundle, slda and trust modules. So they must keep using nothing else of
// their crate: CI's fuzz build fails if they do.
#[allow(dead_code)] // what only the service calls (`Request::rollback_to`)
#[path = "../../runtime/device/src/service/request.rs"]
pub mod request;
#[path = "../../runtime/device/src/state.rs"]
pub mod state;
#[path = "../../runtime/device/src/fleet.rs"]
pub mod fleet;

use crc::{CRC_32_ISO_HDLC, Crc};
use edgetune_core::persist::{self, Header, LearnerState};
use edgetune_core::slda::{Diagonal, Full, Slda};
use edgetune_core::{Config, Dims, Head, Learner, Optimizer};
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash, check_erase, check_read, check_write,
};

/// The CRC-32 every format of the project uses (ISO-HDLC, as zlib's).
pub const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Splits a fuzz input into (fix checksums?, the file's bytes).
pub fn control(data: &[u8]) -> Option<(bool, &[u8])> {
    let (&first, rest) = data.split_first()?;
    Some((first & 1 == 1, rest))
}

/// The file of a fuzz input for a format with a CRC-32 trailer: its bytes after the
/// control byte, with the trailer rewritten when the control byte says so.
pub fn file_with_trailer(data: &[u8]) -> Option<Vec<u8>> {
    let (fix, bytes) = control(data)?;
    let mut bytes = bytes.to_vec();
    if fix {
        fix_trailer(&mut bytes);
    }
    Some(bytes)
}

/// Rewrites the last 4 bytes of `bytes` as the little-endian CRC-32 of the bytes before
/// them (the trailer of a `persist` record, a bundle and a state file).
pub fn fix_trailer(bytes: &mut [u8]) {
    if let Some(n) = bytes.len().checked_sub(4) {
        let crc = CRC32.checksum(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A learner of any kind a record can hold.
pub enum AnyLearner {
    Gradient(Learner<Vec<f32>>),
    SldaFull(Slda<Vec<f32>, Full>),
    SldaDiagonal(Slda<Vec<f32>, Diagonal>),
}

impl AnyLearner {
    /// The learner whose state a record of this header carries, filled with `fill`
    /// where it has free values (so that "unchanged" can be checked), or `None` when
    /// the dimensions are too large to allocate here (the format allows heads larger
    /// than a fuzzer's memory: nothing is allocated from an unverified header).
    pub fn for_header(header: &Header) -> Option<AnyLearner> {
        let dims = header.dims;
        if dims.param_len() > 1 << 20 {
            return None;
        }
        let optimizer = match header.optimizer {
            0 => Optimizer::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            1 => Optimizer::SGD_MOMENTUM,
            2 => Optimizer::ADAM,
            3 => Optimizer::ADAMW,
            persist::SLDA_FULL => {
                return Slda::<Vec<f32>, Full>::new(
                    dims.input,
                    dims.capacity,
                    1e-3,
                    vec![0.0; Slda::<Vec<f32>, Full>::storage_len(dims.input, dims.capacity)],
                )
                .ok()
                .map(AnyLearner::SldaFull);
            }
            persist::SLDA_DIAGONAL => {
                return Slda::<Vec<f32>, Diagonal>::new(
                    dims.input,
                    dims.capacity,
                    1e-3,
                    vec![0.0; Slda::<Vec<f32>, Diagonal>::storage_len(dims.input, dims.capacity)],
                )
                .ok()
                .map(AnyLearner::SldaDiagonal);
            }
            _ => return None,
        };
        let cfg = Config {
            optimizer,
            ..Config::DEFAULT
        };
        Learner::alloc(dims, cfg).ok().map(AnyLearner::Gradient)
    }

    /// The learner as the trait `persist` reads and writes.
    pub fn state(&mut self) -> &mut dyn LearnerDyn {
        match self {
            AnyLearner::Gradient(l) => l,
            AnyLearner::SldaFull(l) => l,
            AnyLearner::SldaDiagonal(l) => l,
        }
    }
}

/// [`LearnerState`] made object-safe for the targets: decode into, encode from, and a
/// fingerprint (step, generator, values' bits) to compare.
pub trait LearnerDyn {
    fn decode(
        &mut self,
        bytes: &[u8],
        head: &mut Head<Vec<f32>>,
    ) -> Result<Header, persist::DecodeError>;
    fn encode(&self, head: &Head<Vec<f32>>) -> Vec<u8>;
    fn fingerprint(&self) -> (u32, u64, Vec<u32>);
}

impl<L: LearnerState> LearnerDyn for L {
    fn decode(
        &mut self,
        bytes: &[u8],
        head: &mut Head<Vec<f32>>,
    ) -> Result<Header, persist::DecodeError> {
        persist::decode_into(bytes, head, Some(self))
    }
    fn encode(&self, head: &Head<Vec<f32>>) -> Vec<u8> {
        persist::encode_to_vec(head, Some(self)).expect("a decoded head re-encodes")
    }
    fn fingerprint(&self) -> (u32, u64, Vec<u32>) {
        let bits = self.values().iter().map(|v| v.to_bits()).collect();
        (self.step(), self.rng(), bits)
    }
}

/// A head of `dims` whose parameters are all `fill` (a value no decoder writes by
/// chance), with no classes.
pub fn sentinel_head(dims: Dims, fill: f32) -> Option<Head<Vec<f32>>> {
    let mut head = Head::alloc(dims, 0).ok()?;
    head.params_mut().fill(fill);
    Some(head)
}

/// A head's parameters as bits (so that -0.0 and 0.0 differ), and its class count.
pub fn head_fingerprint(head: &Head<Vec<f32>>) -> (usize, Vec<u32>) {
    (
        head.classes(),
        head.params().iter().map(|v| v.to_bits()).collect(),
    )
}

/// The normal form of a record `bytes` that decoded and re-encoded as `again`: the bytes
/// themselves, except that a streaming LDA record's values 2 and 3 (labels since the
/// last refresh, prior flag) are the restored learner's (`Slda::restore` refreshes the
/// learner, and keeps the destination's prior, which a record does not carry), and that a plain-SGD record whose step and generator are 0
/// is what saving without a learner writes (the destination learner is reset, not
/// restored, by such a record).
pub fn normal_form(header: &Header, bytes: &[u8], again: &[u8], n_values: usize) -> Vec<u8> {
    let mut expected = bytes.to_vec();
    if matches!(
        header.optimizer,
        persist::SLDA_FULL | persist::SLDA_DIAGONAL
    ) && again.len() == bytes.len()
        && n_values > 3
    {
        let at = bytes.len() - 4 - 4 * n_values + 4 * 2;
        expected[at..at + 8].copy_from_slice(&again[at..at + 8]);
        fix_trailer(&mut expected);
    }
    expected
}

/// Where two encodings differ (for assertion messages): the byte offsets, at most 8.
pub fn differences(a: &[u8], b: &[u8]) -> String {
    let at: Vec<usize> = (0..a.len().max(b.len()))
        .filter(|&i| a.get(i) != b.get(i))
        .take(8)
        .collect();
    format!(
        "lengths {} and {}, bytes differ at {at:?}",
        a.len(),
        b.len()
    )
}

/// The flash target's simulated NOR flash, in RAM: 4-byte words, 256-byte sectors;
/// erase sets bytes to 0xFF, a write can only clear bits.
pub struct Ram(pub Vec<u8>);

impl ErrorType for Ram {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for Ram {
    const READ_SIZE: usize = 1;
    fn read(&mut self, at: u32, out: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, at, out.len())?;
        out.copy_from_slice(&self.0[at as usize..][..out.len()]);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.0.len()
    }
}

impl NorFlash for Ram {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 256;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to)?;
        self.0[from as usize..to as usize].fill(0xFF);
        Ok(())
    }
    fn write(&mut self, at: u32, data: &[u8]) -> Result<(), Self::Error> {
        check_write(self, at, data.len())?;
        let dest = &mut self.0[at as usize..][..data.len()];
        dest.iter_mut().zip(data).for_each(|(d, s)| *d &= s);
        Ok(())
    }
}
