//! Tool filtering (issue 15): `--allow-tool` / `--deny-tool` and `"tools"`
//! in `--config`, in every mode. For each: the hidden tools are not in
//! `tools/list`, the allowed ones are, a denied `tools/call` is answered
//! with the relay's `tool_denied` error and never reaches the server (the
//! echo server's `--log` records every line it receives, the fake HTTP
//! upstream every request), a 2025-03-26 batch with a denied call gets that
//! element's error and the rest served, and reverse mode counts the denials
//! in `mcp_relay_tool_calls_denied_total{upstream}`.
//!
//! Every read has a deadline; every test body runs under [`bounded`].

mod common;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::fake::{After, Conn, Fake, Req, handler, init_result, reply_to};
use common::http::{Http, IO, Response, mcp_headers};
use common::prom::Scrape;
use common::relay::Relay;
use common::{SHORT, TempFile, echo_text, error_kind, initialize, initialized};

const TEST_LIMIT: Duration = Duration::from_secs(40);

/// The relay's code for `tool_denied` (docs/errors.md).
const TOOL_DENIED_CODE: i64 = -32009;

/// The tools every upstream of these tests has.
const TOOLS: &str = "echo,secret_delete,secret_read,other";

fn bounded(body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(TEST_LIMIT) {
        Ok(()) => handle.join().expect("test body"),
        Err(RecvTimeoutError::Disconnected) => {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(RecvTimeoutError::Timeout) => panic!("test still running after {TEST_LIMIT:?}"),
    }
}

fn list(id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"})
}

fn call_tool(id: Value, name: &str, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": {"text": text}}})
}

/// The tool names of a `tools/list` reply.
fn names(reply: &Value) -> Vec<String> {
    reply["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("not a tools/list reply: {reply}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A `tool_denied` error for `id` naming `tool`.
fn assert_denied(reply: &Value, id: &Value, tool: &str) {
    assert_eq!(&reply["id"], id, "{reply}");
    assert_eq!(error_kind(reply), Some("tool_denied"), "{reply}");
    assert_eq!(reply["error"]["code"], TOOL_DENIED_CODE, "{reply}");
    assert_eq!(reply["error"]["data"]["tool"], tool, "{reply}");
}

/// The lines the echo server received, once `marker` (sent last) is among
/// them: nothing sent before it can still be on its way.
fn server_log(log: &TempFile, marker: &str) -> String {
    log.wait_for(SHORT, marker, |t| t.contains(marker))
}

// ---- forward ------------------------------------------------------------------

/// The forward checks, stdio or --url: list, allowed call, denied call,
/// batch with one denied element.
fn forward_checks(relay: &mut Relay) {
    relay.handshake();
    relay.send(&list(json!(1)));
    let reply = relay.expect_response(&json!(1), SHORT);
    assert_eq!(names(&reply), ["echo", "other"], "hidden: secret_*");
    relay.echo_ok(json!(2), "allowed");
    relay.send(&call_tool(json!(3), "secret_delete", "boom"));
    let reply = relay.expect_response(&json!(3), SHORT);
    assert_denied(&reply, &json!(3), "secret_delete");
    // A batch: the denied element is answered by the relay, the rest served.
    relay.send(&json!([
        call_tool(json!(4), "secret_read", "boom"),
        call_tool(json!(5), "other", "batched"),
    ]));
    let mut got = Vec::new();
    let deadline = Instant::now() + SHORT;
    while got.len() < 2 && Instant::now() < deadline {
        let m = relay.expect_msg(SHORT, "batch replies");
        match m {
            Value::Array(items) => got.extend(items),
            one => got.push(one),
        }
    }
    let by_id = |id: i64| {
        got.iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no reply to {id} in {got:?}"))
            .clone()
    };
    assert_denied(&by_id(4), &json!(4), "secret_read");
    assert_eq!(echo_text(&by_id(5)), Some("batched"));
    relay.echo_ok(json!(6), "marker-end");
}

#[test]
fn forward_stdio_hides_and_denies() {
    bounded(|| {
        let log = TempFile::new("forward_stdio_hides_and_denies", "server.log");
        let mut relay = Relay::start(
            &["--deny-tool", "secret_*"],
            &["--tools", TOOLS, "--log", log.path_str()],
        );
        forward_checks(&mut relay);
        let seen = server_log(&log, "marker-end");
        assert!(
            seen.contains("\"other\""),
            "the allowed call went up:\n{seen}"
        );
        assert!(
            !seen.contains("secret_"),
            "a denied call reached the server:\n{seen}"
        );
        relay.wait_stderr("tool_denied", SHORT);
    });
}

#[test]
fn forward_stdio_allow_list() {
    bounded(|| {
        let log = TempFile::new("forward_stdio_allow_list", "server.log");
        let mut relay = Relay::start(
            &[
                "--allow-tool",
                "ech?",
                "--allow-tool",
                "secret_*",
                "--deny-tool",
                "secret_delete",
            ],
            &["--tools", TOOLS, "--log", log.path_str()],
        );
        relay.handshake();
        relay.send(&list(json!(1)));
        let reply = relay.expect_response(&json!(1), SHORT);
        assert_eq!(names(&reply), ["echo", "secret_read"]);
        relay.send(&call_tool(json!(2), "other", "x"));
        assert_denied(&relay.expect_response(&json!(2), SHORT), &json!(2), "other");
        relay.send(&call_tool(json!(3), "secret_delete", "x"));
        assert_denied(
            &relay.expect_response(&json!(3), SHORT),
            &json!(3),
            "secret_delete",
        );
        relay.send(&call_tool(json!(4), "secret_read", "marker-end"));
        let reply = relay.expect_response(&json!(4), SHORT);
        assert_eq!(echo_text(&reply), Some("marker-end"));
        let seen = server_log(&log, "marker-end");
        assert!(
            !seen.contains("\"other\"") && !seen.contains("secret_delete"),
            "{seen}"
        );
    });
}

/// The fake's reply to one message: [`TOOLS`], each an echo.
fn tools_reply(msg: &Value) -> Option<Value> {
    match msg["method"].as_str() {
        Some("tools/list") => {
            let tools: Vec<Value> = TOOLS
                .split(',')
                .map(|n| json!({"name": n, "inputSchema": {"type": "object"}}))
                .collect();
            Some(json!({"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": tools}}))
        }
        Some("initialize") => Some(init_result(&msg["id"])),
        _ => reply_to(msg),
    }
}

/// A fake Streamable HTTP upstream with [`TOOLS`]; batches get a batch.
fn tools_handler(req: &Req, conn: &mut Conn) -> After {
    match req.method.as_str() {
        "POST" => {
            let msg = req.json();
            let reply = match &msg {
                Value::Array(items) => {
                    let replies: Vec<Value> = items.iter().filter_map(tools_reply).collect();
                    (!replies.is_empty()).then_some(Value::Array(replies))
                }
                one => tools_reply(one),
            };
            match reply {
                Some(r) if msg["method"] == "initialize" => {
                    conn.json(&[("mcp-session-id", "s1")], &r)
                }
                Some(r) => conn.json(&[], &r),
                None => conn.accepted(),
            }
        }
        "GET" => conn.respond(405, &[], b""),
        "DELETE" => conn.respond(200, &[], b""),
        _ => conn.respond(405, &[], b""),
    }
}

/// No request the fake saw names a `secret_` tool.
fn assert_fake_never_saw_secrets(fake: &Fake) {
    let seen = fake.seen();
    let bodies: Vec<String> = seen
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        bodies.iter().any(|b| b.contains("marker-end")),
        "the last call never reached the fake: {bodies:?}"
    );
    assert!(
        !bodies.iter().any(|b| b.contains("secret_")),
        "a denied call reached the upstream: {bodies:?}"
    );
}

#[test]
fn forward_url_hides_and_denies() {
    bounded(|| {
        let fake = Fake::start(handler(tools_handler));
        let mut relay = Relay::forward()
            .args(["--url", &fake.url(), "--deny-tool", "secret_*"])
            .start();
        forward_checks(&mut relay);
        assert_fake_never_saw_secrets(&fake);
    });
}

// ---- reverse ------------------------------------------------------------------

/// One client session on `path` (initialized with protocol 2025-03-26, so
/// batches are allowed).
struct Session {
    http: Http,
    path: String,
    sid: String,
}

impl Session {
    fn open(port: u16, path: &str) -> Session {
        let mut http = Http::connect(port);
        let mut init = initialize(json!(0));
        init["params"]["protocolVersion"] = json!("2025-03-26");
        let resp = post_path(&mut http, path, None, &init);
        assert_eq!(resp.status(), 200, "initialize: {resp:?}");
        let sid = resp
            .header("mcp-session-id")
            .unwrap_or_else(|| panic!("no session id: {resp:?}"))
            .to_owned();
        let mut s = Session {
            http,
            path: path.to_owned(),
            sid,
        };
        assert_eq!(s.post(&initialized()).status(), 202);
        s
    }

    fn post(&mut self, msg: &Value) -> Response {
        post_path(&mut self.http, &self.path, Some(&self.sid), msg)
    }

    fn rpc(&mut self, msg: &Value) -> Value {
        let resp = self.post(msg);
        assert_eq!(resp.status(), 200, "{msg}: {resp:?}");
        resp.rpc()
    }
}

fn post_path(http: &mut Http, path: &str, sid: Option<&str>, msg: &Value) -> Response {
    let body = serde_json::to_vec(msg).expect("serialise");
    http.try_request("POST", path, &mcp_headers(sid), &body, IO)
        .unwrap_or_else(|e| panic!("POST {path} {msg}: no response ({e:?})"))
}

fn denied_metric(relay: &Relay, upstream: &str) -> f64 {
    Scrape::parse(relay.metrics_text())
        .value(
            "mcp_relay_tool_calls_denied_total",
            &[("upstream", upstream)],
        )
        .unwrap_or(-1.0)
}

/// The reverse checks on one session: list, allowed call, denied call,
/// batch with one denied element; `denied` calls counted for `upstream`.
fn reverse_checks(relay: &Relay, path: &str, upstream: &str, visible: &[&str], denied: &str) {
    let mut s = Session::open(relay.port, path);
    let reply = s.rpc(&list(json!(1)));
    assert_eq!(names(&reply), visible, "{path}");
    let allowed = visible[0];
    let reply = s.rpc(&call_tool(json!(2), allowed, "allowed"));
    assert_eq!(echo_text(&reply), Some("allowed"), "{reply}");
    let reply = s.rpc(&call_tool(json!(3), denied, "boom"));
    assert_denied(&reply, &json!(3), denied);
    let resp = s.post(&json!([
        call_tool(json!(4), denied, "boom"),
        call_tool(json!(5), allowed, "batched"),
    ]));
    assert_eq!(resp.status(), 200, "{resp:?}");
    let items = resp.json();
    let items = items
        .as_array()
        .unwrap_or_else(|| panic!("not a batch: {items}"));
    let by_id = |id: i64| {
        items
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no reply to {id} in {items:?}"))
    };
    assert_denied(by_id(4), &json!(4), denied);
    assert_eq!(echo_text(by_id(5)), Some("batched"));
    let reply = s.rpc(&call_tool(json!(6), allowed, "marker-end"));
    assert_eq!(echo_text(&reply), Some("marker-end"));
    assert_eq!(
        denied_metric(relay, upstream),
        2.0,
        "two denied calls counted"
    );
}

fn reverse_stdio(test: &str, pool: &str) {
    let log = TempFile::new(test, "server.log");
    let relay = Relay::reverse("filtered")
        .admin()
        .args(["--pool", pool, "--deny-tool", "secret_*"])
        .echo_server(&["--tools", TOOLS, "--log", log.path_str()])
        .start();
    reverse_checks(
        &relay,
        "/mcp",
        "filtered",
        &["echo", "other"],
        "secret_delete",
    );
    let seen = server_log(&log, "marker-end");
    assert!(
        !seen.contains("secret_"),
        "a denied call reached the server:\n{seen}"
    );
}

#[test]
fn reverse_session_hides_and_denies() {
    bounded(|| reverse_stdio("reverse_session_hides_and_denies", "session"));
}

#[test]
fn reverse_shared_hides_and_denies() {
    bounded(|| reverse_stdio("reverse_shared_hides_and_denies", "shared"));
}

#[test]
fn reverse_url_hides_and_denies() {
    bounded(|| {
        let fake = Fake::start(handler(tools_handler));
        let relay = Relay::reverse("remote")
            .admin()
            .args(["--url", &fake.url(), "--deny-tool", "secret_*"])
            .start();
        reverse_checks(
            &relay,
            "/mcp",
            "remote",
            &["echo", "other"],
            "secret_delete",
        );
        assert_fake_never_saw_secrets(&fake);
    });
}

#[test]
fn config_filters_per_upstream() {
    bounded(|| {
        let log_a = TempFile::new("config_filters_per_upstream", "a.log");
        let log_b = TempFile::new("config_filters_per_upstream", "b.log");
        let fake = Fake::start(handler(tools_handler));
        let echo = common::echo_server()
            .to_str()
            .expect("utf-8 path")
            .to_owned();
        let cfg = TempFile::new("config_filters_per_upstream", "relay.json");
        let doc = json!({
            "tools": {"deny": ["secret_*"]},
            "upstreams": {
                "a": {"command": [echo, "--tools", TOOLS, "--log", log_a.path_str()]},
                "b": {"command": [echo, "--tools", TOOLS, "--log", log_b.path_str()],
                      "pool": "shared",
                      "tools": {"allow": ["secret_read", "other"]}},
            },
            "mcpServers": {
                "c": {"type": "http", "url": fake.url(), "tools": {"deny": ["echo", "other"]}},
            },
        });
        std::fs::write(&cfg.0, doc.to_string()).expect("write config");
        let relay = Relay::reverse("cfg")
            .admin()
            .args(["--config", cfg.path_str()])
            .start();
        reverse_checks(&relay, "/mcp/a", "a", &["echo", "other"], "secret_delete");
        reverse_checks(&relay, "/mcp/b", "b", &["secret_read", "other"], "echo");
        reverse_checks(
            &relay,
            "/mcp/c",
            "c",
            &["secret_delete", "secret_read"],
            "other",
        );
        let a = server_log(&log_a, "marker-end");
        assert!(!a.contains("secret_"), "a: a denied call went up:\n{a}");
        let b = server_log(&log_b, "marker-end");
        assert!(!b.contains("\"echo\""), "b: a denied call went up:\n{b}");
        let c: Vec<String> = fake
            .seen()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        assert!(
            !c.iter().any(|b| b.contains("\"other\"")),
            "c: a denied call went up: {c:?}"
        );
    });
}

// ---- the ways around a filter -------------------------------------------------

/// Parsers disagree on which of two equal members wins: a call naming an
/// allowed tool and a denied one (or hiding the method) never reaches the
/// server, whichever it would read. Since the relay refuses any message
/// with a member it reads written twice (`proto::unique`), such a call is
/// answered `invalid_request` before the filter sees it; a name spelled
/// with escapes is decoded and denied.
#[test]
fn duplicate_members_cannot_smuggle_a_denied_call() {
    bounded(|| {
        let log = TempFile::new("duplicate_members_cannot_smuggle", "server.log");
        let mut relay = Relay::start(
            &["--deny-tool", "secret_*"],
            &["--tools", TOOLS, "--log", log.path_str()],
        );
        relay.handshake();
        let smuggled: [&[u8]; 4] = [
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"secret_delete","arguments":{"text":"x"}}}"#,
            br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"secret_delete","arguments":{"text":"x"}},"params":{"name":"echo"}}"#,
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","method":"ping","params":{"name":"secret_delete","arguments":{"text":"x"}}}"#,
            br#"{"jsonrpc":"2.0","id":4,"method":"tools\/call","params":{"n\u0061me":"secret\u005fdelete","arguments":{"text":"x"}}}"#,
        ];
        for (i, line) in smuggled.iter().enumerate() {
            let mut bytes = line.to_vec();
            bytes.push(b'\n');
            relay.send_bytes(bytes);
            let id = json!(i + 1);
            let reply = relay.expect_response(&id, SHORT);
            let expected = if i < 3 {
                "invalid_request"
            } else {
                "tool_denied"
            };
            assert_eq!(error_kind(&reply), Some(expected), "{reply}");
        }
        relay.echo_ok(json!(9), "marker-end");
        let seen = server_log(&log, "marker-end");
        assert!(
            !seen.contains("secret"),
            "a smuggled call reached the server:\n{seen}"
        );
    });
}

