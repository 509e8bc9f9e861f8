//! A pool driven by arbitrary bytes, checked against its contract after
//! every call: the `pool_ops` fuzz target and the seeded unit test in
//! `tests.rs` run it (built only for them: `cfg(test)` or `cfg(fuzzing)`).
//!
//! The bytes pick a configuration, then a sequence of calls an owner could
//! make: leases, cancellations, processes becoming ready, failing to start
//! and exiting, releases, pins, polls, time moving forward (or, as an
//! owner's clock may, back a little), polls at the reported deadline, and
//! shutdown. The driver keeps what the owner knows (which processes it
//! started, which it was told to close, how many sessions it holds on each,
//! which waiters are queued) and checks, besides the invariants every
//! public method checks itself (`invariants.rs`):
//!
//! - actions: a `Spawn` names a new process; a `Close` names a live one not
//!   closed before and holding no session of the owner's; a `Grant` names a
//!   queued waiter and a ready process (in Session mode, one nobody holds);
//!   a `Reject` names a queued waiter. Every waiter gets exactly one outcome
//!   unless the owner cancels it, and shutdown answers all of them;
//! - the pool's view agrees with the owner's: states, sessions per process,
//!   waiters;
//! - every call leaves the pool settled: `poll` at the same `now` does
//!   nothing (the module's promise, and what lets `release` skip settling
//!   and `pin` never settle);
//! - `next_deadline` is honest: `poll` does nothing before it (at `now`,
//!   halfway, and a nanosecond before), nor at any time when it is `None`;
//! - `pin` is `lease` without the queue: when it pins a process, a `lease`
//!   at the same `now` grants that same process at once, with nothing else,
//!   and leaves the pool in the same state.

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
#[derive(Default)]
struct Owner {
    procs: BTreeMap<ConnId, Known>,
    /// Sessions the owner holds on each ready process (grants and pins,
    /// less releases).
    held: BTreeMap<ConnId, usize>,
    queued: BTreeSet<WaiterId>,
    next_waiter: WaiterId,
    last_spawn: ConnId,
}

impl Owner {
    fn apply(&mut self, mode: Mode, actions: &[Action], context: &str) {
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
                    self.procs.insert(id, Known::Closing);
                }
                Action::Grant { waiter, conn } => {
                    assert!(
                        self.queued.remove(&waiter),
                        "{context}: {a:?}: the waiter is not queued"
                    );
                    self.take(mode, conn, context);
                }
                Action::Reject { waiter, .. } => {
                    assert!(
                        self.queued.remove(&waiter),
                        "{context}: {a:?}: the waiter is not queued"
                    );
                }
            }
        }
    }

    /// One more session on `conn` (a grant or a pin).
    fn take(&mut self, mode: Mode, conn: ConnId, context: &str) {
        let known = self.procs.get(&conn).copied();
        assert_eq!(
            known,
            Some(Known::Ready),
            "{context}: conn {conn} given out while {known:?}"
        );
        let held = self.held.entry(conn).or_default();
        assert!(
            mode == Mode::Shared || *held == 0,
            "{context}: Session mode gave conn {conn} out twice"
        );
        *held += 1;
    }

    fn starting(&self) -> Vec<ConnId> {
        self.with(|k| k == Known::Starting)
    }

    fn live(&self) -> Vec<ConnId> {
        self.with(|_| true)
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
    let mode = cfg.mode;
    let t0 = Instant::now();
    let mut now = t0;
    let seed = u64::from(b.byte());
    let mut pool = Pool::new(cfg, Rng::seeded(seed), now);
    let mut owner = Owner::default();
    let out = pool.start(now);
    owner.apply(mode, &out, "start");
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
                let queued: Vec<WaiterId> = owner.queued.iter().copied().collect();
                match b.pick(&queued) {
                    Some(w) => {
                        owner.queued.remove(&w);
                        pool.cancel_wait(w)
                    }
                    None => continue,
                }
            }
            3 => match b.pick(&owner.starting()) {
                Some(id) => {
                    owner.procs.insert(id, Known::Ready);
                    pool.on_ready(id, now)
                }
                None => continue,
            },
            4 => match b.pick(&owner.starting()) {
                Some(id) => {
                    owner.procs.remove(&id);
                    pool.on_spawn_failed(id, now)
                }
                None => continue,
            },
            5 => match b.pick(&owner.holding()) {
                Some(id) => {
                    *owner.held.get_mut(&id).expect("held") -= 1;
                    pool.release(id, now)
                }
                None => continue,
            },
            6 => match b.pick(&owner.live()) {
                Some(id) => {
                    // Gone with whatever sessions it had (the owner ends them).
                    owner.procs.remove(&id);
                    owner.held.remove(&id);
                    pool.on_exit(id, now)
                }
                None => continue,
            },
            7 => {
                // `pin`, checked against a `lease` at the same `now`; when
                // it declines, the owner leases, as the relay does.
                let mut leased = pool.clone();
                match pool.pin(now) {
                    Some(conn) => {
                        let w = owner.next_waiter + 1;
                        let granted = leased.lease(w, now);
                        assert_eq!(
                            granted,
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
                            assert_eq!(leased.sessions_on(id), pool.sessions_on(id));
                        }
                        owner.take(mode, conn, &context);
                        Vec::new()
                    }
                    None => {
                        owner.next_waiter += 1;
                        let w = owner.next_waiter;
                        owner.queued.insert(w);
                        pool.lease(w, now)
                    }
                }
            }
            8 => {
                now += ms(u64::from(b.byte()) * 8);
                pool.poll(now)
            }
            9 => {
                // An owner's clock may go back a little; never before t0.
                let back = ms(u64::from(b.byte() % 64));
                now = now.checked_sub(back).filter(|t| *t >= t0).unwrap_or(t0);
                pool.poll(now)
            }
            10 => match pool.next_deadline() {
                Some(d) => {
                    now = now.max(d);
                    pool.poll(now)
                }
                None => continue,
            },
            _ => {
                if !b.byte().is_multiple_of(8) {
                    continue;
                }
                pool.shutdown(now)
            }
        };
        owner.apply(mode, &out, &context);
        if pool.is_shutting_down() {
            assert!(
                owner.queued.is_empty(),
                "{context}: a waiter outlived shutdown"
            );
        }
        owner.agrees(&pool, &context);
        settled(&pool, now, &context);
    }
    // Shutdown answers every waiter still queued.
    let out = pool.shutdown(now);
    owner.apply(mode, &out, "final shutdown");
    assert!(owner.queued.is_empty(), "a waiter got no outcome");
    owner.agrees(&pool, "final shutdown");
}
