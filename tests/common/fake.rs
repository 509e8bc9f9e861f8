//! The fake MCP Streamable HTTP upstream of `forward_url.rs` and
//! `reverse_url.rs` ([`Fake`]): blocking std code on threads, one acceptor
//! and one thread per connection, every read bounded by [`TICK`] so each
//! thread looks at its stop flag at least that often; plain HTTP or TLS.
//! Responses are hand-written HTTP/1.1 by a test's [`Handler`]; the fake
//! records every request ([`Req`]) and connection. Also here: timing bounds
//! and the messages a well-behaved MCP server sends.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{Value, json};

use super::http::{VERSION, linger_zero};

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

// ---- requests -------------------------------------------------------------

/// One HTTP request as a fake received it.
#[derive(Debug, Clone)]
pub struct Req {
    /// When the whole request (head and body) had arrived.
    pub at: Instant,
    /// Connection number, 1-based, in accept order.
    pub conn: usize,
    pub method: String,
    pub target: String,
    /// Names lowercased, in arrival order, duplicates kept.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k == name).count()
    }

    pub fn session(&self) -> Option<&str> {
        self.header("mcp-session-id")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The JSON-RPC method of a POST body, if any.
    pub fn rpc(&self) -> Option<String> {
        self.json()
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    pub fn is_post_of(&self, rpc_method: &str) -> bool {
        self.method == "POST" && self.rpc().as_deref() == Some(rpc_method)
    }

    pub fn summary(&self) -> String {
        format!(
            "#{} {} {} session={:?} last-event-id={:?} rpc={:?} id={}",
            self.conn,
            self.method,
            self.target,
            self.session(),
            self.header("last-event-id"),
            self.rpc(),
            self.json().get("id").cloned().unwrap_or(Value::Null)
        )
    }
}

pub fn summaries(reqs: &[Req]) -> String {
    reqs.iter().map(Req::summary).collect::<Vec<_>>().join("\n")
}

/// Takes one complete request off the front of `buf`.
pub fn take_request(buf: &mut Vec<u8>, conn: usize) -> Option<Req> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    if buf.len() < end + 4 + len {
        return None;
    }
    let body = buf[end + 4..end + 4 + len].to_vec();
    buf.drain(..end + 4 + len);
    Some(Req {
        at: Instant::now(),
        conn,
        method,
        target,
        headers,
        body,
    })
}

// ---- connections ----------------------------------------------------------

/// What one read on a connection brought.
enum Got {
    Data,
    Nothing,
    Closed,
}

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

/// The server side of one accepted connection (plain or TLS).
pub struct Conn {
    io: Box<dyn Io>,
    /// The same socket, for socket options.
    tcp: TcpStream,
    stop: Arc<AtomicBool>,
    /// Bytes received and not yet consumed as a request.
    buf: Vec<u8>,
}

impl Conn {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The fake is stopping: a handler that writes without reading
    /// (a flood) returns.
    pub fn stopping(&self) -> bool {
        self.stopped()
    }

