//! One upstream connection's state machine: opened for an exchange
//! (Connecting), writing its request and reading its response (Busy), waiting
//! for the next one (Idle), and closed on failure, end of file, or when its
//! response cannot be followed by another.

use std::time::Instant;

use mio::Registry;

use crate::io::transport::{Transport, TransportError};
use crate::proto::http1::{BodyKind, BodyProgress, Limits, ResponseParser};

use super::{ExId, ExState, Failure, HttpClient};

/// Plaintext read from one connection per loop turn (fairness, and the cap
/// on what one connection hands the owner at once). What is left stays in
/// the kernel and is read on the next turn ([`HttpClient::read_backlog`]).
pub const READ_BUDGET: usize = 256 * 1024;

pub(super) enum ConnState {
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

pub(super) struct Conn {
    pub(super) transport: Transport,
    pub(super) parser: ResponseParser,
    pub(super) state: ConnState,
    pub(super) for_stream: bool,
    /// Bytes the transport had sent before the current exchange started.
    pub(super) sent_base: u64,
    pub(super) body_kind: Option<BodyKind>,
    pub(super) registered: bool,
    /// Bytes may be waiting in the socket that no new readiness event will
    /// announce (edge-triggered): the last read stopped at [`READ_BUDGET`],
    /// or the connection became readable while its reading was paused.
    pub(super) unread: bool,
}

impl HttpClient {
    pub(super) fn open_conn(
        &mut self,
        stream: bool,
        reg: &Registry,
        now: Instant,
    ) -> Result<u64, Failure> {
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
            unread: false,
        };
        let token = self.token(id);
        match conn.transport.register(reg, token) {
            Ok(()) => conn.registered = true,
            Err(e) => return Err(Failure::ConnectFailed(e.to_string())),
        }
        self.conns.insert(id, conn);
        Ok(id)
    }

    pub(super) fn assign(&mut self, ex: ExId, conn: u64, reg: &Registry, now: Instant) {
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

    /// Reads what connection `conn` has, at most [`READ_BUDGET`]; nothing
    /// while its reading is paused (backpressure: the bytes wait in the
    /// kernel, and the upstream's sends block once its window is full).
    /// Either way a connection that may have more is marked `unread`, to be
    /// read again by [`HttpClient::read_backlog`] without a new event.
    pub(super) fn read_conn(&mut self, conn: u64, reg: &Registry, now: Instant) {
        let blocked = self.read_blocked(conn);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.transport.is_established() {
            return;
        }
        if blocked {
            c.unread = true;
            return;
        }
        c.unread = false;
        // One scratch buffer for every connection: its capacity is kept.
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let read = c.transport.read(&mut buf, READ_BUDGET);
        if let Ok((n, _)) = read
            && n > 0
        {
            c.parser.feed(&buf);
        }
        if buf.capacity() <= 2 * READ_BUDGET {
            self.scratch = buf;
        }
        let (n, eof) = match read {
            Ok(r) => r,
            Err(e) => {
                self.conn_failed(conn, map_transport(e), reg, now);
                return;
            }
        };
        if !eof && n >= READ_BUDGET {
            // More may be waiting: read on the next turn, after the other
            // sources had theirs (edge-triggered: no event will say so).
            if let Some(c) = self.conns.get_mut(&conn) {
                c.unread = true;
            }
            self.counts.read_budget += 1;
        }
        if n > 0 {
            self.process(conn, reg, now);
        }
        if eof {
            self.on_eof(conn, reg, now);
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
    pub(super) fn conn_failed(
        &mut self,
        conn: u64,
        failure: Failure,
        reg: &Registry,
        now: Instant,
    ) {
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

    pub(super) fn close_conn(&mut self, conn: u64, reg: &Registry) {
        let Some(mut c) = self.conns.remove(&conn) else {
            return;
        };
        if c.registered {
            c.transport.deregister(reg);
        }
        c.transport.shutdown();
    }
}

fn map_transport(e: TransportError) -> Failure {
    match e {
        TransportError::ConnectFailed(e) => Failure::ConnectFailed(e.to_string()),
        TransportError::Tls(m) => Failure::Tls(m),
        TransportError::Io(e) => Failure::Closed(e.to_string()),
    }
}
