//! HTTP routing and the MCP endpoints: Streamable HTTP (POST, GET,
//! DELETE), 2026-07-28 stateless requests, and legacy HTTP+SSE.

use super::*;
use crate::proto::http1::Known;

impl Reverse {
    pub(super) fn handle_request(&mut self, tok: Token, req: Request) {
        let admin = self.client(tok).is_some_and(|c| c.admin);
        let ka = req.keep_alive;
        let path = req.path().to_string();
        let ops_here = admin || self.cfg.admin.is_none();
        if ops_here && path == "/healthz" && req.method == "GET" {
            let failing: Vec<String> = self
                .ups
                .iter()
                .filter_map(|up| up.failing().map(|why| format!("{}: {why}\n", up.cfg.name)))
                .collect();
            if self.shutdown.is_stopping() {
                self.respond(
                    tok,
                    503,
                    &[("content-type", "text/plain")],
                    b"shutting down\n",
                    ka,
                );
            } else if !failing.is_empty() {
                // Every spawn of an upstream fails: it serves nobody.
                self.respond(
                    tok,
                    503,
                    &[("content-type", "text/plain")],
                    failing.concat().as_bytes(),
                    ka,
                );
            } else {
                self.respond(tok, 200, &[("content-type", "text/plain")], b"ok\n", ka);
            }
            return;
        }
        if admin && path != "/metrics" {
            self.respond(tok, 404, &[], b"not found\n", ka);
            return;
        }
        if self.oauth_metadata(tok, &req, &path) {
            return;
        }
        // MCP 2025-06-18 §Security: validate Origin on every request. A
        // page served by the relay's own address (scheme, host and port:
        // https on a TLS listener) is same-origin; any other must be listed.
        let local = self
            .client(tok)
            .and_then(|c| Some((c.local?, c.stream.is_tls())));
        if let Some(origin) = req.known(Known::Origin)
            && !self.cfg.allow_origins.iter().any(|o| o == origin)
            && !local.is_some_and(|(l, tls)| same_origin_on(origin, l, tls))
        {
            self.respond(
                tok,
                403,
                &[("content-type", "text/plain")],
                b"origin not allowed\n",
                ka,
            );
            return;
        }
        // Static tokens or OAuth (`oauth.rs`): the session binding.
        match self.authenticate(tok, &req, admin) {
            Authn::Go(token) => self.serve(tok, req, token, ops_here, &path),
            Authn::Answered => {}
            Authn::Held => {
                // Its token is being introspected (`oauth_held.rs`).
                if let Some(c) = self.client(tok) {
                    c.set_state(ClientState::Authorizing(Box::new(Held {
                        req,
                        ops_here,
                        path,
                    })));
                }
                self.client_rearm(tok);
            }
        }
    }

    /// A request past the token check, bound to `token` (a static token's
    /// index or a subject's principal; None without authentication).
    pub(super) fn serve(
        &mut self,
        tok: Token,
        req: Request,
        token: Option<usize>,
        ops_here: bool,
        path: &str,
    ) {
        let ka = req.keep_alive;
        if ops_here && path == "/metrics" && req.method == "GET" {
            let body = self.render_metrics();
            self.respond(
                tok,
                200,
                &[("content-type", "text/plain; version=0.0.4")],
                body.as_bytes(),
                ka,
            );
            return;
        }
        match self.route(path) {
            Some((u, Route::Mcp)) => match req.method.as_str() {
                "POST" => self.post_mcp(tok, req, token, u),
                "GET" => self.get_mcp(tok, req, token, u),
                "DELETE" => self.delete_mcp(tok, req, token, u),
                _ => self.respond(
                    tok,
                    405,
                    &[("allow", "GET, POST, DELETE")],
                    b"method not allowed\n",
                    ka,
                ),
            },
            Some((u, Route::Sse)) if req.method == "GET" => self.legacy_open(tok, req, token, u),
            Some((u, Route::Messages)) if req.method == "POST" => {
                self.legacy_post(tok, req, token, u)
            }
            Some(_) => self.respond(tok, 405, &[], b"method not allowed\n", ka),
            None => self.respond(tok, 404, &[], b"not found\n", ka),
        }
    }

