//! Pieces shared by the fake HTTP upstreams of `forward_url.rs` and
//! `reverse_url.rs`: timing bounds, what a fake connection does after a
//! handler, and the messages a well-behaved MCP server sends.

#![allow(dead_code)]

use std::time::Duration;

use serde_json::{Value, json};

use super::http::VERSION;

/// How long a fake's blocking read waits before its thread checks the stop
/// flag (and, in loops that push events, its outbox) again.
pub const TICK: Duration = Duration::from_millis(20);

/// Scheduling margin added to "timeout + 10%". A measured interval spans a
/// few thread hand-offs (test thread, relay, the fake's threads), each a
/// write and a wakeup; on a busy 2-core CI box running a file's tests in
/// parallel, a runnable thread may wait a few scheduler slices per hop (CFS
/// targets ~24 ms latency with 8+ runnable tasks), and the relay's timer
/// wheel rounds deadlines up to the next millisecond. 100 ms covers that with
/// room to spare; it is the same for every timing assertion.
pub const MARGIN: Duration = Duration::from_millis(100);

/// `timeout` + 10% + [`MARGIN`].
pub fn upper_bound(timeout: Duration) -> Duration {
    timeout + timeout / 10 + MARGIN
}

/// What the connection does once a handler returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    KeepAlive,
    Close,
}

pub enum Got {
    Data,
    Nothing,
    Closed,
}

pub fn init_result(id: &Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "protocolVersion": VERSION,
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "fake-http-upstream", "version": "0"},
    }})
}

pub fn echo_reply(id: &Value, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}})
}

pub fn progress(token: &Value, n: u64) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/progress",
           "params": {"progressToken": token, "progress": n, "total": 10}})
}

/// A server-initiated message carrying `n`.
pub fn server_note(n: u64) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/message",
           "params": {"level": "info", "data": {"n": n}}})
}

/// The reply a well-behaved server gives to a JSON-RPC message, if any.
pub fn reply_to(msg: &Value) -> Option<Value> {
    let method = msg.get("method")?.as_str()?;
    let id = msg.get("id")?;
    Some(match method {
        "initialize" => init_result(id),
        "tools/call" => echo_reply(id, msg["params"]["arguments"]["text"].as_str()?),
        _ => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
    })
}
