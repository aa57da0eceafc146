//! Output lines over semihosting, written piece by piece as they are assembled:
//! `core::fmt` (`hprintln!` with arguments, `Display`) would cost kilobytes of the 32 KB
//! of flash, and a line buffer would cost stack.

use cortex_m_semihosting::hprint;

/// One line of output being written.
pub struct Line(());

impl Line {
    /// Starts a line.
    pub fn new() -> Self {
        Line(())
    }

    /// Writes text.
    pub fn s(&mut self, s: &str) -> &mut Self {
        hprint!(s);
        self
    }

    /// Writes a number in decimal.
    pub fn u(&mut self, mut n: u32) -> &mut Self {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.ascii(&digits[i..])
    }

    /// Writes a number as `0x` and eight hex digits.
    pub fn hex(&mut self, n: u32) -> &mut Self {
        let mut digits = *b"0x00000000";
        for (i, d) in digits[2..].iter_mut().enumerate() {
            let v = (n >> (28 - 4 * i)) as u8 & 0xF;
            *d = if v < 10 { b'0' + v } else { b'a' + v - 10 };
        }
        self.ascii(&digits)
    }

    /// Writes `correct / total` as `NN.N% (k/n)`, rounded to a tenth of a percent.
    pub fn percent(&mut self, correct: u32, total: u32) -> &mut Self {
        let tenths = (correct * 1000 + total / 2) / total.max(1);
        self.u(tenths / 10).s(".").u(tenths % 10).s("% (");
        self.u(correct).s("/").u(total).s(")")
    }

    fn ascii(&mut self, bytes: &[u8]) -> &mut Self {
        // SAFETY: only ASCII digits and letters are passed.
        self.s(unsafe { core::str::from_utf8_unchecked(bytes) })
    }

    /// Ends the line.
    pub fn print(&mut self) {
        hprint!("\n");
    }
}
