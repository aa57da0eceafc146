//! The patches of an integer convolution, copied into the matrix product's packed input:
//! edgetune's eager im2col, in place of tract's where it applies.
//!
//! tract 0.23.9 writes each value of an eager im2col through a packing writer that
//! tracks its panel and lane element by element (`Patcher::padded_valid_x_loop`). On
//! the Pi 5 CPU model that was 2.56 M of the 4.65 M aarch64 instructions of an int8
//! ResNet18 inference (`scripts/iprofile.sh`), where the integer products cost 0.21 M.
//! Here the panels are written directly: the input is first copied once into a buffer
//! with its padding around it (so no patch asks whether it lies in the image), then the
//! lanes of each panel that lie on one output row are copied as a run, of fixed size
//! where it is 8, 4 or 2 lanes (one load and store each; the interleaving of
//! `PackedI8K4` becomes table lookups). With a horizontal stride of 2 each padded row is
//! kept as its even columns then its odd ones, so that those runs are contiguous too.
//! Both packings the boards' integer kernels take are written: tract's plain
//! `PackedFormat` (k-major, a Pi 4) and the dot-product kernel's `PackedI8K4` (4 k's
//! inner, a Pi 5). Measured on that ResNet18: 0.35 M instructions for its 16 im2col on
//! a Pi 5, against 2.56 M.
//!
//! [`PackPatches`] replaces tract's `Im2Col` node after optimization and produces the
//! same packed tensor: the same bytes at every position the product reads (what
//! `examples/plan_check.rs` checks on whole models, and the tests below value by value).
//! What it does not cover keeps tract's op: elements wider than a byte, data formats
//! with the channels last, other than two spatial axes, a padding value that is not a
//! constant, other packings. (The copy's functions are kept out of line so that
//! `scripts/iprofile.sh` shows each.)

use std::borrow::Cow;

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::cnn::conv::Im2Col;
use tract_nnef::tract_core::ops::nn::DataFormat;
use tract_nnef::tract_core::tract_linalg::mmm::{
    MMMInputFormat, MMMInputValue, PackedExoticFact, PackedMatrixStorage,
};

use super::{Packing, packed_matrix};
use tract_nnef::tract_core::tract_linalg::pack::{PackedFormat, PackedI8K4};

/// One convolution's geometry, concrete, in the terms the copy needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Geometry {
    pub packing: Packing,
    /// Columns per panel.
    pub r: usize,
    /// Bytes from one panel to the next.
    pub panel_len: usize,
    /// The packed buffer's alignment.
    pub align: usize,
    /// Images in the batch (1 without a batch axis), groups.
    pub batch: usize,
    pub group: usize,
    /// Input channels, height and width.
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Padding above, left, below, right.
    pub pads: [usize; 4],
    /// Output height and width.
    pub out_height: usize,
    pub out_width: usize,
    /// Vertical and horizontal strides.
    pub strides: [usize; 2],
    /// For each k of a group (channel, kernel row, kernel column, in tract's order), its
    /// offset in the padded input from the top-left corner of a patch.
    pub offsets: Vec<usize>,
    /// The value outside the image (the input's zero point), as its byte.
    pub pad_byte: u8,
}

impl Geometry {
    fn padded_height(&self) -> usize {
        self.height + self.pads[0] + self.pads[2]
    }

    fn padded_width(&self) -> usize {
        self.width + self.pads[1] + self.pads[3]
    }

    fn plane(&self) -> usize {
        self.padded_height() * self.padded_width()
    }

    /// Whether each padded row is kept as its even columns then its odd ones: with a
    /// horizontal stride of 2 the lanes of a run then read consecutive bytes, as with a
    /// stride of 1.
    fn split(&self) -> bool {
        self.strides[1] == 2
    }

    /// The distance, in a (padded, maybe split) row, between the patches of two
    /// neighbouring output pixels.
    fn step(&self) -> usize {
        if self.split() { 1 } else { self.strides[1] }
    }

