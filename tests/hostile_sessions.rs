//! Issue 11 ("Isolation and bounds"), the session classes: hostile clients
//! and hostile stdio servers (`examples/echo_server.rs` switches) against a
//! real relay, in the modes where each defect lived.
//!
//! - class 7, ghost sessions: waiters whose clients left leave the queue;
//! - class 8, a closed 2026-07-28 request is cancelled upstream and its
//!   process released at once;
//! - class 9, shared pool: a log is delivered only to a session it can be
//!   attributed to;
//! - class 10, shared pool: no id of one session's namespace reaches the
//!   server untranslated; request-shaped notifications are invalid;
//! - class 13 (in part): re-spelled numeric ids are matched by value and the
//!   client's spelling restored; nested or empty batches from a server are
//!   rejected.
//!
//! Every read has a deadline and every loop is bounded; the relay and its
//! servers are reaped by `Relay`'s Drop.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::hostile::{Attack, Hostile};
use common::http::{
    Http, IO, Response, Sse, SseNext, VERSION, mcp_headers, modern_call_headers, post,
};
use common::relay::{Recv, Relay};
use common::{TempFile, call, call_with, echo_text, error_kind, initialize, initialized, rss_kib};

const NAME: &str = "echo";

fn start(args: &[&str], server_args: &[&str]) -> Relay {
    Relay::reverse(NAME)
        .args(args)
        .echo_server(server_args)
        .start()
}

/// A session on its own keep-alive connection.
struct Session {
    http: Http,
    sid: String,
}

impl Session {
    fn open(port: u16) -> Session {
        Session::try_open(port, IO).unwrap_or_else(|e| panic!("initialize: {e}"))
    }

    fn try_open(port: u16, timeout: Duration) -> Result<Session, String> {
        let mut http = Http::connect(port);
        let body = serde_json::to_vec(&initialize(json!(0))).expect("json");
        let resp = http
            .try_request("POST", "/mcp", &mcp_headers(None), &body, timeout)
            .map_err(|e| format!("initialize: no response within {timeout:?} ({e:?})"))?;
        if resp.status() != 200 {
            return Err(format!("initialize: {resp:?}"));
        }
        let sid = resp
            .header("mcp-session-id")
            .ok_or_else(|| format!("no Mcp-Session-Id: {resp:?}"))?
            .to_string();
        let mut s = Session { http, sid };
        let ack = s.post(&initialized());
        assert_eq!(ack.status(), 202, "notifications/initialized: {ack:?}");
        Ok(s)
    }

    fn post(&mut self, msg: &Value) -> Response {
        post(&mut self.http, Some(&self.sid), msg)
    }

    /// POSTs raw bytes as the body.
    fn post_raw(&mut self, body: &str) -> Response {
        self.http.request(
            "POST",
            "/mcp",
            &mcp_headers(Some(&self.sid)),
            body.as_bytes(),
        )
    }

    /// Sends a request on a new connection without waiting for the answer.
    fn send_on_new(&self, port: u16, msg: &Value) -> Http {
        let mut h = Http::connect(port);
        let body = serde_json::to_vec(msg).expect("json");
        h.send_request("POST", "/mcp", &mcp_headers(Some(&self.sid)), &body)
            .expect("send");
        h
    }

    fn get_stream(&self, port: u16) -> Sse {
        let mut h = Http::connect(port);
        h.send_request(
            "GET",
            "/mcp",
            &[
                ("Accept", "text/event-stream"),
                ("Mcp-Session-Id", &self.sid),
                ("MCP-Protocol-Version", VERSION),
            ],
            b"",
        )
        .expect("send GET");
        let head = h.read_head(Instant::now() + IO).expect("GET stream head");
        Sse::open(h, head)
    }

    fn delete(&mut self) {
        let r = self.http.request(
            "DELETE",
            "/mcp",
            &[
                ("Mcp-Session-Id", &self.sid),
                ("MCP-Protocol-Version", VERSION),
            ],
            b"",
        );
        assert_eq!(r.status(), 200, "DELETE: {r:?}");
    }
}

fn rss(relay: &Relay) -> (u64, u64) {
    rss_kib(relay.pid as u32).expect("relay alive")
}

