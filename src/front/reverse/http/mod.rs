//! `reverse --url`: HTTP in front of an HTTP(S) MCP server.
//!
//! Each client session maps to one upstream session, created when the
//! client's `initialize` is forwarded. Requests use any idle keep-alive
//! connection of the engine's pool; SSE replies stream through event by event
//! (progress reaches the client as it arrives); the upstream's GET stream is
//! held by the relay, reconnected with backoff and `Last-Event-ID`, and its
//! messages are delivered through the client side's own event ids and replay
//! buffer. An upstream 404 ends the client session, whose next request then
//! gets 404 so the client initializes again, as MCP prescribes.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::{ReplyTo, Reverse, SKey, TimerKind, up_of};
use crate::cli::HttpOptions;
use crate::io::ratelog::RateLog;
use crate::policy::backoff::Rng;
use crate::proto::errors::RelayError;
use crate::proto::jsonrpc::{self, Envelope, Id};
use crate::upstream::hold::{GET_HOLD, HOLD_CAP};
use crate::upstream::http::{Event, ExId, Failure, HttpClient, HttpConfig, Request};
use crate::upstream::reconnect::{self, RecentDrops, ReconnectConfig, SseStream};
use crate::upstream::url::Url;
use crate::vecmap::VecMap;

mod backpressure;
mod bridge;
mod bridge_calls;
mod bridge_get;
mod bridge_listen;
mod done;
mod end;
mod era;
mod phase;

use phase::{UpPhase, UpSession};

#[derive(Debug, Clone)]
enum Carry {
    Post {
        request: Option<Id>,
        initialize: bool,
    },
    Get,
    Delete,
    /// The relay's `server/discover` learning the upstream's era
    /// (`bridge.rs`).
    Probe,
    /// The relay's `initialize` of a bridge session for a 2026-07-28
    /// client identity.
    BridgeInit {
        key: String,
    },
    /// A 2026-07-28 request (under the relay's id) or the relay's own
    /// message on bridge `key`.
    BridgePost {
        request: Option<Id>,
        key: String,
    },
    /// The GET stream of bridge `key`.
    BridgeGet {
        key: String,
    },
}

pub(super) struct UpHttp {
    url: Url,
    client: HttpClient,
    reconnect: ReconnectConfig,
    /// Recent drops of this upstream's open GET streams, whichever session
    /// held them: a lone drop reconnects at once, a herd is spread.
    drops: RecentDrops,
    carries: HashMap<ExId, (SKey, Carry)>,
    pub(super) sessions: HashMap<SKey, UpSession>,
    /// The one exchange of each 2026-07-28 (stateless) session in flight:
    /// it has no upstream session, and ending it is its cancellation.
    stateless: HashMap<SKey, ExId>,
    /// Exchanges whose connection is not read because the client they feed
    /// holds [`PUSH_BACK_AT`] of unsent output: the session, and the request
    /// for a POST (None: the GET stream, which feeds every client of the
    /// session).
    /// A list, like the engine's own paused set: few at once in practice.
    paused: VecMap<ExId, (SKey, Option<Id>)>,
    /// Events of a paused exchange read before it was paused (at most one
    /// read budget's worth), handed over in order when it resumes.
    deferred: VecMap<ExId, std::collections::VecDeque<Event>>,
    /// Rate limits of the lines about reads held back, refused GET
    /// streams and full GET holds.
    paused_log: RateLog,
    budget_log: RateLog,
    refused_log: RateLog,
    hold_log: RateLog,
    /// A stateless request's `Mcp-Param-*` headers until its POST goes
    /// (`era.rs`, at most `era::MAX_PARAM_HEADERS` per request).
    param_headers: HashMap<SKey, Vec<(String, String)>>,
    param_log: RateLog,
    era_log: RateLog,
    /// 2026-07-28 clients in front of a handshake-era upstream.
    bridges: bridge::Bridges,
}

/// Output queued toward one client connection at which the upstream
/// exchange feeding it is no longer read (backpressure: issue 11, classes 3
/// and 5); it is read again once the queue is below this. Well under the
/// 8 MiB at which a client that does not read is disconnected, so a
/// session's own GET stream flood pauses instead of costing it its stream.
pub(super) const PUSH_BACK_AT: usize = 1 << 20;