    /// Where column `x` of a padded row is kept (see [`Geometry::split`]).
    fn column(&self, x: usize) -> usize {
        match (self.split(), x % 2) {
            (false, _) => x,
            (true, 0) => x / 2,
            (true, _) => self.padded_width().div_ceil(2) + x / 2,
        }
    }

    /// The offsets of the k's of a group (see [`Geometry::offsets`]'s field) for this
    /// kernel size and dilations. A patch's columns lie at `column(2·ox + x)`, which is
    /// `ox + column(x)` in a split row, as `ox·stride + x` in a plain one.
    fn offsets(&self, kernel: [usize; 2], dilations: [usize; 2]) -> Vec<usize> {
        let (pw, plane) = (self.padded_width(), self.plane());
        let per_group = self.channels / self.group;
        (0..per_group)
            .flat_map(|c| {
                (0..kernel[0]).flat_map(move |y| {
                    (0..kernel[1]).map(move |x| {
                        c * plane + y * dilations[0] * pw + self.column(x * dilations[1])
                    })
                })
            })
            .collect()
    }

    /// Output pixels: the product's columns.
    fn n(&self) -> usize {
        self.out_height * self.out_width
    }

    fn panels(&self) -> usize {
        self.n().div_ceil(self.r)
    }

    /// The input with its padding around each channel, its rows split where the stride
    /// is 2 (see [`Geometry::split`]), or the input itself where neither applies.
    #[inline(never)]
    fn pad<'a>(&self, input: &'a [u8]) -> Cow<'a, [u8]> {
        if self.pads == [0; 4] && !self.split() {
            return Cow::Borrowed(input);
        }
        let (pw, plane) = (self.padded_width(), self.plane());
        let mut out = vec![self.pad_byte; self.batch * self.channels * plane];
        for (src, dst) in input
            .chunks_exact(self.height * self.width)
            .zip(out.chunks_exact_mut(plane))
        {
            for (row, dst_row) in src
                .chunks_exact(self.width)
                .zip(dst[self.pads[0] * pw..].chunks_exact_mut(pw))
            {
                dst_row[self.pads[1]..][..self.width].copy_from_slice(row);
            }
        }
        if self.split() {
            let mut row = vec![0u8; pw];
            let half = pw.div_ceil(2);
            for dst_row in out.chunks_exact_mut(pw) {
                row.copy_from_slice(dst_row);
                let (even, odd) = dst_row.split_at_mut(half);
                for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(row.chunks_exact(2)) {
                    (*e, *o) = (pair[0], pair[1]);
                }
                if pw % 2 == 1 {
                    even[half - 1] = row[pw - 1];
                }
            }
        }
        Cow::Owned(out)
    }

    /// Writes the panels of one image and group; `src` is its padded input from the
    /// group's first channel, `dst` the zeroed packed buffer.
    #[inline(never)]
    pub fn fill(&self, src: &[u8], dst: &mut [u8]) {
        let (r, n, pw) = (self.r, self.n(), self.padded_width());
        let (sy, step) = (self.strides[0], self.step());
        for (p, panel) in dst
            .chunks_exact_mut(self.panel_len)
            .take(self.panels())
            .enumerate()
        {
            let lanes = r.min(n - p * r);
            let mut lane = 0;
            // The panel's lanes, in runs that lie on one output row.
            while lane < lanes {
                let pixel = p * r + lane;
                let (oy, ox) = (pixel / self.out_width, pixel % self.out_width);
                let len = (self.out_width - ox).min(lanes - lane);
                let src = &src[oy * sy * pw + ox * step..];
                match self.packing {
                    Packing::KMajor => self.run_k_major(src, panel, lane, len),
                    Packing::K4 => self.run_k4(src, panel, lane, len),
                }
                lane += len;
            }
        }
    }

    /// `len` lanes from `lane`, whose first patch starts at `src[0]`, k-major.
    #[inline(never)]
    fn run_k_major(&self, src: &[u8], panel: &mut [u8], lane: usize, len: usize) {
        let (r, step) = (self.r, self.step());
        match (len, step) {
            (8, 1) => self.run_k_major_fixed::<8>(src, panel, lane),
            (4, 1) => self.run_k_major_fixed::<4>(src, panel, lane),
            (2, 1) => self.run_k_major_fixed::<2>(src, panel, lane),
            _ => {
                for (&offset, column) in self.offsets.iter().zip(panel.chunks_exact_mut(r)) {
                    column[lane..lane + len]
                        .iter_mut()
                        .zip(src[offset..].iter().step_by(step))
                        .for_each(|(t, f)| *t = *f);
                }
            }
        }
    }

    /// [`Geometry::run_k_major`] for runs of `L` lanes, one byte apart.
    #[inline(always)]
    fn run_k_major_fixed<const L: usize>(&self, src: &[u8], panel: &mut [u8], lane: usize) {
        for (&offset, column) in self.offsets.iter().zip(panel.chunks_exact_mut(self.r)) {
            copy::<L>(&src[offset..], &mut column[lane..]);
        }
    }

    /// `len` lanes from `lane`, whose first patch starts at `src[0]`, 4 k's inner.
    #[inline(never)]
    fn run_k4(&self, src: &[u8], panel: &mut [u8], lane: usize, len: usize) {
        // Every run of a map 7 or 14 pixels wide (ResNet18's last two stages at
        // 224×224) is 1 to 7 lanes: byte by byte they cost a Pi 5 more than the runs of 8.
        match (len, self.step()) {
            (8, 1) => self.run_k4_fixed::<8>(src, panel, lane),
            (7, 1) => self.run_k4_fixed::<7>(src, panel, lane),
            (6, 1) => self.run_k4_fixed::<6>(src, panel, lane),
            (5, 1) => self.run_k4_fixed::<5>(src, panel, lane),
            (4, 1) => self.run_k4_fixed::<4>(src, panel, lane),
            (3, 1) => self.run_k4_fixed::<3>(src, panel, lane),
            (2, 1) => self.run_k4_fixed::<2>(src, panel, lane),
            _ => {
                for (offsets, block) in self
                    .offsets
                    .chunks(4)
                    .zip(panel.chunks_exact_mut(4 * self.r))
                {
                    self.k4_block(src, offsets, &mut block[lane * 4..(lane + len) * 4]);
                }
            }
        }
    }

    /// [`Geometry::run_k4`] for runs of `L` lanes, one byte apart.
    #[inline(always)]
    fn run_k4_fixed<const L: usize>(&self, src: &[u8], panel: &mut [u8], lane: usize) {
        let mut blocks = panel.chunks_exact_mut(4 * self.r);
        let fours = self.offsets.chunks_exact(4);
        let rest = fours.remainder();
        for (o, block) in fours.zip(&mut blocks) {
            interleave::<L>(src, [o[0], o[1], o[2], o[3]], &mut block[lane * 4..]);
        }
        if let (false, Some(block)) = (rest.is_empty(), blocks.next()) {
            self.k4_block(src, rest, &mut block[lane * 4..(lane + L) * 4]);
        }
    }

    /// The lanes of `to` (4 bytes each) for up to 4 k's (`offsets`); the k's past the
    /// last stay 0, as the buffer came.
    fn k4_block(&self, src: &[u8], offsets: &[usize], to: &mut [u8]) {
        for (j, &offset) in offsets.iter().enumerate() {
            let from = src[offset..].iter().step_by(self.step());
            to.iter_mut()
                .skip(j)
                .step_by(4)
                .zip(from)
                .for_each(|(t, f)| *t = *f);
        }
    }
}

