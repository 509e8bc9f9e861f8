//! `forward --url` and `reverse --url` across protocol eras (issue 13,
//! docs/eras.md), byte by byte against the fake upstreams of one era
//! (`common::fake::{modern_only, handshake_only}`): a 2026-07-28 client
//! passes to a 2026-07-28 server with the headers and no session; a
//! handshake-era client in front of a 2026-07-28-only server gets its
//! `initialize` answered from `server/discover` and its requests stamped; a
//! 2026-07-28 client in front of a handshake-era server is bridged by the
//! relay's own `initialize`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::fake::{
    After, Conn, Fake, Req, echo_reply, handler, handshake_only, modern_only, modern_only_counting,
    summaries,
};
use common::http::{Http, VERSION, post, post_on};
use common::relay::Relay;
use common::{initialize, initialized};

const T: Duration = Duration::from_secs(10);

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "modern-test", "version": "9"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

fn discover(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "server/discover", "params": {"_meta": meta()}})
}

fn modern_call(id: i64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments, "_meta": meta()}})
}

fn forward(url: &str, knob: &str) -> Relay {
    Relay::forward()
        .args([
            "--url",
            url,
            "--log-level",
            "debug",
            "--upstream-protocol",
            knob,
        ])
        .start()
}

fn posts_of<'a>(seen: &'a [Req], method: &str) -> Vec<&'a Req> {
    seen.iter().filter(|r| r.is_post_of(method)).collect()
}

// ---- forward --url -----------------------------------------------------------

#[test]
fn forward_modern_client_passes_to_a_modern_server_with_headers_and_no_session() {
    let fake = Fake::start(handler(modern_only));
    let mut relay = forward(&fake.url(), "auto");
    relay.send(&discover(0));
    let d = relay.expect_response(&json!(0), T);
    assert_eq!(
        d["result"]["supportedVersions"],
        json!(["2026-07-28"]),
        "{d}\n{}",
        relay.stderr_dump()
    );
    relay.send(&modern_call(1, "echo", json!({"text": "hi"})));
    let r = relay.expect_response(&json!(1), T);
    assert_eq!(r["result"]["content"][0]["text"], "hi", "{r}");
    assert_eq!(
        r["result"]["content"][1]["text"], "modern-test",
        "the client's own envelope"
    );
    // A name that is not plain ASCII goes as =?base64?…?= (the fake decodes).
    relay.send(&modern_call(2, "café", json!({"text": "x"})));
    let r = relay.expect_response(&json!(2), T);
    assert_eq!(r["result"]["content"][0]["text"], "x", "{r}");
    let seen = fake.seen();
    assert!(
        posts_of(&seen, "initialize").is_empty(),
        "{}",
        summaries(&seen)
    );
    assert!(
        seen.iter().all(|r| r.method == "POST"),
        "no GET, no DELETE:\n{}",
        summaries(&seen)
    );
    assert!(seen.iter().all(|r| r.session().is_none()));
    let call = posts_of(&seen, "tools/call")[0];
    assert_eq!(call.header("mcp-method"), Some("tools/call"));
    assert_eq!(call.header("mcp-name"), Some("echo"));
    assert_eq!(
        posts_of(&seen, "server/discover").len(),
        1,
        "the client's discover is the probe"
    );
    relay.close_stdin();
    relay.drain_to_eof(T);
}

#[test]
fn forward_modern_cancellation_closes_the_exchange_and_sends_nothing() {
    let closed = Arc::new(AtomicUsize::new(0));
    let c2 = closed.clone();
    let fake = Fake::start(handler(move |req, conn| {
        modern_only_counting(req, conn, &c2)
    }));
    let mut relay = forward(&fake.url(), "modern");
    relay.send(&modern_call(1, "echo", json!({"slow": true})));
    fake.wait_for("the slow call", T, |s| {
        !posts_of(s, "tools/call").is_empty()
    });
    let t0 = Instant::now();
    relay.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                       "params": {"requestId": 1, "reason": "user"}}),
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while closed.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the exchange was not closed\n{}",
            relay.stderr_dump()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("exchange closed {:?} after the cancellation", t0.elapsed());
    // And the relay still answers a fresh request at once.
    relay.send(&modern_call(2, "echo", json!({"text": "after"})));
    let r = relay.expect_response(&json!(2), T);
    assert_eq!(r["result"]["content"][0]["text"], "after", "{r}");
    let seen = fake.seen();
    assert!(
        posts_of(&seen, "notifications/cancelled").is_empty(),
        "{}",
        summaries(&seen)
    );
    relay.expect_silence(Duration::from_millis(200));
    relay.close_stdin();
    relay.drain_to_eof(T);
}

fn handshake_client_to_modern_only(knob: &str) {
    let fake = Fake::start(handler(modern_only));
    let mut relay = forward(&fake.url(), knob);
    relay.send(&initialize(json!(0)));
    let init = relay.expect_response(&json!(0), T);
    assert_eq!(
        init["result"]["protocolVersion"],
        "2025-06-18",
        "{init}\n{}",
        relay.stderr_dump()
    );
    assert_eq!(init["result"]["serverInfo"]["name"], "modern-fake");
    assert_eq!(init["result"]["instructions"], "modern fake");
    relay.send(&initialized());
    relay.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
    assert_eq!(relay.expect_response(&json!(1), T)["result"], json!({}));
    relay.send(&common::call(json!(2), "stamped"));
    let r = relay.expect_response(&json!(2), T);
    assert_eq!(r["result"]["content"][0]["text"], "stamped", "{r}");
    assert_eq!(
        r["result"]["content"][1]["text"], "mcp-relay-tests",
        "clientInfo from initialize"
    );
    relay.send(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}));
    let l = relay.expect_response(&json!(3), T);
    assert_eq!(l["result"]["tools"][0]["name"], "echo", "{l}");
    let seen = fake.seen();
    assert!(
        seen.iter().all(|r| r.method == "POST"),
        "no GET:\n{}",
        summaries(&seen)
    );
    assert!(
        posts_of(&seen, "ping").is_empty()
            && posts_of(&seen, "notifications/initialized").is_empty()
    );
    assert_eq!(
        posts_of(&seen, "server/discover").len(),
        1,
        "{}",
        summaries(&seen)
    );
    relay.close_stdin();
    relay.drain_to_eof(T);
}

#[test]
fn forward_handshake_client_to_a_modern_only_server_configured_modern() {
    handshake_client_to_modern_only("modern");
}

#[test]
fn forward_handshake_client_to_a_modern_only_server_found_by_auto() {
    handshake_client_to_modern_only("auto");
}

