//! Bundles: they roundtrip with and without a backbone and a head; every single-byte
//! corruption, every truncation, foreign and newer data, tampered section tables and
//! invalid manifests are refused with an error that says what is wrong (and no input
//! panics); the head must fit the manifest; files are replaced atomically.
//!
//! Files: `container.rs` the container (roundtrips, layout, corruption, truncation,
//! versions, section tables), `manifest.rs` the manifest's checks and the head's fit,
//! `files.rs` reading and writing files.

mod container;
mod files;
mod manifest;

use std::error::Error as _;
use std::fs;
use std::path::Path;

use crc::{CRC_32_ISO_HDLC, Crc};
use edgetune::bundle::{
    BackboneFormat, BackboneSpec, Bundle, BundleError, ChannelOrder, EmbeddingSpec, HEADER_LEN,
    InputSpec, Layout, MAGIC, Manifest, Pooling, Preprocess, Provenance, Quantization, VERSION,
};
use edgetune::persist::{self, DecodeError};
use edgetune::{Config, Dims, Head, Learner, Optimizer};
use proptest::prelude::*;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

fn provenance() -> Provenance {
    Provenance {
        source: "tests/bundle.rs".to_string(),
        source_sha256: Some("0123456789abcdef".repeat(4)),
        tool: "bundle tests".to_string(),
        created_unix: 1_700_000_000,
        notes: vec!["made by a test".to_string()],
    }
}

/// A head in the persist format (no learner state), its parameters initialized.
fn head_bytes(input: usize, classes: usize, capacity: usize) -> Vec<u8> {
    let mut head = Head::alloc(Dims::linear(input, capacity), classes).unwrap();
    head.init(5);
    persist::encode_to_vec(&head, None::<&Learner<[f32; 0]>>).unwrap()
}

/// A features-only bundle: 4 features, 2 classes, with a head.
fn features_bundle() -> Bundle {
    let mut b = Bundle::features_only(4, ["left", "right"], provenance());
    b.head = Some(head_bytes(4, 2, 4));
    b
}

/// An image bundle: NCHW 3×8×8, int8 backbone (opaque bytes here), 6-value embedding,
/// 3 classes, with a head.
fn image_bundle() -> Bundle {
    Bundle {
        manifest: Manifest {
            format_version: VERSION,
            input: InputSpec {
                name: "pixel_values".to_string(),
                shape: vec![1, 3, 8, 8],
                layout: Layout::Nchw,
                dtype: "f32".to_string(),
            },
            preprocess: Preprocess {
                scale: 1.0 / 255.0,
                mean: vec![0.485, 0.456, 0.406],
                std: vec![0.229, 0.224, 0.225],
                channel_order: ChannelOrder::Bgr,
                resize: Some([10, 10]),
            },
            pooling: None,
            text: None,
            exemplars: None,
            embedding_stats: None,
            hidden_stats: None,
            embedding: EmbeddingSpec {
                tensor: "pooled".to_string(),
                size: 6,
            },
            backbone: BackboneSpec {
                format: BackboneFormat::NnefTar,
                quantization: Quantization::Int8 {
                    calibration_samples: 64,
                    cosine_to_f32: Some(0.995),
                },
            },
            classes: vec!["bolt".into(), "nut".into(), "washer".into()],
            provenance: provenance(),
        },
        backbone: b"opaque backbone bytes (a tract NNEF tar in real bundles)".to_vec(),
        head: Some(head_bytes(6, 3, 5)),
    }
}

/// A text bundle: token ids, mean pooling, no head.
fn text_bundle() -> Bundle {
    let mut b = image_bundle();
    b.manifest.input = InputSpec {
        name: "input_ids".to_string(),
        shape: vec![1, 16],
        layout: Layout::Tokens,
        dtype: "i64".to_string(),
    };
    b.manifest.preprocess = Preprocess::default();
    b.manifest.pooling = Some(Pooling::MeanOverMask);
    b.manifest.backbone.quantization = Quantization::F32;
    b.head = None;
    b
}

/// Writes a bundle by hand from the documented layout.
fn assemble(manifest: &[u8], backbone: &[u8], head: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    let mut at = HEADER_LEN as u64;
    for part in [manifest, backbone, head] {
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        at += part.len() as u64;
    }
    assert_eq!(out.len(), HEADER_LEN);
    for part in [manifest, backbone, head] {
        out.extend_from_slice(part);
    }
    let crc = CRC32.checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Writes a bundle by hand, with no checks, from its parts.
fn assemble_bundle(b: &Bundle) -> Vec<u8> {
    let mut json = serde_json::to_vec_pretty(&b.manifest).unwrap();
    json.push(b'\n');
    assemble(&json, &b.backbone, b.head.as_deref().unwrap_or_default())
}

/// Rewrites the trailer so that tampered bytes pass the checksum.
fn fix_crc(bytes: &mut [u8]) {
    let n = bytes.len() - 4;
    let crc = CRC32.checksum(&bytes[..n]);
    bytes[n..].copy_from_slice(&crc.to_le_bytes());
}

/// The (offset, length) of section `i` from the table.
fn section(bytes: &[u8], i: usize) -> (usize, usize) {
    let at = 10 + 16 * i;
    let le = |r: std::ops::Range<usize>| u64::from_le_bytes(bytes[r].try_into().unwrap()) as usize;
    (le(at..at + 8), le(at + 8..at + 16))
}

/// An error's message followed by its sources', as `anyhow`'s `{:#}` prints them.
fn chain(e: &BundleError) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
