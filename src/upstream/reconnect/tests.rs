//! Unit tests of [`SseStream`]: backoff bounds, the server's `retry:` and
//! `Retry-After` floors, the give-up budget, dedupe across reconnects, the
//! statuses, a lone drop's quick reconnect, a flapping stream's backoff, and
//! the spread of a herd of streams dropped together.

use super::*;
use std::time::SystemTime;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn stream(seed: u64) -> SseStream {
    SseStream::new(ReconnectConfig::default(), Rng::seeded(seed))
}

fn connect(id: Option<&str>) -> Vec<Action> {
    vec![Action::Connect {
        last_event_id: id.map(str::to_owned),
    }]
}

/// The instant of the single `Wait` in `actions`.
#[track_caller]
fn wait_of(actions: Vec<Action>) -> Instant {
    match actions.as_slice() {
        [Action::Wait(until)] => *until,
        other => panic!("expected one Wait, got {other:?}"),
    }
}

/// Wants the stream at `now` and lets it connect.
fn opened(s: &mut SseStream, now: Instant) {
    assert!(matches!(s.want(now).as_slice(), [Action::Connect { .. }]));
    s.on_connected(now);
    assert_eq!(s.state(), &StreamState::Open);
}

/// Fails the outstanding connect at `now` and fires its timer: returns
/// the delay drawn.
#[track_caller]
fn fail_and_retry(s: &mut SseStream, kind: Failure, now: Instant) -> (Duration, Instant) {
    let mut drops = RecentDrops::new();
    let until = wait_of(s.on_failure(kind, None, &mut drops, now));
    assert!(matches!(
        s.on_timer(until).as_slice(),
        [Action::Connect { .. }]
    ));
    (until - now, until)
}

/// The most values of `sorted` in any half-open window `[v, v + width)`.
fn densest_window(sorted: &[Duration], width: Duration) -> usize {
    let mut best = 0;
    let mut hi = 0;
    for (lo, &start) in sorted.iter().enumerate() {
        while hi < sorted.len() && sorted[hi] < start + width {
            hi += 1;
        }
        best = best.max(hi - lo);
    }
    best
}

#[test]
fn defaults_validate_and_base_is_bounded() {
    let cfg = ReconnectConfig::default();
    assert_eq!(cfg.base, ms(250));
    assert_eq!(cfg.cap, secs(30));
    assert_eq!(cfg.max_elapsed, secs(300));
    assert_eq!(cfg.recent_ids, 1024);
    assert_eq!(cfg.validate(), Ok(()));
    for ok in [100, 500] {
        let c = ReconnectConfig {
            base: ms(ok),
            ..ReconnectConfig::default()
        };
        assert_eq!(c.validate(), Ok(()), "{ok}ms");
    }
    for bad in [0, 99, 501, 5000] {
        let c = ReconnectConfig {
            base: ms(bad),
            ..ReconnectConfig::default()
        };
        assert!(c.validate().unwrap_err().contains("--reconnect-base"));
    }
    let c = ReconnectConfig {
        cap: ms(200),
        ..ReconnectConfig::default()
    };
    assert!(c.validate().is_err());
}

#[test]
fn every_delay_is_within_its_bound_for_attempts_0_to_40() {
    let t0 = Instant::now();
    let cfg = ReconnectConfig {
        max_elapsed: secs(86_400),
        ..ReconnectConfig::default()
    };
    let mut s = SseStream::new(cfg.clone(), Rng::seeded(1));
    assert_eq!(s.want(t0), connect(None));
    let mut now = t0;
    let mut widest = Duration::ZERO;
    for n in 0..=40u32 {
        let bound = (cfg.base * 2u32.saturating_pow(n.min(20))).min(cfg.cap);
        assert_eq!(s.attempt(), n);
        let (delay, until) = fail_and_retry(&mut s, Failure::ConnectFailed, now);
        assert!(delay <= bound, "attempt {n}: {delay:?} > {bound:?}");
        widest = widest.max(delay);
        now = until;
    }
    assert!(widest > secs(15), "jitter should reach the upper half");
}

