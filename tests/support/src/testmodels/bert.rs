//! The BERT-style test encoder: embeddings, multi-head attention with a mask,
//! LayerNormalization, Erf-based GELU.

use super::{Attr, Builder, DataType};

/// Shape of the BERT-style encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub vocab: usize,
    /// Sequence length (the inputs' fixed second dimension).
    pub seq_len: usize,
    pub hidden: usize,
    /// Attention heads; must divide `hidden`.
    pub heads: usize,
    pub layers: usize,
    /// Width of the feed-forward block.
    pub ffn: usize,
    pub seed: u64,
}

impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            vocab: 1000,
            seq_len: 16,
            hidden: 64,
            heads: 4,
            layers: 2,
            ffn: 256,
            seed: 0,
        }
    }
}

/// A BERT-style encoder: inputs `input_ids` and `attention_mask` [1, S] (i64), output
/// `last_hidden_state` [1, S, hidden]. Masked positions (mask 0) get a -1e4 attention bias.
pub fn bert(cfg: &BertConfig) -> Vec<u8> {
    assert!(
        cfg.heads > 0 && cfg.hidden.is_multiple_of(cfg.heads),
        "heads must divide hidden"
    );
    let mut g = Builder::new("bert", cfg.seed);
    let (s, h, nh) = (cfg.seq_len as i64, cfg.hidden as i64, cfg.heads as i64);
    let dh = h / nh;
    let ids = g.input("input_ids", DataType::Int64, &[1, s]);
    let mask = g.input("attention_mask", DataType::Int64, &[1, s]);

    // Embeddings: token lookup plus a learned position table, normalized.
    let table = g.weight("embeddings.word", &[cfg.vocab as i64, h], 1);
    let axis0 = [("axis", Attr::Int(0))];
    let x = g.node("Gather", "embeddings.word", &[&table, &ids], &axis0);
    let pos = g.weight("embeddings.position", &[s, h], 4);
    let x = g.add("embeddings.add", &x, &pos);
    let mut x = g.layer_norm("embeddings.ln", &x, cfg.hidden);

    // Attention bias from the mask: (1 - mask) · -1e4, as [1, 1, 1, S].
    let to_f32 = [("to", Attr::Int(DataType::Float as i64))];
    let m = g.node("Cast", "mask.cast", &[&mask], &to_f32);
    let one = g.scalar("mask.one", 1.0);
    let m = g.node("Sub", "mask.invert", &[&one, &m], &[]);
    let big = g.scalar("mask.big", -1e4);
    let m = g.mul("mask.scaled", &m, &big);
    let axes = g.constant_i64("mask.axes", &[2], &[1, 2]);
    let bias = g.node("Unsqueeze", "mask.bias", &[&m, &axes], &[]);

    for l in 0..cfg.layers {
        let p = format!("layer{l}");
        let heads = |g: &mut Builder, name: &str, perm: &[i64]| {
            let t = g.linear(&format!("{p}.attn.{name}"), &x, cfg.hidden, cfg.hidden);
            let t = g.reshape(&format!("{p}.attn.{name}.split"), &t, &[1, s, nh, dh]);
            g.transpose(&format!("{p}.attn.{name}.heads"), &t, perm)
        };
        let q = heads(&mut g, "q", &[0, 2, 1, 3]); // [1, nh, S, dh]
        let k = heads(&mut g, "k", &[0, 2, 3, 1]); // [1, nh, dh, S]
        let v = heads(&mut g, "v", &[0, 2, 1, 3]); // [1, nh, S, dh]
        let scores = g.matmul(&format!("{p}.attn.scores"), &q, &k);
        let scale = g.scalar(&format!("{p}.attn.scale.value"), 1.0 / (dh as f32).sqrt());
        let scores = g.mul(&format!("{p}.attn.scale"), &scores, &scale);
        let scores = g.add(&format!("{p}.attn.masked"), &scores, &bias);
        let probs = g.softmax(&format!("{p}.attn.probs"), &scores, -1);
        let ctx = g.matmul(&format!("{p}.attn.context"), &probs, &v);
        let ctx = g.transpose(&format!("{p}.attn.context.merge"), &ctx, &[0, 2, 1, 3]);
        let ctx = g.reshape(&format!("{p}.attn.context.flat"), &ctx, &[1, s, h]);
        let o = g.linear(&format!("{p}.attn.out"), &ctx, cfg.hidden, cfg.hidden);
        let o = g.add(&format!("{p}.attn.residual"), &o, &x);
        let a = g.layer_norm(&format!("{p}.attn.ln"), &o, cfg.hidden);
        let f = g.linear(&format!("{p}.ffn.in"), &a, cfg.hidden, cfg.ffn);
        let f = g.gelu(&format!("{p}.ffn.gelu"), &f);
        let f = g.linear(&format!("{p}.ffn.out"), &f, cfg.ffn, cfg.hidden);
        let f = g.add(&format!("{p}.ffn.residual"), &f, &a);
        x = g.layer_norm(&format!("{p}.ffn.ln"), &f, cfg.hidden);
    }
    g.output(&x, "last_hidden_state", DataType::Float, &[1, s, h]);
    g.finish()
}
