//! The integer matrix products of the dot-product kernel, tile by tile with nothing
//! around them: edgetune's in place of tract's `OptMatMul` where it applies.
//!
//! On a Pi 5 (Cortex-A76, with the dot product) tract 0.23.9 runs an int8 1×1
//! convolution's product with an 8×8 `sdot` kernel, but around it spends more than the
//! kernel itself: its tile loop (`run_blocked`), its thread-local scratch space, border
//! tiles through a scratch buffer, the tile's store through a generic strided routine
//! (`store_strides_i32`), clears. Counted on the Pi 5 CPU model (`scripts/iprofile.sh`)
//! for torchvision's MobileNetV2 at width 1/4, 64×64, int8: 0.69 M instructions of those
//! against 0.27 M in the kernel.
//!
//! [`DotProduct`] takes the same packed operands (the activations packed by
//! [`super::PackColumns`] or tract, the weights tract packed at load, both `PackedI8K4`
//! with 8 lanes per panel) and writes the same i32 matrix: each 8×8 tile's 16 `sdot`
//! per 4 k's in registers, stored as rows of 8 values straight into the output. Integer
//! sums are exact, so its outputs are tract's bit for bit. Where the CPU has no dot
//! product tract picks another packing, and this does not apply; on other CPUs (the
//! host's tests) the tile is computed by a portable loop.
//!
//! What it covers: an `OptMatMul` over one matrix (every other axis 1) of two i8
//! operands, activations and weights (baked into tract's op or from a constant input),
//! both `PackedI8K4` of 8 lanes for the mode tract picks, stored as i32 or one byte,
//! with between the product and the store only tract's additions, subtractions, minima
//! and maxima per row, per column or by one value (a zero point's corrections, a bias, a
//! clamp). A product that requantizes with tract's fixed-point scale keeps tract's op
//! (see [`Step`]).

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::matmul::optimized::{MatMulOperand, OptMatMul, ProtoFusedSpec};
use tract_nnef::tract_core::tract_linalg::BinOp as KernelOp;
use tract_nnef::tract_core::tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, PackedMatrixStorage,
};
use tract_nnef::tract_core::tract_linalg::multithread;
use tract_nnef::tract_core::tract_linalg::pack::PackedI8K4;

/// Lanes of a panel, on both sides: a tile is `LANES × LANES`.
const LANES: usize = 8;

/// How a tile is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// aarch64's `sdot`, where the CPU has it.
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    Dot,
    /// A portable loop (the same sums).
    Portable,
}

impl Kernel {
    /// The dot product where this CPU has it, else `None`: the step applies only there.
    pub fn of_this_cpu() -> Option<Kernel> {
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            return Some(Kernel::Dot);
        }
        None
    }

    /// `out[c·row_stride + m] = Σ_k a[m, k]·b[c, k]` for the 8 lanes m of `a` and c of
    /// `b`, over `blocks` blocks of 4 k's: `a` and `b` one panel each, `32·blocks` bytes.
    #[inline]
    fn tile(self, a: &[u8], b: &[u8], blocks: usize, out: &mut [i32], row_stride: usize) {
        let len = blocks * 4 * LANES;
        assert!(
            a.len() >= len && b.len() >= len && out.len() >= (LANES - 1) * row_stride + LANES,
            "a tile's panels or output are cut short"
        );
        match self {
            #[cfg(target_arch = "aarch64")]
            Kernel::Dot => {
                // SAFETY: both panels hold `len` bytes and `out` the 8 rows (asserted);
                // `Dot` is only chosen where the CPU has the dot product.
                unsafe { dot_tile(a.as_ptr(), b.as_ptr(), blocks, out.as_mut_ptr(), row_stride) }
            }
            _ => portable_tile(&a[..len], &b[..len], out, row_stride),
        }
    }
}