    /// Which upstream and endpoint a path names. One upstream: `--path`,
    /// `/sse`, `/messages`. With `--config`: `/mcp/NAME`, `/sse/NAME`,
    /// `/messages/NAME`.
    pub(super) fn route(&self, path: &str) -> Option<(usize, Route)> {
        if self.cfg.config.is_none() {
            return match path {
                p if p == self.cfg.path => Some((0, Route::Mcp)),
                "/sse" => Some((0, Route::Sse)),
                "/messages" | "/messages/" => Some((0, Route::Messages)),
                _ => None,
            };
        }
        let (kind, name) = if let Some(n) = path.strip_prefix("/mcp/") {
            (Route::Mcp, n)
        } else if let Some(n) = path.strip_prefix("/sse/") {
            (Route::Sse, n)
        } else if let Some(n) = path.strip_prefix("/messages/") {
            (Route::Messages, n)
        } else {
            return None;
        };
        let name = name.trim_end_matches('/');
        self.ups
            .iter()
            .position(|u| u.cfg.name == name)
            .map(|u| (u, kind))
    }

    /// The session a request names, with the checks MCP prescribes: missing
    /// header → 400, unknown or ended → 404 (the client must re-initialize),
    /// a different bearer token than the one that created it → 404 as well,
    /// so a session id is useless to anyone else.
    pub(super) fn find_session(
        &mut self,
        tok: Token,
        req: &Request,
        token: Option<usize>,
        u: usize,
    ) -> Option<SKey> {
        let ka = req.keep_alive;
        let Some(sid) = req.known(Known::McpSessionId) else {
            self.respond_rpc_error(
                tok,
                400,
                -32600,
                "Bad Request: Mcp-Session-Id header is required",
                ka,
            );
            return None;
        };
        match self.by_id.get(sid).copied() {
            Some(k)
                if self
                    .sessions
                    .get_inline(&k)
                    .is_some_and(|s| s.token == token && !s.legacy && up_of(k) == u) =>
            {
                Some(k)
            }
            _ => {
                self.respond_rpc_error(tok, 404, -32001, "Session not found", ka);
                None
            }
        }
    }

