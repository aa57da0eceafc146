//! NumPy `.npy` arrays as raw input samples: one place for the host (calibration and
//! training data, `finetune-head`) and the device (`edgetune serve` requests), so both
//! read the same files the same way (feature `npy`).
//!
//! An array is one sample, whose shape is the input's shape with or without its batch
//! axis (`[1, 3, 224, 224]` or `[3, 224, 224]`), or a batch of `N` samples
//! (`[N, 3, 224, 224]`), in raw units (pixels 0–255 for an image model). Element types
//! `float32`, `float64`, `uint8`, `int32` and `int64` (token ids) become `f32`; C and
//! Fortran order are both read. NaN, infinities and (for token ids) fractions are
//! refused; a warning is logged when an image model's array looks normalized already.
//! No file's content makes this panic or allocate more than the file promises.

use std::path::Path;

use anyhow::{anyhow, bail};
use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar};

use crate::bundle::{InputSpec, Layout};

/// numpy's own limit on a header (`numpy.lib.format`'s `max_header_size`): a header
/// longer than this is not a plain array.
const MAX_NPY_HEADER: usize = 10_000;

/// How deep brackets nest in the header of any array numpy writes (a dict, a list of
/// fields, a field's tuple; one more for a field's shape).
const MAX_NPY_NESTING: usize = 4;

/// The largest integer every integer up to which `f32` represents exactly, 2^24.
const F32_EXACT: u64 = 1 << 24;

/// The element types read, and how each becomes `f32`.
#[derive(Debug, Clone, Copy)]
enum Element {
    F32,
    F64,
    U8,
    I32,
    I64,
}

/// The samples in the `.npy` file `path` (its contents `bytes`), at most `wanted`, for an
/// input `input` of `sample_len` values a sample (see the module docs). Errors name
/// `path` and what is wrong.
pub fn read_npy(
    path: &Path,
    bytes: &[u8],
    input: &InputSpec,
    sample_len: usize,
    wanted: usize,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let name = path.display();
    let invalid = |what: String| anyhow!("{name} is not a valid .npy file: {what}");
    precheck(bytes).map_err(invalid)?;
    let mut data = bytes;
    let header = NpyHeader::from_reader(&mut data).map_err(|e| invalid(e.to_string()))?;
    if header.uses_pickled_array() {
        bail!("{name} holds Python objects (a pickled array); save a numeric array instead");
    }
    let shape = header
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid(format!("shape {:?} is too large", header.shape())))?;
    let per_sample = &input.shape[1..];
    let samples = if shape == input.shape || shape == per_sample {
        1
    } else if shape.len() == input.shape.len() && shape[1..] == *per_sample {
        shape[0]
    } else {
        bail!(
            "{name} has shape {shape:?}, the model takes {:?} (one sample: that shape or \
             {per_sample:?}; a batch of N: [N, {}])",
            input.shape,
            per_sample
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if samples == 0 {
        bail!("{name} holds no samples (shape {shape:?})");
    }
    let dtype = header.dtype();
    let element = match &dtype {
        DType::Plain(t) => match (t.type_char(), t.num_bytes()) {
            (TypeChar::Float, Some(4)) => Some(Element::F32),
            (TypeChar::Float, Some(8)) => Some(Element::F64),
            (TypeChar::Uint, Some(1)) => Some(Element::U8),
            (TypeChar::Int, Some(4)) => Some(Element::I32),
            (TypeChar::Int, Some(8)) => Some(Element::I64),
            _ => None,
        },
        _ => None,
    };
    let Some(element) = element else {
        let found = match &dtype {
            DType::Plain(t) => t.to_string(),
            other => format!("{} (a structured type)", other.descr()),
        };
        bail!(
            "{name} holds elements of type {found}; samples must be float32, float64, uint8, \
             int32 or int64"
        );
    };
    // The header's length check: every value it promises is there.
    let total = samples.saturating_mul(sample_len);
    let item = dtype.num_bytes().unwrap_or(1);
    let needed = total.checked_mul(item);
    if needed.is_none_or(|n| data.len() < n) {
        bail!(
            "{name} is truncated: its shape {shape:?} needs {} bytes of data, it holds {}",
            needed.map_or_else(|| "more".to_string(), |n| n.to_string()),
            data.len()
        );
    }
    // Fortran order interleaves the samples: read them all, then reorder.
    let fortran = header.order() == Order::Fortran && shape.iter().filter(|&&d| d > 1).count() > 1;
    let take = samples.min(wanted);
    let read = if fortran { total } else { take * sample_len };
    let file = NpyFile::with_header(header, data);
    let values = match element {
        Element::F32 => values::<f32>(file, read, Ok),
        // Out-of-range values become infinite and are refused below.
        Element::F64 => values::<f64>(file, read, |v| Ok(v as f32)),
        Element::U8 => values::<u8>(file, read, |v| Ok(f32::from(v))),
        Element::I32 => values::<i32>(file, read, |v| exact(i64::from(v))),
        Element::I64 => values::<i64>(file, read, exact),
    };
    let mut values = values.map_err(|(i, what)| {
        let (s, j) = (i / sample_len, i % sample_len);
        anyhow!("{name}: sample {s}, value {j}: {what}")
    })?;
    if fortran {
        values = fortran_to_c(&values, &shape);
        values.truncate(take * sample_len);
    }
    check_values(&name.to_string(), &values, input, sample_len)?;
    Ok(values
        .chunks_exact(sample_len)
        .map(<[f32]>::to_vec)
        .collect())
}

/// Checks what npyz would otherwise panic or over-allocate on: the magic, a header that
/// is there in full and no longer than numpy allows, and a shape whose element count
/// fits in `u64`. Anything it cannot parse is left for npyz to report.
fn precheck(bytes: &[u8]) -> Result<(), String> {
    let Some(rest) = bytes.strip_prefix(b"\x93NUMPY") else {
        return Err("it does not start with the .npy magic bytes".to_string());
    };
    let (len, text) = match rest {
        [1, _, a, b, text @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), text),
        [2 | 3, _, a, b, c, d, text @ ..] => (
            usize::try_from(u32::from_le_bytes([*a, *b, *c, *d])).unwrap_or(usize::MAX),
            text,
        ),
        [major, _, ..] if !(1..=3).contains(major) => {
            return Err(format!(
                "format version {major} is not supported (1 to 3 are)"
            ));
        }
        _ => return Err("the header is truncated".to_string()),
    };
    if len > MAX_NPY_HEADER {
        return Err(format!(
            "its header is {len} bytes long, more than numpy's limit of {MAX_NPY_HEADER}"
        ));
    }
    let Some(text) = text.get(..len) else {
        return Err("the header is truncated".to_string());
    };
    let text = String::from_utf8_lossy(text);
    // npyz parses the header with a backtracking grammar that takes seconds for a few
    // dozen nested brackets (found by the `npy` fuzz target: 118 bytes, over 10 s). A
    // numpy header is one dict, whose deepest value (a structured type's fields) nests
    // three brackets deep.
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' => depth = depth.saturating_sub(1),
            _ => continue,
        }
        if depth > MAX_NPY_NESTING {
            return Err(format!(
                "its header nests brackets more than {MAX_NPY_NESTING} deep, which no \
                 numpy array's header does"
            ));
        }
    }
    let dims = ["'shape'", "\"shape\""]
        .iter()
        .find_map(|key| text.find(key).map(|at| &text[at + key.len()..]))
        .and_then(|s| {
            let open = s.find('(')?;
            let close = open + s[open..].find(')')?;
            Some(&s[open + 1..close])
        });
    if let Some(dims) = dims {
        let dims = dims
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::parse::<u64>);
        let mut product = 1u64;
        for d in dims {
            match d {
                Ok(d) => {
                    product = product
                        .checked_mul(d)
                        .ok_or_else(|| "its shape has too many elements".to_string())?;
                }
                // Not plain digits: npyz decides.
                Err(_) => return Ok(()),
            }
        }
    }
    Ok(())
}