#[test]
fn a_connect_failure_draws_from_the_base_window() {
    // Spreading is for lost open streams; a failed first connect retries
    // within `base`, however many failed beside it.
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    for seed in 0..200 {
        let mut s = stream(seed);
        s.want(t0);
        let until = wait_of(s.on_failure(Failure::Timeout, None, &mut drops, t0));
        assert!(until - t0 <= ms(250), "seed {seed}");
        assert_eq!(s.attempt(), 1);
    }
    assert_eq!(drops.count(t0), 0, "not drops of open streams");
}

#[test]
fn a_received_message_resets_the_backoff() {
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    let mut s = stream(2);
    s.want(t0);
    let mut now = t0;
    for _ in 0..6 {
        now = fail_and_retry(&mut s, Failure::Status(503), now).1;
    }
    assert_eq!(s.attempt(), 6);
    s.on_connected(now);
    assert!(s.on_event(Some("1"), None, now));
    assert_eq!(s.attempt(), 0);
    // The next connect failure starts over at the base window...
    s.stop();
    s.want(now);
    let until = wait_of(s.on_failure(Failure::ConnectFailed, None, &mut drops, now));
    assert!(until - now <= ms(250));
    assert_eq!(s.attempt(), 1);
    // ...and a lone drop of an open stream at the base window too, not at
    // attempt 6's 16 s.
    s.on_timer(until);
    s.on_connected(until);
    assert!(s.on_event(Some("2"), None, until));
    let next = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, until));
    assert!(next - until <= ms(250));
    assert_eq!(s.attempt(), 1, "drew from base·2⁰");
}

#[test]
fn ten_503s_then_success_recovers_with_growing_delays() {
    let t0 = Instant::now();
    let mut s = stream(3);
    assert_eq!(s.want(t0), connect(None));
    let mut now = t0;
    let mut delays = Vec::new();
    for n in 0..10u32 {
        let (delay, until) = fail_and_retry(&mut s, Failure::Status(503), now);
        assert!(
            delay <= (ms(250) * 2u32.pow(n)).min(secs(30)),
            "attempt {n}"
        );
        delays.push(delay);
        now = until;
    }
    let early: Duration = delays[..5].iter().sum();
    let late: Duration = delays[5..].iter().sum();
    assert!(late > early * 4, "{delays:?}");
    assert!(now - t0 < secs(300), "still within the budget");
    // The eleventh attempt succeeds.
    s.on_connected(now);
    assert_eq!(s.state(), &StreamState::Open);
    assert!(s.on_event(Some("a"), None, now));
    assert_eq!(s.attempt(), 0);
    assert_eq!(s.last_event_id(), Some("a"));
}

#[test]
fn the_servers_retry_is_a_floor_and_no_connect_comes_before_it() {
    let t0 = Instant::now();
    for seed in 0..100 {
        // Each its upstream's only stream: a lone drop, the base window on
        // top of the floor.
        let mut drops = RecentDrops::new();
        let mut s = stream(seed);
        opened(&mut s, t0);
        assert!(s.on_event(Some("p"), Some(3000), t0));
        let drop_at = t0 + secs(1);
        let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, drop_at));
        assert!(until >= drop_at + secs(3), "seed {seed}");
        assert!(until <= drop_at + secs(3) + ms(250), "seed {seed}");
        assert_eq!(s.on_timer(until - ms(1)), vec![]);
        assert_eq!(s.on_timer(until), connect(Some("p")));
    }
}

#[test]
fn retry_after_7_is_obeyed_and_large_values_are_capped() {
    let t0 = Instant::now();
    let ra = parse_retry_after("7", SystemTime::now());
    assert_eq!(ra, Some(secs(7)));
    let mut drops = RecentDrops::new();
    for seed in 0..100 {
        let mut s = stream(seed);
        s.want(t0);
        let until = wait_of(s.on_failure(Failure::Status(503), ra, &mut drops, t0));
        assert!(until >= t0 + secs(7) && until <= t0 + secs(7) + ms(250));
        assert_eq!(s.on_timer(until - ms(1)), vec![]);
        assert_eq!(s.on_timer(until), connect(None));
    }
    let mut s = stream(9);
    s.want(t0);
    let until = wait_of(s.on_failure(Failure::Status(429), Some(secs(3600)), &mut drops, t0));
    assert!(until >= t0 + secs(30) && until <= t0 + secs(30) + ms(250));
}

