//! HTTP/1.1 client engine for one upstream origin: a keep-alive connection
//! pool and the exchanges (one request, one response) that run on it.
//!
//! The owner submits requests and receives [`Event`]s: a response head, each
//! JSON-RPC message of the body (the whole JSON body, or one SSE event), the
//! end of the response, or a typed failure. Connections are reused while the
//! upstream allows keep-alive; at most `max_connections` carry requests at
//! once (long-lived GET streams get a connection of their own, outside that
//! cap, one per session). The engine owns its deadlines: the owner calls
//! [`HttpClient::poll`] at [`HttpClient::next_deadline`].
//!
//! Timeouts (HAProxy's vocabulary, applied per exchange):
//! - connect: TCP connect plus TLS handshake → `connect_timeout`;
//! - request: from the moment a connection is assigned until the request is
//!   fully written → `request_timeout`;
//! - response: from fully written until the response is complete, restarted by
//!   [`HttpClient::touch`] (progress), capped by `max_request_time` from
//!   submission → `response_timeout`.
//!
//! A failed exchange is retried (up to `retries`, with full-jitter backoff and
//! within its overall deadline) only if not one byte of it reached the
//! upstream: MCP requests are not idempotent.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::io::transport::{Transport, TransportError};
use crate::policy::backoff::{Backoff, Rng};
use crate::proto::http1::{BodyKind, BodyProgress, Limits, ResponseParser};
use crate::proto::sse::SseDecoder;
use crate::upstream::url::Url;

/// Plaintext read from one connection per wakeup.
const READ_BUDGET: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub url: Url,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub response_timeout: Duration,
    pub max_request_time: Duration,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// Sent with every request (`--header`, `--header-env`).
    pub headers: Vec<(String, String)>,
    pub retries: u32,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Largest JSON body or SSE event kept.
    pub max_message_size: usize,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl HttpConfig {
    /// The engine's settings for a relay upstream given by `--url` and its
    /// flags. The relay times responses itself (its per-request timer is
    /// restarted by progress), so the engine's response timeout is off and
    /// its overall deadline is only a backstop a second after the relay's.
    pub fn for_relay(
        opts: &crate::cli::HttpOptions,
        max_request_time: Duration,
        max_message_size: usize,
    ) -> Result<HttpConfig, String> {
        let url = Url::parse(&opts.url)?;
        let tls = if url.tls {
            Some(crate::io::transport::tls_config(opts.ca_file.as_deref())?)
        } else {
            None
        };
        Ok(HttpConfig {
            url,
            connect_timeout: opts.connect_timeout,
            request_timeout: opts.request_timeout,
            response_timeout: Duration::ZERO,
            max_request_time: if max_request_time.is_zero() {
                Duration::ZERO
            } else {
                max_request_time + Duration::from_secs(1)
            },
            max_connections: opts.max_connections,
            idle_timeout: opts.idle_timeout,
            headers: opts.headers.clone(),
            retries: opts.retries,
            retry_base: opts.reconnect_base,
            retry_cap: Duration::from_secs(30),
            max_message_size,
            tls,
        })
    }
}

impl Failure {
    /// How a GET stream's reconnection policy counts this failure.
    pub fn for_reconnect(&self) -> crate::upstream::reconnect::Failure {
        use crate::upstream::reconnect::Failure as R;
        match self {
            Failure::ConnectFailed(_) | Failure::ConnectTimeout | Failure::Tls(_) => {
                R::ConnectFailed
            }
            Failure::RequestTimeout | Failure::ResponseTimeout => R::Timeout,
            Failure::Closed(_) => R::Dropped,
        }
    }
}

pub type ExId = u64;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A long-lived stream: no response timeout, a connection of its own.
    pub stream: bool,
}

impl Request {
    /// A POST of one JSON-RPC message.
    pub fn post(target: String, headers: Vec<(String, String)>, body: Vec<u8>) -> Request {
        Request {
            method: "POST",
            target,
            headers,
            body,
            stream: false,
        }
    }

    /// A long-lived GET (an SSE stream).
    pub fn stream(target: String, headers: Vec<(String, String)>) -> Request {
        Request {
            method: "GET",
            target,
            headers,
            body: Vec::new(),
            stream: true,
        }
    }

