//! The `persist` record (a head and its learner's state, `edgetune_core::persist`).
//!
//! Asserts: a record that decodes re-encodes to the same bytes (or its normal form,
//! `edgetune_fuzz::normal_form`);
//! `decode_head` and `decode_into` accept the same records with the same parameters; a
//! refused record leaves head and learner exactly as they were; a header claiming a
//! huge head allocates nothing before its checksum and length are verified.
#![no_main]

use edgetune_core::Learner;
use edgetune_core::persist;
use edgetune_fuzz::{
    AnyLearner, differences, file_with_trailer, head_fingerprint, normal_form, sentinel_head,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = file_with_trailer(data) else {
        return;
    };
    let head_only = persist::decode_head(&bytes);
    let Ok(header) = persist::read_header(&bytes) else {
        assert!(
            head_only.is_err(),
            "decode_head accepted a record whose header is refused"
        );
        return;
    };
    let Some(mut learner) = AnyLearner::for_header(&header) else {
        return;
    };
    let mut head = sentinel_head(header.dims, 1.5).expect("a valid header's head allocates");
    let before = (head_fingerprint(&head), learner.state().fingerprint());
    match learner.state().decode(&bytes, &mut head) {
        Ok(decoded) => {
            assert_eq!(decoded, header);
            let again = learner.state().encode(&head);
            let n_values = learner.state().fingerprint().2.len();
            let expected = normal_form(&header, &bytes, &again, n_values);
            let unlearned = header.optimizer == 0
                && persist::encode_to_vec(&head, None::<&Learner<[f32; 0]>>).ok()
                    == Some(bytes.clone());
            assert!(
                again == expected || unlearned,
                "a decoded record re-encodes differently: {}",
                differences(&again, &expected)
            );
            let alone = head_only.expect("decode_head refused what decode_into accepts");
            assert_eq!(head_fingerprint(&alone), head_fingerprint(&head));
        }
        Err(e) => {
            let after = (head_fingerprint(&head), learner.state().fingerprint());
            assert!(
                after == before,
                "a refused record ({e}) changed the destination"
            );
            assert!(
                head_only.is_err(),
                "decode_head accepted what decode_into refused ({e})"
            );
        }
    }
});
