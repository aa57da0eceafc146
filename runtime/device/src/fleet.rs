//! A fleet state: the closed-form learner's statistics of some labels (one device's
//! own, or the sum of several devices'), with class names, as devices and the fleet's
//! server exchange them. Never samples: per class a count and a mean, and the pooled
//! within-class scatter, all in the bundle's standardized units.
//!
//! Bytes (little-endian; `D` the embedding size, `C` the classes):
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic [`MAGIC`] (`b"ETFLEET\0"`) |
//! | 2 | format version, u16 ([`VERSION`]; another is refused) |
//! | 2 | flags, u16: bit 0 [`SIGNED`] (a signature block follows the checksum); other bits are refused |
//! | 4 | backbone id, u32 (a state only merges into a device with the same backbone) |
//! | 4 | `D`, u32 |
//! | 4 | `C`, u32 |
//! | per class | name: length u16, UTF-8 bytes |
//! | `4·D` | center of the standardization, f32 |
//! | `4·D` | scale of the standardization, f32 |
//! | `4·C` | labels per class, f32 (whole numbers) |
//! | `4·C·D` | class means (standardized), f32 |
//! | `4·D(D+1)/2` | within-class scatter (standardized), upper triangle row after row, f32 |
//! | 4 | CRC-32 (ISO-HDLC) of everything before it |
//! | 96 | with [`SIGNED`]: the signer's Ed25519 public key (32 bytes), then its signature (64) of everything before the block |
//!
//! The signature covers the header with its flag, so removing it makes an unsigned
//! state, which a device with trusted keys refuses ([`verify`]). The signer's public key
//! travels so that a refusal can say "untrusted key X" rather than only "does not
//! verify"; trust comes from the device's `--trust` keys, never from the state.
//!
//! The scatter is symmetric, so only its upper triangle travels: at `D = 1280` a state
//! is 3.3 MB instead of 6.6 MB. The Python side (`fleet/edgetune_fleet/state.py`) reads
//! and writes the same bytes.

use std::fmt;

use crc::{CRC_32_ISO_HDLC, Crc};
use edgetune::slda::{Slda, StateParts};
use edgetune::trust::{self, KeyId, PublicKey, SecretKey, Signature, TrustError};

/// The first eight bytes of a fleet state.
pub const MAGIC: [u8; 8] = *b"ETFLEET\0";
/// The format version this build reads and writes.
pub const VERSION: u16 = 1;
/// Flag: a signature block follows the checksum.
pub const SIGNED: u16 = 1;
/// Length of the signature block that [`SIGNED`] announces: the signer's public key and
/// the signature ([`Signature::to_bytes`]).
pub const SIGNATURE_LEN: usize = Signature::LEN;
/// Longest class name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
const HEADER_LEN: usize = 8 + 2 + 2 + 4 + 4 + 4;
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// A decoded fleet state (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetState {
    /// Identity of the backbone ([`crate::state::backbone_id`]).
    pub backbone: u32,
    /// Embedding size `D`.
    pub dim: usize,
    /// Class names.
    pub classes: Vec<String>,
    /// Standardization center.
    pub center: Vec<f32>,
    /// Standardization scale.
    pub scale: Vec<f32>,
    /// Labels per class.
    pub counts: Vec<f32>,
    /// Class means, `D` values each.
    pub means: Vec<f32>,
    /// The whole `D × D` within-class scatter.
    pub scatter: Vec<f32>,
    /// The signature block, when the state is signed (not verified here: [`verify`]).
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