    /// A DELETE ending a session.
    pub fn delete(target: String, headers: Vec<(String, String)>) -> Request {
        Request {
            method: "DELETE",
            target,
            headers,
            body: Vec::new(),
            stream: false,
        }
    }
}

/// Why an exchange failed; each maps to the `data.kind` a client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    ConnectTimeout,
    ConnectFailed(String),
    Tls(String),
    RequestTimeout,
    ResponseTimeout,
    /// The upstream closed or reset the connection mid-exchange, or sent
    /// something that is not HTTP.
    Closed(String),
}

impl Failure {
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::ConnectTimeout => "connect_timeout",
            Failure::ConnectFailed(_) => "connect_failed",
            Failure::Tls(_) => "tls",
            Failure::RequestTimeout => "request_timeout",
            Failure::ResponseTimeout => "response_timeout",
            Failure::Closed(_) => "upstream_closed",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Failure::ConnectTimeout => "connecting timed out".into(),
            Failure::ConnectFailed(m) => format!("connect failed: {m}"),
            Failure::Tls(m) => format!("TLS: {m}"),
            Failure::RequestTimeout => "sending the request timed out".into(),
            Failure::ResponseTimeout => "no complete response in time".into(),
            Failure::Closed(m) => format!("connection closed: {m}"),
        }
    }
}

#[derive(Debug)]
pub enum Event {
    Head {
        ex: ExId,
        status: u16,
        headers: Vec<(String, String)>,
        sse: bool,
    },
    /// One JSON-RPC message (or an SSE event with only an id: empty data).
    Message {
        ex: ExId,
        data: Vec<u8>,
        id: Option<String>,
        retry: Option<u64>,
    },
    Done {
        ex: ExId,
    },
    Failed {
        ex: ExId,
        failure: Failure,
    },
}

enum ExState {
    Queued { not_before: Instant },
    Sending { deadline: Instant },
    Receiving { deadline: Option<Instant> },
}

struct Exchange {
    req: Request,
    wire: Vec<u8>,
    conn: Option<u64>,
    state: ExState,
    /// Overall deadline (`max_request_time` from submission); None for streams.
    until: Option<Instant>,
    attempts: u32,
    /// Some byte of the request reached the socket: never retried after that.
    touched_wire: bool,
    head_seen: bool,
    /// The response status is 2xx: only then is the body relayed.
    success: bool,
    sse: Option<SseDecoder>,
    json: Vec<u8>,
    oversize: bool,
}

enum ConnState {
    /// TCP connect and TLS handshake in progress, for this exchange.
    Connecting {
        deadline: Instant,
        ex: Option<ExId>,
    },
    Idle {
        since: Instant,
    },
    Busy(ExId),
}

struct Conn {
    transport: Transport,
    parser: ResponseParser,
    state: ConnState,
    for_stream: bool,
    /// Bytes the transport had sent before the current exchange started.
    sent_base: u64,
    body_kind: Option<BodyKind>,
    registered: bool,
}

pub struct HttpClient {
    cfg: HttpConfig,
    tag: usize,
    addrs: Vec<SocketAddr>,
    next_addr: usize,
    server_name: Option<rustls::pki_types::ServerName<'static>>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    exchanges: HashMap<ExId, Exchange>,
    queue: VecDeque<ExId>,
    next_ex: ExId,
    events: Vec<Event>,
    backoff: Backoff,
    /// The latest `now` the engine was given.
    last_now: Instant,
    /// Read buffer shared by every connection (capacity kept between reads).
    scratch: Vec<u8>,
}

impl HttpClient {
    pub fn new(cfg: HttpConfig, tag: usize, rng: Rng) -> Result<HttpClient, String> {
        if tag >= 1 << crate::reactor::token::HTTP_TAG_BITS {
            return Err(format!("too many HTTP upstreams (tag {tag})"));
        }
        let server_name = if cfg.url.tls {
            Some(
                rustls::pki_types::ServerName::try_from(cfg.url.host.clone())
                    .map_err(|e| format!("{}: not a valid TLS server name: {e}", cfg.url.host))?,
            )
        } else {
            None
        };
        let backoff = Backoff::new(cfg.retry_base, cfg.retry_cap, rng);
        Ok(HttpClient {
            cfg,
            tag,
            addrs: Vec::new(),
            next_addr: 0,
            server_name,
            conns: HashMap::new(),
            next_conn: 1,
            exchanges: HashMap::new(),
            queue: VecDeque::new(),
            next_ex: 1,
            events: Vec::new(),
            backoff,
            last_now: Instant::now(),
            scratch: Vec::new(),
        })
    }

