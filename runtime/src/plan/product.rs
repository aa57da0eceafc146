//! The integer matrix products, tile by tile with nothing around them: edgetune's in
//! place of tract's `OptMatMul` where it applies.
//!
//! tract 0.23.9 runs an int8 convolution's product with an 8×8 kernel (`sdot` on a Pi 5,
//! widening multiplies on a Pi 4), but around it spends about as much as in the kernel:
//! its tile loop (`run_blocked`), its thread-local scratch space, border tiles through a
//! scratch buffer, each tile's store through a generic strided routine
//! (`store_strides_i32`), clears. Counted on the Pi 5 CPU model (`scripts/iprofile.sh`)
//! for torchvision's MobileNetV2 at width 1/4, 64×64, int8: 0.69 M instructions of those
//! against 0.27 M in the kernel.
//!
//! [`DotProduct`] takes the same packed operands (the activations packed by
//! [`super::PackColumns`], [`super::PackPatches`] or tract, the weights tract packed at
//! load) and writes the same matrix: each 8×8 tile's sums in registers (inline assembly:
//! 16 `sdot` per 4 k's on tract's dot-product packing, 16 `smlal` per k on its plain
//! one), each row of the tile stored straight into the output. Integer sums are exact,
//! so its outputs are tract's bit for bit. On other CPUs (the host's tests) portable
//! loops compute the same sums. Measured (one inference, `scripts/iprofile.sh`):
//! MobileNetV2 int8 from 3.64 M to 3.15 M instructions on a Pi 5, 4.31 M to 3.78 M on a
//! Pi 4 (and with the packing of `columns.rs` since, 2.91 M and 3.75 M).
//!
//! On a Pi 4, with no dot product, tract packs its operands k-major and its kernel (and
//! this op's first) widens each value to 16 bits and multiplies by element (`smlal`):
//! 4 products per instruction. `pair_products` then makes the tile [`Tile::Pairs`]:
//! both operands in `K4` (the activations' packing is edgetune's, so it packs them that
//! way instead; the constant weights are repacked once, at load), two products summed in
//! 16 bits before they widen (`smull`, `smlal`, `sadalp`: 16 products in 3
//! instructions), exact because no weight is −128 (a product with one is left as it
//! was). There it also takes tract's products that requantize (its fixed-point scale,
//! [`Step::Scale`], in NEON), which the pairs make worth it. Measured (`tools/arm-count
//! pi4`, one inference, torchvision's models at 224×224, int8): MobileNetV2 from
//! 142.2 M to 107.2 M instructions, ResNet18 from 706.5 M to 460.3 M.
//!
//! What it covers: an `OptMatMul` over one matrix (every other axis 1) of two i8
//! operands, activations and weights (baked into tract's op or from a constant input),
//! both packed in 8 lanes the same way (`PackedI8K4` or k-major) for the mode tract
//! picks, stored as i32 or one byte,
//! with between the product and the store only tract's additions, subtractions, minima
//! and maxima per row, per column or by one value (a zero point's corrections, a bias, a
//! clamp). A product that requantizes with tract's fixed-point scale keeps tract's op,
//! but on a Pi 4 (see [`Step::Scale`]).

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::matmul::optimized::{MatMulOperand, OptMatMul, ProtoFusedSpec};
use tract_nnef::tract_core::tract_linalg::BinOp as KernelOp;
use tract_nnef::tract_core::tract_linalg::Scaler;
use tract_nnef::tract_core::tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, PackedMatrixStorage,
    RoundingPolicy as Rounding,
};
use tract_nnef::tract_core::tract_linalg::multithread;
use tract_nnef::tract_core::tract_linalg::pack::{PackedFormat, PackedI8K4};

use super::Packing;

/// Lanes of a panel, on both sides: a tile is `LANES × LANES`.
const LANES: usize = 8;

/// Which kernels compute the tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// This CPU's, on aarch64: `sdot` for the dot product's packing (`PackedI8K4`, which
    /// tract picks where the CPU has the dot product, a Pi 5), widening multiplies
    /// (`smlal`) for tract's plain packing (a Pi 4; then `pair_products`).
    Native,
    /// Portable loops, for either packing (the same sums): the host's tests.
    Portable,
}

impl Kernel {
    /// `Native` on aarch64, else `None`: the step applies only there.
    pub fn of_this_cpu() -> Option<Kernel> {
        cfg!(target_arch = "aarch64").then_some(Kernel::Native)
    }

