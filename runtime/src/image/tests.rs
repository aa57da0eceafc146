//! Unit tests of the image input: decoding, orientation, resizing and cropping, layouts, errors.

use super::*;
use ::image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};

fn input(layout: Layout, shape: &[usize]) -> InputSpec {
    InputSpec {
        name: "pixels".into(),
        shape: shape.to_vec(),
        layout,
        dtype: "f32".into(),
    }
}

/// A pixel whose color encodes where it is.
fn marked(x: u32, y: u32) -> Rgb<u8> {
    Rgb([x as u8, 100 + y as u8, 200 + (x + y) as u8])
}

fn png(img: &DynamicImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    bytes
}

#[test]
fn nchw_and_nhwc_put_each_pixel_where_it_belongs() {
    // 5 wide, 3 high: the input's size, so no resampling.
    let (w, h) = (5usize, 3usize);
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(w as u32, h as u32, marked));
    let nchw = raw_input(&img, &input(Layout::Nchw, &[1, 3, h, w])).unwrap();
    let nhwc = raw_input(&img, &input(Layout::Nhwc, &[1, h, w, 3])).unwrap();
    assert_eq!((nchw.len(), nhwc.len()), (3 * h * w, 3 * h * w));
    for y in 0..h {
        for x in 0..w {
            let rgb = marked(x as u32, y as u32).0;
            for c in 0..3 {
                let v = f32::from(rgb[c]);
                assert_eq!(
                    nchw[c * h * w + y * w + x],
                    v,
                    "nchw ({x}, {y}) channel {c}"
                );
                assert_eq!(nhwc[(y * w + x) * 3 + c], v, "nhwc ({x}, {y}) channel {c}");
            }
        }
    }
    // The same through PNG bytes.
    let bytes = png(&img);
    assert_eq!(
        decode(&bytes, &input(Layout::Nchw, &[1, 3, h, w])).unwrap(),
        nchw
    );
}

#[test]
fn a_wide_image_keeps_its_middle_columns() {
    // 8×4 into 4×4: the height fits, columns 2..6 are kept, pixel for pixel.
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(8, 4, marked));
    let raw = raw_input(&img, &input(Layout::Nhwc, &[1, 4, 4, 3])).unwrap();
    for y in 0..4 {
        for x in 0..4 {
            let want = marked(x + 2, y).0.map(f32::from);
            let at = ((y * 4 + x) * 3) as usize;
            assert_eq!(raw[at..at + 3], want, "({x}, {y})");
        }
    }
    // A tall one keeps its middle rows.
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(3, 7, marked));
    let raw = raw_input(&img, &input(Layout::Nchw, &[1, 3, 3, 3])).unwrap();
    let green: Vec<f32> = (0..9u8).map(|i| f32::from(100 + 2 + i / 3)).collect();
    assert_eq!(raw[9..18], green);
}

#[test]
fn resizing_scales_the_shorter_side_and_crops_the_middle() {
    // 32×16: left quarter red, middle half green, right quarter blue. Into 4×4 the
    // shorter side scales by 1/4 and the middle 16 columns (all green) remain.
    let img = RgbImage::from_fn(32, 16, |x, _| match x {
        0..8 => Rgb([255, 0, 0]),
        8..24 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    });
    let img = DynamicImage::ImageRgb8(img);
    let raw = raw_input(&img, &input(Layout::Nchw, &[1, 3, 4, 4])).unwrap();
    assert_eq!(raw[..16], [0.0; 16], "no red");
    assert_eq!(raw[16..32], [255.0; 16], "all green");
    assert_eq!(raw[32..], [0.0; 16], "no blue");

    // Upscaling a uniform image stays uniform; a non-square target too.
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(3, 2, Rgb([9, 99, 199])));
    let raw = raw_input(&img, &input(Layout::Nhwc, &[1, 7, 10, 3])).unwrap();
    assert_eq!(raw.len(), 7 * 10 * 3);
    assert!(raw.chunks_exact(3).all(|p| p == [9.0, 99.0, 199.0]));
}

#[test]
fn crop_regions() {
    assert_eq!(crop_region((8, 4), (4, 4)), (2, 0, 4, 4));
    assert_eq!(crop_region((4, 8), (4, 4)), (0, 2, 4, 4));
    assert_eq!(crop_region((640, 480), (224, 224)), (80, 0, 480, 480));
    // Odd leftovers round the offset down.
    assert_eq!(crop_region((7, 4), (4, 4)), (1, 0, 4, 4));
    // A non-square target: 16:9 out of 4:3.
    assert_eq!(crop_region((640, 480), (16, 9)), (0, 60, 640, 360));
    // Extreme aspect ratios stay at least one pixel and inside the image.
    assert_eq!(crop_region((1, 60000), (224, 224)), (0, 29999, 1, 1));
    assert_eq!(crop_region((60000, 1), (1, 224)), (29999, 0, 1, 1));
    assert_eq!(
        crop_region((u32::MAX, 1), (u32::MAX, 1)),
        (0, 0, u32::MAX, 1)
    );
}

