//! Client sessions: creating them, leasing a process or an HTTP upstream
//! session for them, their requests in flight (the session core's
//! `Inflight` table) and timeouts; `ending.rs` ends them.

use super::*;

/// A session's key: its upstream's index in the high 16 bits, a number
/// unique in this relay below. The upstream is part of the key, so it is
/// known for as long as the key exists, even after the session is gone.
pub(super) type SKey = u64;

pub(super) const SKEY_UP_SHIFT: u32 = 48;

pub(super) fn skey_new(up: usize, seq: u64) -> SKey {
    debug_assert!(up < 1 << (64 - SKEY_UP_SHIFT) && seq < 1 << SKEY_UP_SHIFT);
    ((up as u64) << SKEY_UP_SHIFT) | (seq & ((1 << SKEY_UP_SHIFT) - 1))
}

/// The upstream a session key belongs to.
pub(super) fn up_of(skey: SKey) -> usize {
    (skey >> SKEY_UP_SHIFT) as usize
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyTo {
    /// The connection that POSTed the request.
    Client(Token),
    /// The session's SSE stream (legacy HTTP+SSE).
    Stream,
}

/// A request in flight; its route is where the answer goes.
pub(super) type Req = inflight::Request<ReplyTo>;

/// What serves a session, over its life:
///
/// ```text
///  New ──lease──▶ Waiting ──granted──▶ Bound(process) ──process gone──▶ Orphaned
///   │                │                     ▲
///   │                └──rejected (legacy: may ask again)──▶ New
///   ├──pinned at once (a 2026-07-28 request, shared pool: `Pool::pin`)
///   └──HTTP upstream──▶ Upstream
/// ```
///
/// A session leaves the table from any state (`end_session`): a `Bound`
/// one gives its process back to the pool, a `Waiting` one leaves the
/// queue, an `Orphaned` one has nothing to give back.
#[derive(Debug)]
pub(super) enum Binding {
    /// Created; no process asked for yet.
    New,
    /// Queued for a process, holding the client's `initialize` (or, for a
    /// 2026-07-28 request, the request itself) until one is granted.
    Waiting {
        line: Vec<u8>,
        id: Id,
        reply_to: ReplyTo,
    },
    /// Served by this process.
    Bound(PKey),
    /// Served by its own session on an HTTP upstream (`http/`).
    Upstream,
    /// Its process went away; its requests were failed.
    Orphaned,
}

impl Binding {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Binding::New => "new",
            Binding::Waiting { .. } => "waiting",
            Binding::Bound(_) => "bound",
            Binding::Upstream => "upstream",
            Binding::Orphaned => "orphaned",
        }
    }

    fn can_become(&self, to: &Binding) -> bool {
        use Binding::*;
        matches!(
            (self, to),
            (New, Waiting { .. } | Bound(_) | Upstream)
                | (Waiting { .. }, Bound(_) | New)
                | (Bound(_), Orphaned)
        )
    }

    /// The process serving the session, if one is.
    pub(super) fn conn(&self) -> Option<PKey> {
        match self {
            Binding::Bound(c) => Some(*c),
            _ => None,
        }
    }

    pub(super) fn is_waiting(&self) -> bool {
        matches!(self, Binding::Waiting { .. })
    }
}

impl Session {
    /// The one place a session's binding changes; returns the old one. An
    /// illegal move is refused (the binding stays, and `to` comes back), so
    /// a lease is never overwritten and lost.
    pub(super) fn set_binding(&mut self, to: Binding) -> Binding {
        let legal = self.binding.can_become(&to);
        debug_assert!(
            legal,
            "session {}: illegal transition {} → {}",
            self.id,
            self.binding.name(),
            to.name()
        );
        if !legal {
            crate::log_error!(
                "session {}: illegal transition {} → {} refused",
                self.id,
                self.binding.name(),
                to.name()
            );
            return to;
        }
        std::mem::replace(&mut self.binding, to)
    }
}

