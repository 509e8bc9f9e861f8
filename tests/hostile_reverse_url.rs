//! `mcp-relay reverse --url URL` (and `--config` with a URL upstream beside
//! a stdio one) against the hostile HTTP upstream (`common::hostile`),
//! issue 11 ("Isolation and bounds"):
//!
//! - class 3 (upstream side) and 5: a flooded GET stream must not grow the
//!   relay's memory without bound (a client that does not read its stream
//!   pushes back on the upstream) nor starve the other upstreams and
//!   sessions: a fresh session is answered within 1 s throughout;
//! - class 6: a GET refused with a 4xx other than 404 means "no GET
//!   stream": the session goes on;
//! - class 2: pretty-printed JSON bodies and multi-line SSE `data:` reach
//!   the client as valid JSON-RPC, each request answered once;
//! - class 12: a reply that is not UTF-8 (a JSON body, an SSE event on the
//!   POST or on the GET stream) answers its request `invalid_reply` at
//!   once, and a notification that is not UTF-8 never reaches the client;
//!   both are counted (`limit="invalid_utf8"`).
//!
//! The test is the HTTP client; every wait is bounded.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::fake::summaries;
use common::hostile::{Attack, Hostile};
use common::http::{Http, IO, Response, Sse, SseNext, mcp_headers, post, post_on};
use common::relay::Relay;
use common::{SHORT, call, echo_server, echo_text, error_kind, initialize, initialized, rss_kib};

/// How long each flood is watched.
const FLOOD_FOR: Duration = Duration::from_secs(3);

/// The relay's resident memory may not pass this under a flood (KiB): a
/// paused stream holds at most about 1 MiB of client output plus one read
/// budget; the rest is the binary, the allocator and the kernel's view.
const RSS_BOUND_KIB: u64 = 32 * 1024;

/// A fresh session must be answered within this, flood or not.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// `initialize` on a new connection to `target`; returns the connection and
/// the session id, and asserts the answer came within [`ANSWER_WITHIN`].
fn fresh_session(port: u16, target: &str) -> (Http, String, Duration) {
    let mut http = Http::connect(port);
    let body = serde_json::to_vec(&initialize(json!(0))).unwrap();
    let t0 = Instant::now();
    let r = http
        .try_request("POST", target, &mcp_headers(None), &body, ANSWER_WITHIN)
        .unwrap_or_else(|e| panic!("a fresh session on {target} not answered within 1 s: {e:?}"));
    let took = t0.elapsed();
    assert_eq!(r.status(), 200, "{r:?}");
    let sid = r.header("mcp-session-id").expect("session id").to_owned();
    (http, sid, took)
}

/// `notifications/initialized`, then the session's GET stream (its head
/// read, its body left to the caller).
fn open_stream(port: u16, target: &str, sid: &str, http: &mut Http) -> Sse {
    let body = serde_json::to_vec(&initialized()).unwrap();
    let ack = http
        .try_request("POST", target, &mcp_headers(Some(sid)), &body, IO)
        .expect("initialized");
    assert_eq!(ack.status(), 202, "{ack:?}");
    let mut get = Http::connect(port);
    let mut headers = mcp_headers(Some(sid));
    headers.retain(|(k, _)| *k != "Content-Type");
    headers.push(("Accept", "text/event-stream"));
    get.send_request("GET", target, &headers, b"")
        .expect("send GET");
    let head = get
        .read_head(Instant::now() + SHORT)
        .expect("GET stream head");
    Sse::open(get, head)
}