#[test]
fn grayscale_fills_three_channels_and_color_becomes_luma() {
    let gray = DynamicImage::ImageLuma8(GrayImage::from_fn(2, 2, |x, y| {
        Luma([(10 * x + 100 * y) as u8])
    }));
    let raw = raw_input(&gray, &input(Layout::Nchw, &[1, 3, 2, 2])).unwrap();
    let plane = [0.0, 10.0, 100.0, 110.0];
    assert_eq!(raw, [plane, plane, plane].concat());
    // A 1-channel model takes the gray values as they are...
    let raw = raw_input(&gray, &input(Layout::Nhwc, &[1, 2, 2, 1])).unwrap();
    assert_eq!(raw, plane);
    // ...and the luma of a color image: white, black, gray, and green brighter than
    // red brighter than blue (Rec. 709 weights).
    let colors = [[255, 255, 255], [0, 0, 0], [80, 80, 80], [255, 0, 0]];
    let color = RgbImage::from_fn(2, 2, |x, y| Rgb(colors[(y * 2 + x) as usize]));
    let raw = raw_input(
        &DynamicImage::ImageRgb8(color),
        &input(Layout::Nchw, &[1, 1, 2, 2]),
    )
    .unwrap();
    assert_eq!(raw, [255.0, 0.0, 80.0, 54.0]);
    let luma = |rgb| {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb(rgb)));
        raw_input(&img, &input(Layout::Nchw, &[1, 1, 1, 1])).unwrap()[0]
    };
    assert!(luma([0, 255, 0]) > luma([255, 0, 0]));
    assert!(luma([255, 0, 0]) > luma([0, 0, 255]));
}

#[test]
fn alpha_is_dropped_and_16_bit_is_scaled() {
    let rgba = RgbaImage::from_pixel(1, 1, Rgba([10, 20, 30, 0]));
    let raw = raw_input(
        &DynamicImage::ImageRgba8(rgba),
        &input(Layout::Nhwc, &[1, 1, 1, 3]),
    )
    .unwrap();
    assert_eq!(raw, [10.0, 20.0, 30.0]);
    let deep = ::image::ImageBuffer::from_pixel(1, 1, Rgb([65535u16, 0, 257 * 128]));
    let bytes = png(&DynamicImage::ImageRgb16(deep));
    let raw = decode(&bytes, &input(Layout::Nhwc, &[1, 1, 1, 3])).unwrap();
    assert_eq!(raw, [255.0, 0.0, 128.0]);
}

#[test]
fn jpeg_decodes() {
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 16, Rgb([200, 40, 90])));
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg)
        .unwrap();
    let raw = decode(&bytes, &input(Layout::Nchw, &[1, 3, 8, 8])).unwrap();
    // Lossy: close to the color, not equal.
    for (c, want) in [200.0f32, 40.0, 90.0].into_iter().enumerate() {
        let plane = &raw[c * 64..(c + 1) * 64];
        assert!(plane.iter().all(|v| (v - want).abs() <= 6.0), "{plane:?}");
    }
}

#[test]
fn bad_bytes_are_named_errors() {
    let spec = input(Layout::Nchw, &[1, 3, 4, 4]);
    let err = decode(b"hello, world", &spec).unwrap_err();
    assert!(matches!(err, InputError::NotAnImage));
    assert_eq!(err.to_string(), "not a PNG or JPEG image");
    assert!(matches!(decode(&[], &spec), Err(InputError::NotAnImage)));

    let err = decode(b"GIF89a\x01\x00\x01\x00", &spec).unwrap_err();
    assert!(
        matches!(err, InputError::UnsupportedFormat { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "a GIF image: only PNG and JPEG images are read"
    );

    let good = png(&DynamicImage::ImageRgb8(RgbImage::from_fn(20, 20, marked)));
    // Truncated anywhere: an error, never a panic.
    for len in [8, 20, 40, good.len() / 2, good.len() - 5] {
        let err = decode(&good[..len], &spec).unwrap_err();
        assert!(
            matches!(err, InputError::Decode { format: "PNG", .. }),
            "{len}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            "cannot decode the PNG image (corrupt or truncated)"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
    // A flipped byte in the pixel data fails the PNG's CRC.
    let mut corrupt = good.clone();
    let at = corrupt.len() - 20;
    corrupt[at] ^= 0x55;
    assert!(matches!(
        decode(&corrupt, &spec),
        Err(InputError::Decode { .. })
    ));
    // A JPEG signature and nothing after it.
    let err = decode(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0], &spec).unwrap_err();
    assert!(
        matches!(err, InputError::Decode { format: "JPEG", .. }),
        "{err:?}"
    );
}

#[test]
fn huge_dimensions_are_refused_before_decoding() {
    // A valid PNG start claiming 100000×100000 RGB pixels (30 GB), then the first
    // bytes of its data.
    let crc32 = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        bytes.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&crc32.checksum(&body).to_be_bytes());
    };
    let side = 100_000u32.to_be_bytes();
    chunk(b"IHDR", &[&side[..], &side, &[8, 2, 0, 0, 0]].concat());
    chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00]);
    let err = decode_image(&bytes).unwrap_err();
    // On 32-bit targets (armv7) the PNG decoder itself refuses such a header, since
    // the image's size does not fit a usize, before it tells the dimensions: the
    // image is refused all the same, with a message that cannot name its size.
    let dimensions = if cfg!(target_pointer_width = "64") {
        Some((100_000, 100_000))
    } else {
        None
    };
    assert!(
        matches!(err, InputError::TooLarge { dimensions: d, .. } if d == dimensions),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("the image is too large to decode"),
        "{err}"
    );
    if dimensions.is_some() {
        assert_eq!(
            err.to_string(),
            "the image is too large to decode (100000×100000 pixels)"
        );
    }
}