fn portable_tile(a: &[u8], b: &[u8], out: &mut [i32], row_stride: usize) {
    for c in 0..LANES {
        out[c * row_stride..][..LANES].fill(0);
    }
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
        std::arch::asm!(
            "movi v16.4s, #0", "movi v17.4s, #0", "movi v18.4s, #0", "movi v19.4s, #0",
            "movi v20.4s, #0", "movi v21.4s, #0", "movi v22.4s, #0", "movi v23.4s, #0",
            "movi v24.4s, #0", "movi v25.4s, #0", "movi v26.4s, #0", "movi v27.4s, #0",
            "movi v28.4s, #0", "movi v29.4s, #0", "movi v30.4s, #0", "movi v31.4s, #0",
            "cbz {blocks}, 2f",
            "1:",
            "ld1 {{v0.16b, v1.16b}}, [{a}], #32",
            "ld1 {{v2.16b, v3.16b}}, [{b}], #32",
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
            "subs {blocks}, {blocks}, #1",
            "b.ne 1b",
            "2:",
            "st1 {{v16.4s, v17.4s}}, [{out}], {stride}",
            "st1 {{v18.4s, v19.4s}}, [{out}], {stride}",
            "st1 {{v20.4s, v21.4s}}, [{out}], {stride}",
            "st1 {{v22.4s, v23.4s}}, [{out}], {stride}",
            "st1 {{v24.4s, v25.4s}}, [{out}], {stride}",
            "st1 {{v26.4s, v27.4s}}, [{out}], {stride}",
            "st1 {{v28.4s, v29.4s}}, [{out}], {stride}",
            "st1 {{v30.4s, v31.4s}}, [{out}]",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            blocks = inout(reg) blocks => _,
            out = inout(reg) out => _,
            stride = in(reg) row_stride * 4,
            out("v0") _, out("v1") _, out("v2") _, out("v3") _,
            out("v16") _, out("v17") _, out("v18") _, out("v19") _,
            out("v20") _, out("v21") _, out("v22") _, out("v23") _,
            out("v24") _, out("v25") _, out("v26") _, out("v27") _,
            out("v28") _, out("v29") _, out("v30") _, out("v31") _,
            options(nostack),
        );
    }
}

/// Where one operand of the product comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Operand {
    /// The node's input of this slot (activations, or weights from a constant node).
    Input(usize),
    /// Weights tract baked into its op: panels of 8 lanes, `32·blocks` bytes each, back
    /// to back.
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
    /// Blocks of 4 k's.
    blocks: usize,
    /// The side whose axis is contiguous in the output (the tile's lanes), and the other
    /// (the tile's rows).
    lanes: Side,
    rows: Side,
    /// Whether the tile's lanes are tract's m (rows of the output, `a`'s lanes).
    lanes_are_m: bool,
    /// What tract's kernel does to the tile between the product and the store.
    steps: Vec<Step>,
    kernel: Kernel,
}

/// One of tract's steps between the product and the store, on the i32 tile, with the
/// generic kernel's arithmetic (see [`bin`]): with an input's values per m, per n or one
/// for all. (tract's fixed-point scale is not one: computed here value by value, not in
/// vectors as in tract's kernel, it cost ResNet18 more than it saved, so a product that
/// requantizes keeps tract's op.)
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    PerM(usize, KernelOp),
    PerN(usize, KernelOp),
    Scalar(usize, KernelOp),
}

/// A [`Step`] with its input's values.
enum Resolved<'a> {
    PerM(&'a [i32], KernelOp),
    PerN(&'a [i32], KernelOp),
    Scalar(i32, KernelOp),
}

/// tract's generic kernel's `BinOp` on i32, `f(operand, value)`: `Sub` takes the tile's
/// `value` from the `operand`, `SubF` the other way round.
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
    fn tile_into(_: Kernel, _: &[u8], _: &[u8], _: usize, _: &mut [Self], _: usize) -> bool {
        false
    }
}

impl Cell for i32 {
    fn of(v: i32) -> i32 {
        v
    }
    fn tile_into(k: Kernel, x: &[u8], y: &[u8], blocks: usize, out: &mut [i32], rs: usize) -> bool {
        k.tile(x, y, blocks, out, rs);
        true
    }
}

impl Cell for u8 {
    fn of(v: i32) -> u8 {
        v as u8
    }
}