#[test]
fn gives_up_when_the_next_attempt_would_start_past_max_elapsed() {
    let t0 = Instant::now();
    let max = ReconnectConfig::default().max_elapsed;
    let mut drops = RecentDrops::new();
    let mut s = stream(4);
    s.want(t0);
    // The run starts at t0 and runs on until well into the budget.
    let mut now = t0;
    while now - t0 < secs(200) {
        now = fail_and_retry(&mut s, Failure::ConnectFailed, now).1;
    }
    // A twin draws the same delay, so we can place the failure so that
    // the attempt lands exactly on the deadline...
    let delay = wait_of(
        s.clone()
            .on_failure(Failure::ConnectFailed, None, &mut drops, now),
    ) - now;
    let deadline = t0 + max;
    let at = deadline - delay;
    let mut exact = s.clone();
    assert_eq!(
        exact.on_failure(Failure::ConnectFailed, None, &mut drops, at),
        vec![Action::Wait(deadline)]
    );
    // ...or one microsecond past it: give up at the failure.
    let mut late = s.clone();
    assert_eq!(
        late.on_failure(
            Failure::ConnectFailed,
            None,
            &mut drops,
            at + Duration::from_micros(1)
        ),
        vec![Action::GiveUp]
    );
    assert_eq!(late.state(), &StreamState::GaveUp);
    assert_eq!(late.want(at), vec![], "a give-up is final until stop");
    // Failing on and on, a stream never gets an attempt past the deadline
    // and gives up before it.
    let mut last = now;
    loop {
        match s
            .on_failure(Failure::ConnectFailed, None, &mut drops, last)
            .as_slice()
        {
            [Action::Wait(until)] => {
                assert!(*until <= deadline);
                s.on_timer(*until);
                last = *until;
            }
            [Action::GiveUp] => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(last <= deadline && deadline - last <= secs(30));
}

#[test]
fn never_gives_up_while_events_keep_arriving() {
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    let mut s = stream(5);
    opened(&mut s, t0);
    let mut now = t0;
    for i in 0..2000u32 {
        // Each connection delivers one event, then the server drops it.
        assert!(s.on_event(Some(&i.to_string()), None, now));
        let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, now + ms(10)));
        assert_eq!(s.on_timer(until), connect(Some(&i.to_string())));
        s.on_connected(until);
        now = until;
    }
    assert!(now - t0 > secs(900), "ran three budgets: {:?}", now - t0);
}

#[test]
fn a_quiet_stream_that_lived_cap_is_not_a_failure_run() {
    // A GET stream with nothing to say, cut by an idle timeout every 40 s:
    // each drop is lone (the last one is older than DROP_WINDOW), so each
    // reconnect comes within the base window.
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    let mut s = stream(6);
    opened(&mut s, t0);
    let mut now = t0;
    while now - t0 < secs(1200) {
        let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, now + secs(40)));
        assert!(until - (now + secs(40)) <= ms(250));
        assert_eq!(s.attempt(), 1);
        s.on_timer(until);
        s.on_connected(until);
        now = until;
    }
}

#[test]
fn a_server_that_accepts_then_drops_backs_off_and_is_given_up() {
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    let mut s = stream(7);
    opened(&mut s, t0);
    let mut now = t0;
    let mut delays = Vec::new();
    loop {
        match s
            .on_failure(Failure::Dropped, None, &mut drops, now + ms(5))
            .as_slice()
        {
            [Action::Wait(until)] => {
                delays.push(*until - (now + ms(5)));
                s.on_timer(*until);
                s.on_connected(*until);
                now = *until;
            }
            [Action::GiveUp] => break,
            other => panic!("{other:?}"),
        }
    }
    // Tens of reconnects over the budget, not a hot loop of thousands.
    assert!(delays.len() < 40, "{} reconnects", delays.len());
    assert!(delays.iter().max().unwrap() > &secs(10), "{delays:?}");
    assert!(now - t0 <= secs(300));
}

