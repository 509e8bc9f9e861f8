//! `Pool::pin` (a 2026-07-28 exchange), the indexes it reads, and the
//! pool's clock.

use super::*;

#[test]
fn pin_takes_a_fresh_process_and_counts_as_a_session() {
    let t0 = Instant::now();
    let mut p = pool(config(Mode::Shared, 2, 1), t0);
    p.start(t0);
    p.on_ready(1, t0);
    assert_eq!(p.pin(t0), Some(1));
    assert_eq!(p.state(1), Some(ConnState::Leased));
    assert_eq!(p.sessions_on(1), 1);
    assert_eq!(p.stats().waiting, 0);
    // A second one would wait for a new process: pin declines, lease
    // spawns it.
    assert_eq!(p.pin(t0), None);
    assert_eq!(p.lease(7, t0), vec![Spawn(2)]);
    // Queued waiters go first.
    assert_eq!(p.pin(t0), None);
    p.on_ready(2, t0);
    assert_eq!(p.stats().waiting, 0);
    // Released as a session: idle again.
    assert_eq!(p.release(1, t0), vec![]);
    assert_eq!(p.state(1), Some(ConnState::Idle));
    assert_eq!(p.pin(t0), Some(1));
}

#[test]
fn pin_shares_at_the_cap_and_declines_what_lease_would_not_grant() {
    let t0 = Instant::now();
    // At the cap: shared with the least loaded, as a lease.
    let mut p = pool(config(Mode::Shared, 1, 1), t0);
    p.start(t0);
    assert_eq!(p.pin(t0), None, "nothing ready: the lease waits");
    p.on_ready(1, t0);
    assert_eq!(p.pin(t0), Some(1));
    assert_eq!(p.pin(t0), Some(1));
    assert_eq!(p.sessions_on(1), 2);
    // Shutting down: the lease rejects.
    p.shutdown(t0);
    assert_eq!(p.pin(t0), None);
    // Session mode never pins.
    let mut p = pool(config(Mode::Session, 2, 1), t0);
    p.start(t0);
    p.on_ready(1, t0);
    assert_eq!(p.pin(t0), None);
    // Something due first (an idle timeout over): a lease would act on it.
    let mut cfg = config(Mode::Shared, 2, 0);
    cfg.idle_timeout = ms(100);
    let mut p = pool(cfg, t0);
    assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
    assert_eq!(p.on_ready(1, t0), vec![grant(1, 1)]);
    p.release(1, t0);
    assert_eq!(p.pin(t0 + ms(100)), None);
    // Declining moved nothing (a second read's case: it moved the pool's
    // time to t0 + 100 ms, past its own deadline): a moment earlier,
    // nothing is due.
    assert_eq!(p.pin(t0 + ms(99)), Some(1));
}

/// The indexes `pin` reads (`index`): the longest idle process leaving
/// Idle while others stay leaves the earliest idle time stale, and the
/// next reader makes it exact again; the oldest Idle process is the one
/// `max_lifetime` asks about.
#[test]
fn pin_reads_the_indexes_and_a_stale_idle_time_is_made_exact() {
    let t0 = Instant::now();
    let mut cfg = config(Mode::Shared, 3, 0);
    cfg.idle_timeout = ms(1_000);
    let mut p = pool(cfg, t0);
    // Three processes, idle since t0 + 10, 20 and 30 in the order 1, 2, 3.
    for (w, id) in [(1, 1), (2, 2), (3, 3)] {
        assert_eq!(p.lease(w, t0), vec![Spawn(id)]);
    }
    for id in 1..=3 {
        assert_eq!(p.on_ready(id, t0), vec![grant(id, id)]);
    }
    for id in 1..=3 {
        assert_eq!(p.release(id, t0 + ms(10 * id)), vec![]);
    }
    assert_eq!(p.next_deadline(), Some(t0 + ms(1_010)));
    // The least loaded is the lowest id, 1: also the longest idle.
    assert_eq!(p.pin(t0 + ms(40)), Some(1));
    assert!(
        !p.idle_floor.get().exact,
        "the earliest idle time left Idle"
    );
    assert_eq!(p.next_deadline(), Some(t0 + ms(1_020)));
    assert!(p.idle_floor.get().exact);
    // Pinned again and freed at once: the newest idle time, nothing stale.
    assert_eq!(p.release(1, t0 + ms(50)), vec![]);
    assert_eq!(p.pin(t0 + ms(60)), Some(1));
    assert_eq!(p.release(1, t0 + ms(60)), vec![]);
    assert!(p.idle_floor.get().exact);
    assert_eq!(p.next_deadline(), Some(t0 + ms(1_020)));
    // Due at 2's idle timeout: pin declines, the lease closes it.
    assert_eq!(p.pin(t0 + ms(1_020)), None);
    assert_eq!(
        p.poll(t0 + ms(1_020)),
        vec![Close(2, CloseReason::IdleTimeout)]
    );
    assert_eq!(p.next_deadline(), Some(t0 + ms(1_030)));

    // `max_lifetime`: the oldest Idle process is the first Idle in the
    // index; a draining (aged) process is pinned only when nothing else is.
    let mut cfg = config(Mode::Shared, 2, 0);
    cfg.max_lifetime = Some(ms(500));
    let mut p = pool(cfg, t0);
    assert_eq!(p.lease(1, t0), vec![Spawn(1)]);
    assert_eq!(p.on_ready(1, t0), vec![grant(1, 1)]);
    assert_eq!(p.lease(2, t0 + ms(100)), vec![Spawn(2)]);
    assert_eq!(p.on_ready(2, t0 + ms(100)), vec![grant(2, 2)]);
    assert_eq!(p.release(2, t0 + ms(200)), vec![]);
    assert_eq!(p.next_deadline(), Some(t0 + ms(600)));
    // 1 is aged and leased (draining), 2 is idle and young: 2 is pinned.
    assert_eq!(p.pin(t0 + ms(550)), Some(2));
    assert_eq!(p.pin(t0 + ms(550)), Some(2), "the draining one has fewer");
    assert_eq!(p.sessions_on(2), 2);
}

