//! The manifest: bad JSON and invalid fields refused, naming the field; the head must
//! fit the manifest.

use super::*;

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
