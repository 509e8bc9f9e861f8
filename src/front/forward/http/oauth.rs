//! `forward --url --oauth`: the relay as the OAuth client of its upstream
//! (issue 14). The decisions are `auth::client::flow`'s; this file carries
//! them out on the one loop:
//!
//! - messages that meet a 401 (or a 403 `insufficient_scope`), and those
//!   that arrive while a flow runs, wait in `waiting` (at most
//!   [`WAIT_CAP`]; beyond, a request is answered `unauthorized` at once)
//!   and are all sent again, in order, with the new token, or all answered
//!   with the flow's error;
//! - the flow's fetches (resource metadata, authorization server metadata,
//!   registration, token) run on an HTTP engine of their own (tag
//!   [`AUTH_TAG`]), one at a time, never with the bearer token;
//! - the loopback callback listener and its connections are endpoints of
//!   the loop's registry; a connection sends one request, gets one
//!   answer, and is closed (at most [`MAX_CALLBACK_CONNS`] at once, each
//!   given [`CALLBACK_IO`]);
//! - the browser is a child process, reaped on SIGCHLD;
//! - a refresh first takes the store's lock (`flock`, non-blocking, retried
//!   every [`LOCK_RETRY`] for up to [`LOCK_WAIT`]) and re-reads the store.
//!
//! Tokens never reach a log line; the access token is sent only in the
//! `Authorization` header of requests to the upstream's own origin.

use std::collections::{HashMap, VecDeque};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::Interest;
use mio::net::{TcpListener, TcpStream};
use serde_json::json;

use super::super::{Endpoint, Forward};
use crate::auth::client::flow::{Flow, Step};
use crate::auth::client::store::{Lock, Record, Store};
use crate::auth::client::{CALLBACK_BASE, CALLBACK_SPAN, ClientOptions, parse_challenge};
use crate::io::ratelog::RateLog;
use crate::policy::backoff::Rng;
use crate::proto::errors::RelayError;
use crate::proto::jsonrpc::Id;
use crate::upstream::http::{Event, ExId, HttpClient, HttpConfig, Request};
use crate::upstream::url::Url;
use crate::vecmap::VecMap;

#[path = "oauth_callback.rs"]
mod callback;

/// HTTP tag of the authorization engine (the upstream's is 0).
pub(in crate::front::forward) const AUTH_TAG: usize = 1;
/// Messages waiting for a token.
pub const WAIT_CAP: usize = 256;
/// Callback connections at once; more are closed on accept.
pub const MAX_CALLBACK_CONNS: usize = 16;
/// A callback connection's time to send its request.
pub const CALLBACK_IO: Duration = Duration::from_secs(10);
/// Largest callback request head.
const CALLBACK_MAX: usize = 8 << 10;
/// Retry interval and patience for the store lock.
pub const LOCK_RETRY: Duration = Duration::from_millis(50);
pub const LOCK_WAIT: Duration = Duration::from_secs(10);
/// Ports tried after the preferred callback port.
const PORT_TRIES: u16 = 20;
/// Largest document or token response read.
const MAX_DOC: usize = 256 << 10;

/// A client message waiting for (or sent with) a token.
#[derive(Debug, Clone)]
struct Waiting {
    line: Vec<u8>,
    request: Option<Id>,
    initialize: bool,
}

struct CallbackConn {
    stream: TcpStream,
    token: mio::Token,
    buf: Vec<u8>,
    deadline: Instant,
}

