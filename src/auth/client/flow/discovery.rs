//! Discovery, the flow's first stages: from "authorization needed" to the
//! authorization server's metadata. `auth login`'s probe (a token-less
//! `ping` whose 401 may name the resource metadata), the protected
//! resource metadata
//! (RFC 9728: the challenge's `resource_metadata`, else the well-known
//! URLs, path-specific first), then the authorization server metadata
//! (RFC 8414, then OpenID discovery).

use std::collections::VecDeque;
use std::time::Instant;

use super::{Flow, Stage, Step};
use crate::auth::client::wire::{Fetch, read_resource_metadata, read_server_metadata};
use crate::auth::client::{Challenge, parse_challenge};
use crate::auth::metadata::{discovery_urls, metadata_url};
use crate::upstream::url::Url;

/// The revision named in the probe's `MCP-Protocol-Version` (the one the
/// relay asks for when it initializes a server itself).
const PROBE_VERSION: &str = "2025-11-25";

impl Flow {
    /// `auth login`: a fresh authorization, whatever is stored. It starts
    /// with a `ping` to the MCP endpoint without a token: a server may
    /// name its resource metadata only in the 401's challenge. Never
    /// `initialize`, which would open a session nobody ends.
    pub fn login(&mut self) -> Step {
        if self.busy() {
            return Step::Wait;
        }
        self.set_stage(Stage::Probing);
        Step::Fetch(Fetch {
            url: self.url.clone(),
            method: "POST",
            headers: vec![
                ("content-type".into(), "application/json".into()),
                (
                    "accept".into(),
                    "application/json, text/event-stream".into(),
                ),
                ("mcp-protocol-version".into(), PROBE_VERSION.into()),
            ],
            body: br#"{"jsonrpc":"2.0","id":"mcp-relay-login","method":"ping"}"#.to_vec(),
        })
    }

    /// The probe's answer: a 401's `Bearer` challenge leads the
    /// authorization (its metadata URL and scope); anything else (no
    /// challenge, 2xx, 4xx for want of a session) leaves discovery to the
    /// well-known URLs; no answer at all fails the login.
    pub(super) fn on_probe(
        &mut self,
        status: u16,
        www_authenticate: Option<&str>,
        body: &[u8],
        now: Instant,
    ) -> Step {
        if status == 0 {
            let why = String::from_utf8_lossy(body).into_owned();
            return self.fail(format!("{} did not answer: {why}", self.url), now);
        }
        let challenge = match www_authenticate {
            Some(v) if status == 401 => parse_challenge(v),
            _ => Challenge::default(),
        };
        crate::log_debug!(
            "oauth: login probe answered {status}{}",
            if challenge.resource_metadata.is_some() {
                ", naming the resource metadata"
            } else {
                ""
            }
        );
        self.authorize_with(challenge.scope.clone(), &challenge, now)
    }

    pub(super) fn authorize_with(
        &mut self,
        scope: Option<String>,
        challenge: &Challenge,
        now: Instant,
    ) -> Step {
        if self.meta.is_some() {
            return self.after_metadata(scope, now);
        }
        let mut candidates = VecDeque::new();
        if let Some(u) = &challenge.resource_metadata {
            candidates.push_back(u.clone());
        } else {
            // RFC 9728: path-specific first, then the root.
            if let Some(u) = metadata_url(&self.url) {
                candidates.push_back(u);
            }
            if let Ok(u) = Url::parse(&self.url) {
                let root = format!(
                    "{}://{}/.well-known/oauth-protected-resource",
                    if u.tls { "https" } else { "http" },
                    u.host_header
                );
                if !candidates.contains(&root) {
                    candidates.push_back(root);
                }
            }
        }
        let Some(first) = candidates.front().cloned() else {
            return self.fail(format!("{}: not an http(s) URL", self.url), now);
        };
        self.set_stage(Stage::ResourceMetadata { candidates, scope });
        Step::Fetch(Fetch::get(first))
    }

    /// The answer to a protected resource metadata fetch.
    pub(super) fn on_resource_metadata(
        &mut self,
        mut candidates: VecDeque<String>,
        scope: Option<String>,
        status: u16,
        body: &[u8],
        now: Instant,
    ) -> Step {
        self.stage = Stage::ResourceMetadata {
            candidates: VecDeque::new(),
            scope: scope.clone(),
        };
        let tried = candidates.pop_front().unwrap_or_default();
        let issuer = if status == 200 {
            match read_resource_metadata(body, &self.url) {
                Ok(m) => {
                    if let Some(r) = m.resource {
                        self.resource = r;
                    }
                    self.prm_scopes = m.scopes;
                    Some(m.issuer)
                }
                Err(e) => return self.fail(format!("{tried}: {e}"), now),
            }
        } else {
            None
        };
        let issuer = match (issuer, candidates.front()) {
            (Some(i), _) => i,
            (None, Some(next)) => {
                let next = next.clone();
                self.set_stage(Stage::ResourceMetadata { candidates, scope });
                return Step::Fetch(Fetch::get(next));
            }
            (None, None) => {
                return self.fail(
                    format!(
                        "no protected resource metadata for {} (last tried {tried}: {})",
                        self.url,
                        if status == 0 {
                            String::from_utf8_lossy(body).into_owned()
                        } else {
                            format!("HTTP {status}")
                        }
                    ),
                    now,
                );
            }
        };
        let candidates: VecDeque<String> = discovery_urls(&issuer).into();
        let Some(first) = candidates.front().cloned() else {
            return self.fail(format!("authorization server {issuer:?}: bad URL"), now);
        };
        self.set_stage(Stage::ServerMetadata {
            issuer,
            candidates,
            scope,
        });
        Step::Fetch(Fetch::get(first))
    }

    /// The answer to an authorization server metadata fetch.
    pub(super) fn on_server_metadata(
        &mut self,
        issuer: String,
        mut candidates: VecDeque<String>,
        scope: Option<String>,
        status: u16,
        body: &[u8],
        now: Instant,
    ) -> Step {
        self.stage = Stage::ServerMetadata {
            issuer: issuer.clone(),
            candidates: VecDeque::new(),
            scope: None,
        };
        let tried = candidates.pop_front().unwrap_or_default();
        if status == 200 {
            match read_server_metadata(body, &issuer, self.opts.grant) {
                Ok(m) => {
                    self.meta = Some(m);
                    return self.after_metadata(scope, now);
                }
                Err(e) => return self.fail(format!("{tried}: {e}"), now),
            }
        }
        match candidates.front().cloned() {
            Some(next) => {
                self.set_stage(Stage::ServerMetadata {
                    issuer,
                    candidates,
                    scope,
                });
                Step::Fetch(Fetch::get(next))
            }
            None => self.fail(
                format!("no authorization server metadata for {issuer} (last tried {tried})"),
                now,
            ),
        }
    }
}
