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

/// The most pixels an image may have: 50 megapixels, more than a phone's or a camera
/// module's photo (the Pi HQ camera's is 12.3). Decoding takes time in proportion to the
/// pixels a header claims, whatever the bytes that follow: a 372-byte JPEG whose header
/// claims 10,752×18,761 pixels (found by fuzzing) took seconds to decode into 200 MB,
/// within the decoder's 512 MiB.
#[cfg(not(fuzzing))]
pub const MAX_PIXELS: u64 = 50_000_000;
/// Under the fuzzer (`scripts/fuzz.sh` builds with `--cfg fuzzing`) the limit is 65,536
/// pixels: the same checks run on every input, and an input the fuzzer grows into a
/// large image is refused by them in microseconds instead of decoded for seconds, so a
/// run reaches millions of inputs. Decoding large images is the `image` crate's own
/// fuzzers' ground; ours is what edgetune does around it.
#[cfg(fuzzing)]
pub const MAX_PIXELS: u64 = 1 << 16;

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
    /// The image has more than [`MAX_PIXELS`], or decoding it would need more memory
    /// than the decoder's limits (512 MiB) allow.
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

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::NotAnImageInput { layout, shape } => write!(
                f,
                "the model's input is not an image: layout {}, shape {shape:?} (images need nchw or nhwc)",
                layout.name()
            ),
            InputError::InputShape {
                layout,
                shape,
                what,
            } => write!(
                f,
                "the model's input shape {shape:?} ({}) cannot take an image: {what}",
                layout.name()
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
/// ([`InputError::Empty`]), images of more than [`MAX_PIXELS`] or whose pixels need more
/// than 512 MiB ([`InputError::TooLarge`]), and corrupt or truncated data ([`InputError::Decode`]).
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
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        let kind = ::image::error::LimitErrorKind::DimensionError;
        return Err(InputError::TooLarge {
            dimensions: Some((width, height)),
            source: ImageError::Limits(::image::error::LimitError::from_kind(kind)),
        });
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
mod tests;
