//! The patches of an f32 convolution gathered into the matrix product's panels a row of
//! lanes at a time: edgetune's [`GatherPanels`] in place of tract's lazy im2col where it
//! applies.
//!
//! tract lowers an f32 convolution that is neither 1×1 nor depthwise to a matrix product
//! whose input is a `LazyIm2col`: the product asks it for each panel of 8 output
//! pixels (on aarch64) as it goes, and it reads the k values of each pixel one by one
//! through their byte offsets, writing each through a packing writer. On a Pi 5 that was
//! 0.33 M of the 2.08 M aarch64 instructions of an int8 ResNet18 inference (its 7×7 stem,
//! kept f32 by the quantizer: `scripts/iprofile.sh`), where the product took 0.34 M.
//!
//! [`GatherPanels`] gives the product the same panels, also one at a time when it asks
//! for them, into the same scratch buffer, so the packed data stays in cache as
//! tract's does. But where a panel's pixels lie on one output row, their values for one
//! k are 8 contiguous inputs (stride 1: one copy) or every other input (stride 2: two
//! NEON de-interleaving loads on aarch64), and on a map 4 pixels wide two runs of 4;
//! else it gathers them one by one. (An earlier version packed every panel before the
//! product: 4–13 % more time per inference on x86 for the ResNets, writing and reading
//! again a packed matrix of 0.6–7 MB.) Where tract's product asks for the same panel
//! again and again, once per cache block of its weights (deep layers, large k), a panel
//! asked for the third time is kept for the asks after it ([`Kept`]): ResNet18's f32 at
//! 224×224 from 668.1 M to 610.8 M instructions on a Pi 5, 640.7 M to 602.7 M on a Pi 4.
//!
//! tract keeps its lazy im2col's offsets private, so [`GatherPanels::for_node`] reads
//! them from tract's own op at load: it runs it on an input whose values are their
//! indices, reads back every panel, and takes the offsets of each pixel and of each k
//! from them (a pixel's value for a k is its offset plus the k's: the op applies only
//! where that holds for every value, which it checks). So the packed values are tract's
//! by construction, for every pixel and k; the tests check the op on whole convolutions.
//! What it does not cover keeps tract's op: other element types than f32, grouped
//! convolutions, inputs of more than 2^24 values (their indices would not be exact in
//! f32), and panels other than 8 wide (x86's kernels mostly: 5, 6 and 12 lanes, where
//! lane by lane code was slower than tract's).

use std::alloc::Layout;
use std::cell::UnsafeCell;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::MaybeUninit;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::matmul::pack::DynPackedExoticFact;
use tract_nnef::tract_core::tract_linalg::WeightType;
use tract_nnef::tract_core::tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, PackedMatrixStorage,
};
use tract_nnef::tract_core::tract_linalg::pack::PackedFormat;

/// The panel width this covers: that of tract's f32 kernels on aarch64. Other widths
/// keep tract's op (on x86's kernels, panels of 5, 6 and 12, lane by lane code was
/// slower than tract's).
const LANES: usize = 8;

/// How the values of one panel's lanes lie in the input, for every k (each index plus
/// the k's offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Run {
    /// 8 lanes, consecutive inputs from this index.
    Contiguous(usize),
    /// 8 lanes, every other input from this index.
    Stride2(usize),
    /// 8 lanes, 4 consecutive inputs from each index (a map 4 pixels wide). What
    /// `Split` with `at` 4 also reads, kept for being cheaper: two copies of 4 values
    /// a row where `Split` reads 8 and 8 and blends them.
    Halves(usize, usize),
    /// 8 lanes, the first `at` consecutive inputs from the first index, the others from
    /// the second (a panel across two rows of a map).
    Split(usize, usize, usize),
    /// Anything else: lane by lane.
    Gather,
}

/// Where every panel's values are, worked out at load.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Panels {
    /// tract's packing, as the panels describe it to the product (see [`Gathered`]).
    format: Gathered,
    /// Values of the input.
    len: usize,
    /// Each output pixel's offset into the input, in values.
    n_offsets: Vec<usize>,
    /// Each k's offset, added to a pixel's.
    k_offsets: Vec<usize>,
    /// Per panel of 8 pixels.
    runs: Vec<Run>,
}