impl UpHttp {
    pub(super) fn new(
        opts: &HttpOptions,
        cfg: &crate::cli::ReverseConfig,
        tag: usize,
    ) -> Result<UpHttp, String> {
        let http = HttpConfig::for_relay(opts, cfg.max_request_time, cfg.max_message_size)?;
        let url = http.url.clone();
        let client = HttpClient::new(http, tag, Rng::from_os())?;
        Ok(UpHttp {
            url,
            client,
            reconnect: ReconnectConfig {
                base: opts.reconnect_base,
                cap: Duration::from_secs(30),
                max_elapsed: opts.reconnect_max_elapsed,
                recent_ids: 1024,
            },
            drops: RecentDrops::new(),
            carries: HashMap::new(),
            sessions: HashMap::new(),
            stateless: HashMap::new(),
            paused: VecMap::new(),
            deferred: VecMap::new(),
            paused_log: RateLog::default(),
            budget_log: RateLog::default(),
            refused_log: RateLog::default(),
            hold_log: RateLog::default(),
            param_headers: HashMap::new(),
            param_log: RateLog::default(),
            era_log: RateLog::default(),
            bridges: bridge::Bridges::new(cfg.upstream_protocol),
        })
    }

    /// Session `skey`'s GET exchange failed, or its open stream ended: what
    /// its stream does next (None: the session is gone).
    fn get_failed(
        &mut self,
        skey: SKey,
        kind: reconnect::Failure,
        retry_after: Option<Duration>,
        now: std::time::Instant,
    ) -> Option<Vec<reconnect::Action>> {
        let up = self.sessions.get_mut(&skey)?;
        up.get_ex = None;
        Some(up.get.on_failure(kind, retry_after, &mut self.drops, now))
    }

    pub(super) fn host(&self) -> &str {
        &self.url.host
    }

    pub(super) fn port(&self) -> u16 {
        self.url.port
    }

    /// The resolver's answer for this upstream's host.
    pub(super) fn resolved(
        &mut self,
        answer: Result<Vec<std::net::SocketAddr>, String>,
        reg: &mio::Registry,
        now: std::time::Instant,
    ) {
        match answer {
            Ok(addrs) if !addrs.is_empty() => self.client.set_addrs(addrs, reg, now),
            Ok(_) => self.client.resolve_failed("no addresses"),
            Err(e) => self.client.resolve_failed(&e),
        }
    }

    pub(super) fn next_deadline(&self) -> Option<std::time::Instant> {
        self.client
            .next_deadline()
            .into_iter()
            .chain(self.bridges.next_deadline())
            .min()
    }

    pub(super) fn in_flight(&self) -> usize {
        self.client.in_flight()
    }

    /// (connections, idle ones) for the metrics gauges.
    pub(super) fn connection_counts(&self) -> (usize, usize) {
        (self.client.connections(), self.client.idle_connections())
    }

    fn headers(&self, skey: SKey, sse_only: bool) -> Vec<(String, String)> {
        let mut h = vec![(
            "accept".to_string(),
            if sse_only {
                "text/event-stream"
            } else {
                "application/json, text/event-stream"
            }
            .to_string(),
        )];
        if !sse_only {
            h.push(("content-type".into(), "application/json".into()));
        }
        if let Some(up) = self.sessions.get(&skey) {
            if let Some(s) = up.phase.session_id() {
                h.push(("mcp-session-id".into(), s.to_string()));
            }
            if let Some(v) = up.phase.version() {
                h.push(("mcp-protocol-version".into(), v.to_string()));
            }
        }
        h
    }
}

impl Reverse {
    /// The upstream side of session `skey` on upstream `u`.
    fn up_session(&mut self, u: usize, skey: SKey) -> Option<&mut UpSession> {
        self.ups[u].http_mut()?.sessions.get_mut(&skey)
    }

    /// A client session's `initialize`: create its upstream session.
    pub(super) fn http_start(&mut self, skey: SKey, line: Vec<u8>, id: Id, reply_to: ReplyTo) {
        let u = up_of(skey);
        let rc = match self.ups[u].http() {
            Some(h) => h.reconnect.clone(),
            None => return,
        };
        if let Some(h) = self.ups[u].http_mut() {
            h.sessions
                .insert(skey, UpSession::new(SseStream::new(rc, Rng::from_os())));
        }
        self.track_initialize(skey, &id, reply_to);
        if self.http_start_stamped(skey, &line, &id) {
            return;
        }
        self.http_post(skey, &line, None, Some(id), true);
    }

