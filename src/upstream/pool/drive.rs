//! A pool driven by arbitrary bytes, checked against its contract after
//! every call: the `pool_ops` fuzz target and the seeded unit test in
//! `tests.rs` run it (built only for them: `cfg(test)` or `cfg(fuzzing)`).
//!
//! The bytes pick a configuration, then a sequence of calls an owner could
//! make: leases, cancellations (of queued waiters and of answered ones),
//! processes becoming ready, failing to start and exiting (and late or
//! repeated reports of those), releases (and releases of nothing), pins,
//! polls, time moving forward or, as an owner's clock may, back a little
//! (half the time with a poll, half the time not, so that the next call
//! finds work overdue), polls at the reported deadline, and shutdown. The
//! driver keeps what the owner knows (which processes it started and when,
//! which it was told to close, how many sessions it holds on each, which
//! waiters are queued) and checks, besides the invariants every public
//! method checks itself (`invariants.rs`):
//!
//! - actions: a `Spawn` names a new process; a `Close` names a live one not
//!   closed before and holding no session of the owner's; a `Grant` names a
//!   queued waiter and a ready process (in Session mode, one nobody holds);
//!   a `Reject` names a queued waiter. Every waiter gets exactly one outcome
//!   unless the owner cancels it, and shutdown answers all of them;
//! - a process past `max_lifetime` is never given out in Session mode, and
//!   in Shared mode only when every ready process is past it;
//! - the pool's view agrees with the owner's: states, sessions per process,
//!   the number of waiters (which, with the rules on outcomes above, makes
//!   the sets equal);
//! - every call leaves the pool settled at the latest `now` it acted at:
//!   `poll` then does nothing (the module's promise, and what lets
//!   `release` skip settling and `pin` never settle);
//! - `next_deadline` is honest: after that `now`, and `poll` does nothing
//!   before it (at that `now`, halfway, and a nanosecond before), nor an
//!   hour later when it is `None`;
//! - `pin` is `lease` without the queue: when it pins a process, a `lease`
//!   at the same `now` grants that same process at once, with nothing
//!   else, and leaves the pool in the same state; when it declines with
//!   nothing queued or due, such a `lease` is not a grant at once either,
//!   and declining leaves the pool's own checks holding.
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
    let queue_timeout = [ms(0), ms(50), ms(700), Duration::MAX][b.below(4)];
    PoolConfig {
        mode,
        max_connections: b.below(6),
        min_idle: b.below(4),
        max_waiting: b.below(4),
        max_waiting_starting: b.below(6),
        queue_timeout,
        idle_timeout: [ms(0), ms(100), ms(1_500)][b.below(3)],
        max_lifetime: [None, Some(ms(300)), Some(ms(3_000))][b.below(3)],
        spawn_backoff_base: [ms(10), ms(200)][b.below(2)],
        spawn_backoff_cap: ms(2_000),
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
    mode: Mode,
    max_lifetime: Option<Duration>,
    procs: BTreeMap<ConnId, Known>,
    /// When each process was spawned, by the pool's time.
    spawned: BTreeMap<ConnId, Instant>,
    /// Sessions the owner holds on each ready process (grants and pins,
    /// less releases).
    held: BTreeMap<ConnId, usize>,
    queued: BTreeSet<WaiterId>,
    /// Waiters answered (granted or rejected), in order.
    answered: Vec<WaiterId>,
    /// Processes gone (failed to start, or exited), in order.
    gone: Vec<ConnId>,
    /// Processes told to close while Starting.
    closed_starting: BTreeSet<ConnId>,
    next_waiter: WaiterId,
    last_spawn: ConnId,
}

impl Owner {
    fn new(cfg: &PoolConfig) -> Owner {
        Owner {
            mode: cfg.mode,
            max_lifetime: cfg.max_lifetime,
            procs: BTreeMap::new(),
            spawned: BTreeMap::new(),
            held: BTreeMap::new(),
            queued: BTreeSet::new(),
            answered: Vec::new(),
            gone: Vec::new(),
            closed_starting: BTreeSet::new(),
            next_waiter: 0,
            last_spawn: 0,
        }
    }

