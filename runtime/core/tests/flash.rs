//! The NOR flash store (`edgetune_core::flash`) on a simulated NOR flash with true NOR
//! semantics (erase sets 0xFF, a write only clears bits and only into erased words,
//! aligned to its write and erase sizes), that loses power after any number of word
//! writes and sector erases, tearing the word or sector it was busy with. After every
//! cut the flash is "rebooted" and loaded: the state is exactly the one before the save
//! or the one after it, and the next save on the torn flash works.

mod common;

use common::allocations;

use edgetune_core::flash::{self, Store, StoreError};
use edgetune_core::persist::{self, DecodeError, EncodeError, SLDA_DIAGONAL, SLDA_FULL};
use edgetune_core::rng::Rng;
use edgetune_core::slda::{Covariance, Diagonal, Full, Slda};
use edgetune_core::{Config, Dims, Head, Learner, Optimizer};
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash, check_erase, check_read,
    check_write,
};

type V = Vec<f32>;

// ---------------------------------------------------------------------------------
// The simulated flash

/// How the operation that the power cut interrupts is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tear {
    /// Not started: the word or sector is unchanged.
    Nothing,
    /// Partly done: a random part of the bits changed.
    Random,
    /// Done but for one bit (or one byte of a sector).
    AllButOne,
    /// Complete, but the power went before the driver returned.
    Completed,
}

