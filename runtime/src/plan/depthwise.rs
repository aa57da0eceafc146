//! tract's two f32 depthwise kernels, doing the same arithmetic with fewer loads,
//! registered in tract's kernel registry on aarch64: the channel-inner one with each
//! tap's weights loaded once for up to four output positions, and the one along a
//! contiguous axis with runs shorter than 32 points vectorized 16 and 8 at a time
//! (`depthwise_w_f32`). Together: MobileNetV2's depthwise convolutions from 0.62 M to
//! 0.41 M aarch64 instructions per inference on a Pi 5, f32 and int8 bundles alike.
//!
//! tract runs a depthwise convolution whose channels are the contiguous axis (its layout
//! on ARM for MobileNetV2's depthwise layers, f32 and int8 bundles alike: edgetune keeps
//! them f32, see `finetune-head`'s quantizer) through one kernel,
//! `tract_linalg::routines::depthwise_c_f32`: for each output position, for each block
//! of 16 channels, the bias, then per tap the weights and the input loaded and one fused
//! multiply-add per lane. The weights are loaded again for every position, and each tap
//! costs its address arithmetic once per position: about one instruction per
//! multiply-add. It was 15 % of an int8 MobileNetV2 inference on a Pi 5 (0.44 M of
//! 2.96 M, `scripts/iprofile.sh`).
//!
//! `depthwise_c_f32` computes the same run for four positions at a time (then two,
//! then one): per tap, the weights and the tap's offset once, then each position's input
//! and its multiply-adds. Each lane's chain is tract's, the bias then one fused
//! multiply-add per tap in tap order, and the channels left over after the blocks of four
//! take tract's scalar `sum += k × x`: the outputs are tract's bit for bit (the tests
//! compare it with tract's own kernel).
//!
//! tract-linalg picks the kernel it runs from a registry of routines any crate can add to
//! (`inventory`, the way its own architecture trees add theirs): this one is filed for
//! aarch64 above tract's (`boost` 1), so every depthwise convolution in the process runs
//! these, f32 bundles included: those of tract's `DepthWise` and those of edgetune's
//! `DepthwiseZones` (`zones.rs`), which asks tract's registry for its kernel. Other
//! architectures keep tract's.

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;

#[cfg(target_arch = "aarch64")]
use tract_nnef::tract_core::tract_linalg::{
    isa::{Arch, IsaReq},
    routines::{Func, Routine, RoutineFactory},
};

/// The name the registry knows `depthwise_c_f32` by.
pub const NAME: &str = "edgetune_depthwise_c_f32";

#[cfg(target_arch = "aarch64")]
inventory::submit! {
    Routine {
        func: Func::DepthwiseC,
        arch: Some(Arch::Aarch64),
        isa: IsaReq::ANY,
        boost: 1,
        round_trip: false,
        factory: RoutineFactory::DepthwiseCF32 { name: NAME, run: depthwise_c_f32 },
    }
}

/// The name the registry knows `depthwise_w_f32` by.
pub const NAME_W: &str = "edgetune_depthwise_w_f32";

#[cfg(target_arch = "aarch64")]
inventory::submit! {
    Routine {
        func: Func::DepthwiseW,
        arch: Some(Arch::Aarch64),
        isa: IsaReq::ANY,
        boost: 1,
        round_trip: false,
        factory: RoutineFactory::DepthwiseWF32 { name: NAME_W, run: depthwise_w_f32 },
    }
}

/// `V` vectors of 4 lanes from `p`.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn load<const V: usize>(p: *const f32) -> [float32x4_t; V] {
    core::array::from_fn(|v| unsafe { vld1q_f32(p.add(4 * v)) })
}

/// What every position of a run shares: the weights, one row of `k_stride` per kernel
/// tap, the taps this run takes (their rows and their offsets into the input) and the
/// bias.
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy)]
struct Taps<'a> {
    kernel: *const f32,
    k_stride: usize,
    rows: &'a [usize],
    offsets: &'a [isize],
    bias: *const f32,
}