/// Class 3 and 5: session A's client opens its GET stream and never reads
/// it while the upstream floods that stream. The relay stops reading the
/// upstream connection once A's output holds its high-water mark, so its
/// memory stays bounded; fresh sessions and A's own requests are answered
/// within 1 s all along.
#[test]
fn class5_get_flood_to_a_client_that_does_not_read_is_pushed_back() {
    let _flood = common::one_flood_at_a_time();
    let h = Hostile::start(Attack::GetFlood);
    let relay = Relay::reverse("hostile")
        .args(["--url", &h.url(), "--log-level", "info"])
        .start();
    let port = relay.port;
    let (mut a, sa, _) = fresh_session(port, "/mcp");
    let _stream = open_stream(port, "/mcp", &sa, &mut a);
    h.fake.wait_for("the GET stream", SHORT, |r| {
        r.iter().any(|q| q.method == "GET")
    });
    let pid = relay.pid as u32;
    let (rss0, _) = rss_kib(pid).expect("relay alive");
    let started = Instant::now();
    let mut fresh = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < FLOOD_FOR {
        thread::sleep(Duration::from_millis(150));
        let (_b, _sb, took) = fresh_session(port, "/mcp");
        slowest = slowest.max(took);
        let t0 = Instant::now();
        let r = post_on(
            &mut a,
            Some(&sa),
            &call(json!(fresh + 1), "a still served"),
            &[],
            ANSWER_WITHIN,
        )
        .unwrap_or_else(|e| panic!("session A's call not answered within 1 s: {e:?}"));
        slowest = slowest.max(t0.elapsed());
        assert_eq!(echo_text(&r.rpc()), Some("a still served"), "{r:?}");
        fresh += 1;
    }
    let (now, hwm) = rss_kib(pid).expect("relay alive");
    eprintln!(
        "reverse --url GET flood, client not reading: {fresh} fresh sessions and calls answered \
         (slowest {slowest:?}); relay RSS before {rss0} KiB, after {now} KiB, peak (VmHWM) {hwm} KiB"
    );
    assert!(
        hwm < RSS_BOUND_KIB,
        "relay peak RSS {hwm} KiB over {RSS_BOUND_KIB} KiB"
    );
    let m = relay.metrics_text();
    let paused = m
        .lines()
        .find(|l| {
            l.starts_with("mcp_relay_http_upstream_limits_total") && l.contains("read_paused")
        })
        .unwrap_or_else(|| panic!("no read_paused sample in the metrics:\n{m}"));
    eprintln!("{paused}");
}

/// Class 3 and 5: session A sent `notifications/initialized` (so the relay
/// holds its upstream GET stream, which floods) but has no stream of its
/// own to deliver to. The relay keeps what it can for A's next GET and then
/// stops reading the upstream stream, rather than dropping message after
/// message (each with a log line); when A opens its stream it gets the kept
/// messages and the flood resumes.
#[test]
fn class5_get_flood_to_a_session_without_a_stream_is_pushed_back() {
    let _flood = common::one_flood_at_a_time();
    let h = Hostile::start(Attack::GetFlood);
    let relay = Relay::reverse("hostile")
        .args(["--url", &h.url(), "--log-level", "info"])
        .start();
    let port = relay.port;
    let (mut a, sa, _) = fresh_session(port, "/mcp");
    let ack = post(&mut a, Some(&sa), &initialized());
    assert_eq!(ack.status(), 202, "{ack:?}");
    h.fake.wait_for("the GET stream", SHORT, |r| {
        r.iter().any(|q| q.method == "GET")
    });
    let pid = relay.pid as u32;
    let started = Instant::now();
    let mut fresh = 0;
    while started.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(150));
        let _ = fresh_session(port, "/mcp");
        fresh += 1;
    }
    let dropped = relay
        .stderr_text()
        .matches("oldest kept message dropped")
        .count();
    let (now, hwm) = rss_kib(pid).expect("relay alive");
    eprintln!(
        "reverse --url GET flood, session without a stream: {fresh} fresh sessions answered; \
         {dropped} kept messages dropped; relay RSS {now} KiB, peak (VmHWM) {hwm} KiB"
    );
    assert!(dropped < 50, "{dropped} messages dropped one by one");
    assert!(hwm < RSS_BOUND_KIB, "relay peak RSS {hwm} KiB");
    // A's stream: what was kept, then the flood again.
    let mut get = Http::connect(port);
    let mut headers = mcp_headers(Some(&sa));
    headers.retain(|(k, _)| *k != "Content-Type");
    headers.push(("Accept", "text/event-stream"));
    get.send_request("GET", "/mcp", &headers, b"")
        .expect("send GET");
    let head = get.read_head(Instant::now() + SHORT).expect("GET head");
    let mut stream = Sse::open(get, head);
    for n in 0..1000 {
        match stream.next(SHORT) {
            SseNext::Event(_) => {}
            other => panic!("event {n} of A's stream: {other:?}"),
        }
    }
}

