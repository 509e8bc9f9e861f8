//! OAuth 2.1 protected resource (`reverse --oauth-issuer`, issue 14):
//! bearer JWT access tokens checked against the authorization server's
//! JWKS, RFC 9728 metadata, RFC 6750 challenges. Sans-I/O: the reverse
//! front carries out the fetches [`keys::KeySource`] asks for and passes
//! the time in.
//!
//! | file | job |
//! |---|---|
//! | `b64.rs` | base64url without padding (and standard base64 for Basic) |
//! | `form.rs` | form encoding and `client_secret_basic` credentials |
//! | `introspect.rs` | RFC 7662 introspection of opaque tokens: cache, sharing, bounds |
//! | `jwk.rs` | JWK/JWKS → ring public keys; signature verification |
//! | `jwt.rs` | compact JWS parsing, claims checks → [`jwt::Decision`] |
//! | `keys.rs` | metadata → JWKS fetching, unknown-`kid` refetch, backoff |
//! | `metadata.rs` | RFC 9728 document, `WWW-Authenticate`, RFC 8414 discovery |
//! | `stats.rs` | the `mcp_relay_oauth_*` metrics |

use std::time::{Duration, Instant};

pub mod b64;
pub mod client;
pub mod form;
pub mod introspect;
pub mod jwk;
pub mod jwt;
pub mod keys;
pub mod metadata;
pub mod stats;

use introspect::{Admit, Answer, Introspector};
use jwt::{Decision, Policy, Reason};
use keys::{KeySource, Lookup, SourceConfig};
use metadata::Challenge;

/// `--oauth-*`: the relay as a protected resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthOptions {
    pub issuer: String,
    /// The relay's public URL: the `aud` tokens must carry, published as
    /// `resource`.
    pub audience: String,
    pub scopes: Vec<String>,
    pub jwks_uri: Option<String>,
    /// CA certificates for an `https://` issuer (else webpki roots).
    pub ca_file: Option<std::path::PathBuf>,
    pub clock_skew: Duration,
    /// Least time between two JWKS fetches caused by unknown `kid`s.
    pub jwks_min_refetch: Duration,
    /// `--oauth-introspection-*`: opaque tokens checked with RFC 7662.
    pub introspection: Option<IntrospectionOptions>,
}

/// `--oauth-introspection-url` and its client credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionOptions {
    pub url: String,
    pub client_id: String,
    /// Read at startup; one line, surrounding whitespace ignored.
    pub secret_file: std::path::PathBuf,
    /// `--oauth-introspection-cache`: longest an accepted token's answer
    /// is reused (zero: every request is introspected).
    pub max_age: Duration,
}

/// Bounds of introspection (fixed limits).
pub const INTROSPECTION_CACHE_ENTRIES: usize = 10_000;
pub const INTROSPECTION_MAX_INFLIGHT: usize = 32;
pub const INTROSPECTION_MAX_HELD: usize = 1024;
pub const INTROSPECTION_DOWN_FOR: Duration = Duration::from_secs(1);
/// Longest an introspection (and so a request held for it) may take.
pub const INTROSPECTION_MAX_TIME: Duration = Duration::from_secs(10);

/// Refetch of loaded keys (fixed limit).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(600);
/// Backoff of failed metadata/JWKS fetches (fixed limits).
pub const FETCH_RETRY_BASE: Duration = Duration::from_millis(500);
pub const FETCH_RETRY_CAP: Duration = Duration::from_secs(30);
/// Largest metadata or JWKS document read (fixed limit).
pub const MAX_DOCUMENT: usize = 256 << 10;

/// What the front does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it, bound to this principal (see [`principal`]).
    Allow { principal: usize },
    /// 401 or 403 with this `WWW-Authenticate`.
    Deny {
        status: u16,
        challenge: String,
        body: &'static str,
        /// For the log: the rejection reason's label.
        why: &'static str,
    },
    /// 503 with `Retry-After: 1`: the keys are being fetched (`"keys"`),
    /// or introspection cannot decide now (the bound's label, or
    /// `"introspection_failed"`).
    Unavailable(&'static str),
    /// Waiting for an introspection: the front holds the request until
    /// [`Authority::introspected`] names it.
    Held,
}

/// Session binding key of a subject: 63 bits of SHA-256 over issuer and
/// subject, top bit set so it never equals a static token's index. A
/// session created under one subject is not found under another.
pub fn principal(issuer: &str, subject: &str) -> usize {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(issuer.as_bytes());
    ctx.update(&[0]);
    ctx.update(subject.as_bytes());
    let d = ctx.finish();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    (u64::from_be_bytes(b) | (1 << 63)) as usize
}

/// The protected resource: policy, keys, and what to answer.
pub struct Authority {
    policy: Policy,
    pub source: KeySource,
    pub stats: stats::Stats,
    metadata_url: String,
    metadata_paths: Vec<String>,
    document: Vec<u8>,
    pub introspection: Option<Introspector>,
}