fn modern_client_to_handshake_server(knob: &str) {
    let fake = Fake::start(handler(handshake_only));
    let mut relay = forward(&fake.url(), knob);
    relay.send(&discover(0));
    let d = relay.expect_response(&json!(0), T);
    assert_eq!(
        d["result"]["supportedVersions"],
        json!(["2026-07-28"]),
        "{d}\n{}",
        relay.stderr_dump()
    );
    assert_eq!(
        d["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "fake-http-upstream"
    );
    relay.send(&modern_call(1, "echo", json!({"text": "bridged"})));
    let r = relay.expect_response(&json!(1), T);
    assert_eq!(r["result"]["content"][0]["text"], "bridged", "{r}");
    assert_eq!(r["result"]["resultType"], "complete");
    let seen = fake.wait_for("the GET stream", T, |s| s.iter().any(|r| r.method == "GET"));
    let init = posts_of(&seen, "initialize");
    assert_eq!(init.len(), 1, "{}", summaries(&seen));
    assert_eq!(
        init[0].json()["params"]["clientInfo"]["name"],
        "modern-test"
    );
    assert_eq!(posts_of(&seen, "tools/call")[0].session(), Some("h1"));
    relay.close_stdin();
    relay.drain_to_eof(T);
}

#[test]
fn forward_modern_client_to_a_handshake_server_found_by_auto() {
    modern_client_to_handshake_server("auto");
}

#[test]
fn forward_modern_client_to_a_handshake_server_configured_legacy() {
    modern_client_to_handshake_server("legacy");
}

// ---- reverse --url -------------------------------------------------------------

fn reverse(url: &str, knob: &str) -> Relay {
    Relay::reverse("eras")
        .args(["--url", url, "--upstream-protocol", knob])
        .start()
}

fn modern_post(http: &mut Http, msg: &Value, extra: &[(&str, &str)]) -> common::http::Response {
    let method = msg["method"].as_str().unwrap_or_default().to_string();
    let mut headers = vec![
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", method.as_str()),
    ];
    headers.extend_from_slice(extra);
    post_on(http, None, msg, &headers, T).expect("an answer")
}

#[test]
fn reverse_modern_client_passes_with_its_name_encoded_and_its_param_headers() {
    let fake = Fake::start(handler(modern_only));
    let relay = reverse(&fake.url(), "auto");
    let mut http = relay.http();
    let d = modern_post(&mut http, &discover(0), &[]);
    assert_eq!(d.status(), 200, "{d:?}\n{}", relay.stderr_dump());
    assert_eq!(
        d.rpc()["result"]["supportedVersions"],
        json!(["2026-07-28"])
    );
    // The client encodes a non-ASCII name; the relay checks it decoded and
    // passes Mcp-Param-* on as they came.
    let r = modern_post(
        &mut http,
        &modern_call(1, "café", json!({"text": "encoded", "region": "eu"})),
        &[
            ("Mcp-Name", "=?base64?Y2Fmw6k=?="),
            ("Mcp-Param-Region", "eu"),
        ],
    );
    assert_eq!(r.status(), 200, "{r:?}\n{}", relay.stderr_dump());
    assert_eq!(
        r.rpc()["result"]["content"][0]["text"],
        "encoded",
        "{:?}",
        r.rpc()
    );
    let seen = fake.seen();
    let call = posts_of(&seen, "tools/call")[0];
    assert_eq!(call.header("mcp-name"), Some("=?base64?Y2Fmw6k=?="));
    assert_eq!(call.header("mcp-param-region"), Some("eu"));
    assert!(
        seen.iter()
            .all(|r| r.session().is_none() && r.method == "POST")
    );
    // A name header that does not decode to the body's is refused.
    let bad = modern_post(
        &mut http,
        &modern_call(2, "café", json!({"text": "x"})),
        &[("Mcp-Name", "cafe")],
    );
    assert_eq!(bad.status(), 400, "{bad:?}");
}

fn reverse_handshake_client_to_modern_only(knob: &str) {
    let fake = Fake::start(handler(modern_only));
    let relay = reverse(&fake.url(), knob);
    let mut http = relay.http();
    let mut init = initialize(json!(0));
    init["params"]["protocolVersion"] = json!(VERSION);
    let r = post(&mut http, None, &init);
    assert_eq!(r.status(), 200, "{r:?}\n{}", relay.stderr_dump());
    let sid = r
        .header("mcp-session-id")
        .expect("a relay session")
        .to_string();
    let result = r.rpc();
    assert_eq!(
        result["result"]["serverInfo"]["name"], "modern-fake",
        "{result}"
    );
    assert_eq!(result["result"]["protocolVersion"], VERSION);
    let n = post(&mut http, Some(&sid), &initialized());
    assert_eq!(n.status(), 202, "{n:?}");
    let p = post(
        &mut http,
        Some(&sid),
        &json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    );
    assert_eq!(p.rpc()["result"], json!({}), "{p:?}");
    let c = post(&mut http, Some(&sid), &common::call(json!(2), "stamped"));
    let c = c.rpc();
    assert_eq!(
        c["result"]["content"][0]["text"],
        "stamped",
        "{c}\n{}",
        relay.stderr_dump()
    );
    assert_eq!(c["result"]["content"][1]["text"], "mcp-relay-tests");
    std::thread::sleep(Duration::from_millis(100));
    let seen = fake.seen();
    assert!(
        seen.iter().all(|r| r.method == "POST"),
        "no GET:\n{}",
        summaries(&seen)
    );
    assert!(posts_of(&seen, "ping").is_empty(), "{}", summaries(&seen));
    assert_eq!(
        posts_of(&seen, "server/discover").len(),
        1,
        "{}",
        summaries(&seen)
    );
}

#[test]
fn reverse_handshake_client_to_a_modern_only_server_configured_modern() {
    reverse_handshake_client_to_modern_only("modern");
}

#[test]
fn reverse_handshake_client_to_a_modern_only_server_found_by_auto() {
    reverse_handshake_client_to_modern_only("auto");
}

fn reverse_modern_client_to_a_handshake_server(knob: &str) {
    let fake = Fake::start(handler(handshake_only));
    let relay = reverse(&fake.url(), knob);
    let mut http = relay.http();
    let d = modern_post(&mut http, &discover(0), &[]);
    assert_eq!(d.status(), 200, "{d:?}\n{}", relay.stderr_dump());
    let d = d.rpc();
    assert_eq!(
        d["result"]["supportedVersions"],
        json!(["2026-07-28"]),
        "{d}"
    );
    assert_eq!(
        d["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "fake-http-upstream"
    );
    for (id, text) in [(1, "bridged"), (2, "again")] {
        let r = modern_post(
            &mut http,
            &modern_call(id, "echo", json!({"text": text})),
            &[("Mcp-Name", "echo")],
        );
        assert_eq!(r.status(), 200, "{r:?}\n{}", relay.stderr_dump());
        let r = r.rpc();
        assert_eq!(r["result"]["content"][0]["text"], text, "{r}");
        assert_eq!(r["result"]["resultType"], "complete", "{r}");
    }
    let seen = fake.seen();
    let init = posts_of(&seen, "initialize");
    assert_eq!(
        init.len(),
        1,
        "one relay-owned session for one identity:\n{}",
        summaries(&seen)
    );
    assert_eq!(
        init[0].json()["params"]["clientInfo"]["name"],
        "modern-test"
    );
    let calls = posts_of(&seen, "tools/call");
    assert!(
        calls.iter().all(|c| c.session() == Some("h1")),
        "{}",
        summaries(&seen)
    );
    assert_eq!(posts_of(&seen, "notifications/initialized").len(), 1);
    // Another identity gets its own session.
    let mut other = modern_call(3, "echo", json!({"text": "other"}));
    other["params"]["_meta"]["io.modelcontextprotocol/clientInfo"] =
        json!({"name": "second", "version": "1"});
    let r = modern_post(&mut http, &other, &[("Mcp-Name", "echo")]);
    assert_eq!(r.rpc()["result"]["content"][0]["text"], "other", "{r:?}");
    let seen = fake.seen();
    assert_eq!(
        posts_of(&seen, "initialize").len(),
        2,
        "{}",
        summaries(&seen)
    );
}

#[test]
fn reverse_modern_client_to_a_handshake_server_found_by_auto() {
    reverse_modern_client_to_a_handshake_server("auto");
}

#[test]
fn reverse_modern_client_to_a_handshake_server_configured_legacy() {
    reverse_modern_client_to_a_handshake_server("legacy");
}

// ---- bounds -----------------------------------------------------------------------

/// `reverse --url`, `auto`, an upstream that never answers the relay's
/// `server/discover` probe: 2026-07-28 requests wait for the verdict, at
/// most 64 (`bridge::MAX_WAITING`); the rest are answered `upstream_busy`
/// at once, each with its own id. The relay's memory stays bounded and a
/// handshake-era client still gets a session within 1 s.
#[test]
fn reverse_requests_waiting_for_a_hung_probe_are_bounded() {
    let fake = Fake::start(handler(|req, conn| {
        if req.is_post_of("server/discover") && req.session().is_none() {
            conn.hold();
            return common::fake::After::Close;
        }
        handshake_only(req, conn)
    }));
    let relay = reverse(&fake.url(), "auto");
    let pid = relay.pid as u32;
    let (rss0, _) = common::rss_kib(pid).expect("relay alive");
    const FLOOD: usize = 400;
    let body = |id: usize| {
        serde_json::to_vec(&modern_call(
            id as i64,
            "echo",
            json!({"text": "x".repeat(1000)}),
        ))
        .unwrap()
    };
    let mut conns = Vec::new();
    for id in 0..FLOOD {
        let mut h = relay.http();
        let b = body(id);
        let mut headers = common::http::mcp_headers(None);
        headers.extend([
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "echo"),
        ]);
        h.send_request("POST", "/mcp", &headers, &b).expect("send");
        conns.push((id, h));
    }
    fake.wait_for("the probe", T, |s| {
        !posts_of(s, "server/discover").is_empty()
    });
    // Past the cap: answered at once, upstream_busy, each its own id.
    std::thread::sleep(Duration::from_millis(500));
    let mut busy = 0;
    let mut waiting = 0;
    for (id, h) in conns.iter_mut() {
        match h.read_response(Instant::now() + Duration::from_millis(30)) {
            Ok(r) => {
                let v = r.rpc();
                assert_eq!(v["id"], json!(*id), "no cross delivery: {v}");
                assert_eq!(v["error"]["data"]["kind"], "upstream_busy", "{v}");
                busy += 1;
            }
            Err(_) => waiting += 1,
        }
    }
    eprintln!("flood of {FLOOD}: {busy} answered upstream_busy, {waiting} waiting");
    assert_eq!(waiting, 64, "the waiting queue is capped at 64");
    assert_eq!(busy, FLOOD - 64);
    // A handshake-era client is not held up by the probe.
    let t0 = Instant::now();
    let mut h = relay.http();
    let mut init = initialize(json!("fresh"));
    init["params"]["protocolVersion"] = json!(VERSION);
    let r = post(&mut h, None, &init);
    let took = t0.elapsed();
    assert_eq!(r.status(), 200, "{r:?}");
    assert!(took < Duration::from_secs(1), "fresh session took {took:?}");
    let (rss, hwm) = common::rss_kib(pid).expect("relay alive");
    eprintln!(
        "relay RSS: {rss0} KiB before, {rss} KiB after ({hwm} KiB peak); fresh session in {took:?}"
    );
    assert!(
        hwm < rss0 + 32 * 1024,
        "peak {hwm} KiB vs {rss0} KiB at start"
    );
    let m = relay.metrics_text();
    assert!(
        m.lines().any(|l| l.contains("era_bridge_waiting")
            && l.trim_end().ends_with(&format!(" {}", FLOOD - 64))),
        "the metric counts the refusals:\n{}",
        m.lines()
            .filter(|l| l.contains("limit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `forward --url --upstream-protocol modern`, an upstream that never
/// answers `server/discover`: the handshake-era client's messages wait for
/// it, at most 64 (`stamper`, the hold of `link.rs`); past that each request
/// is answered `upstream_busy` at once (within 1 s), with its own id.
#[test]
fn forward_messages_held_for_a_hung_discover_are_bounded() {
    let fake = Fake::start(handler(|req, conn| {
        if req.is_post_of("server/discover") {
            conn.hold();
            return common::fake::After::Close;
        }
        modern_only(req, conn)
    }));
    let mut relay = forward(&fake.url(), "modern");
    let pid = relay.pid as u32;
    let (rss0, _) = common::rss_kib(pid).expect("relay alive");
    relay.send(&initialize(json!(0)));
    fake.wait_for("discover", T, |s| {
        !posts_of(s, "server/discover").is_empty()
    });
    for id in 1..=64 {
        relay.send(&common::call(json!(id), &"x".repeat(10_000)));
    }
    for id in 65..=300 {
        let t0 = Instant::now();
        relay.send(&common::call(json!(id), &"x".repeat(10_000)));
        let r = relay.expect_response(&json!(id), T);
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert_eq!(r["error"]["code"], -32008, "{r}");
    }
    let (rss, hwm) = common::rss_kib(pid).expect("relay alive");
    eprintln!("forward: RSS {rss0} KiB before, {rss} KiB after ({hwm} KiB peak)");
    assert!(
        hwm < rss0 + 32 * 1024,
        "peak {hwm} KiB vs {rss0} KiB at start"
    );
    assert!(
        relay
            .stderr_text()
            .contains("refused while asking the server for server/discover")
    );
    relay.expect_silence(Duration::from_millis(200));
}

// ---- logs opted in per request (reverse --url, a bridged identity) ----------------

/// A handshake-era server that logs on the response stream of every
/// `tools/call`: one `info` and one `error` message, then the result.
fn handshake_logging(req: &Req, conn: &mut Conn) -> After {
    let msg = req.json();
    if req.method != "POST" || msg["method"] != "tools/call" || req.session() != Some("h1") {
        return handshake_only(req, conn);
    }
    let id = msg["id"].clone();
    let log = |level: &str| {
        json!({"jsonrpc": "2.0", "method": "notifications/message",
               "params": {"level": level, "logger": "fake", "data": format!("{level} line")}})
        .to_string()
    };
    let ok = conn.sse_start()
        && conn.sse_event(None, &log("info"))
        && conn.sse_event(None, &log("error"))
        && conn.sse_event(None, &echo_reply(&id, "logged").to_string())
        && conn.sse_end();
    if ok { After::KeepAlive } else { After::Close }
}

fn log_levels_seen(r: &common::http::Response) -> Vec<String> {
    if !r.head.is_sse() {
        return Vec::new();
    }
    r.events()
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .filter(|m| m["method"] == "notifications/message")
        .map(|m| m["params"]["level"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// `reverse --url`, a 2026-07-28 client bridged to a handshake-era server:
/// the server's log messages on a call's stream reach the client only when
/// the call carried `io.modelcontextprotocol/logLevel`, and only at or above
/// it; the others are dropped and counted.
#[test]
fn reverse_bridged_logs_reach_only_requests_that_opted_in() {
    let fake = Fake::start(handler(handshake_logging));
    let relay = reverse(&fake.url(), "legacy");
    let mut http = relay.http();
    let cases: [(i64, Option<&str>, &[&str]); 4] = [
        (1, None, &[]),
        (2, Some("warning"), &["error"]),
        (3, Some("debug"), &["info", "error"]),
        (4, Some("loud"), &[]),
    ];
    for (id, level, want) in cases {
        let mut call = modern_call(id, "echo", json!({"text": "logged"}));
        if let Some(l) = level {
            call["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = json!(l);
        }
        let r = modern_post(&mut http, &call, &[("Mcp-Name", "echo")]);
        assert_eq!(r.status(), 200, "{r:?}\n{}", relay.stderr_dump());
        assert_eq!(r.rpc()["result"]["content"][0]["text"], "logged", "{r:?}");
        assert_eq!(log_levels_seen(&r), want, "opt-in {level:?}: {r:?}");
    }
    let m = relay.metrics_text();
    let dropped = m
        .lines()
        .find(|l| l.starts_with("mcp_relay_messages_dropped_total{reason=\"log_not_opted_in\"}"))
        .unwrap_or_else(|| panic!("no log_not_opted_in counter:\n{m}"));
    assert!(dropped.ends_with(" 5"), "{dropped}");
}

/// `forward --url`, the same bridge over the era link: a call hears the
/// server's logs only at or above the level it opted in at.
#[test]
fn forward_bridged_logs_reach_only_requests_that_opted_in() {
    let fake = Fake::start(handler(handshake_logging));
    let mut relay = forward(&fake.url(), "legacy");
    relay.send(&discover(0));
    relay.expect_response(&json!(0), T);
    let cases: [(i64, Option<&str>, &[&str]); 3] = [
        (1, None, &[]),
        (2, Some("error"), &["error"]),
        (3, Some("info"), &["info", "error"]),
    ];
    for (id, level, want) in cases {
        let mut call = modern_call(id, "echo", json!({"text": "logged"}));
        if let Some(l) = level {
            call["params"]["_meta"]["io.modelcontextprotocol/logLevel"] = json!(l);
        }
        relay.send(&call);
        let mut levels = Vec::new();
        loop {
            let m = relay.expect_msg(T, "a log or the response");
            if m["method"] == "notifications/message" {
                levels.push(m["params"]["level"].as_str().unwrap_or("?").to_string());
                continue;
            }
            assert_eq!(m["id"], json!(id), "{m}\n{}", relay.stderr_dump());
            assert_eq!(m["result"]["content"][0]["text"], "logged", "{m}");
            break;
        }
        assert_eq!(levels, want, "opt-in {level:?}");
    }
    relay.close_stdin();
    relay.drain_to_eof(T);
}

// ---- relay-owned sessions at exit (reverse --url) ----------------------------------

/// Opens one relay-owned session per identity name on `relay` (one call each).
fn bridge_identities(relay: &Relay, names: &[&str]) {
    let mut http = relay.http();
    for (i, name) in names.iter().enumerate() {
        let mut c = modern_call(i as i64 + 1, "echo", json!({"text": name}));
        c["params"]["_meta"]["io.modelcontextprotocol/clientInfo"] =
            json!({"name": name, "version": "1"});
        let r = modern_post(&mut http, &c, &[("Mcp-Name", "echo")]);
        assert_eq!(
            r.rpc()["result"]["content"][0]["text"],
            *name,
            "{r:?}\n{}",
            relay.stderr_dump()
        );
    }
}

/// SIGTERM: every relay-owned session is ended with DELETE before the relay
/// exits.
#[test]
fn reverse_relay_owned_sessions_are_deleted_at_exit() {
    let fake = Fake::start(handler(handshake_only));
    let relay = reverse(&fake.url(), "legacy");
    bridge_identities(&relay, &["one", "two"]);
    relay.signal(libc::SIGTERM);
    let status = relay.wait_exit(T);
    assert!(status.success(), "{status}\n{}", relay.stderr_dump());
    let seen = fake.seen();
    let deletes: Vec<&Req> = seen.iter().filter(|r| r.method == "DELETE").collect();
    assert_eq!(deletes.len(), 2, "{}", summaries(&seen));
    assert!(deletes.iter().all(|d| d.session() == Some("h1")));
}

/// An upstream that never answers DELETE does not hold the exit: the relay
/// waits for its relay-owned sessions' DELETEs at most 1 s.
#[test]
fn reverse_exit_waits_for_relay_owned_deletes_at_most_a_second() {
    let fake = Fake::start(handler(|req: &Req, conn: &mut Conn| {
        if req.method == "DELETE" {
            conn.hold();
            return After::Close;
        }
        handshake_only(req, conn)
    }));
    let relay = reverse(&fake.url(), "legacy");
    bridge_identities(&relay, &["one"]);
    let t0 = Instant::now();
    relay.signal(libc::SIGTERM);
    let status = relay.wait_exit(T);
    let took = t0.elapsed();
    assert!(status.success(), "{status}\n{}", relay.stderr_dump());
    assert!(
        fake.seen().iter().any(|r| r.method == "DELETE"),
        "{}",
        summaries(&fake.seen())
    );
    assert!(
        took < Duration::from_millis(1_800),
        "exit took {took:?}\n{}",
        relay.stderr_dump()
    );
}

// ---- a handshake-era server that defers, asks and notifies (reverse --url) --------

/// A handshake-era Streamable HTTP server (session `b1`) whose `tools/call`
/// does what `arguments.mode` says: `defer` ends the call's SSE stream at
/// once and sends the reply on the GET stream; `ask` sends an
/// `elicitation/create` on the call's stream, waits (≤ 5 s) for the answer
/// and replies `answered: NAME` with its `content.name`; `ask-get` does the
/// same on the GET stream; `orphan` replies at once, then (100 ms later)
/// sends a `roots/list` request on the GET stream that no call carries;
/// anything else is echoed. Records every id a `tools/call` came with and
/// every answer the client POSTs.
#[derive(Default)]
struct Deferring {
    get: Mutex<Option<mpsc::Sender<String>>>,
    answers: Mutex<HashMap<String, Value>>,
    answered: Condvar,
    asked: AtomicUsize,
    /// Never answer the client's POSTed answers (they pile up at the relay).
    hold_answers: std::sync::atomic::AtomicBool,
}

impl Deferring {
    fn serve(self: &Arc<Self>, req: &Req, conn: &mut Conn) -> After {
        let msg = req.json();
        match req.method.as_str() {
            "POST" if msg["method"] == "initialize" => {
                let mut init = common::fake::init_result(&msg["id"]);
                init["result"]["capabilities"] = json!({
                    "tools": {"listChanged": true},
                    "resources": {"subscribe": true, "listChanged": true},
                });
                conn.json(&[("mcp-session-id", "b1")], &init)
            }
            "POST" if msg["method"] == "tools/call" => self.call(&msg, conn),
            "POST" if msg["method"] == "resources/subscribe" => {
                // Subscribed: an update for the URI and a tools list change
                // follow on the GET stream.
                let uri = msg["params"]["uri"].clone();
                let me = self.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(50));
                    me.on_get(
                        &json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                                      "params": {"uri": uri}}),
                    );
                    me.on_get(&json!({"jsonrpc": "2.0",
                                      "method": "notifications/tools/list_changed"}));
                });
                conn.json(
                    &[],
                    &json!({"jsonrpc": "2.0", "id": msg["id"], "result": {}}),
                )
            }
            "POST" => {
                if msg.get("method").is_none()
                    && let Some(id) = msg["id"].as_str()
                {
                    self.answers
                        .lock()
                        .unwrap()
                        .insert(id.to_owned(), msg.clone());
                    self.answered.notify_all();
                }
                if self.hold_answers.load(Ordering::SeqCst) {
                    conn.hold();
                    return After::Close;
                }
                conn.accepted()
            }
            "GET" => {
                let (tx, rx) = mpsc::channel::<String>();
                *self.get.lock().unwrap() = Some(tx);
                if conn.sse_start() {
                    loop {
                        match rx.recv_timeout(common::fake::TICK) {
                            Ok(ev) if conn.sse_event(None, &ev) => {}
                            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                            Err(mpsc::RecvTimeoutError::Timeout) if conn.wait(Duration::ZERO) => {}
                            Err(mpsc::RecvTimeoutError::Timeout) => break,
                        }
                    }
                }
                After::Close
            }
            "DELETE" => conn.respond(200, &[], b""),
            _ => conn.respond(405, &[], b""),
        }
    }

    fn on_get(&self, v: &Value) -> bool {
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            if let Some(tx) = self.get.lock().unwrap().as_ref() {
                return tx.send(v.to_string()).is_ok();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn wait_answer(&self, id: &str) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut answers = self.answers.lock().unwrap();
        loop {
            if let Some(a) = answers.remove(id) {
                return Some(a);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            answers = self.answered.wait_timeout(answers, left).unwrap().0;
        }
    }

    fn ask(&self, id: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "elicitation/create",
               "params": {"message": "your name?", "requestedSchema": {"type": "object",
                 "properties": {"name": {"type": "string"}}}}})
    }

    fn answered(&self, call: &Value, ask_id: &str) -> Value {
        let text = match self.wait_answer(ask_id) {
            Some(a) => format!(
                "answered: {}",
                a["result"]["content"]["name"].as_str().unwrap_or("?")
            ),
            None => "no answer".to_owned(),
        };
        echo_reply(&call["id"], &text)
    }

    fn call(self: &Arc<Self>, msg: &Value, conn: &mut Conn) -> After {
        let mode = msg["params"]["arguments"]["mode"].as_str().unwrap_or("");
        let n = self.asked.fetch_add(1, Ordering::SeqCst);
        match mode {
            "defer" => {
                let ok = conn.sse_start() && conn.sse_end();
                self.on_get(&echo_reply(&msg["id"], "deferred"));
                if ok { After::KeepAlive } else { After::Close }
            }
            "ask" => {
                let ask_id = format!("ask-{n}");
                if !(conn.sse_start() && conn.sse_event(None, &self.ask(&ask_id).to_string())) {
                    return After::Close;
                }
                let reply = self.answered(msg, &ask_id);
                let ok = conn.sse_event(None, &reply.to_string()) && conn.sse_end();
                if ok { After::KeepAlive } else { After::Close }
            }
            "ask-then-done" => {
                // Asks, then answers the call without waiting for the answer.
                let ask_id = format!("ask-{n}");
                let ok = conn.sse_start()
                    && conn.sse_event(None, &self.ask(&ask_id).to_string())
                    && conn.sse_event(None, &echo_reply(&msg["id"], "done anyway").to_string())
                    && conn.sse_end();
                if ok { After::KeepAlive } else { After::Close }
            }
            "ask-get" => {
                let ask_id = format!("ask-{n}");
                self.on_get(&self.ask(&ask_id));
                let reply = self.answered(msg, &ask_id);
                conn.json(&[], &reply)
            }
            "hang" => {
                if conn.sse_start() {
                    conn.hold();
                }
                After::Close
            }
            "orphan" => {
                let me = self.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    me.on_get(&json!({"jsonrpc": "2.0", "id": "orphan-1",
                                      "method": "roots/list"}));
                });
                conn.json(&[], &echo_reply(&msg["id"], "orphan"))
            }
            _ => {
                let text = msg["params"]["arguments"]["text"].as_str().unwrap_or("");
                conn.json(&[], &echo_reply(&msg["id"], text))
            }
        }
    }
}

fn deferring() -> (Arc<Deferring>, Fake) {
    let d = Arc::new(Deferring::default());
    let me = d.clone();
    let fake = Fake::start(handler(move |req, conn| me.serve(req, conn)));
    (d, fake)
}

fn reverse_bridging(url: &str) -> Relay {
    Relay::reverse("bridged")
        .args([
            "--url",
            url,
            "--upstream-protocol",
            "legacy",
            "--response-timeout",
            "4s",
            "--log-level",
            "debug",
        ])
        .start()
}

fn mode_call(id: i64, mode: &str) -> Value {
    modern_call(id, "echo", json!({"mode": mode, "text": mode}))
}

/// Every bridged request reaches the server under an id of the relay's own
/// (two clients of one identity may both use id 7 at once), and a reply the
/// server sends on the session's GET stream reaches its request.
#[test]
fn reverse_bridged_ids_are_the_relays_and_deferred_replies_come_back() {
    let (_d, fake) = deferring();
    let relay = reverse_bridging(&fake.url());
    let mut http = relay.http();
    let r = modern_post(&mut http, &mode_call(7, "plain"), &[("Mcp-Name", "echo")]);
    assert_eq!(r.rpc()["result"]["content"][0]["text"], "plain", "{r:?}");
    fake.wait_for("the bridge's GET stream", T, |s| {
        s.iter().any(|r| r.method == "GET")
    });
    let r = modern_post(&mut http, &mode_call(7, "defer"), &[("Mcp-Name", "echo")]);
    assert_eq!(r.status(), 200, "{r:?}\n{}", relay.stderr_dump());
    let v = r.rpc();
    assert_eq!(v["id"], 7, "{v}");
    assert_eq!(
        v["result"]["content"][0]["text"],
        "deferred",
        "{v}\n{}",
        relay.stderr_dump()
    );
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    let seen = fake.seen();
    let ids: Vec<Value> = posts_of(&seen, "tools/call")
        .iter()
        .map(|c| c.json()["id"].clone())
        .collect();
    assert_eq!(ids.len(), 2, "{}", summaries(&seen));
    assert_ne!(ids[0], ids[1], "{}", summaries(&seen));
    assert!(ids.iter().all(|i| *i != json!(7)), "{}", summaries(&seen));
}

/// The server's `elicitation/create` on a call's stream becomes an
/// `InputRequiredResult` round: the client retries with the answer, the
/// relay answers the server with it, and the retry gets the call's result.
#[test]
fn reverse_bridged_elicitation_on_the_call_stream_is_an_input_round() {
    let (_d, fake) = deferring();
    let relay = reverse_bridging(&fake.url());
    let mut http = relay.http();
    let r = modern_post(&mut http, &mode_call(1, "ask"), &[("Mcp-Name", "echo")]);
    let v = r.rpc();
    assert_eq!(v["id"], 1, "{v}\n{}", relay.stderr_dump());
    assert_eq!(v["result"]["resultType"], "input_required", "{v}");
    let (key, ask) = v["result"]["inputRequests"]
        .as_object()
        .and_then(|o| o.iter().next())
        .map(|(k, a)| (k.clone(), a.clone()))
        .unwrap_or_else(|| panic!("no input request: {v}"));
    assert_eq!(ask["method"], "elicitation/create", "{v}");
    assert_eq!(ask["params"]["message"], "your name?", "{v}");
    let state = v["result"]["requestState"].clone();
    let mut retry = mode_call(2, "ask");
    retry["params"]["requestState"] = state;
    retry["params"]["inputResponses"] =
        json!({ key: {"action": "accept", "content": {"name": "Ada"}} });
    let r = modern_post(&mut http, &retry, &[("Mcp-Name", "echo")]);
    let v = r.rpc();
    assert_eq!(v["id"], 2, "{v}\n{}", relay.stderr_dump());
    assert_eq!(v["result"]["content"][0]["text"], "answered: Ada", "{v}");
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    // The server saw one call: the retry went to it as the answer only.
    assert_eq!(
        posts_of(&fake.seen(), "tools/call").len(),
        1,
        "{}",
        summaries(&fake.seen())
    );
}

/// The same round when the server asks on the session's GET stream while
/// exactly one call is in flight on the session.
#[test]
fn reverse_bridged_elicitation_on_the_get_stream_is_an_input_round() {
    let (_d, fake) = deferring();
    let relay = reverse_bridging(&fake.url());
    let mut http = relay.http();
    modern_post(&mut http, &mode_call(1, "plain"), &[("Mcp-Name", "echo")]);
    fake.wait_for("the bridge's GET stream", T, |s| {
        s.iter().any(|r| r.method == "GET")
    });
    let r = modern_post(&mut http, &mode_call(2, "ask-get"), &[("Mcp-Name", "echo")]);
    let v = r.rpc();
    assert_eq!(
        v["result"]["resultType"],
        "input_required",
        "{v}\n{}",
        relay.stderr_dump()
    );
    let key = v["result"]["inputRequests"]
        .as_object()
        .and_then(|o| o.keys().next().cloned());
    let mut retry = mode_call(3, "ask-get");
    retry["params"]["requestState"] = v["result"]["requestState"].clone();
    retry["params"]["inputResponses"] =
        json!({ key.unwrap_or_default(): {"action": "accept", "content": {"name": "Grace"}} });
    let v = modern_post(&mut http, &retry, &[("Mcp-Name", "echo")]).rpc();
    assert_eq!(v["id"], 3, "{v}");
    assert_eq!(v["result"]["content"][0]["text"], "answered: Grace", "{v}");
}

/// A request the server sends on the GET stream while no call of the
/// session is in flight is answered with an error by the relay, and counted.
#[test]
fn reverse_bridged_server_request_no_call_carries_is_refused_and_counted() {
    let (d, fake) = deferring();
    let relay = reverse_bridging(&fake.url());
    let mut http = relay.http();
    modern_post(&mut http, &mode_call(1, "plain"), &[("Mcp-Name", "echo")]);
    fake.wait_for("the bridge's GET stream", T, |s| {
        s.iter().any(|r| r.method == "GET")
    });
    let r = modern_post(&mut http, &mode_call(2, "orphan"), &[("Mcp-Name", "echo")]);
    assert_eq!(r.rpc()["result"]["content"][0]["text"], "orphan", "{r:?}");
    let a = d
        .wait_answer("orphan-1")
        .unwrap_or_else(|| panic!("no answer to the orphan request\n{}", relay.stderr_dump()));
    assert!(a["error"]["code"].is_i64(), "{a}");
    let m = relay.metrics_text();
    assert!(
        m.lines().any(|l| l
            .starts_with("mcp_relay_messages_dropped_total{reason=\"unattributed_request\"} 1")),
        "{m}"
    );
}

/// A client closing a bridged call's stream cancels the call at the server
/// under the id the server knows it by (the relay's own).
#[test]
fn reverse_bridged_call_closed_by_its_client_is_cancelled_under_the_servers_id() {
    let (_d, fake) = deferring();
    let relay = reverse_bridging(&fake.url());
    let mut http = relay.http();
    modern_post(&mut http, &mode_call(1, "plain"), &[("Mcp-Name", "echo")]);
    let mut gone = relay.http();
    let body = mode_call(1, "hang").to_string();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n\
         Mcp-Method: tools/call\r\nMcp-Name: echo\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    gone.write(head.as_bytes()).expect("write");
    let seen = fake.wait_for("the hanging call", T, |s| {
        s.iter().any(|r| {
            r.is_post_of("tools/call") && r.json()["params"]["arguments"]["mode"] == "hang"
        })
    });
    let call_id = seen
        .iter()
        .find(|r| r.is_post_of("tools/call") && r.json()["params"]["arguments"]["mode"] == "hang")
        .map(|r| r.json()["id"].clone())
        .unwrap_or_default();
    drop(gone);
    let seen = fake.wait_for("the cancellation", T, |s| {
        s.iter().any(|r| r.is_post_of("notifications/cancelled"))
    });
    let c = posts_of(&seen, "notifications/cancelled")[0].json();
    assert_eq!(c["params"]["requestId"], call_id, "{}", summaries(&seen));
    assert_ne!(call_id, json!(1));
}

fn open_listen(relay: &Relay, id: i64, notifications: Value) -> common::http::Sse {
    let mut http = relay.http();
    let msg = json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen",
                     "params": {"notifications": notifications, "_meta": meta()}});
    let body = msg.to_string();
    http.send_request(
        "POST",
        "/mcp",
        &[
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "subscriptions/listen"),
        ],
        body.as_bytes(),
    )
    .expect("send");
    let head = http
        .read_head(Instant::now() + T)
        .unwrap_or_else(|e| panic!("listen {id}: no head ({e:?})\n{}", relay.stderr_dump()));
    common::http::Sse::open(http, head)
}

