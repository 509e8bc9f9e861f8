//! Server processes of stdio upstreams: carrying out the pool's decisions,
//! their pipes, their lifecycle (`upstream::lifecycle`), and reaping.

use super::*;
use crate::proto::split::Split;

/// A process: its upstream's index and the id its pool gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PKey {
    pub(super) up: usize,
    pub(super) id: ConnId,
}

impl std::fmt::Display for PKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.id)
    }
}

pub(super) enum ProcKind {
    Session {
        session: Option<SKey>,
    },
    Shared {
        mux: Box<Mux>,
        /// The `InitializeResult` handshake-era clients are answered with:
        /// the process's own (handshake era), or made from its
        /// `server/discover` result (modern era). `None` until known.
        init: Option<serde_json::Value>,
        sessions: Vec<SKey>,
        /// Which era the relay speaks to it (`era/`).
        era: era::SharedEra,
    },
}

pub(super) struct Proc {
    pub(super) io: StdioConn,
    pub(super) kind: ProcKind,
    /// Where the process is in its life; a pool `Close` is `Cause::Asked`.
    pub(super) life: Lifecycle,
    /// The timer armed for `life`'s grace deadline.
    pub(super) grace: Option<TimerId>,
}

/// What became of a client message sent toward its upstream (`send_up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// Queued or handed to the HTTP engine, or already answered (no running
    /// server, refused by the mux).
    Done,
    /// Not queued: the process's stdin queue is full (`proc_queue_room`).
    /// A request was answered `upstream_busy`; a notification or response
    /// is for the caller to refuse (503 with Retry-After).
    Busy,
}

impl Reverse {
    /// Whether a client message of `len` bytes may join the queue toward
    /// process `conn`'s stdin: the queue stays within `PROC_QUEUE_MAX` with
    /// it, or is empty (a process that reads can take any one message).
    /// The relay's own messages (cancellations, its `initialize`) are not
    /// checked. A refusal is counted and logged (rate-limited).
    pub(super) fn proc_queue_room(&mut self, conn: PKey, len: usize) -> bool {
        let Some(p) = self.procs.get(&conn) else {
            return true;
        };
        let queued = p.io.to_child.len();
        if queued == 0 || queued.saturating_add(len).saturating_add(1) <= PROC_QUEUE_MAX {
            return true;
        }
        let pid = p.io.pid();
        let up = &self.ups[conn.up];
        self.metrics.upstream_queue_full(up.metric);
        if let Some(n) = self.logs.queue_full.check(self.now) {
            crate::log_warn!(
                "[{}] process {conn} (pid {pid}) is not reading its input ({queued} bytes \
                 queued); refusing client messages for it until it does{}",
                up.cfg.name,
                suppressed_note(n)
            );
        }
        false
    }

    /// `proc_queue_room` for the process of session `skey`, when it has
    /// one (otherwise `send_up` answers for itself).
    pub(super) fn session_queue_room(&mut self, skey: SKey, len: usize) -> bool {
        if self.ups[up_of(skey)].is_http() {
            return true;
        }
        match self.sessions.get(&skey).and_then(|s| s.binding.conn()) {
            Some(conn) => self.proc_queue_room(conn, len),
            None => true,
        }
    }

    pub(super) fn write_proc(&mut self, conn: PKey, line: &[u8]) {
        if let Some(p) = self.procs.get_mut(&conn)
            && p.io.accepts_input()
        {
            p.io.to_child.push_line(line);
            self.work.dirty_procs.push(conn);
        }
    }

