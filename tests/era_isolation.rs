//! Issue 13, a second read of the era bridge: what one caller or one
//! session must not be able to do to another through the 2026-07-28
//! machinery, each found failing before its fix.
//!
//! - A retry of a call waiting for input (`requestState`) is taken only
//!   from the bearer token that made the call.
//! - `initialize` sent with `MCP-Protocol-Version: 2026-07-28` is a
//!   handshake-era `initialize` (2026-07-28 has none): it opens a session
//!   and never reaches a shared process, which the relay alone initializes.
//! - A handshake-era client of a modern server, whose subscriptions the
//!   relay folds into a listen of its own (`mcp-relay-listen-N`), gets the
//!   answer to its own request even when it chose an id like the listen's;
//!   an id equal to the listen open now is one already in flight.

mod common;

use serde_json::{Value, json};

use common::TempFile;
use common::http::{ACCEPT_BOTH, Http, IO, Response, post_on};
use common::relay::Relay;

const NAME: &str = "echo";

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "era-isolation", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
    })
}

/// A 2026-07-28 POST of `msg` with the routing headers and `extra` ones.
fn modern_post(port: u16, msg: &Value, extra: &[(&str, &str)]) -> Response {
    let method = msg["method"].as_str().expect("a request");
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", ACCEPT_BOTH),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", method),
    ];
    if let Some(name) = msg["params"]["name"].as_str() {
        headers.push(("Mcp-Name", name));
    }
    headers.extend_from_slice(extra);
    let body = serde_json::to_vec(msg).expect("json");
    let mut http = Http::connect(port);
    http.try_request("POST", "/mcp", &headers, &body, IO)
        .unwrap_or_else(|e| panic!("POST {msg}: no response ({e:?})"))
}

/// A call the example server answers by asking the client first.
fn asking_call(id: i64, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"text": text, "ask": true}, "_meta": meta()}})
}

/// Its retry, carrying `state` and an answer.
fn retry(id: i64, text: &str, state: &str, answer: &str) -> Value {
    let mut r = asking_call(id, text);
    r["params"]["requestState"] = json!(state);
    r["params"]["inputResponses"] =
        json!({"r1": {"action": "accept", "content": {"answer": answer}}});
    r
}

/// The call's text as the server echoed it, if the answer is a result.
fn echoed(r: &Value) -> Option<&str> {
    r["result"]["content"][0]["text"].as_str()
}

/// Before the fix, caller B, holding another token, could send the
/// `requestState` of A's call with its own answer: the server took B's
/// answer and B got A's result.
#[test]
fn a_retry_is_taken_only_from_the_token_that_made_the_call() {
    for pool in ["session", "shared"] {
        let tokens = TempFile::new("era-isolation-tokens", pool);
        std::fs::write(&tokens.0, "token-a\ntoken-b\n").expect("write the token file");
        let log = TempFile::new("era-isolation-retry", pool);
        let relay = Relay::reverse(NAME)
            .args(["--pool", pool, "--auth-token-file", tokens.path_str()])
            .echo_server(&["--log", log.path_str(), "--elicit"])
            .start();
        let a = [("Authorization", "Bearer token-a")];
        let b = [("Authorization", "Bearer token-b")];
        let first = modern_post(relay.port, &asking_call(7, "secret-of-a"), &a).rpc();
        let state = first["result"]["requestState"]
            .as_str()
            .unwrap_or_else(|| panic!("{pool}: not an input round: {first}"))
            .to_string();
        let stolen = modern_post(relay.port, &retry(9, "x", &state, "from-b"), &b).rpc();
        assert_eq!(
            stolen["error"]["code"], -32602,
            "{pool}: token B's retry of token A's call was taken: {stolen}"
        );
        assert_eq!(echoed(&stolen), None, "{pool}: {stolen}");
        // The round is still A's to finish.
        let done = modern_post(relay.port, &retry(8, "secret-of-a", &state, "from-a"), &a).rpc();
        let text = echoed(&done).unwrap_or_else(|| panic!("{pool}: A's retry: {done}"));
        assert!(
            text.starts_with("secret-of-a") && text.contains("from-a"),
            "{pool}: {text}"
        );
        assert!(!log.read().contains("from-b"), "{pool}: {}", log.read());
    }
}

