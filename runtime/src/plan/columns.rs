//! The activations of an integer matrix product packed for the integer kernel:
//! edgetune's packing in place of tract's where it applies.
//!
//! A 1×1 convolution becomes a matrix product in tract, and so does `MatMul`: the
//! weights are packed once, at load, but the activations at every inference, by an
//! `OptMatMulPack` node. For the Pi 5's dot-product kernel that packing is `PackedI8K4`
//! (4 k's of a column side by side), written by `PackedI8K4::pack_view` one byte at a
//! time: 0.56 M of the 5.67 M aarch64 instructions of an int8 MobileNetV2 inference on
//! the Pi 5 CPU model (`scripts/iprofile.sh`), where its integer products cost 0.38 M.
//! [`PackColumns`] writes the same bytes eight columns at a time where the columns are
//! contiguous (a convolution's pixels: [`super::patches`]'s interleave, table lookups on
//! aarch64) and four k's at a time where the k's are (a `MatMul`'s rows, and the pixels
//! of a map tract keeps channels last). On aarch64 it goes further: sixteen contiguous
//! columns (two panels) at a time by two rounds of NEON zips, and sixteen contiguous k's
//! of a panel at a time by two 4×4 transposes of 4-byte words; that took MobileNetV2's
//! packing from 0.33 M to 0.12 M instructions on a Pi 5 (most of its products read maps
//! kept channels last). It writes tract's plain k-major packing too (the Pi 4's kernel),
//! eight contiguous columns at a time, where tract's went through a generic strided
//! loop, and on aarch64 eight contiguous k's of a panel at a time by an 8×8 transpose
//! of bytes (tract's `pack_k_major` took 0.14 M of MobileNetV2 on a Pi 4, 0.05 M so).
//!
//! What it does not cover keeps tract's op: other packings, a k-major packing of
//! contiguous k's elsewhere than on aarch64 (tract transposes those in vector code),
//! elements wider than a byte, shapes not known at load.

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::matmul::pack::OptMatMulPack;
use tract_nnef::tract_core::tract_linalg::mmm::{
    MMMInputFormat, MMMInputValue, PackedMatrixStorage,
};
use tract_nnef::tract_core::tract_linalg::pack::{PackedFormat, PackedI8K4};

use super::patches::{copy, interleave};
use super::{Packing, packed_matrix};
use tract_nnef::tract_core::ndarray::Dimension;

/// The input's matrices, concrete: each `k` rows of `n` columns, `k_stride` and
/// `n_stride` bytes apart, starting at one of `starts` (one matrix for each coordinate
/// of the other axes, in tract's order), packed in panels of `r` columns `panel_len`
/// bytes apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Layout {
    pub packing: Packing,
    pub starts: Vec<usize>,
    pub k: usize,
    pub n: usize,
    pub k_stride: usize,
    pub n_stride: usize,
    pub r: usize,
    pub panel_len: usize,
    pub align: usize,
}

impl Layout {
    /// Writes `src` into the zeroed `dst` in the layout of `packing` (see [`Packing`]).
    #[inline(never)]
    pub fn pack(&self, src: &[u8], dst: &mut [u8]) {
        let r = self.r;
        let mut panels = dst.chunks_exact_mut(self.panel_len).enumerate();
        // aarch64 takes a second panel from the iterator inside the loop.
        #[cfg_attr(not(target_arch = "aarch64"), allow(clippy::while_let_on_iterator))]
        while let Some((p, panel)) = panels.next() {
            let first = p * r;
            let lanes = r.min(self.n - first);
            match self.packing {
                Packing::KMajor => {
                    let src = &src[first * self.n_stride..];
                    // A panel of contiguous k's, 8 k's at a time, where NEON can.
                    #[cfg(target_arch = "aarch64")]
                    if (r, self.k_stride) == (8, 1) && self.k >= 8 {
                        k_major_bytes(src, self.n_stride, lanes, self.k / 8, panel);
                        self.k_major_panel(src, panel, lanes, self.k / 8 * 8);
                        continue;
                    }
                    self.k_major_panel(src, panel, lanes, 0)
                }
                Packing::K4 => {
                    // Two whole panels of contiguous columns at once, where NEON can.
                    #[cfg(target_arch = "aarch64")]
                    if (r, self.n_stride) == (8, 1)
                        && first + 16 <= self.n
                        && self.k >= 4
                        && let Some((_, next)) = panels.next()
                    {
                        let blocks = self.k / 4;
                        k4_pairs(&src[first..], self.k_stride, blocks, panel, next);
                        self.k4_panel(&src[first..], panel, 8, blocks);
                        self.k4_panel(&src[first + 8..], next, 8, blocks);
                        continue;
                    }
                    // A whole panel of contiguous k's, 16 k's at a time, where NEON can.
                    #[cfg(target_arch = "aarch64")]
                    if (r, lanes, self.k_stride) == (8, 8, 1) && self.k >= 16 {
                        let src = &src[first * self.n_stride..];
                        k4_words(src, self.n_stride, self.k / 16, panel);
                        self.k4_panel(src, panel, 8, self.k / 16 * 4);
                        continue;
                    }
                    self.k4_panel(&src[first * self.n_stride..], panel, lanes, 0)
                }
            }
        }
    }

