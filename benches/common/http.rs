//! A minimal blocking HTTP/1.1 client for MCP Streamable HTTP, shared by the
//! benchmarks (`benches/common/mod.rs` includes it) and the load generator
//! (`examples/load.rs` includes it with `#[path]`). Plain std + httparse +
//! serde_json; no dependency on the harness (watchdog, `env!`).
//!
//! A request is written with one write (TCP_NODELAY); a response must carry a
//! Content-Length (the relay and `http_echo_server` answer JSON that way);
//! its body stays in the connection's buffer until the next read.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The last 16 bytes of every tool argument; the first 16 are the client
/// index and request id in hex, so a reply routed to the wrong session or
/// request cannot pass the check.
pub const TEXT_TAIL: &str = "0123456789abcdef";
pub const TEXT_BYTES: usize = 32;
pub const PROTOCOL_VERSION: &str = "2025-06-18";
pub const MCP_PATH: &str = "/mcp";
/// Socket read/write timeout: a backstop behind the watchdog.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);
pub const MAX_HEAD: usize = 64 * 1024;
pub const MAX_BODY: usize = 16 * 1024 * 1024;
/// `initialize` answered 503 (the relay's pool queue is full, e.g. many
/// sessions opening on a cold shared pool): retried this often, this far apart.
pub const INIT_RETRIES: u64 = 200;
pub const INIT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// The tool argument for request `id` of client `client`: 32 bytes.
pub fn make_text(out: &mut String, client: usize, id: u64) {
    out.clear();
    let _ = write!(out, "{:02x}{:014x}{TEXT_TAIL}", client & 0xff, id);
    debug_assert_eq!(out.len(), TEXT_BYTES);
}

pub fn call_body(out: &mut Vec<u8>, id: u64, text: &str) {
    out.clear();
    let _ = write!(
        out,
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\
         \"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"{text}\"}}}}}}"
    );
}

/// A 2026-07-28 `tools/call` of `echo`: the request carries the modern
/// envelope in `params._meta` (no session).
pub fn modern_call_body(out: &mut Vec<u8>, id: u64, text: &str) {
    out.clear();
    let _ = write!(
        out,
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\
         \"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"{text}\"}},\
         \"_meta\":{{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\
         \"io.modelcontextprotocol/clientInfo\":{{\"name\":\"mcp-relay-bench\",\"version\":\"0.1.0\"}},\
         \"io.modelcontextprotocol/clientCapabilities\":{{}}}}}}}}"
    );
}

/// The routing headers of a 2026-07-28 `tools/call` of `echo`.
pub const MODERN_CALL_HEADERS: &str =
    "MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: echo\r\n";

pub fn initialize_body(id: u64) -> Vec<u8> {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"initialize\",\"params\":\
         {{\"protocolVersion\":\"{PROTOCOL_VERSION}\",\"capabilities\":{{}},\
         \"clientInfo\":{{\"name\":\"mcp-relay-bench\",\"version\":\"0.1.0\"}}}}}}"
    )
    .into_bytes()
}

pub const INITIALIZED: &[u8] = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}";

pub fn snippet(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(300)])
        .trim_end()
        .to_string()
}

/// Checks a `tools/call` reply: right id, no error, the text echoed back.
pub fn check_call(v: &Value, id: u64, text: &str) -> Result<(), String> {
    if v.get("id").and_then(Value::as_u64) != Some(id) {
        return Err(format!("expected reply {id}, got {v}"));
    }
    if v.get("error").is_some() {
        return Err(format!("error reply: {v}"));
    }
    match v.pointer("/result/content/0/text").and_then(Value::as_str) {
        Some(t) if t == text => Ok(()),
        _ => Err(format!("reply {id} does not echo {text:?}: {v}")),
    }
}

pub fn check_initialize(v: &Value, id: u64) -> Result<(), String> {
    if v.get("id").and_then(Value::as_u64) != Some(id)
        || v.pointer("/result/protocolVersion").is_none()
    {
        return Err(format!("bad initialize reply: {v}"));
    }
    Ok(())
}

/// One parsed response; the body stays in the connection's buffer.
pub struct Resp {
    pub status: u16,
    pub json: bool,
    /// The server said `Connection: close`.
    pub close: bool,
    pub session: Option<String>,
    pub body: Range<usize>,
}

/// A connection to an HTTP server. With `close_each`, every request goes on
/// a fresh connection with `Connection: close` (then read to EOF and
/// dropped).
pub struct Http {
    addr: SocketAddr,
    host: String,
    close_each: bool,
    stream: Option<TcpStream>,
    req: Vec<u8>,
    buf: Vec<u8>,
    filled: usize,
    /// Bytes of the previous response, dropped at the next read.
    consumed: usize,
}

pub fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

impl Http {
    pub fn new(addr: SocketAddr, close_each: bool) -> std::io::Result<Http> {
        let stream = if close_each {
            None
        } else {
            Some(connect(addr)?)
        };
        Ok(Http {
            addr,
            host: addr.to_string(),
            close_each,
            stream,
            req: Vec::with_capacity(512),
            buf: vec![0; 16 * 1024],
            filled: 0,
            consumed: 0,
        })
    }