/// Why bytes are not a fleet state.
#[derive(Debug, Clone, PartialEq)]
pub enum Invalid {
    /// Fewer bytes than the header says.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes there.
        found: usize,
    },
    /// Not a fleet state at all.
    BadMagic,
    /// A format version this build does not read.
    Version(u16),
    /// Flags this build does not know.
    Flags(u16),
    /// The checksum does not match: damaged on the way.
    Checksum,
    /// Something inside is impossible (named).
    Contents(String),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Truncated { needed, found } => {
                write!(f, "truncated: {found} bytes, its header needs {needed}")
            }
            Invalid::BadMagic => write!(f, "not an edgetune fleet state (bad magic)"),
            Invalid::Version(v) => write!(
                f,
                "fleet state format version {v}, this build reads version {VERSION}"
            ),
            Invalid::Flags(v) => write!(f, "unknown flags {v:#06x} in the fleet state"),
            Invalid::Checksum => write!(f, "its checksum does not match (damaged)"),
            Invalid::Contents(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for Invalid {}

/// Why a fleet state is not applied on a device that requires trusted signatures.
#[derive(Debug)]
pub enum Unverified {
    /// The state carries no signature.
    Unsigned,
    /// Its signature does not verify: tampered, signed by an untrusted key, or not a
    /// signature at all ([`TrustError`] says which).
    Trust(TrustError),
    /// Its header is not a fleet state's, so there is no signature to look for.
    Invalid(Invalid),
}

impl fmt::Display for Unverified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unverified::Unsigned => write!(
                f,
                "unsigned: it carries no signature and this device applies only fleet states signed by a trusted key (--trust)"
            ),
            Unverified::Trust(e) => write!(f, "{e}"),
            Unverified::Invalid(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Unverified {}

/// Checks the signature of the fleet state `bytes` against the `trusted` keys before
/// anything else of it is read; returns the signer's id. The signature covers every byte
/// before its block, checksum and flags included, so a changed byte anywhere is
/// [`TrustError::Tampered`].
pub fn verify(bytes: &[u8], trusted: &[PublicKey]) -> Result<KeyId, Unverified> {
    let short = || {
        Unverified::Invalid(Invalid::Truncated {
            needed: HEADER_LEN + 4,
            found: bytes.len(),
        })
    };
    let header = bytes.get(..HEADER_LEN).ok_or_else(short)?;
    if header[..8] != MAGIC {
        return Err(Unverified::Invalid(Invalid::BadMagic));
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != VERSION {
        return Err(Unverified::Invalid(Invalid::Version(version)));
    }
    if u16::from_le_bytes([header[10], header[11]]) & SIGNED == 0 {
        return Err(Unverified::Unsigned);
    }
    let at = bytes
        .len()
        .checked_sub(SIGNATURE_LEN)
        .filter(|&n| n >= HEADER_LEN + 4)
        .ok_or(Unverified::Invalid(Invalid::Truncated {
            needed: HEADER_LEN + 4 + SIGNATURE_LEN,
            found: bytes.len(),
        }))?;
    let (signed, block) = bytes.split_at(at);
    let sig = Signature::from_bytes(block).map_err(Unverified::Trust)?;
    trust::verify(signed, &sig, trusted).map_err(Unverified::Trust)
}

/// A little-endian reader over bytes whose length was checked.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Invalid> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(Invalid::Truncated {
            needed: self.at.saturating_add(n),
            found: self.bytes.len(),
        })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, Invalid> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Invalid> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>, Invalid> {
        let b = self.take(n.checked_mul(4).ok_or_else(|| too_big(what))?)?;
        let v: Vec<f32> = b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Invalid::Contents(format!(
                "its {what} hold a non-finite value"
            )));
        }
        Ok(v)
    }
}

fn too_big(what: &str) -> Invalid {
    Invalid::Contents(format!("its {what} are impossibly large"))
}