/// Class 5: `reverse --config` with the flooding URL upstream beside a
/// healthy stdio one. A client reads the flood as fast as it can (so the
/// relay keeps reading the upstream too); the loop still serves the stdio
/// upstream: a fresh session there is answered within 1 s all along.
#[test]
fn class5_get_flood_does_not_starve_a_stdio_upstream_beside_it() {
    let _flood = common::one_flood_at_a_time();
    let h = Hostile::start(Attack::GetFlood);
    let dir = std::env::temp_dir().join(format!("mcp-relay-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg_path = dir.join("relay.json");
    let echo = echo_server().to_str().expect("utf-8 path").to_string();
    let doc = json!({
        "upstreams": {
            "flood": {"url": h.url()},
            "echo": {"command": [echo]}
        }
    });
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&doc).unwrap()).expect("write config");
    let relay = Relay::reverse("config")
        .args([
            "--config",
            cfg_path.to_str().unwrap(),
            "--log-level",
            "info",
        ])
        .start();
    let port = relay.port;
    let (mut a, sa, _) = fresh_session(port, "/mcp/flood");
    let mut stream = open_stream(port, "/mcp/flood", &sa, &mut a);
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, events) = (stop.clone(), events.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match stream.next(Duration::from_millis(100)) {
                    SseNext::Event(_) => {
                        events.fetch_add(1, Ordering::Relaxed);
                    }
                    SseNext::Timeout => {}
                    SseNext::End | SseNext::Closed(_) => break,
                }
            }
        })
    };
    let pid = relay.pid as u32;
    let (rss0, _) = rss_kib(pid).expect("relay alive");
    let started = Instant::now();
    let mut fresh = 0;
    let mut slowest = Duration::ZERO;
    while started.elapsed() < FLOOD_FOR {
        thread::sleep(Duration::from_millis(150));
        let (mut b, sb, took) = fresh_session(port, "/mcp/echo");
        let t0 = Instant::now();
        let body = serde_json::to_vec(&call(json!(1), "echo beside the flood")).unwrap();
        let r = b
            .try_request(
                "POST",
                "/mcp/echo",
                &mcp_headers(Some(&sb)),
                &body,
                ANSWER_WITHIN,
            )
            .unwrap_or_else(|e| panic!("a call on the stdio upstream not answered in 1 s: {e:?}"));
        assert_eq!(echo_text(&r.rpc()), Some("echo beside the flood"), "{r:?}");
        slowest = slowest.max(took).max(t0.elapsed());
        fresh += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let _ = reader.join();
    let (now, hwm) = rss_kib(pid).expect("relay alive");
    let relayed = events.load(Ordering::Relaxed);
    eprintln!(
        "reverse --config GET flood beside stdio: {relayed} flood events relayed to a reading \
         client, {fresh} fresh stdio sessions answered (slowest {slowest:?}); relay RSS before \
         {rss0} KiB, after {now} KiB, peak (VmHWM) {hwm} KiB"
    );
    assert!(relayed > 1000, "the flood did not flow: {relayed} events");
    assert!(
        hwm < RSS_BOUND_KIB,
        "relay peak RSS {hwm} KiB over {RSS_BOUND_KIB} KiB"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Class 6: a GET refused with 400 or 403 means the upstream has no GET
/// stream: the session goes on (it is not ended, so its client is not sent
/// to initialize again), and the relay asks once.
#[test]
fn class6_get_refused_with_a_4xx_keeps_the_session() {
    for status in [400u16, 403] {
        let h = Hostile::start(Attack::GetRefused(status));
        let relay = Relay::reverse("hostile")
            .args(["--url", &h.url(), "--reconnect-base", "100ms"])
            .start();
        let (mut a, sa, _) = fresh_session(relay.port, "/mcp");
        let ack = post(&mut a, Some(&sa), &initialized());
        assert_eq!(ack.status(), 202, "{ack:?}");
        h.fake
            .wait_for("the GET", SHORT, |r| r.iter().any(|q| q.method == "GET"));
        thread::sleep(Duration::from_secs(1));
        let r = post(&mut a, Some(&sa), &call(json!(1), "still served"));
        assert_eq!(r.status(), 200, "HTTP {status}: {r:?}");
        assert_eq!(echo_text(&r.rpc()), Some("still served"), "{r:?}");
        let seen = h.seen();
        let gets = seen.iter().filter(|q| q.method == "GET").count();
        eprintln!(
            "reverse --url, GET refused {status}: {} upstream requests ({gets} GET)",
            seen.len()
        );
        assert_eq!(gets, 1, "HTTP {status}:\n{}", summaries(&seen));
    }
}

/// The one answer to `id` in a POST's response: the body is UTF-8 with no
/// U+FFFD (bytes that were not UTF-8, replaced on the way), every message
/// in it is JSON-RPC, and exactly one of them answers `id`.
fn answered_once(r: &Response, id: &Value) -> Value {
    assert_eq!(r.status(), 200, "{r:?}");
    let text =
        std::str::from_utf8(&r.body).unwrap_or_else(|e| panic!("body not UTF-8 ({e}): {r:?}"));
    assert!(!text.contains('\u{FFFD}'), "replaced bytes: {r:?}");
    let msgs: Vec<Value> = if r.head.is_sse() {
        r.events()
            .iter()
            .filter(|e| !e.data.is_empty())
            .map(|e| e.json())
            .collect()
    } else {
        vec![r.json()]
    };
    for m in &msgs {
        assert_eq!(m["jsonrpc"], "2.0", "not JSON-RPC: {m}");
    }
    let answers: Vec<&Value> = msgs
        .iter()
        .filter(|m| m.get("id") == Some(id) && m.get("method").is_none())
        .collect();
    assert_eq!(answers.len(), 1, "answers to {id}: {r:?}");
    answers[0].clone()
}

/// `mcp_relay_http_upstream_limits_total{limit="LIMIT"}` (0 when absent).
fn limit_count(relay: &Relay, limit: &str) -> u64 {
    let label = format!("limit=\"{limit}\"");
    relay
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("mcp_relay_http_upstream_limits_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A fresh session and its call (text `fresh`, which the hostile upstreams
/// answer well), each answered within [`ANSWER_WITHIN`].
fn fresh_session_served(port: u16) {
    let (mut b, sb, took) = fresh_session(port, "/mcp");
    let t0 = Instant::now();
    let r = post_on(
        &mut b,
        Some(&sb),
        &call(json!(1), "fresh"),
        &[],
        ANSWER_WITHIN,
    )
    .unwrap_or_else(|e| panic!("a fresh session's call not answered within 1 s: {e:?}"));
    let reply = answered_once(&r, &json!(1));
    assert_eq!(echo_text(&reply), Some("fresh"), "{r:?}");
    eprintln!(
        "fresh session answered in {took:?}, its call in {:?}",
        t0.elapsed()
    );
}

fn url_relay(h: &Hostile) -> Relay {
    Relay::reverse("hostile")
        .args(["--url", &h.url(), "--response-timeout", "5s"])
        .start()
}

/// The next event with data on `stream`, parsed.
fn next_message(stream: &mut Sse, what: &str) -> Value {
    loop {
        let ev = stream.expect_event(SHORT, what);
        if !ev.data.is_empty() {
            assert!(!ev.data.contains('\u{FFFD}'), "replaced bytes: {ev:?}");
            return ev.json();
        }
    }
}

/// Class 2: every reply is a JSON body pretty-printed with raw CRLF; each
/// reaches the client as valid JSON-RPC, once.
#[test]
fn class2_pretty_json_bodies_reach_the_client_as_json_rpc() {
    let h = Hostile::start(Attack::PrettyJsonBody);
    let relay = url_relay(&h);
    let (mut a, sa, _) = fresh_session(relay.port, "/mcp");
    let ack = post(&mut a, Some(&sa), &initialized());
    assert_eq!(ack.status(), 202, "{ack:?}");
    for n in 1..=3 {
        let r = post(&mut a, Some(&sa), &call(json!(n), "pretty"));
        let reply = answered_once(&r, &json!(n));
        assert_eq!(echo_text(&reply), Some("pretty"), "{r:?}");
    }
    fresh_session_served(relay.port);
}

/// Class 2: every reply is an SSE event whose JSON spans several `data:`
/// lines, and the GET stream opens with a notification split the same
/// way; each reaches the client as valid JSON-RPC, replies once.
#[test]
fn class2_multi_line_sse_data_reaches_the_client_as_json_rpc() {
    let h = Hostile::start(Attack::MultiLineSseData);
    let relay = url_relay(&h);
    let port = relay.port;
    let (mut a, sa, _) = fresh_session(port, "/mcp");
    let mut stream = open_stream(port, "/mcp", &sa, &mut a);
    let note = next_message(&mut stream, "the multi-line notification");
    assert_eq!(note["params"]["data"], "multi-line", "{note}");
    for n in 1..=3 {
        let r = post(&mut a, Some(&sa), &call(json!(n), "split"));
        let reply = answered_once(&r, &json!(n));
        assert_eq!(echo_text(&reply), Some("split"), "{r:?}");
    }
    fresh_session_served(port);
}

/// Class 12: the reply to a call is a JSON body with a byte that is not
/// UTF-8. The request is answered `invalid_reply` at once, and counted.
#[test]
fn class12_invalid_utf8_json_body_answers_invalid_reply() {
    let h = Hostile::start(Attack::InvalidUtf8Body);
    let relay = url_relay(&h);
    let (mut a, sa, _) = fresh_session(relay.port, "/mcp");
    let ack = post(&mut a, Some(&sa), &initialized());
    assert_eq!(ack.status(), 202, "{ack:?}");
    for n in 1..=3 {
        let t0 = Instant::now();
        let r = post(&mut a, Some(&sa), &call(json!(n), "attack"));
        let reply = answered_once(&r, &json!(n));
        assert_eq!(error_kind(&reply), Some("invalid_reply"), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    fresh_session_served(relay.port);
    assert_eq!(
        limit_count(&relay, "invalid_utf8"),
        3,
        "{}",
        relay.metrics_text()
    );
}

/// Class 12: replies come as SSE events with a byte that is not UTF-8, on
/// the POST's stream or (`on-get`) on the GET stream; the GET stream also
/// carries a notification that is not UTF-8. Each request is answered
/// `invalid_reply` at once, the invalid notification never reaches the
/// client (the valid one after it does), and all are counted.
#[test]
fn class12_invalid_utf8_sse_answers_invalid_reply() {
    let h = Hostile::start(Attack::InvalidUtf8Sse);
    let relay = url_relay(&h);
    let port = relay.port;
    let (mut a, sa, _) = fresh_session(port, "/mcp");
    let mut stream = open_stream(port, "/mcp", &sa, &mut a);
    let note = next_message(&mut stream, "the valid notification");
    assert_eq!(note["params"]["data"], "after-invalid", "{note}");
    for (n, text) in [(1, "attack"), (2, "on-get"), (3, "attack"), (4, "on-get")] {
        let t0 = Instant::now();
        let r = post(&mut a, Some(&sa), &call(json!(n), text));
        let reply = answered_once(&r, &json!(n));
        assert_eq!(error_kind(&reply), Some("invalid_reply"), "{text}: {r:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    fresh_session_served(port);
    let (now, hwm) = rss_kib(relay.pid as u32).expect("relay alive");
    eprintln!("reverse --url, SSE not UTF-8: relay RSS {now} KiB, peak (VmHWM) {hwm} KiB");
    assert!(hwm < RSS_BOUND_KIB, "relay peak RSS {hwm} KiB");
    // A's notification that was not UTF-8 and the 4 replies (the fresh
    // session opened no GET stream).
    assert_eq!(
        limit_count(&relay, "invalid_utf8"),
        5,
        "{}",
        relay.metrics_text()
    );
    match stream.next(Duration::from_millis(200)) {
        SseNext::Timeout => {}
        other => panic!("A's stream should be quiet: {other:?}"),
    }
}
