//! `reverse -- CMD` between 2026-07-28 clients and a handshake-era stdio
//! server (the echo server), in both pool modes, byte by byte (issue 13,
//! docs/eras.md "Per mode"): `server/discover` is answered by the relay from
//! an `initialize` it made itself, modern requests reach the server without
//! the envelope, results come back marked complete with the cache hints,
//! and handshake-era clients are served as before.
//!
//! What the server saw is read from its `--log` file (one line per message
//! received), so every assertion about the upstream side is about bytes the
//! process really got.

mod common;

use serde_json::{Value, json};

use common::TempFile;
use common::http::{ACCEPT_BOTH, Http, IO, Response, mcp_headers, post_on};
use common::relay::Relay;

const NAME: &str = "echo";

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "modern-test", "version": "9"},
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    })
}

fn discover(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "server/discover", "params": {"_meta": meta()}})
}

fn list(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {"_meta": meta()}})
}

fn call(id: i64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"text": text}, "_meta": meta()}})
}

/// POSTs one modern request, with the routing headers it must carry.
fn modern_post(port: u16, msg: &Value, name_header: Option<&str>) -> Response {
    let method = msg["method"].as_str().expect("a request");
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", ACCEPT_BOTH),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", method),
    ];
    if let Some(n) = name_header {
        headers.push(("Mcp-Name", n));
    }
    let body = serde_json::to_vec(msg).expect("json");
    let mut http = Http::connect(port);
    http.try_request("POST", "/mcp", &headers, &body, IO)
        .unwrap_or_else(|e| panic!("POST {msg}: no response ({e:?})"))
}

fn start(pool: &str, relay_args: &[&str], log: &TempFile) -> Relay {
    Relay::reverse(NAME)
        .args(["--pool", pool])
        .args(relay_args)
        .echo_server(&["--log", log.path_str()])
        .start()
}

