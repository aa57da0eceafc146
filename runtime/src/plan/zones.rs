//! f32 depthwise convolutions with their walk over the output worked out at load:
//! edgetune's [`DepthwiseZones`] in place of tract's `DepthWise` op.
//!
//! tract 0.23.9 splits a depthwise convolution's output into zones (the positions whose
//! patch lies inside the image, then each band along the borders), each with the kernel
//! taps it reads. At every inference, for every zone, its `DepthWise` collects the zone's
//! taps into two small vectors, which spill to the heap for a 3×3 kernel, builds a
//! scanner, which allocates too, and steps the scanner row by row, recomputing each
//! row's offsets from its coordinates. On the Pi 5 CPU model that walk, with its
//! `malloc` and `free`, was about 0.15 M of the 2.54 M aarch64 instructions of an int8
//! MobileNetV2 inference (64×64, `scripts/iprofile.sh`), where the convolutions' own
//! arithmetic is 0.41 M.
//!
//! [`DepthwiseZones`] walks each zone once, when the plan is made, with tract's own
//! scanner, and keeps its taps and its runs of output positions (where each starts in
//! the input and the output, its length and its steps). At inference it hands each run
//! to the kernel tract's `DepthWise` would call with the same arguments, or to tract's
//! scalar loop where tract uses it: the outputs are tract's bit for bit (the tests
//! compare them; `examples/plan_check.rs` on whole models).
//!
//! [`depthwise_zones`] puts it where tract's optimization would put a `DepthWise`: each
//! f32 depthwise `Conv` is replaced before tract's codegen, with the kernel and bias
//! wired as tract wires them for its op. What is left to tract: element types other than
//! f32, shapes not known at load, a kernel one tap wide along the rows of channels-first
//! data (tract may run those as a `BlockedConv`), channels-first kernels of more than
//! 128 taps, and channels-first maps of one position (tract's arithmetic there depends
//! on its thread count).

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::cnn::conv::Conv;
use tract_nnef::tract_core::ops::cnn::wire_reshape_bias_for_bin;
use tract_nnef::tract_core::tract_linalg::{multithread, routines};

/// The most taps tract hands to its vectorized channels-first kernel (tract-core's
/// `MAX_VECTORISED_TAPS`); channels-first convolutions with more are left to tract.
const MAX_VECTORIZED_TAPS: usize = 128;

/// Channels per block when the channels-last convolution is split between threads, as
/// tract splits it (64 bytes of f32, at least 16).
const CHANNEL_BLOCK: usize = 16;

/// A run of output positions along one axis, as tract's scanner walks it: the offsets of
/// its first input center and first output, its length, and the steps from one position
/// to the next (in values, channels-last maps counting whole pixels of channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Run {
    input: isize,
    output: isize,
    len: usize,
    input_step: isize,
    output_step: isize,
}

/// One zone: the kernel taps its positions read (their index in the kernel and their
/// offset from the input center), in tract's order, and its runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Zone {
    taps: Vec<usize>,
    offsets: Vec<isize>,
    runs: Vec<Run>,
}

/// A depthwise f32 convolution over precomputed zones (see the module docs). Inputs: the
/// data, the kernel (channels-last: one row of channels per tap; channels-first: one row
/// of taps per channel) and the bias (a value per channel), as tract's `DepthWise` takes
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DepthwiseZones {
    zones: Vec<Zone>,
    channels_last: bool,
    channels: usize,
    /// Taps of the kernel (its rows channels last, its columns channels first).
    taps: usize,
    images: usize,
    /// Input values between two images and (channels first) two channels.
    image_stride: isize,
    channel_stride: isize,
    /// Output values of one image's channel (channels first) or one image (last).
    plane: usize,
    input_shape: TVec<usize>,
    output_shape: TVec<usize>,
}

