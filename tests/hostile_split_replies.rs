//! `mcp-relay forward -- CMD` and `reverse -- CMD` (both pool modes)
//! against a stdio server that writes its replies pretty-printed
//! (`echo_server --pretty`), issue 11 ("Isolation and bounds"), classes 1
//! and 12: such a reply is several lines, none of them a message. The
//! request is answered `invalid_reply` at once (not left to its response
//! timeout), once, to its own session only; nothing that is not one
//! JSON-RPC message reaches the host or client; a fresh request or session
//! is answered within 1 s.
//!
//! The test is the host (stdin/stdout) or the HTTP client; every wait is
//! bounded.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::http::{Http, Response, post, post_on};
use common::relay::{Recv, Relay};
use common::{call, echo_text, error_kind, initialize, initialized};

/// A fresh request must be answered within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// Classes 1 and 12: `echo_server --pretty` writes each `tools/call` reply
/// over several lines. Each request gets `invalid_reply` well before its
/// response timeout, once; the host sees only one-line JSON-RPC messages.
#[test]
fn class12_forward_a_multi_line_reply_answers_invalid_reply() {
    let mut relay = Relay::start(&["--response-timeout", "5s"], &["--pretty"]);
    relay.handshake();
    for n in 1..=3 {
        let t0 = Instant::now();
        relay.send(&call(json!(n), "pretty"));
        let reply = relay.expect_response(&json!(n), Duration::from_secs(3));
        let took = t0.elapsed();
        assert_eq!(error_kind(&reply), Some("invalid_reply"), "{reply}");
        assert!(took < ANSWER_WITHIN, "answered after {took:?}");
        // Once: nothing else comes for it (Relay::recv panics on a line
        // that is not JSON).
        match relay.recv(Duration::from_millis(300)) {
            Recv::Timeout => {}
            other => panic!("after the answer to {n}: {other:?}"),
        }
    }
    // A request whose reply is one line (ping) is still served at once.
    let t0 = Instant::now();
    relay.send(&json!({"jsonrpc": "2.0", "id": "fresh", "method": "ping"}));
    let reply = relay.expect_response(&json!("fresh"), ANSWER_WITHIN);
    assert!(reply.get("result").is_some(), "{reply}");
    eprintln!("fresh request answered in {:?}", t0.elapsed());
    assert!(echo_text(&reply).is_none());
    for l in &relay.raw_stdout {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["jsonrpc"] == "2.0"),
            "{l:?}"
        );
    }
}

/// A new session on the reverse relay at `port`: its connection and id,
/// answered within [`ANSWER_WITHIN`].
fn session(port: u16) -> (Http, String) {
    let mut http = Http::connect(port);
    let t0 = Instant::now();
    let r = post_on(&mut http, None, &initialize(json!(0)), &[], ANSWER_WITHIN)
        .unwrap_or_else(|e| panic!("a fresh session not answered within 1 s: {e:?}"));
    assert_eq!(r.status(), 200, "{r:?}");
    let sid = r.header("mcp-session-id").expect("session id").to_owned();
    let ack = post(&mut http, Some(&sid), &initialized());
    assert_eq!(ack.status(), 202, "{ack:?}");
    eprintln!("fresh session answered in {:?}", t0.elapsed());
    (http, sid)
}

/// The messages of a POST's response (a JSON body or SSE events), each
/// checked to be JSON-RPC.
fn messages(r: &Response) -> Vec<Value> {
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
    msgs
}

/// Classes 1 and 12, reverse mode: sessions A and B share (or not) a
/// `--pretty` server. Each of A's calls is answered `invalid_reply` at
/// once, in a response holding only that answer; B, opened meanwhile, gets
/// its own answers (never A's) within 1 s.
#[test]
fn class12_reverse_a_multi_line_reply_answers_invalid_reply() {
    for mode in ["session", "shared"] {
        let relay = Relay::reverse("split")
            .args(["--pool", mode, "--response-timeout", "5s"])
            .echo_server(&["--pretty"])
            .start();
        let (mut a, sa) = session(relay.port);
        for n in 1..=3 {
            let t0 = Instant::now();
            let r = post(&mut a, Some(&sa), &call(json!(n), "pretty"));
            let took = t0.elapsed();
            assert_eq!(r.status(), 200, "{mode}: {r:?}");
            let msgs = messages(&r);
            assert_eq!(msgs.len(), 1, "{mode}: {r:?}");
            assert_eq!(msgs[0]["id"], json!(n), "{mode}: {r:?}");
            assert_eq!(error_kind(&msgs[0]), Some("invalid_reply"), "{mode}: {r:?}");
            assert!(took < ANSWER_WITHIN, "{mode}: answered after {took:?}");
        }
        let (mut b, sb) = session(relay.port);
        let t0 = Instant::now();
        let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
        let r = post_on(&mut b, Some(&sb), &ping, &[], ANSWER_WITHIN)
            .unwrap_or_else(|e| panic!("{mode}: B's ping not answered within 1 s: {e:?}"));
        let msgs = messages(&r);
        assert_eq!(msgs.len(), 1, "{mode}: {r:?}");
        assert!(msgs[0].get("result").is_some(), "{mode}: {r:?}");
        assert!(echo_text(&msgs[0]).is_none(), "{mode}: {r:?}");
        eprintln!("{mode}: B's ping answered in {:?}", t0.elapsed());
        // B's call fails on its own (the server pretty-prints it too), with
        // B's id, in B's response.
        let r = post(&mut b, Some(&sb), &call(json!("b"), "pretty"));
        let msgs = messages(&r);
        assert_eq!(msgs.len(), 1, "{mode}: {r:?}");
        assert_eq!(msgs[0]["id"], "b", "{mode}: {r:?}");
        assert_eq!(error_kind(&msgs[0]), Some("invalid_reply"), "{mode}: {r:?}");
    }
}
