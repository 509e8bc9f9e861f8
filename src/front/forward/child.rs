//! The server process on the other side (`forward -- COMMAND`): spawning
//! and restarting it, its pipes, replaying `initialize` after a restart, and
//! its lifecycle (`upstream::lifecycle`) down to reaping.

use std::borrow::Cow;

use super::*;
use crate::proto::split::Split;

pub(super) struct Upstream {
    pub(super) seq: u64,
    pub(super) io: StdioConn,
    /// Where the process is in its life, with the replayed `initialize` it
    /// awaits, if any.
    pub(super) life: Lifecycle,
    /// The timer armed for `life`'s grace deadline.
    pub(super) grace: Option<TimerId>,
}

pub(super) struct Held {
    pub(super) line: Vec<u8>,
    pub(super) request: Option<Id>,
}

/// What the relay forwards to.
pub(super) enum Server {
    /// `forward -- COMMAND`: a child process, restarted with `--restart`.
    Stdio(Box<Children>),
    /// `forward --url URL`: an MCP server over HTTP(S).
    Http(Box<http::HttpUpstream>),
}

/// The child processes of `forward -- COMMAND`.
pub(super) struct Children {
    /// The live child, if any.
    pub(super) current: Option<Upstream>,
    /// Children on their way out, kept until reaped.
    pub(super) retired: Vec<Upstream>,
    pub(super) next_seq: u64,
    /// Host messages waiting for a restarted child.
    pub(super) held: VecDeque<Held>,
    pub(super) held_bytes: usize,
    pub(super) backoff: Backoff,
    pub(super) respawn: Option<TimerId>,
}

impl Children {
    pub(super) fn new(backoff: Backoff) -> Children {
        Children {
            current: None,
            retired: Vec::new(),
            next_seq: 1,
            held: VecDeque::new(),
            held_bytes: 0,
            backoff,
            respawn: None,
        }
    }
}

impl Server {
    pub(super) fn children(&self) -> Option<&Children> {
        match self {
            Server::Stdio(k) => Some(k),
            Server::Http(_) => None,
        }
    }

    pub(super) fn children_mut(&mut self) -> Option<&mut Children> {
        match self {
            Server::Stdio(k) => Some(k),
            Server::Http(_) => None,
        }
    }

    pub(super) fn http(&self) -> Option<&http::HttpUpstream> {
        match self {
            Server::Http(h) => Some(h),
            Server::Stdio(_) => None,
        }
    }

    pub(super) fn http_mut(&mut self) -> Option<&mut http::HttpUpstream> {
        match self {
            Server::Http(h) => Some(h),
            Server::Stdio(_) => None,
        }
    }

    pub(super) fn is_http(&self) -> bool {
        matches!(self, Server::Http(_))
    }

    /// The live child, if there is one.
    pub(super) fn current(&self) -> Option<&Upstream> {
        self.children().and_then(|k| k.current.as_ref())
    }

    pub(super) fn current_mut(&mut self) -> Option<&mut Upstream> {
        self.children_mut().and_then(|k| k.current.as_mut())
    }

    /// The child numbered `seq`, live or retired.
    pub(super) fn child(&mut self, seq: u64) -> Option<&mut Upstream> {
        let k = self.children_mut()?;
        find(&mut k.current, &mut k.retired, seq)
    }

    /// Every child not yet released, live or retired.
    pub(super) fn all_children(&mut self) -> impl Iterator<Item = &mut Upstream> {
        self.children_mut()
            .into_iter()
            .flat_map(|k| k.current.iter_mut().chain(k.retired.iter_mut()))
    }
}

impl Forward {
    pub(super) fn read_upstream(&mut self, seq: u64, ignore_budget: bool) {
        let mut taken = 0;
        loop {
            let client_full = self.host.out.is_full() && !self.host.out_broken;
            let Some(u) = self.upstream_mut(seq) else {
                return;
            };
            if !u.io.out_readable || u.io.out_eof {
                return;
            }
            if !ignore_budget && (client_full || taken >= READ_BUDGET) {
                self.more |= !client_full;
                return;
            }
            match u.io.read_stdout() {
                StdoutRead::Data(n) => {
                    taken += n;
                    // The reader is moved out while its frames are handled, so
                    // lines are borrowed, not copied.
                    let mut reader = std::mem::replace(&mut u.io.from_child, LineReader::new(0));
                    while let Some(f) = reader.next_frame() {
                        match f {
                            Frame::Line(line) => {
                                self.on_server_line(Some(seq), line);
                                self.observe_split(seq, line);
                            }
                            Frame::Oversize(o) => self.on_server_oversize(o),
                        }
                    }
                    if let Some(u) = self.upstream_mut(seq) {
                        u.io.from_child = reader;
                    }
                }
                StdoutRead::Idle => return,
                StdoutRead::Eof => {
                    crate::log_info!("[{}] server closed its stdout", self.cfg.name);
                    self.upstream_lost(seq);
                    return;
                }
            }
        }
    }