/// Headers of a 2026-07-28 stateless `tools/call` of `echo`.
fn stateless_headers() -> Vec<(&'static str, &'static str)> {
    modern_call_headers("echo")
}

// ============================================================================
// Class 7: ghost sessions
// ============================================================================

/// Session mode, one process. Forty clients POST `initialize` while the
/// process is taken and leave (close their connection) while queued. When
/// the process frees up, a real client queued behind them must get it at
/// once. Before the fix the waiters stayed queued, the freed process went to
/// the first ghost (which then held it for --session-idle-timeout), and the
/// real client waited out its queue timeout.
#[test]
fn class7_ghost_waiters_leave_the_queue() {
    const GHOSTS: usize = 40;
    let relay = start(
        &[
            "--max-connections",
            "1",
            "--max-waiting",
            "64",
            "--queue-timeout",
            "20s",
            "--session-reclaim-age",
            "never",
        ],
        &[],
    );
    let port = relay.port;
    let mut holder = Session::open(port);
    let before = rss(&relay);
    let init = serde_json::to_vec(&initialize(json!("ghost"))).expect("json");
    for _ in 0..GHOSTS {
        let mut h = Http::connect(port);
        h.send_request("POST", "/mcp", &mcp_headers(None), &init)
            .expect("send");
        // Give the relay time to queue it, then leave (FIN).
        thread::sleep(Duration::from_millis(5));
        drop(h);
    }
    thread::sleep(Duration::from_millis(300));
    let mut real = Http::connect(port);
    real.send_request("POST", "/mcp", &mcp_headers(None), &init)
        .expect("send");
    thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    holder.delete();
    let resp = real.read_response(t0 + Duration::from_secs(1));
    let took = t0.elapsed();
    let after = rss(&relay);
    eprintln!(
        "class 7: {GHOSTS} ghost waiters; RSS {} KiB before, {} KiB after (peak {} KiB); \
         the real client's initialize answered after {took:?}",
        before.0, after.0, after.1
    );
    let resp = resp.unwrap_or_else(|e| {
        panic!(
            "a real client queued behind {GHOSTS} departed ones was not served within 1 s \
             of the process freeing up ({e:?})\n{}",
            relay.stderr_tail(40)
        )
    });
    assert_eq!(resp.status(), 200, "{resp:?}");
    assert!(resp.header("mcp-session-id").is_some(), "{resp:?}");
    assert!(
        after.0 < before.0 + 16 * 1024,
        "RSS grew from {} to {} KiB",
        before.0,
        after.0
    );
    let gone = relay.metric("mcp_relay_requests_total{outcome=\"client_gone\"}");
    assert!(gone >= GHOSTS as f64, "client_gone counted {gone} times");
    let waiting = relay.metric(&format!("mcp_relay_pool_waiting{{upstream=\"{NAME}\"}}"));
    assert_eq!(waiting, 0.0, "nobody should be left waiting");
}

// ============================================================================
// Class 8: stateless requests cancelled on close
// ============================================================================

