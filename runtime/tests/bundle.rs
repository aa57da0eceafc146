//! Bundles: they roundtrip with and without a backbone and a head; every single-byte
//! corruption, every truncation, foreign and newer data, tampered section tables and
//! invalid manifests are refused with an error that says what is wrong (and no input
//! panics); the head must fit the manifest; files are replaced atomically.

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

#[test]
fn exemplars_round_trip_and_bad_ones_are_refused() {
    use edgetune::bundle::Exemplars;
    let mut b = features_bundle();
    let (x0, x1) = ([1.0f32, 0.0, 0.0, 0.5], [0.0f32, 1.0, 0.25, 0.0]);
    b.manifest.exemplars = Some(Exemplars::new([(&x0[..], 0), (&x1[..], 1)], [(&x1[..], 1)]));
    let back = Bundle::from_bytes(&b.to_bytes().unwrap()).unwrap();
    assert_eq!(back, b);
    let e = back.manifest.exemplars.as_ref().unwrap();
    assert_eq!(
        (e.replay.as_slice(), e.guard.as_slice()),
        (&[0, 1][..], &[1][..])
    );
    let values = e.embeddings(4, 2).unwrap();
    assert_eq!(values, [x0, x1, x1].concat());

    let refused = |edit: &dyn Fn(&mut Exemplars), expected: &str| {
        let mut bad = b.clone();
        edit(bad.manifest.exemplars.as_mut().unwrap());
        let err = bad.to_bytes().unwrap_err().to_string();
        assert!(err.contains(expected), "{err:?} does not say {expected:?}");
    };
    refused(&|e| e.embeddings = "***".into(), "not valid base64");
    refused(
        &|e| e.replay.push(0),
        "48 bytes of embeddings for 4 exemplars of 4 values",
    );
    refused(&|e| e.guard[0] = 2, "class 2 of 2");
    let nan = Exemplars::new([(&[f32::NAN, 0.0, 0.0, 0.0][..], 0)], []);
    refused(&|e| *e = nan.clone(), "NaN or infinity");
}

#[test]
fn roundtrips_with_and_without_backbone_and_head() {
    let mut no_head = features_bundle();
    no_head.head = None;
    let mut image_no_head = image_bundle();
    image_no_head.head = None;
    let empty_classes = Bundle::features_only(3, Vec::<String>::new(), provenance());
    for bundle in [
        features_bundle(),
        no_head,
        image_bundle(),
        image_no_head,
        text_bundle(),
        empty_classes,
    ] {
        let bytes = bundle.to_bytes().unwrap();
        let back = Bundle::from_bytes(&bytes).unwrap();
        assert_eq!(back, bundle);
        assert_eq!(back.to_bytes().unwrap(), bytes, "re-encoding is identical");
        assert_eq!(
            bytes,
            assemble_bundle(&bundle),
            "the writer follows the layout"
        );
        if let Some(head) = &back.head {
            let decoded = persist::decode_head(head).unwrap();
            assert_eq!(decoded.classes(), bundle.manifest.classes.len());
            assert_eq!(decoded.dims().input, bundle.manifest.embedding.size);
        }
    }
}

#[test]
fn the_layout_is_as_documented() {
    for bundle in [features_bundle(), image_bundle(), text_bundle()] {
        let bytes = bundle.to_bytes().unwrap();
        assert_eq!(&bytes[..8], b"ETBUNDLE");
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 1);
        let (m_off, m_len) = section(&bytes, 0);
        let (b_off, b_len) = section(&bytes, 1);
        let (h_off, h_len) = section(&bytes, 2);
        assert_eq!(m_off, HEADER_LEN);
        assert_eq!((b_off, h_off), (m_off + m_len, b_off + b_len));
        assert_eq!(h_off + h_len + 4, bytes.len());
        assert_eq!(&bytes[b_off..b_off + b_len], &bundle.backbone[..]);
        assert_eq!(
            &bytes[h_off..h_off + h_len],
            bundle.head.as_deref().unwrap_or_default()
        );
        // The manifest is pretty-printed JSON: readable in a dump.
        let json = std::str::from_utf8(&bytes[m_off..m_off + m_len]).unwrap();
        assert!(json.starts_with("{\n  \"format_version\": 1,\n"), "{json}");
        assert!(json.ends_with("}\n"));
        let parsed: Manifest = serde_json::from_str(json).unwrap();
        assert_eq!(parsed, bundle.manifest);
    }
    let bytes = image_bundle().to_bytes().unwrap();
    let text = String::from_utf8_lossy(&bytes);
    for needle in [
        "\"layout\": \"nchw\"",
        "\"channel_order\": \"bgr\"",
        "\"format\": \"nnef_tar\"",
        "\"kind\": \"int8\"",
        "\"washer\"",
        "\"tool\": \"bundle tests\"",
    ] {
        assert!(text.contains(needle), "{needle} not in the dump");
    }
    // A hand-written bundle reads like a written one.
    let b = image_bundle();
    assert_eq!(Bundle::from_bytes(&assemble_bundle(&b)).unwrap(), b);
}