impl FleetState {
    /// The fleet state of a learner's saved state ([`Slda::state`], room for
    /// `capacity` classes), its classes named by `names`. Only classes with labels go
    /// in: a device's own statistics (whole − bundle − others) keep a zero count for
    /// every class it knows only from the bundle or the fleet, and sending those would
    /// claim classes it never labeled (and add empty ones on a device without them).
    pub fn from_slda_state(
        backbone: u32,
        dim: usize,
        capacity: usize,
        state: &[f32],
        names: &[String],
    ) -> Result<FleetState, edgetune::Error> {
        let p = Slda::<(), edgetune::slda::Full>::state_parts(state, dim, capacity)?;
        let labeled: Vec<usize> = (0..p.classes.min(names.len()))
            .filter(|&c| p.counts[c] > 0.0)
            .collect();
        Ok(FleetState {
            backbone,
            dim,
            classes: labeled.iter().map(|&c| names[c].clone()).collect(),
            center: p.center.to_vec(),
            scale: p.scale.to_vec(),
            counts: labeled.iter().map(|&c| p.counts[c]).collect(),
            means: labeled
                .iter()
                .flat_map(|&c| &p.means[c * dim..(c + 1) * dim])
                .copied()
                .collect(),
            scatter: p.scatter.to_vec(),
            signature: None,
        })
    }

    /// Labels in the state.
    pub fn labels(&self) -> f32 {
        self.counts.iter().sum()
    }

    /// Writes this state as a saved learner state ([`Slda::merge_state`]) with room for
    /// its own classes, into `out`; prior strength `nu0`.
    pub fn to_slda_state(&self, nu0: f32) -> Result<Vec<f32>, edgetune::Error> {
        let k = self.classes.len();
        let mut out = vec![0.0; Slda::<(), edgetune::slda::Full>::state_len(self.dim, k)];
        let parts = StateParts {
            classes: k,
            labels: self.labels(),
            center: &self.center,
            scale: &self.scale,
            counts: &self.counts,
            means: &self.means,
            scatter: &self.scatter,
        };
        Slda::<(), edgetune::slda::Full>::compose_state(&mut out, self.dim, k, nu0, &parts)?;
        Ok(out)
    }