/// The messages the server received, parsed.
fn seen(log: &TempFile) -> Vec<Value> {
    log.read()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn methods(seen: &[Value]) -> Vec<String> {
    seen.iter()
        .filter_map(|m| m["method"].as_str().map(str::to_string))
        .collect()
}

fn assert_discover(d: &Value) {
    assert_eq!(d["id"], 1, "{d}");
    assert_eq!(
        d["result"]["supportedVersions"],
        json!(["2026-07-28"]),
        "{d}"
    );
    assert_eq!(
        d["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "echo-server",
        "{d}"
    );
    assert_eq!(
        d["result"]["capabilities"]["tools"],
        json!({"listChanged": false})
    );
    assert_eq!(d["result"]["resultType"], "complete", "{d}");
    assert_eq!(d["result"]["cacheScope"], "private", "{d}");
    assert_eq!(d["result"]["ttlMs"], 0, "{d}");
}

fn assert_list_and_call(port: u16) {
    let l = modern_post(port, &list(2), None);
    assert_eq!(l.status(), 200, "{l:?}");
    let l = l.rpc();
    assert_eq!(l["result"]["tools"][0]["name"], "echo", "{l}");
    assert_eq!(l["result"]["resultType"], "complete", "{l}");
    assert_eq!(l["result"]["ttlMs"], 0, "{l}");
    assert_eq!(l["result"]["cacheScope"], "private", "{l}");
    let c = modern_post(port, &call(3, "modern"), Some("echo"));
    assert_eq!(c.status(), 200, "{c:?}");
    let c = c.rpc();
    assert_eq!(c["id"], 3, "{c}");
    assert_eq!(c["result"]["content"][0]["text"], "modern", "{c}");
    assert_eq!(c["result"]["resultType"], "complete", "{c}");
}

/// No request the server got carries the reserved envelope keys.
fn assert_stripped(seen: &[Value]) {
    for m in seen {
        assert!(
            !m.to_string().contains("io.modelcontextprotocol/"),
            "the envelope reached the handshake-era server: {m}"
        );
    }
}

// ============================================================================
// Shared pool
// ============================================================================

/// Before: the modern `server/discover` went to the process, which answered
/// -32601, and the client fell back to `initialize` (downgraded).
#[test]
fn shared_a_modern_client_is_answered_discover_and_its_calls_are_bridged() {
    let log = TempFile::new("reverse-eras-shared", "server-log");
    let relay = start("shared", &[], &log);
    let d = modern_post(relay.port, &discover(1), None);
    assert_eq!(d.status(), 200, "{d:?}");
    assert_discover(&d.rpc());
    assert_list_and_call(relay.port);
    let seen = seen(&log);
    let m = methods(&seen);
    // One process, probed once by the relay (auto), found handshake-era and
    // initialized once; the client's discover never reaches it.
    assert_eq!(
        m,
        [
            "server/discover",
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/call"
        ],
        "{seen:?}"
    );
    assert_eq!(
        seen[0]["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
        "mcp-relay"
    );
    assert_eq!(seen[1]["params"]["clientInfo"]["name"], "mcp-relay");
    assert_stripped(&seen[1..]);
}

/// `--upstream-protocol legacy`: no probe, the relay's initialize only.
#[test]
fn shared_upstream_protocol_legacy_never_probes() {
    let log = TempFile::new("reverse-eras-shared-legacy", "server-log");
    let relay = start("shared", &["--upstream-protocol", "legacy"], &log);
    let d = modern_post(relay.port, &discover(1), None);
    assert_discover(&d.rpc());
    assert_list_and_call(relay.port);
    let m = methods(&seen(&log));
    assert_eq!(
        m,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/call"
        ]
    );
}

fn start_modern(pool: &str, relay_args: &[&str], log: &TempFile) -> Relay {
    Relay::reverse(NAME)
        .args(["--pool", pool])
        .args(relay_args)
        .echo_server(&["--modern", "--log", log.path_str()])
        .start()
}

/// A dual-era server (`echo_server --modern`) behind the shared pool, in
/// `auto` and `modern`: the relay probes it, finds it modern and never
/// initializes it; modern requests reach it with their own envelope (the
/// client's info, not the relay's), results come back as the server made
/// them. Before: the relay initialized the process (it was then a
/// handshake-era connection) and bridged every modern request.
#[test]
fn shared_a_modern_server_is_driven_in_the_modern_era() {
    for knob in ["auto", "modern"] {
        let log = TempFile::new(&format!("reverse-eras-shared-modern-{knob}"), "server-log");
        let relay = start_modern("shared", &["--upstream-protocol", knob], &log);
        let d = modern_post(relay.port, &discover(1), None).rpc();
        assert_eq!(
            d["result"]["supportedVersions"],
            json!(["2026-07-28"]),
            "{d}"
        );
        assert_eq!(
            d["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "echo-server-modern",
            "{knob}: discover is the server's own: {d}"
        );
        assert_list_and_call(relay.port);
        let seen = seen(&log);
        let m = methods(&seen);
        assert_eq!(
            m,
            [
                "server/discover",
                "server/discover",
                "tools/list",
                "tools/call"
            ],
            "{knob}: {seen:?}"
        );
        assert_eq!(
            seen[0]["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"], "mcp-relay",
            "the relay's probe"
        );
        for msg in &seen[1..] {
            assert_eq!(
                msg["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"], "modern-test",
                "{knob}: {msg}"
            );
        }
    }
}

/// A handshake-era client on a modern shared process: its `initialize` is
/// answered from the server's discover result, its requests are stamped
/// with the envelope of that `initialize`, `ping` is answered by the relay.
#[test]
fn shared_a_handshake_client_reaches_a_modern_server_stamped() {
    let log = TempFile::new("reverse-eras-shared-modern-old", "server-log");
    let relay = start_modern("shared", &[], &log);
    let mut http = Http::connect(relay.port);
    let init = post_on(&mut http, None, &common::initialize(json!(0)), &[], IO).expect("init");
    let sid = init.header("mcp-session-id").expect("sid").to_string();
    let i = init.rpc();
    assert_eq!(i["result"]["protocolVersion"], "2025-06-18", "{i}");
    assert_eq!(
        i["result"]["serverInfo"]["name"], "echo-server-modern",
        "{i}"
    );
    assert_eq!(
        i["result"]["capabilities"]["tools"],
        json!({"listChanged": false})
    );
    post_on(&mut http, Some(&sid), &common::initialized(), &[], IO).expect("initialized");
    let ping = json!({"jsonrpc": "2.0", "id": 6, "method": "ping"});
    let p = post_on(&mut http, Some(&sid), &ping, &[], IO)
        .expect("ping")
        .rpc();
    assert_eq!(p["result"], json!({}), "{p}");
    let r = post_on(
        &mut http,
        Some(&sid),
        &common::call(json!(7), "old"),
        &[],
        IO,
    )
    .expect("call")
    .rpc();
    assert_eq!(r["id"], 7, "{r}");
    assert_eq!(r["result"]["content"][0]["text"], "old", "{r}");
    let seen = seen(&log);
    assert_eq!(
        methods(&seen),
        ["server/discover", "tools/call"],
        "{seen:?}"
    );
    let meta = &seen[1]["params"]["_meta"];
    assert_eq!(
        meta["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    assert_eq!(
        meta["io.modelcontextprotocol/clientInfo"]["name"], "mcp-relay-tests",
        "{meta}"
    );
}

/// A handshake-era session on the same shared process is served as before:
/// its results carry no modern fields.
#[test]
fn shared_handshake_clients_are_unchanged() {
    let log = TempFile::new("reverse-eras-shared-old", "server-log");
    let relay = start("shared", &[], &log);
    handshake_session_unchanged(relay.port);
    // Both eras on one process.
    let c = modern_post(relay.port, &call(3, "both"), Some("echo")).rpc();
    assert_eq!(c["result"]["content"][0]["text"], "both", "{c}");
    handshake_session_unchanged(relay.port);
}

fn handshake_session_unchanged(port: u16) {
    let mut http = Http::connect(port);
    let init = post_on(&mut http, None, &common::initialize(json!(0)), &[], IO).expect("init");
    let sid = init
        .header("mcp-session-id")
        .expect("a session id")
        .to_string();
    let i = init.rpc();
    assert_eq!(i["result"]["protocolVersion"], "2025-06-18", "{i}");
    assert!(i["result"].get("resultType").is_none(), "{i}");
    post_on(&mut http, Some(&sid), &common::initialized(), &[], IO).expect("initialized");
    let r = post_on(
        &mut http,
        Some(&sid),
        &common::call(json!(7), "old"),
        &[],
        IO,
    )
    .expect("call")
    .rpc();
    assert_eq!(r["result"]["content"][0]["text"], "old", "{r}");
    assert!(r["result"].get("resultType").is_none(), "{r}");
    assert!(r["result"].get("ttlMs").is_none(), "{r}");
}

// ============================================================================
// Session pool
// ============================================================================

/// Before: each modern request went, enveloped, to a fresh process that
/// nobody had initialized; `server/discover` got the server's -32601.
#[test]
fn session_the_relay_initializes_each_process_for_a_modern_client() {
    let log = TempFile::new("reverse-eras-session", "server-log");
    let relay = start("session", &[], &log);
    let d = modern_post(relay.port, &discover(1), None);
    assert_eq!(d.status(), 200, "{d:?}");
    assert_discover(&d.rpc());
    assert_list_and_call(relay.port);
    let seen = seen(&log);
    let m = methods(&seen);
    // The first process was probed once (auto) and found handshake-era;
    // every process was initialized by the relay with the client's
    // envelope; discover was answered from that initialize (and that
    // process, done, was not told `initialized`).
    assert_eq!(
        m,
        [
            "server/discover",
            "initialize",
            "initialize",
            "notifications/initialized",
            "tools/list",
            "initialize",
            "notifications/initialized",
            "tools/call",
        ],
        "{seen:?}"
    );
    for init in seen.iter().filter(|m| m["method"] == "initialize") {
        assert_eq!(
            init["params"]["clientInfo"]["name"], "modern-test",
            "{init}"
        );
        assert_eq!(init["params"]["capabilities"], json!({"elicitation": {}}));
        assert_eq!(init["params"]["protocolVersion"], "2025-11-25");
    }
    // The probe is the relay's own; the rest carries no envelope.
    assert_stripped(&seen[1..]);
    let metrics = relay.metrics_text();
    assert!(
        metrics.contains("mcp_relay_era_probes_total{upstream=\"echo\",outcome=\"legacy\"} 1"),
        "{metrics}"
    );
}

#[test]
fn session_handshake_clients_are_unchanged() {
    let log = TempFile::new("reverse-eras-session-old", "server-log");
    let relay = start("session", &[], &log);
    handshake_session_unchanged(relay.port);
    let m = methods(&seen(&log));
    assert!(!m.iter().any(|x| x == "server/discover"), "{m:?}");
}

/// `--upstream-protocol modern`: the relay never initializes; the modern
/// request reaches the process with its envelope, and its result as it is.
#[test]
fn session_upstream_protocol_modern_passes_requests_with_their_envelope() {
    let log = TempFile::new("reverse-eras-session-modern", "server-log");
    let relay = start("session", &["--upstream-protocol", "modern"], &log);
    let c = modern_post(relay.port, &call(3, "as-is"), Some("echo")).rpc();
    assert_eq!(c["result"]["content"][0]["text"], "as-is", "{c}");
    assert!(c["result"].get("resultType").is_none(), "{c}");
    let seen = seen(&log);
    assert_eq!(methods(&seen), ["tools/call"], "{seen:?}");
    assert_eq!(
        seen[0]["params"]["_meta"]["io.modelcontextprotocol/clientInfo"]["name"],
        "modern-test"
    );
}

// ============================================================================
// Routing headers
// ============================================================================

/// `Mcp-Name` may come as `=?base64?…?=`; it names the same tool. Before:
/// the encoded value was compared with the body as it was, and the request
/// refused -32020.
#[test]
fn an_encoded_mcp_name_matches_the_body() {
    for pool in ["shared", "session"] {
        let log = TempFile::new(&format!("reverse-eras-name-{pool}"), "server-log");
        let relay = start(pool, &[], &log);
        // base64("echo")
        let r = modern_post(relay.port, &call(3, "named"), Some("=?base64?ZWNobw==?="));
        assert_eq!(r.status(), 200, "{pool}: {r:?}");
        assert_eq!(r.rpc()["result"]["content"][0]["text"], "named", "{pool}");
        // A name that does not decode to the body's is still refused.
        let r = modern_post(relay.port, &call(4, "named"), Some("=?base64?ZWNobx==?="));
        assert_eq!(r.status(), 400, "{pool}: {r:?}");
        assert_eq!(r.json()["error"]["code"], -32020, "{pool}");
        let r = modern_post(relay.port, &call(5, "named"), Some("other"));
        assert_eq!(r.status(), 400, "{pool}: {r:?}");
    }
}

/// The routing headers are required on requests only: the TypeScript SDK
/// 2.x POSTs its notifications (its `notifications/cancelled` closing a
/// listen) with `MCP-Protocol-Version` and no `Mcp-Method`. Before: 400
/// -32020, so the client's cancellation never reached the relay.
#[test]
fn a_modern_notification_needs_no_mcp_method() {
    for pool in ["shared", "session"] {
        let log = TempFile::new(&format!("reverse-eras-note-{pool}"), "server-log");
        let relay = start(pool, &[], &log);
        let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": "gone", "_meta": meta()}});
        let body = serde_json::to_vec(&note).expect("json");
        let send = |extra: &[(&'static str, &'static str)]| {
            let mut headers = vec![
                ("Content-Type", "application/json"),
                ("Accept", ACCEPT_BOTH),
                ("MCP-Protocol-Version", "2026-07-28"),
            ];
            headers.extend_from_slice(extra);
            Http::connect(relay.port)
                .try_request("POST", "/mcp", &headers, &body, IO)
                .unwrap_or_else(|e| panic!("{pool}: no response ({e:?})"))
        };
        let r = send(&[]);
        assert_eq!(r.status(), 202, "{pool}: {r:?}");
        // A header that is there must still match the body.
        let r = send(&[("Mcp-Method", "tools/call")]);
        assert_eq!(r.status(), 400, "{pool}: {r:?}");
        assert_eq!(r.json()["error"]["code"], -32020, "{pool}");
        // A request without it is still refused.
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Accept", ACCEPT_BOTH),
            ("MCP-Protocol-Version", "2026-07-28"),
        ];
        headers.push(("Mcp-Name", "echo"));
        let body = serde_json::to_vec(&call(6, "no method header")).expect("json");
        let r = Http::connect(relay.port)
            .try_request("POST", "/mcp", &headers, &body, IO)
            .expect("answer");
        assert_eq!(r.status(), 400, "{pool}: {r:?}");
    }
}

/// Session-mode requests without the envelope but with the 2026-07-28
/// header still work (the relay initializes with its own client info).
#[test]
fn a_header_only_modern_request_is_still_served() {
    let log = TempFile::new("reverse-eras-bare", "server-log");
    let relay = start("session", &["--upstream-protocol", "legacy"], &log);
    let bare = common::call(json!(9), "bare");
    let mut http = Http::connect(relay.port);
    let mut headers = mcp_headers(None);
    headers.extend([
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", "echo"),
    ]);
    let r = http
        .try_request(
            "POST",
            "/mcp",
            &headers,
            &serde_json::to_vec(&bare).unwrap(),
            IO,
        )
        .expect("answer")
        .rpc();
    assert_eq!(r["result"]["content"][0]["text"], "bare", "{r}");
    let seen = seen(&log);
    assert_eq!(
        methods(&seen),
        ["initialize", "notifications/initialized", "tools/call"]
    );
    assert_eq!(seen[0]["params"]["clientInfo"]["name"], "mcp-relay");
}

/// A server that ignores requests before `initialize` (`--never-answer`
/// answers only `initialize` and `ping`) never answers the probe: after 10 s
/// the relay takes it for handshake-era and initializes the process, so the
/// first session is served then instead of never (before: the shared
/// process stayed unready and every session waited out --queue-timeout).
#[test]
fn shared_an_unanswered_probe_settles_on_the_handshake_era() {
    let log = TempFile::new("reverse-eras-probe-timeout", "server-log");
    let relay = Relay::reverse(NAME)
        .args(["--pool", "shared", "--queue-timeout", "30s"])
        .echo_server(&["--never-answer", "--log", log.path_str()])
        .start();
    let t0 = std::time::Instant::now();
    let mut http = Http::connect(relay.port);
    let init = post_on(
        &mut http,
        None,
        &common::initialize(json!(0)),
        &[],
        std::time::Duration::from_secs(20),
    )
    .expect("initialize answered");
    let took = t0.elapsed();
    eprintln!("initialize answered after {took:?}");
    assert_eq!(init.status(), 200, "{init:?}");
    assert!(
        took >= std::time::Duration::from_secs(9),
        "answered before the probe timed out: {took:?}"
    );
    log.wait_for(common::SHORT, "notifications/initialized", |t| {
        t.contains("notifications/initialized")
    });
    assert_eq!(
        methods(&seen(&log)),
        ["server/discover", "initialize", "notifications/initialized"]
    );
    let m = relay.metrics_text();
    assert!(
        m.contains("mcp_relay_era_probes_total{upstream=\"echo\",outcome=\"timeout\"} 1"),
        "{m}"
    );
}

/// A burst of 2026-07-28 requests through each pool mode (16 clients, 40
/// calls each, each reply carrying its own text): every reply goes to its
/// own request (no cross-delivery), the relay's RSS stays bounded, and a
/// fresh handshake-era session is served within 1 s during the burst.
#[test]
fn a_burst_of_modern_requests_stays_bounded_and_fresh_sessions_are_served() {
    const CLIENTS: usize = 16;
    const CALLS: usize = 40;
    for pool in ["shared", "session"] {
        let relay = Relay::reverse(NAME)
            .args([
                "--pool",
                pool,
                "--max-connections",
                "8",
                "--max-waiting",
                "256",
            ])
            .echo_server(&[])
            .start();
        let port = relay.port;
        let before = common::rss_kib(relay.pid as u32).expect("relay alive");
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                std::thread::spawn(move || {
                    for i in 0..CALLS {
                        let text = format!("burst-{c}-{i}");
                        let id = (c * 1000 + i) as i64;
                        let r = modern_post(port, &call(id, &text), Some("echo")).rpc();
                        assert_eq!(r["id"], id, "{r}");
                        assert_eq!(r["result"]["content"][0]["text"], text, "{r}");
                        assert_eq!(r["result"]["resultType"], "complete", "{r}");
                    }
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let t0 = std::time::Instant::now();
        let mut http = Http::connect(port);
        let init = post_on(
            &mut http,
            None,
            &common::initialize(json!(0)),
            &[],
            std::time::Duration::from_secs(1),
        );
        let took = t0.elapsed();
        for w in workers {
            w.join().expect("a burst client failed");
        }
        let after = common::rss_kib(relay.pid as u32).expect("relay alive");
        eprintln!(
            "{pool}: {} modern calls; RSS {} KiB before, {} KiB after (peak {} KiB); a fresh \
             session answered after {took:?}",
            CLIENTS * CALLS,
            before.0,
            after.0,
            after.1
        );
        let init = init.unwrap_or_else(|e| {
            panic!("{pool}: no fresh session within 1 s during the burst: {e:?}")
        });
        assert_eq!(init.status(), 200, "{pool}: {init:?}");
        assert!(
            after.1 < before.0 + 16 * 1024,
            "{pool}: peak RSS {} KiB from {} KiB",
            after.1,
            before.0
        );
    }
}

// ============================================================================
// Server → client requests as InputRequiredResult rounds (both pools)
// ============================================================================

fn start_eliciting(pool: &str, log: &TempFile) -> Relay {
    Relay::reverse(NAME)
        .args(["--pool", pool])
        .echo_server(&["--log", log.path_str(), "--elicit"])
        .start()
}

/// A `tools/call` that makes the echo server ask the client (`--elicit`).
fn asking_call(id: i64, text: &str, meta: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"text": text, "ask": true}, "_meta": meta}})
}

/// The retry of `asking_call` carrying the client's answer to `r1`.
fn retry(id: i64, text: &str, state: &str, answer: &str) -> Value {
    let mut r = asking_call(id, text, meta());
    r["params"]["requestState"] = json!(state);
    r["params"]["inputResponses"] =
        json!({"r1": {"action": "accept", "content": {"answer": answer}}});
    r
}

/// One whole round: the call is answered `input_required` with the
/// server's `elicitation/create`, the retry with the answer gets the
/// call's result; the server saw the answer to its request, and no
/// envelope.
fn assert_elicitation_round(pool: &str) {
    let log = TempFile::new("reverse-eras-elicit", pool);
    let relay = start_eliciting(pool, &log);
    let first = modern_post(relay.port, &asking_call(7, "hi", meta()), Some("echo"));
    assert_eq!(first.status(), 200, "{first:?}");
    let first = first.rpc();
    assert_eq!(first["id"], 7, "{first}");
    let r = &first["result"];
    assert_eq!(r["resultType"], "input_required", "{first}");
    assert_eq!(
        r["inputRequests"]["r1"]["method"], "elicitation/create",
        "{first}"
    );
    assert_eq!(
        r["inputRequests"]["r1"]["params"]["message"], "about hi?",
        "{first}"
    );
    let state = r["requestState"].as_str().expect("a requestState");
    // Someone else's guess is no token: -32602, and the call stays open.
    let wrong = modern_post(
        relay.port,
        &retry(8, "hi", "mcp-relay.nope", "no"),
        Some("echo"),
    )
    .rpc();
    assert_eq!(wrong["error"]["code"], -32602, "{wrong}");
    let done = modern_post(relay.port, &retry(9, "hi", state, "yes"), Some("echo"));
    assert_eq!(done.status(), 200, "{done:?}");
    let done = done.rpc();
    assert_eq!(done["id"], 9, "{done}");
    assert_eq!(
        done["result"]["content"][0]["text"], "hi / accept {\"answer\":\"yes\"}",
        "{done}"
    );
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    let seen = seen(&log);
    let answer = seen
        .iter()
        .find(|m| m["id"] == "elicit-1" && m.get("method").is_none())
        .unwrap_or_else(|| panic!("the server's request was never answered: {seen:?}"));
    assert_eq!(answer["result"]["content"]["answer"], "yes", "{answer}");
    // One call reached the server, the retries did not.
    assert_eq!(
        methods(&seen).iter().filter(|m| *m == "tools/call").count(),
        1,
        "{seen:?}"
    );
    assert_stripped(&seen[1..]);
    let metrics = relay.metrics_text();
    assert!(
        metrics.contains("mcp_relay_era_input_total{upstream=\"echo\",what=\"rounds\"} 1"),
        "{metrics}"
    );
}

/// Before: the server's `elicitation/create` reached the modern client's
/// POST as a plain JSON-RPC request on an SSE stream, which a 2026-07-28
/// client does not answer: the call hung until `--response-timeout`.
#[test]
fn session_a_server_request_becomes_an_input_required_round() {
    assert_elicitation_round("session");
}

#[test]
fn shared_a_server_request_becomes_an_input_required_round() {
    assert_elicitation_round("shared");
}

/// Shared pool: a client that did not declare elicitation is never asked;
/// the server's request is answered with an error by the relay (counted).
#[test]
fn shared_a_server_request_for_a_client_without_the_capability_is_refused() {
    let log = TempFile::new("reverse-eras-elicit", "nocap");
    let relay = start_eliciting("shared", &log);
    let mut bare = meta();
    bare["io.modelcontextprotocol/clientCapabilities"] = json!({});
    let c = modern_post(relay.port, &asking_call(5, "hi", bare), Some("echo"));
    assert_eq!(c.status(), 200, "{c:?}");
    let c = c.rpc();
    assert_eq!(c["id"], 5, "{c}");
    assert_eq!(c["error"]["code"], -32603, "{c}");
    let msg = c["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.starts_with("elicitation failed"), "{c}");
    let metrics = relay.metrics_text();
    assert!(
        metrics.contains("mcp_relay_era_input_total{upstream=\"echo\",what=\"unattributable\"} 1"),
        "{metrics}"
    );
}

/// A retry whose leg times out (`--response-timeout`) gives the call up:
/// the server's request is answered with an error and the call is
/// cancelled at the server, in the session's id space; the token is gone.
#[test]
fn a_call_given_up_while_waiting_for_input_is_cancelled_at_the_server() {
    for pool in ["session", "shared"] {
        let log = TempFile::new("reverse-eras-giveup", pool);
        let relay = Relay::reverse(NAME)
            .args(["--pool", pool, "--response-timeout", "1s"])
            .echo_server(&["--log", log.path_str(), "--elicit"])
            .start();
        let first = modern_post(relay.port, &asking_call(7, "hi", meta()), Some("echo")).rpc();
        let state = first["result"]["requestState"]
            .as_str()
            .unwrap_or_else(|| panic!("{pool}: not input_required: {first}"))
            .to_string();
        // A retry answering nothing: the server keeps waiting, the leg
        // times out.
        let mut silent = asking_call(8, "hi", meta());
        silent["params"]["requestState"] = json!(state);
        silent["params"]["inputResponses"] = json!({});
        let timed_out = modern_post(relay.port, &silent, Some("echo")).rpc();
        assert_eq!(timed_out["id"], 8, "{pool}: {timed_out}");
        assert!(timed_out.get("error").is_some(), "{pool}: {timed_out}");
        log.wait_for(
            std::time::Duration::from_secs(5),
            "the call's cancellation",
            |t| t.contains("notifications/cancelled") && t.contains("\"error\""),
        );
        let seen = seen(&log);
        let call_id = seen
            .iter()
            .find(|m| m["method"] == "tools/call")
            .map(|m| m["id"].clone())
            .expect("the call reached the server");
        let cancel = seen
            .iter()
            .find(|m| m["method"] == "notifications/cancelled")
            .expect("a cancellation");
        assert_eq!(cancel["params"]["requestId"], call_id, "{pool}: {cancel}");
        let refused = seen
            .iter()
            .find(|m| m["id"] == "elicit-1" && m.get("error").is_some());
        assert!(refused.is_some(), "{pool}: {seen:?}");
        // The token died with the call.
        let again = modern_post(relay.port, &retry(9, "hi", &state, "late"), Some("echo")).rpc();
        assert_eq!(again["error"]["code"], -32602, "{pool}: {again}");
    }
}

// ============================================================================
// subscriptions/listen in front of a handshake-era server (both pools)
// ============================================================================

/// Opens a `subscriptions/listen` (id 20) and returns its event stream.
fn open_listen(port: u16, uris: &[&str]) -> common::http::Sse {
    let msg = json!({"jsonrpc": "2.0", "id": 20, "method": "subscriptions/listen",
        "params": {"_meta": meta(), "notifications": {
            "toolsListChanged": true, "resourcesListChanged": true,
            "resourceSubscriptions": uris}}});
    common::http::open_modern_listen(port, &msg)
}

/// The listen is acknowledged with what the server can honor, the server
/// is subscribed to the URI (no envelope), its updated and list-changed
/// notifications reach the listen stamped with the listen's id, and
/// closing the stream unsubscribes.
fn assert_listen(pool: &str) {
    let log = TempFile::new("reverse-eras-listen", pool);
    let relay = Relay::reverse(NAME)
        .args(["--pool", pool])
        .echo_server(&["--log", log.path_str(), "--resources"])
        .start();
    let mut sse = open_listen(relay.port, &["echo://a"]);
    let t = std::time::Duration::from_secs(5);
    let ack = sse.expect_event(t, "the acknowledgement").json();
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{pool}: {ack}"
    );
    // tools: the server's listChanged is false, so it is not honored.
    assert_eq!(
        ack["params"]["notifications"],
        json!({"resourcesListChanged": true, "resourceSubscriptions": ["echo://a"]}),
        "{pool}: {ack}"
    );
    let updated = sse.expect_event(t, "resources/updated").json();
    assert_eq!(
        updated["method"], "notifications/resources/updated",
        "{pool}: {updated}"
    );
    assert_eq!(updated["params"]["uri"], "echo://a", "{pool}: {updated}");
    assert_eq!(
        updated["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 20,
        "{pool}: {updated}"
    );
    let changed = sse.expect_event(t, "resources/list_changed").json();
    assert_eq!(
        changed["method"], "notifications/resources/list_changed",
        "{pool}: {changed}"
    );
    assert_eq!(
        changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], 20,
        "{pool}: {changed}"
    );
    // The listen stays open: nothing else comes.
    assert!(
        matches!(
            sse.next(std::time::Duration::from_millis(300)),
            common::http::SseNext::Timeout
        ),
        "{pool}: the listen ended early"
    );
    let seen_now = seen(&log);
    let sub = seen_now
        .iter()
        .find(|m| m["method"] == "resources/subscribe")
        .unwrap_or_else(|| panic!("{pool}: no subscribe: {seen_now:?}"));
    assert_eq!(sub["params"]["uri"], "echo://a", "{pool}: {sub}");
    assert!(
        !methods(&seen_now).contains(&"subscriptions/listen".to_string()),
        "{pool}: {seen_now:?}"
    );
    assert_stripped(&seen_now[1..]);
    // Closing the stream ends the listen: the URI is unsubscribed.
    drop(sse);
    log.wait_for(t, "resources/unsubscribe", |t| {
        t.contains("resources/unsubscribe")
    });
}

/// Before: `subscriptions/listen` was answered -32601 (not bridged).
#[test]
fn session_a_listen_is_carried_onto_resources_subscribe() {
    assert_listen("session");
}

#[test]
fn shared_a_listen_is_carried_onto_resources_subscribe() {
    assert_listen("shared");
}

/// Shared pool: a second listener keeps the URI subscribed when the first
/// goes; only the last one leaving unsubscribes.
#[test]
fn shared_the_last_listener_leaving_unsubscribes() {
    let log = TempFile::new("reverse-eras-listen2", "shared");
    // One process, so both listens share it.
    let relay = Relay::reverse(NAME)
        .args(["--pool", "shared", "--max-connections", "1"])
        .echo_server(&["--log", log.path_str(), "--resources"])
        .start();
    let t = std::time::Duration::from_secs(5);
    // Each listen's subscribe is answered before the server's update for
    // it comes (the echo server's order), so none is in flight below.
    let mut a = open_listen(relay.port, &["echo://a"]);
    a.expect_event(t, "ack a");
    a.expect_event(t, "update a");
    let mut b = open_listen(relay.port, &["echo://a"]);
    b.expect_event(t, "ack b");
    b.expect_event(t, "update b");
    drop(a);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !log.read().contains("resources/unsubscribe"),
        "unsubscribed while a listener remains: {}",
        log.read()
    );
    drop(b);
    let text = log.wait_for(t, "resources/unsubscribe", |t| {
        t.contains("resources/unsubscribe")
    });
    // The relay's own unsubscribe is not cancelled with the session.
    assert!(!text.contains("notifications/cancelled"), "{text}");
}

