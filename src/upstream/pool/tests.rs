//! Unit tests of the pool: scripted scenarios for each mode and for
//! shutdown; `pin` and the clock (`tests/pin.rs`); and random call
//! sequences checked against the pool's contract (`tests/drive.rs`, with
//! the driver the `pool_ops` fuzz target uses).

use super::Action::{Close, Grant, Reject, Spawn};
use super::*;
use std::collections::BTreeSet;

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
        max_waiting_starting: 0,
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

#[test]
fn session_starved_counts_waiters_no_process_can_come_for() {
    let t0 = Instant::now();
    let mut p = pool(config(Mode::Session, 2, 0), t0);
    // Below the cap a waiter gets a process of its own: not starved.
    assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
    assert_eq!(p.lease(2, t0), vec![Spawn(2)]);
    assert_eq!(p.starved(), 0);
    // At the cap, a third waits for one of the Starting ones (each goes to
    // the oldest waiter): still not starved, a process is coming.
    assert_eq!(p.lease(3, t0), vec![]);
    assert_eq!(p.starved(), 1, "two Starting processes, three waiters");
    assert_eq!(p.on_ready(1, t0 + ms(1)), vec![grant(1, 1)]);
    assert_eq!(p.starved(), 1);
    assert_eq!(p.on_ready(2, t0 + ms(1)), vec![grant(2, 2)]);
    let s = p.stats();
    assert_eq!((s.leased, s.starting, s.waiting), (2, 0, 1));
    assert_eq!(p.starved(), 1);
    assert_eq!(p.lease(4, t0 + ms(2)), vec![]);
    assert_eq!(p.starved(), 2);
    // The owner reclaims a session: its process is closed and a fresh one
    // spawned in its slot for the oldest waiter.
    assert_eq!(
        p.release(1, t0 + ms(3)),
        vec![Close(1, CloseReason::SessionEnded), Spawn(3)]
    );
    assert_eq!(p.starved(), 1, "waiter 3 has process 3 coming, 4 has none");
    assert_eq!(p.on_ready(3, t0 + ms(4)), vec![grant(3, 3)]);
    // Cancelling the last starved waiter, or its timeout, ends the starving.
    assert_eq!(p.cancel_wait(4), vec![]);
    assert_eq!(p.starved(), 0);
    assert_eq!(p.lease(5, t0 + ms(5)), vec![]);
    assert_eq!(p.starved(), 1);
    assert_eq!(
        p.poll(t0 + ms(5_005)),
        vec![reject(5, RejectReason::QueueTimeout)]
    );
    assert_eq!(p.starved(), 0);
}