/// Channels `c..c + 4V` of `P` positions: the bias, then each tap's weights once and
/// each position's fused multiply-adds, in tap order.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn block<const V: usize, const P: usize>(
    inputs: &[*const f32; P],
    outputs: &[*mut f32; P],
    t: Taps,
    c: usize,
) {
    unsafe {
        let b = load::<V>(t.bias.add(c));
        let mut acc = [b; P];
        for (&row, &off) in t.rows.iter().zip(t.offsets) {
            let k = load::<V>(t.kernel.add(row * t.k_stride + c));
            for (acc, input) in acc.iter_mut().zip(inputs) {
                let x = load::<V>(input.offset(off).add(c));
                for ((a, x), k) in acc.iter_mut().zip(x).zip(k) {
                    *a = vfmaq_f32(*a, x, k);
                }
            }
        }
        for (acc, output) in acc.iter().zip(outputs) {
            for (v, a) in acc.iter().enumerate() {
                vst1q_f32(output.add(c + 4 * v), *a);
            }
        }
    }
}

/// All `channels` of `P` positions: blocks of 16, 8 and 4, then tract's scalar loop.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn positions<const P: usize>(
    inputs: &[*const f32; P],
    outputs: &[*mut f32; P],
    t: Taps,
    channels: usize,
) {
    unsafe {
        let mut c = 0;
        while c + 16 <= channels {
            block::<4, P>(inputs, outputs, t, c);
            c += 16;
        }
        if c + 8 <= channels {
            block::<2, P>(inputs, outputs, t, c);
            c += 8;
        }
        if c + 4 <= channels {
            block::<1, P>(inputs, outputs, t, c);
            c += 4;
        }
        for c in c..channels {
            for (input, output) in inputs.iter().zip(outputs) {
                let mut sum = *t.bias.add(c);
                for (&row, &off) in t.rows.iter().zip(t.offsets) {
                    sum += *t.kernel.add(row * t.k_stride + c) * *input.offset(off).add(c);
                }
                *output.add(c) = sum;
            }
        }
    }
}

/// tract's `DepthwiseCF32` (`tract_linalg::routines`): `len` output positions of
/// `channels` contiguous channels each; position `i`, channel `c` is `bias[c]` plus every
/// `kernel[tap_indices[t] * k_stride + c] * input[i * in_stride + offsets[t] + c]`, with
/// tract's arithmetic (see the module docs).
///
/// # Safety
/// tract's: `input.offset(i * in_stride + offsets[t] + c)` and
/// `kernel.add(tap_indices[t] * k_stride + c)` readable for every tap, every `i` below
/// `len` and every `c` below `channels`; `channels` values readable from `bias`, and
/// `channels` values writable from `output.offset(i * out_stride)` for every `i` below
/// `len`. `tap_indices` and `offsets` are the same length.
#[cfg(target_arch = "aarch64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn depthwise_c_f32(
    input: *const f32,
    output: *mut f32,
    kernel: *const f32,
    tap_indices: &[usize],
    offsets: &[isize],
    bias: *const f32,
    channels: usize,
    k_stride: usize,
    len: usize,
    in_stride: isize,
    out_stride: isize,
) {
    let n = tap_indices.len().min(offsets.len());
    let t = Taps {
        kernel,
        k_stride,
        rows: &tap_indices[..n],
        offsets: &offsets[..n],
        bias,
    };
    unsafe {
        let at = |i: usize| {
            (
                input.offset(i as isize * in_stride),
                output.offset(i as isize * out_stride),
            )
        };
        let mut i = 0;
        while i + 4 <= len {
            let p: [_; 4] = core::array::from_fn(|p| at(i + p));
            positions::<4>(&p.map(|p| p.0), &p.map(|p| p.1), t, channels);
            i += 4;
        }
        if i + 2 <= len {
            let p: [_; 2] = core::array::from_fn(|p| at(i + p));
            positions::<2>(&p.map(|p| p.0), &p.map(|p| p.1), t, channels);
            i += 2;
        }
        if i < len {
            let (x, y) = at(i);
            positions::<1>(&[x], &[y], t, channels);
        }
    }
}

/// Points `i..i + 4V` of a run along the contiguous axis: the bias, then per tap its
/// weight broadcast once and one fused multiply-add per vector, in tap order.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
unsafe fn run_block<const V: usize>(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    i: usize,
) {
    unsafe {
        let mut acc = [vdupq_n_f32(bias); V];
        for (&tap, &off) in taps.iter().zip(offsets) {
            let k = vdupq_n_f32(tap);
            let x = load::<V>(input.offset(off).add(i));
            for (a, x) in acc.iter_mut().zip(x) {
                *a = vfmaq_f32(*a, x, k);
            }
        }
        for (v, a) in acc.iter().enumerate() {
            vst1q_f32(output.add(i + 4 * v), *a);
        }
    }
}

