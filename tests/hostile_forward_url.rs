//! `mcp-relay forward --url URL` against the hostile HTTP upstream
//! (`common::hostile`), issue 11 ("Isolation and bounds"):
//!
//! - class 3 (upstream side) and 5: a GET stream flooded with events must
//!   not grow the relay's memory without bound nor starve the rest of the
//!   loop: a fresh request is answered within 1 s throughout;
//! - class 6: a GET refused with a 4xx other than 404 means "no GET
//!   stream", not "make a new session"; a 404, or a `Retry-After` past
//!   `--reconnect-max-elapsed`, re-initializes only through the backoff;
//! - class 2: pretty-printed JSON bodies and multi-line SSE `data:` reach
//!   the host as one line per message, each answered once;
//! - class 12: a reply that is not UTF-8 (a JSON body, an SSE event on the
//!   POST or on the GET stream) answers its request `invalid_reply` at
//!   once, and a notification that is not UTF-8 never reaches the host.
//!
//! The test is the host (stdin/stdout); every wait is bounded.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::fake::{Req, summaries};
use common::hostile::{Attack, Hostile};
use common::relay::{Recv, Relay};
use common::{SHORT, call, echo_text, error_kind, rss_kib};

/// How long each flood is watched.
const FLOOD_FOR: Duration = Duration::from_secs(3);

/// The relay's resident memory may not pass this under a flood (KiB). Its
/// own caps allow about 1.3 MiB of queued output plus one read budget; the
/// rest is the binary, the allocator and the kernel's view of them.
const RSS_BOUND_KIB: u64 = 32 * 1024;

/// A fresh request must be answered within this, flood or not.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

fn relay_for(h: &Hostile, extra: &[&str]) -> Relay {
    Relay::forward()
        .args(["--url", &h.url()])
        .args(["--log-level", "info"])
        .args(extra)
        .start()
}

/// Reads stdout until the response to `id`, skipping the server's
/// notifications (the flood); panics if it does not come within `within`.
fn answer_among_flood(relay: &mut Relay, id: &Value, within: Duration) -> (Value, usize) {
    let deadline = Instant::now() + within;
    let mut skipped = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match relay.recv(left) {
            Recv::Msg(v) if v.get("id") == Some(id) && v.get("method").is_none() => {
                relay.raw_stdout.clear();
                return (v, skipped);
            }
            Recv::Msg(_) => {
                skipped += 1;
                if relay.raw_stdout.len() > 4096 {
                    relay.raw_stdout.clear();
                }
            }
            other => panic!(
                "the response to {id} not within {within:?} ({skipped} other messages): {other:?}\n{}",
                relay.stderr_tail(40)
            ),
        }
    }
}

/// Reads and drops stdout for `d`: the host keeps up with the flood.
fn drain_for(relay: &mut Relay, d: Duration) -> usize {
    let until = Instant::now() + d;
    let mut n = 0;
    while Instant::now() < until {
        match relay.recv(Duration::from_millis(20)) {
            Recv::Msg(_) => n += 1,
            Recv::Timeout => {}
            Recv::Eof => panic!("stdout closed\n{}", relay.stderr_tail(40)),
        }
    }
    relay.raw_stdout.clear();
    n
}

fn gets(seen: &[Req]) -> usize {
    seen.iter().filter(|r| r.method == "GET").count()
}

fn initializes(seen: &[Req]) -> usize {
    seen.iter().filter(|r| r.is_post_of("initialize")).count()
}

