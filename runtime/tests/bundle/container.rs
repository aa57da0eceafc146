//! The container: roundtrips, the documented layout, and every damaged, truncated,
//! foreign or newer file refused.

use super::*;

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
