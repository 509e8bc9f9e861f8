//! The hostile HTTP upstream: a well-behaved Streamable HTTP MCP server
//! (session ids, JSON replies, a GET stream held open, DELETE) with one
//! switch per misbehaviour, named after the isolation-and-bounds classes in
//! `docs/runbook.md` ("Hostile peers"). Tests read like the list:
//! `Hostile::start(Attack::GetFlood)`.
//!
//! The stdio counterpart is `examples/echo_server.rs` and its switches.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

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
    // ---- mcp-relay issue 11, class 2 ----------------------------------------
    /// Class 2 (reframing toward the host): every reply to a POSTed request
    /// (`initialize` included) is a JSON body pretty-printed over many
    /// lines, with raw CRLF between its tokens.
    PrettyJsonBody,
    /// Class 2: every reply to a POSTed request (`initialize` included) is
    /// an SSE event whose JSON is pretty-printed over several `data:` lines
    /// (the receiver joins them with LF); each GET stream opens with a
    /// `notifications/message` (data `"multi-line"`) split the same way.
    MultiLineSseData,
    // ---- mcp-relay issue 11, class 12 ---------------------------------------
    /// Class 12 (invalid UTF-8): the reply to a `tools/call` is a JSON body
    /// with a byte that is not UTF-8 (0xFF) in its text. A call whose text
    /// starts with `fresh` is answered well.
    InvalidUtf8Body,
    /// Class 12: the reply to a `tools/call` is an SSE event whose data has
    /// a byte that is not UTF-8 (0xFF) in its text; for a call whose text is
    /// `on-get` the POST stream ends empty and that reply comes on the
    /// session's GET stream instead. Each GET stream opens with a
    /// `notifications/message` that is not UTF-8, then a valid one (data
    /// `"after-invalid"`). A call whose text starts with `fresh` is
    /// answered well.
    InvalidUtf8Sse,
}

/// The upstream's sessions: issued by `initialize`, ended by DELETE or by
/// the test ([`Hostile::expire`]).
#[derive(Default)]
pub struct Sessions {
    issued: AtomicUsize,
    live: Mutex<HashSet<String>>,
    /// Chunks waiting for a session's GET stream, by session id.
    for_get: Mutex<HashMap<String, Vec<Vec<u8>>>>,
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

    fn queue_for_get(&self, sid: &str, chunk: Vec<u8>) {
        let mut q = self.for_get.lock().unwrap();
        q.entry(sid.to_owned()).or_default().push(chunk);
    }

    fn take_for_get(&self, sid: &str) -> Vec<Vec<u8>> {
        self.for_get.lock().unwrap().remove(sid).unwrap_or_default()
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
        Attack::PrettyJsonBody => standard_with(req, conn, up, pretty_json),
        Attack::MultiLineSseData if req.method == "GET" && up.is_live(req.session()) => {
            let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
                              "params": {"level": "info", "data": "multi-line"}});
            stream_then_hold(conn, up, req.session(), &[multi_line_event(&note)])
        }
        Attack::MultiLineSseData => standard_with(req, conn, up, multi_line_sse),
        Attack::InvalidUtf8Body if is_attacked_call(req) => {
            let reply = reply_to(&req.json()).expect("a tools/call reply");
            conn.respond(
                200,
                &[("content-type", "application/json")],
                &with_invalid_byte(&reply),
            )
        }
        Attack::InvalidUtf8Sse if req.method == "GET" && up.is_live(req.session()) => {
            let bad = json!({"jsonrpc": "2.0", "method": "notifications/message",
                             "params": {"level": "info", "data": "bad @@ byte"}});
            let good = json!({"jsonrpc": "2.0", "method": "notifications/message",
                              "params": {"level": "info", "data": "after-invalid"}});
            let mut first = b"data: ".to_vec();
            first.extend_from_slice(&with_invalid_byte(&bad));
            first.extend_from_slice(format!("\n\ndata: {good}\n\n").as_bytes());
            stream_then_hold(conn, up, req.session(), &[first])
        }
        Attack::InvalidUtf8Sse if is_attacked_call(req) => {
            let msg = req.json();
            let reply = reply_to(&msg).expect("a tools/call reply");
            let mut ev = b"data: ".to_vec();
            ev.extend_from_slice(&with_invalid_byte(&reply));
            ev.extend_from_slice(b"\n\n");
            if !conn.sse_start() {
                return After::Close;
            }
            if msg["params"]["arguments"]["text"] == "on-get" {
                // 2025-11-25 polling: the POST stream ends, the reply
                // comes on the GET stream.
                up.queue_for_get(req.session().unwrap_or_default(), chunk(&ev));
            } else if !conn.send(&chunk(&ev)) {
                return After::Close;
            }
            if conn.sse_end() {
                After::KeepAlive
            } else {
                After::Close
            }
        }
        Attack::LogInjection
        | Attack::GetFlood
        | Attack::GetRefused(_)
        | Attack::GetRetryAfter(..)
        | Attack::InvalidUtf8Body
        | Attack::InvalidUtf8Sse => standard(req, conn, up),
    }
}