    pub(super) fn post_mcp(&mut self, tok: Token, req: Request, token: Option<usize>, u: usize) {
        let ka = req.keep_alive;
        let json_body = req.known(Known::ContentType).is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        if !json_body {
            self.respond(
                tok,
                415,
                &[],
                b"Content-Type must be application/json\n",
                ka,
            );
            return;
        }
        if !req.accepts_all(["application/json", "text/event-stream"]) {
            self.respond(
                tok,
                406,
                &[],
                b"Accept must list application/json and text/event-stream\n",
                ka,
            );
            return;
        }
        let version = req.known(Known::McpProtocolVersion);
        if let Some(v) = version
            && !VERSIONS.contains(&v)
        {
            self.respond_rpc_error(
                tok,
                400,
                -32600,
                &format!("Bad Request: unsupported MCP-Protocol-Version {v}"),
                ka,
            );
            return;
        }
        let body = req.body.as_slice();
        let msg = match jsonrpc::peek(body) {
            Ok(m) => m,
            Err(e) => {
                let b =
                    jsonrpc::error_response(None, -32700, &format!("Parse error: {e}"), json!({}));
                self.respond_json(tok, 400, &b, ka, None);
                return;
            }
        };
        // A member the relay reads written twice (`proto::unique`): refused,
        // with the request's id unless that is what repeats.
        if let Message::Single(env) = &msg
            && let Some(what) = env.ambiguous
        {
            let id = env
                .id()
                .filter(|_| what != "id" && env.kind() == Kind::Request);
            let message = format!("Invalid Request: duplicate member `{what}`");
            let b = jsonrpc::error_response(id.as_ref(), -32600, &message, json!({}));
            self.respond_json(tok, 400, &b, ka, None);
            return;
        }
        if version == Some(STATELESS_VERSION) {
            match msg {
                Message::Single(env) => self.stateless_post(tok, &req, body, &env, token, u),
                Message::Batch(_) => self.respond_rpc_error(
                    tok,
                    400,
                    -32600,
                    "Bad Request: batches are not allowed",
                    ka,
                ),
            }
            return;
        }
        match msg {
            Message::Single(env) => {
                if env.kind() == Kind::Request && env.method_is("initialize") {
                    self.start_session(tok, token, body, &env, ReplyTo::Client(tok), ka, u);
                    return;
                }
                let Some(skey) = self.find_session(tok, &req, token, u) else {
                    return;
                };
                self.forward_single(tok, skey, body, &env, ka);
            }
            Message::Batch(items) => {
                let Some(skey) = self.find_session(tok, &req, token, u) else {
                    return;
                };
                // Batches exist only in 2025-03-26; later revisions forbid them.
                let version = self
                    .sessions
                    .get(&skey)
                    .map(|s| s.version.clone())
                    .unwrap_or_default();
                if version != "2025-03-26" {
                    self.respond_rpc_error(
                        tok,
                        400,
                        -32600,
                        &format!("Bad Request: JSON-RPC batches are not allowed in protocol version {version}"),
                        ka,
                    );
                    return;
                }
                // The batch goes to the process whole or not at all: a
                // process whose queue cannot take it gets none of it (503).
                let size = items.iter().map(|raw| raw.get().len() + 1).sum();
                if !self.session_queue_room(skey, size) {
                    self.respond_busy(tok, ka);
                    return;
                }
                // Each request is tracked; one that cannot be (its id is
                // already in flight) is answered with duplicate_id in the
                // batch reply and not forwarded.
                let mut expect = Vec::new();
                let mut rejected = Vec::new();
                let mut send: Vec<(&[u8], Envelope, Option<Id>)> = Vec::new();
                for raw in &items {
                    // JSON-RPC: an element that is no valid message gets
                    // -32600 in the batch reply, and goes nowhere (issue 11,
                    // class 10).
                    // So does one with a member the relay reads written
                    // twice (`proto::unique`), named by its id unless that
                    // is what repeats.
                    let env = jsonrpc::peek_raw(raw)
                        .filter(|e| e.kind() != Kind::Invalid && e.ambiguous.is_none());
                    let Some(env) = env else {
                        let id = jsonrpc::peek_raw(raw)
                            .filter(|e| e.ambiguous != Some("id"))
                            .and_then(|e| e.id)
                            .filter(|i| {
                                matches!(
                                    i.get().as_bytes().first(),
                                    Some(b'"' | b'-' | b'0'..=b'9')
                                )
                            })
                            .map(Id::from_raw);
                        rejected.push(error_body(
                            id.as_ref(),
                            RelayError::InvalidRequest,
                            "Invalid Request",
                            &self.ups[up_of(skey)].cfg.name,
                        ));
                        continue;
                    };
                    let request = match (env.kind(), env.id()) {
                        (Kind::Request, Some(id)) => Some(id),
                        _ => None,
                    };
                    match request {
                        Some(id) if env.method_is("initialize") => rejected.push(error_body(
                            Some(&id),
                            RelayError::InvalidRequest,
                            "initialize cannot be part of a batch",
                            &self.ups[up_of(skey)].cfg.name,
                        )),
                        Some(id) if self.track(skey, id.clone(), &env, ReplyTo::Client(tok)) => {
                            expect.push(id.clone());
                            send.push((raw.get().as_bytes(), env, Some(id)));
                        }
                        Some(id) => rejected.push(error_body(
                            Some(&id),
                            RelayError::DuplicateId,
                            "A request with this id is already in flight",
                            &self.ups[up_of(skey)].cfg.name,
                        )),
                        None => send.push((raw.get().as_bytes(), env, None)),
                    }
                }
                if !expect.is_empty()
                    && let Some(c) = self.client(tok)
                {
                    c.set_state(ClientState::Waiting(Exchange {
                        session: skey,
                        expect: expect.clone(),
                        replies: rejected.clone(),
                        batch: true,
                        keep_alive: ka,
                        sse: false,
                        session_header: None,
                    }));
                }
                for (line, env, id) in send {
                    self.send_up_as(skey, line, &env, id.as_ref(), false);
                }
                if expect.is_empty() {
                    if rejected.is_empty() {
                        self.respond(tok, 202, &[], b"", ka);
                    } else {
                        let body = format!(
                            "[{}]",
                            rejected
                                .iter()
                                .map(|r| String::from_utf8_lossy(r))
                                .collect::<Vec<_>>()
                                .join(",")
                        );
                        self.respond_json(tok, 200, body.as_bytes(), ka, None);
                    }
                }
            }
        }
    }

