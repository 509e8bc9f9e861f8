//! Client connections: accepting, reading and parsing HTTP requests,
//! writing responses, their timers, and the connection's lifecycle
//! (`ClientState`).

use super::*;
use crate::io::transport::{ListenerTls, ServerStream};

/// `--tls-cert` / `--tls-key` (or `tls_cert` / `tls_key` in `--config`),
/// loaded before the relay listens: a bad file stops it at startup.
pub(super) fn listener_tls(cfg: &ReverseConfig) -> io::Result<Option<ListenerTls>> {
    let Some(files) = cfg.tls.clone() else {
        return Ok(None);
    };
    let tls =
        ListenerTls::load(files).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(Some(tls))
}

pub(super) struct Client {
    /// Plain TCP, or TLS with `--tls-cert` (admin connections: always plain).
    pub(super) stream: ServerStream,
    pub(super) admin: bool,
    /// The address the client connected to: requests whose `Origin` names
    /// it are same-origin.
    pub(super) local: Option<std::net::SocketAddr>,
    pub(super) parser: RequestParser,
    pub(super) out: OutBuf,
    pub(super) readable: bool,
    pub(super) writable: bool,
    pub(super) state: ClientState,
    pub(super) timer: Option<TimerId>,
    /// When the first byte of the request being received arrived.
    pub(super) began: Option<Instant>,
    pub(super) last_active: Instant,
    pub(super) peer_closed: bool,
    /// The kernel reported a hang-up: read to EOF, never stop at a short read.
    pub(super) hup: bool,
    /// Not read because its buffered input reached the cap (counted and
    /// logged once per pause).
    pub(super) in_paused: bool,
}

/// A client connection's life:
///
/// ```text
///        ┌──────── answered ─────────┐
///        ▼                           │
///  ──▶ Idle ──POST──▶ Waiting ───────┤──(Connection: close, peer gone,
///        │                           │    shutdown)──▶ Closing ──▶ closed
///        ├──GET───▶ Streaming ──end──┤
///        └─token──▶ Authorizing ─────┘ (introspection answered)
/// ```
///
/// The connection itself is closed only by `close_client`: at once on a
/// reset or a dropped stream, or once a `Closing` connection's output is
/// written.
pub(super) enum ClientState {
    /// Reading the next request.
    Idle,
    /// A POST waiting for replies from the session's process.
    Waiting(Exchange),
    /// The GET stream of a session, or a legacy HTTP+SSE stream.
    Streaming { session: SKey },
    /// No more requests: the connection closes once its output is written.
    Closing,
    /// A request held until the introspection of its bearer token ends
    /// (`oauth_held.rs`); nothing else is parsed meanwhile.
    Authorizing(Box<Held>),
}

/// A request whose token is being introspected, with what routing had
/// found out before the token check.
pub(super) struct Held {
    pub(super) req: Request,
    pub(super) ops_here: bool,
    pub(super) path: String,
}

impl ClientState {
    /// The legal moves of a connection's life (see the diagram above).
    pub(super) fn can_become(&self, to: &ClientState) -> bool {
        use ClientState::*;
        matches!(
            (self, to),
            (Idle, _)
                | (Waiting(_), Idle | Closing)
                | (Authorizing(_), Idle | Closing)
                | (Streaming { .. }, Idle | Closing)
                | (Closing, Closing)
        )
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            ClientState::Idle => "idle",
            ClientState::Waiting(_) => "waiting",
            ClientState::Streaming { .. } => "streaming",
            ClientState::Closing => "closing",
            ClientState::Authorizing(_) => "authorizing",
        }
    }
}