/// A POSTed `tools/call` whose text does not start with `fresh`: the class
/// 12 attacks' target.
fn is_attacked_call(req: &Req) -> bool {
    let msg = req.json();
    req.method == "POST"
        && msg["method"] == "tools/call"
        && msg["id"].is_number()
        && msg["params"]["arguments"]["text"]
            .as_str()
            .is_some_and(|t| !t.starts_with("fresh"))
}

/// `v` serialised with a byte that is not UTF-8 (0xFF) in place of the
/// first `@@` in it (or, without one, of the first `e` of `"text"`).
pub fn with_invalid_byte(v: &Value) -> Vec<u8> {
    let mut text = v.to_string();
    if !text.contains("@@") {
        text = text.replacen("\"text\":\"", "\"text\":\"@@", 1);
    }
    let mut bytes = text.into_bytes();
    let at = bytes
        .windows(2)
        .position(|w| w == b"@@")
        .expect("a place for the byte");
    bytes.splice(at..at + 2, [0xFF]);
    bytes
}

/// `ev` (whole SSE events) as one chunk of a chunked body.
fn chunk(ev: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", ev.len()).into_bytes();
    out.extend_from_slice(ev);
    out.extend_from_slice(b"\r\n");
    out
}

/// One SSE event carrying `v` pretty-printed, one `data:` line per line.
fn multi_line_event(v: &Value) -> Vec<u8> {
    let pretty = serde_json::to_string_pretty(v).expect("json");
    let mut ev = String::new();
    for line in pretty.lines() {
        ev.push_str("data: ");
        ev.push_str(line);
        ev.push('\n');
    }
    ev.push('\n');
    ev.into_bytes()
}

/// [`Attack::PrettyJsonBody`]: `reply` pretty-printed, lines ended by CRLF.
fn pretty_json(conn: &mut Conn, headers: &[(&str, &str)], reply: &Value) -> After {
    let body = serde_json::to_string_pretty(reply)
        .expect("json")
        .replace('\n', "\r\n");
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    conn.respond(200, &h, body.as_bytes())
}

/// [`Attack::MultiLineSseData`]: `reply` as one multi-line SSE event.
fn multi_line_sse(conn: &mut Conn, headers: &[(&str, &str)], reply: &Value) -> After {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
         cache-control: no-cache\r\ntransfer-encoding: chunked\r\n",
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&chunk(&multi_line_event(reply)));
    bytes.extend_from_slice(b"0\r\n\r\n");
    if conn.send(&bytes) {
        After::KeepAlive
    } else {
        After::Close
    }
}

/// A GET stream that sends `first` (whole SSE events, one chunk each), then
/// what [`Sessions::queue_for_get`] queues for its session, until the
/// session ends or the relay closes the stream.
fn stream_then_hold(conn: &mut Conn, up: &Sessions, sid: Option<&str>, first: &[Vec<u8>]) -> After {
    if !conn.sse_start() {
        return After::Close;
    }
    for ev in first {
        if !conn.send(&chunk(ev)) {
            return After::Close;
        }
    }
    let sid = sid.unwrap_or_default();
    while up.is_live(Some(sid)) {
        for c in up.take_for_get(sid) {
            if !conn.send(&c) {
                return After::Close;
            }
        }
        if !conn.wait(std::time::Duration::from_millis(10)) {
            break;
        }
    }
    After::Close
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
    standard_with(req, conn, up, |conn, headers, reply| {
        conn.json(headers, reply)
    })
}

/// How a server writes a reply to a POST: on `conn`, with `headers`.
type Answer = fn(&mut Conn, &[(&str, &str)], &Value) -> After;

/// [`standard`], each reply to a POSTed request written by `answer`.
fn standard_with(req: &Req, conn: &mut Conn, up: &Sessions, answer: Answer) -> After {
    let msg = req.json();
    if req.method == "POST" && msg["method"] == "initialize" {
        let sid = up.issue();
        let reply = reply_to(&msg).expect("initialize reply");
        return answer(conn, &[("mcp-session-id", &sid)], &reply);
    }
    if req.session().is_none() {
        return error_status(conn, 400, -32000, "Mcp-Session-Id header is required");
    }
    if !up.is_live(req.session()) {
        return error_status(conn, 404, -32001, "Session not found");
    }
    match req.method.as_str() {
        "POST" => match reply_to(&msg) {
            Some(reply) => answer(conn, &[], &reply),
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
