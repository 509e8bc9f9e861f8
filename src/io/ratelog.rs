//! A rate limit for one kind of log line: at most `per_window` lines per
//! window; the occurrences held back in between are counted and reported
//! with the next line let through ("N more suppressed"), so a flood of
//! events costs a few lines per window, not one per event.
//!
//! Sans-I/O: the caller passes `now`; the caller logs.

use std::time::{Duration, Instant};

/// How often a rate-limited line may be logged by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);

/// Lines of one kind allowed per second by [`RateLog::per_second`].
pub const LINES_PER_SEC: u32 = 10;

#[derive(Debug, Clone)]
pub struct RateLog {
    window: Duration,
    per_window: u32,
    /// When the current window began (`None`: no line yet).
    window_start: Option<Instant>,
    /// Lines let through in the current window.
    in_window: u32,
    /// Occurrences not logged since the last line.
    suppressed: u64,
}

impl Default for RateLog {
    /// One line per [`DEFAULT_EVERY`].
    fn default() -> Self {
        RateLog::new(DEFAULT_EVERY)
    }
}

impl RateLog {
    /// One line per `every`.
    pub fn new(every: Duration) -> RateLog {
        RateLog::with_budget(every, 1)
    }

    /// [`LINES_PER_SEC`] lines a second: for debug lines about events that
    /// are worth seeing one by one until they flood.
    pub fn per_second() -> RateLog {
        RateLog::with_budget(Duration::from_secs(1), LINES_PER_SEC)
    }

    /// `per_window` lines per `window`.
    pub fn with_budget(window: Duration, per_window: u32) -> RateLog {
        RateLog {
            window,
            per_window: per_window.max(1),
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// One occurrence at `now`. `Some(n)`: log it now, mentioning the `n`
    /// occurrences suppressed since the last line (0: none); `None`: it is
    /// counted, not logged.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        self.hit(now, 1)
    }

    /// `n` occurrences at once (`n` ≥ 1) at `now`: as [`RateLog::check`],
    /// the `n - 1` beyond the one logged counting as suppressed.
    pub fn hit(&mut self, now: Instant, n: u64) -> Option<u64> {
        let fresh = self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window);
        if fresh {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= self.per_window {
            self.suppressed = self.suppressed.saturating_add(n);
            return None;
        }
        self.in_window += 1;
        Some(std::mem::take(&mut self.suppressed).saturating_add(n.saturating_sub(1)))
    }
}

/// `""`, or `" (N similar suppressed)"` to append to a rate-limited line.
pub fn suppressed_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} similar suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let t0 = Instant::now();
        let mut r = RateLog::new(Duration::from_secs(10));
        assert_eq!(r.check(t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(r.check(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.check(t0 + Duration::from_millis(9_999)), None);
        assert_eq!(r.check(t0 + Duration::from_secs(10)), Some(1001));
        assert_eq!(r.check(t0 + Duration::from_secs(11)), None);
        assert_eq!(r.check(t0 + Duration::from_secs(60)), Some(1));
        assert_eq!(r.check(t0 + Duration::from_secs(120)), Some(0));
    }

    #[test]
    fn a_batch_of_occurrences_is_one_line_and_the_rest_counted() {
        let t0 = Instant::now();
        let mut r = RateLog::new(Duration::from_secs(10));
        assert_eq!(r.hit(t0, 1), Some(0));
        assert_eq!(r.hit(t0 + Duration::from_secs(1), 1), None);
        assert_eq!(r.hit(t0 + Duration::from_secs(9), 5), None);
        assert_eq!(r.hit(t0 + Duration::from_secs(10), 1), Some(6));
        assert_eq!(r.hit(t0 + Duration::from_secs(11), 1), None);
        assert_eq!(r.hit(t0 + Duration::from_secs(30), 3), Some(3));
    }

    #[test]
    fn allows_a_budget_per_window_and_reports_what_it_suppressed() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut r = RateLog::with_budget(ms(1000), 3);
        assert_eq!(r.check(t0), Some(0));
        assert_eq!(r.check(t0 + ms(1)), Some(0));
        assert_eq!(r.check(t0 + ms(2)), Some(0));
        for i in 0..1000 {
            assert_eq!(r.check(t0 + ms(3 + i % 900)), None);
        }
        // The next window: the count comes with the first line.
        assert_eq!(r.check(t0 + ms(1000)), Some(1000));
        assert_eq!(r.check(t0 + ms(1001)), Some(0));
    }

    #[test]
    fn the_note_names_what_was_suppressed() {
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(3), " (3 similar suppressed)");
    }
}
