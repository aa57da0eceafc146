//! A NOR flash over the STORAGE memory region (memory.x), standing in for the data flash
//! of a real microcontroller: 4 KiB erase sectors, 4-byte program words, byte reads, and
//! NOR semantics (erase sets every bit, programming can only clear bits, and, as on most
//! flash controllers, programming a word that is not erased is an error). On a board,
//! the HAL's flash driver implements the same `embedded-storage` traits instead.

use core::sync::atomic::{AtomicBool, Ordering};

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash, check_erase, check_read,
    check_write,
};

/// Erase sector.
pub const SECTOR: usize = 4096;
/// Program word.
pub const WORD: usize = 4;

unsafe extern "C" {
    // memory.x
    static _storage_start: u8;
    static _storage_end: u8;
}

/// What the simulated flash controller refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// An access not aligned to the read, word or sector size.
    NotAligned,
    /// An access beyond the region.
    OutOfBounds,
    /// Programming a word that is not erased (at this offset).
    NotErased(u32),
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::NotAligned => NorFlashErrorKind::NotAligned,
            FlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            FlashError::NotErased(_) => NorFlashErrorKind::Other,
        }
    }
}

impl From<NorFlashErrorKind> for FlashError {
    fn from(kind: NorFlashErrorKind) -> Self {
        match kind {
            NorFlashErrorKind::NotAligned => FlashError::NotAligned,
            _ => FlashError::OutOfBounds,
        }
    }
}

/// The simulated flash: the whole STORAGE region, offsets from its start.
pub struct SimFlash {
    mem: &'static mut [u8],
}

impl SimFlash {
    /// The flash, once (`None` afterwards).
    pub fn take() -> Option<Self> {
        static TAKEN: AtomicBool = AtomicBool::new(false);
        if TAKEN.swap(true, Ordering::Relaxed) {
            return None;
        }
        let start = &raw const _storage_start as usize;
        let end = &raw const _storage_end as usize;
        // SAFETY: memory.x reserves STORAGE for this driver alone (nothing is linked
        // there), it is plain RAM in QEMU, and `TAKEN` makes this the only reference.
        let mem = unsafe { core::slice::from_raw_parts_mut(start as *mut u8, end - start) };
        Some(SimFlash { mem })
    }

    /// Where the region starts in the address space.
    pub fn address(&self) -> usize {
        self.mem.as_ptr() as usize
    }
}

impl ErrorType for SimFlash {
    type Error = FlashError;
}

impl ReadNorFlash for SimFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        check_read(self, offset, bytes.len())?;
        let at = offset as usize;
        bytes.copy_from_slice(&self.mem[at..at + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl NorFlash for SimFlash {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        check_erase(self, from, to)?;
        self.mem[from as usize..to as usize].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        check_write(self, offset, bytes.len())?;
        let at = offset as usize;
        let words = self.mem[at..at + bytes.len()].chunks_exact_mut(WORD);
        for (i, (word, data)) in words.zip(bytes.chunks_exact(WORD)).enumerate() {
            if word.iter().any(|&b| b != 0xFF) {
                return Err(FlashError::NotErased((at + i * WORD) as u32));
            }
            // Programming clears bits; it never sets one.
            word.iter_mut().zip(data).for_each(|(w, d)| *w &= d);
        }
        Ok(())
    }
}