pub(in crate::front::forward) struct OAuthClient {
    flow: Flow,
    store: Option<Store>,
    browser: Vec<String>,
    ca_file: Option<std::path::PathBuf>,
    /// The origin the engine talks to, and the engine.
    engine: Option<(String, HttpClient)>,
    /// The one fetch in flight: its exchange, status, `WWW-Authenticate`
    /// and body so far.
    fetch: Option<(ExId, u16, Option<String>, Vec<u8>)>,
    waiting: VecDeque<Waiting>,
    /// POSTs in flight: what they carried and the token they carried.
    sent: HashMap<ExId, (Waiting, Option<String>)>,
    listener: Option<(TcpListener, mio::Token)>,
    /// At most `MAX_CALLBACK_CONNS`.
    conns: VecMap<u64, CallbackConn>,
    next_conn: u64,
    lock: Option<Lock>,
    /// Waiting for the lock since, and the next try.
    lock_wait: Option<(Instant, Instant)>,
    browsers: Vec<Child>,
    /// The access token last written to the store.
    saved: Option<String>,
    log: RateLog,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn origin(u: &Url) -> String {
    format!(
        "{}://{}:{}",
        if u.tls { "https" } else { "http" },
        u.host,
        u.port
    )
}

impl OAuthClient {
    pub(in crate::front::forward) fn new(
        url: &str,
        opts: &ClientOptions,
        ca_file: Option<std::path::PathBuf>,
    ) -> OAuthClient {
        let mut flow = Flow::new(url, opts);
        let dir = opts.store_dir.clone().or_else(Store::default_dir);
        let store = match dir {
            Some(d) => Some(Store::new(d)),
            None => {
                crate::log_warn!(
                    "oauth: no HOME or XDG_CONFIG_HOME and no --oauth-store: tokens are kept in \
                     memory only"
                );
                None
            }
        };
        let mut saved = None;
        if let Some(rec) = store.as_ref().and_then(|s| s.find(flow.url())) {
            crate::log_info!(
                "oauth: using the stored authorization for {} from {}",
                rec.resource,
                rec.meta.issuer
            );
            saved = rec.tokens.as_ref().map(|t| t.access.clone());
            flow.restore(rec.resource, rec.meta, rec.reg, rec.tokens, rec.port);
        }
        OAuthClient {
            flow,
            store,
            browser: opts.browser.clone(),
            ca_file,
            engine: None,
            fetch: None,
            waiting: VecDeque::new(),
            sent: HashMap::new(),
            listener: None,
            conns: VecMap::new(),
            next_conn: 1,
            lock: None,
            lock_wait: None,
            browsers: Vec::new(),
            saved,
            log: RateLog::default(),
        }
    }

    /// The `Authorization` header of requests to the upstream.
    pub(in crate::front::forward) fn header(&self) -> Option<(String, String)> {
        self.flow
            .bearer()
            .map(|t| ("authorization".to_string(), format!("Bearer {t}")))
    }

