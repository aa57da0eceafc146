//! The `.npy` reader (`edgetune::npy::read_npy`), for a features input `[1, 6]` or an
//! image input `[1, 3, 2, 2]` (control byte bit 1), at most 1 to 8 samples (bits 2–4).
//!
//! Asserts: what reads is 1 to the wanted number of samples of the input's size, all
//! finite; its normal form (a float32 C-order array of those samples) reads back to the
//! same values bit for bit; a header whose shape claims gigabytes allocates nothing of
//! the kind (libFuzzer's `-rss_limit_mb`).
#![no_main]

use std::path::Path;

use edgetune::bundle::{InputSpec, Layout};
use edgetune::npy::read_npy;
use libfuzzer_sys::fuzz_target;
use npyz::{WriteOptions, WriterBuilder};

fn input(image: bool) -> InputSpec {
    let (shape, layout) = if image {
        (vec![1, 3, 2, 2], Layout::Nchw)
    } else {
        (vec![1, 6], Layout::Features)
    };
    InputSpec {
        name: "input".into(),
        shape,
        layout,
        dtype: "f32".into(),
    }
}

/// The samples as a float32, C-order `.npy` array of shape `[N, per sample...]`.
fn normal_form(samples: &[Vec<f32>], input: &InputSpec) -> Vec<u8> {
    let mut shape = vec![samples.len() as u64];
    shape.extend(input.shape[1..].iter().map(|&d| d as u64));
    let mut bytes = Vec::new();
    let mut writer = WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&shape)
        .writer(&mut bytes)
        .begin_nd()
        .expect("writing to memory");
    for v in samples.iter().flatten() {
        writer.push(v).expect("writing to memory");
    }
    writer.finish().expect("writing to memory");
    bytes
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let input = input(control & 2 != 0);
    let sample_len: usize = input.shape[1..].iter().product();
    let wanted = 1 + usize::from((control >> 2) & 7);
    let path = Path::new("fuzz.npy");
    let Ok(samples) = read_npy(path, bytes, &input, sample_len, wanted) else {
        return;
    };
    assert!(
        (1..=wanted).contains(&samples.len()),
        "{} samples",
        samples.len()
    );
    for s in &samples {
        assert_eq!(s.len(), sample_len);
        assert!(
            s.iter().all(|v| v.is_finite()),
            "a non-finite value was read"
        );
    }
    let normal = normal_form(&samples, &input);
    let again = read_npy(path, &normal, &input, sample_len, wanted).expect("the normal form reads");
    let bits = |s: &[Vec<f32>]| -> Vec<u32> { s.iter().flatten().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(&again), bits(&samples));
});