    /// One panel of `lanes` columns from `src` (its first column), k-major, from k
    /// `from` on.
    fn k_major_panel(&self, src: &[u8], panel: &mut [u8], lanes: usize, from: usize) {
        let (r, ks, ns) = (self.r, self.k_stride, self.n_stride);
        let rows = panel[from * r..].chunks_exact_mut(r).take(self.k - from);
        for (k, row) in (from..).zip(rows) {
            if (lanes, ns) == (8, 1) {
                copy::<8>(&src[k * ks..], row);
            } else {
                for (lane, t) in row.iter_mut().take(lanes).enumerate() {
                    *t = src[lane * ns + k * ks];
                }
            }
        }
    }

    /// One panel of `lanes` columns from `src` (its first column), 4 k's inner, from the
    /// block of 4 k's `from` on.
    fn k4_panel(&self, src: &[u8], panel: &mut [u8], lanes: usize, from: usize) {
        let (r, ks, ns) = (self.r, self.k_stride, self.n_stride);
        let blocks = panel.chunks_exact_mut(4 * r).take(self.k.div_ceil(4));
        for (kb, block) in blocks.enumerate().skip(from) {
            let k0 = kb * 4;
            let ks4 = 4.min(self.k - k0);
            if (lanes, ks4, ns) == (8, 4, 1) {
                let o = [k0 * ks, (k0 + 1) * ks, (k0 + 2) * ks, (k0 + 3) * ks];
                interleave::<8>(src, o, block);
            } else if (ks4, ks) == (4, 1) {
                for (lane, to) in block.chunks_exact_mut(4).take(lanes).enumerate() {
                    let at = lane * ns + k0;
                    to.copy_from_slice(&src[at..at + 4]);
                }
            } else {
                for (lane, to) in block.chunks_exact_mut(4).take(lanes).enumerate() {
                    for (j, t) in to.iter_mut().take(ks4).enumerate() {
                        *t = src[lane * ns + (k0 + j) * ks];
                    }
                }
            }
        }
    }
}

/// The first `blocks` blocks of 4 k's of two panels of 8 columns, `src` the first
/// column of the first, k's `k_stride` bytes apart: for each block, the four rows of 16
/// columns loaded and interleaved by two rounds of zips (bytes, then pairs of bytes),
/// the first 8 columns' 32 bytes into `first`, the next 8 into `second`.
#[cfg(target_arch = "aarch64")]
fn k4_pairs(src: &[u8], k_stride: usize, blocks: usize, first: &mut [u8], second: &mut [u8]) {
    use std::arch::aarch64::*;
    let row = |k: usize| -> &[u8; 16] { src[k * k_stride..][..16].try_into().expect("16 bytes") };
    for (kb, (a, b)) in first
        .chunks_exact_mut(32)
        .zip(second.chunks_exact_mut(32))
        .take(blocks)
        .enumerate()
    {
        let k = 4 * kb;
        let (r0, r1, r2, r3) = (row(k), row(k + 1), row(k + 2), row(k + 3));
        // SAFETY: each load reads one 16-byte array, each store writes 16 bytes of a
        // 32-byte block; NEON is part of every aarch64 target.
        unsafe {
            let (r0, r1) = (vld1q_u8(r0.as_ptr()), vld1q_u8(r1.as_ptr()));
            let (r2, r3) = (vld1q_u8(r2.as_ptr()), vld1q_u8(r3.as_ptr()));
            // (k0, k1) and (k2, k3) of each column, columns 0–7 then 8–15.
            let (low01, high01) = (vzip1q_u8(r0, r1), vzip2q_u8(r0, r1));
            let (low23, high23) = (vzip1q_u8(r2, r3), vzip2q_u8(r2, r3));
            let pairs = |x: uint8x16_t| vreinterpretq_u16_u8(x);
            let bytes = |x: uint16x8_t| vreinterpretq_u8_u16(x);
            let (l01, l23) = (pairs(low01), pairs(low23));
            let (h01, h23) = (pairs(high01), pairs(high23));
            vst1q_u8(a.as_mut_ptr(), bytes(vzip1q_u16(l01, l23)));
            vst1q_u8(a[16..].as_mut_ptr(), bytes(vzip2q_u16(l01, l23)));
            vst1q_u8(b.as_mut_ptr(), bytes(vzip1q_u16(h01, h23)));
            vst1q_u8(b[16..].as_mut_ptr(), bytes(vzip2q_u16(h01, h23)));
        }
    }
}

