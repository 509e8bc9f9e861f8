//! `reverse --oauth-issuer`: the relay as an OAuth protected resource
//! (issue 14). The decisions are `crate::auth`'s; this file carries them
//! out: it answers the RFC 9728 metadata, checks each request's bearer
//! token (or the static `--auth-token-file` tokens), and runs the fetches of
//! the authorization server's metadata and JWKS on HTTP client engines of
//! the loop's own (`upstream::http`), so no fetch ever blocks the loop.
//!
//! - Engines: slot 0 fetches the metadata (the issuer's origin), slot 1 the
//!   JWKS (the `jwks_uri`'s origin), slot 2 introspects. Their HTTP tags
//!   are the top three of the token space, which no upstream reaches
//!   (`--config` upstreams are numbered from 0).
//! - Until the first JWKS is loaded, and while a refetch for an unknown
//!   `kid` runs, a request with a JWT gets 503 with `Retry-After: 1`
//!   (not parked: nothing is held per waiting request).
//! - `--oauth-introspection-url`: slot 2 POSTs opaque tokens to the RFC
//!   7662 endpoint; the requests waiting for an answer are held
//!   (`oauth_held.rs`), bounded by `auth::introspect`.

use crate::vecmap::VecMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::Token;

use super::Reverse;
use crate::auth::keys::Doc;
use crate::auth::{Authority, MAX_DOCUMENT, OAuthOptions, Verdict};
use crate::io::dns::Resolver;
use crate::io::ratelog::RateLog;
use crate::policy::backoff::Rng;
use crate::proto::http1::Request;
use crate::upstream::http::{Event, ExId, HttpClient, HttpConfig};
use crate::upstream::url::Url;

/// Engine slots: metadata, JWKS, introspection.
const SLOTS: usize = 3;
const INTROSPECTION: usize = 2;

/// HTTP tag of engine slot 0; the others follow (up to the last tag).
const FIRST_TAG: usize = (1 << crate::reactor::token::HTTP_TAG_BITS) - SLOTS;

/// Whether an HTTP tag (or resolver id) is one of the OAuth engines'.
pub(super) fn is_oauth_tag(tag: usize) -> bool {
    (FIRST_TAG..FIRST_TAG + SLOTS).contains(&tag)
}

/// What the token check says of a request.
pub(super) enum Authn {
    /// Go on, bound to this (None: no auth configured, or admin).
    Go(Option<usize>),
    /// Refused; the answer is written.
    Answered,
    /// Held until its token's introspection ends (`oauth_held.rs`).
    Held,
}

type IntroKey = crate::auth::introspect::Key;
/// An introspection's response (status, body) or why it failed.
type IntroResult = Result<(u16, Vec<u8>), String>;

/// An introspection in flight: its token's hash and the response so far.
struct Introspecting {
    key: crate::auth::introspect::Key,
    status: u16,
    body: Vec<u8>,
}

/// The introspection endpoint and the relay's credentials there.
struct IntrospectionEndpoint {
    url: Url,
    /// `Authorization` header value (client_secret_basic).
    credentials: String,
}

/// A fetch in flight: what it is for, and its response so far.
struct InFlight {
    doc: Doc,
    status: u16,
    body: Vec<u8>,
}

/// One engine and the origin (`scheme://host:port`) it talks to.
struct Engine {
    origin: String,
    client: HttpClient,
}

pub(super) struct OAuth {
    pub(super) auth: Authority,
    tls: Option<Arc<rustls::ClientConfig>>,
    ca_file: Option<std::path::PathBuf>,
    engines: [Option<Engine>; SLOTS],
    /// Key and metadata fetches in flight: one per slot at most.
    fetches: VecMap<(usize, ExId), InFlight>,
    endpoint: Option<IntrospectionEndpoint>,
    /// At most the introspector's `max_inflight`.
    introspecting: VecMap<ExId, Introspecting>,
    pub(super) intro_log: RateLog,
    evict_log: RateLog,
    /// Wall-clock time at `base`: `unix` is derived from the loop's `now`
    /// so the clock is still read once per turn.
    base: Instant,
    base_unix: u64,
    reject_log: RateLog,
    fetch_log: RateLog,
}

