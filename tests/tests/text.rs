//! Text encoders: a BERT-style model with `input_ids` and `attention_mask` converts to a
//! bundle whose backbone takes token ids, pads them, builds the mask and pools the
//! sequence output into one embedding, as the original graph would.

use std::path::Path;

use edgetune::backbone::{Backbone, pool};
use edgetune::bundle::{Bundle, Layout, Pooling};
use edgetune_testkit as testkit;
use edgetune_testkit::testmodels::{self, BertConfig, Builder, DataType};
use finetune_head::convert::{Options, convert};
use tract_onnx::prelude::*;

/// tract's run of the original model on `ids` padded with 0 to 16, and the mask.
fn hidden_states(path: &Path, ids: &[i64]) -> Vec<f32> {
    let padded: Vec<i64> = (0..16).map(|p| ids.get(p).copied().unwrap_or(0)).collect();
    let mask: Vec<i64> = (0..16).map(|p| i64::from(p < ids.len())).collect();
    let inputs = tvec![
        Tensor::from_shape(&[1, 16], &padded).unwrap(),
        Tensor::from_shape(&[1, 16], &mask).unwrap(),
    ];
    testmodels::run(path, inputs)
}

#[test]
fn bert_bundle_pools_like_the_original_graph() {
    let model = testkit::file(
        "text",
        "bert.onnx",
        &testmodels::bert(&BertConfig::default()),
    );
    for pooling in [Pooling::MeanOverMask, Pooling::Cls] {
        let opts = Options {
            embedding: Some("last_hidden_state".into()),
            pooling: Some(pooling),
            ..Default::default()
        };
        let (bundle, report) = convert(&model, &opts).unwrap();
        println!("{report}");
        assert!(report.parity_max_abs <= 1e-4, "{report}");
        let m = &bundle.manifest;
        assert_eq!(m.input.layout, Layout::Tokens);
        assert_eq!(
            (m.input.name.as_str(), &m.input.shape[..]),
            ("input_ids", &[1, 16][..])
        );
        assert_eq!(m.input.dtype, "i64");
        assert_eq!(m.pooling, Some(pooling));
        let text = m.text.as_ref().unwrap();
        assert_eq!(text.attention_mask.as_deref(), Some("attention_mask"));
        assert_eq!((text.token_type_ids.as_deref(), text.pad_id), (None, 0));
        assert_eq!(m.embedding.size, 64);

        let bundle = Bundle::from_bytes(&bundle.to_bytes().unwrap()).unwrap();
        let backbone = Backbone::from_bundle(&bundle).unwrap();
        assert_eq!(backbone.max_tokens(), 16);
        for ids in [&[101i64, 7, 42, 9, 102][..], &[5; 16][..], &[3][..]] {
            let mut got = vec![0.0; 64];
            backbone.embed_tokens(ids, &mut got).unwrap();
            let mut want = vec![0.0; 64];
            pool(
                pooling,
                &hidden_states(&model, ids),
                64,
                ids.len(),
                &mut want,
            );
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-4, "{pooling:?} {ids:?}: {a} vs {b}");
            }
        }
        // Bad input is an error, never a panic.
        let mut out = vec![0.0; 64];
        let e = backbone.embed_tokens(&[1; 17], &mut out).unwrap_err();
        assert!(
            e.to_string().contains("17 tokens, the model takes 1 to 16"),
            "{e}"
        );
        let e = backbone.embed_tokens(&[], &mut out).unwrap_err();
        assert!(e.to_string().contains("0 tokens"), "{e}");
        let e = backbone.embed(&[0.0; 16], &mut out).unwrap_err();
        assert!(e.to_string().contains("embed_tokens"), "{e}");
    }
}

#[test]
fn mean_pooling_ignores_padding() {
    // Two real tokens, one padded position full of garbage.
    let seq = [1.0, 2.0, 3.0, 5.0, 100.0, -100.0];
    let mut out = [0.0; 2];
    pool(Pooling::MeanOverMask, &seq, 2, 2, &mut out);
    assert_eq!(out, [2.0, 3.5]);
    pool(Pooling::Cls, &seq, 2, 2, &mut out);
    assert_eq!(out, [1.0, 2.0]);
}

#[test]
fn text_options_and_unknown_inputs_are_clear_errors() {
    let bert = testkit::file("text", "b.onnx", &testmodels::bert(&BertConfig::default()));
    let err = |opts: Options| format!("{:#}", convert(&bert, &opts).unwrap_err());
    let e = err(Options {
        embedding: Some("last_hidden_state".into()),
        input_shape: Some(vec![1, 3, 16]),
        ..Default::default()
    });
    assert!(e.contains("[1, sequence length]"), "{e}");
    let e = err(Options {
        embedding: Some("last_hidden_state".into()),
        int8: Some(finetune_head::convert::Int8::Samples(vec![])),
        ..Default::default()
    });
    assert!(
        e.contains("text encoders") && e.contains("not supported yet"),
        "{e}"
    );

    // Two inputs that are not a text encoder's.
    let mut g = Builder::new("two", 1);
    let a = g.input("image", DataType::Float, &[1, 8]);
    let b = g.input("metadata", DataType::Float, &[1, 8]);
    let s = g.add("sum", &a, &b);
    let y = g.gemm("classifier", &s, 8, 3);
    g.output(&y, "logits", DataType::Float, &[1, 3]);
    let two = testkit::file("text", "two.onnx", &g.finish());
    let e = format!("{:#}", convert(&two, &Options::default()).unwrap_err());
    assert!(e.contains("2 inputs (image, metadata)"), "{e}");
}