/// The first `groups` groups of 16 k's (4 blocks) of a panel of 8 columns whose k's are
/// contiguous, `src` the first column, columns `n_stride` bytes apart: each column's 16
/// bytes loaded as 4 words of 4 k's, then the two 4×4 transposes of words (lanes 0–3 and
/// 4–7) give each block's two halves.
#[cfg(target_arch = "aarch64")]
fn k4_words(src: &[u8], n_stride: usize, groups: usize, panel: &mut [u8]) {
    use std::arch::aarch64::*;
    for (g, blocks) in panel.chunks_exact_mut(4 * 32).take(groups).enumerate() {
        let word = |lane: usize| -> &[u8; 16] {
            src[lane * n_stride + 16 * g..][..16]
                .try_into()
                .expect("16 bytes")
        };
        // SAFETY: each load reads one 16-byte array, each store writes 16 bytes of the
        // group's 128; NEON is part of every aarch64 target.
        unsafe {
            let load = |lane: usize| vreinterpretq_u32_u8(vld1q_u8(word(lane).as_ptr()));
            // Words j of 4 lanes: [lane 0's, lane 1's, lane 2's, lane 3's].
            let transpose = |q: [uint32x4_t; 4]| -> [uint8x16_t; 4] {
                let (t0, t1) = (vtrn1q_u32(q[0], q[1]), vtrn2q_u32(q[0], q[1]));
                let (t2, t3) = (vtrn1q_u32(q[2], q[3]), vtrn2q_u32(q[2], q[3]));
                let u = |x: uint32x4_t| vreinterpretq_u64_u32(x);
                let b = |x: uint64x2_t| vreinterpretq_u8_u64(x);
                [
                    b(vtrn1q_u64(u(t0), u(t2))),
                    b(vtrn1q_u64(u(t1), u(t3))),
                    b(vtrn2q_u64(u(t0), u(t2))),
                    b(vtrn2q_u64(u(t1), u(t3))),
                ]
            };
            let low = transpose([load(0), load(1), load(2), load(3)]);
            let high = transpose([load(4), load(5), load(6), load(7)]);
            for (block, (l, h)) in blocks.chunks_exact_mut(32).zip(low.into_iter().zip(high)) {
                vst1q_u8(block.as_mut_ptr(), l);
                vst1q_u8(block[16..].as_mut_ptr(), h);
            }
        }
    }
}

/// The first `blocks` blocks of 8 k's of a k-major panel of `lanes` (at most 8) columns
/// whose k's are contiguous, `src` the first column, columns `n_stride` bytes apart:
/// each column's 8 k's loaded as one 8-byte vector (zeros past `lanes`, the panel's
/// padding), then an 8×8 transpose of bytes (three rounds of `trn`: bytes, pairs,
/// quadruples) gives each k's row of 8 columns.
#[cfg(target_arch = "aarch64")]
fn k_major_bytes(src: &[u8], n_stride: usize, lanes: usize, blocks: usize, panel: &mut [u8]) {
    use std::arch::aarch64::*;
    for (b, rows) in panel.chunks_exact_mut(64).take(blocks).enumerate() {
        let column = |lane: usize| -> &[u8; 8] {
            src[lane * n_stride + 8 * b..][..8]
                .try_into()
                .expect("8 bytes")
        };
        // SAFETY: each load reads one 8-byte array, each store writes 8 bytes of the
        // block's 64; NEON is part of every aarch64 target.
        unsafe {
            let a: [uint8x8_t; 8] = std::array::from_fn(|lane| {
                if lane < lanes {
                    vld1_u8(column(lane).as_ptr())
                } else {
                    vdup_n_u8(0)
                }
            });
            // Bytes: lanes 2i and 2i+1 side by side, even k's, then odd k's.
            let b8 = |x, y| (vtrn1_u8(x, y), vtrn2_u8(x, y));
            let (b0, b1) = b8(a[0], a[1]);
            let (b2, b3) = b8(a[2], a[3]);
            let (b4, b5) = b8(a[4], a[5]);
            let (b6, b7) = b8(a[6], a[7]);
            // Pairs: 4 lanes of k's j and j + 4.
            let h = |x: uint8x8_t| vreinterpret_u16_u8(x);
            let b16 = |x, y| (vtrn1_u16(h(x), h(y)), vtrn2_u16(h(x), h(y)));
            let (c0, c2) = b16(b0, b2); // k 0 and 4, k 2 and 6 (lanes 0-3)
            let (c1, c3) = b16(b1, b3); // k 1 and 5, k 3 and 7
            let (c4, c6) = b16(b4, b6); // the same for lanes 4-7
            let (c5, c7) = b16(b5, b7);
            // Quadruples: all 8 lanes of one k.
            let w = |x: uint16x4_t| vreinterpret_u32_u16(x);
            let b32 = |x, y| {
                let (l, r) = (vtrn1_u32(w(x), w(y)), vtrn2_u32(w(x), w(y)));
                (vreinterpret_u8_u32(l), vreinterpret_u8_u32(r))
            };
            let (k0, k4) = b32(c0, c4);
            let (k1, k5) = b32(c1, c5);
            let (k2, k6) = b32(c2, c6);
            let (k3, k7) = b32(c3, c7);
            for (row, k) in rows
                .chunks_exact_mut(8)
                .zip([k0, k1, k2, k3, k4, k5, k6, k7])
            {
                vst1_u8(row.as_mut_ptr(), k);
            }
        }
    }
}

