//! Blocking HTTP/1.1 client for the HTTP-facing integration tests:
//! keep-alive connections, Content-Length / chunked / until-EOF bodies, every
//! read bounded by a deadline, and `text/event-stream` bodies read event by
//! event.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::SHORT;

/// Upper bound for one HTTP exchange that should be quick.
pub const IO: Duration = Duration::from_secs(10);
/// The protocol revision the tests negotiate.
pub const VERSION: &str = "2025-06-18";

/// Why a read ended without what was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Timeout,
    Eof,
    Err(io::ErrorKind),
}

#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }

    pub fn is_sse(&self) -> bool {
        self.header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream"))
    }

    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

#[derive(Clone)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP {} {:?} body {:?}",
            self.head.status,
            self.head.headers,
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// The SSE events of a complete `text/event-stream` body.
    pub fn events(&self) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        p.feed(&self.body);
        std::iter::from_fn(|| p.next_event()).collect()
    }

    /// The JSON-RPC message answering a POST: the JSON body, or the data of
    /// the last event of an SSE body.
    pub fn rpc(&self) -> Value {
        if self.head.is_sse() {
            let events = self.events();
            let last = events
                .last()
                .unwrap_or_else(|| panic!("empty SSE reply: {:?}", self.text()));
            last.json()
        } else {
            self.json()
        }
    }

    /// Like [`Response::rpc`], but `None` instead of a panic: the JSON body,
    /// or the data of the last SSE event carrying data, when it is JSON.
    pub fn try_rpc(&self) -> Option<Value> {
        if !self.head.is_sse() {
            return serde_json::from_slice(&self.body).ok();
        }
        let last = self.events().into_iter().rfind(|e| !e.data.is_empty())?;
        serde_json::from_str(&last.data).ok()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", self.data))
    }
}

/// Splits an SSE byte stream into events (blank-line separated blocks).
#[derive(Default)]
pub struct SseParser {
    pub buf: Vec<u8>,
}

impl SseParser {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let text = &self.buf;
            let end = text.windows(2).position(|w| w == b"\n\n")?;
            let block = String::from_utf8_lossy(&text[..end]).replace('\r', "");
            self.buf.drain(..end + 2);
            let mut ev = SseEvent::default();
            let mut data: Vec<&str> = Vec::new();
            let mut any = false;
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                any = true;
                match field {
                    "id" => ev.id = Some(value.to_string()),
                    "event" => ev.event = Some(value.to_string()),
                    "data" => data.push(value),
                    _ => {}
                }
            }
            if !any {
                continue;
            }
            ev.data = data.join("\n");
            return Some(ev);
        }
    }
}

/// One client connection.
pub struct Http {
    pub s: TcpStream,
    pub buf: Vec<u8>,
}