    /// The tile for operands packed as `packing`, or `None` where this kernel has none.
    fn for_packing(self, packing: Packing) -> Option<Tile> {
        match (self, packing) {
            (Kernel::Portable, packing) => Some(Tile::Portable(packing)),
            #[cfg(target_arch = "aarch64")]
            (Kernel::Native, Packing::K4) => {
                std::arch::is_aarch64_feature_detected!("dotprod").then_some(Tile::Dot)
            }
            #[cfg(target_arch = "aarch64")]
            (Kernel::Native, Packing::KMajor) => Some(Tile::Widening),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// How a tile is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Tile {
    /// `sdot`, on `PackedI8K4` panels.
    #[cfg(target_arch = "aarch64")]
    Dot,
    /// `smlal` by element, on k-major panels.
    #[cfg(target_arch = "aarch64")]
    Widening,
    /// Two k's summed in 16 bits before they widen (`smull`, `smlal`, `sadalp`: 16
    /// products in 3 instructions, against 4 in one `smlal`), for a CPU without the dot
    /// product (a Pi 4), put in by `pair_products`: both operands in `K4` panels of
    /// whole pairs of blocks ([`pairs_panel_len`]), the weights on the tile's lanes' side
    /// or its rows'. Exact where no weight is −128: two products then stay within
    /// ±32,512.
    #[cfg(target_arch = "aarch64")]
    Pairs { weights_are_lanes: bool },
    /// Loops, on either.
    Portable(Packing),
}

impl Tile {
    /// The packing of its operands (for `Pairs`, the activations').
    fn packing(self) -> Packing {
        match self {
            #[cfg(target_arch = "aarch64")]
            Tile::Dot | Tile::Pairs { .. } => Packing::K4,
            #[cfg(target_arch = "aarch64")]
            Tile::Widening => Packing::KMajor,
            Tile::Portable(packing) => packing,
        }
    }

    /// The bytes of a panel this reads for `k` k's: 8 lanes of each, 4 k's side by side
    /// (`K4`, `k` rounded up to 4, or to 8 for `Pairs`) or one k after the other
    /// (`KMajor`).
    fn panel_len(self, k: usize) -> usize {
        match (self, self.packing()) {
            #[cfg(target_arch = "aarch64")]
            (Tile::Pairs { .. }, _) => pairs_panel_len(k),
            (_, Packing::K4) => k.div_ceil(4) * 4 * LANES,
            (_, Packing::KMajor) => k * LANES,
        }
    }

    /// `out[c·row_stride + m] = Σ_k a[m, k]·b[c, k]` for the 8 lanes m of `a` and c of
    /// `b`: `a` and `b` one panel each of `k` k's.
    #[inline(always)]
    fn tile(self, a: &[u8], b: &[u8], k: usize, out: &mut [i32], row_stride: usize) {
        let len = self.panel_len(k);
        assert!(
            a.len() >= len && b.len() >= len && out.len() >= (LANES - 1) * row_stride + LANES,
            "a tile's panels or output are cut short"
        );
        match self {
            // SAFETY (both): the panels hold `len` bytes and `out` the 8 rows (asserted);
            // `Dot` is only chosen where the CPU has the dot product, and NEON is part
            // of every aarch64 target.
            #[cfg(target_arch = "aarch64")]
            Tile::Dot => unsafe {
                dot_tile(
                    a.as_ptr(),
                    b.as_ptr(),
                    k.div_ceil(4),
                    out.as_mut_ptr(),
                    row_stride,
                )
            },
            #[cfg(target_arch = "aarch64")]
            Tile::Widening => unsafe {
                widening_tile(a.as_ptr(), b.as_ptr(), k, out.as_mut_ptr(), row_stride)
            },
            #[cfg(target_arch = "aarch64")]
            Tile::Pairs { weights_are_lanes } => unsafe {
                let (acts, weights) = if weights_are_lanes { (b, a) } else { (a, b) };
                let (pairs, out) = (k.div_ceil(8), out.as_mut_ptr());
                pairs_tile(
                    acts.as_ptr(),
                    weights.as_ptr(),
                    pairs,
                    out,
                    row_stride,
                    weights_are_lanes,
                )
            },
            Tile::Portable(Packing::K4) => portable_k4(&a[..len], &b[..len], out, row_stride),
            Tile::Portable(Packing::KMajor) => {
                portable_k_major(&a[..len], &b[..len], out, row_stride)
            }
        }
    }
}

fn clear_rows(out: &mut [i32], row_stride: usize) {
    for c in 0..LANES {
        out[c * row_stride..][..LANES].fill(0);
    }
}

fn portable_k4(a: &[u8], b: &[u8], out: &mut [i32], row_stride: usize) {
    clear_rows(out, row_stride);
    for (a, b) in a.chunks_exact(4 * LANES).zip(b.chunks_exact(4 * LANES)) {
        for (c, bc) in b.chunks_exact(4).enumerate() {
            for (m, am) in a.chunks_exact(4).enumerate() {
                let dot: i32 = am
                    .iter()
                    .zip(bc)
                    .map(|(&x, &y)| x as i8 as i32 * y as i8 as i32)
                    .sum();
                out[c * row_stride + m] += dot;
            }
        }
    }
}

fn portable_k_major(a: &[u8], b: &[u8], out: &mut [i32], row_stride: usize) {
    clear_rows(out, row_stride);
    for (a, b) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for (c, &y) in b.iter().enumerate() {
            for (m, &x) in a.iter().enumerate() {
                out[c * row_stride + m] += x as i8 as i32 * y as i8 as i32;
            }
        }
    }
}

/// One 8×8 tile in assembly: the accumulators v16–v31 zeroed, then `count` times the
/// loop `body` (which reads its panels at x9 and x10, post-incremented; twice a turn),
/// then row c of the tile (v16+2c, v17+2c) stored at `out + c·row_stride`. Clobbers
/// v0–v7 and the accumulators (the C ABI's caller-saved registers).
#[cfg(target_arch = "aarch64")]
macro_rules! tile_asm {
    ($a:expr, $b:expr, $count:expr, $out:expr, $row_stride:expr, $($body:literal),* $(,)?) => {
        std::arch::asm!(
            "movi v16.4s, #0", "movi v17.4s, #0", "movi v18.4s, #0", "movi v19.4s, #0",
            "movi v20.4s, #0", "movi v21.4s, #0", "movi v22.4s, #0", "movi v23.4s, #0",
            "movi v24.4s, #0", "movi v25.4s, #0", "movi v26.4s, #0", "movi v27.4s, #0",
            "movi v28.4s, #0", "movi v29.4s, #0", "movi v30.4s, #0", "movi v31.4s, #0",
            // Two bodies a turn (a turn's `subs` and branch cost a Pi 5's `sdot` tile 5 %),
            // then the odd one.
            "lsr x14, x11, #1",
            "cbz x14, 3f",
            "1:",
            $($body,)*
            $($body,)*
            "subs x14, x14, #1",
            "b.ne 1b",
            "3:",
            "tbz x11, #0, 2f",
            $($body,)*
            "2:",
            "st1 {{v16.4s, v17.4s}}, [x12], x13",
            "st1 {{v18.4s, v19.4s}}, [x12], x13",
            "st1 {{v20.4s, v21.4s}}, [x12], x13",
            "st1 {{v22.4s, v23.4s}}, [x12], x13",
            "st1 {{v24.4s, v25.4s}}, [x12], x13",
            "st1 {{v26.4s, v27.4s}}, [x12], x13",
            "st1 {{v28.4s, v29.4s}}, [x12], x13",
            "st1 {{v30.4s, v31.4s}}, [x12]",
            inout("x9") $a => _,
            inout("x10") $b => _,
            inout("x11") $count => _,
            inout("x12") $out => _,
            in("x13") $row_stride * 4,
            out("x14") _,
            clobber_abi("C"),
            options(nostack),
        )
    };
}

/// The 8×8 tile on k-major panels without the dot product: each k's 8 values of `a`
/// (v0) and `b` (v1) widened to i16, then for each row c of `b` two `smlal` by element
/// (lanes 0–3 and 4–7 of `a`) into the accumulators v16–v31; row c stored at
/// `out + c·row_stride`.
///
/// # Safety
/// `a` and `b` hold `8·k` bytes and `out` 8 rows of 8 values `row_stride` apart.
#[cfg(target_arch = "aarch64")]
unsafe fn widening_tile(a: *const u8, b: *const u8, k: usize, out: *mut i32, row_stride: usize) {
    // SAFETY: the caller's.
    unsafe {
        tile_asm!(
            a,
            b,
            k,
            out,
            row_stride,
            "ld1 {{v0.8b}}, [x9], #8",
            "ld1 {{v1.8b}}, [x10], #8",
            "sxtl v0.8h, v0.8b",
            "sxtl v1.8h, v1.8b",
            "smlal v16.4s, v0.4h, v1.h[0]",
            "smlal2 v17.4s, v0.8h, v1.h[0]",
            "smlal v18.4s, v0.4h, v1.h[1]",
            "smlal2 v19.4s, v0.8h, v1.h[1]",
            "smlal v20.4s, v0.4h, v1.h[2]",
            "smlal2 v21.4s, v0.8h, v1.h[2]",
            "smlal v22.4s, v0.4h, v1.h[3]",
            "smlal2 v23.4s, v0.8h, v1.h[3]",
            "smlal v24.4s, v0.4h, v1.h[4]",
            "smlal2 v25.4s, v0.8h, v1.h[4]",
            "smlal v26.4s, v0.4h, v1.h[5]",
            "smlal2 v27.4s, v0.8h, v1.h[5]",
            "smlal v28.4s, v0.4h, v1.h[6]",
            "smlal2 v29.4s, v0.8h, v1.h[6]",
            "smlal v30.4s, v0.4h, v1.h[7]",
            "smlal2 v31.4s, v0.8h, v1.h[7]",
        );
    }
}

/// The 8×8 tile with `sdot`: accumulators v16–v31, two per row c of `b` (lanes 0–3 and
/// 4–7 of `a`), each block of 4 k's 32 bytes of `a` (v0, v1) and of `b` (v2, v3); row c
/// stored at `out + c·row_stride`.
///
/// # Safety
/// `a` and `b` hold `32·blocks` bytes, `out` 8 rows of 8 values `row_stride` apart, and
/// the CPU has the dot product.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "dotprod")]
unsafe fn dot_tile(a: *const u8, b: *const u8, blocks: usize, out: *mut i32, row_stride: usize) {
    // SAFETY: the caller's.
    unsafe {
        tile_asm!(
            a,
            b,
            blocks,
            out,
            row_stride,
            "ld1 {{v0.16b, v1.16b}}, [x9], #32",
            "ld1 {{v2.16b, v3.16b}}, [x10], #32",
            "sdot v16.4s, v0.16b, v2.4b[0]",
            "sdot v17.4s, v1.16b, v2.4b[0]",
            "sdot v18.4s, v0.16b, v2.4b[1]",
            "sdot v19.4s, v1.16b, v2.4b[1]",
            "sdot v20.4s, v0.16b, v2.4b[2]",
            "sdot v21.4s, v1.16b, v2.4b[2]",
            "sdot v22.4s, v0.16b, v2.4b[3]",
            "sdot v23.4s, v1.16b, v2.4b[3]",
            "sdot v24.4s, v0.16b, v3.4b[0]",
            "sdot v25.4s, v1.16b, v3.4b[0]",
            "sdot v26.4s, v0.16b, v3.4b[1]",
            "sdot v27.4s, v1.16b, v3.4b[1]",
            "sdot v28.4s, v0.16b, v3.4b[2]",
            "sdot v29.4s, v1.16b, v3.4b[2]",
            "sdot v30.4s, v0.16b, v3.4b[3]",
            "sdot v31.4s, v1.16b, v3.4b[3]",
        );
    }
}

/// The bytes of an activations' panel of [`Tile::Pairs`]: `K4` (4 k's of a lane side
/// by side, 32 bytes to a block of 4 k's) in whole pairs of blocks, zeros after `k`.
#[cfg(target_arch = "aarch64")]
pub(crate) fn pairs_panel_len(k: usize) -> usize {
    k.div_ceil(8) * 8 * LANES
}

/// `panels` panels of weights packed k-major (tract's `PackedFormat`: `k·8` bytes,
/// `panel` bytes apart, value (k, lane) at `k·8 + lane`) as [`Tile::Pairs`] reads them:
/// `K4`, blocks in whole pairs ([`pairs_panel_len`]), panels back to back; `None` where
/// one is −128 (or the panels are cut short).
#[cfg(target_arch = "aarch64")]
fn k4_pairs_of(k_major: &[u8], panel: usize, k: usize, panels: usize) -> Option<Vec<u8>> {
    let len = pairs_panel_len(k);
    let mut out = vec![0u8; panels * len];
    if k == 0 || panels == 0 {
        return Some(out);
    }
    if panel < k * LANES || k_major.len() < (panels - 1) * panel + k * LANES {
        return None;
    }
    for (src, dst) in k_major.chunks(panel).zip(out.chunks_exact_mut(len)) {
        for (kk, row) in src[..k * LANES].chunks_exact(LANES).enumerate() {
            for (lane, &v) in row.iter().enumerate() {
                if v == i8::MIN as u8 {
                    return None;
                }
                dst[kk / 4 * 4 * LANES + lane * 4 + kk % 4] = v;
            }
        }
    }
    Some(out)
}

/// The loop of [`Tile::Pairs`]'s two tiles, for each half of the weights' lanes (x15):
/// the accumulators v16–v31 zeroed; `pairs` times (x14) the activations' two blocks
/// (v0–v3, at x16) and the four weight lanes' 4 values in each block, each lane's
/// repeated across a register (`ld4r`: v4–v7 and v8–v11, at x17, blocks 32 bytes
/// apart: x8), so that one multiply meets four lanes of activations; accumulator
/// 16 + 4j + q gets lanes 2q and 2q + 1 of the activations against weight lane j, each
/// of its 4 values a sum over the pairs of k's.
#[cfg(target_arch = "aarch64")]
macro_rules! pairs_asm {
    ($acts:expr, $weights:expr, $pairs:expr, $out:expr, $row_stride:expr, $($store:tt)*) => {
        std::arch::asm!(
            "mov x15, #2",
            "0:",
            "movi v16.4s, #0", "movi v17.4s, #0", "movi v18.4s, #0", "movi v19.4s, #0",
            "movi v20.4s, #0", "movi v21.4s, #0", "movi v22.4s, #0", "movi v23.4s, #0",
            "movi v24.4s, #0", "movi v25.4s, #0", "movi v26.4s, #0", "movi v27.4s, #0",
            "movi v28.4s, #0", "movi v29.4s, #0", "movi v30.4s, #0", "movi v31.4s, #0",
            "mov x16, x9",
            "mov x17, x10",
            "mov x14, x11",
            "cbz x14, 2f",
            "1:",
            "ld1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [x16], #64",
            "ld4r {{v4.4s, v5.4s, v6.4s, v7.4s}}, [x17], x8",
            "ld4r {{v8.4s, v9.4s, v10.4s, v11.4s}}, [x17], x8",
            pairs_asm!(@lane v4, v8, v16, v17, v18, v19),
            pairs_asm!(@lane v5, v9, v20, v21, v22, v23),
            pairs_asm!(@lane v6, v10, v24, v25, v26, v27),
            pairs_asm!(@lane v7, v11, v28, v29, v30, v31),
            "subs x14, x14, #1",
            "b.ne 1b",
            "2:",
            $($store)*
            "add x10, x10, #16",
            "subs x15, x15, #1",
            "b.ne 0b",
            inout("x9") $acts => _,
            inout("x10") $weights => _,
            in("x11") $pairs,
            inout("x12") $out => _,
            in("x13") $row_stride * 4,
            in("x8") 32usize,
            out("x14") _,
            out("x15") _,
            out("x16") _,
            out("x17") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            clobber_abi("C"),
            options(nostack),
        )
    };
    // Four rows of 4 sums (weight lanes j against 4 activation lanes) transposed and
    // stored as 4 rows of the output, `x13` apart from `x16` on.
    (@transposed $r0:ident, $r1:ident, $r2:ident, $r3:ident) => {
        concat!(
            "trn1 v8.4s, ", stringify!($r0), ".4s, ", stringify!($r1), ".4s\n",
            "trn2 v9.4s, ", stringify!($r0), ".4s, ", stringify!($r1), ".4s\n",
            "trn1 v10.4s, ", stringify!($r2), ".4s, ", stringify!($r3), ".4s\n",
            "trn2 v11.4s, ", stringify!($r2), ".4s, ", stringify!($r3), ".4s\n",
            "trn1 v12.2d, v8.2d, v10.2d\n",
            "trn1 v13.2d, v9.2d, v11.2d\n",
            "trn2 v14.2d, v8.2d, v10.2d\n",
            "trn2 v15.2d, v9.2d, v11.2d\n",
            "st1 {{v12.4s}}, [x16], x13\n",
            "st1 {{v13.4s}}, [x16], x13\n",
            "st1 {{v14.4s}}, [x16], x13\n",
            "st1 {{v15.4s}}, [x16], x13",
        )
    };
    // One weight lane (its two blocks `w`, `w1`) against the activations' 8 lanes.
    (@lane $w:ident, $w1:ident, $a0:ident, $a1:ident, $a2:ident, $a3:ident) => {
        concat!(
            "smull v12.8h, v0.8b, ", stringify!($w), ".8b\n",
            "smull2 v13.8h, v0.16b, ", stringify!($w), ".16b\n",
            "smull v14.8h, v1.8b, ", stringify!($w), ".8b\n",
            "smull2 v15.8h, v1.16b, ", stringify!($w), ".16b\n",
            "smlal v12.8h, v2.8b, ", stringify!($w1), ".8b\n",
            "smlal2 v13.8h, v2.16b, ", stringify!($w1), ".16b\n",
            "smlal v14.8h, v3.8b, ", stringify!($w1), ".8b\n",
            "smlal2 v15.8h, v3.16b, ", stringify!($w1), ".16b\n",
            "sadalp ", stringify!($a0), ".4s, v12.8h\n",
            "sadalp ", stringify!($a1), ".4s, v13.8h\n",
            "sadalp ", stringify!($a2), ".4s, v14.8h\n",
            "sadalp ", stringify!($a3), ".4s, v15.8h",
        )
    };
}

/// One 8×8 tile of [`Tile::Pairs`], row c at `out + c·row_stride`. With the weights on
/// the rows' side, row c is weight lane c against the activations' 8 lanes; on the
/// lanes' side (`weights_are_lanes`), row c is activation lane c against the weights' 8
/// lanes, each half of the weights' lanes a 4 × 8 block transposed as two 4×4 (`trn1`,
/// `trn2`).
///
/// # Safety
/// `acts` and `weights` hold `64·pairs` bytes, `out` 8 rows of 8 values `row_stride`
/// apart.
#[cfg(target_arch = "aarch64")]
unsafe fn pairs_tile(
    acts: *const u8,
    weights: *const u8,
    pairs: usize,
    out: *mut i32,
    row_stride: usize,
    weights_are_lanes: bool,
) {
    // SAFETY: the caller's.
    unsafe {
        if weights_are_lanes {
            pairs_asm!(
                acts,
                weights,
                pairs,
                out,
                row_stride,
                // Weight lane j against activation lanes 0–3 (v0–v3) and 4–7 (v4–v7).
                "addp v0.4s, v16.4s, v17.4s",
                "addp v4.4s, v18.4s, v19.4s",
                "addp v1.4s, v20.4s, v21.4s",
                "addp v5.4s, v22.4s, v23.4s",
                "addp v2.4s, v24.4s, v25.4s",
                "addp v6.4s, v26.4s, v27.4s",
                "addp v3.4s, v28.4s, v29.4s",
                "addp v7.4s, v30.4s, v31.4s",
                "mov x16, x12",
                pairs_asm!(@transposed v0, v1, v2, v3),
                pairs_asm!(@transposed v4, v5, v6, v7),
                // The next half of the weights' lanes: 4 values to the right.
                "add x12, x12, #16",
            );
        } else {
            pairs_asm!(
                acts,
                weights,
                pairs,
                out,
                row_stride,
                // Weight lane j: the sums of its accumulators' pairs, 8 lanes, one row.
                "addp v0.4s, v16.4s, v17.4s",
                "addp v1.4s, v18.4s, v19.4s",
                "st1 {{v0.4s, v1.4s}}, [x12], x13",
                "addp v0.4s, v20.4s, v21.4s",
                "addp v1.4s, v22.4s, v23.4s",
                "st1 {{v0.4s, v1.4s}}, [x12], x13",
                "addp v0.4s, v24.4s, v25.4s",
                "addp v1.4s, v26.4s, v27.4s",
                "st1 {{v0.4s, v1.4s}}, [x12], x13",
                "addp v0.4s, v28.4s, v29.4s",
                "addp v1.4s, v30.4s, v31.4s",
                "st1 {{v0.4s, v1.4s}}, [x12], x13",
            );
        }
    }
}

/// Where one operand of the product comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Operand {
    /// The node's input of this slot (activations, or weights from a constant node).
    Input(usize),
    /// Weights tract baked into its op: panels of 8 lanes, as many bytes as the tile
    /// reads ([`Tile::panel_len`]), back to back.
    Baked(Arc<Vec<u8>>),
}

