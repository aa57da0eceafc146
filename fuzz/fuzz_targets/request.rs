//! The request line parser of `serve` (`edgetune_device::service::Request`, compiled from
//! its source file: see `src/lib.rs`), on the
//! line as the service reads it (bytes, then UTF-8).
//!
//! Asserts: a line that parses has a normal form (the request serialized as JSON) that
//! parses to the same request; a line that does not parse gets an answer that is a JSON
//! object with an `"error"` string; checking what a request asks never panics.
#![no_main]

use edgetune_fuzz::request::Request;
use libfuzzer_sys::fuzz_target;

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
                again == request,
                "{line:?} and its normal form {normal:?} differ"
            );
        }
        Err(answer) => assert!(answer["error"].is_string(), "answer {answer}"),
    }
});
