//! `forward --url`: the upstream is a Streamable HTTP server (or a legacy
//! HTTP+SSE one, found by falling back when `initialize` gets 400/404/405).
//!
//! Each client message becomes a POST; a reply comes back as the JSON body or
//! as events of an SSE response. After the client's
//! `notifications/initialized` the relay holds one GET stream for
//! server-initiated messages and keeps it open with backoff and
//! `Last-Event-ID` resumption. When the upstream ends the session (404) the
//! relay initializes a new one with the client's cached `initialize`, answers
//! the requests caught in between with errors, and carries on: the host sees
//! those errors and nothing else.

mod cancel;
mod era;
mod get;
mod legacy;
mod method;
mod oauth;
mod phase;
mod reinit;

use legacy::*;
use method::is_method;
use phase::Phase;

use std::collections::{HashMap, VecDeque};
use std::time::{Instant, SystemTime};

use serde_json::json;

use super::{Forward, TimerKind};
use crate::cli::HttpOptions;
use crate::io::dns::Resolver;
use crate::io::ratelog::RateLog;
use crate::policy::backoff::Rng;
use crate::proto::errors::RelayError;
use crate::proto::jsonrpc::{self, Id};
use crate::reactor::TimerId;
use crate::record::Direction;
use crate::upstream::hold::{GET_HOLD, HOLD_CAP, Held};
use crate::upstream::http::{Event, ExId, Failure, HttpClient, HttpConfig, Request};
use crate::upstream::reconnect::{self, RecentDrops, ReconnectConfig, ReinitBackoff, SseStream};
use crate::upstream::url::Url;

/// Id of the relay's own `initialize` when it re-creates a session.
const REINIT_ID: &str = "mcp-relay-reinit";

/// What an HTTP exchange carries.
#[derive(Debug, Clone)]
enum Carry {
    /// A client message; `request` when it expects a reply.
    Post {
        request: Option<Id>,
        initialize: bool,
        /// Sent as a 2026-07-28 request (no session): closing it cancels.
        modern: bool,
    },
    /// The relay's own `initialize` of a new session after a 404.
    Reinit,
    /// The relay's replay of `notifications/initialized`.
    Initialized,
    /// The session's GET stream (or a GET resuming a POST stream).
    Get,
    /// Legacy HTTP+SSE: the stream that carries every reply.
    LegacyStream,
    /// Legacy HTTP+SSE: a message POSTed to the endpoint (answered 202).
    LegacyPost {
        request: Option<Id>,
    },
    Delete,
}

pub(super) struct HttpUpstream {
    url: Url,
    client: HttpClient,
    resolver: Resolver,
    session_id: Option<String>,
    protocol_version: Option<String>,
    carries: HashMap<ExId, Carry>,
    /// The exchange carrying each client request, to cancel it on timeout.
    by_request: HashMap<Id, ExId>,
    get: SseStream,
    /// The stream's recent drops: one drop reconnects at once, a stream
    /// that keeps dropping is spread ever wider.
    drops: RecentDrops,
    get_ex: Option<ExId>,
    get_timer: Option<TimerId>,
    /// Changed only by `set_phase`; holds client messages unless `Ready`.
    phase: Phase,
    /// `GET_HOLD` of a `GetOpening` phase.
    hold_timer: Option<TimerId>,
    /// The client sent `notifications/initialized`: the GET stream is wanted.
    initialized: bool,
    /// `Some` once the upstream turned out to speak legacy HTTP+SSE.
    legacy: Option<Legacy>,
    delete_ex: Option<ExId>,
    /// The host closed stdin with requests in flight: they may still be
    /// answered until this time (`--kill-grace`), then the session ends.
    draining: Option<TimerId>,
    /// Rate limits of the lines about reads held back.
    paused_log: RateLog,
    budget_log: RateLog,
    hold_log: RateLog,
    /// When a lost session may be initialized again (issue 11, class 6).
    reinit: ReinitBackoff,
    /// Armed while a new session waits out `reinit`'s delay.
    reinit_timer: Option<TimerId>,
    /// The `Retry-After` of the GET's last refusal: the floor of a new
    /// session if the stream gives up on it.
    get_floor: Option<std::time::Duration>,
    /// A handshake-era client in front of a modern-only server
    /// (`mcp::era::stamper`).
    stamper: crate::mcp::era::stamper::Stamper,
    /// `auto`: the client's `initialize` (this id) was refused; if the
    /// stamper's discover fails too, legacy HTTP+SSE is tried next.
    legacy_after_discover: Option<Id>,
    /// `--oauth`: the relay as the upstream's OAuth client.
    oauth: Option<Box<oauth::OAuthClient>>,
}