/// Class 3 and 5: the upstream floods its GET stream. The relay reads a
/// bounded amount per turn (fairness) and not at all while the host's
/// queue is full (backpressure), so its memory stays bounded and a fresh
/// request is answered within 1 s all along.
#[test]
fn class5_get_flood_keeps_memory_bounded_and_fresh_requests_answered() {
    let _flood = common::one_flood_at_a_time();
    let h = Hostile::start(Attack::GetFlood);
    let mut relay = relay_for(&h, &[]);
    relay.handshake();
    h.fake.wait_for("the GET stream", SHORT, |r| {
        r.iter().any(|q| q.method == "GET")
    });
    let pid = relay.pid as u32;
    let (rss0, _) = rss_kib(pid).expect("relay alive");
    let started = Instant::now();
    let mut answered = 0;
    let mut flood = 0;
    let mut slowest = Duration::ZERO;
    let mut peak_now = rss0;
    while started.elapsed() < FLOOD_FOR {
        flood += drain_for(&mut relay, Duration::from_millis(150));
        let id = json!(format!("fresh-{answered}"));
        let t0 = Instant::now();
        relay.send(&call(id.clone(), "fresh"));
        let (reply, skipped) = answer_among_flood(&mut relay, &id, ANSWER_WITHIN);
        slowest = slowest.max(t0.elapsed());
        flood += skipped;
        assert_eq!(echo_text(&reply), Some("fresh"), "{reply}");
        answered += 1;
        let (now, _) = rss_kib(pid).expect("relay alive");
        peak_now = peak_now.max(now);
    }
    let (_, hwm) = rss_kib(pid).expect("relay alive");
    eprintln!(
        "forward --url GET flood: {flood} flood messages relayed, {answered} fresh requests \
         answered (slowest {slowest:?}); relay RSS before {rss0} KiB, highest seen {peak_now} KiB, \
         peak (VmHWM) {hwm} KiB"
    );
    assert!(flood > 1000, "the flood did not flow: {flood} messages");
    assert!(
        hwm < RSS_BOUND_KIB,
        "relay peak RSS {hwm} KiB over {RSS_BOUND_KIB} KiB"
    );
}

/// Class 6: a GET refused with 400 or 403 means the server has no GET
/// stream: the relay asks once, logs it once, keeps its session and never
/// re-initializes for it.
#[test]
fn class6_get_refused_with_a_4xx_is_no_get_stream() {
    for status in [400u16, 403] {
        let h = Hostile::start(Attack::GetRefused(status));
        let mut relay = relay_for(&h, &["--reconnect-base", "100ms"]);
        relay.handshake();
        h.fake
            .wait_for("the GET", SHORT, |r| r.iter().any(|q| q.method == "GET"));
        thread::sleep(Duration::from_secs(2));
        relay.echo_ok(json!(1), "still served");
        let seen = h.seen();
        eprintln!(
            "GET refused {status}: {} upstream requests in 2 s ({} GET, {} initialize)",
            seen.len(),
            gets(&seen),
            initializes(&seen)
        );
        assert_eq!(gets(&seen), 1, "HTTP {status}:\n{}", summaries(&seen));
        assert_eq!(
            initializes(&seen),
            1,
            "HTTP {status}:\n{}",
            summaries(&seen)
        );
        let log = relay.stderr_text();
        assert_eq!(
            log.matches("has no GET stream").count(),
            1,
            "logged once:\n{log}"
        );
    }
}

/// Class 6: a GET answered 404 ends the session; the relay initializes a
/// new one, but through the backoff: a server that 404s every GET gets a
/// handful of new sessions in 3 s, not thousands.
#[test]
fn class6_get_404_reinitializes_only_through_the_backoff() {
    let h = Hostile::start(Attack::GetRefused(404));
    let mut relay = relay_for(&h, &["--reconnect-base", "100ms"]);
    relay.handshake();
    h.fake
        .wait_for("the GET", SHORT, |r| r.iter().any(|q| q.method == "GET"));
    let window = Duration::from_secs(3);
    thread::sleep(window);
    let seen = h.seen();
    let inits = initializes(&seen);
    eprintln!(
        "GET 404: {} upstream requests in {window:?} ({} GET, {inits} initialize)",
        seen.len(),
        gets(&seen),
    );
    // Full jitter from 100 ms doubling: the 10th new session is due after
    // ~50 s on average; 12 within 3 s has a probability below 1e-4.
    assert!(inits >= 2, "the session was re-created at least once");
    assert!(inits <= 12, "{inits} sessions in {window:?}");
    assert!(gets(&seen) <= inits, "one GET per session at most");
}

