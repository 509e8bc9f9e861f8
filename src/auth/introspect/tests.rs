//! The introspection cache and decisions on a fake clock.

use super::*;
use serde_json::json;

const ISS: &str = "https://as.example";
const AUD: &str = "https://relay.example/mcp";
const UNIX: u64 = 1_800_000_000;

fn policy() -> Policy {
    Policy {
        issuer: ISS.into(),
        audience: AUD.into(),
        scopes: vec!["mcp".into()],
        skew: 60,
    }
}

fn limits() -> Limits {
    Limits {
        max_age: Duration::from_secs(300),
        cache_entries: 3,
        max_inflight: 2,
        max_held: 5,
        down_for: Duration::from_secs(1),
    }
}

fn active(sub: &str, exp: u64) -> Vec<u8> {
    json!({"active": true, "iss": ISS, "aud": [AUD, "other"], "sub": sub,
           "scope": "mcp extra", "exp": exp})
    .to_string()
    .into_bytes()
}

/// Admits `token` for `waiter`, expecting a new introspection; answers it.
fn introspect(i: &mut Introspector, token: &str, body: &[u8], now: Instant) -> Finished {
    assert_eq!(i.admit(token, 1, now), Admit::Held);
    let s = i.next_start().expect("an introspection to send");
    assert_eq!(s.key, key_of(token));
    i.on_response(&s.key, 200, body, &policy(), UNIX, now)
}

#[test]
fn the_request_body_encodes_the_token_and_credentials_are_basic() {
    let t0 = Instant::now();
    let mut i = Introspector::new(limits());
    assert_eq!(i.admit("a b+c/=", 7, t0), Admit::Held);
    let s = i.next_start().unwrap();
    assert_eq!(
        String::from_utf8(s.body).unwrap(),
        "token=a%20b%2Bc%2F%3D&token_type_hint=access_token"
    );
    assert!(i.next_start().is_none());
    // RFC 6749 §2.3.1: form-encoded, then base64 (standard alphabet).
    assert_eq!(
        basic_credentials("id:1", "p w"),
        format!("Basic {}", crate::auth::b64::encode_std(b"id%3A1:p%20w"))
    );
}

#[test]
fn an_active_token_is_cached_until_its_exp_or_max_age() {
    let t0 = Instant::now();
    let mut i = Introspector::new(limits());
    // exp in 100 s: cached 100 s, not the 300 s cap.
    let f = introspect(&mut i, "tok", &active("alice", UNIX + 100), t0);
    let want = Answer::Valid {
        principal: crate::auth::principal(ISS, "alice"),
    };
    assert_eq!(f.result, Ok(want));
    assert_eq!(f.waiters, vec![1]);
    assert_eq!(
        i.admit("tok", 2, t0 + Duration::from_secs(99)),
        Admit::Decided(want)
    );
    assert!(i.next_start().is_none(), "a hit sends nothing");
    assert_eq!(
        i.admit("tok", 3, t0 + Duration::from_secs(100)),
        Admit::Held
    );
    assert!(i.next_start().is_some(), "expired: introspected again");

    // exp a day away: the cap (300 s) applies.
    let mut i = Introspector::new(limits());
    introspect(&mut i, "tok", &active("alice", UNIX + 86_400), t0);
    assert_eq!(
        i.admit("tok", 2, t0 + Duration::from_secs(299)),
        Admit::Decided(want)
    );
    assert_eq!(
        i.admit("tok", 3, t0 + Duration::from_secs(300)),
        Admit::Held
    );
    assert_eq!(i.stats.cache_hits, 1);
}

