//! What the engine counts when it holds back (the owner turns the counts
//! into metrics and log lines), and [`RateLog`], which keeps a log line
//! that can fire on every loop turn to one line per window with a
//! "suppressed N" count.

use std::time::{Duration, Instant};

/// How often the engine held back since the owner last asked
/// ([`super::HttpClient::take_limit_counts`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LimitCounts {
    /// A connection's read stopped at [`super::READ_BUDGET`] with more
    /// waiting: the rest is read next turn (fairness).
    pub read_budget: u64,
    /// Reading was paused (backpressure from a full client or host queue):
    /// counted once per pause, when it starts.
    pub read_paused: u64,
}

impl LimitCounts {
    pub fn is_zero(&self) -> bool {
        *self == LimitCounts::default()
    }
}

/// One log line per `window` at most; what was held back in between is
/// counted and reported with the next line.
#[derive(Debug, Clone)]
pub struct RateLog {
    window: Duration,
    next: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    /// The window of every rate-limited line about upstream limits.
    pub const WINDOW: Duration = Duration::from_secs(10);

    pub fn new(window: Duration) -> RateLog {
        RateLog {
            window,
            next: None,
            suppressed: 0,
        }
    }

    /// `n` occurrences at `now`. `Some(suppressed)`: write the line now,
    /// saying how many were held back since the last one; `None`: counted.
    pub fn hit(&mut self, now: Instant, n: u64) -> Option<u64> {
        if self.next.is_some_and(|t| now < t) {
            self.suppressed = self.suppressed.saturating_add(n);
            return None;
        }
        self.next = now.checked_add(self.window);
        Some(std::mem::take(&mut self.suppressed) + n.saturating_sub(1))
    }
}

impl Default for RateLog {
    fn default() -> Self {
        RateLog::new(RateLog::WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_window_and_the_rest_counted() {
        let t0 = Instant::now();
        let mut r = RateLog::new(Duration::from_secs(10));
        assert_eq!(r.hit(t0, 1), Some(0));
        assert_eq!(r.hit(t0 + Duration::from_secs(1), 1), None);
        assert_eq!(r.hit(t0 + Duration::from_secs(9), 5), None);
        assert_eq!(r.hit(t0 + Duration::from_secs(10), 1), Some(6));
        assert_eq!(r.hit(t0 + Duration::from_secs(11), 1), None);
        // A batch of occurrences at once: one line, the others counted.
        assert_eq!(r.hit(t0 + Duration::from_secs(30), 3), Some(3));
    }
}
