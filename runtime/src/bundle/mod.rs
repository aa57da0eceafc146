//! The bundle: one file that carries everything a device needs to run a model and keep
//! learning. It holds a [`Manifest`] (what the input looks like, how to normalize it,
//! where the embedding comes from, the class names and where it all came from), the
//! frozen backbone as a tract NNEF tar (gzipped as `finetune-head` writes it), and optionally a trained head in the
//! [`persist`] format. Bundles need `std`.
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic [`MAGIC`] (`b"ETBUNDLE"`) |
//! | 2 | format version, u16 ([`VERSION`]) |
//! | 3 × 16 | section table: offset (u64) and length (u64) of the manifest, the backbone and the head, in that order |
//! | manifest length | the manifest: pretty-printed JSON (UTF-8), readable in a hex dump or with `strings` |
//! | backbone length | the backbone, a tract NNEF tar, plain or gzipped ([`crate::nnef::read_model`] reads both); empty for a features-only bundle ([`BackboneFormat::None`]) |
//! | head length | the head in the [`persist`] format; empty (length 0) when the bundle has no head |
//! | 4 | CRC-32 (ISO-HDLC) of everything before it, u32 |
//!
//! All integers are little-endian. The sections follow the header in table order with no
//! gaps: the manifest starts at [`HEADER_LEN`] and each section starts where the previous
//! one ends (an empty section too); the checksum follows the head and ends the file.
//!
//! [`Bundle::from_bytes`] checks the magic, the version, the section table, the length,
//! the checksum, the manifest (JSON syntax, required fields, [`Manifest::validate`]), that
//! the backbone section agrees with the manifest's backbone format, and the head (its
//! whole [`persist`] encoding, and that its input size and class count match the
//! manifest). Anything that does not check out is a [`BundleError`]; no input panics.
//! [`Bundle::to_bytes`] runs the same checks before it writes, so whatever it writes
//! reads back. A reader ignores manifest fields it does not know (a newer writer may add
//! some), but every field this version defines must be present (an `Option` field may
//! be left out for `None`).
//!
//! ```
//! use edgetune::bundle::{Bundle, BundleError, Provenance};
//! use edgetune::{persist, Dims, Head};
//!
//! // A features-only bundle (the input is the embedding itself) with a trained head.
//! let provenance = Provenance::new("synthetic example", "doc test");
//! let mut bundle = Bundle::features_only(4, ["cat", "dog"], provenance);
//! let head = Head::alloc(Dims::linear(4, 8), 2)?;
//! bundle.head = Some(persist::encode_to_vec(&head, None::<&edgetune::Learner<[f32; 0]>>)?);
//!
//! let mut bytes = bundle.to_bytes()?;
//! let back = Bundle::from_bytes(&bytes)?;
//! assert_eq!(back, bundle);
//! assert_eq!(back.manifest.classes, ["cat", "dog"]);
//!
//! // One flipped bit anywhere and the bundle is refused.
//! bytes[100] ^= 0x04;
//! let err = Bundle::from_bytes(&bytes).unwrap_err();
//! assert!(matches!(err, BundleError::Checksum { .. }));
//! assert!(err.to_string().contains("checksum mismatch"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`Bundle::write`] replaces a file atomically (a new file, fsync, rename, fsync of the
//! directory): after a crash the path holds the old bundle or the new one, never half of
//! one.
//!
//! The container is this file; the manifest's schema and checks are in `manifest.rs`,
//! the errors in `error.rs`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crc::{CRC_32_ISO_HDLC, Crc};

use crate::persist;

mod error;
mod manifest;
mod validate;

pub use error::BundleError;
pub use manifest::*;

/// The first eight bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"ETBUNDLE";
/// The format version this build writes, and the newest it reads.
pub const VERSION: u16 = 1;
/// Length of the fixed header (magic, version, section table) in bytes.
pub const HEADER_LEN: usize = 8 + 2 + SECTIONS * 16;
/// Length of the CRC trailer in bytes.
const CRC_LEN: usize = 4;
/// Manifest, backbone, head.
const SECTIONS: usize = 3;
const SECTION_NAMES: [&str; SECTIONS] = ["manifest", "backbone", "head"];
const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// The section table: (offset, length) of each section.
type Table = [(u64, u64); SECTIONS];

