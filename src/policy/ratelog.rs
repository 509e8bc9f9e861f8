//! A log line budget: at most `per_window` lines per window; the rest are
//! counted and the count is reported with the next line allowed, so a peer
//! that makes the relay drop messages by the million cannot flood the log.
//! Takes `now` like every policy here; the caller does the logging.

use std::time::{Duration, Instant};

/// Lines of one kind allowed per second by [`RateLog::default`].
pub const LINES_PER_SEC: u32 = 10;

#[derive(Debug, Clone)]
pub struct RateLog {
    window: Duration,
    per_window: u32,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl Default for RateLog {
    fn default() -> Self {
        RateLog::new(Duration::from_secs(1), LINES_PER_SEC)
    }
}

impl RateLog {
    pub fn new(window: Duration, per_window: u32) -> RateLog {
        RateLog {
            window,
            per_window,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`: `Some(n)` with the number of
    /// lines suppressed since the last one allowed (to be reported with
    /// it), `None` if this one is suppressed (and counted).
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        let fresh = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= self.per_window {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.in_window += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_budget_per_window_and_reports_what_it_suppressed() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = RateLog::new(ms(1000), 3);
        assert_eq!(r.allow(t0), Some(0));
        assert_eq!(r.allow(t0 + ms(1)), Some(0));
        assert_eq!(r.allow(t0 + ms(2)), Some(0));
        for i in 0..1000 {
            assert_eq!(r.allow(t0 + ms(3 + i % 900)), None);
        }
        // The next window: the count comes with the first line.
        assert_eq!(r.allow(t0 + ms(1000)), Some(1000));
        assert_eq!(r.allow(t0 + ms(1001)), Some(0));
    }
}