impl HttpUpstream {
    pub(super) fn new(
        opts: &HttpOptions,
        cfg: &crate::cli::ForwardConfig,
        poll: &mio::Poll,
    ) -> Result<HttpUpstream, String> {
        let http = HttpConfig::for_relay(opts, cfg.max_request_time, cfg.max_message_size)?;
        let url = http.url.clone();
        let client = HttpClient::new(http, 0, Rng::from_os())?;
        let mut resolver = Resolver::new(poll.registry(), crate::reactor::RESOLVER_TOKEN)
            .map_err(|e| format!("resolver: {e}"))?;
        resolver.resolve(0, url.host.clone(), url.port);
        let rc = ReconnectConfig {
            base: opts.reconnect_base,
            cap: std::time::Duration::from_secs(30),
            max_elapsed: opts.reconnect_max_elapsed,
            recent_ids: 1024,
        };
        Ok(HttpUpstream {
            url,
            client,
            resolver,
            session_id: None,
            protocol_version: None,
            carries: HashMap::new(),
            by_request: HashMap::new(),
            get: SseStream::new(rc.clone(), Rng::from_os()),
            drops: RecentDrops::new(),
            get_ex: None,
            get_timer: None,
            phase: Phase::Ready,
            hold_timer: None,
            initialized: false,
            legacy: None,
            delete_ex: None,
            draining: None,
            paused_log: RateLog::default(),
            budget_log: RateLog::default(),
            hold_log: RateLog::default(),
            reinit: ReinitBackoff::new(&rc, Rng::from_os()),
            reinit_timer: None,
            get_floor: None,
            stamper: crate::mcp::era::stamper::Stamper::new(&cfg.name),
            legacy_after_discover: None,
            oauth: cfg
                .oauth
                .as_ref()
                .map(|o| Box::new(oauth::OAuthClient::new(&opts.url, o, opts.ca_file.clone()))),
        })
    }

    pub(super) fn in_flight(&self) -> usize {
        self.client.in_flight()
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let auth = self.oauth.as_ref().and_then(|o| o.next_deadline());
        let input = self.stamper.input.next_deadline();
        self.client
            .next_deadline()
            .into_iter()
            .chain(auth)
            .chain(input)
            .min()
    }

    /// The GET exchange failed, or the open stream ended.
    fn get_failed(
        &mut self,
        kind: reconnect::Failure,
        retry_after: Option<std::time::Duration>,
        now: Instant,
    ) -> Vec<reconnect::Action> {
        self.get_ex = None;
        self.get.on_failure(kind, retry_after, &mut self.drops, now)
    }

    /// The relay's exit may proceed: no DELETE still on its way.
    pub(super) fn settled(&self) -> bool {
        self.delete_ex.is_none() && self.draining.is_none()
    }

    /// Waiting for the answers of requests in flight at stdin's EOF.
    pub(super) fn draining(&self) -> bool {
        self.draining.is_some()
    }