fn origin_of(u: &Url) -> String {
    format!(
        "{}://{}:{}",
        if u.tls { "https" } else { "http" },
        u.host,
        u.port
    )
}

impl OAuth {
    pub(super) fn new(opts: &OAuthOptions, now: Instant) -> Result<OAuth, String> {
        let auth = Authority::new(opts, now)?;
        let endpoint = match &opts.introspection {
            None => None,
            Some(i) => {
                let secret = std::fs::read_to_string(&i.secret_file).map_err(|e| {
                    format!(
                        "--oauth-introspection-secret-file {}: {e}",
                        i.secret_file.display()
                    )
                })?;
                let secret = secret.trim();
                if secret.is_empty() {
                    return Err(format!(
                        "--oauth-introspection-secret-file {}: empty",
                        i.secret_file.display()
                    ));
                }
                Some(IntrospectionEndpoint {
                    url: Url::parse(&i.url)
                        .map_err(|e| format!("--oauth-introspection-url: {e}"))?,
                    credentials: crate::auth::introspect::basic_credentials(&i.client_id, secret),
                })
            }
        };
        let base_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(OAuth {
            auth,
            tls: None,
            ca_file: opts.ca_file.clone(),
            engines: [None, None, None],
            fetches: VecMap::new(),
            endpoint,
            introspecting: VecMap::new(),
            intro_log: RateLog::default(),
            evict_log: RateLog::default(),
            base: now,
            base_unix,
            reject_log: RateLog::default(),
            fetch_log: RateLog::default(),
        })
    }

    pub(super) fn unix(&self, now: Instant) -> u64 {
        self.base_unix + now.saturating_duration_since(self.base).as_secs()
    }

    fn tls(&mut self) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(t) = &self.tls {
            return Ok(t.clone());
        }
        let t = crate::io::transport::tls_config(self.ca_file.as_deref())?;
        self.tls = Some(t.clone());
        Ok(t)
    }

    /// The engine for `url` in `slot`, replaced when the origin changed.
    /// `Ok(true)`: a new engine whose host must be resolved.
    fn engine_for(&mut self, slot: usize, url: &Url, reg: &mio::Registry) -> Result<bool, String> {
        let origin = origin_of(url);
        if self.engines[slot]
            .as_ref()
            .is_some_and(|e| e.origin == origin)
        {
            return Ok(false);
        }
        if let Some(mut old) = self.engines[slot].take() {
            old.client.close_all(reg);
            self.fetches.retain(|(s, _), _| *s != slot);
        }
        let tls = if url.tls { Some(self.tls()?) } else { None };
        let mut headers = vec![("accept".to_string(), "application/json".to_string())];
        let introspection = slot == INTROSPECTION;
        if introspection && let Some(e) = &self.endpoint {
            headers.push((
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ));
            headers.push(("authorization".into(), e.credentials.clone()));
        }
        // An introspection holds client requests: it is bounded tighter
        // (INTROSPECTION_MAX_TIME from submission).
        let cfg = HttpConfig {
            url: url.clone(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(if introspection { 5 } else { 10 }),
            response_timeout: Duration::from_secs(if introspection { 5 } else { 10 }),
            max_request_time: if introspection {
                crate::auth::INTROSPECTION_MAX_TIME
            } else {
                Duration::from_secs(30)
            },
            max_connections: if introspection { 4 } else { 1 },
            idle_timeout: Duration::from_secs(60),
            headers,
            retries: 1,
            retry_base: Duration::from_millis(250),
            retry_cap: Duration::from_secs(2),
            max_message_size: MAX_DOCUMENT,
            tls,
        };
        let client = HttpClient::new(cfg, FIRST_TAG + slot, Rng::from_os())?;
        self.engines[slot] = Some(Engine { origin, client });
        Ok(true)
    }

    pub(super) fn render(&self, out: &mut String) {
        let keys = self.auth.source.keys().map_or(0, |k| k.keys.len());
        self.auth
            .stats
            .render(out, keys, self.auth.source.refetches);
        if let Some(i) = &self.auth.introspection {
            i.render(out);
        }
    }
}

