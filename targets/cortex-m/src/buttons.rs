//! Label buttons: one push button per class on a digital input pin, read through
//! `edgetune_core::button::Button`, the debouncer the Linux device program uses too.
//!
//! QEMU's board has no buttons and there is no one to press them, so each pin here is an
//! `embedded_hal::digital::InputPin` whose level is driven by the compiled-in label
//! stream: `Hand::press(class)` makes that button's contact close with bounce, stay
//! closed, and open with bounce, one level per poll, exactly what a real contact looks
//! like to a pin polled every few milliseconds. The firmware only polls pins; the
//! debouncer decides when a press happened. On a board these are GPIO input pins with
//! pull-ups (buttons to ground: `Active::Low`), polled from a timer.

use core::cell::Cell;
use core::convert::Infallible;

use embedded_hal::digital::{ErrorType, InputPin};

/// One press as the contact sees it, one entry per poll: `true` = closed (pin low).
/// Bounce on closing, held, bounce on opening, released.
const PRESS: [bool; 24] = {
    let (c, o) = (true, false);
    [
        c, o, c, o, c, c, c, c, c, c, c, c, c, c, // closing with bounce, held
        o, c, o, o, o, o, o, o, o, o, // opening with bounce, released
    ]
};

/// Polls one press takes, from closing until released for good.
pub const POLLS_PER_PRESS: usize = PRESS.len();

/// The simulated user's hand: which button it presses, and how far into the press.
pub struct Hand {
    button: Cell<Option<usize>>,
    poll: Cell<usize>,
}

impl Hand {
    /// Touching nothing.
    pub const fn new() -> Self {
        Hand {
            button: Cell::new(None),
            poll: Cell::new(0),
        }
    }

    /// Starts pressing the button of `class`.
    pub fn press(&self, class: usize) {
        self.button.set(Some(class));
        self.poll.set(0);
    }

    /// One poll period passes.
    pub fn tick(&self) {
        self.poll.set(self.poll.get() + 1);
    }

    /// Whether the contact of `class` is closed now.
    fn closed(&self, class: usize) -> bool {
        self.button.get() == Some(class) && PRESS.get(self.poll.get()).copied().unwrap_or(false)
    }
}

/// The input pin of one class's button (pulled up, low while the contact is closed).
pub struct LabelPin<'a> {
    hand: &'a Hand,
    class: usize,
}

impl<'a> LabelPin<'a> {
    /// The pin of `class`'s button.
    pub fn new(hand: &'a Hand, class: usize) -> Self {
        LabelPin { hand, class }
    }
}

impl ErrorType for LabelPin<'_> {
    type Error = Infallible;
}

impl InputPin for LabelPin<'_> {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(!self.hand.closed(self.class))
    }

    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(self.hand.closed(self.class))
    }
}