#[test]
fn no_event_is_delivered_twice_across_a_reconnect() {
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    let mut s = stream(8);
    opened(&mut s, t0);
    let mut delivered = Vec::new();
    for id in ["1", "2", "3", "4", "5"] {
        if s.on_event(Some(id), None, t0) {
            delivered.push(id);
        }
    }
    let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, t0 + ms(50)));
    assert_eq!(s.on_timer(until), connect(Some("5")));
    s.on_connected(until);
    // The server replays a little more than it should.
    for id in ["4", "5", "6"] {
        if s.on_event(Some(id), None, until) {
            delivered.push(id);
        }
    }
    assert_eq!(delivered, ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(s.last_event_id(), Some("6"));
    // Events without an id always pass.
    assert!(s.on_event(None, None, until));
    assert!(s.on_event(None, None, until));
    assert_eq!(s.last_event_id(), Some("6"));
}

#[test]
fn a_duplicate_neither_moves_the_resume_point_nor_resets_the_backoff() {
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    let mut s = stream(10);
    opened(&mut s, t0);
    assert!(s.on_event(Some("a"), None, t0));
    assert!(s.on_event(Some("b"), None, t0));
    let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, t0));
    s.on_timer(until);
    s.on_connected(until);
    let attempt = s.attempt();
    assert!(!s.on_event(Some("a"), None, until));
    assert_eq!(s.last_event_id(), Some("b"));
    assert_eq!(s.attempt(), attempt);
}

#[test]
fn the_recent_set_is_bounded_and_evicts_the_oldest() {
    let t0 = Instant::now();
    let cfg = ReconnectConfig {
        recent_ids: 3,
        ..ReconnectConfig::default()
    };
    let mut s = SseStream::new(cfg, Rng::seeded(1));
    opened(&mut s, t0);
    for id in ["a", "b", "c", "d"] {
        assert!(s.on_event(Some(id), None, t0));
    }
    assert_eq!(s.recent.order.len(), 3);
    assert_eq!(s.recent.set.len(), 3);
    assert!(!s.on_event(Some("d"), None, t0));
    assert!(!s.on_event(Some("b"), None, t0));
    assert!(s.on_event(Some("a"), None, t0), "evicted, so delivered");
    // Remembering "a" again evicted the oldest, "b"; "c" stays.
    assert!(!s.on_event(Some("c"), None, t0));
    assert!(s.on_event(Some("b"), None, t0));
    assert_eq!(s.recent.order.len(), 3);
}

#[test]
fn an_empty_id_resets_the_resume_point() {
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    let mut s = stream(11);
    opened(&mut s, t0);
    assert!(s.on_event(Some("9"), None, t0));
    assert!(s.on_event(Some(""), None, t0));
    assert!(
        s.on_event(Some(""), None, t0),
        "empty ids are not remembered"
    );
    assert_eq!(s.last_event_id(), None);
    let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, t0));
    assert_eq!(s.on_timer(until), connect(None));
}

#[test]
fn want_is_idempotent_in_every_active_state() {
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    let mut s = stream(12);
    assert_eq!(s.want(t0), connect(None));
    for _ in 0..100 {
        assert_eq!(s.want(t0), vec![]);
    }
    assert_eq!(s.state(), &StreamState::Connecting);
    s.on_connected(t0);
    for _ in 0..100 {
        assert_eq!(s.want(t0), vec![]);
    }
    assert_eq!(s.state(), &StreamState::Open);
    let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, t0));
    for _ in 0..100 {
        assert_eq!(s.want(t0 + ms(1)), vec![]);
    }
    assert_eq!(s.state(), &StreamState::Backoff { until });
    assert_eq!(s.on_timer(until), connect(None));
    assert_eq!(s.on_timer(until), vec![], "a second firing is stale");
}

#[test]
fn status_404_gives_up_at_once() {
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    let mut s = stream(13);
    s.want(t0);
    assert_eq!(
        s.on_failure(Failure::Status(404), None, &mut drops, t0),
        vec![Action::GiveUp]
    );
    assert_eq!(s.state(), &StreamState::GaveUp);
    assert_eq!(s.on_failure(Failure::Dropped, None, &mut drops, t0), vec![]);
    assert_eq!(s.on_timer(t0 + secs(60)), vec![]);
}

#[test]
fn status_405_means_no_get_stream_and_goes_idle_for_good() {
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    let mut s = stream(14);
    s.want(t0);
    assert_eq!(
        s.on_failure(Failure::Status(405), None, &mut drops, t0),
        vec![]
    );
    assert_eq!(s.state(), &StreamState::Idle);
    assert_eq!(s.attempt(), 0);
    assert_eq!(s.want(t0 + secs(1)), vec![], "asking again would get 405");
    assert_eq!(s.on_timer(t0 + secs(1)), vec![]);
}