    pub fn config(&self) -> &HttpConfig {
        &self.cfg
    }

    /// The upstream's addresses, once resolved. Queued exchanges start then.
    pub fn set_addrs(&mut self, addrs: Vec<SocketAddr>, reg: &Registry, now: Instant) {
        self.addrs = addrs;
        self.dispatch(reg, now);
    }

    pub fn has_addrs(&self) -> bool {
        !self.addrs.is_empty()
    }

    /// Resolution failed: everything queued fails with `connect_failed`.
    pub fn resolve_failed(&mut self, why: &str) {
        for ex in std::mem::take(&mut self.queue) {
            self.exchanges.remove(&ex);
            self.events.push(Event::Failed {
                ex,
                failure: Failure::ConnectFailed(format!("resolving {}: {why}", self.cfg.url.host)),
            });
        }
    }

    /// A connection's token: the engine's tag and the connection number in
    /// the HTTP kind of the loop's one token space.
    fn token(&self, conn: u64) -> Token {
        crate::reactor::token::http(self.tag, conn)
    }

    pub fn take_events(&mut self, out: &mut Vec<Event>) {
        out.append(&mut self.events);
    }

    pub fn in_flight(&self) -> usize {
        self.exchanges.len()
    }

    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn idle_connections(&self) -> usize {
        self.conns
            .values()
            .filter(|c| matches!(c.state, ConnState::Idle { .. }))
            .count()
    }

    /// Queues a request. Its events carry the returned id.
    pub fn submit(&mut self, req: Request, reg: &Registry, now: Instant) -> ExId {
        self.last_now = now;
        let ex = self.next_ex;
        self.next_ex += 1;
        let wire = self.serialize(&req);
        let until = (!req.stream && !self.cfg.max_request_time.is_zero())
            .then(|| now + self.cfg.max_request_time);
        self.exchanges.insert(
            ex,
            Exchange {
                req,
                wire,
                conn: None,
                state: ExState::Queued { not_before: now },
                until,
                attempts: 0,
                touched_wire: false,
                head_seen: false,
                success: false,
                sse: None,
                json: Vec::new(),
                oversize: false,
            },
        );
        self.queue.push_back(ex);
        self.dispatch(reg, now);
        ex
    }

    /// Abandons an exchange; no event follows. A connection in the middle of
    /// its response cannot be reused and is closed.
    pub fn cancel(&mut self, ex: ExId, reg: &Registry) {
        let Some(e) = self.exchanges.remove(&ex) else {
            return;
        };
        self.queue.retain(|q| *q != ex);
        if let Some(c) = e.conn {
            self.close_conn(c, reg);
        }
    }

    /// Progress for an exchange: its response timeout starts over.
    pub fn touch(&mut self, ex: ExId, now: Instant) {
        let rt = self.cfg.response_timeout;
        let Some(e) = self.exchanges.get_mut(&ex) else {
            return;
        };
        if let ExState::Receiving { deadline } = &mut e.state
            && !e.req.stream
            && !rt.is_zero()
        {
            let d = now + rt;
            *deadline = Some(e.until.map_or(d, |u| u.min(d)));
        }
    }

