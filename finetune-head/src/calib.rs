//! Real input samples from a directory: for int8 calibration (`convert --quantize int8
//! --calib DIR [--calib-count N]`) and, later, for training data.
//!
//! [`load_dir`] returns *raw* samples, each exactly the tensor a backbone takes
//! ([`edgetune::backbone::Backbone::embed`]): the product of the input's shape in values,
//! laid out per its layout, before the manifest's preprocessing (scale, channel order,
//! mean, standard deviation), which the backbone applies itself. It reads:
//!
//! - **images**, `*.png`, `*.jpg`, `*.jpeg`: decoded, converted to RGB (or luma for a
//!   1-channel model), scaled and center-cropped to the input's height × width and laid
//!   out by [`edgetune::image::decode`] (see [`edgetune::image`] for the exact rule), so
//!   a sample is what the device makes of the same picture;
//! - **NumPy arrays**, `*.npy` (read by [`edgetune::npy`]), already in the model's layout and in raw units (pixels
//!   0–255 for an image model, not normalized): one sample, whose shape is the input's
//!   shape with or without its batch axis (`[1, 3, 224, 224]` or `[3, 224, 224]`), or a
//!   batch of `N` samples, shape `[N, 3, 224, 224]`. Element types `float32`, `float64`,
//!   `uint8`, `int32` and `int64` (token ids) become `f32`; C and Fortran order are both
//!   read. A warning is logged when an image model's array looks normalized already
//!   (values all within `[0, 1]`, or negative ones).
//!
//! For a text encoder, [`load_text`] reads sentences instead, tokenized with the bundle's
//! tokenizer: a `.txt` file (one sentence per non-empty line), or labeled text in any form
//! `train` reads (CSV/TSV, JSON lines, a folder of class folders; the labels are not used;
//! rows `train` would skip are skipped, with a warning giving their number and the first).
//!
//! Files are taken in the order of their names (byte order), so the same directory gives
//! the same samples in the same order; the directory is not searched recursively, and
//! other files, subdirectories and hidden files (names starting with `.`) are skipped.
//! Extensions are matched case-insensitively. Every error names the file and what is
//! wrong with it; no file's content makes this panic.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use edgetune::bundle::InputSpec;
use edgetune::npy::read_npy;

/// Calibration sentences for a text encoder, as token ids of `tok` (see the [module
/// documentation](self)), at most `count` of them, in the file's order. Errors if there is
/// none, `count` is `Some(0)`, or the file cannot be read.
pub fn load_text(
    path: &Path,
    tok: &edgetune::text::TextTokenizer,
    count: Option<usize>,
) -> anyhow::Result<Vec<Vec<i64>>> {
    if count == Some(0) {
        bail!("the sample count must be at least 1");
    }
    let is_txt = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
    let mut ids = Vec::new();
    if is_txt && path.is_file() {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| anyhow!("{} is not UTF-8 text", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                let tokens = tok
                    .encode(line)
                    .with_context(|| format!("{}:{}", path.display(), n + 1))?;
                ids.push(tokens.ids);
            }
        }
    } else {
        let mut skipped = Vec::new();
        let opts = crate::dataset::LoadOptions::default();
        let loaded = crate::dataset::read_text(path, tok, &opts, &mut skipped)?;
        if !skipped.is_empty() {
            let first = &skipped[0];
            log::warn!(
                "calibration: {} of the texts in {} skipped (the first, {}: {})",
                skipped.len(),
                path.display(),
                first.path,
                first.reason
            );
        }
        ids.extend(
            loaded
                .items
                .into_iter()
                .filter_map(|item| match item.input {
                    crate::dataset::Input::Text { ids, .. } => Some(ids),
                    _ => None,
                }),
        );
    }
    if let Some(c) = count {
        ids.truncate(c);
    }
    if ids.is_empty() {
        bail!("{} holds no sentence", path.display());
    }
    Ok(ids)
}

/// Extensions of the image files [`load_dir`] reads (lowercase).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// How a file in the directory is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Npy,
}