impl DepthwiseZones {
    /// The op for `conv` on data of `fact`, or `None` where it leaves the convolution to
    /// tract (see the module docs).
    pub fn for_conv(conv: &Conv, fact: &TypedFact) -> TractResult<Option<DepthwiseZones>> {
        let Some(shape) = fact.shape.as_concrete() else {
            return Ok(None);
        };
        let spec = &conv.pool_spec;
        let channels = spec.input_channels;
        if conv.q_params.is_some()
            || conv.group < 2
            || conv.group != channels
            || conv.group != spec.output_channels
        {
            return Ok(None);
        }
        let geo = spec.compute_geo(&fact.shape)?;
        let geo = geo.to_concrete(shape)?;
        let (ish, osh, patch) = (&geo.input_shape, &geo.output_shape, &geo.patch);
        let channels_last = spec.data_format.c_is_last();
        if !channels_last && spec.kernel_shape.last() == Some(&1) {
            return Ok(None);
        }
        let plane: usize = if channels_last {
            osh.hw_dims().iter().product::<usize>() * channels
        } else {
            osh.hw_dims().iter().product()
        };
        // tract's channels-first walk: one contiguous plane per channel, more than one
        // position in it.
        if !channels_last && (plane < 2 || *osh.c_stride() != plane || *osh.w_stride() != 1) {
            return Ok(None);
        }
        if channels_last && (*ish.c_stride() != 1 || *osh.c_stride() != 1) {
            return Ok(None);
        }
        // Channels first, a zone's weights are copied to the stack (tract's kernel along
        // the rows takes up to this many).
        let taps: usize = spec.kernel_shape.iter().product();
        if !channels_last && taps > MAX_VECTORIZED_TAPS {
            return Ok(None);
        }
        let zones = patch
            .zones
            .iter()
            .map(|zone| {
                let mut runs = vec![];
                zone.visit_output(patch, |s| {
                    if s.output_coords[s.inner_loop_axis] == s.inner_loop_output_range.start {
                        runs.push(Run {
                            input: s.input_center_offset,
                            output: s.output_offset,
                            len: s.inner_loop_len,
                            input_step: s.inner_loop_input_full_stride,
                            output_step: s.inner_loop_output_stride,
                        });
                    }
                });
                Zone {
                    taps: zone.values_offsets.iter().map(|t| t.0).collect(),
                    offsets: zone.values_offsets.iter().map(|t| t.1).collect(),
                    runs,
                }
            })
            .collect();
        Ok(Some(DepthwiseZones {
            zones,
            channels_last,
            channels,
            taps,
            images: *ish.n().unwrap_or(&1),
            image_stride: *ish.n_stride().unwrap_or(&0) as isize,
            channel_stride: *ish.c_stride() as isize,
            plane,
            input_shape: ish.shape.clone(),
            output_shape: osh.shape.clone(),
        }))
    }

    /// The kernel's stride between two taps (channels last) or two channels (first),
    /// once `kernel` is checked to hold every weight the zones read.
    fn kernel_stride(&self, kernel: &Tensor) -> TractResult<usize> {
        ensure!(
            kernel.rank() >= 2,
            "depthwise kernel of shape {:?}",
            kernel.shape()
        );
        let stride = kernel.strides()[1] as usize;
        let needed = if self.channels_last {
            self.taps.saturating_sub(1) * stride + self.channels
        } else {
            (self.channels - 1) * stride + self.taps
        };
        ensure!(
            kernel.len() >= needed,
            "depthwise kernel of shape {:?}: {} channels need {needed} weights",
            kernel.shape(),
            self.channels
        );
        Ok(stride)
    }