#[test]
fn starved_is_zero_in_shared_mode_under_backoff_and_after_shutdown() {
    let t0 = Instant::now();
    // Shared: a waiter at the cap is pinned to a busy process.
    let mut p = pool(config(Mode::Shared, 1, 0), t0);
    assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
    assert_eq!(p.lease(2, t0), vec![]);
    assert_eq!(p.starved(), 0);
    // Session, below the cap but backing off: a freed slot would not help.
    let mut p = pool(config(Mode::Session, 2, 0), t0);
    assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
    assert_eq!(p.on_spawn_failed(1, t0), vec![]);
    assert_eq!(p.stats().waiting, 1);
    assert_eq!(p.starved(), 0);
    // Session, starved, then shut down: the waiter is rejected.
    let mut p = pool(config(Mode::Session, 1, 0), t0);
    p.lease(1, t0);
    p.on_ready(1, t0);
    assert_eq!(p.lease(2, t0), vec![]);
    assert_eq!(p.starved(), 1);
    assert_eq!(p.shutdown(t0), vec![reject(2, RejectReason::ShuttingDown)]);
    assert_eq!(p.starved(), 0);
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

#[test]
fn shared_cold_start_queues_past_max_waiting_for_the_starting_process() {
    let t0 = Instant::now();
    let mut cfg = config(Mode::Shared, 1, 0);
    cfg.max_waiting = 4;
    cfg.max_waiting_starting = 1024;
    let mut p = pool(cfg, t0);
    assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
    // Fifty sessions at once while the first process starts: every one
    // waits for it (max_waiting would have turned away all but four).
    for w in 2..=50 {
        assert_eq!(p.lease(w, t0 + ms(w)), vec![], "waiter {w}");
    }
    assert_eq!(p.stats().waiting, 50);
    // Ready: all fifty share it, and nothing else was spawned.
    assert_eq!(
        p.on_ready(1, t0 + ms(300)),
        (1..=50).map(|w| grant(w, 1)).collect::<Vec<_>>()
    );
    let s = p.stats();
    assert_eq!((s.spawned_total, s.sessions, s.waiting), (1, 50, 0));
}

#[test]
fn shared_cold_start_queue_has_its_own_cap_and_the_queue_timeout() {
    let t0 = Instant::now();
    let mut cfg = config(Mode::Shared, 1, 0);
    cfg.max_waiting = 2;
    cfg.max_waiting_starting = 5;
    let mut p = pool(cfg, t0);
    assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
    for w in 2..=5 {
        assert_eq!(p.lease(w, t0), vec![]);
    }
    // The cold-start cap is a cap.
    assert_eq!(p.lease(6, t0), vec![reject(6, RejectReason::QueueFull)]);
    // A process that never comes up: each waiter times out on time.
    assert_eq!(p.next_deadline(), Some(t0 + ms(5_000)));
    assert_eq!(p.poll(t0 + ms(4_999)), vec![]);
    assert_eq!(
        p.poll(t0 + ms(5_000)),
        (1..=5)
            .map(|w| reject(w, RejectReason::QueueTimeout))
            .collect::<Vec<_>>()
    );
    // A cap below max_waiting changes nothing: max_waiting rules.
    let mut cfg = config(Mode::Shared, 1, 0);
    cfg.max_waiting = 3;
    cfg.max_waiting_starting = 1;
    let mut p = pool(cfg, t0);
    assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
    assert_eq!(p.lease(2, t0), vec![]);
    assert_eq!(p.lease(3, t0), vec![]);
    assert_eq!(p.lease(4, t0), vec![reject(4, RejectReason::QueueFull)]);
}

#[test]
fn shared_cold_start_failure_keeps_only_max_waiting_oldest_waiters() {
    let t0 = Instant::now();
    let mut cfg = config(Mode::Shared, 1, 0);
    cfg.max_waiting = 2;
    cfg.max_waiting_starting = 10;
    let mut p = pool(cfg, t0);
    assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
    for w in 2..=6 {
        assert_eq!(p.lease(w, t0), vec![]);
    }
    // The process they all waited for fails: nothing is on its way until
    // the backoff allows a probe, so max_waiting caps the queue again and
    // the newest are turned away now rather than at their timeout.
    assert_eq!(
        p.on_spawn_failed(1, t0 + ms(10)),
        (3..=6)
            .map(|w| reject(w, RejectReason::QueueFull))
            .collect::<Vec<_>>()
    );
    assert_eq!(p.stats().waiting, 2);
    let probe = p.next_deadline().expect("a deferred spawn");
    assert!(probe < t0 + ms(5_000));
    assert_eq!(p.poll(probe), vec![Spawn(2)]);
    // While the probe starts, newcomers wait for it again.
    assert_eq!(p.lease(7, probe), vec![]);
    assert_eq!(
        p.on_ready(2, probe + ms(1)),
        vec![grant(1, 2), grant(2, 2), grant(7, 2)]
    );
}

#[test]
fn shared_cold_start_with_no_room_to_queue_still_spawns_and_waits() {
    let t0 = Instant::now();
    let mut cfg = config(Mode::Shared, 2, 0);
    cfg.max_waiting = 0;
    cfg.max_waiting_starting = 8;
    let mut p = pool(cfg, t0);
    // Nothing ready, nothing starting: the first session spawns a process
    // and waits for it; the second spawns the other one.
    assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
    assert_eq!(p.lease(2, t0), vec![Spawn(2)]);
    assert_eq!(p.lease(3, t0), vec![]);
    assert_eq!(
        p.on_ready(2, t0 + ms(10)),
        vec![grant(1, 2), grant(2, 2), grant(3, 2)]
    );
    // Something is ready: with no room to queue, sessions share it rather
    // than wait for process 1, as before.
    assert_eq!(p.lease(4, t0 + ms(20)), vec![grant(4, 2)]);
    assert_eq!(p.on_ready(1, t0 + ms(30)), vec![]);
    assert_eq!(p.lease(5, t0 + ms(40)), vec![grant(5, 1)]);
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

// ---- Pin (tests/pin.rs), and random calls (tests/drive.rs) ---------------

mod drive;
mod pin;
