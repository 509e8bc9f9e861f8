//! The host's side: framing stdin, writing stdout, and the requests the
//! host has in flight (the session core's `Inflight` table) with their
//! timeouts and their one answer each.

use super::*;

impl Forward {
    pub(super) fn client_paused(&self) -> bool {
        // `auth login` has no host: stdin is never read.
        if self.closing || self.host.eof || self.cfg.login {
            return true;
        }
        match &self.server {
            Server::Http(h) => h.in_flight() >= MAX_HTTP_IN_FLIGHT,
            Server::Stdio(kids) => match &kids.current {
                Some(u) if u.life.awaiting_init().is_none() => u.io.to_child.is_full(),
                _ => kids.held_bytes >= HELD_MAX_BYTES,
            },
        }
    }

    pub(super) fn read_client(&mut self) {
        let mut taken = 0;
        while self.host.readable || !self.host.input.pollable {
            if self.client_paused() {
                return;
            }
            if taken >= READ_BUDGET {
                self.more = true;
                return;
            }
            match self.host.reader.read_from(&mut self.host.input.file) {
                Ok(ReadResult::Data { n, drained }) => {
                    taken += n;
                    if drained && !self.host.hup {
                        self.host.readable = false;
                    }
                    // The reader is moved out while its frames are handled, so
                    // lines are borrowed, not copied.
                    let mut reader = std::mem::replace(&mut self.host.reader, LineReader::new(0));
                    while let Some(frame) = reader.next_frame() {
                        match frame {
                            Frame::Line(line) => self.on_client_line(line),
                            Frame::Oversize(o) => self.on_client_oversize(o),
                        }
                    }
                    self.host.reader = reader;
                }
                Ok(ReadResult::WouldBlock) => self.host.readable = false,
                Ok(ReadResult::Eof) => {
                    if self.host.reader.has_partial() {
                        crate::log_warn!(
                            "client closed stdin in the middle of a message; dropped it"
                        );
                    }
                    crate::log_info!("client closed stdin");
                    self.host.eof = true;
                    self.begin_close();
                    return;
                }
                Err(e) => {
                    crate::log_warn!("reading stdin failed: {e}");
                    self.host.eof = true;
                    self.begin_close();
                    return;
                }
            }
        }
    }

    pub(super) fn flush_client(&mut self) {
        if self.host.out_broken {
            self.host.out.clear();
            return;
        }
        let can_write = self.host.writable || !self.host.output.pollable;
        if self.host.out.is_empty() || !can_write {
            return;
        }
        match self.host.out.flush_to(&mut self.host.output.file) {
            Ok(true) => {
                // Room again: upstream reads paused on a full queue resume.
                if self.server.current().is_some_and(|u| u.io.out_readable) {
                    self.more = true;
                }
            }
            Ok(false) => self.host.writable = false,
            Err(e) => {
                crate::log_warn!("writing to stdout failed: {e}; the client is gone");
                self.host.out_broken = true;
                self.host.out.clear();
                self.begin_close();
            }
        }
    }

    pub(super) fn on_client_line(&mut self, line: &[u8]) {
        let msg = match jsonrpc::peek(line) {
            Ok(m) => m,
            Err(e) => {
                crate::log_warn!("client sent invalid JSON: {e}");
                self.reply_error(
                    None,
                    RelayError::ParseError,
                    &format!("Parse error: {e}"),
                    json!({}),
                );
                return;
            }
        };
        // A member the relay reads written twice (`proto::unique`): a
        // request is answered with its id, unless that is what repeats;
        // anything else is dropped. None of it reaches the server.
        if let Message::Single(env) = &msg
            && let Some(what) = env.ambiguous
        {
            crate::log_warn!("client message with member `{what}` written twice: refused");
            if env.kind() == Kind::Request {
                let id = env.id().filter(|_| what != "id");
                self.reply_error(
                    id.as_ref(),
                    RelayError::InvalidRequest,
                    &format!("Invalid Request: duplicate member `{what}`"),
                    json!({}),
                );
            }
            return;
        }
        match msg {
            Message::Single(env) => match env.kind() {
                Kind::Request => {
                    let Some(id) = env.id() else { return };
                    let initialize = env.method_is("initialize");
                    if !self.track(id.clone(), &env, initialize) {
                        self.reply_error(
                            Some(&id),
                            RelayError::DuplicateId,
                            "A request with this id is already in flight",
                            json!({}),
                        );
                        return;
                    }
                    if self.era_client(line, &env, Some(&id)) {
                        return;
                    }
                    if initialize {
                        self.cached_initialize = Some(line.to_vec());
                    }
                    self.send_to_server(line, Some(id));
                }
                Kind::Notification => {
                    if self.era_client(line, &env, None) {
                        return;
                    }
                    if env.method_is("notifications/initialized") {
                        self.cached_initialized = Some(line.to_vec());
                    } else if env.method_is("notifications/cancelled")
                        && let Some(id) = env.param_id("requestId")
                    {
                        // MCP: the cancelled request gets no reply; a late one
                        // from the server is dropped.
                        self.untrack(&id);
                    }
                    self.send_to_server(line, None);
                }
                Kind::Response => {
                    if !self.era_client(line, &env, None) {
                        self.send_to_server(line, None);
                    }
                }
                Kind::Invalid => {
                    let id = env.id();
                    self.reply_error(
                        id.as_ref(),
                        RelayError::InvalidRequest,
                        "Invalid Request: not a JSON-RPC request, notification or response",
                        json!({}),
                    );
                }
            },
            Message::Batch(items) => {
                // 2025-03-26 batches: track each request, forward the line whole.
                let mut first_request = None;
                for raw in items {
                    if let Some(env) = jsonrpc::peek_raw(raw)
                        && env.kind() == Kind::Request
                        && let Some(id) = env.id()
                        && !self.pending.contains(&id)
                    {
                        self.track(id.clone(), &env, false);
                        first_request.get_or_insert(id);
                    }
                }
                self.send_to_server(line, first_request);
            }
        }
    }