/// `L` bytes from `from` into `to`: a fixed-size copy (one load and store of 8, 4 or 2
/// bytes).
#[inline(always)]
pub(super) fn copy<const L: usize>(from: &[u8], to: &mut [u8]) {
    to[..L].copy_from_slice(&from[..L]);
}

/// `L` lanes of four k's (`offsets` from `src`), interleaved four by four into `to`
/// (4·`L` bytes).
#[inline(always)]
pub(super) fn interleave<const L: usize>(src: &[u8], offsets: [usize; 4], to: &mut [u8]) {
    // 8 lanes in NEON: two rounds of zips (bytes, then pairs of bytes), as `columns.rs`'s
    // `k4_pairs`.
    #[cfg(target_arch = "aarch64")]
    if L == 8 {
        use std::arch::aarch64::*;
        let row = |o: usize| -> &[u8; 8] { src[o..][..8].try_into().expect("8 bytes") };
        let (r0, r1, r2, r3) = (
            row(offsets[0]),
            row(offsets[1]),
            row(offsets[2]),
            row(offsets[3]),
        );
        let to: &mut [u8; 32] = (&mut to[..32]).try_into().expect("32 bytes");
        // SAFETY: each load reads one 8-byte array, each store writes 16 of `to`'s 32
        // bytes; NEON is part of every aarch64 target.
        unsafe {
            let load = |r: &[u8; 8]| {
                let x = vld1_u8(r.as_ptr());
                vcombine_u8(x, x)
            };
            let r01 = vreinterpretq_u16_u8(vzip1q_u8(load(r0), load(r1)));
            let r23 = vreinterpretq_u16_u8(vzip1q_u8(load(r2), load(r3)));
            vst1q_u8(to.as_mut_ptr(), vreinterpretq_u8_u16(vzip1q_u16(r01, r23)));
            vst1q_u8(
                to[16..].as_mut_ptr(),
                vreinterpretq_u8_u16(vzip2q_u16(r01, r23)),
            );
        }
        return;
    }
    let mut rows = [[0u8; L]; 4];
    for (row, o) in rows.iter_mut().zip(offsets) {
        copy::<L>(&src[o..], row);
    }
    interleave_rows(&rows, to);
}