impl Reverse {
    /// Serves the RFC 9728 document on its paths; true if it did. Public:
    /// served before the Origin and token checks.
    pub(super) fn oauth_metadata(&mut self, tok: Token, req: &Request, path: &str) -> bool {
        let Some(doc) = self
            .oauth
            .as_ref()
            .and_then(|o| o.auth.document_at(path))
            .map(<[u8]>::to_vec)
        else {
            return false;
        };
        let ka = req.keep_alive;
        if req.method != "GET" {
            self.respond(tok, 405, &[("allow", "GET")], b"method not allowed\n", ka);
            return true;
        }
        self.respond(
            tok,
            200,
            &[
                ("content-type", "application/json"),
                ("cache-control", "max-age=300"),
                ("access-control-allow-origin", "*"),
            ],
            &doc,
            ka,
        );
        true
    }

    /// Checks a request's credentials: go on with the session binding (the
    /// static token's index or the token subject's principal), refused
    /// (answered here), or held for an introspection.
    pub(super) fn authenticate(&mut self, tok: Token, req: &Request, admin: bool) -> Authn {
        if admin {
            return Authn::Go(None);
        }
        let ka = req.keep_alive;
        if let Some(tokens) = &self.tokens {
            return match tokens.check(req.header("authorization")) {
                Some(i) => Authn::Go(Some(i)),
                None => {
                    self.respond(
                        tok,
                        401,
                        &[("www-authenticate", "Bearer realm=\"mcp-relay\"")],
                        b"missing or invalid bearer token\n",
                        ka,
                    );
                    Authn::Answered
                }
            };
        }
        let now = self.now;
        let Some(o) = self.oauth.as_mut() else {
            return Authn::Go(None);
        };
        let unix = o.unix(now);
        let verdict = o
            .auth
            .authorize(req.header("authorization"), now, unix, tok.0);
        if matches!(verdict, Verdict::Held) {
            return Authn::Held;
        }
        match self.oauth_answer(tok, ka, verdict) {
            Some(principal) => Authn::Go(Some(principal)),
            None => Authn::Answered,
        }
    }

    /// Carries out a verdict: `Some(principal)` to go on, else answered.
    pub(super) fn oauth_answer(&mut self, tok: Token, ka: bool, verdict: Verdict) -> Option<usize> {
        let now = self.now;
        let o = self.oauth.as_mut()?;
        match verdict {
            Verdict::Allow { principal } => Some(principal),
            Verdict::Deny {
                status,
                challenge,
                body,
                why,
            } => {
                if let Some(n) = o.reject_log.check(now) {
                    crate::log_info!("oauth: {status} {why} ({n} similar not logged)");
                }
                self.respond(
                    tok,
                    status,
                    &[
                        ("www-authenticate", challenge.as_str()),
                        ("content-type", "text/plain"),
                    ],
                    body.as_bytes(),
                    ka,
                );
                None
            }
            Verdict::Unavailable(cause) => {
                if let Some(n) = o.reject_log.check(now) {
                    if cause == "keys" {
                        let why = o.auth.source.last_error().unwrap_or("being fetched");
                        crate::log_warn!(
                            "oauth: 503, no key to check the token with yet: {why} ({n} similar not logged)"
                        );
                    } else {
                        crate::log_warn!(
                            "oauth: 503, token introspection unavailable ({cause}) ({n} similar not logged)"
                        );
                    }
                }
                let body: &[u8] = if cause == "keys" {
                    b"authorization keys not available yet\n"
                } else {
                    b"token introspection not available now\n"
                };
                self.respond(
                    tok,
                    503,
                    &[("retry-after", "1"), ("content-type", "text/plain")],
                    body,
                    ka,
                );
                None
            }
            Verdict::Held => {
                // Only `authenticate` holds; a verdict passed on here is final.
                self.respond(
                    tok,
                    503,
                    &[("retry-after", "1"), ("content-type", "text/plain")],
                    b"token introspection not available now\n",
                    ka,
                );
                None
            }
        }
    }

