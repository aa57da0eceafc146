//! A `tokenizer.json` (`edgetune::text`): the file a bundle carries, which `finetune-head
//! convert` checks (`TextTokenizer::spec`) and the device loads
//! (`TextTokenizer::from_json`). The whole input is the file.
//!
//! Asserts: a file the check accepts loads, and encodes a sentence into ids of its
//! vocabulary within the length; none panics.
//!
//! Apart from the sentence target (`text`) so that each gets its own budget: in one
//! target, half the inputs built a tokenizer and it ran 30-50 inputs a second. Alone,
//! most inputs here are refused as JSON early (about 13,000 a second without the
//! sanitizer), while sentences pay WordPiece's longest-match search (about 1,000).
#![no_main]

use edgetune::text::TextTokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let max_length = 16;
    let Ok(spec) = TextTokenizer::spec(&text, None, max_length, String::new()) else {
        return;
    };
    let t = TextTokenizer::from_json(&text, max_length).expect("a checked tokenizer loads");
    if let Ok(tokens) = t.encode("turn on the kitchen lights") {
        assert!(tokens.ids.len() <= max_length, "{} ids", tokens.ids.len());
        let vocab = spec.vocab_size as i64;
        assert!(
            tokens.ids.iter().all(|&id| (0..vocab).contains(&id)),
            "an id outside the vocabulary of {vocab}: {:?}",
            tokens.ids
        );
    }
});