/// Thirty 2026-07-28 requests that never get an answer, their connections
/// closed by the clients: each one that reached a process is cancelled
/// (`notifications/cancelled` seen by the server) and its process released
/// at once, the others leave the queue, and a new session is served within
/// a second. Before the fix the processes stayed leased until
/// --response-timeout and every new session was locked out.
#[test]
fn class8_closed_stateless_requests_are_cancelled_and_released() {
    const REQUESTS: usize = 30;
    let log = TempFile::new("class8", "server-log");
    let relay = start(
        &[
            "--max-connections",
            "2",
            "--max-waiting",
            "64",
            "--queue-timeout",
            "20s",
            "--response-timeout",
            "120s",
        ],
        &["--log", log.path_str()],
    );
    let port = relay.port;
    let before = rss(&relay);
    let mut conns = Vec::new();
    for i in 0..REQUESTS {
        let mut h = Http::connect(port);
        let body = serde_json::to_vec(&call_with(
            json!(format!("st-{i}")),
            json!({"text": "never", "hang": true}),
            None,
        ))
        .expect("json");
        h.send_request("POST", "/mcp", &stateless_headers(), &body)
            .expect("send");
        conns.push(h);
    }
    log.wait_for(SHORT2, "two stateless calls reaching processes", |t| {
        t.matches("\"tools/call\"").count() >= 2
    });
    drop(conns);
    let t0 = Instant::now();
    let fresh = Session::try_open(port, Duration::from_secs(1));
    let took = t0.elapsed();
    let after = rss(&relay);
    eprintln!(
        "class 8: {REQUESTS} closed stateless requests; RSS {} KiB before, {} KiB after \
         (peak {} KiB); a new session answered after {took:?}",
        before.0, after.0, after.1
    );
    if let Err(e) = fresh {
        panic!(
            "no new session within 1 s after {REQUESTS} stateless requests were closed: {e}\n{}",
            relay.stderr_tail(40)
        );
    }
    // Each call a server saw was cancelled by its id.
    let text = log.wait_for(SHORT2, "the cancellations", |t| {
        let calls = t.matches("\"tools/call\"").count();
        calls >= 2 && t.matches("notifications/cancelled").count() >= calls
    });
    for l in text.lines().filter(|l| l.contains("\"tools/call\"")) {
        let v: Value = serde_json::from_str(l).expect("logged line is JSON");
        let id = v["id"].to_string();
        assert!(
            text.lines().any(|c| c.contains("notifications/cancelled")
                && c.contains(&format!("\"requestId\":{id}"))),
            "call {id} was not cancelled:\n{text}"
        );
    }
    assert!(
        after.0 < before.0 + 16 * 1024,
        "RSS grew from {} to {} KiB",
        before.0,
        after.0
    );
}

const SHORT2: Duration = Duration::from_secs(5);

// ============================================================================
// Class 9: shared pool, logs only to their session
// ============================================================================

/// Shared mode, one process. While B has a call in flight and its GET
/// stream open, A's call makes the server log A's secret. With two sessions
/// in flight nobody can tell whose log it is: it must not reach B (before
/// the fix it was broadcast to every session). It is dropped and counted.
/// With A alone in flight, the log is A's and reaches A.
#[test]
fn class9_shared_logs_never_reach_another_session() {
    let relay = start(
        &["--pool", "shared", "--max-connections", "1"],
        &["--log-during-call"],
    );
    let port = relay.port;
    let mut a = Session::open(port);
    let mut b = Session::open(port);
    let mut stream = b.get_stream(port);
    let hang = b.send_on_new(
        port,
        &call_with(json!("b-hang"), json!({"text": "b", "hang": true}), None),
    );
    thread::sleep(Duration::from_millis(200));
    let resp = a.post(&call(json!(1), "secret-of-A-1"));
    assert_eq!(resp.status(), 200, "{resp:?}");
    let reply = resp.rpc();
    assert_eq!(echo_text(&reply), Some("secret-of-A-1"), "{reply}");
    let deadline = Instant::now() + Duration::from_millis(500);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match stream.next(left) {
            SseNext::Event(ev) => assert!(
                !ev.data.contains("secret-of-A"),
                "A's log reached session B: {}",
                ev.data
            ),
            SseNext::Timeout => break,
            other => panic!("B's stream: {other:?}"),
        }
    }
    let dropped =
        relay.metric("mcp_relay_messages_dropped_total{reason=\"unattributed_notification\"}");
    assert!(
        dropped >= 1.0,
        "the unattributable log was not counted: {dropped}"
    );
    // B leaves; A alone in flight gets its own log.
    drop(hang);
    b.delete();
    drop(stream);
    let resp = a.post(&call(json!(2), "secret-of-A-2"));
    assert_eq!(resp.status(), 200, "{resp:?}");
    let events = resp.events();
    assert!(
        events
            .iter()
            .any(|e| e.data.contains("log of a call: secret-of-A-2")),
        "A's own log did not reach A: {events:?}"
    );
}

// ============================================================================
// Class 10: shared pool, no raw upstream id
// ============================================================================