    pub(super) fn drain_stderr_all(&mut self) {
        let reg = self.poll.registry();
        for u in self.server.all_children() {
            let (more, closed) = u.io.drain_stderr(reg, self.now);
            self.more |= more;
            if let Some(t) = closed {
                self.endpoints.remove(t);
            }
        }
    }

    pub(super) fn flush_upstreams(&mut self) {
        let mut broken = Vec::new();
        let mut close_now = Vec::new();
        for u in self.server.all_children() {
            if let Err(e) = u.io.flush_stdin() {
                crate::log_warn!(
                    "[{}] writing to the server's stdin failed: {e}",
                    self.cfg.name
                );
                broken.push(u.seq);
            }
            if u.life.is_draining() && u.io.to_child.is_empty() {
                close_now.push(u.seq);
            }
        }
        for seq in broken.into_iter().chain(close_now) {
            self.close_stdin(seq);
        }
    }

    pub(super) fn write_upstream(&mut self, line: &[u8], request: Option<&Id>) {
        let Some(u) = self.server.current_mut() else {
            return;
        };
        u.io.to_child.push_line(line);
        let seq = u.seq;
        if let Some(p) = request.and_then(|id| self.pending.get_mut(id)) {
            p.route = Some(seq);
        }
    }

    /// A message from the server: from child process `seq`, or from the
    /// HTTP upstream (`None`).
    pub(super) fn on_server_line(&mut self, seq: Option<u64>, line: &[u8]) {
        let msg = match jsonrpc::peek(line) {
            Ok(m) => m,
            Err(e) => {
                let shown = crate::logging::Escaped::new(line);
                crate::log_warn!(
                    "[{}] invalid message on stdout dropped ({e}): {shown}",
                    self.cfg.name
                );
                // A reply that is not a valid message still answers its
                // request, with an error: the host never waits for it.
                if let Some(id) = jsonrpc::recover_id(line, line)
                    && self.pending.contains(&id)
                {
                    self.fail_request(
                        &id,
                        RelayError::InvalidReply,
                        "The server's reply is not a valid JSON-RPC message (not UTF-8 or not JSON)",
                        json!({}),
                    );
                }
                return;
            }
        };
        match msg {
            Message::Single(env) => match env.kind() {
                Kind::Response => {
                    let Some(id) = env.id() else { return };
                    if let Some(seq) = seq
                        && self
                            .upstream_mut(seq)
                            .is_some_and(|u| u.life.awaiting_init() == Some(&id))
                    {
                        // A restarted server the era link initializes itself.
                        if let Some(c) = self.era.on_server_response(&id, line, self.now) {
                            if let Some(u) = self.upstream_mut(seq) {
                                u.life.initialized();
                            }
                            self.era_apply(c);
                            self.flush_held();
                            return;
                        }
                        self.replay_done(seq, env.is_response && !line_has_error(line));
                        return;
                    }
                    if seq.is_some()
                        && let Some(c) = self.era.on_server_response(&id, line, self.now)
                    {
                        self.era_apply(c);
                        return;
                    }
                    if seq.is_none() && self.http_era_response(&id, line) {
                        return;
                    }
                    let spelled = env.id.and_then(|raw| self.spelled_reply(&id, line, raw));
                    if let Some(p) = self.untrack(&id) {
                        let msg = spelled.as_deref().unwrap_or(line);
                        if let Some(msg) = self.tools_reply(&id, &p, msg) {
                            match self.era.on_server_result(&msg) {
                                Some(modern) => {
                                    self.send_to_client(Direction::ServerToClient, &modern)
                                }
                                None => self.send_to_client(Direction::ServerToClient, &msg),
                            }
                        }
                    } else {
                        crate::log_debug!(
                            "[{}] reply to {id} dropped: no such request in flight",
                            self.cfg.name
                        );
                    }
                }
                Kind::Notification => {
                    if env.method_is("notifications/message")
                        && !self.era.deliver_log(env.params.map(|p| p.get()))
                    {
                        // A 2026-07-28 client asked for no logs at this level.
                        self.dropped(Dropped::LogNotOptedIn);
                        return;
                    }
                    if self.era.bridging()
                        && let Some(m) = env.method()
                        && let Some(c) = self
                            .era
                            .on_server_notification(&m, env.params.map(|p| p.get()))
                    {
                        // A listen event: to the listens that asked for it.
                        self.era_apply(c);
                        return;
                    }
                    if env.method_is("notifications/progress")
                        && let Some(tok) = env.param_id("progressToken")
                    {
                        self.on_progress(&tok);
                    }
                    self.send_to_client(Direction::ServerToClient, line);
                }
                Kind::Request => {
                    if self.era_server_request(&env) {
                        return;
                    }
                    self.send_to_client(Direction::ServerToClient, line);
                }
                Kind::Invalid => {
                    crate::log_warn!("[{}] message that is not JSON-RPC dropped", self.cfg.name);
                }
            },
            Message::Batch(items) => self.on_server_batch(line, &items),
        }
    }

