//! Image augmentation for training (`train --augment flip,crop,rotate,color,noise
//! --augment-copies K`): each training image gets K extra variants, made before the
//! backbone sees them, so the head learns from embeddings of plausible new pictures.
//!
//! Every variant is a pure function of the image, the copy number and a seed ([`variant`]),
//! so the embedding cache can key it, and a second run makes the same variants.
//!
//! - `flip`: a horizontal mirror, with probability ½ (not for text or digits!);
//! - `crop`: a random crop keeping 70–100 % of the area, aspect 3:4 to 4:3 (the backbone's
//!   own resize brings it back to its input size);
//! - `rotate`: a rotation by up to ±12°, bilinear, edges repeated;
//! - `color`: brightness ±20 % and contrast ±20 %;
//! - `noise`: Gaussian noise, σ = 4 % of the pixel range.

use anyhow::{Result, bail};
use image::{DynamicImage, GrayImage, RgbImage};
use sha2::{Digest, Sha256};

use edgetune::rng::Rng;

/// The augmentations a run applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Augment {
    /// Horizontal mirror.
    pub flip: bool,
    /// Random crop.
    pub crop: bool,
    /// Small rotation.
    pub rotate: bool,
    /// Brightness and contrast.
    pub color: bool,
    /// Gaussian noise.
    pub noise: bool,
}

/// The names `--augment` takes, in order.
pub const NAMES: [&str; 5] = ["flip", "crop", "rotate", "color", "noise"];

impl Augment {
    /// Parses `--augment` names (`flip`, `crop`, `rotate`, `color`, `noise`, or `all`).
    pub fn parse(names: &[String]) -> Result<Augment> {
        let mut a = Augment::default();
        for n in names {
            match n.trim() {
                "flip" => a.flip = true,
                "crop" => a.crop = true,
                "rotate" => a.rotate = true,
                "color" => a.color = true,
                "noise" => a.noise = true,
                "all" => {
                    a = Augment {
                        flip: true,
                        crop: true,
                        rotate: true,
                        color: true,
                        noise: true,
                    }
                }
                "" | "none" => {}
                other => bail!(
                    "unknown augmentation {other:?}; choose from {} (or all)",
                    NAMES.join(", ")
                ),
            }
        }
        Ok(a)
    }

    /// True when nothing is switched on.
    pub fn is_none(&self) -> bool {
        *self == Augment::default()
    }

    /// The names switched on, in [`NAMES`] order.
    pub fn names(&self) -> Vec<String> {
        let on = [self.flip, self.crop, self.rotate, self.color, self.noise];
        NAMES
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// What identifies a variant in the embedding cache: the switched-on names, the
    /// copy and the seed.
    pub fn key(&self, copy: u32, seed: u64) -> String {
        format!("aug:{}:{copy}:{seed}", self.names().join("+"))
    }
}

/// Copy `copy` (from 1) of `img` under `aug`, deterministic for (`content`, `copy`,
/// `seed`), where `content` is the image file's hash. A gray image stays gray.
pub fn variant(
    img: &DynamicImage,
    aug: &Augment,
    content: &[u8; 32],
    copy: u32,
    seed: u64,
) -> DynamicImage {
    let digest: [u8; 32] = Sha256::new()
        .chain_update(content)
        .chain_update(copy.to_le_bytes())
        .chain_update(seed.to_le_bytes())
        .finalize()
        .into();
    let mut rng = Rng::new(u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")));
    let gray = matches!(
        img,
        DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
    );
    let channels = if gray { 1 } else { 3 };
    let (mut w, mut h, mut px): (usize, usize, Vec<f32>) = if gray {
        let g = img.to_luma8();
        (
            g.width() as usize,
            g.height() as usize,
            g.into_raw().into_iter().map(f32::from).collect(),
        )
    } else {
        let g = img.to_rgb8();
        (
            g.width() as usize,
            g.height() as usize,
            g.into_raw().into_iter().map(f32::from).collect(),
        )
    };
    if aug.flip && rng.unit() < 0.5 {
        for row in px.chunks_exact_mut(w * channels) {
            for x in 0..w / 2 {
                for c in 0..channels {
                    row.swap(x * channels + c, (w - 1 - x) * channels + c);
                }
            }
        }
    }
    if aug.rotate {
        let angle = rng.uniform(-12.0, 12.0).to_radians();
        px = rotate(&px, w, h, channels, angle);
    }
    if aug.crop && w > 1 && h > 1 {
        let area = rng.uniform(0.7, 1.0);
        let aspect = rng.uniform((0.75f32).ln(), (4.0f32 / 3.0).ln()).exp();
        let cw = ((w as f32 * (area * aspect).sqrt()).round() as usize).clamp(1, w);
        let ch = ((h as f32 * (area / aspect).sqrt()).round() as usize).clamp(1, h);
        let x0 = rng.below(w - cw + 1);
        let y0 = rng.below(h - ch + 1);
        let mut out = Vec::with_capacity(cw * ch * channels);
        for y in y0..y0 + ch {
            out.extend_from_slice(&px[(y * w + x0) * channels..(y * w + x0 + cw) * channels]);
        }
        (w, h, px) = (cw, ch, out);
    }
    if aug.color {
        let brightness = rng.uniform(-0.2, 0.2) * 255.0;
        let contrast = rng.uniform(0.8, 1.2);
        let mean = px.iter().sum::<f32>() / px.len().max(1) as f32;
        for v in &mut px {
            *v = (*v - mean) * contrast + mean + brightness;
        }
    }
    if aug.noise {
        let sigma = 0.04 * 255.0;
        for v in &mut px {
            // Box–Muller.
            let (u1, u2) = (rng.unit().max(1e-7), rng.unit());
            *v += sigma * (-2.0 * u1.ln()).sqrt() * (core::f32::consts::TAU * u2).cos();
        }
    }
    let bytes: Vec<u8> = px
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    let (w, h) = (w as u32, h as u32);
    if gray {
        DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, bytes).expect("sized above"))
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, bytes).expect("sized above"))
    }
}

