//! Where the verification keys come from: the authorization server's
//! metadata (RFC 8414, or OpenID discovery) names its `jwks_uri`, the JWKS
//! there holds the keys. A state machine taking `now`; the owner carries
//! out its fetches (`next_fetch`) and reports how they ended
//! (`on_response`, `on_failure`).
//!
//! - Startup: metadata (each well-known URL in turn until one answers 200),
//!   then the JWKS. A failure retries with doubling backoff
//!   (`retry_base`..`retry_cap`); keys already loaded stay in use.
//! - A token naming a `kid` the set lacks triggers one refetch of the JWKS,
//!   at most once per `min_refetch` (counted from the last JWKS fetch), so a
//!   stream of made-up `kid`s costs the authorization server nothing more.
//! - Loaded keys are refetched every `max_age`, so a key the server dropped
//!   stops being accepted.

use std::time::{Duration, Instant};

use super::jwk::{self, KeySet};
use super::metadata;

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub issuer: String,
    /// `--oauth-jwks-uri`: skip the metadata.
    pub jwks_uri: Option<String>,
    /// Introspection is configured: metadata without `jwks_uri` is fine
    /// (every token is then introspected).
    pub jwks_optional: bool,
    pub min_refetch: Duration,
    pub max_age: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
}

/// Which document a fetch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    /// The metadata, at the n-th well-known URL.
    Metadata(usize),
    Jwks,
}

impl Doc {
    pub fn label(self) -> &'static str {
        match self {
            Doc::Metadata(_) => "metadata",
            Doc::Jwks => "jwks",
        }
    }
}

/// A GET the owner must carry out and report on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub doc: Doc,
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing in flight; `due`: when the next fetch starts (None: none
    /// planned until a lookup asks).
    Waiting {
        due: Option<Instant>,
    },
    InFlight(Doc),
}

/// A lookup of a token's key.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No keys yet, or a refetch for this `kid` is under way: answer 503.
    Pending,
    /// The key is not in the set and may not be refetched yet: 401.
    Unknown,
}

pub struct KeySource {
    cfg: SourceConfig,
    stage: Stage,
    candidates: Vec<String>,
    /// The next metadata URL to try.
    candidate: usize,
    jwks_uri: Option<String>,
    keys: Option<KeySet>,
    /// When the last JWKS fetch started.
    last_jwks: Option<Instant>,
    failures: u32,
    last_error: Option<String>,
    /// Refetches triggered by unknown `kid`s.
    pub refetches: u64,
    /// The issuer's metadata names no `jwks_uri` (with `jwks_optional`).
    no_jwks: bool,
}

impl KeySource {
    pub fn new(cfg: SourceConfig, now: Instant) -> KeySource {
        let candidates = metadata::discovery_urls(&cfg.issuer);
        KeySource {
            jwks_uri: cfg.jwks_uri.clone(),
            cfg,
            stage: Stage::Waiting { due: Some(now) },
            candidates,
            candidate: 0,
            keys: None,
            last_jwks: None,
            failures: 0,
            last_error: None,
            refetches: 0,
            no_jwks: false,
        }
    }

    /// The issuer publishes no JWKS (and introspection stands in for it).
    pub fn no_jwks(&self) -> bool {
        self.no_jwks
    }

    pub fn keys(&self) -> Option<&KeySet> {
        self.keys.as_ref()
    }

    /// Why the keys are not loaded (or were not refreshed), if they failed.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The fetch to start now, if one is due. At most one is in flight.
    pub fn next_fetch(&mut self, now: Instant) -> Option<Fetch> {
        let Stage::Waiting { due: Some(due) } = self.stage else {
            return None;
        };
        if due > now {
            return None;
        }
        let fetch = match &self.jwks_uri {
            Some(uri) => {
                self.last_jwks = Some(now);
                Fetch {
                    doc: Doc::Jwks,
                    url: uri.clone(),
                }
            }
            None => {
                let i = self.candidate.min(self.candidates.len().saturating_sub(1));
                Fetch {
                    doc: Doc::Metadata(i),
                    url: self.candidates.get(i)?.clone(),
                }
            }
        };
        self.stage = Stage::InFlight(fetch.doc);
        Some(fetch)
    }

