//! `forward --url` across protocol eras (docs/eras.md).
//!
//! - A modern client (its requests carry the `_meta` envelope) in front of a
//!   modern server passes: each request is POSTed with the headers derived
//!   from its body (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`), no
//!   session id, no GET stream; the host's `notifications/cancelled` for
//!   such a request ends its exchange (closing the response stream is the
//!   modern cancellation) and is not sent on.
//! - The era link (`mcp::era::link`, as in `forward -- CMD`) decides the
//!   server's era for a modern client (the client's `server/discover` is the
//!   probe, or the relay's own) and bridges it to a handshake-era server:
//!   the relay's own `initialize` is POSTed like the client's would be (the
//!   session id it brings back is kept, the GET stream follows the relay's
//!   `notifications/initialized`).
//! - A handshake-era client in front of a modern-only server
//!   (`--upstream-protocol modern`, or `auto` once the server refused the
//!   client's `initialize` with 400; 404 and 405 mean no POST endpoint at
//!   all, a 2024-11-05 server, and go straight to legacy HTTP+SSE): `mcp::era::stamper` answers
//!   `initialize` from the server's `server/discover` and stamps the
//!   requests. Under `auto`, a server that does not answer discover as a
//!   modern one is tried as legacy HTTP+SSE, as before.

use super::*;
use crate::mcp::era::UpstreamProtocol;
use crate::mcp::era::stamper::{Stamped, Stamper};
use crate::proto::jsonrpc::{Kind, Message};

impl Forward {
    /// The HTTP side's look at a client message before the era link's:
    /// true when it took the message.
    pub(in crate::front::forward) fn http_era_client(
        &mut self,
        line: &[u8],
        env: &jsonrpc::Envelope,
        id: Option<&Id>,
    ) -> bool {
        let method = env.method();
        if id.is_none()
            && env.method_is("notifications/cancelled")
            && let Some(cancelled) = env.param_id("requestId")
            && self.http_cancel_modern(&cancelled)
        {
            self.untrack(&cancelled);
            return true;
        }
        let knob = self.cfg.upstream_protocol;
        let name = self.cfg.name.clone();
        let Some(h) = self.http() else { return false };
        let params = env.params.map(|p| p.get());
        let refused = h.stamper.refused;
        let subs_refused = h.stamper.subs_refused;
        let d = if h.stamper.active() {
            h.stamper.on_client(line, method.as_deref(), params, id)
        } else if knob == UpstreamProtocol::Modern
            && h.stamper.state() == &crate::mcp::era::stamper::StamperState::Off
            && let (Some(id), true) = (id, env.method_is("initialize"))
        {
            crate::log_info!(
                "[{name}] --upstream-protocol modern: answering the client's initialize \
                 from the server's server/discover"
            );
            h.stamper.begin(id, params)
        } else {
            return false;
        };
        self.http_stamped(d, id, refused);
        let now_refused = self.http().map_or(0, |h| h.stamper.subs_refused);
        if now_refused > subs_refused && now_refused.is_power_of_two() {
            crate::log_warn!(
                "[{name}] {now_refused} resources/subscribe refused: the client already has {} \
                 subscriptions",
                crate::mcp::era::stamper::MAX_SUBSCRIPTIONS
            );
        }
        true
    }

    /// Carries out the stamper's decision; `refused` is its refusal count
    /// before it decided (for the rate-limited log line).
    fn http_stamped(&mut self, d: Stamped, id: Option<&Id>, refused: u64) {
        match d {
            Stamped::Pass => {
                // Not taken after all (cannot happen while active).
            }
            Stamped::Send(bytes, _) => {
                self.record(Direction::ClientToServer, &bytes);
                self.http_post_now(&bytes, id.cloned());
            }
            Stamped::SendOwn(bytes, _) => {
                self.record(Direction::RelayToServer, &bytes);
                let own = Id::Str(crate::mcp::era::stamper::DISCOVER_ID.into());
                self.http_post_now(&bytes, Some(own));
            }
            Stamped::Held | Stamped::Drop => {}
            Stamped::Answer(a) => {
                if let Some(id) = id {
                    self.untrack(id);
                }
                self.send_to_client(Direction::RelayToClient, &a);
            }
            Stamped::Listen {
                answer,
                close,
                open,
            } => {
                if let Some(id) = id {
                    self.untrack(id);
                }
                self.send_to_client(Direction::RelayToClient, &answer);
                // Closing a listen's response stream ends it (2026-07-28).
                if let Some(old) = close {
                    self.http_cancel_modern(&old);
                }
                if let Some((lid, bytes, headers)) = open {
                    self.record(Direction::RelayToServer, &bytes);
                    self.http_post_listen(&bytes, headers, lid);
                }
            }
            Stamped::Input(out) => self.http_stamper_out(out),
        }
        let now_refused = self.http().map_or(0, |h| h.stamper.refused);
        if now_refused > refused && now_refused.is_power_of_two() {
            crate::log_warn!(
                "[{}] {now_refused} client message(s) refused while asking the server for \
                 server/discover (hold full: {} messages)",
                self.cfg.name,
                crate::mcp::era::link::HOLD_CAP
            );
        }
    }

