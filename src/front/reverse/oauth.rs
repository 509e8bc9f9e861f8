//! `reverse --oauth-issuer`: the relay as an OAuth protected resource
//! (issue 14). The decisions are `crate::auth`'s; this file carries them
//! out: it answers the RFC 9728 metadata, checks each request's bearer
//! token (or the static `--auth-token-file` tokens), and runs the fetches of
//! the authorization server's metadata and JWKS on HTTP client engines of
//! the loop's own (`upstream::http`), so no fetch ever blocks the loop.
//!
//! - Engines: slot 0 fetches the metadata (the issuer's origin), slot 1 the
//!   JWKS (the `jwks_uri`'s origin). Their HTTP tags are the top two of the
//!   token space, which no upstream reaches (`--config` upstreams are
//!   numbered from 0).
//! - Until the first JWKS is loaded, and while a refetch for an unknown
//!   `kid` runs, a request with a token gets 503 with `Retry-After: 1`
//!   (not parked: nothing is held per waiting request).

use std::collections::HashMap;
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

/// HTTP tag of engine slot 0; slot 1 is the next one (the last tag).
const FIRST_TAG: usize = (1 << crate::reactor::token::HTTP_TAG_BITS) - 2;

/// Whether an HTTP tag (or resolver id) is one of the OAuth engines'.
pub(super) fn is_oauth_tag(tag: usize) -> bool {
    (FIRST_TAG..FIRST_TAG + 2).contains(&tag)
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
    engines: [Option<Engine>; 2],
    fetches: HashMap<(usize, ExId), InFlight>,
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
        let base_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(OAuth {
            auth,
            tls: None,
            ca_file: opts.ca_file.clone(),
            engines: [None, None],
            fetches: HashMap::new(),
            base: now,
            base_unix,
            reject_log: RateLog::default(),
            fetch_log: RateLog::default(),
        })
    }

    fn unix(&self, now: Instant) -> u64 {
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
        let cfg = HttpConfig {
            url: url.clone(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(10),
            max_request_time: Duration::from_secs(30),
            max_connections: 1,
            idle_timeout: Duration::from_secs(60),
            headers: vec![("accept".into(), "application/json".into())],
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

    /// Checks a request's credentials. `Some(binding)`: go on, the session
    /// binding being the static token's index or the token subject's
    /// principal (None: no auth configured, or the admin listener).
    /// `None`: refused, already answered.
    pub(super) fn authenticate(
        &mut self,
        tok: Token,
        req: &Request,
        admin: bool,
    ) -> Option<Option<usize>> {
        if admin {
            return Some(None);
        }
        let ka = req.keep_alive;
        if let Some(tokens) = &self.tokens {
            return match tokens.check(req.header("authorization")) {
                Some(i) => Some(Some(i)),
                None => {
                    self.respond(
                        tok,
                        401,
                        &[("www-authenticate", "Bearer realm=\"mcp-relay\"")],
                        b"missing or invalid bearer token\n",
                        ka,
                    );
                    None
                }
            };
        }
        let now = self.now;
        let Some(o) = self.oauth.as_mut() else {
            return Some(None);
        };
        let verdict = o
            .auth
            .authorize(req.header("authorization"), now, o.unix(now));
        match verdict {
            Verdict::Allow { principal } => Some(Some(principal)),
            Verdict::Deny {
                status,
                challenge,
                body,
                why,
            } => {
                if let Some(n) = o.reject_log.check(now) {
                    log::info!("oauth: {status} {why} ({n} similar not logged)");
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
            Verdict::Unavailable => {
                if let Some(n) = o.reject_log.check(now) {
                    let why = o.auth.source.last_error().unwrap_or("being fetched");
                    log::warn!(
                        "oauth: 503, no key to check the token with yet: {why} ({n} similar not logged)"
                    );
                }
                self.respond(
                    tok,
                    503,
                    &[("retry-after", "1"), ("content-type", "text/plain")],
                    b"authorization keys not available yet\n",
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
                    log::warn!("oauth: {why}");
                    continue;
                }
            };
            let fresh = match o.engine_for(slot, &url, reg) {
                Ok(f) => f,
                Err(e) => {
                    let why = o.auth.source.on_failure(fetch.doc, &e, now);
                    log::warn!("oauth: {why}");
                    continue;
                }
            };
            if fresh {
                if self.resolver.is_none() {
                    match Resolver::new(reg, crate::reactor::RESOLVER_TOKEN) {
                        Ok(r) => self.resolver = Some(r),
                        Err(e) => {
                            let why = o.auth.source.on_failure(fetch.doc, &e.to_string(), now);
                            log::warn!("oauth: {why}");
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
            log::debug!("oauth: fetching {} {}", fetch.doc.label(), fetch.url);
            o.fetches.insert(
                (slot, ex),
                InFlight {
                    doc: fetch.doc,
                    status: 0,
                    body: Vec::new(),
                },
            );
        }
        self.oauth_drain();
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
        for slot in 0..2 {
            let mut events = Vec::new();
            if let Some(e) = o.engines[slot].as_mut() {
                e.client.take_events(&mut events);
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
                                    log::info!("oauth: {n} verification keys loaded");
                                }
                            }
                            Err(why) => {
                                o.auth.stats.fetched(doc, "error");
                                if let Some(n) = o.fetch_log.check(now) {
                                    log::warn!("oauth: {why} ({n} similar not logged)");
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
                            log::warn!("oauth: {why} ({n} similar not logged)");
                        }
                    }
                }
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
            .min()
    }
}
