//! The pool of upstream processes for `reverse -- CMD`: which child serves
//! which client session, decided without I/O.
//!
//! Sans-I/O, like smoltcp and rustls: the pool never spawns, kills, or reads
//! the clock. Every method takes `now` and returns [`Action`]s; the owner (the
//! reverse-mode front end) carries them out in order and reports back with
//! [`Pool::on_ready`], [`Pool::on_spawn_failed`] and [`Pool::on_exit`]. Time-driven
//! work happens in [`Pool::poll`], which the owner calls at
//! [`Pool::next_deadline`]. Every public method leaves the pool *settled*: no
//! timer is overdue, no waiter waits for something it could have now, and every
//! spawn that may happen now has been asked for. A `now` earlier than one
//! already given is taken as the latest given: the pool's time never goes
//! back. `drive.rs` checks these promises on arbitrary call sequences (the
//! `pool_ops` fuzz target and a seeded unit test).
//!
//! # States
//!
//! ```text
//!          Spawn           on_ready          Grant
//!  (new) ───────▶ Starting ────────▶ Idle ──────────────────▶ Leased
//!                    │                 │ ◀──────────────────   │
//!                    │ Close           │   release of the      │ release (Session mode),
//!                    │ (shutdown)      │   last session        │ or the last session
//!                    ▼                 ▼   (Shared mode)       ▼ after shutdown
//!                 Closing ◀────────────┴───────────────────────┘
//!                    │        Close (idle timeout, max lifetime, shutdown)
//!                    ▼ on_exit
//!                 (gone)
//! ```
//!
//! `on_spawn_failed` removes a Starting conn and `on_exit` removes a conn in
//! any state; a conn gets at most one `Close`. Every state change goes through
//! `set_state`, which keeps the per-state counts.
//!
//! # Modes
//!
//! - [`Mode::Session`]: a stdio server holds its session's MCP state, so each
//!   session leases a fresh process exclusively and the process is closed
//!   (`SessionEnded`) when the session ends, never reused. `min_idle` warm
//!   spares (ready, never leased) are kept so a new session need not wait for a
//!   process to start. A waiter takes the lowest-numbered spare, FIFO.
//! - [`Mode::Shared`]: the owner initializes each process once and pins many
//!   sessions to it. A session is pinned to the ready process with the fewest
//!   sessions (ties → lowest `ConnId`). If every ready process already has a
//!   session, the pool spreads load: the session waits for a Starting process
//!   or, below `max_connections`, for a new one it spawns. Only when no process
//!   can come for it (the cap is reached, or spawning is backing off) is it
//!   pinned to the least-loaded ready one. A process past `max_lifetime` is
//!   *draining*: it is chosen only when no other process is ready, and it is
//!   closed once its last session is released. `Idle` here means "ready with 0
//!   sessions", `Leased` means "at least one session".
//!
//! # Decisions
//!
//! - **Closing does not count toward `max_connections`.** A Closing process
//!   serves nobody and is on its way out (stdin closed → kill grace → SIGTERM →
//!   SIGKILL). Counting it would let every session end in Session mode hold a
//!   slot for a whole kill grace, so throughput would depend on how slowly
//!   servers die. The price: the OS may briefly hold up to `max_connections`
//!   plus the Closing ones, a number bounded by close rate × kill grace, and
//!   visible as [`Stats::closing`].
//! - **Spawn failures back off with full jitter, one probe at a time.** A
//!   failure is `on_spawn_failed`, an exit while Starting, or an exit of its own
//!   less than [`STABLE_AFTER_READY`] after becoming ready. Each failure draws
//!   the next delay from [`Backoff`]; no spawn happens before
//!   `failure time + delay` (deferred, not dropped: `poll` does it, and
//!   `next_deadline` reports when). After a failure the pool *probes*: at most
//!   one Starting process until one becomes ready, so a broken command costs
//!   one process per delay, not one per free slot. A process that exits after
//!   running fine (ready at least `STABLE_AFTER_READY`, or closed by the pool
//!   after becoming ready) resets the backoff.
//! - **Waiters are served before they time out.** A waiter that can be granted
//!   at the very instant of its deadline is granted; one still queued at its
//!   deadline gets `Reject(QueueTimeout)` exactly then, not a tick earlier. A
//!   `queue_timeout` of zero therefore means "never wait".
//! - **A full queue still pins in Shared mode.** A session that would wait for
//!   a new process but finds the queue full is pinned to the least-loaded
//!   ready process instead of rejected; `QueueFull` only when nothing is ready.
//! - **Shared cold start waits, under its own cap.** When nothing is ready but
//!   a process is Starting (or is spawned for the session), the session waits
//!   for it even beyond `max_waiting`, up to `max_waiting_starting`: everyone
//!   queued is pinned to it once it is ready, bounded by `queue_timeout` as
//!   always. `max_waiting` still caps the queue when nothing is on its way
//!   (spawning backs off): if the Starting process fails, the waiters past
//!   `max_waiting` get `QueueFull` at once (FIFO: the oldest stay queued).
//! - **Starved waiters are the owner's call.** In Session mode a waiter no
//!   process can come for (the pool is at `max_connections`, nothing is Idle,
//!   more waiters than Starting processes) is counted by [`Pool::starved`].
//!   The pool never takes a process from a session; the owner may end an idle
//!   session ([`reclaim::choose`]), whose `release` frees a slot the waiter's
//!   process is spawned in.
//! - **Idle timeout never goes below `min_idle`.** Protected are, in Session
//!   mode, the Idle spares; in Shared mode, the ready processes. The longest
//!   idle goes first. A zero `idle_timeout` never closes anything.
//! - **`max_lifetime` never interrupts leased work**: it closes a spare
//!   (Session) or a process with no sessions (Shared), measured from its Spawn.
//! - **A lease granted at once can skip the queue** ([`Pool::pin`], Shared
//!   mode): the owner asks for the process a lease would be granted now and
//!   gets it counted as a session, with no waiter queued and no settling;
//!   when the lease would wait, spawn, be refused, or anything is due, `pin`
//!   says no and the owner leases. A 2026-07-28 request pays a look at the
//!   pool's indexes (`index`: the least loaded process, the oldest Idle
//!   one, the earliest idle time) instead of a queue round trip and a pass
//!   over the processes. A Shared `release` that closes nothing, with
//!   nobody queued and nothing due, likewise skips settling.
//! - **Cancelled waiters get no action**: `cancel_wait` is the owner's own
//!   decision, so each waiter ends in exactly one of `Grant`, `Reject`, or a
//!   `cancel_wait` that found it.
//! - **Shutdown** rejects every waiter (`ShuttingDown`) and closes Starting and
//!   Idle processes. Leased ones are closed (`Shutdown`) as their last session
//!   is released; the owner, at the end of its grace, closes whatever is left
//!   itself and reports `on_exit` for each. After shutdown nothing is spawned
//!   and `lease` rejects at once.
//! - **`CloseReason::Surplus`** is not emitted today: spares left over when
//!   their waiter goes away are kept (a warm process is the next session's gain)
//!   and reclaimed by the idle timeout. It is reserved for resizing a live pool.
//! - **Reports about unknown conns are ignored** (`release` after `on_exit`,
//!   `on_ready` for a conn closed while Starting): events race, and the pool
//!   only acts on what it still owns.
//! - `ConnId`s start at 1 and are never reused, so 0 is free as a sentinel.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::policy::backoff::{Backoff, Rng};