    /// Carries out an input round of the server's (`stamper_input`): the
    /// relay's requests to the host, the call's retry (stamped already, its
    /// headers derived from the body), or its answer by the relay.
    fn http_stamper_out(&mut self, out: crate::mcp::era::stamper_input::Out) {
        let failed_before = self.http().map_or(0, |h| {
            h.stamper.input.stats.refused + h.stamper.input.stats.expired
        });
        for line in &out.to_client {
            self.send_to_client(Direction::RelayToClient, line);
        }
        if let Some((id, line)) = out.retry {
            self.record(Direction::ClientToServer, &line);
            self.http_post_now(&line, Some(id));
        }
        if let Some((id, line)) = out.answer
            && self.untrack(&id).is_some()
        {
            self.send_to_client(Direction::RelayToClient, &line);
        }
        self.http_input_count(failed_before);
    }

    /// A warning when calls' input rounds were refused or expired (at
    /// powers of two of the running count: forward has no metrics page).
    fn http_input_count(&mut self, failed_before: u64) {
        let name = self.cfg.name.clone();
        let Some(h) = self.http() else { return };
        let stats = h.stamper.input.stats;
        let failed = stats.refused + stats.expired;
        if failed > failed_before && failed.is_power_of_two() {
            crate::log_warn!(
                "[{name}] {failed} call(s) whose input requests were not carried to the client \
                 ({} refused: capability not declared or over a bound; {} not answered in time)",
                stats.refused,
                stats.expired
            );
        }
    }

    /// Rounds the host did not answer in time (from `http_poll`).
    pub(in crate::front::forward) fn http_input_expire(&mut self) {
        let now = self.now;
        let Some(h) = self.http() else { return };
        if h.stamper.input.next_deadline().is_none_or(|d| d > now) {
            return;
        }
        for out in h.stamper.input.expire(now) {
            self.http_stamper_out(out);
        }
    }

    /// POSTs a message now (no phase hold: the era pieces hold themselves).
    fn http_post_now(&mut self, line: &[u8], request: Option<Id>) {
        let Some(h) = self.http() else { return };
        let target = h.url.target.clone();
        let initialize = request.is_some() && is_method(line, "initialize");
        self.post(target, line, request, initialize);
    }

    /// One of the era link's own messages (probe, `initialize`,
    /// `notifications/initialized`, answers to the server) for the HTTP
    /// upstream. Its requests carry their own ids; their answers come back
    /// through `http_era_response`.
    pub(in crate::front::forward) fn http_send_own(&mut self, line: &[u8]) {
        let request = match jsonrpc::peek(line) {
            Ok(Message::Single(env)) if env.kind() == Kind::Request => env.id(),
            _ => None,
        };
        self.http_send(line, request);
    }