impl Http {
    pub fn try_connect(port: u16) -> io::Result<Http> {
        let s = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), SHORT)?;
        s.set_nodelay(true)?;
        s.set_write_timeout(Some(IO))?;
        Ok(Http { s, buf: Vec::new() })
    }

    pub fn connect(port: u16) -> Http {
        Http::try_connect(port).unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.s.write_all(bytes)
    }

    /// Reads whatever arrives next into the buffer, waiting until `deadline`.
    pub fn fill(&mut self, deadline: Instant) -> Result<(), Wait> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Wait::Timeout);
        }
        self.s
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .map_err(|e| Wait::Err(e.kind()))?;
        let mut tmp = [0u8; 16 * 1024];
        match self.s.read(&mut tmp) {
            Ok(0) => Err(Wait::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(Wait::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(Wait::Err(e.kind())),
        }
    }

    /// Bytes up to and including `pat`.
    pub fn take_until(&mut self, pat: &[u8], deadline: Instant) -> Result<Vec<u8>, Wait> {
        let mut from = 0;
        loop {
            if let Some(i) = self.buf[from..].windows(pat.len()).position(|w| w == pat) {
                let end = from + i + pat.len();
                return Ok(self.buf.drain(..end).collect());
            }
            from = self.buf.len().saturating_sub(pat.len() - 1);
            self.fill(deadline)?;
        }
    }

    pub fn take_n(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, Wait> {
        while self.buf.len() < n {
            self.fill(deadline)?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// A response head (interim 1xx responses skipped).
    pub fn read_head(&mut self, deadline: Instant) -> Result<Head, Wait> {
        loop {
            let raw = self.take_until(b"\r\n\r\n", deadline)?;
            let text = String::from_utf8_lossy(&raw);
            let mut lines = text.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or_default();
            assert!(
                version.starts_with("HTTP/1."),
                "bad status line {status_line:?}"
            );
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
            let headers = lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (n, v) = l
                        .split_once(':')
                        .unwrap_or_else(|| panic!("bad header line {l:?}"));
                    (n.trim().to_ascii_lowercase(), v.trim().to_string())
                })
                .collect();
            if (100..200).contains(&status) {
                continue;
            }
            return Ok(Head { status, headers });
        }
    }

    /// The next chunk of a chunked body; `None` after the last chunk.
    pub fn next_chunk(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, Wait> {
        let line = self.take_until(b"\r\n", deadline)?;
        let line = String::from_utf8_lossy(&line);
        let size_text = line.trim_end().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            // Trailer fields, then the blank line.
            loop {
                let l = self.take_until(b"\r\n", deadline)?;
                if l == b"\r\n" {
                    return Ok(None);
                }
            }
        }
        let data = self.take_n(size, deadline)?;
        let crlf = self.take_n(2, deadline)?;
        assert_eq!(crlf, b"\r\n", "chunk not followed by CRLF");
        Ok(Some(data))
    }

    pub fn read_body(&mut self, head: &Head, deadline: Instant) -> Result<Vec<u8>, Wait> {
        if head.chunked() {
            let mut body = Vec::new();
            while let Some(c) = self.next_chunk(deadline)? {
                body.extend(c);
            }
            Ok(body)
        } else if let Some(n) = head.header("content-length") {
            let n: usize = n.parse().expect("numeric content-length");
            self.take_n(n, deadline)
        } else if matches!(head.status, 204 | 304) {
            Ok(Vec::new())
        } else {
            // Delimited by the connection's end.
            loop {
                match self.fill(deadline) {
                    Ok(()) => {}
                    Err(Wait::Eof) => return Ok(std::mem::take(&mut self.buf)),
                    Err(e) => return Err(e),
                }
            }
        }
    }

    pub fn read_response(&mut self, deadline: Instant) -> Result<Response, Wait> {
        let head = self.read_head(deadline)?;
        let body = self.read_body(&head, deadline)?;
        Ok(Response { head, body })
    }

    pub fn send_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.write(&bytes)
    }

    pub fn try_request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, Wait> {
        self.send_request(method, target, headers, body)
            .map_err(|e| Wait::Err(e.kind()))?;
        self.read_response(Instant::now() + timeout)
    }

    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, target, headers, body, IO)
            .unwrap_or_else(|e| panic!("{method} {target}: no response ({e:?})"))
    }

    pub fn get(&mut self, target: &str) -> Response {
        self.request("GET", target, &[], b"")
    }

    /// Closes with a TCP reset (SO_LINGER 0), as a crashed client or a
    /// dropped network path would: the relay can tell it is not a half-close.
    pub fn reset(self) {
        linger_zero(&self.s);
        drop(self);
    }

    /// Reads until the peer closes; true if it did before `deadline`.
    pub fn closed_by_peer(&mut self, deadline: Instant) -> bool {
        loop {
            match self.fill(deadline) {
                Ok(()) => self.buf.clear(),
                Err(Wait::Eof) | Err(Wait::Err(_)) => return true,
                Err(Wait::Timeout) => return false,
            }
        }
    }
}