/// Checks the table describes sections in order, contiguous from the header on; returns
/// the total length of the bundle (checksum included).
fn check_table(table: &Table) -> Result<u64, String> {
    let mut at = HEADER_LEN as u64;
    for (&(offset, len), name) in table.iter().zip(SECTION_NAMES) {
        if offset != at {
            return Err(format!(
                "the {name} section starts at byte {offset}, expected {at}"
            ));
        }
        at = at
            .checked_add(len)
            .ok_or_else(|| format!("the {name} section's length {len} is out of range"))?;
    }
    if table[0].1 == 0 {
        return Err("the manifest section is empty".to_string());
    }
    at.checked_add(CRC_LEN as u64)
        .ok_or_else(|| "the sections' lengths are out of range".to_string())
}

/// A bundle in memory: the manifest and the bytes of the backbone and the head.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    /// What the bundle holds.
    pub manifest: Manifest,
    /// The backbone, a tract NNEF tar, plain or gzipped; empty when the manifest's backbone format is
    /// [`BackboneFormat::None`].
    pub backbone: Vec<u8>,
    /// The head in the [`persist`] format (with or without learner state), if any.
    pub head: Option<Vec<u8>>,
}

/// Checks the CRC trailer of `bytes` (at least [`CRC_LEN`] long).
fn check_crc(bytes: &[u8]) -> Result<(), BundleError> {
    let split = bytes.len().checked_sub(CRC_LEN);
    let (data, trailer) = split
        .and_then(|n| bytes.split_at_checked(n))
        .unwrap_or((bytes, &[]));
    let computed = CRC32.checksum(data);
    match <[u8; CRC_LEN]>::try_from(trailer).map(u32::from_le_bytes) {
        Ok(stored) if stored == computed => Ok(()),
        Ok(stored) => Err(BundleError::Checksum { stored, computed }),
        // No room for a trailer: nothing was stored.
        Err(_) => Err(BundleError::Checksum {
            stored: 0,
            computed,
        }),
    }
}

/// Checks magic, version, table, length and checksum; returns where the three sections
/// are (ranges that lie inside `bytes`).
fn sections(bytes: &[u8]) -> Result<[Range<usize>; SECTIONS], BundleError> {
    let found = bytes.len() as u64;
    let minimum = || BundleError::Truncated {
        needed: (HEADER_LEN + CRC_LEN) as u64,
        found,
    };
    match bytes.get(..MAGIC.len()) {
        Some(magic) if magic != MAGIC => return Err(BundleError::NotABundle),
        None if !MAGIC.starts_with(bytes) => return Err(BundleError::NotABundle),
        None => return Err(minimum()),
        Some(_) => {}
    }
    let version = bytes
        .get(MAGIC.len()..MAGIC.len() + 2)
        .and_then(|v| <[u8; 2]>::try_from(v).ok())
        .map(u16::from_le_bytes)
        .ok_or_else(minimum)?;
    if version != VERSION {
        return Err(BundleError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    let raw = bytes.get(MAGIC.len() + 2..HEADER_LEN).ok_or_else(minimum)?;
    if bytes.len() < HEADER_LEN + CRC_LEN {
        return Err(minimum());
    }
    let mut table: Table = [(0, 0); SECTIONS];
    let (pairs, _) = raw.as_chunks::<16>();
    for (entry, pair) in table.iter_mut().zip(pairs) {
        let (offset, len) = pair.split_at(8);
        let le = |b: &[u8]| <[u8; 8]>::try_from(b).map_or(u64::MAX, u64::from_le_bytes);
        *entry = (le(offset), le(len));
    }
    match (check_table(&table), check_crc(bytes)) {
        (Ok(total), Ok(())) if total == found => {}
        // A valid checksum over a table that lies: a broken writer, not corruption.
        (Ok(total), Ok(())) => {
            return Err(BundleError::layout(format!(
                "the section table describes {total} bytes but the bundle has {found}"
            )));
        }
        (Err(what), Ok(())) => return Err(BundleError::layout(what)),
        (Ok(total), Err(_)) if total > found => {
            return Err(BundleError::Truncated {
                needed: total,
                found,
            });
        }
        (Ok(total), Err(e)) => {
            let end = usize::try_from(total).unwrap_or(usize::MAX);
            return Err(match bytes.get(..end) {
                Some(framed) if check_crc(framed).is_ok() => BundleError::layout(format!(
                    "{} unexpected bytes after the checksum",
                    found.saturating_sub(total)
                )),
                _ => e,
            });
        }
        (Err(_), Err(e)) => return Err(e),
    }
    // The table was checked against the length, so every range lies inside `bytes`.
    let mut out: [Range<usize>; SECTIONS] = Default::default();
    for (section, &(offset, len)) in out.iter_mut().zip(&table) {
        *section = usize::try_from(offset)
            .ok()
            .zip(usize::try_from(len).ok())
            .and_then(|(start, len)| Some(start..start.checked_add(len)?))
            .filter(|r| bytes.get(r.clone()).is_some())
            .ok_or_else(|| BundleError::layout("a section lies outside the bundle"))?;
    }
    Ok(out)
}

/// Parses the manifest and copies the head out of checked sections.
fn manifest_and_head(
    bytes: &[u8],
    manifest: Range<usize>,
    head: Range<usize>,
) -> Result<(Manifest, Option<Vec<u8>>), BundleError> {
    let manifest = bytes.get(manifest).unwrap_or_default();
    let manifest: Manifest =
        serde_json::from_slice(manifest).map_err(|e| BundleError::manifest(e.to_string()))?;
    let head = bytes.get(head).unwrap_or_default();
    Ok((manifest, (!head.is_empty()).then(|| head.to_vec())))
}

/// A name for the temporary file next to `path` that [`write_atomic`] renames over it.
fn temp_path(path: &Path) -> Result<PathBuf, BundleError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let file_name = path.file_name().ok_or_else(|| BundleError::Io {
        action: "cannot write to",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
    })?;
    let mut tmp = file_name.to_os_string();
    tmp.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(tmp))
}