/// Class 6: `Retry-After` longer than `--reconnect-max-elapsed` makes the
/// GET stream give up; the new session waits the server's `Retry-After`
/// first, so 3 s see one session and one GET.
#[test]
fn class6_get_retry_after_past_the_budget_waits_it_out() {
    for status in [429u16, 503] {
        let h = Hostile::start(Attack::GetRetryAfter(status, 30));
        let mut relay = relay_for(
            &h,
            &["--reconnect-base", "100ms", "--reconnect-max-elapsed", "5s"],
        );
        relay.handshake();
        h.fake
            .wait_for("the GET", SHORT, |r| r.iter().any(|q| q.method == "GET"));
        thread::sleep(Duration::from_secs(3));
        relay.echo_ok(json!(1), "still served");
        let seen = h.seen();
        eprintln!(
            "GET {status} Retry-After 30: {} upstream requests in 3 s ({} GET, {} initialize)",
            seen.len(),
            gets(&seen),
            initializes(&seen)
        );
        assert!(gets(&seen) <= 2, "HTTP {status}:\n{}", summaries(&seen));
        assert!(
            initializes(&seen) <= 2,
            "HTTP {status}:\n{}",
            summaries(&seen)
        );
    }
}

/// Reads stdout until the response to `id` (keeping the other messages in
/// `others`), then for `quiet` more: a second response to `id` fails.
/// Every line must be one JSON-RPC message (`Relay::recv` panics on a line
/// that is not JSON), and no line may carry U+FFFD (bytes that were not
/// UTF-8, replaced on the way).
fn answered_once(relay: &mut Relay, id: &Value, others: &mut Vec<Value>) -> Value {
    let deadline = Instant::now() + SHORT;
    let mut answer = None;
    let mut quiet_until = None;
    loop {
        let now = Instant::now();
        let until = quiet_until.unwrap_or(deadline);
        if now >= until {
            break;
        }
        match relay.recv(until - now) {
            Recv::Msg(v) => {
                assert_eq!(v["jsonrpc"], "2.0", "not JSON-RPC: {v}");
                let is_answer = v.get("id") == Some(id) && v.get("method").is_none();
                if !is_answer {
                    others.push(v);
                    continue;
                }
                assert!(answer.is_none(), "{id} answered twice: {v}");
                answer = Some(v);
                quiet_until = Some(Instant::now() + Duration::from_millis(300));
            }
            Recv::Timeout => break,
            Recv::Eof => panic!("stdout closed\n{}", relay.stderr_tail(40)),
        }
    }
    for l in &relay.raw_stdout {
        assert!(
            !l.contains('\u{FFFD}'),
            "a line with bytes that were not UTF-8: {l:?}"
        );
        assert!(!l.contains('\r'), "a raw CR on stdout: {l:?}");
    }
    relay.raw_stdout.clear();
    answer.unwrap_or_else(|| {
        panic!(
            "no answer to {id} within {SHORT:?}\n{}",
            relay.stderr_tail(40)
        )
    })
}

/// A fresh request (text `fresh…`, which the hostile upstreams answer
/// well) is answered correctly within [`ANSWER_WITHIN`].
fn fresh_within_a_second(relay: &mut Relay, id: Value) {
    let t0 = Instant::now();
    relay.send(&call(id.clone(), "fresh"));
    let reply = answered_once(relay, &id, &mut Vec::new());
    let took = t0.elapsed();
    assert_eq!(echo_text(&reply), Some("fresh"), "{reply}");
    // `answered_once` watched 300 ms more for a second answer.
    assert!(
        took < ANSWER_WITHIN + Duration::from_millis(300),
        "the fresh request took {took:?}"
    );
}