/// The first `n` values of `file` as `f32`, or the index of the first value that could
/// not be read or converted and why.
fn values<T: npyz::Deserialize>(
    file: NpyFile<&[u8]>,
    n: usize,
    convert: impl Fn(T) -> Result<f32, String>,
) -> Result<Vec<f32>, (usize, String)> {
    let reader = file.data::<T>().map_err(|e| (0, e.to_string()))?;
    let mut out = Vec::with_capacity(n);
    for (i, v) in reader.take(n).enumerate() {
        let v = v.map_err(|e| (i, format!("cannot read it: {e}")))?;
        out.push(convert(v).map_err(|what| (i, what))?);
    }
    if out.len() < n {
        return Err((out.len(), "the data ends early".to_string()));
    }
    Ok(out)
}

/// An integer as `f32`, if it is exact there.
fn exact(v: i64) -> Result<f32, String> {
    if v.unsigned_abs() > F32_EXACT {
        return Err(format!(
            "{v} is too large to be exact as a 32-bit float (at most 2^24 in magnitude)"
        ));
    }
    Ok(v as f32)
}

/// `values` (Fortran order, `shape`) in C order.
fn fortran_to_c(values: &[f32], shape: &[usize]) -> Vec<f32> {
    // Fortran strides: the first axis is the fastest.
    let mut strides = Vec::with_capacity(shape.len());
    let mut stride = 1;
    for &d in shape {
        strides.push(stride);
        stride *= d;
    }
    let mut index = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(values.len());
    for _ in 0..values.len() {
        let at: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(values[at]);
        // C order: the last axis is the fastest.
        for (i, &d) in index.iter_mut().zip(shape).rev() {
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
    out
}

/// Refuses NaN, infinities and (for token ids) fractions; warns when an image model's
/// samples look normalized already.
fn check_values(
    name: &str,
    values: &[f32],
    input: &InputSpec,
    sample_len: usize,
) -> anyhow::Result<()> {
    for (i, &v) in values.iter().enumerate() {
        let (s, j) = (i / sample_len, i % sample_len);
        if !v.is_finite() {
            bail!("{name}: sample {s}, value {j} is {v}; samples must be finite");
        }
        if input.layout == Layout::Tokens && v.fract() != 0.0 {
            bail!("{name}: sample {s}, value {j} is {v}, not a token id (a whole number)");
        }
    }
    if input.layout.is_image() && !values.is_empty() {
        let (lo, hi) = values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        if lo < 0.0 || (hi <= 1.0 && hi > lo) {
            #[cfg(feature = "log")]
            log::warn!(
                "{name}: values lie in [{lo}, {hi}], but an image model takes raw pixels \
                 0–255 (the bundle's preprocessing scales and normalizes them): is this \
                 array normalized already?"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `npy` fuzz target: npyz spent over 10 s on this 118-byte header.
    #[test]
    fn deeply_nested_headers_are_refused_at_once() {
        let dict = format!(
            "{}'descr': '<f4', 'fortran_order': False, 'shape': (6,), }}",
            "{".repeat(11)
        );
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        bytes.extend_from_slice(dict.as_bytes());
        bytes.extend_from_slice(&[0; 24]);
        let input = InputSpec {
            name: "x".into(),
            shape: vec![1, 6],
            layout: Layout::Features,
            dtype: "f32".into(),
        };
        let err = read_npy(Path::new("deep.npy"), &bytes, &input, 6, 1).unwrap_err();
        assert!(err.to_string().contains("nests brackets"), "{err}");
    }
}