/// Before the fix, such an `initialize` went through the mux to the shared
/// process as a request, which the server took as a second handshake with
/// this client's capabilities and info, for every session on it.
#[test]
fn a_modern_headed_initialize_opens_a_session_and_never_reaches_a_shared_process() {
    let log = TempFile::new("era-isolation-init", "shared");
    let relay = Relay::reverse(NAME)
        .args(["--pool", "shared"])
        .echo_server(&["--log", log.path_str()])
        .start();
    // A session first, so the process is there and initialized.
    let mut http = Http::connect(relay.port);
    let r = post_on(&mut http, None, &common::initialize(json!(0)), &[], IO).expect("init");
    assert_eq!(r.status(), 200, "{r:?}");
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18",
                   "capabilities": {"roots": {"listChanged": true}},
                   "clientInfo": {"name": "intruder", "version": "1"},
                   "_meta": meta()}});
    let r = modern_post(relay.port, &init, &[]);
    assert_eq!(r.status(), 200, "{r:?}");
    assert!(r.header("mcp-session-id").is_some(), "no session: {r:?}");
    let v = r.rpc();
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18", "{v}");
    assert!(v["result"]["serverInfo"].is_object(), "{v}");
    let seen: Vec<Value> = log
        .read()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    // The relay's own, one a process (the pool may have started a second
    // one), and no other.
    let inits: Vec<&Value> = seen
        .iter()
        .filter(|m| m["method"] == "initialize")
        .collect();
    assert!(!inits.is_empty(), "{seen:#?}");
    for i in &inits {
        assert_eq!(
            i["id"], "mcp-relay-init",
            "a client's initialize reached a shared process: {i}"
        );
        assert_eq!(i["params"]["clientInfo"]["name"], "mcp-relay", "{i}");
    }
}

/// A handshake-era session on a modern server (shared: dual-era
/// `--modern`; session: `--modern-only`).
fn stamped(pool: &str, log: &TempFile) -> (Relay, Http, String) {
    let server = if pool == "shared" {
        "--modern"
    } else {
        "--modern-only"
    };
    let relay = Relay::reverse(NAME)
        .args(["--pool", pool, "--response-timeout", "5s"])
        .echo_server(&[server, "--resources", "--log", log.path_str()])
        .start();
    let mut http = Http::connect(relay.port);
    let r = post_on(&mut http, None, &common::initialize(json!(0)), &[], IO).expect("init");
    assert_eq!(r.status(), 200, "{pool}: {r:?}");
    let sid = r.header("mcp-session-id").expect("sid").to_string();
    post_on(&mut http, Some(&sid), &common::initialized(), &[], IO).expect("initialized");
    (relay, http, sid)
}

/// Session `sid`'s call of `echo` ("mine") under the id the relay gives
/// its first listen, `mcp-relay-listen-1`; the answer.
fn call_like_the_listen(http: &mut Http, sid: &str) -> Value {
    let call = common::call(json!("mcp-relay-listen-1"), "mine");
    post_on(http, Some(sid), &call, &[], IO)
        .expect("call")
        .rpc()
}

/// Before the fix, the answer to a request whose id began like the relay's
/// listens was taken for the end of one and dropped: the client waited for
/// its response timeout.
#[test]
fn a_request_with_an_id_like_the_relays_listen_is_answered() {
    for pool in ["shared", "session"] {
        let log = TempFile::new("era-isolation-listen-like", pool);
        let (_relay, mut http, sid) = stamped(pool, &log);
        let r = call_like_the_listen(&mut http, &sid);
        assert_eq!(echoed(&r), Some("mine"), "{pool}: {r}\n{}", log.read());
        assert_eq!(r["id"], "mcp-relay-listen-1", "{pool}: {r}");
    }
}

