//! Unit tests of [`SseStream`]: backoff bounds, the server's `retry:` and
//! `Retry-After` floors, the give-up budget, dedupe across reconnects, the
//! statuses, and the spread of a herd of streams dropped together.

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
    let until = wait_of(s.on_failure(kind, None, now));
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
    // The herd spread is for lost open streams; a failed first connect
    // retries within `base`.
    let t0 = Instant::now();
    for seed in 0..200 {
        let mut s = stream(seed);
        s.want(t0);
        let until = wait_of(s.on_failure(Failure::Timeout, None, t0));
        assert!(until - t0 <= ms(250), "seed {seed}");
        assert_eq!(s.attempt(), 1);
    }
}

#[test]
fn a_received_message_resets_the_backoff() {
    let t0 = Instant::now();
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
    let until = wait_of(s.on_failure(Failure::ConnectFailed, None, now));
    assert!(until - now <= ms(250));
    assert_eq!(s.attempt(), 1);
    // ...and a drop of an open stream at the herd window (2 s), not at
    // attempt 6's 16 s.
    s.on_timer(until);
    s.on_connected(until);
    assert!(s.on_event(Some("2"), None, until));
    let next = wait_of(s.on_failure(Failure::Dropped, None, until));
    assert!(next - until <= HERD_SPREAD);
    assert_eq!(s.attempt(), 4, "skipped to base·2³ = 2 s, then drew");
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
        let mut s = stream(seed);
        opened(&mut s, t0);
        assert!(s.on_event(Some("p"), Some(3000), t0));
        let drop_at = t0 + secs(1);
        let until = wait_of(s.on_failure(Failure::Dropped, None, drop_at));
        assert!(until >= drop_at + secs(3), "seed {seed}");
        assert!(until <= drop_at + secs(3) + HERD_SPREAD, "seed {seed}");
        assert_eq!(s.on_timer(until - ms(1)), vec![]);
        assert_eq!(s.on_timer(until), connect(Some("p")));
    }
}