impl Bundle {
    /// A bundle with no backbone and no head whose input is a feature vector of `size`
    /// values, the embedding itself ([`Manifest::features_only`]): for a device whose
    /// front end (a DSP, another model) computes the features. Set [`Bundle::head`] to
    /// add a head.
    pub fn features_only(
        size: usize,
        classes: impl IntoIterator<Item = impl Into<String>>,
        provenance: Provenance,
    ) -> Self {
        Bundle {
            manifest: Manifest::features_only(size, classes, provenance),
            backbone: Vec::new(),
            head: None,
        }
    }

    /// Checks the manifest ([`Manifest::validate`]), that the backbone bytes agree with
    /// the manifest's backbone format, and the head: a complete, valid [`persist`]
    /// encoding whose input size is `embedding.size` and whose class count is the
    /// number of class names.
    pub fn validate(&self) -> Result<(), BundleError> {
        self.manifest.validate()?;
        match (self.manifest.backbone.format, self.backbone.is_empty()) {
            (BackboneFormat::None, false) => {
                return Err(BundleError::manifest(format!(
                    "backbone.format is none but the bundle holds {} backbone bytes",
                    self.backbone.len()
                )));
            }
            (BackboneFormat::NnefTar, true) => {
                return Err(BundleError::manifest(
                    "backbone.format is nnef_tar but the backbone section is empty",
                ));
            }
            _ => {}
        }
        if let Some(head) = &self.head {
            let header = persist::read_header(head)?;
            let mismatch = |what, manifest, head| {
                Err(BundleError::HeadMismatch {
                    what,
                    manifest,
                    head,
                })
            };
            let size = self.manifest.embedding.size;
            if header.dims.input != size {
                return mismatch("embedding.size", size, header.dims.input);
            }
            let classes = self.manifest.classes.len();
            if header.classes != classes {
                return mismatch("classes", classes, header.classes);
            }
            // Length, checksum and every stored value (learner state is checked too).
            persist::decode_head(head)?;
        }
        Ok(())
    }

    /// Encodes the bundle after [`Bundle::validate`]: a bundle that would not read back
    /// is not written.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BundleError> {
        self.validate()?;
        let mut manifest = serde_json::to_vec_pretty(&self.manifest)
            .map_err(|e| BundleError::manifest(format!("cannot encode: {e}")))?;
        manifest.push(b'\n');
        let head = self.head.as_deref().unwrap_or_default();
        let parts: [&[u8]; SECTIONS] = [&manifest, &self.backbone, head];
        let too_large = || BundleError::layout("the bundle is too large");
        let total = parts
            .iter()
            .try_fold(HEADER_LEN + CRC_LEN, |n, p| n.checked_add(p.len()))
            .ok_or_else(too_large)?;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let mut at = HEADER_LEN as u64;
        for part in parts {
            let len = u64::try_from(part.len()).map_err(|_| too_large())?;
            out.extend_from_slice(&at.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            at = at.checked_add(len).ok_or_else(too_large)?;
        }
        for part in parts {
            out.extend_from_slice(part);
        }
        let crc = CRC32.checksum(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(out.len(), total);
        Ok(out)
    }

    /// Decodes and checks a bundle (see the [module documentation](self)).
    pub fn from_bytes(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let [manifest, backbone, head] = sections(bytes)?;
        let (manifest, head) = manifest_and_head(bytes, manifest, head)?;
        let bundle = Bundle {
            manifest,
            backbone: bytes.get(backbone).unwrap_or_default().to_vec(),
            head,
        };
        bundle.validate()?;
        Ok(bundle)
    }

    /// [`Bundle::from_bytes`] that keeps the backbone in `bytes`' allocation instead of
    /// copying it: a large backbone is not held twice.
    fn from_vec(mut bytes: Vec<u8>) -> Result<Bundle, BundleError> {
        let [manifest, backbone, head] = sections(&bytes)?;
        let (manifest, head) = manifest_and_head(&bytes, manifest, head)?;
        bytes.truncate(backbone.end);
        bytes.drain(..backbone.start);
        let bundle = Bundle {
            manifest,
            backbone: bytes,
            head,
        };
        bundle.validate()?;
        Ok(bundle)
    }

    /// Reads and checks the bundle at `path`. Errors name the path
    /// ([`BundleError::Io`], or [`BundleError::InFile`] around the reason the contents
    /// were refused).
    pub fn read(path: impl AsRef<Path>) -> Result<Bundle, BundleError> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(io("cannot read", path))?;
        Bundle::from_vec(bytes).map_err(|e| BundleError::InFile {
            path: path.to_path_buf(),
            error: Box::new(e),
        })
    }