/// A pooled process, numbered by the pool from 1 upwards, never reused.
pub type ConnId = u64;
/// A queued lease request, numbered by the owner; unique among queued waiters.
pub type WaiterId = u64;

/// A process that exits of its own accord sooner than this after becoming ready
/// crashed on start: it counts as a spawn failure for backoff.
pub const STABLE_AFTER_READY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One process per client session, closed when the session ends.
    Session,
    /// Many sessions pinned to each process.
    Shared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Spawn asked for; not yet reported ready.
    Starting,
    /// Ready and serving no session.
    Idle,
    /// Serving one session (Session mode) or at least one (Shared mode).
    Leased,
    /// Close asked for; waiting for `on_exit`.
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    SessionEnded,
    IdleTimeout,
    MaxLifetime,
    /// Reserved; not emitted by this version (see the module docs).
    Surplus,
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    QueueFull,
    QueueTimeout,
    ShuttingDown,
}

/// What the owner must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a process for this conn; report `on_ready`, `on_spawn_failed` or
    /// `on_exit` later.
    Spawn(ConnId),
    /// Begin closing it; report `on_exit` when it is reaped.
    Close(ConnId, CloseReason),
    /// The waiter's session is now bound to `conn`.
    Grant { waiter: WaiterId, conn: ConnId },
    /// The waiter gets no process.
    Reject {
        waiter: WaiterId,
        reason: RejectReason,
    },
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub mode: Mode,
    /// Processes that are Starting, Idle or Leased. Closing ones do not count
    /// (see the module docs). Zero means no process is ever spawned.
    pub max_connections: usize,
    /// Session mode: warm spares (ready, never leased) to keep. Shared mode:
    /// processes to keep alive. Clamped to `max_connections`.
    pub min_idle: usize,
    /// Lease requests that may queue; one more gets `Reject(QueueFull)`.
    pub max_waiting: usize,
    /// Shared mode: the queue's cap while a process is Starting, when it is
    /// above `max_waiting`. Everyone queued then shares that process once it
    /// is ready, so turning them away would refuse sessions the pool is about
    /// to serve. The relay passes `--max-clients` (each waiting session holds
    /// a client connection, so the queue cannot outgrow it anyway).
    pub max_waiting_starting: usize,
    /// A waiter not granted within this gets `Reject(QueueTimeout)`.
    pub queue_timeout: Duration,
    /// An Idle process idle this long is closed, never below `min_idle`.
    /// Zero: never.
    pub idle_timeout: Duration,
    /// A process older than this (since its Spawn) is closed when it has no
    /// session. `None`: never.
    pub max_lifetime: Option<Duration>,
    /// First spawn-retry delay bound; doubles per failure up to the cap.
    pub spawn_backoff_base: Duration,
    pub spawn_backoff_cap: Duration,
}

