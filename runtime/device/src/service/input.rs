//! A request's input, from a file or bytes to the raw tensor the backbone takes: a PNG or
//! JPEG image, a `.npy` array or raw little-endian f32 values, checked for length and
//! finiteness. Files are read with bounds ([`read_bounded`]): a FIFO, a device or a file
//! past the input limit is refused, never read.

use std::path::Path;

use anyhow::{Context, bail};

use super::Model;
use edgetune::bundle::{Layout, Manifest};

impl Model {
    /// The input file size limit for a model of `input_len` raw values: 16 MiB (a
    /// camera frame as PNG or JPEG), or the raw tensor as f32 plus 64 KiB of `.npy`
    /// header when that is larger.
    pub fn default_input_limit(input_len: usize) -> u64 {
        (16u64 << 20).max(
            (input_len as u64)
                .saturating_mul(4)
                .saturating_add(64 << 10),
        )
    }

    /// The raw input tensor of the file at `path` ([`Model::raw_input`]), read with
    /// bounds: only a regular file (no FIFO, device or directory: `/dev/zero` is
    /// refused, not read), opened without blocking, at most the model's input limit
    /// (`--max-input-bytes`). Errors name the path and what is wrong with it, never its
    /// contents or size.
    pub fn read_input(&self, path: &Path) -> anyhow::Result<Vec<f32>> {
        let bytes = read_bounded(path, self.max_input_bytes)?;
        let known = bytes.starts_with(b"\x93NUMPY")
            || bytes.starts_with(b"\x89PNG")
            || bytes.starts_with(&[0xFF, 0xD8, 0xFF]);
        self.raw_input(&bytes).map_err(|e| {
            if known {
                return e.context(format!("the input {}", path.display()));
            }
            // Of a file that is no input format, the reason (its length) would describe
            // a file the request may have no business reading: name what is expected.
            anyhow::anyhow!(
                "the input {} is not a PNG, JPEG or .npy file, nor {} raw little-endian f32 values",
                path.display(),
                self.input_len
            )
        })
    }

    /// The raw input tensor of a file's bytes: a PNG or JPEG image (for an image
    /// backbone), a `.npy` array ([`edgetune::npy`]; of a batch, the first sample), or raw
    /// little-endian f32 values.
    pub fn raw_input(&self, bytes: &[u8]) -> anyhow::Result<Vec<f32>> {
        let layout = self.manifest.input.layout;
        let values = if bytes.starts_with(b"\x93NUMPY") {
            // A batch gives its first sample.
            let mut samples = edgetune::npy::read_npy(
                Path::new("the .npy input"),
                bytes,
                &self.manifest.input,
                self.input_len,
                1,
            )?;
            samples.pop().unwrap_or_default()
        } else if bytes.starts_with(b"\x89PNG") || bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            if !matches!(layout, Layout::Nchw | Layout::Nhwc) {
                bail!(
                    "an image was given, but this model's input is not an image ({:?} {:?})",
                    layout,
                    self.manifest.input.shape
                );
            }
            image_input(bytes, &self.manifest)?
        } else {
            if !bytes.len().is_multiple_of(4) {
                bail!(
                    "the input is not a PNG, JPEG or .npy file, and its {} bytes are not whole little-endian f32 values",
                    bytes.len()
                );
            }
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        self.check_raw(&values)?;
        Ok(values)
    }

    /// Checks the length and finiteness of a raw input.
    pub fn check_raw(&self, values: &[f32]) -> anyhow::Result<()> {
        if values.len() != self.input_len {
            bail!(
                "the input has {} values, this model takes {:?} = {} values",
                values.len(),
                self.manifest.input.shape,
                self.input_len
            );
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "the input holds {} at position {i}: only finite values are accepted",
                values[i]
            );
        }
        Ok(())
    }
}

fn image_input(bytes: &[u8], manifest: &Manifest) -> anyhow::Result<Vec<f32>> {
    Ok(edgetune::image::decode(bytes, &manifest.input)?)
}

/// Reads at most `limit` bytes of the regular file at `path`. The file is opened with
/// `O_NONBLOCK` so that a FIFO cannot block the caller's thread; anything but a regular
/// file is refused before a byte is read, and a file that is (or grows) larger than
/// `limit` is refused too.
pub fn read_bounded(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot_read = || format!("cannot read the input {}", path.display());
    let too_large = || {
        anyhow::anyhow!(
            "the input {} is larger than the input limit of {limit} bytes (--max-input-bytes)",
            path.display()
        )
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .with_context(cannot_read)?;
    let meta = file.metadata().with_context(cannot_read)?;
    if !meta.is_file() {
        bail!("the input {} is not a regular file", path.display());
    }
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte past the limit tells a file that grew since its size was read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(cannot_read)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}
