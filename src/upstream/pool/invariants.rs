//! The pool's invariants, checked after every public method in tests,
//! debug builds and fuzzing builds (`debug_check`). A release build does
//! not check them.

use super::*;

impl Pool {
    pub(super) fn debug_check(&self) {
        if cfg!(any(test, debug_assertions, fuzzing)) {
            self.check_invariants();
        }
    }

    fn check_invariants(&self) {
        let mut counts = Counts::default();
        for (&id, c) in &self.conns {
            *counts.of(c.state) += 1;
            assert!(id < self.next_id, "conn {id} was never spawned");
            match c.state {
                ConnState::Starting | ConnState::Closing => assert_eq!(c.sessions, 0, "{id}"),
                ConnState::Idle => {
                    assert_eq!(c.sessions, 0, "{id}");
                    assert!(c.ready_at.is_some(), "{id}");
                }
                ConnState::Leased => {
                    assert!(c.sessions >= 1, "{id}");
                    if self.cfg.mode == Mode::Session {
                        assert_eq!(c.sessions, 1, "{id}");
                    }
                    assert!(c.ready_at.is_some(), "{id}");
                }
            }
        }
        assert_eq!(counts, self.counts, "per-state counts drifted");
        self.check_indexes();
        assert!(
            self.counts.live() <= self.cfg.max_connections,
            "{:?} over max {}",
            self.counts,
            self.cfg.max_connections
        );
        // Every queue is capped: by `max_waiting`, or, in Shared mode while a
        // process is starting (everyone queued shares it once it is ready),
        // by `max_waiting_starting`.
        let cold = self.cfg.mode == Mode::Shared && self.counts.starting > 0;
        let cap = if cold {
            self.cfg.max_waiting.max(self.cfg.max_waiting_starting)
        } else {
            self.cfg.max_waiting
        };
        assert!(
            self.waiters.len() <= cap,
            "{} waiters over the cap {cap}",
            self.waiters.len()
        );
        assert_eq!(self.spawned_total, self.next_id - 1);
        let mut ids = std::collections::HashSet::with_capacity(self.waiters.len());
        for w in &self.waiters {
            assert!(ids.insert(w.id), "waiter {} queued twice", w.id);
        }
        if !self.waiters.is_empty() {
            // Session: a spare would have been granted. Shared: an idle
            // process is the least loaded and would have been pinned.
            assert_eq!(
                self.counts.idle, 0,
                "a waiter queued beside an idle process"
            );
        }
        if self.cfg.mode == Mode::Shared {
            // A queued waiter waits for a Starting process of its own, or
            // nothing is ready to share.
            let waiting_without_a_process = self.waiters.len().saturating_sub(self.counts.starting);
            assert!(
                waiting_without_a_process == 0 || self.counts.ready() == 0,
                "{waiting_without_a_process} waiters queued while a process is ready"
            );
        }
        // Starved waiters exist only in Session mode, at the cap, beyond the
        // Starting processes that will serve the first of them.
        let starved = self.starved();
        if starved > 0 {
            assert_eq!(self.cfg.mode, Mode::Session);
            assert!(!self.shutting_down);
            assert_eq!(self.counts.live(), self.cfg.max_connections);
            assert_eq!(starved, self.waiters.len() - self.counts.starting);
        }
        if self.shutting_down {
            assert!(self.waiters.is_empty());
            assert_eq!(self.counts.starting + self.counts.idle, 0);
        } else if self.wanted_spawns() > 0 && self.spawn_slots() > 0 {
            assert!(
                self.spawn_not_before.is_some(),
                "a spawn is wanted and allowed but was not made"
            );
        }
        // `next_deadline` makes a stale idle floor exact: put it back as it
        // was, so that a test build runs with the floors a release build has.
        let floor = self.idle_floor.get();
        if let Some(d) = self.next_deadline() {
            assert!(d > self.last_now, "next deadline is not in the future");
        }
        self.idle_floor.set(floor);
    }
}