    fn headers(&self, accept_sse_only: bool) -> Vec<(String, String)> {
        let mut h = vec![(
            "accept".to_string(),
            if accept_sse_only {
                "text/event-stream"
            } else {
                "application/json, text/event-stream"
            }
            .to_string(),
        )];
        if !accept_sse_only {
            h.push(("content-type".into(), "application/json".into()));
        }
        if let Some(s) = &self.session_id {
            h.push(("mcp-session-id".into(), s.clone()));
        }
        if let Some(v) = &self.protocol_version {
            h.push(("mcp-protocol-version".into(), v.clone()));
        }
        // Only ever to the upstream's own origin: this engine's.
        if let Some(a) = self.oauth.as_ref().and_then(|o| o.header()) {
            h.push(a);
        }
        h
    }
}

impl Forward {
    fn http(&mut self) -> Option<&mut HttpUpstream> {
        self.server.http_mut()
    }

    /// A client message for the HTTP upstream.
    pub(super) fn http_send(&mut self, line: &[u8], request: Option<Id>) {
        let initialize = request.is_some() && is_method(line, "initialize");
        let initialized = request.is_none() && is_method(line, "notifications/initialized");
        let Some(h) = self.server.http_mut() else {
            return;
        };
        if h.phase.hold(line, request.as_ref()) {
            return;
        }
        if !h.phase.is_ready() {
            if let Some(more) = h.hold_log.hit(self.now, 1) {
                crate::log_warn!(
                    "[{}] {HOLD_CAP} messages held for a GET stream still opening; sending them \
                     ({more} more times since the last line)",
                    self.cfg.name
                );
            }
            self.get_settled();
        }
        let Some(h) = self.server.http_mut() else {
            return;
        };
        match &mut h.legacy {
            Some(Legacy::AwaitingEndpoint { waiting } | Legacy::Ready { waiting, .. }) => {
                waiting.push_back((line.to_vec(), request));
                self.pump_legacy();
                return;
            }
            Some(Legacy::Failed) => {
                if let Some(id) = request {
                    self.fail_request(
                        &id,
                        RelayError::UpstreamClosed,
                        "The upstream SSE stream failed",
                        json!({}),
                    );
                }
                return;
            }
            None => {}
        }
        let target = h.url.target.clone();
        if initialize {
            h.set_phase(Phase::Initializing {
                held: Held::default(),
            });
        }
        self.post(target, line, request, initialize);
        if initialized && let Some(h) = self.http() {
            h.initialized = true;
            self.want_get();
        }
    }

    fn post(&mut self, target: String, line: &[u8], request: Option<Id>, initialize: bool) {
        if self.oauth_hold(line, &request, initialize) {
            return;
        }
        self.post_to(target, line, request, initialize);
    }

    /// A message that waited for a token goes out now.
    fn post_now(&mut self, line: Vec<u8>, request: Option<Id>, initialize: bool) {
        let Some(target) = self.server.http().map(|h| h.url.target.clone()) else {
            return;
        };
        self.post_to(target, &line, request, initialize);
    }