    /// A batch from the server: late replies, an empty batch, nested arrays
    /// and elements that are no message go nowhere (logged at debug, rate
    /// limited); a reply inside a nested array answers its request with
    /// `invalid_reply` now; replies carry the host's spelling of their ids
    /// (issue 11, class 13). What is left goes on as one batch.
    fn on_server_batch(&mut self, line: &[u8], items: &[&serde_json::value::RawValue]) {
        if items.is_empty() {
            self.dropped(Dropped::BatchEmpty);
            return;
        }
        let mut keep: Vec<Cow<'_, str>> = Vec::with_capacity(items.len());
        for raw in items {
            match jsonrpc::batch_item(raw) {
                BatchItem::Msg(env) => match env.kind() {
                    Kind::Response => {
                        let (Some(id), Some(raw_id)) = (env.id(), env.id) else {
                            continue;
                        };
                        let spelled = self.spelled_reply(&id, raw.get().as_bytes(), raw_id);
                        let Some(p) = self.untrack(&id) else {
                            continue;
                        };
                        let bytes = spelled.as_deref().unwrap_or(raw.get().as_bytes());
                        let Some(out) = self.tools_reply(&id, &p, bytes) else {
                            continue;
                        };
                        keep.push(match (&spelled, out) {
                            (None, Cow::Borrowed(_)) => raw.get().into(),
                            (_, out) => String::from_utf8_lossy(&out).into_owned().into(),
                        });
                    }
                    Kind::Invalid => self.dropped(Dropped::BatchInvalidItem),
                    Kind::Request | Kind::Notification => keep.push(raw.get().into()),
                },
                BatchItem::Nested(ids) => {
                    self.dropped(Dropped::BatchNested);
                    for id in ids {
                        self.fail_request(
                            &id,
                            RelayError::InvalidReply,
                            "The server's reply came inside a nested batch, which JSON-RPC \
                             does not allow",
                            json!({}),
                        );
                    }
                }
                BatchItem::Invalid => self.dropped(Dropped::BatchInvalidItem),
            }
        }
        let unchanged = keep.len() == items.len()
            && keep
                .iter()
                .zip(items)
                .all(|(k, raw)| matches!(k, Cow::Borrowed(_)) && k == raw.get());
        if unchanged {
            self.send_to_client(Direction::ServerToClient, line);
        } else if !keep.is_empty() {
            let rebuilt = format!("[{}]", keep.join(","));
            self.send_to_client(Direction::ServerToClient, rebuilt.as_bytes());
        }
    }

    /// The reply `line` with its id as the host spelled the request's
    /// (`raw` is the reply's id, borrowed from `line`), if the server
    /// re-spelled it; `None` if it is spelled right, or no such request is
    /// in flight.
    fn spelled_reply(
        &self,
        id: &Id,
        line: &[u8],
        raw: crate::proto::jsonrpc::Raw<'_>,
    ) -> Option<Vec<u8>> {
        let text = self.pending.get(id)?.respelling(id, raw.get())?;
        crate::mcp::shared::splice(line, &mut [(raw, text.as_bytes())])
    }