/// Four rows of `L` into `L` groups of four. On its own, with arrays of fixed size, the
/// compiler makes a table lookup or two of it (aarch64 `tbl`); inlined into its
/// caller's loop it made 4·`L` byte moves.
#[inline(never)]
fn interleave_rows<const L: usize>(rows: &[[u8; L]; 4], to: &mut [u8]) {
    let to = &mut to[..4 * L];
    for i in 0..L {
        for j in 0..4 {
            to[i * 4 + j] = rows[j][i];
        }
    }
}

/// tract's `Im2Col` for one convolution, with edgetune's copy where it applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackPatches {
    /// tract's op: its output facts are this op's.
    im2col: Im2Col,
    geometry: Geometry,
    format: Box<dyn MMMInputFormat>,
    k: usize,
}

impl PackPatches {
    /// The op for the `Im2Col` node `id`, or `None` where edgetune's copy does not apply
    /// (see the module docs).
    pub fn for_node(model: &TypedModel, id: usize) -> TractResult<Option<PackPatches>> {
        let node = model.node(id);
        let Some(im2col) = node.op_as::<Im2Col>() else {
            return Ok(None);
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let output = model.outlet_fact(OutletId::new(id, 0))?;
        let spec = &im2col.pool_spec;
        let Some(shape) = input.shape.as_concrete() else {
            return Ok(None);
        };
        let Some(packed) = output
            .exotic_fact()
            .and_then(|f| f.downcast_ref::<PackedExoticFact>())
        else {
            return Ok(None);
        };
        // The padding value arrives as an integer scalar (the zero point, an i32 after
        // tract's declutter); tract's op reads its first byte as the input's type, its
        // low byte on the little-endian machines edgetune runs on, which is the value
        // wrapped to a byte.
        let pad_byte = match node.inputs.get(1) {
            None => 0,
            Some(pad) => match model.outlet_fact(*pad)?.konst.as_ref() {
                Some(t) if t.len() == 1 && t.datum_type().unquantized().is_integer() => {
                    match t.cast_to_scalar::<i64>() {
                        Ok(v) => v as u8,
                        Err(_) => return Ok(None),
                    }
                }
                _ => return Ok(None),
            },
        };
        let (packing, r, panel_len, align) =
            if let Some(f) = packed.format.downcast_ref::<PackedFormat>() {
                let r = f.panel_width();
                (
                    Packing::KMajor,
                    r,
                    f.single_panel_len(packed.k),
                    f.alignment(),
                )
            } else if let Some(f) = packed.format.downcast_ref::<PackedI8K4>() {
                (
                    Packing::K4,
                    f.r,
                    f.single_panel_len(packed.k),
                    f.alignment(),
                )
            } else {
                return Ok(None);
            };
        let (batch, dims) = match spec.data_format {
            DataFormat::NCHW => (shape[0], &shape[1..]),
            DataFormat::CHW => (1, shape),
            _ => return Ok(None),
        };
        let (&[channels, height, width], &[kh, kw]) = (dims, &*spec.kernel_shape) else {
            return Ok(None);
        };
        if input.datum_type.size_of() != 1
            || r == 0
            || im2col.group == 0
            || channels % im2col.group != 0
        {
            return Ok(None);
        }
        let pads = spec.computed_padding(&[height, width]);
        let (strides, dilations) = (spec.strides(), spec.dilations());
        if strides.len() != 2 || dilations.len() != 2 {
            return Ok(None);
        }
        let (strides, dilations) = ([strides[0], strides[1]], [dilations[0], dilations[1]]);
        let geometry = Geometry {
            packing,
            r,
            panel_len,
            align,
            batch,
            group: im2col.group,
            channels,
            height,
            width,
            pads: [
                pads[0].pad_before,
                pads[1].pad_before,
                pads[0].pad_after,
                pads[1].pad_after,
            ],
            out_height: pads[0].convoluted,
            out_width: pads[1].convoluted,
            strides,
            offsets: Vec::new(),
            pad_byte,
        };
        let pw = geometry.padded_width();
        let offsets = geometry.offsets([kh, kw], dilations);
        // Every patch lies inside the padded input, and the packing holds what tract's
        // op would write; anything else keeps tract's op.
        let last = |out: usize, stride: usize, kernel: usize, dilation: usize| {
            (out.max(1) - 1) * stride + (kernel.max(1) - 1) * dilation
        };
        let fits = last(geometry.out_height, strides[0], kh, dilations[0])
            < geometry.padded_height()
            && last(geometry.out_width, strides[1], kw, dilations[1]) < pw;
        let needed = match packing {
            Packing::KMajor => offsets.len() * r,
            Packing::K4 => offsets.len().div_ceil(4) * 4 * r,
        };
        if offsets.len() != packed.k
            || !fits
            || panel_len < needed
            || packed.mn != geometry.n().to_dim()
            || kh == 0
            || kw == 0
        {
            return Ok(None);
        }
        Ok(Some(PackPatches {
            im2col: im2col.clone(),
            geometry: Geometry {
                offsets,
                ..geometry
            },
            format: packed.format.clone(),
            k: packed.k,
        }))
    }
}

impl PackPatches {
    /// This copy in `K4` for [`super::product`]'s pairs kernel (the Pi 4's), where it is
    /// tract's k-major in panels of 8: the same op, another layout.
    #[cfg(target_arch = "aarch64")]
    pub(crate) fn in_pairs(&self) -> Option<PackPatches> {
        let g = &self.geometry;
        (g.packing == Packing::KMajor && g.r == 8).then(|| PackPatches {
            geometry: Geometry {
                packing: Packing::K4,
                panel_len: super::product::pairs_panel_len(self.k),
                align: g.align.max(16),
                ..g.clone()
            },
            format: Box::new(PackedI8K4::new(8)),
            ..self.clone()
        })
    }
}

impl Op for PackPatches {
    fn name(&self) -> StaticName {
        "edgetune.PackPatches".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "groups:{} {:?} r:{}",
            self.geometry.group, self.geometry.packing, self.geometry.r
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PackPatches {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let g = &self.geometry;
        let input = &inputs[0];
        let bytes = input.as_bytes();
        ensure!(
            bytes.len() == g.batch * g.channels * g.height * g.width,
            "PackPatches: {} input bytes for {:?}",
            bytes.len(),
            input.shape()
        );
        let padded = g.pad(bytes);
        let (n, per_group) = (g.n(), g.channels / g.group);
        let mut values: TVec<Box<dyn MMMInputValue>> = TVec::with_capacity(g.batch * g.group);
        for image in padded.chunks_exact(g.channels * g.plane()) {
            for group in 0..g.group {
                let src = &image[group * per_group * g.plane()..];
                values.push(packed_matrix(
                    self.format.clone(),
                    self.k,
                    n,
                    g.panel_len,
                    g.align,
                    |dst| g.fill(src, dst),
                )?);
            }
        }
        let output = PackedMatrixStorage::new_batched(&[g.batch, g.group], values)
            .into_tensor(input.datum_type());
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for PackPatches {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.im2col.output_facts(inputs)
    }
}

/// Replaces each `Im2Col` node of an optimized `model` that [`PackPatches`] covers;
/// returns how many.
pub fn pack_patches(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_ops(model, PackPatches::for_node)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::rng::Rng;
    use tract_nnef::tract_core::ops::cnn::{Conv, KernelFormat, PaddingSpec, PoolSpec};

    /// A convolution: input channels, height, width; output channels, groups; kernel,
    /// strides, dilations; padding above, left, below, right; the input's zero point.
    pub(crate) struct Case {
        pub input: [usize; 3],
        pub outputs: usize,
        pub group: usize,
        pub kernel: [usize; 2],
        pub strides: [usize; 2],
        pub dilations: [usize; 2],
        pub pads: [usize; 4],
        zero_point: i32,
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) const fn case(
        input: [usize; 3],
        outputs: usize,
        group: usize,
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        pads: [usize; 4],
        zero_point: i32,
    ) -> Case {
        Case {
            input,
            outputs,
            group,
            kernel,
            strides,
            dilations,
            pads,
            zero_point,
        }
    }

    pub(crate) const CASES: &[Case] = &[
        // ResNet's 3×3: rows of 16, two panels of 8 each.
        case([8, 16, 16], 8, 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 0),
        // Odd sizes, stride 2, a zero point: runs across rows, partial last panel.
        case([3, 13, 11], 5, 1, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], -3),
        // Groups, a kernel that isn't square, dilation, uneven padding.
        case([4, 9, 10], 6, 2, [5, 3], [1, 2], [2, 1], [2, 1, 0, 1], 7),
        // No padding: the input is read as it is.
        case([16, 5, 5], 8, 1, [3, 3], [1, 1], [1, 1], [0, 0, 0, 0], 0),
        // A stride of 3: neither contiguous nor split.
        case([2, 10, 14], 3, 1, [3, 3], [3, 3], [1, 1], [1, 1, 1, 1], -1),
        // A stem: 7×7, stride 2, rows of 16 output pixels.
        case([3, 32, 32], 4, 1, [7, 7], [2, 2], [1, 1], [3, 3, 3, 3], 1),
    ];

    /// `runs` random inputs of `case` through both plans: the same bytes out.
    pub(crate) fn same_outputs(
        case: &Case,
        tracts: &Arc<TypedRunnableModel>,
        ours: &Arc<TypedRunnableModel>,
        rng: &mut Rng,
        runs: usize,
    ) -> TractResult<()> {
        let [c, h, w] = case.input;
        for _ in 0..runs {
            let x: TValue = random_i8(rng, &[1, c, h, w]).into();
            let a = tracts.run(tvec![x.clone()])?.remove(0);
            let b = ours.run(tvec![x])?.remove(0);
            assert_eq!(a.as_bytes(), b.as_bytes(), "input {:?}", case.input);
        }
        Ok(())
    }

    pub(crate) fn random_i8(rng: &mut Rng, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<i8> = (0..n).map(|_| rng.below(256) as i32 as u8 as i8).collect();
        tract_ndarray::ArrayD::from_shape_vec(shape, v)
            .unwrap()
            .into_tensor()
    }

    /// tract's `Conv` of `case`, NCHW, its kernel OIHW, quantized to `q_params`.
    pub(crate) fn conv(case: &Case, q_params: Option<DatumType>) -> Conv {
        Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: case.kernel[..].into(),
                padding: PaddingSpec::Explicit(
                    tvec![case.pads[0], case.pads[1]],
                    tvec![case.pads[2], case.pads[3]],
                ),
                dilations: Some(case.dilations[..].into()),
                strides: Some(case.strides[..].into()),
                input_channels: case.input[0],
                output_channels: case.outputs,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: case.group,
            q_params,
        }
    }