/// `index::Ready` against a `BTreeSet` of the same keys: every move of a
/// session count, up or down, across the whole index.
#[test]
fn the_ready_index_stays_sorted_through_every_rekey() {
    let mut rng = Rng::seeded(11);
    for _ in 0..200 {
        let mut ready = index::Ready::default();
        let mut model = BTreeSet::new();
        let n = 1 + rng.below_or_equal(9);
        for id in 1..=n {
            let key = (rng.below_or_equal(3) as usize, id);
            ready.insert(key);
            model.insert(key);
        }
        for _ in 0..50 {
            let keys: Vec<_> = model.iter().copied().collect();
            let old = keys[rng.below_or_equal(keys.len() as u64 - 1) as usize];
            let new = (rng.below_or_equal(4) as usize, old.1);
            ready.rekey(old, new);
            model.remove(&old);
            model.insert(new);
            assert!(
                ready.iter().copied().eq(model.iter().copied()),
                "{old:?} → {new:?}"
            );
        }
        let last = *model.iter().next_back().expect("keys");
        ready.remove(last);
        model.remove(&last);
        assert!(ready.iter().copied().eq(model.iter().copied()));
    }
}

/// An owner whose `now` went back: the spawn is dated at the latest `now`
/// the pool has seen, so spawn times follow ids and the lowest-numbered
/// Idle process is still the oldest (a second read's case: dated at the
/// earlier `now`, process 2 was older than 1 and never closed in time).
#[test]
fn a_spawn_is_dated_at_the_latest_now_seen() {
    let t0 = Instant::now();
    let mut cfg = config(Mode::Shared, 2, 0);
    cfg.queue_timeout = ms(60_000);
    cfg.max_lifetime = Some(ms(10_000));
    let mut p = pool(cfg, t0);
    assert_eq!(p.lease(1, t0 + ms(5_000)), vec![Spawn(1)]);
    assert_eq!(p.on_ready(1, t0 + ms(5_000)), vec![grant(1, 1)]);
    assert_eq!(p.lease(2, t0 + ms(1_000)), vec![Spawn(2)]);
    assert_eq!(p.on_ready(2, t0 + ms(1_000)), vec![grant(2, 2)]);
    assert_eq!(p.release(1, t0 + ms(12_000)), vec![]);
    assert_eq!(p.release(2, t0 + ms(12_000)), vec![]);
    // Both spawned at t0 + 5 s by the pool's clock: both age at t0 + 15 s.
    assert_eq!(p.next_deadline(), Some(t0 + ms(15_000)));
    assert_eq!(
        p.poll(t0 + ms(15_000)),
        vec![
            Close(1, CloseReason::MaxLifetime),
            Close(2, CloseReason::MaxLifetime)
        ]
    );
}

/// A call with an earlier `now` than one already seen acts at the latest
/// (`clock`): a waiter queued then times out counting from the latest, so
/// no deadline falls before a moment the pool has passed. (Found by the
/// driver, `random_calls_keep_every_promise`: the waiter's deadline came
/// out in the past and `next_deadline` with it.)
#[test]
fn a_call_with_an_earlier_now_acts_at_the_latest() {
    let t0 = Instant::now();
    let mut cfg = config(Mode::Shared, 1, 0);
    cfg.queue_timeout = ms(50);
    let mut p = pool(cfg, t0);
    assert_eq!(p.lease(1, t0 + ms(100)), vec![Spawn(1)]);
    assert_eq!(p.lease(2, t0 + ms(40)), vec![]);
    assert_eq!(p.next_deadline(), Some(t0 + ms(150)));
    assert_eq!(p.poll(t0 + ms(149)), vec![]);
    assert_eq!(
        p.poll(t0 + ms(150)),
        vec![
            reject(1, RejectReason::QueueTimeout),
            reject(2, RejectReason::QueueTimeout)
        ]
    );
}