    /// Reads the bundle at `path` only if its detached signature (`path.sig`,
    /// [`crate::trust::signature_path`]) is by one of the `trusted` keys and covers the
    /// file's bytes; returns it and its signer. The signature is checked before anything
    /// of the bundle is parsed. An unsigned, tampered or untrusted bundle is
    /// [`BundleError::Refused`], whose [`TrustError`](crate::trust::TrustError) says
    /// which.
    #[cfg(feature = "trust")]
    pub fn read_trusted(
        path: impl AsRef<Path>,
        trusted: &[crate::trust::PublicKey],
    ) -> Result<(Bundle, crate::trust::KeyId), BundleError> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(io("cannot read", path))?;
        let signer = crate::trust::verify_detached(path, &bytes, trusted).map_err(|error| {
            BundleError::Refused {
                path: path.to_path_buf(),
                error,
            }
        })?;
        let bundle = Bundle::from_vec(bytes).map_err(|e| BundleError::InFile {
            path: path.to_path_buf(),
            error: Box::new(e),
        })?;
        Ok((bundle, signer))
    }

    /// Writes the bundle to `path` atomically ([`write_atomic`]): after a crash `path`
    /// holds the old bundle or the new one, never a part.
    /// With the `trust` feature, a signature file of the bundle it replaces
    /// (`path.sig`) is removed: it signs other bytes, and a device would take the new
    /// bundle for a tampered one instead of an unsigned one.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), BundleError> {
        let path = path.as_ref();
        write_atomic(path, &self.to_bytes()?)?;
        #[cfg(feature = "trust")]
        match fs::remove_file(crate::trust::signature_path(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io("cannot remove the old signature", path)(e));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Replaces the file at `path` with `bytes` atomically: into a new file next to it
/// (`<path>.tmp-<pid>-<n>`), flushed to disk, renamed over `path`, then the directory
/// flushed too. After a crash `path` holds the old contents or the new ones, never a
/// part; a failed write removes its temporary file and leaves `path` alone. Bundles,
/// reports and anything else a tool must not leave half-written go through here.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let tmp = temp_path(path)?;
    let written = (|| {
        let mut file = File::create(&tmp).map_err(io("cannot create", &tmp))?;
        file.write_all(bytes).map_err(io("cannot write", &tmp))?;
        file.sync_all().map_err(io("cannot flush to disk", &tmp))?;
        drop(file);
        fs::rename(&tmp, path).map_err(io("cannot rename the new file over", path))
    })();
    if let Err(e) = written {
        // Best effort: the temporary file may not exist, and the error that matters
        // is the one above.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path)
}

/// A `map_err` adapter for I/O errors on `path`.
fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BundleError {
    let path = path.to_path_buf();
    move |source| BundleError::Io {
        action,
        path,
        source,
    }
}

/// Flushes the directory that holds `path`, so that the rename survives a crash.
#[cfg(unix)]
fn sync_dir(path: &Path) -> Result<(), BundleError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("cannot flush to disk the directory", dir))
}

