//! When an upstream session that was lost may be initialized again
//! (`forward --url`: a 404 for the session, or a GET stream given up).
//!
//! Without this, a server that 404s every GET (or answers it 429 with a
//! `Retry-After` past `--reconnect-max-elapsed`) had the relay initialize a
//! new session, GET, lose it and initialize again at once: tens of
//! thousands of requests in seconds (issue 11, class 6). A new session now
//! goes through the same full-jitter backoff as a GET reconnect:
//!
//! - The n-th loss of a run waits `floor + jitter`, `jitter` uniform in
//!   `[0, min(cap, base·2^n)]` ([`Backoff`]); `floor` is the failure's
//!   `Retry-After`, capped at `cap`. So the first new session comes within
//!   `base` (250 ms by default) and a server that keeps losing them gets
//!   them ever more slowly, at most one per `cap` (30 s) once the run is long.
//! - A run ends when a session outlives `cap` after its initialization:
//!   that one was working, and its loss starts a new run.
//!
//! Sans-I/O: takes `now`, returns the instant; the owner arms a timer.

use std::time::{Duration, Instant};

use super::ReconnectConfig;
use crate::policy::backoff::{Backoff, Rng};

#[derive(Debug, Clone)]
pub struct ReinitBackoff {
    backoff: Backoff,
    cap: Duration,
    /// When the last new session was (to be) initialized.
    last: Option<Instant>,
}

impl ReinitBackoff {
    pub fn new(cfg: &ReconnectConfig, rng: Rng) -> ReinitBackoff {
        ReinitBackoff {
            backoff: Backoff::new(cfg.base, cfg.cap, rng),
            cap: cfg.cap,
            last: None,
        }
    }

    /// The session was lost at `now`; `floor` is the server's `Retry-After`
    /// if it gave one. Returns when the new session may be initialized.
    pub fn on_lost(&mut self, floor: Option<Duration>, now: Instant) -> Instant {
        if self
            .last
            .is_none_or(|t| now.saturating_duration_since(t) >= self.cap)
        {
            self.backoff.reset();
        }
        let floor = floor.unwrap_or_default().min(self.cap);
        let delay = floor.saturating_add(self.backoff.next_delay());
        let at = now.checked_add(delay).unwrap_or(now);
        self.last = Some(at);
        at
    }

    /// Losses in the current run.
    pub fn attempt(&self) -> u32 {
        self.backoff.attempt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(seed: u64) -> ReinitBackoff {
        ReinitBackoff::new(&ReconnectConfig::default(), Rng::seeded(seed))
    }

    /// A server that loses every new session at once (the GET 404 storm):
    /// each new session waits longer, within the full-jitter bounds, and an
    /// 8 s window sees a handful, not thousands.
    #[test]
    fn sessions_lost_at_once_are_spread_by_the_backoff() {
        for seed in 0..50 {
            let t0 = Instant::now();
            let mut p = policy(seed);
            let mut now = t0;
            let mut in_8s = 0;
            for n in 0..12u32 {
                let at = p.on_lost(None, now);
                let ceiling = Duration::from_millis(250)
                    .saturating_mul(1 << n)
                    .min(Duration::from_secs(30));
                assert!(at - now <= ceiling, "seed {seed}, loss {n}");
                if at - t0 <= Duration::from_secs(8) {
                    in_8s += 1;
                }
                // Initialized at `at`, lost again right away.
                now = at;
            }
            assert!(in_8s <= 10, "seed {seed}: {in_8s} sessions in 8 s");
        }
    }

    #[test]
    fn retry_after_is_a_floor_capped_at_the_cap() {
        let t0 = Instant::now();
        let mut p = policy(7);
        let at = p.on_lost(Some(Duration::from_secs(20)), t0);
        assert!(at - t0 >= Duration::from_secs(20));
        assert!(at - t0 <= Duration::from_secs(20) + Duration::from_millis(250));
        let later = at + Duration::from_millis(1);
        let at2 = p.on_lost(Some(Duration::from_secs(3600)), later);
        assert!(at2 - later >= Duration::from_secs(30), "capped floor");
        assert!(at2 - later <= Duration::from_secs(30) + Duration::from_millis(500));
    }

    #[test]
    fn a_session_that_outlived_the_cap_starts_a_new_run() {
        let t0 = Instant::now();
        let mut p = policy(9);
        let mut now = t0;
        for _ in 0..6 {
            now = p.on_lost(None, now);
        }
        assert_eq!(p.attempt(), 6);
        let healthy = now + Duration::from_secs(30);
        let at = p.on_lost(None, healthy);
        assert_eq!(p.attempt(), 1, "the run started over");
        assert!(at - healthy <= Duration::from_millis(250));
    }
}
