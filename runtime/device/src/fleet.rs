//! A fleet state: the closed-form learner's statistics of some labels (one device's
//! own, or the sum of several devices'), with class names, as devices and the fleet's
//! server exchange them. Never samples: per class a count and a mean, and the pooled
//! within-class scatter, all in the bundle's standardized units. Devices whose head
//! learns by gradient steps exchange their head's parameters instead ([`HeadState`],
//! flag [`HEAD`]: the same header, another body), which the server averages (FedAvg).
//!
//! Bytes (little-endian; `D` the embedding size, `C` the classes):
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic [`MAGIC`] (`b"ETFLEET\0"`) |
//! | 2 | format version, u16 ([`VERSION`]; another is refused) |
//! | 2 | flags, u16: bit 0 [`SIGNED`] (a signature block follows the checksum), bit 1 [`HEAD`] (the body below is a [`HeadState`]'s); other bits are refused |
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
use edgetune::head::Head;
use edgetune::slda::{Slda, StateParts};
use edgetune::trust::{self, KeyId, PublicKey, SecretKey, Signature, TrustError};

/// The first eight bytes of a fleet state.
pub const MAGIC: [u8; 8] = *b"ETFLEET\0";
/// The format version this build reads and writes.
pub const VERSION: u16 = 1;
/// Flag: a signature block follows the checksum.
pub const SIGNED: u16 = 1;
/// Flag: the state holds a gradient head's parameters ([`HeadState`]), not statistics.
pub const HEAD: u16 = 2;
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

impl Reader<'_> {
    /// Refuses bytes left after the last field (`after` names it).
    fn end(&self, after: &str) -> Result<(), Invalid> {
        if self.at != self.bytes.len() {
            return Err(Invalid::Contents(format!(
                "{} bytes after {after}",
                self.bytes.len() - self.at
            )));
        }
        Ok(())
    }

    /// `n` whole, non-negative label counts.
    fn counts(&mut self, n: usize) -> Result<Vec<f32>, Invalid> {
        let counts = self.f32s(n, "counts")?;
        if counts.iter().any(|&n| n < 0.0 || n.trunc() != n) {
            return Err(Invalid::Contents(
                "a class count is negative or not whole".into(),
            ));
        }
        Ok(counts)
    }
}

const HEAD_NOT_STATISTICS: &str =
    "it holds a gradient head's parameters (FedAvg), not closed-form statistics";
const STATISTICS_NOT_HEAD: &str =
    "it holds closed-form statistics, not a gradient head's parameters (FedAvg)";

/// What both kinds of state start with, after the magic, version and flags.
struct Header {
    backbone: u32,
    dim: usize,
    classes: Vec<String>,
}