    /// Starts due fetches, runs the engines' deadlines and backlogs, and
    /// hands finished fetches to the key source. Once per turn.
    pub(super) fn oauth_poll(&mut self) {
        let now = self.now;
        let Some(o) = self.oauth.as_mut() else {
            return;
        };
        let reg = self.poll.registry();
        for e in o.engines.iter_mut().flatten() {
            if e.client.next_deadline().is_some_and(|d| d <= now) {
                e.client.poll(reg, now);
            }
            if e.client.has_backlog() {
                e.client.read_backlog(reg, now);
            }
        }
        while let Some(fetch) = o.auth.source.next_fetch(now) {
            let slot = match fetch.doc {
                Doc::Metadata(_) => 0,
                Doc::Jwks => 1,
            };
            let url = match Url::parse(&fetch.url) {
                Ok(u) => u,
                Err(e) => {
                    let why = o.auth.source.on_failure(fetch.doc, &e, now);
                    crate::log_warn!("oauth: {why}");
                    continue;
                }
            };
            let fresh = match o.engine_for(slot, &url, reg) {
                Ok(f) => f,
                Err(e) => {
                    let why = o.auth.source.on_failure(fetch.doc, &e, now);
                    crate::log_warn!("oauth: {why}");
                    continue;
                }
            };
            if fresh {
                if self.resolver.is_none() {
                    match Resolver::new(reg, crate::reactor::RESOLVER_TOKEN) {
                        Ok(r) => self.resolver = Some(r),
                        Err(e) => {
                            let why = o.auth.source.on_failure(fetch.doc, &e.to_string(), now);
                            crate::log_warn!("oauth: {why}");
                            continue;
                        }
                    }
                }
                if let Some(r) = self.resolver.as_mut() {
                    r.resolve((FIRST_TAG + slot) as u64, url.host.clone(), url.port);
                }
            }
            let Some(e) = o.engines[slot].as_mut() else {
                continue;
            };
            let req = crate::upstream::http::Request {
                method: "GET",
                target: url.target.clone(),
                headers: Vec::new(),
                body: Vec::new(),
                stream: false,
            };
            let ex = e.client.submit(req, reg, now);
            crate::log_debug!("oauth: fetching {} {}", fetch.doc.label(), fetch.url);
            o.fetches.insert(
                (slot, ex),
                InFlight {
                    doc: fetch.doc,
                    status: 0,
                    body: Vec::new(),
                },
            );
        }
        self.introspections_start();
        self.oauth_drain();
    }

