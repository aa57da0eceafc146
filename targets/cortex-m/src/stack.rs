//! Stack high-water mark: the free stack is painted with a pattern at start, and the
//! deepest word no longer holding it at the end is how far the stack grew.

const PAINT: u32 = 0xACCE_55ED;

unsafe extern "C" {
    // cortex-m-rt's link.x: the stack runs from `_stack_start` (top of RAM) down to
    // `_stack_end` (the end of the statics).
    static _stack_start: u32;
    static _stack_end: u32;
}

fn top() -> usize {
    &raw const _stack_start as usize
}

fn bottom() -> usize {
    &raw const _stack_end as usize
}

/// Bytes between the statics and the top of RAM.
pub fn size() -> usize {
    top() - bottom()
}

/// Bytes of RAM below the stack (.data, .bss, .uninit).
pub fn statics() -> usize {
    unsafe extern "C" {
        static _ram_start: u32;
    }
    bottom() - &raw const _ram_start as usize
}

/// Paints everything below the current stack pointer. Call first thing in `main`.
#[inline(never)]
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize;
    // Nothing below the stack pointer is in use (no interrupts are enabled); a margin
    // keeps clear of this function's own frame.
    let end = sp.saturating_sub(16) & !3;
    let mut p = bottom();
    while p < end {
        // SAFETY: `bottom()..sp` is RAM that no object occupies (see above).
        unsafe { (p as *mut u32).write_volatile(PAINT) };
        p += 4;
    }
}

/// The deepest the stack has been since [`paint`], in bytes from the top of RAM.
pub fn peak() -> usize {
    let mut p = bottom();
    // SAFETY: reads of RAM between the statics and the top of the stack.
    while p < top() && unsafe { (p as *const u32).read_volatile() } == PAINT {
        p += 4;
    }
    top() - p
}