impl Authority {
    pub fn new(opts: &OAuthOptions, now: Instant) -> Result<Authority, String> {
        let metadata_url = metadata::metadata_url(&opts.audience)
            .ok_or_else(|| format!("--oauth-audience {:?}: not an http(s) URL", opts.audience))?;
        if metadata::discovery_urls(&opts.issuer).is_empty() {
            return Err(format!(
                "--oauth-issuer {:?}: not an http(s) URL",
                opts.issuer
            ));
        }
        if let Some(u) = &opts.jwks_uri {
            crate::upstream::url::Url::parse(u).map_err(|e| format!("--oauth-jwks-uri: {e}"))?;
        }
        if let Some(i) = &opts.introspection {
            crate::upstream::url::Url::parse(&i.url)
                .map_err(|e| format!("--oauth-introspection-url: {e}"))?;
        }
        Ok(Authority {
            policy: Policy {
                issuer: opts.issuer.clone(),
                audience: opts.audience.clone(),
                scopes: opts.scopes.clone(),
                skew: opts.clock_skew.as_secs(),
            },
            source: KeySource::new(
                SourceConfig {
                    issuer: opts.issuer.clone(),
                    jwks_uri: opts.jwks_uri.clone(),
                    jwks_optional: opts.introspection.is_some(),
                    min_refetch: opts.jwks_min_refetch,
                    max_age: JWKS_MAX_AGE,
                    retry_base: FETCH_RETRY_BASE,
                    retry_cap: FETCH_RETRY_CAP,
                },
                now,
            ),
            stats: stats::Stats::default(),
            metadata_paths: metadata::metadata_paths(&opts.audience),
            document: metadata::resource_document(&opts.audience, &opts.issuer, &opts.scopes),
            metadata_url,
            introspection: opts.introspection.as_ref().map(|i| {
                Introspector::new(introspect::Limits {
                    max_age: i.max_age,
                    cache_entries: INTROSPECTION_CACHE_ENTRIES,
                    max_inflight: INTROSPECTION_MAX_INFLIGHT,
                    max_held: INTROSPECTION_MAX_HELD,
                    down_for: INTROSPECTION_DOWN_FOR,
                })
            }),
        })
    }

    /// The RFC 9728 document, if `path` is where it is served.
    pub fn document_at(&self, path: &str) -> Option<&[u8]> {
        self.metadata_paths
            .iter()
            .any(|p| p == path)
            .then_some(self.document.as_slice())
    }

    /// The verdict on a request's `Authorization` header at `now` (`unix`:
    /// the same instant as seconds since the epoch). `waiter`: the front's
    /// id of the request, named again by [`Authority::introspected`] when
    /// the verdict is [`Verdict::Held`].
    pub fn authorize(
        &mut self,
        authorization: Option<&str>,
        now: Instant,
        unix: u64,
        waiter: usize,
    ) -> Verdict {
        let Some(token) = bearer(authorization) else {
            return self.answer(Answer::Invalid(Reason::Missing));
        };
        let parsed = jwt::parse(token);
        // Introspected: a token that is no JWT, or any token when the
        // issuer publishes no JWKS. Never one over the size limit.
        let introspect = match &parsed {
            Err(Reason::Malformed) => true,
            Err(_) => false,
            Ok(_) => self.source.no_jwks(),
        };
        if introspect && let Some(i) = self.introspection.as_mut() {
            return match i.admit(token, waiter, now) {
                Admit::Decided(a) => self.answer(a),
                Admit::Held => Verdict::Held,
                Admit::Busy(why) => {
                    self.stats.unavailable += 1;
                    Verdict::Unavailable(why)
                }
            };
        }
        let decision = match parsed {
            Err(r) => Some(Decision::Invalid(r)),
            Ok(p) => self.decide(&p, now, unix),
        };
        match decision {
            None => {
                self.stats.unavailable += 1;
                Verdict::Unavailable("keys")
            }
            Some(d) => {
                let a = Answer::of(d, &self.policy.issuer);
                self.answer(a)
            }
        }
    }

    /// An introspection ended (`status` and `body` of its response, or
    /// `failure`): the verdict for every request that waited for it.
    pub fn introspected(
        &mut self,
        key: &introspect::Key,
        response: Result<(u16, &[u8]), &str>,
        now: Instant,
        unix: u64,
    ) -> (Verdict, Vec<usize>, Option<String>) {
        let Some(i) = self.introspection.as_mut() else {
            return (
                Verdict::Unavailable("introspection_failed"),
                Vec::new(),
                None,
            );
        };
        let f = match response {
            Ok((status, body)) => i.on_response(key, status, body, &self.policy, unix, now),
            Err(why) => i.on_failure(key, why, now),
        };
        match f.result {
            Ok(a) => {
                let mut v = Verdict::Unavailable("introspection_failed");
                for _ in &f.waiters {
                    v = self.answer(a);
                }
                (v, f.waiters, None)
            }
            Err(why) => {
                self.stats.unavailable += f.waiters.len() as u64;
                (
                    Verdict::Unavailable("introspection_failed"),
                    f.waiters,
                    Some(why),
                )
            }
        }
    }

