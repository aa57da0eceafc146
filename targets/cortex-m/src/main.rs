//! edgetune on a Cortex-M4F in 16 KB of RAM (QEMU's mps2-an386 board; see README.md):
//! a 64-value, 10-class linear head that starts untrained and learns from labels given
//! with one push button per class through the device's own learner, streaming LDA
//! (`edgetune_core::slda`, its diagonal variant: what 16 KB hold), saves the head and the
//! learner's statistics to NOR flash through `edgetune_core::flash` (periodically and after
//! learning), and after a simulated reboot loads them back into cleared RAM and
//! classifies exactly as before.
//!
//! Output (semihosting) includes these machine-readable lines, which ci.sh checks:
//! `accuracy before: NN.N% (k/n)`, `accuracy after: …`, `accuracy after reload: …`,
//! `stack peak: N bytes` and, last, `firmware: ok`. Any error prints
//! `firmware: FAILED: …` and exits with failure.
#![no_std]
#![no_main]

mod buttons;
mod nor;
mod out;
mod sensor;
mod stack;

use core::panic::PanicInfo;

use cortex_m_rt::entry;
use cortex_m_semihosting::debug;
use edgetune_core::button::{Active, Button};
use edgetune_core::flash::{self, Store, StoreError, Stored};
use edgetune_core::head::Storage;
use edgetune_core::persist::DecodeError;
use edgetune_core::slda::{Diagonal, Slda};
use edgetune_core::{Dims, Head};

use buttons::{Hand, LabelPin, POLLS_PER_PRESS};
use nor::{FlashError, SimFlash};
use out::Line;
use sensor::{CLASSES, DIM, Stream};

const DIMS: Dims = Dims::linear(DIM, CLASSES);
const PARAMS: usize = DIMS.param_len();
/// The learner: per-class counts and means and the within-class variance of each
/// feature (the diagonal of the covariance the Linux device keeps whole), and what is
/// derived from them.
type Learner<'a> = Slda<&'a mut [f32], Diagonal>;
const LEARNER: usize = Slda::<(), Diagonal>::storage_len(DIM, CLASSES);
/// The part of it that is saved: the statistics.
const STATISTICS: usize = Slda::<(), Diagonal>::state_len(DIM, CLASSES);
/// The prior's strength in pseudo-samples, as `edgetune serve`'s default.
const PRIOR_STRENGTH: f32 = 16.0;

/// The longest state record, and the flash region for its two slots.
const RECORD: usize = flash::max_record_len_with(DIMS, STATISTICS);
const REGION: usize = flash::region_len::<SimFlash>(RECORD);
/// A chunk of the record at a time goes through this many bytes of stack.
const SCRATCH: usize = 64;

/// The labeled stream from the sensor, and held-out samples to measure accuracy on.
const TRAIN: Stream = Stream::new(0x7121);
const LABELS: u32 = 300;
const SAVE_EVERY: u32 = 100;
const TEST: Stream = Stream::new(0x7E57);
const TEST_LEN: u32 = 250;
/// Polls of the same level before a button changes state (debouncing).
const STABLE_POLLS: u8 = 3;

/// All the learning state there is: the head and the learner. Statics (.bss), so the
/// link checks they fit.
struct Ram {
    head: [f32; PARAMS],
    learner: [f32; LEARNER],
}

static mut RAM: Ram = Ram {
    head: [0.0; PARAMS],
    learner: [0.0; LEARNER],
};