    /// A client message for its session's upstream.
    pub(super) fn http_send(
        &mut self,
        skey: SKey,
        line: &[u8],
        env: &Envelope,
        request: Option<&Id>,
    ) {
        let u = up_of(skey);
        let stateless = self.sessions.get(&skey).is_some_and(|s| s.stateless);
        let known = stateless
            || self.ups[u]
                .http()
                .is_some_and(|h| h.sessions.contains_key(&skey));
        if !known {
            if let Some(id) = request {
                self.fail_request(
                    skey,
                    id,
                    RelayError::UpstreamClosed,
                    "The session has no upstream session",
                    json!({}),
                );
            }
            return;
        }
        if stateless && self.http_bridge_send(skey, line, env, request) {
            return;
        }
        if self.http_stamped_send(skey, line, env, request) {
            return;
        }
        let initialized = request.is_none() && env.method_is("notifications/initialized");
        if self.http_hold(skey, line, request) {
            return;
        }
        self.http_post(skey, line, Some(env), request.cloned(), false);
        if initialized {
            if let Some(up) = self.up_session(u, skey) {
                up.went_live();
            }
            self.http_want_get(skey);
        }
    }

    /// POSTs one message; `env` is it parsed, when the caller has it (the
    /// relay's own messages need no 2026-07-28 headers).
    fn http_post(
        &mut self,
        skey: SKey,
        line: &[u8],
        env: Option<&Envelope>,
        request: Option<Id>,
        initialize: bool,
    ) {
        let u = up_of(skey);
        let stateless = self.sessions.get(&skey).is_some_and(|s| s.stateless);
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let mut headers = h.headers(skey, false);
        // 2026-07-28: the headers name the method (derived from the body,
        // which they must match), the client's Mcp-Param-* go as they came,
        // and there is no session.
        let params = h.param_headers.remove(&skey);
        if let Some(modern) = crate::mcp::era::stamper::modern_headers(line) {
            headers.retain(|(k, _)| k != "mcp-session-id" && k != "mcp-protocol-version");
            headers.extend(modern);
            headers.extend(params.into_iter().flatten());
        } else if stateless
            && let Some(env) = env
            && let Some(m) = env.method()
        {
            // No envelope in the body (the upstream will say so): the
            // headers still name what the body says.
            let named = crate::mcp::era::classify::name_param(&m)
                .and_then(|k| env.param_str(k).map(|v| json!({ k: v })));
            headers.extend(crate::mcp::era::classify::headers_for(
                crate::mcp::era::MODERN_VERSION,
                &m,
                named.as_ref(),
            ));
        }
        let req = Request::post(h.url.target.clone(), headers, line.to_vec());
        let ex = h.client.submit(req, reg, now);
        if let Some(id) = &request {
            if stateless {
                h.stateless.insert(skey, ex);
            } else if let Some(up) = h.sessions.get_mut(&skey) {
                up.requests.insert(id.clone(), ex);
            }
        }
        h.carries.insert(
            ex,
            (
                skey,
                Carry::Post {
                    request,
                    initialize,
                },
            ),
        );
    }

    /// Holds a message of session `skey` while its GET stream opens (true);
    /// false: send it now. A message past `HOLD_CAP` ends the hold: the held
    /// ones go first.
    fn http_hold(&mut self, skey: SKey, line: &[u8], request: Option<&Id>) -> bool {
        let u = up_of(skey);
        let Some(up) = self.up_session(u, skey) else {
            return false;
        };
        if !up.holding() {
            return false;
        }
        if up.hold(line, request) {
            return true;
        }
        let now = self.now;
        let metric = self.ups[u].metric;
        self.metrics.http_limit(metric, "get_hold_cap", 1);
        let line = self.ups[u].http_mut().and_then(|h| h.hold_log.hit(now, 1));
        if let Some(more) = line {
            crate::log_warn!(
                "[{}] {HOLD_CAP} messages held for a GET stream still opening; sending them \
                 ({more} more sessions since the last line)",
                self.ups[u].cfg.name
            );
        }
        self.http_get_settled(skey);
        false
    }

    /// Session `skey`'s first GET stream opened, was refused or failed, or
    /// the hold is over: what it held goes out, in order (a request that
    /// was answered meanwhile is not sent).
    fn http_get_settled(&mut self, skey: SKey) {
        let u = up_of(skey);
        let Some(up) = self.up_session(u, skey) else {
            return;
        };
        let Some(held) = up.get_settled() else {
            return;
        };
        if let Some(t) = up.hold_timer.take() {
            self.timers.cancel(t);
        }
        for (line, request) in held {
            if let Some(id) = &request
                && !self
                    .sessions
                    .get(&skey)
                    .is_some_and(|s| s.inflight.contains(id))
            {
                continue;
            }
            self.http_post(skey, &line, None, request, false);
        }
    }