    fn post_to(&mut self, target: String, line: &[u8], request: Option<Id>, initialize: bool) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return;
        };
        // A 2026-07-28 request names itself in headers and has no session.
        let modern = crate::mcp::era::stamper::modern_headers(line);
        let headers = match &modern {
            Some(m) => {
                let mut hs = h.headers(false);
                hs.retain(|(k, _)| k != "mcp-session-id" && k != "mcp-protocol-version");
                hs.extend(m.iter().cloned());
                hs
            }
            None => h.headers(false),
        };
        let req = Request::post(target, headers, line.to_vec());
        let ex = h.client.submit(req, reg, now);
        if let Some(id) = &request {
            h.by_request.insert(id.clone(), ex);
        }
        h.carries.insert(
            ex,
            Carry::Post {
                request: request.clone(),
                initialize,
                modern: modern.is_some(),
            },
        );
        self.oauth_sent(ex, line, request, initialize);
    }

    /// Backpressure (issue 11, classes 3 and 5): while the host's stdout
    /// queue is at its high-water mark, no upstream connection is read;
    /// their bytes wait in the kernel and the upstream's sends block.
    pub(super) fn http_backpressure(&mut self) {
        let full = self.host.out.is_full() && !self.host.out_broken;
        if let Some(h) = self.server.http_mut() {
            h.client.set_paused_all(full);
        }
    }

    /// An upstream connection may have unread bytes and may be read now.
    pub(super) fn http_has_backlog(&self) -> bool {
        self.server.http().is_some_and(|h| {
            h.client.has_backlog() || h.oauth.as_ref().is_some_and(|o| o.has_backlog())
        })
    }

    /// Reads what the read budget or a pause left unread last turn.
    pub(super) fn http_backlog(&mut self) {
        self.http_backpressure();
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return;
        };
        if !h.client.has_backlog() {
            return;
        }
        h.client.read_backlog(reg, now);
        self.http_drain();
    }

    /// Readiness on the resolver's waker (`None`) or on connection `conn`.
    pub(super) fn http_event(&mut self, conn: Option<u64>, readable: bool, writable: bool) {
        self.http_backpressure();
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return;
        };
        match conn {
            Some(conn) => h.client.on_ready(conn, readable, writable, reg, now),
            None => {
                let mut answers = Vec::new();
                h.resolver.drain(&mut answers);
                let mut auth = Vec::new();
                for (id, answer) in answers {
                    if id == oauth::AUTH_TAG as u64 {
                        auth.push(answer);
                        continue;
                    }
                    match answer {
                        Ok(addrs) if !addrs.is_empty() => h.client.set_addrs(addrs, reg, now),
                        Ok(_) => h.client.resolve_failed("no addresses"),
                        Err(e) => h.client.resolve_failed(&e),
                    }
                }
                for a in auth {
                    self.oauth_resolved(a);
                }
            }
        }
        self.http_drain();
    }

    pub(super) fn http_poll(&mut self) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some(h) = self.server.http_mut() else {
            return;
        };
        if h.client.next_deadline().is_some_and(|d| d <= now) {
            h.client.poll(reg, now);
        }
        self.http_drain();
        self.oauth_poll();
        self.http_input_expire();
    }

    /// Handles what the engine reported.
    fn http_drain(&mut self) {
        loop {
            let mut events = Vec::new();
            let Some(h) = self.http() else { return };
            h.client.take_events(&mut events);
            if events.is_empty() {
                break;
            }
            for ev in events {
                self.http_one(ev);
            }
        }
        self.http_limits();
    }

    /// Rate-limited log lines for what the engine held back (`forward` has
    /// no metrics endpoint: the log is what an operator sees).
    fn http_limits(&mut self) {
        let now = self.now;
        let name = self.cfg.name.clone();
        let Some(h) = self.http() else { return };
        let c = h.client.take_limit_counts();
        if c.read_paused > 0
            && let Some(more) = h.paused_log.hit(now, c.read_paused)
        {
            crate::log_info!(
                "[{name}] the host is not reading stdout fast enough: reading the upstream \
                 paused until it catches up ({more} more pauses since the last line)"
            );
        }
        if c.read_budget > 0
            && let Some(more) = h.budget_log.hit(now, c.read_budget)
        {
            crate::log_debug!(
                "[{name}] an upstream connection had more than its read budget of {} KiB this \
                 turn; the rest is read next turn ({more} more since the last line)",
                crate::upstream::http::READ_BUDGET / 1024
            );
        }
    }

    fn http_one(&mut self, ev: Event) {
        match ev {
            Event::Head {
                ex,
                status,
                headers,
                sse,
            } => self.on_head(ex, status, &headers, sse),
            Event::Message {
                ex,
                data,
                id,
                retry,
            } => self.on_http_message(ex, data, id, retry),
            Event::Done { ex } => self.on_done(ex),
            Event::Failed { ex, failure } => self.on_failed(ex, failure),
        }
    }

    fn carry(&mut self, ex: ExId) -> Option<Carry> {
        self.server.http().and_then(|h| h.carries.get(&ex).cloned())
    }

    fn on_head(&mut self, ex: ExId, status: u16, headers: &[(String, String)], _sse: bool) {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let Some(carry) = self.carry(ex) else { return };
        let now = self.now;
        match carry {
            Carry::Post {
                request,
                initialize,
                ..
            } => {
                if self.oauth_status(ex, status, headers) {
                    // A 401 (or 403 insufficient_scope): it waits for a token.
                    return;
                }
                if (200..300).contains(&status) {
                    if initialize
                        && let Some(sid) = header("mcp-session-id")
                        && let Some(h) = self.http()
                    {
                        h.session_id = Some(sid);
                    }
                    return;
                }
                let has_session = self.server.http().is_some_and(|h| h.session_id.is_some());
                // 404/405 mean no POST endpoint at all (a 2024-11-05
                // server); 400 may be a 2026-07-28-only one refusing the
                // handshake.
                if initialize
                    && status == 400
                    && !has_session
                    && let Some(id) = &request
                    && !crate::mcp::era::stamper::Stamper::is_own(id)
                    && self.pending.contains(id)
                    && self.http_discover_after_refusal(ex, id)
                {
                    // `auto`: maybe a 2026-07-28-only server (era.rs).
                    return;
                }
                if initialize && matches!(status, 400 | 404 | 405) && !has_session {
                    // MCP backward compatibility: a 2024-11-05 server answers
                    // POST initialize like this; fall back to HTTP+SSE.
                    crate::log_info!(
                        "[{}] initialize got {status}; trying the legacy HTTP+SSE transport",
                        self.cfg.name
                    );
                    self.start_legacy(Some(ex), request);
                    return;
                }
                if status == 404 && has_session {
                    // MCP: 404 = the session is gone. Start a new one.
                    if let Some(id) = &request {
                        self.http_fail(
                            id,
                            RelayError::UpstreamStatus,
                            "The upstream ended the session (404)",
                            crate::proto::object::object([(
                                "status",
                                serde_json::Value::from(404),
                            )]),
                        );
                    }
                    self.forget(ex);
                    self.session_lost(None);
                    return;
                }
                if let Some(id) = &request {
                    self.http_fail(
                        id,
                        RelayError::UpstreamStatus,
                        &format!("The upstream answered HTTP {status}"),
                        crate::proto::object::object([("status", serde_json::Value::from(status))]),
                    );
                }
            }
            Carry::Get => {
                let Some(h) = self.http() else { return };
                if status == 200 {
                    h.get.on_connected(now);
                    self.get_settled();
                    return;
                }
                if status == 401 && self.oauth_get_refused() {
                    // The token expired while the stream was open: it is
                    // being renewed; the stream reconnects with the new one.
                    let Some(h) = self.http() else { return };
                    let actions = h.get_failed(reconnect::Failure::Dropped, None, now);
                    self.forget(ex);
                    self.get_actions(actions);
                    self.get_settled();
                    return;
                }
                let Some(h) = self.http() else { return };
                let retry_after = header("retry-after")
                    .and_then(|v| reconnect::parse_retry_after(&v, SystemTime::now()));
                let actions = h.get_failed(reconnect::Failure::Status(status), retry_after, now);
                h.get_floor = retry_after;
                let refused = h.get.refused();
                self.forget(ex);
                if status == 404 {
                    // What waited moves on into the new session.
                    self.session_lost(retry_after);
                    return;
                }
                if let Some(status) = refused {
                    // Once: the stream is never asked for again.
                    crate::log_info!(
                        "[{}] the upstream has no GET stream (it answered HTTP {status}); \
                         server messages come only on POST responses",
                        self.cfg.name
                    );
                }
                self.get_actions(actions);
                // Refused, or retrying later: what waited goes now.
                self.get_settled();
            }
            Carry::Reinit => {
                if (200..300).contains(&status) {
                    if let Some(h) = self.http() {
                        h.session_id = header("mcp-session-id");
                    }
                } else {
                    crate::log_warn!("[{}] re-initializing got HTTP {status}", self.cfg.name);
                }
            }
            Carry::LegacyStream => {
                if status != 200 {
                    crate::log_error!(
                        "[{}] legacy SSE endpoint answered HTTP {status}",
                        self.cfg.name
                    );
                    self.legacy_failed(&format!("HTTP {status}"));
                }
            }
            Carry::LegacyPost { request } => {
                if !(200..300).contains(&status)
                    && let Some(id) = &request
                {
                    self.http_fail(
                        id,
                        RelayError::UpstreamStatus,
                        &format!("The upstream answered HTTP {status}"),
                        crate::proto::object::object([("status", serde_json::Value::from(status))]),
                    );
                }
            }
            Carry::Initialized | Carry::Delete => {}
        }
    }

    fn on_http_message(&mut self, ex: ExId, data: Vec<u8>, id: Option<String>, retry: Option<u64>) {
        let Some(carry) = self.carry(ex) else { return };
        let now = self.now;
        match carry {
            Carry::Get => {
                let Some(h) = self.http() else { return };
                // Never deliver an event id twice across reconnects.
                if !h.get.on_event(id.as_deref(), retry, now) || data.is_empty() {
                    return;
                }
                self.relay_upstream_message(&data);
            }
            Carry::LegacyStream => {
                if let Some(rest) = data.strip_prefix(b"endpoint:") {
                    let endpoint = String::from_utf8_lossy(rest).trim().to_string();
                    let joined = self.server.http().map(|h| h.url.join(&endpoint));
                    match joined {
                        Some(Ok(target)) => {
                            crate::log_info!("[{}] legacy endpoint {target}", self.cfg.name);
                            if let Some(h) = self.http() {
                                match &mut h.legacy {
                                    Some(Legacy::AwaitingEndpoint { waiting }) => {
                                        h.legacy = Some(Legacy::Ready {
                                            endpoint: target,
                                            waiting: std::mem::take(waiting),
                                            posting: false,
                                        });
                                    }
                                    // A later `endpoint` event moves the endpoint.
                                    Some(Legacy::Ready { endpoint, .. }) => *endpoint = target,
                                    _ => {}
                                }
                            }
                            self.pump_legacy();
                        }
                        Some(Err(e)) => self.legacy_failed(&e),
                        None => {}
                    }
                    return;
                }
                if !data.is_empty() {
                    self.relay_upstream_message(&data);
                }
            }
            Carry::Post {
                initialize,
                request,
                ..
            } => {
                if data.is_empty() {
                    return;
                }
                if request
                    .as_ref()
                    .is_some_and(crate::mcp::era::stamper::Stamper::is_own_listen)
                    && crate::mcp::era::stamper::is_listen_ack(&data)
                {
                    // The acknowledgement of the relay's own listen.
                    return;
                }
                if initialize {
                    self.note_protocol_version(&data);
                }
                self.relay_upstream_message(&data);
            }
            Carry::Reinit => {
                self.note_protocol_version(&data);
                self.reinit_done(true);
            }
            Carry::LegacyPost { .. } => {
                if !data.is_empty() {
                    self.relay_upstream_message(&data);
                }
            }
            Carry::Initialized | Carry::Delete => {}
        }
    }

    fn on_done(&mut self, ex: ExId) {
        let Some(carry) = self.carry(ex) else { return };
        let now = self.now;
        self.forget(ex);
        match carry {
            Carry::Get => {
                let Some(h) = self.http() else { return };
                h.get_floor = None;
                let actions = h.get_failed(reconnect::Failure::Dropped, None, now);
                self.get_actions(actions);
                self.get_settled();
            }
            Carry::Post {
                initialize: true, ..
            } => self.initialize_done(),
            Carry::Post {
                request: Some(id), ..
            } => {
                // The POST ended without the reply (2025-11-25 polling): it
                // will come on the GET stream, resumed with Last-Event-ID.
                if self.pending.contains(&id) {
                    crate::log_debug!(
                        "[{}] POST stream for {id} ended before its reply; waiting on the GET stream",
                        self.cfg.name
                    );
                    self.want_get();
                }
            }
            Carry::Reinit => {
                // No JSON reply at all: treat as failed.
                if self
                    .server
                    .http()
                    .is_some_and(|h| matches!(h.phase, Phase::Reinit { .. }))
                {
                    self.reinit_done(false);
                }
            }
            Carry::LegacyStream => self.legacy_failed("the stream ended"),
            Carry::Delete => {
                if let Some(h) = self.http() {
                    h.delete_ex = None;
                }
            }
            Carry::LegacyPost { .. } => self.legacy_posted(),
            Carry::Post { request: None, .. } | Carry::Initialized => {}
        }
    }

    fn on_failed(&mut self, ex: ExId, failure: Failure) {
        let Some(carry) = self.carry(ex) else { return };
        let now = self.now;
        self.forget(ex);
        match carry {
            Carry::Post {
                request: Some(id),
                initialize,
                ..
            } => {
                if initialize {
                    self.initialize_done();
                }
                crate::log_warn!("[{}] request {id}: {}", self.cfg.name, failure.detail());
                let err = RelayError::from_http_kind(failure.kind());
                self.http_fail(
                    &id,
                    err,
                    &format!("Upstream request failed: {}", failure.detail()),
                    json!({}),
                );
            }
            Carry::Get => {
                let Some(h) = self.http() else { return };
                h.get_floor = None;
                let actions = h.get_failed(failure.for_reconnect(), None, now);
                self.get_actions(actions);
                self.get_settled();
            }
            Carry::Reinit => self.reinit_done(false),
            Carry::LegacyStream => self.legacy_failed(&failure.detail()),
            Carry::Delete => {
                if let Some(h) = self.http() {
                    h.delete_ex = None;
                }
            }
            Carry::LegacyPost { request } => {
                if let Some(id) = request {
                    let err = RelayError::from_http_kind(failure.kind());
                    self.http_fail(
                        &id,
                        err,
                        &format!("Upstream request failed: {}", failure.detail()),
                        json!({}),
                    );
                }
                self.legacy_posted();
            }
            Carry::Post { request: None, .. } | Carry::Initialized => {
                crate::log_warn!(
                    "[{}] a notification could not be delivered: {}",
                    self.cfg.name,
                    failure.detail()
                );
            }
        }
    }

    /// The client's `initialize` got its answer (or failed): what waited
    /// behind it goes out now, with the session id.
    fn initialize_done(&mut self) {
        let Some(h) = self.http() else { return };
        if !matches!(h.phase, Phase::Initializing { .. }) {
            return;
        }
        let held = h.set_phase(Phase::Ready);
        self.send_held(held);
    }

    fn forget(&mut self, ex: ExId) {
        self.oauth_forget(ex);
        if let Some(h) = self.http()
            && let Some(Carry::LegacyPost { request: Some(id) }) = h.carries.get(&ex).cloned()
        {
            h.by_request.remove(&id);
            h.carries.remove(&ex);
            return;
        }
        if let Some(h) = self.http()
            && let Some(Carry::Post {
                request: Some(id), ..
            }) = h.carries.remove(&ex)
        {
            h.by_request.remove(&id);
        }
    }

    fn note_protocol_version(&mut self, data: &[u8]) {
        let v: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
        if let Some(pv) = v
            .pointer("/result/protocolVersion")
            .and_then(|p| p.as_str())
            && let Some(h) = self.http()
        {
            h.protocol_version = Some(pv.to_string());
        }
    }

    /// A message from the upstream, on any stream.
    fn relay_upstream_message(&mut self, data: &[u8]) {
        self.on_server_line(None, data);
    }

    fn http_fail(&mut self, id: &Id, err: RelayError, message: &str, data: serde_json::Value) {
        if let Some(h) = self.http() {
            h.by_request.remove(id);
        }
        // The era pieces read a failed probe, discover or initialize of
        // their own as the server's error answer.
        let line = jsonrpc::error_response(Some(id), err.code(), message, data.clone());
        if self.http_era_response(id, &line) {
            return;
        }
        self.fail_request(id, err, message, data);
    }
}
