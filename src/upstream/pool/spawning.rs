//! When the pool spawns: what the policy wants (`wanted_spawns`), what the
//! cap, the probe rule and the backoff allow (`spawn_room`,
//! `spawn_slots`), and a failure's backoff (`spawn_failed`). See the
//! module docs' "Decisions" for the rules.

use super::*;

impl Pool {
    pub(super) fn spawn_wanted(&mut self, now: Instant, out: &mut Vec<Action>) {
        if reached(self.spawn_not_before, now) {
            self.spawn_not_before = None;
        }
        let n = self.wanted_spawns().min(self.spawn_room(now));
        for _ in 0..n {
            self.spawn(now, out);
        }
    }

    /// New processes the policy wants, before the cap and backoff.
    pub(super) fn wanted_spawns(&self) -> usize {
        let c = &self.counts;
        match self.cfg.mode {
            // Every waiter and every missing spare wants a process of its own.
            Mode::Session => {
                (self.waiters.len() + self.cfg.min_idle).saturating_sub(c.idle + c.starting)
            }
            // Queued waiters wait for a Starting process each; `min_idle`
            // counts all live processes.
            Mode::Shared => self
                .waiters
                .len()
                .saturating_sub(c.starting)
                .max(self.cfg.min_idle.saturating_sub(c.live())),
        }
    }

    /// Spawns allowed now: the cap, the probe rule, and the backoff delay.
    pub(super) fn spawn_room(&self, now: Instant) -> usize {
        if self.spawn_not_before.is_some_and(|t| now < t) {
            return 0;
        }
        self.spawn_slots()
    }

    /// Spawns allowed by the cap and the probe rule, whatever the time.
    pub(super) fn spawn_slots(&self) -> usize {
        if self.shutting_down {
            return 0;
        }
        let room = self.cfg.max_connections.saturating_sub(self.counts.live());
        if !self.probing {
            room
        } else if self.counts.starting == 0 {
            room.min(1)
        } else {
            0
        }
    }

    pub(super) fn spawn_failed(&mut self, now: Instant) {
        let delay = self.backoff.next_delay();
        // Two failures in a row both hold: the later deadline wins.
        let at = now.checked_add(delay).unwrap_or(now);
        self.spawn_not_before = Some(self.spawn_not_before.map_or(at, |t| t.max(at)));
        self.probing = true;
        crate::log_debug!(
            "pool: spawn failure {}, next spawn in {delay:?}",
            self.backoff.attempt()
        );
    }
}