/// Directories cannot be opened for syncing here; the rename is as durable as the
/// platform makes it.
#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> Result<(), BundleError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_scales_reorders_and_normalizes() {
        let p = Preprocess {
            scale: 0.5,
            mean: vec![1.0, 2.0, 3.0],
            std: vec![1.0, 2.0, 4.0],
            channel_order: ChannelOrder::Bgr,
            resize: None,
        };
        // NCHW 1×3×1×2: caller's RGB planes R = [2, 4], G = [6, 8], B = [10, 12].
        let raw = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0];
        let mut out = [0.0; 6];
        p.apply(Layout::Nchw, &[1, 3, 1, 2], &raw, &mut out);
        // Model channel 0 is the caller's B: (5 - 1)/1, (6 - 1)/1; channel 1 G: (3 - 2)/2, (4 - 2)/2;
        // channel 2 R: (1 - 3)/4, (2 - 3)/4.
        assert_eq!(out, [4.0, 5.0, 0.5, 1.0, -0.5, -0.25]);
        // NHWC 1×1×2×3: pixels [R, G, B] = [2, 6, 10] and [4, 8, 12].
        let raw = [2.0, 6.0, 10.0, 4.0, 8.0, 12.0];
        p.apply(Layout::Nhwc, &[1, 1, 2, 3], &raw, &mut out);
        assert_eq!(out, [4.0, 0.5, -0.5, 5.0, 1.0, -0.25]);
        // RGB, no normalization: scaling only.
        let id = Preprocess {
            scale: 2.0,
            ..Preprocess::default()
        };
        id.apply(Layout::Features, &[1, 6], &raw, &mut out);
        assert_eq!(out, [4.0, 12.0, 20.0, 8.0, 16.0, 24.0]);
    }

    /// The values of the element-by-element definition, bit for bit, on every layout,
    /// both channel orders, with and without normalization, two images in a batch.
    #[test]
    fn preprocess_runs_give_the_values_one_by_one() {
        let mut rng = crate::rng::Rng::new(5);
        let raw: Vec<f32> = (0..2 * 3 * 4 * 5).map(|_| rng.unit() * 255.0).collect();
        for (layout, shape) in [
            (Layout::Nchw, [2, 3, 4, 5]),
            (Layout::Nhwc, [2, 4, 5, 3]),
            (Layout::Features, [2, 3, 2, 10]),
        ] {
            for order in [ChannelOrder::Rgb, ChannelOrder::Bgr] {
                for (mean, std) in [
                    (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
                    (vec![], vec![]),
                ] {
                    let p = Preprocess {
                        scale: 1.0 / 255.0,
                        mean,
                        std,
                        channel_order: order,
                        resize: None,
                    };
                    let (channels, stride) = match layout {
                        Layout::Nchw => (3, 20),
                        Layout::Nhwc => (3, 1),
                        _ => (10, 1),
                    };
                    let bgr = order == ChannelOrder::Bgr && channels == 3;
                    let expected: Vec<f32> = (0..raw.len())
                        .map(|i| {
                            let c = (i / stride) % channels;
                            let src = if bgr {
                                i - c * stride + (2 - c) * stride
                            } else {
                                i
                            };
                            let v = raw[src] * p.scale;
                            match (p.mean.get(c), p.std.get(c)) {
                                (Some(m), Some(s)) => (v - m) / s,
                                _ => v,
                            }
                        })
                        .collect();
                    let mut out = vec![0.0; raw.len()];
                    p.apply(layout, &shape, &raw, &mut out);
                    let same = out
                        .iter()
                        .zip(&expected)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{layout:?} {order:?} {:?}", p.mean);
                }
            }
        }
    }

    #[test]
    fn header_len_matches_the_table() {
        assert_eq!(HEADER_LEN, 58);
    }

    #[test]
    fn table_checks() {
        let h = HEADER_LEN as u64;
        let good: Table = [(h, 10), (h + 10, 0), (h + 10, 5)];
        assert_eq!(check_table(&good), Ok(h + 15 + 4));
        let gap: Table = [(h, 10), (h + 11, 0), (h + 11, 5)];
        assert!(check_table(&gap).unwrap_err().contains("backbone"));
        let overlap: Table = [(h, 10), (h + 9, 1), (h + 10, 5)];
        assert!(check_table(&overlap).unwrap_err().contains("backbone"));
        let overflow: Table = [(h, u64::MAX), (0, 0), (0, 0)];
        assert!(check_table(&overflow).unwrap_err().contains("manifest"));
        let overflow: Table = [(h, 1), (h + 1, 1), (h + 2, u64::MAX - h - 2)];
        assert!(check_table(&overflow).unwrap_err().contains("out of range"));
        let empty: Table = [(h, 0), (h, 0), (h, 0)];
        assert!(check_table(&empty).unwrap_err().contains("empty"));
    }

    #[test]
    fn crc_of_short_input_does_not_panic() {
        assert!(check_crc(&[]).is_err());
        assert!(check_crc(&[1, 2]).is_err());
    }
}