    /// The convolution as a model of tract's quantized `Conv` (i8 in and out).
    fn model(case: &Case, rng: &mut Rng) -> TractResult<TypedModel> {
        model_to(case, rng, i8::datum_type())
    }

    /// The convolution to i8, or to i32 as ONNX's `ConvInteger` (its scales 1).
    pub(crate) fn model_to(case: &Case, rng: &mut Rng, to: DatumType) -> TractResult<TypedModel> {
        let [c, h, w] = case.input;
        let one = to == i32::datum_type();
        let mut model = TypedModel::default();
        let x = model.add_source("x", i8::fact([1, c, h, w]))?;
        let mut konst = |name: &str, t: Tensor| model.add_const(name, t);
        let kernel = konst(
            "kernel",
            random_i8(
                rng,
                &[case.outputs, c / case.group, case.kernel[0], case.kernel[1]],
            ),
        )?;
        // `ConvInteger` has no bias: tract's scalar zero.
        let bias = if one {
            tensor0(0i32)
        } else {
            Tensor::zero::<i32>(&[case.outputs])?
        };
        let bias = konst("bias", bias)?;
        let x0 = konst("x0", tensor0(case.zero_point))?;
        let k0 = konst("k0", tensor0(0i32))?;
        let y0 = konst("y0", tensor0(0i32))?;
        let scale = |s: f32| tensor0(if one { 1.0 } else { s });
        let x_scale = konst("x_scale", scale(0.05))?;
        let k_scale = konst("k_scale", scale(0.02))?;
        let y_scale = konst("y_scale", scale(0.1))?;
        let conv = conv(case, Some(to));
        let y = model.wire_node(
            "conv",
            conv,
            &[x, kernel, bias, x0, x_scale, k0, k_scale, y0, y_scale],
        )?;
        model.select_output_outlets(&y)?;
        Ok(model)
    }