/// tract's `OptMatMulPack` for one input, with edgetune's packing where it applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackColumns {
    /// tract's op: its output facts are this op's.
    pack: OptMatMulPack,
    layout: Layout,
    format: Box<dyn MMMInputFormat>,
}

impl PackColumns {
    /// The op for the `OptMatMulPack` node `id`, or `None` where edgetune's packing does
    /// not apply (see the module docs).
    pub fn for_node(model: &TypedModel, id: usize) -> TractResult<Option<PackColumns>> {
        let node = model.node(id);
        let Some(pack) = node.op_as::<OptMatMulPack>() else {
            return Ok(None);
        };
        let Some((input, output, shape, packed)) = super::packing_facts(model, id)? else {
            return Ok(None);
        };
        // Which input axes are k and the columns: tract's op maps them as 'K' and 'M'.
        let Ok(mapping) = pack.axes_mapping(&[input], &[output]) else {
            return Ok(None);
        };
        let axis = |repr: char| -> Option<usize> {
            mapping
                .iter_all_axes()
                .find(|a| a.repr == repr)
                .and_then(|a| a.inputs[0].first().copied())
        };
        let (Some(k_axis), Some(n_axis)) = (axis('K'), axis('M')) else {
            return Ok(None);
        };
        let (k, n) = (shape[k_axis], shape[n_axis]);
        // tract's ModePicker: one packer, or one for a single column and one for more.
        let packer = match packed.packers.len() {
            1 => &packed.packers[0],
            2 => &packed.packers[(n > 1) as usize],
            _ => return Ok(None),
        };
        let (packing, r, panel_len, align) = if let Some(f) = packer.downcast_ref::<PackedFormat>()
        {
            let panel_len = f.single_panel_len(k);
            (Packing::KMajor, f.r, panel_len, f.alignment())
        } else if let Some(f) = packer.downcast_ref::<PackedI8K4>() {
            (Packing::K4, f.r, f.single_panel_len(k), f.alignment())
        } else {
            return Ok(None);
        };
        if input.datum_type.size_of() != 1 || r == 0 || k_axis == n_axis {
            return Ok(None);
        }
        // tract's k-major packing of a matrix whose k's are contiguous is a transposition
        // in vector code, which this beats only with aarch64's 8×8 transposes (panels of
        // 8 columns, the Pi 4's kernel).
        let strides = Tensor::natural_strides(shape);
        let transposes = cfg!(target_arch = "aarch64") && (r, strides[k_axis]) == (8, 1);
        if packing == Packing::KMajor && strides[n_axis] != 1 && !transposes {
            return Ok(None);
        }
        // One matrix for each coordinate of the other axes, in the order tract's op
        // visits them (`indices` over the shape with k and n set to 1).
        let mut others: TVec<usize> = shape.into();
        others[k_axis] = 1;
        others[n_axis] = 1;
        let starts = tract_ndarray::indices(&*others)
            .into_iter()
            .map(|coord| {
                coord
                    .slice()
                    .iter()
                    .zip(&strides)
                    .map(|(c, s)| c * *s as usize)
                    .sum()
            })
            .collect();
        Ok(Some(PackColumns {
            pack: pack.clone(),
            layout: Layout {
                packing,
                starts,
                k,
                n,
                k_stride: strides[k_axis] as usize,
                n_stride: strides[n_axis] as usize,
                r,
                panel_len,
                align,
            },
            format: packer.clone(),
        }))
    }
}

