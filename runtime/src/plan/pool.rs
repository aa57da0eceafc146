//! Max pooling over a padded copy of each plane, a whole row of outputs per tap:
//! edgetune's in place of tract's `OptMaxPool` where it applies.
//!
//! tract 0.23.9 pools a 2-D map one output row at a time (`try_row_spans`), folding a
//! horizontal stride through `step_by`, one value per iteration: the 3×3, stride 2 max
//! pool after ResNet18's first convolution was 0.23 M of its 2.31 M aarch64
//! instructions (int8, 64×64) on the Pi 5 CPU model (`scripts/iprofile.sh`), about 12
//! per tap; 0.10 M with [`MaxPoolRows`]. With the channels first, each plane is copied
//! into a buffer padded with `T::min_value()`, the value tract starts each output from
//! and never replaces by it, so that every output row folds all its taps over a whole
//! number of vectors (a stride of 2 as NEON's even/odd loads on aarch64). The taps fold
//! in tract's order with its comparison, so both pick the same values, the same zero of
//! two signed ones included. With the channels last it walks tract's spans. What it does
//! not cover keeps tract's op: index outputs, other than two spatial axes, element types
//! other than f32, i8 and u8, shapes not known at load.

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::cnn::OptMaxPool;

/// A pool's geometry, concrete, in the terms of the row walk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Rows {
    /// Planes (images × channels with the channels first, images with them last).
    planes: usize,
    /// Input height and width, values per pixel (1 with the channels first).
    height: usize,
    width: usize,
    pixel: usize,
    out_height: usize,
    out_width: usize,
    kernel_height: usize,
    /// Vertical stride and dilation, padding above, horizontal stride.
    stride_y: usize,
    dilation_y: usize,
    pad_top: usize,
    stride_x: usize,
    /// Kernel width, horizontal dilation, padding on the left.
    kernel_width: usize,
    dilation_x: usize,
    pad_left: usize,
    /// For each kernel column that lands in the image: the output columns `lo..hi` it
    /// reaches and the input column of `lo`'s tap.
    spans: Vec<(usize, usize, usize)>,
}

impl Rows {
    fn of(pool: &OptMaxPool, shape: &[usize]) -> TractResult<Option<Rows>> {
        let geo = pool.geometry.to_concrete(shape)?;
        let patch = &geo.patch;
        let ish = &geo.input_shape;
        if patch.rank() != 2 {
            return Ok(None);
        }
        let (h, w, c) = (ish.hw_dims()[0], ish.hw_dims()[1], *ish.c());
        let px = if pool.pool_spec.data_format.c_is_last() {
            c
        } else {
            1
        };
        let contiguous = if px == 1 {
            *ish.w_stride() == 1 && *ish.h_stride() == w && *ish.c_stride() == h * w
        } else {
            *ish.c_stride() == 1 && *ish.w_stride() == c && *ish.h_stride() == w * c
        };
        let total: usize = shape.iter().product();
        if !contiguous || h * w * px == 0 || !total.is_multiple_of(h * w * px) {
            return Ok(None);
        }
        let spec = &patch.spec;
        let (kw, sw, dw) = (spec.kernel_shape[1], spec.strides[1], spec.dilations[1]);
        let (ow, pl) = (patch.output_shape[1], patch.pad_before[1] as isize);
        if sw == 0 || patch.output_shape.contains(&0) {
            return Ok(None);
        }
        // tract's spans, in its order.
        let spans = (0..kw)
            .filter_map(|kx| {
                let offset = (kx * dw) as isize - pl;
                let last = w as isize - 1 - offset;
                if last < 0 {
                    return None;
                }
                let lo = if offset >= 0 {
                    0
                } else {
                    (-offset as usize).div_ceil(sw)
                };
                let hi = (last as usize / sw + 1).min(ow);
                (lo < hi).then(|| (lo, hi, ((lo * sw) as isize + offset) as usize))
            })
            .collect();
        Ok(Some(Rows {
            planes: total / (h * w * px),
            height: h,
            width: w,
            pixel: px,
            out_height: patch.output_shape[0],
            out_width: ow,
            kernel_height: spec.kernel_shape[0],
            stride_y: spec.strides[0],
            dilation_y: spec.dilations[0],
            pad_top: patch.pad_before[0],
            stride_x: sw,
            kernel_width: kw,
            dilation_x: dw,
            pad_left: patch.pad_before[1],
            spans,
        }))
    }