impl Panels {
    /// Panel `p` of `x` (`self.len` values) into `dst`, k rows of 8 lanes (what is in
    /// the lanes past the last pixel does not matter: the product's lanes there are not
    /// stored).
    fn fill(&self, x: &[f32], p: usize, dst: &mut [f32]) {
        assert_eq!(x.len(), self.len, "GatherPanels: the input planned");
        let lanes = &self.n_offsets[p * LANES..self.n_offsets.len().min(p * LANES + LANES)];
        let rows = dst.chunks_exact_mut(LANES).zip(&self.k_offsets);
        let x = x.as_ptr();
        // SAFETY: every value read is within the input: each pixel's offset plus the
        // largest k's, and the runs' whole reads, were checked at load (`for_node`)
        // against `self.len`, which `x` holds. Each row is `LANES` values (`chunks_exact`).
        unsafe {
            match self.runs[p] {
                // Two rows a turn: the loop's own instructions are a third of a row's.
                Run::Contiguous(first) => {
                    let x = x.add(first);
                    let pairs = dst
                        .chunks_exact_mut(2 * LANES)
                        .zip(self.k_offsets.chunks_exact(2));
                    for (two, ko) in pairs {
                        let (a, b) = two.split_at_mut(LANES);
                        a.copy_from_slice(&*(x.add(ko[0]) as *const [f32; LANES]));
                        b.copy_from_slice(&*(x.add(ko[1]) as *const [f32; LANES]));
                    }
                    if let [.., ko] = self.k_offsets[..]
                        && self.k_offsets.len() % 2 == 1
                    {
                        let row = &mut dst[(self.k_offsets.len() - 1) * LANES..][..LANES];
                        row.copy_from_slice(&*(x.add(ko) as *const [f32; LANES]));
                    }
                }
                Run::Stride2(first) => {
                    for (row, ko) in rows {
                        every_other(&*(x.add(first + ko) as *const [f32; 16]), row);
                    }
                }
                Run::Split(first, second, at) => {
                    // Lanes `..at` of 8 values from the first run, the others of 8 values
                    // that end where the second run's 8 − at do, blended bit by bit.
                    let mask: [u32; LANES] =
                        std::array::from_fn(|i| 0u32.wrapping_sub((i < at) as u32));
                    let (xa, xb) = (x.add(first), x.add(second - at));
                    for (row, ko) in rows {
                        let a = &*(xa.add(*ko) as *const [f32; LANES]);
                        let b = &*(xb.add(*ko) as *const [f32; LANES]);
                        for (i, t) in row.iter_mut().enumerate() {
                            let bits = (a[i].to_bits() & mask[i]) | (b[i].to_bits() & !mask[i]);
                            *t = f32::from_bits(bits);
                        }
                    }
                }
                Run::Halves(a, b) => {
                    for (row, ko) in rows {
                        row[..4].copy_from_slice(&*(x.add(a + ko) as *const [f32; 4]));
                        row[4..].copy_from_slice(&*(x.add(b + ko) as *const [f32; 4]));
                    }
                }
                // The offsets stay in registers and each row is 8 loads and stores. A
                // panel's lanes past its last pixel read its first pixel's value (within
                // the input; never stored by the product).
                Run::Gather => {
                    let mut o = [lanes[0]; LANES];
                    o[..lanes.len()].copy_from_slice(lanes);
                    for (row, ko) in rows {
                        for (t, o) in row.iter_mut().zip(o) {
                            *t = *x.add(o + ko);
                        }
                    }
                }
            }
        }
    }
}

/// tract's `LazyIm2col` of an f32 convolution, its panels gathered a row of lanes at a
/// time (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GatherPanels {
    panels: Arc<Panels>,
}

/// The largest input whose every index is an exact f32.
const MAX_PROBE: usize = 1 << 24;