// ============================================================================
// A handshake-era client, a modern-only server, the session pool
// ============================================================================

/// One handshake-era session against `echo_server --modern-only`: its
/// `initialize` is answered from the process's `server/discover`, its
/// requests reach the server stamped, `ping` and `logging/setLevel` are
/// answered by the relay. Returns what the server saw.
fn handshake_session_on_modern_only(port: u16) {
    let mut http = Http::connect(port);
    let init = post_on(&mut http, None, &common::initialize(json!(0)), &[], IO).expect("init");
    assert_eq!(init.status(), 200, "{init:?}");
    let sid = init.header("mcp-session-id").expect("sid").to_string();
    let i = init.rpc();
    assert_eq!(i["result"]["protocolVersion"], "2025-06-18", "{i}");
    assert_eq!(
        i["result"]["serverInfo"]["name"], "echo-server-modern",
        "{i}"
    );
    post_on(&mut http, Some(&sid), &common::initialized(), &[], IO).expect("initialized");
    let ping = json!({"jsonrpc": "2.0", "id": 6, "method": "ping"});
    let p = post_on(&mut http, Some(&sid), &ping, &[], IO)
        .expect("ping")
        .rpc();
    assert_eq!(p["result"], json!({}), "{p}");
    let level = json!({"jsonrpc": "2.0", "id": 8, "method": "logging/setLevel",
                       "params": {"level": "debug"}});
    let l = post_on(&mut http, Some(&sid), &level, &[], IO)
        .expect("setLevel")
        .rpc();
    assert_eq!(l["result"], json!({}), "{l}");
    let r = post_on(
        &mut http,
        Some(&sid),
        &common::call(json!(7), "old"),
        &[],
        IO,
    )
    .expect("call")
    .rpc();
    assert_eq!(r["id"], 7, "{r}");
    assert_eq!(r["result"]["content"][0]["text"], "old", "{r}");
}