/// One side of the output matrix: its operand, its lanes (rows of the operand) and the
/// stride of its axis in the output.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Side {
    operand: Operand,
    lanes: usize,
    stride: usize,
}

/// tract's `OptMatMul` of two packed i8 operands (activations and weights), computed by
/// [`Kernel`] (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DotProduct {
    c_fact: TypedFact,
    /// The k's of the product.
    k: usize,
    /// The side whose axis is contiguous in the output (the tile's lanes), and the other
    /// (the tile's rows).
    lanes: Side,
    rows: Side,
    /// Whether the tile's lanes are tract's m (rows of the output, `a`'s lanes).
    lanes_are_m: bool,
    /// What tract's kernel does to the tile between the product and the store.
    steps: Vec<Step>,
    tile: Tile,
}

/// One of tract's steps between the product and the store, on the i32 tile, with the
/// generic kernel's arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    /// A binary op (see [`bin`]) with an input's values per m, per n or one for all.
    Bin {
        /// The node's input that holds the values.
        input: usize,
        op: KernelOp,
        along: Along,
    },
    /// tract's fixed-point scale of a product that requantizes (`Scaler · value`), on
    /// the whole tile ([`scale`]): only where `pair_products` saves more than it costs
    /// (on a Pi 4; on a Pi 5, against tract's vector code, it cost ResNet18 more than it
    /// saved).
    Scale(Scaler),
}

