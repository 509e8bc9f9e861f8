//! What the pool keeps so that the questions a request asks need no pass
//! over the processes (issue 13: a 2026-07-28 request in Shared mode calls
//! [`Pool::pin`] and [`Pool::release`], and the loop asks
//! [`Pool::next_deadline`] every turn; each was a pass over every process).
//! What is left grows slowly with the pool: binary searches, the entries a
//! re-key moves, and, with `max_lifetime`, a walk past draining processes
//! to the first that is not:
//!
//! - `ready`: the Idle and Leased processes ordered by `(sessions, id)`.
//!   The least loaded is the first; the Idle ones (no session) come first,
//!   lowest id first, and since ids are handed out in spawn order (and a
//!   spawn is dated at the latest `now` the pool has seen, so that times
//!   follow ids even if an owner's clock went back), the first Idle one is
//!   the oldest Idle one (what `max_lifetime` asks about). A
//!   sorted `Vec` ([`Ready`]): a session count's change moves the entries
//!   between its old and new place, 16 bytes each (a 64-process pool moves
//!   at most 1 KiB), which costs less than a tree's node work at the sizes
//!   a pool has (`max_connections`).
//! - `idle_floor`: the earliest `idle_since` of the Idle processes. Taking
//!   a process in or out of Idle keeps it exact, except when the one that
//!   held it leaves while others stay: then it is marked stale and the next
//!   read recomputes it in one pass. A request pins the lowest-numbered
//!   Idle process and frees it again at once, so it is seldom the longest
//!   idle one.
//!
//! Every change to a process's state or session count goes through
//! `set_state` and `set_sessions`, which keep both; `check_invariants`
//! recomputes them after every public method in tests and debug builds.

use super::*;

/// The earliest `idle_since` among the Idle processes (`None`: none is
/// Idle), or a lower bound on it when not `exact`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IdleFloor {
    pub(super) min: Option<Instant>,
    pub(super) exact: bool,
}

impl IdleFloor {
    pub(super) const EMPTY: IdleFloor = IdleFloor {
        min: None,
        exact: true,
    };
}

/// `(sessions, id)` of every Idle and Leased process, ascending.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Ready(Vec<(usize, ConnId)>);

impl Ready {
    pub(super) fn first(&self) -> Option<&(usize, ConnId)> {
        self.0.first()
    }

    pub(super) fn iter(&self) -> std::slice::Iter<'_, (usize, ConnId)> {
        self.0.iter()
    }

    pub(super) fn insert(&mut self, key: (usize, ConnId)) {
        let (Ok(at) | Err(at)) = self.0.binary_search(&key);
        debug_assert!(self.0.get(at) != Some(&key), "{key:?} indexed twice");
        self.0.insert(at, key);
    }

    pub(super) fn remove(&mut self, key: (usize, ConnId)) {
        match self.0.binary_search(&key) {
            Ok(at) => {
                self.0.remove(at);
            }
            Err(_) => debug_assert!(false, "{key:?} was not indexed"),
        }
    }

    /// `old` becomes `new`: the entries between the two places move by one.
    pub(super) fn rekey(&mut self, old: (usize, ConnId), new: (usize, ConnId)) {
        let Ok(i) = self.0.binary_search(&old) else {
            debug_assert!(false, "{old:?} was not indexed");
            return;
        };
        // Where `new` goes, counted with `old` still in place (ids are
        // unique, so `new` is not there).
        let (Ok(j) | Err(j)) = self.0.binary_search(&new);
        if j > i {
            self.0[i..j].rotate_left(1);
            self.0[j - 1] = new;
        } else {
            self.0[j..=i].rotate_right(1);
            self.0[j] = new;
        }
    }
}

pub(super) fn is_ready(state: ConnState) -> bool {
    matches!(state, ConnState::Idle | ConnState::Leased)
}

impl Pool {
    /// A conn's session count changes: its place in `ready` with it.
    pub(super) fn set_sessions(&mut self, conn: ConnId, n: usize) {
        let c = self.conns.get_mut(&conn).expect("known conn");
        if is_ready(c.state) && c.sessions != n {
            self.ready.rekey((c.sessions, conn), (n, conn));
        }
        c.sessions = n;
    }