    /// A message from the server dropped instead of passed on, logged at
    /// debug within the line budget.
    pub(super) fn dropped(&mut self, why: Dropped) {
        if let Some(suppressed) = self.drop_log.check(self.now) {
            crate::log_debug!(
                "[{}] server message dropped: {}{}",
                self.cfg.name,
                why.reason(),
                if suppressed > 0 {
                    format!(" ({suppressed} similar lines suppressed)")
                } else {
                    String::new()
                }
            );
        }
    }

    /// After `line` went its way: a reply the server wrote over several
    /// lines (each dropped as not a message) answers its request
    /// `invalid_reply` as soon as it closes, instead of leaving it to its
    /// response timeout.
    fn observe_split(&mut self, seq: u64, line: &[u8]) {
        let Some(u) = self.upstream_mut(seq) else {
            return;
        };
        match u.io.split.observe(line) {
            Split::Closed(Some(id)) if self.pending.contains(&id) => {
                crate::log_warn!(
                    "[{}] the reply to {id} was written over several lines; answered \
                     invalid_reply (the stdio transport is one message per line)",
                    self.cfg.name
                );
                self.fail_request(
                    &id,
                    RelayError::InvalidReply,
                    "The server's reply is not a valid JSON-RPC message (written over several lines)",
                    json!({}),
                );
            }
            Split::Abandoned => crate::log_debug!(
                "[{}] a value opened on stdout did not close within --max-message-size",
                self.cfg.name
            ),
            Split::Closed(_) | Split::None => {}
        }
    }

    pub(super) fn on_server_oversize(&mut self, o: Oversize) {
        let id = jsonrpc::recover_id(&o.head, &o.tail);
        crate::log_warn!(
            "[{}] server message of {} bytes exceeds --max-message-size {}; dropped",
            self.cfg.name,
            o.len,
            self.cfg.max_message_size
        );
        if let Some(id) = id
            && self.pending.contains(&id)
        {
            self.fail_request(
                &id,
                RelayError::MessageTooLarge,
                "The server's reply exceeds the relay's maximum message size",
                crate::proto::object::object([
                    ("size", serde_json::Value::from(o.len)),
                    ("limit", serde_json::Value::from(self.cfg.max_message_size)),
                ]),
            );
        }
    }

    pub(super) fn upstream_mut(&mut self, seq: u64) -> Option<&mut Upstream> {
        self.server.child(seq)
    }

    pub(super) fn spawn_upstream(&mut self) -> io::Result<()> {
        let Some(kids) = self.server.children_mut() else {
            return Ok(());
        };
        let seq = kids.next_seq;
        kids.next_seq += 1;
        let mut io = StdioConn::spawn(
            &self.cfg.command,
            &self.cfg.name,
            self.cfg.max_message_size,
            self.now,
        )?;
        crate::log_info!("[{}] started pid {}", self.cfg.name, io.pid());
        let endpoints = &mut self.endpoints;
        io.register(self.poll.registry(), |pipe| {
            endpoints.insert(Endpoint::Child(seq, pipe))
        })?;
        let mut replay = None;
        // The client's listens ended with the old server: it listens again.
        for line in self.era.end_listens() {
            self.send_to_client(Direction::RelayToClient, &line);
        }
        if let Some((id, msg)) = self.era.on_restart() {
            // A link bridging a modern client initializes the new server
            // with that client's envelope (docs/eras.md).
            io.to_child.push_line(&msg);
            self.record(Direction::RelayToServer, &msg);
            replay = Some(id);
        } else if let Some(init) = &self.cached_initialize {
            // A restart: the server must be initialized again before it sees
            // the client's traffic. The client never learns of it.
            let id = Id::Str(format!("{REPLAY_ID_PREFIX}{seq}").into());
            match with_id(init, &id) {
                Some(msg) => {
                    io.to_child.push_line(&msg);
                    self.record(Direction::RelayToServer, &msg);
                    replay = Some(id);
                }
                None => crate::log_warn!("cached initialize could not be replayed"),
            }
        }
        let replaying = replay.is_some();
        let cfg = lifecycle::Config {
            grace: self.cfg.kill_grace,
            down: DownPolicy::OnStatus,
        };
        if let Some(kids) = self.server.children_mut() {
            kids.current = Some(Upstream {
                seq,
                io,
                life: Lifecycle::spawned(cfg, replay),
                grace: None,
            });
        }
        if !replaying {
            self.flush_held();
        }
        Ok(())
    }

