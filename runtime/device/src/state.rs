//! What a device has learned, on disk: one file per written state in the state
//! directory, so that a power cut at any instant leaves the newest complete state or the
//! one before it, never a part of one.
//!
//! `DIR/state-0000000042.bin` is the 42nd state written to DIR:
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic [`MAGIC`] (`b"ETSTATE\0"`) |
//! | 2 | format version, u16 ([`VERSION`]) |
//! | 8 | sequence number, u64 (must match the file name) |
//! | 4 | payload length, u32 |
//! | payload length | postcard: a [`DeviceState`], then (version 2) its [`Learning`], then (version 3) its [`FleetPart`] (version 3: the own labels' statistics, 4: the others', 5: and the own-class bias) |
//! | 4 | CRC-32 (ISO-HDLC) of everything before it, u32 |
//!
//! A state is written to `state-N.tmp`, flushed to disk, renamed to `state-N.bin`, and
//! the directory is flushed ([`edgetune::bundle::write_atomic`]); then all but the newest
//! `keep` states are deleted. Loading takes the newest file that checks out (length,
//! magic, version, checksum, sequence number, payload), and names each newer file it had
//! to skip and why. A CRC-32 catches every error of up to 32 consecutive bits, so any
//! one damaged byte is found.
//!
//! A `.lock` file in the directory, locked (`flock`) by `edgetune serve` while it runs,
//! keeps `rollback` and `reset` from changing states under a running service. Those two
//! *pin* the state that was newest before them (an empty `pinned-N` file): pruning never
//! deletes a pinned state, so what a reset or rollback left behind can be rolled back to
//! however long the device served since.
//!
//! The fuzz crate compiles this file on its own (`fuzz/src/lib.rs`, without tract): it
//! uses nothing else of this crate.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crc::{CRC_32_ISO_HDLC, Crc};
use serde::{Deserialize, Serialize};

/// The first eight bytes of a state file.
pub const MAGIC: [u8; 8] = *b"ETSTATE\0";
/// The state format version this build writes. Version 1 (before the closed-form
/// learner) is still read: its [`Learning`] is empty, and the engine rebuilds the class
/// statistics from the replay buffer. Version 2 (before fleets) is read with an empty
/// [`FleetPart`]. Version 3 kept the device's own labels' statistics where version 4
/// keeps the other devices' ([`FleetPart::own_v3`]). Version 4 is read with no
/// own-class bias ([`FleetPart::own_bias`] 0: the next merge chooses one).
pub const VERSION: u16 = 5;
const HEADER_LEN: usize = 8 + 2 + 8 + 4;
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Everything a device has learned: enough to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Identity of the backbone the embeddings come from ([`backbone_id`]): a state is
    /// only valid with the bundle it was learned on.
    pub backbone: u32,
    /// Class names, in the head's class order.
    pub classes: Vec<String>,
    /// The head and its optimizer state, in the [`edgetune::persist`] format; `None` after
    /// a reset (start from the bundle's head).
    pub head: Option<Vec<u8>>,
    /// The replay buffer.
    pub buffer: BufferImage,
    /// The per-class embedding means ([`edgetune::classes::ClassMeans`] storage); empty
    /// for none.
    pub means: Vec<f32>,
    /// The held-out labeled samples of the regression guard.
    pub guard: Samples,
    /// The replay sampler's generator state.
    pub replay_rng: u64,
    /// Counts of what happened.
    pub counters: Counters,
    /// Accuracy of the head on the guard samples when this state was written.
    pub guard_accuracy: Option<f32>,
    /// Recent request latencies, µs (the newest last).
    pub latency_us: Vec<u32>,
    /// How this state came about.
    pub origin: Origin,
    /// The closed-form learner's statistics and the calibration (version 2; written
    /// after the rest of the payload).
    #[serde(skip)]
    pub learning: Learning,
    /// The other devices' labels as the fleet last sent them (version 3; written after the
    /// learning part).
    #[serde(skip)]
    pub fleet: FleetPart,
}

/// The fleet part of a state: the statistics of the other devices' labels as the fleet
/// last sent them ([`crate::engine::Engine::merge_fleet`]). The device's own labels are
/// the whole minus the bundle's part minus this, derived when the fleet asks for them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetPart {
    /// [`edgetune::slda::Slda::state`] of the other devices' labels, in this device's
    /// class order; empty when nothing was merged (version 4).
    pub others: Vec<f32>,
    /// Labels of the other devices in the last fleet state merged.
    pub others_labels: u64,
    /// A version 3 state's own labels' statistics (it kept those instead of the
    /// others'); the engine turns them into `others` once it has the bundle's part
    /// ([`crate::engine::Engine::migrate_fleet`]). Never written.
    #[serde(skip)]
    pub own_v3: Vec<f32>,
    /// The logit added to the device's own classes (`Engine::is_own`; version 5).
    pub own_bias: f32,
}

