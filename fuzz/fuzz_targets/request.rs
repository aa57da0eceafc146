//! The request line parser of `serve` (`edgetune_device::service::Request`, compiled from
//! its source file: see `src/lib.rs`), on the line as the service reads it (bytes, then
//! UTF-8).
//!
//! Asserts: a line that parses has a normal form (the request serialized as JSON) that
//! parses to the same request, its `"tensor"` values compared as the service uses them
//! (`f32`); a line that does not parse gets an answer that is a JSON object with an
//! `"error"` string; checking what a request asks never panics. Numbers read back
//! exactly since serde_json's `float_roundtrip` (without it `2e-60` read as
//! `2.0000000000000002e-60`, `fuzz/corpus/request/tensor-ulp`, and a 60-digit id changed
//! when echoed, `fuzz/corpus/request/long-integer-id`).
#![no_main]

use edgetune_fuzz::request::Request;
use libfuzzer_sys::fuzz_target;

/// `request` as the service uses it: its values as `f32` (`service/predict.rs`).
fn as_used(mut request: Request) -> Request {
    if let Some(values) = &mut request.tensor {
        for v in values {
            *v = f64::from(*v as f32);
        }
    }
    request
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    match Request::parse(line) {
        Ok(request) => {
            let _ = request.check();
            let normal = serde_json::to_string(&request).expect("a request serializes");
            let again = Request::parse(&normal).expect("a request's normal form parses");
            assert!(
                as_used(again) == as_used(request),
                "{line:?} and its normal form {normal:?} differ"
            );
        }
        Err(answer) => assert!(answer["error"].is_string(), "answer {answer}"),
    }
});