/// A held message as the front read it (`Reverse::lease_for_parsed`).
#[derive(Clone, Copy)]
pub(super) struct ReadMsg<'a> {
    /// The bytes the held copy was made of (the envelope borrows them).
    pub(super) bytes: &'a [u8],
    pub(super) env: &'a Envelope<'a>,
    /// Its `params._meta`, if the front looked it up (`Some(None)`: none).
    pub(super) meta: Option<Option<&'a crate::mcp::shared::MetaScan<'a>>>,
}

pub(super) struct Session {
    pub(super) id: String,
    pub(super) token: Option<usize>,
    pub(super) version: String,
    pub(super) binding: Binding,
    pub(super) inflight: Inflight<ReplyTo>,
    pub(super) stream: Option<Token>,
    pub(super) legacy: bool,
    pub(super) replay: ReplayBuffer,
    pub(super) next_event: u64,
    pub(super) undelivered: VecDeque<Vec<u8>>,
    pub(super) last_active: Instant,
    pub(super) idle_timer: Option<TimerId>,
    /// MCP 2026-07-28: one request, no initialize, ended once answered.
    pub(super) stateless: bool,
    /// A stateless session's request on its way to a process of either era
    /// (`era.rs`).
    pub(super) era: era::SessionEra,
    /// A handshake-era session on a modern shared process: the envelope
    /// its requests are stamped with (`era.rs`).
    pub(super) stamp: Option<crate::mcp::era::stamp::StampContext>,
    /// POST event streams of requests the client cancelled, left open and
    /// silent until the session ends (`cancel.rs`; at most
    /// `CANCELLED_STREAMS_MAX`).
    pub(super) cancelled_streams: Vec<Token>,
    /// A stamped session's calls the server answered `input_required`
    /// (`era/stamped_input.rs`), created at its first such call.
    pub(super) stamp_input: Option<Box<era::StampedInput>>,
    /// A stamped session's `resources/subscribe` URIs and the relay's
    /// listen for them (`era/stamped_subs.rs`).
    pub(super) stamp_subs: Option<Box<era::StampedSubs>>,
}

