//! The hostile HTTP upstream: a well-behaved Streamable HTTP MCP server
//! (session ids, JSON replies, a GET stream held open, DELETE) with one
//! switch per misbehaviour, named after the isolation-and-bounds classes in
//! `docs/runbook.md` ("Hostile peers"). Tests read like the list:
//! `Hostile::start(Attack::GetFlood)`.
//!
//! The stdio counterpart is `examples/echo_server.rs` and its switches.

#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::fake::{After, Conn, Fake, Req, handler, reply_to};

/// One misbehaviour of the upstream. `None` is the well-behaved server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attack {
    /// Behaves.
    None,
    /// Class 11 (log floods and log injection): the GET stream sends events
    /// that are not JSON-RPC, full of ESC sequences, NUL, DEL, a C1 control
    /// and bytes that are not UTF-8 (each one a warning quoting it): 64
    /// every 5 ms, a flood of log lines rather than of bytes (that is
    /// class 5). The rest behaves.
    LogInjection,
    // ---- mcp-relay issue 11, classes 3 (upstream side) and 5 ----------------
    /// Class 3 and 5: every GET stream of a live session is flooded with
    /// `notifications/message` events (about 1 KiB each, no id) as fast as
    /// the socket takes them, until the relay closes the connection (or
    /// stops reading for the fake's 2 s write timeout) or the fake stops.
    GetFlood,
    // ---- mcp-relay issue 11, class 6 ----------------------------------------
    /// Class 6: every GET is refused with this status (400, 403, 404, …)
    /// and a JSON-RPC error body, however live its session is; POSTs behave.
    GetRefused(u16),
    /// Class 6: every GET is answered with this status (429, 503) and
    /// `Retry-After: SECS`; POSTs behave.
    GetRetryAfter(u16, u64),
    /// Class 13: writes every numeric id of its replies back as the f64 it
    /// parses to (`1e0` → `1.0`, 2^64 → `1.8446744073709552e19`), as a
    /// server that re-serialises ids does.
    RespellIds,
}

/// The upstream's sessions: issued by `initialize`, ended by DELETE or by
/// the test ([`Hostile::expire`]).
#[derive(Default)]
pub struct Sessions {
    issued: AtomicUsize,
    live: Mutex<HashSet<String>>,
}

impl Sessions {
    fn issue(&self) -> String {
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        let sid = format!("hostile-session-{n}");
        self.live.lock().unwrap().insert(sid.clone());
        sid
    }

    fn is_live(&self, sid: Option<&str>) -> bool {
        sid.is_some_and(|s| self.live.lock().unwrap().contains(s))
    }

    /// Sessions issued so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

/// A running hostile upstream on 127.0.0.1 (dropping it stops its threads).
pub struct Hostile {
    pub fake: Fake,
    pub sessions: Arc<Sessions>,
}

impl Hostile {
    pub fn start(attack: Attack) -> Hostile {
        let sessions = Arc::new(Sessions::default());
        let up = sessions.clone();
        let fake = Fake::start(handler(move |req, conn| serve(&attack, req, conn, &up)));
        Hostile { fake, sessions }
    }

    pub fn url(&self) -> String {
        self.fake.url()
    }

    pub fn seen(&self) -> Vec<Req> {
        self.fake.seen()
    }