/// Issue 11, class 6: many servers refuse the GET stream with 400 or 403
/// (or 401, 410, a redirect, an unexpected 2xx) instead of 405. That means
/// "no GET stream", like 405: the stream goes idle for good and the session
/// goes on; giving up made the owner start a new session and GET again at
/// once, for ever.
#[test]
fn other_non_transient_statuses_mean_no_get_stream_and_transient_ones_back_off() {
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    for status in [400, 401, 403, 405, 406, 410, 421, 301, 204] {
        let mut s = stream(15);
        s.want(t0);
        assert_eq!(
            s.on_failure(Failure::Status(status), None, &mut drops, t0),
            vec![],
            "{status}"
        );
        assert_eq!(s.state(), &StreamState::Idle, "{status}");
        assert_eq!(s.refused(), Some(status));
        assert_eq!(s.want(t0 + secs(1)), vec![], "{status}: not asked again");
        assert_eq!(s.on_timer(t0 + secs(60)), vec![], "{status}");
    }
    for status in [408, 429, 500, 502, 503, 504] {
        let mut s = stream(15);
        s.want(t0);
        let until = wait_of(s.on_failure(Failure::Status(status), None, &mut drops, t0));
        assert!(until - t0 <= ms(250), "{status}");
    }
}

#[test]
fn stale_reports_change_nothing() {
    let t0 = Instant::now();
    let mut drops = RecentDrops::new();
    let mut s = stream(16);
    assert_eq!(s.on_timer(t0), vec![]);
    assert_eq!(s.on_failure(Failure::Dropped, None, &mut drops, t0), vec![]);
    s.on_connected(t0);
    assert_eq!(s.state(), &StreamState::Idle);
    s.want(t0);
    let until = wait_of(s.on_failure(Failure::ConnectFailed, None, &mut drops, t0));
    assert_eq!(s.on_failure(Failure::Dropped, None, &mut drops, t0), vec![]);
    assert_eq!(s.on_timer(until - Duration::from_micros(1)), vec![]);
    assert_eq!(s.state(), &StreamState::Backoff { until });
    s.stop();
    assert_eq!(s.state(), &StreamState::Idle);
    assert_eq!(s.attempt(), 0);
    assert_eq!(s.on_timer(until), vec![], "stop made the timer stale");
}

#[test]
fn resuming_a_polled_post_stream_waits_the_servers_retry() {
    // 2025-11-25 polling: the POST stream primes an id and `retry:`, then
    // ends before the reply; the relay must re-GET after `retry`.
    let t0 = Instant::now();
    let mut s = stream(17);
    assert!(s.on_event(Some("post-1"), Some(2000), t0));
    assert_eq!(s.state(), &StreamState::Idle);
    let until = wait_of(s.want(t0 + ms(10)));
    assert_eq!(until, t0 + ms(2010));
    assert_eq!(s.want(t0 + ms(20)), vec![]);
    assert_eq!(s.on_timer(until), connect(Some("post-1")));
}

/// The window the last delay was drawn from: `min(cap, base·2^(attempt−1))`.
fn window_drawn(s: &SseStream) -> Duration {
    let k = s.attempt().saturating_sub(1).min(31);
    s.cfg.base.saturating_mul(1 << k).min(s.cfg.cap)
}

/// A stream open since a minute, with an event (and `retry`) a second ago.
fn open_with_event(cfg: &ReconnectConfig, seed: u64, retry: Option<u64>, t0: Instant) -> SseStream {
    let mut s = SseStream::new(cfg.clone(), Rng::seeded(seed));
    opened(&mut s, t0 - secs(60));
    assert!(s.on_event(Some("e"), retry, t0 - secs(1)));
    s
}