/// Where a step's values lie: one per m (a row of tract's output), one per n, or one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Along {
    M,
    N,
    All,
}

/// A step's values on a whole tile: one for all, one per lane, or one per row.
#[derive(Clone, Copy)]
enum Per<'a> {
    All(i32),
    Lane(&'a [i32; LANES]),
    Row(&'a [i32; LANES]),
}

impl Per<'_> {
    /// `t = f(t, value)` over the tile, `value` as it lies.
    #[inline(always)]
    fn each(self, tile: &mut [i32; LANES * LANES], f: impl Fn(i32, i32) -> i32) {
        match self {
            Per::All(v) => tile.iter_mut().for_each(|t| *t = f(*t, v)),
            Per::Lane(values) => {
                for row in tile.chunks_exact_mut(LANES) {
                    row.iter_mut().zip(values).for_each(|(t, v)| *t = f(*t, *v));
                }
            }
            Per::Row(values) => {
                for (row, v) in tile.chunks_exact_mut(LANES).zip(values) {
                    row.iter_mut().for_each(|t| *t = f(*t, *v));
                }
            }
        }
    }
}

/// tract's generic kernel's `BinOp` on i32, `f(operand, value)`: `Sub` takes the tile's
/// `value` from the `operand`, `SubF` the other way round.
#[inline(always)]
fn bin(op: KernelOp, value: i32, operand: i32) -> i32 {
    match op {
        KernelOp::Min => operand.min(value),
        KernelOp::Max => operand.max(value),
        KernelOp::Add => operand.wrapping_add(value),
        KernelOp::Mul => operand.wrapping_mul(value),
        KernelOp::Sub => operand.wrapping_sub(value),
        KernelOp::SubF => value.wrapping_sub(operand),
    }
}

/// What the output is stored as: i32, or one byte (i8, u8 and their quantized types:
/// the i32's low byte, as tract's store).
trait Cell: Copy + Send {
    fn of(v: i32) -> Self;
    /// The kernel's tile straight into `out` where this is i32; `false` elsewhere.
    fn tile_into(_: Tile, _: &[u8], _: &[u8], _: usize, _: &mut [Self], _: usize) -> bool {
        false
    }
}

impl Cell for i32 {
    fn of(v: i32) -> i32 {
        v
    }
    fn tile_into(t: Tile, x: &[u8], y: &[u8], k: usize, out: &mut [i32], rs: usize) -> bool {
        t.tile(x, y, k, out, rs);
        true
    }
}

impl Cell for u8 {
    fn of(v: i32) -> u8 {
        v as u8
    }
}

/// How tract packed an i8 operand for its kernel, where a [`Tile`] reads it: 8 lanes to
/// a panel, 4 k's side by side (its dot-product kernel's) or k-major (its others').
fn packing_of(format: &dyn MMMInputFormat) -> Option<Packing> {
    if format
        .downcast_ref::<PackedI8K4>()
        .is_some_and(|f| f.r == LANES)
    {
        Some(Packing::K4)
    } else if format
        .downcast_ref::<PackedFormat>()
        .is_some_and(|f| f.r == LANES && f.dt.unquantized() == DatumType::I8)
    {
        Some(Packing::KMajor)
    } else {
        None
    }
}

/// A packed value of `k` k's and `mn` lanes as `tile` reads it, or `None`: its bytes and
/// panel length.
fn eager(value: &dyn MMMInputValue, tile: Tile, k: usize, mn: usize) -> Option<(&[u8], usize)> {
    let eager = value.downcast_ref::<EagerPackedInput>()?;
    let bytes = eager.packed.as_bytes();
    (packing_of(value.format()) == Some(tile.packing())
        && value.k() == k
        && eager.mn == mn
        && eager.panel_bytes >= tile.panel_len(k)
        && bytes.len() >= mn.div_ceil(LANES) * eager.panel_bytes)
        .then_some((bytes, eager.panel_bytes))
}

impl DotProduct {
    /// The op for the `OptMatMul` node `id` computed by `kernel`, or `None` where it
    /// does not apply (see the module docs).
    pub(crate) fn for_node(
        model: &TypedModel,
        id: usize,
        kernel: Kernel,
    ) -> TractResult<Option<DotProduct>> {
        Self::for_node_scaled(model, id, kernel, false)
    }

    /// [`Self::for_node`], also over tract's fixed-point scale where `scales`.
    fn for_node_scaled(
        model: &TypedModel,
        id: usize,
        kernel: Kernel,
        scales: bool,
    ) -> TractResult<Option<DotProduct>> {
        let node = model.node(id);
        let Some(op) = node.op_as::<OptMatMul>() else {
            return Ok(None);
        };
        let Some(shape) = op.c_fact.shape.as_concrete() else {
            return Ok(None);
        };
        let (Some(m_axis), Some(n_axis)) = (op.c_m_axis, op.c_n_axis) else {
            return Ok(None);
        };
        let (m, n) = (shape[m_axis], shape[n_axis]);
        // One matrix (every other axis 1) of i32.
        let dt = op.c_fact.datum_type;
        if !(dt == DatumType::I32 || (dt.is_integer() && dt.size_of() == 1))
            || m_axis == n_axis
            || m == 0
            || n == 0
            || shape.iter().product::<usize>() != m * n
        {
            return Ok(None);
        }
        let mode = op.mode_picker.pick(n)?;
        let [
            ProtoFusedSpec::AddMatMul {
                geo,
                a,
                b,
                packings,
            },
            between @ ..,
            ProtoFusedSpec::Store(_),
        ] = &op.micro_ops[..]
        else {
            return Ok(None);
        };
        // The steps between, each input's values i32 and as many as the step takes.
        let takes = |v: usize, len: usize| -> TractResult<bool> {
            let Some(outlet) = node.inputs.get(v) else {
                return Ok(false);
            };
            let fact = model.outlet_fact(*outlet)?;
            Ok(fact.datum_type == DatumType::I32
                && fact
                    .shape
                    .as_concrete()
                    .is_some_and(|s| s.iter().product::<usize>() == len))
        };
        let mut steps = vec![];
        for step in between {
            let (input, op, along, len) = match step {
                ProtoFusedSpec::BinPerRow(v, op, _) => (*v, *op, Along::M, m),
                ProtoFusedSpec::BinPerCol(v, op, _) => (*v, *op, Along::N, n),
                ProtoFusedSpec::BinScalar(v, op) => (*v, *op, Along::All, 1),
                // tract's generic arithmetic has no `Native` rounding.
                ProtoFusedSpec::Scaler(scaler) if scales && scaler.policy != Rounding::Native => {
                    steps.push(Step::Scale(*scaler));
                    continue;
                }
                _ => return Ok(None),
            };
            if !takes(input, len)? {
                return Ok(None);
            }
            steps.push(Step::Bin { input, op, along });
        }
        let (Ok(k), Some(mmm), Some((packing, None))) =
            (geo.k.to_usize(), op.mmm.get(mode), packings.get(mode))
        else {
            return Ok(None);
        };
        let Some((a_format, b_format)) = mmm.packings().get(*packing) else {
            return Ok(None);
        };
        let packing = packing_of(&**a_format);
        let Some(tile) = packing
            .filter(|p| packing_of(&**b_format) == Some(*p))
            .and_then(|p| kernel.for_packing(p))
        else {
            return Ok(None);
        };
        if k == 0 {
            return Ok(None);
        }
        // Each operand an i8 input, or weights tract baked (kept, panels back to back).
        let operand = |o: &MatMulOperand, mn: usize| -> TractResult<Option<Operand>> {
            Ok(match o {
                MatMulOperand::Input(i) => {
                    let fact = model.outlet_fact(*node.inputs.get(*i).context("input")?)?;
                    // i8, or i8 with a zero point of 0 (its scale is the epilogue's).
                    let dt = fact.datum_type;
                    (dt.unquantized() == DatumType::I8 && dt.zp_scale().0 == 0)
                        .then_some(Operand::Input(*i))
                }
                MatMulOperand::Const(v) => eager(&**v, tile, k, mn).map(|(bytes, panel)| {
                    let len = tile.panel_len(k);
                    let panels = bytes.chunks(panel).take(mn.div_ceil(LANES));
                    Operand::Baked(Arc::new(panels.flat_map(|p| &p[..len]).copied().collect()))
                }),
            })
        };
        let (Some(a), Some(b)) = (operand(a, m)?, operand(b, n)?) else {
            return Ok(None);
        };
        let strides = Tensor::natural_strides(shape);
        let a = Side {
            operand: a,
            lanes: m,
            stride: strides[m_axis] as usize,
        };
        let b = Side {
            operand: b,
            lanes: n,
            stride: strides[n_axis] as usize,
        };
        // The tile's lanes along the output's contiguous axis.
        let lanes_are_m = !(b.stride == 1 && a.stride != 1);
        let (lanes, rows) = if lanes_are_m { (a, b) } else { (b, a) };
        Ok(Some(DotProduct {
            c_fact: op.c_fact.clone(),
            k,
            lanes,
            rows,
            lanes_are_m,
            steps,
            tile,
        }))
    }