    /// MCP 2026-07-28: no initialize and no session; each POST stands alone
    /// and names its method in headers that must match the body.
    pub(super) fn stateless_post(
        &mut self,
        tok: Token,
        req: &Request,
        body: &[u8],
        env: &Envelope,
        token: Option<usize>,
        u: usize,
    ) {
        let ka = req.keep_alive;
        let method = env.method();
        // `initialize` belongs to the handshake era, whatever version header
        // came with it (2026-07-28 has no such method): it opens a session
        // as any handshake-era client's does, and never goes to a process
        // as a request of its own (a shared process is initialized by the
        // relay alone, for every session on it).
        if method.as_deref() == Some("initialize") && env.kind() == Kind::Request {
            self.start_session(tok, token, body, env, ReplyTo::Client(tok), ka, u);
            return;
        }
        // `Mcp-Method` is required on requests; a notification may come
        // without it (the TypeScript SDK 2.x sends none), but one that is
        // there must match the body.
        let header_ok = match (req.known(Known::McpMethod), method.as_deref()) {
            (Some(h), Some(m)) => h == m,
            (None, _) => env.kind() != Kind::Request,
            (Some(_), None) => false,
        };
        // `params` is read once for the name and for the envelope the
        // bridge strips.
        let name_header = req.known(Known::McpName);
        let fields = name_header.and_then(|_| era::param_fields(env));
        let name_ok = name_header.is_none_or(|name| name_matches(&fields, name));
        if !header_ok || !name_ok {
            self.respond_rpc_error(
                tok,
                400,
                -32020,
                "Bad Request: Mcp-Method / Mcp-Name headers do not match the body",
                ka,
            );
            return;
        }
        let (Kind::Request, Some(id)) = (env.kind(), env.id()) else {
            // A notification or response has no session to go to.
            self.respond(tok, 202, &[], b"", ka);
            return;
        };
        if self.shutdown.is_stopping() {
            self.respond(tok, 503, &[("retry-after", "1")], b"shutting down\n", false);
            return;
        }
        // The retry of a call waiting for input goes to that call's session.
        if self.era_retry(tok, u, token, &id, env, fields.as_ref(), ka) {
            return;
        }
        let skey = self.new_stateless_session(u, token);
        if self.ups[u].is_http() {
            self.http_keep_param_headers(skey, req.headers());
        }
        if let Some(c) = self.client(tok) {
            c.set_state(ClientState::Waiting(Exchange::single(
                skey,
                id.clone(),
                ka,
                None,
            )));
        }
        // Read once: granted at once, the request goes on as read here.
        let parsed = session::ReadMsg {
            bytes: body,
            env,
            meta: fields.as_ref().map(|f| f.meta.as_ref()),
        };
        // A shared process a lease would be granted at once is pinned
        // without the lease's queue, and the request is not copied.
        if self.pin_stateless(skey, &id, ReplyTo::Client(tok), parsed) {
            return;
        }
        self.lease_for_parsed(skey, body.to_vec(), id, ReplyTo::Client(tok), Some(parsed));
    }

    pub(super) fn forward_single(
        &mut self,
        tok: Token,
        skey: SKey,
        line: &[u8],
        env: &Envelope,
        ka: bool,
    ) {
        if let Some(s) = self.sessions.get_mut_inline(&skey) {
            s.last_active = self.now;
        }
        match env.kind() {
            Kind::Request => {
                let Some(id) = env.id() else { return };
                if !self.track(skey, id.clone(), env, ReplyTo::Client(tok)) {
                    let b = error_body(
                        Some(&id),
                        RelayError::DuplicateId,
                        "A request with this id is already in flight",
                        &self.ups[up_of(skey)].cfg.name,
                    );
                    self.respond_json(tok, 200, &b, ka, None);
                    return;
                }
                if let Some(c) = self.client(tok) {
                    c.set_state(ClientState::Waiting(Exchange::single(
                        skey,
                        id.clone(),
                        ka,
                        None,
                    )));
                }
                self.send_up(skey, line, env, Some(&id));
            }
            Kind::Notification | Kind::Response => {
                // MCP: notifications and responses are acknowledged with 202;
                // one the process's full queue cannot take gets 503.
                match self.send_up(skey, line, env, None) {
                    Sent::Done => {
                        self.respond(tok, 202, &[], b"", ka);
                        if env.method_is("notifications/cancelled") {
                            self.client_cancelled(skey, env);
                        }
                    }
                    Sent::Busy => self.respond_busy(tok, ka),
                }
            }
            Kind::Invalid => {
                self.respond_rpc_error(tok, 400, -32600, "Invalid Request", ka);
            }
        }
    }