    /// When `next_fetch` has something to start.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Waiting { due } => due,
            Stage::InFlight(_) => None,
        }
    }

    /// A fetch got a complete response. Returns an error text for the log
    /// when the document was refused.
    pub fn on_response(
        &mut self,
        doc: Doc,
        status: u16,
        body: &[u8],
        now: Instant,
    ) -> Result<(), String> {
        if self.stage != Stage::InFlight(doc) {
            return Ok(());
        }
        match doc {
            Doc::Metadata(i) if status != 200 && i + 1 < self.candidates.len() => {
                // Not at this well-known URL: the next one at once.
                self.candidate = i + 1;
                self.stage = Stage::Waiting { due: Some(now) };
                Ok(())
            }
            Doc::Metadata(i) => {
                let url = self.candidates.get(i).cloned().unwrap_or_default();
                let got = if status == 200 {
                    metadata::jwks_uri_opt(body, &self.cfg.issuer)
                } else {
                    Err(format!("status {status}"))
                };
                match got {
                    Ok(Some(uri)) => {
                        self.jwks_uri = Some(uri);
                        self.no_jwks = false;
                        self.failures = 0;
                        self.stage = Stage::Waiting { due: Some(now) };
                        Ok(())
                    }
                    Ok(None) if self.cfg.jwks_optional => {
                        // Looked at again as loaded keys would be.
                        self.no_jwks = true;
                        self.failures = 0;
                        self.last_error = None;
                        self.candidate = 0;
                        self.stage = Stage::Waiting {
                            due: Some(now + self.cfg.max_age),
                        };
                        Ok(())
                    }
                    Ok(None) => Err(self.fail(format!("metadata {url}: no jwks_uri"), now)),
                    Err(e) => Err(self.fail(format!("metadata {url}: {e}"), now)),
                }
            }
            Doc::Jwks => {
                let got = if status == 200 {
                    jwk::parse_set(body).and_then(|set| {
                        if set.keys.is_empty() {
                            Err("no usable RS256/ES256 key".to_string())
                        } else {
                            Ok(set)
                        }
                    })
                } else {
                    Err(format!("status {status}"))
                };
                match got {
                    Ok(set) => {
                        self.keys = Some(set);
                        self.failures = 0;
                        self.last_error = None;
                        self.stage = Stage::Waiting {
                            due: Some(now + self.cfg.max_age),
                        };
                        Ok(())
                    }
                    Err(e) => {
                        let uri = self.jwks_uri.clone().unwrap_or_default();
                        Err(self.fail(format!("JWKS {uri}: {e}"), now))
                    }
                }
            }
        }
    }

    /// A fetch failed before a complete response (connect, timeout, …).
    pub fn on_failure(&mut self, doc: Doc, why: &str, now: Instant) -> String {
        if self.stage != Stage::InFlight(doc) {
            return why.to_string();
        }
        self.fail(format!("{}: {why}", doc.label()), now)
    }

    fn fail(&mut self, why: String, now: Instant) -> String {
        self.failures = self.failures.saturating_add(1);
        let shift = self.failures.saturating_sub(1).min(16);
        let delay = self
            .cfg
            .retry_base
            .saturating_mul(1 << shift)
            .min(self.cfg.retry_cap);
        // Metadata is looked for again from the first URL; a JWKS failure
        // retries the JWKS.
        self.candidate = 0;
        if self.cfg.jwks_uri.is_none() && self.keys.is_none() {
            self.jwks_uri = None;
        }
        self.stage = Stage::Waiting {
            due: Some(now + delay),
        };
        self.last_error = Some(why.clone());
        why
    }

    /// A token names a key the set lacks (or there is no set yet): whether
    /// to wait for a fetch (Pending) or refuse (Unknown). Starts a refetch
    /// when allowed.
    pub fn missing_key(&mut self, now: Instant) -> Lookup {
        if self.keys.is_none() {
            return Lookup::Pending;
        }
        match self.stage {
            Stage::InFlight(_) => Lookup::Pending,
            Stage::Waiting { due } => {
                if due.is_some_and(|d| d <= now) {
                    return Lookup::Pending;
                }
                let allowed = self
                    .last_jwks
                    .is_none_or(|t| now >= t + self.cfg.min_refetch);
                if allowed && self.jwks_uri.is_some() {
                    self.refetches += 1;
                    self.stage = Stage::Waiting { due: Some(now) };
                    Lookup::Pending
                } else {
                    Lookup::Unknown
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::b64;
    use serde_json::json;

    const ISS: &str = "https://as.example";

    fn cfg(jwks_uri: Option<&str>) -> SourceConfig {
        SourceConfig {
            issuer: ISS.into(),
            jwks_uri: jwks_uri.map(str::to_string),
            jwks_optional: false,
            min_refetch: Duration::from_secs(30),
            max_age: Duration::from_secs(600),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(8),
        }
    }

    fn jwks(kids: &[&str]) -> Vec<u8> {
        let keys: Vec<_> = kids
            .iter()
            .map(|k| {
                json!({"kty": "EC", "crv": "P-256", "kid": k,
                            "x": b64::encode(&[1; 32]), "y": b64::encode(&[2; 32])})
            })
            .collect();
        json!({ "keys": keys }).to_string().into_bytes()
    }

    fn meta(issuer: &str) -> Vec<u8> {
        json!({"issuer": issuer, "jwks_uri": "https://as.example/jwks",
               "authorization_endpoint": "https://as.example/authorize"})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn discovery_walks_the_well_known_urls_then_loads_the_jwks() {
        let t0 = Instant::now();
        let mut s = KeySource::new(cfg(None), t0);
        let f = s.next_fetch(t0).unwrap();
        assert_eq!(
            f.url,
            "https://as.example/.well-known/oauth-authorization-server"
        );
        assert_eq!(s.next_fetch(t0), None, "one at a time");
        s.on_response(f.doc, 404, b"", t0).unwrap();
        let f = s.next_fetch(t0).unwrap();
        assert_eq!(f.url, "https://as.example/.well-known/openid-configuration");
        s.on_response(f.doc, 200, &meta(ISS), t0).unwrap();
        let f = s.next_fetch(t0).unwrap();
        assert_eq!(
            f,
            Fetch {
                doc: Doc::Jwks,
                url: "https://as.example/jwks".into()
            }
        );
        assert_eq!(s.missing_key(t0), Lookup::Pending, "no keys yet");
        s.on_response(Doc::Jwks, 200, &jwks(&["a"]), t0).unwrap();
        assert_eq!(s.keys().unwrap().keys.len(), 1);
        assert_eq!(
            s.next_deadline(),
            Some(t0 + Duration::from_secs(600)),
            "max age"
        );
    }

    #[test]
    fn an_issuer_mismatch_is_refused_and_retried_with_backoff() {
        let t0 = Instant::now();
        let mut s = KeySource::new(cfg(None), t0);
        let f = s.next_fetch(t0).unwrap();
        let err = s
            .on_response(f.doc, 200, &meta("https://evil.example"), t0)
            .unwrap_err();
        assert!(err.contains("issuer"), "{err}");
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(s.next_fetch(t0 + Duration::from_millis(999)), None);
        let t1 = t0 + Duration::from_secs(1);
        let f = s.next_fetch(t1).unwrap();
        assert_eq!(f.doc, Doc::Metadata(0), "starts over at the first URL");
        s.on_failure(f.doc, "connect refused", t1);
        assert_eq!(s.next_deadline(), Some(t1 + Duration::from_secs(2)));
        let mut t = t1;
        for _ in 0..6 {
            t = s.next_deadline().unwrap();
            let f = s.next_fetch(t).unwrap();
            s.on_failure(f.doc, "down", t);
        }
        assert_eq!(
            s.next_deadline(),
            Some(t + Duration::from_secs(8)),
            "capped"
        );
        assert!(s.last_error().unwrap().contains("down"));
    }

    #[test]
    fn unknown_kid_refetches_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut s = KeySource::new(cfg(Some("https://as.example/jwks")), t0);
        let f = s.next_fetch(t0).unwrap();
        assert_eq!(f.doc, Doc::Jwks, "override skips the metadata");
        s.on_response(Doc::Jwks, 200, &jwks(&["a"]), t0).unwrap();
        // Within min_refetch of the startup fetch: refused outright.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(s.missing_key(t1), Lookup::Unknown);
        assert_eq!(s.next_fetch(t1), None);
        // Later: one refetch; requests meanwhile wait.
        let t2 = t0 + Duration::from_secs(31);
        assert_eq!(s.missing_key(t2), Lookup::Pending);
        assert_eq!(s.missing_key(t2), Lookup::Pending);
        assert_eq!(s.refetches, 1);
        let f = s.next_fetch(t2).unwrap();
        assert_eq!(f.doc, Doc::Jwks);
        assert_eq!(s.missing_key(t2), Lookup::Pending, "in flight");
        s.on_response(Doc::Jwks, 200, &jwks(&["a", "b"]), t2)
            .unwrap();
        assert_eq!(s.keys().unwrap().keys.len(), 2, "rotated key loaded");
        // Still unknown after the refetch: 401 until the interval passes.
        assert_eq!(s.missing_key(t2 + Duration::from_secs(1)), Lookup::Unknown);
        assert_eq!(s.refetches, 1);
        assert_eq!(s.missing_key(t2 + Duration::from_secs(30)), Lookup::Pending);
        assert_eq!(s.refetches, 2);
    }

    #[test]
    fn a_failed_refresh_keeps_the_loaded_keys() {
        let t0 = Instant::now();
        let mut s = KeySource::new(cfg(None), t0);
        let f = s.next_fetch(t0).unwrap();
        s.on_response(f.doc, 200, &meta(ISS), t0).unwrap();
        s.next_fetch(t0).unwrap();
        s.on_response(Doc::Jwks, 200, &jwks(&["a"]), t0).unwrap();
        let t1 = t0 + Duration::from_secs(600);
        let f = s.next_fetch(t1).unwrap();
        assert_eq!(f.doc, Doc::Jwks, "the refresh goes straight to the JWKS");
        assert!(s.on_response(Doc::Jwks, 500, b"", t1).is_err());
        assert_eq!(s.keys().unwrap().keys.len(), 1);
        assert!(
            s.on_response(Doc::Jwks, 200, b"{}", t1).is_ok(),
            "stale: ignored"
        );
        let f = s.next_fetch(t1 + Duration::from_secs(1)).unwrap();
        assert!(
            s.on_response(f.doc, 200, &jwks(&[]), t1).is_err(),
            "empty set refused"
        );
        assert_eq!(s.keys().unwrap().keys.len(), 1);
    }

    #[test]
    fn metadata_without_jwks_uri_means_no_jwks_only_when_introspection_stands_in() {
        let t0 = Instant::now();
        let doc = json!({"issuer": ISS, "introspection_endpoint": "https://as.example/i"})
            .to_string()
            .into_bytes();
        // Without introspection: a failure, retried with backoff.
        let mut s = KeySource::new(cfg(None), t0);
        let f = s.next_fetch(t0).unwrap();
        assert!(s.on_response(f.doc, 200, &doc, t0).is_err());
        assert!(!s.no_jwks());
        // With it: no JWKS, looked at again after max_age, no error.
        let mut c = cfg(None);
        c.jwks_optional = true;
        let mut s = KeySource::new(c, t0);
        let f = s.next_fetch(t0).unwrap();
        s.on_response(f.doc, 200, &doc, t0).unwrap();
        assert!(s.no_jwks());
        assert_eq!(s.last_error(), None);
        assert_eq!(s.next_fetch(t0 + Duration::from_secs(599)), None);
        let f = s.next_fetch(t0 + Duration::from_secs(600)).unwrap();
        assert_eq!(f.doc, Doc::Metadata(0));
        // The issuer starts publishing keys: used from then on.
        let t1 = t0 + Duration::from_secs(600);
        s.on_response(f.doc, 200, &meta(ISS), t1).unwrap();
        assert!(!s.no_jwks());
        assert_eq!(s.next_fetch(t1).unwrap().doc, Doc::Jwks);
        // A metadata naming another issuer is still refused.
        let mut c = cfg(None);
        c.jwks_optional = true;
        let mut s = KeySource::new(c, t0);
        let f = s.next_fetch(t0).unwrap();
        let other = json!({"issuer": "https://evil"}).to_string().into_bytes();
        assert!(s.on_response(f.doc, 200, &other, t0).is_err());
        assert!(!s.no_jwks());
    }
}