#[test]
fn retry_after_7_is_obeyed_and_large_values_are_capped() {
    let t0 = Instant::now();
    let ra = parse_retry_after("7", SystemTime::now());
    assert_eq!(ra, Some(secs(7)));
    for seed in 0..100 {
        let mut s = stream(seed);
        s.want(t0);
        let until = wait_of(s.on_failure(Failure::Status(503), ra, t0));
        assert!(until >= t0 + secs(7) && until <= t0 + secs(7) + ms(250));
        assert_eq!(s.on_timer(until - ms(1)), vec![]);
        assert_eq!(s.on_timer(until), connect(None));
    }
    let mut s = stream(9);
    s.want(t0);
    let until = wait_of(s.on_failure(Failure::Status(429), Some(secs(3600)), t0));
    assert!(until >= t0 + secs(30) && until <= t0 + secs(30) + ms(250));
}
#[test]
fn gives_up_when_the_next_attempt_would_start_past_max_elapsed() {
    let t0 = Instant::now();
    let max = ReconnectConfig::default().max_elapsed;
    let mut s = stream(4);
    s.want(t0);
    // The run starts at t0 and runs on until well into the budget.
    let mut now = t0;
    while now - t0 < secs(200) {
        now = fail_and_retry(&mut s, Failure::ConnectFailed, now).1;
    }
    // A twin draws the same delay, so we can place the failure so that
    // the attempt lands exactly on the deadline...
    let delay = wait_of(s.clone().on_failure(Failure::ConnectFailed, None, now)) - now;
    let deadline = t0 + max;
    let at = deadline - delay;
    let mut exact = s.clone();
    assert_eq!(
        exact.on_failure(Failure::ConnectFailed, None, at),
        vec![Action::Wait(deadline)]
    );
    // ...or one microsecond past it: give up at the failure.
    let mut late = s.clone();
    assert_eq!(
        late.on_failure(Failure::ConnectFailed, None, at + Duration::from_micros(1)),
        vec![Action::GiveUp]
    );
    assert_eq!(late.state(), &StreamState::GaveUp);
    assert_eq!(late.want(at), vec![], "a give-up is final until stop");
    // Failing on and on, a stream never gets an attempt past the deadline
    // and gives up before it.
    let mut last = now;
    loop {
        match s.on_failure(Failure::ConnectFailed, None, last).as_slice() {
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
    let mut s = stream(5);
    opened(&mut s, t0);
    let mut now = t0;
    for i in 0..2000u32 {
        // Each connection delivers one event, then the server drops it.
        assert!(s.on_event(Some(&i.to_string()), None, now));
        let until = wait_of(s.on_failure(Failure::Dropped, None, now + ms(10)));
        assert_eq!(s.on_timer(until), connect(Some(&i.to_string())));
        s.on_connected(until);
        now = until;
    }
    assert!(now - t0 > secs(900), "ran three budgets: {:?}", now - t0);
}

#[test]
fn a_quiet_stream_that_lived_cap_is_not_a_failure_run() {
    // A GET stream with nothing to say, cut by an idle timeout every 40 s.
    let t0 = Instant::now();
    let mut s = stream(6);
    opened(&mut s, t0);
    let mut now = t0;
    while now - t0 < secs(1200) {
        let until = wait_of(s.on_failure(Failure::Dropped, None, now + secs(40)));
        assert!(until - (now + secs(40)) <= HERD_SPREAD);
        s.on_timer(until);
        s.on_connected(until);
        now = until;
    }
}

#[test]
fn a_server_that_accepts_then_drops_backs_off_and_is_given_up() {
    let t0 = Instant::now();
    let mut s = stream(7);
    opened(&mut s, t0);
    let mut now = t0;
    let mut delays = Vec::new();
    loop {
        match s.on_failure(Failure::Dropped, None, now + ms(5)).as_slice() {
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
    let mut s = stream(8);
    opened(&mut s, t0);
    let mut delivered = Vec::new();
    for id in ["1", "2", "3", "4", "5"] {
        if s.on_event(Some(id), None, t0) {
            delivered.push(id);
        }
    }
    let until = wait_of(s.on_failure(Failure::Dropped, None, t0 + ms(50)));
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
    let mut s = stream(10);
    opened(&mut s, t0);
    assert!(s.on_event(Some("a"), None, t0));
    assert!(s.on_event(Some("b"), None, t0));
    let until = wait_of(s.on_failure(Failure::Dropped, None, t0));
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
    let mut s = stream(11);
    opened(&mut s, t0);
    assert!(s.on_event(Some("9"), None, t0));
    assert!(s.on_event(Some(""), None, t0));
    assert!(
        s.on_event(Some(""), None, t0),
        "empty ids are not remembered"
    );
    assert_eq!(s.last_event_id(), None);
    let until = wait_of(s.on_failure(Failure::Dropped, None, t0));
    assert_eq!(s.on_timer(until), connect(None));
}

#[test]
fn want_is_idempotent_in_every_active_state() {
    let t0 = Instant::now();
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
    let until = wait_of(s.on_failure(Failure::Dropped, None, t0));
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
    let mut s = stream(13);
    s.want(t0);
    assert_eq!(
        s.on_failure(Failure::Status(404), None, t0),
        vec![Action::GiveUp]
    );
    assert_eq!(s.state(), &StreamState::GaveUp);
    assert_eq!(s.on_failure(Failure::Dropped, None, t0), vec![]);
    assert_eq!(s.on_timer(t0 + secs(60)), vec![]);
}

#[test]
fn status_405_means_no_get_stream_and_goes_idle_for_good() {
    let t0 = Instant::now();
    let mut s = stream(14);
    s.want(t0);
    assert_eq!(s.on_failure(Failure::Status(405), None, t0), vec![]);
    assert_eq!(s.state(), &StreamState::Idle);
    assert_eq!(s.attempt(), 0);
    assert_eq!(s.want(t0 + secs(1)), vec![], "asking again would get 405");
    assert_eq!(s.on_timer(t0 + secs(1)), vec![]);
}

#[test]
fn other_4xx_give_up_and_transient_statuses_back_off() {
    let t0 = Instant::now();
    for status in [400, 401, 403, 410, 421, 301, 204] {
        let mut s = stream(15);
        s.want(t0);
        assert_eq!(
            s.on_failure(Failure::Status(status), None, t0),
            vec![Action::GiveUp],
            "{status}"
        );
    }
    for status in [408, 429, 500, 502, 503, 504] {
        let mut s = stream(15);
        s.want(t0);
        let until = wait_of(s.on_failure(Failure::Status(status), None, t0));
        assert!(until - t0 <= ms(250), "{status}");
    }
}

#[test]
fn stale_reports_change_nothing() {
    let t0 = Instant::now();
    let mut s = stream(16);
    assert_eq!(s.on_timer(t0), vec![]);
    assert_eq!(s.on_failure(Failure::Dropped, None, t0), vec![]);
    s.on_connected(t0);
    assert_eq!(s.state(), &StreamState::Idle);
    s.want(t0);
    let until = wait_of(s.on_failure(Failure::ConnectFailed, None, t0));
    assert_eq!(s.on_failure(Failure::Dropped, None, t0), vec![]);
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

#[test]
fn a_thousand_streams_dropped_together_spread_their_reconnects() {
    // Their upstream restarted: every open stream drops at t0.
    let t0 = Instant::now();
    let width = ms(100);
    let limit = 150; // 15% of 1,000
    for retry in [None, Some(2000)] {
        let mut delays: Vec<Duration> = (0..1000u64)
            .map(|seed| {
                let mut s = stream(seed);
                opened(&mut s, t0 - secs(60));
                s.on_event(Some("e"), retry, t0 - secs(1));
                wait_of(s.on_failure(Failure::Dropped, None, t0)) - t0
            })
            .collect();
        delays.sort();
        let floor = ms(retry.unwrap_or(0));
        assert!(delays[0] >= floor);
        let mut buckets = [0usize; 20];
        for d in &delays {
            buckets[((*d - floor).as_millis() / 100).min(19) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n <= limit), "{buckets:?}");
        let densest = densest_window(&delays, width);
        assert!(densest <= limit, "retry {retry:?}: {densest} in 100 ms");
        assert!(densest >= 50, "sanity: {densest}");
    }
    // Without the herd rule the plain 250 ms window would crowd them.
    let mut plain: Vec<Duration> = (0..1000u64)
        .map(|seed| {
            let mut s = stream(seed);
            s.want(t0);
            wait_of(s.on_failure(Failure::ConnectFailed, None, t0)) - t0
        })
        .collect();
    plain.sort();
    assert!(densest_window(&plain, width) > 300);
}
