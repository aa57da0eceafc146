//! Images into the raw input tensor of an image backbone (feature `image`): for
//! calibration and training samples on the host and for image files or frames on the
//! device, so every side turns a picture into the same numbers.
//!
//! A backbone takes *raw* values (`backbone::Backbone::embed`): pixels 0–255 as
//! `f32`, RGB, laid out in the manifest's layout and shape with a batch of 1, and applies
//! the manifest's [`Preprocess`](crate::bundle::Preprocess) (scale, channel order, mean,
//! standard deviation) itself. [`raw_input`] and [`decode`] make exactly that tensor:
//!
//! 1. **Decode** ([`decode_image`]): PNG or JPEG only (8- or 16-bit, any color type);
//!    a JPEG's EXIF orientation is applied, so the picture is upright as a viewer shows
//!    it.
//! 2. **Convert** to 8-bit: RGB for a 3-channel input (grayscale is repeated into the
//!    three channels), luma for a 1-channel input (sRGB/Rec. 709 weights,
//!    `0.2126 R + 0.7152 G + 0.0722 B`, as [`DynamicImage::to_luma8`] computes it; PIL's
//!    `convert("L")` uses Rec. 601 weights instead). Alpha is dropped, not composited.
//!    Other channel counts are refused.
//! 3. **Resize and center-crop** to the input's height × width, keeping the aspect
//!    ratio: the result is what scaling the image so that its shorter side (relative to
//!    the target's aspect ratio) matches the target and then cutting the target out of
//!    the middle gives, the usual ImageNet evaluation transform. It is computed the other
//!    way round, which is cheaper and never allocates more than the target for
//!    extreme aspect ratios: the largest centered region with the target's aspect ratio
//!    is cut out of the image (offsets rounded down), then scaled to height × width with
//!    [`imageops::resize`] and [`FilterType::Triangle`] (bilinear, antialiased when
//!    shrinking). An image that already has the target size is used pixel for pixel.
//! 4. **Lay out** per the input's layout: `[1, C, H, W]` ([`Layout::Nchw`]) or
//!    `[1, H, W, C]` ([`Layout::Nhwc`]), values 0.0–255.0 (whole numbers).
//!
//! The manifest's `preprocess.resize` is not consulted: [`Manifest::validate`]
//! does not relate it to the input shape, and the input's height × width is what the
//! backbone takes.
//!
//! [`Manifest::validate`]: crate::bundle::Manifest::validate
//!
//! ```
//! use edgetune::bundle::{InputSpec, Layout};
//! use image::{DynamicImage, RgbImage};
//!
//! let input = InputSpec {
//!     name: "pixels".into(),
//!     shape: vec![1, 3, 2, 2],
//!     layout: Layout::Nchw,
//!     dtype: "f32".into(),
//! };
//! // A 4×2 image: the middle 2×2 is kept.
//! let img = RgbImage::from_fn(4, 2, |x, y| image::Rgb([10 * x as u8, 100 + y as u8, 7]));
//! let raw = edgetune::image::raw_input(&DynamicImage::ImageRgb8(img), &input)?;
//! assert_eq!(raw[..4], [10.0, 20.0, 10.0, 20.0]); // the red plane
//! assert_eq!(raw[4..8], [100.0, 100.0, 101.0, 101.0]); // green
//! # Ok::<(), edgetune::image::InputError>(())
//! ```

use std::fmt;
use std::io::Cursor;

use ::image::imageops::{self, FilterType};
use ::image::metadata::Orientation;
use ::image::{
    DynamicImage, ImageBuffer, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, Pixel,
};

use crate::bundle::{InputSpec, Layout};