/// The header's bytes (magic to class names) of a state with `flags`.
fn header_bytes(flags: u16, backbone: u32, dim: usize, classes: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&backbone.to_le_bytes());
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    out.extend_from_slice(&(classes.len() as u32).to_le_bytes());
    for name in classes {
        let b = &name.as_bytes()[..name.len().min(MAX_NAME_BYTES)];
        out.extend_from_slice(&(b.len() as u16).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// `out` (a whole state with the [`SIGNED`] flag) with its signature block by `key`.
fn sign(mut out: Vec<u8>, key: &SecretKey) -> Vec<u8> {
    let sig = trust::sign(&out, key);
    out.extend_from_slice(&sig.to_bytes());
    out
}

/// `out` with its CRC-32 appended.
fn seal(mut out: Vec<u8>) -> Vec<u8> {
    let crc = CRC32.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Either kind of fleet state, as [`decode`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Closed-form statistics ([`FleetState`]).
    Statistics(FleetState),
    /// A gradient head's parameters ([`HeadState`], flag [`HEAD`]).
    Head(HeadState),
}

impl Decoded {
    /// The closed-form statistics, or why a device whose head is written from them
    /// refuses this state.
    pub fn into_statistics(self) -> Result<FleetState, &'static str> {
        match self {
            Decoded::Statistics(s) => Ok(s),
            Decoded::Head(_) => Err(
                "it holds a gradient head's parameters, and this device's head is written from closed-form statistics",
            ),
        }
    }

    /// The gradient head's parameters, or why a device whose head learns by gradient
    /// steps refuses this state.
    pub fn into_head(self) -> Result<HeadState, &'static str> {
        match self {
            Decoded::Head(h) => Ok(h),
            Decoded::Statistics(_) => Err(
                "it holds closed-form statistics, and this device's head learns by gradient steps (the fleet averages such heads: FedAvg)",
            ),
        }
    }
}

/// Decodes and checks a fleet state of either kind (the module docs): the envelope
/// (magic, version, flags, checksum, signature block), the header, then the body its
/// flags announce.
pub fn decode(bytes: &[u8]) -> Result<Decoded, Invalid> {
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
    if flags & !(SIGNED | HEAD) != 0 {
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
    let parsed = parse(flags, data);
    if CRC32.checksum(data) != u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) {
        // A cut-off state lands here too: name it by its length when it is short.
        return Err(match parsed {
            Err(e @ Invalid::Truncated { .. }) => e,
            _ => Invalid::Checksum,
        });
    }
    Ok(match parsed? {
        Decoded::Statistics(mut s) => {
            s.signature = signature;
            Decoded::Statistics(s)
        }
        Decoded::Head(mut s) => {
            s.signature = signature;
            Decoded::Head(s)
        }
    })
}

/// The header and body of `data` (everything before the checksum).
fn parse(flags: u16, data: &[u8]) -> Result<Decoded, Invalid> {
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
        if n > MAX_NAME_BYTES {
            return Err(Invalid::Contents(format!(
                "class {c}'s name is {n} bytes long, more than {MAX_NAME_BYTES}"
            )));
        }
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
    let header = Header {
        backbone,
        dim,
        classes,
    };
    if flags & HEAD != 0 {
        HeadState::parse(header, r).map(Decoded::Head)
    } else {
        FleetState::parse(header, r).map(Decoded::Statistics)
    }
}

/// A gradient head's parameters and the labels per class it learned from, as devices
/// whose head learns by gradient steps (`--learner gradient`) and the
/// fleet's server exchange them: the server averages them (FedAvg), each class's output
/// row weighted by its labels, the hidden layer by all labels. Flag [`HEAD`]; after the
/// class names:
///
/// | bytes | field |
/// | --- | --- |
/// | 4 | `H`, u32: hidden units (0: a linear head) |
/// | 4 | origin, u32: CRC-32 of the bundle's head parameters ([`head_origin`]): heads average only when they started from the same one |
/// | `4·C` | labels per class, f32 (whole numbers) |
/// | `4·(H·D + H)` | the hidden layer's weights (unit after unit) and biases |
/// | `4·C·F` | the output layer's weights, class after class (`F` = `H`, or `D` for a linear head) |
/// | `4·C` | the output layer's biases |
/// | `4·C·D` | per class, the mean of the device's samples of it (its replay buffer's; zeros without any) |
///
/// The means are what a device that never saw a class rehearses it with after a merge
/// (a head trained on some classes only has never learned to tell them from the others).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadState {
    /// Identity of the backbone ([`crate::state::backbone_id`]).
    pub backbone: u32,
    /// Embedding size `D`.
    pub dim: usize,
    /// Class names.
    pub classes: Vec<String>,
    /// Hidden units `H` (0: a linear head).
    pub hidden: usize,
    /// [`head_origin`] of the bundle's head.
    pub origin: u32,
    /// Labels per class.
    pub counts: Vec<f32>,
    /// The hidden layer's weights (`H × D`) then biases (`H`); empty for a linear head.
    pub hidden_params: Vec<f32>,
    /// The output layer's weights, `C × F`.
    pub weights: Vec<f32>,
    /// The output layer's biases, `C`.
    pub biases: Vec<f32>,
    /// Per class, the mean of the samples it was learned from, `C × D`.
    pub means: Vec<f32>,
    /// The signature block, when the state is signed (not verified here: [`verify`]).
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

/// The identity of a bundle's head ([`HeadState::origin`]): the CRC-32 of its
/// parameters' bytes. Averaging heads is meaningful only between heads that started
/// from the same parameters (the same hidden units in the same places).
pub fn head_origin(params: &[f32]) -> u32 {
    let mut digest = CRC32.digest();
    for v in params {
        digest.update(&v.to_le_bytes());
    }
    digest.finalize()
}

/// The identity of the features a statistics state ([`FleetState`]) is of, in its
/// `backbone` field: the backbone's ([`crate::state::backbone_id`]) for a linear head;
/// for an MLP head, whose closed-form learner keeps statistics of its hidden
/// activations, the CRC-32 of that and the hidden layer's parameters (statistics of
/// another hidden layer's units are of other features, whatever their count).
pub fn features_id(backbone: u32, head: &Head<Vec<f32>>) -> u32 {
    let hidden = &head.params()[..head.dims().out_offset()];
    if hidden.is_empty() {
        return backbone;
    }
    let mut digest = CRC32.digest();
    digest.update(&backbone.to_le_bytes());
    for v in hidden {
        digest.update(&v.to_le_bytes());
    }
    digest.finalize()
}

impl HeadState {
    /// The state of `head`'s active classes, named by `names`, which learned from
    /// `counts` labels each (a device's own), their samples' means `means` (`D` values
    /// per class, at least the active classes').
    pub fn from_head(
        backbone: u32,
        origin: u32,
        head: &Head<Vec<f32>>,
        counts: &[u32],
        means: &[f32],
        names: &[String],
    ) -> HeadState {
        let dims = head.dims();
        let (d, h, k) = (dims.input, dims.hidden, head.classes().min(names.len()));
        let p = head.params();
        let f = dims.feature_width();
        let out = h * d + h;
        HeadState {
            backbone,
            dim: d,
            classes: names[..k].to_vec(),
            hidden: h,
            origin,
            counts: (0..k)
                .map(|c| counts.get(c).copied().unwrap_or(0) as f32)
                .collect(),
            hidden_params: p[..out].to_vec(),
            weights: (0..k)
                .flat_map(|c| head.class_weights(c))
                .copied()
                .collect(),
            biases: p[out + dims.capacity * f..][..k].to_vec(),
            means: means[..k * d].to_vec(),
            signature: None,
        }
    }

    /// Labels in the state.
    pub fn labels(&self) -> f32 {
        self.counts.iter().sum()
    }

    /// Values per output row: `H`, or `D` for a linear head.
    pub fn feature_width(&self) -> usize {
        if self.hidden == 0 {
            self.dim
        } else {
            self.hidden
        }
    }

    /// Decodes and checks bytes (the module docs, [`HeadState`]); a statistics state is
    /// refused by that name.
    pub fn decode(bytes: &[u8]) -> Result<HeadState, Invalid> {
        match decode(bytes)? {
            Decoded::Head(s) => Ok(s),
            Decoded::Statistics(_) => Err(Invalid::Contents(STATISTICS_NOT_HEAD.into())),
        }
    }

    /// The bytes of this state, unsigned.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_flags(HEAD)
    }

    /// The bytes of this state signed by `key`.
    pub fn encode_signed(&self, key: &SecretKey) -> Vec<u8> {
        sign(self.encode_flags(HEAD | SIGNED), key)
    }

    /// The bytes of this state as it was decoded, its signature block kept.
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.signature {
            Some(sig) => [self.encode_flags(HEAD | SIGNED).as_slice(), sig].concat(),
            None => self.encode(),
        }
    }

    fn encode_flags(&self, flags: u16) -> Vec<u8> {
        let mut out = header_bytes(flags, self.backbone, self.dim, &self.classes);
        out.extend_from_slice(&(self.hidden as u32).to_le_bytes());
        out.extend_from_slice(&self.origin.to_le_bytes());
        for v in self
            .counts
            .iter()
            .chain(&self.hidden_params)
            .chain(&self.weights)
            .chain(&self.biases)
            .chain(&self.means)
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        seal(out)
    }

    fn parse(header: Header, mut r: Reader<'_>) -> Result<HeadState, Invalid> {
        let Header {
            backbone,
            dim,
            classes,
        } = header;
        let k = classes.len();
        let hidden = r.u32()? as usize;
        let origin = r.u32()?;
        let counts = r.counts(k)?;
        let n = hidden
            .checked_mul(dim)
            .and_then(|n| n.checked_add(hidden))
            .ok_or_else(|| too_big("hidden layer values"))?;
        let hidden_params = r.f32s(n, "hidden layer values")?;
        let f = if hidden == 0 { dim } else { hidden };
        let n = k.checked_mul(f).ok_or_else(|| too_big("output weights"))?;
        let weights = r.f32s(n, "output weights")?;
        let biases = r.f32s(k, "output biases")?;
        let means = r.f32s(k.checked_mul(dim).ok_or_else(|| too_big("means"))?, "means")?;
        r.end("its means")?;
        Ok(HeadState {
            backbone,
            dim,
            classes,
            hidden,
            origin,
            counts,
            hidden_params,
            weights,
            biases,
            means,
            signature: None,
        })
    }
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
        sign(self.encode_flags(SIGNED), key)
    }

    /// The bytes of this state as it was decoded: signed when it carries a signature
    /// block (kept as it is, not checked: [`verify`]), else unsigned. What decodes
    /// re-encodes to the same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.signature {
            Some(sig) => [self.encode_flags(SIGNED).as_slice(), sig].concat(),
            None => self.encode(),
        }
    }

    fn encode_flags(&self, flags: u16) -> Vec<u8> {
        let d = self.dim;
        let mut out = header_bytes(flags, self.backbone, d, &self.classes);
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
        seal(out)
    }

    /// Decodes and checks bytes (see the module docs): every length, the checksum,
    /// names, finite values, whole non-negative counts, positive scales. A gradient
    /// head's state ([`HEAD`]) is refused by that name: [`decode`] reads either.
    pub fn decode(bytes: &[u8]) -> Result<FleetState, Invalid> {
        match decode(bytes)? {
            Decoded::Statistics(s) => Ok(s),
            Decoded::Head(_) => Err(Invalid::Contents(HEAD_NOT_STATISTICS.into())),
        }
    }

    /// The fields of `data` (everything before the checksum) after its header.
    fn parse(header: Header, mut r: Reader<'_>) -> Result<FleetState, Invalid> {
        let Header {
            backbone,
            dim,
            classes,
        } = header;
        let k = classes.len();
        let center = r.f32s(dim, "center values")?;
        let scale = r.f32s(dim, "scale values")?;
        if scale.iter().any(|&s| s <= 0.0) {
            return Err(Invalid::Contents(
                "a standardization scale is not > 0".into(),
            ));
        }
        let counts = r.counts(k)?;
        let means = r.f32s(k.checked_mul(dim).ok_or_else(|| too_big("means"))?, "means")?;
        let tri = dim
            .checked_mul(dim + 1)
            .map(|n| n / 2)
            .ok_or_else(|| too_big("scatter values"))?;
        let upper = r.f32s(tri, "scatter values")?;
        r.end("its scatter")?;
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
    fn a_name_longer_than_the_limit_is_refused() {
        // Such a name used to decode, and re-encode cut short (seen writing the fleet
        // fuzz target, whose normal form is the bytes themselves).
        let at_limit = "a".repeat(MAX_NAME_BYTES);
        let s = FleetState {
            classes: vec!["cat".into(), at_limit],
            ..sample()
        };
        let bytes = s.encode();
        assert_eq!(FleetState::decode(&bytes).unwrap(), s);
        let name_at = HEADER_LEN + 2 + 3;
        let mut longer = bytes[..bytes.len() - 4].to_vec();
        longer[name_at..name_at + 2].copy_from_slice(&(MAX_NAME_BYTES as u16 + 1).to_le_bytes());
        longer.insert(name_at + 2, b'a');
        let crc = CRC32.checksum(&longer);
        longer.extend_from_slice(&crc.to_le_bytes());
        let e = FleetState::decode(&longer).unwrap_err();
        assert_eq!(
            e.to_string(),
            "class 1's name is 257 bytes long, more than 256"
        );
    }

    #[test]
    fn what_decodes_re_encodes_to_the_same_bytes() {
        let key = SecretKey::generate().unwrap();
        for bytes in [sample().encode(), sample().encode_signed(&key)] {
            assert_eq!(FleetState::decode(&bytes).unwrap().to_bytes(), bytes);
        }
    }

    fn head_sample(hidden: usize) -> HeadState {
        let (d, k) = (3, 2);
        let f = if hidden == 0 { d } else { hidden };
        HeadState {
            backbone: 0xdead_beef,
            dim: d,
            classes: vec!["cat".into(), "défaut 7".into()],
            hidden,
            origin: 0x0123_4567,
            counts: vec![4.0, 0.0],
            hidden_params: (0..hidden * d + hidden).map(|i| i as f32 * 0.5).collect(),
            weights: (0..k * f).map(|i| 1.0 - i as f32).collect(),
            biases: vec![0.25, -0.25],
            means: vec![0.5, 0.0, -0.5, 1.0, 2.0, 3.0],
            signature: None,
        }
    }

    #[test]
    fn a_head_state_round_trips_signed_or_not() {
        let key = SecretKey::generate().unwrap();
        for s in [head_sample(0), head_sample(2)] {
            let bytes = s.encode();
            assert_eq!(HeadState::decode(&bytes).unwrap(), s);
            assert_eq!(decode(&bytes).unwrap(), Decoded::Head(s.clone()));
            let values = 2 + s.hidden_params.len() + 2 * s.feature_width() + 2 + 6;
            let n = 24 + 2 + 3 + 2 + 9 + 8 + 4 * values + 4;
            assert_eq!(bytes.len(), n);
            let signed = s.encode_signed(&key);
            assert_eq!(verify(&signed, &[key.public()]).unwrap(), key.public().id());
            let back = HeadState::decode(&signed).unwrap();
            assert_eq!(back.to_bytes(), signed);
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] ^= 0x10;
                assert!(decode(&b).is_err(), "byte {i}");
            }
            for n in 0..bytes.len() {
                assert!(decode(&bytes[..n]).is_err(), "{n} bytes");
            }
        }
    }

    #[test]
    fn each_kind_refuses_the_other_by_name() {
        let e = FleetState::decode(&head_sample(2).encode()).unwrap_err();
        assert_eq!(e.to_string(), HEAD_NOT_STATISTICS);
        let e = HeadState::decode(&sample().encode()).unwrap_err();
        assert_eq!(e.to_string(), STATISTICS_NOT_HEAD);
    }

    #[test]
    fn a_head_state_is_the_heads_active_classes() {
        let dims = edgetune::Dims::mlp(3, 2, 4);
        let mut head = Head::alloc(dims, 2).unwrap();
        head.init(7);
        let names = ["cat", "dog", "owl"].map(String::from);
        let means: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let s = HeadState::from_head(
            1,
            head_origin(head.params()),
            &head,
            &[5, 1, 9],
            &means,
            &names,
        );
        assert_eq!(s.means, means[..6]);
        assert_eq!(s.classes, ["cat", "dog"]);
        assert_eq!(s.counts, [5.0, 1.0]);
        assert_eq!(s.hidden_params, head.params()[..8]);
        assert_eq!(s.weights[2..4], *head.class_weights(1));
        // The output biases follow the capacity's 4 rows of weights.
        assert_eq!(s.biases, head.params()[8 + 4 * 2..][..2]);
        assert_ne!(head_origin(head.params()), {
            head.init(8);
            head_origin(head.params())
        });
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