#[test]
fn every_single_byte_corruption_is_refused() {
    for bundle in [features_bundle(), image_bundle()] {
        let good = bundle.to_bytes().unwrap();
        for i in 0..good.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] ^= flip;
                let err = Bundle::from_bytes(&bad).expect_err("corruption accepted");
                let expected = match i {
                    0..8 => matches!(err, BundleError::NotABundle),
                    8..10 => matches!(err, BundleError::UnsupportedVersion { .. }),
                    _ => matches!(
                        err,
                        BundleError::Checksum { .. }
                            | BundleError::Truncated { .. }
                            | BundleError::BadLayout { .. }
                    ),
                };
                assert!(expected, "byte {i} ^ {flip:#x}: {err}");
            }
        }
    }
}

#[test]
fn every_truncation_is_refused() {
    for bundle in [features_bundle(), image_bundle()] {
        let good = bundle.to_bytes().unwrap();
        let len = good.len() as u64;
        for n in 0..good.len() {
            let err = Bundle::from_bytes(&good[..n]).expect_err("truncation accepted");
            let BundleError::Truncated { needed, found } = err else {
                panic!("{n} bytes: {err}");
            };
            assert_eq!(found, n as u64);
            if n >= HEADER_LEN + 4 {
                assert_eq!(needed, len, "{n} bytes");
            } else {
                assert_eq!(needed, HEADER_LEN as u64 + 4);
            }
            assert!(err.to_string().contains("truncated"));
        }
        for extra in [&[0u8][..], &[1, 2, 3, 4, 5]] {
            let mut long = good.clone();
            long.extend_from_slice(extra);
            let err = Bundle::from_bytes(&long).unwrap_err();
            assert!(
                matches!(&err, BundleError::BadLayout { what } if what.contains(&format!("{} unexpected bytes", extra.len()))),
                "{err}"
            );
        }
    }
}

#[test]
fn newer_versions_are_refused_with_both_numbers() {
    let mut bytes = features_bundle().to_bytes().unwrap();
    bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
    fix_crc(&mut bytes);
    let err = Bundle::from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("newer edgetune"), "{msg}");
    assert!(msg.contains("format 2") && msg.contains("up to 1"), "{msg}");
    // A newer bundle with a different layout is refused just the same.
    let err = Bundle::from_bytes(b"ETBUNDLE\x07\x00").unwrap_err();
    assert!(err.to_string().contains("format 7"), "{err}");
    bytes[8..10].copy_from_slice(&0u16.to_le_bytes());
    let err = Bundle::from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(err, BundleError::UnsupportedVersion { found: 0, .. }),
        "{err}"
    );
    assert!(!err.to_string().contains("newer"), "{err}");
}