/// Before: the session's `initialize` went to the process, which refused
/// it (-32022), and the client could not connect.
#[test]
fn session_a_handshake_client_reaches_a_modern_only_server_stamped() {
    let log = TempFile::new("reverse-eras-session-modern-only", "server-log");
    let relay = Relay::reverse(NAME)
        .args(["--pool", "session"])
        .echo_server(&["--modern-only", "--log", log.path_str()])
        .start();
    handshake_session_on_modern_only(relay.port);
    // The verdict is known now: the next process is asked discover at once.
    handshake_session_on_modern_only(relay.port);
    let seen = seen(&log);
    assert_eq!(
        methods(&seen),
        [
            "initialize",
            "server/discover",
            "tools/call",
            "server/discover",
            "tools/call"
        ],
        "{seen:?}"
    );
    for call in seen.iter().filter(|m| m["method"] == "tools/call") {
        let meta = &call["params"]["_meta"];
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"], "2026-07-28",
            "{call}"
        );
        assert_eq!(
            meta["io.modelcontextprotocol/clientInfo"]["name"], "mcp-relay-tests",
            "{call}"
        );
        assert_eq!(meta["io.modelcontextprotocol/logLevel"], "debug", "{call}");
    }
}

// ============================================================================
// Per-request log opt-in (both pools)
// ============================================================================

