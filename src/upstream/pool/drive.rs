//! A pool driven by arbitrary bytes, checked against its contract after
//! every call: the `pool_ops` fuzz target and the seeded unit tests in
//! `tests/drive.rs` run it (built only for them: `cfg(test)` or
//! `cfg(fuzzing)`).
//!
//! The bytes pick a configuration, then a sequence of calls an owner could
//! make: leases (some asking `pin` first, as a 2026-07-28 exchange does),
//! cancellations (of queued waiters and of answered ones), processes
//! becoming ready, failing to start and exiting (and late or repeated
//! reports of those), releases (and releases of nothing), polls, time
//! moving forward or, as an owner's clock may, back a little (half the time
//! with a poll, half the time not, so that the next call finds work
//! overdue), polls at the reported deadline, and shutdown; at the end the
//! owner shuts the pool down, gives back every session and reaps every
//! process. The driver keeps what the owner knows (which processes it
//! started and when, which it was told to close, the sessions it holds on
//! each, which waiters are queued since when) and checks, besides the
//! invariants every public method checks itself (`invariants.rs`):
//!
//! - actions: a `Spawn` names the next id; a `Close` names a live process
//!   not closed before and holding none of the owner's sessions (and
//!   `SessionEnded` only in Session mode); a `Grant` names a queued waiter
//!   and a ready process, comes before any `Spawn` of the same call, and in
//!   Session mode names a process never given out before; a `Reject` names
//!   a queued waiter, and a queue timeout is never early. Every waiter gets
//!   exactly one outcome unless the owner cancels it;
//! - a process past `max_lifetime` is never given out in Session mode, and
//!   in Shared mode only when every ready process is past it;
//! - the pool's view agrees with the owner's: states, sessions per process
//!   and in all, waiters (none overdue), `starved`; a session given back
//!   while waiters are starved feeds one of them, spawning for it unless
//!   spawning is held back (a backoff, or a probe under way);
//! - every call leaves the pool settled at the latest `now` it acted at:
//!   `poll` then does nothing (the module's promise, and what lets
//!   `release` skip settling and `pin` never settle); a cancellation asks
//!   for nothing, and a late or repeated report, or a release of nothing,
//!   does exactly what a `poll` at its `now` would and changes nothing
//!   else;
//! - `next_deadline` is honest: after that `now`, and `poll` does nothing
//!   before it (at that `now`, halfway, and a nanosecond before), nor an
//!   hour later when it is `None`;
//! - `pin` is `lease` without the queue: when it pins a process, a `lease`
//!   at the same `now` grants that same process at once, with nothing
//!   else, and leaves the pool in the same state, field for field; a pin
//!   that declines changes nothing, and when it declines with nothing
//!   queued or due, such a `lease` is not a grant at once either;
//! - at the end, shutdown answers every waiter, the last sessions given
//!   back one by one close every process (each checked as above), and
//!   once all are reaped the pool is empty.
//!
//! It checks the contract, not the policy: which spare a waiter gets, FIFO
//! order, how many spares are kept, backoff and probing are the scripted
//! tests' (`tests.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::*;

/// Reads the input a byte at a time; past its end, zeros.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> Option<T> {
        (!from.is_empty()).then(|| from[self.below(from.len())])
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(b: &mut Bytes) -> PoolConfig {
    let mode = if b.byte().is_multiple_of(2) {
        Mode::Session
    } else {
        Mode::Shared
    };
    let queue_timeout = [ms(0), ms(50), ms(700), ms(5_000), Duration::MAX][b.below(5)];
    PoolConfig {
        mode,
        max_connections: b.below(6),
        min_idle: b.below(4),
        max_waiting: b.below(7),
        max_waiting_starting: b.below(11),
        queue_timeout,
        idle_timeout: [ms(0), ms(100), ms(1_500), ms(10_000)][b.below(4)],
        max_lifetime: [None, Some(ms(300)), Some(ms(3_000)), Some(ms(20_000))][b.below(4)],
        spawn_backoff_base: [ms(1), ms(10), ms(200), ms(500)][b.below(4)],
        spawn_backoff_cap: [ms(500), ms(2_000), ms(5_500)][b.below(3)],
    }
}