    /// What a call returned; the pool acted at `at` (its time after it).
    fn apply(&mut self, actions: &[Action], at: Instant, context: &str) {
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
                }
                Action::Close(id, _) => {
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
                    if known == Some(Known::Starting) {
                        self.closed_starting.insert(id);
                    }
                    self.procs.insert(id, Known::Closing);
                }
                Action::Grant { waiter, conn } => {
                    assert!(
                        self.queued.remove(&waiter),
                        "{context}: {a:?}: the waiter is not queued"
                    );
                    self.answered.push(waiter);
                    self.take(conn, at, context);
                }
                Action::Reject { waiter, .. } => {
                    assert!(
                        self.queued.remove(&waiter),
                        "{context}: {a:?}: the waiter is not queued"
                    );
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
                self.mode == Mode::Shared && young.is_none(),
                "{context}: conn {conn} given out past max_lifetime (conn {young:?} is not)"
            );
        }
        let held = self.held.entry(conn).or_default();
        assert!(
            self.mode == Mode::Shared || *held == 0,
            "{context}: Session mode gave conn {conn} out twice"
        );
        *held += 1;
    }

    fn aged(&self, conn: ConnId, at: Instant) -> bool {
        let spawned = self.spawned.get(&conn).copied();
        match (self.max_lifetime, spawned) {
            (Some(life), Some(t)) => t.checked_add(life).is_some_and(|end| at >= end),
            _ => false,
        }
    }

    fn starting(&self) -> Vec<ConnId> {
        self.with(|k| k == Known::Starting)
    }

    fn live(&self) -> Vec<ConnId> {
        self.with(|_| true)
    }

    /// What `on_ready` and `on_spawn_failed` may be told of: a Starting
    /// process, one closed while Starting (its report crossed the
    /// close), or one gone.
    fn reportable(&self) -> Vec<ConnId> {
        let mut ids = self.starting();
        ids.extend(
            self.closed_starting
                .iter()
                .filter(|id| self.procs.contains_key(id)),
        );
        ids.extend(self.gone.iter().rev().take(2));
        ids
    }

    fn with(&self, f: impl Fn(Known) -> bool) -> Vec<ConnId> {
        self.procs
            .iter()
            .filter(|&(_, &k)| f(k))
            .map(|(&id, _)| id)
            .collect()
    }

    fn holding(&self) -> Vec<ConnId> {
        self.held
            .iter()
            .filter(|&(_, &n)| n > 0)
            .map(|(&id, _)| id)
            .collect()
    }

    /// The pool's view against the owner's.
    fn agrees(&self, pool: &Pool, context: &str) {
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
        let stats = pool.stats();
        let counted = stats.starting + stats.idle + stats.leased + stats.closing;
        assert_eq!(counted, self.procs.len(), "{context}: processes");
        assert_eq!(stats.waiting, self.queued.len(), "{context}: waiters");
        assert_eq!(stats.spawned_total, self.last_spawn, "{context}: spawns");
    }
}

/// The pool is settled at `now`, and `next_deadline` tells the truth.
fn settled(pool: &Pool, now: Instant, context: &str) {
    let again = pool.clone().poll(now);
    assert!(
        again.is_empty(),
        "{context}: not settled at now: poll gave {again:?}"
    );
    // A call with an earlier `now` than one seen before: the deadline is
    // after the latest.
    let latest = now.max(pool.last_now);
    match pool.next_deadline() {
        Some(d) => {
            assert!(d > latest, "{context}: the deadline is not after now");
            let gap = d - latest;
            for t in [latest, latest + gap / 2, d - Duration::from_nanos(1)] {
                let early = pool.clone().poll(t);
                assert!(
                    early.is_empty(),
                    "{context}: poll before the deadline gave {early:?}"
                );
            }
        }
        None => {
            let later = pool.clone().poll(latest + Duration::from_secs(3_600));
            assert!(
                later.is_empty(),
                "{context}: no deadline, yet poll gave {later:?}"
            );
        }
    }
}