#[test]
fn a_lone_drop_reconnects_within_the_base_window() {
    let t0 = Instant::now();
    for base in [250, 100, 500] {
        let cfg = ReconnectConfig {
            base: ms(base),
            ..ReconnectConfig::default()
        };
        let mut slowest = Duration::ZERO;
        for seed in 0..1000 {
            let mut drops = RecentDrops::new();
            let mut s = open_with_event(&cfg, seed, None, t0);
            let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, t0));
            assert_eq!(window_drawn(&s), ms(base));
            slowest = slowest.max(until - t0);
            assert_eq!(s.on_timer(until), connect(Some("e")));
        }
        assert!(slowest <= ms(base), "base {base} ms: {slowest:?}");
        if base == 250 {
            assert!(slowest <= ms(300), "the acceptance bound: {slowest:?}");
        }
    }
    // Still lone: another stream of the upstream dropped DROP_WINDOW ago,
    // others only failed to connect (a failed connect is not a drop).
    let mut drops = RecentDrops::new();
    assert_eq!(drops.record(t0 - DROP_WINDOW), 1);
    for seed in 100..110 {
        let mut other = stream(seed);
        other.want(t0);
        wait_of(other.on_failure(Failure::ConnectFailed, None, &mut drops, t0));
    }
    let mut s = stream(1);
    opened(&mut s, t0 - secs(5));
    let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, t0));
    assert!(until - t0 <= ms(250));
}

#[test]
fn drops_close_together_widen_the_window_one_base_each() {
    // Sessions of one upstream dropping 100 ms apart: base·n, rounded up
    // to the backoff's powers of two, up to the herd spread.
    let t0 = Instant::now();
    let cfg = ReconnectConfig::default();
    let mut drops = RecentDrops::new();
    let windows: Vec<u64> = (0..8u64)
        .map(|i| {
            let mut s = open_with_event(&cfg, i, None, t0);
            wait_of(s.on_failure(Failure::Dropped, None, &mut drops, t0 + ms(100 * i)));
            window_drawn(&s).as_millis() as u64
        })
        .collect();
    assert_eq!(windows, [250, 500, 1000, 1000, 2000, 2000, 2000, 2000]);
}

#[test]
fn a_flapping_stream_backs_off() {
    // One stream whose upstream delivers an event and drops it 10 ms after
    // every reconnect: its own earlier drops make each drop less lone.
    let t0 = Instant::now();
    let cfg = ReconnectConfig::default();
    let mut drops = RecentDrops::new();
    let mut s = stream(21);
    opened(&mut s, t0);
    let (mut now, mut windows, mut total) = (t0, Vec::new(), Duration::ZERO);
    for i in 0..200u32 {
        assert!(s.on_event(Some(&i.to_string()), None, now));
        let at = now + ms(10);
        let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, at));
        windows.push(window_drawn(&s).as_millis() as u64);
        total += until - at;
        s.on_timer(until);
        s.on_connected(until);
        now = until;
    }
    // Each delay is at most 2 s, so from the 5th drop on, at least four
    // earlier ones are within DROP_WINDOW: the full herd spread.
    assert_eq!(windows[..5], [250, 500, 1000, 1000, 2000]);
    assert!(windows[4..].iter().all(|&w| w == 2000), "{windows:?}");
    let mean = total / 200;
    assert!(
        mean >= ms(700),
        "mean delay {mean:?}, a lone drop's is 125 ms"
    );
    // It then stays up past DROP_WINDOW: its next drop is lone again.
    assert!(s.on_event(Some("calm"), None, now));
    let at = now + DROP_WINDOW + ms(10);
    let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, at));
    assert!(until - at <= ms(250));

    // Without progress (accepted, no event, dropped after 5 ms) the failure
    // run doubles from the base window, as for failed connects.
    let mut drops = RecentDrops::new();
    let mut s = SseStream::new(cfg, Rng::seeded(22));
    opened(&mut s, t0);
    let mut now = t0;
    let mut windows = Vec::new();
    for _ in 0..9 {
        let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, now + ms(5)));
        windows.push(window_drawn(&s).as_millis() as u64);
        s.on_timer(until);
        s.on_connected(until);
        now = until;
    }
    let doubling = [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000];
    assert_eq!(windows, doubling);
}