/// A `notifications/cancelled` with an `id` (request-shaped) is not a valid
/// message: -32600, in every mode. Before the fix, shared mode sent it on
/// with its `requestId` untranslated, naming another session's upstream id.
/// A well-formed cancel naming a request that is not this session's is
/// dropped and counted; the server never sees either.
/// Session A with a call the server never answers: A, the connection the
/// call waits on, and the call's id as the server saw it (the mux's, in
/// the shared pool).
fn a_call_hanging(port: u16, log: &TempFile) -> (Session, Http, String) {
    let a = Session::open(port);
    let hang = a.send_on_new(
        port,
        &call_with(json!("a-hang"), json!({"text": "a", "hang": true}), None),
    );
    let text = log.wait_for(SHORT2, "A's call", |t| t.contains("\"tools/call\""));
    let call_line = text
        .lines()
        .find(|l| l.contains("\"tools/call\""))
        .expect("call line");
    let id = serde_json::from_str::<Value>(call_line).expect("json")["id"].to_string();
    (a, hang, id)
}

#[test]
fn class10_foreign_request_ids_never_reach_the_server() {
    for mode in ["shared", "session"] {
        let log = TempFile::new("class10", mode);
        let relay = start(
            &["--pool", mode, "--max-connections", "2"],
            &["--log", log.path_str()],
        );
        let port = relay.port;
        let (_a, _hang, upstream_id) = a_call_hanging(port, &log);
        let mut b = Session::open(port);
        let shaped = format!(
            r#"{{"jsonrpc":"2.0","id":77,"method":"notifications/cancelled","params":{{"requestId":{upstream_id}}}}}"#
        );
        let resp = b.post_raw(&shaped);
        let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        assert_eq!(
            v.pointer("/error/code"),
            Some(&json!(-32600)),
            "{mode}: a request-shaped notifications/cancelled must get -32600: {resp:?}"
        );
        // The same inside a batch (2025-03-26): -32600 for that element.
        let mut old = Http::connect(port);
        let mut init = initialize(json!(0));
        init["params"]["protocolVersion"] = json!("2025-03-26");
        let r = post(&mut old, None, &init);
        let sid = r.header("mcp-session-id").expect("session id").to_string();
        let batch = format!(r#"[{shaped},{{"jsonrpc":"2.0","id":5,"method":"ping"}}]"#);
        let r = old.request("POST", "/mcp", &mcp_headers(Some(&sid)), batch.as_bytes());
        let replies: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let arr = replies
            .as_array()
            .unwrap_or_else(|| panic!("{mode}: batch reply: {r:?}"));
        assert!(
            arr.iter()
                .any(|v| v["id"] == json!(77) && v["error"]["code"] == json!(-32600)),
            "{mode}: the request-shaped cancel in a batch: {replies}"
        );
        assert!(
            arr.iter()
                .any(|v| v["id"] == json!(5) && v["result"].is_object()),
            "{replies}"
        );
        if mode == "shared" {
            let note = format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{upstream_id}}}}}"#
            );
            let resp = b.post_raw(&note);
            assert_eq!(resp.status(), 202, "{resp:?}");
            let n =
                relay.metric("mcp_relay_messages_dropped_total{reason=\"cancel_not_in_flight\"}");
            assert!(n >= 1.0, "the foreign cancel was not counted: {n}");
        }
        thread::sleep(Duration::from_millis(300));
        let text = log.read();
        assert!(
            !text.contains("notifications/cancelled"),
            "{mode}: a cancel from B reached the server:\n{text}"
        );
    }
}