/// 2026-07-28 stateless requests (no session) are filtered too: on a stdio
/// pool and on an HTTP upstream.
#[test]
fn stateless_requests_are_filtered() {
    bounded(|| {
        let log = TempFile::new("stateless_requests_are_filtered", "server.log");
        let fake = Fake::start(handler(tools_handler));
        let stdio = Relay::reverse("stateless")
            .args(["--deny-tool", "secret_*"])
            .echo_server(&["--tools", TOOLS, "--log", log.path_str()])
            .start();
        let remote = Relay::reverse("stateless-url")
            .args(["--url", &fake.url(), "--deny-tool", "secret_*"])
            .start();
        for relay in [&stdio, &remote] {
            let post = |msg: &Value, method: &str, name: Option<&str>| {
                // A 2026-07-28 request carries its version and capabilities.
                let mut msg = msg.clone();
                msg["params"]["_meta"] = json!({
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                });
                let msg = &msg;
                let mut h = vec![
                    ("Content-Type", "application/json"),
                    ("Accept", "application/json, text/event-stream"),
                    ("MCP-Protocol-Version", "2026-07-28"),
                    ("Mcp-Method", method),
                ];
                if let Some(n) = name {
                    h.push(("Mcp-Name", n));
                }
                let body = serde_json::to_vec(msg).expect("serialise");
                let resp = relay
                    .http()
                    .try_request("POST", "/mcp", &h, &body, IO)
                    .unwrap_or_else(|e| panic!("stateless {msg}: {e:?}"));
                assert_eq!(resp.status(), 200, "{msg}: {resp:?}");
                resp.rpc()
            };
            let reply = post(&list(json!(1)), "tools/list", None);
            assert_eq!(names(&reply), ["echo", "other"], "{}", relay.name);
            let reply = post(
                &call_tool(json!(2), "secret_delete", "boom"),
                "tools/call",
                Some("secret_delete"),
            );
            assert_denied(&reply, &json!(2), "secret_delete");
            let reply = post(
                &call_tool(json!(3), "echo", "marker-end"),
                "tools/call",
                Some("echo"),
            );
            assert_eq!(echo_text(&reply), Some("marker-end"), "{reply}");
        }
        let seen = server_log(&log, "marker-end");
        assert!(
            !seen.contains("secret_"),
            "a denied call reached the server:\n{seen}"
        );
        assert_fake_never_saw_secrets(&fake);
    });
}