impl GatherPanels {
    /// The op for node `id` of an optimized `model` if it is tract's `LazyIm2col` of an
    /// f32 convolution without groups whose offsets it can read (see the module docs),
    /// else `None`.
    pub(crate) fn for_node(model: &TypedModel, id: usize) -> TractResult<Option<GatherPanels>> {
        let node = model.node(id);
        if node.op().name() != "LazyIm2col" || node.inputs.len() != 1 {
            return Ok(None);
        }
        let Some((input, output, shape, packed)) = super::packing_facts(model, id)? else {
            return Ok(None);
        };
        let len: usize = shape.iter().product();
        let (Ok(k), Ok(n)) = (packed.k.to_usize(), packed.mn.to_usize()) else {
            return Ok(None);
        };
        let [packer] = &packed.packers[..] else {
            return Ok(None);
        };
        let Some(packer) = packer.downcast_ref::<PackedFormat>() else {
            return Ok(None);
        };
        let r = packer.r;
        if r != LANES
            || input.datum_type != f32::datum_type()
            || packer.dt != f32::datum_type()
            || output.shape.as_concrete() != Some(&[1, 1])
            || !(1..MAX_PROBE).contains(&len)
            || k == 0
            || n == 0
        {
            return Ok(None);
        }
        // tract's op on an input whose values are their indices.
        let probe = Tensor::from_shape(shape, &(0..len).map(|i| i as f32).collect::<Vec<_>>())?;
        let Some(out) = node.op().eval_out_of_plan(tvec!(probe.into_tvalue()))? else {
            return Ok(None);
        };
        let storage = out[0].try_storage_as::<PackedMatrixStorage>()?;
        let [value] = storage.values() else {
            return Ok(None);
        };
        // Every panel's k rows of r lanes, as indices into the input: a pixel's index for
        // a k is its offset (its index for k = 0) plus the k's (pixel 0's index for the k,
        // less pixel 0's offset). Read panel by panel, so that loading takes the memory
        // of one panel, not of the whole im2col.
        let index =
            |v: f32| (v.fract() == 0.0 && v >= 0.0 && (v as usize) < len).then_some(v as usize);
        let panel_len = packer.single_panel_len(k);
        let mut buffer = vec![0f32; panel_len + r];
        let mut n_offsets = Vec::with_capacity(n);
        let mut k_offsets = Vec::with_capacity(k);
        for p in 0..n.div_ceil(r) {
            let ptr = value.panel_bytes(p, Some(buffer.as_mut_ptr() as *mut u8))? as *const f32;
            // SAFETY: tract's packed panel holds k rows of r f32 (in our buffer or its own).
            let panel = unsafe { std::slice::from_raw_parts(ptr, k * r) };
            let lanes = r.min(n - p * r);
            for &v in &panel[..lanes] {
                let Some(i) = index(v) else {
                    return Ok(None);
                };
                n_offsets.push(i);
            }
            if p == 0 {
                for row in panel.chunks_exact(r) {
                    let Some(ko) = index(row[0]).and_then(|i| i.checked_sub(n_offsets[0])) else {
                        return Ok(None);
                    };
                    k_offsets.push(ko);
                }
            }
            let pixels = &n_offsets[p * r..];
            for (row, ko) in panel.chunks_exact(r).zip(&k_offsets) {
                if row[..lanes]
                    .iter()
                    .zip(pixels)
                    .any(|(v, no)| index(*v) != Some(no + ko))
                {
                    return Ok(None);
                }
            }
        }
        let max_k = k_offsets.iter().max().copied().unwrap_or(0);
        // Every value read within the input (16 for the stride 2's loads of 8).
        if n_offsets.iter().any(|o| o + max_k >= len) {
            return Ok(None);
        }
        let runs = n_offsets
            .chunks(r)
            .map(|lanes| {
                let first = lanes[0];
                let run = |lanes: &[usize], s: usize| {
                    lanes
                        .iter()
                        .enumerate()
                        .all(|(i, o)| *o == lanes[0] + s * i)
                        && lanes[0] + max_k + lanes.len() * s <= len
                };
                match lanes.len() {
                    LANES if run(lanes, 1) => Run::Contiguous(first),
                    LANES if run(lanes, 2) => Run::Stride2(first),
                    LANES if run(&lanes[..4], 1) && run(&lanes[4..], 1) => {
                        Run::Halves(first, lanes[4])
                    }
                    // Two runs (a panel across two rows of a map 7 or 14 wide), each
                    // read as 8 values, all within the input.
                    LANES => (1..LANES)
                        .find(|&at| run(&lanes[..at], 1) && run(&lanes[at..], 1))
                        .filter(|&at| {
                            lanes[at] >= at
                                && first + max_k + LANES <= len
                                && lanes[at] - at + max_k + LANES <= len
                        })
                        .map_or(Run::Gather, |at| Run::Split(first, lanes[at], at)),
                    // A last panel of fewer pixels in one run: read as 8 (the lanes past
                    // its pixels are never stored by the product).
                    n if n < LANES && run(lanes, 1) && first + max_k + LANES <= len => {
                        Run::Contiguous(first)
                    }
                    _ => Run::Gather,
                }
            })
            .collect();
        Ok(Some(GatherPanels {
            panels: Arc::new(Panels {
                format: Gathered {
                    packer: packer.clone(),
                    k,
                    n,
                },
                len,
                n_offsets,
                k_offsets,
                runs,
            }),
        }))
    }
}

/// The even values of `from` (16) into `to` (8).
#[inline(always)]
fn every_other(from: &[f32; 16], to: &mut [f32]) {
    let to: &mut [f32; 8] = to.try_into().expect("8 values");
    #[cfg(target_arch = "aarch64")]
    // SAFETY: 16 values read, 8 written, from and into arrays of those sizes.
    unsafe {
        use std::arch::aarch64::*;
        let (a, b) = (vld2q_f32(from.as_ptr()), vld2q_f32(from[8..].as_ptr()));
        vst1q_f32(to.as_mut_ptr(), a.0);
        vst1q_f32(to[4..].as_mut_ptr(), b.0);
    }
    #[cfg(not(target_arch = "aarch64"))]
    for (i, t) in to.iter_mut().enumerate() {
        *t = from[2 * i];
    }
}