    /// Pools `input` (the planes one after the other) into `output`.
    fn run<T: Pooled>(&self, input: &[T], output: &mut [T]) {
        if self.pixel == 1 {
            self.run_padded(input, output)
        } else {
            self.run_spans(input, output)
        }
    }

    /// With the channels first: each plane copied once into a buffer whose padding is
    /// `T::min_value()` (from which no tap is ever taken, as tract skips it), then each
    /// output row folded over all its taps, a whole number of vectors wide.
    fn run_padded<T: Pooled>(&self, input: &[T], output: &mut [T]) {
        let (h, w, oh, ow) = (self.height, self.width, self.out_height, self.out_width);
        let (sy, dy, sx, dx) = (
            self.stride_y,
            self.dilation_y,
            self.stride_x,
            self.dilation_x,
        );
        let (kh, kw) = (self.kernel_height, self.kernel_width);
        let wide = ow.div_ceil(8) * 8;
        // Every tap of every (wide) output column, and the second of each pair.
        let pw = ((wide - 1) * sx + (kw - 1) * dx + 2).max(self.pad_left + w);
        let ph = ((oh - 1) * sy + (kh - 1) * dy + 1).max(self.pad_top + h);
        let mut padded = vec![T::min_value(); ph * pw];
        let mut row = vec![T::min_value(); wide];
        for (plane, out_plane) in input
            .chunks_exact(h * w)
            .zip(output.chunks_exact_mut(oh * ow))
        {
            for (y, from) in plane.chunks_exact(w).enumerate() {
                padded[(self.pad_top + y) * pw + self.pad_left..][..w].copy_from_slice(from);
            }
            for (oy, out_row) in out_plane.chunks_exact_mut(ow).enumerate() {
                row.fill(T::min_value());
                for ky in 0..kh {
                    let taps = &padded[(oy * sy + ky * dy) * pw..][..pw];
                    for kx in 0..kw {
                        fold_strided(&mut row, &taps[kx * dx..], sx);
                    }
                }
                out_row.copy_from_slice(&row[..ow]);
            }
        }
    }