/// The operator's window (PgBouncer's `SHOW POOLS`): processes per state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub starting: usize,
    pub idle: usize,
    pub leased: usize,
    pub closing: usize,
    pub waiting: usize,
    /// Sessions bound to processes (equals `leased` in Session mode).
    pub sessions: usize,
    pub spawned_total: u64,
}

#[derive(Debug, Clone)]
struct Conn {
    state: ConnState,
    spawned_at: Instant,
    /// Set by `on_ready`; `None` while Starting (and if closed while Starting).
    ready_at: Option<Instant>,
    /// When it last became Idle; meaningful only while Idle.
    idle_since: Instant,
    sessions: usize,
}

#[derive(Debug, Clone)]
struct Waiter {
    id: WaiterId,
    /// `None`: the timeout is too far away to represent, i.e. never.
    deadline: Option<Instant>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    starting: usize,
    idle: usize,
    leased: usize,
    closing: usize,
}

impl Counts {
    fn of(&mut self, state: ConnState) -> &mut usize {
        match state {
            ConnState::Starting => &mut self.starting,
            ConnState::Idle => &mut self.idle,
            ConnState::Leased => &mut self.leased,
            ConnState::Closing => &mut self.closing,
        }
    }

    /// Processes that count toward `max_connections`.
    fn live(&self) -> usize {
        self.starting + self.idle + self.leased
    }

    fn ready(&self) -> usize {
        self.idle + self.leased
    }
}

#[derive(Debug, Clone)]
pub struct Pool {
    cfg: PoolConfig,
    /// Ordered by id, so "ties → lowest ConnId" is iteration order.
    conns: BTreeMap<ConnId, Conn>,
    /// The Idle and Leased conns by `(sessions, id)` (see `index`).
    ready: index::Ready,
    /// The earliest `idle_since` of the Idle conns (see `index`); a `Cell`
    /// so that a stale one is made exact by whoever reads it first.
    idle_floor: Cell<index::IdleFloor>,
    counts: Counts,
    /// FIFO.
    waiters: VecDeque<Waiter>,
    next_id: ConnId,
    spawned_total: u64,
    backoff: Backoff,
    /// No spawn before this instant (set by failures, cleared once passed).
    spawn_not_before: Option<Instant>,
    /// A failure happened and no process has become ready since: spawn one at
    /// a time.
    probing: bool,
    shutting_down: bool,
    /// The latest `now` seen; every reported deadline is after it.
    last_now: Instant,
}

fn after(at: Instant, d: Duration) -> Option<Instant> {
    at.checked_add(d)
}

fn reached(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|d| now >= d)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