    fn serialize(&self, req: &Request) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + req.body.len());
        out.extend_from_slice(req.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(req.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(self.cfg.url.host_header.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (k, v) in self.cfg.headers.iter().chain(req.headers.iter()) {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            // A value from upstream (a session id) must not inject headers.
            out.extend(
                v.bytes()
                    .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
        if !req.body.is_empty() || req.method == "POST" {
            out.extend_from_slice(format!("content-length: {}\r\n", req.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&req.body);
        out
    }

    /// Starts queued exchanges on idle or new connections.
    fn dispatch(&mut self, reg: &Registry, now: Instant) {
        if self.addrs.is_empty() {
            return;
        }
        let mut waiting = VecDeque::new();
        while let Some(ex) = self.queue.pop_front() {
            let Some(e) = self.exchanges.get(&ex) else {
                continue;
            };
            let ExState::Queued { not_before } = e.state else {
                continue;
            };
            if not_before > now {
                waiting.push_back(ex);
                continue;
            }
            let stream = e.req.stream;
            let idle = if stream {
                None
            } else {
                self.conns
                    .iter()
                    .find(|(_, c)| !c.for_stream && matches!(c.state, ConnState::Idle { .. }))
                    .map(|(id, _)| *id)
            };
            let conn = match idle {
                Some(c) => c,
                None => {
                    let busy = self.conns.values().filter(|c| !c.for_stream).count();
                    if !stream && busy >= self.cfg.max_connections {
                        waiting.push_back(ex);
                        // FIFO: later requests wait behind this one.
                        waiting.extend(self.queue.drain(..));
                        break;
                    }
                    match self.open_conn(stream, reg, now) {
                        Ok(c) => c,
                        Err(f) => {
                            self.fail(ex, f, reg, now);
                            continue;
                        }
                    }
                }
            };
            self.assign(ex, conn, reg, now);
        }
        self.queue = waiting;
    }

    fn open_conn(&mut self, stream: bool, reg: &Registry, now: Instant) -> Result<u64, Failure> {
        let addr = self.addrs[self.next_addr % self.addrs.len()];
        let tls = match (&self.cfg.tls, &self.server_name) {
            (Some(cfg), Some(name)) => Some((cfg.clone(), name.clone())),
            _ => None,
        };
        let transport = Transport::connect(addr, tls).map_err(map_transport)?;
        let id = self.next_conn;
        self.next_conn += 1;
        let mut conn = Conn {
            transport,
            parser: ResponseParser::new(Limits {
                max_header: 64 * 1024,
                max_body: usize::MAX,
            }),
            state: ConnState::Connecting {
                deadline: now + self.cfg.connect_timeout,
                ex: None,
            },
            for_stream: stream,
            sent_base: 0,
            body_kind: None,
            registered: false,
        };
        let token = self.token(id);
        match conn.transport.register(reg, token) {
            Ok(()) => conn.registered = true,
            Err(e) => return Err(Failure::ConnectFailed(e.to_string())),
        }
        self.conns.insert(id, conn);
        Ok(id)
    }

    fn assign(&mut self, ex: ExId, conn: u64, reg: &Registry, now: Instant) {
        let (Some(e), Some(c)) = (self.exchanges.get_mut(&ex), self.conns.get_mut(&conn)) else {
            return;
        };
        e.conn = Some(conn);
        e.attempts += 1;
        e.head_seen = false;
        e.sse = None;
        e.json.clear();
        e.oversize = false;
        c.parser.begin_response(false);
        c.body_kind = None;
        if let ConnState::Connecting { ex: waiting, .. } = &mut c.state {
            // Written once the connection is up.
            *waiting = Some(ex);
            e.state = ExState::Queued { not_before: now };
            return;
        }
        self.start_sending(conn, ex, reg, now);
    }

    fn start_sending(&mut self, conn: u64, ex: ExId, reg: &Registry, now: Instant) {
        let rt = self.cfg.request_timeout;
        let (Some(e), Some(c)) = (self.exchanges.get_mut(&ex), self.conns.get_mut(&conn)) else {
            return;
        };
        c.state = ConnState::Busy(ex);
        c.sent_base = c.transport.bytes_sent();
        e.state = ExState::Sending { deadline: now + rt };
        if let Err(err) = c.transport.write(&e.wire) {
            self.conn_failed(conn, map_transport(err), reg, now);
            return;
        }
        self.after_write(conn, now);
    }

    /// Moves an exchange from sending to receiving once the request is on the
    /// wire, and records whether any of it reached the socket.
    fn after_write(&mut self, conn: u64, now: Instant) {
        let rt = self.cfg.response_timeout;
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let ConnState::Busy(ex) = c.state else { return };
        let sent = c.transport.bytes_sent() > c.sent_base;
        let done = c.transport.pending_out() == 0;
        let Some(e) = self.exchanges.get_mut(&ex) else {
            return;
        };
        e.touched_wire |= sent;
        if done && matches!(e.state, ExState::Sending { .. }) {
            let deadline = if e.req.stream || rt.is_zero() {
                e.until
            } else {
                let d = now + rt;
                Some(e.until.map_or(d, |u| u.min(d)))
            };
            e.state = ExState::Receiving { deadline };
        }
    }

    /// Readiness on one of this engine's connections.
    /// Readiness on connection `conn` (decoded from its token by the owner).
    pub fn on_ready(
        &mut self,
        conn: u64,
        readable: bool,
        writable: bool,
        reg: &Registry,
        now: Instant,
    ) {
        self.last_now = now;
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let ready = match c.transport.on_ready(readable, writable) {
            Ok(r) => r,
            Err(e) => {
                self.conn_failed(conn, map_transport(e), reg, now);
                return;
            }
        };
        if ready.established_now
            && let ConnState::Connecting { ex, .. } = c.state
        {
            match ex {
                Some(ex) => self.start_sending(conn, ex, reg, now),
                None => c.state = ConnState::Idle { since: now },
            }
        }
        self.after_write(conn, now);
        if ready.readable || ready.closed {
            self.read_conn(conn, reg, now);
        }
        self.dispatch(reg, now);
    }

    fn read_conn(&mut self, conn: u64, reg: &Registry, now: Instant) {
        // One scratch buffer for every connection: its capacity is kept.
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let Some(c) = self.conns.get_mut(&conn) else {
            self.scratch = buf;
            return;
        };
        if !c.transport.is_established() {
            return;
        }
        let read = c.transport.read(&mut buf, READ_BUDGET);
        if let Ok((n, _)) = read
            && n > 0
        {
            c.parser.feed(&buf);
        }
        if buf.capacity() <= READ_BUDGET {
            self.scratch = buf;
        }
        let (n, eof) = match read {
            Ok(r) => r,
            Err(e) => {
                self.conn_failed(conn, map_transport(e), reg, now);
                return;
            }
        };
        if n > 0 {
            self.process(conn, reg, now);
        }
        if eof {
            self.on_eof(conn, reg, now);
        } else if n >= READ_BUDGET {
            // More may be waiting: finish on the next wakeup the caller gives
            // us (edge-triggered: we must read again ourselves).
            self.read_conn(conn, reg, now);
        }
    }

    /// Consumes what the parser has: the head, then body bytes as they come.
    fn process(&mut self, conn: u64, reg: &Registry, now: Instant) {
        let max = self.cfg.max_message_size;
        loop {
            let Some(c) = self.conns.get_mut(&conn) else {
                return;
            };
            let ConnState::Busy(ex) = c.state else {
                if c.parser.buffered() > 0 {
                    // Bytes nobody asked for: the connection is unusable.
                    self.close_conn(conn, reg);
                }
                return;
            };
            let Some(e) = self.exchanges.get_mut(&ex) else {
                return;
            };
            if !e.head_seen {
                match c.parser.next_head() {
                    Ok(Some((resp, kind))) => {
                        e.head_seen = true;
                        e.success = (200..300).contains(&resp.status);
                        let sse = resp.header("content-type").is_some_and(|ct| {
                            ct.trim_start()
                                .to_ascii_lowercase()
                                .starts_with("text/event-stream")
                        });
                        if sse {
                            e.sse = Some(SseDecoder::new(max));
                        }
                        c.body_kind = Some(kind);
                        if !resp.keep_alive {
                            c.body_kind = Some(BodyKind::UntilClose);
                        }
                        self.events.push(Event::Head {
                            ex,
                            status: resp.status,
                            headers: resp.headers,
                            sse,
                        });
                        continue;
                    }
                    Ok(None) => return,
                    Err(err) => {
                        self.conn_failed(
                            conn,
                            Failure::Closed(format!("bad response: {}", err.reason())),
                            reg,
                            now,
                        );
                        return;
                    }
                }
            }
            let mut chunk = Vec::new();
            let progress = match c.parser.next_body(&mut chunk) {
                Ok(p) => p,
                Err(err) => {
                    self.conn_failed(
                        conn,
                        Failure::Closed(format!("bad response body: {}", err.reason())),
                        reg,
                        now,
                    );
                    return;
                }
            };
            if !chunk.is_empty() {
                self.body_bytes(ex, &chunk);
            }
            match progress {
                BodyProgress::Done => {
                    self.finish(conn, ex, reg, now);
                    continue;
                }
                BodyProgress::Partial => return,
            }
        }
    }

    fn body_bytes(&mut self, ex: ExId, chunk: &[u8]) {
        let max = self.cfg.max_message_size;
        let Some(e) = self.exchanges.get_mut(&ex) else {
            return;
        };
        if !e.success {
            // An error status's body (often a JSON-RPC error with id null) is
            // not a reply: the owner acts on the status.
            return;
        }
        match &mut e.sse {
            Some(dec) => {
                let mut evs = Vec::new();
                if let Err(err) = dec.feed(chunk, &mut evs) {
                    log::warn!("upstream SSE stream: {err}; event dropped");
                    e.sse = Some(SseDecoder::new(max));
                }
                for ev in evs {
                    if ev.event != "message" && ev.event != "endpoint" && !ev.data.is_empty() {
                        continue;
                    }
                    let data = if ev.event == "endpoint" {
                        // Legacy HTTP+SSE: mark the endpoint event for the owner.
                        let mut d = b"endpoint:".to_vec();
                        d.extend_from_slice(ev.data.as_bytes());
                        d
                    } else {
                        ev.data.into_bytes()
                    };
                    self.events.push(Event::Message {
                        ex,
                        data,
                        id: ev.id,
                        retry: ev.retry,
                    });
                }
            }
            None => {
                if e.json.len() + chunk.len() > max {
                    e.oversize = true;
                    e.json.clear();
                } else if !e.oversize {
                    e.json.extend_from_slice(chunk);
                }
            }
        }
    }

    fn finish(&mut self, conn: u64, ex: ExId, reg: &Registry, now: Instant) {
        let Some(mut e) = self.exchanges.remove(&ex) else {
            return;
        };
        if e.oversize {
            log::warn!("upstream response over --max-message-size dropped");
        } else if e.sse.is_none() && !e.json.is_empty() {
            self.events.push(Event::Message {
                ex,
                data: std::mem::take(&mut e.json),
                id: None,
                retry: None,
            });
        }
        self.events.push(Event::Done { ex });
        let reuse = self.conns.get(&conn).is_some_and(|c| {
            !c.for_stream
                && !matches!(c.body_kind, Some(BodyKind::UntilClose))
                && c.parser.buffered() == 0
        });
        if reuse {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.state = ConnState::Idle { since: now };
            }
        } else {
            self.close_conn(conn, reg);
        }
    }

    fn on_eof(&mut self, conn: u64, reg: &Registry, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match c.state {
            ConnState::Busy(ex) => {
                let head = self.exchanges.get(&ex).is_some_and(|e| e.head_seen);
                if head
                    && matches!(c.body_kind, Some(BodyKind::UntilClose))
                    && let Ok(BodyProgress::Done) = c.parser.on_eof()
                {
                    self.finish(conn, ex, reg, now);
                    self.close_conn(conn, reg);
                    return;
                }
                self.conn_failed(
                    conn,
                    Failure::Closed("the upstream closed the connection".into()),
                    reg,
                    now,
                );
            }
            ConnState::Connecting { .. } => self.conn_failed(
                conn,
                Failure::ConnectFailed("closed while connecting".into()),
                reg,
                now,
            ),
            ConnState::Idle { .. } => self.close_conn(conn, reg),
        }
    }

    /// The connection is unusable: its exchange fails (or is retried).
    fn conn_failed(&mut self, conn: u64, failure: Failure, reg: &Registry, now: Instant) {
        let ex = match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Busy(ex)) => Some(*ex),
            Some(ConnState::Connecting { ex, .. }) => *ex,
            _ => None,
        };
        if matches!(failure, Failure::ConnectFailed(_) | Failure::ConnectTimeout)
            && self.addrs.len() > 1
        {
            self.next_addr += 1;
        }
        self.close_conn(conn, reg);
        if let Some(ex) = ex {
            self.fail(ex, failure, reg, now);
        }
    }

    /// Retries an exchange that never reached the upstream, within its
    /// deadline and the retry budget; otherwise reports the failure.
    fn fail(&mut self, ex: ExId, failure: Failure, reg: &Registry, now: Instant) {
        let retries = self.cfg.retries;
        let Some(e) = self.exchanges.get_mut(&ex) else {
            return;
        };
        e.conn = None;
        let retriable = !e.touched_wire
            && !e.req.stream
            && e.attempts <= retries
            && !matches!(failure, Failure::Tls(_) | Failure::ResponseTimeout);
        if retriable {
            let mut b = self.backoff.clone();
            b.reset();
            for _ in 1..e.attempts {
                b.next_delay();
            }
            let delay = b.next_delay();
            // Keep the shared RNG moving so retries of different requests differ.
            self.backoff.next_delay();
            let at = now + delay;
            if e.until.is_none_or(|u| at < u) {
                log::debug!("retrying a request in {delay:?} after {}", failure.detail());
                e.state = ExState::Queued { not_before: at };
                self.queue.push_back(ex);
                return;
            }
        }
        self.exchanges.remove(&ex);
        self.events.push(Event::Failed { ex, failure });
        let _ = reg;
    }

    fn close_conn(&mut self, conn: u64, reg: &Registry) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        if c.registered {
            c.transport.deregister(reg);
        }
        c.transport.shutdown();
    }

    /// Deadlines: connect, request, response, idle connections, retries.
    pub fn poll(&mut self, reg: &Registry, now: Instant) {
        self.last_now = now;
        let mut connect_late = Vec::new();
        let mut idle_late = Vec::new();
        for (id, c) in &self.conns {
            match c.state {
                ConnState::Connecting { deadline, .. } if deadline <= now => connect_late.push(*id),
                ConnState::Idle { since }
                    if !self.cfg.idle_timeout.is_zero() && since + self.cfg.idle_timeout <= now =>
                {
                    idle_late.push(*id)
                }
                _ => {}
            }
        }
        for id in connect_late {
            self.conn_failed(id, Failure::ConnectTimeout, reg, now);
        }
        for id in idle_late {
            self.close_conn(id, reg);
        }
        let mut late = Vec::new();
        for (ex, e) in &self.exchanges {
            let overdue = match e.state {
                ExState::Sending { deadline } => deadline <= now,
                ExState::Receiving { deadline } => deadline.is_some_and(|d| d <= now),
                ExState::Queued { .. } => e.until.is_some_and(|u| u <= now),
            };
            if overdue {
                late.push(*ex);
            }
        }
        for ex in late {
            let Some(e) = self.exchanges.get(&ex) else {
                continue;
            };
            let failure = match e.state {
                ExState::Sending { .. } => Failure::RequestTimeout,
                _ => Failure::ResponseTimeout,
            };
            match e.conn {
                // The connection is mid-request or mid-response: unusable.
                Some(conn) => self.conn_failed(conn, failure, reg, now),
                None => {
                    self.queue.retain(|q| *q != ex);
                    self.exchanges.remove(&ex);
                    self.events.push(Event::Failed { ex, failure });
                }
            }
        }
        self.dispatch(reg, now);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self.conns.values().filter_map(|c| match c.state {
            ConnState::Connecting { deadline, .. } => Some(deadline),
            ConnState::Idle { since } if !self.cfg.idle_timeout.is_zero() => {
                Some(since + self.cfg.idle_timeout)
            }
            _ => None,
        });
        let now = self.last_now;
        let exs = self.exchanges.values().filter_map(|e| match e.state {
            ExState::Sending { deadline } => Some(deadline),
            ExState::Receiving { deadline } => deadline,
            // A retry waiting out its delay wakes the loop; one waiting for a
            // free connection is woken by that connection instead.
            ExState::Queued { not_before } => {
                let retry = (not_before > now).then_some(not_before);
                match (retry, e.until) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
        });
        conns.chain(exs).min()
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&mut self, reg: &Registry) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.close_conn(id, reg);
        }
        self.exchanges.clear();
        self.queue.clear();
    }
}

fn map_transport(e: TransportError) -> Failure {
    match e {
        TransportError::ConnectFailed(e) => Failure::ConnectFailed(e.to_string()),
        TransportError::Tls(m) => Failure::Tls(m),
        TransportError::Io(e) => Failure::Closed(e.to_string()),
    }
}