/// Class 10, by duplicated members: the mux rewrote the last of two `id`s
/// (or `requestId`s, or progress tokens), so a server whose parser keeps
/// the first would have read an id from outside the session, such as
/// another session's upstream id, and sent its reply there. A message with
/// a member the relay reads written twice is now refused (400, Invalid
/// Request) and nothing of it reaches the server.
#[test]
fn class10_duplicated_members_never_reach_the_server() {
    let log = TempFile::new("class10-duplicates", "shared");
    let relay = start(
        &["--pool", "shared", "--max-connections", "1"],
        &["--log", log.path_str()],
    );
    let port = relay.port;
    let (_a, _hang, upstream) = a_call_hanging(port, &log);
    let mut b = Session::open(port);
    for (what, body, id) in [
        (
            "an id written twice",
            format!(
                r#"{{"jsonrpc":"2.0","id":{upstream},"id":"b1","method":"tools/call","params":{{"name":"echo","arguments":{{"text":"smuggled"}}}}}}"#
            ),
            Value::Null,
        ),
        (
            "a progress token written twice",
            format!(
                r#"{{"jsonrpc":"2.0","id":"b2","method":"tools/call","params":{{"name":"echo","arguments":{{"text":"smuggled"}},"_meta":{{"progressToken":{upstream},"progressToken":"t"}}}}}}"#
            ),
            json!("b2"),
        ),
        (
            "a cancel naming two requests",
            format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/cancelled","params":{{"requestId":{upstream},"requestId":"b1"}}}}"#
            ),
            Value::Null,
        ),
    ] {
        let resp = b.post_raw(&body);
        assert_eq!(resp.status(), 400, "{what}: {resp:?}");
        let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        assert_eq!(v["error"]["code"], -32600, "{what}: {v}");
        assert_eq!(v["id"], id, "{what}: {v}");
    }
    // B is still served.
    let r = b.post(&call(json!("b3"), "after"));
    assert_eq!(echo_text(&r.json()), Some("after"), "{r:?}");
    let text = log.read();
    assert!(
        !text.contains("smuggled") && !text.contains("notifications/cancelled"),
        "an ambiguous message reached the server:\n{text}"
    );
}

// ============================================================================
// Class 13: re-spelled numeric ids, nested and empty batches
// ============================================================================

/// Ids the relay must match by value: the server writes each back as the
/// f64 it parses to.
const RESPELLED: &[&str] = &["1e0", "-0", "18446744073709551616", "1.50", "7"];

fn raw_call(id: &str, text: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{text}"}}}}}}"#
    )
}

/// The text of a message's top-level `"id"` value, as written.
fn id_text(body: &str) -> Option<&str> {
    let rest = &body[body.find("\"id\":")? + 5..];
    let end = rest.find([',', '}'])?;
    Some(&rest[..end])
}

/// Reverse, both pool modes, and forward: a server that re-spells numeric
/// ids (`1e0` → `1.0`, 2^64 → `1.8446744073709552e19`) still gets its
/// replies matched, and the client sees its own spelling. Before the fix
/// they were matched by text and the requests timed out.
#[test]
fn class13_respelled_numeric_ids_are_matched_by_value() {
    for mode in ["session", "shared"] {
        let relay = start(
            &["--pool", mode, "--response-timeout", "3s"],
            &["--respell-ids"],
        );
        let mut s = Session::open(relay.port);
        for id in RESPELLED {
            let resp = s.post_raw(&raw_call(id, "respelled"));
            assert_eq!(resp.status(), 200, "{mode} {id}: {resp:?}");
            let body = String::from_utf8_lossy(&resp.body).into_owned();
            let v: Value = serde_json::from_str(&body).expect("json reply");
            assert_eq!(echo_text(&v), Some("respelled"), "{mode} {id}: {body}");
            assert_eq!(
                id_text(&body),
                Some(*id),
                "{mode}: the client's spelling: {body}"
            );
        }
    }
    let mut relay = Relay::start(&["--response-timeout", "3s"], &["--respell-ids"]);
    relay.handshake();
    for id in RESPELLED {
        relay.send_bytes(format!("{}\n", raw_call(id, "fwd")));
        let v = relay.expect_msg(Duration::from_secs(5), "the respelled reply");
        assert_eq!(echo_text(&v), Some("fwd"), "forward {id}: {v}");
        let raw = relay.raw_stdout.last().cloned().unwrap_or_default();
        assert_eq!(
            id_text(&raw),
            Some(*id),
            "forward: the client's spelling: {raw}"
        );
    }
}