impl Pool {
    pub fn new(cfg: PoolConfig, rng: Rng, now: Instant) -> Pool {
        let backoff = Backoff::new(cfg.spawn_backoff_base, cfg.spawn_backoff_cap, rng);
        let cfg = PoolConfig {
            min_idle: cfg.min_idle.min(cfg.max_connections),
            ..cfg
        };
        Pool {
            cfg,
            conns: BTreeMap::new(),
            ready: index::Ready::default(),
            idle_floor: Cell::new(index::IdleFloor::EMPTY),
            counts: Counts::default(),
            waiters: VecDeque::new(),
            next_id: 1,
            spawned_total: 0,
            backoff,
            spawn_not_before: None,
            probing: false,
            shutting_down: false,
            last_now: now,
        }
    }

    pub fn mode(&self) -> Mode {
        self.cfg.mode
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Spawns the `min_idle` warm processes.
    pub fn start(&mut self, now: Instant) -> Vec<Action> {
        let now = self.clock(now);
        let mut out = Vec::new();
        self.settle(now, &mut out);
        self.debug_check();
        out
    }

    /// A session wants a process: `Grant` now, or queue (spawning for it if
    /// that is the policy), or `Reject(QueueFull)`. The grant, if any, comes
    /// before any `Spawn` (a replacement spare, say).
    pub fn lease(&mut self, waiter: WaiterId, now: Instant) -> Vec<Action> {
        let now = self.clock(now);
        let mut out = Vec::new();
        if self.shutting_down {
            out.push(Action::Reject {
                waiter,
                reason: RejectReason::ShuttingDown,
            });
        } else {
            debug_assert!(
                self.waiters.iter().all(|w| w.id != waiter),
                "waiter {waiter} is already queued"
            );
            self.waiters.push_back(Waiter {
                id: waiter,
                deadline: after(now, self.cfg.queue_timeout),
            });
            self.settle(now, &mut out);
        }
        self.debug_check();
        out
    }

    /// The client went away while queued. No action is owed for it; returns
    /// nothing today and is a `Vec` for uniformity.
    pub fn cancel_wait(&mut self, waiter: WaiterId) -> Vec<Action> {
        // Removing a waiter only shrinks demand: nobody behind it becomes
        // servable, so there is nothing to settle (and no `now` to settle with).
        self.waiters.retain(|w| w.id != waiter);
        self.debug_check();
        Vec::new()
    }

    /// Starting → Idle; the oldest waiter gets it.
    pub fn on_ready(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
        let now = self.clock(now);
        let mut out = Vec::new();
        if self.conns.get(&conn).map(|c| c.state) == Some(ConnState::Starting) {
            let c = self.conns.get_mut(&conn).expect("known conn");
            c.ready_at = Some(now);
            c.idle_since = now;
            self.set_state(conn, ConnState::Idle);
            self.probing = false;
        }
        self.settle(now, &mut out);
        self.debug_check();
        out
    }

    /// The process could not be started: forget it and back off. Waiters stay
    /// queued (they time out if spawning never works), except, in Shared
    /// mode, those queued past `max_waiting` for it: `Reject(QueueFull)`.
    pub fn on_spawn_failed(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
        let now = self.clock(now);
        let mut out = Vec::new();
        match self.conns.get(&conn).map(|c| c.state) {
            Some(ConnState::Starting) => {
                self.remove(conn);
                self.spawn_failed(now);
            }
            // Closed while Starting (shutdown): it is gone either way.
            Some(ConnState::Closing) => {
                self.remove(conn);
            }
            _ => {}
        }
        self.settle(now, &mut out);
        self.debug_check();
        out
    }

    /// A session ended. Session mode: its process is closed (`SessionEnded`)
    /// and a replacement spawned if spares or waiters want one. Shared mode:
    /// one session fewer on it.
    pub fn release(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
        let now = self.clock(now);
        let mut out = Vec::new();
        let leased = self.conns.get(&conn).map(|c| c.state) == Some(ConnState::Leased);
        if leased {
            let left = self.conns.get(&conn).expect("known conn").sessions - 1;
            self.set_sessions(conn, left);
            let last = left == 0;
            match (self.cfg.mode, last) {
                _ if last && self.shutting_down => {
                    self.close(conn, CloseReason::Shutdown, &mut out);
                }
                (Mode::Session, _) => {
                    self.close(conn, CloseReason::SessionEnded, &mut out);
                }
                (Mode::Shared, true) => {
                    self.conns.get_mut(&conn).expect("known conn").idle_since = now;
                    self.set_state(conn, ConnState::Idle);
                }
                (Mode::Shared, false) => {}
            }
        }
        // Shared, nothing closed, nobody to serve and nothing due (the freed
        // process is not aged): settling would do nothing, and is skipped
        // (one release a 2026-07-28 request).
        let quiet = self.cfg.mode == Mode::Shared && out.is_empty() && self.waiters.is_empty();
        if !quiet || self.due(now) {
            self.settle(now, &mut out);
        }
        self.debug_check();
        out
    }

    /// The process is gone, in whatever state it was. In Session mode a Leased
    /// one takes its session down with it; in Shared mode all of its sessions
    /// (the owner ends or re-leases them). Its slot is free at once.
    pub fn on_exit(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
        let now = self.clock(now);
        let mut out = Vec::new();
        if let Some(c) = self.remove(conn) {
            match (c.state, c.ready_at) {
                (ConnState::Starting, _) => self.spawn_failed(now),
                (ConnState::Idle | ConnState::Leased, Some(ready)) => {
                    if now.saturating_duration_since(ready) < STABLE_AFTER_READY {
                        self.spawn_failed(now);
                    } else {
                        self.backoff.reset();
                    }
                }
                // We closed it after it had come up: the command works.
                (ConnState::Closing, Some(_)) => self.backoff.reset(),
                // Closed while Starting, or (impossible) ready without a time.
                _ => {}
            }
        }
        self.settle(now, &mut out);
        self.debug_check();
        out
    }

    /// Rejects every waiter, closes Starting and Idle processes; Leased ones
    /// are closed as their last session is released (or by the owner at the
    /// end of its grace). Idempotent.
    pub fn shutdown(&mut self, now: Instant) -> Vec<Action> {
        self.clock(now);
        let mut out = Vec::new();
        if !self.shutting_down {
            self.shutting_down = true;
            self.spawn_not_before = None;
            for w in std::mem::take(&mut self.waiters) {
                out.push(Action::Reject {
                    waiter: w.id,
                    reason: RejectReason::ShuttingDown,
                });
            }
            let doomed: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| matches!(c.state, ConnState::Starting | ConnState::Idle))
                .map(|(&id, _)| id)
                .collect();
            for id in doomed {
                self.close(id, CloseReason::Shutdown, &mut out);
            }
        }
        self.debug_check();
        out
    }