/// `n` open streams of one upstream (one `RecentDrops`), seeded
/// `herd·2³² + i`, all dropped at `t0`: each one's (delay, window drawn
/// from), in the order they were handled.
fn drop_herd(
    cfg: &ReconnectConfig,
    herd: u64,
    retry: Option<u64>,
    t0: Instant,
) -> Vec<(Duration, Duration)> {
    let mut drops = RecentDrops::new();
    (0..1000u64)
        .map(|i| {
            let mut s = open_with_event(cfg, (herd << 32) | i, retry, t0);
            let until = wait_of(s.on_failure(Failure::Dropped, None, &mut drops, t0));
            (until - t0, window_drawn(&s))
        })
        .collect()
}

/// (the most reconnects of `herd` in any 100 ms, the streams that drew
/// from a window narrower than [`HERD_SPREAD`] before the herd was
/// recognised, and the worst case: all of those landing in the densest
/// 100 ms of the others).
fn herd_density(herd: &[(Duration, Duration)]) -> (usize, usize, usize) {
    let mut all: Vec<Duration> = herd.iter().map(|h| h.0).collect();
    all.sort();
    let mut wide: Vec<Duration> = herd
        .iter()
        .filter(|h| h.1 >= HERD_SPREAD)
        .map(|h| h.0)
        .collect();
    wide.sort();
    let narrow = herd.len() - wide.len();
    (
        densest_window(&all, ms(100)),
        narrow,
        densest_window(&wide, ms(100)) + narrow,
    )
}

#[test]
fn a_thousand_streams_dropped_together_spread_their_reconnects() {
    // Their upstream restarted: every open stream drops at t0. The first
    // few see fewer drops before them and draw from narrower windows
    // (250 ms, 500 ms, 1 s, 1 s); the rest from the herd spread.
    let t0 = Instant::now();
    let width = ms(100);
    let limit = 150; // 15% of 1,000
    for retry in [None, Some(2000)] {
        let herd = drop_herd(&ReconnectConfig::default(), 0, retry, t0);
        let narrow: Vec<u128> = herd[..5].iter().map(|h| h.1.as_millis()).collect();
        assert_eq!(narrow, [250, 500, 1000, 1000, 2000]);
        let mut delays: Vec<Duration> = herd.iter().map(|h| h.0).collect();
        delays.sort();
        let floor = ms(retry.unwrap_or(0));
        assert!(delays[0] >= floor);
        let mut buckets = [0usize; 20];
        for d in &delays {
            buckets[((*d - floor).as_millis() / 100).min(19) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n <= limit), "{buckets:?}");
        let (densest, narrow, worst) = herd_density(&herd);
        assert_eq!(densest, densest_window(&delays, width));
        assert!(densest <= limit, "retry {retry:?}: {densest} in 100 ms");
        assert!(densest >= 50, "sanity: {densest}");
        assert_eq!(narrow, 4);
        assert!(worst <= limit, "retry {retry:?}: {worst} in the worst case");
    }
    // Without the herd rule the plain 250 ms window would crowd them.
    let mut drops = RecentDrops::new();
    let mut plain: Vec<Duration> = (0..1000u64)
        .map(|seed| {
            let mut s = stream(seed);
            s.want(t0);
            wait_of(s.on_failure(Failure::ConnectFailed, None, &mut drops, t0)) - t0
        })
        .collect();
    plain.sort();
    assert!(densest_window(&plain, width) > 300);
}

#[test]
fn seeded_herds_keep_every_100ms_under_15_percent_at_every_base() {
    // At most ⌈2 s / base⌉ − 1 streams of a herd draw from a narrower window
    // (19 at the smallest base): even if all of them land in the densest
    // 100 ms of the rest, the bound holds.
    let t0 = Instant::now();
    let mut worst_share = 0;
    for base in [100, 130, 250, 260, 400, 500] {
        let cfg = ReconnectConfig {
            base: ms(base),
            ..ReconnectConfig::default()
        };
        let most_narrow = HERD_SPREAD.as_millis().div_ceil(base as u128) as usize - 1;
        for herd in 1..=20 {
            let (densest, narrow, worst) = herd_density(&drop_herd(&cfg, herd, None, t0));
            assert!(narrow <= most_narrow, "base {base}, herd {herd}: {narrow}");
            assert!(worst <= 150, "base {base}, herd {herd}: {worst} of 1,000");
            worst_share = worst_share.max(densest);
        }
    }
    eprintln!("densest 100 ms over 120 seeded herds: {worst_share} of 1,000");
}
