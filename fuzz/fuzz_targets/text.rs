//! The tokenizer (`edgetune::text`) on a sentence a user sends (`{"text": …}`,
//! `predict --text`): the shipped WordPiece tokenizer (`models/text/tokenizer.json`).
//! The input is a control byte, then the sentence. The `tokenizer.json` file itself is
//! the `tokenizer` target's.
//!
//! Asserts: a blank sentence is refused as empty; any other gives `[CLS] … [SEP]`, at
//! most the sequence length (control bit 1: 8 tokens, else 64), cut exactly there when it
//! says it was truncated, every id in the vocabulary, and the same ids twice.
#![no_main]

use std::sync::OnceLock;

use edgetune::text::{TextError, TextTokenizer};
use libfuzzer_sys::fuzz_target;

const SHIPPED: &str = include_str!("../../models/text/tokenizer.json");
/// `[CLS]` and `[SEP]` in the shipped vocabulary (`models/text/README.md`).
const CLS: i64 = 2;
const SEP: i64 = 3;

/// The shipped tokenizer cut at 8 and at 64 tokens, read once.
fn shipped(short: bool) -> &'static TextTokenizer {
    static TOKENIZERS: OnceLock<[TextTokenizer; 2]> = OnceLock::new();
    let t = TOKENIZERS.get_or_init(|| {
        [8, 64].map(|n| TextTokenizer::from_json(SHIPPED, n).expect("the shipped tokenizer"))
    });
    &t[usize::from(!short)]
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(bytes);
    let t = shipped(control & 2 != 0);
    let max_length = t.max_length();
    let tokens = match t.encode(&text) {
        Ok(tokens) => tokens,
        Err(TextError::Empty) => {
            assert!(text.trim().is_empty(), "{text:?} refused as empty");
            return;
        }
        Err(e) => panic!("{text:?} could not be tokenized: {e}"),
    };
    let ids = &tokens.ids;
    assert!(
        (2..=max_length).contains(&ids.len()),
        "{} ids for {text:?}",
        ids.len()
    );
    assert_eq!((ids[0], ids[ids.len() - 1]), (CLS, SEP), "{ids:?}");
    if tokens.truncated {
        assert_eq!(ids.len(), max_length, "truncated short of the length");
    }
    let vocab = t.vocab_size() as i64;
    assert!(
        ids.iter().all(|&id| (0..vocab).contains(&id)),
        "an id outside the vocabulary of {vocab}: {ids:?}"
    );
    assert_eq!(t.encode(&text).as_ref(), Ok(&tokens), "not deterministic");
});
