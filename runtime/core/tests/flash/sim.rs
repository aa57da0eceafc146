//! A simulated NOR flash that loses power after any number of operations.

use super::*;
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash, check_erase, check_read,
    check_write,
};

/// How the operation that the power cut interrupts is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tear {
    /// Not started: the word or sector is unchanged.
    Nothing,
    /// Partly done: a random part of the bits changed.
    Random,
    /// Done but for one bit (or one byte of a sector).
    AllButOne,
    /// Complete, but the power went before the driver returned.
    Completed,
}

pub(crate) const TEARS: [Tear; 4] = [
    Tear::Nothing,
    Tear::Random,
    Tear::AllButOne,
    Tear::Completed,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PowerLoss;

impl NorFlashError for PowerLoss {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}

/// A NOR flash of `W`-byte words, `E`-byte sectors and `R`-byte reads. Misuse (a
/// misaligned or out-of-bounds access, a write into a word that is not erased) panics:
/// the store must never do it.
#[derive(Debug, Clone)]
pub(crate) struct Sim<const W: usize, const E: usize, const R: usize> {
    pub(crate) mem: Vec<u8>,
    /// Word writes and sector erases completed since power-on.
    pub(crate) ops: usize,
    /// The operation (counted from 0 since power-on) during which the power goes.
    cut_at: Option<usize>,
    tear: Tear,
    off: bool,
    rng: Rng,
}

impl<const W: usize, const E: usize, const R: usize> Sim<W, E, R> {
    pub(crate) fn new(mem: Vec<u8>) -> Self {
        assert!(mem.len().is_multiple_of(E));
        Sim {
            mem,
            ops: 0,
            cut_at: None,
            tear: Tear::Nothing,
            off: false,
            rng: Rng::new(1),
        }
    }

    pub(crate) fn blank(len: usize) -> Self {
        Self::new(vec![0xFF; len])
    }

    /// Power cut during operation `k`, leaving it as `tear` says (`seed` for `Random`).
    pub(crate) fn cut(mut self, k: usize, tear: Tear, seed: u64) -> Self {
        self.cut_at = Some(k);
        self.tear = tear;
        self.rng = Rng::new(seed);
        self
    }

    /// Power back on: same contents, no pending cut.
    pub(crate) fn reboot(&self) -> Self {
        Self::new(self.mem.clone())
    }

    /// Counts an operation; `Ok(true)` when the power goes during it.
    fn op(&mut self) -> Result<bool, PowerLoss> {
        if self.off {
            return Err(PowerLoss);
        }
        if self.cut_at == Some(self.ops) {
            self.off = true;
            return Ok(true);
        }
        self.ops += 1;
        Ok(false)
    }
}

impl<const W: usize, const E: usize, const R: usize> ErrorType for Sim<W, E, R> {
    type Error = PowerLoss;
}

impl<const W: usize, const E: usize, const R: usize> ReadNorFlash for Sim<W, E, R> {
    const READ_SIZE: usize = R;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), PowerLoss> {
        if let Err(e) = check_read(self, offset, bytes.len()) {
            panic!("read of {} bytes at {offset}: {e}", bytes.len());
        }
        if self.off {
            return Err(PowerLoss);
        }
        bytes.copy_from_slice(&self.mem[offset as usize..][..bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl<const W: usize, const E: usize, const R: usize> NorFlash for Sim<W, E, R> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), PowerLoss> {
        if let Err(e) = check_erase(self, from, to) {
            panic!("erase of {from}..{to}: {e}");
        }
        for start in (from as usize..to as usize).step_by(E) {
            let torn = self.op()?;
            let sector = &mut self.mem[start..start + E];
            if !torn {
                sector.fill(0xFF);
                continue;
            }
            match self.tear {
                Tear::Nothing => {}
                Tear::Random => {
                    for b in sector.iter_mut() {
                        // Some bytes erased, the rest with a random part of their bits.
                        *b |= if self.rng.below(2) == 0 {
                            0xFF
                        } else {
                            self.rng.next_u64() as u8
                        };
                    }
                }
                Tear::AllButOne => {
                    let keep = self.rng.below(E);
                    let old = sector[keep];
                    sector.fill(0xFF);
                    sector[keep] = old | 0xFE;
                }
                Tear::Completed => sector.fill(0xFF),
            }
            return Err(PowerLoss);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), PowerLoss> {
        if let Err(e) = check_write(self, offset, bytes.len()) {
            panic!("write of {} bytes at {offset}: {e}", bytes.len());
        }
        for (i, data) in bytes.chunks_exact(W).enumerate() {
            let at = offset as usize + i * W;
            let torn = self.op()?;
            let word = &mut self.mem[at..at + W];
            assert!(
                word.iter().all(|&b| b == 0xFF),
                "write into a word that is not erased at {at}: {word:02x?}"
            );
            if !torn {
                word.iter_mut().zip(data).for_each(|(d, s)| *d &= s);
                continue;
            }
            // The bits to clear, as (byte, bit) pairs.
            let bits: Vec<(usize, u8)> = (0..W)
                .flat_map(|j| (0..8).map(move |b| (j, 1u8 << b)))
                .filter(|&(j, m)| data[j] & m == 0)
                .collect();
            let spared = if bits.is_empty() {
                usize::MAX
            } else {
                self.rng.below(bits.len())
            };
            for (n, &(j, m)) in bits.iter().enumerate() {
                let clear = match self.tear {
                    Tear::Nothing => false,
                    Tear::Random => self.rng.below(2) == 0,
                    Tear::AllButOne => n != spared,
                    Tear::Completed => true,
                };
                if clear {
                    word[j] &= !m;
                }
            }
            return Err(PowerLoss);
        }
        Ok(())
    }
}