/// Why the firmware failed.
enum Fail {
    Learn(edgetune_core::Error),
    Flash(StoreError<FlashError>),
    Check(&'static str),
}

impl From<edgetune_core::Error> for Fail {
    fn from(e: edgetune_core::Error) -> Self {
        Fail::Learn(e)
    }
}

impl From<StoreError<FlashError>> for Fail {
    fn from(e: StoreError<FlashError>) -> Self {
        Fail::Flash(e)
    }
}

impl Fail {
    /// Appends a description (by hand: the `Display` impls would pull in `core::fmt`).
    fn describe(&self, line: &mut Line) {
        use edgetune_core::Error as E;
        match self {
            Fail::Check(what) => {
                line.s(what);
            }
            Fail::Learn(e) => {
                line.s("learning: ").s(match *e {
                    E::Capacity { what, .. } | E::Length { what, .. } => what,
                    E::NonFinite { what } | E::Config { what } => what,
                    E::UnknownClass { .. } => "unknown class",
                    _ => "error",
                });
            }
            Fail::Flash(e) => store_error(e, line.s("flash: ")),
        }
    }
}

fn store_error(e: &StoreError<FlashError>, line: &mut Line) {
    match *e {
        StoreError::Flash(FlashError::NotErased(at)) => {
            line.s("programming a word that is not erased at ").hex(at)
        }
        StoreError::Flash(FlashError::NotAligned) => line.s("misaligned access"),
        StoreError::Flash(FlashError::OutOfBounds) => line.s("access out of bounds"),
        StoreError::Config { what } | StoreError::Verify { what } => line.s(what),
        StoreError::ScratchTooSmall { needed, .. } => {
            line.s("scratch buffer under ").u(needed as u32).s(" bytes")
        }
        StoreError::SlotTooSmall { needed, capacity } => line
            .s("the state needs ")
            .u(needed as u32)
            .s(" bytes, a slot holds ")
            .u(capacity as u32),
        StoreError::NothingStored => line.s("nothing stored"),
        StoreError::Record(d) => line.s("saved state refused: ").s(decode_error(&d)),
        StoreError::Encode(_) => line.s("the state cannot be saved (NaN or infinity)"),
        _ => line.s("error"),
    };
}

fn decode_error(e: &DecodeError) -> &'static str {
    match *e {
        DecodeError::Checksum { .. } => "checksum mismatch",
        DecodeError::BadHeader { what } | DecodeError::BadPayload { what } => what,
        DecodeError::DimsMismatch { .. } => "another head shape",
        DecodeError::OptimizerMismatch { .. } => "another learner",
        _ => "not a valid head",
    }
}

/// The head's accuracy on the held-out samples: (correct, total).
fn accuracy<S: Storage>(head: &Head<S>) -> Result<(u32, u32), Fail> {
    let mut x = [0.0f32; DIM];
    let mut probs = [0.0f32; CLASSES];
    let mut correct = 0;
    for i in 0..TEST_LEN {
        let label = TEST.sample(i, &mut x);
        if head.predict(&x, &mut probs)?.class == label {
            correct += 1;
        }
    }
    Ok((correct, TEST_LEN))
}

fn print_accuracy(what: &str, (correct, total): (u32, u32)) {
    Line::new()
        .s("accuracy ")
        .s(what)
        .s(": ")
        .percent(correct, total)
        .print();
}

/// FNV-1a over the head's parameters, the learner's statistics and the number of
/// classes: equal exactly when the reloaded state is bit for bit the saved one.
fn checksum<S: Storage>(head: &Head<S>, learner: &Learner<'_>) -> u32 {
    let words = head
        .params()
        .iter()
        .chain(learner.state())
        .map(|v| v.to_bits());
    let words = words.chain([head.classes() as u32]);
    words.fold(0x811C_9DC5, |h, w| {
        w.to_le_bytes()
            .iter()
            .fold(h, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
    })
}

/// `seq N, slot X, B bytes`.
fn stored<'a>(line: &'a mut Line, s: &Stored) -> &'a mut Line {
    line.s("seq ")
        .u(s.seq as u32)
        .s(if s.slot == 0 {
            ", slot A, "
        } else {
            ", slot B, "
        })
        .u(s.len as u32)
        .s(" bytes")
}

type Flash<'a> = Store<&'a mut SimFlash>;