#[test]
fn foreign_data_is_not_a_bundle() {
    let mut bytes = features_bundle().to_bytes().unwrap();
    bytes[..4].copy_from_slice(b"PK\x03\x04");
    let err = Bundle::from_bytes(&bytes).unwrap_err();
    assert!(matches!(err, BundleError::NotABundle), "{err}");
    assert!(err.to_string().contains("not an edgetune bundle"));
    // A head file is not a bundle either.
    let head = head_bytes(4, 2, 4);
    assert!(matches!(
        Bundle::from_bytes(&head),
        Err(BundleError::NotABundle)
    ));
    assert!(matches!(
        Bundle::from_bytes(b"{\"format_version\": 1}"),
        Err(BundleError::NotABundle)
    ));
    assert!(matches!(
        Bundle::from_bytes(b"XY"),
        Err(BundleError::NotABundle)
    ));
    // Too short to tell, but a bundle so far: truncated.
    for short in [&b""[..], b"ETB", b"ETBUNDLE", b"ETBUNDLE\x01"] {
        assert!(
            matches!(
                Bundle::from_bytes(short),
                Err(BundleError::Truncated { .. })
            ),
            "{short:?}"
        );
    }
}

#[test]
fn tampered_section_tables_are_refused() {
    let good = image_bundle().to_bytes().unwrap();
    let set = |bytes: &mut Vec<u8>, field: usize, v: u64| {
        let at = 10 + 8 * field;
        bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
        fix_crc(bytes);
    };
    let (m_off, m_len) = section(&good, 0);
    let (b_off, b_len) = section(&good, 1);
    let (h_off, h_len) = section(&good, 2);
    let cases: [(usize, u64, &str); 10] = [
        (0, m_off as u64 + 1, "manifest section starts at"),
        (0, 0, "manifest section starts at"),
        (1, u64::MAX, "out of range"),
        (1, m_len as u64 - 1, "backbone section starts at"),
        (2, b_off as u64 - 1, "backbone section starts at"), // overlaps the manifest
        (3, b_len as u64 + 1, "head section starts at"),
        (3, u64::MAX - 1, "out of range"),
        (4, h_off as u64 + 1, "head section starts at"),
        (5, h_len as u64 + 1, "describes"),
        (5, u64::MAX - h_off as u64, "out of range"),
    ];
    for (field, value, what) in cases {
        let mut bad = good.clone();
        set(&mut bad, field, value);
        let err = Bundle::from_bytes(&bad).unwrap_err();
        assert!(
            matches!(&err, BundleError::BadLayout { what: w } if w.contains(what)),
            "field {field} = {value}: {err}"
        );
    }
    // An empty manifest: the table is consistent but there is nothing to read.
    let bytes = assemble(b"", b"", b"");
    let err = Bundle::from_bytes(&bytes).unwrap_err();
    assert!(
        err.to_string().contains("manifest section is empty"),
        "{err}"
    );
}