    /// Counts one request's answer and turns it into a verdict.
    fn answer(&mut self, a: Answer) -> Verdict {
        self.stats.count(&a);
        match a {
            Answer::Valid { principal } => Verdict::Allow { principal },
            Answer::Invalid(Reason::Missing) => Verdict::Deny {
                status: 401,
                challenge: metadata::challenge(
                    &self.metadata_url,
                    &self.policy.scopes,
                    Challenge::NoToken,
                ),
                body: "missing bearer token\n",
                why: Reason::Missing.label(),
            },
            Answer::Invalid(r) => Verdict::Deny {
                status: 401,
                challenge: metadata::challenge(
                    &self.metadata_url,
                    &self.policy.scopes,
                    Challenge::InvalidToken(r.description()),
                ),
                body: "invalid bearer token\n",
                why: r.label(),
            },
            Answer::InsufficientScope => Verdict::Deny {
                status: 403,
                challenge: metadata::challenge(
                    &self.metadata_url,
                    &self.policy.scopes,
                    Challenge::InsufficientScope,
                ),
                body: "insufficient scope\n",
                why: "insufficient_scope",
            },
        }
    }

    /// A JWT's verdict. None: no decision until keys arrive.
    fn decide(&mut self, parsed: &jwt::Parsed<'_>, now: Instant, unix: u64) -> Option<Decision> {
        if let Some(key) = self.source.keys().and_then(|set| jwt::key_for(set, parsed)) {
            return Some(self.policy.check(parsed, key, unix));
        }
        match self.source.missing_key(now) {
            Lookup::Pending => None,
            Lookup::Unknown => Some(Decision::Invalid(Reason::UnknownKey)),
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> OAuthOptions {
        OAuthOptions {
            issuer: "https://as.example".into(),
            audience: "https://relay.example/mcp".into(),
            scopes: vec!["mcp".into()],
            jwks_uri: None,
            ca_file: None,
            clock_skew: Duration::from_secs(60),
            jwks_min_refetch: Duration::from_secs(30),
            introspection: None,
        }
    }

    #[test]
    fn principals_differ_by_subject_and_issuer_and_never_collide_with_indexes() {
        let a = principal("https://as.example", "alice");
        assert_eq!(a, principal("https://as.example", "alice"));
        assert_ne!(a, principal("https://as.example", "bob"));
        assert_ne!(a, principal("https://other.example", "alice"));
        assert_ne!(principal("a", "bc"), principal("ab", "c"));
        assert!(a >= 1 << 63);
    }

    #[test]
    fn no_token_is_401_and_unloaded_keys_are_503() {
        let t0 = Instant::now();
        let mut a = Authority::new(&opts(), t0).unwrap();
        let Verdict::Deny {
            status, challenge, ..
        } = a.authorize(None, t0, 0, 0)
        else {
            panic!("not denied");
        };
        assert_eq!(status, 401);
        assert_eq!(
            challenge,
            "Bearer resource_metadata=\"https://relay.example/.well-known/oauth-protected-resource/mcp\", scope=\"mcp\""
        );
        assert!(matches!(
            a.authorize(Some("Basic abc"), t0, 0, 0),
            Verdict::Deny { status: 401, .. }
        ));
        assert!(matches!(
            a.authorize(Some("Bearer x.y"), t0, 0, 0),
            Verdict::Deny { status: 401, .. }
        ));
        let es = format!(
            "{}.{}.AA",
            b64::encode(b"{\"alg\":\"ES256\"}"),
            b64::encode(b"{}")
        );
        assert_eq!(
            a.authorize(Some(&format!("Bearer {es}")), t0, 0, 0),
            Verdict::Unavailable("keys")
        );
        assert!(
            a.document_at("/.well-known/oauth-protected-resource/mcp")
                .is_some()
        );
        assert!(
            a.document_at("/.well-known/oauth-protected-resource")
                .is_some()
        );
        assert!(
            a.document_at("/.well-known/oauth-protected-resource/other")
                .is_none()
        );
    }

    #[test]
    fn bad_urls_are_refused_at_startup() {
        let t0 = Instant::now();
        let mut o = opts();
        o.audience = "relay".into();
        assert!(Authority::new(&o, t0).is_err());
        let mut o = opts();
        o.issuer = "as.example".into();
        assert!(Authority::new(&o, t0).is_err());
        let mut o = opts();
        o.jwks_uri = Some("file:///x".into());
        assert!(Authority::new(&o, t0).is_err());
    }
}