    pub(super) fn on_client_oversize(&mut self, o: Oversize) {
        let id = jsonrpc::recover_id(&o.head, &o.tail);
        // A request names a method; a response has a result or an error. The
        // members may sit anywhere, so look at both ends of the line.
        let has = |key: &[u8]| {
            memchr::memmem::find(&o.head, key).is_some()
                || memchr::memmem::find(&o.tail, key).is_some()
        };
        let is_request = has(b"\"method\"") || !(has(b"\"result\"") || has(b"\"error\""));
        crate::log_warn!(
            "client message of {} bytes exceeds --max-message-size {}; dropped (id {})",
            o.len,
            self.cfg.max_message_size,
            id.as_ref().map_or("unknown".to_string(), Id::to_json)
        );
        if let Some(id) = id.filter(|_| is_request)
            && !self.pending.contains(&id)
        {
            self.reply_error(
                Some(&id),
                RelayError::MessageTooLarge,
                "Request exceeds the relay's maximum message size",
                crate::proto::object::object([
                    ("size", serde_json::Value::from(o.len)),
                    ("limit", serde_json::Value::from(self.cfg.max_message_size)),
                ]),
            );
        }
    }

    /// Enters a request and arms its timer; false if its id is in flight.
    pub(super) fn track(&mut self, id: Id, env: &Envelope, initialize: bool) -> bool {
        let deadline = self.deadlines().next(self.now, self.now);
        let timer_id = id.clone();
        let raw = env.id.map(|r| r.get());
        let Ok(p) = self
            .pending
            .begin(id, self.now, env.progress_token(), initialize, None)
        else {
            return false;
        };
        if let Some(raw) = raw {
            p.keep_spelling(&timer_id, raw);
        }
        p.timer = deadline.map(|d| self.timers.insert(d, TimerKind::Response(timer_id)));
        true
    }

    pub(super) fn deadlines(&self) -> Deadlines {
        Deadlines {
            response_timeout: self.cfg.response_timeout,
            max_request_time: self.cfg.max_request_time,
        }
    }

    /// Takes a request out (its one answer is now the caller's to send)
    /// and stops its timer.
    pub(super) fn untrack(&mut self, id: &Id) -> Option<Pending> {
        let p = self.pending.finish(id)?;
        self.era.forget(id);
        if let Some(t) = p.timer {
            self.timers.cancel(t);
        }
        Some(p)
    }

    pub(super) fn send_to_server(&mut self, line: &[u8], request: Option<Id>) {
        let Some((line, request)) = self.tool_gate(line, request) else {
            return;
        };
        let line = &line[..];
        self.record(Direction::ClientToServer, line);
        let Server::Stdio(kids) = &mut self.server else {
            self.http_send(line, request);
            return;
        };
        let ready = match &kids.current {
            Some(u) => u.life.awaiting_init().is_none() && u.io.proc.stdin.is_some(),
            None => false,
        };
        if ready {
            self.write_upstream(line, request.as_ref());
        } else if self.cfg.restart && !self.closing {
            // A lost server is always followed by a respawn in restart mode,
            // even before it is reaped: hold the message for the new one.
            kids.held_bytes += line.len();
            kids.held.push_back(Held {
                line: line.to_vec(),
                request,
            });
        } else if let Some(id) = request {
            self.fail_request(
                &id,
                RelayError::UpstreamClosed,
                "The server is not running",
                json!({}),
            );
        }
    }