/// What a run did, so that a test can tell it exercised something.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub calls: u64,
    pub spawns: u64,
    pub grants: u64,
    pub pins: u64,
    pub queue_timeouts: u64,
    pub idle_timeouts: u64,
    pub aged: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, o: Tally) {
        self.calls += o.calls;
        self.spawns += o.spawns;
        self.grants += o.grants;
        self.pins += o.pins;
        self.queue_timeouts += o.queue_timeouts;
        self.idle_timeouts += o.idle_timeouts;
        self.aged += o.aged;
    }
}

/// What the owner knows of one process it was told to spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Starting,
    Ready,
    Closing,
}

/// The owner: what the pool told it, and what it did since.
struct Owner {
    cfg: PoolConfig,
    procs: BTreeMap<ConnId, Known>,
    /// When each process was spawned, by the pool's time.
    spawned: BTreeMap<ConnId, Instant>,
    /// Sessions the owner holds on each ready process (grants and pins,
    /// less releases).
    held: BTreeMap<ConnId, usize>,
    /// Session mode: every process ever given out (never twice).
    ever_given: BTreeSet<ConnId>,
    /// Queued waiters, with the pool's time they were queued at.
    queued: BTreeMap<WaiterId, Instant>,
    /// Waiters answered (granted or rejected), in order, and waiters the
    /// owner cancelled while queued.
    answered: Vec<WaiterId>,
    cancelled: BTreeSet<WaiterId>,
    /// Processes gone (failed to start, or exited), in order.
    gone: Vec<ConnId>,
    /// Processes told to close while Starting.
    closed_starting: BTreeSet<ConnId>,
    next_waiter: WaiterId,
    last_spawn: ConnId,
    tally: Tally,
}

impl Owner {
    fn new(cfg: &PoolConfig) -> Owner {
        Owner {
            cfg: cfg.clone(),
            procs: BTreeMap::new(),
            spawned: BTreeMap::new(),
            held: BTreeMap::new(),
            ever_given: BTreeSet::new(),
            queued: BTreeMap::new(),
            answered: Vec::new(),
            cancelled: BTreeSet::new(),
            gone: Vec::new(),
            closed_starting: BTreeSet::new(),
            next_waiter: 0,
            last_spawn: 0,
            tally: Tally::default(),
        }
    }

    /// A new waiter, queued at the pool's time `at`.
    fn queue(&mut self, at: Instant) -> WaiterId {
        self.next_waiter += 1;
        self.queued.insert(self.next_waiter, at);
        self.next_waiter
    }

    /// What a call returned; the pool acted at `at` (its time after it).
    fn apply(&mut self, actions: &[Action], at: Instant, context: &str) {
        let mut spawned = false;
        for a in actions {
            match *a {
                Action::Spawn(id) => {
                    assert_eq!(
                        id,
                        self.last_spawn + 1,
                        "{context}: {a:?} is not the next id"
                    );
                    self.last_spawn = id;
                    self.procs.insert(id, Known::Starting);
                    self.spawned.insert(id, at);
                    self.tally.spawns += 1;
                    spawned = true;
                }
                Action::Close(id, reason) => {
                    let known = self.procs.get(&id).copied();
                    assert!(
                        matches!(known, Some(Known::Starting | Known::Ready)),
                        "{context}: {a:?} of a process that is {known:?}"
                    );
                    assert_eq!(
                        self.held.get(&id).copied().unwrap_or(0),
                        0,
                        "{context}: {a:?} of a process the owner holds sessions on"
                    );
                    assert!(
                        reason != CloseReason::SessionEnded || self.cfg.mode == Mode::Session,
                        "{context}: {a:?} in Shared mode"
                    );
                    if known == Some(Known::Starting) {
                        self.closed_starting.insert(id);
                    }
                    self.procs.insert(id, Known::Closing);
                    match reason {
                        CloseReason::IdleTimeout => self.tally.idle_timeouts += 1,
                        CloseReason::MaxLifetime => self.tally.aged += 1,
                        _ => {}
                    }
                }
                Action::Grant { waiter, conn } => {
                    assert!(!spawned, "{context}: a Spawn came before {a:?}");
                    assert!(
                        self.queued.remove(&waiter).is_some(),
                        "{context}: {a:?}: the waiter is not queued"
                    );
                    self.answered.push(waiter);
                    self.take(conn, at, context);
                }
                Action::Reject { waiter, reason } => {
                    let since = self.queued.remove(&waiter);
                    let since = since
                        .unwrap_or_else(|| panic!("{context}: {a:?}: the waiter is not queued"));
                    if reason == RejectReason::QueueTimeout {
                        let due = since.checked_add(self.cfg.queue_timeout);
                        assert!(due.is_some_and(|due| at >= due), "{context}: {a:?} early");
                        self.tally.queue_timeouts += 1;
                    }
                    self.answered.push(waiter);
                }
            }
        }
    }