    /// `GET_HOLD` is over and the GET stream is still not open.
    pub(super) fn http_hold_timer(&mut self, skey: SKey) {
        let u = up_of(skey);
        let Some(up) = self.up_session(u, skey) else {
            return;
        };
        up.hold_timer = None;
        if up.holding() {
            crate::log_debug!(
                "[{}] GET stream of a session not open within {GET_HOLD:?}; sending what waited",
                self.ups[u].cfg.name
            );
            self.http_get_settled(skey);
        }
    }

    fn http_want_get(&mut self, skey: SKey) {
        let u = up_of(skey);
        let now = self.now;
        let Some(up) = self.up_session(u, skey) else {
            return;
        };
        if !matches!(
            up.phase,
            UpPhase::Live {
                session_id: Some(_),
                ..
            }
        ) {
            return;
        }
        let actions = up.get.want(now);
        let connect = actions
            .iter()
            .any(|a| matches!(a, reconnect::Action::Connect { .. }));
        // The first GET stream: the session's next POSTs wait for it.
        if connect && up.get_opening() {
            let t = self.timers.insert(now + GET_HOLD, TimerKind::GetHold(skey));
            if let Some(up) = self.up_session(u, skey)
                && let Some(old) = up.hold_timer.replace(t)
            {
                self.timers.cancel(old);
            }
        }
        self.http_get_actions(skey, actions);
    }

    fn http_get_actions(&mut self, skey: SKey, actions: Vec<reconnect::Action>) {
        let u = up_of(skey);
        for a in actions {
            match a {
                reconnect::Action::Connect { last_event_id } => {
                    let now = self.now;
                    let reg = self.poll.registry();
                    let Some(h) = self.ups[u].http_mut() else {
                        return;
                    };
                    let mut headers = h.headers(skey, true);
                    if let Some(id) = last_event_id {
                        headers.push(("last-event-id".into(), id));
                    }
                    let req = Request::stream(h.url.target.clone(), headers);
                    let ex = h.client.submit(req, reg, now);
                    h.carries.insert(ex, (skey, Carry::Get));
                    if let Some(up) = h.sessions.get_mut(&skey) {
                        up.get_ex = Some(ex);
                    }
                }
                reconnect::Action::Wait(at) => {
                    let t = self.timers.insert(at, TimerKind::Reconnect(skey));
                    if let Some(up) = self.up_session(u, skey)
                        && let Some(old) = up.get_timer.replace(t)
                    {
                        self.timers.cancel(old);
                    }
                }
                reconnect::Action::GiveUp => {
                    crate::log_warn!(
                        "[{}] upstream GET stream of a session could not be restored; ending the session",
                        self.ups[u].cfg.name
                    );
                    self.end_session(skey, "its upstream stream could not be restored");
                }
            }
        }
    }

    pub(super) fn http_reconnect_timer(&mut self, skey: SKey) {
        let u = up_of(skey);
        let now = self.now;
        let Some(up) = self.up_session(u, skey) else {
            return;
        };
        up.get_timer = None;
        let actions = up.get.on_timer(now);
        self.http_get_actions(skey, actions);
    }