    /// `set_state` and `remove`, after the counts: `conn` (with `sessions`
    /// and `idle_since`) went from `from` to `to` (`None`: gone).
    pub(super) fn reindex(
        &mut self,
        conn: ConnId,
        sessions: usize,
        idle_since: Instant,
        from: ConnState,
        to: Option<ConnState>,
    ) {
        let now_ready = to.is_some_and(is_ready);
        if is_ready(from) && !now_ready {
            self.ready.remove((sessions, conn));
        } else if !is_ready(from) && now_ready {
            self.ready.insert((sessions, conn));
        }
        let f = self.idle_floor.get();
        if from == ConnState::Idle && to != Some(ConnState::Idle) {
            if self.counts.idle == 0 {
                self.idle_floor.set(IdleFloor::EMPTY);
            } else if f.min == Some(idle_since) {
                self.idle_floor.set(IdleFloor { exact: false, ..f });
            }
        } else if from != ConnState::Idle && to == Some(ConnState::Idle) {
            self.idle_floor.set(if self.counts.idle == 1 {
                IdleFloor {
                    min: Some(idle_since),
                    exact: true,
                }
            } else {
                IdleFloor {
                    min: Some(f.min.map_or(idle_since, |m| m.min(idle_since))),
                    ..f
                }
            });
        }
    }

    /// The earliest `idle_since` among the Idle processes: one pass over
    /// them when the floor is stale, which makes it exact again.
    #[inline]
    pub(super) fn idle_floor(&self) -> Option<Instant> {
        let f = self.idle_floor.get();
        if f.exact {
            return f.min;
        }
        self.refresh_idle_floor()
    }

    #[cold]
    fn refresh_idle_floor(&self) -> Option<Instant> {
        let min = self.earliest_idle_since();
        self.idle_floor.set(IdleFloor { min, exact: true });
        min
    }

    /// The pass the floor saves: the earliest `idle_since` of the Idle
    /// processes.
    fn earliest_idle_since(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter(|c| c.state == ConnState::Idle)
            .map(|c| c.idle_since)
            .min()
    }

    /// The Idle process spawned first (the lowest id among those with no
    /// session), if any.
    pub(super) fn oldest_idle(&self) -> Option<&Conn> {
        match self.ready.first() {
            Some(&(0, id)) => self.conns.get(&id),
            _ => None,
        }
    }

    /// An Idle process is past its idle timeout (when the timeout may close
    /// one) or past `max_lifetime`: `settle` would close it.
    pub(super) fn idle_due(&self, now: Instant) -> bool {
        let timeout = self.cfg.idle_timeout;
        let idle_limit = !timeout.is_zero() && self.protected() > self.cfg.min_idle;
        (idle_limit && reached(self.idle_floor().and_then(|t| after(t, timeout)), now))
            || (self.cfg.max_lifetime.is_some()
                && self.oldest_idle().is_some_and(|c| self.is_aged(c, now)))
    }

    /// Shared mode: the ready process the policy pins to, as
    /// `(draining, sessions, id)`, the minimum of that key: the first in
    /// `ready` that is not past `max_lifetime`, else the first.
    pub(super) fn least_loaded(&self, now: Instant) -> Option<(bool, usize, ConnId)> {
        if self.cfg.max_lifetime.is_none() {
            return self.ready.first().map(|&(s, id)| (false, s, id));
        }
        let mut draining = None;
        for &(s, id) in self.ready.iter() {
            let c = self.conns.get(&id).expect("indexed conn");
            if !self.is_aged(c, now) {
                return Some((false, s, id));
            }
            draining.get_or_insert((true, s, id));
        }
        draining
    }

    /// `check_invariants`' part: the indexes against the processes.
    pub(super) fn check_indexes(&self) {
        let mut ready: Vec<(usize, ConnId)> = self
            .conns
            .iter()
            .filter(|(_, c)| is_ready(c.state))
            .map(|(&id, c)| (c.sessions, id))
            .collect();
        ready.sort_unstable();
        assert_eq!(ready, self.ready.0, "the ready index drifted");
        let min = self.earliest_idle_since();
        let f = self.idle_floor.get();
        if f.exact {
            assert_eq!(f.min, min, "the idle floor drifted");
        } else {
            assert!(
                f.min.is_some() && min.is_some() && f.min <= min,
                "the idle floor {f:?} is above the earliest {min:?}"
            );
        }
        let mut last = None;
        for c in self.conns.values() {
            assert!(
                last.is_none_or(|t| t <= c.spawned_at),
                "spawn times out of id order"
            );
            last = Some(c.spawned_at);
        }
    }
}