/// Version 4's fleet part: without the own-class bias.
#[derive(Deserialize)]
struct FleetPartV4 {
    others: Vec<f32>,
    others_labels: u64,
}

/// Version 3's fleet part: the device's own labels' statistics.
#[derive(Deserialize)]
struct FleetPartV3 {
    own: Vec<f32>,
    others_labels: u64,
}

/// What version 2 added: the closed-form learner and the calibration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Learning {
    /// [`edgetune::slda::Slda::state`]; empty when the gradient head learns.
    pub slda: Vec<f32>,
    /// Kept prequential predictions ([`edgetune::calibrate::Temperature::parts`]): rows,
    /// next row, temperature, values.
    pub calibration: (u32, u32, f32, Vec<f32>),
    /// Labels whose prediction before learning them was right, and labels of a class
    /// the head already had (prequential accuracy).
    pub prequential: (u64, u64),
}

/// The replay buffer's contents ([`edgetune::buffer::SampleBuffer::restore`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BufferImage {
    /// `(label, seq)` per slot.
    pub slots: Vec<(u32, u64)>,
    /// The labels present, in the buffer's class order.
    pub class_order: Vec<u32>,
    /// The next sequence number.
    pub next_seq: u64,
    /// The samples, slot after slot.
    pub features: Vec<f32>,
}

/// Labeled embeddings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Samples {
    /// Class of each sample.
    pub labels: Vec<u32>,
    /// The embeddings, one after the other.
    pub features: Vec<f32>,
}

/// Counts of what happened since the state was created (or reset).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Predictions made.
    pub predictions: u64,
    /// Labels received (learned, held out or refused).
    pub labels: u64,
    /// Updates of the head that were kept.
    pub updates: u64,
    /// Updates the regression guard rolled back.
    pub refused: u64,
    /// Labels received per class.
    pub labels_per_class: Vec<u32>,
    /// The id the next sample gets.
    pub next_sample: u64,
}

/// How a state came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// Written by `serve` after learning.
    Learned,
    /// Written by `reset`: back to the bundle's head.
    Reset,
    /// Written by `rollback`: a copy of the state with this sequence number.
    Rollback(u64),
}

/// Identity of a bundle's backbone: CRC-32 of the backbone bytes, the input shape and
/// the embedding size. A state learned on one backbone is meaningless on another.
pub fn backbone_id(bundle: &edgetune::bundle::Bundle) -> u32 {
    let mut d = CRC32.digest();
    d.update(&bundle.backbone);
    for s in &bundle.manifest.input.shape {
        d.update(&(*s as u64).to_le_bytes());
    }
    d.update(&(bundle.manifest.embedding.size as u64).to_le_bytes());
    d.finalize()
}

/// Why a state file could not be read. Each says what is wrong, for the warning that
/// names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Shorter than its header says.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes found.
        found: usize,
    },
    /// Not a state file.
    BadMagic,
    /// Another format version.
    Version(u16),
    /// Checksum mismatch: damaged.
    Checksum {
        /// Stored.
        stored: u32,
        /// Computed.
        computed: u32,
    },
    /// The sequence number inside differs from the file name's.
    Seq {
        /// In the file name.
        name: u64,
        /// Inside.
        inside: u64,
    },
    /// The payload does not decode.
    Payload(String),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Truncated { needed, found } => {
                write!(f, "truncated: {found} bytes, a complete state has {needed}")
            }
            Invalid::BadMagic => write!(f, "not an edgetune state file (bad magic)"),
            Invalid::Version(v) => write!(
                f,
                "state format version {v}, this build reads version {VERSION}"
            ),
            Invalid::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is damaged"
            ),
            Invalid::Seq { name, inside } => {
                write!(f, "its name says state {name} but it holds state {inside}")
            }
            Invalid::Payload(what) => write!(f, "malformed contents: {what}"),
        }
    }
}

impl std::error::Error for Invalid {}

/// Encodes `state` as state number `seq` (the file format above).
pub fn encode(seq: u64, state: &DeviceState) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 64);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    // Serializing plain Vecs, Strings and numbers into a Vec cannot fail.
    let out = postcard::to_extend(state, out).unwrap_or_default();
    let out = postcard::to_extend(&state.learning, out).unwrap_or_default();
    let mut out = postcard::to_extend(&state.fleet, out).unwrap_or_default();
    let payload = (out.len() - HEADER_LEN) as u32;
    out[18..22].copy_from_slice(&payload.to_le_bytes());
    let crc = CRC32.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a state file's bytes: the sequence number inside and the state.
