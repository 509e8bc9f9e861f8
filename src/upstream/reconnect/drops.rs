//! How many open GET streams of one upstream dropped lately: what tells a
//! lone drop (reconnect at once) from a herd (spread the reconnects).
//!
//! One [`RecentDrops`] per upstream, owned by whoever owns that upstream's
//! streams (`reverse --url`: one per upstream, shared by its sessions;
//! `forward --url`: one beside its single stream). The owner passes it to
//! [`super::SseStream::on_failure`], which records a drop only when the
//! stream was open, and reads back how many drops of that upstream fell in
//! the last [`DROP_WINDOW`], this one included. The stream's own earlier
//! drops count too, so a stream that keeps dropping is never lone.
//!
//! Sans-I/O: `now` comes in, nothing is read. Memory is bounded: at most
//! [`MAX_REMEMBERED`] instants, whatever the drop rate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{HERD_SPREAD, ReconnectConfig};

/// How far back a drop still counts. Longer than the widest window a herd
/// is spread over (under 4 s, see [`HERD_SPREAD`]), so a stream that drops
/// again soon after its widened reconnect still sees its previous drop; and
/// short enough that unrelated drops of a busy upstream minutes apart are
/// each lone.
pub const DROP_WINDOW: Duration = Duration::from_secs(10);

/// The most drops remembered. The count saturates there; it only has to
/// reach the point where the window stops widening (`HERD_SPREAD / base`
/// drops, 20 at the smallest base).
pub const MAX_REMEMBERED: usize = 32;

const _: () = assert!(
    MAX_REMEMBERED as u128 * ReconnectConfig::MIN_BASE.as_nanos() >= HERD_SPREAD.as_nanos()
);

/// The drops of one upstream's open streams in the last [`DROP_WINDOW`],
/// oldest first.
#[derive(Debug, Clone, Default)]
pub struct RecentDrops {
    at: VecDeque<Instant>,
}

impl RecentDrops {
    pub fn new() -> RecentDrops {
        RecentDrops::default()
    }

    /// An open stream dropped at `now`. Returns how many drops fell in the
    /// last [`DROP_WINDOW`], this one included: 1 for a lone drop, at most
    /// [`MAX_REMEMBERED`].
    pub fn record(&mut self, now: Instant) -> usize {
        self.forget_old(now);
        if self.at.len() >= MAX_REMEMBERED {
            self.at.pop_front();
        }
        self.at.push_back(now);
        self.at.len()
    }

    /// Drops in the last [`DROP_WINDOW`] as of `now` (for logs and tests).
    pub fn count(&self, now: Instant) -> usize {
        self.at
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < DROP_WINDOW)
            .count()
    }

    /// Instants held: never more than [`MAX_REMEMBERED`].
    pub fn remembered(&self) -> usize {
        self.at.len()
    }

    fn forget_old(&mut self, now: Instant) {
        while self
            .at
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= DROP_WINDOW)
        {
            self.at.pop_front();
        }
    }
}

/// The narrowest window the reconnect after a drop draws from when `n`
/// drops (this one included) fell in the last [`DROP_WINDOW`]: `base` when
/// it is lone, one `base` more per drop, at most [`HERD_SPREAD`].
pub fn drop_window(base: Duration, n: usize) -> Duration {
    let n = u32::try_from(n.max(1)).unwrap_or(u32::MAX);
    base.saturating_mul(n).min(HERD_SPREAD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_first_drop_is_lone_and_drops_within_the_window_add_up() {
        let t0 = Instant::now();
        let mut d = RecentDrops::new();
        assert_eq!(d.count(t0), 0);
        assert_eq!(d.record(t0), 1);
        assert_eq!(d.record(t0 + ms(100)), 2);
        assert_eq!(d.record(t0 + ms(9_999)), 3);
        // The first one leaves the window exactly DROP_WINDOW after it.
        assert_eq!(d.count(t0 + DROP_WINDOW), 2);
        assert_eq!(d.record(t0 + DROP_WINDOW), 3);
        // Long after all of them: lone again.
        assert_eq!(d.record(t0 + ms(30_000)), 1);
        assert_eq!(d.remembered(), 1);
    }

    #[test]
    fn memory_is_bounded_whatever_the_drop_rate() {
        let t0 = Instant::now();
        let mut d = RecentDrops::new();
        // 100,000 drops in the same instant (a herd far larger than any
        // relay holds), then one per millisecond for a minute.
        for _ in 0..100_000 {
            assert!(d.record(t0) <= MAX_REMEMBERED);
            assert!(d.remembered() <= MAX_REMEMBERED);
        }
        assert_eq!(d.count(t0), MAX_REMEMBERED);
        for i in 1..=60_000 {
            assert_eq!(d.record(t0 + ms(i)), MAX_REMEMBERED);
        }
        assert_eq!(d.remembered(), MAX_REMEMBERED);
        // What is held is the newest drops, so the count decays on time.
        let last = t0 + ms(60_000);
        assert_eq!(d.count(last + DROP_WINDOW - ms(1)), 1);
        assert_eq!(d.record(last + DROP_WINDOW), 1);
        assert_eq!(d.remembered(), 1);
    }

    #[test]
    fn the_window_grows_by_base_per_drop_up_to_the_herd_spread() {
        let base = ms(250);
        assert_eq!(drop_window(base, 0), base);
        assert_eq!(drop_window(base, 1), base);
        assert_eq!(drop_window(base, 2), ms(500));
        assert_eq!(drop_window(base, 7), ms(1750));
        assert_eq!(drop_window(base, 8), HERD_SPREAD);
        assert_eq!(drop_window(base, usize::MAX), HERD_SPREAD);
        // Even at the smallest base, the count saturates (MAX_REMEMBERED)
        // only past the point where the window stops widening.
        let min = ReconnectConfig::MIN_BASE;
        assert_eq!(drop_window(min, MAX_REMEMBERED), HERD_SPREAD);
        assert!(drop_window(min, 19) < HERD_SPREAD);
    }
}