    /// The bytes of this state (the module docs), unsigned.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_flags(0)
    }

    /// The bytes of this state signed by `key` (what the fleet's server sends).
    pub fn encode_signed(&self, key: &SecretKey) -> Vec<u8> {
        let mut out = self.encode_flags(SIGNED);
        let sig = trust::sign(&out, key);
        out.extend_from_slice(&sig.to_bytes());
        out
    }

    fn encode_flags(&self, flags: u16) -> Vec<u8> {
        let d = self.dim;
        let mut out =
            Vec::with_capacity(HEADER_LEN + 4 * (d * (d + 1) / 2 + 4 * d) + SIGNATURE_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.backbone.to_le_bytes());
        out.extend_from_slice(&(d as u32).to_le_bytes());
        out.extend_from_slice(&(self.classes.len() as u32).to_le_bytes());
        for name in &self.classes {
            let b = &name.as_bytes()[..name.len().min(MAX_NAME_BYTES)];
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(b);
        }
        let upper = (0..d).flat_map(|i| self.scatter[i * d + i..(i + 1) * d].iter());
        for v in self
            .center
            .iter()
            .chain(&self.scale)
            .chain(&self.counts)
            .chain(&self.means)
            .chain(upper)
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let crc = CRC32.checksum(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks bytes (see the module docs): every length, the checksum,
    /// names, finite values, whole non-negative counts, positive scales.
    pub fn decode(bytes: &[u8]) -> Result<FleetState, Invalid> {
        if bytes.len() < HEADER_LEN + 4 {
            return Err(Invalid::Truncated {
                needed: HEADER_LEN + 4,
                found: bytes.len(),
            });
        }
        if bytes[..8] != MAGIC {
            return Err(Invalid::BadMagic);
        }
        let mut r = Reader { bytes, at: 8 };
        let version = r.u16()?;
        if version != VERSION {
            return Err(Invalid::Version(version));
        }
        let flags = r.u16()?;
        if flags & !SIGNED != 0 {
            return Err(Invalid::Flags(flags));
        }
        let (body, signature) = if flags & SIGNED != 0 {
            let n = bytes
                .len()
                .checked_sub(SIGNATURE_LEN)
                .ok_or(Invalid::Truncated {
                    needed: HEADER_LEN + 4 + SIGNATURE_LEN,
                    found: bytes.len(),
                })?;
            let mut sig = [0; SIGNATURE_LEN];
            sig.copy_from_slice(&bytes[n..]);
            (&bytes[..n], Some(sig))
        } else {
            (bytes, None)
        };
        if body.len() < HEADER_LEN + 4 {
            return Err(Invalid::Truncated {
                needed: HEADER_LEN + 4,
                found: body.len(),
            });
        }
        let (data, tail) = body.split_at(body.len() - 4);
        if CRC32.checksum(data) != u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) {
            // A cut-off state lands here too: name it by its length when it is short.
            return Err(Self::short(data).unwrap_or(Invalid::Checksum));
        }
        let mut state = Self::parse(data)?;
        state.signature = signature;
        Ok(state)
    }

    /// When `data` is shorter than its header says, that (a cut-off state).
    fn short(data: &[u8]) -> Option<Invalid> {
        match Self::parse(data) {
            Err(e @ Invalid::Truncated { .. }) => Some(e),
            _ => None,
        }
    }

    /// The fields of `data` (everything before the checksum).
    fn parse(data: &[u8]) -> Result<FleetState, Invalid> {
        let mut r = Reader {
            bytes: data,
            at: 12,
        };
        let backbone = r.u32()?;
        let dim = r.u32()? as usize;
        let k = r.u32()? as usize;
        if dim == 0 {
            return Err(Invalid::Contents("its embedding size is 0".into()));
        }
        // Every class takes at least its 2-byte name length and 4-byte count.
        if k.saturating_mul(6) > data.len() {
            return Err(too_big("classes"));
        }
        let mut classes = Vec::with_capacity(k);
        for c in 0..k {
            let n = r.u16()? as usize;
            let name = std::str::from_utf8(r.take(n)?)
                .map_err(|_| Invalid::Contents(format!("class {c}'s name is not UTF-8")))?;
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                return Err(Invalid::Contents(format!(
                    "class {c}'s name {name:?} is empty or holds control characters"
                )));
            }
            if classes.iter().any(|x| x == name) {
                return Err(Invalid::Contents(format!("class {name:?} appears twice")));
            }
            classes.push(name.to_string());
        }
        let center = r.f32s(dim, "center values")?;
        let scale = r.f32s(dim, "scale values")?;
        if scale.iter().any(|&s| s <= 0.0) {
            return Err(Invalid::Contents(
                "a standardization scale is not > 0".into(),
            ));
        }
        let counts = r.f32s(k, "counts")?;
        if counts.iter().any(|&n| n < 0.0 || n.trunc() != n) {
            return Err(Invalid::Contents(
                "a class count is negative or not whole".into(),
            ));
        }
        let means = r.f32s(k.checked_mul(dim).ok_or_else(|| too_big("means"))?, "means")?;
        let tri = dim
            .checked_mul(dim + 1)
            .map(|n| n / 2)
            .ok_or_else(|| too_big("scatter values"))?;
        let upper = r.f32s(tri, "scatter values")?;
        if r.at != data.len() {
            return Err(Invalid::Contents(format!(
                "{} bytes after its scatter",
                data.len() - r.at
            )));
        }
        let mut scatter = vec![0.0; dim * dim];
        let mut it = upper.into_iter();
        for i in 0..dim {
            for j in i..dim {
                let v = it.next().unwrap_or(0.0);
                scatter[i * dim + j] = v;
                scatter[j * dim + i] = v;
            }
        }
        Ok(FleetState {
            backbone,
            dim,
            classes,
            center,
            scale,
            counts,
            means,
            scatter,
            signature: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FleetState {
        let d = 3;
        let mut scatter = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                scatter[i * d + j] = (i + j) as f32 + if i == j { 2.0 } else { 0.0 };
            }
        }
        FleetState {
            backbone: 0xdead_beef,
            dim: d,
            classes: vec!["cat".into(), "défaut 7".into()],
            center: vec![0.1, 0.2, 0.3],
            scale: vec![1.0, 2.0, 0.5],
            counts: vec![3.0, 1.0],
            means: vec![0.5, -0.5, 1.0, 2.0, 0.0, -1.0],
            scatter,
            signature: None,
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        let bytes = s.encode();
        assert_eq!(FleetState::decode(&bytes).unwrap(), s);
        // Upper triangle: 6 values for D = 3, not 9.
        assert_eq!(
            bytes.len(),
            24 + 2 + 3 + 2 + 9 + 4 * (3 + 3 + 2 + 6 + 6) + 4
        );
    }

    #[test]
    fn a_signature_is_carried_and_verified() {
        let key = SecretKey::generate().unwrap();
        let other = SecretKey::generate().unwrap();
        let trusted = [key.public()];
        let bytes = sample().encode_signed(&key);
        let s = FleetState::decode(&bytes).unwrap();
        assert_eq!(
            s.signature.unwrap()[..],
            bytes[bytes.len() - SIGNATURE_LEN..]
        );
        assert_eq!(
            FleetState {
                signature: None,
                ..s
            },
            sample()
        );
        assert_eq!(verify(&bytes, &trusted).unwrap(), key.public().id());

        let e = verify(&sample().encode(), &trusted).unwrap_err();
        assert!(matches!(e, Unverified::Unsigned), "{e}");
        let e = verify(&sample().encode_signed(&other), &trusted).unwrap_err();
        assert!(
            matches!(e, Unverified::Trust(TrustError::Untrusted { .. })),
            "{e}"
        );
        // Any changed byte, the flag and the signer's key included.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(verify(&b, &trusted).is_err(), "byte {i}");
        }
        let mut b = bytes.clone();
        b[30] ^= 1;
        let e = verify(&b, &trusted).unwrap_err();
        assert!(
            matches!(e, Unverified::Trust(TrustError::Tampered { .. })),
            "{e}"
        );
        for n in 0..bytes.len() {
            assert!(verify(&bytes[..n], &trusted).is_err(), "{n} bytes");
        }
    }

    #[test]
    fn every_truncation_and_flipped_byte_is_refused() {
        let bytes = sample().encode();
        for n in 0..bytes.len() {
            let e = FleetState::decode(&bytes[..n]).unwrap_err();
            assert!(
                matches!(e, Invalid::Truncated { .. } | Invalid::BadMagic),
                "{n}: {e}"
            );
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(FleetState::decode(&b).is_err(), "byte {i}");
        }
    }

    #[test]
    fn foreign_versions_and_flags_are_named() {
        let mut b = sample().encode();
        b[8] = 2;
        assert_eq!(FleetState::decode(&b), Err(Invalid::Version(2)));
        let mut b = sample().encode();
        b[10] = 4;
        assert_eq!(FleetState::decode(&b), Err(Invalid::Flags(4)));
        let e = FleetState::decode(b"ETSTATE\0 something else entirely").unwrap_err();
        assert_eq!(e, Invalid::BadMagic);
    }

    #[test]
    fn becomes_a_learner_state() {
        let s = sample();
        let state = s.to_slda_state(16.0).unwrap();
        let back = FleetState::from_slda_state(s.backbone, 3, 2, &state, &s.classes).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn only_classes_with_labels_are_sent() {
        // A device's own statistics: a class between its two knows no label of its own.
        let s = sample();
        let gap = FleetState {
            classes: vec!["cat".into(), "dog".into(), "défaut 7".into()],
            counts: vec![3.0, 0.0, 1.0],
            means: [&s.means[..3], &[0.0; 3], &s.means[3..]].concat(),
            ..s.clone()
        };
        let state = gap.to_slda_state(16.0).unwrap();
        let names = ["cat", "dog", "défaut 7", "never"].map(String::from);
        let back = FleetState::from_slda_state(s.backbone, 3, 3, &state, &names).unwrap();
        assert_eq!(back, s);
    }
}