    pub fn body(&self, r: &Resp) -> &[u8] {
        &self.buf[r.body.clone()]
    }

    /// Sends one request (one write) and reads its response; returns it with
    /// the round trip in ns, `connect` included when `close_each`.
    pub fn exchange(
        &mut self,
        method: &str,
        path: &str,
        session: Option<&str>,
        body: &[u8],
    ) -> Result<(Resp, u64), String> {
        self.exchange_with(method, path, session, "", body)
    }

    /// [`Http::exchange`] with `extra` header lines (each ending in CRLF).
    pub fn exchange_with(
        &mut self,
        method: &str,
        path: &str,
        session: Option<&str>,
        extra: &str,
        body: &[u8],
    ) -> Result<(Resp, u64), String> {
        self.req.clear();
        let _ = write!(
            self.req,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n",
            self.host
        );
        if method == "POST" {
            self.req.extend_from_slice(
                b"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n",
            );
        }
        if let Some(sid) = session {
            let _ = write!(
                self.req,
                "mcp-session-id: {sid}\r\nmcp-protocol-version: {PROTOCOL_VERSION}\r\n"
            );
        }
        self.req.extend_from_slice(extra.as_bytes());
        if self.close_each {
            self.req.extend_from_slice(b"Connection: close\r\n");
        }
        let _ = write!(self.req, "Content-Length: {}\r\n\r\n", body.len());
        self.req.extend_from_slice(body);

        let t0 = Instant::now();
        if self.close_each {
            self.stream = Some(connect(self.addr).map_err(|e| format!("connect: {e}"))?);
            self.filled = 0;
            self.consumed = 0;
        }
        let stream = self.stream.as_mut().ok_or("no connection")?;
        stream
            .write_all(&self.req)
            .map_err(|e| format!("writing request: {e}"))?;
        let resp = self.read_response()?;
        let ns = t0.elapsed().as_nanos() as u64;
        if self.close_each {
            // When the server says it closes, let it close first (its
            // TIME_WAIT, not our ports), then drop our end; otherwise (the
            // relay answers a 503 without closing) close ours at once. Not
            // part of the latency; part of the throughput.
            let mut stream = self.stream.take().ok_or("no connection")?;
            if self.filled != self.consumed {
                return Err("bytes after a Connection: close response".into());
            }
            if !resp.close {
                return Ok((resp, ns));
            }
            let mut scratch = [0u8; 256];
            loop {
                match stream.read(&mut scratch) {
                    Ok(0) => break,
                    Ok(_) => return Err("bytes after a Connection: close response".into()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("waiting for the server to close: {e}")),
                }
            }
        }
        Ok((resp, ns))
    }

    fn read_more(&mut self) -> Result<(), String> {
        if self.filled == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        let stream = self.stream.as_mut().ok_or("no connection")?;
        loop {
            match stream.read(&mut self.buf[self.filled..]) {
                Ok(0) => return Err("EOF: the server closed the connection".into()),
                Ok(n) => {
                    self.filled += n;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading response: {e}")),
            }
        }
    }

    fn read_response(&mut self) -> Result<Resp, String> {
        if self.consumed > 0 {
            self.buf.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
        // Head.
        let (head_len, status, json, close, session, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Response::new(&mut headers);
            match r.parse(&self.buf[..self.filled]) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = r.code.unwrap_or(0);
                    let mut json = false;
                    let mut close = false;
                    let mut session = None;
                    let mut len = None;
                    for h in r.headers.iter() {
                        let name = h.name;
                        if name.eq_ignore_ascii_case("content-length") {
                            len = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok());
                            if len.is_none() {
                                return Err(format!("bad Content-Length {:?}", snippet(h.value)));
                            }
                        } else if name.eq_ignore_ascii_case("content-type") {
                            json = h.value.starts_with(b"application/json");
                        } else if name.eq_ignore_ascii_case("connection") {
                            close = h
                                .value
                                .split(|&b| b == b',')
                                .any(|o| o.trim_ascii().eq_ignore_ascii_case(b"close"));
                        } else if name.eq_ignore_ascii_case("mcp-session-id") {
                            session = Some(String::from_utf8_lossy(h.value).into_owned());
                        } else if name.eq_ignore_ascii_case("transfer-encoding") {
                            return Err(format!(
                                "status {status}: Transfer-Encoding {:?} (expected Content-Length)",
                                snippet(h.value)
                            ));
                        }
                    }
                    let len = len.ok_or_else(|| format!("status {status}: no Content-Length"))?;
                    if len > MAX_BODY {
                        return Err(format!("Content-Length {len} too large"));
                    }
                    break (n, status, json, close, session, len);
                }
                Ok(httparse::Status::Partial) => {
                    if self.filled >= MAX_HEAD {
                        return Err("response head too large".into());
                    }
                    self.read_more()?;
                }
                Err(e) => {
                    return Err(format!(
                        "unparsable response ({e}): {}",
                        snippet(&self.buf[..self.filled])
                    ));
                }
            }
        };
        // Body.
        let end = head_len + body_len;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        while self.filled < end {
            self.read_more()?;
        }
        self.consumed = end;
        Ok(Resp {
            status,
            json,
            close,
            session,
            body: head_len..end,
        })
    }
}