/// Why an image could not become an input tensor.
///
/// [`InputError::Decode`] and [`InputError::TooLarge`] say what failed in their message
/// and return the decoder's error from [`source`](std::error::Error::source): print the
/// whole chain (`anyhow`'s `{:#}`) to show a user everything.
#[derive(Debug)]
#[non_exhaustive]
pub enum InputError {
    /// The model's input is not an image ([`Layout::Features`] or [`Layout::Tokens`]).
    NotAnImageInput {
        /// The input's layout.
        layout: Layout,
        /// The input's shape.
        shape: Vec<usize>,
    },
    /// The input has an image layout but a shape images cannot fill.
    InputShape {
        /// The input's layout.
        layout: Layout,
        /// The input's shape.
        shape: Vec<usize>,
        /// What is wrong.
        what: &'static str,
    },
    /// The bytes are not a PNG or JPEG image (no known signature at the start).
    NotAnImage,
    /// An image format this build does not decode (only PNG and JPEG are).
    UnsupportedFormat {
        /// The format its signature names.
        format: ImageFormat,
    },
    /// The image has a width or height of 0.
    Empty {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// Decoding the image would need more memory than the decoder's limits (512 MiB)
    /// allow.
    TooLarge {
        /// The image's width and height in pixels, if its header was read.
        dimensions: Option<(u32, u32)>,
        /// The decoder's error.
        source: ImageError,
    },
    /// The data is corrupt or truncated.
    Decode {
        /// `"PNG"` or `"JPEG"`.
        format: &'static str,
        /// The decoder's error.
        source: ImageError,
    },
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Nchw => "nchw",
        Layout::Nhwc => "nhwc",
        Layout::Features => "features",
        Layout::Tokens => "tokens",
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::NotAnImageInput { layout, shape } => write!(
                f,
                "the model's input is not an image: layout {}, shape {shape:?} (images need nchw or nhwc)",
                layout_name(*layout)
            ),
            InputError::InputShape {
                layout,
                shape,
                what,
            } => write!(
                f,
                "the model's input shape {shape:?} ({}) cannot take an image: {what}",
                layout_name(*layout)
            ),
            InputError::NotAnImage => f.write_str("not a PNG or JPEG image"),
            InputError::UnsupportedFormat { format } => write!(
                f,
                "a {} image: only PNG and JPEG images are read",
                format_name(*format)
            ),
            InputError::Empty { width, height } => {
                write!(f, "the image is empty ({width}×{height} pixels)")
            }
            InputError::TooLarge {
                dimensions: Some((width, height)),
                ..
            } => write!(
                f,
                "the image is too large to decode ({width}×{height} pixels)"
            ),
            InputError::TooLarge {
                dimensions: None, ..
            } => f.write_str("the image is too large to decode"),
            InputError::Decode { format, .. } => {
                write!(f, "cannot decode the {format} image (corrupt or truncated)")
            }
        }
    }
}

impl std::error::Error for InputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InputError::TooLarge { source, .. } | InputError::Decode { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A format's usual name: `PNG`, `JPEG`, `GIF`, `WEBP`, ….
fn format_name(format: ImageFormat) -> String {
    match format {
        ImageFormat::Png => "PNG".to_string(),
        ImageFormat::Jpeg => "JPEG".to_string(),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// What an image input takes: channels (1 or 3), height and width.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    layout: Layout,
    channels: usize,
    height: u32,
    width: u32,
}

impl Geometry {
    fn of(input: &InputSpec) -> Result<Self, InputError> {
        let layout = input.layout;
        let shape = &input.shape;
        let bad = |what| InputError::InputShape {
            layout,
            shape: shape.clone(),
            what,
        };
        let (c, h, w) = match (layout, shape.as_slice()) {
            (Layout::Nchw, &[_, c, h, w]) => (c, h, w),
            (Layout::Nhwc, &[_, h, w, c]) => (c, h, w),
            (Layout::Nchw | Layout::Nhwc, _) => return Err(bad("it must have 4 dimensions")),
            (Layout::Features | Layout::Tokens, _) => {
                return Err(InputError::NotAnImageInput {
                    layout,
                    shape: shape.clone(),
                });
            }
        };
        if shape[0] != 1 {
            return Err(bad("the batch (the first dimension) must be 1"));
        }
        if c != 1 && c != 3 {
            return Err(bad(
                "images give 1 channel (luma) or 3 channels (RGB), not this many",
            ));
        }
        let (Ok(height), Ok(width)) = (u32::try_from(h), u32::try_from(w)) else {
            return Err(bad("its height or width is too large"));
        };
        if height == 0 || width == 0 {
            return Err(bad("its height and width must not be 0"));
        }
        if c.checked_mul(h).and_then(|n| n.checked_mul(w)).is_none() {
            return Err(bad("it has too many elements"));
        }
        Ok(Geometry {
            layout,
            channels: c,
            height,
            width,
        })
    }

    fn len(&self) -> usize {
        self.channels * self.height as usize * self.width as usize
    }
}

/// The raw input tensor (pixels 0–255 as `f32`, RGB or luma, in `input`'s layout and
/// shape) of `img`: converted, resized and center-cropped, laid out as the
/// [module documentation](self) describes. Its length is the product of `input.shape`.
///
/// Errors: `input` is not an image input with 1 or 3 channels
/// ([`InputError::NotAnImageInput`], [`InputError::InputShape`]), or `img` has no pixels
/// ([`InputError::Empty`]).
pub fn raw_input(img: &DynamicImage, input: &InputSpec) -> Result<Vec<f32>, InputError> {
    let geometry = Geometry::of(input)?;
    raw_with(img, geometry)
}

/// [`decode_image`] then [`raw_input`]: the raw input tensor of a PNG or JPEG file's
/// bytes. The input is checked before the image is decoded.
pub fn decode(bytes: &[u8], input: &InputSpec) -> Result<Vec<f32>, InputError> {
    let geometry = Geometry::of(input)?;
    raw_with(&decode_image(bytes)?, geometry)
}

/// Decodes a PNG or JPEG image (the format is told by its signature, not a file name)
/// and applies a JPEG's EXIF orientation. Refuses other formats
/// ([`InputError::NotAnImage`], [`InputError::UnsupportedFormat`]), images of 0 pixels
/// ([`InputError::Empty`]), images whose pixels need more than 512 MiB
/// ([`InputError::TooLarge`]), and corrupt or truncated data ([`InputError::Decode`]).
/// Never panics on bad data.
pub fn decode_image(bytes: &[u8]) -> Result<DynamicImage, InputError> {
    let (format, name) = match ::image::guess_format(bytes) {
        Ok(ImageFormat::Png) => (ImageFormat::Png, "PNG"),
        Ok(ImageFormat::Jpeg) => (ImageFormat::Jpeg, "JPEG"),
        Ok(format) => return Err(InputError::UnsupportedFormat { format }),
        Err(_) => return Err(InputError::NotAnImage),
    };
    let failed = |dimensions| {
        move |source| match source {
            ImageError::Limits(_) => InputError::TooLarge { dimensions, source },
            source => InputError::Decode {
                format: name,
                source,
            },
        }
    };
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format)
        .into_decoder()
        .map_err(failed(None))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(InputError::Empty { width, height });
    }
    // What `ImageReader::decode` checks too: the decoded pixels fit the default limits.
    Limits::default()
        .reserve(decoder.total_bytes())
        .map_err(failed(Some((width, height))))?;
    // A broken EXIF block is no reason to refuse the pixels.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(failed(Some((width, height))))?;
    img.apply_orientation(orientation);
    Ok(img)
}