    /// Sends the introspections the requests of this turn asked for. One
    /// that cannot be sent ends at once (its requests get 503).
    fn introspections_start(&mut self) {
        let now = self.now;
        let Some(o) = self.oauth.as_mut() else {
            return;
        };
        let reg = self.poll.registry();
        let mut ended = Vec::new();
        while let Some(start) = o.auth.introspection.as_mut().and_then(|i| i.next_start()) {
            let Some(url) = o.endpoint.as_ref().map(|e| e.url.clone()) else {
                ended.push((start.key, "no introspection endpoint".to_string()));
                continue;
            };
            let fresh = match o.engine_for(INTROSPECTION, &url, reg) {
                Ok(f) => f,
                Err(e) => {
                    ended.push((start.key, e));
                    continue;
                }
            };
            if fresh {
                if self.resolver.is_none() {
                    match Resolver::new(reg, crate::reactor::RESOLVER_TOKEN) {
                        Ok(r) => self.resolver = Some(r),
                        Err(e) => {
                            o.engines[INTROSPECTION] = None;
                            ended.push((start.key, e.to_string()));
                            continue;
                        }
                    }
                }
                if let Some(r) = self.resolver.as_mut() {
                    r.resolve(
                        (FIRST_TAG + INTROSPECTION) as u64,
                        url.host.clone(),
                        url.port,
                    );
                }
            }
            let Some(e) = o.engines[INTROSPECTION].as_mut() else {
                ended.push((start.key, "no engine".to_string()));
                continue;
            };
            let req = crate::upstream::http::Request {
                method: "POST",
                target: url.target.clone(),
                headers: Vec::new(),
                body: start.body,
                stream: false,
            };
            let ex = e.client.submit(req, reg, now);
            o.introspecting.insert(
                ex,
                Introspecting {
                    key: start.key,
                    status: 0,
                    body: Vec::new(),
                },
            );
        }
        for (key, why) in ended {
            self.introspection_ended(&key, Err(&why));
        }
    }

    /// An introspection's answer (or failure) to the requests held for it.
    fn introspection_ended(
        &mut self,
        key: &crate::auth::introspect::Key,
        response: Result<(u16, &[u8]), &str>,
    ) {
        let now = self.now;
        let Some(o) = self.oauth.as_mut() else {
            return;
        };
        let unix = o.unix(now);
        let evicted = |o: &OAuth| {
            o.auth
                .introspection
                .as_ref()
                .map_or(0, |i| i.stats.evictions)
        };
        let before = evicted(o);
        let (verdict, waiters, failed) = o.auth.introspected(key, response, now, unix);
        if evicted(o) > before
            && let Some(n) = o.evict_log.check(now)
        {
            crate::log_info!(
                "oauth: introspection cache full ({} answers): the least recently used pushed out \
                 ({n} similar not logged)",
                crate::auth::INTROSPECTION_CACHE_ENTRIES
            );
        }
        if let Some(why) = failed
            && let Some(n) = o.intro_log.check(now)
        {
            crate::log_warn!(
                "oauth: token introspection failed: {why}; {} request(s) answered 503 \
                 ({n} similar not logged)",
                waiters.len()
            );
        }
        self.resume_held(waiters, verdict);
    }

    /// Readiness of an OAuth engine's connection.
    pub(super) fn oauth_event(&mut self, tag: usize, conn: u64, readable: bool, writable: bool) {
        let now = self.now;
        let reg = self.poll.registry();
        if let Some(e) = self
            .oauth
            .as_mut()
            .and_then(|o| o.engines.get_mut(tag - FIRST_TAG))
            .and_then(Option::as_mut)
        {
            e.client.on_ready(conn, readable, writable, reg, now);
        }
        self.oauth_drain();
    }

    /// The resolver's answer for an OAuth engine.
    pub(super) fn oauth_resolved(
        &mut self,
        tag: usize,
        answer: Result<Vec<std::net::SocketAddr>, String>,
    ) {
        let now = self.now;
        let reg = self.poll.registry();
        let slot = tag - FIRST_TAG;
        let mut failed = false;
        if let Some(e) = self
            .oauth
            .as_mut()
            .and_then(|o| o.engines.get_mut(slot))
            .and_then(Option::as_mut)
        {
            match answer {
                Ok(addrs) if !addrs.is_empty() => e.client.set_addrs(addrs, reg, now),
                Ok(_) => {
                    e.client.resolve_failed("no addresses");
                    failed = true;
                }
                Err(why) => {
                    e.client.resolve_failed(&why);
                    failed = true;
                }
            }
        }
        self.oauth_drain();
        if failed {
            // The engine is dropped so that the retry resolves the name
            // again (an engine resolves once, when it is made).
            if let Some(o) = self.oauth.as_mut()
                && let Some(slot) = o.engines.get_mut(slot)
            {
                *slot = None;
            }
        }
    }