/// The phases run one after the other, each in its own stack frame: the stack peak is
/// the deepest phase, not the sum of them all.
fn run() -> Result<(), Fail> {
    Line::new()
        .s("edgetune firmware (Cortex-M4F): linear head ")
        .u(DIM as u32)
        .s("-d x ")
        .u(CLASSES as u32)
        .s(" classes, streaming LDA (diagonal covariance)")
        .print();
    // SAFETY: the only reference to RAM ever made; interrupts do not touch it.
    let ram = unsafe { &mut *core::ptr::addr_of_mut!(RAM) };
    let mut flash = SimFlash::take().ok_or(Fail::Check("the flash is taken"))?;
    let Learned {
        before,
        after,
        checksum: saved,
    } = learn(&mut flash, ram)?;
    // Reboot: RAM is cleared as the startup code clears .bss; only the flash remains.
    Line::new()
        .s("reboot: RAM cleared, loading the state from flash")
        .print();
    ram.head.fill(0.0);
    ram.learner.fill(0.0);
    let (reloaded, loaded) = reload(&mut flash, ram)?;
    Line::new()
        .s("state checksum: saved ")
        .hex(saved)
        .s(", reloaded ")
        .hex(loaded)
        .print();
    if loaded != saved || reloaded != after {
        return Err(Fail::Check("the reloaded state differs from the saved one"));
    }
    if after.0 <= before.0 {
        return Err(Fail::Check("learning did not improve the accuracy"));
    }
    Ok(())
}

/// What the learning phase measured: accuracy (correct, total) before and after, and
/// the checksum of the state saved last.
struct Learned {
    before: (u32, u32),
    after: (u32, u32),
    checksum: u32,
}

/// Power-on, then learning from the buttons with periodic saves, and a save at the end.
#[inline(never)]
fn learn(flash: &mut SimFlash, ram: &mut Ram) -> Result<Learned, Fail> {
    let address = flash.address() as u32;
    let store = &mut Store::new(flash, 0, REGION as u32)?;
    Line::new()
        .s("flash: 2 slots of ")
        .u(store.slot_len())
        .s(" bytes at ")
        .hex(address)
        .s(", state record up to ")
        .u(RECORD as u32)
        .s(" bytes")
        .print();
    // Built in place by `start`: no copy of it on this frame.
    let mut slot = None;
    let before = start(store, ram, &mut slot)?;
    let learning = slot.as_mut().ok_or(Fail::Check("no learner"))?;
    // The sensor delivers a sample, the user presses the button of its class, the
    // debounced press labels the sample and the head learns it at once.
    let hand = Hand::new();
    let mut buttons: [_; CLASSES] = core::array::from_fn(|class| {
        Button::new(LabelPin::new(&hand, class), Active::Low, STABLE_POLLS)
    });
    let mut x = [0.0f32; DIM];
    for i in 1..=LABELS {
        let label = TRAIN.sample(i, &mut x);
        hand.press(label);
        let mut presses = 0;
        for _ in 0..POLLS_PER_PRESS {
            for (class, button) in buttons.iter_mut().enumerate() {
                if button.poll().unwrap_or_else(|e| match e {}) {
                    presses += 1;
                    if class != label {
                        return Err(Fail::Check("the wrong button reported a press"));
                    }
                    teach(learning, &x, class)?;
                }
            }
            hand.tick();
        }
        if presses != 1 || buttons.iter().any(|b| b.is_pressed()) {
            return Err(Fail::Check("a button press was not seen exactly once"));
        }
        if i % SAVE_EVERY == 0 || i == LABELS {
            save(store, learning, i)?;
        }
    }
    let after = accuracy(&learning.head)?;
    print_accuracy("after", after);
    Ok(Learned {
        before,
        after,
        checksum: checksum(&learning.head, &learning.learner),
    })
}

/// The head and the learner that writes it.
struct Learning<'a> {
    head: Head<&'a mut [f32]>,
    learner: Learner<'a>,
}

/// Learns one labeled sample and writes the head from it, as `edgetune serve` does
/// (out of line: its frame exists only while it runs).
#[inline(never)]
fn teach(learning: &mut Learning<'_>, x: &[f32], class: usize) -> Result<(), Fail> {
    learning.learner.learn(x, class)?;
    learning.learner.write_head(&mut learning.head, 1.0)?;
    Ok(())
}

