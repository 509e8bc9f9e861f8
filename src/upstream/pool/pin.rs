//! [`Pool::pin`]: a lease granted at once, without the queue (Shared
//! mode, a 2026-07-28 request: issue 13), and [`Pool::due`], which lets a
//! `release` skip settling when settling would do nothing.

use super::*;

impl Pool {
    /// Shared mode, a 2026-07-28 request's exchange (issue 13): the process
    /// a `lease` asked now would be granted at once, counted as one more
    /// session on it exactly as that grant would (so balancing is the
    /// same), without queueing a waiter or settling. `None` when a lease
    /// would not be granted at once (it would wait for a Starting or new
    /// process, be rejected, or the pool is shutting down), when waiters
    /// are queued (they go first), or when anything is due at `now` (a
    /// `lease` would act on it first): the caller takes [`Pool::lease`].
    /// What it pins is given back with [`Pool::release`], as a session.
    pub fn pin(&mut self, now: Instant) -> Option<ConnId> {
        if self.cfg.mode != Mode::Shared || self.shutting_down || !self.waiters.is_empty() {
            return None;
        }
        // The pool's time (`clock`), not moved on by a pin that declines:
        // only a call that settles may move it (`next_deadline` stays
        // after it).
        let now = self.last_now.max(now);
        // Anything due (what `next_deadline` would report as reached) is a
        // `lease`'s to act on first.
        if self.idle_due(now) {
            return None;
        }
        let best = self.least_loaded(now);
        if reached(self.spawn_not_before, now) && self.wanted_spawns() > 0 && self.spawn_slots() > 0
        {
            return None;
        }
        // `serve_waiters`' choice for one waiter and an empty queue.
        let can_wait = self.cfg.max_waiting > 0;
        let conn = match best {
            Some((false, 0, conn)) => conn,
            _ if can_wait && (self.counts.starting > 0 || self.spawn_room(now) > 0) => {
                return None;
            }
            Some((_, _, conn)) => conn,
            None => return None,
        };
        self.last_now = now;
        self.add_session(conn);
        self.debug_check();
        Some(conn)
    }

    /// Whether `next_deadline`, waiters aside, is reached at `now`: an idle
    /// process past its idle timeout or its lifetime, or a deferred spawn.
    /// Shutting down, nothing is (as `next_deadline` says).
    pub(super) fn due(&self, now: Instant) -> bool {
        if self.shutting_down {
            return false;
        }
        self.idle_due(now)
            || (reached(self.spawn_not_before, now)
                && self.wanted_spawns() > 0
                && self.spawn_slots() > 0)
    }
}
