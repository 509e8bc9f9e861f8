//! A small MCP Streamable HTTP server, used as the "direct" HTTP baseline of
//! the benchmark suite and as the upstream of `mcp-relay forward --url` and
//! `mcp-relay reverse --url` there. The HTTP counterpart of `echo_server`.
//!
//! std and serde_json only: one thread per connection, HTTP/1.1 keep-alive
//! (pipelined requests are answered in order), bodies by Content-Length.
//!
//! - `POST /mcp` `initialize` → 200 JSON, with a new `Mcp-Session-Id`;
//! - `POST /mcp` notifications and responses → 202, no body;
//! - `POST /mcp` `tools/call` of `echo` → 200 JSON echoing `text`; also
//!   `ping` and `tools/list`; other methods → JSON-RPC error -32601; a batch
//!   (JSON array) → an array of the replies;
//! - a request with an unknown `Mcp-Session-Id` → 404, without one (other
//!   than `initialize`) → 400;
//! - `GET /mcp` → 405 (no server-initiated stream), `DELETE /mcp` → 200 and
//!   the session ends; other paths → 404, other methods → 405.
//!
//! Switches:
//!
//! - `--listen ADDR`: address to listen on (default `127.0.0.1:0`, an
//!   ephemeral port). Prints `listening on http://ADDR/mcp` on stderr.
//! - `--close`: answer every request with `Connection: close` and close the
//!   connection, so clients (and a relay's upstream pool) cannot reuse it.
//!
//! Run with `cargo run --release --example http_echo_server -- [switches]`.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::exit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

const USAGE: &str = "usage: http_echo_server [--listen ADDR] [--close]";
const PATH: &str = "/mcp";
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 16 * 1024 * 1024;

struct Shared {
    close: bool,
    sessions: Mutex<HashSet<String>>,
    next: AtomicU64,
    /// Per-process salt so ids differ between runs.
    salt: u64,
}

fn main() {
    let mut listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut close = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => match args.next().and_then(|v| v.parse().ok()) {
                Some(addr) => listen = addr,
                None => usage(),
            },
            "--close" => close = true,
            _ => usage(),
        }
    }
    // A client that vanishes must not kill the server with SIGPIPE.
    // SAFETY: installing SIG_IGN for SIGPIPE at startup; no handler code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("http_echo_server: cannot listen on {listen}: {e}");
        exit(1)
    });
    let addr = listener.local_addr().map_or(listen, |a| a);
    eprintln!("http_echo_server: listening on http://{addr}{PATH}");
    let salt = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 32;
    let shared = Arc::new(Shared {
        close,
        sessions: Mutex::new(HashSet::new()),
        next: AtomicU64::new(1),
        salt,
    });
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                let shared = Arc::clone(&shared);
                thread::spawn(move || {
                    // A broken connection only ends that connection.
                    let _ = serve(s, &shared);
                });
            }
            Err(e) => eprintln!("http_echo_server: accept: {e}"),
        }
    }
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    exit(2)
}

struct Request {
    method: String,
    target: String,
    session: Option<String>,
    keep_alive: bool,
    body: Vec<u8>,
}