// ---- floods -------------------------------------------------------------------

/// Forward: rounds of 2,000 denied calls, each followed by an allowed call
/// that must be answered within 1 s; the relay's memory stays bounded.
#[test]
fn forward_denied_call_flood_stays_bounded() {
    let _flood = common::one_flood_at_a_time();
    bounded(|| {
        let log = TempFile::new("forward_denied_call_flood", "server.log");
        let mut relay = Relay::start(
            &["--deny-tool", "secret_*"],
            &["--tools", TOOLS, "--log", log.path_str()],
        );
        relay.handshake();
        let pid = relay.pid as u32;
        let (rss0, _) = common::rss_kib(pid).expect("relay rss");
        let mut flood = Vec::new();
        for n in 0..2_000 {
            flood.extend_from_slice(&common::line(&call_tool(
                json!(format!("f{n}")),
                "secret_delete",
                &"x".repeat(200),
            )));
        }
        let mut worst = Duration::ZERO;
        for round in 0..10 {
            relay.send_bytes(flood.clone());
            let t0 = Instant::now();
            let id = json!(format!("fresh{round}"));
            relay.send(&call_tool(id.clone(), "echo", "fresh"));
            // Denials of this round come first; the fresh reply after them.
            let deadline = t0 + SHORT;
            let reply = loop {
                assert!(Instant::now() < deadline, "round {round}: no fresh reply");
                let m = relay.expect_msg(SHORT, "flood replies");
                if m["id"] == id {
                    break m;
                }
                assert_eq!(error_kind(&m), Some("tool_denied"), "{m}");
            };
            let took = t0.elapsed();
            worst = worst.max(took);
            assert_eq!(echo_text(&reply), Some("fresh"));
            assert!(
                took < Duration::from_secs(1),
                "round {round}: fresh call took {took:?}"
            );
        }
        let (rss, hwm) = common::rss_kib(pid).expect("relay rss");
        eprintln!(
            "forward denied-call flood: 20,000 denied, RSS {rss0} KiB before, {rss} KiB after, \
             peak {hwm} KiB; slowest fresh call {worst:?}"
        );
        assert!(
            hwm < rss0 + 32 * 1024,
            "peak RSS {hwm} KiB (from {rss0} KiB)"
        );
        relay.wait_stderr("denied so far", SHORT);
        let seen = log.read();
        assert!(
            !seen.contains("secret_"),
            "a denied call reached the server"
        );
    });
}