impl Reverse {
    /// A handshake-era `initialize`: a new session, queued for a process.
    /// Out of line: two routes call it (`post_mcp`, and `stateless_post`
    /// for one sent with the 2026-07-28 header), once a session.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn start_session(
        &mut self,
        tok: Token,
        token: Option<usize>,
        line: &[u8],
        env: &Envelope,
        reply_to: ReplyTo,
        ka: bool,
        u: usize,
    ) {
        if self.shutdown.is_stopping() {
            self.respond(tok, 503, &[("retry-after", "1")], b"shutting down\n", false);
            return;
        }
        let Some(id) = env.id() else { return };
        let version = env
            .param_str("protocolVersion")
            .unwrap_or_else(|| "2025-03-26".into());
        let Some(skey) = self.new_session(u, token, &version, false) else {
            self.respond(tok, 500, &[], b"no session id\n", false);
            return;
        };
        let sid = self.sessions.get(&skey).map(|s| s.id.clone());
        if let Some(c) = self.client(tok) {
            c.set_state(ClientState::Waiting(Exchange::single(
                skey,
                id.clone(),
                ka,
                sid,
            )));
        }
        self.lease_for(skey, line.to_vec(), id, reply_to);
    }

    /// Queues the session for a process; its `initialize` goes out on Grant.
    pub(super) fn lease_for(&mut self, skey: SKey, line: Vec<u8>, id: Id, reply_to: ReplyTo) {
        self.lease_for_parsed(skey, line, id, reply_to, None);
    }

    /// `lease_for`; `parsed`: the held message as the caller read it (the
    /// bytes `line` copies, and their envelope), used when the pool grants
    /// the process at once, so a 2026-07-28 request is not read again
    /// (`era::bind_stateless`). A grant that comes later reads the copy.
    pub(super) fn lease_for_parsed(
        &mut self,
        skey: SKey,
        line: Vec<u8>,
        id: Id,
        reply_to: ReplyTo,
        parsed: Option<ReadMsg>,
    ) {
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        let u = up_of(skey);
        if !matches!(s.binding, Binding::New) {
            let b = error_body(
                Some(&id),
                RelayError::InvalidRequest,
                "The session is already initialized",
                &self.ups[u].cfg.name,
            );
            self.deliver(skey, reply_to, &id, b);
            return;
        }
        if self.ups[u].is_http() {
            // An HTTP upstream needs no process: the session starts now.
            s.set_binding(Binding::Upstream);
            if s.stateless {
                if let Ok(Message::Single(env)) = jsonrpc::peek(&line)
                    && self.track(skey, id.clone(), &env, reply_to)
                {
                    self.send_up(skey, &line, &env, Some(&id));
                }
            } else {
                self.http_start(skey, line, id, reply_to);
            }
            return;
        }
        s.set_binding(Binding::Waiting { line, id, reply_to });
        let actions = self.ups[u].pool(|p| p.lease(skey, self.now));
        match parsed {
            None => self.apply(u, actions),
            Some(parsed) => {
                for a in actions {
                    match a {
                        pool::Action::Grant { waiter, conn } if waiter == skey => {
                            self.bind_session_parsed(waiter, PKey { up: u, id: conn }, Some(parsed))
                        }
                        other => self.apply(u, vec![other]),
                    }
                }
            }
        }
        // A process that cannot be started is reported now, not at the
        // queue timeout.
        self.refuse_waiters_if_failing(u);
    }

    pub(super) fn bind_session(&mut self, skey: SKey, conn: PKey) {
        self.bind_session_parsed(skey, conn, None);
    }

    /// `bind_session`; `parsed` as in `lease_for_parsed`.
    fn bind_session_parsed(&mut self, skey: SKey, conn: PKey, parsed: Option<ReadMsg>) {
        let Some(s) = self.sessions.get_mut(&skey) else {
            // The session ended while it waited: give the process back.
            let actions = self.ups[conn.up].pool(|p| p.release(conn.id, self.now));
            self.apply(conn.up, actions);
            return;
        };
        if !s.binding.is_waiting() {
            // A grant for a session that is not waiting (it cannot happen:
            // the pool grants only queued waiters): give the process back.
            crate::log_error!(
                "session {}: granted a process while {}",
                s.id,
                s.binding.name()
            );
            let actions = self.ups[conn.up].pool(|p| p.release(conn.id, self.now));
            self.apply(conn.up, actions);
            return;
        }
        s.last_active = self.now;
        let Binding::Waiting { line, id, reply_to } = s.set_binding(Binding::Bound(conn)) else {
            return;
        };
        if s.stateless {
            // 2026-07-28: no session initialize; the held message is the
            // request, sent in the era of the process (`era.rs`).
            self.bind_stateless(skey, conn, line.into(), id, reply_to, parsed);
            return;
        }
        let client_version = s.version.clone();
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        match &mut p.kind {
            ProcKind::Session { session } => {
                *session = Some(skey);
                self.track_initialize(skey, &id, reply_to);
                self.keep_spelling(skey, &id, &line);
                // To the process, or answered from its discover when it
                // speaks 2026-07-28 alone (`era/stamped.rs`).
                self.era_handshake_bind(skey, conn, line, id);
            }
            ProcKind::Shared { init, sessions, .. } => {
                sessions.push(skey);
                // The relay initialized this process itself; the client gets
                // the cached result with the version it asked for, if known.
                let mut result = init.clone().unwrap_or_else(|| json!({}));
                let version = if VERSIONS.contains(&client_version.as_str())
                    && client_version != "2026-07-28"
                {
                    client_version
                } else {
                    result
                        .get("protocolVersion")
                        .and_then(|v| v.as_str())
                        .unwrap_or(RELAY_PROTOCOL)
                        .to_string()
                };
                if let Some(obj) = result.as_object_mut() {
                    obj.insert("protocolVersion".into(), version.clone().into());
                }
                if let Some(s) = self.sessions.get_mut(&skey) {
                    s.version = version;
                }
                self.era_session_bound(skey, conn, &line);
                let reply = crate::proto::object::object([
                    ("jsonrpc", serde_json::Value::from("2.0")),
                    (
                        "id",
                        serde_json::from_str::<serde_json::Value>(&id.to_json())
                            .unwrap_or(serde_json::Value::Null),
                    ),
                    ("result", result),
                ]);
                let bytes = serde_json::to_vec(&reply).unwrap_or_default();
                self.metrics.request_done("ok", 0.0);
                self.deliver(skey, reply_to, &id, bytes);
            }
        }
    }

    pub(super) fn reject_session(&mut self, skey: SKey, reason: RejectReason) {
        let (kind, text) = match reason {
            RejectReason::QueueFull => {
                ("queue_full", "every process is busy and the queue is full")
            }
            RejectReason::QueueTimeout => (
                "queue_timeout",
                "no process became free within --queue-timeout",
            ),
            RejectReason::ShuttingDown => ("shutting_down", "the relay is shutting down"),
        };
        if reason == RejectReason::QueueTimeout {
            self.metrics.timeout("queue_timeout");
        }
        self.refuse_waiting(skey, kind, text);
    }

    /// A session waiting for a process will not get one: its held request
    /// is answered 503 (`kind` is the metric outcome, `text` the reason) and
    /// the session ends, except a legacy one, whose stream stays open.
    pub(super) fn refuse_waiting(&mut self, skey: SKey, kind: &str, text: &str) {
        self.metrics.request(kind);
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        let waiting = match s.binding {
            Binding::Waiting { .. } => Some(s.set_binding(Binding::New)),
            _ => None,
        };
        let legacy = s.legacy;
        if let Some(Binding::Waiting { id, reply_to, .. }) = waiting {
            match reply_to {
                ReplyTo::Client(tok) => {
                    // A new session that cannot get a process: HTTP 503 with
                    // Retry-After, so the client backs off and tries again.
                    let body = format!("{text}\n");
                    let ka = self.waiting_keep_alive(tok);
                    self.respond(tok, 503, &[("retry-after", "1")], body.as_bytes(), ka);
                }
                ReplyTo::Stream => {
                    let b = error_body(
                        Some(&id),
                        RelayError::QueueFull,
                        text,
                        &self.ups[up_of(skey)].cfg.name,
                    );
                    self.push_to_stream(skey, b);
                }
            }
        }
        if !legacy {
            self.end_session(skey, text);
        }
    }

    /// Registers the session's `initialize`, on its way to the upstream, as
    /// a request in flight (it is never cancelled; its timer still runs).
    pub(super) fn track_initialize(&mut self, skey: SKey, id: &Id, reply_to: ReplyTo) {
        if let Some(s) = self.sessions.get_mut(&skey)
            && s.inflight
                .begin(id.clone(), self.now, None, true, reply_to)
                .is_err()
        {
            crate::log_debug!("initialize {id} is already in flight");
        }
        self.arm_response_timer(skey, id);
    }

    /// Keeps how the client spelled request `id` of its message `line`, if
    /// that is not the canonical spelling (see `Request::id_text`).
    pub(super) fn keep_spelling(&mut self, skey: SKey, id: &Id, line: &[u8]) {
        if let Ok(Message::Single(env)) = jsonrpc::peek(line)
            && let Some(raw) = env.id
            && let Some(req) = self
                .sessions
                .get_mut(&skey)
                .and_then(|s| s.inflight.get_mut(id))
        {
            req.keep_spelling(id, raw.get());
        }
    }

    /// Registers a request in flight. False if its id is already in flight.
    pub(super) fn track(&mut self, skey: SKey, id: Id, env: &Envelope, reply_to: ReplyTo) -> bool {
        let Some(s) = self.sessions.get_mut_inline(&skey) else {
            return false;
        };
        // The relay's own listen of a stamped session is in flight under
        // its id too (`era/stamped_subs.rs`).
        if s.stamp_subs.is_some() && Self::is_open_listen(s, &id) {
            return false;
        }
        let progress = env.progress_token();
        match s
            .inflight
            .begin(id.clone(), self.now, progress, false, reply_to)
        {
            Ok(req) => {
                if let Some(raw) = env.id {
                    req.keep_spelling(&id, raw.get());
                }
            }
            Err(_) => return false,
        }
        s.last_active = self.now;
        self.arm_response_timer(skey, &id);
        true
    }

    /// (Re)arms a request's response timer: silence since now, capped by
    /// the total time since it started.
    pub(super) fn arm_response_timer(&mut self, skey: SKey, id: &Id) {
        let cfg = &self.ups[up_of(skey)].cfg;
        let limits = Deadlines {
            response_timeout: cfg.response_timeout,
            max_request_time: cfg.max_request_time,
        };
        let now = self.now;
        let Some(req) = self
            .sessions
            .get_mut_inline(&skey)
            .and_then(|s| s.inflight.get_mut(id))
        else {
            return;
        };
        let deadline = limits.next(req.started, now);
        let old = req.timer.take();
        if let Some(t) = old {
            self.timers.cancel(t);
        }
        if let Some(d) = deadline {
            let t = self.timers.insert(d, TimerKind::Response(skey, id.clone()));
            if let Some(req) = self
                .sessions
                .get_mut_inline(&skey)
                .and_then(|s| s.inflight.get_mut(id))
            {
                req.timer = Some(t);
            }
        }
    }

    /// Takes a request out of its session's table (its one answer is now
    /// the caller's to send) and stops its timer.
    pub(super) fn untrack(&mut self, skey: SKey, id: &Id) -> Option<Req> {
        let req = self.sessions.get_mut_inline(&skey)?.inflight.finish(id)?;
        if let Some(t) = req.timer {
            self.timers.cancel(t);
        }
        Some(req)
    }

    /// Writes a client message to the session's upstream. `env` is the
    /// message as the front parsed it: nothing on the way parses it again.
    pub(super) fn send_up(
        &mut self,
        skey: SKey,
        line: &[u8],
        env: &Envelope,
        request: Option<&Id>,
    ) -> Sent {
        self.send_up_as(skey, line, env, request, true)
    }

    /// `send_up`; `capped: false` for the items of a batch the queue cap
    /// already admitted as a whole (`session_queue_room`).
    pub(super) fn send_up_as(
        &mut self,
        skey: SKey,
        line: &[u8],
        env: &Envelope,
        request: Option<&Id>,
        capped: bool,
    ) -> Sent {
        self.send_up_edited(skey, line, env, request, capped, None)
    }

    /// `send_up_as` with one more edit of `line`'s own text (a value
    /// borrowed from it and its replacement: a bridged 2026-07-28
    /// request's stripped `_meta`), made by the mux in the same splice as
    /// the id, so the message is not read again (`era.rs`). Where the
    /// message does not reach the mux as it is (an HTTP upstream, a
    /// stamped session, a session process), the edit is made first.
    pub(super) fn send_up_edited(
        &mut self,
        skey: SKey,
        line: &[u8],
        env: &Envelope,
        request: Option<&Id>,
        capped: bool,
        edit: Option<(&str, &[u8])>,
    ) -> Sent {
        if let Some(e) = edit {
            let via_mux = !self.ups[up_of(skey)].is_http()
                && self
                    .sessions
                    .get_inline(&skey)
                    .is_some_and(|s| s.stamp.is_none())
                && self
                    .sessions
                    .get(&skey)
                    .and_then(|s| s.binding.conn())
                    .and_then(|c| self.procs.get(&c))
                    .is_some_and(|p| matches!(p.kind, ProcKind::Shared { .. }));
            if !via_mux {
                let edited = crate::mcp::shared::splice(line, &mut [e]);
                return match edited.as_deref().map(|b| (b, jsonrpc::peek(b))) {
                    Some((b, Ok(Message::Single(env)))) => {
                        self.send_up_edited(skey, b, &env, request, capped, None)
                    }
                    _ => {
                        if let Some(id) = request {
                            self.fail_request(
                                skey,
                                id,
                                RelayError::InvalidRequest,
                                "The request cannot be carried to the server",
                                json!({}),
                            );
                        }
                        Sent::Done
                    }
                };
            }
        }
        if !self.tool_gate(skey, line, request) {
            return Sent::Done;
        }
        if self.ups[up_of(skey)].is_http() {
            self.http_send(skey, line, env, request);
            return Sent::Done;
        }
        // A 2026-07-28 request bridged to a handshake-era shared process
        // (`era.rs`): the mux makes its reply modern in its id splice
        // (not a `tools/list`, whose reply the tool filter reads first).
        let (conn, bridged) = self.sessions.get_inline(&skey).map_or((None, false), |s| {
            (
                s.binding.conn(),
                matches!(s.era, era::SessionEra::Bridged(_)),
            )
        });
        let alive = conn
            .and_then(|c| self.procs.get(&c))
            .is_some_and(|p| p.life.in_service() && p.io.accepts_input());
        let Some(conn) = conn.filter(|_| alive) else {
            if let Some(id) = request {
                self.fail_request(
                    skey,
                    id,
                    RelayError::UpstreamClosed,
                    "The session has no running server",
                    json!({}),
                );
            }
            return Sent::Done;
        };
        // A handshake-era session on a modern shared process: stamped, or
        // answered by the relay (`era.rs`).
        let stamped: Vec<u8>;
        let restamped;
        let (line, env) = match self.era_outgoing(skey, line, env, request) {
            era::Outgoing::Pass => (line, env),
            era::Outgoing::Done => return Sent::Done,
            era::Outgoing::Send(bytes) => {
                stamped = bytes;
                match jsonrpc::peek(&stamped) {
                    Ok(Message::Single(e)) => {
                        restamped = e;
                        (&stamped[..], &restamped)
                    }
                    _ => return Sent::Done,
                }
            }
        };
        // Checked before the mux sees it: a refused request leaves no id
        // mapping behind, only its one answer.
        if capped && !self.proc_queue_room(conn, line.len()) {
            if let Some(id) = request {
                self.fail_request(
                    skey,
                    id,
                    RelayError::UpstreamBusy,
                    "The server is not reading its input (its queue is full); retry later",
                    crate::proto::object::object([(
                        "limit",
                        serde_json::Value::from(PROC_QUEUE_MAX),
                    )]),
                );
            }
            return Sent::Busy;
        }
        let Some(p) = self.procs.get_mut(&conn) else {
            return Sent::Done;
        };
        match &mut p.kind {
            ProcKind::Session { .. } => {
                p.io.to_child.push_line(line);
                self.work.dirty_procs.push(conn);
            }
            ProcKind::Shared { mux, .. } => match match edit {
                _ if bridged && request.is_some() && !env.method_is("tools/list") => {
                    mux.up_bridged(skey, line, env, edit)
                }
                Some(e) => mux.up_parsed_edited(skey, line, env, e),
                None => mux.up_parsed(skey, line, env),
            } {
                Up::Send(bytes) => {
                    p.io.to_child.push_line(&bytes);
                    self.work.dirty_procs.push(conn);
                }
                Up::Drop => {}
                Up::Dropped(why) => self.dropped(up_of(skey), why),
                Up::Reject(answer) | Up::Answer(answer) => {
                    if let Some(id) = request
                        && let Some(req) = self.untrack(skey, id)
                    {
                        self.deliver(skey, req.route, id, answer);
                    }
                }
            },
        }
        Sent::Done
    }

    /// Answers a request in flight with a relay error.
    pub(super) fn fail_request(
        &mut self,
        skey: SKey,
        id: &Id,
        err: RelayError,
        message: &str,
        data: serde_json::Value,
    ) {
        if let Some(req) = self.untrack(skey, id) {
            self.answer_failed(skey, id, req, err, message, data);
        }
    }

    /// Answers a request already taken out of its table with a relay error.
    pub(super) fn answer_failed(
        &mut self,
        skey: SKey,
        id: &Id,
        req: Req,
        err: RelayError,
        message: &str,
        mut data: serde_json::Value,
    ) {
        self.metrics.request_done(
            err.kind(),
            self.now.duration_since(req.started).as_secs_f64(),
        );
        if let Some(obj) = data.as_object_mut() {
            obj.insert("kind".into(), err.kind().into());
            obj.insert(
                "upstream".into(),
                self.ups[up_of(skey)].cfg.name.clone().into(),
            );
        }
        let b = match &req.id_text {
            Some(text) => jsonrpc::error_response_spelled(text, err.code(), message, data),
            None => jsonrpc::error_response(Some(id), err.code(), message, data),
        };
        self.deliver(skey, req.route, id, b);
    }

    pub(super) fn response_timeout(&mut self, skey: SKey, id: Id) {
        let Some(req) = self
            .sessions
            .get_mut(&skey)
            .and_then(|s| s.inflight.get_mut(&id))
        else {
            return;
        };
        req.timer = None;
        let elapsed = self.now.duration_since(req.started);
        let initialize = req.initialize;
        self.metrics.timeout("response_timeout");
        crate::log_warn!("request {id} timed out after {elapsed:?}");
        self.fail_request(
            skey,
            &id,
            RelayError::ResponseTimeout,
            &format!("No reply from the server within {elapsed:?}"),
            crate::proto::object::object([
                (
                    "elapsed_ms",
                    serde_json::Value::from(elapsed.as_millis() as u64),
                ),
                (
                    "response_timeout_ms",
                    serde_json::Value::from(
                        self.ups[up_of(skey)].cfg.response_timeout.as_millis() as u64
                    ),
                ),
                (
                    "max_request_time_ms",
                    serde_json::Value::from(
                        self.ups[up_of(skey)].cfg.max_request_time.as_millis() as u64
                    ),
                ),
            ]),
        );
        // A leg of a call waiting for input: the call is given up.
        self.era_leg_gone(skey, &id);
        if self.ups[up_of(skey)].is_http() {
            self.http_cancel(skey, &id, initialize);
            return;
        }
        if initialize {
            // MCP: initialize is never cancelled.
            return;
        }
        let Some(conn) = self.sessions.get(&skey).and_then(|s| s.binding.conn()) else {
            return;
        };
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let cancel = match &mut p.kind {
            ProcKind::Session { .. } => {
                Some(jsonrpc::cancelled(&id, "mcp-relay: response timeout"))
            }
            ProcKind::Shared { mux, .. } => mux.expire(skey, &id),
        };
        if let Some(c) = cancel
            && p.io.accepts_input()
        {
            p.io.to_child.push_line(&c);
            self.work.dirty_procs.push(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Binding> {
        vec![
            Binding::New,
            Binding::Waiting {
                line: b"{}".to_vec(),
                id: Id::Num(0),
                reply_to: ReplyTo::Stream,
            },
            Binding::Bound(PKey { up: 0, id: 1 }),
            Binding::Upstream,
            Binding::Orphaned,
        ]
    }

    #[test]
    fn a_session_binding_moves_only_along_its_lifecycle() {
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
                "new → waiting",
                "new → bound",
                "new → upstream",
                "waiting → new",
                "waiting → bound",
                "bound → orphaned",
            ]
        );
        assert_eq!(all()[2].conn(), Some(PKey { up: 0, id: 1 }));
        assert!(all().iter().filter(|b| b.conn().is_some()).count() == 1);
        assert!(all()[1].is_waiting());
    }

    #[test]
    fn a_session_key_names_its_upstream_for_its_whole_life() {
        for (up, seq) in [(0, 1), (1, 2), (7, (1 << SKEY_UP_SHIFT) - 1), (65_535, 42)] {
            let k = skey_new(up, seq);
            assert_eq!(up_of(k), up, "{k:#x}");
        }
        assert_ne!(skey_new(0, 5), skey_new(1, 5));
    }
}
