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
//! spawn that may happen now has been asked for.
//!
//! # States (DESIGN.md §"Explicit ownership of pooled upstreams")
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
//! # Modes (MCP-TRANSPORTS.md §"What this means for pooling stdio servers")
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
//! - **Idle timeout never goes below `min_idle`.** Protected are, in Session
//!   mode, the Idle spares; in Shared mode, the ready processes. The longest
//!   idle goes first. A zero `idle_timeout` never closes anything.
//! - **`max_lifetime` never interrupts leased work**: it closes a spare
//!   (Session) or a process with no sessions (Shared), measured from its Spawn.
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

#[derive(Debug)]
struct Conn {
    state: ConnState,
    spawned_at: Instant,
    /// Set by `on_ready`; `None` while Starting (and if closed while Starting).
    ready_at: Option<Instant>,
    /// When it last became Idle; meaningful only while Idle.
    idle_since: Instant,
    sessions: usize,
}

#[derive(Debug)]
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

#[derive(Debug)]
pub struct Pool {
    cfg: PoolConfig,
    /// Ordered by id, so "ties → lowest ConnId" is iteration order.
    conns: BTreeMap<ConnId, Conn>,
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
        let mut out = Vec::new();
        self.settle(now, &mut out);
        self.debug_check();
        out
    }

    /// A session wants a process: `Grant` now, or queue (spawning for it if
    /// that is the policy), or `Reject(QueueFull)`. The grant, if any, comes
    /// before any `Spawn` (a replacement spare, say).
    pub fn lease(&mut self, waiter: WaiterId, now: Instant) -> Vec<Action> {
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
        let mut out = Vec::new();
        if self.conns.get(&conn).map(|c| c.state) == Some(ConnState::Starting) {
            self.set_state(conn, ConnState::Idle);
            let c = self.conns.get_mut(&conn).expect("known conn");
            c.ready_at = Some(now);
            c.idle_since = now;
            self.probing = false;
        }
        self.settle(now, &mut out);
        self.debug_check();
        out
    }

    /// The process could not be started: forget it and back off. Waiters stay
    /// queued (they time out if spawning never works).
    pub fn on_spawn_failed(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
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
        let mut out = Vec::new();
        let leased = self.conns.get(&conn).map(|c| c.state) == Some(ConnState::Leased);
        if leased {
            let c = self.conns.get_mut(&conn).expect("known conn");
            c.sessions -= 1;
            let last = c.sessions == 0;
            match (self.cfg.mode, last) {
                _ if last && self.shutting_down => {
                    self.close(conn, CloseReason::Shutdown, &mut out);
                }
                (Mode::Session, _) => {
                    self.close(conn, CloseReason::SessionEnded, &mut out);
                }
                (Mode::Shared, true) => {
                    self.set_state(conn, ConnState::Idle);
                    self.conns.get_mut(&conn).expect("known conn").idle_since = now;
                }
                (Mode::Shared, false) => {}
            }
        }
        self.settle(now, &mut out);
        self.debug_check();
        out
    }

    /// The process is gone, in whatever state it was. In Session mode a Leased
    /// one takes its session down with it; in Shared mode all of its sessions
    /// (the owner ends or re-leases them). Its slot is free at once.
    pub fn on_exit(&mut self, conn: ConnId, now: Instant) -> Vec<Action> {
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
        let mut out = Vec::new();
        self.last_now = self.last_now.max(now);
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
        let idle = || self.conns.values().filter(|c| c.state == ConnState::Idle);
        if !self.cfg.idle_timeout.is_zero() && self.protected() > self.cfg.min_idle {
            let t = idle()
                .filter_map(|c| after(c.idle_since, self.cfg.idle_timeout))
                .min();
            next = earliest(next, t);
        }
        if let Some(life) = self.cfg.max_lifetime {
            let t = idle().filter_map(|c| after(c.spawned_at, life)).min();
            next = earliest(next, t);
        }
        if self.wanted_spawns() > 0 && self.spawn_slots() > 0 {
            next = earliest(next, self.spawn_not_before);
        }
        next
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

    /// Brings the pool up to date with `now`. The order matters:
    /// 1. aged idle processes go first, so no waiter is handed one;
    /// 2. waiters are served (a waiter due exactly now still gets a grant);
    /// 3. waiters still queued at their deadline are rejected;
    /// 4. idle timeouts, above `min_idle`;
    /// 5. spawns for what is still wanted, after grants so that a grant is
    ///    never preceded by a spawn in the same batch.
    fn settle(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.last_now = self.last_now.max(now);
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
        let queue = std::mem::take(&mut self.waiters);
        let mut kept = VecDeque::with_capacity(queue.len());
        match self.cfg.mode {
            Mode::Session => {
                let mut spares: VecDeque<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.state == ConnState::Idle)
                    .map(|(&id, _)| id)
                    .collect();
                for w in queue {
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
                // Only a grant changes which process is least loaded.
                let mut best = self.least_loaded(now);
                for w in queue {
                    let can_wait = kept.len() < self.cfg.max_waiting;
                    match best {
                        // A fresh (or freed) process: nobody to share with.
                        Some((false, 0, conn)) => {
                            self.grant(w.id, conn, out);
                            best = self.least_loaded(now);
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
                            best = self.least_loaded(now);
                        }
                        None if can_wait => kept.push_back(w),
                        None => out.push(Action::Reject {
                            waiter: w.id,
                            reason: RejectReason::QueueFull,
                        }),
                    }
                }
            }
        }
        self.waiters = kept;
    }

    /// Shared mode: the ready process the policy pins to, as
    /// `(draining, sessions, id)`, the minimum of that key.
    fn least_loaded(&self, now: Instant) -> Option<(bool, usize, ConnId)> {
        self.conns
            .iter()
            .filter(|(_, c)| matches!(c.state, ConnState::Idle | ConnState::Leased))
            .map(|(&id, c)| (self.is_aged(c, now), c.sessions, id))
            .min()
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
        if self.cfg.idle_timeout.is_zero() {
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

    fn spawn_wanted(&mut self, now: Instant, out: &mut Vec<Action>) {
        if reached(self.spawn_not_before, now) {
            self.spawn_not_before = None;
        }
        let n = self.wanted_spawns().min(self.spawn_room(now));
        for _ in 0..n {
            self.spawn(now, out);
        }
    }

    /// New processes the policy wants, before the cap and backoff.
    fn wanted_spawns(&self) -> usize {
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
    fn spawn_room(&self, now: Instant) -> usize {
        if self.spawn_not_before.is_some_and(|t| now < t) {
            return 0;
        }
        self.spawn_slots()
    }

    /// Spawns allowed by the cap and the probe rule, whatever the time.
    fn spawn_slots(&self) -> usize {
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

    fn spawn_failed(&mut self, now: Instant) {
        let delay = self.backoff.next_delay();
        // Two failures in a row both hold: the later deadline wins.
        let at = now.checked_add(delay).unwrap_or(now);
        self.spawn_not_before = Some(self.spawn_not_before.map_or(at, |t| t.max(at)));
        self.probing = true;
        log::debug!(
            "pool: spawn failure {}, next spawn in {delay:?}",
            self.backoff.attempt()
        );
    }

    // ---- transitions ----------------------------------------------------

    fn spawn(&mut self, now: Instant, out: &mut Vec<Action>) {
        let id = self.next_id;
        self.next_id += 1;
        self.spawned_total += 1;
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
        let c = self.conns.get_mut(&conn).expect("known conn");
        c.sessions += 1;
        if c.state == ConnState::Idle {
            self.set_state(conn, ConnState::Leased);
        }
        out.push(Action::Grant { waiter, conn });
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason, out: &mut Vec<Action>) {
        self.set_state(conn, ConnState::Closing);
        self.conns.get_mut(&conn).expect("known conn").sessions = 0;
        out.push(Action::Close(conn, reason));
    }

    /// The one place a conn changes state (PgBouncer's "which list it is on").
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
        *self.counts.of(from) -= 1;
        *self.counts.of(to) += 1;
    }

    fn remove(&mut self, conn: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&conn)?;
        *self.counts.of(c.state) -= 1;
        Some(c)
    }

    // ---- invariants -----------------------------------------------------

    fn debug_check(&self) {
        if cfg!(any(test, debug_assertions)) {
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
        assert!(
            self.counts.live() <= self.cfg.max_connections,
            "{:?} over max {}",
            self.counts,
            self.cfg.max_connections
        );
        assert!(self.waiters.len() <= self.cfg.max_waiting);
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
        if self.shutting_down {
            assert!(self.waiters.is_empty());
            assert_eq!(self.counts.starting + self.counts.idle, 0);
        } else if self.wanted_spawns() > 0 && self.spawn_slots() > 0 {
            assert!(
                self.spawn_not_before.is_some(),
                "a spawn is wanted and allowed but was not made"
            );
        }
        if let Some(d) = self.next_deadline() {
            assert!(d > self.last_now, "next deadline is not in the future");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Action::{Close, Grant, Reject, Spawn};
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn config(mode: Mode, max: usize, min_idle: usize) -> PoolConfig {
        PoolConfig {
            mode,
            max_connections: max,
            min_idle,
            max_waiting: 10,
            queue_timeout: ms(5_000),
            idle_timeout: Duration::ZERO,
            max_lifetime: None,
            spawn_backoff_base: ms(100),
            spawn_backoff_cap: ms(2_000),
        }
    }

    fn pool(cfg: PoolConfig, t0: Instant) -> Pool {
        Pool::new(cfg, Rng::seeded(7), t0)
    }

    fn grant(waiter: WaiterId, conn: ConnId) -> Action {
        Grant { waiter, conn }
    }

    fn reject(waiter: WaiterId, reason: RejectReason) -> Action {
        Reject { waiter, reason }
    }

    // ---- Session mode ----------------------------------------------------

    #[test]
    fn session_start_spawns_min_idle_spares() {
        let t0 = Instant::now();
        let mut p = pool(config(Mode::Session, 4, 2), t0);
        assert_eq!(p.start(t0), vec![Spawn(1), Spawn(2)]);
        assert_eq!(p.state(1), Some(ConnState::Starting));
        assert_eq!(p.stats().starting, 2);
        assert_eq!(p.stats().spawned_total, 2);
        // Starting again changes nothing.
        assert_eq!(p.start(t0), vec![]);
    }

    #[test]
    fn session_lease_takes_a_spare_before_spawning_its_replacement() {
        let t0 = Instant::now();
        let mut p = pool(config(Mode::Session, 4, 2), t0);
        p.start(t0);
        assert_eq!(p.on_ready(1, t0 + ms(10)), vec![]);
        assert_eq!(p.on_ready(2, t0 + ms(10)), vec![]);
        assert_eq!(p.lease(10, t0 + ms(20)), vec![grant(10, 1), Spawn(3)]);
        assert_eq!(p.state(1), Some(ConnState::Leased));
        assert_eq!(p.sessions_on(1), 1);
        assert_eq!(p.lease(11, t0 + ms(21)), vec![grant(11, 2), Spawn(4)]);
        // Four processes: no room for a fifth, the session waits.
        assert_eq!(p.lease(12, t0 + ms(22)), vec![]);
        let s = p.stats();
        assert_eq!((s.starting, s.idle, s.leased, s.waiting), (2, 0, 2, 1));
        assert_eq!(p.on_ready(3, t0 + ms(30)), vec![grant(12, 3)]);
        assert_eq!(p.on_ready(4, t0 + ms(30)), vec![]);
        let s = p.stats();
        assert_eq!(s.starting + s.idle + s.leased, 4);
    }

    #[test]
    fn session_fifth_session_is_granted_the_replacement_of_a_released_one() {
        let t0 = Instant::now();
        let mut p = pool(config(Mode::Session, 4, 2), t0);
        p.start(t0);
        p.on_ready(1, t0);
        p.on_ready(2, t0);
        assert_eq!(p.lease(1, t0), vec![grant(1, 1), Spawn(3)]);
        assert_eq!(p.lease(2, t0), vec![grant(2, 2), Spawn(4)]);
        p.on_ready(3, t0 + ms(5));
        p.on_ready(4, t0 + ms(5));
        assert_eq!(p.lease(3, t0 + ms(6)), vec![grant(3, 3)]);
        assert_eq!(p.lease(4, t0 + ms(6)), vec![grant(4, 4)]);
        assert_eq!(p.lease(5, t0 + ms(7)), vec![]);
        assert_eq!(p.stats().waiting, 1);
        // The released process is never reused: closed, and a fresh one
        // spawned for the waiter while the old one is still dying.
        assert_eq!(
            p.release(2, t0 + ms(100)),
            vec![Close(2, CloseReason::SessionEnded), Spawn(5)]
        );
        assert_eq!(p.stats().closing, 1);
        assert_eq!(p.on_ready(5, t0 + ms(150)), vec![grant(5, 5)]);
        // Spares are wanted but every slot is taken.
        assert_eq!(p.on_exit(2, t0 + ms(200)), vec![]);
        assert_eq!(p.stats().leased, 4);
    }

    #[test]
    fn closing_processes_do_not_count_toward_max_connections() {
        let t0 = Instant::now();
        let mut p = pool(config(Mode::Session, 1, 0), t0);
        assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
        assert_eq!(p.on_ready(1, t0), vec![grant(1, 1)]);
        assert_eq!(p.lease(2, t0), vec![]);
        assert_eq!(
            p.release(1, t0 + ms(5)),
            vec![Close(1, CloseReason::SessionEnded), Spawn(2)]
        );
        let s = p.stats();
        assert_eq!((s.closing, s.starting), (1, 1));
    }

    #[test]
    fn queue_full_beyond_max_waiting() {
        let t0 = Instant::now();
        let mut cfg = config(Mode::Session, 1, 0);
        cfg.max_waiting = 2;
        let mut p = pool(cfg, t0);
        assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
        assert_eq!(p.lease(2, t0), vec![]);
        assert_eq!(p.lease(3, t0), vec![reject(3, RejectReason::QueueFull)]);
        assert_eq!(p.stats().waiting, 2);
        assert_eq!(p.on_ready(1, t0 + ms(1)), vec![grant(1, 1)]);
        // Room again.
        assert_eq!(p.lease(4, t0 + ms(2)), vec![]);
        assert_eq!(p.stats().waiting, 2);
    }

    #[test]
    fn queue_timeout_fires_exactly_at_the_deadline() {
        let t0 = Instant::now();
        let mut p = pool(config(Mode::Session, 1, 0), t0);
        assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
        assert_eq!(p.lease(2, t0 + ms(1_000)), vec![]);
        assert_eq!(p.next_deadline(), Some(t0 + ms(5_000)));
        assert_eq!(p.poll(t0 + ms(4_999)), vec![]);
        assert_eq!(
            p.poll(t0 + ms(5_000)),
            vec![reject(1, RejectReason::QueueTimeout)]
        );
        assert_eq!(p.next_deadline(), Some(t0 + ms(6_000)));
        // Served at the very instant of its deadline: granted, not rejected.
        assert_eq!(p.on_ready(1, t0 + ms(6_000)), vec![grant(2, 1)]);
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn zero_queue_timeout_means_never_wait() {
        let t0 = Instant::now();
        let mut cfg = config(Mode::Session, 1, 1);
        cfg.queue_timeout = Duration::ZERO;
        let mut p = pool(cfg, t0);
        p.start(t0);
        assert_eq!(p.lease(1, t0), vec![reject(1, RejectReason::QueueTimeout)]);
        p.on_ready(1, t0 + ms(1));
        assert_eq!(p.lease(2, t0 + ms(2)), vec![grant(2, 1)]);
    }

    #[test]
    fn idle_timeout_closes_only_spares_above_min_idle() {
        let t0 = Instant::now();
        let mut cfg = config(Mode::Session, 4, 1);
        cfg.idle_timeout = ms(10_000);
        let mut p = pool(cfg, t0);
        assert_eq!(p.start(t0), vec![Spawn(1)]);
        // Two sessions come and go before anything is ready: their processes
        // become spares.
        assert_eq!(p.lease(1, t0), vec![Spawn(2)]);
        assert_eq!(p.lease(2, t0), vec![Spawn(3)]);
        assert_eq!(p.cancel_wait(1), vec![]);
        assert_eq!(p.cancel_wait(2), vec![]);
        p.on_ready(1, t0 + ms(100));
        p.on_ready(2, t0 + ms(200));
        p.on_ready(3, t0 + ms(300));
        assert_eq!(p.stats().idle, 3);
        assert_eq!(p.next_deadline(), Some(t0 + ms(10_100)));
        assert_eq!(p.poll(t0 + ms(10_099)), vec![]);
        assert_eq!(
            p.poll(t0 + ms(10_100)),
            vec![Close(1, CloseReason::IdleTimeout)]
        );
        assert_eq!(
            p.poll(t0 + ms(10_200)),
            vec![Close(2, CloseReason::IdleTimeout)]
        );
        // The last spare is protected by min_idle: no deadline, no close.
        assert_eq!(p.next_deadline(), None);
        assert_eq!(p.poll(t0 + ms(100_000)), vec![]);
        assert_eq!(p.state(3), Some(ConnState::Idle));
        // An expired protected spare still goes first once a fresher one is
        // above min_idle.
        assert_eq!(p.lease(3, t0 + ms(100_000)), vec![grant(3, 3), Spawn(4)]);
    }

    #[test]
    fn max_lifetime_closes_aged_spares_but_never_a_leased_process() {
        let t0 = Instant::now();
        let mut cfg = config(Mode::Session, 2, 1);
        cfg.max_lifetime = Some(ms(60_000));
        let mut p = pool(cfg, t0);
        assert_eq!(p.start(t0), vec![Spawn(1)]);
        p.on_ready(1, t0 + ms(100));
        assert_eq!(p.lease(1, t0 + ms(1_000)), vec![grant(1, 1), Spawn(2)]);
        p.on_ready(2, t0 + ms(1_100));
        // Conn 1 is past its lifetime at 60 s, but leased: untouched.
        assert_eq!(p.next_deadline(), Some(t0 + ms(61_000)));
        assert_eq!(p.poll(t0 + ms(60_999)), vec![]);
        assert_eq!(p.state(1), Some(ConnState::Leased));
        assert_eq!(
            p.poll(t0 + ms(61_000)),
            vec![Close(2, CloseReason::MaxLifetime), Spawn(3)]
        );
        assert_eq!(
            p.release(1, t0 + ms(70_000)),
            vec![Close(1, CloseReason::SessionEnded)]
        );
    }

    #[test]
    fn an_aged_spare_is_replaced_rather_than_granted() {
        let t0 = Instant::now();
        let mut cfg = config(Mode::Session, 2, 1);
        cfg.max_lifetime = Some(ms(1_000));
        let mut p = pool(cfg, t0);
        p.start(t0);
        p.on_ready(1, t0);
        // The owner was late to poll: the lease sees the aged spare first.
        assert_eq!(
            p.lease(1, t0 + ms(5_000)),
            vec![Close(1, CloseReason::MaxLifetime), Spawn(2), Spawn(3)]
        );
        assert_eq!(p.on_ready(2, t0 + ms(5_100)), vec![grant(1, 2)]);
    }

    #[test]
    fn crash_looping_spawns_back_off_one_probe_at_a_time() {
        let t0 = Instant::now();
        let base = ms(100);
        let cap = ms(2_000);
        let mut cfg = config(Mode::Session, 4, 2);
        cfg.queue_timeout = ms(600_000);
        let mut p = Pool::new(cfg, Rng::seeded(11), t0);
        // The pool's backoff draws the same numbers as this mirror.
        let mut mirror = Backoff::new(base, cap, Rng::seeded(11));

        assert_eq!(p.start(t0), vec![Spawn(1), Spawn(2)]);
        let d1 = mirror.next_delay();
        // Conn 2 is still in flight: no probe yet.
        assert_eq!(p.on_spawn_failed(1, t0), vec![]);
        let d2 = mirror.next_delay();
        assert_eq!(p.on_spawn_failed(2, t0), vec![]);
        let mut not_before = t0 + d1.max(d2);
        // Waiters stay queued; nothing spawns for them during the delay.
        assert_eq!(p.lease(1, t0), vec![]);
        assert_eq!(p.lease(2, t0), vec![]);

        let mut t = t0;
        let mut next_id = 3;
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            assert!(not_before > t, "seed gives nonzero delays");
            assert_eq!(p.next_deadline(), Some(not_before));
            assert_eq!(p.poll(not_before - Duration::from_micros(1)), vec![]);
            t = not_before;
            assert_eq!(p.poll(t), vec![Spawn(next_id)]);
            assert_eq!(p.stats().starting, 1, "one probe in flight");
            let ceiling = mirror.ceiling();
            let d = mirror.next_delay();
            assert!(d <= ceiling);
            ceilings.push(ceiling);
            assert_eq!(p.on_spawn_failed(next_id, t), vec![]);
            assert_eq!(p.backoff.attempt(), mirror.attempt());
            not_before = t + d;
            next_id += 1;
        }
        // Full-jitter bounds double from the third failure up to the cap.
        assert_eq!(
            ceilings,
            [400, 800, 1_600, 2_000, 2_000, 2_000, 2_000, 2_000].map(ms)
        );

        // The command works again: the probe comes up, the oldest waiter gets
        // it, and every free slot is filled at once.
        assert_eq!(p.poll(not_before), vec![Spawn(next_id)]);
        assert_eq!(
            p.on_ready(next_id, not_before + ms(50)),
            vec![
                grant(1, next_id),
                Spawn(next_id + 1),
                Spawn(next_id + 2),
                Spawn(next_id + 3)
            ]
        );
        assert_eq!(p.stats().waiting, 1);
    }

    #[test]
    fn an_exit_soon_after_ready_is_a_failure_and_a_long_run_resets_backoff() {
        let t0 = Instant::now();
        let mut p = pool(config(Mode::Session, 1, 1), t0);
        let mut mirror = Backoff::new(ms(100), ms(2_000), Rng::seeded(7));
        assert_eq!(p.start(t0), vec![Spawn(1)]);
        p.on_ready(1, t0 + ms(10));
        // Up for half a second, then gone on its own: a crash on start.
        let d = mirror.next_delay();
        assert!(!d.is_zero(), "seed gives a nonzero delay");
        assert_eq!(p.on_exit(1, t0 + ms(510)), vec![]);
        assert_eq!(p.backoff.attempt(), 1);
        let retry = t0 + ms(510) + d;
        assert_eq!(p.next_deadline(), Some(retry));
        assert_eq!(p.poll(retry), vec![Spawn(2)]);
        p.on_ready(2, retry + ms(10));
        // Ran fine for a second: the command works, start over at once.
        assert_eq!(p.on_exit(2, retry + ms(1_010)), vec![Spawn(3)]);
        assert_eq!(p.backoff.attempt(), 0);
    }

    #[test]
    fn a_process_closed_by_the_pool_after_coming_up_resets_backoff() {
        let t0 = Instant::now();
        let mut p = pool(config(Mode::Session, 2, 0), t0);
        assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
        p.on_spawn_failed(1, t0);
        assert_eq!(p.backoff.attempt(), 1);
        let retry = p.next_deadline().unwrap();
        assert_eq!(p.poll(retry), vec![Spawn(2)]);
        assert_eq!(p.on_ready(2, retry), vec![grant(1, 2)]);
        p.release(2, retry + ms(100));
        assert_eq!(p.on_exit(2, retry + ms(200)), vec![]);
        assert_eq!(p.backoff.attempt(), 0);
    }

    #[test]
    fn session_exit_of_a_leased_process_frees_its_slot_for_a_waiter() {
        let t0 = Instant::now();
        let mut p = pool(config(Mode::Session, 2, 0), t0);
        assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
        assert_eq!(p.lease(2, t0), vec![Spawn(2)]);
        assert_eq!(p.on_ready(1, t0 + ms(100)), vec![grant(1, 1)]);
        assert_eq!(p.on_ready(2, t0 + ms(100)), vec![grant(2, 2)]);
        assert_eq!(p.lease(3, t0 + ms(200)), vec![]);
        assert_eq!(p.on_exit(1, t0 + ms(5_000)), vec![Spawn(3)]);
        assert_eq!(p.state(1), None);
        assert_eq!(p.on_ready(3, t0 + ms(5_100)), vec![grant(3, 3)]);
        // The owner's late release of the dead process is ignored.
        assert_eq!(p.release(1, t0 + ms(5_200)), vec![]);
    }

    #[test]
    fn cancel_wait_removes_the_waiter_without_an_outcome() {
        let t0 = Instant::now();
        let mut p = pool(config(Mode::Session, 1, 0), t0);
        assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
        assert_eq!(p.lease(2, t0), vec![]);
        assert_eq!(p.cancel_wait(1), vec![]);
        assert_eq!(p.cancel_wait(99), vec![]);
        assert_eq!(p.stats().waiting, 1);
        assert_eq!(p.on_ready(1, t0 + ms(1)), vec![grant(2, 1)]);
    }

    // ---- Shared mode -----------------------------------------------------

    #[test]
    fn shared_max_one_pins_fifty_sessions_to_one_process() {
        let t0 = Instant::now();
        let mut cfg = config(Mode::Shared, 1, 0);
        cfg.max_waiting = 100;
        let mut p = pool(cfg, t0);
        let mut all = p.lease(1, t0);
        assert_eq!(all, vec![Spawn(1)]);
        for w in 2..=50 {
            let a = p.lease(w, t0 + ms(w));
            assert_eq!(a, vec![]);
            all.extend(a);
        }
        let granted = p.on_ready(1, t0 + ms(100));
        assert_eq!(granted, (1..=50).map(|w| grant(w, 1)).collect::<Vec<_>>());
        all.extend(granted);
        for w in 51..=60 {
            let a = p.lease(w, t0 + ms(200));
            assert_eq!(a, vec![grant(w, 1)]);
            all.extend(a);
        }
        assert_eq!(all.iter().filter(|a| matches!(a, Spawn(_))).count(), 1);
        assert_eq!(p.sessions_on(1), 60);
        let s = p.stats();
        assert_eq!((s.leased, s.sessions, s.spawned_total), (1, 60, 1));
    }

    #[test]
    fn shared_max_two_spreads_sessions_and_release_decrements() {
        let t0 = Instant::now();
        let mut cfg = config(Mode::Shared, 2, 1);
        cfg.idle_timeout = ms(10_000);
        let mut p = pool(cfg, t0);
        assert_eq!(p.start(t0), vec![Spawn(1)]);
        p.on_ready(1, t0 + ms(10));
        assert_eq!(p.lease(1, t0 + ms(20)), vec![grant(1, 1)]);
        // Process 1 already has a session: spread to a second one.
        assert_eq!(p.lease(2, t0 + ms(30)), vec![Spawn(2)]);
        // At the cap, with conn 2 promised to session 2: share the least loaded.
        assert_eq!(p.lease(3, t0 + ms(40)), vec![grant(3, 1)]);
        assert_eq!(p.on_ready(2, t0 + ms(50)), vec![grant(2, 2)]);
        assert_eq!(p.lease(4, t0 + ms(60)), vec![grant(4, 2)]);
        // Ties go to the lowest id.
        assert_eq!((p.sessions_on(1), p.sessions_on(2)), (2, 2));
        assert_eq!(p.lease(5, t0 + ms(70)), vec![grant(5, 1)]);
        assert_eq!(p.release(1, t0 + ms(100)), vec![]);
        assert_eq!(p.release(1, t0 + ms(100)), vec![]);
        assert_eq!(p.sessions_on(1), 1);
        assert_eq!(p.release(1, t0 + ms(200)), vec![]);
        assert_eq!(p.state(1), Some(ConnState::Idle));
        // An idle process gets the next session before any busier one.
        assert_eq!(p.lease(6, t0 + ms(300)), vec![grant(6, 1)]);
        assert_eq!(p.release(1, t0 + ms(400)), vec![]);
        // Idle above min_idle (1 ready process is kept): closed on time.
        assert_eq!(p.next_deadline(), Some(t0 + ms(10_400)));
        assert_eq!(
            p.poll(t0 + ms(10_400)),
            vec![Close(1, CloseReason::IdleTimeout)]
        );
        p.release(2, t0 + ms(11_000));
        p.release(2, t0 + ms(11_000));
        assert_eq!(p.state(2), Some(ConnState::Idle));
        assert_eq!(p.next_deadline(), None, "the last process is min_idle");
    }

    #[test]
    fn shared_full_queue_pins_instead_of_rejecting() {
        let t0 = Instant::now();
        let mut cfg = config(Mode::Shared, 2, 1);
        cfg.max_waiting = 0;
        let mut p = pool(cfg, t0);
        p.start(t0);
        assert_eq!(p.lease(1, t0), vec![reject(1, RejectReason::QueueFull)]);
        p.on_ready(1, t0 + ms(1));
        assert_eq!(p.lease(2, t0 + ms(2)), vec![grant(2, 1)]);
        assert_eq!(p.lease(3, t0 + ms(3)), vec![grant(3, 1)]);
    }

    #[test]
    fn shared_backoff_shares_a_ready_process_instead_of_waiting() {
        let t0 = Instant::now();
        let mut p = pool(config(Mode::Shared, 2, 0), t0);
        assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
        p.on_ready(1, t0 + ms(10));
        assert_eq!(p.lease(2, t0 + ms(20)), vec![Spawn(2)]);
        // The spawn for session 2 fails: it shares process 1 at once.
        assert_eq!(p.on_spawn_failed(2, t0 + ms(30)), vec![grant(2, 1)]);
        assert_eq!(p.sessions_on(1), 2);
        assert_eq!(p.next_deadline(), None, "nobody wants the deferred spawn");
    }

    #[test]
    fn shared_max_lifetime_drains_and_closes_at_zero_sessions() {
        let t0 = Instant::now();
        let mut cfg = config(Mode::Shared, 2, 0);
        cfg.max_lifetime = Some(ms(60_000));
        let mut p = pool(cfg, t0);
        assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
        assert_eq!(p.on_ready(1, t0 + ms(100)), vec![grant(1, 1)]);
        assert_eq!(p.lease(2, t0 + ms(200)), vec![Spawn(2)]);
        assert_eq!(p.on_ready(2, t0 + ms(300)), vec![grant(2, 2)]);
        assert_eq!(p.lease(3, t0 + ms(400)), vec![grant(3, 1)]);
        assert_eq!((p.sessions_on(1), p.sessions_on(2)), (2, 1));
        p.release(1, t0 + ms(50_000));
        // One session each: the tie would go to conn 1, but from 60 s it is
        // draining and new sessions avoid it, even when it is less loaded.
        assert_eq!(p.lease(4, t0 + ms(59_999)), vec![grant(4, 1)]);
        p.release(1, t0 + ms(60_000));
        assert_eq!(p.lease(5, t0 + ms(60_000)), vec![grant(5, 2)]);
        assert_eq!(p.lease(6, t0 + ms(60_100)), vec![grant(6, 2)]);
        assert_eq!((p.sessions_on(1), p.sessions_on(2)), (1, 3));
        assert_eq!(
            p.release(1, t0 + ms(60_200)),
            vec![Close(1, CloseReason::MaxLifetime)]
        );
    }

    // ---- Shutdown --------------------------------------------------------

    #[test]
    fn shutdown_rejects_waiters_and_closes_starting_and_idle_processes() {
        let t0 = Instant::now();
        let mut p = pool(config(Mode::Session, 2, 1), t0);
        p.start(t0);
        p.on_ready(1, t0);
        assert_eq!(p.lease(1, t0), vec![grant(1, 1), Spawn(2)]);
        assert_eq!(p.lease(2, t0), vec![]);
        assert_eq!(
            p.shutdown(t0 + ms(10)),
            vec![
                reject(2, RejectReason::ShuttingDown),
                Close(2, CloseReason::Shutdown)
            ]
        );
        assert_eq!(p.shutdown(t0 + ms(11)), vec![]);
        assert_eq!(
            p.lease(3, t0 + ms(12)),
            vec![reject(3, RejectReason::ShuttingDown)]
        );
        assert_eq!(p.next_deadline(), None);
        // A late ready for a process already closing changes nothing.
        assert_eq!(p.on_ready(2, t0 + ms(13)), vec![]);
        assert_eq!(
            p.release(1, t0 + ms(20)),
            vec![Close(1, CloseReason::Shutdown)]
        );
        p.on_exit(1, t0 + ms(30));
        p.on_exit(2, t0 + ms(30));
        assert_eq!(
            p.stats(),
            Stats {
                spawned_total: 2,
                ..Stats::default()
            }
        );

        let mut p = pool(config(Mode::Shared, 2, 2), t0);
        p.start(t0);
        p.on_ready(1, t0);
        p.on_ready(2, t0);
        assert_eq!(p.lease(1, t0), vec![grant(1, 1)]);
        assert_eq!(p.lease(2, t0), vec![grant(2, 2)]);
        assert_eq!(p.lease(3, t0), vec![grant(3, 1)]);
        p.release(2, t0);
        assert_eq!(p.shutdown(t0), vec![Close(2, CloseReason::Shutdown)]);
        assert_eq!(p.release(1, t0), vec![]);
        assert_eq!(p.release(1, t0), vec![Close(1, CloseReason::Shutdown)]);
    }

    // ---- Randomized, against a model of the owner ------------------------

    /// Plays the owner: carries out actions, reports events at random, and
    /// checks every action against what it knows.
    struct Sim {
        p: Pool,
        cfg: PoolConfig,
        now: Instant,
        rng: Rng,
        starting: BTreeSet<ConnId>,
        ready: BTreeSet<ConnId>,
        closing: BTreeSet<ConnId>,
        closed: BTreeSet<ConnId>,
        ever_granted: BTreeSet<ConnId>,
        sessions: Vec<(WaiterId, ConnId)>,
        queued: BTreeMap<WaiterId, Instant>,
        outcomes: HashMap<WaiterId, u32>,
        cancelled: BTreeSet<WaiterId>,
        last_spawn: ConnId,
        spawns: u64,
        next_waiter: WaiterId,
    }

    impl Sim {
        fn new(seed: u64) -> Sim {
            let mut rng = Rng::seeded(seed);
            let mut pick = |n: u64| rng.below_or_equal(n);
            let max = 1 + pick(4) as usize;
            let cfg = PoolConfig {
                mode: if pick(1) == 0 {
                    Mode::Session
                } else {
                    Mode::Shared
                },
                max_connections: max,
                min_idle: pick(max as u64) as usize,
                max_waiting: pick(6) as usize,
                queue_timeout: if pick(5) == 0 {
                    Duration::ZERO
                } else {
                    ms(pick(5_000))
                },
                idle_timeout: if pick(1) == 0 {
                    Duration::ZERO
                } else {
                    ms(1 + pick(10_000))
                },
                max_lifetime: (pick(1) == 0).then(|| ms(1 + pick(20_000))),
                spawn_backoff_base: ms(1 + pick(500)),
                spawn_backoff_cap: ms(500 + pick(5_000)),
            };
            let now = Instant::now();
            Sim {
                p: Pool::new(cfg.clone(), Rng::seeded(seed ^ 0x5eed), now),
                cfg,
                now,
                rng,
                starting: BTreeSet::new(),
                ready: BTreeSet::new(),
                closing: BTreeSet::new(),
                closed: BTreeSet::new(),
                ever_granted: BTreeSet::new(),
                sessions: Vec::new(),
                queued: BTreeMap::new(),
                outcomes: HashMap::new(),
                cancelled: BTreeSet::new(),
                last_spawn: 0,
                spawns: 0,
                next_waiter: 1,
            }
        }

        fn pick<T: Copy>(&mut self, items: impl IntoIterator<Item = T>) -> Option<T> {
            let v: Vec<T> = items.into_iter().collect();
            if v.is_empty() {
                return None;
            }
            Some(v[self.rng.below_or_equal(v.len() as u64 - 1) as usize])
        }

        fn apply(&mut self, actions: Vec<Action>) {
            let mut spawned = false;
            for a in actions {
                match a {
                    Spawn(id) => {
                        assert!(id > self.last_spawn, "ids increase");
                        self.last_spawn = id;
                        self.spawns += 1;
                        self.starting.insert(id);
                        spawned = true;
                    }
                    Close(id, reason) => {
                        assert!(self.closed.insert(id), "second Close for {id}");
                        assert!(
                            self.sessions.iter().all(|s| s.1 != id),
                            "{id} closed under a session"
                        );
                        assert!(
                            self.starting.remove(&id) || self.ready.remove(&id),
                            "Close for {id}, which is not live"
                        );
                        self.closing.insert(id);
                        if reason == CloseReason::SessionEnded {
                            assert_eq!(self.cfg.mode, Mode::Session);
                        }
                    }
                    Grant { waiter, conn } => {
                        assert!(!spawned, "a Spawn came before a Grant");
                        assert!(self.queued.remove(&waiter).is_some(), "{waiter} not queued");
                        *self.outcomes.entry(waiter).or_default() += 1;
                        assert!(self.ready.contains(&conn), "{conn} granted but not ready");
                        if self.cfg.mode == Mode::Session {
                            assert!(self.ever_granted.insert(conn), "{conn} reused");
                        }
                        self.sessions.push((waiter, conn));
                    }
                    Reject { waiter, reason } => {
                        let since = self.queued.remove(&waiter);
                        let since = since.unwrap_or_else(|| panic!("{waiter} not queued"));
                        *self.outcomes.entry(waiter).or_default() += 1;
                        if reason == RejectReason::QueueTimeout {
                            assert!(self.now >= since + self.cfg.queue_timeout, "early timeout");
                        }
                    }
                }
            }
            self.check();
        }

        fn check(&self) {
            let s = self.p.stats();
            assert_eq!(s.starting, self.starting.len());
            assert_eq!(s.idle + s.leased, self.ready.len());
            assert_eq!(s.closing, self.closing.len());
            assert_eq!(s.waiting, self.queued.len());
            assert_eq!(s.sessions, self.sessions.len());
            assert_eq!(s.spawned_total, self.spawns);
            assert!(s.starting + s.idle + s.leased <= self.cfg.max_connections);
            for &c in &self.starting {
                assert_eq!(self.p.state(c), Some(ConnState::Starting));
            }
            for &c in &self.closing {
                assert_eq!(self.p.state(c), Some(ConnState::Closing));
            }
            for &c in &self.ready {
                let n = self.sessions.iter().filter(|s| s.1 == c).count();
                assert_eq!(self.p.sessions_on(c), n);
                let want = if n == 0 {
                    ConnState::Idle
                } else {
                    ConnState::Leased
                };
                assert_eq!(self.p.state(c), Some(want));
            }
            for (&w, &since) in &self.queued {
                assert!(since + self.cfg.queue_timeout > self.now, "{w} overdue");
            }
            if let Some(d) = self.p.next_deadline() {
                assert!(d > self.now, "deadline in the past");
            }
            assert!(self.outcomes.values().all(|&n| n == 1));
        }

        fn step(&mut self) {
            let now = self.now;
            let a = match self.rng.below_or_equal(99) {
                0..=24 => {
                    let w = self.next_waiter;
                    self.next_waiter += 1;
                    self.queued.insert(w, now);
                    self.p.lease(w, now)
                }
                25..=44 => match self.pick(0..self.sessions.len()) {
                    Some(i) => {
                        let (_, conn) = self.sessions.swap_remove(i);
                        self.p.release(conn, now)
                    }
                    None => vec![],
                },
                45..=59 => match self.pick(self.starting.clone()) {
                    Some(c) => {
                        self.starting.remove(&c);
                        self.ready.insert(c);
                        self.p.on_ready(c, now)
                    }
                    None => vec![],
                },
                60..=64 => match self.pick(self.starting.clone()) {
                    Some(c) => {
                        self.starting.remove(&c);
                        self.p.on_spawn_failed(c, now)
                    }
                    None => vec![],
                },
                65..=74 => match self.pick(self.closing.clone()) {
                    Some(c) => self.exit(c),
                    None => vec![],
                },
                75..=77 => {
                    let live = self.starting.iter().chain(&self.ready).copied();
                    match self.pick(live.collect::<Vec<_>>()) {
                        Some(c) => self.exit(c),
                        None => vec![],
                    }
                }
                78..=81 => match self.pick(self.queued.keys().copied().collect::<Vec<_>>()) {
                    Some(w) => {
                        self.queued.remove(&w);
                        self.cancelled.insert(w);
                        let a = self.p.cancel_wait(w);
                        assert_eq!(a, vec![]);
                        a
                    }
                    None => vec![],
                },
                82..=83 => match self.pick(self.closing.clone()) {
                    // Raced: the process finished starting as it was closed.
                    // The pool ignores it, and settling twice at one instant
                    // does nothing the second time.
                    Some(c) => {
                        let a = self.p.on_ready(c, now);
                        assert_eq!(a, vec![]);
                        a
                    }
                    None => vec![],
                },
                84..=91 => match self.p.next_deadline() {
                    Some(d) => {
                        self.now = d;
                        self.p.poll(d)
                    }
                    None => vec![],
                },
                _ => {
                    self.now += ms(self.rng.below_or_equal(3_000));
                    self.p.poll(self.now)
                }
            };
            self.apply(a);
        }

        fn exit(&mut self, c: ConnId) -> Vec<Action> {
            self.starting.remove(&c);
            self.ready.remove(&c);
            self.closing.remove(&c);
            self.sessions.retain(|s| s.1 != c);
            self.p.on_exit(c, self.now)
        }

        fn finish(&mut self) {
            self.now += ms(1);
            let a = self.p.shutdown(self.now);
            self.apply(a);
            assert!(self.queued.is_empty());
            assert!(self.starting.is_empty());
            while let Some((_, conn)) = self.sessions.pop() {
                let a = self.p.release(conn, self.now);
                self.apply(a);
            }
            assert!(self.ready.is_empty(), "every process was closed");
            while let Some(c) = self.closing.first().copied() {
                let a = self.exit(c);
                self.apply(a);
            }
            assert_eq!(
                self.p.stats(),
                Stats {
                    spawned_total: self.spawns,
                    ..Stats::default()
                }
            );
            for w in 1..self.next_waiter {
                let n = self.outcomes.get(&w).copied().unwrap_or(0);
                let want = u32::from(!self.cancelled.contains(&w));
                assert_eq!(n, want, "waiter {w}");
            }
        }
    }

    #[test]
    fn randomized_against_a_model_of_the_owner() {
        for seed in 0..400 {
            let mut sim = Sim::new(seed);
            let a = sim.p.start(sim.now);
            sim.apply(a);
            for _ in 0..400 {
                sim.step();
            }
            sim.finish();
        }
    }
}