    pub(super) fn get_mcp(&mut self, tok: Token, req: Request, token: Option<usize>, u: usize) {
        let ka = req.keep_alive;
        if req.known(Known::McpProtocolVersion) == Some(STATELESS_VERSION) {
            // 2026-07-28 has no GET stream.
            self.respond(tok, 405, &[("allow", "POST")], b"method not allowed\n", ka);
            return;
        }
        if !req.accepts("text/event-stream") {
            self.respond(tok, 406, &[], b"Accept must list text/event-stream\n", ka);
            return;
        }
        let Some(skey) = self.find_session(tok, &req, token, u) else {
            return;
        };
        let last: Option<u64> = req
            .known(Known::LastEventId)
            .and_then(|v| v.trim().parse().ok());
        // At most one GET stream per session: a new one replaces the old, so
        // re-subscribing after a network blip is idempotent.
        let old = self.sessions.get_mut(&skey).and_then(|s| s.stream.take());
        if let Some(old) = old {
            self.end_stream(old);
        }
        let mut out = Vec::new();
        http1::write_chunked_head(
            &mut out,
            200,
            &[
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
                ("x-accel-buffering", "no"),
            ],
            ka,
        );
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        s.stream = Some(tok);
        s.last_active = self.now;
        if let Some(last) = last {
            let (events, complete) = s.replay.since(last);
            if !complete {
                crate::log_info!(
                    "session {}: Last-Event-ID {last} is older than the replay buffer; some events are lost",
                    s.id
                );
            }
            for (id, data) in events {
                chunk_event(&mut out, Some(*id), None, data);
            }
        }
        let pending: Vec<Vec<u8>> = s.undelivered.drain(..).collect();
        for data in pending {
            let id = s.next_event;
            s.next_event += 1;
            chunk_event(&mut out, Some(id), None, &data);
            s.replay.push(id, data);
        }
        self.metrics.http_response(200);
        if let Some(c) = self.client(tok) {
            c.out.push_raw(&out);
            c.set_state(ClientState::Streaming { session: skey });
        }
        self.work.dirty.push(tok);
    }

    pub(super) fn delete_mcp(&mut self, tok: Token, req: Request, token: Option<usize>, u: usize) {
        let ka = req.keep_alive;
        if req.known(Known::McpProtocolVersion) == Some(STATELESS_VERSION) {
            self.respond(tok, 405, &[("allow", "POST")], b"method not allowed\n", ka);
            return;
        }
        let Some(skey) = self.find_session(tok, &req, token, u) else {
            return;
        };
        self.end_session(skey, "the client ended the session");
        self.respond(tok, 200, &[], b"", ka);
    }

    pub(super) fn legacy_open(&mut self, tok: Token, req: Request, token: Option<usize>, u: usize) {
        let ka = req.keep_alive;
        if self.shutdown.is_stopping() {
            self.respond(tok, 503, &[("retry-after", "1")], b"shutting down\n", false);
            return;
        }
        let Some(skey) = self.new_session(u, token, "2024-11-05", true) else {
            self.respond(tok, 500, &[], b"no session id\n", false);
            return;
        };
        let sid = self
            .sessions
            .get(&skey)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        // The session id also goes in a header (legacy clients ignore it) so
        // a load balancer can stick the session's POSTs to this relay.
        http1::write_chunked_head(
            &mut out,
            200,
            &[
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
                ("x-accel-buffering", "no"),
                ("mcp-session-id", sid.as_str()),
            ],
            ka,
        );
        let endpoint = if self.cfg.config.is_some() {
            format!("/messages/{}?session_id={sid}", self.ups[u].cfg.name)
        } else {
            format!("/messages?session_id={sid}")
        };
        let mut ev = Vec::new();
        sse::write_event(&mut ev, None, Some("endpoint"), endpoint.as_bytes());
        http1::write_chunk(&mut out, &ev);
        self.metrics.http_response(200);
        if let Some(s) = self.sessions.get_mut(&skey) {
            s.stream = Some(tok);
        }
        if let Some(c) = self.client(tok) {
            c.out.push_raw(&out);
            c.set_state(ClientState::Streaming { session: skey });
        }
        self.work.dirty.push(tok);
    }