/// `subscriptions/listen` on a relay-owned session: acknowledged with what
/// the server can send, the URIs subscribed with `resources/subscribe`, the
/// server's `resources/updated` and list changes delivered (stamped with the
/// listen's id) on the stream of the listen that asked, and only there; the
/// last listener leaving unsubscribes. An open listen has no response
/// timeout.
#[test]
fn reverse_bridged_listen_maps_onto_resources_subscribe() {
    let (_d, fake) = deferring();
    let relay = reverse_bridging(&fake.url());
    let mut http = relay.http();
    modern_post(&mut http, &mode_call(1, "plain"), &[("Mcp-Name", "echo")]);
    fake.wait_for("the bridge's GET stream", T, |s| {
        s.iter().any(|r| r.method == "GET")
    });
    // A listen asking for prompts only (the server has none): acknowledged
    // empty, and it hears nothing of what follows.
    let mut quiet = open_listen(&relay, 5, json!({"promptsListChanged": true}));
    let ack = quiet.expect_event(T, "the acknowledgement").json();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(ack["params"]["notifications"], json!({}), "{ack}");
    let mut sse = open_listen(
        &relay,
        6,
        json!({"toolsListChanged": true, "resourceSubscriptions": ["file:///a"]}),
    );
    let ack = sse.expect_event(T, "the acknowledgement").json();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true, "resourceSubscriptions": ["file:///a"]}),
        "{ack}"
    );
    let up = sse.expect_event(T, "the update").json();
    assert_eq!(up["method"], "notifications/resources/updated", "{up}");
    assert_eq!(up["params"]["uri"], "file:///a", "{up}");
    assert_eq!(
        up["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 6,
        "{up}"
    );
    let lc = sse.expect_event(T, "the list change").json();
    assert_eq!(lc["method"], "notifications/tools/list_changed", "{lc}");
    let subs = posts_of(&fake.seen(), "resources/subscribe").len();
    assert_eq!(subs, 1, "{}", summaries(&fake.seen()));
    // Past the response timeout (4 s), both listens are still open.
    match quiet.next(Duration::from_millis(4_500)) {
        common::http::SseNext::Timeout => {}
        other => panic!("the prompts listen heard {other:?}"),
    }
    match sse.next(Duration::from_millis(100)) {
        common::http::SseNext::Timeout => {}
        other => panic!("the listen ended or heard more: {other:?}"),
    }
    // The client closes the listen's stream: the URI is unsubscribed.
    drop(sse);
    let seen = fake.wait_for("the unsubscribe", T, |s| {
        s.iter().any(|r| r.is_post_of("resources/unsubscribe"))
    });
    let un = posts_of(&seen, "resources/unsubscribe")[0].json();
    assert_eq!(un["params"]["uri"], "file:///a", "{un}");
    assert_eq!(
        posts_of(&seen, "resources/unsubscribe")[0].session(),
        Some("b1")
    );
}