    pub(super) fn replay_done(&mut self, seq: u64, ok: bool) {
        if ok {
            crate::log_info!("[{}] restarted server initialized", self.cfg.name);
        } else {
            crate::log_warn!(
                "[{}] restarted server rejected the replayed initialize",
                self.cfg.name
            );
        }
        let initialized = self.cached_initialized.clone();
        if let Some(u) = self.upstream_mut(seq) {
            u.life.initialized();
            if let Some(n) = &initialized {
                u.io.to_child.push_line(n);
            }
        }
        if let Some(n) = initialized {
            self.record(Direction::RelayToServer, &n);
        }
        self.flush_held();
    }

    pub(super) fn flush_held(&mut self) {
        while let Some(h) = self.server.children_mut().and_then(|k| {
            let h = k.held.pop_front()?;
            k.held_bytes -= h.line.len();
            Some(h)
        }) {
            // A request that timed out while held is not sent at all.
            if let Some(id) = &h.request
                && !self.pending.contains(id)
            {
                continue;
            }
            self.write_upstream(&h.line, h.request.as_ref());
        }
    }

    /// The upstream's stdout ended: it is out of service at once and is
    /// closed and reaped in the background.
    pub(super) fn upstream_lost(&mut self, seq: u64) {
        self.retire(seq);
        let Some(u) = self.server.child(seq) else {
            return;
        };
        let actions = u.life.on_lost(self.now);
        self.run_upstream(seq, actions);
        let reaped = self.upstream_mut(seq).and_then(|u| u.io.proc.try_reap());
        if let Some(status) = reaped {
            self.upstream_exited(seq, status);
        }
    }