    /// One more session on `conn` (a grant or a pin, at `at`). A process
    /// past `max_lifetime` is never given out in Session mode (it is
    /// replaced), and in Shared mode only when every ready process is.
    fn take(&mut self, conn: ConnId, at: Instant, context: &str) {
        let known = self.procs.get(&conn).copied();
        assert_eq!(
            known,
            Some(Known::Ready),
            "{context}: conn {conn} given out while {known:?}"
        );
        if self.aged(conn, at) {
            let young = self
                .with(|k| k == Known::Ready)
                .into_iter()
                .find(|&id| !self.aged(id, at));
            assert!(
                self.cfg.mode == Mode::Shared && young.is_none(),
                "{context}: conn {conn} given out past max_lifetime (conn {young:?} is not)"
            );
        }
        if self.cfg.mode == Mode::Session {
            assert!(
                self.ever_given.insert(conn),
                "{context}: Session mode gave conn {conn} out twice"
            );
        }
        *self.held.entry(conn).or_default() += 1;
        self.tally.grants += 1;
    }

    fn aged(&self, conn: ConnId, at: Instant) -> bool {
        let spawned = self.spawned.get(&conn).copied();
        match (self.cfg.max_lifetime, spawned) {
            (Some(life), Some(t)) => t.checked_add(life).is_some_and(|end| at >= end),
            _ => false,
        }
    }

    fn with(&self, f: impl Fn(Known) -> bool) -> Vec<ConnId> {
        self.procs
            .iter()
            .filter(|&(_, &k)| f(k))
            .map(|(&id, _)| id)
            .collect()
    }

    fn live(&self) -> Vec<ConnId> {
        self.with(|_| true)
    }

    fn holding(&self) -> Vec<ConnId> {
        self.held
            .iter()
            .filter(|&(_, &n)| n > 0)
            .map(|(&id, _)| id)
            .collect()
    }

    /// What `on_ready` and `on_spawn_failed` may be told of: a Starting
    /// process, one closed while Starting (its report crossed the close),
    /// or one gone.
    fn reportable(&self) -> Vec<ConnId> {
        let mut ids = self.with(|k| k == Known::Starting);
        ids.extend(
            self.closed_starting
                .iter()
                .filter(|id| self.procs.contains_key(id)),
        );
        ids.extend(self.gone.iter().rev().take(2));
        ids
    }

    /// A process reported gone; the sessions on it end with it.
    fn forget(&mut self, id: ConnId) {
        if self.procs.remove(&id).is_some() {
            self.gone.push(id);
        }
        self.held.remove(&id);
    }

