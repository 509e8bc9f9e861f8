//! The pool against a model of its owner: random events on a fake clock,
//! every action checked against what the owner knows.

use super::*;

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
    /// Asks `pin` before each `lease` (a 2026-07-28 exchange, issue 13).
    pin_first: bool,
    /// Leases answered by `pin`.
    pins: u64,
    /// What the last step asked for (a pin as the `Grant` it stands for).
    last: Vec<Action>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim::new_at(seed, Instant::now())
    }

    fn new_at(seed: u64, now: Instant) -> Sim {
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
            max_waiting_starting: pick(10) as usize,
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
            pin_first: false,
            pins: 0,
            last: Vec::new(),
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
        // Starved: Session mode, at the cap, waiters beyond the Starting ones.
        let live = self.starting.len() + self.ready.len();
        let starved = if self.cfg.mode == Mode::Session && live == self.cfg.max_connections {
            self.queued.len().saturating_sub(self.starting.len())
        } else {
            0
        };
        assert_eq!(self.p.starved(), starved);
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
                match self.pin_first.then(|| self.p.pin(now)).flatten() {
                    Some(conn) => {
                        self.pins += 1;
                        vec![Grant { waiter: w, conn }]
                    }
                    None => self.p.lease(w, now),
                }
            }
            25..=44 => match self.pick(0..self.sessions.len()) {
                Some(i) => {
                    // While a waiter is starved this is the owner reclaiming
                    // a session: the freed slot goes to a starved waiter
                    // (spawned now, or once the backoff allows).
                    let starved = self.p.starved();
                    let (_, conn) = self.sessions.swap_remove(i);
                    let a = self.p.release(conn, now);
                    if starved > 0 {
                        assert!(self.p.starved() < starved, "a release fed no waiter");
                    }
                    a
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
        self.last = a.clone();
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

/// `pin` is `lease` when the lease is granted at once: two owners playing
/// the same random script, one asking `pin` first, see the same actions
/// and the same pool after every step (issue 13).
#[test]
fn pin_is_a_lease_granted_at_once() {
    let mut pins = 0;
    for seed in 0..400 {
        let mut a = Sim::new(seed);
        let mut b = Sim::new_at(seed, a.now);
        b.pin_first = true;
        let start = a.p.start(a.now);
        a.apply(start);
        let start = b.p.start(b.now);
        b.apply(start);
        for step in 0..400 {
            a.step();
            b.step();
            assert_eq!(a.last, b.last, "seed {seed}, step {step}");
            assert_eq!(a.p.stats(), b.p.stats(), "seed {seed}, step {step}");
            assert_eq!(a.p.next_deadline(), b.p.next_deadline(), "seed {seed}");
        }
        a.finish();
        b.finish();
        pins += b.pins;
    }
    // The script pins often enough for the comparison to mean something.
    assert!(pins > 1_000, "only {pins} pins");
}