    /// Fails the upstream's in-flight requests and decides what comes next.
    pub(super) fn upstream_down(&mut self, seq: u64, status: Option<ExitStatus>) {
        let Some(u) = self.server.child(seq) else {
            return;
        };
        let uptime = self.now.duration_since(u.io.started);
        let what = status.map_or_else(|| "stdout closed".to_string(), describe);
        let ids: Vec<Id> = self
            .pending
            .iter()
            .filter(|(_, p)| p.route == Some(seq))
            .map(|(id, _)| id.clone())
            .collect();
        if !self.closing {
            crate::log_warn!(
                "[{}] server went away ({what}); {} request(s) in flight failed",
                self.cfg.name,
                ids.len()
            );
        }
        for id in ids {
            self.fail_request(
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
        if self.closing {
            return;
        }
        if self.cfg.restart {
            if uptime >= STABLE_UPTIME
                && let Some(kids) = self.server.children_mut()
            {
                kids.backoff.reset();
            }
            self.schedule_respawn();
        } else {
            self.exit_code = Some(exit_code_for(status));
            self.begin_close();
        }
    }

    pub(super) fn schedule_respawn(&mut self) {
        let Some(kids) = self.server.children_mut() else {
            return;
        };
        let delay = kids.backoff.next_delay();
        crate::log_info!(
            "[{}] restarting in {delay:?} (attempt {})",
            self.cfg.name,
            kids.backoff.attempt()
        );
        kids.respawn = Some(self.timers.insert(self.now + delay, TimerKind::Respawn));
    }

    pub(super) fn close_stdin(&mut self, seq: u64) {
        let Some(u) = self.server.child(seq) else {
            return;
        };
        // A draining upstream stays one the relay asked to close.
        let actions = u.life.close(self.now, Cause::Fault);
        self.run_upstream(seq, actions);
    }

    pub(super) fn grace_expired(&mut self, seq: u64) {
        let Some(u) = self.server.child(seq) else {
            return;
        };
        u.grace = None;
        if let Some(status) = u.io.proc.try_reap() {
            self.upstream_exited(seq, status);
            return;
        }
        let actions = u.life.on_grace_expired(self.now);
        self.run_upstream(seq, actions);
    }

    pub(super) fn reap_children(&mut self) {
        let seqs: Vec<u64> = self.server.all_children().map(|u| u.seq).collect();
        for seq in seqs {
            let Some(u) = self.server.child(seq) else {
                continue;
            };
            if u.io.proc.status().is_some() {
                continue;
            }
            let Some(status) = u.io.proc.try_reap() else {
                continue;
            };
            // Whatever it wrote before exiting is still in the pipe: relay it.
            u.io.mark_exited();
            self.read_upstream(seq, true);
            self.upstream_exited(seq, status);
        }
    }

    /// Drops a reaped, retired upstream: its pipes are deregistered and closed.
    pub(super) fn release_upstream(&mut self, seq: u64) {
        let Some(kids) = self.server.children_mut() else {
            return;
        };
        let Some(pos) = kids.retired.iter().position(|u| u.seq == seq) else {
            return;
        };
        let mut u = kids.retired.swap_remove(pos);
        if let Some(t) = u.grace.take() {
            self.timers.cancel(t);
        }
        for t in u.io.release(self.poll.registry(), self.now) {
            self.endpoints.remove(t);
        }
    }

    /// The upstream was reaped: out of service, down (if it was not yet) and
    /// released. Every reaping path (SIGCHLD, stdout lost, grace expired)
    /// comes here, so this is where "exited" is logged, once per process.
    pub(super) fn upstream_exited(&mut self, seq: u64, status: ExitStatus) {
        self.retire(seq);
        let Some(u) = self.server.child(seq) else {
            return;
        };
        crate::log_info!(
            "[{}] pid {} exited ({})",
            self.cfg.name,
            u.io.proc.pid,
            describe(status)
        );
        let actions = u.life.on_exit(status);
        self.run_upstream(seq, actions);
    }

    /// SIGKILL to every upstream now.
    pub(super) fn kill_upstreams(&mut self) {
        let seqs: Vec<u64> = self.server.all_children().map(|u| u.seq).collect();
        for seq in seqs {
            if let Some(u) = self.server.child(seq) {
                let actions = u.life.kill_now(self.now);
                self.run_upstream(seq, actions);
            }
        }
    }

    /// Moves the upstream out of `current`: it gets no more traffic.
    pub(super) fn retire(&mut self, seq: u64) {
        if let Some(kids) = self.server.children_mut()
            && kids.current.as_ref().is_some_and(|u| u.seq == seq)
            && let Some(u) = kids.current.take()
        {
            kids.retired.push(u);
        }
    }

    /// Carries out what the upstream's lifecycle decided, in order.
    pub(super) fn run_upstream(&mut self, seq: u64, actions: Vec<lifecycle::Action>) {
        let grace = self.cfg.kill_grace;
        for action in actions {
            let Some(u) = self.server.child(seq) else {
                return;
            };
            match action {
                lifecycle::Action::CloseStdin => {
                    if let Some(t) = u.io.close_stdin(self.poll.registry()) {
                        self.endpoints.remove(t);
                    }
                }
                lifecycle::Action::ArmGrace(at) => {
                    // One grace timer per upstream: a second one would make the
                    // next escalation step (SIGTERM → SIGKILL) follow with no
                    // grace at all.
                    if let Some(t) = u.grace.take() {
                        self.timers.cancel(t);
                    }
                    u.grace = Some(self.timers.insert(at, TimerKind::Grace(seq)));
                }
                lifecycle::Action::Term => {
                    crate::log_info!(
                        "[{}] still running {grace:?} after stdin closed; SIGTERM",
                        self.cfg.name
                    );
                    u.io.proc.terminate();
                }
                lifecycle::Action::Kill { after_term } => {
                    if after_term {
                        crate::log_warn!("[{}] ignored SIGTERM; SIGKILL", self.cfg.name);
                    }
                    u.io.proc.kill();
                }
                lifecycle::Action::Down { status, .. } => self.upstream_down(seq, status),
                lifecycle::Action::Release => self.release_upstream(seq),
            }
        }
    }
}

/// The upstream numbered `seq`, live or retired. A free function so callers
/// can borrow other fields alongside it.
pub(super) fn find<'a>(
    current: &'a mut Option<Upstream>,
    retired: &'a mut [Upstream],
    seq: u64,
) -> Option<&'a mut Upstream> {
    match current {
        Some(u) if u.seq == seq => Some(u),
        _ => retired.iter_mut().find(|u| u.seq == seq),
    }
}