    pub(in crate::front::forward) fn next_deadline(&self) -> Option<Instant> {
        let engine = self.engine.as_ref().and_then(|(_, e)| e.next_deadline());
        let lock = self.lock_wait.map(|(_, next)| next);
        let conns = self.conns.values().map(|c| c.deadline).min();
        [engine, lock, conns, self.flow.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    pub(in crate::front::forward) fn has_backlog(&self) -> bool {
        self.engine.as_ref().is_some_and(|(_, e)| e.has_backlog())
    }

    fn record(&self) -> Option<Record> {
        Some(Record {
            url: self.flow.url().to_string(),
            resource: self.flow.resource().to_string(),
            meta: self.flow.meta.clone()?,
            reg: self.flow.reg.clone(),
            tokens: self.flow.tokens.clone(),
            port: self.flow.port,
            saved_at: unix_now(),
        })
    }
}

impl Forward {
    fn oauth(&mut self) -> Option<&mut OAuthClient> {
        self.server.http_mut().and_then(|h| h.oauth.as_deref_mut())
    }

    /// Before a client message is POSTed: true if it must wait for a token
    /// (a flow is running, or the token is due for a refresh).
    pub(super) fn oauth_hold(
        &mut self,
        line: &[u8],
        request: &Option<Id>,
        initialize: bool,
    ) -> bool {
        let now_unix = unix_now();
        let Some(o) = self.oauth() else { return false };
        let due = o.flow.refresh_due(now_unix);
        if !o.flow.busy() && !due && o.lock_wait.is_none() {
            return false;
        }
        self.oauth_wait(Waiting {
            line: line.to_vec(),
            request: request.clone(),
            initialize,
        });
        if due {
            self.oauth_step(Step::Refresh);
        }
        true
    }

    /// `auth login`: a full authorization now, whatever is stored; the
    /// relay exits when it is over.
    pub(in crate::front::forward) fn oauth_login(&mut self) {
        let Some(o) = self.oauth() else { return };
        let step = o.flow.login();
        self.oauth_step(step);
    }

    /// `auth login` is over: say so and exit.
    fn login_done(&mut self, result: Result<(), String>) {
        if !self.cfg.login {
            return;
        }
        let Some(o) = self.oauth() else { return };
        let (issuer, scope) = (
            o.flow
                .meta
                .as_ref()
                .map(|m| m.issuer.clone())
                .unwrap_or_default(),
            o.flow
                .tokens
                .as_ref()
                .map(|t| t.scope.clone())
                .unwrap_or_default(),
        );
        let resource = o.flow.resource().to_string();
        match result {
            Ok(()) => {
                eprintln!("mcp-relay: logged in to {resource} (issuer {issuer}, scope {scope:?})");
                self.exit_code = Some(0);
            }
            Err(why) => {
                eprintln!("mcp-relay: login to {resource} failed: {why}");
                self.exit_code = Some(1);
            }
        }
        self.begin_close();
    }

    /// Queues a message for the token, or refuses it when the queue is full.
    fn oauth_wait(&mut self, w: Waiting) {
        let now = self.now;
        let name = self.cfg.name.clone();
        let Some(o) = self.oauth() else { return };
        if o.waiting.len() < WAIT_CAP {
            o.waiting.push_back(w);
            return;
        }
        if let Some(n) = o.log.check(now) {
            crate::log_warn!(
                "[{name}] {WAIT_CAP} messages already wait for authorization: refusing more \
                 ({n} similar not logged)"
            );
        }
        if let Some(id) = w.request {
            self.fail_request(
                &id,
                RelayError::Unauthorized,
                "Too many requests are waiting for the authorization to finish",
                json!({"waiting": WAIT_CAP}),
            );
        }
    }

    /// A POST went out: remember what it carried, for a retry after a 401.
    pub(super) fn oauth_sent(
        &mut self,
        ex: ExId,
        line: &[u8],
        request: Option<Id>,
        initialize: bool,
    ) {
        let Some(o) = self.oauth() else { return };
        let token = o.flow.bearer().map(str::to_owned);
        o.sent.insert(
            ex,
            (
                Waiting {
                    line: line.to_vec(),
                    request,
                    initialize,
                },
                token,
            ),
        );
    }

    /// The exchange is over (answered, failed, forgotten).
    pub(super) fn oauth_forget(&mut self, ex: ExId) {
        if let Some(o) = self.oauth() {
            o.sent.remove(&ex);
        }
    }

    /// A POST's status. True if the relay takes it over (a 401, or a 403
    /// asking for more scope): the message waits for a token.
    pub(super) fn oauth_status(
        &mut self,
        ex: ExId,
        status: u16,
        headers: &[(String, String)],
    ) -> bool {
        let now = self.now;
        let Some(o) = self.oauth() else { return false };
        if (200..300).contains(&status) {
            o.sent.remove(&ex);
            o.flow.on_success();
            return false;
        }
        let challenge = headers
            .iter()
            .find(|(k, _)| k == "www-authenticate")
            .map(|(_, v)| parse_challenge(v))
            .unwrap_or_default();
        let ours = status == 401
            || (status == 403 && challenge.error.as_deref() == Some("insufficient_scope"));
        if !ours {
            return false;
        }
        let Some((w, token)) = o.sent.remove(&ex) else {
            return false;
        };
        crate::log_info!(
            "oauth: the upstream answered {status}{}",
            challenge
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
        let step = o.flow.on_denied(status, &challenge, token.as_deref(), now);
        self.forget(ex);
        self.oauth_wait(w);
        self.oauth_step(step);
        true
    }

    /// The GET stream got 401: true if the relay takes it over (renews the
    /// token when it can; the stream reconnects through its backoff rather
    /// than being given up for good).
    pub(super) fn oauth_get_refused(&mut self) -> bool {
        let Some(o) = self.oauth() else { return false };
        // Once per episode: a token refused right after its refresh waits
        // for a request's 401 to climb further (no refresh loop).
        let can_refresh = !o.flow.busy()
            && o.lock_wait.is_none()
            && o.flow.attempt() == crate::auth::client::flow::Attempt::None
            && o.flow.tokens.as_ref().is_some_and(|t| t.refresh.is_some());
        if can_refresh {
            crate::log_info!("oauth: the GET stream got 401; refreshing the token");
            self.oauth_step(Step::Refresh);
        }
        true
    }

    /// A request's response timeout fired: true if it was waiting here.
    pub(super) fn oauth_cancel(&mut self, id: &Id) -> bool {
        let Some(o) = self.oauth() else { return false };
        let before = o.waiting.len();
        o.waiting.retain(|w| w.request.as_ref() != Some(id));
        before != o.waiting.len()
    }

    /// Carries out what the flow asked for, and what that leads to.
    fn oauth_step(&mut self, step: Step) {
        let mut next = Some(step);
        while let Some(step) = next.take() {
            next = self.oauth_one(step);
        }
        // The lock serializes refreshes only: released once none runs.
        if let Some(o) = self.oauth()
            && o.flow.stage_name() != "refreshing"
            && o.lock_wait.is_none()
        {
            o.lock = None;
        }
    }

    fn oauth_one(&mut self, step: Step) -> Option<Step> {
        let now = self.now;
        let name = self.cfg.name.clone();
        match step {
            Step::Wait => None,
            Step::Fetch(f) => self.oauth_fetch(f),
            Step::Listen { preferred } => {
                let o = self.oauth()?;
                let mut bound = None;
                let mut last_err = String::new();
                for n in 0..PORT_TRIES {
                    let port = CALLBACK_BASE
                        + (preferred.saturating_sub(CALLBACK_BASE) + n) % CALLBACK_SPAN;
                    match TcpListener::bind(([127, 0, 0, 1], port).into()) {
                        Ok(l) => {
                            bound = Some((l, port));
                            break;
                        }
                        Err(e) => last_err = format!("127.0.0.1:{port}: {e}"),
                    }
                }
                let Some((mut l, port)) = bound else {
                    return Some(o.flow.abort(
                        format!("no free callback port near {preferred}: {last_err}"),
                        now,
                    ));
                };
                if port != preferred {
                    crate::log_info!("oauth: callback port {preferred} is taken; using {port}");
                }
                let tok = self.endpoints.insert(Endpoint::OAuthListener);
                if let Err(e) = self
                    .poll
                    .registry()
                    .register(&mut l, tok, Interest::READABLE)
                {
                    self.endpoints.remove(tok);
                    let o = self.oauth()?;
                    return Some(o.flow.abort(format!("callback listener: {e}"), now));
                }
                let o = self.oauth()?;
                o.listener = Some((l, tok));
                Some(o.flow.listening(port, now))
            }
            Step::Browse { url } => {
                let o = self.oauth()?;
                // For headless use the URL is always printed.
                eprintln!(
                    "mcp-relay: [{name}] authorization needed: open this URL in a browser to \
                     approve access:\n{url}"
                );
                let mut cmd = Command::new(&o.browser[0]);
                cmd.args(&o.browser[1..])
                    .arg(&url)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null());
                match cmd.spawn() {
                    Ok(child) => o.browsers.push(child),
                    Err(e) => crate::log_warn!(
                        "oauth: could not start the browser ({:?}): {e}; open the URL above by hand",
                        o.browser[0]
                    ),
                }
                None
            }
            Step::Refresh => {
                let o = self.oauth()?;
                if o.lock.is_none() {
                    let (issuer, resource) = match &o.flow.meta {
                        Some(m) => (m.issuer.clone(), o.flow.resource().to_string()),
                        None => return Some(o.flow.start_refresh(now)),
                    };
                    match o.store.as_ref().map(|s| s.try_lock(&issuer, &resource)) {
                        None => {}
                        Some(Ok(Some(lock))) => o.lock = Some(lock),
                        Some(Ok(None)) => {
                            let since = o.lock_wait.map_or(now, |(s, _)| s);
                            if now.saturating_duration_since(since) < LOCK_WAIT {
                                o.lock_wait = Some((since, now + LOCK_RETRY));
                                return None;
                            }
                            crate::log_warn!(
                                "oauth: the store lock is still held after {LOCK_WAIT:?}; \
                                 refreshing without it"
                            );
                        }
                        Some(Err(e)) => {
                            crate::log_warn!(
                                "oauth: cannot lock the token store: {e}; refreshing without it"
                            )
                        }
                    }
                    o.lock_wait = None;
                    // Another relay may have refreshed while we waited.
                    if let Some(rec) = o.store.as_ref().and_then(|s| s.load(&issuer, &resource))
                        && let Some(t) = rec.tokens
                        && Some(t.access.as_str()) != o.flow.bearer()
                    {
                        o.saved = Some(t.access.clone());
                        o.flow.adopt(t);
                        if !o.flow.refresh_due(unix_now()) {
                            crate::log_info!("oauth: another relay refreshed the token; using it");
                            return Some(Step::Authorized);
                        }
                    }
                }
                o.lock_wait = None;
                Some(o.flow.start_refresh(now))
            }
            Step::Authorized => {
                self.oauth_close_listener();
                let o = self.oauth()?;
                if o.flow.bearer().is_some() && o.flow.bearer() != o.saved.as_deref() {
                    let scope = o
                        .flow
                        .tokens
                        .as_ref()
                        .map(|t| t.scope.clone())
                        .unwrap_or_default();
                    crate::log_info!(
                        "oauth: authorized for {} (scope {scope:?})",
                        o.flow.resource()
                    );
                    if let (Some(store), Some(rec)) = (o.store.as_ref(), o.record()) {
                        match store.save(&rec) {
                            Ok(p) => crate::log_debug!("oauth: tokens stored in {}", p.display()),
                            Err(e) => crate::log_warn!(
                                "oauth: cannot write the token store in {}: {e}",
                                store.dir().display()
                            ),
                        }
                    }
                    o.saved = o.flow.bearer().map(str::to_owned);
                }
                let waiting: Vec<Waiting> = o.waiting.drain(..).collect();
                for w in waiting {
                    self.post_now(w.line, w.request, w.initialize);
                }
                self.login_done(Ok(()));
                None
            }
            Step::Failed(why) => {
                self.oauth_close_listener();
                crate::log_warn!("[{name}] oauth: {why}");
                let o = self.oauth()?;
                let waiting: Vec<Waiting> = o.waiting.drain(..).collect();
                for w in waiting {
                    if let Some(id) = &w.request {
                        self.http_fail(
                            id,
                            RelayError::Unauthorized,
                            &format!("Authorization failed: {why}"),
                            json!({}),
                        );
                    }
                    if w.initialize {
                        self.initialize_done();
                    }
                }
                self.login_done(Err(why));
                None
            }
        }
    }

    /// Submits one of the flow's fetches on the authorization engine.
    fn oauth_fetch(&mut self, f: crate::auth::client::flow::Fetch) -> Option<Step> {
        let now = self.now;
        let reg = self.poll.registry();
        let h = self.server.http_mut()?;
        let o = h.oauth.as_deref_mut()?;
        let url = match Url::parse(&f.url) {
            Ok(u) => u,
            Err(e) => return Some(o.flow.on_fetch_failed(&e, now, unix_now())),
        };
        let want = origin(&url);
        if o.engine.as_ref().is_none_or(|(have, _)| *have != want) {
            if let Some((_, mut old)) = o.engine.take() {
                old.close_all(reg);
            }
            let tls = if url.tls {
                match crate::io::transport::tls_config(o.ca_file.as_deref()) {
                    Ok(t) => Some(t),
                    Err(e) => return Some(o.flow.on_fetch_failed(&e, now, unix_now())),
                }
            } else {
                None
            };
            let cfg = HttpConfig {
                url: url.clone(),
                connect_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(10),
                response_timeout: Duration::from_secs(30),
                max_request_time: Duration::from_secs(60),
                max_connections: 1,
                idle_timeout: Duration::from_secs(30),
                headers: Vec::new(),
                retries: 1,
                retry_base: Duration::from_millis(250),
                retry_cap: Duration::from_secs(2),
                max_message_size: MAX_DOC,
                tls,
            };
            let mut client = match HttpClient::new(cfg, AUTH_TAG, Rng::from_os()) {
                Ok(c) => c,
                Err(e) => return Some(o.flow.on_fetch_failed(&e, now, unix_now())),
            };
            client.keep_error_bodies();
            o.engine = Some((want, client));
            h.resolver
                .resolve(AUTH_TAG as u64, url.host.clone(), url.port);
        }
        let (_, engine) = o.engine.as_mut()?;
        crate::log_debug!("oauth: {} {}", f.method, f.url);
        let req = Request {
            method: f.method,
            target: url.target.clone(),
            headers: f.headers,
            body: f.body,
            stream: false,
        };
        let ex = engine.submit(req, reg, now);
        o.fetch = Some((ex, 0, None, Vec::new()));
        None
    }

    /// The resolver's answer for the authorization engine.
    pub(super) fn oauth_resolved(&mut self, answer: Result<Vec<std::net::SocketAddr>, String>) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some((_, e)) = self
            .server
            .http_mut()
            .and_then(|h| h.oauth.as_deref_mut())
            .and_then(|o| o.engine.as_mut())
        else {
            return;
        };
        match answer {
            Ok(a) if !a.is_empty() => e.set_addrs(a, reg, now),
            Ok(_) => e.resolve_failed("no addresses"),
            Err(why) => e.resolve_failed(&why),
        }
        self.oauth_drain();
    }

    /// Readiness on one of the authorization engine's connections.
    pub(in crate::front::forward) fn oauth_engine_event(&mut self, conn: u64, r: bool, w: bool) {
        let now = self.now;
        let reg = self.poll.registry();
        if let Some((_, e)) = self
            .server
            .http_mut()
            .and_then(|h| h.oauth.as_deref_mut())
            .and_then(|o| o.engine.as_mut())
        {
            e.on_ready(conn, r, w, reg, now);
        }
        self.oauth_drain();
    }

    fn oauth_drain(&mut self) {
        let now = self.now;
        let mut steps = Vec::new();
        {
            let Some(o) = self.oauth() else { return };
            let mut events = Vec::new();
            if let Some((_, e)) = o.engine.as_mut() {
                e.take_events(&mut events);
            }
            for ev in events {
                let Some((ex, status, challenge, body)) = o.fetch.as_mut() else {
                    continue;
                };
                if ev.ex() != *ex {
                    continue;
                }
                match ev {
                    Event::Head {
                        status: s, headers, ..
                    } => {
                        *status = s;
                        let all: Vec<&str> = headers
                            .iter()
                            .filter(|(k, _)| k == "www-authenticate")
                            .map(|(_, v)| v.as_str())
                            .collect();
                        *challenge = (!all.is_empty()).then(|| all.join(", "));
                    }
                    Event::Message { data, .. } => {
                        if body.len() + data.len() <= MAX_DOC {
                            body.extend_from_slice(&data);
                        }
                    }
                    Event::Done { .. } => {
                        let Some((_, status, challenge, body)) = o.fetch.take() else {
                            continue;
                        };
                        steps.push(o.flow.on_response(
                            status,
                            challenge.as_deref(),
                            &body,
                            now,
                            unix_now(),
                        ));
                    }
                    Event::Failed { failure, .. } => {
                        o.fetch = None;
                        steps.push(o.flow.on_fetch_failed(&failure.detail(), now, unix_now()));
                    }
                }
            }
        }
        for s in steps {
            self.oauth_step(s);
        }
    }

    /// Deadlines: the engine's, the browser's, the lock retry, callback
    /// connections'. Once per turn.
    pub(in crate::front::forward) fn oauth_poll(&mut self) {
        let now = self.now;
        let reg = self.poll.registry();
        let Some(o) = self.server.http_mut().and_then(|h| h.oauth.as_deref_mut()) else {
            return;
        };
        if let Some((_, e)) = o.engine.as_mut() {
            if e.next_deadline().is_some_and(|d| d <= now) {
                e.poll(reg, now);
            }
            if e.has_backlog() {
                e.read_backlog(reg, now);
            }
        }
        let expired: Vec<u64> = o
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(n, _)| *n)
            .collect();
        let tick = o.flow.on_tick(now);
        let lock_due = o.lock_wait.is_some_and(|(_, next)| next <= now);
        for n in expired {
            self.oauth_close_conn(n);
        }
        self.oauth_drain();
        if let Some(s) = tick {
            self.oauth_step(s);
        }
        if lock_due {
            self.oauth_step(Step::Refresh);
        }
    }

    /// SIGCHLD: reap browser commands that exited.
    pub(in crate::front::forward) fn oauth_reap(&mut self) {
        let Some(o) = self.oauth() else { return };
        o.browsers.retain_mut(|c| match c.try_wait() {
            Ok(Some(st)) => {
                if !st.success() {
                    crate::log_warn!("oauth: the browser command exited with {st}");
                }
                false
            }
            Ok(None) => true,
            // Already reaped (by the orphan sweep): gone.
            Err(_) => false,
        });
    }

    /// Exit: what waits is answered, browser commands still running are
    /// killed and reaped.
    pub(in crate::front::forward) fn oauth_close(&mut self) {
        let Some(o) = self.oauth() else { return };
        let waiting: Vec<Waiting> = o.waiting.drain(..).collect();
        for mut c in std::mem::take(&mut o.browsers) {
            let _ = c.kill();
            let _ = c.wait();
        }
        for w in waiting {
            if let Some(id) = &w.request {
                self.fail_request(
                    id,
                    RelayError::UpstreamClosed,
                    "The relay is shutting down",
                    json!({}),
                );
            }
        }
        self.oauth_close_listener();
    }
}
