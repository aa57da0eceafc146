//! When the unwritten state is due: `persist_interval` after the last write attempt, and
//! after a failed one (a full or read-only disk) no sooner than [`RETRY`], so the service
//! neither writes in a loop nor stops trying.
//!
//! Times are [`Instant`]s, the monotonic clock: the wall clock jumping backwards or
//! forwards (NTP, a board without a battery setting its time at boot) moves no deadline.
//! The caller passes `now`, so the tests drive a clock of their own.

use std::time::{Duration, Instant};

/// Least time between two attempts after a failed write.
pub const RETRY: Duration = Duration::from_secs(1);

/// The write schedule of one service.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Duration,
    last: Option<Instant>,
    failed: bool,
}

impl Schedule {
    /// A schedule that writes at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Schedule {
            interval,
            last: None,
            failed: false,
        }
    }

    /// When unwritten state is due: at once before the first attempt, then `interval`
    /// after the last attempt, or at least [`RETRY`] after a failed one.
    pub fn deadline(&self, now: Instant) -> Instant {
        match self.last {
            None => now,
            Some(t) if self.failed => t + self.interval.max(RETRY),
            Some(t) => t + self.interval,
        }
    }

    /// Records an attempt at `now` and whether it wrote.
    pub fn attempted(&mut self, now: Instant, ok: bool) {
        self.last = Some(now);
        self.failed = !ok;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that only the test moves.
    struct Clock(Instant);
    impl Clock {
        fn advance(&mut self, d: Duration) -> Instant {
            self.0 += d;
            self.0
        }
    }

    /// Attempts a loop of `steps` ticks of `tick` would make with writes that `ok` says
    /// succeed or not.
    fn attempts(interval: Duration, tick: Duration, steps: usize, ok: bool) -> usize {
        let mut clock = Clock(Instant::now());
        let mut s = Schedule::new(interval);
        let mut n = 0;
        for _ in 0..steps {
            let now = clock.advance(tick);
            if s.deadline(now) <= now {
                s.attempted(now, ok);
                n += 1;
            }
        }
        n
    }

    #[test]
    fn writes_once_per_interval() {
        // 10 s of a busy loop (1 ms ticks), interval 2 s: 5 writes, not 10,000.
        assert_eq!(
            attempts(
                Duration::from_secs(2),
                Duration::from_millis(1),
                10_000,
                true
            ),
            5
        );
    }

    #[test]
    fn a_failing_disk_is_retried_but_not_in_a_loop() {
        // Interval 0 (write after every label): a failing write is retried once a second.
        let n = attempts(Duration::ZERO, Duration::from_millis(1), 10_000, false);
        assert_eq!(n, 10);
        // A long interval is kept after a failure too.
        let n = attempts(
            Duration::from_secs(5),
            Duration::from_millis(1),
            10_000,
            false,
        );
        assert_eq!(n, 2);
    }

    #[test]
    fn recovers_after_a_failure() {
        let mut clock = Clock(Instant::now());
        let mut s = Schedule::new(Duration::ZERO);
        let t = clock.advance(Duration::ZERO);
        assert_eq!(s.deadline(t), t);
        s.attempted(t, false);
        assert_eq!(s.deadline(t), t + RETRY);
        let t = clock.advance(RETRY);
        s.attempted(t, true);
        // Written: interval 0 is due at once again.
        assert_eq!(s.deadline(t), t);
    }

    #[test]
    fn a_deadline_is_never_further_than_the_interval() {
        // Whatever happened, the next attempt is at most max(interval, RETRY) away: no
        // stall.
        let mut clock = Clock(Instant::now());
        let interval = Duration::from_millis(300);
        let mut s = Schedule::new(interval);
        for i in 0..100u32 {
            let now = clock.advance(Duration::from_millis(u64::from(i * 37 % 500)));
            assert!(s.deadline(now) <= now + interval.max(RETRY));
            s.attempted(now, i % 3 != 0);
        }
    }
}