    /// One side's panels: [`Tile::panel_len`] bytes each, `panel` bytes apart.
    fn panels<'a>(
        &'a self,
        side: &'a Side,
        inputs: &'a [TValue],
    ) -> TractResult<(&'a [u8], usize)> {
        match &side.operand {
            Operand::Baked(bytes) => Ok((bytes, self.tile.panel_len(self.k))),
            Operand::Input(i) => {
                let values = inputs[*i].try_storage_as::<PackedMatrixStorage>()?.values();
                let [packed] = values else {
                    bail!(
                        "edgetune.DotProduct: input {i} holds {} matrices",
                        values.len()
                    );
                };
                eager(&**packed, self.tile, self.k, side.lanes).with_context(|| {
                    format!(
                        "edgetune.DotProduct: input {i}, {packed:?}, is not the planned {} \
                             lanes of {} k's",
                        side.lanes, self.k
                    )
                })
            }
        }
    }
}

impl Op for DotProduct {
    fn name(&self) -> StaticName {
        "edgetune.DotProduct".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{} × {} lanes, k {}, {:?}",
            self.rows.lanes, self.lanes.lanes, self.k, self.tile
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DotProduct {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = self.panels(&self.lanes, &inputs)?;
        let y = self.panels(&self.rows, &inputs)?;
        let plains = (self.steps.iter())
            .map(|step| match step {
                Step::Bin { input, .. } => inputs[*input].try_as_plain_ram().map(Some),
                Step::Scale(_) => Ok(None),
            })
            .collect::<TractResult<Vec<_>>>()?;
        let steps = (self.steps.iter().zip(&plains))
            .map(|(step, values)| match values {
                Some(values) => Ok((step, values.as_slice::<i32>()?)),
                None => Ok((step, &[][..])),
            })
            .collect::<TractResult<Vec<_>>>()?;
        let shape = self.c_fact.shape.as_concrete().context("symbolic output")?;
        let dt = self.c_fact.datum_type;
        let mut c = if self.covers(shape) {
            // SAFETY: `fill_all` writes every value (`covers`) before anything reads one.
            unsafe { Tensor::uninitialized_dt(dt, shape)? }
        } else {
            Tensor::zero_dt(dt, shape)?
        };
        {
            let mut plain = c.try_as_plain_ram_mut()?;
            if dt == DatumType::I32 {
                self.fill_all(x, y, &steps, plain.as_slice_mut::<i32>()?)?;
            } else {
                self.fill_all(x, y, &steps, plain.as_bytes_mut())?;
            }
        }
        Ok(tvec!(c.into_tvalue()))
    }
}

type Panels<'a> = (&'a [u8], usize);

impl DotProduct {
    /// Whether the tiles write every value of an output of `shape`: row `r`, lane `l` is
    /// at `r × rows' stride + l × lanes' stride`, one value each when the two strides
    /// are those of the rows × lanes matrix the output holds. (An output allocated
    /// without zeroing it saves a pass over it: 1.1 MB cleared per MobileNetV2
    /// inference, with the epilogues'.)
    fn covers(&self, shape: &[usize]) -> bool {
        let (rows, lanes) = (self.rows.lanes, self.lanes.lanes);
        let strides = (self.rows.stride, self.lanes.stride);
        shape.iter().product::<usize>() == rows * lanes
            && (strides == (lanes, 1) || strides == (1, rows))
    }

    /// Every tile into `out`.
    fn fill_all<T: Cell>(
        &self,
        x: Panels,
        y: Panels,
        steps: &[(&Step, &[i32])],
        out: &mut [T],
    ) -> TractResult<()> {
        let (lanes, rows) = (self.lanes.lanes, self.rows.lanes);
        let panels = rows.div_ceil(LANES);
        if (self.lanes.stride, self.rows.stride) == (1, lanes) {
            // Rows of lanes, one after the other: the whole panels of rows on tract's
            // threads (`Backbone::with_threads`; inline without), then the last.
            let whole = rows / LANES;
            let (head, tail) = out.split_at_mut(whole * LANES * lanes);
            let macs = rows * lanes * self.k;
            multithread::par_chunks_mut(head, LANES * lanes, macs, |first, chunk| {
                let count = chunk.len() / (LANES * lanes);
                self.fill(x, y, steps, first..first + count, chunk, first);
                Ok(())
            })?;
            self.fill(x, y, steps, whole..panels, tail, whole);
        } else {
            self.fill(x, y, steps, 0..panels, out, 0);
        }
        Ok(())
    }

    /// The tiles of the panels `rows` of the rows' side, into `out`, which starts at the
    /// first row of panel `first`.
    fn fill<T: Cell>(
        &self,
        (x, x_panel): Panels,
        (y, y_panel): Panels,
        steps: &[(&Step, &[i32])],
        rows: std::ops::Range<usize>,
        out: &mut [T],
        first: usize,
    ) {
        let (ls, rs) = (self.lanes.stride, self.rows.stride);
        let lanes = self.lanes.lanes;
        for q in rows {
            let y = &y[q * y_panel..];
            let (r0, rn) = (q * LANES, LANES.min(self.rows.lanes - q * LANES));
            for (p, x) in x.chunks(x_panel).take(lanes.div_ceil(LANES)).enumerate() {
                let (l0, ln) = (p * LANES, LANES.min(lanes - p * LANES));
                let at = (q - first) * LANES * rs + l0 * ls;
                if steps.is_empty()
                    && (ln, rn, ls) == (LANES, LANES, 1)
                    && T::tile_into(self.tile, x, y, self.k, &mut out[at..], rs)
                {
                    // A whole tile, stored by the kernel.
                    continue;
                }
                self.tile_then_store(x, y, steps, (r0, rn), (l0, ln), &mut out[at..]);
            }
        }
    }