    /// The relay's own `subscriptions/listen` for the client's
    /// subscriptions: a long-lived POST (no response timeout), closed to end
    /// it.
    fn http_post_listen(&mut self, line: &[u8], headers: Vec<(String, String)>, lid: Id) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return;
        };
        let mut hs = h.headers(false);
        hs.retain(|(k, _)| k != "mcp-session-id" && k != "mcp-protocol-version");
        hs.extend(headers);
        let req = Request {
            method: "POST",
            target: h.url.target.clone(),
            headers: hs,
            body: line.to_vec(),
            stream: true,
        };
        let ex = h.client.submit(req, reg, now);
        h.by_request.insert(lid.clone(), ex);
        h.carries.insert(
            ex,
            Carry::Post {
                request: Some(lid),
                initialize: false,
                modern: true,
            },
        );
    }

    /// A response from the HTTP upstream: true when it answered one of the
    /// relay's own era requests (it is then not delivered as it is).
    pub(in crate::front::forward) fn http_era_response(&mut self, id: &Id, line: &[u8]) -> bool {
        if Stamper::is_own_listen(id) {
            // The server ended the relay's listen (or refused it).
            crate::log_debug!(
                "[{}] the server ended the relay's subscriptions/listen {id}",
                self.cfg.name
            );
            return true;
        }
        if Stamper::is_own(id) {
            self.http_discovered(line);
            return true;
        }
        let now = self.now;
        if let Some(out) = self.http().and_then(|h| h.stamper.on_result(id, line, now)) {
            self.http_stamper_out(out);
            return true;
        }
        if self.era.passes() {
            return false;
        }
        match self.era.on_server_response(id, line, self.now) {
            Some(c) => {
                self.era_apply(c);
                true
            }
            None => false,
        }
    }

    /// The answer to the stamper's `server/discover`.
    fn http_discovered(&mut self, line: &[u8]) {
        let name = self.cfg.name.clone();
        let Some(h) = self.http() else { return };
        let legacy_next = h.legacy_after_discover.take();
        let d = h.stamper.on_discover(line);
        let stamping = h.stamper.stamping();
        match (stamping, legacy_next) {
            (true, _) => {
                crate::log_info!(
                    "[{name}] the upstream is a 2026-07-28 server: stamping the handshake-era \
                     client's requests"
                );
                if let Some((id, a)) = d.answer
                    && self.untrack(&id).is_some()
                {
                    self.send_to_client(Direction::RelayToClient, &a);
                }
            }
            (false, Some(init_id)) => {
                crate::log_info!(
                    "[{name}] initialize refused and server/discover not answered as a \
                     2026-07-28 server; trying the legacy HTTP+SSE transport"
                );
                self.start_legacy(None, Some(init_id));
            }
            (false, None) => {
                crate::log_warn!("[{name}] server/discover failed: the client's initialize fails");
                if let Some((id, a)) = d.answer
                    && self.untrack(&id).is_some()
                {
                    self.send_to_client(Direction::ServerToClient, &a);
                }
            }
        }
        self.http_reroute(d.released);
    }

    /// Held client messages, routed again in order (a request answered or
    /// timed out meanwhile is not sent).
    fn http_reroute(&mut self, lines: Vec<Vec<u8>>) {
        for line in lines {
            let Ok(Message::Single(env)) = jsonrpc::peek(&line) else {
                continue;
            };
            let id = (env.kind() == Kind::Request).then(|| env.id()).flatten();
            if let Some(id) = &id
                && !self.pending.contains(id)
            {
                continue;
            }
            if !self.era_client(&line, &env, id.as_ref()) {
                self.send_to_server(&line, id);
            }
        }
    }

    /// `auto`: the client's `initialize` (request `id`) was refused with
    /// 400, which may mean a modern-only server: ask `server/discover`
    /// before trying legacy HTTP+SSE. False: the stamper already ran.
    pub(super) fn http_discover_after_refusal(&mut self, ex: ExId, id: &Id) -> bool {
        let init = self.cached_initialize.clone();
        let knob = self.cfg.upstream_protocol;
        let Some(h) = self.http() else { return false };
        if knob != UpstreamProtocol::Auto
            || h.stamper.state() != &crate::mcp::era::stamper::StamperState::Off
        {
            return false;
        }
        let params = init.as_deref().and_then(|l| match jsonrpc::peek(l) {
            Ok(Message::Single(env)) => env.params.map(|p| p.get().to_string()),
            _ => None,
        });
        let d = h.stamper.begin(id, params.as_deref());
        h.legacy_after_discover = Some(id.clone());
        // What waited behind the refused initialize waits for discover.
        let held = h.set_phase(Phase::Ready);
        for (line, _) in held {
            if let Ok(Message::Single(env)) = jsonrpc::peek(&line) {
                let rid = (env.kind() == Kind::Request).then(|| env.id()).flatten();
                let m = env.method();
                let p = env.params.map(|p| p.get());
                let _ = h.stamper.on_client(&line, m.as_deref(), p, rid.as_ref());
            }
        }
        self.forget(ex);
        crate::log_info!(
            "[{}] initialize refused; asking server/discover in case it is a 2026-07-28 server",
            self.cfg.name
        );
        self.http_stamped(d, Some(id), 0);
        true
    }

    /// The host cancelled `id`: when it went out as a modern request, its
    /// exchange is ended (the modern cancellation). True: done so.
    fn http_cancel_modern(&mut self, id: &Id) -> bool {
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return false;
        };
        let Some(&ex) = h.by_request.get(id) else {
            return false;
        };
        if !matches!(h.carries.get(&ex), Some(Carry::Post { modern: true, .. })) {
            return false;
        }
        h.client.cancel(ex, reg);
        h.carries.remove(&ex);
        h.by_request.remove(id);
        crate::log_debug!(
            "[{}] request {id} cancelled by the client: its 2026-07-28 exchange is closed",
            self.cfg.name
        );
        true
    }
}