/// The same against HTTP upstreams (`reverse --url`, `forward --url`): the
/// hostile upstream re-spells numeric ids (`Attack::RespellIds`).
#[test]
fn class13_respelled_numeric_ids_from_an_http_upstream_are_matched_by_value() {
    let up = Hostile::start(Attack::RespellIds);
    let relay = Relay::reverse(NAME)
        .args(["--url", &up.url(), "--response-timeout", "3s"])
        .start();
    let mut s = Session::open(relay.port);
    for id in RESPELLED {
        let resp = s.post_raw(&raw_call(id, "over http"));
        assert_eq!(resp.status(), 200, "reverse --url {id}: {resp:?}");
        let body = String::from_utf8_lossy(&resp.body).into_owned();
        let v: Value = serde_json::from_str(&body).expect("json reply");
        assert_eq!(
            echo_text(&v),
            Some("over http"),
            "reverse --url {id}: {body}"
        );
        assert_eq!(
            id_text(&body),
            Some(*id),
            "reverse --url: the client's spelling: {body}"
        );
    }
    let mut relay = Relay::forward()
        .args(["--url", &up.url(), "--response-timeout", "3s"])
        .start();
    relay.handshake();
    for id in RESPELLED {
        relay.send_bytes(format!("{}\n", raw_call(id, "fwd http")));
        let v = relay.expect_msg(Duration::from_secs(5), "the respelled reply");
        assert_eq!(echo_text(&v), Some("fwd http"), "forward --url {id}: {v}");
        let raw = relay.raw_stdout.last().cloned().unwrap_or_default();
        assert_eq!(
            id_text(&raw),
            Some(*id),
            "forward --url: the client's spelling: {raw}"
        );
    }
}

/// A server that sends `[]` and wraps its replies in a nested batch
/// `[[reply]]`: neither reaches a client (before the fix forward passed both
/// through to the host), and the request named inside is answered with an
/// error at once rather than waiting for the timeout.
#[test]
fn class13_nested_and_empty_upstream_batches_are_rejected() {
    for mode in ["session", "shared"] {
        let relay = start(
            &["--pool", mode, "--response-timeout", "5s"],
            &["--nested-batch"],
        );
        let mut s = Session::open(relay.port);
        let t0 = Instant::now();
        let resp = s.post(&call(json!(1), "nested"));
        assert_eq!(resp.status(), 200, "{resp:?}");
        let v = resp.rpc();
        assert_eq!(error_kind(&v), Some("invalid_reply"), "{mode}: {v}");
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{mode}: {:?}",
            t0.elapsed()
        );
        let n = relay.metric("mcp_relay_messages_dropped_total{reason=\"batch_nested\"}");
        assert!(n >= 1.0, "{mode}: nested batch not counted");
        let n = relay.metric("mcp_relay_messages_dropped_total{reason=\"batch_empty\"}");
        assert!(n >= 1.0, "{mode}: empty batch not counted");
    }
    let mut relay = Relay::start(&["--response-timeout", "5s"], &["--nested-batch"]);
    relay.handshake();
    relay.send(&call(json!(1), "nested"));
    let v = relay.expect_msg(Duration::from_secs(2), "the error for the nested reply");
    assert!(v.is_object(), "forward passed a batch through: {v}");
    assert_eq!(v["id"], json!(1), "{v}");
    assert_eq!(error_kind(&v), Some("invalid_reply"), "{v}");
    match relay.recv(Duration::from_millis(300)) {
        Recv::Timeout => {}
        other => panic!("forward: unexpected {other:?}"),
    }
}

/// A reply longer than `--max-message-size` is dropped with its bytes; its
/// request is answered `message_too_large` at once, in both pools (before
/// the fix, in the shared pool, whose ids are the mux's, the request was
/// left to its response timeout, or never answered with that off). The
/// session goes on.
#[test]
fn an_oversized_reply_is_answered_at_once_in_both_pools() {
    for mode in ["session", "shared"] {
        let relay = start(
            &[
                "--pool",
                mode,
                "--max-message-size",
                "64KiB",
                "--response-timeout",
                "0",
            ],
            &[],
        );
        let mut s = Session::open(relay.port);
        let big = call_with(
            json!("big"),
            json!({"text": "0123456789abcdef", "repeat": 8192}),
            None,
        );
        let t0 = Instant::now();
        let r = s.post(&big).json();
        assert_eq!(r["id"], "big", "{mode}: {r}");
        assert_eq!(error_kind(&r), Some("message_too_large"), "{mode}: {r}");
        assert_eq!(r["error"]["data"]["limit"], 65536, "{mode}: {r}");
        assert!(
            t0.elapsed() < IO,
            "{mode}: answered after {:?}",
            t0.elapsed()
        );
        let r = s.post(&call(json!(2), "after")).json();
        assert_eq!(echo_text(&r), Some("after"), "{mode}: {r}");
    }
}