    #[test]
    fn packed_patches_give_the_convolutions_of_tracts_im2col() -> TractResult<()> {
        let mut rng = Rng::new(5);
        for case in CASES {
            let model = model(case, &mut rng)?;
            let tracts = model.clone().into_optimized()?;
            let mut ours = tracts.clone();
            assert_eq!(pack_patches(&mut ours)?, 1, "input {:?}", case.input);
            let (tracts, ours) = (tracts.into_runnable()?, ours.into_runnable()?);
            same_outputs(case, &tracts, &ours, &mut rng, 3)?;
        }
        Ok(())
    }

    /// The whole plan (all of edgetune's steps) against tract's, on these convolutions and
    /// on 1×1 ones, which become matrix products over one row and packed columns where
    /// the host's kernel packs as the Pi 5's does.
    #[test]
    fn edgetunes_plan_gives_tracts_outputs_bit_for_bit() -> TractResult<()> {
        let mut rng = Rng::new(8);
        let pointwise = |input, outputs| case(input, outputs, 1, [1, 1], [1, 1], [1, 1], [0; 4], 2);
        let pointwise = [pointwise([8, 16, 16], 48), pointwise([24, 5, 3], 8)];
        for case in CASES.iter().chain(&pointwise) {
            let model = model(case, &mut rng)?;
            let tracts = model.clone().into_optimized()?.into_runnable()?;
            let (ours, steps) = crate::plan::optimize_steps(model)?;
            if case.kernel == [1, 1] {
                assert_eq!(steps.one_row, 1, "input {:?}", case.input);
            }
            same_outputs(case, &tracts, &ours.into_runnable()?, &mut rng, 2)?;
        }
        Ok(())
    }