pub fn decode(bytes: &[u8]) -> Result<(u64, DeviceState), Invalid> {
    if bytes.len() < HEADER_LEN + 4 {
        return Err(Invalid::Truncated {
            needed: HEADER_LEN + 4,
            found: bytes.len(),
        });
    }
    if bytes[..8] != MAGIC {
        return Err(Invalid::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    let seq = u64::from_le_bytes(bytes[10..18].try_into().unwrap_or_default());
    let payload = u32::from_le_bytes(bytes[18..22].try_into().unwrap_or_default()) as usize;
    let needed = HEADER_LEN.saturating_add(payload).saturating_add(4);
    if bytes.len() != needed {
        return Err(Invalid::Truncated {
            needed,
            found: bytes.len(),
        });
    }
    let (body, tail) = bytes.split_at(needed - 4);
    let stored = u32::from_le_bytes(tail.try_into().unwrap_or_default());
    let computed = CRC32.checksum(body);
    if stored != computed {
        return Err(Invalid::Checksum { stored, computed });
    }
    if !(1..=VERSION).contains(&version) {
        return Err(Invalid::Version(version));
    }
    let bad = |e: postcard::Error| Invalid::Payload(e.to_string());
    let (mut state, rest): (DeviceState, _) =
        postcard::take_from_bytes(&body[HEADER_LEN..]).map_err(bad)?;
    // Version 1 ends after the state, version 2 after its learning part, version 3 after
    // its fleet part: nothing may follow (postcard's `from_bytes` would ignore it).
    let rest = if version == 1 {
        rest
    } else {
        let (learning, rest) = postcard::take_from_bytes(rest).map_err(bad)?;
        state.learning = learning;
        if version == 2 {
            rest
        } else {
            if version == 3 {
                let (v3, rest): (FleetPartV3, _) = postcard::take_from_bytes(rest).map_err(bad)?;
                state.fleet = FleetPart {
                    others: Vec::new(),
                    others_labels: v3.others_labels,
                    own_v3: v3.own,
                    own_bias: 0.0,
                };
                rest
            } else if version == 4 {
                let (v4, rest): (FleetPartV4, _) = postcard::take_from_bytes(rest).map_err(bad)?;
                state.fleet = FleetPart {
                    others: v4.others,
                    others_labels: v4.others_labels,
                    own_v3: Vec::new(),
                    own_bias: 0.0,
                };
                rest
            } else {
                let (fleet, rest) = postcard::take_from_bytes(rest).map_err(bad)?;
                state.fleet = fleet;
                rest
            }
        }
    };
    if !rest.is_empty() {
        return Err(Invalid::Payload("bytes after the state".into()));
    }
    Ok((seq, state))
}

/// A state loaded from a directory, and the newer files that had to be skipped.
#[derive(Debug)]
pub struct Loaded {
    /// Its sequence number.
    pub seq: u64,
    /// The state.
    pub state: DeviceState,
    /// Its file.
    pub path: PathBuf,
    /// Newer state files that could not be used, and why: each is worth a warning.
    pub skipped: Vec<(PathBuf, String)>,
}

/// The state directory.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    keep: usize,
    lock: Option<File>,
}

/// File name of state number `seq`.
pub fn file_name(seq: u64) -> String {
    format!("state-{seq:010}.bin")
}

fn seq_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("state-")?.strip_suffix(".bin")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn io_err(action: &str, path: &Path, e: io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot {action} {}: {e}", path.display())
}

impl StateDir {
    /// Opens the state directory at `path`, creating it when `create` is set; keeps the
    /// newest `keep` states (at least 2) when writing.
    pub fn open(path: &Path, create: bool, keep: usize) -> anyhow::Result<StateDir> {
        if create {
            fs::create_dir_all(path).map_err(|e| io_err("create the state directory", path, e))?;
        }
        let meta = fs::metadata(path).map_err(|e| io_err("open the state directory", path, e))?;
        if !meta.is_dir() {
            anyhow::bail!("the state directory {} is not a directory", path.display());
        }
        // Listing it tells early whether it is readable.
        fs::read_dir(path).map_err(|e| io_err("read the state directory", path, e))?;
        Ok(StateDir {
            path: path.to_path_buf(),
            keep: keep.max(2),
            lock: None,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the directory's lock for as long as this value lives; fails at once when
    /// another process (a running `edgetune serve`) holds it.
    pub fn lock(&mut self) -> anyhow::Result<()> {
        let path = self.path.join(".lock");
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_err("create the lock file", &path, e))?;
        // Held through a read-only descriptor (flock needs no more): a service holds no
        // file of the directory open for writing between two writes, so the file system
        // can be remounted read-only under it (tests/serve/faults.rs).
        let file = fs::File::open(&path).map_err(|e| io_err("open the lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => {
                self.lock = Some(file);
                Ok(())
            }
            Err(fs::TryLockError::WouldBlock) => anyhow::bail!(
                "the state directory {} is in use by another edgetune process (a running `edgetune serve`?); stop it first",
                self.path.display()
            ),
            Err(fs::TryLockError::Error(e)) => Err(io_err("lock", &path, e)),
        }
    }

    /// The state files, oldest first: `(sequence number, path)`. Leftover temporary
    /// files of an interrupted write are ignored.
    pub fn list(&self) -> anyhow::Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.path)
            .map_err(|e| io_err("read the state directory", &self.path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_err("read the state directory", &self.path, e))?;
            if let Some(seq) = entry.file_name().to_str().and_then(seq_of) {
                out.push((seq, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads and checks state file `path` named as state `seq`.
    pub fn read(&self, seq: u64, path: &Path) -> Result<DeviceState, String> {
        let bytes = fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        let (inside, state) = decode(&bytes).map_err(|e| e.to_string())?;
        if inside != seq {
            return Err(Invalid::Seq { name: seq, inside }.to_string());
        }
        Ok(state)
    }

    /// The newest state that checks out, `None` when there is no state file at all.
    /// `accept` checks a decoded state further (e.g. against the bundle); a state it
    /// refuses is skipped like a damaged one. Errors when there are state files but none
    /// can be used.
    pub fn load_newest(
        &self,
        mut accept: impl FnMut(&DeviceState) -> Result<(), String>,
    ) -> anyhow::Result<Option<Loaded>> {
        let files = self.list()?;
        let mut skipped = Vec::new();
        for (seq, path) in files.iter().rev() {
            match self.read(*seq, path).and_then(|s| accept(&s).map(|()| s)) {
                Ok(state) => {
                    return Ok(Some(Loaded {
                        seq: *seq,
                        state,
                        path: path.clone(),
                        skipped,
                    }));
                }
                Err(why) => skipped.push((path.clone(), why)),
            }
        }
        if skipped.is_empty() {
            return Ok(None);
        }
        let list: Vec<String> = skipped
            .iter()
            .map(|(p, why)| format!("{}: {why}", p.display()))
            .collect();
        anyhow::bail!(
            "no usable state in {}: {} (`edgetune reset --state {}` starts over from the bundle's head)",
            self.path.display(),
            list.join("; "),
            self.path.display()
        )
    }

    /// Writes `state` as the next state (one above every state file present, damaged
    /// ones included, so none is ever overwritten), then deletes all but the newest
    /// `keep` that are not pinned. Returns its sequence number.
    pub fn write(&self, state: &DeviceState) -> anyhow::Result<u64> {
        let files = self.list()?;
        let seq = files.last().map_or(1, |(s, _)| s + 1);
        let path = self.path.join(file_name(seq));
        edgetune::bundle::write_atomic(&path, &encode(seq, state))
            // The cause (ENOSPC, EROFS…) with it: BundleError's own text leaves it to `source`.
            .map_err(|e| anyhow::Error::new(e).context(format!("cannot write state {seq}")))?;
        self.prune()?;
        Ok(seq)
    }

    /// Deletes the oldest unpinned state files so that `keep` unpinned ones remain.
    fn prune(&self) -> anyhow::Result<()> {
        let pinned = self.pinned()?;
        let unpinned: Vec<_> = self
            .list()?
            .into_iter()
            .filter(|(s, _)| !pinned.contains(s))
            .collect();
        for (_, path) in unpinned
            .iter()
            .take(unpinned.len().saturating_sub(self.keep))
        {
            fs::remove_file(path).map_err(|e| io_err("delete the old state", path, e))?;
        }
        Ok(())
    }

    /// Pins state `seq`: pruning keeps it.
    pub fn pin(&self, seq: u64) -> anyhow::Result<()> {
        let path = self.path.join(format!("pinned-{seq:010}"));
        edgetune::bundle::write_atomic(&path, b"")
            .map_err(|e| anyhow::Error::new(e).context(format!("cannot pin state {seq}")))
    }

    /// The pinned states' sequence numbers.
    pub fn pinned(&self) -> anyhow::Result<Vec<u64>> {
        let entries = fs::read_dir(&self.path)
            .map_err(|e| io_err("read the state directory", &self.path, e))?;
        let mut out: Vec<u64> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let digits = name.to_str()?.strip_prefix("pinned-")?.to_string();
                digits
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| digits.parse().ok())?
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Deletes temporary files left by a write that a crash interrupted.
    pub fn clean_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("state-") && name.contains(".bin.tmp-") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_states_still_load() {
        let mut s = sample();
        s.learning = Learning::default();
        s.fleet = FleetPart::default();
        // A version 1 file: the same payload without the learning and fleet parts.
        let tail = postcard::to_allocvec(&Learning::default()).unwrap().len()
            + postcard::to_allocvec(&FleetPart::default()).unwrap().len();
        assert_eq!(decode(&older(&s, 1, tail)).unwrap(), (3, s));
    }

    #[test]
    fn version_2_states_still_load() {
        let mut s = sample();
        s.fleet = FleetPart::default();
        let tail = postcard::to_allocvec(&FleetPart::default()).unwrap().len();
        assert_eq!(decode(&older(&s, 2, tail)).unwrap(), (3, s));
    }

    #[test]
    fn version_3_states_load_with_their_own_labels_apart() {
        // Version 3 wrote the own labels' statistics where version 4 writes the
        // others': the same bytes (without version 5's own-class bias), read into
        // `own_v3`.
        let s = sample();
        let (_, v3) = decode(&older(&s, 3, 4)).unwrap();
        assert_eq!(v3.fleet.own_v3, s.fleet.others);
        assert!(v3.fleet.others.is_empty());
        assert_eq!(v3.fleet.others_labels, 12);
        assert_eq!(v3.fleet.own_bias, 0.0);
    }

    #[test]
    fn version_4_states_load_without_an_own_class_bias() {
        let mut s = sample();
        let (_, v4) = decode(&older(&s, 4, 4)).unwrap();
        s.fleet.own_bias = 0.0;
        assert_eq!(v4, s);
    }

    /// `s` as state 3 in format `version`: its payload without its last `tail` bytes.
    fn older(s: &DeviceState, version: u16, tail: usize) -> Vec<u8> {
        let mut bytes = encode(3, s);
        let end = bytes.len() - 4 - tail;
        bytes.truncate(end);
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        let payload = (bytes.len() - HEADER_LEN) as u32;
        bytes[18..22].copy_from_slice(&payload.to_le_bytes());
        let crc = CRC32.checksum(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn sample() -> DeviceState {
        DeviceState {
            backbone: 7,
            classes: vec!["cat".into(), "dog".into()],
            head: Some(vec![1, 2, 3]),
            buffer: BufferImage {
                slots: vec![(0, 0), (1, 1)],
                class_order: vec![0, 1],
                next_seq: 2,
                features: vec![0.5; 8],
            },
            means: vec![0.0; 10],
            guard: Samples::default(),
            replay_rng: 99,
            counters: Counters::default(),
            guard_accuracy: Some(1.0),
            latency_us: vec![100, 200],
            origin: Origin::Learned,
            learning: Learning {
                slda: vec![1.0, 2.0],
                calibration: (1, 1, 1.5, vec![0.0, 2.0, 0.5, 0.25]),
                prequential: (3, 4),
            },
            fleet: FleetPart {
                others: vec![3.0, 4.0],
                others_labels: 12,
                own_v3: Vec::new(),
                own_bias: 2.5,
            },
        }
    }

    #[test]
    fn round_trip_and_every_damage_is_found() {
        let s = sample();
        let bytes = encode(3, &s);
        assert_eq!(decode(&bytes), Ok((3, s)));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            assert!(decode(&b).is_err(), "byte {i}");
            assert!(decode(&bytes[..i]).is_err(), "cut at {i}");
        }
    }

    /// Found by the `state` fuzz target: bytes after a version 2 state's learning part
    /// were ignored (the file decoded, and re-encoded shorter).
    #[test]
    fn trailing_bytes_are_refused() {
        let s = sample();
        let mut bytes = encode(3, &s);
        bytes.truncate(bytes.len() - 4);
        bytes.extend_from_slice(&[7, 7]);
        let payload = (bytes.len() - HEADER_LEN) as u32;
        bytes[18..22].copy_from_slice(&payload.to_le_bytes());
        let crc = CRC32.checksum(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&bytes),
            Err(Invalid::Payload("bytes after the state".into()))
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(seq_of(&file_name(42)), Some(42));
        assert_eq!(seq_of("state-.bin"), None);
        assert_eq!(seq_of("state-12.bin.tmp-1-0"), None);
        assert_eq!(seq_of("state-1x.bin"), None);
    }
}