/// The raw samples in `dir` for a model whose input is `input` (see the [module
/// documentation](self)): files in name order, at most `count` samples if given (a
/// batch `.npy` may be cut short). Errors if `dir` cannot be listed, holds no image or
/// `.npy` file (the message lists what it does hold), `count` is `Some(0)`, or a file
/// cannot be read or does not fit `input`.
pub fn load_dir(
    dir: &Path,
    input: &InputSpec,
    count: Option<usize>,
) -> anyhow::Result<Vec<Vec<f32>>> {
    if count == Some(0) {
        bail!("the sample count must be at least 1");
    }
    let sample_len = sample_len(input)?;
    let (files, others) = list(dir)?;
    if files.is_empty() {
        let found = if others.is_empty() {
            "it is empty".to_string()
        } else {
            const SHOWN: usize = 10;
            let mut found = others.iter().take(SHOWN).cloned().collect::<Vec<_>>();
            if others.len() > SHOWN {
                found.push(format!("and {} more", others.len() - SHOWN));
            }
            format!("it holds {}", found.join(", "))
        };
        bail!(
            "{} holds no samples: no .png, .jpg, .jpeg or .npy files ({found})",
            dir.display()
        );
    }
    let limit = count.unwrap_or(usize::MAX);
    let mut samples = Vec::new();
    for (path, kind) in files {
        if samples.len() >= limit {
            break;
        }
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        match kind {
            Kind::Image => {
                let raw = edgetune::image::decode(&bytes, input)
                    .with_context(|| format!("image {}", path.display()))?;
                debug_assert_eq!(raw.len(), sample_len);
                samples.push(raw);
            }
            Kind::Npy => {
                let wanted = limit - samples.len();
                samples.extend(read_npy(&path, &bytes, input, sample_len, wanted)?);
            }
        }
    }
    Ok(samples)
}

/// Values in one sample, after checking that `input` has a batch of 1.
fn sample_len(input: &InputSpec) -> anyhow::Result<usize> {
    if input.shape.first() != Some(&1) {
        bail!(
            "the model's input shape {:?} must start with a batch of 1",
            input.shape
        );
    }
    input
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n > 0)
        .ok_or_else(|| anyhow!("the model's input shape {:?} is not usable", input.shape))
}

/// What a directory holds: the sample files, and the names of everything else.
type Listing = (Vec<(PathBuf, Kind)>, Vec<String>);

