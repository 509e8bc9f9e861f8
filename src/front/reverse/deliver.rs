//! Messages from upstreams to clients: replies completing requests,
//! progress, and everything else to the session's stream.

use super::*;
use crate::mcp::shared::splice;
use crate::proto::jsonrpc::BatchItem;

impl Reverse {
    /// A reply (or relay error) for request `id` of session `skey`. A
    /// stateless (2026-07-28) session ends with its one answer: it is
    /// queued for the end of the turn, where the loop ends it.
    pub(super) fn deliver(&mut self, skey: SKey, reply_to: ReplyTo, id: &Id, msg: Vec<u8>) {
        // An answer is activity: the session's idle clock starts over.
        if let Some(s) = self.sessions.get_mut_inline(&skey) {
            s.last_active = self.now;
        }
        self.deliver_to(skey, reply_to, id, msg);
        if self
            .sessions
            .get(&skey)
            .is_some_and(|s| s.stateless && s.inflight.is_empty())
            && !self.era_waiting_input(skey)
        {
            self.work.to_end.push(skey);
        }
    }

    pub(super) fn deliver_to(&mut self, skey: SKey, reply_to: ReplyTo, id: &Id, msg: Vec<u8>) {
        let tok = match reply_to {
            ReplyTo::Stream => {
                self.push_to_stream(skey, msg);
                return;
            }
            ReplyTo::Client(tok) => tok,
        };
        let Some(c) = client_in(&mut self.endpoints, tok) else {
            crate::log_debug!("reply to {id} dropped: its connection is gone");
            return;
        };
        let ClientState::Waiting(ex) = &mut c.state else {
            return;
        };
        if ex.session != skey {
            return;
        }
        let Some(pos) = ex.expect.iter().position(|x| x == id) else {
            return;
        };
        ex.expect.swap_remove(pos);
        let done = ex.expect.is_empty();
        let ka = ex.keep_alive;
        if ex.sse {
            let ev_id = self.sessions.get_mut(&skey).map(|s| {
                s.next_event += 1;
                s.next_event - 1
            });
            chunk_event_into(&mut c.out, ev_id, &msg);
            if done {
                c.end_stream(ka, self.now);
                self.work.to_drive.push(tok);
            }
            self.work.dirty.push(tok);
            return;
        }
        if ex.batch {
            ex.replies.push(msg);
            if done {
                let replies = std::mem::take(&mut ex.replies);
                let mut body = b"[".to_vec();
                for (i, r) in replies.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(r);
                }
                body.push(b']');
                self.respond_json(tok, 200, &body, ka, None);
            }
            return;
        }
        let header = ex.session_header.take();
        self.respond_json(tok, 200, &msg, ka, header.as_deref());
    }

    /// Turns a waiting POST into an SSE stream (MCP: the server may send
    /// related messages before the reply).
    pub(super) fn upgrade_to_sse(&mut self, tok: Token) -> bool {
        let Some(c) = self.client(tok) else {
            return false;
        };
        let ClientState::Waiting(ex) = &mut c.state else {
            return false;
        };
        if !ex.sse {
            ex.sse = true;
            let mut headers = vec![
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
                ("x-accel-buffering", "no"),
            ];
            let sid = ex.session_header.take();
            if let Some(s) = &sid {
                headers.push(("mcp-session-id", s.as_str()));
            }
            let mut out = Vec::new();
            http1::write_chunked_head(&mut out, 200, &headers, ex.keep_alive);
            c.out.push_raw(&out);
            self.metrics.http_response(200);
        }
        true
    }

    /// A server-initiated message for a session: its stream if open, else an
    /// open POST of the session (upgraded to SSE), else kept for its next GET.
    pub(super) fn push_to_stream(&mut self, skey: SKey, msg: Vec<u8>) {
        // A modern client gets list-changed and updated notifications on
        // its listen only (`era/listening.rs`).
        let Some(msg) = self.era_push(skey, msg) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        if let Some(tok) = s.stream {
            let legacy = s.legacy;
            let ev_id = s.next_event;
            s.next_event += 1;
            if !legacy {
                s.replay.push(ev_id, msg.clone());
            }
            if let Some(c) = self.client(tok) {
                let mut ev = Vec::new();
                if legacy {
                    sse::write_event(&mut ev, None, Some("message"), &msg);
                } else {
                    sse::write_event(&mut ev, Some(&ev_id.to_string()), None, &msg);
                }
                let mut out = Vec::new();
                http1::write_chunk(&mut out, &ev);
                c.out.push_raw(&out);
                self.work.dirty.push(tok);
                return;
            }
        }
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        let post = s
            .inflight
            .iter()
            .filter_map(|(_, r)| match r.route {
                ReplyTo::Client(t) => Some((r.started, t)),
                ReplyTo::Stream => None,
            })
            .max_by_key(|(started, _)| *started)
            .map(|(_, t)| t);
        if let Some(tok) = post
            && self.event_on_post(skey, tok, &msg)
        {
            return;
        }
        let Some(s) = self.sessions.get_mut(&skey) else {
            return;
        };
        if s.undelivered.len() >= UNDELIVERED_MAX {
            s.undelivered.pop_front();
            crate::log_warn!(
                "session {}: no stream to deliver to; oldest kept message dropped",
                s.id
            );
        }
        s.undelivered.push_back(msg);
    }

    /// Progress for one of a session's requests: to the request's own stream,
    /// restarting its response timeout (MCP: progress shows it is alive).
    pub(super) fn on_progress(&mut self, skey: SKey, token: Option<Id>, msg: Vec<u8>) {
        let target = token.and_then(|t| {
            let s = self.sessions.get(&skey)?;
            let (id, r) = s.inflight.by_progress(&t)?;
            Some((id.clone(), r.route))
        });
        let Some((id, reply_to)) = target else {
            self.push_to_stream(skey, msg);
            return;
        };
        self.arm_response_timer(skey, &id);
        let sent = match reply_to {
            ReplyTo::Client(tok) => self.event_on_post(skey, tok, &msg),
            ReplyTo::Stream => false,
        };
        if !sent {
            self.push_to_stream(skey, msg);
        }
    }

    /// Sends `msg` as an event on the POST response that connection `tok`
    /// is waiting on, turning it into an SSE stream first; false if that
    /// response cannot carry it.
    pub(super) fn event_on_post(&mut self, skey: SKey, tok: Token, msg: &[u8]) -> bool {
        if !self.upgrade_to_sse(tok) {
            return false;
        }
        let ev_id = self.sessions.get_mut(&skey).map(|s| {
            s.next_event += 1;
            s.next_event - 1
        });
        if let Some(c) = self.client(tok) {
            chunk_event_into(&mut c.out, ev_id, msg);
            self.work.dirty.push(tok);
        }
        true
    }

    /// A message from the upstream of one session (its own process, or its
    /// HTTP upstream session): replies complete requests, progress goes to
    /// the request's stream, anything else to the session's stream.
    pub(super) fn on_session_line(&mut self, skey: SKey, line: &[u8]) {
        let u = up_of(skey);
        match jsonrpc::peek(line) {
            Ok(Message::Single(env)) => match env.kind() {
                Kind::Response => {
                    if let (Some(id), Some(raw)) = (env.id(), env.id) {
                        let msg = self.spelled_reply(skey, &id, line, raw);
                        self.complete(skey, &id, msg);
                    }
                }
                Kind::Notification if env.method_is("notifications/progress") => {
                    let token = env.param_id("progressToken");
                    self.on_progress(skey, token, line.to_vec());
                }
                Kind::Request if self.era_server_request(skey, line) => {}
                Kind::Notification | Kind::Request => self.push_to_stream(skey, line.to_vec()),
                Kind::Invalid => crate::log_warn!(
                    "[{}] upstream message that is not JSON-RPC dropped",
                    self.ups[u].cfg.name
                ),
            },
            Ok(Message::Batch(_)) => self.on_batch_down(skey, line),
            Err(e) => {
                let shown = crate::logging::Escaped::new(line);
                crate::log_warn!(
                    "[{}] invalid upstream message dropped ({e}): {shown}",
                    self.ups[u].cfg.name
                );
                // A reply that is not a valid message still answers its
                // request, with an error.
                if let Some(id) = jsonrpc::recover_id(line, line) {
                    self.fail_request(
                        skey,
                        &id,
                        RelayError::InvalidReply,
                        "The server's reply is not a valid JSON-RPC message (not UTF-8 or not JSON)",
                        json!({}),
                    );
                }
            }
        }
    }

    /// A batch from a session's upstream, element by element. An empty
    /// batch, a nested array or an element that is no object goes nowhere
    /// (counted, logged at debug); a reply found inside a nested array
    /// answers its request with `invalid_reply` now (issue 11, class 13).
    pub(super) fn on_batch_down(&mut self, skey: SKey, line: &[u8]) {
        let Ok(Message::Batch(items)) = jsonrpc::peek(line) else {
            return;
        };
        let u = up_of(skey);
        if items.is_empty() {
            self.dropped(u, Dropped::BatchEmpty);
        }
        for raw in items {
            let base = raw.get().as_bytes();
            match jsonrpc::batch_item(raw) {
                BatchItem::Msg(env) if env.kind() == Kind::Response => {
                    if let (Some(id), Some(raw_id)) = (env.id(), env.id) {
                        let msg = self.spelled_reply(skey, &id, base, raw_id);
                        self.complete(skey, &id, msg);
                    }
                }
                BatchItem::Msg(env) if env.kind() == Kind::Invalid => {
                    self.dropped(u, Dropped::BatchInvalidItem);
                }
                BatchItem::Msg(_) => self.push_to_stream(skey, base.to_vec()),
                BatchItem::Nested(ids) => {
                    self.dropped(u, Dropped::BatchNested);
                    for id in ids {
                        self.fail_request(
                            skey,
                            &id,
                            RelayError::InvalidReply,
                            "The server's reply came inside a nested batch, which JSON-RPC \
                             does not allow",
                            json!({}),
                        );
                    }
                }
                BatchItem::Invalid => self.dropped(u, Dropped::BatchInvalidItem),
            }
        }
    }

    /// A reply with its id as the client wrote it: a server may re-spell a
    /// numeric id (`1e0` → `1.0`), which still names the request (ids
    /// match by value) but is not what the client sent (issue 11, class
    /// 13). `raw` is the reply's id, borrowed from `line`.
    pub(super) fn spelled_reply(
        &self,
        skey: SKey,
        id: &Id,
        line: &[u8],
        raw: crate::proto::jsonrpc::Raw<'_>,
    ) -> Vec<u8> {
        let spelling = self
            .sessions
            .get(&skey)
            .and_then(|s| s.inflight.get(id))
            .and_then(|r| r.respelling(id, raw.get()));
        match spelling {
            Some(text) => {
                splice(line, &mut [(raw, text.as_bytes())]).unwrap_or_else(|| line.to_vec())
            }
            None => line.to_vec(),
        }
    }

    /// A message dropped instead of passed on: counted
    /// (`mcp_relay_messages_dropped_total{reason}`) and logged at debug,
    /// at most `ratelog::LINES_PER_SEC` lines a second with the number
    /// suppressed in between.
    pub(super) fn dropped(&mut self, u: usize, why: Dropped) {
        self.metrics.message_dropped(why.reason());
        if let Some(suppressed) = self.drop_log.check(self.now) {
            crate::log_debug!(
                "[{}] message dropped: {}{}",
                self.ups[u].cfg.name,
                why.reason(),
                if suppressed > 0 {
                    format!(" ({suppressed} similar lines suppressed)")
                } else {
                    String::new()
                }
            );
        }
    }

    /// The process replied to request `id` of session `skey`.
    pub(super) fn complete(&mut self, skey: SKey, id: &Id, msg: Vec<u8>) {
        self.complete_as(skey, id, msg, false);
    }

    /// [`complete`](Self::complete); `modern`: the shared mux made a
    /// bridged reply modern already (`Down::Reply::modern`), so it is not
    /// read again for that (a call in an input round or a listen's own
    /// request is taken by the era code first: stamping is idempotent).
    pub(super) fn complete_as(&mut self, skey: SKey, id: &Id, msg: Vec<u8>, modern: bool) {
        if self.era_call_result(skey, id, &msg) || self.stamped_input_result(skey, id, &msg) {
            return;
        }
        let Some(req) = self.untrack(skey, id) else {
            // Cancelled by the client, timed out, or never this session's.
            self.dropped(up_of(skey), Dropped::LateReply);
            return;
        };
        let Some((req, msg)) = self.tools_reply(skey, id, req, msg) else {
            return;
        };
        self.metrics
            .request_done("ok", self.now.duration_since(req.started).as_secs_f64());
        let msg = if modern {
            msg
        } else {
            self.era_reply(skey, msg)
        };
        self.deliver(skey, req.route, id, msg);
    }
}
