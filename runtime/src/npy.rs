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

/// Checks what npyz would otherwise panic, over-allocate or take seconds on: the magic, a
/// header that is there in full, no longer than numpy allows and of the form numpy
/// writes for a plain array ([`plain_header`]), and a shape whose element count fits in
/// `u64`.
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
    // npyz parses the header with a backtracking grammar that takes seconds on some
    // malformed headers of a hundred bytes (found by the `npy` fuzz target: a dozen nested
    // brackets took over 10 s; unclosed strings between brackets 1.3 s at a depth of 4).
    // So the header must first be what numpy writes for a plain array, read here in one
    // pass; npyz then reads only headers of that form.
    let shape = plain_header(text)?;
    shape
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .ok_or_else(|| "its shape has too many elements".to_string())?;
    Ok(())
}

/// The header of a plain array as numpy writes it, `{'descr': '<f4', 'fortran_order':
/// False, 'shape': (2, 3), }` (any key order, either quote, trailing commas, padding),
/// read in one pass; its shape. Anything else is refused, naming what and where.
fn plain_header(text: &[u8]) -> Result<Vec<u64>, String> {
    let mut r = HeaderReader { text, at: 0 };
    let mut shape = None;
    r.expect(b'{')?;
    loop {
        if r.eat(b'}') {
            break;
        }
        let key = r.string()?;
        r.expect(b':')?;
        match key {
            b"descr" if r.peek() == Some(b'[') => {
                return Err(
                    "its elements are a structured type (a list of fields); samples \
                     must be float32, float64, uint8, int32 or int64"
                        .to_string(),
                );
            }
            b"descr" => {
                r.string()?;
            }
            b"fortran_order" => {
                if !(r.word(b"True") || r.word(b"False")) {
                    return Err(r.error("True or False"));
                }
            }
            b"shape" => shape = Some(r.tuple()?),
            _ => {
                return Err(format!(
                    "its header has the key {:?}, not one of descr, fortran_order, shape",
                    String::from_utf8_lossy(key)
                ));
            }
        }
        if !r.eat(b',') {
            r.expect(b'}')?;
            break;
        }
    }
    if r.text[r.at..]
        .iter()
        .any(|c| !matches!(c, b' ' | b'\n' | b'\r' | b'\t' | 0))
    {
        return Err(r.error("only padding after the header's dictionary"));
    }
    shape.ok_or_else(|| "its header has no shape".to_string())
}

/// A cursor over a `.npy` header (see [`plain_header`]).
struct HeaderReader<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> HeaderReader<'a> {
    fn skip_space(&mut self) {
        while self
            .text
            .get(self.at)
            .is_some_and(|c| matches!(c, b' ' | b'\t'))
        {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.get(self.at).copied()
    }

    fn error(&self, wanted: &str) -> String {
        format!(
            "its header has no plain array's dictionary: {wanted} expected at byte {}",
            self.at
        )
    }

    /// Consumes `c` (after spaces) if it is next.
    fn eat(&mut self, c: u8) -> bool {
        let found = self.peek() == Some(c);
        self.at += usize::from(found);
        found
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("{:?}", char::from(c))))
        }
    }

    /// Consumes `w` (after spaces) if it is next.
    fn word(&mut self, w: &[u8]) -> bool {
        self.skip_space();
        let found = self.text[self.at..].starts_with(w);
        if found {
            self.at += w.len();
        }
        found
    }

    /// A quoted string without escapes (numpy's keys and type strings have none).
    fn string(&mut self) -> Result<&'a [u8], String> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return Err(self.error("a quoted string")),
        };
        let start = self.at + 1;
        let len = self.text[start..]
            .iter()
            .position(|&c| c == quote || c == b'\\' || c == b'\n')
            .filter(|&n| self.text[start + n] == quote)
            .ok_or_else(|| {
                format!("its header has an unclosed or escaped string at byte {start}")
            })?;
        self.at = start + len + 1;
        Ok(&self.text[start..start + len])
    }

    /// A tuple of non-negative integers, `()`, `(6,)`, `(2, 3)` (`3L` as Python 2 wrote).
    fn tuple(&mut self) -> Result<Vec<u64>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.eat(b')') {
                return Ok(dims);
            }
            let start = self.at;
            let digits = self.text[start..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            let d = std::str::from_utf8(&self.text[start..start + digits])
                .ok()
                .and_then(|d| d.parse::<u64>().ok())
                .ok_or_else(|| self.error("a dimension (digits)"))?;
            self.at += digits;
            self.word(b"L");
            dims.push(d);
            if !self.eat(b',') {
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
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
        assert!(
            err.to_string().contains("no plain array's dictionary"),
            "{err}"
        );
    }

    /// Found by the `npy` fuzz target's long run: unclosed strings between brackets no
    /// deeper than numpy's, 118 bytes that npyz took 1.3 s over (12 s under load).
    #[test]
    fn headers_npyz_backtracks_over_are_refused_at_once() {
        let header: &[u8] = b"{[{'d, }  b\\ ]\\\0\0\0\0\0\0\0er': {[{'d  \t, }   ' :'', 's)\\-\0\0\0  } b\\ ]\\\0\0\0\0\0\0\0er': {[{'d  \t, }  b\\ ]\\\0\0\0\0\0\0\0er': {[{'d  \t, }";
        assert_eq!(header.len(), 118);
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(b"\\        ");
        let input = InputSpec {
            name: "x".into(),
            shape: vec![1, 6],
            layout: Layout::Features,
            dtype: "f32".into(),
        };
        let err = read_npy(Path::new("slow.npy"), &bytes, &input, 6, 1).unwrap_err();
        assert!(
            err.to_string()
                .contains("a quoted string expected at byte 1"),
            "{err}"
        );
    }

    #[test]
    fn headers_numpy_writes_are_read() {
        for (header, shape) in [
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                vec![2, 3],
            ),
            (
                "{\"descr\":\"<f8\",\"fortran_order\":True,\"shape\":(6,)}",
                vec![6],
            ),
            (
                "{'shape': (), 'fortran_order': False, 'descr': '|u1'}   \n",
                vec![],
            ),
            (
                "{'descr': '<i8', 'fortran_order': False, 'shape': (1L, 6L), }",
                vec![1, 6],
            ),
        ] {
            assert_eq!(plain_header(header.as_bytes()), Ok(shape), "{header}");
        }
        for (header, why) in [
            (
                "{'descr': [('a', '<f4')], 'shape': (2,)}",
                "structured type",
            ),
            (
                "{'descr': '<f4', 'shape': (2,), 'extra': 1}",
                "the key \"extra\"",
            ),
            (
                "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",
                "True or False",
            ),
            ("{'descr': '<f4', 'shape': (2, x)}", "a dimension"),
            ("{'descr': '<f\\4', 'shape': (2,)}", "escaped string"),
            ("{'descr': '<f4'}", "no shape"),
            ("{'descr': '<f4', 'shape': (2,)} x", "only padding"),
        ] {
            let e = plain_header(header.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{header}: {e}");
        }
    }
}