/// The format of [`PanelsOf`]: `packer`'s panels, but not `packer` itself. tract's
/// product orders its tiles by whether each input's format is an eager `PackedFormat`:
/// with a lazy input (tract's lazy im2col, these panels) it walks the tiles column by
/// column, so that each panel is packed once for all the rows of tiles. Given a
/// `PackedFormat` it walked them row by row and packed every panel again for each row:
/// 260 M instructions against 189 M for the 224×224 test ResNet in f32 on a Pi 5.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Gathered {
    packer: PackedFormat,
    k: usize,
    n: usize,
}

impl fmt::Display for Gathered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GatheredPanels({})", self.packer)
    }
}

impl ExoticFact for Gathered {
    fn buffer_sizes(&self) -> TVec<TDim> {
        tvec!((self.k * self.n * self.packer.dt.size_of()).to_dim())
    }
}

impl MMMInputFormat for Gathered {
    fn prepare_tensor(&self, _t: &Tensor, _k_axis: usize, _mn_axis: usize) -> TractResult<Tensor> {
        bail!("edgetune.GatherPanels: its panels are gathered from the input, not prepared")
    }

    fn prepare_one_view(
        &self,
        _t: &TensorView,
        _k_axis: usize,
        _mn_axis: usize,
    ) -> TractResult<Box<dyn MMMInputValue>> {
        bail!("edgetune.GatherPanels: its panels are gathered from the input, not prepared")
    }

    fn precursor(&self) -> WeightType {
        self.packer.precursor()
    }

    fn r(&self) -> usize {
        self.packer.r
    }

    fn k_alignment(&self) -> usize {
        1
    }

    fn mem_size(&self, k: TDim, mn: TDim) -> TDim {
        k * mn * self.packer.dt.size_of()
    }

    fn extract_at_mn_f16(
        &self,
        _data: &EagerPackedInput,
        _mn: usize,
        _slice: &mut [f16],
    ) -> TractResult<()> {
        only_read_by_a_product()
    }

    fn extract_at_mn_f32(
        &self,
        _data: &EagerPackedInput,
        _mn: usize,
        _slice: &mut [f32],
    ) -> TractResult<()> {
        only_read_by_a_product()
    }
}

/// What asking for values out of the panels (tract's debugging and reference paths)
/// gets: they exist only a panel at a time, for the product.
fn only_read_by_a_product() -> TractResult<()> {
    bail!("edgetune.GatherPanels: its panels are only read by a matrix product")
}

/// One input's panels, gathered when the product asks for each: what [`GatherPanels`]
/// gives the product.
#[derive(Debug)]
struct PanelsOf {
    input: TValue,
    panels: Arc<Panels>,
    /// The panels asked for again and again.
    kept: Kept,
}

impl PanelsOf {
    fn new(input: TValue, panels: Arc<Panels>) -> PanelsOf {
        let kept = Kept::new(panels.runs.len(), panels.k_offsets.len() * LANES);
        PanelsOf {
            input,
            panels,
            kept,
        }
    }
}

// What is kept is a cache of the panels: a copy starts without it, and two are equal
// where their input and panels are.
impl Clone for PanelsOf {
    fn clone(&self) -> PanelsOf {
        PanelsOf::new(self.input.clone(), self.panels.clone())
    }
}

impl PartialEq for PanelsOf {
    fn eq(&self, other: &PanelsOf) -> bool {
        self.input == other.input && self.panels == other.panels
    }
}

impl Eq for PanelsOf {}

impl Hash for PanelsOf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.input.as_bytes(), &self.panels).hash(state);
    }
}

/// The ask at which a panel is kept: the third. (Kept at the second, a product that
/// asks twice for each panel, ResNet18's 28×28 stage on a Pi 5, would write all its
/// panels to memory once more for nothing.)
const KEEP_AT: u8 = 3;
/// The most a product's kept panels may take: above it (images far larger than
/// 224×224), each ask gathers again. ResNet18's at 224×224 take up to 3.6 MB.
const MAX_KEPT_BYTES: usize = 16 << 20;
/// A panel's state in [`Kept`]: being gathered into the kept panels.
const KEEPING: u8 = u8::MAX - 1;
/// A panel's state in [`Kept`]: in the kept panels.
const KEPT: u8 = u8::MAX;

