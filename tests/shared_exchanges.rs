//! `reverse --pool shared -- CMD`: 2026-07-28 requests pinned to a shared
//! process without the pool's queue (`Pool::pin`, issue 13). Each one is a
//! one-request session bound to a process at once; these tests hold it to
//! what a leased one guaranteed: its own reply and no other (ids rewritten,
//! many clients using the same id at once), exactly one answer when the
//! process dies or the relay drains, a cancellation at the server when its
//! client leaves, and its place on the process given back every time, so
//! balancing sees only what is in flight.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::TempFile;
use common::http::{Http, IO, Response, modern_call_headers, post};
use common::relay::Relay;
use common::{echo_text, initialize, initialized};

const NAME: &str = "echo";

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "exchange-test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

fn modern_call(id: Value, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": arguments, "_meta": meta()}})
}

fn modern_headers() -> Vec<(&'static str, &'static str)> {
    modern_call_headers("echo")
}

/// POSTs one 2026-07-28 `tools/call` on its own connection.
fn modern_post(port: u16, msg: &Value) -> Response {
    let body = serde_json::to_vec(msg).expect("json");
    let mut http = Http::connect(port);
    http.try_request("POST", "/mcp", &modern_headers(), &body, IO)
        .unwrap_or_else(|e| panic!("POST {msg}: no response ({e:?})"))
}

fn start(relay_args: &[&str], server_args: &[&str]) -> Relay {
    Relay::reverse(NAME)
        .args(["--pool", "shared"])
        .args(relay_args)
        .echo_server(server_args)
        .admin()
        .start()
}

/// Polls `/metrics` until `series` reads `want` (bounded: 3 s).
fn wait_metric(relay: &Relay, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = relay.metric(series);
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            panic!("{series} is {got}, not {want}\n{}", relay.stderr_tail(30));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn sessions() -> String {
    format!("mcp_relay_sessions{{upstream=\"{NAME}\"}}")
}

fn conns(state: &str) -> String {
    format!("mcp_relay_upstream_connections{{upstream=\"{NAME}\",state=\"{state}\"}}")
}

/// A handshake-era session on its own keep-alive connection.
fn open_session(port: u16) -> (Http, String) {
    let mut http = Http::connect(port);
    let r = post(&mut http, None, &initialize(json!(0)));
    assert_eq!(r.status(), 200, "initialize: {r:?}");
    let sid = r.header("mcp-session-id").expect("session id").to_string();
    let ack = post(&mut http, Some(&sid), &initialized());
    assert_eq!(ack.status(), 202, "{ack:?}");
    (http, sid)
}

/// Sixteen clients and a handshake-era session send `tools/call` under the
/// same id at once, on two shared processes: each gets its own text back,
/// under its own id. When all are answered only the handshake-era session
/// is left: every exchange gave its place on its process back.
#[test]
fn pinned_exchanges_under_one_id_each_get_their_own_reply() {
    const CLIENTS: usize = 16;
    let relay = start(&["--max-connections", "2"], &["--delay-ms", "50"]);
    let port = relay.port;
    let (mut http, sid) = open_session(port);
    // Processes are up: the exchanges below are pinned, not queued.
    let warm = modern_post(port, &modern_call(json!(1), json!({"text": "warm"})));
    assert_eq!(warm.status(), 200, "{warm:?}");
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            thread::spawn(move || {
                let text = format!("client-{i}");
                let r = modern_post(port, &modern_call(json!(7), json!({"text": text})));
                (text, r)
            })
        })
        .collect();
    let mine = post(
        &mut http,
        Some(&sid),
        &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "handshake"}}}),
    );
    assert_eq!(mine.status(), 200, "{mine:?}");
    let mine = mine.rpc();
    assert_eq!(mine["id"], 7, "{mine}");
    assert_eq!(echo_text(&mine), Some("handshake"), "{mine}");
    for t in threads {
        let (text, r) = t.join().expect("client thread");
        assert_eq!(r.status(), 200, "{text}: {r:?}");
        let v = r.rpc();
        assert_eq!(v["id"], 7, "{v}");
        assert_eq!(echo_text(&v), Some(text.as_str()), "{v}");
        assert_eq!(v["result"]["resultType"], "complete", "{v}");
    }
    wait_metric(&relay, &sessions(), 1.0);
    wait_metric(
        &relay,
        &format!("mcp_relay_pool_waiting{{upstream=\"{NAME}\"}}"),
        0.0,
    );
    // The handshake-era session holds one process; the other serves nobody.
    wait_metric(&relay, &conns("leased"), 1.0);
    wait_metric(&relay, &conns("idle"), 1.0);
}