#[test]
fn refusals_are_cached_at_most_a_minute_and_zero_max_age_caches_nothing() {
    let t0 = Instant::now();
    let mut i = Introspector::new(limits());
    let f = introspect(&mut i, "gone", br#"{"active": false}"#, t0);
    assert_eq!(f.result, Ok(Answer::Invalid(Reason::Inactive)));
    assert_eq!(
        i.admit("gone", 2, t0 + Duration::from_secs(59)),
        Admit::Decided(Answer::Invalid(Reason::Inactive))
    );
    assert_eq!(
        i.admit("gone", 2, t0 + Duration::from_secs(60)),
        Admit::Held
    );
    assert_eq!((i.stats.inactive, i.stats.active), (1, 0));

    let mut l = limits();
    l.max_age = Duration::ZERO;
    let mut i = Introspector::new(l);
    introspect(&mut i, "tok", &active("alice", UNIX + 100), t0);
    assert_eq!(i.cached(), 0);
    assert_eq!(i.admit("tok", 2, t0), Admit::Held);
}

#[test]
fn claims_are_checked_like_a_jwts() {
    let t0 = Instant::now();
    let cases = [
        (
            json!({"active": true, "iss": ISS, "aud": "https://other/mcp", "sub": "a", "scope": "mcp"}),
            Answer::Invalid(Reason::WrongAudience),
        ),
        (
            json!({"active": true, "iss": ISS, "sub": "a", "scope": "mcp"}),
            Answer::Invalid(Reason::WrongAudience),
        ),
        (
            json!({"active": true, "iss": "https://evil", "aud": AUD, "sub": "a", "scope": "mcp"}),
            Answer::Invalid(Reason::WrongIssuer),
        ),
        (
            json!({"active": true, "iss": ISS, "aud": AUD, "sub": "a", "scope": "mcp", "exp": UNIX - 61}),
            Answer::Invalid(Reason::Expired),
        ),
        (
            json!({"active": true, "iss": ISS, "aud": AUD, "sub": "a", "scope": "mcp", "nbf": UNIX + 61}),
            Answer::Invalid(Reason::NotYetValid),
        ),
        (
            json!({"active": true, "iss": ISS, "aud": AUD, "scope": "mcp"}),
            Answer::Invalid(Reason::NoSubject),
        ),
        (
            json!({"active": true, "iss": ISS, "aud": AUD, "sub": "a", "scope": "other"}),
            Answer::InsufficientScope,
        ),
        // iss and exp may be left out of an introspection answer.
        (
            json!({"active": true, "aud": AUD, "sub": "a", "scope": "mcp"}),
            Answer::Valid {
                principal: crate::auth::principal(ISS, "a"),
            },
        ),
    ];
    for (body, want) in cases {
        let mut i = Introspector::new(limits());
        let f = introspect(&mut i, "t", body.to_string().as_bytes(), t0);
        assert_eq!(f.result, Ok(want), "{body}");
    }
}

#[test]
fn concurrent_requests_share_one_introspection_and_all_get_its_answer() {
    let t0 = Instant::now();
    let mut i = Introspector::new(limits());
    for w in 1..=4 {
        assert_eq!(i.admit("tok", w, t0), Admit::Held);
    }
    let s = i.next_start().unwrap();
    assert!(
        i.next_start().is_none(),
        "one introspection for four requests"
    );
    assert_eq!(i.held(), 4);
    i.forget(3);
    assert_eq!(i.held(), 3);
    let f = i.on_response(&s.key, 200, &active("bob", UNIX + 60), &policy(), UNIX, t0);
    let mut w = f.waiters;
    w.sort();
    assert_eq!(w, vec![1, 2, 4]);
    assert_eq!(i.held(), 0);
}

#[test]
fn failures_are_not_cached_and_unknown_tokens_wait_out_the_down_time() {
    let t0 = Instant::now();
    let mut i = Introspector::new(limits());
    i.admit("tok", 1, t0);
    i.admit("tok", 2, t0);
    let s = i.next_start().unwrap();
    let f = i.on_response(&s.key, 500, b"", &policy(), UNIX, t0);
    assert!(f.result.as_ref().is_err_and(|e| e.contains("500")), "{f:?}");
    assert_eq!(f.waiters.len(), 2);
    // For down_for: 503 at once, nothing sent.
    assert_eq!(i.admit("tok", 3, t0), Admit::Busy("endpoint_down"));
    assert_eq!(
        i.admit("tok", 3, t0 + Duration::from_millis(999)),
        Admit::Busy("endpoint_down")
    );
    assert!(i.next_start().is_none());
    // Then tried again, and a good answer clears the down state.
    assert_eq!(i.admit("tok", 4, t0 + Duration::from_secs(1)), Admit::Held);
    let s = i.next_start().unwrap();
    let t1 = t0 + Duration::from_secs(1);
    assert!(
        i.on_response(&s.key, 200, &active("a", UNIX + 60), &policy(), UNIX, t1)
            .result
            .is_ok()
    );
    for bad in [&b"not json"[..], b"[]", br#"{"active": "yes"}"#] {
        i.admit("other", 5, t1);
        let s = i.next_start().unwrap();
        let f = i.on_response(&s.key, 200, bad, &policy(), UNIX, t1);
        assert!(f.result.is_err(), "{bad:?}");
        assert_eq!(i.cached(), 1, "a bad answer is not cached");
        i.down_until = None;
    }
    let f = i.on_failure(&key_of("nobody"), "connect failed", t1);
    assert!(f.waiters.is_empty());
    assert_eq!(i.stats.error, 5);
}

#[test]
fn held_and_in_flight_bounds_answer_busy() {
    let t0 = Instant::now();
    let mut i = Introspector::new(limits());
    assert_eq!(i.admit("a", 1, t0), Admit::Held);
    assert_eq!(i.admit("b", 2, t0), Admit::Held);
    // Two tokens in flight (max_inflight 2): a third waits for nothing.
    assert_eq!(i.admit("c", 3, t0), Admit::Busy("in_flight"));
    // A known pending token may still be joined, up to max_held (5).
    assert_eq!(i.admit("a", 4, t0), Admit::Held);
    assert_eq!(i.admit("a", 5, t0), Admit::Held);
    assert_eq!(i.admit("b", 6, t0), Admit::Held);
    assert_eq!(i.admit("a", 7, t0), Admit::Busy("held"));
    assert_eq!(i.held(), 5);
    let mut out = String::new();
    i.render(&mut out);
    assert!(
        out.contains("mcp_relay_oauth_introspection_held 5\n"),
        "{out}"
    );
    assert!(
        out.contains("mcp_relay_oauth_introspection_busy_total{bound=\"held\"} 1\n"),
        "{out}"
    );
    assert!(
        out.contains("mcp_relay_oauth_introspection_busy_total{bound=\"in_flight\"} 1\n"),
        "{out}"
    );
}

#[test]
fn the_cache_is_bounded_and_pushes_out_the_least_recently_used() {
    let t0 = Instant::now();
    let mut i = Introspector::new(limits());
    for t in ["a", "b", "c"] {
        introspect(&mut i, t, &active(t, UNIX + 300), t0);
    }
    // "a" used again: "b" is now the least recently used.
    assert!(matches!(i.admit("a", 9, t0), Admit::Decided(_)));
    introspect(&mut i, "d", &active("d", UNIX + 300), t0);
    assert_eq!(i.cached(), 3);
    assert_eq!(i.stats.evictions, 1);
    assert!(matches!(i.admit("a", 9, t0), Admit::Decided(_)));
    assert!(matches!(i.admit("c", 9, t0), Admit::Decided(_)));
    assert!(matches!(i.admit("d", 9, t0), Admit::Decided(_)));
    assert_eq!(i.admit("b", 9, t0), Admit::Held, "b was pushed out");
    let mut out = String::new();
    i.render(&mut out);
    assert!(
        out.contains("mcp_relay_oauth_introspection_cache_entries 3\n"),
        "{out}"
    );
    assert!(
        out.contains("mcp_relay_oauth_introspections_total{outcome=\"active\"} 4\n"),
        "{out}"
    );
}

/// Many hits leave stale positions in the recency list: they are dropped
/// before they outgrow the cache, and eviction still takes the least
/// recently used entry, never one that was used since.
#[test]
fn the_recency_list_stays_bounded_under_hits_and_keeps_its_order() {
    let t0 = Instant::now();
    let mut i = Introspector::new(limits());
    for t in ["a", "b", "c"] {
        introspect(&mut i, t, &active(t, UNIX + 300), t0);
    }
    for n in 0..1000 {
        // "b" last: the order of use is c, a, b.
        for t in ["c", "a", "b"] {
            assert!(matches!(i.admit(t, n, t0), Admit::Decided(_)));
        }
        assert!(i.lru.len() <= 2 * i.cached() + LRU_SLACK, "{}", i.lru.len());
    }
    introspect(&mut i, "d", &active("d", UNIX + 300), t0);
    assert_eq!(i.stats.evictions, 1);
    assert_eq!(
        i.admit("c", 9, t0),
        Admit::Held,
        "c was the least recently used"
    );
    for t in ["a", "b", "d"] {
        assert!(matches!(i.admit(t, 9, t0), Admit::Decided(_)), "{t}");
    }
}