// ---- a handshake-era client's subscriptions toward a modern-only server -----------

/// A modern-only server that also serves `subscriptions/listen`: it
/// acknowledges, sends one `resources/updated` per URI asked for, then holds
/// the stream until the client closes it. Records each listen's filter and
/// counts the closed ones.
#[derive(Default)]
struct Listening {
    filters: Mutex<Vec<Value>>,
    closed: AtomicUsize,
}

impl Listening {
    fn serve(&self, req: &Req, conn: &mut Conn) -> After {
        let msg = if req.method == "POST" {
            req.json()
        } else {
            Value::Null
        };
        if msg["method"] != "subscriptions/listen" {
            return modern_only(req, conn);
        }
        let ok = req.header("mcp-method") == Some("subscriptions/listen")
            && req.header("mcp-protocol-version") == Some("2026-07-28")
            && msg.pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion")
                == Some(&json!("2026-07-28"));
        if !ok {
            return conn.respond(400, &[], b"bad listen");
        }
        let filter = msg["params"]["notifications"].clone();
        self.filters.lock().unwrap().push(filter.clone());
        let sub = json!({"io.modelcontextprotocol/subscriptionId": msg["id"]});
        let mut ok = conn.sse_start()
            && conn.sse_event(
                None,
                &json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
                        "params": {"notifications": filter, "_meta": sub}})
                .to_string(),
            );
        for uri in filter["resourceSubscriptions"]
            .as_array()
            .into_iter()
            .flatten()
        {
            ok = ok
                && conn.sse_event(
                    None,
                    &json!({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                            "params": {"uri": uri, "_meta": sub}})
                    .to_string(),
                );
        }
        // A write that failed means the client had closed the stream already.
        if !ok || conn.hold() {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
        After::Close
    }
}