/// The panels a product asked for [`KEEP_AT`] times, kept for its later asks.
///
/// tract's product walks its tiles in cache blocks of its operands' panels. Within a
/// block it asks for each panel of these once for all the block's rows of weights;
/// where the weights span several blocks (ResNet18's deeper stages: k of 2,304 and
/// 4,608), it asks for every panel again in each. On a Pi 5, whose last-level cache
/// adds a second tier of blocks, that was 84.2 M of ResNet18's 668.1 M instructions in
/// f32 at 224×224, where a Pi 4's walk took 56.8 M (`scripts/iprofile.sh`); with the
/// kept panels, 26.3 M and 18.5 M.
///
/// A panel is gathered into tract's scratch buffer the first times, as tract's lazy
/// im2col does; at the [`KEEP_AT`]th, into its place here, where the later asks find
/// it. The places are the product's whole packed input, allocated (not zeroed) at the
/// first panel kept of each inference: ResNet18's at 224×224 take up to 3.6 MB. A
/// product that asks once or twice for each panel allocates nothing, nor one whose
/// panels would take more than [`MAX_KEPT_BYTES`]. The product's threads may ask for
/// panels at once: a panel's state says which of them gathers it into its place (the
/// one that moves it to [`KEEPING`]); the others gather into their own buffer until it
/// is [`KEPT`].
#[derive(Debug)]
struct Kept {
    /// Per panel: how many times it was asked for (below [`KEEP_AT`]), or [`KEEPING`],
    /// or [`KEPT`].
    state: Box<[AtomicU8]>,
    /// Room for every panel, allocated when the first is kept.
    values: OnceLock<Box<[UnsafeCell<MaybeUninit<f32>>]>>,
}

// SAFETY: a panel's place in `values` is written by the one thread that moved its state
// to KEEPING, before it stores KEPT (Release), and read only after a load of KEPT
// (Acquire); places of different panels do not overlap.
unsafe impl Sync for Kept {}

impl Kept {
    /// Room for `panels` panels of `len` values, or for none above [`MAX_KEPT_BYTES`].
    fn new(panels: usize, len: usize) -> Kept {
        let keep = panels * len * size_of::<f32>() <= MAX_KEPT_BYTES;
        Kept {
            state: (0..if keep { panels } else { 0 })
                .map(|_| AtomicU8::new(0))
                .collect(),
            values: OnceLock::new(),
        }
    }

    /// Panel `p` (`len` values) if kept; else where to gather it: `Some` of its place
    /// here when this ask keeps it (the caller must mark it [`Kept::done`]), `None` for
    /// the caller's own buffer.
    fn ask(&self, p: usize, len: usize) -> Result<*const f32, Option<*mut f32>> {
        let Some(state) = self.state.get(p) else {
            return Err(None);
        };
        let asked = state.load(Ordering::Acquire);
        let place = |values: &[UnsafeCell<MaybeUninit<f32>>]| {
            UnsafeCell::raw_get(values[p * len..][..len].as_ptr()) as *mut f32
        };
        match asked {
            KEPT => Ok(place(
                self.values.get().expect("allocated before any is kept"),
            )),
            KEEPING => Err(None),
            n if n + 1 < KEEP_AT => {
                // Another thread's ask at once may be lost: then it is kept one ask later.
                state.store(n + 1, Ordering::Relaxed);
                Err(None)
            }
            n => {
                if state
                    .compare_exchange(n, KEEPING, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    return Err(None);
                }
                let values = self.values.get_or_init(|| {
                    // Not zeroed: a panel's place is read only once its gathering wrote
                    // every value of it.
                    let room = Box::<[f32]>::new_uninit_slice(self.state.len() * len);
                    // SAFETY: `UnsafeCell<T>` has the layout of `T`.
                    unsafe {
                        Box::from_raw(Box::into_raw(room) as *mut [UnsafeCell<MaybeUninit<f32>>])
                    }
                });
                Err(Some(place(values)))
            }
        }
    }

    /// Panel `p`, gathered into its place, is kept.
    fn done(&self, p: usize) {
        self.state[p].store(KEPT, Ordering::Release);
    }
}

impl fmt::Display for PanelsOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} × {})", self.panels.format, self.k(), self.mn())
    }
}

impl MMMInputValue for PanelsOf {
    fn format(&self) -> &dyn MMMInputFormat {
        &self.panels.format
    }

    fn scratch_panel_buffer_layout(&self) -> Option<Layout> {
        let k = self.panels.k_offsets.len();
        Some(self.panels.format.packer.single_panel_layout(k, 4))
    }

    fn panel_bytes(&self, i: usize, buffer: Option<*mut u8>) -> TractResult<*const u8> {
        let panels = &self.panels;
        let buffer = buffer.context("edgetune.GatherPanels: no buffer to gather a panel in")?;
        ensure!(
            i < panels.runs.len(),
            "edgetune.GatherPanels: panel {i} of {}",
            panels.runs.len()
        );
        let len = panels.k_offsets.len() * LANES;
        let place = match self.kept.ask(i, len) {
            Ok(kept) => return Ok(kept as *const u8),
            Err(place) => place,
        };
        let x = self.input.try_as_plain_ram()?.as_slice::<f32>()?;
        let dst = place.unwrap_or(buffer as *mut f32);
        // SAFETY: `dst` is either tract's buffer of `scratch_panel_buffer_layout`, at
        // least k rows of r f32, aligned for them, or panel i's place of `len` values in
        // the kept panels, which this thread alone writes (`Kept::ask`).
        panels.fill(x, i, unsafe { std::slice::from_raw_parts_mut(dst, len) });
        if place.is_some() {
            self.kept.done(i);
        }
        Ok(dst as *const u8)
    }