    /// The pool's view against the owner's, at the pool's time `at`.
    fn agrees(&self, pool: &Pool, at: Instant, context: &str) {
        let mut count = [0usize; 3];
        for (&id, &known) in &self.procs {
            let state = pool.state(id);
            let ok = match known {
                Known::Starting => state == Some(ConnState::Starting),
                Known::Ready => matches!(state, Some(ConnState::Idle | ConnState::Leased)),
                Known::Closing => state == Some(ConnState::Closing),
            };
            assert!(
                ok,
                "{context}: conn {id}: the owner has {known:?}, the pool {state:?}"
            );
            count[known as usize] += 1;
            if known == Known::Ready {
                let held = self.held.get(&id).copied().unwrap_or(0);
                assert_eq!(
                    pool.sessions_on(id),
                    held,
                    "{context}: sessions on conn {id}"
                );
                assert_eq!(
                    state == Some(ConnState::Leased),
                    held > 0,
                    "{context}: conn {id}"
                );
            }
        }
        let [starting, ready, closing] = count;
        let stats = pool.stats();
        assert_eq!(stats.starting, starting, "{context}: Starting");
        assert_eq!(stats.idle + stats.leased, ready, "{context}: ready");
        assert_eq!(stats.closing, closing, "{context}: Closing");
        assert_eq!(stats.waiting, self.queued.len(), "{context}: waiters");
        let sessions: usize = self.held.values().sum();
        assert_eq!(stats.sessions, sessions, "{context}: sessions");
        assert_eq!(stats.spawned_total, self.last_spawn, "{context}: spawns");
        assert!(
            starting + ready <= self.cfg.max_connections,
            "{context}: over the cap"
        );
        // Starved: Session mode, at the cap, waiters beyond the Starting ones.
        let starved =
            if self.cfg.mode == Mode::Session && starting + ready == self.cfg.max_connections {
                self.queued.len().saturating_sub(starting)
            } else {
                0
            };
        assert_eq!(pool.starved(), starved, "{context}: starved");
        for (&w, &since) in &self.queued {
            let due = since.checked_add(self.cfg.queue_timeout);
            assert!(
                due.is_none_or(|due| due > at),
                "{context}: waiter {w} overdue"
            );
        }
    }
}

/// The pool is settled at `at`, and `next_deadline` tells the truth.
fn settled(pool: &Pool, at: Instant, context: &str) {
    let again = pool.clone().poll(at);
    assert!(
        again.is_empty(),
        "{context}: not settled: poll gave {again:?}"
    );
    match pool.next_deadline() {
        Some(d) => {
            assert!(d > at, "{context}: the deadline is not after now");
            let gap = d - at;
            for t in [at + gap / 2, d - Duration::from_nanos(1)] {
                let early = pool.clone().poll(t);
                assert!(
                    early.is_empty(),
                    "{context}: poll before the deadline gave {early:?}"
                );
            }
        }
        None => {
            let later = pool.clone().poll(at + Duration::from_secs(3_600));
            assert!(
                later.is_empty(),
                "{context}: no deadline, yet poll gave {later:?}"
            );
        }
    }
}