/// The process dies under a pinned exchange: it gets one answer, an error,
/// and the next request is served by a new process.
#[test]
fn a_pinned_exchange_whose_process_dies_gets_one_error() {
    // Never probed: the relay's own `initialize` is the first request the
    // server answers, then two calls; it dies on the third.
    let relay = start(
        &["--max-connections", "1", "--upstream-protocol", "legacy"],
        &["--crash-after", "3"],
    );
    let port = relay.port;
    for i in 1..=2 {
        let r = modern_post(port, &modern_call(json!(i), json!({"text": "ok"})));
        assert_eq!(r.status(), 200, "{r:?}");
        assert_eq!(echo_text(&r.rpc()), Some("ok"), "{r:?}");
    }
    let r = modern_post(port, &modern_call(json!(3), json!({"text": "dies"})));
    let v = r
        .try_rpc()
        .unwrap_or_else(|| panic!("no JSON-RPC answer: {r:?}"));
    assert_eq!(v["id"], 3, "{v}");
    assert!(v.get("error").is_some(), "{v}");
    assert_eq!(v["error"]["data"]["kind"], "upstream_closed", "{v}");
    // A new process serves the next one.
    let r = modern_post(port, &modern_call(json!(4), json!({"text": "again"})));
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(echo_text(&r.rpc()), Some("again"), "{r:?}");
    wait_metric(&relay, &sessions(), 0.0);
}

/// A client leaves while its pinned exchange waits for the server: the
/// server is told `notifications/cancelled` for that call, and the place
/// on the process is given back at once.
#[test]
fn a_pinned_exchange_whose_client_leaves_is_cancelled_at_the_server() {
    let log = TempFile::new("exchange", "server-log");
    let relay = start(&["--max-connections", "1"], &["--log", log.path_str()]);
    let port = relay.port;
    let warm = modern_post(port, &modern_call(json!(1), json!({"text": "warm"})));
    assert_eq!(warm.status(), 200, "{warm:?}");
    let mut h = Http::connect(port);
    let body = serde_json::to_vec(&modern_call(
        json!("leaves"),
        json!({"text": "never", "hang": true}),
    ))
    .expect("json");
    h.send_request("POST", "/mcp", &modern_headers(), &body)
        .expect("send");
    let text = log.wait_for(Duration::from_secs(5), "the hanging call", |t| {
        t.contains("\"never\"")
    });
    let call: Value = text
        .lines()
        .find(|l| l.contains("\"never\""))
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("the call as the server got it");
    wait_metric(&relay, &conns("leased"), 1.0);
    drop(h);
    let upstream_id = call["id"].to_string();
    log.wait_for(Duration::from_secs(5), "its cancellation", |t| {
        t.lines().any(|l| {
            l.contains("notifications/cancelled")
                && l.contains(&format!("\"requestId\":{upstream_id}"))
        })
    });
    wait_metric(&relay, &sessions(), 0.0);
    wait_metric(&relay, &conns("leased"), 0.0);
    let r = modern_post(port, &modern_call(json!(2), json!({"text": "next"})));
    assert_eq!(echo_text(&r.rpc()), Some("next"), "{r:?}");
    // Nothing of the client ever reached the server untranslated.
    assert_ne!(call["id"], "leaves", "{call}");
}

/// SIGTERM while a pinned exchange is in flight: it is answered (the drain
/// serves what is in flight), then the relay exits.
#[test]
fn a_pinned_exchange_in_flight_at_sigterm_is_answered() {
    let relay = start(&["--max-connections", "1"], &["--delay-ms", "400"]);
    let port = relay.port;
    let warm = modern_post(port, &modern_call(json!(1), json!({"text": "warm"})));
    assert_eq!(warm.status(), 200, "{warm:?}");
    let mut h = Http::connect(port);
    let body =
        serde_json::to_vec(&modern_call(json!(2), json!({"text": "drained"}))).expect("json");
    h.send_request("POST", "/mcp", &modern_headers(), &body)
        .expect("send");
    wait_metric(&relay, &conns("leased"), 1.0);
    relay.signal(libc::SIGTERM);
    let r = h
        .read_response(Instant::now() + Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no answer after SIGTERM: {e:?}\n{}", relay.stderr_tail(30)));
    assert_eq!(r.status(), 200, "{r:?}");
    assert_eq!(echo_text(&r.rpc()), Some("drained"), "{r:?}");
    relay
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "relay still running after SIGTERM\n{}",
                relay.stderr_tail(30)
            )
        });
}