    /// tract's walk, over the spans of output columns each kernel column reaches.
    fn run_spans<T: Pooled>(&self, input: &[T], output: &mut [T]) {
        let (w, px, sw) = (self.width, self.pixel, self.stride_x);
        output.fill(T::min_value());
        let image_len = self.height * w * px;
        let out_len = self.out_height * self.out_width * px;
        for (image, out_image) in input
            .chunks_exact(image_len)
            .zip(output.chunks_exact_mut(out_len))
        {
            for (oy, row) in out_image.chunks_exact_mut(self.out_width * px).enumerate() {
                for ky in 0..self.kernel_height {
                    let Some(iy) = (oy * self.stride_y + ky * self.dilation_y)
                        .checked_sub(self.pad_top)
                        .filter(|&iy| iy < self.height)
                    else {
                        continue;
                    };
                    let irow = &image[iy * w * px..][..w * px];
                    for &(lo, hi, start) in &self.spans {
                        let (row, taps) = (&mut row[lo * px..hi * px], &irow[start * px..]);
                        if px == 1 {
                            fold_strided(row, taps, sw);
                        } else {
                            for (pixel, taps) in row.chunks_exact_mut(px).zip(taps.chunks(sw * px))
                            {
                                fold(pixel, taps.iter());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// tract's fold: the larger of the two, the first where neither is.
#[inline(always)]
fn max<T: Copy + PartialOrd>(o: T, v: T) -> T {
    if o < v { v } else { o }
}

fn fold<'a, T: Copy + PartialOrd + 'a>(row: &mut [T], taps: impl Iterator<Item = &'a T>) {
    for (o, &v) in row.iter_mut().zip(taps) {
        *o = max(*o, v);
    }
}

/// The element types pooled here; on aarch64 a stride of 2 folds in vector registers.
trait Pooled: Datum + Copy + PartialOrd + tract_num_traits::Bounded {
    /// Folds `taps[2i]` into `row[i]` for the first outputs whose pair of taps
    /// `taps` holds in full, as many as a whole number of vectors; returns how many.
    fn fold_pairs(_row: &mut [Self], _taps: &[Self]) -> usize {
        0
    }
}

/// `Pooled` for a type, with the NEON fold of `lanes` outputs at a time on aarch64:
/// the even taps of a pair load (`ld2`), then the larger where tract takes it.
macro_rules! pooled {
    ($t:ty, $lanes:literal, $ld2:ident, $ld1:ident, $st1:ident, $bsl:ident, $clt:ident) => {
        #[cfg(target_arch = "aarch64")]
        impl Pooled for $t {
            fn fold_pairs(row: &mut [$t], taps: &[$t]) -> usize {
                use std::arch::aarch64::*;
                let n = row.len().min(taps.len() / 2) / $lanes * $lanes;
                for (o, t) in row[..n]
                    .chunks_exact_mut($lanes)
                    .zip(taps.chunks_exact(2 * $lanes))
                {
                    // SAFETY: `o` holds one vector and `t` two, which are all these read
                    // and write; NEON is part of every aarch64 target.
                    unsafe {
                        let v = $ld2(t.as_ptr()).0;
                        let x = $ld1(o.as_ptr());
                        $st1(o.as_mut_ptr(), $bsl($clt(x, v), v, x));
                    }
                }
                n
            }
        }

        #[cfg(not(target_arch = "aarch64"))]
        impl Pooled for $t {}
    };
}

pooled!(
    f32, 4, vld2q_f32, vld1q_f32, vst1q_f32, vbslq_f32, vcltq_f32
);
pooled!(i8, 8, vld2_s8, vld1_s8, vst1_s8, vbsl_s8, vclt_s8);
pooled!(u8, 8, vld2_u8, vld1_u8, vst1_u8, vbsl_u8, vclt_u8);

/// Folds `taps[i·stride]` into `row[i]`; `taps` reaches each of them.
fn fold_strided<T: Pooled>(row: &mut [T], taps: &[T], stride: usize) {
    match stride {
        1 => fold(row, taps.iter()),
        2 => {
            let done = T::fold_pairs(row, taps);
            fold(&mut row[done..], taps[2 * done..].iter().step_by(2));
        }
        _ => fold(row, taps.iter().step_by(stride)),
    }
}

/// tract's `OptMaxPool` for one concrete input shape, walked one output row at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MaxPoolRows {
    /// tract's op: its output facts are this op's, and it runs an input of another size.
    pool: OptMaxPool,
    rows: Rows,
    /// The input's length and the output's shape.
    input_len: usize,
    output_shape: TVec<usize>,
}

impl MaxPoolRows {
    /// The op for the `OptMaxPool` node `id`, or `None` where it does not apply (see the
    /// module docs).
    pub fn for_node(model: &TypedModel, id: usize) -> TractResult<Option<MaxPoolRows>> {
        let node = model.node(id);
        let Some(pool) = node.op_as::<OptMaxPool>() else {
            return Ok(None);
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let (Some(shape), dt) = (input.shape.as_concrete(), input.datum_type) else {
            return Ok(None);
        };
        if pool.with_index_outputs.is_some()
            || ![DatumType::F32, DatumType::I8, DatumType::U8].contains(&dt)
        {
            return Ok(None);
        }
        let Some(output_shape) = model.outlet_fact(OutletId::new(id, 0))?.shape.as_concrete()
        else {
            return Ok(None);
        };
        Ok(Rows::of(pool, shape)?.map(|rows| MaxPoolRows {
            pool: pool.clone(),
            rows,
            input_len: shape.iter().product(),
            output_shape: output_shape.into(),
        }))
    }

    fn eval_t<T: Pooled>(&self, input: &Tensor, output: &mut Tensor) -> TractResult<()> {
        let input = input.try_as_plain_ram()?;
        let mut output = output.try_as_plain_ram_mut()?;
        self.rows
            .run(input.as_slice::<T>()?, output.as_slice_mut::<T>()?);
        Ok(())
    }
}

impl Op for MaxPoolRows {
    fn name(&self) -> StaticName {
        "edgetune.MaxPoolRows".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        self.pool.info()
    }

    op_as_typed_op!();
}

impl EvalOp for MaxPoolRows {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        if inputs[0].len() != self.input_len {
            return self.pool.eval(ctx, inputs);
        }
        let input = args_1!(inputs);
        let mut output = Tensor::zero_dt(input.datum_type(), &self.output_shape)?;
        match input.datum_type() {
            DatumType::F32 => self.eval_t::<f32>(&input, &mut output)?,
            DatumType::I8 => self.eval_t::<i8>(&input, &mut output)?,
            DatumType::U8 => self.eval_t::<u8>(&input, &mut output)?,
            _ => return self.pool.eval(ctx, tvec!(input)),
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for MaxPoolRows {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.pool.output_facts(inputs)
    }
}

/// Replaces each `OptMaxPool` of `model` that [`MaxPoolRows`] covers; returns how many.
pub fn max_pools(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_ops(model, MaxPoolRows::for_node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use tract_nnef::tract_core::ops::cnn::{MaxPool, PaddingSpec, PoolSpec};
    use tract_nnef::tract_core::ops::nn::DataFormat;

    /// One case: data format, input shape, kernel, strides, dilations, padding before
    /// and after.
    struct Case {
        format: DataFormat,
        shape: [usize; 4],
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        pads: ([usize; 2], [usize; 2]),
    }

    fn model<T: Datum>(case: &Case) -> TractResult<TypedModel> {
        let mut m = TypedModel::default();
        let x = m.add_source("x", T::fact(case.shape))?;
        let channels = case.shape[if case.format.c_is_last() { 3 } else { 1 }];
        let pool_spec = PoolSpec {
            data_format: case.format,
            kernel_shape: case.kernel[..].into(),
            padding: PaddingSpec::Explicit(case.pads.0[..].into(), case.pads.1[..].into()),
            dilations: Some(case.dilations[..].into()),
            strides: Some(case.strides[..].into()),
            input_channels: channels,
            output_channels: channels,
        };
        let y = m.wire_node("pool", MaxPool::new(pool_spec, None), &[x])?[0];
        m.select_output_outlets(&[y])?;
        Ok(m)
    }

    /// tract's plan and edgetune's on `x`: the outputs' bits, and how many pools
    /// edgetune replaced.
    fn both<T: Datum>(case: &Case, x: Tensor) -> TractResult<(Tensor, Tensor, usize)> {
        let tracts = model::<T>(case)?.into_optimized()?.into_runnable()?;
        let (ours, steps) = super::super::optimize_steps(model::<T>(case)?)?;
        let ours = ours.into_runnable()?;
        let a = tracts.run(tvec!(x.clone().into_tvalue()))?.remove(0);
        let b = ours.run(tvec!(x.into_tvalue()))?.remove(0);
        Ok((a.into_tensor(), b.into_tensor(), steps.max_pools))
    }

    fn values<T: Datum + Copy>(t: &Tensor) -> TractResult<Vec<T>> {
        Ok(t.try_as_plain_ram()?.as_slice::<T>()?.to_vec())
    }

    #[rustfmt::skip]
    fn cases() -> Vec<Case> {
        let nchw = DataFormat::NCHW;
        let nhwc = DataFormat::NHWC;
        let c = |format, shape, kernel, strides, dilations, pads| Case {
            format, shape, kernel, strides, dilations, pads,
        };
        vec![
            // ResNet's: 3×3, stride 2, padding 1, even and odd sizes.
            c(nchw, [1, 8, 32, 32], [3, 3], [2, 2], [1, 1], ([1, 1], [1, 1])),
            c(nchw, [2, 3, 17, 15], [3, 3], [2, 2], [1, 1], ([1, 1], [1, 1])),
            c(nchw, [1, 2, 9, 9], [2, 2], [2, 2], [1, 1], ([0, 0], [0, 0])),
            c(nchw, [1, 2, 7, 10], [3, 2], [1, 1], [1, 1], ([1, 0], [1, 1])),
            c(nchw, [1, 2, 11, 13], [3, 3], [3, 3], [2, 1], ([2, 2], [0, 3])),
            c(nchw, [1, 1, 5, 4], [1, 5], [1, 2], [1, 1], ([0, 3], [0, 3])),
            c(nhwc, [1, 9, 8, 5], [3, 3], [2, 2], [1, 1], ([1, 1], [1, 1])),
            c(nhwc, [2, 6, 7, 3], [2, 3], [1, 3], [1, 1], ([0, 1], [1, 2])),
        ]
    }

    /// Bit for bit tract's on f32 (with both zeros, infinities and NaN among the values),
    /// i8 and u8, for every case.
    #[test]
    fn pools_give_tracts_bits() -> TractResult<()> {
        let mut rng = Rng::new(5);
        let special = [
            0.0f32,
            -0.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            f32::MIN,
        ];
        for case in cases() {
            let n: usize = case.shape.iter().product();
            let f: Vec<f32> = (0..n)
                .map(|_| match rng.below(8) {
                    0 => special[rng.below(special.len())],
                    _ => rng.unit() * 4.0 - 2.0,
                })
                .collect();
            let (a, b, replaced) = both::<f32>(&case, Tensor::from_shape(&case.shape, &f)?)?;
            assert_eq!(replaced, 1, "{:?}", case.shape);
            let bits = |t: &Tensor| -> TractResult<Vec<u32>> {
                Ok(values::<f32>(t)?.iter().map(|v| v.to_bits()).collect())
            };
            assert_eq!(bits(&a)?, bits(&b)?, "f32 {:?}", case.shape);
            let q: Vec<i8> = (0..n).map(|_| rng.below(256) as u8 as i8).collect();
            let (a, b, _) = both::<i8>(&case, Tensor::from_shape(&case.shape, &q)?)?;
            assert_eq!(values::<i8>(&a)?, values::<i8>(&b)?, "i8 {:?}", case.shape);
            let u: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
            let (a, b, _) = both::<u8>(&case, Tensor::from_shape(&case.shape, &u)?)?;
            assert_eq!(values::<u8>(&a)?, values::<u8>(&b)?, "u8 {:?}", case.shape);
        }
        Ok(())
    }

    /// The values by hand on one small map: 3×3, stride 2, padding 1 over 4×5.
    #[test]
    fn a_small_pool_by_hand() -> TractResult<()> {
        let case = Case {
            format: DataFormat::NCHW,
            shape: [1, 1, 4, 5],
            kernel: [3, 3],
            strides: [2, 2],
            dilations: [1, 1],
            pads: ([1, 1], [1, 1]),
        };
        #[rustfmt::skip]
        let x = [
            1.0f32, 9.0, 2.0, 0.0, 3.0,
            4.0, 0.5, 7.0, 1.0, 1.0,
            -1.0, 2.0, 8.0, 6.0, 5.0,
            0.0, -3.0, 1.0, 2.0, 4.0,
        ];
        let (_, b, _) = both::<f32>(&case, Tensor::from_shape(&case.shape, &x)?)?;
        // Rows 0–1 then 1–3; columns 0–1, 1–3, 3–4.
        assert_eq!(values::<f32>(&b)?, [9.0, 9.0, 3.0, 4.0, 8.0, 6.0]);
        Ok(())
    }
}