/// Class 2: every reply is a JSON body pretty-printed with raw CRLF. The
/// host sees each as one line of JSON-RPC, once.
#[test]
fn class2_pretty_json_bodies_reach_the_host_as_one_line_each() {
    let h = Hostile::start(Attack::PrettyJsonBody);
    let mut relay = relay_for(&h, &[]);
    relay.handshake();
    for n in 1..=3 {
        relay.send(&call(json!(n), "pretty"));
        let reply = answered_once(&mut relay, &json!(n), &mut Vec::new());
        assert_eq!(echo_text(&reply), Some("pretty"), "{reply}");
    }
    fresh_within_a_second(&mut relay, json!("fresh"));
}

/// Class 2: every reply is an SSE event whose JSON spans several `data:`
/// lines, and the GET stream opens with a notification split the same way.
/// The host sees each message as one line of JSON-RPC, replies once.
#[test]
fn class2_multi_line_sse_data_reaches_the_host_as_one_line_each() {
    let h = Hostile::start(Attack::MultiLineSseData);
    let mut relay = relay_for(&h, &[]);
    relay.handshake();
    let mut others = Vec::new();
    for n in 1..=3 {
        relay.send(&call(json!(n), "split"));
        let reply = answered_once(&mut relay, &json!(n), &mut others);
        assert_eq!(echo_text(&reply), Some("split"), "{reply}");
    }
    fresh_within_a_second(&mut relay, json!("fresh"));
    let notes: Vec<&Value> = others
        .iter()
        .filter(|v| v["params"]["data"] == "multi-line")
        .collect();
    assert_eq!(notes.len(), 1, "the GET stream's notification: {others:?}");
}

/// Class 12: the reply to a call is a JSON body with a byte that is not
/// UTF-8. The request is answered `invalid_reply` at once, and only that.
#[test]
fn class12_invalid_utf8_json_body_answers_invalid_reply() {
    let h = Hostile::start(Attack::InvalidUtf8Body);
    let mut relay = relay_for(&h, &["--response-timeout", "5s"]);
    relay.handshake();
    for n in 1..=3 {
        let t0 = Instant::now();
        relay.send(&call(json!(n), "attack"));
        let reply = answered_once(&mut relay, &json!(n), &mut Vec::new());
        assert_eq!(error_kind(&reply), Some("invalid_reply"), "{reply}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    fresh_within_a_second(&mut relay, json!("fresh"));
}

/// Class 12: replies come as SSE events with a byte that is not UTF-8, on
/// the POST's stream or (`on-get`) on the GET stream; the GET stream also
/// carries a notification that is not UTF-8. Each request is answered
/// `invalid_reply` at once, the invalid notification never reaches the
/// host, the valid one after it does.
#[test]
fn class12_invalid_utf8_sse_answers_invalid_reply() {
    let h = Hostile::start(Attack::InvalidUtf8Sse);
    let mut relay = relay_for(&h, &["--response-timeout", "5s"]);
    relay.handshake();
    let mut others = Vec::new();
    for (n, text) in [(1, "attack"), (2, "on-get"), (3, "attack"), (4, "on-get")] {
        let t0 = Instant::now();
        relay.send(&call(json!(n), text));
        let reply = answered_once(&mut relay, &json!(n), &mut others);
        assert_eq!(error_kind(&reply), Some("invalid_reply"), "{text}: {reply}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    fresh_within_a_second(&mut relay, json!("fresh"));
    let (now, hwm) = rss_kib(relay.pid as u32).expect("relay alive");
    eprintln!("forward --url, SSE not UTF-8: relay RSS {now} KiB, peak (VmHWM) {hwm} KiB");
    assert!(hwm < RSS_BOUND_KIB, "relay peak RSS {hwm} KiB");
    let data: Vec<&Value> = others.iter().map(|v| &v["params"]["data"]).collect();
    assert_eq!(data, [&json!("after-invalid")], "notifications: {others:?}");
    let log = relay.stderr_text();
    assert!(log.contains("invalid UTF-8"), "no log line:\n{log}");
}
