//! `reverse --url` across protocol eras (docs/eras.md).
//!
//! - 2026-07-28 POSTs (stateless sessions) go to the upstream with the
//!   headers derived from the body (`mcp::era::stamper::modern_headers`:
//!   `MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name` encoded when not plain
//!   ASCII) and the client's own `Mcp-Param-*` headers as they came (kept per
//!   stateless session until its one POST goes, at most
//!   [`MAX_PARAM_HEADERS`] of them), never a session id.
//! - A handshake-era client session in front of a modern-only upstream
//!   (`--upstream-protocol modern`, or `auto` once the upstream refused the
//!   client's `initialize` with 400): the session's `mcp::era::stamper`
//!   answers `initialize` from the upstream's `server/discover` and stamps
//!   the session's requests; the session has no upstream session id, so no
//!   GET stream and no DELETE.

use super::*;
use crate::mcp::era::UpstreamProtocol;
use crate::mcp::era::classify::is_param_header;
use crate::mcp::era::stamper::{DISCOVER_ID, Stamped, Stamper};
use crate::proto::jsonrpc::{Kind, Message};

/// `Mcp-Param-*` headers kept for one stateless request; more are dropped
/// (the upstream then refuses the request if it needed them), counted in
/// `mcp_relay_http_limits_total{limit="param_headers"}` and logged.
pub(super) const MAX_PARAM_HEADERS: usize = 64;