    pub(super) fn apply(&mut self, u: usize, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Spawn(id) => self.spawn_proc(PKey { up: u, id }),
                Action::Close(id, reason) => {
                    let conn = PKey { up: u, id };
                    crate::log_debug!("closing process {conn}: {reason:?}");
                    self.close_proc(conn, Cause::Asked);
                }
                Action::Grant { waiter, conn } => {
                    self.bind_session(waiter, PKey { up: u, id: conn })
                }
                Action::Reject { waiter, reason } => self.reject_session(waiter, reason),
            }
        }
    }

    pub(super) fn spawn_proc(&mut self, conn: PKey) {
        let io = StdioConn::spawn(
            &self.ups[conn.up].cfg.command,
            &self.ups[conn.up].cfg.name,
            self.ups[conn.up].cfg.max_message_size,
            self.now,
        );
        let mut io = match io {
            Ok(io) => io,
            Err(e) => {
                let why = format!("cannot start {:?}: {e}", self.ups[conn.up].cfg.command);
                crate::log_error!("[{}] {why}", self.ups[conn.up].cfg.name);
                self.metrics
                    .upstream_exited(self.ups[conn.up].metric, "spawn_failed");
                self.ups[conn.up].spawn_error = Some(why);
                let actions = self.ups[conn.up].pool(|p| p.on_spawn_failed(conn.id, self.now));
                self.apply(conn.up, actions);
                self.refuse_waiters_if_failing(conn.up);
                return;
            }
        };
        self.ups[conn.up].spawn_error = None;
        let endpoints = &mut self.endpoints;
        if let Err(e) = io.register(self.poll.registry(), |pipe| {
            endpoints.insert(Endpoint::Pipe(conn, pipe))
        }) {
            crate::log_error!("cannot register a server's pipes: {e}");
        }
        crate::log_info!(
            "[{}] started pid {} (process {conn})",
            self.ups[conn.up].cfg.name,
            io.pid()
        );
        self.metrics.upstream_spawned(self.ups[conn.up].metric);
        let kind = match self.ups[conn.up].cfg.pool {
            PoolMode::Session => ProcKind::Session { session: None },
            PoolMode::Shared => ProcKind::Shared {
                mux: Box::new(Mux::new()),
                init: None,
                sessions: Vec::new(),
                era: era::SharedEra::Handshake,
            },
        };
        let shared = matches!(kind, ProcKind::Shared { .. });
        let cfg = lifecycle::Config {
            grace: self.ups[conn.up].cfg.kill_grace,
            down: DownPolicy::OnLoss,
        };
        let init = shared.then(|| Id::Str(RELAY_INIT_ID.into()));
        self.procs.insert(
            conn,
            Proc {
                io,
                kind,
                life: Lifecycle::spawned(cfg, init),
                grace: None,
            },
        );
        if shared {
            // Shared processes are started by the relay: initialized once,
            // or (modern era) probed with `server/discover` (`era/`).
            self.shared_start(conn);
        } else {
            // A fresh process is a ready spare; its session initializes it.
            let actions = self.ups[conn.up].pool(|p| p.on_ready(conn.id, self.now));
            self.apply(conn.up, actions);
        }
    }

    /// No process of upstream `u` is alive and its last spawn failed: the
    /// sessions waiting for one are told why now rather than at the queue
    /// timeout (the pool keeps retrying spawns with backoff).
    pub(super) fn refuse_waiters_if_failing(&mut self, u: usize) {
        let Some(why) = self.ups[u].failing().map(str::to_string) else {
            return;
        };
        let waiting: Vec<SKey> = self
            .sessions
            .iter()
            .filter(|(k, s)| up_of(**k) == u && s.binding.is_waiting())
            .map(|(k, _)| *k)
            .collect();
        for skey in waiting {
            let actions = self.ups[u].pool(|p| p.cancel_wait(skey));
            self.apply(u, actions);
            self.refuse_waiting(skey, "spawn_failed", &why);
        }
    }

    pub(super) fn on_shared_init(&mut self, conn: PKey, line: &[u8]) {
        let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
        let Some(result) = v.get("result").cloned() else {
            crate::log_error!(
                "[{}] process {conn} rejected the relay's initialize: {}",
                self.ups[conn.up].cfg.name,
                crate::logging::Escaped::new(line)
            );
            self.close_proc(conn, Cause::Fault);
            return;
        };
        if let Some(p) = self.procs.get_mut(&conn)
            && let ProcKind::Shared { init, .. } = &mut p.kind
        {
            *init = Some(result);
            p.life.initialized();
        }
        self.write_proc(
            conn,
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        );
        let actions = self.ups[conn.up].pool(|p| p.on_ready(conn.id, self.now));
        self.apply(conn.up, actions);
    }

    pub(super) fn proc_stderr(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let (more, closed) = p.io.drain_stderr(self.poll.registry(), self.now);
        if more {
            // More stderr than one turn's budget: keep draining next turn.
            self.work.more_procs.push(conn);
        }
        if let Some(t) = closed {
            self.endpoints.remove(t);
        }
    }

    pub(super) fn proc_flush(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        if let Err(e) = p.io.flush_stdin() {
            crate::log_warn!(
                "[{}] writing to process {conn} failed: {e}",
                self.ups[conn.up].cfg.name
            );
            self.proc_lost(conn);
        }
    }

    pub(super) fn proc_read(&mut self, conn: PKey, drain_all: bool) {
        let mut taken = 0;
        loop {
            let Some(p) = self.procs.get_mut(&conn) else {
                return;
            };
            if !drain_all && taken >= READ_BUDGET {
                if p.io.out_readable {
                    self.work.more_procs.push(conn);
                }
                return;
            }
            match p.io.read_stdout() {
                StdoutRead::Data(n) => {
                    taken += n;
                    let mut reader = std::mem::replace(&mut p.io.from_child, LineReader::new(0));
                    while let Some(frame) = reader.next_frame() {
                        match frame {
                            Frame::Line(line) => {
                                self.on_proc_line(conn, line);
                                self.observe_split(conn, line);
                            }
                            Frame::Oversize(o) => {
                                crate::log_warn!(
                                    "[{}] message of {} bytes from process {conn} dropped (over --max-message-size)",
                                    self.ups[conn.up].cfg.name,
                                    o.len
                                );
                                if let Some(id) = jsonrpc::recover_id(&o.head, &o.tail) {
                                    self.proc_oversize_reply(conn, id, o.len);
                                }
                            }
                        }
                    }
                    if let Some(p) = self.procs.get_mut(&conn) {
                        p.io.from_child = reader;
                    }
                }
                StdoutRead::Idle => return,
                StdoutRead::Eof => {
                    self.proc_lost(conn);
                    return;
                }
            }
        }
    }

    pub(super) fn proc_oversize_reply(&mut self, conn: PKey, id: Id, size: usize) {
        let limit = self.ups[conn.up].cfg.max_message_size;
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        // Shared: the id is the mux's, which answers the session's request
        // in its client's id.
        if let ProcKind::Shared { mux, .. } = &mut p.kind {
            if let Some(Down::Reply {
                session, id, msg, ..
            }) = mux.reply_too_large(&id, size, limit)
            {
                self.complete_as(session, &id, msg, false);
            }
            return;
        }
        if let ProcKind::Session {
            session: Some(skey),
        } = p.kind
        {
            self.fail_request(
                skey,
                &id,
                RelayError::MessageTooLarge,
                "The server's reply exceeds the relay's maximum message size",
                crate::proto::object::object([
                    ("size", serde_json::Value::from(size)),
                    (
                        "limit",
                        serde_json::Value::from(self.ups[conn.up].cfg.max_message_size),
                    ),
                ]),
            );
        }
    }

    /// After `line` went its way: a reply the process wrote over several
    /// lines (each dropped as not a message) answers its request
    /// `invalid_reply` as soon as it closes, instead of leaving it to its
    /// response timeout.
    fn observe_split(&mut self, conn: PKey, line: &[u8]) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let id = match p.io.split.observe(line) {
            Split::Closed(Some(id)) => id,
            Split::Abandoned => {
                crate::log_debug!(
                    "[{}] a value opened on the stdout of process {conn} did not close within \
                     --max-message-size",
                    self.ups[conn.up].cfg.name
                );
                return;
            }
            Split::Closed(None) | Split::None => return,
        };
        crate::log_warn!(
            "[{}] process {conn} wrote a reply over several lines (id {id}); its request is \
             answered invalid_reply (the stdio transport is one message per line)",
            self.ups[conn.up].cfg.name
        );
        match p.kind {
            ProcKind::Session {
                session: Some(skey),
            } => self.fail_request(
                skey,
                &id,
                RelayError::InvalidReply,
                "The server's reply is not a valid JSON-RPC message (written over several lines)",
                json!({}),
            ),
            // The id is the mux's: its path for a line that is not a message
            // maps it back to the session's request (and drops the rest).
            ProcKind::Shared { .. } => {
                let named = format!("{{\"id\":{},", id.to_json());
                self.on_proc_line(conn, named.as_bytes());
            }
            ProcKind::Session { session: None } => {}
        }
    }

    pub(super) fn on_proc_line(&mut self, conn: PKey, line: &[u8]) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        match &mut p.kind {
            ProcKind::Session { session } => {
                let Some(skey) = *session else {
                    crate::log_debug!(
                        "[{}] message from a process with no session dropped",
                        self.ups[conn.up].cfg.name
                    );
                    return;
                };
                if self.era_line(skey, conn, line) {
                    return;
                }
                self.on_session_line(skey, line);
            }
            ProcKind::Shared {
                mux,
                init,
                sessions,
                ..
            } => {
                if init.is_none() {
                    // The relay's own start: its initialize or its probe.
                    self.shared_start_line(conn, line);
                    return;
                }
                let downs = mux.down(line);
                // The process's sessions, for a broadcast only: copying
                // them for every line would cost O(sessions) per reply.
                let sessions = if downs.iter().any(|d| matches!(d, Down::Broadcast { .. })) {
                    sessions.clone()
                } else {
                    Vec::new()
                };
                for d in downs {
                    match d {
                        Down::Reply {
                            session,
                            id,
                            msg,
                            modern,
                        } => self.complete_as(session, &id, msg, modern),
                        Down::ToSession { session, msg } => {
                            if self.era_server_request(session, &msg) {
                                continue;
                            }
                            let progress = match jsonrpc::peek(&msg) {
                                Ok(Message::Single(env))
                                    if env.method_is("notifications/progress") =>
                                {
                                    Some(env.param_id("progressToken"))
                                }
                                _ => None,
                            };
                            match progress {
                                Some(token) => self.on_progress(session, token, msg),
                                None => self.push_to_stream(session, msg),
                            }
                        }
                        Down::Broadcast { msg } => {
                            for s in &sessions {
                                self.push_to_stream(*s, msg.clone());
                            }
                        }
                        Down::ToSessions { sessions, msg } => {
                            for s in sessions {
                                self.push_to_stream(s, msg.clone());
                            }
                        }
                        Down::ToUpstream { msg } => self.write_proc(conn, &msg),
                        Down::Refused { msg, why } => {
                            self.write_proc(conn, &msg);
                            self.dropped(conn.up, why);
                        }
                        Down::Drop => {}
                        Down::Dropped(why) => self.dropped(conn.up, why),
                    }
                }
            }
        }
    }

    pub(super) fn close_proc(&mut self, conn: PKey, cause: Cause) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let actions = p.life.close(self.now, cause);
        if actions.is_empty() {
            // Already closing, or past it.
            return;
        }
        self.run_proc(conn, actions);
        self.try_reap(conn);
    }

    /// Stdout EOF or a broken stdin: the process serves no one from now.
    pub(super) fn proc_lost(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        if !p.life.in_service() {
            return;
        }
        // Closed first, so that one found already exited goes down with its
        // exit status.
        self.close_proc(conn, Cause::Fault);
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let actions = p.life.on_lost(self.now);
        self.run_proc(conn, actions);
    }

    /// Fails what was in flight on the process, ends its sessions (their
    /// clients get 404 and re-initialize) and tells the pool.
    pub(super) fn proc_down(&mut self, conn: PKey, status: Option<ExitStatus>, asked: bool) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let what = status.map_or_else(|| "stdout closed".to_string(), describe);
        // Every request in flight on the process belongs to one of its
        // sessions, so failing each session's pending requests covers them
        // all; the mux only has to forget its rewriting state.
        let sessions = match &mut p.kind {
            ProcKind::Session { session } => session.take().into_iter().collect::<Vec<_>>(),
            ProcKind::Shared { mux, sessions, .. } => {
                mux.fail_all();
                std::mem::take(sessions)
            }
        };
        if self.shutdown.is_stopping() || asked {
            crate::log_debug!(
                "[{}] process {conn} closed ({what})",
                self.ups[conn.up].cfg.name
            );
        } else {
            crate::log_warn!(
                "[{}] process {conn} went away ({what})",
                self.ups[conn.up].cfg.name
            );
        }
        for skey in sessions {
            self.era_proc_down(skey);
            let ids: Vec<Id> = self
                .sessions
                .get(&skey)
                .map(|s| s.inflight.iter().map(|(id, _)| id.clone()).collect())
                .unwrap_or_default();
            for id in ids {
                self.fail_request(
                    skey,
                    &id,
                    RelayError::UpstreamClosed,
                    &format!("The server closed the connection ({what})"),
                    crate::proto::object::object([
                        ("status", serde_json::Value::from(what.as_str())),
                        (
                            "exit_code",
                            serde_json::Value::from(status.and_then(|s| s.code())),
                        ),
                    ]),
                );
            }
            // The session's state died with the process: its next request
            // gets 404 and the client starts a new session.
            self.end_orphaned_session(skey);
        }
        let actions = self.ups[conn.up].pool(|p| p.on_exit(conn.id, self.now));
        self.apply(conn.up, actions);
    }

    pub(super) fn grace_expired(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        p.grace = None;
        if p.io.proc.try_reap().is_some() {
            self.proc_reaped(conn);
            return;
        }
        let actions = p.life.on_grace_expired(self.now);
        self.run_proc(conn, actions);
    }

    pub(super) fn reap(&mut self) {
        let conns: Vec<PKey> = self.procs.keys().copied().collect();
        for conn in conns {
            self.try_reap(conn);
        }
    }

    pub(super) fn try_reap(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        if p.io.proc.status().is_some() || p.io.proc.try_reap().is_none() {
            return;
        }
        self.proc_reaped(conn);
    }

    pub(super) fn proc_reaped(&mut self, conn: PKey) {
        let Some(p) = self.procs.get_mut(&conn) else {
            return;
        };
        let Some(status) = p.io.proc.status() else {
            return;
        };
        crate::log_debug!(
            "[{}] process {conn} (pid {}) reaped: {}",
            self.ups[conn.up].cfg.name,
            p.io.pid(),
            describe(status)
        );
        // What it wrote before exiting is still in the pipe. It goes down
        // (if it was not yet) after that, with its exit status.
        p.io.mark_exited();
        let actions = p.life.on_exit(status);
        self.proc_read(conn, true);
        self.run_proc(conn, actions);
    }

    /// Carries out what a process's lifecycle decided, in order.
    pub(super) fn run_proc(&mut self, conn: PKey, actions: Vec<lifecycle::Action>) {
        let grace = self.ups[conn.up].cfg.kill_grace;
        for action in actions {
            let Some(p) = self.procs.get_mut(&conn) else {
                return;
            };
            match action {
                lifecycle::Action::CloseStdin => {
                    if let Some(t) = p.io.close_stdin(self.poll.registry()) {
                        self.endpoints.remove(t);
                    }
                }
                lifecycle::Action::ArmGrace(at) => {
                    if let Some(t) = p.grace.take() {
                        self.timers.cancel(t);
                    }
                    p.grace = Some(self.timers.insert(at, TimerKind::Grace(conn)));
                }
                lifecycle::Action::Term => {
                    crate::log_info!(
                        "[{}] process {conn} still running {grace:?} after stdin closed; SIGTERM",
                        self.ups[conn.up].cfg.name
                    );
                    p.io.proc.terminate();
                }
                lifecycle::Action::Kill { after_term } => {
                    if after_term {
                        crate::log_warn!(
                            "[{}] process {conn} ignored SIGTERM; SIGKILL",
                            self.ups[conn.up].cfg.name
                        );
                    }
                    p.io.proc.kill();
                }
                lifecycle::Action::Down { status, asked } => self.proc_down(conn, status, asked),
                lifecycle::Action::Release => self.release_proc(conn),
            }
        }
    }

    /// SIGKILL to every process now.
    pub(super) fn kill_procs(&mut self) {
        let conns: Vec<PKey> = self.procs.keys().copied().collect();
        for conn in conns {
            if let Some(p) = self.procs.get_mut(&conn) {
                let actions = p.life.kill_now(self.now);
                self.run_proc(conn, actions);
            }
        }
    }

    /// Forgets a reaped process: its pipes are deregistered and closed.
    pub(super) fn release_proc(&mut self, conn: PKey) {
        let Some(mut p) = self.procs.remove(&conn) else {
            return;
        };
        let reason = match p.io.proc.status() {
            Some(s) => {
                use std::os::unix::process::ExitStatusExt;
                exit_reason(s.code(), s.signal())
            }
            None => "closed",
        };
        self.metrics
            .upstream_exited(self.ups[conn.up].metric, reason);
        if let Some(t) = p.grace.take() {
            self.timers.cancel(t);
        }
        for t in p.io.release(self.poll.registry(), self.now) {
            self.endpoints.remove(t);
        }
    }
}