/// Reverse: two clients send denied calls as fast as they are answered for
/// 2 s; a fresh session is served within 1 s meanwhile, every denial is
/// counted, and the relay's memory stays bounded.
#[test]
fn reverse_denied_call_flood_stays_bounded() {
    let _flood = common::one_flood_at_a_time();
    bounded(|| {
        let relay = Relay::reverse("flooded")
            .admin()
            .args(["--deny-tool", "secret_*", "--log-level", "info"])
            .echo_server(&["--tools", TOOLS])
            .start();
        let port = relay.port;
        let pid = relay.pid as u32;
        let (rss0, _) = common::rss_kib(pid).expect("relay rss");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flooders: Vec<_> = (0..2)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    let mut s = Session::open(port, "/mcp");
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        n += 1;
                        let reply = s.rpc(&call_tool(json!(n), "secret_delete", "boom"));
                        assert_eq!(error_kind(&reply), Some("tool_denied"), "{reply}");
                    }
                    n
                })
            })
            .collect();
        let t_end = Instant::now() + Duration::from_secs(2);
        let mut worst = Duration::ZERO;
        while Instant::now() < t_end {
            let t0 = Instant::now();
            let mut s = Session::open(port, "/mcp");
            let reply = s.rpc(&call_tool(json!(1), "echo", "fresh"));
            let took = t0.elapsed();
            assert_eq!(echo_text(&reply), Some("fresh"));
            assert!(took < Duration::from_secs(1), "fresh session took {took:?}");
            worst = worst.max(took);
            thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let sent: u64 = flooders
            .into_iter()
            .map(|t| t.join().expect("flooder"))
            .sum();
        let (rss, hwm) = common::rss_kib(pid).expect("relay rss");
        eprintln!(
            "reverse denied-call flood: {sent} denied, RSS {rss0} KiB before, {rss} KiB after, \
             peak {hwm} KiB; slowest fresh session {worst:?}"
        );
        assert_eq!(denied_metric(&relay, "flooded"), sent as f64);
        assert!(
            hwm < rss0 + 32 * 1024,
            "peak RSS {hwm} KiB (from {rss0} KiB)"
        );
    });
}