impl PackColumns {
    /// This packing in `K4` for [`super::product`]'s pairs kernel (the Pi 4's), where
    /// it is tract's k-major in panels of 8: the same op, another layout.
    #[cfg(target_arch = "aarch64")]
    pub(crate) fn in_pairs(&self) -> Option<PackColumns> {
        let l = &self.layout;
        (l.packing == Packing::KMajor && l.r == 8).then(|| PackColumns {
            layout: Layout {
                packing: Packing::K4,
                panel_len: super::product::pairs_panel_len(l.k),
                align: l.align.max(16),
                ..l.clone()
            },
            format: Box::new(PackedI8K4::new(8)),
            ..self.clone()
        })
    }
}

impl Op for PackColumns {
    fn name(&self) -> StaticName {
        "edgetune.PackColumns".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}", self.layout)])
    }

    op_as_typed_op!();
}

impl EvalOp for PackColumns {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let l = &self.layout;
        let input = &inputs[0];
        let bytes = input.as_bytes();
        ensure!(
            bytes.len() == l.starts.len() * l.k * l.n,
            "PackColumns: {} input bytes for {:?}",
            bytes.len(),
            input.shape()
        );
        let mut values: TVec<Box<dyn MMMInputValue>> = TVec::with_capacity(l.starts.len());
        for &start in &l.starts {
            values.push(packed_matrix(
                self.format.clone(),
                l.k,
                l.n,
                l.panel_len,
                l.align,
                |dst| l.pack(&bytes[start..], dst),
            )?);
        }
        let shape: TVec<usize> = self.pack.output_shape(input.shape());
        let output =
            PackedMatrixStorage::new_batched(&shape, values).into_tensor(input.datum_type());
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for PackColumns {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.pack.output_facts(inputs)
    }
}

/// Replaces each `OptMatMulPack` node of an optimized `model` that [`PackColumns`] covers;
/// returns how many.
pub fn pack_columns(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_ops(model, PackColumns::for_node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Every value where its packing puts it (tract's `pack_view` for `PackedI8K4`:
    /// `out[(k/4)·r·4 + m·4 + k%4] = src[m, k]`, panel by panel; its `pack_t` for
    /// `PackedFormat`: `out[k·r + m]`) and zeros elsewhere, for columns contiguous (a
    /// convolution's pixels), k's contiguous (a `MatMul`'s rows), sizes that fill no
    /// panel or block, and panel widths the host may not use.
    #[test]
    fn columns_are_packed_where_tract_puts_them() {
        let mut rng = Rng::new(3);
        for (k, n) in [
            (16usize, 64usize),
            (24, 40),
            (7, 13),
            (4, 8),
            (1, 1),
            (33, 9),
            // Pairs of whole panels (aarch64's zips), then a last block of k's cut short;
            // groups of 16 contiguous k's (its transposes) and the k's after them.
            (10, 32),
            (7, 41),
            (48, 17),
            (37, 24),
        ] {
            let src: Vec<u8> = (0..k * n).map(|_| rng.below(256) as u8).collect();
            for columns_contiguous in [true, false] {
                let (k_stride, n_stride) = if columns_contiguous { (n, 1) } else { (1, k) };
                for (packing, r) in [4, 8, 12]
                    .into_iter()
                    .flat_map(|r| [(Packing::KMajor, r), (Packing::K4, r)])
                {
                    let panel_len = match packing {
                        // One record of end padding, as tract's packing has.
                        Packing::KMajor => (k + 1) * r,
                        Packing::K4 => k.div_ceil(4) * 4 * r,
                    };
                    let l = Layout {
                        packing,
                        starts: vec![0],
                        k,
                        n,
                        k_stride,
                        n_stride,
                        r,
                        panel_len,
                        align: 16,
                    };
                    let mut dst = vec![0u8; n.div_ceil(r) * panel_len];
                    l.pack(&src, &mut dst);
                    let mut expected = vec![0u8; dst.len()];
                    for m in 0..n {
                        for kk in 0..k {
                            let at = m / r * panel_len
                                + match packing {
                                    Packing::KMajor => kk * r + m % r,
                                    Packing::K4 => kk / 4 * 4 * r + m % r * 4 + kk % 4,
                                };
                            expected[at] = src[kk * k_stride + m * n_stride];
                        }
                    }
                    assert_eq!(
                        dst, expected,
                        "{packing:?} k {k} n {n} r {r} {columns_contiguous}"
                    );
                }
            }
        }
    }
}