/// Runs the calls `data` describes; panics on the first broken promise.
pub fn run(data: &[u8]) -> Tally {
    let mut b = Bytes(data);
    let cfg = config(&mut b);
    let t0 = Instant::now();
    let mut now = t0;
    let seed = u64::from(b.byte());
    let mut owner = Owner::new(&cfg);
    let mut pool = Pool::new(cfg, Rng::seeded(seed), now);
    let out = pool.start(now);
    owner.apply(&out, pool.last_now, "start");
    owner.agrees(&pool, pool.last_now, "start");
    settled(&pool, pool.last_now, "start");
    let mut step = 0usize;
    while !b.is_empty() && step < 400 {
        step += 1;
        let op = b.byte();
        let context = format!("step {step}, op {op}");
        // The pool's time does not move in this call: a late report or a
        // cancellation then asks for nothing.
        let still = now <= pool.last_now;
        let before = pool.clone();
        let (out, stale) = match op % 16 {
            0 | 1 => {
                let w = owner.queue(pool.last_now.max(now));
                (pool.lease(w, now), false)
            }
            2 | 3 => (pin_or_lease(&mut pool, &mut owner, now, &context), false),
            4 => {
                // A queued waiter, or one already answered (a client that
                // went away as its answer came): nothing owed for either.
                let mut some: Vec<WaiterId> = owner.queued.keys().copied().collect();
                some.extend(owner.answered.iter().rev().take(2));
                let Some(w) = b.pick(&some) else { continue };
                if owner.queued.remove(&w).is_some() {
                    owner.cancelled.insert(w);
                }
                let out = pool.cancel_wait(w);
                assert_eq!(out, vec![], "{context}: a cancellation asked for something");
                (out, true)
            }
            5 | 6 => {
                let mut some = owner.reportable();
                some.extend(owner.with(|k| k != Known::Starting));
                let Some(id) = b.pick(&some) else {
                    continue;
                };
                // Ready once it was Starting; a late report of one closed
                // while Starting, or of one gone, changes nothing.
                let starting = owner.procs.get(&id) == Some(&Known::Starting);
                if starting {
                    owner.procs.insert(id, Known::Ready);
                }
                (pool.on_ready(id, now), !starting)
            }
            7 => {
                let Some(id) = b.pick(&owner.reportable()) else {
                    continue;
                };
                // Starting, or closed while Starting: gone either way.
                let starting = owner.procs.get(&id) == Some(&Known::Starting);
                owner.forget(id);
                (pool.on_spawn_failed(id, now), !starting)
            }
            8 | 9 => {
                // Mostly a session the owner holds; now and then a process
                // it holds none on, or one gone: nothing to give back.
                let holding = b.below(4) != 0;
                let pick = if holding {
                    b.pick(&owner.holding())
                } else {
                    let mut none: Vec<ConnId> = owner
                        .live()
                        .into_iter()
                        .filter(|id| owner.held.get(id).copied().unwrap_or(0) == 0)
                        .collect();
                    none.extend(owner.gone.iter().rev().take(2));
                    b.pick(&none)
                };
                let Some(id) = pick else { continue };
                // Starved at this call's now, without the release (time may
                // have moved since the last call: timeouts are not feeding).
                let (starved, held_back) = {
                    let mut r = pool.clone();
                    r.poll(now);
                    let at = r.last_now;
                    let held_back = r.spawn_not_before.is_some_and(|t| t > at)
                        || (r.probing && r.counts.starting > 0);
                    (r.starved(), held_back)
                };
                if holding {
                    *owner.held.get_mut(&id).expect("held") -= 1;
                }
                let out = pool.release(id, now);
                // While waiters are starved, a session given back is the
                // owner reclaiming it: the freed slot goes to one of them.
                if holding && starved > 0 {
                    assert!(
                        pool.starved() < starved,
                        "{context}: a release fed no waiter"
                    );
                    // Its process is spawned now, unless spawning was
                    // already held back (a backoff, or a probe under way).
                    assert!(
                        held_back || out.iter().any(|a| matches!(a, Action::Spawn(_))),
                        "{context}: a release while starved spawned nothing: {out:?}"
                    );
                }
                (out, !holding)
            }
            10 => {
                let mut some = owner.live();
                some.extend(owner.gone.iter().rev().take(2));
                let Some(id) = b.pick(&some) else { continue };
                // Gone with whatever sessions it had (the owner ends them);
                // a second report changes nothing.
                let again = !owner.procs.contains_key(&id);
                owner.forget(id);
                (pool.on_exit(id, now), again)
            }
            11..=14 => {
                match op % 16 {
                    11 | 12 => now += ms(u64::from(b.byte()) * 8),
                    // An owner's clock may go back a little; never before t0.
                    13 => {
                        let back = ms(u64::from(b.byte() % 64));
                        now = now.checked_sub(back).filter(|t| *t >= t0).unwrap_or(t0);
                    }
                    _ => {
                        let Some(d) = pool.next_deadline() else {
                            continue;
                        };
                        now = now.max(d);
                    }
                }
                // Half the time the owner polls; otherwise the next call
                // comes late, with whatever fell due in between.
                if b.byte().is_multiple_of(2) {
                    continue;
                }
                (pool.poll(now), false)
            }
            _ => {
                if !b.byte().is_multiple_of(64) {
                    continue;
                }
                (pool.shutdown(now), false)
            }
        };
        owner.tally.calls += 1;
        if stale && still {
            assert_eq!(out, vec![], "{context}: a late report asked for something");
        }
        if stale && op % 16 != 4 {
            let mut r = before.clone();
            let want = r.poll(now);
            assert_eq!(out, want, "{context}: a late report is not a poll");
            if op % 16 != 7 {
                let at = pool.last_now;
                assert_eq!(
                    seen(&r, at),
                    seen(&pool, at),
                    "{context}: a late report moved the pool"
                );
            }
        }
        owner.apply(&out, pool.last_now, &context);
        if pool.is_shutting_down() {
            assert!(
                owner.queued.is_empty(),
                "{context}: a waiter outlived shutdown"
            );
        }
        owner.agrees(&pool, pool.last_now, &context);
        // Settled at the latest `now` the pool acted at (a call with an
        // earlier one acts at that).
        settled(&pool, pool.last_now, &context);
    }
    finish(&mut pool, &mut owner, now);
    owner.tally
}