/// The sample files in `dir`, sorted by name, and the names of everything else (a
/// directory with a trailing `/`), sorted too.
fn list(dir: &Path) -> anyhow::Result<Listing> {
    let cannot = || format!("cannot read the sample directory {}", dir.display());
    let mut files = Vec::new();
    let mut others = Vec::new();
    for entry in fs::read_dir(dir).with_context(cannot)? {
        let entry = entry.with_context(cannot)?;
        let name = entry.file_name();
        let shown = name.to_string_lossy().into_owned();
        // A symlink counts by its name; reading it reports a broken one.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let extension = Path::new(&name)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let kind = match extension.as_deref() {
            _ if is_dir || shown.starts_with('.') => None,
            Some("npy") => Some(Kind::Npy),
            Some(e) if IMAGE_EXTENSIONS.contains(&e) => Some(Kind::Image),
            _ => None,
        };
        match kind {
            Some(kind) => files.push((entry.path(), kind)),
            None if is_dir => others.push(format!("{shown}/")),
            None => others.push(shown),
        }
    }
    files.sort_by(|a, b| a.0.file_name().cmp(&b.0.file_name()));
    others.sort();
    Ok((files, others))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgetune::bundle::Layout;
    use image::{DynamicImage, GrayImage, ImageFormat, Rgb, RgbImage};
    use npyz::{WriteOptions, WriterBuilder};

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("finetune-head-calib-{test}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn nchw(c: usize, h: usize, w: usize) -> InputSpec {
        InputSpec {
            name: "pixels".into(),
            shape: vec![1, c, h, w],
            layout: Layout::Nchw,
            dtype: "f32".into(),
        }
    }

    fn npy<T: npyz::AutoSerialize>(path: &Path, shape: &[u64], data: &[T]) {
        let mut bytes = Vec::new();
        let mut writer = WriteOptions::<T>::new()
            .default_dtype()
            .shape(shape)
            .writer(&mut bytes)
            .begin_nd()
            .unwrap();
        for v in data {
            writer.push(v).unwrap();
        }
        writer.finish().unwrap();
        fs::write(path, bytes).unwrap();
    }

    /// A version-1 .npy file with a header written by hand.
    fn raw_npy(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut header = dict.as_bytes().to_vec();
        while !(10 + header.len() + 1).is_multiple_of(64) {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out
    }

    fn png(path: &Path, img: DynamicImage) {
        img.save_with_format(path, ImageFormat::Png).unwrap();
    }

    fn err(dir: &Path, input: &InputSpec, count: Option<usize>) -> String {
        format!("{:#}", load_dir(dir, input, count).unwrap_err())
    }

    #[test]
    fn batch_and_single_npy_in_name_order() {
        let dir = TempDir::new("npy");
        let input = nchw(1, 2, 2);
        // A batch of 3 (f32), one with the batch axis (u8), one without (f64), an int64.
        let batch: Vec<f32> = (0..12).map(|i| i as f32).collect();
        npy(&dir.path("b_batch.npy"), &[3, 1, 2, 2], &batch);
        npy(
            &dir.path("a_single.npy"),
            &[1, 1, 2, 2],
            &[200u8, 201, 202, 203],
        );
        npy(
            &dir.path("c_nobatch.npy"),
            &[1, 2, 2],
            &[1.5f64, 2.5, 3.5, 4.5],
        );
        npy(&dir.path("d_int.npy"), &[1, 2, 2], &[7i64, 8, 9, 10]);
        fs::write(dir.path("notes.txt"), "not a sample").unwrap();
        let samples = load_dir(&dir.0, &input, None).unwrap();
        assert_eq!(
            samples,
            [
                vec![200.0, 201.0, 202.0, 203.0],
                vec![0.0, 1.0, 2.0, 3.0],
                vec![4.0, 5.0, 6.0, 7.0],
                vec![8.0, 9.0, 10.0, 11.0],
                vec![1.5, 2.5, 3.5, 4.5],
                vec![7.0, 8.0, 9.0, 10.0],
            ]
        );
    }

    #[test]
    fn fortran_order_is_reordered() {
        let dir = TempDir::new("fortran");
        // Two samples of [1, 2, 3] (NHWC-free: a features-like per-sample shape).
        let input = InputSpec {
            name: "tokens".into(),
            shape: vec![1, 3],
            layout: Layout::Tokens,
            dtype: "i64".into(),
        };
        // C order [[1, 2, 3], [4, 5, 6]] stored column by column.
        let data: Vec<u8> = [1i32, 4, 2, 5, 3, 6]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = raw_npy(
            "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }",
            &data,
        );
        fs::write(dir.path("ids.npy"), bytes).unwrap();
        let samples = load_dir(&dir.0, &input, None).unwrap();
        assert_eq!(samples, [vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
        // A cut batch is cut after reordering.
        let samples = load_dir(&dir.0, &input, Some(1)).unwrap();
        assert_eq!(samples, [vec![1.0, 2.0, 3.0]]);
    }

    #[test]
    fn images_of_odd_sizes_become_full_samples() {
        let dir = TempDir::new("images");
        let input = nchw(3, 8, 6);
        png(
            &dir.path("wide.png"),
            DynamicImage::ImageRgb8(RgbImage::from_pixel(37, 11, Rgb([10, 20, 30]))),
        );
        png(
            &dir.path("tall.PNG"),
            DynamicImage::ImageLuma8(GrayImage::from_pixel(5, 90, image::Luma([77]))),
        );
        png(
            &dir.path("exact.png"),
            DynamicImage::ImageRgb8(RgbImage::from_fn(6, 8, |x, y| Rgb([x as u8, y as u8, 0]))),
        );
        DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([250, 0, 0])))
            .save_with_format(dir.path("tiny.jpeg"), ImageFormat::Jpeg)
            .unwrap();
        let samples = load_dir(&dir.0, &input, None).unwrap();
        assert_eq!(samples.len(), 4);
        assert!(samples.iter().all(|s| s.len() == 3 * 8 * 6));
        // exact.png, tall.PNG, tiny.jpeg, wide.png.
        assert_eq!(
            samples[0],
            edgetune::image::decode(&fs::read(dir.path("exact.png")).unwrap(), &input).unwrap()
        );
        assert_eq!(samples[0][6 * 8 + 6 + 1], 1.0, "green of pixel (1, 1)");
        assert!(samples[1].iter().all(|&v| v == 77.0));
        assert!(samples[2][..48].iter().all(|&v| v > 200.0), "red");
        assert!(
            samples[3]
                .chunks(48)
                .zip([10.0, 20.0, 30.0])
                .all(|(p, c)| p.iter().all(|&v| v == c))
        );
    }

    #[test]
    fn count_stops_early_even_inside_a_batch() {
        let dir = TempDir::new("count");
        let input = nchw(1, 1, 2);
        npy(&dir.path("a.npy"), &[2, 1, 1, 2], &[1.0f32, 2.0, 3.0, 4.0]);
        npy(
            &dir.path("b.npy"),
            &[4, 1, 1, 2],
            &[5.0f32, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0],
        );
        // A broken file after the limit is never read.
        fs::write(dir.path("c.npy"), b"garbage").unwrap();
        let samples = load_dir(&dir.0, &input, Some(3)).unwrap();
        assert_eq!(samples, [vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]);
        assert_eq!(load_dir(&dir.0, &input, Some(1)).unwrap().len(), 1);
        assert!(err(&dir.0, &input, Some(0)).contains("at least 1"));
        assert!(err(&dir.0, &input, None).contains("c.npy is not a valid .npy file"));
    }

    #[test]
    fn wrong_shapes_name_the_file_and_both_shapes() {
        let dir = TempDir::new("shape");
        let input = nchw(3, 4, 4);
        npy(&dir.path("x.npy"), &[4, 4, 3], &[0.0f32; 48]);
        assert_eq!(
            err(&dir.0, &input, None),
            format!(
                "{} has shape [4, 4, 3], the model takes [1, 3, 4, 4] (one sample: that shape or \
                 [3, 4, 4]; a batch of N: [N, 3, 4, 4])",
                dir.path("x.npy").display()
            )
        );
        npy(&dir.path("x.npy"), &[0, 3, 4, 4], &[0.0f32; 0]);
        assert!(err(&dir.0, &input, None).contains("x.npy holds no samples (shape [0, 3, 4, 4])"));
    }

    #[test]
    fn bad_values_and_types_are_refused() {
        let dir = TempDir::new("values");
        let input = nchw(1, 1, 2);
        let x = dir.path("x.npy");
        npy(&x, &[1, 1, 2], &[1.0f32, f32::NAN]);
        assert!(err(&dir.0, &input, None).contains("x.npy: sample 0, value 1 is NaN"));
        npy(&x, &[1, 1, 2], &[1.0f64, 1e300]);
        assert!(err(&dir.0, &input, None).contains("value 1 is inf"));
        npy(&x, &[1, 1, 2], &[1i64, 1 << 40]);
        assert!(err(&dir.0, &input, None).contains("too large to be exact"));
        npy(&x, &[1, 1, 2], &[1u16, 2]);
        let e = err(&dir.0, &input, None);
        assert!(
            e.contains("x.npy holds elements of type <u2; samples must be float32"),
            "{e}"
        );
        let tokens = InputSpec {
            name: "ids".into(),
            shape: vec![1, 2],
            layout: Layout::Tokens,
            dtype: "i64".into(),
        };
        npy(&x, &[2], &[101.0f32, 0.5]);
        assert!(err(&dir.0, &tokens, None).contains("0.5, not a token id"));
    }

    #[test]
    fn empty_dir_and_dir_without_samples() {
        let dir = TempDir::new("empty");
        let input = nchw(3, 4, 4);
        assert_eq!(
            err(&dir.0, &input, None),
            format!(
                "{} holds no samples: no .png, .jpg, .jpeg or .npy files (it is empty)",
                dir.0.display()
            )
        );
        fs::write(dir.path("readme.txt"), "").unwrap();
        fs::write(dir.path(".hidden.png"), "").unwrap();
        fs::create_dir(dir.path("more")).unwrap();
        let e = err(&dir.0, &input, None);
        assert!(
            e.ends_with("(it holds .hidden.png, more/, readme.txt)"),
            "{e}"
        );
        let e = err(&dir.path("missing"), &input, None);
        assert!(e.starts_with("cannot read the sample directory"), "{e}");
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn unreadable_and_corrupt_files_name_the_file() {
        let dir = TempDir::new("unreadable");
        let input = nchw(3, 4, 4);
        // A dangling symlink: listed, then unreadable.
        std::os::unix::fs::symlink(dir.path("nowhere"), dir.path("gone.png")).unwrap();
        let e = err(&dir.0, &input, None);
        assert!(
            e.starts_with(&format!("cannot read {}", dir.path("gone.png").display())),
            "{e}"
        );
        fs::remove_file(dir.path("gone.png")).unwrap();
        // Text named .jpg.
        fs::write(dir.path("fake.jpg"), "hello").unwrap();
        let e = err(&dir.0, &input, None);
        assert_eq!(
            e,
            format!(
                "image {}: not a PNG or JPEG image",
                dir.path("fake.jpg").display()
            )
        );
        fs::remove_file(dir.path("fake.jpg")).unwrap();
        // A truncated PNG.
        png(
            &dir.path("cut.png"),
            DynamicImage::ImageRgb8(RgbImage::new(30, 30)),
        );
        let bytes = fs::read(dir.path("cut.png")).unwrap();
        fs::write(dir.path("cut.png"), &bytes[..bytes.len() / 2]).unwrap();
        let e = err(&dir.0, &input, None);
        assert!(
            e.starts_with(&format!(
                "image {}: cannot decode the PNG image",
                dir.path("cut.png").display()
            )),
            "{e}"
        );
        fs::remove_file(dir.path("cut.png")).unwrap();
        // A model that takes no images.
        png(
            &dir.path("ok.png"),
            DynamicImage::ImageRgb8(RgbImage::new(3, 3)),
        );
        let tokens = InputSpec {
            name: "ids".into(),
            shape: vec![1, 8],
            layout: Layout::Tokens,
            dtype: "i64".into(),
        };
        assert!(err(&dir.0, &tokens, None).contains("ok.png: the model's input is not an image"));
    }

    #[test]
    fn malformed_npy_files_are_errors_not_panics() {
        let dir = TempDir::new("malformed");
        let input = nchw(1, 1, 2);
        let x = dir.path("x.npy");
        let good = |shape: &str| {
            raw_npy(
                &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
                &[0; 8],
            )
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"\x93NUMPY".to_vec(), "header is truncated"),
            (b"\x93NUMPY\x09\x00\x10\x00".to_vec(), "format version 9"),
            (
                b"\x93NUMPY\x02\x00\xff\xff\xff\xff{".to_vec(),
                "more than numpy's limit",
            ),
            (good("(2,)")[..30].to_vec(), "header is truncated"),
            // npyz would overflow multiplying this shape.
            (good("(4294967296, 4294967296, 2)"), "too many elements"),
            {
                let g = good("(1, 1, 2)");
                (g[..g.len() - 4].to_vec(), "x.npy is truncated")
            },
            (good("(5, 1, 1, 2)"), "x.npy is truncated"),
            (raw_npy("{'descr': '<f4'}", &[]), "not a valid .npy file"),
            (raw_npy("not a dict", &[]), "not a valid .npy file"),
            (
                raw_npy(
                    "{'descr': '|O', 'fortran_order': False, 'shape': (2,)}",
                    &[],
                ),
                "pickled",
            ),
        ];
        for (bytes, want) in cases {
            fs::write(&x, &bytes).unwrap();
            let e = err(&dir.0, &input, None);
            assert!(
                e.contains(want) && e.contains("x.npy"),
                "want {want:?}, got {e}"
            );
        }
        // The good one reads.
        fs::write(&x, good("(1, 1, 2)")).unwrap();
        assert_eq!(load_dir(&dir.0, &input, None).unwrap(), [vec![0.0, 0.0]]);
    }
}