/// tract's `DepthwiseWF32` (`tract_linalg::routines`): `len` contiguous output points,
/// each the bias plus every `taps[t] * input[offsets[t] + i * in_stride]`.
///
/// tract's kernel runs a contiguous input (`in_stride` 1) with more than four taps 32
/// points at a time, then 4 at a time with each tap's weight loaded and broadcast again
/// for every 4: most runs of a 64×64 MobileNetV2's maps are shorter than 32. This runs
/// them 32, 16, 8, then 4 at a time with the same fused chain per lane, and the last
/// points with tract's scalar `sum += tap × x`, as tract does. Every other run is
/// tract's kernel's.
///
/// # Safety
/// tract's: `input.offset(offsets[t] + i * in_stride)` readable for every tap and every
/// `i` below `len`, and `len` points writable from `output`.
#[cfg(target_arch = "aarch64")]
pub unsafe fn depthwise_w_f32(
    input: *const f32,
    output: *mut f32,
    taps: &[f32],
    offsets: &[isize],
    bias: f32,
    len: usize,
    in_stride: isize,
) {
    use tract_nnef::tract_core::tract_linalg::arm64::arm64simd_depthwise_w_f32 as tracts;
    let n = taps.len().min(offsets.len());
    if n <= 4 || in_stride != 1 {
        return unsafe { tracts(input, output, taps, offsets, bias, len, in_stride) };
    }
    let (taps, offsets) = (&taps[..n], &offsets[..n]);
    unsafe {
        let mut i = 0;
        while i + 32 <= len {
            run_block::<8>(input, output, taps, offsets, bias, i);
            i += 32;
        }
        if i + 16 <= len {
            run_block::<4>(input, output, taps, offsets, bias, i);
            i += 16;
        }
        if i + 8 <= len {
            run_block::<2>(input, output, taps, offsets, bias, i);
            i += 8;
        }
        if i + 4 <= len {
            run_block::<1>(input, output, taps, offsets, bias, i);
            i += 4;
        }
        for i in i..len {
            let mut sum = bias;
            for (tap, offset) in taps.iter().zip(offsets) {
                sum += tap * *input.offset(offset + i as isize);
            }
            *output.add(i) = sum;
        }
    }
}

#[cfg(all(test, target_arch = "aarch64"))]
mod tests {
    use super::*;
    use tract_nnef::internal::DatumType;
    use tract_nnef::tract_core::tract_linalg;