/// With the relay's listen open under `mcp-relay-listen-1`, a client
/// request with that very id is one already in flight: refused, and the
/// listen goes on (before the fix the request went out under the listen's
/// id and the listen's end was taken for its answer, or the reverse).
#[test]
fn a_request_with_the_open_listens_id_is_a_duplicate_and_the_listen_goes_on() {
    for pool in ["shared", "session"] {
        let log = TempFile::new("era-isolation-listen-dup", pool);
        let (relay, mut http, sid) = stamped(pool, &log);
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
        // (In the shared pool the server sees the mux's ids, not the
        // listen's.)
        log.wait_for(IO, "the relay's listen", |t| {
            t.matches("subscriptions/listen").count() == 1
        });
        let r = call_like_the_listen(&mut http, &sid);
        assert_eq!(r["error"]["data"]["kind"], "duplicate_id", "{pool}: {r}");
        // The subscription still works: the next change reopens the listen
        // (the old one cancelled), and a plain call is answered.
        let sub = json!({"jsonrpc": "2.0", "id": 4, "method": "resources/subscribe",
                         "params": {"uri": "file:///b"}});
        let r = post_on(&mut http, Some(&sid), &sub, &[], IO)
            .expect("subscribe b")
            .rpc();
        assert_eq!(r["result"], json!({}), "{pool}: {r}");
        log.wait_for(IO, "the second listen", |t| {
            t.matches("subscriptions/listen").count() == 2
        });
        let r = post_on(
            &mut http,
            Some(&sid),
            &common::call(json!(5), "after"),
            &[],
            IO,
        )
        .expect("call")
        .rpc();
        assert_eq!(echoed(&r), Some("after"), "{pool}: {r}");
        let seen = log.read();
        assert_eq!(
            seen.matches("\"mine\"").count(),
            0,
            "{pool}: the refused request reached the server: {seen}"
        );
    }
}

/// A 2026-07-28 listen in front of a handshake-era server holds no call
/// that could carry a server request as an input round, and its client
/// cannot answer one. A server request that reaches it (the relay's
/// `resources/subscribe` for it is the request in flight) is answered
/// with an error at once; before the fix it went onto the listen's stream
/// as it was, and the server waited for an answer that never came.
#[test]
fn a_server_request_reaching_a_listen_is_refused_at_once() {
    for pool in ["shared", "session"] {
        let log = TempFile::new("era-isolation-listen-roots", pool);
        let relay = Relay::reverse(NAME)
            .args(["--pool", pool])
            .echo_server(&[
                "--resources",
                "--roots-on-subscribe",
                "--log",
                log.path_str(),
            ])
            .start();
        let msg = json!({"jsonrpc": "2.0", "id": 20, "method": "subscriptions/listen",
            "params": {"_meta": meta(), "notifications": {"resourceSubscriptions": ["echo://a"]}}});
        let mut sse = common::http::open_modern_listen(relay.port, &msg);
        // The server's roots/list is answered, with an error, by the relay.
        let seen = log.wait_for(IO, "the answer to roots-1", |t| {
            t.lines()
                .any(|l| l.contains("\"roots-1\"") && l.contains("\"error\""))
        });
        let answer = seen
            .lines()
            .find(|l| l.contains("\"roots-1\"") && l.contains("\"error\""))
            .expect("the answer");
        let v: Value = serde_json::from_str(answer).expect("json");
        assert_eq!(v["error"]["code"], -32603, "{pool}: {v}");
        // The listen goes on (acknowledged, then the update), and carried
        // no request.
        let t = std::time::Duration::from_secs(5);
        for what in ["acknowledged", "resources/updated"] {
            let ev = sse.expect_event(t, what).json();
            assert!(
                ev.get("id").is_none(),
                "{pool}: a request on the listen: {ev}"
            );
            assert!(
                ev["method"].as_str().is_some_and(|m| m.ends_with(what)),
                "{pool}: {ev}"
            );
        }
    }
}