/// The events of a POST's answer that are log messages.
fn logs_in(r: &Response) -> Vec<Value> {
    if !r.head.is_sse() {
        return Vec::new();
    }
    r.events()
        .iter()
        .map(|e| e.json())
        .filter(|m| m["method"] == "notifications/message")
        .collect()
}

/// `echo_server --log-during-call` logs at `info` during each call: a
/// modern request gets it only when it opted in at `info` or below.
fn assert_log_opt_in(pool: &str) {
    let log = TempFile::new("reverse-eras-logs", pool);
    let relay = Relay::reverse(NAME)
        .args(["--pool", pool])
        .echo_server(&["--log", log.path_str(), "--log-during-call"])
        .start();
    let with = |level: Option<&str>, id: i64| {
        let mut m = meta();
        if let Some(l) = level {
            m["io.modelcontextprotocol/logLevel"] = json!(l);
        }
        let mut c = call(id, "logged");
        c["params"]["_meta"] = m;
        let r = modern_post(relay.port, &c, Some("echo"));
        assert_eq!(r.status(), 200, "{pool}: {r:?}");
        assert_eq!(
            r.rpc()["result"]["content"][0]["text"],
            "logged",
            "{pool}: {r:?}"
        );
        logs_in(&r)
    };
    let logs = with(Some("info"), 1);
    assert_eq!(logs.len(), 1, "{pool}: {logs:?}");
    assert_eq!(logs[0]["params"]["level"], "info", "{pool}: {logs:?}");
    assert_eq!(
        logs[0]["params"]["data"], "log of a call: logged",
        "{pool}: {logs:?}"
    );
    assert_eq!(with(Some("debug"), 2).len(), 1, "{pool}");
    assert!(with(None, 3).is_empty(), "{pool}: a log without opt-in");
    assert!(with(Some("error"), 4).is_empty(), "{pool}: below the level");
    let metrics = relay.metrics_text();
    assert!(
        metrics.contains("mcp_relay_era_logs_total{upstream=\"echo\",what=\"dropped\"} 2"),
        "{pool}: {metrics}"
    );
    assert!(
        metrics.contains("mcp_relay_era_logs_total{upstream=\"echo\",what=\"delivered\"} 2"),
        "{pool}: {metrics}"
    );
}