    /// One read, waiting at most [`TICK`].
    fn read_some(&mut self) -> Got {
        let mut tmp = [0u8; 16 * 1024];
        match self.io.read(&mut tmp) {
            Ok(0) => Got::Closed,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Got::Data
            }
            Err(e) if timed_out(&e) => Got::Nothing,
            Err(_) => Got::Closed,
        }
    }

    /// Waits `d`, reading whatever comes. False if the peer closed the
    /// connection or the fake is stopping.
    pub fn wait(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.stopped() || matches!(self.read_some(), Got::Closed) {
                return false;
            }
            if Instant::now() >= until {
                return true;
            }
        }
    }

    /// Keeps the connection open, answering nothing, until the peer closes
    /// it (true), the fake stops or `until` says so (false).
    pub fn hold_until(&mut self, until: impl Fn() -> bool) -> bool {
        loop {
            if self.stopped() || until() {
                return false;
            }
            if matches!(self.read_some(), Got::Closed) {
                return true;
            }
        }
    }

    /// Keeps the connection open without answering until the peer closes it
    /// (true) or the fake stops (false).
    pub fn hold(&mut self) -> bool {
        self.hold_until(|| false)
    }

    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.io
            .write_all(bytes)
            .and_then(|()| self.io.flush())
            .is_ok()
    }

    /// A response with a Content-Length body; the connection closes after it
    /// if the headers say `connection: close`.
    pub fn respond(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> After {
        let reason = match status {
            200 => "OK",
            202 => "Accepted",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Whatever",
        };
        let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        let closes = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
        if self.send(&bytes) && !closes {
            After::KeepAlive
        } else {
            After::Close
        }
    }

    pub fn json(&mut self, headers: &[(&str, &str)], v: &Value) -> After {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        self.respond(200, &h, v.to_string().as_bytes())
    }

    pub fn accepted(&mut self) -> After {
        self.respond(202, &[], b"")
    }

    /// 200 `text/event-stream`, chunked; events follow with `sse_event`.
    pub fn sse_start(&mut self) -> bool {
        self.send(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
              cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n",
        )
    }

    /// One SSE event in one chunk.
    pub fn sse_event(&mut self, id: Option<&str>, data: &str) -> bool {
        self.sse_chunk(id, None, data)
    }

    /// One SSE event of type `event` in one chunk.
    pub fn sse_typed_event(&mut self, id: Option<&str>, event: &str, data: &str) -> bool {
        self.sse_chunk(id, Some(event), data)
    }

    fn sse_chunk(&mut self, id: Option<&str>, event: Option<&str>, data: &str) -> bool {
        let mut ev = String::new();
        if let Some(id) = id {
            ev.push_str(&format!("id: {id}\n"));
        }
        if let Some(event) = event {
            ev.push_str(&format!("event: {event}\n"));
        }
        ev.push_str(&format!("data: {data}\n\n"));
        self.send(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes())
    }

    /// The last chunk: the response ends cleanly.
    pub fn sse_end(&mut self) -> bool {
        self.send(b"0\r\n\r\n")
    }

    /// Makes the close that follows a reset (RST) rather than a FIN.
    pub fn reset(&mut self) -> After {
        linger_zero(&self.tcp);
        After::Close
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

// ---- the fake -------------------------------------------------------------

/// What a fake does with each request: answers on the connection, and says
/// whether the connection stays open.
pub type Handler = Arc<dyn Fn(&Req, &mut Conn) -> After + Send + Sync>;

pub fn handler(f: impl Fn(&Req, &mut Conn) -> After + Send + Sync + 'static) -> Handler {
    Arc::new(f)
}

/// A listener on a free port of 127.0.0.1.
pub fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// What the acceptor and the connection threads share with the [`Fake`].
#[derive(Clone)]
struct Shared {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Req>>>,
    /// Connections the peer closed: (connection number, when noticed).
    closed: Arc<Mutex<Vec<(usize, Instant)>>>,
    conns: Arc<AtomicUsize>,
    tls_failures: Arc<AtomicUsize>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// A fake MCP HTTP server on 127.0.0.1. Dropping it stops and joins every
/// one of its threads (each notices within about [`TICK`]).
pub struct Fake {
    addr: SocketAddr,
    shared: Shared,
    /// TLS handshakes that failed.
    pub tls_failures: Arc<AtomicUsize>,
    acceptor: Option<JoinHandle<()>>,
}

impl Fake {
    /// Plain HTTP on a free port.
    pub fn start(h: Handler) -> Fake {
        Fake::serve(bind(), h)
    }

    /// Plain HTTP on `listener`.
    pub fn serve(listener: TcpListener, h: Handler) -> Fake {
        Fake::serve_with(listener, h, None)
    }

    /// HTTPS on `listener`.
    pub fn serve_tls(listener: TcpListener, h: Handler, tls: Arc<ServerConfig>) -> Fake {
        Fake::serve_with(listener, h, Some(tls))
    }

    fn serve_with(listener: TcpListener, h: Handler, tls: Option<Arc<ServerConfig>>) -> Fake {
        let addr = listener.local_addr().expect("local_addr");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let shared = Shared {
            stop: Arc::new(AtomicBool::new(false)),
            seen: Arc::default(),
            closed: Arc::default(),
            conns: Arc::new(AtomicUsize::new(0)),
            tls_failures: Arc::new(AtomicUsize::new(0)),
            threads: Arc::default(),
        };
        let acceptor = {
            let shared = shared.clone();
            thread::spawn(move || {
                while !shared.stop.load(Ordering::SeqCst) {
                    let tcp = match listener.accept() {
                        Ok((s, _)) => s,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(2));
                            continue;
                        }
                        Err(e) => panic!("accept: {e}"),
                    };
                    let n = shared.conns.fetch_add(1, Ordering::SeqCst) + 1;
                    let (conn_shared, h, tls) = (shared.clone(), h.clone(), tls.clone());
                    let t = thread::spawn(move || {
                        if serve_conn(tcp, n, &conn_shared, h, tls) {
                            conn_shared.closed.lock().unwrap().push((n, Instant::now()));
                        }
                    });
                    shared.threads.lock().unwrap().push(t);
                }
            })
        };
        Fake {
            addr,
            tls_failures: shared.tls_failures.clone(),
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    pub fn seen(&self) -> Vec<Req> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Connections the peer closed while the fake waited for a request:
    /// (connection number, when noticed).
    pub fn closed(&self) -> Vec<(usize, Instant)> {
        self.shared.closed.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.conns.load(Ordering::SeqCst)
    }

    /// Polls the requests seen until `pred` holds; panics after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Req]) -> bool,
    ) -> Vec<Req> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.seen();
            if pred(&seen) {
                return seen;
            }
            if Instant::now() > deadline {
                panic!(
                    "fake upstream: {what} not seen within {timeout:?}; requests:\n{}",
                    summaries(&seen)
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        let threads: Vec<_> = self.shared.threads.lock().unwrap().drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Serves one connection; true if the peer closed it while the fake was
/// waiting for a request.
fn serve_conn(
    tcp: TcpStream,
    n: usize,
    shared: &Shared,
    h: Handler,
    tls: Option<Arc<ServerConfig>>,
) -> bool {
    // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux;
    // make sure, since the timeouts below rely on blocking reads.
    tcp.set_nonblocking(false).expect("blocking socket");
    tcp.set_read_timeout(Some(TICK)).expect("read timeout");
    tcp.set_write_timeout(Some(Duration::from_secs(2)))
        .expect("write timeout");
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Io> = match tls {
        None => Box::new(tcp.try_clone().expect("clone socket")),
        Some(cfg) => {
            let mut sc = ServerConnection::new(cfg).expect("ServerConnection");
            let mut sock = tcp.try_clone().expect("clone socket");
            while sc.is_handshaking() {
                if shared.stop.load(Ordering::SeqCst) {
                    return false;
                }
                match sc.complete_io(&mut sock) {
                    Ok(_) => {}
                    Err(e) if timed_out(&e) => {}
                    Err(_) => {
                        shared.tls_failures.fetch_add(1, Ordering::SeqCst);
                        return false;
                    }
                }
            }
            Box::new(StreamOwned::new(sc, sock))
        }
    };
    let mut conn = Conn {
        io,
        tcp,
        stop: shared.stop.clone(),
        buf: Vec::new(),
    };
    loop {
        let req = loop {
            if let Some(r) = take_request(&mut conn.buf, n) {
                break r;
            }
            if conn.stopped() {
                return false;
            }
            if matches!(conn.read_some(), Got::Closed) {
                return true;
            }
        };
        shared.seen.lock().unwrap().push(req.clone());
        if h(&req, &mut conn) == After::Close {
            return false;
        }
    }
}

// ---- a server that asks the client on its GET stream ---------------------------

/// What a call answers when its session had no GET stream open.
pub const NO_GET_STREAM: &str = "no GET stream was open";

/// A Streamable HTTP server that, like the everything-server, asks the client
/// on the session's GET stream right away: each `tools/call` sends a
/// `sampling/createMessage` request on its session's GET stream, waits (at
/// most 5 s) for the client's answer and replies with `sampled: TEXT`. A call
/// that arrives while its session has no GET stream open is recorded in
/// `failures` and answered at once with [`NO_GET_STREAM`]. Each `initialize`
/// opens a new session (`asks-N`); DELETE ends it.
#[derive(Default)]
pub struct AsksOnGet {
    issued: AtomicUsize,
    /// Open GET streams: session id → the stream's outbox. A stream is
    /// entered before its 200 head is written, so a relay that saw the head
    /// finds it.
    streams: Mutex<HashMap<String, mpsc::Sender<String>>>,
    /// Client answers to the server's requests, by request id.
    answers: Mutex<HashMap<String, Value>>,
    answered: Condvar,
    /// Sessions whose `tools/call` found no GET stream.
    pub failures: Mutex<Vec<String>>,
}

impl AsksOnGet {
    pub fn handler(self: &Arc<Self>) -> Handler {
        let me = self.clone();
        handler(move |req, conn| me.serve(req, conn))
    }

    /// The client's answer to a `sampling/createMessage` request.
    pub fn sampled(ask: &Value, text: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": ask["id"], "result": {
            "role": "assistant", "model": "test",
            "content": {"type": "text", "text": text}}})
    }

    fn serve(&self, req: &Req, conn: &mut Conn) -> After {
        let msg = req.json();
        match req.method.as_str() {
            "POST" if msg["method"] == "initialize" => {
                let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
                let sid = format!("asks-{n}");
                conn.json(&[("mcp-session-id", &sid)], &init_result(&msg["id"]))
            }
            "POST" if msg["method"] == "tools/call" => self.call(req, &msg, conn),
            "POST" => {
                if msg.get("method").is_none()
                    && let Some(id) = msg["id"].as_str()
                {
                    self.answers
                        .lock()
                        .unwrap()
                        .insert(id.to_owned(), msg.clone());
                    self.answered.notify_all();
                }
                conn.accepted()
            }
            "GET" => self.stream(req, conn),
            "DELETE" => {
                if let Some(s) = req.session() {
                    self.streams.lock().unwrap().remove(s);
                }
                conn.respond(200, &[], b"")
            }
            _ => conn.respond(405, &[], b""),
        }
    }

    fn stream(&self, req: &Req, conn: &mut Conn) -> After {
        let Some(sid) = req.session().map(str::to_owned) else {
            return conn.respond(400, &[], b"");
        };
        let (tx, rx) = mpsc::channel::<String>();
        self.streams.lock().unwrap().insert(sid.clone(), tx);
        if conn.sse_start() {
            loop {
                match rx.recv_timeout(TICK) {
                    Ok(ev) if conn.sse_event(None, &ev) => {}
                    Ok(_) | Err(RecvTimeoutError::Disconnected) => break,
                    // Has the peer closed the stream? (One read, ≤ TICK.)
                    Err(RecvTimeoutError::Timeout) if conn.wait(Duration::ZERO) => {}
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
        }
        self.streams.lock().unwrap().remove(&sid);
        After::Close
    }

    fn call(&self, req: &Req, msg: &Value, conn: &mut Conn) -> After {
        let sid = req.session().unwrap_or_default().to_owned();
        let outbox = self.streams.lock().unwrap().get(&sid).cloned();
        let Some(outbox) = outbox else {
            self.failures.lock().unwrap().push(sid);
            return conn.json(&[], &echo_reply(&msg["id"], NO_GET_STREAM));
        };
        let ask_id = format!("sample-{sid}");
        let ask = json!({"jsonrpc": "2.0", "id": ask_id, "method": "sampling/createMessage",
                         "params": {"maxTokens": 10, "messages": [
                             {"role": "user", "content": {"type": "text", "text": "hi"}}]}});
        let _ = outbox.send(ask.to_string());
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut answers = self.answers.lock().unwrap();
        let text = loop {
            if let Some(a) = answers.remove(&ask_id) {
                break format!(
                    "sampled: {}",
                    a["result"]["content"]["text"].as_str().unwrap_or("?")
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break "the client did not answer".to_owned();
            }
            answers = self.answered.wait_timeout(answers, left).unwrap().0;
        };
        drop(answers);
        conn.json(&[], &echo_reply(&msg["id"], &text))
    }
}

// ---- servers of one protocol era (issue 13, docs/eras.md) ---------------------

/// The modern revision.
pub const MODERN: &str = "2026-07-28";

const RESERVED_VERSION: &str = "io.modelcontextprotocol/protocolVersion";

/// `=?base64?…?=` decoding of a header value (the fake's own, so a relay
/// that encodes wrongly is caught).
fn decode_header(v: &str) -> Option<String> {
    let Some(p) = v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    else {
        return Some(v.to_string());
    };
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in p.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | B64.iter().position(|&b| b == c)? as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).ok()
}

fn rpc_error(conn: &mut Conn, status: u16, id: &Value, code: i64, message: &str) -> After {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    conn.respond(
        status,
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// A 2026-07-28-only Streamable HTTP server, strict the way the Python 2.x
/// server's modern entry is: a POST must carry `MCP-Protocol-Version:
/// 2026-07-28` (else 400, -32600: it has no handshake, `initialize`
/// included), no `Mcp-Session-Id`, the envelope (version and client
/// capabilities, else 400 -32602), and `Mcp-Method`/`Mcp-Name` matching the
/// body (else 400 -32020); GET and DELETE get 405. It answers
/// `server/discover`, `tools/list` and `tools/call` (echo of
/// `arguments.text`, plus the caller's `clientInfo.name` as a second content
/// item), every result with `resultType`; a call whose arguments say
/// `"slow": true` starts an SSE response and holds it until the client
/// closes it (counted in `closed_by_client`), one whose arguments say
/// `"ask": true` asks for input ([`modern_ask`]); notifications get 202.
pub fn modern_only(req: &Req, conn: &mut Conn) -> After {
    modern_only_counting(req, conn, &AtomicUsize::new(0))
}

/// [`modern_only`], counting the slow calls the client closed.
pub fn modern_only_counting(req: &Req, conn: &mut Conn, closed_by_client: &AtomicUsize) -> After {
    if req.method != "POST" {
        return conn.respond(405, &[("allow", "POST")], b"");
    }
    let msg = req.json();
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    if req.header("mcp-protocol-version") != Some(MODERN) {
        return rpc_error(conn, 400, &id, -32600, "this server speaks 2026-07-28 only");
    }
    if req.session().is_some() {
        return rpc_error(conn, 400, &id, -32600, "2026-07-28 has no sessions");
    }
    let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
    if method.is_empty() {
        return conn.accepted();
    }
    if req.header("mcp-method") != Some(method) {
        return rpc_error(conn, 400, &id, -32020, "Mcp-Method does not match");
    }
    let named = match method {
        "tools/call" | "prompts/get" => msg.pointer("/params/name"),
        "resources/read" => msg.pointer("/params/uri"),
        _ => None,
    };
    if let Some(name) = named.and_then(Value::as_str)
        && req.header("mcp-name").and_then(decode_header).as_deref() != Some(name)
    {
        return rpc_error(conn, 400, &id, -32020, "Mcp-Name does not match");
    }
    let meta = msg.pointer("/params/_meta");
    let version = meta.and_then(|m| m.get(RESERVED_VERSION));
    let caps = meta.and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"));
    if version.and_then(Value::as_str) != Some(MODERN) || caps.is_none() {
        return rpc_error(conn, 400, &id, -32602, "missing or bad _meta envelope");
    }
    if id.is_null() {
        return conn.accepted();
    }
    let caller = meta
        .and_then(|m| m.pointer("/io.modelcontextprotocol~1clientInfo/name"))
        .cloned()
        .unwrap_or(Value::Null);
    let result = match method {
        "server/discover" => json!({
            "supportedVersions": [MODERN], "capabilities": {"tools": {"listChanged": true}},
            "instructions": "modern fake", "ttlMs": 0, "cacheScope": "private",
            "resultType": "complete",
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern-fake", "version": "2"}},
        }),
        "tools/list" => json!({"tools": [{"name": "echo", "inputSchema": {"type": "object"}}],
                               "ttlMs": 0, "cacheScope": "private", "resultType": "complete"}),
        "tools/call" => {
            if msg.pointer("/params/arguments/slow") == Some(&json!(true)) {
                if conn.sse_start() && conn.hold() {
                    closed_by_client.fetch_add(1, Ordering::SeqCst);
                }
                return After::Close;
            }
            let text = msg
                .pointer("/params/arguments/text")
                .cloned()
                .unwrap_or(Value::Null);
            if msg.pointer("/params/arguments/ask") == Some(&json!(true)) {
                modern_ask(&msg, &text)
            } else {
                json!({"content": [{"type": "text", "text": text},
                                   {"type": "text", "text": caller}],
                       "resultType": "complete"})
            }
        }
        _ => return rpc_error(conn, 200, &id, -32601, "method not found"),
    };
    conn.json(&[], &json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

/// [`modern_only`]'s call with `"ask": true`: an `InputRequiredResult`
/// (`inputRequests.q`: an `elicitation/create` "about TEXT?", `requestState`
/// `"ask-state"`) until the retry carries `inputResponses.q` and that state,
/// then `TEXT / ACTION CONTENT`.
fn modern_ask(msg: &Value, text: &Value) -> Value {
    let text = text.as_str().unwrap_or_default();
    let answer = msg.pointer("/params/inputResponses/q");
    let state = msg.pointer("/params/requestState").and_then(Value::as_str);
    match (answer, state) {
        (Some(r), Some("ask-state")) => {
            let action = r.get("action").and_then(Value::as_str).unwrap_or("?");
            let content = r.get("content").cloned().unwrap_or(Value::Null);
            json!({"content": [{"type": "text", "text": format!("{text} / {action} {content}")}],
                   "resultType": "complete"})
        }
        _ => json!({"resultType": "input_required", "requestState": "ask-state",
                    "inputRequests": {"q": {"method": "elicitation/create",
                        "params": {"message": format!("about {text}?"),
                                   "requestedSchema": {"type": "object"}}}}}),
    }
}

/// A handshake-era Streamable HTTP server as the Python 1.x server is: a
/// POST without a session must be `initialize` (else 400 -32600 "No valid
/// session ID"), which opens session `h1`; on the session a request
/// carrying the modern envelope is refused (-32600, as a dual-era server
/// refuses one on a handshake session); `tools/call` echoes, `tools/list`
/// lists `echo`, other requests get `{}`; GET holds an SSE stream; DELETE
/// 200. Results never carry `resultType`.
pub fn handshake_only(req: &Req, conn: &mut Conn) -> After {
    match req.method.as_str() {
        "POST" => {
            let msg = req.json();
            let id = msg.get("id").cloned().unwrap_or(Value::Null);
            let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
            if method == "initialize" {
                return conn.json(&[("mcp-session-id", "h1")], &init_result(&id));
            }
            if req.session() != Some("h1") {
                return rpc_error(
                    conn,
                    400,
                    &id,
                    -32600,
                    "Bad Request: No valid session ID provided",
                );
            }
            if msg
                .pointer(&format!(
                    "/params/_meta/{}",
                    RESERVED_VERSION.replace('/', "~1")
                ))
                .is_some()
            {
                return rpc_error(
                    conn,
                    200,
                    &id,
                    -32600,
                    "enveloped request on a handshake session",
                );
            }
            if id.is_null() {
                return conn.accepted();
            }
            match method {
                "tools/list" => conn.json(
                    &[],
                    &json!({"jsonrpc": "2.0", "id": id, "result":
                    {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}]}}),
                ),
                _ => match reply_to(&msg) {
                    Some(r) => conn.json(&[], &r),
                    None => conn.accepted(),
                },
            }
        }
        "GET" => {
            if req.session() != Some("h1") {
                return conn.respond(400, &[], b"no session");
            }
            if conn.sse_start() {
                conn.hold();
            }
            After::Close
        }
        "DELETE" => conn.respond(200, &[], b""),
        _ => conn.respond(405, &[], b""),
    }
}
