//! The image front end (`edgetune::image::decode`): the format sniffing and size checks
//! before the `image` crate decodes, then the resize and crop to the input, for an
//! NCHW RGB input `[1, 3, 8, 8]` or an NHWC luma input `[1, 8, 8, 1]` (control byte
//! bit 0).
//!
//! Asserts: what decodes is a tensor of exactly the input's size whose values are
//! pixels (finite, 0 to 255); a header claiming gigapixels allocates nothing of the kind
//! (libFuzzer's `-rss_limit_mb`).
#![no_main]

use edgetune::bundle::{InputSpec, Layout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let (shape, layout) = if control & 1 == 0 {
        (vec![1, 3, 8, 8], Layout::Nchw)
    } else {
        (vec![1, 8, 8, 1], Layout::Nhwc)
    };
    let input = InputSpec {
        name: "image".into(),
        shape,
        layout,
        dtype: "f32".into(),
    };
    let Ok(tensor) = edgetune::image::decode(bytes, &input) else {
        return;
    };
    assert_eq!(tensor.len(), input.shape.iter().product::<usize>());
    assert!(
        tensor.iter().all(|v| (0.0..=255.0).contains(v)),
        "a value is not a pixel"
    );
});