    /// Every value of every patch where its packing puts it, and zeros everywhere else,
    /// for both packings and panel widths the host's kernel may not use.
    #[test]
    fn each_packing_holds_every_patch_value_where_it_belongs() {
        let mut rng = Rng::new(9);
        for case in CASES {
            let [channels, height, width] = case.input;
            let [pt, pl, pb, pr] = case.pads;
            let out = |size: usize, pads: usize, axis: usize| {
                (size + pads - (case.kernel[axis] - 1) * case.dilations[axis] - 1)
                    / case.strides[axis]
                    + 1
            };
            let (oh, ow) = (out(height, pt + pb, 0), out(width, pl + pr, 1));
            let input: Vec<u8> = (0..channels * height * width)
                .map(|_| rng.below(256) as u8)
                .collect();
            for packing in [Packing::KMajor, Packing::K4] {
                for r in [4, 8, 12] {
                    let mut g = Geometry {
                        packing,
                        r,
                        panel_len: 0,
                        align: 16,
                        batch: 1,
                        group: case.group,
                        channels,
                        height,
                        width,
                        pads: case.pads,
                        out_height: oh,
                        out_width: ow,
                        strides: case.strides,
                        offsets: Vec::new(),
                        pad_byte: case.zero_point as u8,
                    };
                    g.offsets = g.offsets(case.kernel, case.dilations);
                    let k = g.offsets.len();
                    g.panel_len = match packing {
                        Packing::KMajor => (k + 1) * r,
                        Packing::K4 => k.div_ceil(4) * 4 * r,
                    };
                    let padded = g.pad(&input);
                    let per_group = channels / case.group;
                    for group in 0..case.group {
                        let mut dst = vec![0u8; g.panels() * g.panel_len];
                        g.fill(&padded[group * per_group * g.plane()..], &mut dst);
                        let mut expected = vec![0u8; dst.len()];
                        for n in 0..oh * ow {
                            let (oy, ox) = (n / ow, n % ow);
                            for kk in 0..k {
                                let c = group * per_group + kk / (case.kernel[0] * case.kernel[1]);
                                let ky = kk / case.kernel[1] % case.kernel[0];
                                let kx = kk % case.kernel[1];
                                let y = (oy * case.strides[0] + ky * case.dilations[0]) as isize
                                    - pt as isize;
                                let x = (ox * case.strides[1] + kx * case.dilations[1]) as isize
                                    - pl as isize;
                                let value = if (0..height as isize).contains(&y)
                                    && (0..width as isize).contains(&x)
                                {
                                    input[(c * height + y as usize) * width + x as usize]
                                } else {
                                    case.zero_point as u8
                                };
                                let (p, lane) = (n / r, n % r);
                                let at = p * g.panel_len
                                    + match packing {
                                        Packing::KMajor => kk * r + lane,
                                        Packing::K4 => kk / 4 * 4 * r + lane * 4 + kk % 4,
                                    };
                                expected[at] = value;
                            }
                        }
                        assert_eq!(dst, expected, "{packing:?} r {r}, input {:?}", case.input);
                    }
                }
            }
        }
    }
}