    /// Ends `sid` as if the upstream had forgotten it (its next use is 404).
    pub fn expire(&self, sid: &str) -> bool {
        self.sessions.live.lock().unwrap().remove(sid)
    }
}

/// The whole server: the attack's handler if it takes this request, else the
/// well-behaved behaviour.
fn serve(attack: &Attack, req: &Req, conn: &mut Conn, up: &Sessions) -> After {
    match attack {
        Attack::None => standard(req, conn, up),
        Attack::LogInjection if req.method == "GET" && up.is_live(req.session()) => {
            log_injection_stream(conn, up, req.session())
        }
        Attack::GetFlood if req.method == "GET" && up.is_live(req.session()) => {
            get_flood(req, conn);
            After::Close
        }
        Attack::GetRefused(status) if req.method == "GET" => {
            error_status(conn, *status, -32000, "no GET stream here")
        }
        Attack::GetRetryAfter(status, secs) if req.method == "GET" => {
            let body = json!({"jsonrpc": "2.0", "id": null,
                              "error": {"code": -32000, "message": "busy"}});
            conn.respond(
                *status,
                &[
                    ("content-type", "application/json"),
                    ("retry-after", &secs.to_string()),
                ],
                body.to_string().as_bytes(),
            )
        }
        Attack::RespellIds => respell_ids(req, conn, up),
        Attack::LogInjection
        | Attack::GetFlood
        | Attack::GetRefused(_)
        | Attack::GetRetryAfter(..) => standard(req, conn, up),
    }
}

/// [`Attack::LogInjection`]: SSE events of hostile non-JSON text, 64 per
/// chunk every 5 ms, until the relay closes the stream or the session ends.
fn log_injection_stream(conn: &mut Conn, up: &Sessions, sid: Option<&str>) -> After {
    if !conn.sse_start() {
        return After::Close;
    }
    let mut events = Vec::new();
    for n in 0..64 {
        events.extend_from_slice(
            format!("data: inject {n} \x1b[31mRED\x1b[2J\x00nul\x7f\u{9b}c1 ").as_bytes(),
        );
        events.extend_from_slice(b"\xff\xfe not json\n\n");
    }
    let mut chunk = format!("{:x}\r\n", events.len()).into_bytes();
    chunk.extend_from_slice(&events);
    chunk.extend_from_slice(b"\r\n");
    while up.is_live(sid) && conn.send(&chunk) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    After::Close
}

/// Bytes of one flood event's `data` padding.
pub const FLOOD_PAD: usize = 1000;

/// [`Attack::GetFlood`]: an SSE stream that never stops sending. The events
/// carry no id (so nothing is deduplicated away); 256 of them go out per
/// write, and the fake's stop flag is looked at between writes.
fn get_flood(_req: &Req, conn: &mut Conn) {
    if !conn.sse_start() {
        return;
    }
    let pad = "x".repeat(FLOOD_PAD);
    let mut batch = Vec::with_capacity(300 * 1024);
    for n in 0..256 {
        let data = json!({"jsonrpc": "2.0", "method": "notifications/message",
                          "params": {"level": "info", "data": {"n": n, "pad": pad}}});
        let ev = format!("data: {data}\n\n");
        batch.extend_from_slice(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes());
    }
    while !conn.stopping() && conn.send(&batch) {}
}

/// `standard`, with numeric reply ids re-spelled through f64.
fn respell_ids(req: &Req, conn: &mut Conn, up: &Sessions) -> After {
    let msg = req.json();
    let numeric = msg.get("id").is_some_and(serde_json::Value::is_number);
    let Some(mut reply) = reply_to(&msg).filter(|_| req.method == "POST" && numeric) else {
        return standard(req, conn, up);
    };
    let mut headers = vec![("content-type", "application/json".to_string())];
    if msg["method"] == "initialize" {
        headers.push(("mcp-session-id", up.issue()));
    } else if !up.is_live(req.session()) {
        return error_status(conn, 404, -32001, "Session not found");
    }
    let f = msg["id"].as_f64().unwrap_or(0.0);
    let spelled = if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f:e}")
    };
    reply["id"] = json!("@@ID@@");
    let body = reply.to_string().replace("\"@@ID@@\"", &spelled);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    conn.respond(200, &headers, body.as_bytes())
}

/// The well-behaved server: initialize → 200 JSON + a new `Mcp-Session-Id`;
/// no session id → 400, an unknown one → 404; notifications and responses
/// → 202; requests → 200 JSON (`tools/call` echoes its `text`); GET → an SSE
/// stream held open until its session ends; DELETE → 200.
pub fn standard(req: &Req, conn: &mut Conn, up: &Sessions) -> After {
    let msg = req.json();
    if req.method == "POST" && msg["method"] == "initialize" {
        let sid = up.issue();
        let reply = reply_to(&msg).expect("initialize reply");
        return conn.json(&[("mcp-session-id", &sid)], &reply);
    }
    if req.session().is_none() {
        return error_status(conn, 400, -32000, "Mcp-Session-Id header is required");
    }
    if !up.is_live(req.session()) {
        return error_status(conn, 404, -32001, "Session not found");
    }
    match req.method.as_str() {
        "POST" => match reply_to(&msg) {
            Some(reply) => conn.json(&[], &reply),
            None => conn.accepted(),
        },
        "GET" => {
            if conn.sse_start() {
                let sid = req.session().map(str::to_owned);
                conn.hold_until(|| !up.is_live(sid.as_deref()));
            }
            After::Close
        }
        "DELETE" => {
            up.live
                .lock()
                .unwrap()
                .remove(req.session().unwrap_or_default());
            conn.respond(200, &[], b"")
        }
        _ => conn.respond(405, &[], b""),
    }
}

/// An HTTP error status with a JSON-RPC error body, as the SDK servers send.
pub fn error_status(conn: &mut Conn, status: u16, code: i64, message: &str) -> After {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    conn.respond(
        status,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
}