    pub(super) fn on_progress(&mut self, token: &Id) {
        let limits = self.deadlines();
        let Some((id, p)) = self.pending.by_progress(token) else {
            return;
        };
        let id = id.clone();
        let Some(deadline) = limits.next(p.started, self.now) else {
            return;
        };
        let old = p.timer;
        if let Some(t) = old {
            self.timers.cancel(t);
        }
        let t = self
            .timers
            .insert(deadline, TimerKind::Response(id.clone()));
        if let Some(p) = self.pending.get_mut(&id) {
            p.timer = Some(t);
        }
    }

    pub(super) fn send_to_client(&mut self, dir: Direction, line: &[u8]) {
        self.record(dir, line);
        if !self.host.out_broken {
            self.host.out.push_line(line);
        }
    }

    pub(super) fn reply_error(
        &mut self,
        id: Option<&Id>,
        err: RelayError,
        message: &str,
        data: serde_json::Value,
    ) {
        let data = self.error_data(err, data);
        let msg = jsonrpc::error_response(id, err.code(), message, data);
        self.send_to_client(Direction::RelayToClient, &msg);
    }

    /// `reply_error` to a request the host spelled `id_text`.
    fn reply_error_spelled(
        &mut self,
        id_text: &str,
        err: RelayError,
        message: &str,
        data: serde_json::Value,
    ) {
        let data = self.error_data(err, data);
        let msg = jsonrpc::error_response_spelled(id_text, err.code(), message, data);
        self.send_to_client(Direction::RelayToClient, &msg);
    }

    /// A relay error's `data`: `data` plus its `kind` and the upstream's name.
    fn error_data(&self, err: RelayError, mut data: serde_json::Value) -> serde_json::Value {
        if let Some(obj) = data.as_object_mut() {
            obj.insert("kind".into(), err.kind().into());
            obj.insert("upstream".into(), self.cfg.name.clone().into());
        }
        data
    }

    /// Answers a tracked request with a relay error and forgets it.
    pub(super) fn fail_request(
        &mut self,
        id: &Id,
        err: RelayError,
        message: &str,
        data: serde_json::Value,
    ) {
        match self.untrack(id).map(|p| p.id_text) {
            Some(Some(text)) => self.reply_error_spelled(&text, err, message, data),
            Some(None) => self.reply_error(Some(id), err, message, data),
            None => {}
        }
    }