    /// Channels `c0..c1` of every image, channels last (tract's `eval_c_inner`).
    ///
    /// # Safety
    /// The pointers hold the data, kernel, bias and output this op was made for.
    unsafe fn channels_last(&self, p: Pointers, k_stride: usize, c0: usize, c1: usize) {
        let ker = routines::depthwise_c_f32();
        let width = c1 - c0;
        for image in 0..self.images {
            unsafe {
                let input = p.input.add(c0).offset(self.image_stride * image as isize);
                let output = p.output.add(c0 + self.plane * image);
                let (kernel, bias) = (p.kernel.add(c0), p.bias.add(c0));
                for zone in &self.zones {
                    for run in &zone.runs {
                        let input = input.offset(run.input);
                        let output = output.offset(run.output);
                        if let Some(ker) = ker {
                            ker(
                                input,
                                output,
                                kernel,
                                &zone.taps,
                                &zone.offsets,
                                bias,
                                width,
                                k_stride,
                                run.len,
                                run.input_step,
                                run.output_step,
                            );
                            continue;
                        }
                        for i in 0..run.len as isize {
                            let input = input.offset(run.input_step * i);
                            let out = std::slice::from_raw_parts_mut(
                                output.offset(run.output_step * i),
                                width,
                            );
                            out.copy_from_slice(std::slice::from_raw_parts(bias, width));
                            for (&tap, &off) in zone.taps.iter().zip(&zone.offsets) {
                                let k =
                                    std::slice::from_raw_parts(kernel.add(k_stride * tap), width);
                                let x = std::slice::from_raw_parts(input.offset(off), width);
                                for c in 0..width {
                                    out[c] += k[c] * x[c];
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Planes `first..first + count` (image-major, a channel each), channels first
    /// (tract's `process_zone`, its kernel along the rows where the run is contiguous).
    ///
    /// # Safety
    /// As [`DepthwiseZones::channels_last`].
    unsafe fn channels_first(&self, p: Pointers, k_stride: usize, first: usize, count: usize) {
        let ker = routines::depthwise_w_f32();
        // A zone's weights for one channel (at most `MAX_VECTORIZED_TAPS`: `for_conv`).
        let mut k = [0f32; MAX_VECTORIZED_TAPS];
        for row in first..first + count {
            let (image, c) = (row / self.channels, row % self.channels);
            unsafe {
                let input = p
                    .input
                    .offset(self.image_stride * image as isize + self.channel_stride * c as isize);
                let output = p.output.add(self.plane * row);
                let bias = *p.bias.add(c);
                for zone in &self.zones {
                    let k = &mut k[..zone.taps.len()];
                    for (k, &tap) in k.iter_mut().zip(&zone.taps) {
                        *k = *p.kernel.add(k_stride * c + tap);
                    }
                    for run in &zone.runs {
                        let input = input.offset(run.input);
                        let output = output.offset(run.output);
                        if let Some(ker) =
                            ker.filter(|_| run.output_step == 1 && run.input_step >= 1)
                        {
                            ker(
                                input,
                                output,
                                k,
                                &zone.offsets,
                                bias,
                                run.len,
                                run.input_step,
                            );
                            continue;
                        }
                        for i in 0..run.len as isize {
                            let input = input.offset(run.input_step * i);
                            let mut sum = bias;
                            for (&k, &off) in k.iter().zip(&zone.offsets) {
                                sum += k * *input.offset(off);
                            }
                            *output.offset(run.output_step * i) = sum;
                        }
                    }
                }
            }
        }
    }
}

/// The raw pointers of one evaluation, as addresses so that threads can share them.
#[derive(Clone, Copy)]
struct Pointers {
    input: *const f32,
    kernel: *const f32,
    bias: *const f32,
    output: *mut f32,
}

// SAFETY: the pointers are only read from, and written to in disjoint channels or
// planes, during the one `eval` that owns the tensors behind them.
unsafe impl Send for Pointers {}
unsafe impl Sync for Pointers {}

impl Op for DepthwiseZones {
    fn name(&self) -> StaticName {
        "edgetune.DepthwiseZones".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let runs: usize = self.zones.iter().map(|z| z.runs.len()).sum();
        Ok(vec![format!(
            "{} channels {}, {} zones, {runs} runs",
            self.channels,
            if self.channels_last { "last" } else { "first" },
            self.zones.len()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for DepthwiseZones {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, kernel, bias) = args_3!(inputs);
        ensure!(
            input.shape() == &*self.input_shape,
            "depthwise input of shape {:?}, planned for {:?}",
            input.shape(),
            self.input_shape
        );
        let k_stride = self.kernel_stride(&kernel)?;
        ensure!(
            bias.len() >= self.channels,
            "depthwise bias of {} values for {} channels",
            bias.len(),
            self.channels
        );
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape)? };
        let p = Pointers {
            input: input.try_as_plain_ram()?.as_slice::<f32>()?.as_ptr(),
            kernel: kernel.try_as_plain_ram()?.as_slice::<f32>()?.as_ptr(),
            bias: bias.try_as_plain_ram()?.as_slice::<f32>()?.as_ptr(),
            output: output.as_ptr_mut::<f32>()?,
        };
        let total = output.len();
        if self.channels_last {
            let blocks = self.channels.div_ceil(CHANNEL_BLOCK);
            multithread::par_chunks_mut(&mut vec![(); blocks], 1, total, |first, chunk| {
                let c0 = first * CHANNEL_BLOCK;
                let c1 = self.channels.min((first + chunk.len()) * CHANNEL_BLOCK);
                // SAFETY: the tensors were checked against the plan above; each chunk
                // writes its own channels.
                unsafe { self.channels_last(p, k_stride, c0, c1) };
                Ok(())
            })?;
        } else {
            let planes = self.images * self.channels;
            multithread::par_chunks_mut(&mut vec![(); planes], 1, total, |first, chunk| {
                // SAFETY: as above; each chunk writes its own planes.
                unsafe { self.channels_first(p, k_stride, first, chunk.len()) };
                Ok(())
            })?;
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for DepthwiseZones {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 3, "DepthwiseZones takes 3 inputs");
        ensure!(
            inputs.iter().all(|f| f.datum_type == f32::datum_type()),
            "DepthwiseZones is f32 only"
        );
        Ok(tvec!(f32::fact(&self.output_shape)))
    }

    as_op!();
}

/// Replaces each f32 depthwise `Conv` of `model` that [`DepthwiseZones`] covers, with its
/// kernel and bias wired as tract wires them for its `DepthWise`; returns how many. To run
/// after tract's declutter (which decides the layout of the channels) and before its
/// codegen (which would lower them to `DepthWise`).
pub fn depthwise_zones(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        if node.inputs.len() != 3 {
            continue;
        }
        let x = model.outlet_fact(node.inputs[0])?;
        let kernel = model.outlet_fact(node.inputs[1])?;
        if x.datum_type != f32::datum_type()
            || kernel.datum_type != f32::datum_type()
            || kernel.is_exotic()
            || model.outlet_fact(node.inputs[2])?.datum_type != f32::datum_type()
        {
            continue;
        }
        let Some(op) = DepthwiseZones::for_conv(conv, x)? else {
            continue;
        };
        let shape = x.shape.as_concrete().context("checked by for_conv")?;
        let (name, inputs, rank) = (node.name.clone(), node.inputs.clone(), x.rank());
        let c_axis = conv.pool_spec.data_format.shape(shape)?.c_axis();
        let mut patch = TypedModelPatch::new(format!("edgetune depthwise zones {name}"));
        // As tract-core's `Conv::wire_as_depth_wise`.
        let wired = (|| -> TractResult<OutletId> {
            let taps = patch.taps(model, &inputs)?;
            let mut kernel = conv.wire_kernel_as_g_o_ihw(&mut patch, &name, taps[1])?;
            if op.channels_last {
                kernel = patch.wire_node(
                    format!("{name}.kernel_c_inner"),
                    AxisOp::Move(0, 2),
                    &kernel,
                )?;
            }
            let channels = op.channels;
            let bias =
                wire_reshape_bias_for_bin(&mut patch, &name, taps[2], rank, c_axis, channels)?;
            Ok(patch.wire_node(&name, op, &[taps[0], kernel[0], bias[0]])?[0])
        })();
        replaced += super::replace_output(model, id, patch, wired)? as usize;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use tract_nnef::tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
    use tract_nnef::tract_core::ops::nn::DataFormat;

    /// One convolution: data format, input shape, kernel, strides, dilations, padding
    /// before and after, and whether the bias is one scalar (the kernel is OIHW, as
    /// ONNX and NNEF give it).
    struct Case {
        format: DataFormat,
        shape: Vec<usize>,
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
        pads: ([usize; 2], [usize; 2]),
        scalar_bias: bool,
    }

    impl Case {
        fn channels(&self) -> usize {
            self.shape[self.format.shape(&self.shape).unwrap().c_axis()]
        }

        /// The convolution with random weights and bias from `seed`.
        fn model(&self, seed: u64) -> TractResult<TypedModel> {
            let mut rng = Rng::new(seed);
            let c = self.channels();
            let mut m = TypedModel::default();
            let x = m.add_source("x", f32::fact(&self.shape))?;
            let [kh, kw] = self.kernel;
            let kshape = [c, 1, kh, kw];
            let w: Vec<f32> = (0..c * kh * kw).map(|_| rng.unit() * 2.0 - 1.0).collect();
            let k = m.add_const("k", Tensor::from_shape(&kshape, &w)?)?;
            let b = if self.scalar_bias {
                m.add_const("b", tensor0(0.25f32))?
            } else {
                let b: Vec<f32> = (0..c).map(|_| rng.unit() - 0.5).collect();
                m.add_const("b", Tensor::from_shape(&[c], &b)?)?
            };
            let pool_spec = PoolSpec {
                data_format: self.format,
                kernel_shape: self.kernel[..].into(),
                padding: PaddingSpec::Explicit(self.pads.0[..].into(), self.pads.1[..].into()),
                dilations: Some(self.dilations[..].into()),
                strides: Some(self.strides[..].into()),
                input_channels: c,
                output_channels: c,
            };
            let conv = Conv {
                pool_spec,
                kernel_fmt: KernelFormat::OIHW,
                group: c,
                q_params: None,
            };
            let y = m.wire_node("dw", conv, &[x, k, b])?[0];
            m.select_output_outlets(&[y])?;
            Ok(m)
        }
    }

    #[rustfmt::skip]
    fn cases() -> Vec<Case> {
        use DataFormat::*;
        let c = |format, shape: &[usize], kernel, strides, dilations, pads| Case {
            format, shape: shape.to_vec(), kernel, strides, dilations, pads, scalar_bias: false,
        };
        let p1 = ([1, 1], [1, 1]);
        vec![
            // MobileNetV2's: 3×3, padding 1, strides 1 and 2, channels first and last.
            c(NCHW, &[1, 8, 32, 32], [3, 3], [1, 1], [1, 1], p1),
            c(NCHW, &[1, 48, 16, 16], [3, 3], [2, 2], [1, 1], p1),
            c(NHWC, &[1, 16, 16, 48], [3, 3], [1, 1], [1, 1], p1),
            c(NHWC, &[1, 8, 8, 21], [3, 3], [2, 2], [1, 1], p1),
            c(HWC, &[4, 4, 40], [3, 3], [1, 1], [1, 1], p1),
            c(CHW, &[5, 2, 2], [3, 3], [1, 1], [1, 1], p1),
            // Two images, odd sizes, dilations, uneven and no padding, 5×5 and 2×3.
            c(NCHW, &[2, 3, 17, 15], [5, 5], [2, 1], [1, 2], ([2, 0], [1, 3])),
            c(NHWC, &[2, 9, 7, 19], [2, 3], [1, 2], [2, 1], ([0, 1], [1, 0])),
            c(NCHW, &[1, 2, 9, 9], [2, 2], [2, 2], [1, 1], ([0, 0], [0, 0])),
            c(NHWC, &[1, 6, 6, 35], [5, 5], [1, 1], [1, 1], ([2, 2], [2, 2])),
            // Rows of one position.
            c(NCHW, &[1, 4, 9, 1], [3, 3], [1, 1], [1, 1], p1),
            c(NHWC, &[1, 1, 9, 17], [1, 3], [1, 1], [1, 1], ([0, 1], [0, 1])),
            Case { scalar_bias: true, ..c(NCHW, &[1, 5, 6, 7], [3, 3], [1, 1], [1, 1], p1) },
            Case { scalar_bias: true, ..c(NHWC, &[1, 6, 5, 18], [3, 3], [2, 2], [1, 1], p1) },
        ]
    }

    /// A random input for `case`, with both zeros, infinities and NaN among the values.
    fn input(case: &Case, rng: &mut Rng) -> TractResult<Tensor> {
        let special = [0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        let n: usize = case.shape.iter().product();
        let x: Vec<f32> = (0..n)
            .map(|_| match rng.below(16) {
                0 => special[rng.below(special.len())],
                1 => (rng.unit() - 0.5) * 1e6,
                _ => rng.unit() * 4.0 - 2.0,
            })
            .collect();
        Tensor::from_shape(&case.shape, &x)
    }

    fn bits(t: &Tensor) -> TractResult<Vec<u32>> {
        let t = t.try_as_plain_ram()?;
        Ok(t.as_slice::<f32>()?.iter().map(|v| v.to_bits()).collect())
    }

    /// tract's plan and edgetune's for `case`, and how many convolutions edgetune's
    /// replaced.
    fn plans(
        case: &Case,
        seed: u64,
    ) -> TractResult<(Arc<TypedSimplePlan>, Arc<TypedSimplePlan>, usize)> {
        let tracts = case
            .model(seed)?
            .into_optimized()
            .context("tract's")?
            .into_runnable()?;
        let (ours, steps) = crate::plan::optimize_steps(case.model(seed)?).context("ours")?;
        Ok((tracts, ours.into_runnable()?, steps.depthwise))
    }

    /// Every case bit for bit tract's, on three inputs each, and replaced.
    #[test]
    fn convolutions_give_tracts_bits() -> TractResult<()> {
        let mut rng = Rng::new(21);
        for (i, case) in cases().iter().enumerate() {
            let (tracts, ours, replaced) =
                plans(case, 100 + i as u64).with_context(|| format!("case {i}"))?;
            assert_eq!(replaced, 1, "case {i}: {:?}", case.shape);
            for _ in 0..3 {
                let x = input(case, &mut rng)?;
                let a = tracts.run(tvec!(x.clone().into_tvalue()))?.remove(0);
                let b = ours.run(tvec!(x.into_tvalue()))?.remove(0);
                assert_eq!(a.shape(), b.shape(), "case {i}");
                assert_eq!(bits(&a)?, bits(&b)?, "case {i}: {:?}", case.shape);
            }
        }
        Ok(())
    }

    /// The values by hand: one channel, 3×3 of ones, padding 1, over a 3×3 map, bias 1;
    /// each output is 1 plus the sum of its neighbourhood.
    #[test]
    fn a_small_convolution_by_hand() -> TractResult<()> {
        let mut m = TypedModel::default();
        let x = m.add_source("x", f32::fact([1, 2, 3, 3]))?;
        let k = m.add_const("k", Tensor::from_shape(&[2, 1, 3, 3], &[1f32; 18])?)?;
        let b = m.add_const("b", tensor1(&[1f32, 0.0]))?;
        let pool_spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![3, 3],
            padding: PaddingSpec::Explicit(tvec![1, 1], tvec![1, 1]),
            dilations: None,
            strides: None,
            input_channels: 2,
            output_channels: 2,
        };
        let conv = Conv {
            pool_spec,
            kernel_fmt: KernelFormat::OIHW,
            group: 2,
            q_params: None,
        };
        let y = m.wire_node("dw", conv, &[x, k, b])?[0];
        m.select_output_outlets(&[y])?;
        let (ours, steps) = crate::plan::optimize_steps(m)?;
        assert_eq!(steps.depthwise, 1);
        let x: Vec<f32> = (1..=18).map(|v| v as f32).collect();
        let y = ours
            .into_runnable()?
            .run(tvec!(Tensor::from_shape(&[1, 2, 3, 3], &x)?.into_tvalue()))?
            .remove(0);
        #[rustfmt::skip]
        let expected = [
            13.0f32, 22.0, 17.0, 28.0, 46.0, 34.0, 25.0, 40.0, 29.0,
            48.0, 75.0, 52.0, 81.0, 126.0, 87.0, 60.0, 93.0, 64.0,
        ];
        assert_eq!(y.try_as_plain_ram()?.as_slice::<f32>()?, expected);
        Ok(())
    }

    /// What the op leaves to tract: a kernel one tap wide along channels-first rows, a
    /// channels-first map of one position, a channels-first kernel of 169 taps, a grouped
    /// convolution that is not depthwise.
    #[test]
    fn what_it_leaves_to_tract() -> TractResult<()> {
        let c = |shape: &[usize], kernel| Case {
            format: DataFormat::NCHW,
            shape: shape.to_vec(),
            kernel,
            strides: [1, 1],
            dilations: [1, 1],
            pads: ([0, 0], [0, 0]),
            scalar_bias: false,
        };
        let wide = c(&[1, 2, 14, 14], [13, 13]);
        for case in [c(&[1, 4, 5, 5], [3, 1]), c(&[1, 4, 3, 3], [3, 3]), wide] {
            let (_, _, replaced) = plans(&case, 1)?;
            assert_eq!(replaced, 0, "{:?} {:?}", case.shape, case.kernel);
        }
        let mut conv = c(&[1, 4, 5, 5], [3, 3]).model(1)?;
        let id = conv.node_id_by_name("dw")?;
        let op = conv.node(id).op_as::<Conv>().unwrap().clone();
        conv.node_mut(id).op = Box::new(Conv { group: 2, ..op });
        assert_eq!(depthwise_zones(&mut conv)?, 0);
        Ok(())
    }

    /// On tract's threads the channels or planes are shared out and the outputs are the
    /// same.
    #[cfg(feature = "threads")]
    #[test]
    fn threads_give_the_same_bits() -> TractResult<()> {
        use tract_nnef::tract_core::tract_linalg::multithread::{
            Executor, multithread_tract_scope, set_threading_element_threshold,
        };
        set_threading_element_threshold(0);
        let mut rng = Rng::new(22);
        for case in cases().iter().take(6) {
            let (tracts, ours, _) = plans(case, 7)?;
            let x = input(case, &mut rng)?;
            let a = tracts.run(tvec!(x.clone().into_tvalue()))?.remove(0);
            let b = multithread_tract_scope(Executor::multithread(2), || {
                ours.run(tvec!(x.into_tvalue()))
            })?
            .remove(0);
            assert_eq!(bits(&a)?, bits(&b)?, "{:?}", case.shape);
        }
        Ok(())
    }
}