    fn oauth_drain(&mut self) {
        let now = self.now;
        let Some(o) = self.oauth.as_mut() else {
            return;
        };
        let mut ended: Vec<(IntroKey, IntroResult)> = Vec::new();
        for slot in 0..SLOTS {
            let mut events = Vec::new();
            if let Some(e) = o.engines[slot].as_mut() {
                e.client.take_events(&mut events);
            }
            if slot == INTROSPECTION {
                for ev in events {
                    let ex = ev.ex();
                    match ev {
                        Event::Head { status, .. } => {
                            if let Some(f) = o.introspecting.get_mut(&ex) {
                                f.status = status;
                            }
                        }
                        Event::Message { data, .. } => {
                            if let Some(f) = o.introspecting.get_mut(&ex) {
                                f.body = data;
                            }
                        }
                        Event::Done { .. } => {
                            if let Some(f) = o.introspecting.remove(&ex) {
                                ended.push((f.key, Ok((f.status, f.body))));
                            }
                        }
                        Event::Failed { failure, .. } => {
                            if let Some(f) = o.introspecting.remove(&ex) {
                                ended.push((f.key, Err(failure.detail())));
                            }
                        }
                    }
                }
                continue;
            }
            for ev in events {
                let key = (slot, ev.ex());
                match ev {
                    Event::Head { status, .. } => {
                        if let Some(f) = o.fetches.get_mut(&key) {
                            f.status = status;
                        }
                    }
                    Event::Message { data, .. } => {
                        if let Some(f) = o.fetches.get_mut(&key) {
                            f.body = data;
                        }
                    }
                    Event::Done { .. } => {
                        let Some(f) = o.fetches.remove(&key) else {
                            continue;
                        };
                        let doc = f.doc.label();
                        match o.auth.source.on_response(f.doc, f.status, &f.body, now) {
                            Ok(()) => {
                                o.auth.stats.fetched(doc, "ok");
                                if f.doc == Doc::Jwks {
                                    let n = o.auth.source.keys().map_or(0, |k| k.keys.len());
                                    crate::log_info!("oauth: {n} verification keys loaded");
                                } else if o.auth.source.no_jwks() {
                                    crate::log_info!(
                                        "oauth: the issuer publishes no jwks_uri; every token is introspected"
                                    );
                                }
                            }
                            Err(why) => {
                                o.auth.stats.fetched(doc, "error");
                                if let Some(n) = o.fetch_log.check(now) {
                                    crate::log_warn!("oauth: {why} ({n} similar not logged)");
                                }
                            }
                        }
                    }
                    Event::Failed { failure, .. } => {
                        let Some(f) = o.fetches.remove(&key) else {
                            continue;
                        };
                        o.auth.stats.fetched(f.doc.label(), "error");
                        let why = o.auth.source.on_failure(f.doc, &failure.detail(), now);
                        if let Some(n) = o.fetch_log.check(now) {
                            crate::log_warn!("oauth: {why} ({n} similar not logged)");
                        }
                    }
                }
            }
        }
        for (key, r) in ended {
            match &r {
                Ok((status, body)) => self.introspection_ended(&key, Ok((*status, body))),
                Err(why) => self.introspection_ended(&key, Err(why)),
            }
        }
    }

    /// When the OAuth side next needs the loop: a fetch due, an engine's
    /// deadline, or bytes left unread (now).
    pub(super) fn oauth_deadline(&self) -> Option<Instant> {
        let o = self.oauth.as_ref()?;
        let backlog = o
            .engines
            .iter()
            .flatten()
            .any(|e| e.client.has_backlog())
            .then_some(self.now);
        o.engines
            .iter()
            .flatten()
            .filter_map(|e| e.client.next_deadline())
            .chain(o.auth.source.next_deadline())
            .chain(backlog)
            .chain(
                o.auth
                    .introspection
                    .as_ref()
                    .and_then(|i| i.has_starts().then_some(self.now)),
            )
            .min()
    }
}
