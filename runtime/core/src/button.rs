//! Label buttons: a push button on a digital input pin ([`embedded_hal::digital::InputPin`])
//! that labels the most recent sample with its class when pressed. `no_std`, no heap: the
//! same code reads a GPIO character-device line on a Raspberry Pi (linux-embedded-hal's
//! `CdevPin`, in the `edgetune` program's `--button gpiochip0:17=cat`) and a pin of a
//! Cortex-M board.
//!
//! A mechanical contact bounces for a few milliseconds when it closes and opens, so a
//! [`Button`] is polled at a fixed rate and reports a press only after the pin has read
//! "pressed" for `stable` polls in a row, and the next press only after it has read
//! "released" for as many: one press, one label.
//!
//! ```
//! use edgetune_core::button::{Active, Button};
//! # use core::convert::Infallible;
//! # struct Pin<'a>(&'a [bool], usize);
//! # impl embedded_hal::digital::ErrorType for Pin<'_> { type Error = Infallible; }
//! # impl embedded_hal::digital::InputPin for Pin<'_> {
//! #     fn is_high(&mut self) -> Result<bool, Infallible> { let v = self.0[self.1.min(self.0.len() - 1)]; self.1 += 1; Ok(v) }
//! #     fn is_low(&mut self) -> Result<bool, Infallible> { self.is_high().map(|h| !h) }
//! # }
//! // A button to ground with a pull-up: low while pressed. It bounces, then holds.
//! let levels = [true, false, true, false, false, false, false, true, true, true, true];
//! let mut button = Button::new(Pin(&levels, 0), Active::Low, 3);
//! let presses = (0..levels.len()).filter(|_| button.poll() == Ok(true)).count();
//! assert_eq!(presses, 1);
//! ```

use embedded_hal::digital::InputPin;

/// Which level of the pin means "pressed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Active {
    /// Pressed reads low: a button to ground with a pull-up (the usual wiring).
    Low,
    /// Pressed reads high: a button to the supply with a pull-down.
    High,
}

/// A debounced push button on an input pin.
#[derive(Debug)]
pub struct Button<P> {
    pin: P,
    active: Active,
    stable: u8,
    /// Consecutive polls that disagreed with `pressed`.
    run: u8,
    pressed: bool,
}

impl<P: InputPin> Button<P> {
    /// A button on `pin`, pressed at level `active`, that changes state after `stable`
    /// equal polls in a row (at least 1; e.g. 3 polls 5 ms apart). It starts released,
    /// so a button held down at start-up gives one press once it has read held
    /// `stable` times.
    pub fn new(pin: P, active: Active, stable: u8) -> Self {
        Button {
            pin,
            active,
            stable: stable.max(1),
            run: 0,
            pressed: false,
        }
    }

    /// Reads the pin once; `true` exactly when this poll completes a press.
    pub fn poll(&mut self) -> Result<bool, P::Error> {
        let level_high = self.pin.is_high()?;
        let now = level_high == (self.active == Active::High);
        if now == self.pressed {
            self.run = 0;
            return Ok(false);
        }
        self.run += 1;
        if self.run < self.stable {
            return Ok(false);
        }
        self.run = 0;
        self.pressed = now;
        Ok(now)
    }

    /// Whether the button is (debounced) held down.
    pub fn is_pressed(&self) -> bool {
        self.pressed
    }

    /// The pin back.
    pub fn into_pin(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::convert::Infallible;

    struct Levels<'a>(&'a [bool], usize);
    impl embedded_hal::digital::ErrorType for Levels<'_> {
        type Error = Infallible;
    }
    impl InputPin for Levels<'_> {
        fn is_high(&mut self) -> Result<bool, Infallible> {
            let v = self.0[self.1.min(self.0.len() - 1)];
            self.1 += 1;
            Ok(v)
        }
        fn is_low(&mut self) -> Result<bool, Infallible> {
            self.is_high().map(|h| !h)
        }
    }

    fn presses(levels: &[bool], active: Active, stable: u8) -> usize {
        let mut b = Button::new(Levels(levels, 0), active, stable);
        (0..levels.len()).filter(|_| b.poll() == Ok(true)).count()
    }

    #[test]
    fn bounces_give_one_press_each() {
        let h = true;
        let l = false;
        // Two presses, each with bounce on closing and opening.
        let levels = [h, l, h, l, l, l, l, h, l, h, h, h, h, l, l, l, h, h, h];
        assert_eq!(presses(&levels, Active::Low, 3), 2);
        // Shorter glitches than `stable` are no press at all.
        assert_eq!(presses(&[h, l, l, h, l, h, h], Active::Low, 3), 0);
        // Active high: the same line inverted.
        let inverted: [bool; 19] = core::array::from_fn(|i| !levels[i]);
        assert_eq!(presses(&inverted, Active::High, 3), 2);
        // Held down forever: one press.
        assert_eq!(presses(&[l; 50], Active::Low, 2), 1);
    }
}