#[test]
fn bad_manifest_json_is_refused_with_line_and_column() {
    let bundle = features_bundle();
    let head = bundle.head.clone().unwrap();
    let json = serde_json::to_string_pretty(&bundle.manifest).unwrap();
    let refuse = |json: &str, what: &[&str]| {
        let err = Bundle::from_bytes(&assemble(json.as_bytes(), b"", &head)).unwrap_err();
        assert!(matches!(err, BundleError::Manifest { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("manifest: "), "{msg}");
        for w in what {
            assert!(msg.contains(w), "{w:?} not in {msg:?}");
        }
    };
    refuse("{", &["EOF", "line 1 column 1"]);
    refuse(&json[..json.len() - 3], &["line"]);
    refuse("[]", &["line 1"]);
    refuse(&format!("{json} x"), &["trailing characters", "line"]);
    // Every field this version defines is required (an Option may be left out).
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for field in [
        "format_version",
        "input",
        "preprocess",
        "embedding",
        "backbone",
        "classes",
        "provenance",
    ] {
        let mut v = value.clone();
        v.as_object_mut().unwrap().remove(field);
        let json = serde_json::to_string_pretty(&v).unwrap();
        refuse(&json, &[&format!("missing field `{field}`"), "line"]);
    }
    let mut v = value.clone();
    v["embedding"].as_object_mut().unwrap().remove("size");
    refuse(&v.to_string(), &["missing field `size`"]);
    let mut v = value.clone();
    v["backbone"]["quantization"] = serde_json::json!({"kind": "int4"});
    refuse(&v.to_string(), &["unknown variant `int4`"]);
    let mut v = value.clone();
    v["embedding"]["size"] = serde_json::json!(-4);
    refuse(&v.to_string(), &["invalid value", "line 1"]);
    let mut v = value.clone();
    v["input"]["layout"] = serde_json::json!("NCHW");
    refuse(&v.to_string(), &["unknown variant `NCHW`"]);
    let dup = json.replacen("\"classes\"", "\"classes\": [],\n  \"classes\"", 1);
    refuse(&dup, &["duplicate field `classes`"]);
    refuse("\u{feff}{}", &["line 1"]);
    let err = Bundle::from_bytes(&assemble(b"{\"a\": \"\xff\"}", b"", &head)).unwrap_err();
    assert!(matches!(err, BundleError::Manifest { .. }), "{err}");

    // A newer writer's extra fields are ignored; `None` fields may be left out.
    let mut v = value.clone();
    v["future_field"] = serde_json::json!({"anything": [1, 2, 3]});
    v["input"]["future_field"] = serde_json::json!(true);
    v["backbone"]["quantization"]["future_field"] = serde_json::json!("x");
    v.as_object_mut().unwrap().remove("pooling");
    v["preprocess"].as_object_mut().unwrap().remove("resize");
    v["provenance"]
        .as_object_mut()
        .unwrap()
        .remove("source_sha256");
    let bytes = assemble(
        serde_json::to_string_pretty(&v).unwrap().as_bytes(),
        b"",
        &head,
    );
    let back = Bundle::from_bytes(&bytes).unwrap();
    let mut expected = bundle.clone();
    expected.manifest.provenance.source_sha256 = None;
    assert_eq!(back, expected);
}

type Mutation = fn(&mut Bundle);
/// A test name, the bundle to start from, a change that makes it invalid, and what the
/// error must say.
type Case = (&'static str, fn() -> Bundle, Mutation, &'static str);

#[test]
fn invalid_manifests_are_refused_naming_the_field() {
    let cases: &[Case] = &[
        (
            "format version",
            image_bundle,
            |b| b.manifest.format_version = 2,
            "format_version",
        ),
        (
            "input name",
            image_bundle,
            |b| b.manifest.input.name.clear(),
            "input.name",
        ),
        (
            "empty shape",
            image_bundle,
            |b| b.manifest.input.shape.clear(),
            "input.shape must not be empty",
        ),
        (
            "zero in shape",
            image_bundle,
            |b| b.manifest.input.shape[2] = 0,
            "input.shape[2] must not be 0",
        ),
        (
            "batch",
            image_bundle,
            |b| b.manifest.input.shape[0] = 2,
            "input.shape[0]",
        ),
        (
            "rank",
            image_bundle,
            |b| b.manifest.input.shape.push(1),
            "input.shape must have 4 dimensions",
        ),
        (
            "huge shape",
            image_bundle,
            |b| b.manifest.input.shape[2] = usize::MAX,
            "too many elements",
        ),
        (
            "features shape",
            features_bundle,
            |b| b.manifest.input.shape[1] = 5,
            "input.shape must be [1, 4]",
        ),
        (
            "image dtype",
            image_bundle,
            |b| b.manifest.input.dtype = "i64".into(),
            "input.dtype",
        ),
        (
            "unknown dtype",
            image_bundle,
            |b| b.manifest.input.dtype = "float".into(),
            "input.dtype \"float\" (unknown type)",
        ),
        (
            "features dtype",
            features_bundle,
            |b| b.manifest.input.dtype = "u8".into(),
            "input.dtype",
        ),
        (
            "token dtype",
            text_bundle,
            |b| b.manifest.input.dtype = "f32".into(),
            "input.dtype",
        ),
        (
            "scale",
            image_bundle,
            |b| b.manifest.preprocess.scale = 0.0,
            "preprocess.scale must be positive",
        ),
        (
            "negative std",
            image_bundle,
            |b| b.manifest.preprocess.std[1] = -1.0,
            "preprocess.std[1] must be positive",
        ),
        (
            "zero std",
            image_bundle,
            |b| b.manifest.preprocess.std[2] = 0.0,
            "preprocess.std[2] must be positive",
        ),
        (
            "mean vs std",
            image_bundle,
            |b| {
                b.manifest.preprocess.mean.pop();
            },
            "preprocess.mean has 2 values but preprocess.std has 3",
        ),
        (
            "channels",
            image_bundle,
            |b| {
                b.manifest.preprocess.mean.pop();
                b.manifest.preprocess.std.pop();
            },
            "the input has 3 channels",
        ),
        (
            "nhwc channels",
            image_bundle,
            |b| {
                b.manifest.input.layout = Layout::Nhwc;
                b.manifest.input.shape = vec![1, 8, 8, 1];
            },
            "the input has 1 channels",
        ),
        (
            "features mean",
            features_bundle,
            |b| {
                b.manifest.preprocess.mean = vec![0.0; 3];
                b.manifest.preprocess.std = vec![1.0; 3];
            },
            "the input has 4 channels",
        ),
        (
            "bgr",
            features_bundle,
            |b| b.manifest.preprocess.channel_order = ChannelOrder::Bgr,
            "preprocess.channel_order",
        ),
        (
            "resize features",
            features_bundle,
            |b| b.manifest.preprocess.resize = Some([4, 4]),
            "preprocess.resize applies only to image layouts",
        ),
        (
            "resize zero",
            image_bundle,
            |b| b.manifest.preprocess.resize = Some([0, 4]),
            "preprocess.resize[0] must not be 0",
        ),
        (
            "token preprocessing",
            text_bundle,
            |b| b.manifest.preprocess.mean = vec![1.0],
            "preprocess.mean must be the identity",
        ),
        (
            "token scale",
            text_bundle,
            |b| b.manifest.preprocess.scale = 2.0,
            "preprocess.scale must be the identity",
        ),
        (
            "features pooling",
            features_bundle,
            |b| b.manifest.pooling = Some(Pooling::Cls),
            "pooling must be null",
        ),
        (
            "embedding tensor",
            image_bundle,
            |b| b.manifest.embedding.tensor.clear(),
            "embedding.tensor",
        ),
        (
            "embedding size",
            image_bundle,
            |b| {
                b.manifest.embedding.size = 0;
                b.head = None;
            },
            "embedding.size must be positive",
        ),
        (
            "no backbone for images",
            image_bundle,
            |b| {
                b.manifest.backbone.format = BackboneFormat::None;
                b.backbone.clear();
            },
            "backbone.format is none, which needs input.layout features",
        ),
        (
            "backbone for features",
            features_bundle,
            |b| {
                b.manifest.backbone.format = BackboneFormat::NnefTar;
                b.backbone = vec![1];
            },
            "backbone.format must be none for the features layout",
        ),
        (
            "stray backbone bytes",
            features_bundle,
            |b| b.backbone = vec![0; 8],
            "backbone.format is none but the bundle holds 8 backbone bytes",
        ),
        (
            "missing backbone bytes",
            image_bundle,
            |b| b.backbone.clear(),
            "backbone.format is nnef_tar but the backbone section is empty",
        ),
        (
            "int8 without backbone",
            features_bundle,
            |b| {
                b.manifest.backbone.quantization = Quantization::Int8 {
                    calibration_samples: 1,
                    cosine_to_f32: None,
                }
            },
            "backbone.quantization must be f32",
        ),
        (
            "cosine",
            image_bundle,
            |b| {
                b.manifest.backbone.quantization = Quantization::Int8 {
                    calibration_samples: 8,
                    cosine_to_f32: Some(1.5),
                }
            },
            "backbone.quantization.cosine_to_f32",
        ),
        (
            "empty class",
            image_bundle,
            |b| {
                b.manifest.classes[1].clear();
            },
            "classes[1] must not be empty",
        ),
        (
            "control character",
            image_bundle,
            |b| b.manifest.classes[0] = "a\nb".into(),
            "classes[0] \"a\\nb\" must not contain control characters",
        ),
        (
            "duplicate class",
            image_bundle,
            |b| b.manifest.classes[2] = "bolt".into(),
            "classes[2] \"bolt\" repeats classes[0]",
        ),
        (
            "source",
            image_bundle,
            |b| b.manifest.provenance.source.clear(),
            "provenance.source must not be empty",
        ),
        (
            "tool",
            image_bundle,
            |b| b.manifest.provenance.tool.clear(),
            "provenance.tool",
        ),
        (
            "sha256",
            image_bundle,
            |b| b.manifest.provenance.source_sha256 = Some("ABC".into()),
            "provenance.source_sha256",
        ),
    ];
    for &(name, make, mutate, what) in cases {
        let mut bundle = make();
        mutate(&mut bundle);
        let check = |err: BundleError, when: &str| {
            assert!(
                matches!(err, BundleError::Manifest { .. }),
                "{name} ({when}): {err}"
            );
            let msg = err.to_string();
            assert!(msg.starts_with("manifest: "), "{name} ({when}): {msg}");
            assert!(
                msg.contains(what),
                "{name} ({when}): {what:?} not in {msg:?}"
            );
        };
        check(bundle.to_bytes().unwrap_err(), "writing");
        check(
            Bundle::from_bytes(&assemble_bundle(&bundle)).unwrap_err(),
            "reading",
        );
        check(bundle.validate().unwrap_err(), "validate");
    }
    // NaN and infinity cannot be written; in JSON they would be `null`, which does not
    // read as a number.
    for v in [f32::NAN, f32::INFINITY] {
        let mut b = image_bundle();
        b.manifest.preprocess.std[0] = v;
        let err = b.to_bytes().unwrap_err();
        assert!(err.to_string().contains("preprocess.std[0]"), "{err}");
        let mut b = image_bundle();
        b.manifest.preprocess.mean[2] = v;
        let err = b.to_bytes().unwrap_err();
        assert!(
            err.to_string()
                .contains("preprocess.mean[2] must be finite"),
            "{err}"
        );
        let err = Bundle::from_bytes(&assemble_bundle(&b)).unwrap_err();
        assert!(matches!(err, BundleError::Manifest { .. }), "{err}");
    }
}

#[test]
fn heads_must_fit_the_manifest() {
    let check = |bundle: &Bundle, test: &dyn Fn(&BundleError) -> bool| {
        let err = bundle.to_bytes().unwrap_err();
        assert!(test(&err), "writing: {}", chain(&err));
        let err = Bundle::from_bytes(&assemble_bundle(bundle)).unwrap_err();
        assert!(test(&err), "reading: {}", chain(&err));
    };
    let mut b = features_bundle();
    b.head = Some(head_bytes(5, 2, 4));
    check(&b, &|e| {
        matches!(
            e,
            BundleError::HeadMismatch {
                what: "embedding.size",
                manifest: 4,
                head: 5
            }
        ) && e
            .to_string()
            .contains("takes 5 inputs, embedding.size is 4")
    });
    b.head = Some(head_bytes(4, 3, 4));
    check(&b, &|e| {
        matches!(
            e,
            BundleError::HeadMismatch {
                what: "classes",
                manifest: 2,
                head: 3
            }
        ) && e
            .to_string()
            .contains("has 3 classes, the manifest names 2")
    });
    b.head = Some(b"not a head file, only some bytes".to_vec());
    check(&b, &|e| {
        matches!(e, BundleError::Head(DecodeError::BadMagic))
    });
    // `Some` empty head cannot be written (an empty section means no head).
    b.head = Some(Vec::new());
    let err = b.to_bytes().unwrap_err();
    assert!(
        matches!(err, BundleError::Head(DecodeError::Truncated { .. })),
        "{err}"
    );
    assert!(
        chain(&err).contains("the bundle's head section is invalid: data is truncated"),
        "{}",
        chain(&err)
    );
    // A head damaged before the bundle was checksummed: persist's own checks catch it.
    let mut head = head_bytes(4, 2, 4);
    let n = head.len();
    head[n - 6] ^= 0x20;
    b.head = Some(head.clone());
    check(&b, &|e| {
        matches!(e, BundleError::Head(DecodeError::Checksum { .. }))
    });
    head.push(0);
    b.head = Some(head);
    check(&b, &|e| {
        matches!(e, BundleError::Head(DecodeError::BadHeader { .. }))
    });

    // A head with learner state (an MLP with Adam) and spare class capacity fits.
    let dims = Dims::mlp(4, 3, 8);
    let mut head = Head::alloc(dims, 2).unwrap();
    head.init(1);
    let cfg = Config {
        optimizer: Optimizer::ADAM,
        ..Config::DEFAULT
    };
    let mut learner = Learner::new(
        dims,
        cfg,
        vec![0.0; Learner::<()>::state_len(dims, &cfg.optimizer)],
    )
    .unwrap();
    learner.step(&mut head, &[1.0, 0.0, -1.0, 0.5], 1).unwrap();
    b.head = Some(persist::encode_to_vec(&head, Some(&learner)).unwrap());
    let back = Bundle::from_bytes(&b.to_bytes().unwrap()).unwrap();
    assert_eq!(back, b);
}

#[test]
fn write_replaces_atomically_and_leaves_no_temporary_files() {
    let dir = edgetune_testkit::scratch("bundle-write");
    let path = dir.join("model.etb");
    let first = features_bundle();
    first.write(&path).unwrap();
    assert_eq!(Bundle::read(&path).unwrap(), first);
    let second = image_bundle();
    second.write(&path).unwrap();
    assert_eq!(Bundle::read(&path).unwrap(), second);
    assert_eq!(fs::read(&path).unwrap(), second.to_bytes().unwrap());
    assert_eq!(dir_entries(&dir), ["model.etb"]);

    // An invalid bundle is not written and the old one stays.
    let mut bad = features_bundle();
    bad.manifest.embedding.size = 0;
    assert!(matches!(
        bad.write(&path),
        Err(BundleError::Manifest { .. })
    ));
    assert_eq!(Bundle::read(&path).unwrap(), second);

    // A failed rename (the target is a directory) removes the temporary file.
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("keep"), b"x").unwrap();
    let err = first.write(&sub).unwrap_err();
    assert!(matches!(err, BundleError::Io { .. }), "{err}");
    assert!(err.to_string().contains("sub"), "{err}");
    assert_eq!(dir_entries(&dir), ["model.etb", "sub"]);

    // A missing directory: an error naming the temporary file's place, no panic.
    let err = first.write(dir.join("missing/model.etb")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    // A path that names no file.
    let err = first.write("").unwrap_err();
    assert!(matches!(err, BundleError::Io { .. }), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_errors_name_the_path() {
    let dir = edgetune_testkit::scratch("bundle-read");
    let missing = dir.join("no-such.etb");
    let err = Bundle::read(&missing).unwrap_err();
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
    let BundleError::Io { source, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(err.source().is_some());

    let path = dir.join("corrupt.etb");
    let mut bytes = features_bundle().to_bytes().unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let err = Bundle::read(&path).unwrap_err();
    let msg = chain(&err);
    assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert!(matches!(err.inner(), BundleError::Checksum { .. }), "{msg}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn provenance_new_is_now() {
    let p = Provenance::new("model.onnx", "finetune-head 0.1.0");
    assert!(p.created_unix > 1_700_000_000);
    assert_eq!((p.source_sha256, p.notes.len()), (None, 0));
    assert_eq!(Preprocess::default().scale, 1.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary rewrites that keep the checksum valid: refused or accepted, never a panic,
    /// and whatever is accepted writes back and reads back the same.
    #[test]
    fn tampering_with_a_valid_checksum_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        table_edit in proptest::option::of((0usize..6, any::<u64>())),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = image_bundle().to_bytes().unwrap();
        for (at, v) in edits {
            let i = at.index(bytes.len() - 4);
            bytes[i] = v;
        }
        if let Some((field, v)) = table_edit {
            bytes[10 + 8 * field..18 + 8 * field].copy_from_slice(&v.to_le_bytes());
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len()).max(4));
        }
        fix_crc(&mut bytes);
        if let Ok(b) = Bundle::from_bytes(&bytes) {
            prop_assert_eq!(Bundle::from_bytes(&b.to_bytes().unwrap()).unwrap(), b);
        }
    }

    /// Random bytes behind a valid header prefix never panic.
    #[test]
    fn random_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut bytes = b"ETBUNDLE\x01\x00".to_vec();
        bytes.extend_from_slice(&body);
        let _ = Bundle::from_bytes(&bytes);
        if bytes.len() >= 4 {
            fix_crc(&mut bytes);
            let _ = Bundle::from_bytes(&bytes);
        }
    }
}