    /// Readiness on an upstream connection of upstream `u`.
    pub(super) fn http_event(&mut self, u: usize, conn: u64, readable: bool, writable: bool) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        h.client.on_ready(conn, readable, writable, reg, now);
        self.http_drain(u);
    }

    /// The resolver's answers, each for the upstream it names.
    pub(super) fn http_resolved(&mut self) {
        let mut answers = Vec::new();
        if let Some(r) = self.resolver.as_mut() {
            r.drain(&mut answers);
        }
        let now = self.now;
        for (u, answer) in answers {
            if super::oauth::is_oauth_tag(u as usize) {
                self.oauth_resolved(u as usize, answer);
                continue;
            }
            let reg = self.poll.registry();
            if let Some(h) = self.ups.get_mut(u as usize).and_then(|up| up.http_mut()) {
                h.resolved(answer, reg, now);
            }
            self.http_drain(u as usize);
        }
    }

    pub(super) fn http_poll(&mut self, u: usize) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        if h.client.next_deadline().is_some_and(|d| d <= now) {
            h.client.poll(reg, now);
        }
        self.http_drain(u);
        self.http_bridge_poll(u);
    }

    fn http_drain(&mut self, u: usize) {
        loop {
            let mut events = Vec::new();
            let Some(h) = self.ups[u].http_mut() else {
                return;
            };
            h.client.take_events(&mut events);
            if events.is_empty() {
                self.http_limits(u);
                return;
            }
            for ev in events {
                self.http_event_one(u, ev);
            }
        }
    }

    /// One engine event; one of a paused exchange waits (`http_backlog`
    /// hands it over once the client caught up), so that nothing read
    /// before the pause overtakes it or is pushed on a full client.
    pub(super) fn http_event_one(&mut self, u: usize, ev: Event) {
        if let Some(h) = self.ups[u].http_mut()
            && h.paused.contains_key(&ev.ex())
        {
            h.deferred.get_or_default(ev.ex()).push_back(ev);
            return;
        }
        match ev {
            Event::Head {
                ex,
                status,
                headers,
                ..
            } => self.http_head(u, ex, status, &headers),
            Event::Message {
                ex,
                data,
                id,
                retry,
            } => self.http_message(u, ex, data, id, retry),
            Event::Done { ex } => self.http_done(u, ex),
            Event::Failed { ex, failure } => self.http_failed(u, ex, failure),
        }
    }

    fn carry(&self, u: usize, ex: ExId) -> Option<(SKey, Carry)> {
        self.ups[u].http().and_then(|h| h.carries.get(&ex).cloned())
    }

    fn forget(&mut self, u: usize, ex: ExId) {
        let Some(h) = self.ups[u].http_mut() else {
            return;
        };
        let Some((skey, carry)) = h.carries.remove(&ex) else {
            return;
        };
        if h.stateless.get(&skey) == Some(&ex) {
            h.stateless.remove(&skey);
        } else if let Carry::Post {
            request: Some(id), ..
        } = carry
            && let Some(up) = h.sessions.get_mut(&skey)
        {
            up.requests.remove(&id);
        }
    }

    fn http_head(&mut self, u: usize, ex: ExId, status: u16, headers: &[(String, String)]) {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let Some((skey, carry)) = self.carry(u, ex) else {
            return;
        };
        let now = self.now;
        match carry {
            Carry::Post {
                request,
                initialize,
            } => {
                if (200..300).contains(&status) {
                    if initialize && let Some(up) = self.up_session(u, skey) {
                        up.opened(header("mcp-session-id"));
                        // The client may have sent notifications/initialized
                        // before this head arrived.
                        self.http_want_get(skey);
                    }
                    return;
                }
                self.forget(u, ex);
                if let Some(id) = &request
                    && crate::mcp::era::stamper::Stamper::is_own(id)
                {
                    let line = jsonrpc::error_response(
                        Some(id),
                        RelayError::UpstreamStatus.code(),
                        &format!("The upstream answered server/discover with HTTP {status}"),
                        crate::proto::object::object([("status", serde_json::Value::from(status))]),
                    );
                    self.http_discovered(skey, &line);
                    return;
                }
                if initialize
                    && let Some(id) = &request
                    && self.http_refused_init(skey, id, status)
                {
                    return;
                }
                if let Some(id) = &request {
                    if initialize {
                        self.no_session_header(skey, id);
                    }
                    self.fail_request(
                        skey,
                        id,
                        RelayError::UpstreamStatus,
                        &format!("The upstream answered HTTP {status}"),
                        crate::proto::object::object([("status", serde_json::Value::from(status))]),
                    );
                }
                if initialize {
                    // No upstream session: the client's session never existed.
                    self.end_session(skey, "the upstream refused initialize");
                    return;
                }
                let had_session = self.ups[u]
                    .http()
                    .and_then(|h| h.sessions.get(&skey))
                    .is_some_and(|up| up.phase.session_id().is_some());
                if status == 404 && had_session {
                    // MCP: the upstream session is gone; so is the client's.
                    self.end_session(skey, "the upstream ended the session");
                }
            }
            Carry::Get => {
                if status == 200 {
                    if let Some(up) = self.up_session(u, skey) {
                        up.get.on_connected(now);
                    }
                    self.http_get_settled(skey);
                    return;
                }
                let retry_after = header("retry-after")
                    .and_then(|v| reconnect::parse_retry_after(&v, SystemTime::now()));
                let kind = reconnect::Failure::Status(status);
                let Some(actions) = self.ups[u]
                    .http_mut()
                    .and_then(|h| h.get_failed(skey, kind, retry_after, now))
                else {
                    return;
                };
                self.forget(u, ex);
                if status == 404 {
                    self.end_session(skey, "the upstream ended the session");
                    return;
                }
                let refused = self.up_session(u, skey).and_then(|up| up.get.refused());
                if let Some(status) = refused {
                    // No GET stream: the session goes on without one.
                    let metric = self.ups[u].metric;
                    self.metrics.http_limit(metric, "get_refused", 1);
                    let line = self.ups[u]
                        .http_mut()
                        .and_then(|h| h.refused_log.hit(now, 1));
                    if let Some(more) = line {
                        crate::log_info!(
                            "[{}] the upstream has no GET stream (it answered HTTP {status}); \
                             server messages come only on POST responses ({more} more sessions \
                             refused since the last line)",
                            self.ups[u].cfg.name
                        );
                    }
                }
                self.http_get_actions(skey, actions);
                // Refused, or retrying later: what waited goes now.
                self.http_get_settled(skey);
            }
            Carry::Probe => {
                if !(200..300).contains(&status) {
                    // Any refusal is no modern answer: the handshake era.
                    self.forget(u, ex);
                    self.http_probe_answered(u, None);
                }
            }
            Carry::BridgeInit { key } => {
                if !(200..300).contains(&status) {
                    self.forget(u, ex);
                }
                self.http_bridge_init_head(u, &key, status, header("mcp-session-id"));
            }
            Carry::BridgePost { request, key } => {
                if (200..300).contains(&status) {
                    return;
                }
                self.forget(u, ex);
                self.http_bridge_post_refused(u, &key, status);
                if let Some(up) = &request {
                    self.http_bridge_post_failed(
                        u,
                        up,
                        RelayError::UpstreamStatus,
                        &format!("The upstream answered HTTP {status}"),
                        crate::proto::object::object([("status", serde_json::Value::from(status))]),
                    );
                }
            }
            Carry::BridgeGet { key } => {
                self.http_bridge_get_head(u, &key, ex, status, header("retry-after").as_deref());
            }
            Carry::Delete => {}
        }
    }

    fn http_message(
        &mut self,
        u: usize,
        ex: ExId,
        data: Vec<u8>,
        id: Option<String>,
        retry: Option<u64>,
    ) {
        let Some((skey, carry)) = self.carry(u, ex) else {
            return;
        };
        let now = self.now;
        match carry {
            Carry::Get => {
                let Some(up) = self.up_session(u, skey) else {
                    return;
                };
                // Never deliver an upstream event twice across reconnects.
                if !up.get.on_event(id.as_deref(), retry, now) || data.is_empty() {
                    return;
                }
                self.on_session_line(skey, &data);
                self.http_push_back(u, ex, skey, None);
            }
            Carry::Post {
                initialize,
                request,
            } => {
                if data.is_empty() {
                    return;
                }
                if request
                    .as_ref()
                    .is_some_and(crate::mcp::era::stamper::Stamper::is_own)
                {
                    self.http_discovered(skey, &data);
                    return;
                }
                if request
                    .as_ref()
                    .is_some_and(crate::mcp::era::stamper::Stamper::is_own_listen)
                {
                    self.http_listen_message(skey, &data);
                    return;
                }
                if initialize {
                    let v: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
                    if let Some(pv) = v
                        .pointer("/result/protocolVersion")
                        .and_then(|p| p.as_str())
                        && let Some(up) = self.up_session(u, skey)
                    {
                        up.learned_version(pv.to_string());
                    }
                }
                self.on_session_line(skey, &data);
                if let Some(id) = request {
                    self.http_push_back(u, ex, skey, Some(id));
                }
            }
            Carry::Probe => {
                self.forget(u, ex);
                self.http_probe_answered(u, Some(&data));
            }
            Carry::BridgeInit { key } => {
                self.forget(u, ex);
                self.http_bridge_init_answer(u, skey, &key, &data);
            }
            Carry::BridgePost { request, key } => {
                if !data.is_empty() {
                    self.http_bridge_up_message(u, &key, request.as_ref(), &data);
                }
            }
            Carry::BridgeGet { key } => {
                self.http_bridge_get_message(u, &key, &data, id.as_deref(), retry);
            }
            Carry::Delete => {}
        }
    }
}