/// `px` (w × h × channels) rotated by `angle` about its center: bilinear, coordinates
/// outside the image clamped to its edge.
fn rotate(px: &[f32], w: usize, h: usize, channels: usize, angle: f32) -> Vec<f32> {
    let (s, c) = angle.sin_cos();
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let at = |x: isize, y: isize, ch: usize| {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        px[(y * w + x) * channels + ch]
    };
    let mut out = vec![0.0; px.len()];
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            let sx = c * dx + s * dy + cx;
            let sy = -s * dx + c * dy + cy;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            for ch in 0..channels {
                let top = at(x0, y0, ch) * (1.0 - fx) + at(x0 + 1, y0, ch) * fx;
                let bottom = at(x0, y0 + 1, ch) * (1.0 - fx) + at(x0 + 1, y0 + 1, ch) * fx;
                out[(y * w + x) * channels + ch] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient() -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_fn(16, 12, |x, y| {
            image::Luma([(x * 10 + y * 3) as u8])
        }))
    }

    #[test]
    fn parse_names_and_refuse_unknown_ones() {
        let a = Augment::parse(&["crop".into(), "noise".into()]).unwrap();
        assert_eq!(a.names(), ["crop", "noise"]);
        assert!(Augment::parse(&["all".into()]).unwrap().flip);
        let err = Augment::parse(&["blur".into()]).unwrap_err().to_string();
        assert!(err.contains("unknown augmentation \"blur\""), "{err}");
    }

    #[test]
    fn variants_are_deterministic_and_differ_by_copy() {
        let img = gradient();
        let all = Augment::parse(&["all".into()]).unwrap();
        let a = variant(&img, &all, &[1; 32], 1, 5);
        assert_eq!(a, variant(&img, &all, &[1; 32], 1, 5));
        assert_ne!(a, variant(&img, &all, &[1; 32], 2, 5));
        assert!(matches!(a, DynamicImage::ImageLuma8(_)), "gray stays gray");
    }

    #[test]
    fn zero_rotation_is_identity_and_flip_mirrors() {
        let img = gradient();
        let g = img.to_luma8();
        let px: Vec<f32> = g.as_raw().iter().map(|&v| f32::from(v)).collect();
        let r = rotate(&px, 16, 12, 1, 0.0);
        assert_eq!(r, px);
        let flip = Augment {
            flip: true,
            ..Default::default()
        };
        // Over a few copies, one is mirrored.
        let mirrored = (1..10)
            .map(|c| variant(&img, &flip, &[0; 32], c, 0))
            .any(|v| {
                let v = v.to_luma8();
                v.get_pixel(0, 0) == g.get_pixel(15, 0)
            });
        assert!(mirrored);
    }
}