/// Serves one connection until the client closes it or a response ends it.
fn serve(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // Answer every complete request in the buffer, then write once.
        let mut close = false;
        loop {
            match parse(&buf) {
                Parsed::Partial => break,
                Parsed::Bad(status, why) => {
                    respond(&mut out, status, why.as_bytes(), "text/plain", None, false);
                    close = true;
                    break;
                }
                Parsed::Complete(req, used) => {
                    buf.drain(..used);
                    let keep = req.keep_alive && !shared.close;
                    handle(&req, shared, &mut out, keep);
                    if !keep {
                        close = true;
                        break;
                    }
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
        if close {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            return Ok(());
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

enum Parsed {
    Partial,
    Bad(u16, String),
    Complete(Request, usize),
}

fn parse(buf: &[u8]) -> Parsed {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Parsed::Bad(431, "request head too large".into());
        }
        return Parsed::Partial;
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Bad(400, "request head is not UTF-8".into());
    };
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Parsed::Bad(400, "bad request line".into());
    };
    let http10 = version == "HTTP/1.0";
    let mut len = 0usize;
    let mut session = None;
    let mut keep_alive = !http10;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Bad(400, "bad header line".into());
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(n) if n <= MAX_BODY => len = n,
                Ok(_) => return Parsed::Bad(413, "body too large".into()),
                Err(_) => return Parsed::Bad(400, "bad Content-Length".into()),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Bad(411, "send a Content-Length".into());
        } else if name.eq_ignore_ascii_case("mcp-session-id") {
            session = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("connection") {
            for opt in value.split(',').map(str::trim) {
                if opt.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if opt.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    let total = end + 4 + len;
    if buf.len() < total {
        return Parsed::Partial;
    }
    Parsed::Complete(
        Request {
            method: method.to_string(),
            target: target.to_string(),
            session,
            keep_alive,
            body: buf[end + 4..total].to_vec(),
        },
        total,
    )
}

/// Appends a complete response to `out`.
fn respond(
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    content_type: &str,
    session: Option<&str>,
    keep_alive: bool,
) {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Status",
    };
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\n");
    if !body.is_empty() {
        let _ = write!(out, "Content-Type: {content_type}\r\n");
    }
    if let Some(sid) = session {
        let _ = write!(out, "Mcp-Session-Id: {sid}\r\n");
    }
    if status == 405 {
        out.extend_from_slice(b"Allow: POST, DELETE\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    out.extend_from_slice(body);
}

fn json_error(out: &mut Vec<u8>, status: u16, code: i64, message: &str, keep: bool) {
    let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    respond(
        out,
        status,
        body.to_string().as_bytes(),
        "application/json",
        None,
        keep,
    );
}

fn handle(req: &Request, shared: &Shared, out: &mut Vec<u8>, keep: bool) {
    let path = req.target.split('?').next().unwrap_or_default();
    if path != PATH {
        respond(out, 404, b"not found", "text/plain", None, keep);
        return;
    }
    match req.method.as_str() {
        "POST" => post(req, shared, out, keep),
        "DELETE" => match &req.session {
            Some(sid) if lock(shared).remove(sid) => respond(out, 200, b"", "", None, keep),
            Some(_) => json_error(out, 404, -32001, "Session not found", keep),
            None => json_error(out, 400, -32000, "Mcp-Session-Id required", keep),
        },
        // GET (a server-initiated stream) is not offered; nor anything else.
        _ => respond(out, 405, b"", "", None, keep),
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, HashSet<String>> {
    shared
        .sessions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn post(req: &Request, shared: &Shared, out: &mut Vec<u8>, keep: bool) {
    let msg: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(_) => return json_error(out, 400, -32700, "Parse error", keep),
    };
    let is_initialize = msg.get("method").and_then(Value::as_str) == Some("initialize");
    let mut new_session = None;
    if is_initialize {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        let sid = format!("{:016x}{:016x}", shared.salt, mix(n ^ shared.salt));
        lock(shared).insert(sid.clone());
        new_session = Some(sid);
    } else {
        match &req.session {
            Some(sid) if lock(shared).contains(sid) => {}
            Some(_) => return json_error(out, 404, -32001, "Session not found", keep),
            None => return json_error(out, 400, -32000, "Mcp-Session-Id required", keep),
        }
    }
    let reply = match &msg {
        Value::Array(batch) => {
            let replies: Vec<Value> = batch.iter().filter_map(answer).collect();
            (!replies.is_empty()).then_some(Value::Array(replies))
        }
        single => answer(single),
    };
    match reply {
        Some(r) => respond(
            out,
            200,
            r.to_string().as_bytes(),
            "application/json",
            new_session.as_deref(),
            keep,
        ),
        None => respond(out, 202, b"", "", None, keep),
    }
}

/// splitmix64: session ids that do not look sequential.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The reply to one message, or `None` for notifications and responses.
fn answer(msg: &Value) -> Option<Value> {
    let method = msg.get("method").and_then(Value::as_str)?;
    let id = msg.get("id")?.clone();
    let result = match method {
        "initialize" => Ok(json!({
            "protocolVersion": msg
                .pointer("/params/protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or("2025-06-18"),
            "capabilities": {"tools": {"listChanged": false}},
            "serverInfo": {"name": "http-echo-server", "version": "0.1.0"},
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({"tools": [{
            "name": "echo",
            "description": "Echoes `text`.",
            "inputSchema": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        }]})),
        "tools/call" => match msg.pointer("/params/name").and_then(Value::as_str) {
            Some("echo") => {
                let text = msg
                    .pointer("/params/arguments/text")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Ok(json!({"content": [{"type": "text", "text": text}]}))
            }
            other => Err((
                -32602,
                format!("Unknown tool: {}", other.unwrap_or("<missing>")),
            )),
        },
        _ => Err((-32601, "Method not found".to_string())),
    };
    Some(match result {
        Ok(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
        Err((code, message)) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
        }
    })
}