const TEARS: [Tear; 4] = [
    Tear::Nothing,
    Tear::Random,
    Tear::AllButOne,
    Tear::Completed,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PowerLoss;

impl NorFlashError for PowerLoss {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}

/// A NOR flash of `W`-byte words, `E`-byte sectors and `R`-byte reads. Misuse (a
/// misaligned or out-of-bounds access, a write into a word that is not erased) panics:
/// the store must never do it.
#[derive(Debug, Clone)]
struct Sim<const W: usize, const E: usize, const R: usize> {
    mem: Vec<u8>,
    /// Word writes and sector erases completed since power-on.
    ops: usize,
    /// The operation (counted from 0 since power-on) during which the power goes.
    cut_at: Option<usize>,
    tear: Tear,
    off: bool,
    rng: Rng,
}

impl<const W: usize, const E: usize, const R: usize> Sim<W, E, R> {
    fn new(mem: Vec<u8>) -> Self {
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

    fn blank(len: usize) -> Self {
        Self::new(vec![0xFF; len])
    }

    /// Power cut during operation `k`, leaving it as `tear` says (`seed` for `Random`).
    fn cut(mut self, k: usize, tear: Tear, seed: u64) -> Self {
        self.cut_at = Some(k);
        self.tear = tear;
        self.rng = Rng::new(seed);
        self
    }

    /// Power back on: same contents, no pending cut.
    fn reboot(&self) -> Self {
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

// ---------------------------------------------------------------------------------
// Heads and learners

fn learner(dims: Dims, opt: Optimizer, seed: u64) -> Learner<V> {
    let cfg = Config {
        optimizer: opt,
        lr: 0.05,
        seed,
        ..Config::DEFAULT
    };
    Learner::new(dims, cfg, vec![0.0; Learner::<()>::state_len(dims, &opt)]).unwrap()
}

/// A head and Adam learner after `steps` steps on samples from `seed`.
fn trained(dims: Dims, seed: u64, steps: usize) -> (Head<V>, Learner<V>) {
    let mut head = Head::alloc(dims, dims.capacity).unwrap();
    head.init(seed);
    let mut l = learner(dims, Optimizer::ADAM, seed);
    let mut rng = Rng::new(seed ^ 0x5EED);
    for _ in 0..steps {
        let x: V = (0..dims.input).map(|_| rng.uniform(-1.0, 1.0)).collect();
        l.step(&mut head, &x, rng.below(dims.capacity)).unwrap();
    }
    (head, l)
}

/// Fresh destination storage, filled with values no saved state has.
fn fresh(dims: Dims) -> (Head<V>, Learner<V>) {
    let mut head = Head::alloc(dims, 0).unwrap();
    head.params_mut().fill(0.125);
    (head, learner(dims, Optimizer::ADAM, 77))
}

/// Everything persisted about a head and learner, byte for byte.
fn snap(head: &Head<V>, learner: &Learner<V>) -> Vec<u8> {
    persist::encode_to_vec(head, Some(learner)).unwrap()
}

type Flash = Sim<4, 128, 1>;

/// Region of `Sim<W, E, R>` for heads of `dims` with Adam, one sector in: the region
/// does not start at offset 0.
fn region<const W: usize, const E: usize, const R: usize>(dims: Dims) -> (u32, u32, usize) {
    let record = flash::max_record_len(dims, Some(&Optimizer::ADAM));
    let len = flash::region_len::<Sim<W, E, R>>(record);
    (E as u32, len as u32, len + 2 * E)
}

/// Reboots `sim` and loads it into fresh storage: the state's snapshot, or the error.
fn boot<const W: usize, const E: usize, const R: usize>(
    sim: &Sim<W, E, R>,
    dims: Dims,
    scratch: &mut [u8],
) -> Result<Vec<u8>, StoreError<PowerLoss>> {
    let (offset, len, _) = region::<W, E, R>(dims);
    let mut store = Store::new(sim.reboot(), offset, len).unwrap();
    let (mut head, mut l) = fresh(dims);
    let before = snap(&head, &l);
    match store.load(&mut head, Some(&mut l), scratch) {
        Ok(found) => {
            assert_eq!(found.header.classes, head.classes());
            Ok(snap(&head, &l))
        }
        Err(e) => {
            assert_eq!(snap(&head, &l), before, "a refused load changed the head");
            Err(e)
        }
    }
}

/// Saves on a powered-on copy of `sim`; the flash afterwards and the operations taken.
fn save<const W: usize, const E: usize, const R: usize>(
    sim: &Sim<W, E, R>,
    dims: Dims,
    state: &(Head<V>, Learner<V>),
    scratch: &mut [u8],
) -> (Sim<W, E, R>, usize) {
    let (offset, len, _) = region::<W, E, R>(dims);
    let mut store = Store::new(sim.reboot(), offset, len).unwrap();
    store.save(&state.0, Some(&state.1), scratch).unwrap();
    let sim = store.into_inner();
    let ops = sim.ops;
    (sim, ops)
}

// ---------------------------------------------------------------------------------
// Power cuts

/// Saves a first state and then three more, cutting the power during every single
/// operation of every save (and of the first one) with every kind of tear; returns how
/// many cuts were made.
fn cut_everywhere<const W: usize, const E: usize, const R: usize>(
    dims: Dims,
    scratch_len: usize,
) -> usize {
    let mut scratch = vec![0u8; scratch_len];
    let (offset, len, total) = region::<W, E, R>(dims);
    let states: Vec<_> = (0..5)
        .map(|i| trained(dims, 10 + i, 3 * i as usize))
        .collect();
    let later = trained(dims, 99, 4);
    let marker_ops = flash::unit::<Sim<W, E, R>>().max(flash::MARKER_LEN) / W;
    let mut flash = Sim::<W, E, R>::blank(total);
    assert!(matches!(
        boot(&flash, dims, &mut scratch),
        Err(StoreError::NothingStored)
    ));
    let mut cuts = 0;
    for (i, state) in states.iter().enumerate() {
        let before = (i > 0).then(|| snap(&states[i - 1].0, &states[i - 1].1));
        let after = snap(&state.0, &state.1);
        let (next, n) = save(&flash, dims, state, &mut scratch);
        assert!(n > marker_ops, "a save takes {n} operations");
        for tear in TEARS {
            let mut flipped = false;
            for k in 0..=n {
                let sim = flash.reboot().cut(k, tear, (i * 1000 + k) as u64);
                let mut store = Store::new(sim, offset, len).unwrap();
                let saved = store.save(&state.0, Some(&state.1), &mut scratch);
                let torn = store.into_inner();
                if k < n {
                    assert_eq!(saved, Err(StoreError::Flash(PowerLoss)), "cut at {k}");
                } else {
                    assert!(saved.is_ok(), "uncut save: {saved:?}");
                }
                cuts += usize::from(k < n);
                // Reboot: the old state or the new one, nothing else.
                let loaded = boot(&torn, dims, &mut scratch);
                let is_new = match &loaded {
                    Ok(s) if *s == after => true,
                    Ok(s) if Some(s) == before.as_ref() => false,
                    Err(StoreError::NothingStored) if before.is_none() => false,
                    other => panic!(
                        "save {i}, {tear:?} cut during operation {k} of {n}: loaded {:?}",
                        other.as_ref().map(|s| s.len())
                    ),
                };
                // Until the marker is being written the old state stays; once the new
                // one loads it keeps loading at every later cut point.
                if k < n - marker_ops {
                    assert!(
                        !is_new,
                        "save {i}: new state before the commit (cut at {k})"
                    );
                }
                if k == n {
                    assert!(is_new, "save {i}: completed save does not load");
                }
                assert!(is_new || !flipped, "save {i}, {tear:?}: back to old at {k}");
                flipped |= is_new;
                // The torn flash takes the next save.
                let (again, _) = save(&torn, dims, &later, &mut scratch);
                assert_eq!(
                    boot(&again, dims, &mut scratch),
                    Ok(snap(&later.0, &later.1)),
                    "save after a cut at {k}"
                );
            }
        }
        flash = next;
    }
    cuts
}

#[test]
fn power_cut_during_any_operation_leaves_the_old_or_the_new_state() {
    let mut cuts = 0;
    // 4-byte words, 128-byte sectors (slots of several sectors), byte reads.
    cuts += cut_everywhere::<4, 128, 1>(Dims::linear(5, 4), 64);
    // An MLP head; 8-byte words (ECC flashes), 16-byte reads, a scratch of one unit.
    cuts += cut_everywhere::<8, 256, 16>(Dims::mlp(4, 3, 3), 16);
    // Byte-writable flash with small sectors and a scratch larger than a slot.
    cuts += cut_everywhere::<1, 64, 1>(Dims::linear(3, 2), 4096);
    // 32-byte write units (the marker is padded to one).
    cuts += cut_everywhere::<32, 512, 4>(Dims::linear(6, 3), 96);
    println!("power cut during {cuts} different flash operations");
    assert!(cuts > 4000, "{cuts}");
}

/// Saves with a power cut at a random operation, again and again on the same flash
/// (never a clean reboot in between): each load is the last state that loaded or the
/// one being saved, and states never go back.
#[test]
fn repeated_torn_saves_on_the_same_flash() {
    let dims = Dims::mlp(3, 2, 3);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 40];
    let mut rng = Rng::new(4);
    let mut sim = Flash::blank(total);
    let mut current: Option<Vec<u8>> = None;
    let mut committed = 0;
    for round in 0..300u64 {
        let state = trained(dims, 1000 + round, (round % 7) as usize);
        let want = snap(&state.0, &state.1);
        let k = rng.below(120);
        let tear = TEARS[rng.below(4)];
        let mut store = Store::new(sim.reboot().cut(k, tear, round), offset, len).unwrap();
        let result = store.save(&state.0, Some(&state.1), &mut scratch);
        sim = store.into_inner();
        match boot(&sim, dims, &mut scratch) {
            Ok(s) if s == want => {
                committed += 1;
                current = Some(s);
            }
            Ok(s) => {
                assert_eq!(Some(&s), current.as_ref(), "round {round}");
                assert!(result.is_err(), "round {round}: saved but not loaded");
            }
            Err(StoreError::NothingStored) => assert!(current.is_none()),
            Err(e) => panic!("round {round}: {e}"),
        }
    }
    assert!((30..270).contains(&committed), "{committed} commits");
}

// ---------------------------------------------------------------------------------
// Blank, foreign and damaged flash

#[test]
fn blank_flash_holds_nothing() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let mut store = Store::new(Flash::blank(total), offset, len).unwrap();
    assert_eq!(store.newest(&mut scratch), Ok(None));
    let (mut head, mut l) = fresh(dims);
    let err = store
        .load(&mut head, Some(&mut l), &mut scratch)
        .unwrap_err();
    assert_eq!(err, StoreError::NothingStored);
    assert_eq!(err.to_string(), "no saved state in flash");
    assert!(head.params().iter().all(|v| *v == 0.125));
}

#[test]
fn garbage_is_refused_and_then_overwritten() {
    let dims = Dims::linear(5, 4);
    let (_, _, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let state = trained(dims, 3, 5);
    let mut rng = Rng::new(8);
    let random = |rng: &mut Rng| (0..total).map(|_| rng.next_u64() as u8).collect();
    // Random bytes, all zeros (RAM standing in for flash), all 0x55.
    let fills: Vec<Vec<u8>> = vec![
        random(&mut rng),
        random(&mut rng),
        vec![0; total],
        vec![0x55; total],
    ];
    for mem in fills {
        let sim = Flash::new(mem);
        assert_eq!(
            boot(&sim, dims, &mut scratch),
            Err(StoreError::NothingStored)
        );
        let (sim, _) = save(&sim, dims, &state, &mut scratch);
        assert_eq!(boot(&sim, dims, &mut scratch), Ok(snap(&state.0, &state.1)));
    }
}

/// Puts `record` into slot `slot` by hand, in the documented layout, committed.
fn put_slot(sim: &mut Flash, offset: u32, len: u32, slot: usize, seq: u64, record: &[u8]) {
    let start = offset as usize + slot * len as usize / 2;
    let area = &mut sim.mem[start..start + len as usize / 2];
    area.fill(0xFF);
    let mut header = Vec::new();
    header.extend_from_slice(&flash::SLOT_MAGIC);
    header.extend_from_slice(&flash::FORMAT.to_le_bytes());
    header.extend_from_slice(&[0xFF, 0xFF]);
    header.extend_from_slice(&seq.to_le_bytes());
    header.extend_from_slice(&(record.len() as u32).to_le_bytes());
    assert_eq!(header.len(), flash::SLOT_HEADER_LEN);
    let crc = crc32(&header);
    area[..4].copy_from_slice(&flash::COMMIT_MAGIC);
    area[4..8].copy_from_slice(&crc.to_le_bytes());
    area[8..28].copy_from_slice(&header);
    area[28..28 + record.len()].copy_from_slice(record);
}

/// CRC-32 (ISO-HDLC), bitwise.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn fix_crc(record: &mut [u8]) {
    let n = record.len() - 4;
    let crc = crc32(&record[..n]);
    record[n..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn slots_hold_persist_records_in_the_documented_layout() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let state = trained(dims, 3, 5);
    let (sim, _) = save(&Flash::blank(total), dims, &state, &mut scratch);
    let record = snap(&state.0, &state.1);
    let start = offset as usize;
    assert_eq!(&sim.mem[start..start + 4], &flash::COMMIT_MAGIC);
    assert_eq!(&sim.mem[start + 8..start + 12], &flash::SLOT_MAGIC);
    assert_eq!(&sim.mem[start + 28..start + 28 + record.len()], &record[..]);
    // The same bytes put by hand load the same, in either slot.
    for slot in 0..2 {
        let mut by_hand = Flash::blank(total);
        put_slot(&mut by_hand, offset, len, slot, 7, &record);
        let mut store = Store::new(by_hand.reboot(), offset, len).unwrap();
        let found = store.newest(&mut scratch).unwrap().unwrap();
        assert_eq!((found.slot, found.seq, found.len), (slot, 7, record.len()));
        assert_eq!(boot(&by_hand, dims, &mut scratch), Ok(record.clone()));
    }
}

#[test]
fn damage_falls_back_to_the_older_slot() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let (a, b) = (trained(dims, 1, 2), trained(dims, 2, 4));
    let (sim, _) = save(&Flash::blank(total), dims, &a, &mut scratch);
    let (sim, _) = save(&sim, dims, &b, &mut scratch);
    let slot_b = offset as usize + len as usize / 2;
    // Every single bit flip in the newest slot's header or record: the older state.
    // Marker, header and record.
    for byte in (0..28 + persist::encoded_len(&b.0, Some(&b.1))).step_by(3) {
        let mut rot = sim.reboot();
        rot.mem[slot_b + byte] ^= 1 << (byte % 8);
        assert_eq!(
            boot(&rot, dims, &mut scratch),
            Ok(snap(&a.0, &a.1)),
            "flip at {byte}"
        );
    }
    // Both damaged: refused, with the record's own error.
    let mut rot = sim.reboot();
    rot.mem[slot_b + 100] ^= 4;
    rot.mem[offset as usize + 100] ^= 4;
    assert!(matches!(
        boot(&rot, dims, &mut scratch),
        Err(StoreError::Record(DecodeError::Checksum { .. }))
    ));
    // Saving then replaces the damaged slots.
    let (sim, _) = save(&rot, dims, &b, &mut scratch);
    assert_eq!(boot(&sim, dims, &mut scratch), Ok(snap(&b.0, &b.1)));
}

/// Every single-byte change of a record, with its CRC fixed, is accepted by the store
/// exactly when `persist::decode_into` accepts it, with the same result.
#[test]
fn loading_agrees_with_persist_decode_into() {
    let dims = Dims::mlp(3, 2, 3);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 24];
    let state = trained(dims, 6, 3);
    let good = snap(&state.0, &state.1);
    let mut checked = 0;
    for at in 0..good.len() - 4 {
        for x in [0x01u8, 0x80, 0xFF] {
            let mut record = good.clone();
            record[at] ^= x;
            fix_crc(&mut record);
            let (mut h1, mut l1) = fresh(dims);
            let want = persist::decode_into(&record, &mut h1, Some(&mut l1));
            let mut sim = Flash::blank(total);
            put_slot(&mut sim, offset, len, 0, 1, &record);
            let mut store = Store::new(sim, offset, len).unwrap();
            let (mut h2, mut l2) = fresh(dims);
            let got = store.load(&mut h2, Some(&mut l2), &mut scratch);
            match (&want, &got) {
                (Ok(h), Ok(found)) => assert_eq!(*h, found.header),
                (Err(_), Err(StoreError::Record(_))) => {}
                _ => panic!("byte {at} ^ {x:#x}: persist {want:?}, flash {got:?}"),
            }
            assert_eq!(snap(&h1, &l1), snap(&h2, &l2), "byte {at} ^ {x:#x}");
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * (good.len() - 4));
}

/// Saved with and without a learner, any optimizer, loaded into learners of every
/// optimizer or none: the same outcome as through `persist`.
#[test]
fn every_optimizer_and_destination_matches_persist() {
    let dims = Dims::mlp(3, 2, 3);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 32];
    let opts = [
        Optimizer::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
        Optimizer::SGD_MOMENTUM,
        Optimizer::ADAM,
        Optimizer::ADAMW,
    ];
    for src in [None].into_iter().chain(opts.map(Some)) {
        let mut head = Head::alloc(dims, 2).unwrap();
        head.init(3);
        let mut l = src.map(|o| learner(dims, o, 5));
        if let Some(l) = l.as_mut() {
            for i in 0..4 {
                l.step(&mut head, &[1.0, -0.5, i as f32], i % 2).unwrap();
            }
        }
        let record = persist::encode_to_vec(&head, l.as_ref()).unwrap();
        let mut store = Store::new(Flash::blank(total), offset, len).unwrap();
        store.save(&head, l.as_ref(), &mut scratch).unwrap();
        let start = offset as usize + 28;
        assert_eq!(
            &store.flash().mem[start..start + record.len()],
            &record[..],
            "{src:?}"
        );
        for dst in [None].into_iter().chain(opts.map(Some)) {
            // Two identical destinations that have learned a little.
            let make = || {
                let mut h = Head::alloc(dims, 1).unwrap();
                h.init(11);
                let mut l = dst.map(|o| learner(dims, o, 9));
                if let Some(l) = l.as_mut() {
                    l.step(&mut h, &[0.5, 0.5, 0.5], 0).unwrap();
                }
                (h, l)
            };
            let ((mut h1, mut l1), (mut h2, mut l2)) = (make(), make());
            let want = persist::decode_into(&record, &mut h1, l1.as_mut());
            let got = store.load(&mut h2, l2.as_mut(), &mut scratch);
            match (&want, &got) {
                (Ok(h), Ok(found)) => assert_eq!(*h, found.header),
                (Err(e), Err(StoreError::Record(f))) => assert_eq!(e, f),
                _ => panic!("{src:?} into {dst:?}: persist {want:?}, flash {got:?}"),
            }
            assert_eq!(bits(h1.params()), bits(h2.params()));
            assert_eq!(h1.classes(), h2.classes());
            let state = |l: &Option<Learner<V>>| {
                l.as_ref()
                    .map(|l| persist::encode_to_vec(&h1, Some(l)).unwrap())
            };
            assert_eq!(state(&l1), state(&l2), "{src:?} into {dst:?}");
        }
    }
}

/// A streaming LDA's statistics (both shapes) travel through the flash as through
/// `persist`, byte for byte; a record of the other shape, or with impossible
/// statistics (a count that is not whole) under a valid checksum, is refused by both
/// before anything changes.
#[test]
fn streaming_lda_statistics_roundtrip_and_impossible_ones_are_refused() {
    slda_through_flash::<Diagonal>();
    slda_through_flash::<Full>();
}

fn slda_through_flash<K: Covariance>() {
    let dims = Dims::linear(3, 3);
    let values = Slda::<(), K>::state_len(3, 3);
    let record_len = flash::max_record_len_with(dims, values);
    let len = flash::region_len::<Flash>(record_len);
    let (offset, total) = (128u32, len + 256);
    let mut scratch = [0u8; 16];
    let new = || Slda::<V, K>::new(3, 3, 4.0, vec![0.0; Slda::<(), K>::storage_len(3, 3)]).unwrap();
    let mut slda = new();
    let mut rng = Rng::new(21);
    for i in 0..12 {
        let x: V = (0..3)
            .map(|_| rng.uniform(-1.0, 1.0) + i as f32 % 3.0)
            .collect();
        slda.learn(&x, i % 3).unwrap();
    }
    let mut head = Head::alloc(dims, 3).unwrap();
    slda.write_head(&mut head, 1.0).unwrap();
    let record = persist::encode_to_vec(&head, Some(&slda)).unwrap();
    assert!(record.len() <= record_len);
    let mut store = Store::new(Flash::blank(total), offset, len as u32).unwrap();
    store.save(&head, Some(&slda), &mut scratch).unwrap();
    let start = offset as usize + 28;
    assert_eq!(&store.flash().mem[start..start + record.len()], &record[..]);
    let mut store = Store::new(store.into_inner(), offset, len as u32).unwrap();
    let (mut h2, mut l2) = (Head::alloc(dims, 0).unwrap(), new());
    store.load(&mut h2, Some(&mut l2), &mut scratch).unwrap();
    assert_eq!(bits(h2.params()), bits(head.params()));
    assert_eq!(bits(l2.state()), bits(slda.state()));
    // The other shape, or a gradient learner: refused, nothing changed.
    let other = if K::FULL { SLDA_DIAGONAL } else { SLDA_FULL };
    let mut wrong = Slda::<V, Diagonal>::new(3, 3, 4.0, vec![0.0; 200]).unwrap();
    let mut adam = learner(dims, Optimizer::ADAM, 1);
    let mut h3 = Head::alloc(dims, 0).unwrap();
    let refused = |e: Result<_, StoreError<PowerLoss>>| {
        matches!(
            e,
            Err(StoreError::Record(DecodeError::OptimizerMismatch { .. }))
        )
    };
    assert!(refused(store.load(&mut h3, Some(&mut adam), &mut scratch)));
    if other == SLDA_FULL {
        let mut full = Slda::<V, Full>::new(3, 3, 4.0, vec![0.0; 200]).unwrap();
        assert!(refused(store.load(&mut h3, Some(&mut full), &mut scratch)));
    } else {
        assert!(refused(store.load(&mut h3, Some(&mut wrong), &mut scratch)));
    }
    assert_eq!(h3.classes(), 0);
    // Class 1's count (meta, center, scale, then the counts) made 1.5.
    let params = dims.param_len();
    let at = 28 + 1 + 1 + 1 + 4 * params + 1 + 4 * (8 + 3 + 3 + 1);
    assert_eq!(&record[at..at + 4], &4.0f32.to_le_bytes());
    let mut bad = record.clone();
    bad[at..at + 4].copy_from_slice(&1.5f32.to_le_bytes());
    fix_crc(&mut bad);
    let (mut h4, mut l4) = (Head::alloc(dims, 0).unwrap(), new());
    let before = (bits(h4.params()), bits(l4.state()));
    let e = persist::decode_into(&bad, &mut h4, Some(&mut l4)).unwrap_err();
    assert!(matches!(e, DecodeError::BadPayload { .. }), "{e}");
    assert!(
        e.to_string().contains("impossible learner statistics"),
        "{e}"
    );
    let mut sim = Flash::blank(total);
    put_slot(&mut sim, offset, len as u32, 0, 1, &bad);
    let mut store = Store::new(sim, offset, len as u32).unwrap();
    let got = store.load(&mut h4, Some(&mut l4), &mut scratch);
    assert!(
        matches!(got, Err(StoreError::Record(f)) if f == e),
        "{got:?}"
    );
    assert_eq!((bits(h4.params()), bits(l4.state())), before);
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ---------------------------------------------------------------------------------
// Refusals

#[test]
fn a_record_too_large_for_a_slot_is_refused_before_erasing() {
    let small = Dims::linear(5, 4);
    let big = Dims::linear(40, 4);
    let (offset, len, total) = region::<4, 128, 1>(small);
    let mut scratch = [0u8; 64];
    let state = trained(small, 1, 2);
    let (sim, _) = save(&Flash::blank(total), small, &state, &mut scratch);
    let mut store = Store::new(sim.reboot(), offset, len).unwrap();
    let (head, l) = trained(big, 1, 1);
    let err = store.save(&head, Some(&l), &mut scratch).unwrap_err();
    let needed = persist::encoded_len(&head, Some(&l));
    assert_eq!(
        err,
        StoreError::SlotTooSmall {
            needed,
            capacity: store.record_capacity()
        }
    );
    assert!(err.to_string().contains("a flash slot holds at most"));
    // Not even an erase happened.
    assert_eq!(store.flash().ops, 0);
    assert_eq!(store.flash().mem, sim.mem);
    // The exact capacity is usable.
    assert!(store.record_capacity() >= persist::encoded_len(&state.0, Some(&state.1)));
    assert!(store.record_capacity() < needed);
}

#[test]
fn unsaveable_and_mismatched_states_are_refused() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let (mut head, l) = trained(dims, 1, 2);
    let mut store = Store::new(Flash::blank(total), offset, len).unwrap();
    let other = learner(Dims::linear(5, 3), Optimizer::ADAM, 1);
    assert!(matches!(
        store.save(&head, Some(&other), &mut scratch),
        Err(StoreError::Encode(EncodeError::DimsMismatch { .. }))
    ));
    head.params_mut()[3] = f32::NAN;
    assert_eq!(
        store.save(&head, Some(&l), &mut scratch),
        Err(StoreError::Encode(EncodeError::NonFinite))
    );
    assert_eq!(store.flash().ops, 0);
    head.params_mut()[3] = 0.0;
    store.save(&head, Some(&l), &mut scratch).unwrap();
    // Loading into another shape or optimizer: refused, destination unchanged.
    let mut wrong = Head::alloc(Dims::linear(5, 5), 0).unwrap();
    assert!(matches!(
        store.load(&mut wrong, None::<&mut Learner<V>>, &mut scratch),
        Err(StoreError::Record(DecodeError::DimsMismatch { .. }))
    ));
    let (mut h2, _) = fresh(dims);
    let mut sgd = learner(dims, Optimizer::SGD_MOMENTUM, 1);
    assert_eq!(
        store.load(&mut h2, Some(&mut sgd), &mut scratch),
        Err(StoreError::Record(DecodeError::OptimizerMismatch {
            stored: 2,
            expected: 1
        }))
    );
    assert!(h2.params().iter().all(|v| *v == 0.125));
}

#[test]
fn misconfigured_regions_and_scratch_are_refused() {
    let config = |r: Result<Store<Flash>, StoreError<PowerLoss>>| match r {
        Err(StoreError::Config { what }) => what,
        other => panic!("{other:?}"),
    };
    let blank = || Flash::blank(1024);
    assert!(config(Store::new(blank(), 64, 512)).contains("erase sector"));
    assert!(config(Store::new(blank(), 0, 384)).contains("two slots"));
    assert!(config(Store::new(blank(), 512, 1024)).contains("beyond"));
    assert!(config(Store::new(blank(), 0, 0)).contains("two slots"));
    assert!(Store::new(blank(), 0, 256).is_ok());
    let mut store = Store::new(blank(), 256, 512).unwrap();
    assert_eq!(store.slot_len(), 256);
    assert_eq!(store.record_capacity(), 256 - 8 - 20);
    let (head, l) = trained(Dims::linear(2, 2), 1, 1);
    assert_eq!(
        store.save(&head, Some(&l), &mut [0u8; 7]),
        Err(StoreError::ScratchTooSmall {
            needed: 8,
            available: 7
        })
    );
    let mut wide = Store::new(Sim::<32, 512, 4>::blank(2048), 0, 1024).unwrap();
    assert!(matches!(
        wide.newest(&mut [0u8; 31]),
        Err(StoreError::ScratchTooSmall { needed: 32, .. })
    ));
}

#[test]
fn sizes_are_computed_at_compile_time() {
    const DIMS: Dims = Dims::linear(64, 10);
    const RECORD: usize = flash::max_record_len(DIMS, Some(&Optimizer::ADAM));
    const REGION: usize = flash::region_len::<Sim<4, 4096, 1>>(RECORD);
    assert_eq!(REGION, 2 * 8192);
    let (head, l) = trained(DIMS, 1, 1);
    let real = persist::encoded_len(&head, Some(&l));
    assert!(real <= RECORD && RECORD - real < 16, "{real} {RECORD}");
    assert_eq!(
        flash::max_record_len(Dims::linear(2, 2), None),
        28 + 5 + 10 + 1 + 1 + 6 * 4 + 4
    );
}

#[test]
fn erase_all_forgets_everything() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let (sim, _) = save(
        &Flash::blank(total),
        dims,
        &trained(dims, 1, 1),
        &mut scratch,
    );
    let mut store = Store::new(sim, offset, len).unwrap();
    assert!(store.newest(&mut scratch).unwrap().is_some());
    store.erase_all().unwrap();
    assert_eq!(store.newest(&mut scratch), Ok(None));
    assert_eq!(
        boot(&store.into_inner(), dims, &mut scratch),
        Err(StoreError::NothingStored)
    );
}