/// Opens an MCP session: `initialize` (taking the session id), then
/// `notifications/initialized` (expecting 202). Uses `reuse` when given,
/// else a new connection. An `initialize` answered 503 (pool queue full) is
/// retried [`INIT_RETRY_DELAY`] later on a fresh connection, up to
/// [`INIT_RETRIES`] times. Returns the connection, the session id and the
/// number of 503s.
pub fn open_session(
    addr: SocketAddr,
    close_each: bool,
    reuse: Option<Http>,
) -> Result<(Http, String, u64), String> {
    let mut init_503s = 0;
    let mut reuse = reuse;
    let (mut http, r) = loop {
        let mut http = match reuse.take() {
            Some(h) => h,
            None => Http::new(addr, close_each).map_err(|e| format!("connect: {e}"))?,
        };
        let (r, _) = http
            .exchange("POST", MCP_PATH, None, &initialize_body(1))
            .map_err(|e| format!("initialize: {e}"))?;
        if r.status == 503 && init_503s < INIT_RETRIES {
            // Retried on a fresh connection: the server may close this one.
            init_503s += 1;
            thread::sleep(INIT_RETRY_DELAY);
            continue;
        }
        break (http, r);
    };
    let body = http.body(&r);
    if r.status != 200 || !r.json {
        return Err(format!(
            "initialize: status {} (json: {}, after {init_503s} 503s): {}",
            r.status,
            r.json,
            snippet(body)
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("initialize reply ({e}): {}", snippet(body)))?;
    check_initialize(&v, 1)?;
    let session = r
        .session
        .ok_or_else(|| "initialize reply has no mcp-session-id".to_string())?;
    let (r, _) = http
        .exchange("POST", MCP_PATH, Some(&session), INITIALIZED)
        .map_err(|e| format!("notifications/initialized: {e}"))?;
    if r.status != 202 {
        return Err(format!(
            "notifications/initialized: status {} (expected 202): {}",
            r.status,
            snippet(http.body(&r))
        ));
    }
    Ok((http, session, init_503s))
}

/// One `tools/call` echo on `session`; returns the round trip in ns
/// (verification excluded). `body` is scratch space.
pub fn call_echo(
    http: &mut Http,
    session: &str,
    body: &mut Vec<u8>,
    id: u64,
    text: &str,
) -> Result<u64, String> {
    call_body(body, id, text);
    let (r, ns) = http
        .exchange("POST", MCP_PATH, Some(session), body)
        .map_err(|e| format!("request {id}: {e}"))?;
    let reply = http.body(&r);
    if r.status != 200 || !r.json {
        return Err(format!(
            "request {id}: status {} (json: {}): {}",
            r.status,
            r.json,
            snippet(reply)
        ));
    }
    let v: Value = serde_json::from_slice(reply)
        .map_err(|e| format!("reply {id} ({e}): {}", snippet(reply)))?;
    check_call(&v, id, text)?;
    Ok(ns)
}

/// One 2026-07-28 `tools/call` echo (no session); returns the round trip
/// in ns (verification excluded). The reply must be marked complete, as the
/// relay's bridge marks it. `body` is scratch space.
pub fn call_echo_modern(
    http: &mut Http,
    body: &mut Vec<u8>,
    id: u64,
    text: &str,
) -> Result<u64, String> {
    modern_call_body(body, id, text);
    let (r, ns) = http
        .exchange_with("POST", MCP_PATH, None, MODERN_CALL_HEADERS, body)
        .map_err(|e| format!("request {id}: {e}"))?;
    let reply = http.body(&r);
    if r.status != 200 || !r.json {
        return Err(format!(
            "request {id}: status {} (json: {}): {}",
            r.status,
            r.json,
            snippet(reply)
        ));
    }
    let v: Value = serde_json::from_slice(reply)
        .map_err(|e| format!("reply {id} ({e}): {}", snippet(reply)))?;
    check_call(&v, id, text)?;
    if v.pointer("/result/resultType").and_then(Value::as_str) != Some("complete") {
        return Err(format!(
            "reply {id} is not a modern result: {}",
            snippet(reply)
        ));
    }
    Ok(ns)
}

/// `GET path` on a fresh connection; returns the body of a 200.
pub fn get_text(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut http = Http::new(addr, true).map_err(|e| e.to_string())?;
    let (r, _) = http.exchange("GET", path, None, b"")?;
    let body = String::from_utf8_lossy(http.body(&r)).into_owned();
    if r.status != 200 {
        return Err(format!("GET {path}: status {}: {body}", r.status));
    }
    Ok(body)
}