    pub(super) fn response_timeout(&mut self, id: Id) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.timer = None;
        let elapsed = self.now.duration_since(p.started);
        let (initialize, sent_to) = (p.initialize, p.route);
        crate::log_warn!(
            "[{}] request {id} timed out after {elapsed:?}",
            self.cfg.name
        );
        self.fail_request(
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
                    serde_json::Value::from(self.cfg.response_timeout.as_millis() as u64),
                ),
                (
                    "max_request_time_ms",
                    serde_json::Value::from(self.cfg.max_request_time.as_millis() as u64),
                ),
            ]),
        );
        // A retry of a bridged call: the call is cancelled at the server
        // under its own id (docs/eras.md).
        if let Some(c) = self.era.on_leg_gone(&id) {
            self.era_apply(c);
            return;
        }
        // MCP: `initialize` must not be cancelled. Anything else is, so the
        // server can stop working on it; its late reply is dropped.
        if self.server.is_http() {
            self.http_cancel(&id, initialize);
            return;
        }
        if !initialize
            && let Some(u) = self.server.current_mut()
            && Some(u.seq) == sent_to
            && u.io.proc.stdin.is_some()
        {
            let msg = jsonrpc::cancelled(&id, "mcp-relay: response timeout");
            u.io.to_child.push_line(&msg);
            self.record(Direction::RelayToServer, &msg);
        }
    }

    pub(super) fn record(&mut self, dir: Direction, line: &[u8]) {
        if let Some(r) = self.recorder.as_mut() {
            r.record(self.wall, dir, line);
        }
    }

    /// Stdio: what the era link makes of a client message (docs/eras.md).
    /// True when it took the message; false when the caller sends it as it
    /// is (a link that passes, an HTTP upstream, a message left unchanged).
    pub(super) fn era_client(&mut self, line: &[u8], env: &Envelope, id: Option<&Id>) -> bool {
        if self.server.is_http() && self.http_era_client(line, env, id) {
            return true;
        }
        if self.era.passes() {
            return false;
        }
        let method = env.method();
        let params = env.params.map(|p| p.get());
        let refused_before = self.era.refused;
        let d = self
            .era
            .on_client(line, method.as_deref(), params, id, self.now);
        self.era_arm_timer();
        match d {
            FromClient::Send(bytes) if bytes == line => return false,
            FromClient::Send(bytes) => self.send_to_server(&bytes, id.cloned()),
            FromClient::Held | FromClient::Drop => {}
            FromClient::Bridge(c) => self.era_apply(c),
            FromClient::SendOwn(own) => self.era_send_own(&own),
            FromClient::Answer(a) | FromClient::Refuse(a) => {
                if let Some(id) = id {
                    self.untrack(id);
                }
                self.send_to_client(Direction::RelayToClient, &a);
            }
        }
        let refused = self.era.refused;
        if refused > refused_before && (refused == 1 || refused.is_power_of_two()) {
            crate::log_warn!(
                "[{}] {refused} client message(s) refused while finding out the server's \
                 protocol era (hold full: {} messages)",
                self.cfg.name,
                crate::mcp::era::link::HOLD_CAP
            );
        }
        true
    }

    /// One of the relay's own messages to the live child.
    pub(super) fn era_send_own(&mut self, line: &[u8]) {
        self.record(Direction::RelayToServer, line);
        if self.server.is_http() {
            self.http_send_own(line);
            return;
        }
        if let Some(u) = self.server.current_mut()
            && u.io.proc.stdin.is_some()
        {
            u.io.to_child.push_line(line);
        }
    }

    /// Carries out what the era link decided on a server answer or a timer.
    pub(super) fn era_apply(&mut self, c: Consumed) {
        for line in &c.to_server {
            self.era_send_own(line);
        }
        for (id, line) in c.to_client {
            // Its request may have timed out or been cancelled meanwhile.
            if self.untrack(&id).is_some() {
                self.send_to_client(Direction::ServerToClient, &line);
            }
        }
        for id in &c.done {
            self.untrack(id);
        }
        for line in &c.notify {
            self.send_to_client(Direction::RelayToClient, line);
        }
        // The relay's own `notifications/initialized`: the bridge is up.
        if c.to_server
            .iter()
            .any(|l| l.ends_with(b"\"notifications/initialized\"}"))
        {
            crate::log_info!(
                "[{}] handshake-era server initialized by the relay; bridging the 2026-07-28 client",
                self.cfg.name
            );
        }
        for line in c.released {
            let Ok(Message::Single(env)) = jsonrpc::peek(&line) else {
                continue;
            };
            let id = if env.kind() == Kind::Request {
                env.id()
            } else {
                None
            };
            // A held request that timed out or was cancelled is not sent.
            if let Some(id) = &id
                && !self.pending.contains(id)
            {
                continue;
            }
            if !self.era_client(&line, &env, id.as_ref()) {
                // As on arrival (`on_client_line`): a cancelled request gets
                // no reply.
                if env.method_is("notifications/cancelled")
                    && let Some(cancelled) = env.param_id("requestId")
                {
                    self.untrack(&cancelled);
                }
                self.send_to_server(&line, id);
            }
        }
        self.era_arm_timer();
    }

    /// A request from the server: carried to a bridged modern client as an
    /// `InputRequiredResult` round. False: the caller passes it on as is.
    pub(super) fn era_server_request(&mut self, env: &Envelope) -> bool {
        if !self.era.bridging() {
            return false;
        }
        let (Some(method), Some(id)) = (env.method(), env.id()) else {
            return false;
        };
        let params: Option<serde_json::Value> =
            env.params.and_then(|p| serde_json::from_str(p.get()).ok());
        let mint = || {
            crate::mcp::session::new_session_id().unwrap_or_else(|e| {
                // One client per forward relay: a token only has to be unique.
                crate::log_warn!("random request state unavailable ({e}); using a counter");
                format!("{:?}", std::time::SystemTime::now())
            })
        };
        let refused = self.era.input_stats().refused;
        let Some(c) = self
            .era
            .on_server_request(id, &method, params.as_ref(), self.now, mint)
        else {
            return false;
        };
        let now_refused = self.era.input_stats().refused;
        if now_refused > refused && now_refused.is_power_of_two() {
            crate::log_warn!(
                "[{}] {now_refused} server request(s) to the 2026-07-28 client refused: \
                 too many calls or requests waiting for its input",
                self.cfg.name
            );
        }
        self.era_apply(c);
        true
    }

    pub(super) fn era_arm_timer(&mut self) {
        match (self.era.deadline(), self.era_timer) {
            (Some(at), None) => self.era_timer = Some(self.timers.insert(at, TimerKind::EraProbe)),
            (None, Some(t)) => {
                self.timers.cancel(t);
                self.era_timer = None;
            }
            _ => {}
        }
        let want = self.era.input_deadline();
        if self.era_input_timer.map(|(_, at)| at) != want {
            if let Some((t, _)) = self.era_input_timer.take() {
                self.timers.cancel(t);
            }
            if let Some(at) = want {
                let t = self.timers.insert(at, TimerKind::EraInput);
                self.era_input_timer = Some((t, at));
            }
        }
    }
}