    /// One tile through a buffer: its steps, then its `rn` rows of `ln` lanes stored at
    /// `out` (out of line: the loop above stays small).
    #[inline(never)]
    fn tile_then_store<T: Cell>(
        &self,
        x: &[u8],
        y: &[u8],
        steps: &[(&Step, &[i32])],
        (r0, rn): (usize, usize),
        (l0, ln): (usize, usize),
        out: &mut [T],
    ) {
        let (ls, rs) = (self.lanes.stride, self.rows.stride);
        let mut tile = [0i32; LANES * LANES];
        self.tile.tile(x, y, self.k, &mut tile, LANES);
        for &(step, values) in steps {
            self.apply(step, values, &mut tile, (r0, rn), (l0, ln));
        }
        if (rn, ln, ls) == (LANES, LANES, 1) {
            // A whole tile of whole rows: loops of fixed length, in vectors.
            for (row, to) in tile.chunks_exact(LANES).zip(out.chunks_mut(rs)) {
                for (t, v) in to[..LANES].iter_mut().zip(row) {
                    *t = T::of(*v);
                }
            }
            return;
        }
        for (r, row) in tile.chunks_exact(LANES).take(rn).enumerate() {
            for (i, v) in row[..ln].iter().enumerate() {
                out[r * rs + i * ls] = T::of(*v);
            }
        }
    }

    /// One step, with its `values`, on the tile of rows `r0..r0 + rn` and lanes
    /// `l0..l0 + ln`: on the whole tile, each op its own loop of fixed length (the
    /// values past `rn` and `ln` are never stored, so a partial tile's are whatever the
    /// step makes of them).
    fn apply(
        &self,
        step: &Step,
        values: &[i32],
        tile: &mut [i32; LANES * LANES],
        (r0, rn): (usize, usize),
        (l0, ln): (usize, usize),
    ) {
        let (op, along) = match step {
            Step::Bin { op, along, .. } => (*op, *along),
            Step::Scale(scaler) => return scale(scaler, tile),
        };
        let mut padded = [0i32; LANES];
        let per: Per = match (along, self.lanes_are_m) {
            (Along::All, _) => Per::All(values[0]),
            (Along::M, true) | (Along::N, false) => Per::Lane(eight(values, (l0, ln), &mut padded)),
            (Along::M, false) | (Along::N, true) => Per::Row(eight(values, (r0, rn), &mut padded)),
        };
        // `bin` of one op each, so that each loop has its op inlined.
        match op {
            KernelOp::Min => per.each(tile, |t, v| bin(KernelOp::Min, t, v)),
            KernelOp::Max => per.each(tile, |t, v| bin(KernelOp::Max, t, v)),
            KernelOp::Add => per.each(tile, |t, v| bin(KernelOp::Add, t, v)),
            KernelOp::Mul => per.each(tile, |t, v| bin(KernelOp::Mul, t, v)),
            KernelOp::Sub => per.each(tile, |t, v| bin(KernelOp::Sub, t, v)),
            KernelOp::SubF => per.each(tile, |t, v| bin(KernelOp::SubF, t, v)),
        }
    }
}

/// The `n` values of `values` from `first`, as 8: in place where there are 8, else
/// copied into `padded` (its values past `n` are zeros, for lanes or rows never stored).
fn eight<'a>(
    values: &'a [i32],
    (first, n): (usize, usize),
    padded: &'a mut [i32; LANES],
) -> &'a [i32; LANES] {
    if n == LANES {
        return values[first..first + LANES].try_into().expect("8 values");
    }
    padded[..n].copy_from_slice(&values[first..first + n]);
    padded
}

/// `tile`'s values times `scaler` (tract's fixed-point scale, its generic arithmetic),
/// in NEON for the rounding to even with a multiplier (tract's requantization's), four
/// values a step: the 64-bit products' magnitudes rounded as tract rounds them, then
/// their signs, then the low 32 bits.
fn scale(scaler: &Scaler, tile: &mut [i32; LANES * LANES]) {
    #[cfg(target_arch = "aarch64")]
    if let (Some(mult), Rounding::Even, shift @ 1..=62) =
        (scaler.mult, scaler.policy, scaler.shift + 31)
    {
        use std::arch::aarch64::*;
        // SAFETY: NEON is part of every aarch64 target; each step loads and stores the
        // 4 values of its own chunk.
        unsafe {
            let right = vdupq_n_s64(-(shift as i64));
            let half_less_one = vdupq_n_s64((1i64 << (shift - 1)) - 1);
            let one = vdupq_n_s64(1);
            // sign(v) · ((|v| + half − 1 + (|v| >> shift & 1)) >> shift)
            let round = |v: int64x2_t| {
                let a = vabsq_s64(v);
                let odd = vandq_s64(vshlq_s64(a, right), one);
                let r = vshlq_s64(vaddq_s64(a, vaddq_s64(half_less_one, odd)), right);
                let sign = vshrq_n_s64::<63>(v);
                vsubq_s64(veorq_s64(r, sign), sign)
            };
            for four in tile.chunks_exact_mut(4) {
                let x = vld1q_s32(four.as_ptr());
                let low = round(vmull_n_s32(vget_low_s32(x), mult));
                let high = round(vmull_high_n_s32(x, mult));
                vst1q_s32(four.as_mut_ptr(), vmovn_high_s64(vmovn_s64(low), high));
            }
        }
        return;
    }
    tile.iter_mut().for_each(|t| *t = *scaler * *t);
}

impl TypedOp for DotProduct {
    as_op!();

    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.c_fact.clone()))
    }
}

/// On a CPU without the dot product (a Pi 4): makes each [`DotProduct`] of widening
/// tiles [`Tile::Pairs`] where its weights are constant (baked into the op or a constant
/// input) and none is −128, and its activations come from edgetune's packing
/// ([`super::PackColumns`], [`super::PackPatches`]) for it alone or for other products
/// all paired too, which then packs them in `K4`; does the same for tract's products
/// that requantize (its fixed-point scale, [`Step::Scale`]) where all of that holds.
/// The sums are the same, so the outputs stay tract's bit for bit. Returns how many
/// products are in pairs, and how many of them were tract's products that requantize.
#[cfg(target_arch = "aarch64")]
pub(crate) fn pair_products(model: &mut TypedModel) -> TractResult<(usize, usize)> {
    // Each product that could be paired, by the node that packs its activations.
    let mut by_packer: std::collections::BTreeMap<usize, Vec<(usize, Pairing)>> =
        Default::default();
    for id in 0..model.nodes().len() {
        let node = model.node(id);
        let op = match node.op_as::<DotProduct>() {
            Some(op) => Some(op.clone()),
            None if node.op_is::<OptMatMul>() => {
                DotProduct::for_node_scaled(model, id, Kernel::Native, true)?
            }
            None => None,
        };
        if let Some(pairing) = op.and_then(|op| pairing(model, id, op)) {
            by_packer
                .entry(pairing.packer.0)
                .or_default()
                .push((id, pairing));
        }
    }
    // A packing changes only where every product that reads it is paired (a text
    // encoder's query, key and value projections read one).
    let (mut paired, mut requantizing) = (0, 0);
    for (packer, pairings) in by_packer {
        let readers = &model.node(packer).outputs[0].successors;
        if readers.len() != pairings.len()
            || !readers
                .iter()
                .all(|r| pairings.iter().any(|(id, _)| *id == r.node))
        {
            continue;
        }
        for (id, pairing) in pairings {
            requantizing += model.node(id).op_is::<OptMatMul>() as usize;
            pairing.apply(model, id)?;
            paired += 1;
        }
    }
    Ok((paired, requantizing))
}

/// What makes the product at node `id` one of [`Tile::Pairs`] (see `pair_products`).
#[cfg(target_arch = "aarch64")]
struct Pairing {
    op: DotProduct,
    /// The activations' packing node and its op in `K4`.
    packer: (usize, Box<dyn TypedOp>),
    /// The weights in `K4`, and the outlet of the constant that holds them where they
    /// are an input.
    weights: (Vec<u8>, Option<OutletId>),
    weights_are_lanes: bool,
}

