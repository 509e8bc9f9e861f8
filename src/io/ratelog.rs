//! A rate limit for one log line: at most one line per interval; the
//! occurrences held back in between are counted and reported with the next
//! line let through ("N more suppressed"), so a flood of events costs one
//! line per interval, not one per event.
//!
//! Sans-I/O: the caller passes `now`; the caller logs.

use std::time::{Duration, Instant};

/// How often a rate-limited line may be logged by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct RateLog {
    every: Duration,
    /// When the next line may be logged (`None`: now).
    next: Option<Instant>,
    /// Occurrences not logged since the last line.
    suppressed: u64,
}

impl Default for RateLog {
    fn default() -> Self {
        RateLog::new(DEFAULT_EVERY)
    }
}

impl RateLog {
    pub fn new(every: Duration) -> RateLog {
        RateLog {
            every,
            next: None,
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
        if self.next.is_some_and(|next| now < next) {
            self.suppressed = self.suppressed.saturating_add(n);
            return None;
        }
        self.next = now.checked_add(self.every);
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
    fn the_note_names_what_was_suppressed() {
        assert_eq!(suppressed_note(0), "");
        assert_eq!(suppressed_note(3), " (3 similar suppressed)");
    }
}