/// The packing of a `PackedI8K4` value of `k` rows and `mn` lanes, 8 lanes to a panel,
/// or `None`: its bytes and panel length.
fn eager_k4(value: &dyn MMMInputValue, k: usize, mn: usize) -> Option<(&[u8], usize)> {
    let format = value.format().downcast_ref::<PackedI8K4>()?;
    let eager = value.downcast_ref::<EagerPackedInput>()?;
    let blocks = k.div_ceil(4);
    let bytes = eager.packed.as_bytes();
    (format.r == LANES
        && value.k() == k
        && eager.mn == mn
        && eager.panel_bytes >= blocks * 4 * LANES
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
            let (step, v, len) = match step {
                ProtoFusedSpec::BinPerRow(v, op, _) => (Step::PerM(*v, *op), *v, m),
                ProtoFusedSpec::BinPerCol(v, op, _) => (Step::PerN(*v, *op), *v, n),
                ProtoFusedSpec::BinScalar(v, op) => (Step::Scalar(*v, *op), *v, 1),
                _ => return Ok(None),
            };
            if !takes(v, len)? {
                return Ok(None);
            }
            steps.push(step);
        }
        let (Ok(k), Some(mmm), Some((packing, None))) =
            (geo.k.to_usize(), op.mmm.get(mode), packings.get(mode))
        else {
            return Ok(None);
        };
        let Some((a_format, b_format)) = mmm.packings().get(*packing) else {
            return Ok(None);
        };
        let k4 =
            |f: &dyn MMMInputFormat| f.downcast_ref::<PackedI8K4>().is_some_and(|f| f.r == LANES);
        if k == 0 || !k4(&**a_format) || !k4(&**b_format) {
            return Ok(None);
        }
        let blocks = k.div_ceil(4);
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
                MatMulOperand::Const(v) => eager_k4(&**v, k, mn).map(|(bytes, panel)| {
                    let len = blocks * 4 * LANES;
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
            blocks,
            lanes,
            rows,
            lanes_are_m,
            steps,
            kernel,
        }))
    }

    /// One side's panels: `32·blocks` bytes each, `panel` bytes apart.
    fn panels<'a>(
        &'a self,
        side: &'a Side,
        inputs: &'a [TValue],
    ) -> TractResult<(&'a [u8], usize)> {
        let panel = self.blocks * 4 * LANES;
        match &side.operand {
            Operand::Baked(bytes) => Ok((bytes, panel)),
            Operand::Input(i) => {
                let values = inputs[*i].try_storage_as::<PackedMatrixStorage>()?.values();
                let [packed] = values else {
                    bail!(
                        "edgetune.DotProduct: input {i} holds {} matrices",
                        values.len()
                    );
                };
                eager_k4(&**packed, packed.k(), side.lanes)
                    .filter(|_| packed.k().div_ceil(4) == self.blocks)
                    .with_context(|| {
                        format!(
                            "edgetune.DotProduct: input {i}, {packed:?}, is not the planned {} \
                             lanes of {} k's",
                            side.lanes,
                            self.blocks * 4
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
            self.rows.lanes,
            self.lanes.lanes,
            self.blocks * 4,
            self.kernel
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for DotProduct {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = self.panels(&self.lanes, &inputs)?;
        let y = self.panels(&self.rows, &inputs)?;
        let mut plains = vec![];
        for Step::PerM(v, _) | Step::PerN(v, _) | Step::Scalar(v, _) in &self.steps {
            plains.push(inputs[*v].try_as_plain_ram()?);
        }
        let mut values = plains.iter();
        let mut steps = vec![];
        for step in &self.steps {
            let mut next = || -> TractResult<&[i32]> {
                values.next().context("a step's values")?.as_slice::<i32>()
            };
            steps.push(match step {
                Step::PerM(_, op) => Resolved::PerM(next()?, *op),
                Step::PerN(_, op) => Resolved::PerN(next()?, *op),
                Step::Scalar(_, op) => Resolved::Scalar(next()?[0], *op),
            });
        }
        let shape = self.c_fact.shape.as_concrete().context("symbolic output")?;
        let mut c = Tensor::zero_dt(self.c_fact.datum_type, shape)?;
        {
            let mut plain = c.try_as_plain_ram_mut()?;
            if self.c_fact.datum_type == DatumType::I32 {
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
    /// Every tile into `out`.
    fn fill_all<T: Cell>(
        &self,
        x: Panels,
        y: Panels,
        steps: &[Resolved],
        out: &mut [T],
    ) -> TractResult<()> {
        let (lanes, rows) = (self.lanes.lanes, self.rows.lanes);
        let panels = rows.div_ceil(LANES);
        if (self.lanes.stride, self.rows.stride) == (1, lanes) {
            // Rows of lanes, one after the other: the whole panels of rows on tract's
            // threads (`Backbone::with_threads`; inline without), then the last.
            let whole = rows / LANES;
            let (head, tail) = out.split_at_mut(whole * LANES * lanes);
            let macs = rows * lanes * self.blocks * 4;
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
        steps: &[Resolved],
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
                    && T::tile_into(self.kernel, x, y, self.blocks, &mut out[at..], rs)
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
        steps: &[Resolved],
        (r0, rn): (usize, usize),
        (l0, ln): (usize, usize),
        out: &mut [T],
    ) {
        let (ls, rs) = (self.lanes.stride, self.rows.stride);
        let mut tile = [0i32; LANES * LANES];
        self.kernel.tile(x, y, self.blocks, &mut tile, LANES);
        for step in steps {
            self.apply(step, &mut tile, (r0, rn), (l0, ln));
        }
        for (r, row) in tile.chunks_exact(LANES).take(rn).enumerate() {
            for (i, v) in row[..ln].iter().enumerate() {
                out[r * rs + i * ls] = T::of(*v);
            }
        }
    }

    /// One step on the tile of rows `r0..r0 + rn` and lanes `l0..l0 + ln`.
    fn apply(
        &self,
        step: &Resolved,
        tile: &mut [i32; LANES * LANES],
        (r0, rn): (usize, usize),
        (l0, ln): (usize, usize),
    ) {
        let rows = tile
            .chunks_exact_mut(LANES)
            .take(rn)
            .map(|row| &mut row[..ln]);
        // An operand per m or per n: along the lanes, or one per row.
        let (values, op, along_lanes) = match step {
            Resolved::Scalar(v, op) => {
                rows.for_each(|row| row.iter_mut().for_each(|t| *t = bin(*op, *t, *v)));
                return;
            }
            Resolved::PerM(v, op) => (v, op, self.lanes_are_m),
            Resolved::PerN(v, op) => (v, op, !self.lanes_are_m),
        };
        if along_lanes {
            let values = &values[l0..l0 + ln];
            for row in rows {
                for (t, v) in row.iter_mut().zip(values) {
                    *t = bin(*op, *t, *v);
                }
            }
        } else {
            for (row, v) in rows.zip(&values[r0..r0 + rn]) {
                row.iter_mut().for_each(|t| *t = bin(*op, *t, *v));
            }
        }
    }
}

impl TypedOp for DotProduct {
    as_op!();

    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.c_fact.clone()))
    }
}

/// Replaces each `OptMatMul` of `model` that [`DotProduct`] covers by one computed with
/// `kernel`; returns how many.
pub(crate) fn dot_products_with(model: &mut TypedModel, kernel: Kernel) -> TractResult<usize> {
    super::replace_ops(model, |model, id| DotProduct::for_node(model, id, kernel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::patches::tests::{CASES, case, model_to, same_outputs};
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
                    assert_eq!(steps.products, expected, "{kernel:?} {:?}", case.input);
                    same_outputs(case, &tracts, &ours.into_runnable()?, &mut rng, 2)?;
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

    /// The kernels against each other on random panels of 0 to 40 blocks of 4 k's,
    /// the extremes of i8 included.
    #[test]
    fn the_kernels_agree() {
        let mut rng = Rng::new(13);
        for blocks in [0, 1, 2, 3, 12, 40] {
            let mut panel = || -> Vec<u8> {
                (0..blocks * 32)
                    .map(|_| match rng.below(8) {
                        0 => 0x80,
                        1 => 0x7f,
                        _ => rng.below(256) as u8,
                    })
                    .collect()
            };
            let (a, b) = (panel(), panel());
            let mut expected = [0; 64];
            Kernel::Portable.tile(&a, &b, blocks, &mut expected, 8);
            if let Some(kernel) = Kernel::of_this_cpu() {
                // Rows 11 apart: the values between them are left as they were.
                let mut out = [1; 88];
                kernel.tile(&a, &b, blocks, &mut out[3..], 11);
                for (r, row) in out.chunks_exact(11).enumerate() {
                    assert_eq!(row[..3], [1; 3]);
                    assert_eq!(
                        row[3..],
                        expected[r * 8..][..8],
                        "{kernel:?}, {blocks} blocks"
                    );
                }
            }
            if blocks == 1 {
                assert_eq!(
                    expected[8 + 3],
                    (0..4)
                        .map(|k| a[12 + k] as i8 as i32 * b[4 + k] as i8 as i32)
                        .sum::<i32>()
                );
            }
        }
    }

    /// The portable tile by hand: one block of 4 k's, lanes and channels distinct.
    #[test]
    fn a_tile_by_hand() {
        // a[m, k] = m + k, b[c, k] = (c - k) as i8, packed 4 k's per lane.
        let a: Vec<u8> = (0..8)
            .flat_map(|m| (0..4).map(move |k| (m + k) as u8))
            .collect();
        let b: Vec<u8> = (0..8)
            .flat_map(|c: i32| (0..4).map(move |k| (c - 2 * k) as i8 as u8))
            .collect();
        for kernel in [Some(Kernel::Portable), Kernel::of_this_cpu()]
            .into_iter()
            .flatten()
        {
            let mut tile = [0; 64];
            kernel.tile(&a, &b, 1, &mut tile, 8);
            for c in 0..8i32 {
                for m in 0..8i32 {
                    let expected: i32 = (0..4).map(|k| (m + k) * (c - 2 * k)).sum();
                    assert_eq!(
                        tile[(c * 8 + m) as usize],
                        expected,
                        "{kernel:?} c {c} m {m}"
                    );
                }
            }
        }
    }
}