#[cfg(target_arch = "aarch64")]
fn pairing(model: &TypedModel, id: usize, op: DotProduct) -> Option<Pairing> {
    use super::{PackColumns, PackPatches};
    if op.tile != Tile::Widening {
        return None;
    }
    let node = model.node(id);
    let packer = |side: &Side| -> Option<(usize, Box<dyn TypedOp>)> {
        let Operand::Input(i) = side.operand else {
            return None;
        };
        // Read by other products too, it is checked in `pair_products`.
        let outlet = *node.inputs.get(i)?;
        if outlet.slot != 0 || model.output_outlets().ok()?.contains(&outlet) {
            return None;
        }
        let producer = model.node(outlet.node);
        let op: Box<dyn TypedOp> = match producer.op_as::<PackColumns>() {
            Some(p) => Box::new(p.in_pairs()?),
            None => Box::new(producer.op_as::<PackPatches>()?.in_pairs()?),
        };
        Some((outlet.node, op))
    };
    // From tract's k-major panels. Built here, before `pair_products` knows whether
    // the packing's other readers pair too, because whether they can be (no −128)
    // decides which side is the weights; a group left as it is drops them (at load).
    let weights = |side: &Side| -> Option<(Vec<u8>, Option<OutletId>)> {
        let (bytes, panel, input) = match &side.operand {
            Operand::Baked(w) => (&w[..], Tile::Widening.panel_len(op.k), None),
            Operand::Input(i) => {
                let outlet = *node.inputs.get(*i)?;
                let fact = model.outlet_fact(outlet).ok()?;
                let storage = fact.konst.as_ref()?.try_storage_as::<PackedMatrixStorage>();
                let [value] = storage.ok()?.values() else {
                    return None;
                };
                let (bytes, panel) = eager(&**value, Tile::Widening, op.k, side.lanes)?;
                (bytes, panel, Some(outlet))
            }
        };
        let panels = side.lanes.div_ceil(LANES);
        Some((k4_pairs_of(bytes, panel, op.k, panels)?, input))
    };
    let (weights_are_lanes, weights, packer) = match (weights(&op.lanes), packer(&op.rows)) {
        (Some(w), Some(p)) => (true, w, p),
        _ => (false, weights(&op.rows)?, packer(&op.lanes)?),
    };
    Some(Pairing {
        op,
        packer,
        weights,
        weights_are_lanes,
    })
}

#[cfg(target_arch = "aarch64")]
impl Pairing {
    /// The product at node `id`, its packing and its constant weights rewritten.
    fn apply(self, model: &mut TypedModel, id: usize) -> TractResult<()> {
        let Pairing {
            mut op,
            packer: (pack_node, packer),
            weights: (packed, input),
            weights_are_lanes,
        } = self;
        let side = match weights_are_lanes {
            true => &mut op.lanes,
            false => &mut op.rows,
        };
        // A constant this product alone reads is repacked in place; other weights are
        // kept in the op.
        match input.filter(|o| super::only_reader(model, *o).is_some_and(|r| r.id == id)) {
            Some(outlet) if let Some(konst) = k4_const(model, outlet, side, op.k, &packed)? => {
                let fact = konst.output_facts(&[])?.remove(0);
                let node = model.node_mut(outlet.node);
                node.op = Box::new(konst);
                node.outputs[outlet.slot].fact = fact;
            }
            _ => side.operand = Operand::Baked(Arc::new(packed)),
        }
        op.tile = Tile::Pairs { weights_are_lanes };
        model.node_mut(pack_node).op = packer;
        model.node_mut(id).op = Box::new(op);
        Ok(())
    }
}

/// The constant at `outlet` (a `Const` of tract's packed weights, for `side`) made one
/// of `bytes`, the same weights packed for [`Tile::Pairs`], its fact saying so; `None`
/// where it is not such a constant.
#[cfg(target_arch = "aarch64")]
fn k4_const(
    model: &TypedModel,
    outlet: OutletId,
    side: &Side,
    k: usize,
    bytes: &[u8],
) -> TractResult<Option<tract_nnef::tract_core::ops::konst::Const>> {
    use tract_nnef::tract_core::ops::konst::Const;
    use tract_nnef::tract_core::ops::matmul::pack::DynPackedExoticFact;
    let fact = model.outlet_fact(outlet)?;
    let (Some(_), Some(konst), Some(_)) = (
        model.node(outlet.node).op_as::<Const>(),
        fact.konst.as_ref(),
        fact.exotic_fact()
            .and_then(|f| f.downcast_ref::<DynPackedExoticFact>()),
    ) else {
        return Ok(None);
    };
    let format = || -> Box<dyn MMMInputFormat> { Box::new(PackedI8K4::new(LANES)) };
    let len = pairs_panel_len(k);
    let value = super::packed_matrix(format(), k, side.lanes, len, 16, |dst| {
        dst.copy_from_slice(bytes)
    })?;
    let tensor = PackedMatrixStorage::new_batched(konst.shape(), tvec![value])
        .into_tensor(konst.datum_type());
    let exotic = DynPackedExoticFact {
        k: k.to_dim(),
        mn: side.lanes.to_dim(),
        packers: vec![format()],
    };
    Ok(Some(Const::new_with_exotic_fact(
        Arc::new(tensor),
        Box::new(exotic),
    )?))
}

