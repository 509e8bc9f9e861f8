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
//!
//! This file holds the engine's interface and its exchanges: submitting,
//! queueing and dispatching them, retries, and deadlines. `conn` is one
//! connection's state machine, from connect to close, and `response` reads a
//! response off a busy connection and turns it into events.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::policy::backoff::{Backoff, Rng};
use crate::proto::sse::SseDecoder;
use crate::upstream::url::Url;
use crate::vecmap::VecMap;

mod conn;
mod limits;
mod response;

pub use conn::READ_BUDGET;
use conn::{Conn, ConnState};
pub use limits::LimitCounts;

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

impl Event {
    /// The exchange this event is about.
    pub fn ex(&self) -> ExId {
        match self {
            Event::Head { ex, .. }
            | Event::Message { ex, .. }
            | Event::Done { ex }
            | Event::Failed { ex, .. } => *ex,
        }
    }
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
    /// The owner's sink is full: no connection is read (backpressure).
    paused_all: bool,
    /// Exchanges whose owner's sink is full: their connections are not read.
    /// A list: at most one per exchange, and few at once in practice.
    paused: VecMap<ExId, ()>,
    counts: LimitCounts,
    /// The body of an error status is delivered too (OAuth endpoints
    /// explain a 400 in its JSON body).
    error_bodies: bool,
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
            paused_all: false,
            paused: VecMap::new(),
            counts: LimitCounts::default(),
            error_bodies: false,
        })
    }

    /// Deliver the bodies of error statuses as messages too.
    pub fn keep_error_bodies(&mut self) {
        self.error_bodies = true;
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
        if !self.paused.is_empty() {
            let exchanges = &self.exchanges;
            self.paused.retain(|ex, _| exchanges.contains_key(ex));
        }
    }

    /// Backpressure for every connection: while `paused`, none is read
    /// (`forward --url`: the host's stdout queue is full). Bytes wait in the
    /// kernel; reading resumes through [`HttpClient::read_backlog`].
    pub fn set_paused_all(&mut self, paused: bool) {
        if paused && !self.paused_all {
            self.counts.read_paused += 1;
        }
        self.paused_all = paused;
    }

    /// Backpressure for one exchange: its connection is not read until
    /// [`HttpClient::resume`] (`reverse --url`: the client it feeds is not
    /// keeping up). No effect on an exchange that is over.
    pub fn pause(&mut self, ex: ExId) {
        if self.exchanges.contains_key(&ex) && self.paused.insert(ex, ()).is_none() {
            self.counts.read_paused += 1;
        }
    }

    /// Ends [`HttpClient::pause`]; what waits is read by the next
    /// [`HttpClient::read_backlog`].
    pub fn resume(&mut self, ex: ExId) {
        self.paused.remove(&ex);
    }

    pub fn is_paused(&self, ex: ExId) -> bool {
        self.paused.get(&ex).is_some()
    }

    /// Exchanges paused now.
    pub fn paused(&self) -> impl Iterator<Item = ExId> + '_ {
        self.paused.iter().map(|(ex, _)| *ex)
    }

    /// Connection `conn` must not be read now.
    fn read_blocked(&self, conn: u64) -> bool {
        if self.paused_all {
            return true;
        }
        match self.conns.get(&conn).map(|c| &c.state) {
            Some(ConnState::Busy(ex)) => self.paused.get(ex).is_some(),
            _ => false,
        }
    }

    /// Some connection may have bytes waiting that no event will announce,
    /// and may be read now: the owner polls without blocking and calls
    /// [`HttpClient::read_backlog`] next turn.
    pub fn has_backlog(&self) -> bool {
        self.conns
            .iter()
            .any(|(id, c)| c.unread && !self.read_blocked(*id))
    }

    /// Reads each connection left with unread bytes (one budget each), as
    /// a readiness event would have.
    pub fn read_backlog(&mut self, reg: &Registry, now: Instant) {
        self.last_now = now;
        let mut ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(id, c)| c.unread && !self.read_blocked(**id))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        for id in ids {
            self.read_conn(id, reg, now);
        }
        self.dispatch(reg, now);
    }

    /// How often the engine held back since the last call.
    pub fn take_limit_counts(&mut self) -> LimitCounts {
        std::mem::take(&mut self.counts)
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
                crate::log_debug!("retrying a request in {delay:?} after {}", failure.detail());
                e.state = ExState::Queued { not_before: at };
                self.queue.push_back(ex);
                return;
            }
        }
        self.exchanges.remove(&ex);
        self.events.push(Event::Failed { ex, failure });
        let _ = reg;
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

#[cfg(test)]
mod tests;
