//! A one-second window that lets a fixed number of lines through and counts
//! the rest, so a flood becomes at most `per_sec` lines plus one "suppressed
//! N" summary per window. Sans-I/O: the caller passes `now`, so it is
//! unit-tested on a fake clock. Used by the logger (per call site, and in
//! total) and by the child stderr drain (per process).

use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Window {
    per_sec: u32,
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    /// Lines suppressed in the window that just ended (0: none): report them
    /// before this line.
    pub ended: u64,
    /// Log this line; false: it was counted as suppressed.
    pub log: bool,
}

impl Window {
    pub const fn new(per_sec: u32) -> Window {
        Window {
            per_sec,
            start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    pub fn per_sec(&self) -> u32 {
        self.per_sec
    }

    /// Counts one line at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        let ended = self.roll(now);
        let log = if self.logged < self.per_sec {
            self.logged += 1;
            true
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            false
        };
        Admit { ended, log }
    }

    /// Starts a new window if the current one is over; returns what the
    /// ended window suppressed.
    fn roll(&mut self, now: Instant) -> u64 {
        let over = self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= WINDOW);
        if !over {
            return 0;
        }
        let ended = std::mem::take(&mut self.suppressed);
        self.start = Some(now);
        self.logged = 0;
        ended
    }

    /// When a summary is owed: the end of a window that suppressed lines.
    pub fn due(&self) -> Option<Instant> {
        match (self.suppressed, self.start) {
            (0, _) | (_, None) => None,
            (_, Some(s)) => Some(s + WINDOW),
        }
    }

    /// The suppressed count of a window that is over at `now` (0: none, or
    /// the window is still running), leaving the window closed so the next
    /// line starts a new one.
    pub fn take_due(&mut self, now: Instant) -> u64 {
        match self.due() {
            Some(at) if now >= at => {
                self.start = None;
                self.logged = 0;
                std::mem::take(&mut self.suppressed)
            }
            _ => 0,
        }
    }

    /// Whatever is suppressed, window over or not (at exit, or when the
    /// source ends).
    pub fn take_all(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_per_sec_through_then_counts() {
        let t0 = Instant::now();
        let mut w = Window::new(3);
        let got: Vec<bool> = (0..5).map(|_| w.admit(t0).log).collect();
        assert_eq!(got, [true, true, true, false, false]);
        assert_eq!(w.due(), Some(t0 + WINDOW));
        // Still inside the window: nothing due, still suppressed.
        assert_eq!(w.take_due(t0 + Duration::from_millis(999)), 0);
        assert!(!w.admit(t0 + Duration::from_millis(999)).log);
        // The next window reports the 3 suppressed lines and logs again.
        let a = w.admit(t0 + WINDOW);
        assert_eq!(
            a,
            Admit {
                ended: 3,
                log: true
            }
        );
        assert_eq!(w.due(), None);
    }

    #[test]
    fn take_due_reports_once_when_the_window_is_over() {
        let t0 = Instant::now();
        let mut w = Window::new(1);
        w.admit(t0);
        w.admit(t0);
        w.admit(t0);
        assert_eq!(w.take_due(t0 + WINDOW), 2);
        assert_eq!(w.take_due(t0 + WINDOW * 2), 0);
        assert_eq!(w.due(), None);
        // A new window starts with the next line, with nothing to report.
        assert_eq!(
            w.admit(t0 + WINDOW * 2),
            Admit {
                ended: 0,
                log: true
            }
        );
    }

    #[test]
    fn take_all_ignores_the_window() {
        let t0 = Instant::now();
        let mut w = Window::new(0);
        w.admit(t0);
        w.admit(t0);
        assert_eq!(w.take_all(), 2);
        assert_eq!(w.take_all(), 0);
    }
}