/// Makes the close of `s` a reset (RST) rather than a FIN: SO_LINGER 0.
pub fn linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", io::Error::last_os_error());
}

/// An open `text/event-stream` response read event by event.
pub struct Sse {
    pub http: Http,
    pub head: Head,
    pub parser: SseParser,
    pub ended: bool,
}

#[derive(Debug)]
pub enum SseNext {
    Event(SseEvent),
    /// The chunked body ended (last chunk): the server closed the stream.
    End,
    Timeout,
    /// The connection closed or failed mid-stream (the reason shows in
    /// failure messages).
    Closed(#[allow(dead_code)] Wait),
}

impl Sse {
    pub fn open(http: Http, head: Head) -> Sse {
        assert_eq!(head.status, 200, "stream not opened: {head:?}");
        assert!(head.is_sse(), "not an event stream: {head:?}");
        assert!(head.chunked(), "event stream not chunked: {head:?}");
        Sse {
            http,
            head,
            parser: SseParser::default(),
            ended: false,
        }
    }

    pub fn next(&mut self, timeout: Duration) -> SseNext {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.parser.next_event() {
                return SseNext::Event(ev);
            }
            if self.ended {
                return SseNext::End;
            }
            match self.http.next_chunk(deadline) {
                Ok(Some(data)) => self.parser.feed(&data),
                Ok(None) => self.ended = true,
                Err(Wait::Timeout) => return SseNext::Timeout,
                Err(e) => return SseNext::Closed(e),
            }
        }
    }

    pub fn expect_event(&mut self, timeout: Duration, what: &str) -> SseEvent {
        match self.next(timeout) {
            SseNext::Event(ev) => ev,
            other => panic!("waiting for {what} on an SSE stream: {other:?}"),
        }
    }
}

// ============================================================================
// MCP over HTTP
// ============================================================================

pub const ACCEPT_BOTH: &str = "application/json, text/event-stream";

/// Headers of an MCP POST, with the session id when there is one.
/// A 2026-07-28 `subscriptions/listen` (`msg`) POSTed on a connection of
/// its own; its event stream, once its head is read.
pub fn open_modern_listen(port: u16, msg: &Value) -> Sse {
    let body = serde_json::to_vec(msg).expect("json");
    let mut http = Http::connect(port);
    http.send_request(
        "POST",
        "/mcp",
        &[
            ("Content-Type", "application/json"),
            ("Accept", ACCEPT_BOTH),
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "subscriptions/listen"),
        ],
        &body,
    )
    .expect("POST listen");
    let head = http
        .read_head(Instant::now() + IO)
        .expect("listen answered");
    Sse::open(http, head)
}

pub fn mcp_headers(sid: Option<&str>) -> Vec<(&str, &str)> {
    let mut h = vec![
        ("Content-Type", "application/json"),
        ("Accept", ACCEPT_BOTH),
    ];
    if let Some(s) = sid {
        h.push(("Mcp-Session-Id", s));
        h.push(("MCP-Protocol-Version", VERSION));
    }
    h
}

/// Headers of a 2026-07-28 (stateless) `tools/call` of the tool `name`:
/// no session, the version, method and name headers the body must match.
pub fn modern_call_headers(name: &str) -> Vec<(&str, &str)> {
    vec![
        ("Content-Type", "application/json"),
        ("Accept", ACCEPT_BOTH),
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
        ("Mcp-Name", name),
    ]
}

pub fn post_on(
    http: &mut Http,
    sid: Option<&str>,
    msg: &Value,
    extra: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, Wait> {
    let mut headers = mcp_headers(sid);
    headers.extend_from_slice(extra);
    let body = serde_json::to_vec(msg).expect("serialise");
    http.try_request("POST", "/mcp", &headers, &body, timeout)
}

pub fn post(http: &mut Http, sid: Option<&str>, msg: &Value) -> Response {
    post_on(http, sid, msg, &[], IO)
        .unwrap_or_else(|e| panic!("POST /mcp {msg}: no response ({e:?})"))
}