#[test]
fn inputs_that_are_not_images_are_refused() {
    let img = DynamicImage::ImageRgb8(RgbImage::new(2, 2));
    let err = raw_input(&img, &input(Layout::Tokens, &[1, 128])).unwrap_err();
    assert!(matches!(err, InputError::NotAnImageInput { .. }));
    assert_eq!(
        err.to_string(),
        "the model's input is not an image: layout tokens, shape [1, 128] (images need nchw or nhwc)"
    );
    let err = raw_input(&img, &input(Layout::Features, &[1, 16])).unwrap_err();
    assert!(matches!(err, InputError::NotAnImageInput { .. }));
    // The input is checked before any decoding.
    let err = decode(b"junk", &input(Layout::Features, &[1, 16])).unwrap_err();
    assert!(matches!(err, InputError::NotAnImageInput { .. }));

    for (layout, shape, what) in [
        (Layout::Nchw, &[1, 4, 2, 2][..], "1 channel"),
        (Layout::Nhwc, &[1, 2, 2, 2], "1 channel"),
        (Layout::Nchw, &[1, 3, 2], "4 dimensions"),
        (Layout::Nchw, &[2, 3, 2, 2], "batch"),
        (Layout::Nhwc, &[1, 0, 2, 3], "must not be 0"),
    ] {
        let err = raw_input(&img, &input(layout, shape)).unwrap_err();
        assert!(matches!(err, InputError::InputShape { .. }), "{err:?}");
        assert!(err.to_string().contains(what), "{err}");
    }
    let empty = DynamicImage::ImageRgb8(RgbImage::new(0, 3));
    let err = raw_input(&empty, &input(Layout::Nchw, &[1, 3, 2, 2])).unwrap_err();
    assert_eq!(err.to_string(), "the image is empty (0×3 pixels)");
}

#[test]
fn more_pixels_than_the_limit_are_refused_before_decoding() {
    // 372 bytes of JPEG whose header claims 10,752×18,761 pixels (200 MB decoded, within
    // the decoder's 512 MiB): found by the `image` fuzz target, where decoding it took
    // 50 s (seconds without the sanitizer).
    let bytes = include_bytes!("testdata/huge-header.jpg");
    let err = decode_image(bytes).unwrap_err();
    assert!(
        matches!(
            err,
            InputError::TooLarge {
                dimensions: Some((10752, 18761)),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the image is too large to decode (10752×18761 pixels)"
    );
}

/// JPEGs on which zune-jpeg 0.5.15's IDCTs panicked (a row written past the end of a
/// component's output; found by the image fuzz target): each decodes or is refused, as
/// patched in third_party/zune-jpeg (PATCHED.md).
#[test]
fn jpegs_that_panicked_the_decoder_are_decoded_or_refused() {
    for (name, bytes) in [
        // AVX2, the second row of each pair (a chroma component sampled 4×1)
        (
            "zune-avx2-store",
            &include_bytes!("testdata/zune-avx2-store.jpg")[..],
        ),
        // `idct_int_1x1`, every architecture
        (
            "zune-1x1-rows",
            include_bytes!("testdata/zune-1x1-rows.jpg"),
        ),
        // AVX2, the DC-only shortcut
        (
            "zune-avx2-dc-rows",
            include_bytes!("testdata/zune-avx2-dc-rows.jpg"),
        ),
        // a block placed past the end of its component's output, every architecture
        (
            "zune-mcu-position",
            include_bytes!("testdata/zune-mcu-position.jpg"),
        ),
        // the HV upsampler's scratch sized from the first component's row, which a
        // crafted JPEG makes narrower than another's, every architecture
        (
            "zune-hv-scratch",
            include_bytes!("testdata/zune-hv-scratch.jpg"),
        ),
    ] {
        match decode(bytes, &input(Layout::Nchw, &[1, 3, 8, 8])) {
            Ok(t) => assert_eq!(t.len(), 3 * 8 * 8, "{name}"),
            Err(e) => assert!(matches!(e, InputError::Decode { .. }), "{name}: {e}"),
        }
    }
}