/// Runs the calls `data` describes; panics on the first broken promise.
pub fn run(data: &[u8]) {
    let mut b = Bytes(data);
    let cfg = config(&mut b);
    let t0 = Instant::now();
    let mut now = t0;
    let seed = u64::from(b.byte());
    let mut owner = Owner::new(&cfg);
    let mut pool = Pool::new(cfg, Rng::seeded(seed), now);
    let out = pool.start(now);
    owner.apply(&out, pool.last_now, "start");
    owner.agrees(&pool, "start");
    settled(&pool, now, "start");
    let mut step = 0usize;
    while !b.is_empty() && step < 400 {
        step += 1;
        let op = b.byte();
        let context = format!("step {step}, op {op}");
        let out = match op % 12 {
            0 | 1 => {
                owner.next_waiter += 1;
                let w = owner.next_waiter;
                owner.queued.insert(w);
                pool.lease(w, now)
            }
            2 => {
                // A queued waiter, or one already answered (a client that
                // went away as its answer came): nothing owed for either.
                let mut some: Vec<WaiterId> = owner.queued.iter().copied().collect();
                some.extend(owner.answered.iter().rev().take(2));
                match b.pick(&some) {
                    Some(w) => {
                        owner.queued.remove(&w);
                        pool.cancel_wait(w)
                    }
                    None => continue,
                }
            }
            3 => match b.pick(&owner.reportable()) {
                Some(id) => {
                    // Ready once it was Starting; a late report of one
                    // closed while Starting, or of one gone, changes
                    // nothing.
                    if owner.procs.get(&id) == Some(&Known::Starting) {
                        owner.procs.insert(id, Known::Ready);
                    }
                    pool.on_ready(id, now)
                }
                None => continue,
            },
            4 => match b.pick(&owner.reportable()) {
                Some(id) => {
                    // Starting, or closed while Starting: gone either way.
                    if owner.procs.remove(&id).is_some() {
                        owner.gone.push(id);
                    }
                    pool.on_spawn_failed(id, now)
                }
                None => continue,
            },
            5 => {
                // Mostly a session the owner holds; now and then a process
                // it holds none on, or one gone: nothing to give back.
                let pick = if b.below(4) == 0 {
                    let mut none: Vec<ConnId> = owner
                        .live()
                        .into_iter()
                        .filter(|id| owner.held.get(id).copied().unwrap_or(0) == 0)
                        .collect();
                    none.extend(owner.gone.iter().rev().take(2));
                    b.pick(&none)
                } else {
                    b.pick(&owner.holding())
                };
                match pick {
                    Some(id) => {
                        if let Some(n) = owner.held.get_mut(&id).filter(|n| **n > 0) {
                            *n -= 1;
                        }
                        pool.release(id, now)
                    }
                    None => continue,
                }
            }
            6 => {
                let mut some = owner.live();
                some.extend(owner.gone.iter().rev().take(2));
                match b.pick(&some) {
                    Some(id) => {
                        // Gone with whatever sessions it had (the owner
                        // ends them); a second report changes nothing.
                        if owner.procs.remove(&id).is_some() {
                            owner.gone.push(id);
                        }
                        owner.held.remove(&id);
                        pool.on_exit(id, now)
                    }
                    None => continue,
                }
            }
            7 => pin_or_lease(&mut pool, &mut owner, now, &context),
            8..=10 => {
                match op % 12 {
                    8 => now += ms(u64::from(b.byte()) * 8),
                    // An owner's clock may go back a little; never before t0.
                    9 => {
                        let back = ms(u64::from(b.byte() % 64));
                        now = now.checked_sub(back).filter(|t| *t >= t0).unwrap_or(t0);
                    }
                    _ => match pool.next_deadline() {
                        Some(d) => now = now.max(d),
                        None => continue,
                    },
                }
                // Half the time the owner polls; otherwise the next call
                // comes late, with whatever fell due in between.
                if b.byte() % 2 == 0 {
                    continue;
                }
                pool.poll(now)
            }
            _ => {
                if !b.byte().is_multiple_of(64) {
                    continue;
                }
                pool.shutdown(now)
            }
        };
        owner.apply(&out, pool.last_now, &context);
        if pool.is_shutting_down() {
            assert!(
                owner.queued.is_empty(),
                "{context}: a waiter outlived shutdown"
            );
        }
        owner.agrees(&pool, &context);
        // Settled at the latest `now` the pool acted at (a call with an
        // earlier one acts at that).
        settled(&pool, pool.last_now, &context);
    }
    // Shutdown answers every waiter still queued.
    let out = pool.shutdown(now);
    owner.apply(&out, pool.last_now, "final shutdown");
    assert!(owner.queued.is_empty(), "a waiter got no outcome");
    owner.agrees(&pool, "final shutdown");
}

/// `pin`, checked against a `lease` at the same `now` both ways; when it
/// declines, the owner leases, as the relay does.
fn pin_or_lease(pool: &mut Pool, owner: &mut Owner, now: Instant, context: &str) -> Vec<Action> {
    let mode = pool.cfg.mode;
    let at = pool.last_now.max(now);
    let w = owner.next_waiter + 1;
    let mut leased = pool.clone();
    let lease = leased.lease(w, now);
    match pool.pin(now) {
        Some(conn) => {
            // Granted at once, that process, nothing else, the same state.
            assert_eq!(
                lease,
                vec![Action::Grant { waiter: w, conn }],
                "{context}: pin gave conn {conn}, a lease at the same now"
            );
            assert_eq!(leased.stats(), pool.stats(), "{context}: pin vs lease");
            assert_eq!(
                leased.next_deadline(),
                pool.next_deadline(),
                "{context}: pin vs lease"
            );
            for id in owner.live() {
                assert_eq!(leased.state(id), pool.state(id), "{context}: conn {id}");
                assert_eq!(
                    leased.sessions_on(id),
                    pool.sessions_on(id),
                    "{context}: conn {id}"
                );
            }
            owner.take(conn, pool.last_now, context);
            Vec::new()
        }
        None => {
            // Declining moves nothing: the pool's own checks still hold
            // (its time, and so `next_deadline`, untouched).
            pool.debug_check();
            // With nothing queued or due, a lease would not have been a
            // grant at once either.
            let plain = mode == Mode::Shared
                && !pool.shutting_down
                && owner.queued.is_empty()
                && !pool.due(at);
            if plain {
                assert!(
                    !matches!(lease.as_slice(), [Action::Grant { .. }]),
                    "{context}: pin declined, a lease at the same now gave {lease:?}"
                );
            }
            owner.next_waiter = w;
            owner.queued.insert(w);
            pool.lease(w, now)
        }
    }
}