/// The owner stops: shutdown answers every waiter, the last sessions given
/// back close every process, and once all are reaped nothing is left.
fn finish(pool: &mut Pool, owner: &mut Owner, now: Instant) {
    let at = |pool: &Pool| pool.last_now;
    let out = pool.shutdown(now);
    owner.apply(&out, at(pool), "shutdown");
    assert!(owner.queued.is_empty(), "a waiter got no outcome");
    assert!(
        owner.with(|k| k == Known::Starting).is_empty(),
        "a Starting process outlived shutdown"
    );
    for id in owner.holding() {
        while owner.held.get(&id).copied().unwrap_or(0) > 0 {
            *owner.held.get_mut(&id).expect("held") -= 1;
            let out = pool.release(id, now);
            owner.apply(&out, at(pool), "the last releases");
            owner.agrees(pool, at(pool), "the last releases");
        }
    }
    assert!(
        owner.with(|k| k == Known::Ready).is_empty(),
        "a process outlived its last session after shutdown"
    );
    for id in owner.live() {
        let out = pool.on_exit(id, now);
        owner.forget(id);
        owner.apply(&out, at(pool), "reaping");
        owner.agrees(pool, at(pool), "reaping");
    }
    owner.agrees(pool, at(pool), "reaped");
    assert_eq!(
        pool.stats(),
        Stats {
            spawned_total: owner.last_spawn,
            ..Stats::default()
        }
    );
    // Every waiter: one outcome, or cancelled while queued and none.
    let mut outcomes = BTreeMap::new();
    for &w in &owner.answered {
        *outcomes.entry(w).or_insert(0u32) += 1;
    }
    for w in 1..=owner.next_waiter {
        let n = outcomes.get(&w).copied().unwrap_or(0);
        let want = u32::from(!owner.cancelled.contains(&w));
        assert_eq!(n, want, "waiter {w}");
    }
}

/// `pin`, checked against a `lease` at the same `now` both ways; when it
/// declines, the owner leases, as the relay does.
fn pin_or_lease(pool: &mut Pool, owner: &mut Owner, now: Instant, context: &str) -> Vec<Action> {
    let at = pool.last_now.max(now);
    let w = owner.next_waiter + 1;
    let mut leased = pool.clone();
    let lease = leased.lease(w, now);
    let before = pool.clone();
    match pool.pin(now) {
        Some(conn) => {
            // Granted at once, that process, nothing else, the same state.
            assert_eq!(
                lease,
                vec![Action::Grant { waiter: w, conn }],
                "{context}: pin gave conn {conn}, a lease at the same now"
            );
            // All of it: processes, indexes, queue, backoff, the clock.
            // Two caches aside: a spawn delay already passed is cleared
            // by the lease's settling and kept by the pin (the same either
            // way: nothing is to spawn, or the pin would have declined),
            // and a stale idle floor is made exact by whoever reads it.
            assert_eq!(seen(&leased, at), seen(pool, at), "{context}: pin vs lease");
            // The pin stands for that grant.
            owner.tally.pins += 1;
            let w = owner.queue(at);
            vec![Action::Grant { waiter: w, conn }]
        }
        None => {
            // Declining moves nothing: the pool's own checks still hold
            // (its time, and so `next_deadline`, untouched).
            pool.debug_check();
            assert_eq!(
                seen(&before, at),
                seen(pool, at),
                "{context}: a declining pin moved something"
            );
            // With nothing queued or due, a lease would not have been a
            // grant at once either.
            let plain = pool.cfg.mode == Mode::Shared
                && !pool.shutting_down
                && owner.queued.is_empty()
                && !pool.due(at);
            if plain {
                assert!(
                    !matches!(lease.as_slice(), [Action::Grant { .. }]),
                    "{context}: pin declined, a lease at the same now gave {lease:?}"
                );
            }
            let w = owner.queue(at);
            pool.lease(w, now)
        }
    }
}

/// The pool field for field, two caches made canonical (see `pin_or_lease`).
fn seen(p: &Pool, at: Instant) -> String {
    let mut p = p.clone();
    if reached(p.spawn_not_before, at) {
        p.spawn_not_before = None;
    }
    let _ = p.idle_floor();
    format!("{p:?}")
}
