//! Issue 11 ("Isolation and bounds"), `reverse` mode, under floods: a client
//! sending without end on a busy connection (class 3, client side) and a
//! stdio child that stops reading its stdin (class 4).
//!
//! Every test measures the relay's memory with `rss_kib` (resident now and
//! peak, from /proc), asserts a bound, and prints the figures; every test
//! checks that a fresh session is answered within a second during the
//! attack, and that every answer it gets is its own (no cross-session
//! delivery). Every read and write has a deadline; every loop is bounded.

mod common;

use std::ffi::OsStr;
use std::io::{self, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::http::{ACCEPT_BOTH, Http, IO, Response, Sse, mcp_headers};
use common::relay::Relay;
use common::{
    call, call_with, echo_server, echo_text, error_kind, initialize, initialized, rss_kib,
};

/// What a fresh session must be answered within, during an attack.
const FRESH: Duration = Duration::from_secs(1);

const MIB: u64 = 1024 * 1024;

// ============================================================================
// Helpers
// ============================================================================

/// POSTs `msg` to `path` on `http`, with the MCP headers.
fn post_to(
    http: &mut Http,
    path: &str,
    sid: Option<&str>,
    msg: &Value,
    timeout: Duration,
) -> Result<Response, String> {
    let body = serde_json::to_vec(msg).expect("serialise");
    post_raw(http, path, sid, &body, timeout)
}

fn post_raw(
    http: &mut Http,
    path: &str,
    sid: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, String> {
    http.try_request("POST", path, &mcp_headers(sid), body, timeout)
        .map_err(|e| format!("POST {path}: no response within {timeout:?} ({e:?})"))
}

/// `initialize` + `notifications/initialized` on `path`; the session id.
fn open_session(http: &mut Http, path: &str, timeout: Duration) -> Result<String, String> {
    let resp = post_to(http, path, None, &initialize(json!(0)), timeout)?;
    if resp.status() != 200 {
        return Err(format!("initialize: {resp:?}"));
    }
    let sid = resp
        .header("mcp-session-id")
        .ok_or_else(|| format!("initialize without Mcp-Session-Id: {resp:?}"))?
        .to_string();
    let reply = resp.rpc();
    if reply["id"] != 0 || !reply["result"]["serverInfo"].is_object() {
        return Err(format!("initialize reply: {reply}"));
    }
    let ack = post_to(http, path, Some(&sid), &initialized(), timeout)?;
    if ack.status() != 202 {
        return Err(format!("notifications/initialized: {ack:?}"));
    }
    Ok(sid)
}

/// A fresh session on `path`: initialize, then one `tools/call` whose reply
/// must be its own. Panics unless all of it is answered within [`FRESH`];
/// returns how long it took.
fn fresh_session_answered(port: u16, path: &str, text: &str) -> Duration {
    let t0 = Instant::now();
    let mut http = Http::connect(port);
    let sid = open_session(&mut http, path, FRESH)
        .unwrap_or_else(|e| panic!("fresh session on {path} during the attack: {e}"));
    let left = FRESH
        .saturating_sub(t0.elapsed())
        .max(Duration::from_millis(1));
    let resp = post_to(&mut http, path, Some(&sid), &call(json!(77), text), left)
        .unwrap_or_else(|e| panic!("fresh session's call on {path} during the attack: {e}"));
    assert_eq!(resp.status(), 200, "fresh session's call: {resp:?}");
    let reply = resp.rpc();
    assert_eq!(reply["id"], 77, "someone else's reply: {reply}");
    assert_eq!(
        echo_text(&reply),
        Some(text),
        "someone else's reply: {reply}"
    );
    let took = t0.elapsed();
    assert!(
        took <= FRESH,
        "fresh session answered in {took:?} (> {FRESH:?})"
    );
    took
}

/// The relay's resident and peak memory, in KiB.
fn rss(relay: &Relay) -> (u64, u64) {
    rss_kib(relay.pid as u32).expect("relay's /proc/PID/status")
}

/// Writes junk on `s` until `total` bytes are sent, `stop` is set, or one
/// write has been blocked for `stall` (the relay stopped reading: TCP
/// pushes back). Returns the bytes the relay's side accepted.
fn flood(mut s: TcpStream, total: u64, stall: Duration, stop: &AtomicBool) -> u64 {
    s.set_write_timeout(Some(stall)).expect("write timeout");
    let chunk = vec![b'x'; 256 * 1024];
    let mut sent = 0u64;
    while sent < total && !stop.load(Ordering::Relaxed) {
        match s.write(&chunk) {
            Ok(0) => break,
            Ok(n) => sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // WouldBlock / TimedOut: pushed back; anything else: closed.
            Err(_) => break,
        }
    }
    sent
}

/// A `reverse --config` relay: a JSON document written to a temp file.
fn start_config(test: &str, doc: Value) -> (Relay, PathBuf) {
    let path = std::env::temp_dir().join(format!(
        "mcp-relay-{test}-{}-{}.json",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap()).expect("write config");
    let relay = Relay::reverse("cfg")
        .args([OsStr::new("--config"), path.as_os_str()])
        .start();
    (relay, path)
}

fn metric(relay: &Relay, name_and_labels: &str) -> u64 {
    relay
        .metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

// ============================================================================
// Class 3: input from a client on a busy connection is capped
// ============================================================================

/// Bytes the flood tries to send (the attack sent 512 MiB).
const FLOOD_BYTES: u64 = 256 * MIB;

/// The relay may grow by this much under the input flood: the cap (1 MiB
/// per connection, see docs/configuration.md "Fixed limits (reverse)") and
/// the parser's buffer growth, with room for allocator slack.
const INPUT_FLOOD_RSS_BOUND_KIB: u64 = 32 * 1024;

/// Floods `busy` (a connection the relay is not taking requests from),
/// checking fresh sessions on `path` while it lasts; asserts the memory
/// bound and returns the bytes the relay accepted.
fn input_flood(relay: &Relay, busy: TcpStream, what: &str) -> u64 {
    let (base, _) = rss(relay);
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || flood(busy, FLOOD_BYTES, Duration::from_secs(2), &stop))
    };
    // Fresh sessions during the attack, each answered within a second.
    let mut took = Vec::new();
    for i in 0..3 {
        thread::sleep(Duration::from_millis(150));
        took.push(fresh_session_answered(
            relay.port,
            "/mcp",
            &format!("fresh {i}"),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !flooding.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flooding.join().expect("flood thread");
    let (now, peak) = rss(relay);
    let grew = peak.saturating_sub(base);
    eprintln!(
        "class 3 ({what}): sent {} MiB of {} MiB; relay RSS {base} KiB before, {now} KiB after, \
         peak {peak} KiB (grew {grew} KiB, bound {INPUT_FLOOD_RSS_BOUND_KIB} KiB); \
         fresh sessions answered in {took:?}",
        sent / MIB,
        FLOOD_BYTES / MIB
    );
    assert!(
        grew < INPUT_FLOOD_RSS_BOUND_KIB,
        "{what}: the relay grew by {grew} KiB under a {} MiB input flood (bound \
         {INPUT_FLOOD_RSS_BOUND_KIB} KiB)",
        sent / MIB
    );
    sent
}

/// Class 3: bytes sent behind an open GET stream are not buffered without
/// limit (512 MiB took the relay from 3 MB to 530 MB). The relay stops
/// reading the connection at its input cap, TCP pushes back on the client,
/// the stream stays open, and other sessions are served.
#[test]
fn class3_input_behind_a_get_stream_is_capped() {
    let _flood = common::one_flood_at_a_time();
    let relay = Relay::reverse("echo").echo_server(&[]).start();
    let mut http = Http::connect(relay.port);
    let sid = open_session(&mut http, "/mcp", IO).expect("session");
    let mut get = Http::connect(relay.port);
    let mut headers = mcp_headers(Some(&sid));
    headers.retain(|(n, _)| *n != "Content-Type");
    headers.retain(|(n, _)| *n != "Accept");
    headers.push(("Accept", "text/event-stream"));
    get.send_request("GET", "/mcp", &headers, b"")
        .expect("send GET");
    let head = get.read_head(Instant::now() + IO).expect("GET stream head");
    let mut stream = Sse::open(get, head);
    let busy = stream.http.s.try_clone().expect("clone");
    let sent = input_flood(&relay, busy, "behind a GET stream");
    assert!(
        sent < FLOOD_BYTES,
        "the relay read everything ({sent} bytes)"
    );
    // The session and its stream still work: a call on the session is
    // answered, and the stream is still open (not dropped by the relay).
    let resp = post_to(
        &mut http,
        "/mcp",
        Some(&sid),
        &call(json!(5), "still here"),
        IO,
    )
    .expect("call after the flood");
    assert_eq!(echo_text(&resp.rpc()), Some("still here"));
    assert!(
        !stream
            .http
            .closed_by_peer(Instant::now() + Duration::from_millis(200)),
        "the relay dropped the GET stream instead of pushing back"
    );
    assert!(
        metric(&relay, "mcp_relay_client_input_paused_total") >= 1,
        "no pause counted:\n{}",
        relay.metrics_text()
    );
}

/// Class 3: bytes sent after a POST that is still waiting for its answer
/// are not buffered without limit either; once the answer is out the relay
/// reads again (the junk then gets its 400 or 431).
#[test]
fn class3_input_behind_a_waiting_post_is_capped() {
    let _flood = common::one_flood_at_a_time();
    let relay = Relay::reverse("echo")
        .args(["--response-timeout", "30s"])
        .echo_server(&[])
        .start();
    let mut http = Http::connect(relay.port);
    let sid = open_session(&mut http, "/mcp", IO).expect("session");
    // A call the server never answers: the connection waits.
    let hang = call_with(json!(9), json!({"text": "x", "hang": true}), None);
    let mut headers = mcp_headers(Some(&sid));
    headers.push(("Connection", "keep-alive"));
    http.send_request(
        "POST",
        "/mcp",
        &headers,
        &serde_json::to_vec(&hang).unwrap(),
    )
    .expect("send the hanging call");
    thread::sleep(Duration::from_millis(100));
    let busy = http.s.try_clone().expect("clone");
    let sent = input_flood(&relay, busy, "behind a waiting POST");
    assert!(
        sent < FLOOD_BYTES,
        "the relay read everything ({sent} bytes)"
    );
    // DELETE the session from elsewhere: the waiting call gets its one
    // answer, then the junk behind it a 4xx (the relay reads again).
    let mut other = Http::connect(relay.port);
    let del = other.request("DELETE", "/mcp", &mcp_headers(Some(&sid)), b"");
    assert_eq!(del.status(), 200, "DELETE: {del:?}");
    let first = http
        .read_response(Instant::now() + IO)
        .expect("the waiting call's answer");
    let reply = first.rpc();
    assert_eq!(reply["id"], 9, "someone else's reply: {reply}");
    assert_eq!(error_kind(&reply), Some("upstream_closed"), "{reply}");
    let second = http
        .read_response(Instant::now() + IO)
        .expect("the junk's answer");
    assert!(
        matches!(second.status(), 400 | 431),
        "the junk after the answer: {second:?}"
    );
}

/// Class 3: the cap pauses reading, it does not lose it. 40 pipelined
/// requests of 100 KiB each (4 MB, four times the cap) sent at once behind
/// one another are all answered, in order, each with its own reply.
#[test]
fn class3_pipelined_requests_beyond_the_cap_are_all_answered_in_order() {
    let relay = Relay::reverse("echo").echo_server(&[]).start();
    let mut http = Http::connect(relay.port);
    let sid = open_session(&mut http, "/mcp", IO).expect("session");
    let n = 40;
    let pad = "p".repeat(100 * 1024);
    let mut bytes = Vec::new();
    let headers = mcp_headers(Some(&sid));
    for i in 0..n {
        let body = serde_json::to_vec(&call(json!(1000 + i), &format!("{i}:{pad}"))).unwrap();
        let mut req = "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n".to_string();
        for (k, v) in &headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        bytes.extend_from_slice(req.as_bytes());
        bytes.extend_from_slice(&body);
    }
    let mut w = http.s.try_clone().expect("clone");
    w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let writer = thread::spawn(move || w.write_all(&bytes));
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..n {
        let resp = http
            .read_response(deadline)
            .unwrap_or_else(|e| panic!("pipelined request {i}: no answer ({e:?})"));
        assert_eq!(resp.status(), 200, "pipelined request {i}: {resp:?}");
        let reply = resp.rpc();
        assert_eq!(reply["id"], 1000 + i, "answers out of order");
        let text = echo_text(&reply).unwrap_or_default();
        assert!(
            text.starts_with(&format!("{i}:")) && text.len() == pad.len() + format!("{i}:").len(),
            "pipelined request {i}: wrong reply"
        );
    }
    writer
        .join()
        .expect("writer")
        .expect("pipelined requests written");
}

// ============================================================================
// Class 4: the write queue toward a child that does not read is capped
// ============================================================================

/// The relay may grow by this much under the notification flood: the
/// per-process queue cap (4 MiB, docs/configuration.md "Fixed limits
/// (reverse)"), one 3 MiB body being parsed and copied, allocator slack.
const QUEUE_FLOOD_RSS_BOUND_KIB: u64 = 48 * 1024;

/// Class 4, in `mode`: 100 POSTed notifications of 3 MiB each toward a
/// child that stopped reading (100 × 3 MiB took the relay to 320 MB, 202
/// each). The queue toward the child is capped: past it, notifications get
/// 503 with Retry-After and requests a JSON-RPC `upstream_busy` error (one
/// answer each, at once); memory stays bounded; another upstream's fresh
/// session, and in shared mode a fresh session on the jammed one too, is
/// answered within a second.
fn class4_child_not_reading(mode: &str) {
    let _flood = common::one_flood_at_a_time();
    let echo = echo_server().to_str().expect("utf-8 path").to_string();
    let (relay, cfg) = start_config(
        &format!("class4-{mode}"),
        json!({
            "response_timeout": "30s",
            "upstreams": {
                "jam": {"command": [echo.clone(), "--no-read"], "pool": mode,
                        "max_connections": if mode == "shared" { 1 } else { 4 },
                        "min_idle": 1},
                "echo": {"command": [echo], "min_idle": 1}
            }
        }),
    );
    let mut http = Http::connect(relay.port);
    let sid = open_session(&mut http, "/mcp/jam", IO).expect("session on jam");
    // Warm the healthy upstream so the baseline includes its process.
    fresh_session_answered(relay.port, "/mcp/echo", "warm");
    let (base, _) = rss(&relay);

    let pad = "n".repeat(3 * MIB as usize);
    let note = serde_json::to_vec(&json!({
        "jsonrpc": "2.0", "method": "notifications/flood", "params": {"pad": pad}
    }))
    .unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let flooding = {
        let (accepted, refused, sid) = (Arc::clone(&accepted), Arc::clone(&refused), sid.clone());
        let port = relay.port;
        thread::spawn(move || {
            let mut h = Http::connect(port);
            let mut retry_after = true;
            for _ in 0..100 {
                let resp = post_raw(&mut h, "/mcp/jam", Some(&sid), &note, IO)
                    .unwrap_or_else(|e| panic!("notification during the flood: {e}"));
                match resp.status() {
                    202 => accepted.fetch_add(1, Ordering::Relaxed),
                    503 => {
                        retry_after &= resp.header("retry-after").is_some();
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    s => panic!("notification answered {s}: {resp:?}"),
                };
                if resp.head.closes() {
                    h = Http::connect(port);
                }
            }
            retry_after
        })
    };
    // During the attack: the healthy upstream answers fresh sessions.
    let mut took = Vec::new();
    for i in 0..3 {
        thread::sleep(Duration::from_millis(200));
        took.push(fresh_session_answered(
            relay.port,
            "/mcp/echo",
            &format!("healthy {i}"),
        ));
    }
    let retry_after = flooding.join().expect("flood thread");
    let (acc, refd) = (
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );

    let (now, peak) = rss(&relay);
    let grew = peak.saturating_sub(base);
    eprintln!(
        "class 4 ({mode}): {acc} notifications accepted (202), {refd} refused (503); \
         relay RSS {base} KiB before, {now} KiB after, peak {peak} KiB (grew {grew} KiB, \
         bound {QUEUE_FLOOD_RSS_BOUND_KIB} KiB); healthy fresh sessions answered in {took:?}"
    );
    assert!(refd > 0, "every notification was accepted ({acc})");
    assert!(retry_after, "a 503 without Retry-After");
    assert!(
        grew < QUEUE_FLOOD_RSS_BOUND_KIB,
        "the relay grew by {grew} KiB (bound {QUEUE_FLOOD_RSS_BOUND_KIB} KiB)"
    );

    // A request toward the jammed process that its queue cannot take (2 MiB
    // on top of the 3 MiB queued) gets one answer, at once.
    let big = "b".repeat(2 * MIB as usize);
    let t0 = Instant::now();
    let mut h2 = Http::connect(relay.port);
    let resp = post_to(
        &mut h2,
        "/mcp/jam",
        Some(&sid),
        &call(json!(41), &big),
        FRESH,
    )
    .unwrap_or_else(|e| panic!("a request toward the jammed child: {e}"));
    let reply = resp.rpc();
    assert_eq!(reply["id"], 41, "someone else's reply: {reply}");
    assert_eq!(error_kind(&reply), Some("upstream_busy"), "{reply}");
    eprintln!(
        "class 4 ({mode}): a request toward the jammed child answered in {:?}",
        t0.elapsed()
    );
    // The same id again is not a duplicate: the refused request left no
    // entry behind (and, in shared mode, no id mapping).
    let resp = post_to(
        &mut h2,
        "/mcp/jam",
        Some(&sid),
        &call(json!(41), &big),
        FRESH,
    )
    .unwrap_or_else(|e| panic!("the refused id again: {e}"));
    let reply = resp.rpc();
    assert_eq!(error_kind(&reply), Some("upstream_busy"), "{reply}");

    if mode == "shared" {
        // A fresh session on the jammed upstream shares the process: it is
        // answered within a second too (its initialize from the cache, its
        // call with upstream_busy), and only with its own ids.
        let t0 = Instant::now();
        let mut h3 = Http::connect(relay.port);
        let sid3 = open_session(&mut h3, "/mcp/jam", FRESH)
            .unwrap_or_else(|e| panic!("fresh session on the jammed upstream: {e}"));
        assert_ne!(sid3, sid);
        let resp = post_to(
            &mut h3,
            "/mcp/jam",
            Some(&sid3),
            &call(json!(7), &big),
            FRESH,
        )
        .unwrap_or_else(|e| panic!("fresh session's call on the jammed upstream: {e}"));
        let reply = resp.rpc();
        assert_eq!(reply["id"], 7, "someone else's reply: {reply}");
        assert_eq!(error_kind(&reply), Some("upstream_busy"), "{reply}");
        assert!(t0.elapsed() <= FRESH, "took {:?}", t0.elapsed());

        // A batch (2025-03-26) the queue cannot take is refused whole with
        // 503, and none of its requests stays in flight.
        let mut h4 = Http::connect(relay.port);
        let mut init = initialize(json!(0));
        init["params"]["protocolVersion"] = json!("2025-03-26");
        let resp = post_to(&mut h4, "/mcp/jam", None, &init, FRESH).expect("2025-03-26 session");
        let sid4 = resp
            .header("mcp-session-id")
            .expect("session id")
            .to_string();
        let headers = [
            ("Content-Type", "application/json"),
            ("Accept", ACCEPT_BOTH),
            ("Mcp-Session-Id", sid4.as_str()),
            ("MCP-Protocol-Version", "2025-03-26"),
        ];
        let batch = json!([call(json!(8), &big), {"jsonrpc": "2.0", "method": "notifications/x"}]);
        let resp = h4
            .try_request(
                "POST",
                "/mcp/jam",
                &headers,
                &serde_json::to_vec(&batch).unwrap(),
                FRESH,
            )
            .unwrap_or_else(|e| panic!("a batch toward the jammed child: {e:?}"));
        assert_eq!(resp.status(), 503, "{resp:?}");
        assert!(resp.header("retry-after").is_some(), "{resp:?}");
        let single = serde_json::to_vec(&call(json!(8), &big)).unwrap();
        let resp = h4
            .try_request("POST", "/mcp/jam", &headers, &single, FRESH)
            .unwrap_or_else(|e| panic!("the batch's id again: {e:?}"));
        let reply = resp.rpc();
        assert_eq!(reply["id"], 8, "someone else's reply: {reply}");
        assert_eq!(error_kind(&reply), Some("upstream_busy"), "{reply}");
    }
    assert!(
        metric(
            &relay,
            "mcp_relay_upstream_queue_full_total{upstream=\"jam\"}"
        ) >= refd,
        "refusals not counted:\n{}",
        relay.metrics_text()
    );
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn class4_child_not_reading_session_pool() {
    class4_child_not_reading("session");
}

#[test]
fn class4_child_not_reading_shared_pool() {
    class4_child_not_reading("shared");
}
