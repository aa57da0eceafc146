//! Loads a bundle's backbone and embeds one input N times: the program the ARM
//! instruction counts are taken with (`scripts/icount.sh`), and a quick check that a
//! bundle runs on a board.
//!
//! `embed BUNDLE [N]`: N inferences (default 1) of a fixed pseudo-random input (for a
//! text encoder: a sentence of 16 token ids, padded to its sequence length); prints the
//! first values of the embedding. Count N = 1 and N = 1 + k, and divide the difference
//! by k to get the cost of one inference without loading.

use edgetune::backbone::Backbone;
use edgetune::bundle::Bundle;
use edgetune::rng::Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: embed BUNDLE [N]")?;
    let n: usize = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|_| format!("N must be a count, got {n:?}"))?,
        None => 1,
    };
    let bundle = Bundle::read(&path)?;
    let backbone = Backbone::from_bundle(&bundle)?;
    let mut rng = Rng::new(7);
    let raw: Vec<f32> = (0..backbone.input_len())
        .map(|_| (rng.unit() * 255.0).floor())
        .collect();
    // Ids 5..100 exist in any vocabulary (below them are BERT-style special tokens).
    let tokens = backbone.max_tokens().min(16);
    let ids: Vec<i64> = (0..tokens)
        .map(|_| 5 + (rng.unit() * 95.0) as i64)
        .collect();
    let mut out = vec![0.0f32; backbone.embedding_len()];
    for _ in 0..n {
        if tokens > 0 {
            backbone.embed_tokens(&ids, &mut out)?;
        } else {
            backbone.embed(&raw, &mut out)?;
        }
    }
    println!("{:?}", &out[..out.len().min(4)]);
    Ok(())
}