    /// Timers: queue timeouts, idle timeouts, max lifetime, deferred spawns.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let now = self.clock(now);
        let mut out = Vec::new();
        self.settle(now, &mut out);
        self.debug_check();
        out
    }

    /// When `poll` next has something to do; always after the latest `now`
    /// passed in, so a loop that sleeps until it never spins.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.shutting_down {
            return None;
        }
        let mut next = self.waiters.iter().filter_map(|w| w.deadline).min();
        if !self.cfg.idle_timeout.is_zero() && self.protected() > self.cfg.min_idle {
            let t = self
                .idle_floor()
                .and_then(|t| after(t, self.cfg.idle_timeout));
            next = earliest(next, t);
        }
        if let Some(life) = self.cfg.max_lifetime {
            let t = self.oldest_idle().and_then(|c| after(c.spawned_at, life));
            next = earliest(next, t);
        }
        if self.wanted_spawns() > 0 && self.spawn_slots() > 0 {
            next = earliest(next, self.spawn_not_before);
        }
        next
    }

    /// Session mode: queued waiters no process can come for. The pool is at
    /// `max_connections` with nothing Idle, and there are more waiters than
    /// Starting processes (each of which goes to the oldest waiter when
    /// ready). Each session the owner ends frees a slot that one of them gets
    /// a process in. Zero in Shared mode (a waiter is pinned to a busy
    /// process instead) and after shutdown.
    pub fn starved(&self) -> usize {
        if self.cfg.mode != Mode::Session
            || self.shutting_down
            || self.counts.live() < self.cfg.max_connections
        {
            return 0;
        }
        self.waiters
            .len()
            .saturating_sub(self.counts.starting + self.counts.idle)
    }

    pub fn state(&self, conn: ConnId) -> Option<ConnState> {
        self.conns.get(&conn).map(|c| c.state)
    }

    pub fn sessions_on(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.sessions)
    }

    pub fn stats(&self) -> Stats {
        Stats {
            starting: self.counts.starting,
            idle: self.counts.idle,
            leased: self.counts.leased,
            closing: self.counts.closing,
            waiting: self.waiters.len(),
            sessions: self.conns.values().map(|c| c.sessions).sum(),
            spawned_total: self.spawned_total,
        }
    }

    // ---- settling -------------------------------------------------------

    /// The `now` a call acts at: the latest the pool has been given. An
    /// owner's clock that goes back (two owners' readings, or a clock that
    /// is not monotonic) moves nothing back: no deadline is set, no process
    /// dated and no idle time started before a moment already seen, so
    /// `next_deadline` stays after the latest `now` acted at, and spawn times
    /// follow ids. Every public method that takes `now` starts here, but
    /// `pin`, which moves the pool's time only when it pins (a pin that
    /// declines leaves the pool as it was: its caller leases next).
    fn clock(&mut self, now: Instant) -> Instant {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    /// Brings the pool up to date with `now`. The order matters:
    /// 1. aged idle processes go first, so no waiter is handed one;
    /// 2. waiters are served (a waiter due exactly now still gets a grant);
    /// 3. waiters still queued at their deadline are rejected;
    /// 4. idle timeouts, above `min_idle`;
    /// 5. spawns for what is still wanted, after grants so that a grant is
    ///    never preceded by a spawn in the same batch.
    fn settle(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.shutting_down {
            return;
        }
        self.close_aged(now, out);
        self.serve_waiters(now, out);
        self.expire_waiters(now, out);
        self.close_idle_timeouts(now, out);
        self.spawn_wanted(now, out);
    }

    fn close_aged(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(life) = self.cfg.max_lifetime else {
            return;
        };
        if !self.oldest_idle().is_some_and(|c| self.is_aged(c, now)) {
            return;
        }
        let aged: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.state == ConnState::Idle && reached(after(c.spawned_at, life), now))
            .map(|(&id, _)| id)
            .collect();
        for id in aged {
            self.close(id, CloseReason::MaxLifetime, out);
        }
    }

    fn serve_waiters(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.waiters.is_empty() {
            return;
        }
        let mut queue = std::mem::take(&mut self.waiters);
        // Allocated only if someone stays queued; otherwise the queue's
        // own buffer is kept for the next lease (one a request for
        // 2026-07-28 traffic).
        let mut kept = VecDeque::new();
        match self.cfg.mode {
            Mode::Session => {
                let mut spares: VecDeque<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.state == ConnState::Idle)
                    .map(|(&id, _)| id)
                    .collect();
                for w in queue.drain(..) {
                    if let Some(conn) = spares.pop_front() {
                        self.grant(w.id, conn, out);
                    } else if kept.len() < self.cfg.max_waiting {
                        kept.push_back(w);
                    } else {
                        out.push(Action::Reject {
                            waiter: w.id,
                            reason: RejectReason::QueueFull,
                        });
                    }
                }
            }
            Mode::Shared => {
                // Spawns this settle will make for waiters that wait for them.
                let mut planned = 0;
                let spawnable = self.spawn_room(now);
                // Only a grant changes which process is least loaded: it is
                // looked up again for the next waiter, if there is one.
                let mut best = self.least_loaded(now);
                let mut stale = false;
                for w in queue.drain(..) {
                    if stale {
                        best = self.least_loaded(now);
                        stale = false;
                    }
                    let can_wait = kept.len() < self.cfg.max_waiting;
                    // Nothing ready: everyone queued shares the first process
                    // to become ready, under the cold-start cap.
                    let cold_room =
                        kept.len() < self.cfg.max_waiting.max(self.cfg.max_waiting_starting);
                    let coming = self.counts.starting + planned;
                    match best {
                        // A fresh (or freed) process: nobody to share with.
                        Some((false, 0, conn)) => {
                            self.grant(w.id, conn, out);
                            stale = true;
                        }
                        // A Starting (or about to be spawned) process is its.
                        _ if can_wait && kept.len() < self.counts.starting + planned => {
                            kept.push_back(w);
                        }
                        _ if can_wait && planned < spawnable => {
                            planned += 1;
                            kept.push_back(w);
                        }
                        // No process can come for it: share.
                        Some((_, _, conn)) => {
                            self.grant(w.id, conn, out);
                            stale = true;
                        }
                        None if can_wait => kept.push_back(w),
                        // A process is on its way: wait for it.
                        None if cold_room && coming > 0 => kept.push_back(w),
                        // Cold: spawn one to wait for.
                        None if cold_room && planned < spawnable => {
                            planned += 1;
                            kept.push_back(w);
                        }
                        None => out.push(Action::Reject {
                            waiter: w.id,
                            reason: RejectReason::QueueFull,
                        }),
                    }
                }
            }
        }
        self.waiters = if kept.is_empty() { queue } else { kept };
    }

    fn is_aged(&self, c: &Conn, now: Instant) -> bool {
        self.cfg
            .max_lifetime
            .is_some_and(|life| reached(after(c.spawned_at, life), now))
    }

    fn expire_waiters(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.waiters.retain(|w| {
            let due = reached(w.deadline, now);
            if due {
                out.push(Action::Reject {
                    waiter: w.id,
                    reason: RejectReason::QueueTimeout,
                });
            }
            !due
        });
    }

    fn close_idle_timeouts(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.cfg.idle_timeout.is_zero()
            || !reached(
                self.idle_floor()
                    .and_then(|t| after(t, self.cfg.idle_timeout)),
                now,
            )
        {
            return;
        }
        let mut expired: Vec<(Instant, ConnId)> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.state == ConnState::Idle
                    && reached(after(c.idle_since, self.cfg.idle_timeout), now)
            })
            .map(|(&id, c)| (c.idle_since, id))
            .collect();
        expired.sort_unstable();
        for (_, id) in expired {
            if self.protected() <= self.cfg.min_idle {
                break;
            }
            self.close(id, CloseReason::IdleTimeout, out);
        }
    }

    /// Processes the idle timeout may not take below `min_idle`.
    fn protected(&self) -> usize {
        match self.cfg.mode {
            Mode::Session => self.counts.idle,
            Mode::Shared => self.counts.ready(),
        }
    }

    // ---- transitions ----------------------------------------------------

    fn spawn(&mut self, now: Instant, out: &mut Vec<Action>) {
        let id = self.next_id;
        self.next_id += 1;
        self.spawned_total += 1;
        // `now` is the latest seen (`clock`), so spawn times follow ids
        // (`index`: the lowest-numbered Idle process is the oldest).
        self.conns.insert(
            id,
            Conn {
                state: ConnState::Starting,
                spawned_at: now,
                ready_at: None,
                idle_since: now,
                sessions: 0,
            },
        );
        self.counts.starting += 1;
        out.push(Action::Spawn(id));
    }

    fn grant(&mut self, waiter: WaiterId, conn: ConnId, out: &mut Vec<Action>) {
        self.add_session(conn);
        out.push(Action::Grant { waiter, conn });
    }

    /// One more session on a ready conn (a grant, or `pin`): an Idle one is
    /// Leased from now on.
    fn add_session(&mut self, conn: ConnId) {
        let c = self.conns.get(&conn).expect("known conn");
        let (sessions, idle) = (c.sessions, c.state == ConnState::Idle);
        self.set_sessions(conn, sessions + 1);
        if idle {
            self.set_state(conn, ConnState::Leased);
        }
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason, out: &mut Vec<Action>) {
        self.set_state(conn, ConnState::Closing);
        self.set_sessions(conn, 0);
        out.push(Action::Close(conn, reason));
    }

    /// The one place a conn changes state (PgBouncer's "which list it is on"),
    /// and with it the counts and the indexes. A conn entering Idle has its
    /// `idle_since` set before.
    fn set_state(&mut self, conn: ConnId, to: ConnState) {
        use ConnState::*;
        let c = self.conns.get_mut(&conn).expect("known conn");
        let from = c.state;
        debug_assert!(
            matches!(
                (from, to),
                (Starting, Idle | Closing) | (Idle, Leased | Closing) | (Leased, Idle | Closing)
            ),
            "conn {conn}: illegal transition {from:?} → {to:?}"
        );
        c.state = to;
        let (sessions, idle_since) = (c.sessions, c.idle_since);
        *self.counts.of(from) -= 1;
        *self.counts.of(to) += 1;
        self.reindex(conn, sessions, idle_since, from, Some(to));
    }

    fn remove(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        *self.counts.of(c.state) -= 1;
        self.reindex(conn, c.sessions, c.idle_since, c.state, None);
        Some(c)
    }
}

#[cfg(any(test, fuzzing))]
pub mod drive;
mod index;
mod invariants;
mod pin;
pub mod reclaim;
mod spawning;

#[cfg(test)]
mod tests;