impl Reverse {
    /// A 2026-07-28 client request's `Mcp-Param-*` headers, kept for its
    /// stateless session's POST upstream.
    pub(in crate::front::reverse) fn http_keep_param_headers<'h>(
        &mut self,
        skey: SKey,
        headers: impl Iterator<Item = (&'h str, &'h str)>,
    ) {
        let u = up_of(skey);
        let mut kept: Vec<(String, String)> = headers
            .filter(|(k, _)| is_param_header(k))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if kept.is_empty() {
            return;
        }
        let over = kept.len().saturating_sub(MAX_PARAM_HEADERS);
        kept.truncate(MAX_PARAM_HEADERS);
        let now = self.now;
        let metric = self.ups[u].metric;
        let name = self.ups[u].cfg.name.clone();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        h.param_headers.insert(skey, kept);
        if over > 0 {
            let line = h.param_log.hit(now, 1);
            self.metrics.http_limit(metric, "param_headers", 1);
            if let Some(more) = line {
                crate::log_warn!(
                    "[{name}] a request had more than {MAX_PARAM_HEADERS} Mcp-Param-* headers; \
                     {over} dropped ({more} more requests since the last line)"
                );
            }
        }
    }

    /// The client's `initialize` of session `skey` toward an upstream
    /// configured modern: the stamper asks `server/discover` instead.
    /// False: the upstream gets the `initialize`.
    pub(super) fn http_start_stamped(&mut self, skey: SKey, line: &[u8], id: &Id) -> bool {
        let u = up_of(skey);
        match self.ups[u].cfg.upstream_protocol {
            UpstreamProtocol::Modern => {
                self.http_begin_stamper(skey, line, id, false);
                true
            }
            UpstreamProtocol::Auto => {
                // Kept in case the upstream refuses it (`http_refused_init`).
                if let Some(up) = self.up_session(u, skey) {
                    up.init_line = Some(line.to_vec());
                }
                false
            }
            UpstreamProtocol::Legacy => false,
        }
    }

    /// `auto`: the upstream refused the client's `initialize` (request `id`)
    /// with `status`: a 400 may be a modern-only server; ask it
    /// `server/discover`. True: asked (the session lives on).
    pub(super) fn http_refused_init(&mut self, skey: SKey, id: &Id, status: u16) -> bool {
        let u = up_of(skey);
        if status != 400 || self.ups[u].cfg.upstream_protocol != UpstreamProtocol::Auto {
            return false;
        }
        let Some(line) = self.up_session(u, skey).and_then(|up| up.init_line.take()) else {
            return false;
        };
        self.http_begin_stamper(skey, &line, id, true);
        true
    }

    fn http_begin_stamper(&mut self, skey: SKey, line: &[u8], id: &Id, fallback: bool) {
        let u = up_of(skey);
        let name = self.ups[u].cfg.name.clone();
        let params = match jsonrpc::peek(line) {
            Ok(Message::Single(env)) => env.params.map(|p| p.get().to_string()),
            _ => None,
        };
        let Some(up) = self.up_session(u, skey) else {
            return;
        };
        let mut st = Stamper::new(&name);
        let d = st.begin(id, params.as_deref());
        up.stamper = Some(st);
        if fallback {
            crate::log_info!(
                "[{name}] initialize refused; asking server/discover in case it is a \
                 2026-07-28 server"
            );
        }
        if let Stamped::SendOwn(bytes, _) = d {
            self.http_post(skey, &bytes, None, Some(Id::Str(DISCOVER_ID.into())), false);
        }
    }

    /// The answer to session `skey`'s discover (or, for a failed exchange,
    /// an error line standing for it).
    pub(super) fn http_discovered(&mut self, skey: SKey, data: &[u8]) {
        let u = up_of(skey);
        let name = self.ups[u].cfg.name.clone();
        let Some(up) = self.up_session(u, skey) else {
            return;
        };
        let Some(st) = up.stamper.as_mut() else {
            return;
        };
        let d = st.on_discover(data);
        let ok = st.stamping();
        let refused = st.refused;
        if ok {
            // A session without an upstream session id: no GET, no DELETE.
            up.opened(None);
        }
        if let Some((id, line)) = d.answer {
            if !ok {
                self.no_session_header(skey, &id);
            }
            self.on_session_line(skey, &line);
        }
        if !ok {
            crate::log_warn!("[{name}] server/discover failed: the client's initialize fails");
            self.end_session(skey, "the upstream refused initialize and server/discover");
            return;
        }
        crate::log_debug!("[{name}] stamping a handshake-era session for a 2026-07-28 upstream");
        self.http_era_refusals(u, refused, 0);
        for line in d.released {
            let Ok(Message::Single(env)) = jsonrpc::peek(&line) else {
                continue;
            };
            let id = (env.kind() == Kind::Request).then(|| env.id()).flatten();
            if let Some(id) = &id
                && !self
                    .sessions
                    .get(&skey)
                    .is_some_and(|s| s.inflight.contains(id))
            {
                continue;
            }
            self.http_send(skey, &line, &env, id.as_ref());
        }
    }

    /// A message of a session whose stamper is active: true when taken.
    pub(super) fn http_stamped_send(
        &mut self,
        skey: SKey,
        line: &[u8],
        env: &Envelope,
        request: Option<&Id>,
    ) -> bool {
        let u = up_of(skey);
        let Some(up) = self.up_session(u, skey) else {
            return false;
        };
        let Some(st) = up.stamper.as_mut().filter(|s| s.active()) else {
            return false;
        };
        let before = st.refused;
        let subs_before = st.subs_refused;
        let m = env.method();
        let d = st.on_client(line, m.as_deref(), env.params.map(|p| p.get()), request);
        let after = st.refused;
        let subs_refused = st.subs_refused > subs_before;
        self.http_era_refusals(u, after, before);
        if subs_refused {
            let metric = self.ups[u].metric;
            self.metrics.http_limit(metric, "era_subscriptions", 1);
            let now = self.now;
            let name = self.ups[u].cfg.name.clone();
            if let Some(more) = self.ups[u].http_mut().and_then(|h| h.era_log.hit(now, 1)) {
                crate::log_warn!(
                    "[{name}] a handshake-era session has {} resource subscriptions; \
                     refusing more ({more} more since the last line)",
                    crate::mcp::era::stamper::MAX_SUBSCRIPTIONS
                );
            }
        }
        match d {
            Stamped::Pass => return false,
            Stamped::Send(bytes, _) => self.http_post(skey, &bytes, None, request.cloned(), false),
            Stamped::SendOwn(..) | Stamped::Held | Stamped::Drop => {}
            Stamped::Answer(a) => self.on_session_line(skey, &a),
            Stamped::Input(out) => self.stamped_input_out(skey, out),
            Stamped::Listen {
                answer,
                close,
                open,
            } => {
                self.on_session_line(skey, &answer);
                // Closing a listen's response stream ends it (2026-07-28).
                let reg = self.poll.registry();
                if let Some(old) = close
                    && let Some(h) = self.ups[u].http_mut()
                    && let Some(ex) = h
                        .sessions
                        .get_mut(&skey)
                        .and_then(|up| up.requests.remove(&old))
                {
                    h.client.cancel(ex, reg);
                    h.carries.remove(&ex);
                }
                if let Some((lid, bytes, headers)) = open {
                    self.http_post_listen(skey, bytes, headers, lid);
                }
            }
        }
        true
    }

    /// The input rounds of a session stamped toward a modern server
    /// (`era/stamped_input.rs`), kept by its stamper.
    pub(in crate::front::reverse) fn http_stamper_input(
        &mut self,
        skey: SKey,
    ) -> Option<&mut crate::mcp::era::stamper_input::StamperInput> {
        let st = self.up_session(up_of(skey), skey)?.stamper.as_mut()?;
        st.stamping().then_some(&mut st.input)
    }

    /// A call's retry with the client's input (stamped already).
    pub(in crate::front::reverse) fn http_input_retry(&mut self, skey: SKey, line: &[u8], id: Id) {
        self.http_post(skey, line, None, Some(id), false);
    }

    /// The relay's own `subscriptions/listen` for a handshake-era session's
    /// subscriptions: a long-lived POST (no response timeout) of the
    /// session, closed to end it (and when the session ends).
    fn http_post_listen(
        &mut self,
        skey: SKey,
        line: Vec<u8>,
        headers: Vec<(String, String)>,
        lid: Id,
    ) {
        let u = up_of(skey);
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let mut hs = vec![
            (
                "accept".to_string(),
                "application/json, text/event-stream".to_string(),
            ),
            ("content-type".into(), "application/json".into()),
        ];
        hs.extend(headers);
        let req = Request {
            method: "POST",
            target: h.url.target.clone(),
            headers: hs,
            body: line,
            stream: true,
        };
        let ex = h.client.submit(req, reg, now);
        if let Some(up) = h.sessions.get_mut(&skey) {
            up.requests.insert(lid.clone(), ex);
        }
        h.carries.insert(
            ex,
            (
                skey,
                Carry::Post {
                    request: Some(lid),
                    initialize: false,
                },
            ),
        );
    }

    /// A message on the relay's own listen of session `skey`: the
    /// acknowledgement and the listen's end are the relay's; notifications
    /// go to the session's stream.
    pub(super) fn http_listen_message(&mut self, skey: SKey, data: &[u8]) {
        if crate::mcp::era::stamper::is_listen_ack(data) {
            return;
        }
        match jsonrpc::peek(data) {
            Ok(Message::Single(env)) if env.kind() == Kind::Notification => {
                self.on_session_line(skey, data);
            }
            _ => crate::log_debug!(
                "[{}] the server ended (or refused) the relay's subscriptions/listen",
                self.ups[up_of(skey)].cfg.name
            ),
        }
    }

    /// Messages refused while a session's discover was out: the metric
    /// and a rate-limited line.
    fn http_era_refusals(&mut self, u: usize, now_refused: u64, before: u64) {
        if now_refused <= before {
            return;
        }
        let metric = self.ups[u].metric;
        self.metrics
            .http_limit(metric, "era_hold_full", now_refused - before);
        let now = self.now;
        let name = self.ups[u].cfg.name.clone();
        if let Some(more) = self.ups[u].http_mut().and_then(|h| h.era_log.hit(now, 1)) {
            crate::log_warn!(
                "[{name}] a message was refused while its session asked the upstream for \
                 server/discover (hold full: {} messages; {more} more since the last line)",
                crate::mcp::era::link::HOLD_CAP
            );
        }
    }
}