    /// Small deterministic values, i8's-like spread, with the odd large and negative one.
    fn values(seed: &mut u64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (*seed >> 33) as u32;
                (r % 2001) as f32 / 97.0 - 10.0 + if r.is_multiple_of(53) { 1e6 } else { 0.0 }
            })
            .collect()
    }

    /// Each value's bits (NaN and -0 compared as what they are).
    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn tracts_registry_runs_these_kernels() {
        let isa = tract_linalg::isa::native();
        for (func, name) in [(Func::DepthwiseC, NAME), (Func::DepthwiseW, NAME_W)] {
            let r = tract_linalg::routines::best_for(func, DatumType::F32, &isa)
                .expect("a depthwise kernel");
            assert_eq!(r.name(), name);
        }
    }

    /// Runs along the contiguous axis: 1 to 11 taps (tract's own paths up to 4), strides
    /// 1 to 3, 0 to 75 points (every block and remainder), compared bit for bit with
    /// tract's kernel.
    #[test]
    fn contiguous_runs_give_tracts_bits() {
        let mut seed = 11u64;
        for taps in 1..=11usize {
            for in_stride in 1..=3isize {
                for len in 0..=75usize {
                    let weights = values(&mut seed, taps);
                    let bias = values(&mut seed, 1)[0];
                    let row = 40isize;
                    let offsets: Vec<isize> = (0..taps as isize)
                        .map(|t| (t % 3 - 1) + (t / 3 - 1) * row)
                        .collect();
                    let before = 2 * row as usize;
                    let input = values(
                        &mut seed,
                        before + len * in_stride as usize + 3 * row as usize,
                    );
                    let mut ours = vec![f32::NAN; len + 1];
                    let mut theirs = vec![f32::NAN; len + 1];
                    for (out, run) in [
                        (
                            &mut ours,
                            depthwise_w_f32 as tract_linalg::routines::DepthwiseWF32,
                        ),
                        (&mut theirs, tract_linalg::arm64::arm64simd_depthwise_w_f32),
                    ] {
                        unsafe {
                            run(
                                input.as_ptr().add(before),
                                out.as_mut_ptr(),
                                &weights,
                                &offsets,
                                bias,
                                len,
                                in_stride,
                            )
                        }
                    }
                    assert_eq!(
                        bits(&ours),
                        bits(&theirs),
                        "{taps} taps, stride {in_stride}, {len} points"
                    );
                }
            }
        }
    }

    /// Every shape of run tract makes, and more: channels 1 to 40 (every block and
    /// remainder), 0 to 9 positions (every group of 4, 2, 1), taps in any order and
    /// offsets of either sign, strides of several positions, a kernel stride past the
    /// channels. Compared bit for bit with tract's kernel.
    #[test]
    fn runs_give_tracts_bits() {
        let mut seed = 7u64;
        for channels in 1..=40usize {
            for len in 0..=9usize {
                let taps = 1 + (channels + len) % 9;
                let k_stride = channels + (len % 3);
                let kernel = values(&mut seed, k_stride * 9);
                let bias = values(&mut seed, channels);
                // Taps' kernel rows in a scrambled order, each reading its own neighbour.
                let tap_indices: Vec<usize> = (0..taps).map(|t| (t * 5 + len) % 9).collect();
                let in_stride = (channels + 3 * (len % 2)) as isize;
                let span = channels as isize + 2 * in_stride;
                let offsets: Vec<isize> = (0..taps)
                    .map(|t| (t as isize % 3 - 1) * in_stride + (t as isize / 3 - 1) * span)
                    .collect();
                let before = 2 * span as usize;
                let input = values(
                    &mut seed,
                    before + (len + 3) * in_stride as usize + span as usize * 2,
                );
                let out_stride = (channels + len % 2) as isize;
                let size = (len.max(1)) * out_stride as usize + channels;
                let mut ours = vec![f32::NAN; size];
                let mut theirs = vec![f32::NAN; size];
                for (out, run) in [
                    (
                        &mut ours,
                        depthwise_c_f32 as tract_linalg::routines::DepthwiseCF32,
                    ),
                    (&mut theirs, tract_linalg::arm64::arm64simd_depthwise_c_f32),
                ] {
                    unsafe {
                        run(
                            input.as_ptr().add(before),
                            out.as_mut_ptr(),
                            kernel.as_ptr(),
                            &tap_indices,
                            &offsets,
                            bias.as_ptr(),
                            channels,
                            k_stride,
                            len,
                            in_stride,
                            out_stride,
                        )
                    }
                }
                assert_eq!(
                    bits(&ours),
                    bits(&theirs),
                    "{channels} channels, {len} positions, {taps} taps"
                );
            }
        }
    }

    /// One position of two channels and two taps, by hand: the fused multiply-adds of
    /// the vector lanes and the scalar loop of the rest give these exact sums.
    #[test]
    fn a_run_by_hand() {
        // Channels 0..5: one vector of 4, then one scalar channel.
        let kernel = [
            1.0, 2.0, 3.0, 4.0, 5.0, /* tap 1 */ 0.5, 0.5, 0.5, 0.5, 2.0,
        ];
        let bias = [10.0, 20.0, 30.0, 40.0, 50.0];
        let input = [
            1.0, 1.0, 1.0, 1.0, 1.0, /* next */ 2.0, 4.0, 6.0, 8.0, 10.0,
        ];
        let mut out = [0.0f32; 5];
        unsafe {
            depthwise_c_f32(
                input.as_ptr(),
                out.as_mut_ptr(),
                kernel.as_ptr(),
                &[0, 1],
                &[0, 5],
                bias.as_ptr(),
                5,
                5,
                1,
                5,
                5,
            )
        };
        assert_eq!(out, [12.0, 24.0, 36.0, 48.0, 75.0]);
    }
}