/// Before: every log of the server reached the modern client's POST,
/// opted in or not.
#[test]
fn session_logs_reach_a_modern_request_only_when_it_opted_in() {
    assert_log_opt_in("session");
}

#[test]
fn shared_logs_reach_a_modern_request_only_when_it_opted_in() {
    assert_log_opt_in("shared");
}

// ============================================================================
// A handshake-era client, a modern server's InputRequiredResult
// ============================================================================

/// A handshake-era session (declaring `capabilities`) on `relay`; returns
/// the connection and the session id.
fn handshake_session_with(port: u16, capabilities: Value) -> (Http, String) {
    let mut http = Http::connect(port);
    let mut init = common::initialize(json!(0));
    init["params"]["capabilities"] = capabilities;
    let r = post_on(&mut http, None, &init, &[], IO).expect("init");
    assert_eq!(r.status(), 200, "{r:?}");
    let sid = r.header("mcp-session-id").expect("sid").to_string();
    post_on(&mut http, Some(&sid), &common::initialized(), &[], IO).expect("initialized");
    (http, sid)
}

/// Issue 13: a modern server's `InputRequiredResult` reached the
/// handshake-era client as it was (the 1.x SDKs reject it). Now the relay
/// sends the client the `elicitation/create` of its era on the call's
/// stream, takes its answer and retries the call toward the server with
/// `inputResponses` and `requestState`; the client sees one call.
fn assert_handshake_input_round(pool: &str, server: &[&str]) {
    let log = TempFile::new("reverse-eras-hs-input", &format!("server-log-{pool}"));
    let mut args = server.to_vec();
    args.extend(["--elicit", "--log", log.path_str()]);
    let relay = Relay::reverse(NAME)
        .args(["--pool", pool])
        .echo_server(&args)
        .start();
    let (mut http, sid) = handshake_session_with(relay.port, json!({"elicitation": {}}));
    // With the session's GET stream open too, the requests still go on the
    // call's own stream.
    let _get = get_stream(relay.port, &sid);
    let call = common::call_with(json!(9), json!({"text": "q", "ask": true}), None);
    http.send_request(
        "POST",
        "/mcp",
        &mcp_headers(Some(&sid)),
        &serde_json::to_vec(&call).unwrap(),
    )
    .expect("send");
    let head = http
        .read_head(std::time::Instant::now() + IO)
        .expect("the call's head");
    let mut sse = common::http::Sse::open(http, head);
    let ask = sse
        .expect_event(IO, "the relay's elicitation/create")
        .json();
    assert_eq!(ask["method"], "elicitation/create", "{pool}: {ask}");
    assert_eq!(ask["params"]["message"], "about q?", "{ask}");
    let answer = json!({"jsonrpc": "2.0", "id": ask["id"],
                        "result": {"action": "accept", "content": {"answer": "yes"}}});
    let mut h2 = Http::connect(relay.port);
    let r = post_on(&mut h2, Some(&sid), &answer, &[], IO).expect("answer");
    assert_eq!(r.status(), 202, "{r:?}");
    let fin = sse.expect_event(IO, "the call's result").json();
    assert_eq!(fin["id"], 9, "{pool}: {fin}");
    assert_eq!(
        fin["result"]["content"][0]["text"], "q / accept {\"answer\":\"yes\"}",
        "{pool}: {fin}"
    );
    // The server saw the call twice: first plain, then the retry.
    let calls: Vec<Value> = seen(&log)
        .into_iter()
        .filter(|m| m["method"] == "tools/call")
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1]["params"]["requestState"], "ask-state");
    assert_eq!(
        calls[1]["params"]["inputResponses"]["q"]["content"]["answer"],
        "yes"
    );
    // A client that did not declare elicitation: the call fails clearly.
    let (mut http, sid) = handshake_session_with(relay.port, json!({}));
    let call = common::call_with(json!(10), json!({"text": "q", "ask": true}), None);
    let r = post_on(&mut http, Some(&sid), &call, &[], IO)
        .expect("call")
        .rpc();
    assert_eq!(r["id"], 10, "{r}");
    assert_eq!(r["error"]["code"], -32021, "{pool}: {r}");
}