    pub(super) fn legacy_post(&mut self, tok: Token, req: Request, token: Option<usize>, u: usize) {
        let ka = req.keep_alive;
        let skey = req
            .query_param("session_id")
            .and_then(|sid| self.by_id.get(&sid).copied())
            .filter(|k| {
                up_of(*k) == u
                    && self
                        .sessions
                        .get(k)
                        .is_some_and(|s| s.legacy && s.token == token)
            });
        let Some(skey) = skey else {
            self.respond(tok, 404, &[], b"unknown session\n", ka);
            return;
        };
        let body = req.body.as_slice();
        let env = match jsonrpc::peek(body) {
            // Not one with a member the relay reads written twice
            // (`proto::unique`).
            Ok(Message::Single(env)) if env.ambiguous.is_none() => env,
            Ok(_) | Err(_) => {
                self.respond(tok, 400, &[], b"expected one JSON-RPC message\n", ka);
                return;
            }
        };
        // Legacy transport: POSTs are accepted with 202; answers travel on
        // the session's SSE stream (a request the process's full queue
        // cannot take too: `upstream_busy`). Only a notification or
        // response that cannot be queued gets 503.
        if let Some(s) = self.sessions.get_mut(&skey) {
            s.last_active = self.now;
        }
        if env.kind() == Kind::Request && env.method_is("initialize") {
            self.respond(tok, 202, &[], b"", ka);
            if let Some(v) = env.param_str("protocolVersion")
                && let Some(s) = self.sessions.get_mut(&skey)
            {
                s.version = v;
            }
            let Some(id) = env.id() else { return };
            self.lease_for(skey, body.to_vec(), id, ReplyTo::Stream);
            return;
        }
        if env.kind() == Kind::Invalid {
            // Never forwarded (issue 11, class 10).
            let b = error_body(
                None,
                RelayError::InvalidRequest,
                "Invalid Request",
                &self.ups[up_of(skey)].cfg.name,
            );
            self.push_to_stream(skey, b);
            return;
        }
        if let (Kind::Request, Some(id)) = (env.kind(), env.id()) {
            self.respond(tok, 202, &[], b"", ka);
            if !self.track(skey, id.clone(), &env, ReplyTo::Stream) {
                let b = error_body(
                    Some(&id),
                    RelayError::DuplicateId,
                    "A request with this id is already in flight",
                    &self.ups[up_of(skey)].cfg.name,
                );
                self.push_to_stream(skey, b);
                return;
            }
            self.send_up(skey, body, &env, Some(&id));
        } else {
            match self.send_up(skey, body, &env, None) {
                Sent::Done => self.respond(tok, 202, &[], b"", ka),
                Sent::Busy => self.respond_busy(tok, ka),
            }
        }
    }

    /// 503 with Retry-After for a client message the process's full stdin
    /// queue cannot take (`proc_queue_room`).
    pub(super) fn respond_busy(&mut self, tok: Token, ka: bool) {
        self.respond(
            tok,
            503,
            &[("retry-after", "1")],
            b"the server is not reading its input; retry later\n",
            ka,
        );
    }
}

/// Whether `origin` (`http://HOST[:PORT]`, or `https://` on a TLS
/// listener) names the address a connection was accepted on. HOST must be
/// that IP address, or `localhost` for a loopback address: a name that
/// merely resolves to it (DNS rebinding) is not the relay's origin.
fn same_origin_on(origin: &str, local: std::net::SocketAddr, tls: bool) -> bool {
    let (scheme, default_port) = if tls {
        ("https://", 443)
    } else {
        ("http://", 80)
    };
    let Some(authority) = origin.strip_prefix(scheme) else {
        return false;
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) => return false,
        },
        _ => (authority, default_port),
    };
    if port != local.port() {
        return false;
    }
    let ip = local.ip().to_canonical();
    if host.eq_ignore_ascii_case("localhost") {
        return ip.is_loopback();
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|h| h.to_canonical() == ip)
}

#[cfg(test)]
mod tests {
    use super::same_origin_on;

    fn same_origin(origin: &str, local: std::net::SocketAddr) -> bool {
        same_origin_on(origin, local, false)
    }