    fn mn(&self) -> usize {
        self.panels.n_offsets.len()
    }

    fn k(&self) -> usize {
        self.panels.k_offsets.len()
    }

    fn exotic_fact(&self) -> &dyn ExoticFact {
        &self.panels.format
    }

    fn extract_at_mn_f16(&self, _mn: usize, _slice: &mut [f16]) -> TractResult<()> {
        only_read_by_a_product()
    }

    fn extract_at_mn_f32(&self, _mn: usize, _slice: &mut [f32]) -> TractResult<()> {
        only_read_by_a_product()
    }
}

impl Op for GatherPanels {
    fn name(&self) -> StaticName {
        "edgetune.GatherPanels".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let p = &self.panels;
        let count = |f: fn(&Run) -> bool| p.runs.iter().filter(|r| f(r)).count();
        Ok(vec![format!(
            "{} k × {} pixels; panels: {} contiguous, {} of stride 2, {} in halves, {} in two \
             runs, {} gathered",
            p.k_offsets.len(),
            p.n_offsets.len(),
            count(|r| matches!(r, Run::Contiguous(_))),
            count(|r| matches!(r, Run::Stride2(_))),
            count(|r| matches!(r, Run::Halves(..))),
            count(|r| matches!(r, Run::Split(..))),
            count(|r| matches!(r, Run::Gather)),
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for GatherPanels {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        ensure!(
            input.datum_type() == f32::datum_type() && input.len() == self.panels.len,
            "edgetune.GatherPanels: {} input values of {:?}, planned for {} f32",
            input.len(),
            input.datum_type(),
            self.panels.len
        );
        let value: Box<dyn MMMInputValue> = Box::new(PanelsOf::new(input, self.panels.clone()));
        let output =
            PackedMatrixStorage::new_batched(&[1, 1], tvec!(value)).into_tensor(f32::datum_type());
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for GatherPanels {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let p = &self.panels;
        let exotic_fact = DynPackedExoticFact {
            k: p.k_offsets.len().to_dim(),
            mn: p.n_offsets.len().to_dim(),
            packers: vec![Box::new(p.format.packer.clone()) as Box<dyn MMMInputFormat>],
        };
        Ok(tvec!(f32::fact([1, 1]).with_exotic_fact(exotic_fact)))
    }

    as_op!();
}

/// Replaces each of tract's `LazyIm2col` nodes of an optimized `model` that
/// [`GatherPanels`] covers, where its output facts are the same; returns how many.
pub fn gather_panels(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_ops(model, |model, id| {
        let Some(op) = GatherPanels::for_node(model, id)? else {
            return Ok(None);
        };
        let input = model.outlet_fact(model.node(id).inputs[0])?;
        let same = op.output_facts(&[input])?[0] == *model.outlet_fact(OutletId::new(id, 0))?;
        Ok(same.then_some(op))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::patches::tests::{CASES, Case, case, conv};
    use crate::rng::Rng;

    fn random_f32(rng: &mut Rng, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| rng.below(2001) as f32 / 1000.0 - 1.0)
            .collect();
        Tensor::from_shape(shape, &v).unwrap()
    }

    /// The convolution of `case` in f32, with random weights and bias.
    fn f32_model(case: &Case, rng: &mut Rng) -> TractResult<TypedModel> {
        let [c, h, w] = case.input;
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1, c, h, w]))?;
        let shape = [case.outputs, c / case.group, case.kernel[0], case.kernel[1]];
        let kernel = model.add_const("kernel", random_f32(rng, &shape))?;
        let bias = model.add_const("bias", random_f32(rng, &[case.outputs]))?;
        let y = model.wire_node("conv", conv(case, None), &[x, kernel, bias])?;
        model.select_output_outlets(&y)?;
        Ok(model)
    }

    /// tract's lazy im2col nodes in `model`: all of them, and those whose panels are
    /// `LANES` wide.
    fn lazy_nodes(model: &TypedModel) -> TractResult<(usize, usize)> {
        let (mut all, mut wide) = (0, 0);
        for id in 0..model.nodes().len() {
            if model.node(id).op().name() != "LazyIm2col" {
                continue;
            }
            all += 1;
            let packed = crate::plan::packing_facts(model, id)?.map(|f| f.3);
            if packed.is_some_and(|p| p.packers.iter().all(|p| p.r() == LANES)) {
                wide += 1;
            }
        }
        Ok((all, wide))
    }

    /// Every f32 convolution tract lowers through its lazy im2col (the integer cases'
    /// geometries: stride 1, 2 and 3, dilation, uneven padding, a 7×7 stem, partial
    /// panels; and a wide row whose panels are all contiguous) has its packing
    /// replaced where its panels are 8 wide, groups excepted, and gives tract's outputs
    /// bit for bit.
    #[test]
    fn gathered_patches_give_tracts_convolutions() -> TractResult<()> {
        let mut rng = Rng::new(21);
        let wide = case([2, 4, 40], 3, 1, [1, 3], [1, 1], [1, 1], [0; 4], 0);
        let seven = case([2, 7, 7], 3, 1, [3, 3], [1, 1], [1, 1], [1; 4], 0);
        let (mut lazy, mut gathered) = (0, 0);
        for case in CASES.iter().chain([&wide, &seven, &PARTIAL]) {
            let model = f32_model(case, &mut rng)?;
            let tracts = model.clone().into_optimized()?;
            let mut ours = tracts.clone();
            let replaced = gather_panels(&mut ours)?;
            let (all, wide) = lazy_nodes(&tracts)?;
            let expected = if case.group == 1 { wide } else { 0 };
            assert_eq!(replaced, expected, "input {:?}", case.input);
            (lazy, gathered) = (lazy + all, gathered + replaced);
            let (tracts, ours) = (tracts.into_runnable()?, ours.into_runnable()?);
            let [c, h, w] = case.input;
            for _ in 0..2 {
                let x: TValue = random_f32(&mut rng, &[1, c, h, w]).into();
                let a = tracts.run(tvec![x.clone()])?.remove(0);
                let b = ours.run(tvec![x])?.remove(0);
                assert_eq!(a.as_bytes(), b.as_bytes(), "input {:?}", case.input);
            }
        }
        // tract lowers most of them so, in panels of 8 on aarch64 and for some of them
        // on x86: the test compares something.
        assert!(gathered >= 3, "{gathered} of {lazy} lazy im2col replaced");
        Ok(())
    }

    /// A map whose last panel is partial and lies on one row, far enough from the end
    /// of the input (every other input row: the last is not read) for 8 values to be
    /// read there: panels of 8, 2 + 6, 4 + 4 and 6 pixels.
    const PARTIAL: Case = case([2, 8, 12], 3, 1, [3, 3], [2, 1], [1, 1], [0; 4], 0);

    /// The panels' runs (contiguous, of stride 2, two halves, two runs, gathered): a
    /// stem's rows of 8 pixels are read every other value; rows of 38 contiguously but
    /// for the panels across two rows (halves where each half lies on one, else two
    /// runs); a map 4 pixels wide in halves; a map 7 wide in two runs but for its last
    /// pixel; a stride of 3 lane by lane; a last panel of 6 pixels on one row
    /// contiguously ([`PARTIAL`]).
    #[test]
    fn runs_are_found_where_the_pixels_lie() -> TractResult<()> {
        let mut rng = Rng::new(22);
        for (case, expected) in [
            (
                case([3, 32, 32], 4, 1, [7, 7], [2, 2], [1, 1], [3, 3, 3, 3], 0),
                [0, 32, 0, 0, 0],
            ),
            (
                case([2, 4, 40], 3, 1, [1, 3], [1, 1], [1, 1], [0; 4], 0),
                [16, 0, 1, 2, 0],
            ),
            (
                case([2, 6, 6], 3, 1, [3, 3], [1, 1], [1, 1], [0; 4], 0),
                [0, 0, 2, 0, 0],
            ),
            (
                case([2, 7, 7], 3, 1, [3, 3], [1, 1], [1, 1], [1; 4], 0),
                [0, 0, 1, 5, 1],
            ),
            (
                case([2, 10, 14], 3, 1, [3, 3], [3, 3], [1, 1], [1, 1, 1, 1], 0),
                [0, 0, 0, 0, 3],
            ),
            (PARTIAL, [2, 0, 1, 1, 0]),
        ] {
            let model = f32_model(&case, &mut rng)?.into_optimized()?;
            let id = (0..model.nodes().len())
                .find(|id| model.node(*id).op().name() == "LazyIm2col")
                .expect("a lazy im2col");
            let op = GatherPanels::for_node(&model, id)?.expect("covered");
            let mut counts = [0; 5];
            for run in &op.panels.runs {
                counts[match run {
                    Run::Contiguous(_) => 0,
                    Run::Stride2(_) => 1,
                    Run::Halves(..) => 2,
                    Run::Split(..) => 3,
                    Run::Gather => 4,
                }] += 1;
            }
            assert_eq!(
                counts, expected,
                "input {:?}: {:?}",
                case.input, op.panels.runs
            );
        }
        Ok(())
    }

    /// The op in place of the lazy im2col of `case`'s f32 convolution, and a random
    /// input of it (the padded image).
    fn op_and_input(case: &Case, rng: &mut Rng) -> TractResult<(GatherPanels, Tensor)> {
        let model = f32_model(case, rng)?.into_optimized()?;
        let id = (0..model.nodes().len())
            .find(|id| model.node(*id).op().name() == "LazyIm2col")
            .expect("a lazy im2col");
        let op = GatherPanels::for_node(&model, id)?.expect("covered");
        let fact = model.outlet_fact(model.node(id).inputs[0])?;
        let x = random_f32(rng, fact.shape.as_concrete().expect("concrete"));
        Ok((op, x))
    }

    /// The panels the op gives the product do not say they are an eager `PackedFormat`:
    /// tract's product would then walk its tiles row by row and gather every panel
    /// again for each row of tiles (see `Gathered`). Their format is the kernel's
    /// otherwise: the same panel width.
    #[test]
    fn the_product_sees_lazy_panels() -> TractResult<()> {
        let mut rng = Rng::new(23);
        let case = case([3, 32, 32], 4, 1, [7, 7], [2, 2], [1, 1], [3, 3, 3, 3], 0);
        let (op, x) = op_and_input(&case, &mut rng)?;
        let out = op
            .eval_out_of_plan(tvec![x.into_tvalue()])?
            .expect("evaluated out of a plan");
        let storage = out[0].try_storage_as::<PackedMatrixStorage>()?;
        let [value] = storage.values() else {
            panic!("one packed value");
        };
        assert!(!value.format().is::<PackedFormat>());
        assert_eq!(value.format().r(), LANES);
        Ok(())
    }

    /// A panel asked for again is the panel gathered the first time, whether it was
    /// gathered into the caller's buffer (the first asks) or kept (from the
    /// [`KEEP_AT`]th): asked six times each, in turns, by one thread and then by four at
    /// once. Panels asked for fewer times than that allocate nothing.
    #[test]
    fn kept_panels_are_the_gathered_ones() -> TractResult<()> {
        let mut rng = Rng::new(24);
        let case = case([3, 20, 20], 4, 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], 0);
        let (op, x) = op_and_input(&case, &mut rng)?;
        let x = x.into_tvalue();
        let len = op.panels.k_offsets.len() * LANES;
        let panels = op.panels.runs.len();
        assert!(panels >= 4, "{panels} panels");
        let mut expected = vec![vec![0f32; len]; panels];
        let input = x.try_as_plain_ram()?.as_slice::<f32>()?;
        for (p, e) in expected.iter_mut().enumerate() {
            op.panels.fill(input, p, e);
        }
        let value = PanelsOf::new(x.clone(), op.panels.clone());
        // Asks for panel p into a buffer of NaNs: what the product reads, and whether it
        // was the buffer.
        let ask = |value: &PanelsOf, p: usize| -> TractResult<(Vec<f32>, bool)> {
            let mut buffer = vec![f32::NAN; len];
            let at = value.panel_bytes(p, Some(buffer.as_mut_ptr() as *mut u8))? as *const f32;
            // SAFETY: what the op returns holds the panel's `len` values.
            let read = unsafe { std::slice::from_raw_parts(at, len) }.to_vec();
            Ok((read, std::ptr::eq(at, buffer.as_ptr())))
        };
        for (p, expected) in expected.iter().enumerate() {
            assert_eq!(ask(&value, p)?, (expected.clone(), true));
        }
        assert!(
            value.kept.values.get().is_none(),
            "nothing kept after one ask"
        );
        for turn in 1..6 {
            for (p, expected) in expected.iter().enumerate() {
                let (read, in_buffer) = ask(&value, p)?;
                assert_eq!(&read, expected, "panel {p}, ask {}", turn + 1);
                assert_eq!(in_buffer, turn + 1 < KEEP_AT as usize, "ask {}", turn + 1);
            }
        }
        // A clone starts without what was kept, and is equal.
        let copy = value.clone();
        assert!(copy.kept.values.get().is_none() && copy == value);
        std::thread::scope(|s| {
            for t in 0..4 {
                let copy = &copy;
                let expected = &expected;
                s.spawn(move || {
                    for turn in 0..6 {
                        for p in (0..panels).map(|p| (p + t * 3 + turn) % panels) {
                            let (read, _) = ask(copy, p).expect("a panel");
                            assert_eq!(read, expected[p], "thread {t}, panel {p}");
                        }
                    }
                });
            }
        });
        assert!((0..panels).all(|p| copy.kept.state[p].load(Ordering::Acquire) == KEPT));
        Ok(())
    }

    /// Above [`MAX_KEPT_BYTES`] nothing is kept: every ask is gathered into the caller's
    /// buffer.
    #[test]
    fn kept_panels_are_bounded() {
        let len = 4608 * LANES;
        let fits = MAX_KEPT_BYTES / (len * size_of::<f32>());
        assert_eq!(Kept::new(fits, len).state.len(), fits);
        let over = Kept::new(fits + 1, len);
        for _ in 0..KEEP_AT + 2 {
            assert_eq!(over.ask(fits, len), Err(None));
        }
        assert!(over.values.get().is_none());
    }
}