#[test]
fn sequence_numbers_grow_and_slots_alternate() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let mut scratch = [0u8; 64];
    let mut store = Store::new(Flash::blank(total), offset, len).unwrap();
    for i in 1..=5u64 {
        let state = trained(dims, i, i as usize);
        let saved = store.save(&state.0, Some(&state.1), &mut scratch).unwrap();
        assert_eq!((saved.seq, saved.slot), (i, (i as usize + 1) % 2));
        // A store that knows nothing yet finds the same.
        let mut other = Store::new(store.flash().reboot(), offset, len).unwrap();
        assert_eq!(other.newest(&mut scratch), Ok(Some(saved)));
    }
}

#[test]
fn saving_and_loading_never_allocate() {
    let dims = Dims::linear(5, 4);
    let (offset, len, total) = region::<4, 128, 1>(dims);
    let state = trained(dims, 1, 3);
    let (mut head, mut l) = fresh(dims);
    let mut store = Store::new(Flash::blank(total), offset, len).unwrap();
    let mut scratch = [0u8; 32];
    let (result, count) = allocations(|| {
        store.save(&state.0, Some(&state.1), &mut scratch)?;
        store.save(&state.0, Some(&state.1), &mut scratch)?;
        store.load(&mut head, Some(&mut l), &mut scratch)
    });
    assert!(result.is_ok());
    assert_eq!(count, 0, "heap allocations");
    assert_eq!(snap(&head, &l), snap(&state.0, &state.1));
}