#[test]
fn shared_a_modern_servers_input_request_reaches_a_handshake_client() {
    assert_handshake_input_round("shared", &["--modern"]);
}

#[test]
fn session_a_modern_only_servers_input_request_reaches_a_handshake_client() {
    assert_handshake_input_round("session", &["--modern-only"]);
}

// ============================================================================
// A handshake-era client's resources/subscribe, a modern server
// ============================================================================

/// The session's GET stream.
fn get_stream(port: u16, sid: &str) -> common::http::Sse {
    let mut h = Http::connect(port);
    h.send_request(
        "GET",
        "/mcp",
        &[
            ("Accept", "text/event-stream"),
            ("Mcp-Session-Id", sid),
            ("MCP-Protocol-Version", common::http::VERSION),
        ],
        b"",
    )
    .expect("GET");
    let head = h
        .read_head(std::time::Instant::now() + IO)
        .expect("GET head");
    common::http::Sse::open(h, head)
}

/// Issue 13: a handshake-era session's `resources/subscribe` toward a
/// modern-capable process was answered -32601. Now the relay answers it
/// `{}` and folds the session's subscriptions into one
/// `subscriptions/listen` of the session on the process (re-opened when
/// the set changes, the old one cancelled); the server's updated
/// notifications reach that session's GET stream, and another session of
/// the same process gets none; the listen's acknowledgement stays with the
/// relay.
fn assert_handshake_subscribe(pool: &str, server: &[&str]) {
    let log = TempFile::new("reverse-eras-hs-sub", &format!("server-log-{pool}"));
    let mut args = server.to_vec();
    args.extend(["--resources", "--log", log.path_str()]);
    let relay = Relay::reverse(NAME)
        .args(["--pool", pool])
        .echo_server(&args)
        .start();
    let (mut http, sid) = handshake_session_with(relay.port, json!({}));
    let (_other_http, other_sid) = handshake_session_with(relay.port, json!({}));
    let mut other = get_stream(relay.port, &other_sid);
    let mut stream = get_stream(relay.port, &sid);
    let sub = json!({"jsonrpc": "2.0", "id": 3, "method": "resources/subscribe",
                     "params": {"uri": "file:///a"}});
    let r = post_on(&mut http, Some(&sid), &sub, &[], IO)
        .expect("subscribe")
        .rpc();
    assert_eq!(
        r["result"],
        json!({}),
        "{pool}: {r}\n{}",
        relay.stderr_dump()
    );
    let ev = stream.expect_event(IO, "the updated notification").json();
    assert_eq!(
        ev["method"], "notifications/resources/updated",
        "{pool}: {ev}"
    );
    assert_eq!(ev["params"]["uri"], "file:///a", "{ev}");
    match other.next(std::time::Duration::from_millis(300)) {
        common::http::SseNext::Timeout => {}
        ev => panic!("{pool}: another session got {ev:?}"),
    }
    let seen = seen(&log);
    let listens: Vec<&Value> = seen
        .iter()
        .filter(|m| m["method"] == "subscriptions/listen")
        .collect();
    assert_eq!(listens.len(), 1, "{seen:?}");
    assert_eq!(
        listens[0]["params"]["notifications"]["resourceSubscriptions"],
        json!(["file:///a"])
    );
    assert_eq!(
        listens[0]["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        "2026-07-28"
    );
    assert!(!methods(&seen).contains(&"resources/subscribe".to_string()));
    // Unsubscribing the last URI ends the listen at the server.
    let unsub = json!({"jsonrpc": "2.0", "id": 4, "method": "resources/unsubscribe",
                       "params": {"uri": "file:///a"}});
    let r = post_on(&mut http, Some(&sid), &unsub, &[], IO)
        .expect("unsubscribe")
        .rpc();
    assert_eq!(r["result"], json!({}), "{r}");
    log.wait_for(IO, "the listen cancelled", |t| {
        t.contains("notifications/cancelled")
    });
}

#[test]
fn shared_a_handshake_clients_subscription_becomes_a_listen() {
    assert_handshake_subscribe("shared", &["--modern"]);
}

#[test]
fn session_a_handshake_clients_subscription_becomes_a_listen() {
    assert_handshake_subscribe("session", &["--modern-only"]);
}
