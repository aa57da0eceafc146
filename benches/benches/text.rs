//! Text on the device: the shipped WordPiece tokenizer (`models/text/tokenizer.json`)
//! and a BERT-style encoder shaped like all-MiniLM-L6-v2 (hidden 384, 12 heads, 6 layers,
//! feed-forward 1536, sequence 64; random weights from `testmodels::bert`, vocabulary of
//! the tokenizer's 411 ids: the table's size does not change the compute).
//!
//! - `text/tokenize/sentence`: `TextTokenizer::encode` of one short request (10 ids),
//!   what the device does before the backbone for a `{"text": …}` request;
//!   `text/tokenize/truncated`: a 180-word text cut to 64 tokens.
//! - `text/embed/minilm-shape-seq64`: `Backbone::embed_tokens` of 64 ids on one thread
//!   (tract, f32), mean pooling included: the backbone's share of a text prediction.
//!
//!     cargo bench -p benches --bench text

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use edgetune::backbone::Backbone;
use edgetune::text::TextTokenizer;
use edgetune_testkit::testmodels::{self, BertConfig};
use finetune_head::convert::{Options, convert};

fn text(c: &mut Criterion) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/text/tokenizer.json");
    let json = std::fs::read_to_string(&file).unwrap();
    let tok = TextTokenizer::from_json(&json, 64).unwrap();
    let sentence = "set the kitchen lights to warm white please";
    let long = "set a timer for five minutes ".repeat(30);
    assert!(tok.encode(&long).unwrap().truncated);
    let mut g = c.benchmark_group("text");
    g.bench_function("tokenize/sentence", |b| {
        b.iter(|| tok.encode(black_box(sentence)).unwrap())
    });
    g.bench_function("tokenize/truncated", |b| {
        b.iter(|| tok.encode(black_box(&long)).unwrap())
    });

    let cfg = BertConfig {
        vocab: 411,
        seq_len: 64,
        hidden: 384,
        heads: 12,
        layers: 6,
        ffn: 1536,
        seed: 0,
    };
    let dir = std::env::temp_dir().join(format!("edgetune-bench-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("minilm-shape.onnx");
    testmodels::write(&model, &testmodels::bert(&cfg)).unwrap();
    let opts = Options {
        embedding: Some("last_hidden_state".into()),
        tokenizer: Some(file),
        ..Default::default()
    };
    let (bundle, _) = convert(&model, &opts).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let backbone = Backbone::from_bundle(&bundle).unwrap();
    let ids = tok.encode(&long).unwrap().ids;
    assert_eq!(ids.len(), 64);
    let mut out = vec![0.0f32; 384];
    g.bench_function("embed/minilm-shape-seq64", |b| {
        b.iter(|| backbone.embed_tokens(black_box(&ids), &mut out).unwrap())
    });
    g.finish();
}

criterion_group!(benches, text);
criterion_main!(benches);