/// Power-on: the saved state if there is one, else an untrained head (all classes
/// equally likely: chance level; RAM starts zeroed, and a zero linear head is
/// untrained) and a learner with no labels, and the head's accuracy.
#[inline(never)]
fn start<'a>(
    store: &mut Flash<'_>,
    ram: &'a mut Ram,
    slot: &mut Option<Learning<'a>>,
) -> Result<(u32, u32), Fail> {
    let mut head = Head::new(DIMS, CLASSES, &mut ram.head[..])?;
    let mut learner = Slda::new(DIM, CLASSES, PRIOR_STRENGTH, &mut ram.learner[..])?;
    let mut scratch = [0u8; SCRATCH];
    let mut line = Line::new();
    match store.load(&mut head, Some(&mut learner), &mut scratch) {
        Ok(s) => stored(line.s("flash: loaded "), &s),
        Err(StoreError::NothingStored) => {
            line.s("flash: nothing stored yet (first boot), untrained head")
        }
        Err(e @ StoreError::Record(_)) => {
            store_error(&e, line.s("flash: "));
            line.s("; untrained head")
        }
        Err(e) => return Err(e.into()),
    }
    .print();
    let before = accuracy(&head)?;
    print_accuracy("before", before);
    *slot = Some(Learning { head, learner });
    Ok(before)
}

/// Saves the head and the learner's statistics after `labels` labels.
#[inline(never)]
fn save(store: &mut Flash<'_>, learning: &Learning<'_>, labels: u32) -> Result<(), Fail> {
    let mut scratch = [0u8; SCRATCH];
    let s = store.save(&learning.head, Some(&learning.learner), &mut scratch)?;
    stored(Line::new().s("labels: ").u(labels).s(", flash: saved "), &s).print();
    Ok(())
}

/// After the reboot: fresh head and learner loaded from the flash; their accuracy and
/// checksum.
#[inline(never)]
fn reload(flash: &mut SimFlash, ram: &mut Ram) -> Result<((u32, u32), u32), Fail> {
    // A store that knows nothing yet, as after a reset.
    let mut store = Store::new(flash, 0, REGION as u32)?;
    let mut scratch = [0u8; SCRATCH];
    let mut head = Head::new(DIMS, 0, &mut ram.head[..])?;
    let mut learner = Slda::new(DIM, CLASSES, PRIOR_STRENGTH, &mut ram.learner[..])?;
    let s = store.load(&mut head, Some(&mut learner), &mut scratch)?;
    stored(Line::new().s("flash: loaded "), &s)
        .s(": ")
        .u(head.classes() as u32)
        .s(" classes, ")
        .u(learner.labels() as u32)
        .s(" labels")
        .print();
    let reloaded = accuracy(&head)?;
    print_accuracy("after reload", reloaded);
    Ok((reloaded, checksum(&head, &learner)))
}

#[entry]
fn main() -> ! {
    stack::paint();
    let result = run();
    let (statics, peak) = (stack::statics(), stack::peak());
    let ok = match result {
        Ok(()) if peak < stack::size() => true,
        Ok(()) => {
            Line::new()
                .s("firmware: FAILED: the stack reached the statics")
                .print();
            false
        }
        Err(e) => {
            let mut line = Line::new();
            e.describe(line.s("firmware: FAILED: "));
            line.print();
            false
        }
    };
    Line::new()
        .s("ram: ")
        .u(statics as u32)
        .s(" bytes static + ")
        .u(peak as u32)
        .s(" bytes stack = ")
        .u((statics + peak) as u32)
        .s(" of ")
        .u((statics + stack::size()) as u32)
        .s(" bytes")
        .print();
    Line::new()
        .s("stack peak: ")
        .u(peak as u32)
        .s(" bytes")
        .print();
    if ok {
        Line::new().s("firmware: ok").print();
    }
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    loop {
        cortex_m::asm::wfi();
    }
}

/// Prints where, and exits with failure (the message would need `core::fmt`).
#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    let mut line = Line::new();
    line.s("firmware: FAILED: panic");
    if let Some(at) = info.location() {
        line.s(" at ").s(at.file()).s(":").u(at.line());
    }
    line.print();
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