    #[test]
    fn same_origin_is_the_address_the_client_connected_to() {
        let v4 = "127.0.0.1:8080".parse().expect("addr");
        assert!(same_origin("http://127.0.0.1:8080", v4));
        assert!(same_origin("http://localhost:8080", v4));
        assert!(same_origin("http://LOCALHOST:8080", v4));
        assert!(!same_origin("http://127.0.0.1:8081", v4), "another port");
        assert!(!same_origin("https://127.0.0.1:8080", v4), "another scheme");
        assert!(
            !same_origin("http://127.0.0.1", v4),
            "port 80 is another port"
        );
        assert!(
            !same_origin("http://evil.example:8080", v4),
            "a rebound name"
        );
        assert!(!same_origin("http://127.0.0.2:8080", v4));
        assert!(!same_origin("null", v4));
        assert!(!same_origin("http://127.0.0.1:80x", v4));
        let port80 = "10.1.2.3:80".parse().expect("addr");
        assert!(same_origin("http://10.1.2.3", port80));
        assert!(!same_origin("http://localhost", port80), "not loopback");
        let v6 = "[::1]:9000".parse().expect("addr");
        assert!(same_origin("http://[::1]:9000", v6));
        assert!(same_origin("http://localhost:9000", v6));
        assert!(!same_origin("http://[::2]:9000", v6));
        let mapped = "[::ffff:127.0.0.1]:7000".parse().expect("addr");
        assert!(same_origin("http://127.0.0.1:7000", mapped));
    }

    #[test]
    fn on_a_tls_listener_the_origin_is_https() {
        let tls = true;
        let v4 = "127.0.0.1:8443".parse().expect("addr");
        assert!(same_origin_on("https://127.0.0.1:8443", v4, tls));
        assert!(same_origin_on("https://localhost:8443", v4, tls));
        assert!(!same_origin_on("http://127.0.0.1:8443", v4, tls), "scheme");
        assert!(!same_origin_on("https://127.0.0.1:8444", v4, tls));
        let port443 = "10.1.2.3:443".parse().expect("addr");
        assert!(same_origin_on("https://10.1.2.3", port443, tls));
        assert!(!same_origin_on("https://10.1.2.3", port443, false));
        assert!(!same_origin_on("http://10.1.2.3:443", port443, tls));
    }
}

/// Whether an `Mcp-Name` header names what the body's `params` does
/// (`name`, else `uri`). A value that is not plain ASCII comes as
/// `=?base64?…?=`; a malformed one matches nothing. The common case, a
/// plain header and a name without escapes, is compared as it stands,
/// without decoding either side into a new string.
fn name_matches(fields: &Option<era::ParamFields>, header: &str) -> bool {
    let raw = fields.as_ref().and_then(|f| f.name.or(f.uri));
    let plain = raw
        .and_then(|t| t.strip_prefix('"')?.strip_suffix('"'))
        .filter(|inner| !inner.contains('\\'));
    if let Some(inner) = plain
        && !header.starts_with("=?")
    {
        return inner == header;
    }
    let expected = era::named(fields);
    let decoded = crate::mcp::era::classify::decode_header_value(header);
    expected.is_some() && expected == decoded
}

#[cfg(test)]
mod name_tests {
    use super::*;
    use serde_json::value::RawValue;

    fn check(params: &str, header: &str) -> bool {
        let raw: &RawValue = serde_json::from_str(params).unwrap();
        let fields = crate::mcp::shared::scan_params(raw.get());
        name_matches(&fields, header)
    }

    #[test]
    fn mcp_name_is_matched_plain_escaped_or_base64() {
        assert!(check(r#"{"name":"echo"}"#, "echo"));
        assert!(!check(r#"{"name":"echo"}"#, "echoes"));
        assert!(check(r#"{"uri":"file:///a"}"#, "file:///a"));
        assert!(check(r#"{"name":"a","uri":"b"}"#, "a"));
        // Escapes in the body are decoded before comparing.
        assert!(check(r#"{"name":"\u0065cho"}"#, "echo"));
        assert!(!check(r#"{"name":"\u0065cho"}"#, "\\u0065cho"));
        // A non-ASCII name comes base64-encoded ("é" is w6k=).
        assert!(check(r#"{"name":"\u00e9"}"#, "=?base64?w6k=?="));
        assert!(check(r#"{"name":"é"}"#, "=?base64?w6k=?="));
        assert!(!check(r#"{"name":"é"}"#, "=?base64?w6k?="));
        // A name that is no string, or none at all, matches nothing.
        assert!(!check(r#"{"name":7}"#, "7"));
        assert!(!check(r#"{}"#, "echo"));
        assert!(check(r#"{"name":""}"#, "=?base64??="));
    }
}