impl Client {
    /// An `Authorizing` connection's request, the connection back to `Idle`.
    pub(super) fn take_held(&mut self) -> Option<Box<Held>> {
        if !matches!(self.state, ClientState::Authorizing(_)) {
            return None;
        }
        match std::mem::replace(&mut self.state, ClientState::Idle) {
            ClientState::Authorizing(h) => Some(h),
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Its response is complete: the connection waits for its next request
    /// (keep-alive) or closes once the response is written.
    pub(super) fn response_done(&mut self, keep_alive: bool, now: Instant) {
        self.set_state(if keep_alive {
            ClientState::Idle
        } else {
            ClientState::Closing
        });
        self.last_active = now;
    }

    /// Ends its chunked event stream (the last chunk), then
    /// [`response_done`](Self::response_done).
    pub(super) fn end_stream(&mut self, keep_alive: bool, now: Instant) {
        let mut out = Vec::new();
        http1::write_last_chunk(&mut out);
        self.out.push_raw(&out);
        self.response_done(keep_alive, now);
    }

    /// The one place a connection's state changes.
    pub(super) fn set_state(&mut self, to: ClientState) {
        let legal = self.state.can_become(&to);
        debug_assert!(
            legal,
            "client: illegal transition {} → {}",
            self.state.name(),
            to.name()
        );
        if legal {
            self.state = to;
        } else {
            crate::log_error!(
                "client: illegal transition {} → {} refused",
                self.state.name(),
                to.name()
            );
        }
    }
}

pub(super) struct Exchange {
    pub(super) session: SKey,
    /// Request ids whose replies this response still needs.
    pub(super) expect: Vec<Id>,
    /// Replies gathered for a batch.
    pub(super) replies: Vec<Vec<u8>>,
    pub(super) batch: bool,
    pub(super) keep_alive: bool,
    /// The response turned into an SSE stream.
    pub(super) sse: bool,
    /// `Mcp-Session-Id` to send (on the reply to `initialize`).
    pub(super) session_header: Option<String>,
}

impl Exchange {
    /// A POST waiting for the one reply to request `id` of `session`.
    pub(super) fn single(
        session: SKey,
        id: Id,
        keep_alive: bool,
        session_header: Option<String>,
    ) -> Exchange {
        Exchange {
            session,
            expect: vec![id],
            replies: Vec::new(),
            batch: false,
            keep_alive,
            sse: false,
            session_header,
        }
    }
}

impl Reverse {
    pub(super) fn accept(&mut self, ltok: Token) {
        if self.listen.paused || self.shutdown.is_final() {
            return;
        }
        loop {
            let Some((_, listener, kind)) = self.listen.listeners.iter().find(|l| l.0 == ltok)
            else {
                return;
            };
            let kind = *kind;
            match listener.accept() {
                Ok((stream, _peer)) => self.add_client(stream, kind),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // Out of descriptors: pause instead of spinning on a
                    // listener that stays readable, and retry on a timer.
                    crate::log_warn!("accept failed ({e}); pausing for {ACCEPT_PAUSE:?}");
                    self.listen.paused = true;
                    self.timers
                        .insert(self.now + ACCEPT_PAUSE, TimerKind::AcceptResume);
                    return;
                }
                Err(e) => {
                    crate::log_debug!("accept: {e}");
                    return;
                }
            }
        }
    }

    /// SIGHUP: the listener's certificate is read again. New handshakes use
    /// the new one; connections already accepted keep theirs (their session
    /// keys are their own). A reload that fails keeps the current one.
    pub(super) fn reload_tls(&mut self) {
        let Some(tls) = self.tls.as_mut() else {
            crate::log_info!("SIGHUP: no --tls-cert, nothing to reload");
            return;
        };
        let files = tls.files().clone();
        match tls.reload() {
            Ok(()) => {
                self.metrics.tls_reload("ok");
                crate::log_info!(
                    "TLS certificate reloaded from {} and {}",
                    files.cert.display(),
                    files.key.display()
                );
            }
            Err(e) => {
                self.metrics.tls_reload("error");
                crate::log_error!("TLS reload failed, keeping the current certificate: {e}");
            }
        }
    }

    /// A TLS handshake on the listener that failed (`reason` as in
    /// `Metrics::tls_handshake_failed`): counted, and logged rate-limited.
    pub(super) fn tls_handshake_failed(&mut self, reason: &str, why: &dyn std::fmt::Display) {
        self.metrics.tls_handshake_failed(reason);
        if let Some(n) = self.logs.tls_handshake.check(self.now) {
            crate::log_warn!(
                "TLS handshake with a client failed ({reason}): {why}{}",
                suppressed_note(n)
            );
        }
    }

    pub(super) fn add_client(&mut self, stream: TcpStream, kind: ListenerKind) {
        let _ = stream.set_nodelay(true);
        let tls = match (&self.tls, kind) {
            (Some(t), ListenerKind::Main) => match t.accept() {
                Ok(conn) => Some(conn),
                Err(e) => {
                    self.tls_handshake_failed("error", &e);
                    return;
                }
            },
            _ => None,
        };
        let mut stream = ServerStream::new(stream, tls);
        if self.listen.clients >= self.cfg.max_clients {
            // Over --max-clients: a best-effort 503 on the fresh socket, then close.
            let mut out = Vec::new();
            http1::write_response(
                &mut out,
                503,
                &[("retry-after", "1")],
                b"too many connections\n",
                false,
            );
            let _ = stream.write(&out);
            self.metrics.http_response(503);
            return;
        }
        let local = stream.local_addr().ok();
        // TLS: the handshake is part of the first request head; it must be
        // done within the header timeout from accept (a stalled handshake
        // is a slowloris).
        let began = stream.is_tls().then_some(self.now);
        let client = Client {
            stream,
            admin: kind == ListenerKind::Admin,
            local,
            parser: RequestParser::new(Limits {
                max_header: self.cfg.max_header_size,
                max_body: self.cfg.max_body,
            }),
            out: OutBuf::new(CLIENT_OUT_MAX),
            readable: true,
            writable: true,
            state: ClientState::Idle,
            timer: None,
            began,
            last_active: self.now,
            peer_closed: false,
            hup: false,
            in_paused: false,
        };
        let tok = self.endpoints.insert(Endpoint::Client(Box::new(client)));
        let Some(Endpoint::Client(c)) = self.endpoints.get_mut(tok) else {
            return;
        };
        if let Err(e) = self.poll.registry().register(
            &mut c.stream,
            tok,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            crate::log_warn!("registering a client failed: {e}");
            self.endpoints.remove(tok);
            return;
        }
        self.listen.clients += 1;
        self.client_rearm(tok);
    }

    /// Writes an SSE comment on every open GET or legacy stream, so proxies
    /// and load balancers with idle timeouts do not cut quiet streams, and
    /// re-arms itself.
    pub(super) fn heartbeat(&mut self) {
        let mut chunk = Vec::new();
        let mut comment = Vec::new();
        sse::write_comment(&mut comment, "keep-alive");
        http1::write_chunk(&mut chunk, &comment);
        let streams: Vec<Token> = self.sessions.values().filter_map(|s| s.stream).collect();
        for tok in streams {
            if let Some(c) = self.client(tok)
                && matches!(c.state, ClientState::Streaming { .. })
            {
                c.out.push_raw(&chunk);
                self.work.dirty.push(tok);
            }
        }
        if !self.shutdown.is_final() {
            self.timers
                .insert(self.now + self.cfg.sse_keepalive, TimerKind::Heartbeat);
        }
    }

    /// Whether the request a connection is waiting on asked for keep-alive
    /// (`Connection: close` must be honoured on early answers too).
    pub(super) fn waiting_keep_alive(&mut self, tok: Token) -> bool {
        match self.client(tok).map(|c| &c.state) {
            Some(ClientState::Waiting(ex)) => ex.keep_alive,
            _ => true,
        }
    }

    pub(super) fn client(&mut self, tok: Token) -> Option<&mut Client> {
        client_in(&mut self.endpoints, tok)
    }

    /// Request bytes one connection may have buffered: at this many it is
    /// not read until its requests are taken (see `client_read`). Never
    /// below a full request head plus a read, so a head always fits.
    pub(super) fn client_in_cap(&self) -> usize {
        CLIENT_IN_MAX.max(self.cfg.max_header_size + (64 << 10))
    }

    /// Reads what a connection sent, within the turn's budget and the
    /// connection's input cap, then handles the requests it completed.
    ///
    /// A connection that is busy (a GET stream, a POST waiting for its
    /// answer) takes no request until it is idle again, so what its client
    /// sends meanwhile stays buffered. At `client_in_cap` bytes the relay
    /// stops reading it: the kernel's socket buffers fill and TCP pushes
    /// back on the client (backpressure, as HTTP/1.1 pipelining allows).
    /// Reading resumes when the connection goes back to idle (`respond`
    /// and `end_stream` queue it to be driven). Readiness is edge-triggered
    /// and not re-announced, so `readable` stays set while data is left.
    pub(super) fn client_read(&mut self, tok: Token) {
        let now = self.now;
        let cap = self.client_in_cap();
        let Some(c) = client_in(&mut self.endpoints, tok) else {
            return;
        };
        let buf = &mut self.read_buf[..];
        let mut eof = false;
        let mut reset = false;
        let mut taken = 0;
        let handshaking = c.stream.is_handshaking();
        let mut tls_error = None;
        while c.readable && taken < READ_BUDGET && c.parser.buffered() < cap {
            c.in_paused = false;
            match c.stream.read(buf) {
                Ok(0) => {
                    eof = true;
                    c.readable = false;
                }
                Ok(n) => {
                    taken += n;
                    if c.began.is_none() && c.parser.buffered() == 0 {
                        c.began = Some(now);
                    }
                    c.parser.feed(&buf[..n]);
                    c.last_active = now;
                    if n < buf.len() && !c.hup {
                        // Short read on a socket: its buffer is empty (epoll(7)).
                        // Not after a hang-up: the EOF must still be read.
                        c.readable = false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // A reset, not a half-close: nothing can be written back.
                    // Or a TLS error: rustls's alert went out, nothing else can.
                    if e.kind() == io::ErrorKind::InvalidData {
                        tls_error = Some(e);
                    }
                    reset = true;
                    c.readable = false;
                }
            }
        }
        if handshaking && !c.stream.is_handshaking() {
            // Output refused during the handshake may go now: no writable
            // edge will come for it (the socket was never full).
            c.writable = true;
            if c.parser.buffered() == 0 {
                // No request yet: the keep-alive idle timeout applies from
                // now, as on a fresh plain connection.
                c.began = None;
                c.last_active = now;
            }
        }
        let failed = match (&tls_error, eof) {
            (Some(e), _) if handshaking => Some(("error", e.to_string())),
            (None, true) if c.stream.is_handshaking() => {
                Some(("eof", "the client closed the connection".to_string()))
            }
            _ => None,
        };
        if let Some((reason, why)) = failed {
            self.tls_handshake_failed(reason, &why);
        } else if let Some(e) = tls_error {
            crate::log_debug!("TLS error on a client connection: {e}");
        }
        if reset {
            self.close_client(tok);
            return;
        }
        let Some(c) = client_in(&mut self.endpoints, tok) else {
            return;
        };
        if eof {
            c.peer_closed = true;
            // A half-closed client may still want the answers to what it
            // sent (client_parse closes it once they are written); a
            // streaming one is simply gone.
            if matches!(c.state, ClientState::Streaming { .. }) {
                self.close_client(tok);
                return;
            }
        }
        self.client_parse(tok);
        self.client_unread(tok);
    }

    /// After a read and the requests it completed: what to do about bytes
    /// still unread on the socket.
    fn client_unread(&mut self, tok: Token) {
        let now = self.now;
        let cap = self.client_in_cap();
        let Some(c) = client_in(&mut self.endpoints, tok) else {
            return;
        };
        if !c.readable {
            return;
        }
        let buffered = c.parser.buffered();
        if buffered < cap {
            // Budget spent: finish on a later turn (fairness).
            self.work.to_drive.push(tok);
            return;
        }
        if c.hup && matches!(c.state, ClientState::Streaming { .. }) {
            // The input cap keeps its EOF unread, but the kernel said the
            // peer hung up: a streaming client that hangs up is gone.
            self.close_client(tok);
            return;
        }
        if c.in_paused {
            return;
        }
        // Input cap: not read again until this connection takes requests.
        c.in_paused = true;
        let state = c.state.name();
        self.metrics.client_input_paused();
        if let Some(n) = self.logs.client_input.check(now) {
            crate::log_warn!(
                "client connection sent {buffered} bytes it cannot use yet (connection {state}); \
                 not reading it until its requests are taken{}",
                suppressed_note(n)
            );
        }
    }

    /// Drives a connection queued at the end of a turn: handles the
    /// requests it has buffered, then reads on if its read was deferred
    /// (fairness) or stopped at the input cap and there is room again.
    pub(super) fn drive_client(&mut self, tok: Token) {
        self.client_parse(tok);
        let cap = self.client_in_cap();
        let resume = self
            .client(tok)
            .is_some_and(|c| c.readable && c.parser.buffered() < cap);
        if resume {
            self.client_read(tok);
        }
    }

    /// Handles complete requests buffered on a connection, one at a time:
    /// HTTP/1.1 answers in order, so the next is parsed only once the current
    /// one is answered.
    fn client_parse(&mut self, tok: Token) {
        let now = self.now;
        loop {
            let Some(c) = self.client(tok) else { return };
            if !matches!(c.state, ClientState::Idle) {
                break;
            }
            match c.parser.next_event() {
                Ok(Some(Event::ContinueExpected)) => {
                    let mut out = Vec::new();
                    http1::write_continue(&mut out);
                    c.out.push_raw(&out);
                    self.work.dirty.push(tok);
                }
                Ok(Some(Event::Request(req))) => {
                    c.began = if c.parser.buffered() > 0 {
                        Some(now)
                    } else {
                        None
                    };
                    self.handle_request(tok, req);
                }
                Ok(None) => {
                    if c.peer_closed {
                        // Nothing more will come: close once answers are out.
                        c.set_state(ClientState::Closing);
                        self.work.dirty.push(tok);
                    }
                    break;
                }
                Err(e) => {
                    crate::log_debug!("bad request: {}", e.reason());
                    let status = e.status();
                    self.respond(
                        tok,
                        status,
                        &[],
                        format!("{}\n", e.reason()).as_bytes(),
                        false,
                    );
                    break;
                }
            }
        }
        if self.client_gone(tok) {
            return;
        }
        self.client_rearm(tok);
    }

    pub(super) fn client_flush(&mut self, tok: Token) {
        let Some(c) = self.client(tok) else { return };
        // TLS records rustls holds (handshake, the last chunk of output)
        // go first; the queue is fed to rustls only once they are out.
        if c.writable && c.stream.pending_tls() {
            match c.stream.flush_tls() {
                Ok(true) => {}
                Ok(false) => c.writable = false,
                Err(_) => {
                    self.close_client(tok);
                    return;
                }
            }
        }
        if !c.out.is_empty() && c.writable {
            match c.out.flush_to(&mut c.stream) {
                Ok(true) => {}
                Ok(false) => c.writable = false,
                Err(_) => {
                    self.close_client(tok);
                    return;
                }
            }
        }
        if c.out.is_empty() && !c.stream.pending_tls() && matches!(c.state, ClientState::Closing) {
            self.close_client(tok);
        } else if c.out.len() > CLIENT_OUT_MAX {
            crate::log_warn!(
                "client not reading its stream ({} bytes queued); disconnecting it",
                c.out.len()
            );
            self.close_client(tok);
        }
    }

    pub(super) fn close_client(&mut self, tok: Token) {
        let Some(Endpoint::Client(mut c)) = self.endpoints.remove(tok) else {
            return;
        };
        // TLS: close_notify, best effort (never blocks).
        c.stream.close_notify();
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.listen.clients -= 1;
        if let Some(t) = c.timer.take() {
            self.timers.cancel(t);
        }
        match c.state {
            ClientState::Streaming { session } => {
                let legacy = match self.sessions.get_mut(&session) {
                    Some(s) if s.stream == Some(tok) => {
                        s.stream = None;
                        s.last_active = self.now;
                        s.legacy
                    }
                    _ => false,
                };
                // Legacy HTTP+SSE: the stream is the session.
                if legacy {
                    self.end_session(session, "the client closed its SSE stream");
                }
            }
            ClientState::Waiting(ex) => {
                // MCP: a dropped connection is not a cancellation. The
                // replies it was waiting for go to the session's GET stream
                // instead (or wait for the next one), where a client resuming
                // with Last-Event-ID finds them.
                if let Some(s) = self.sessions.get_mut(&ex.session) {
                    s.last_active = self.now;
                    for id in &ex.expect {
                        if let Some(req) = s.inflight.get_mut(id)
                            && req.route == ReplyTo::Client(tok)
                        {
                            req.route = ReplyTo::Stream;
                        }
                    }
                }
                let stateless = self.sessions.get(&ex.session).is_some_and(|s| s.stateless);
                if stateless {
                    // 2026-07-28: closing the response stream cancels the request.
                    self.end_session(ex.session, "the client closed a stateless request");
                } else if ex.session_header.is_some() {
                    // The client left before its initialize was answered: it
                    // can never use this session.
                    self.end_session(ex.session, "the client left during initialize");
                }
            }
            ClientState::Authorizing(_) => {
                if let Some(i) = self
                    .oauth
                    .as_mut()
                    .and_then(|o| o.auth.introspection.as_mut())
                {
                    i.forget(tok.0);
                }
            }
            ClientState::Idle | ClientState::Closing => {}
        }
    }

    /// One timer per connection: the header-read deadline while a request is
    /// arriving, the keep-alive idle deadline between requests, none while a
    /// response is in progress.
    pub(super) fn client_rearm(&mut self, tok: Token) {
        let (header, idle) = (self.cfg.client_header_timeout, self.cfg.client_idle_timeout);
        let Some(c) = self.client(tok) else { return };
        let deadline = match (&c.state, c.began) {
            (ClientState::Idle, Some(b)) if c.parser.mid_request() || c.stream.is_handshaking() => {
                Some(b + header)
            }
            // A closing client that never reads its last answer is dropped
            // after the idle timeout too.
            (ClientState::Idle | ClientState::Closing, _) if !idle.is_zero() => {
                Some(c.last_active + idle)
            }
            _ => None,
        };
        let old = c.timer.take();
        if let Some(t) = old {
            self.timers.cancel(t);
        }
        if let Some(d) = deadline {
            let t = self.timers.insert(d, TimerKind::Client(tok));
            if let Some(c) = self.client(tok) {
                c.timer = Some(t);
            }
        }
    }

    pub(super) fn client_deadline(&mut self, tok: Token) {
        let now = self.now;
        let (header, idle) = (self.cfg.client_header_timeout, self.cfg.client_idle_timeout);
        let Some(c) = self.client(tok) else { return };
        c.timer = None;
        let closing = match c.state {
            ClientState::Idle => false,
            ClientState::Closing => true,
            _ => return,
        };
        if c.stream.is_handshaking() && c.began.is_some_and(|b| now >= b + header) {
            // A stalled TLS handshake: nothing can be answered; closed.
            self.metrics.timeout("tls_handshake");
            self.tls_handshake_failed("timeout", &"not completed within the header timeout");
            self.close_client(tok);
            return;
        }
        if !closing && c.parser.mid_request() && c.began.is_some_and(|b| now >= b + header) {
            // Slow or stalled request head (slow-loris): 408, then close.
            self.metrics.timeout("client_header");
            self.respond(tok, 408, &[], b"request not received in time\n", false);
            return;
        }
        if (closing || !c.parser.mid_request()) && !idle.is_zero() && now >= c.last_active + idle {
            self.metrics.timeout("client_idle");
            self.close_client(tok);
            return;
        }
        self.client_rearm(tok);
    }

    /// Writes a complete response and returns the connection to reading.
    pub(super) fn respond(
        &mut self,
        tok: Token,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        keep_alive: bool,
    ) {
        let shutting_down = self.shutdown.is_stopping();
        let now = self.now;
        let Some(c) = self.client(tok) else { return };
        // A connection already closing stays closing.
        let keep_alive = keep_alive && !shutting_down && !matches!(c.state, ClientState::Closing);
        let mut out = Vec::with_capacity(body.len() + 128);
        http1::write_response(&mut out, status, headers, body, keep_alive);
        c.out.push_raw(&out);
        c.response_done(keep_alive, now);
        self.metrics.http_response(status);
        self.work.dirty.push(tok);
        self.work.to_drive.push(tok);
    }

    pub(super) fn respond_json(
        &mut self,
        tok: Token,
        status: u16,
        body: &[u8],
        keep_alive: bool,
        session: Option<&str>,
    ) {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(s) = session {
            headers.push(("mcp-session-id", s));
        }
        self.respond(tok, status, &headers, body, keep_alive);
    }

    /// A JSON-RPC error carried in an HTTP error status (400, 404, …).
    pub(super) fn respond_rpc_error(
        &mut self,
        tok: Token,
        status: u16,
        code: i64,
        message: &str,
        keep_alive: bool,
    ) {
        let body = jsonrpc::error_response(None, code, message, json!({}));
        self.respond_json(tok, status, &body, keep_alive, None);
    }

    /// Ends a session's GET stream cleanly (last chunk); the connection goes
    /// back to reading requests (a GET stream carries no keep-alive choice:
    /// the client closes the connection if it does not want it).
    pub(super) fn end_stream(&mut self, tok: Token) {
        let now = self.now;
        let Some(c) = self.client(tok) else { return };
        c.end_stream(true, now);
        self.work.dirty.push(tok);
        self.work.to_drive.push(tok);
    }

    pub(super) fn client_tokens(&self) -> Vec<Token> {
        // Tokens are not enumerable from the registry by design; walking the
        // sessions and streams is not enough for idle connections, so the
        // registry offers its live tokens for this rare, shutdown-only walk.
        self.endpoints
            .tokens()
            .filter(|t| matches!(self.endpoints.get(*t), Some(Endpoint::Client(_))))
            .collect()
    }
}

/// The client connection behind a token; a free function so callers can
/// borrow other fields alongside it.
pub(super) fn client_in(endpoints: &mut Registry<Endpoint>, tok: Token) -> Option<&mut Client> {
    match endpoints.get_mut(tok) {
        Some(Endpoint::Client(c)) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting() -> ClientState {
        ClientState::Waiting(Exchange {
            session: skey_new(0, 1),
            expect: Vec::new(),
            replies: Vec::new(),
            batch: false,
            keep_alive: true,
            sse: false,
            session_header: None,
        })
    }

    #[test]
    fn client_connection_moves_only_along_its_lifecycle() {
        use ClientState::*;
        let all = || {
            vec![
                Idle,
                waiting(),
                Streaming {
                    session: skey_new(0, 1),
                },
                Closing,
                Authorizing(Box::new(Held {
                    req: Request::new(
                        "POST".into(),
                        "/mcp".into(),
                        1,
                        Vec::new(),
                        Vec::new(),
                        true,
                    ),
                    ops_here: false,
                    path: String::new(),
                })),
            ]
        };
        let mut legal = Vec::new();
        for from in all() {
            for to in all() {
                if from.can_become(&to) {
                    legal.push(format!("{} → {}", from.name(), to.name()));
                }
            }
        }
        assert_eq!(
            legal,
            [
                "idle → idle",
                "idle → waiting",
                "idle → streaming",
                "idle → closing",
                "idle → authorizing",
                "waiting → idle",
                "waiting → closing",
                "streaming → idle",
                "streaming → closing",
                "closing → closing",
                "authorizing → idle",
                "authorizing → closing",
            ]
        );
    }
}