fn raw_with(img: &DynamicImage, geometry: Geometry) -> Result<Vec<f32>, InputError> {
    let (width, height) = (img.width(), img.height());
    if width == 0 || height == 0 {
        return Err(InputError::Empty { width, height });
    }
    if geometry.channels == 3 {
        match img.as_rgb8() {
            Some(rgb) => Ok(lay_out(rgb, geometry)),
            None => Ok(lay_out(&img.to_rgb8(), geometry)),
        }
    } else {
        match img.as_luma8() {
            Some(luma) => Ok(lay_out(luma, geometry)),
            None => Ok(lay_out(&img.to_luma8(), geometry)),
        }
    }
}

/// The centered region `(x, y, width, height)` of an image of `size` with the aspect
/// ratio of `target`, as large as fits.
fn crop_region(size: (u32, u32), target: (u32, u32)) -> (u32, u32, u32, u32) {
    let (iw, ih) = (u128::from(size.0), u128::from(size.1));
    let (tw, th) = (u128::from(target.0), u128::from(target.1));
    // Rounded a / b.
    let div = |a: u128, b: u128| (2 * a + b) / (2 * b);
    if iw * th >= ih * tw {
        // Relatively wider than the target: full height, the middle columns.
        let w = div(ih * tw, th).clamp(1, iw);
        ((iw - w) as u32 / 2, 0, w as u32, ih as u32)
    } else {
        let h = div(iw * th, tw).clamp(1, ih);
        (0, (ih - h) as u32 / 2, iw as u32, h as u32)
    }
}

/// Resizes and center-crops `img` to the target and lays it out; `P` has
/// `geometry.channels` channels.
fn lay_out<P>(img: &ImageBuffer<P, Vec<u8>>, geometry: Geometry) -> Vec<f32>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    let target = (geometry.width, geometry.height);
    let resized;
    let fitted = if img.dimensions() == target {
        img
    } else {
        let (x, y, w, h) = crop_region(img.dimensions(), target);
        let region = imageops::crop_imm(img, x, y, w, h);
        resized = imageops::resize(&*region, target.0, target.1, FilterType::Triangle);
        &resized
    };
    // Interleaved: (y * W + x) * C + c.
    let pixels = fitted.as_raw();
    match geometry.layout {
        Layout::Nchw => {
            let plane = geometry.height as usize * geometry.width as usize;
            let mut out = vec![0.0f32; geometry.len()];
            for (i, px) in pixels.chunks_exact(geometry.channels).enumerate() {
                for (c, &v) in px.iter().enumerate() {
                    out[c * plane + i] = f32::from(v);
                }
            }
            out
        }
        // Nhwc: the interleaved pixels are the layout.
        _ => pixels.iter().map(|&v| f32::from(v)).collect(),
    }
}

#[cfg(test)]
mod tests {
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
}