fn listening() -> (Arc<Listening>, Fake) {
    let l = Arc::new(Listening::default());
    let me = l.clone();
    (
        l,
        Fake::start(handler(move |req, conn| me.serve(req, conn))),
    )
}

fn sub(id: i64, method: &str, uri: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"uri": uri}})
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} not within {T:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `forward --url`, a handshake-era client, a 2026-07-28-only server:
/// `resources/subscribe`/`unsubscribe` are answered by the relay and folded
/// into one `subscriptions/listen` it keeps open toward the server (re-opened
/// when the set of URIs changes, closed when it is empty); the server's
/// updates reach stdout, its acknowledgement does not.
#[test]
fn forward_handshake_subscriptions_become_one_listen_toward_a_modern_server() {
    let (l, fake) = listening();
    let mut relay = forward(&fake.url(), "modern");
    relay.send(&initialize(json!(0)));
    relay.expect_response(&json!(0), T);
    relay.send(&initialized());
    let mut updates = Vec::new();
    let until_answer = |relay: &mut Relay, id: i64, updates: &mut Vec<String>| loop {
        let m = relay.expect_msg(T, "an answer or an update");
        assert_ne!(
            m["method"], "notifications/subscriptions/acknowledged",
            "{m}"
        );
        if m["method"] == "notifications/resources/updated" {
            updates.push(m["params"]["uri"].as_str().unwrap_or("?").to_string());
            continue;
        }
        assert_eq!(m["id"], json!(id), "{m}\n{}", relay.stderr_dump());
        assert_eq!(m["result"], json!({}), "{m}");
        return;
    };
    relay.send(&sub(1, "resources/subscribe", "file:///a"));
    until_answer(&mut relay, 1, &mut updates);
    wait_until("the first listen", || l.filters.lock().unwrap().len() == 1);
    relay.send(&sub(2, "resources/subscribe", "file:///b"));
    until_answer(&mut relay, 2, &mut updates);
    wait_until("the second listen", || l.filters.lock().unwrap().len() == 2);
    wait_until("the first listen closed", || {
        l.closed.load(Ordering::SeqCst) == 1
    });
    // The updates of both listens reach the client.
    let deadline = Instant::now() + T;
    while updates.len() < 3 && Instant::now() < deadline {
        let m = relay.expect_msg(T, "an update");
        assert_eq!(m["method"], "notifications/resources/updated", "{m}");
        updates.push(m["params"]["uri"].as_str().unwrap_or("?").to_string());
    }
    updates.sort();
    assert_eq!(updates, ["file:///a", "file:///a", "file:///b"]);
    relay.send(&sub(3, "resources/unsubscribe", "file:///a"));
    until_answer(&mut relay, 3, &mut Vec::new());
    relay.send(&sub(4, "resources/unsubscribe", "file:///b"));
    until_answer(&mut relay, 4, &mut Vec::new());
    let deadline = Instant::now() + T;
    while l.closed.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let filters = l.filters.lock().unwrap().clone();
    assert_eq!(
        l.closed.load(Ordering::SeqCst),
        3,
        "{filters:?}\n{}\n{}",
        summaries(&fake.seen()),
        relay.stderr_dump()
    );
    assert_eq!(filters.len(), 3, "{filters:?}");
    assert_eq!(
        filters[1]["resourceSubscriptions"],
        json!(["file:///a", "file:///b"])
    );
    assert_eq!(filters[2]["resourceSubscriptions"], json!(["file:///b"]));
    assert_eq!(filters[0]["toolsListChanged"], true, "{filters:?}");
    relay.close_stdin();
    relay.drain_to_eof(T);
}

/// `reverse --url`, the same for a handshake-era session: its updates come
/// on the session's GET stream.
#[test]
fn reverse_handshake_subscriptions_become_one_listen_toward_a_modern_server() {
    let (l, fake) = listening();
    let relay = reverse(&fake.url(), "modern");
    let mut http = relay.http();
    let mut init = initialize(json!(0));
    init["params"]["protocolVersion"] = json!(VERSION);
    let r = post(&mut http, None, &init);
    let sid = r
        .header("mcp-session-id")
        .expect("a relay session")
        .to_string();
    post(&mut http, Some(&sid), &initialized());
    let mut get = relay.http();
    get.send_request(
        "GET",
        "/mcp",
        &[
            ("Accept", "text/event-stream"),
            ("Mcp-Session-Id", &sid),
            ("MCP-Protocol-Version", VERSION),
        ],
        b"",
    )
    .expect("GET");
    let head = get.read_head(Instant::now() + T).expect("GET head");
    let mut stream = common::http::Sse::open(get, head);
    let a = post(
        &mut http,
        Some(&sid),
        &sub(1, "resources/subscribe", "file:///a"),
    );
    assert_eq!(
        a.rpc()["result"],
        json!({}),
        "{a:?}\n{}",
        relay.stderr_dump()
    );
    let ev = stream.expect_event(T, "the update").json();
    assert_eq!(ev["method"], "notifications/resources/updated", "{ev}");
    assert_eq!(ev["params"]["uri"], "file:///a", "{ev}");
    let u = post(
        &mut http,
        Some(&sid),
        &sub(2, "resources/unsubscribe", "file:///a"),
    );
    assert_eq!(u.rpc()["result"], json!({}), "{u:?}");
    wait_until("the listen closed", || l.closed.load(Ordering::SeqCst) == 1);
    assert_eq!(l.filters.lock().unwrap().len(), 1);
}

/// `forward --url`, a 2026-07-28 client bridged to a handshake-era server:
/// the server's `elicitation/create` on the call's stream becomes an
/// `InputRequiredResult` round, as over stdio.
#[test]
fn forward_bridged_elicitation_is_an_input_round() {
    let (_d, fake) = deferring();
    let mut relay = forward(&fake.url(), "legacy");
    relay.send(&discover(0));
    relay.expect_response(&json!(0), T);
    relay.send(&mode_call(1, "ask"));
    let v = relay.expect_response(&json!(1), T);
    assert_eq!(
        v["result"]["resultType"],
        "input_required",
        "{v}\n{}",
        relay.stderr_dump()
    );
    let key = v["result"]["inputRequests"]
        .as_object()
        .and_then(|o| o.keys().next().cloned());
    let mut retry = mode_call(2, "ask");
    retry["params"]["requestState"] = v["result"]["requestState"].clone();
    retry["params"]["inputResponses"] =
        json!({ key.unwrap_or_default(): {"action": "accept", "content": {"name": "Lin"}} });
    relay.send(&retry);
    let v = relay.expect_response(&json!(2), T);
    assert_eq!(v["result"]["content"][0]["text"], "answered: Lin", "{v}");
    relay.close_stdin();
    relay.drain_to_eof(T);
}

/// A call that finishes while its client is still answering the server's
/// question: the client's retry gets the call's result.
#[test]
fn reverse_bridged_call_finished_during_the_round_answers_the_retry() {
    let (_d, fake) = deferring();
    let relay = reverse_bridging(&fake.url());
    let mut http = relay.http();
    let v = modern_post(
        &mut http,
        &mode_call(1, "ask-then-done"),
        &[("Mcp-Name", "echo")],
    )
    .rpc();
    assert_eq!(
        v["result"]["resultType"],
        "input_required",
        "{v}\n{}",
        relay.stderr_dump()
    );
    let key = v["result"]["inputRequests"]
        .as_object()
        .and_then(|o| o.keys().next().cloned());
    let mut retry = mode_call(2, "ask-then-done");
    retry["params"]["requestState"] = v["result"]["requestState"].clone();
    retry["params"]["inputResponses"] = json!({ key.unwrap_or_default(): {"action": "decline"} });
    let r = modern_post(&mut http, &retry, &[("Mcp-Name", "echo")]);
    let v = r.rpc();
    assert_eq!(v["id"], 2, "{v}\n{}", relay.stderr_dump());
    assert_eq!(v["result"]["content"][0]["text"], "done anyway", "{v}");
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
}

/// A server flooding requests on a relay-owned session's GET stream while
/// it answers none of the relay's POSTs: the relay stops answering (each
/// answer is a POST) once 4096 exchanges are out, counted, instead of
/// queueing POSTs without bound.
#[test]
fn reverse_bridged_server_request_flood_is_not_answered_without_bound() {
    let (d, fake) = deferring();
    let relay = reverse_bridging(&fake.url());
    let mut http = relay.http();
    modern_post(&mut http, &mode_call(1, "plain"), &[("Mcp-Name", "echo")]);
    fake.wait_for("the bridge's GET stream", T, |s| {
        s.iter().any(|r| r.method == "GET")
    });
    d.hold_answers.store(true, Ordering::SeqCst);
    for i in 0..5_000 {
        assert!(
            d.on_get(&json!({"jsonrpc": "2.0", "id": format!("flood-{i}"),
                                 "method": "roots/list"}))
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let counted = loop {
        let m = relay.metrics_text();
        let n = m
            .lines()
            .find(|l| {
                l.starts_with("mcp_relay_http_upstream_limits_total")
                    && l.contains("\"era_server_requests\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if n >= 900 || Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(counted >= 900, "{counted}\n{}", relay.stderr_dump());
}

/// SIGTERM with a `subscriptions/listen` open on a relay-owned session: the
/// listen is ended with its closing result at once (it is not a request
/// the drain waits for), and the relay exits without waiting out the grace.
#[test]
fn reverse_open_listen_ends_at_shutdown_without_holding_the_drain() {
    let (_d, fake) = deferring();
    let relay = reverse_bridging(&fake.url());
    let mut http = relay.http();
    modern_post(&mut http, &mode_call(1, "plain"), &[("Mcp-Name", "echo")]);
    let mut sse = open_listen(&relay, 6, json!({"toolsListChanged": true}));
    sse.expect_event(T, "the acknowledgement");
    let t0 = Instant::now();
    relay.signal(libc::SIGTERM);
    let end = sse.expect_event(T, "the listen's closing result").json();
    assert_eq!(end["id"], 6, "{end}");
    assert_eq!(end["result"]["resultType"], "complete", "{end}");
    let status = relay.wait_exit(T);
    assert!(status.success(), "{status}");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "exit took {took:?}\n{}",
        relay.stderr_dump()
    );
}

/// `forward --url`: the host closing stdin with the relay's listen open
/// toward a modern-only server: the relay exits promptly (the listen is
/// not waited for).
#[test]
fn forward_exit_with_the_relays_listen_open_is_prompt() {
    let (l, fake) = listening();
    let mut relay = forward(&fake.url(), "modern");
    relay.send(&initialize(json!(0)));
    relay.expect_response(&json!(0), T);
    relay.send(&sub(1, "resources/subscribe", "file:///a"));
    relay.expect_response(&json!(1), T);
    wait_until("the listen", || l.filters.lock().unwrap().len() == 1);
    let t0 = Instant::now();
    relay.close_stdin();
    relay.drain_to_eof(T);
    let status = relay.wait_exit(T);
    assert!(status.success(), "{status}");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?}\n{}",
        relay.stderr_dump()
    );
    drop(fake);
}

/// Issue 13: a modern-only server's `InputRequiredResult` reached the
/// handshake-era host as it was. Now the relay sends the host the
/// `elicitation/create` of its era (the host declared `elicitation`),
/// retries the call with the answer (`inputResponses`, `requestState`),
/// and the host gets the final result as the answer to its call; a host
/// that did not declare the capability gets -32021.
#[test]
fn forward_handshake_client_gets_a_modern_servers_input_requests() {
    let fake = Fake::start(handler(modern_only));
    let mut relay = forward(&fake.url(), "modern");
    let mut init = initialize(json!(0));
    init["params"]["capabilities"] = json!({"elicitation": {}});
    relay.send(&init);
    relay.expect_response(&json!(0), T);
    relay.send(&initialized());
    relay.send(&common::call_with(
        json!(5),
        json!({"text": "q", "ask": true}),
        None,
    ));
    let ask = relay.expect_msg(T, "the relay's elicitation/create");
    assert_eq!(
        ask["method"],
        "elicitation/create",
        "{ask}\n{}",
        relay.stderr_dump()
    );
    assert_eq!(ask["params"]["message"], "about q?", "{ask}");
    relay.send(&json!({"jsonrpc": "2.0", "id": ask["id"],
                       "result": {"action": "accept", "content": {"answer": "yes"}}}));
    let r = relay.expect_response(&json!(5), T);
    assert_eq!(
        r["result"]["content"][0]["text"], "q / accept {\"answer\":\"yes\"}",
        "{r}"
    );
    let seen = fake.seen();
    let calls = posts_of(&seen, "tools/call");
    assert_eq!(calls.len(), 2, "{}", summaries(&seen));
    assert_eq!(calls[1].json()["params"]["requestState"], "ask-state");
    assert!(
        seen.iter()
            .all(|r| !r.json().to_string().contains("mcp-relay-input")),
        "the host's answer never reaches the server: {}",
        summaries(&seen)
    );
    relay.close_stdin();
    relay.drain_to_eof(T);

    // Without the capability: a clear error for the call.
    let mut relay = forward(&fake.url(), "modern");
    relay.send(&initialize(json!(0)));
    relay.expect_response(&json!(0), T);
    relay.send(&common::call_with(
        json!(6),
        json!({"text": "q", "ask": true}),
        None,
    ));
    let r = relay.expect_response(&json!(6), T);
    assert_eq!(r["error"]["code"], -32021, "{r}");
    relay.close_stdin();
    relay.drain_to_eof(T);
}

/// Issue 13, `reverse --url`: as in forward, a modern-only server's
/// `InputRequiredResult` becomes an `elicitation/create` on the
/// handshake-era client's call stream; the client's answer (a POSTed
/// response) makes the relay retry the call, whose result ends the stream.
#[test]
fn reverse_handshake_client_gets_a_modern_servers_input_requests() {
    let fake = Fake::start(handler(modern_only));
    let relay = reverse(&fake.url(), "modern");
    let mut http = relay.http();
    let mut init = initialize(json!(0));
    init["params"]["protocolVersion"] = json!(VERSION);
    init["params"]["capabilities"] = json!({"elicitation": {}});
    let r = post(&mut http, None, &init);
    assert_eq!(r.status(), 200, "{r:?}\n{}", relay.stderr_dump());
    let sid = r.header("mcp-session-id").expect("sid").to_string();
    post(&mut http, Some(&sid), &initialized());
    let call = common::call_with(json!(5), json!({"text": "q", "ask": true}), None);
    http.send_request(
        "POST",
        "/mcp",
        &common::http::mcp_headers(Some(&sid)),
        &serde_json::to_vec(&call).unwrap(),
    )
    .expect("send");
    let head = http.read_head(Instant::now() + T).expect("head");
    let mut sse = common::http::Sse::open(http, head);
    let ask = sse.expect_event(T, "the relay's elicitation/create").json();
    assert_eq!(
        ask["method"],
        "elicitation/create",
        "{ask}\n{}",
        relay.stderr_dump()
    );
    let mut h2 = relay.http();
    let a = post(
        &mut h2,
        Some(&sid),
        &json!({"jsonrpc": "2.0", "id": ask["id"],
                "result": {"action": "accept", "content": {"answer": "yes"}}}),
    );
    assert_eq!(a.status(), 202, "{a:?}");
    let fin = sse.expect_event(T, "the call's result").json();
    assert_eq!(fin["id"], 5, "{fin}");
    assert_eq!(
        fin["result"]["content"][0]["text"], "q / accept {\"answer\":\"yes\"}",
        "{fin}"
    );
    let seen = fake.seen();
    assert_eq!(
        posts_of(&seen, "tools/call").len(),
        2,
        "{}",
        summaries(&seen)
    );
    assert!(
        seen.iter()
            .all(|r| !r.json().to_string().contains("mcp-relay-input")),
        "{}",
        summaries(&seen)
    );
}