/// Replaces each `OptMatMul` of `model` that [`DotProduct`] covers by one computed with
/// `kernel`; returns how many.
pub(crate) fn dot_products_with(model: &mut TypedModel, kernel: Kernel) -> TractResult<usize> {
    super::replace_ops(model, |model, id| DotProduct::for_node(model, id, kernel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::patches::tests::{CASES, case, model_to, random_i8, same_outputs};
    use crate::rng::Rng;

    /// Whether tract's plan of `model` has products this step covers (the packing tract
    /// picks depends on the CPU: the dot product's on aarch64, VNNI's on x86).
    fn covered(model: &TypedModel) -> TractResult<usize> {
        let plan = crate::plan::optimize_with(model.clone(), None)?.0;
        let mut n = 0;
        for id in 0..plan.nodes().len() {
            n += DotProduct::for_node(&plan, id, Kernel::Portable)?.is_some() as usize;
        }
        Ok(n)
    }

    /// Convolutions to i32 (ONNX's `ConvInteger`: the products alone, as the quantizer
    /// writes them) and to i8 (tract's requantization: bias, scale, clamp, zero-point
    /// corrections), 1×1 over one row and others through the packed patches: both
    /// kernels give tract's bits, and the step applies wherever tract's plan has the dot
    /// product's packing and steps it covers.
    #[test]
    fn dot_products_give_tracts_bits() -> TractResult<()> {
        let mut rng = Rng::new(12);
        let pointwise =
            |input, outputs, zero| case(input, outputs, 1, [1, 1], [1, 1], [1, 1], [0; 4], zero);
        let pointwise = [
            pointwise([8, 16, 16], 48, 0),
            pointwise([48, 8, 8], 8, 0),
            pointwise([24, 5, 3], 13, 0),
            pointwise([5, 3, 3], 3, 0),
            pointwise([16, 4, 4], 8, 3),
        ];
        let kernels = [Some(Kernel::Portable), Kernel::of_this_cpu()];
        let mut replaced = [0; 2];
        let mut pairs = 0;
        for case in CASES.iter().chain(&pointwise) {
            for (to, replaced) in [i32::datum_type(), i8::datum_type()]
                .into_iter()
                .zip(&mut replaced)
            {
                let model = model_to(case, &mut rng, to)?;
                let tracts = model.clone().into_optimized()?.into_runnable()?;
                let expected = covered(&model)?;
                *replaced += expected;
                for kernel in kernels.iter().flatten() {
                    let (ours, steps) = crate::plan::optimize_with(model.clone(), Some(*kernel))?;
                    // More on a Pi 4: the products that requantize, in pairs only.
                    let requantizing = steps.products - expected.min(steps.products);
                    assert_eq!(
                        steps.products - requantizing,
                        expected,
                        "{kernel:?} {:?}",
                        case.input
                    );
                    assert!(requantizing <= steps.pairs && steps.pairs <= steps.products);
                    pairs += steps.pairs;
                    same_outputs(case, &tracts, &ours.into_runnable()?, &mut rng, 2)?;
                }
            }
        }
        // Without the dot product (a Pi 4) the pairs kernel takes most of them.
        #[cfg(target_arch = "aarch64")]
        if !tract_nnef::tract_core::tract_linalg::arm64::has_dotprod() {
            assert!(pairs > 0, "no product in pairs of k's");
        }
        #[cfg(not(target_arch = "aarch64"))]
        assert_eq!(pairs, 0);
        Ok(())
    }

    /// Three products of one input (a text encoder's query, key and value projections:
    /// here 1×1 convolutions to i32, which become products over one row) read one
    /// packing of it in tract's plan. Without the dot product (a Pi 4) all three pair
    /// and the packing with them; where one's weights hold −128, which the pairs tile
    /// does not take, none does and the packing stays tract's. The outputs are tract's.
    #[test]
    fn a_packing_read_by_three_products_pairs_with_them() -> TractResult<()> {
        let mut rng = Rng::new(16);
        let case = case([24, 6, 5], 16, 1, [1, 1], [1, 1], [1, 1], [0; 4], 0);
        for with_min in [false, true] {
            let mut model = model_to(&case, &mut rng, i32::datum_type())?;
            let conv = model.node_by_name("conv")?;
            let (op, inputs) = (conv.op.clone(), conv.inputs.clone());
            let mut outputs = vec![];
            for name in ["query", "key", "value"] {
                let mut kernel = random_i8(&mut rng, &[case.outputs, case.input[0], 1, 1]);
                for v in kernel.try_as_plain_ram_mut()?.as_slice_mut::<i8>()? {
                    *v = (*v).max(-127);
                }
                if with_min && name == "value" {
                    kernel.try_as_plain_ram_mut()?.as_slice_mut::<i8>()?[5] = i8::MIN;
                }
                let mut inputs = inputs.clone();
                inputs[1] = model.add_const(format!("{name}.kernel"), kernel)?;
                outputs.push(model.wire_node(name, op.clone(), &inputs)?[0]);
            }
            model.select_output_outlets(&outputs)?;
            let tracts = model.clone().into_optimized()?.into_runnable()?;
            let (ours, steps) = crate::plan::optimize_steps(model)?;
            #[cfg(target_arch = "aarch64")]
            if !tract_nnef::tract_core::tract_linalg::arm64::has_dotprod() {
                let pairs = if with_min { 0 } else { 3 };
                assert_eq!((steps.products, steps.pairs), (3, pairs), "{steps:?}");
                // The packing each product reads its activations from: one for all.
                let packings: Vec<usize> = ours
                    .nodes()
                    .iter()
                    .filter(|n| n.op_is::<DotProduct>())
                    .flat_map(|n| n.inputs.iter().map(|i| i.node))
                    .filter(|&i| ours.node(i).op_is::<super::super::PackColumns>())
                    .collect();
                assert_eq!(packings.len(), 3, "{packings:?}");
                assert!(packings.iter().all(|&p| p == packings[0]), "{packings:?}");
            }
            let _ = steps;
            let ours = ours.into_runnable()?;
            let [c, h, w] = case.input;
            for _ in 0..2 {
                let x: TValue = random_i8(&mut rng, &[1, c, h, w]).into();
                let expected = tracts.run(tvec![x.clone()])?;
                let got = ours.run(tvec![x])?;
                assert_eq!(expected.len(), 3);
                for (a, b) in expected.iter().zip(&got) {
                    assert_eq!(a.as_bytes(), b.as_bytes(), "with −128: {with_min}");
                }
            }
        }
        Ok(())
    }

    /// On tract's threads (`Backbone::with_threads`) the panels of rows are shared out
    /// and the outputs are the same.
    #[cfg(feature = "threads")]
    #[test]
    fn threads_give_the_same_bits() -> TractResult<()> {
        use tract_nnef::tract_core::tract_linalg::multithread::{
            Executor, multithread_tract_scope, set_threading_element_threshold,
        };
        let mut rng = Rng::new(14);
        // Always threaded (a performance setting only: other tests give the same bits).
        set_threading_element_threshold(0);
        let case = case([8, 12, 12], 40, 1, [3, 3], [1, 1], [1, 1], [1; 4], 0);
        let model = model_to(&case, &mut rng, i32::datum_type())?;
        let tracts = model.clone().into_optimized()?.into_runnable()?;
        let expected = covered(&model)?;
        let (ours, steps) = crate::plan::optimize_with(model, Some(Kernel::Portable))?;
        assert_eq!(steps.products, expected);
        let ours = ours.into_runnable()?;
        multithread_tract_scope(Executor::multithread(2), || {
            same_outputs(&case, &tracts, &ours, &mut rng, 2)
        })?;
        Ok(())
    }

    /// The scale of a product that requantizes gives tract's generic arithmetic's values
    /// (on aarch64 through NEON, for the rounding to even): small values whose products
    /// end in exactly one half, the extremes of i32, random ones.
    #[test]
    fn the_scale_is_tracts() {
        use tract_nnef::tract_core::tract_linalg::mmm::RoundingPolicy as Rounding;
        let mut rng = Rng::new(15);
        let policies = [
            Rounding::Even,
            Rounding::Odd,
            Rounding::Zero,
            Rounding::Away,
            Rounding::MinusInf,
            Rounding::PlusInf,
        ];
        for factor in [0.0019232058f32, 0.75, 0.5, 1.0 / 3.0, 1e-6, 0.999, 3.0] {
            for policy in policies {
                let scaler = Scaler::new(factor, policy);
                for round in 0..4 {
                    let mut tile: [i32; 64] = std::array::from_fn(|i| match (round, i) {
                        (0, 0) => i32::MIN,
                        (0, 1) => i32::MAX,
                        (0, _) | (1, _) => i as i32 - 32,
                        _ => rng.below(1 << 31) as i32 - (1 << 30) * (round - 2),
                    });
                    let expected = tile.map(|t| scaler * t);
                    scale(&scaler, &mut tile);
                    assert_eq!(tile, expected, "{factor} {policy:?} {round}");
                }
            }
        }
    }

    /// Both packings of random 8×k matrices (the extremes of i8 among the values, k from
    /// 0 to 160): every kernel's tile is the sum by hand, in rows `row_stride` apart that
    /// leave the values between them as they were.
    #[test]
    fn the_kernels_agree() {
        let mut rng = Rng::new(13);
        for k in [0, 1, 3, 4, 5, 8, 12, 47, 160] {
            let mut matrix = || -> Vec<[i8; 8]> {
                (0..k)
                    .map(|_| {
                        std::array::from_fn(|_| match rng.below(8) {
                            0 => i8::MIN,
                            1 => i8::MAX,
                            _ => rng.below(256) as u8 as i8,
                        })
                    })
                    .collect()
            };
            // a[kk][m], b[kk][c].
            let (a, b) = (matrix(), matrix());
            let expected: Vec<i32> = (0..64)
                .map(|i| {
                    (0..k)
                        .map(|kk| a[kk][i % 8] as i32 * b[kk][i / 8] as i32)
                        .sum()
                })
                .collect();
            let pack = |x: &[[i8; 8]], packing| -> Vec<u8> {
                match packing {
                    Packing::KMajor => x.iter().flatten().map(|v| *v as u8).collect(),
                    Packing::K4 => {
                        let mut p = vec![0u8; k.div_ceil(4) * 32];
                        for (kk, row) in x.iter().enumerate() {
                            for (lane, v) in row.iter().enumerate() {
                                p[kk / 4 * 32 + lane * 4 + kk % 4] = *v as u8;
                            }
                        }
                        p
                    }
                }
            };
            // The pairs kernel: weights without −128 (`pair_products` leaves those to
            // the widening tile), on either side.
            #[cfg(target_arch = "aarch64")]
            for weights_are_lanes in [false, true] {
                let no_min = |x: &[[i8; 8]]| -> Vec<[i8; 8]> {
                    x.iter().map(|row| row.map(|v| v.max(-127))).collect()
                };
                let (a, b) = match weights_are_lanes {
                    true => (no_min(&a), b.clone()),
                    false => (a.clone(), no_min(&b)),
                };
                let acts = |x: &[[i8; 8]]| -> Vec<u8> {
                    let mut p = pack(x, Packing::K4);
                    p.resize(pairs_panel_len(k), 0);
                    p
                };
                let weights = |x: &[[i8; 8]]| {
                    k4_pairs_of(&pack(x, Packing::KMajor), 8 * k, k, 1).expect("no −128")
                };
                let (x, y) = match weights_are_lanes {
                    true => (weights(&a), acts(&b)),
                    false => (acts(&a), weights(&b)),
                };
                let mut out = [1; 88];
                let tile = Tile::Pairs { weights_are_lanes };
                tile.tile(&x, &y, k, &mut out[3..], 11);
                for (r, row) in out.chunks_exact(11).enumerate() {
                    assert_eq!(row[..3], [1; 3]);
                    let expected: Vec<i32> = (0..8)
                        .map(|m| (0..k).map(|kk| a[kk][m] as i32 * b[kk][r] as i32).sum())
                        .collect();
                    assert_eq!(row[3..], expected, "{tile:?}, k {k}");
                }
            }
            for packing in [Packing::K4, Packing::KMajor] {
                let tiles = [Kernel::Portable, Kernel::Native].map(|n| n.for_packing(packing));
                for tile in tiles.into_iter().flatten() {
                    let mut out = [1; 88];
                    tile.tile(&pack(&a, packing), &pack(&b, packing), k, &mut out[3..], 11);
                    for (r, row) in out.chunks_exact(11).enumerate() {
                        assert_eq!(row[..3], [1; 3]);
                        assert_eq!(row[3..], expected[r * 8..][..8], "{tile:?}, k {k}");
                    }
                }
            }
        }
    }
}
